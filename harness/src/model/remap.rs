//! mremap(2): shrinking, growing in place, moving (MREMAP_MAYMOVE,
//! MREMAP_FIXED), keeping the old range (MREMAP_DONTUNMAP) and duplicating
//! a shared mapping (old_len 0), with the kernel's errno rules in its order.

use super::allowed::Allowed;
use super::fault::{self, Stop};
use super::ops::Outcome;
use super::state::{Back, MapRef, Page, World};
use crate::exec::protocol::Place;

const TASK_SIZE: u64 = 0x7fff_ffff_f000;

fn errno(name: &str) -> Outcome {
    Ok(Allowed::errno(name))
}

/// The page that continues `pg` one page further (a grown mapping's tail).
fn next_page(pg: &Page, k: u64) -> Page {
    let back = match &pg.back {
        Back::Object {
            inode,
            index,
            shared,
            ..
        } => Back::Object {
            inode: *inode,
            index: index + k,
            shared: *shared,
            copy: None,
        },
        Back::Anon { .. } => Back::Anon {
            copy: None,
            maybe_zero: None,
        },
    };
    Page {
        back,
        dontfork: pg.dontfork,
        wipeonfork: pg.wipeonfork,
        ..pg.clone()
    }
}

/// What an old page becomes when MREMAP_DONTUNMAP leaves its range mapped:
/// private pages lose their contents (anonymous ones read zeros, file ones
/// follow the file again), shared ones still show the object.
fn left_behind(pg: &Page) -> Page {
    let mut out = pg.clone();
    match &mut out.back {
        Back::Object { copy, .. } => *copy = None,
        Back::Anon { copy, maybe_zero } => {
            *copy = None;
            *maybe_zero = None;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
pub fn mremap(
    w: &mut World,
    p: &str,
    map: &str,
    at: i64,
    old_len: u64,
    new_len: u64,
    flags: i32,
    new_addr: Option<&Place>,
    name: &str,
) -> Outcome {
    let ps = w.ps;
    let maymove = flags & libc::MREMAP_MAYMOVE != 0;
    let fixed = flags & libc::MREMAP_FIXED != 0;
    let dontunmap = flags & libc::MREMAP_DONTUNMAP != 0;
    if flags & !(libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP) != 0 {
        return errno("EINVAL");
    }
    if fixed && !maymove {
        return errno("EINVAL");
    }
    if dontunmap && (!maymove || old_len != new_len) {
        return errno("EINVAL");
    }
    let m = w.procs[p]
        .maps
        .get(map)
        .copied()
        .ok_or_else(|| format!("no mapping named `{map}` in `{p}`"))?;
    let start = m.at + at;
    if start.rem_euclid(ps as i64) != 0 {
        return errno("EINVAL");
    }
    let (Some(old_r), Some(new_r)) = (
        old_len.checked_next_multiple_of(ps),
        new_len.checked_next_multiple_of(ps),
    ) else {
        return errno("EINVAL");
    };
    if new_r == 0 {
        return errno("EINVAL");
    }
    if new_r > TASK_SIZE {
        return Err("an mremap to a huge length".to_string());
    }
    let r = m.region;
    let first = start.div_euclid(ps as i64);
    let old_n = (old_r / ps) as i64;
    let new_n = (new_r / ps) as i64;
    // The destination of MREMAP_FIXED.
    let mut dest: Option<(usize, i64)> = None;
    if fixed || dontunmap {
        if fixed {
            let Some(place) = new_addr else {
                return Err("MREMAP_FIXED without a new address".to_string());
            };
            let (dr, doff) = match place {
                Place::Raw(_) => return Err("MREMAP_FIXED to a raw address".to_string()),
                Place::InMap { map: dm, at: dat } => {
                    let d = w.procs[p]
                        .maps
                        .get(dm)
                        .copied()
                        .ok_or_else(|| format!("no mapping named `{dm}` in `{p}`"))?;
                    (d.region, d.at + dat)
                }
            };
            if doff.rem_euclid(ps as i64) != 0 {
                return errno("EINVAL");
            }
            let dfirst = doff.div_euclid(ps as i64);
            // Two regions never overlap; within one, the offsets tell.
            if dr == r && first + old_n > dfirst && dfirst + new_n > first {
                return errno("EINVAL");
            }
            dest = Some((dr, dfirst));
        }
    } else if old_r >= new_r {
        // Nothing mapped at the old address (a MADV_DONTFORK range in a
        // fork child, say): recent kernels look the mapping up first and
        // fail with EFAULT (seen on 6.18); older ones only unmapped the
        // tail and succeeded (5.10's mremap). Either way nothing changes
        // when nothing of the old range is mapped.
        if old_n > 0 && !w.procs[p].pages.contains_key(&(r, first)) {
            let any = (first..first + old_n).any(|i| w.procs[p].pages.contains_key(&(r, i)));
            if any {
                return Err(
                    "a shrinking mremap whose first page is unmapped but a later one is not"
                        .to_string(),
                );
            }
            return Ok(Allowed::one_of(vec![
                Allowed::Errno("EFAULT".to_string()),
                Allowed::Success,
            ]));
        }
        // Shrinking: the tail is unmapped, whatever it held.
        if old_n > 0 {
            let placed = w.procs[p].placements.len();
            let pr = w.procs.get_mut(p).unwrap();
            for i in first + new_n..first + old_n {
                if pr.pages.remove(&(r, i)).is_some() {
                    pr.unmapped.insert((r, i), placed);
                }
            }
            pr.maps.insert(
                name.to_string(),
                MapRef {
                    region: r,
                    at: start,
                    len: new_len,
                },
            );
            return Ok(Allowed::Success);
        }
    }
    // The old range: one mapping, wholly mapped.
    let head = match fault::page_at(w, p, r, first) {
        Ok(pg) => pg.clone(),
        Err(Stop::Fault(..)) => return errno("EFAULT"),
        Err(Stop::Unmodeled(why)) => return Err(why),
    };
    for i in first..first + old_n {
        match fault::page_at(w, p, r, i) {
            Ok(pg) if pg.vma == head.vma && same_attributes(pg, &head) => {}
            // madvise, mprotect or mlock of part of the mapping split it:
            // the old range is not one VMA (vma_to_resize: EFAULT).
            Ok(pg) if pg.vma == head.vma => return errno("EFAULT"),
            Ok(_) => {
                return Err(
                    "the old range spans two mappings, which the kernel may have merged into one"
                        .to_string(),
                )
            }
            Err(Stop::Fault(..)) => return errno("EFAULT"),
            Err(Stop::Unmodeled(why)) => return Err(why),
        }
    }
    if old_n == 0 {
        let shared = matches!(head.back, Back::Object { shared: true, .. });
        if !shared {
            return errno("EINVAL");
        }
        if !maymove {
            return Err("mremap of old_len 0 without MREMAP_MAYMOVE".to_string());
        }
    }
    let old_pages: Vec<Page> = (first..first + old_n)
        .map(|i| w.procs[p].pages[&(r, i)].clone())
        .collect();
    let mut moved: Vec<Page> = old_pages.clone();
    if old_n == 0 {
        // A second mapping of the same shared object from that page on.
        moved = (0..new_n).map(|k| next_page(&head, k as u64)).collect();
        if let Some(first_page) = moved.first_mut() {
            first_page.back = match &head.back {
                Back::Object { inode, index, .. } => Back::Object {
                    inode: *inode,
                    index: *index,
                    shared: true,
                    copy: None,
                },
                other => other.clone(),
            };
        }
    } else {
        let last = old_pages.last().unwrap().clone();
        for k in 1..=(new_n - old_n).max(0) {
            moved.push(next_page(&last, k as u64));
        }
        moved.truncate(new_n as usize);
    }
    let placed_before = w.procs[p].placements.len();
    let unmap_old = |w: &mut World, placed: usize| {
        let pr = w.procs.get_mut(p).unwrap();
        for (k, i) in (first..first + old_n).enumerate() {
            if dontunmap {
                pr.pages.insert((r, i), left_behind(&old_pages[k]));
            } else {
                pr.pages.remove(&(r, i));
                pr.unmapped.insert((r, i), placed);
            }
        }
    };
    if let Some((dr, d)) = dest {
        // MREMAP_FIXED: whatever is at the destination is unmapped first.
        let (lo, hi) = w.regions[dr];
        w.regions[dr] = (lo.min(d), hi.max(d + new_n));
        unmap_old(w, placed_before);
        install(w, p, name, dr, d, moved, new_len);
        return Ok(Allowed::Success);
    }
    // Growing: in place when the pages after the old range are known to be free.
    if old_n > 0 && !dontunmap {
        let (_, hi) = w.regions[r];
        let tail = first + old_n..first + new_n;
        let pr = &w.procs[p];
        let occupied = tail
            .clone()
            .any(|i| i < hi && pr.pages.contains_key(&(r, i)));
        let known = tail.end <= hi && !tail.clone().any(|i| pr.unsure.contains(&(r, i)));
        let reusable = tail.clone().all(|i| {
            pr.unmapped
                .get(&(r, i))
                .is_none_or(|before| pr.placements[*before..].is_empty())
        });
        if !occupied && known && reusable {
            install(w, p, name, r, first, moved, new_len);
            return Ok(Allowed::Success);
        }
        if !occupied && !maymove {
            return Err("whether the memory after the mapping is free is unknown, so mremap may grow it in place or fail".to_string());
        }
        // Else it moves, or (where the memory after it was free after all)
        // grows in place: the new range shows the same either way, and the
        // old one, unmapped below as after a move, counts as a place a
        // later placement may have reused, so the model says nothing of it.
        if !maymove {
            return errno("ENOMEM");
        }
    }
    if !maymove {
        return errno("ENOMEM");
    }
    // Moved to a place the kernel picks.
    let nr = w.new_region(new_n);
    w.procs.get_mut(p).unwrap().placements.push(new_n as u64);
    if old_n > 0 {
        unmap_old(w, placed_before);
    }
    install(w, p, name, nr, 0, moved, new_len);
    Ok(Allowed::Success)
}

/// Whether two pages of one mapping are still in one VMA: a change of
/// protection, fork behaviour or locking to part of a mapping splits it
/// (and changing it back merges the parts again).
fn same_attributes(a: &Page, b: &Page) -> bool {
    (a.prot, a.dontfork, a.wipeonfork, a.locked) == (b.prot, b.dontfork, b.wipeonfork, b.locked)
}

/// Puts `pages` at page `first` of region `r` and points `name` at them.
fn install(w: &mut World, p: &str, name: &str, r: usize, first: i64, pages: Vec<Page>, len: u64) {
    let ps = w.ps as i64;
    let pr = w.procs.get_mut(p).unwrap();
    for (k, pg) in pages.into_iter().enumerate() {
        let key = (r, first + k as i64);
        pr.pages.insert(key, pg);
        pr.unmapped.remove(&key);
    }
    pr.maps.insert(
        name.to_string(),
        MapRef {
            region: r,
            at: first * ps,
            len,
        },
    );
}
