//! What reaches storage and what a power cut leaves: fsync, fdatasync and
//! msync(MS_SYNC) make data (and the size needed to read it back) durable;
//! everything written since may or may not have been written back, so
//! after a crash each such byte holds its durable value or a newer one.

use super::state::{End, World};

/// fsync/fdatasync of a whole file, or msync(MS_SYNC) of a byte range of it
/// (vfs_fsync_range with datasync: the range's data and the size).
pub fn sync(w: &mut World, inode: usize, range: Option<(u64, u64)>) {
    let ps = w.ps;
    w.inodes[inode].make_durable(ps, range);
}

/// sync(2) or a clean unmount: everything is on the storage.
pub fn sync_all(w: &mut World) {
    for i in 0..w.inodes.len() {
        sync(w, i, None);
    }
}

/// Whether a process still holds a file of the target open or mapped,
/// which makes an unmount fail with EBUSY.
pub fn target_busy(w: &World) -> bool {
    w.procs.values().filter(|p| p.alive()).any(|p| {
        p.fds.values().any(|o| w.inodes[w.ofds[*o].inode].on_target)
            || p.pages.values().any(|pg| {
                matches!(&pg.back, super::state::Back::Object { inode, .. } if w.inodes[*inode].on_target)
            })
    })
}

/// A power cut: every process dies; on a target whose data outlive it the
/// files keep what was durable, each byte written since possibly newer; on
/// one kept in memory (tmpfs) nothing is left. Err: what cannot be modelled.
pub fn crash(w: &mut World, persistent: bool) -> Result<(), String> {
    for p in w.procs.values_mut() {
        if p.alive() {
            p.end = Some(End::Crashed);
            p.fds.clear();
            p.pages.clear();
        }
        p.reaped = true;
    }
    if !persistent {
        w.dir.clear();
        w.crashed = true;
        return Ok(());
    }
    if w.crashed {
        return Err("a second power cut".to_string());
    }
    w.crashed = true;
    if w.inodes.iter().any(|i| !i.counters.is_empty()) {
        return Err("a power cut after racing increments".to_string());
    }
    if let Some(name) = w.unlinked.first() {
        return Err(format!(
            "whether the unlink of `{name}` reached the storage before the power cut depends on its directory being synced"
        ));
    }
    let ps = w.ps;
    let names: Vec<(String, usize)> = w.dir.iter().map(|(n, i)| (n.clone(), *i)).collect();
    for (name, id) in names {
        let ino = &mut w.inodes[id];
        if ino.created {
            return Err(format!(
                "whether `{name}`, made during the case, survives a power cut depends on its directory being synced"
            ));
        }
        let Some(d) = ino.durable.take() else {
            continue;
        };
        let mut alt_sizes: Vec<u64> = d
            .pending_sizes
            .iter()
            .copied()
            .filter(|s| *s != d.size)
            .collect();
        alt_sizes.sort();
        for (at, newer) in &d.pending {
            let current = ino.byte(ps, *at);
            let durable = d.bytes.get(at).copied().unwrap_or(current);
            let mut others: Vec<u8> = newer.iter().copied().filter(|v| *v != durable).collect();
            if current != durable && !others.contains(&current) {
                others.push(current);
            }
            ino.write(ps, *at, &[durable]);
            if !others.is_empty() {
                ino.alt.insert(*at, others);
            }
        }
        ino.size = d.size;
        ino.size_alt = alt_sizes;
        ino.durable = Some(super::state::Durable {
            size: d.size,
            ..Default::default()
        });
    }
    // Files that were unlinked are gone; memfds and anonymous memory died with their processes.
    Ok(())
}
