//! What each operation does to the model's state and what it must observe:
//! the errno rules of each call as the kernel checks them, in its order,
//! and the effect of a successful one.

use super::allowed::{Allowed, PossibleBytes};
use super::durability;
use super::fault::{self, Stop};
use super::fs_table;
use super::state::{self, Back, End, Inode, MapRef, Ofd, Page, Proc, World};
use crate::case::model::{Op, Probe, ReadFrom, Step};
use crate::exec::plan;
use crate::exec::protocol::{Call, ExitStatus, Place, Span};
use crate::target::Environment;

/// What a step observes, or why the model cannot say.
pub type Outcome = Result<Allowed, String>;

/// MAP_DROPPABLE (Linux 6.11), a mapping type of its own.
const MAP_DROPPABLE: i32 = 0x08;

/// The largest user address on x86-64 with 4-level page tables (TASK_SIZE).
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

fn errno(name: &str) -> Outcome {
    Ok(Allowed::errno(name))
}

fn from_stop(s: Stop) -> Outcome {
    match s {
        Stop::Fault(sig, code) => Ok(Allowed::signal(sig, code)),
        Stop::Unmodeled(why) => Err(why),
    }
}

/// The process a step runs in, started fresh when first named.
fn proc_name(w: &mut World, step: &Step) -> Result<String, String> {
    let name = step
        .process
        .clone()
        .ok_or_else(|| "a worker step names no process".to_string())?;
    let p = w.procs.entry(name.clone()).or_default();
    if !p.alive() {
        return Err(format!(
            "process `{name}` has ended: the harness cannot run its step"
        ));
    }
    Ok(name)
}

fn ofd_of(w: &World, proc: &str, fd: &str) -> Result<usize, String> {
    w.procs[proc].fds.get(fd).copied().ok_or_else(|| {
        format!("no fd named `{fd}` in `{proc}` (its open failed): the harness reports an error")
    })
}

fn map_of(w: &World, proc: &str, map: &str) -> Result<MapRef, String> {
    w.procs[proc].maps.get(map).copied().ok_or_else(|| {
        format!(
            "no mapping named `{map}` in `{proc}` (its mmap failed): the harness reports an error"
        )
    })
}

/// A span's start (region, offset) and length.
fn span_of(w: &World, proc: &str, s: &Span) -> Result<(usize, i64, u64), String> {
    let m = map_of(w, proc, &s.map)?;
    let len = s
        .len
        .unwrap_or_else(|| m.len.saturating_sub(s.at.max(0) as u64));
    Ok((m.region, m.at + s.at, len))
}

/// Where an address argument points: a place in a region, or a raw number.
enum Where {
    In(usize, i64),
    Raw(u64),
}

fn place_of(w: &World, proc: &str, p: &Place) -> Result<Where, String> {
    Ok(match p {
        Place::Raw(v) => Where::Raw(*v),
        Place::InMap { map, at } => {
            let m = map_of(w, proc, map)?;
            Where::In(m.region, m.at + at)
        }
    })
}

fn ps_i(w: &World) -> i64 {
    w.ps as i64
}

/// The pages [first, first + n) of a region, known to be mapped or not.
/// Err when part of the range lies outside what the case made.
fn within_extent(w: &World, region: usize, first: i64, n: i64) -> Result<(), String> {
    let (lo, hi) = w.regions[region];
    if first < lo || first + n > hi {
        return Err("the range reaches outside the mappings the case made: what the kernel put there is unknown".to_string());
    }
    Ok(())
}

/// Performs one step on the model.
pub fn perform(w: &mut World, env: &Environment, step: &Step) -> Outcome {
    match &step.op {
        Op::Fork => fork(w, step),
        Op::Exit { code } => {
            let p = proc_name(w, step)?;
            end_process(w, &p, End::Exited(*code));
            Ok(Allowed::Success)
        }
        Op::Wait { target } => wait(w, target),
        Op::Kill { target, signal } => kill(w, target, signal),
        Op::CheckFile {
            path,
            at,
            len,
            from,
        } => {
            if *from == ReadFrom::Storage {
                fs_table::storage_is_cache(env)?;
            }
            let at = at.resolve_offset(w.ps)?;
            let len = len.as_ref().map(|l| l.resolve_len(w.ps)).transpose()?;
            let Some(&inode) = w.dir.get(path) else {
                return errno("ENOENT");
            };
            read_file(w, inode, at as u64, len)
        }
        Op::Crash => {
            let persistent = fs_table::has(env, Probe::Persistent)?;
            durability::crash(w, persistent)?;
            Ok(Allowed::Success)
        }
        Op::Remount { read_only } => {
            if durability::target_busy(w) {
                return errno("EBUSY");
            }
            durability::sync_all(w);
            w.read_only = *read_only;
            Ok(Allowed::Success)
        }
        Op::DropCaches => {
            if env.euid != 0 {
                return Err("drop_caches without root".to_string());
            }
            durability::sync_all(w);
            Ok(Allowed::Success)
        }
        Op::FillFs { .. } => Err("filling the filesystem (ENOSPC) is not modelled".to_string()),
        Op::Together { .. } => Err("a `together` inside `together`".to_string()),
        Op::Fstat { fd } => {
            let judged = std::iter::once(&step.expect)
                .chain(step.variants.iter().map(|v| &v.expect))
                .flatten()
                .filter_map(|e| e.stat.as_ref())
                .any(|s| s.blocks.is_some() || s.mtime.is_some() || s.ctime.is_some());
            if judged {
                return Err("timestamps and st_blocks are not modelled".to_string());
            }
            let p = proc_name(w, step)?;
            let o = &w.ofds[ofd_of(w, &p, fd)?];
            let ino = &w.inodes[o.inode];
            if !ino.size_alt.is_empty() {
                let sizes = std::iter::once(ino.size).chain(ino.size_alt.iter().copied());
                return Ok(Allowed::one_of(
                    sizes.map(|s| Allowed::Stat { size: s as i64 }).collect(),
                ));
            }
            Ok(Allowed::Stat {
                size: ino.size as i64,
            })
        }
        Op::Futimens { fd, .. } => {
            let p = proc_name(w, step)?;
            if w.ofds[ofd_of(w, &p, fd)?].path_only {
                return Err("futimens of an O_PATH fd".to_string());
            }
            // It changes only timestamps, which the model does not follow.
            Ok(Allowed::Success)
        }
        Op::Pagemap { .. } => Err("page frame numbers (pagemap) are not modelled".to_string()),
        // --- issue 18, part A ---
        Op::Io { .. } => Err("a mapping as a syscall's buffer (io) is not modelled".to_string()),
        Op::AddSeals { .. } | Op::GetSeals { .. } => {
            Err("memfd seals are not modelled".to_string())
        }
        Op::Dup { .. } => Err("fd duplication (dup, dup2) is not modelled".to_string()),
        Op::Lseek { .. } => Err("file offsets (lseek) are not modelled".to_string()),
        Op::Mlockall { .. } | Op::Munlockall => {
            Err("mlockall and munlockall are not modelled".to_string())
        }
        Op::Smaps { .. } => Err("smaps fields (memory accounting) are not modelled".to_string()),
        // A thread acts in its process's address space and fd table: the
        // model follows processes, so a step in a thread is its process's
        // step, and starting one changes nothing the model follows.
        Op::SpawnThread => {
            proc_name(w, step)?;
            Ok(Allowed::Success)
        }
        Op::Vmsplice { .. }
        | Op::Read { .. }
        | Op::IoUringRegister { .. }
        | Op::IoUringFixed { .. }
        | Op::IoUringUnregister { .. } => Err(format!(
            "`{}` is not modelled: the model has no pipes, rings or pinned pages, \
             and what a pin sees after fork is what these cases exist to measure",
            step.op.name()
        )),
        op if op.uses_system_state() => Err(format!(
            "`{}` is not modelled: the model knows files, memfds and anonymous memory, \
             not /dev/zero, pipes, shared memory objects, limits, credentials or another \
             process's view of memory",
            step.op.name()
        )),
        _ => {
            let p = proc_name(w, step)?;
            let call = plan::call(step, w.ps)?.ok_or("not a worker call")?;
            worker_call(w, env, &p, &call)
        }
    }
}

fn worker_call(w: &mut World, env: &Environment, p: &str, call: &Call) -> Outcome {
    match call {
        Call::Open {
            path,
            flags,
            mode,
            name,
        } => open(w, env, p, path, *flags, *mode, name),
        Call::Close { fd } => {
            ofd_of(w, p, fd)?;
            w.procs.get_mut(p).unwrap().fds.remove(fd);
            Ok(Allowed::Success)
        }
        Call::Ftruncate { fd, len } => {
            let o = w.ofds[ofd_of(w, p, fd)?].clone();
            if o.path_only {
                return errno("EBADF");
            }
            if *len < 0 || !o.write {
                return errno("EINVAL");
            }
            if *len as u64 > 1 << 40 {
                return Err("ftruncate to a size near the filesystem's limit".to_string());
            }
            truncate(w, o.inode, *len as u64);
            Ok(Allowed::Success)
        }
        Call::Pread { fd, at, len } => {
            let o = w.ofds[ofd_of(w, p, fd)?].clone();
            if o.path_only || !o.read {
                return errno("EBADF");
            }
            if *at < 0 {
                return errno("EINVAL");
            }
            direct_aligned(w, &o, *at as u64, *len)?;
            read_file(w, o.inode, *at as u64, Some(*len))
        }
        Call::Pwrite { fd, at, data } => {
            let id = ofd_of(w, p, fd)?;
            if *at < 0 {
                return errno("EINVAL");
            }
            write_fd(w, id, Some(*at as u64), data)
        }
        Call::Write { fd, data } => {
            let id = ofd_of(w, p, fd)?;
            write_fd(w, id, None, data)
        }
        Call::Fsync { fd } | Call::Fdatasync { fd } => {
            let o = w.ofds[ofd_of(w, p, fd)?].clone();
            if o.path_only {
                return errno("EBADF");
            }
            // A read-only image (erofs, squashfs) has no fsync method.
            if w.inodes[o.inode].on_target && !fs_table::has(env, Probe::Writable)? {
                return errno("EINVAL");
            }
            durability::sync(w, o.inode, None);
            Ok(Allowed::Success)
        }
        Call::Unlink { path } => {
            if path.contains('/') {
                return Err("paths in subdirectories are not modelled".to_string());
            }
            if !w.dir.contains_key(path) {
                return errno("ENOENT");
            }
            if w.read_only || !fs_table::has(env, Probe::Writable)? {
                return errno("EROFS");
            }
            if let Some(i) = w.dir.remove(path) {
                if !w.inodes[i].created {
                    w.unlinked.push(path.clone());
                }
            }
            Ok(Allowed::Success)
        }
        Call::MemfdCreate { label, flags, name } => {
            if flags & libc::MFD_HUGETLB != 0 {
                return Err("hugetlb memory is not modelled".to_string());
            }
            let known = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
            if flags & !known != 0 || label.len() > 249 {
                return errno("EINVAL");
            }
            let inode = w.new_inode(Inode::default());
            add_fd(w, p, name, inode, true, true, false, false);
            Ok(Allowed::Success)
        }
        Call::Mmap {
            fd,
            len,
            prot,
            flags,
            offset,
            addr,
            name,
        } => mmap(
            w,
            env,
            p,
            fd.as_deref(),
            *len,
            *prot,
            *flags,
            *offset,
            addr.as_ref(),
            name,
        ),
        Call::Munmap { span } => munmap(w, p, span),
        Call::Mprotect { span, prot } => mprotect(w, p, span, *prot),
        Call::Msync { span, flags } => msync(w, p, span, *flags),
        Call::Madvise { span, advice } => madvise(w, env, p, span, *advice),
        Call::Mremap {
            map,
            at,
            old_len,
            new_len,
            flags,
            new_addr,
            name,
        } => super::remap::mremap(
            w,
            p,
            map,
            *at,
            *old_len,
            *new_len,
            *flags,
            new_addr.as_ref(),
            name,
        ),
        Call::Store { map, at, data } => {
            let m = map_of(w, p, map)?;
            let bytes = data.materialize()?;
            match fault::store(w, p, m.region, m.at + at, &bytes) {
                Ok(()) => Ok(Allowed::Success),
                Err(s) => from_stop(s),
            }
        }
        Call::Load { map, at, len } => {
            let m = map_of(w, p, map)?;
            match fault::load(w, p, m.region, m.at + at, *len) {
                Ok(b) => Ok(match counter_at(w, p, m.region, m.at + at, *len) {
                    Some(c) => Allowed::Value {
                        lo: c.lo as i64,
                        hi: c.hi as i64,
                    },
                    None => Allowed::Bytes(b),
                }),
                Err(s) => from_stop(s),
            }
        }
        Call::Increment {
            map,
            at,
            count,
            width,
            atomic,
        } => {
            let m = map_of(w, p, map)?;
            let start = m.at + at;
            if *count == 0 {
                // No increment, no access.
                return Ok(Allowed::Success);
            }
            if *atomic {
                // A locked add is a write access: the protection is checked
                // before the page (past EOF: SEGV_ACCERR, not SIGBUS).
                if let Err(s) = fault::writable(w, p, m.region, start, *width as u64) {
                    return from_stop(s);
                }
            }
            let raced = counter_at(w, p, m.region, start, *width as u64);
            let cur = match fault::load(w, p, m.region, start, *width as u64) {
                Ok(b) if b.is_exact() || raced.is_some() => b.first,
                Ok(_) => return Err("an increment of uncertain bytes".to_string()),
                Err(s) => return from_stop(s),
            };
            let next = match width {
                4 => u32::from_ne_bytes(cur[..4].try_into().unwrap())
                    .wrapping_add(*count as u32)
                    .to_ne_bytes()
                    .to_vec(),
                8 => u64::from_ne_bytes(cur[..8].try_into().unwrap())
                    .wrapping_add(*count)
                    .to_ne_bytes()
                    .to_vec(),
                _ => return Err(format!("an increment of width {width}")),
            };
            if let Err(s) = fault::store(w, p, m.region, start, &next) {
                return from_stop(s);
            }
            if let (Some(c), Some((inode, at))) =
                (raced, object_at(w, p, m.region, start, *width as u64))
            {
                // A counter known to a range, incremented alone: the range moves.
                let max = if *width == 4 {
                    u32::MAX as u64
                } else {
                    u64::MAX
                };
                if c.hi.checked_add(*count).is_none_or(|h| h > max) {
                    return Err(
                        "an increment past the width of a counter known to a range".to_string()
                    );
                }
                let ps = w.ps;
                w.inodes[inode].set_counter(
                    ps,
                    state::Counter {
                        at,
                        lo: c.lo + count,
                        hi: c.hi + count,
                        ..c
                    },
                );
            }
            Ok(Allowed::Success)
        }
        Call::Mlock { .. } if env.euid != 0 => {
            Err("mlock under RLIMIT_MEMLOCK (an unprivileged user) is not modelled".to_string())
        }
        Call::Mlock { span, flags } => lock(w, p, span, *flags, true),
        Call::Munlock { span } => lock(w, p, span, None, false),
        Call::Mincore { span } => {
            let (r, first, len) = match range_start(w, p, span)? {
                Ok(v) => v,
                Err(e) => return errno(e),
            };
            let n = len.div_ceil(w.ps) as i64;
            within_extent(w, r, first, n)?;
            if mapped_pages(w, p, r, first, n)?.1 {
                return errno("ENOMEM");
            }
            Err("which pages are resident (mincore) is not modelled".to_string())
        }
        Call::Fstat { .. } | Call::Futimens { .. } | Call::Pagemap { .. } | Call::Wait { .. } => {
            Err("not modelled".to_string())
        }
        // Issue 18 part A's calls never reach here: `step` refuses their ops first.
        Call::Io { .. }
        | Call::AddSeals { .. }
        | Call::GetSeals { .. }
        | Call::Dup { .. }
        | Call::Lseek { .. }
        | Call::Mlockall { .. }
        | Call::Munlockall
        | Call::Smaps { .. }
        | Call::Vmsplice { .. }
        | Call::Read { .. }
        | Call::IoUringRegister { .. }
        | Call::IoUringFixed { .. }
        | Call::IoUringUnregister { .. } => Err("not modelled".to_string()),
        // Refused by step() before a call is made (issue 18, part B).
        Call::OpenSpecial { .. }
        | Call::ShmOpen { .. }
        | Call::ShmUnlink { .. }
        | Call::Shmget { .. }
        | Call::Shmat { .. }
        | Call::Shmdt { .. }
        | Call::ShmRmid { .. }
        | Call::Setrlimit { .. }
        | Call::IgnoreSignal { .. }
        | Call::DropPrivileges
        | Call::Address { .. }
        | Call::RemoteRead { .. }
        | Call::RemoteWrite { .. } => Err("not modelled".to_string()),
    }
}

/// The object byte a process's access at `start` of `region` reaches,
/// when the `len` bytes lie in one page that shows an object.
pub fn object_at(w: &World, p: &str, region: usize, start: i64, len: u64) -> Option<(usize, u64)> {
    let ps = ps_i(w);
    let page = start.div_euclid(ps);
    if (start + len.max(1) as i64 - 1).div_euclid(ps) != page {
        return None;
    }
    let (_, inode, _, index) = memory_of(w, p, region, page).filter(|c| c.0.is_empty())?;
    Some((inode, index * w.ps + start.rem_euclid(ps) as u64))
}

/// The counter a load of `len` bytes at `start` reads exactly, if any.
fn counter_at(w: &World, p: &str, region: usize, start: i64, len: u64) -> Option<state::Counter> {
    let (inode, at) = object_at(w, p, region, start, len)?;
    w.inodes[inode].counter(at, len)
}

/// Bytes of a file from `at`, `len` of them or to its end (pread, check_file).
fn read_file(w: &World, inode: usize, at: u64, len: Option<u64>) -> Outcome {
    let ino = &w.inodes[inode];
    let end = len.map_or(ino.size, |l| at.saturating_add(l).min(ino.size));
    if let (Some(c), true) = (
        ino.counter(at, end.saturating_sub(at)),
        ino.size_alt.is_empty(),
    ) {
        return Ok(Allowed::Value {
            lo: c.lo as i64,
            hi: c.hi as i64,
        });
    }
    let end_of = |size: u64| len.map_or(size, |l| at.saturating_add(l).min(size)).max(at);
    if ino.size_alt.iter().any(|s| end_of(*s) != end_of(ino.size)) {
        let mut options = Vec::new();
        for size in std::iter::once(ino.size).chain(ino.size_alt.iter().copied()) {
            options.push(Allowed::Bytes(file_bytes(w, ino, at, end_of(size))));
        }
        return Ok(Allowed::one_of(options));
    }
    Ok(Allowed::Bytes(file_bytes(w, ino, at, end_of(ino.size))))
}

fn file_bytes(w: &World, ino: &Inode, at: u64, end: u64) -> PossibleBytes {
    let mut out = PossibleBytes::exact((at..end).map(|o| ino.byte(w.ps, o)).collect());
    for (k, v) in ino.alt.range(at..end) {
        out.also.insert((k - at) as usize, v.clone());
    }
    out
}

fn write_fd(
    w: &mut World,
    id: usize,
    at: Option<u64>,
    data: &crate::case::values::Bytes,
) -> Outcome {
    let o = w.ofds[id].clone();
    if o.path_only || !o.write {
        return errno("EBADF");
    }
    let bytes = data.materialize()?;
    direct_aligned(w, &o, at.unwrap_or(o.offset), bytes.len() as u64)?;
    // O_APPEND writes at the end, pwrite(2) included (its BUGS section).
    let start = if o.append {
        w.inodes[o.inode].size
    } else {
        at.unwrap_or(o.offset)
    };
    if start + bytes.len() as u64 > 1 << 40 {
        return Err("a write near the filesystem's size limit".to_string());
    }
    if !w.inodes[o.inode].size_alt.is_empty() {
        return Err("a write to a file whose size is uncertain after a power cut".to_string());
    }
    let end = start + bytes.len() as u64;
    if !bytes.is_empty() {
        let ps = w.ps;
        let ino = &mut w.inodes[o.inode];
        if end > ino.size {
            // The bytes between the old end and the write read as zeros;
            // what lies past the write's end stays (set_size).
            ino.set_size(ps, end);
        }
        ino.write(ps, start, &bytes);
    }
    if at.is_none() {
        w.ofds[id].offset = end;
    }
    Ok(Allowed::value(bytes.len() as i64))
}

/// O_DIRECT I/O whose offset or length is not a multiple of the page size
/// meets the filesystem's own alignment rules (EINVAL on most, none on
/// tmpfs): not modelled.
fn direct_aligned(w: &World, o: &Ofd, at: u64, len: u64) -> Result<(), String> {
    if o.direct && (!at.is_multiple_of(w.ps) || !len.is_multiple_of(w.ps)) {
        return Err(
            "O_DIRECT I/O not aligned to pages (alignment rules differ by filesystem)".to_string(),
        );
    }
    Ok(())
}

/// ftruncate: the new size; private copies of pages wholly past a new,
/// smaller end are dropped in every process (truncate unmaps even COW pages).
pub fn truncate(w: &mut World, inode: usize, len: u64) {
    let ps = w.ps;
    let old = w.inodes[inode].size;
    w.inodes[inode].set_size(ps, len);
    if len < old {
        let first_cut = len.div_ceil(ps);
        for p in w.procs.values_mut() {
            for pg in p.pages.values_mut() {
                if let Back::Object {
                    inode: i,
                    index,
                    copy,
                    ..
                } = &mut pg.back
                {
                    if *i == inode && *index >= first_cut {
                        *copy = None;
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_fd(
    w: &mut World,
    p: &str,
    name: &str,
    inode: usize,
    read: bool,
    write: bool,
    append: bool,
    path_only: bool,
) {
    w.ofds.push(Ofd {
        inode,
        read,
        write,
        append,
        path_only,
        direct: false,
        offset: 0,
    });
    let id = w.ofds.len() - 1;
    w.procs.get_mut(p).unwrap().fds.insert(name.to_string(), id);
}

fn open(
    w: &mut World,
    env: &Environment,
    p: &str,
    path: &str,
    flags: i32,
    mode: u32,
    name: &str,
) -> Outcome {
    if path.contains('/') || path == "." || path == ".." || path.is_empty() {
        return Err(
            "paths other than plain names in the case's directory are not modelled".to_string(),
        );
    }
    let path_only = flags & libc::O_PATH != 0;
    let acc = flags & libc::O_ACCMODE;
    let (read, write) = match acc {
        libc::O_RDONLY => (true, false),
        libc::O_WRONLY => (false, true),
        libc::O_RDWR => (true, true),
        _ => return Err("O_ACCMODE 3".to_string()),
    };
    let creat = flags & libc::O_CREAT != 0 && !path_only;
    let trunc = flags & libc::O_TRUNC != 0 && !path_only;
    let read_only = w.read_only || !fs_table::has(env, Probe::Writable)?;
    let existing = w.dir.get(path).copied();
    if existing.is_some() && creat && flags & libc::O_EXCL != 0 {
        return errno("EEXIST");
    }
    if existing.is_none() && !creat {
        return errno("ENOENT");
    }
    if read_only && !path_only && (write || trunc || existing.is_none()) {
        return errno("EROFS");
    }
    if existing.is_some() && env.euid != 0 && !path_only {
        return Err("permission checks of an unprivileged user are not modelled".to_string());
    }
    let _ = mode;
    if flags & libc::O_DIRECT != 0 && !path_only && !fs_table::has(env, Probe::ODirect)? {
        return errno("EINVAL");
    }
    let inode = match existing {
        Some(i) => i,
        None => {
            let i = w.new_inode(Inode {
                on_target: true,
                created: true,
                ..Inode::default()
            });
            w.dir.insert(path.to_string(), i);
            i
        }
    };
    if trunc && w.inodes[inode].size != 0 {
        truncate(w, inode, 0);
    }
    let append = flags & libc::O_APPEND != 0;
    add_fd(
        w,
        p,
        name,
        inode,
        read && !path_only,
        write && !path_only,
        append,
        path_only,
    );
    Ok(Allowed::Success)
}

fn fork(w: &mut World, step: &Step) -> Outcome {
    let parent = proc_name(w, step)?;
    let child = step
        .name
        .clone()
        .ok_or_else(|| "a fork without `as`".to_string())?;
    let mut c: Proc = w.procs[&parent].clone();
    c.parent = Some(parent.clone());
    c.reaped = false;
    c.end = None;
    // MADV_DONTFORK: the child has nothing there; MADV_WIPEONFORK: zeros.
    c.pages.retain(|_, pg| !pg.dontfork);
    let dropped: Vec<(usize, i64)> = w.procs[&parent]
        .pages
        .iter()
        .filter(|(_, pg)| pg.dontfork)
        .map(|(k, _)| *k)
        .collect();
    for k in dropped {
        c.unmapped.insert(k, c.placements.len());
    }
    for pg in c.pages.values_mut() {
        pg.locked = false;
        if pg.wipeonfork {
            pg.back = Back::Anon {
                copy: None,
                maybe_zero: None,
            };
        }
    }
    w.procs.insert(child, c);
    Ok(Allowed::Success)
}

fn end_process(w: &mut World, p: &str, how: End) {
    let pr = w.procs.get_mut(p).unwrap();
    pr.end = Some(how);
    pr.fds.clear();
    pr.pages.clear();
}

fn wait(w: &mut World, target: &str) -> Outcome {
    let Some(t) = w.procs.get(target) else {
        return Err(format!("no process `{target}`"));
    };
    if t.reaped {
        return Err(format!(
            "`{target}` was reaped already: the harness reports an error"
        ));
    }
    let status = match &t.end {
        None => {
            return Err(format!(
                "`{target}` has not ended: waiting for it would block"
            ))
        }
        Some(End::Exited(c)) => ExitStatus::Exited(*c),
        Some(End::Killed(s)) => ExitStatus::Killed(s.clone()),
        Some(End::Crashed) => return Err("a process killed by a power cut".to_string()),
    };
    if let Some(parent) = &t.parent {
        if !w.procs[parent].alive() {
            return Err(format!(
                "`{target}`'s parent has ended: nobody can wait for it"
            ));
        }
    }
    w.procs.get_mut(target).unwrap().reaped = true;
    Ok(Allowed::Exit(status))
}

fn kill(w: &mut World, target: &str, signal: &str) -> Outcome {
    let Some(t) = w.procs.get(target) else {
        return Err(format!("no process `{target}`"));
    };
    if matches!(t.end, Some(End::Crashed)) {
        return errno("ESRCH");
    }
    if t.reaped {
        return Err(format!(
            "`{target}` was reaped already: the harness reports an error"
        ));
    }
    if signal != "SIGKILL" {
        return Err(format!(
            "the effect of {signal} on a worker is not modelled"
        ));
    }
    if t.alive() {
        end_process(w, target, End::Killed("SIGKILL".to_string()));
    }
    Ok(Allowed::Success)
}

#[allow(clippy::too_many_arguments)]
fn mmap(
    w: &mut World,
    env: &Environment,
    p: &str,
    fd: Option<&str>,
    len: u64,
    prot: i32,
    flags: i32,
    offset: i64,
    addr: Option<&Place>,
    name: &str,
) -> Outcome {
    let ps = w.ps;
    if flags & libc::MAP_HUGETLB != 0 {
        return Err("hugetlb memory is not modelled".to_string());
    }
    if env.fs_type == "hugetlbfs" && fd.is_some() && flags & libc::MAP_ANONYMOUS == 0 {
        return Err("hugetlbfs files are not modelled".to_string());
    }
    // The x86 mmap entry refuses an unaligned offset before anything else.
    if offset.rem_euclid(ps as i64) != 0 {
        return errno("EINVAL");
    }
    let anon = flags & libc::MAP_ANONYMOUS != 0;
    let ofd = match (anon, fd) {
        (true, _) => None,
        (false, None) => return errno("EBADF"),
        (false, Some(f)) => {
            let o = w.ofds[ofd_of(w, p, f)?].clone();
            if o.path_only {
                return errno("EBADF");
            }
            Some(o)
        }
    };
    if len == 0 {
        return errno("EINVAL");
    }
    let Some(rounded) = len.checked_next_multiple_of(ps) else {
        return errno("ENOMEM");
    };
    if rounded > TASK_SIZE {
        return errno("ENOMEM");
    }
    let pages = (rounded / ps) as i64;
    let pgoff = if anon { 0 } else { offset as u64 / ps };
    if pgoff.checked_add(pages as u64).is_none() {
        return errno("EOVERFLOW");
    }
    let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    // With both, the no-replace rule wins (do_mmap checks it after placing).
    let noreplace = flags & libc::MAP_FIXED_NOREPLACE != 0;
    let typ = flags & 0x0f;
    // Where it goes: a place the case named, or one the kernel picks.
    let mut at: Option<(usize, i64)> = None;
    if fixed {
        match addr.map(|a| place_of(w, p, a)).transpose()? {
            None | Some(Where::Raw(0)) => {
                return Err("MAP_FIXED at address 0 (mmap_min_addr and the LSMs decide)".to_string())
            }
            Some(Where::Raw(v)) => {
                if v % ps != 0 {
                    return errno("EINVAL");
                }
                if v.checked_add(rounded).is_none_or(|e| e > TASK_SIZE + ps) {
                    return errno("ENOMEM");
                }
                return Err("MAP_FIXED at a raw address: what is there is unknown".to_string());
            }
            Some(Where::In(r, off)) => {
                if off.rem_euclid(ps as i64) != 0 {
                    return errno("EINVAL");
                }
                at = Some((r, off.div_euclid(ps as i64)));
            }
        }
    }
    if let (true, Some((r, first))) = (noreplace, at) {
        let pr = &w.procs[p];
        if (first..first + pages).any(|i| pr.pages.contains_key(&(r, i))) {
            return errno("EEXIST");
        }
        within_extent(w, r, first, pages)?;
    }
    if !anon && prot & libc::PROT_EXEC != 0 && env.has_mount_options(&["noexec".to_string()]) {
        return Err("PROT_EXEC on a noexec mount (EPERM, or not: memfds differ)".to_string());
    }
    // The type and the file's access modes.
    let shared;
    let mut droppable = false;
    let mut maywrite = true;
    if let Some(o) = &ofd {
        match typ {
            libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE => {
                if typ == libc::MAP_SHARED_VALIDATE {
                    let legacy = 0x0f
                        | libc::MAP_FIXED
                        | libc::MAP_ANONYMOUS
                        | libc::MAP_DENYWRITE
                        | libc::MAP_EXECUTABLE
                        | libc::MAP_GROWSDOWN
                        | libc::MAP_LOCKED
                        | libc::MAP_NORESERVE
                        | libc::MAP_POPULATE
                        | libc::MAP_NONBLOCK
                        | libc::MAP_STACK
                        | libc::MAP_HUGETLB
                        | 0x400_0000; // MAP_UNINITIALIZED: LEGACY_MAP_MASK of include/linux/mman.h
                    if flags & !legacy != 0 {
                        if flags & libc::MAP_SYNC != 0
                            && env.has_mount_options(&["dax".to_string()])
                        {
                            return Err("MAP_SYNC on a DAX filesystem".to_string());
                        }
                        return errno("EOPNOTSUPP");
                    }
                }
                if prot & libc::PROT_WRITE != 0 && !o.write {
                    return errno("EACCES");
                }
                maywrite = o.write;
                if !o.read {
                    return errno("EACCES");
                }
                if flags & libc::MAP_GROWSDOWN != 0 {
                    return errno("EINVAL");
                }
                shared = true;
                let cap = if prot & libc::PROT_WRITE != 0 {
                    Probe::SharedWritableMmap
                } else {
                    Probe::SharedMmap
                };
                if w.inodes[o.inode].on_target && !fs_table::has(env, cap)? {
                    return Err(
                        "a target that refuses shared mappings (FUSE direct I/O)".to_string()
                    );
                }
            }
            libc::MAP_PRIVATE => {
                if !o.read {
                    return errno("EACCES");
                }
                if flags & libc::MAP_GROWSDOWN != 0 {
                    return errno("EINVAL");
                }
                shared = false;
            }
            _ => return errno("EINVAL"),
        }
        // file_mmap_ok: a regular file's mapping must end by MAX_LFS_FILESIZE
        // (LLONG_MAX), whatever the filesystem's own limit.
        let room = (i64::MAX as u64).checked_sub(rounded);
        if room.is_none_or(|room| pgoff > room / ps) {
            return errno("EOVERFLOW");
        }
    } else {
        match typ {
            libc::MAP_SHARED => {
                if flags & libc::MAP_GROWSDOWN != 0 {
                    return errno("EINVAL");
                }
                shared = true;
            }
            libc::MAP_PRIVATE if flags & libc::MAP_GROWSDOWN != 0 => {
                return Err("a MAP_GROWSDOWN stack mapping is not modelled".to_string())
            }
            libc::MAP_PRIVATE => shared = false,
            MAP_DROPPABLE if env.kernel() >= crate::names::KernelVersion(6, 11, 0) => {
                // Memory the kernel may drop at any time: what a load sees is not modelled.
                droppable = true;
                shared = false;
            }
            _ => return errno("EINVAL"),
        }
    }
    // Place it.
    let (region, first) = match at {
        Some((r, first)) => {
            let (lo, hi) = w.regions[r];
            w.regions[r] = (lo.min(first), hi.max(first + pages));
            (r, first)
        }
        None => {
            let r = w.new_region(pages);
            w.procs.get_mut(p).unwrap().placements.push(pages as u64);
            (r, 0)
        }
    };
    let vma = w.vma_id();
    let anon_object = if anon && shared {
        Some(w.new_inode(Inode {
            size: rounded,
            ..Inode::default()
        }))
    } else {
        None
    };
    let populate_copy = flags & libc::MAP_POPULATE != 0 && !shared && prot & libc::PROT_WRITE != 0;
    let mut new_pages = Vec::new();
    for i in 0..pages {
        let back = match (&ofd, anon_object) {
            (_, Some(obj)) => Back::Object {
                inode: obj,
                index: i as u64,
                shared: true,
                copy: None,
            },
            (Some(o), None) => Back::Object {
                inode: o.inode,
                index: pgoff + i as u64,
                shared,
                copy: None,
            },
            (None, None) => Back::Anon {
                copy: None,
                maybe_zero: None,
            },
        };
        let mut page = Page {
            prot,
            maywrite,
            back,
            dontfork: false,
            wipeonfork: false,
            locked: flags & libc::MAP_LOCKED != 0,
            vma,
        };
        if populate_copy {
            // MAP_POPULATE of a writable private mapping faults every page
            // in for writing: each page within the file is copied now.
            if let Back::Object { .. } = page.back {
                if let Ok((bytes, alt)) = fault::page_bytes(w, &page) {
                    if !alt.is_empty() {
                        return Err("populating a private copy of uncertain bytes".to_string());
                    }
                    if let Back::Object { copy, .. } = &mut page.back {
                        *copy = Some(bytes);
                    }
                }
            }
        }
        new_pages.push(page);
    }
    let pr = w.procs.get_mut(p).unwrap();
    for (i, page) in new_pages.into_iter().enumerate() {
        let key = (region, first + i as i64);
        pr.pages.insert(key, page);
        pr.unmapped.remove(&key);
        pr.unsure.remove(&key);
        if droppable {
            pr.unsure.insert(key);
        }
    }
    pr.maps.insert(
        name.to_string(),
        MapRef {
            region,
            at: first * ps as i64,
            len,
        },
    );
    Ok(Allowed::Success)
}

/// Checks an address range argument: a page-aligned start in a region.
fn range_start(
    w: &World,
    p: &str,
    span: &Span,
) -> Result<Result<(usize, i64, u64), &'static str>, String> {
    let (r, at, len) = span_of(w, p, span)?;
    if at.rem_euclid(ps_i(w)) != 0 {
        return Ok(Err("EINVAL"));
    }
    Ok(Ok((r, at.div_euclid(ps_i(w)), len)))
}

fn munmap(w: &mut World, p: &str, span: &Span) -> Outcome {
    let (r, first, len) = match range_start(w, p, span)? {
        Ok(v) => v,
        Err(e) => return errno(e),
    };
    if len == 0 {
        return errno("EINVAL");
    }
    let n = len.div_ceil(w.ps) as i64;
    within_extent(w, r, first, n)?;
    for i in first..first + n {
        // A hole a later mmap may have filled: what this unmaps is unknown.
        if let Err(Stop::Unmodeled(why)) = fault::page_at(w, p, r, i) {
            return Err(why);
        }
    }
    let pr = w.procs.get_mut(p).unwrap();
    let placed = pr.placements.len();
    for i in first..first + n {
        if pr.pages.remove(&(r, i)).is_some() {
            pr.unmapped.insert((r, i), placed);
        }
        pr.unsure.remove(&(r, i));
    }
    Ok(Allowed::Success)
}

fn mprotect(w: &mut World, p: &str, span: &Span, prot: i32) -> Outcome {
    // do_mprotect_pkey's order: both growth bits, alignment, length 0,
    // unknown bits, then the mappings.
    let grows = prot & (libc::PROT_GROWSDOWN | libc::PROT_GROWSUP);
    if grows == libc::PROT_GROWSDOWN | libc::PROT_GROWSUP {
        return errno("EINVAL");
    }
    let (r, first, len) = match range_start(w, p, span)? {
        Ok(v) => v,
        Err(e) => return errno(e),
    };
    if len == 0 {
        return Ok(Allowed::Success);
    }
    let known = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC | 0x8 /* PROT_SEM */;
    if prot & !(known | grows) != 0 {
        return errno("EINVAL");
    }
    if grows != 0 {
        // Only a MAP_GROWSDOWN mapping takes it, and the model makes none.
        return match fault::page_at(w, p, r, first) {
            Ok(_) => errno("EINVAL"),
            Err(Stop::Fault(..)) => errno("ENOMEM"),
            Err(Stop::Unmodeled(why)) => Err(why),
        };
    }
    let n = len.div_ceil(w.ps) as i64;
    for i in first..first + n {
        match fault::page_at(w, p, r, i) {
            Ok(pg) => {
                if prot & libc::PROT_WRITE != 0 && !pg.maywrite {
                    return errno("EACCES");
                }
            }
            Err(Stop::Fault(..)) => return errno("ENOMEM"),
            Err(Stop::Unmodeled(why)) => return Err(why),
        }
        let pg = w.procs.get_mut(p).unwrap().pages.get_mut(&(r, i)).unwrap();
        pg.prot = prot;
    }
    Ok(Allowed::Success)
}

/// mlock/mlock2/munlock: the range is rounded out to whole pages (no
/// EINVAL for an unaligned start on Linux); ENOMEM where a page is not
/// mapped; mlock2 knows only MLOCK_ONFAULT. Locking changes what
/// MADV_DONTNEED and msync(MS_INVALIDATE) accept, nothing a load sees.
fn lock(w: &mut World, p: &str, span: &Span, flags: Option<u32>, on: bool) -> Outcome {
    if flags.is_some_and(|f| f & !libc::MLOCK_ONFAULT != 0) {
        return errno("EINVAL");
    }
    let (r, at, len) = span_of(w, p, span)?;
    let ps = ps_i(w);
    let first = at.div_euclid(ps);
    let end = (at + len as i64 + ps - 1).div_euclid(ps);
    if end <= first {
        return Ok(Allowed::Success);
    }
    within_extent(w, r, first, end - first)?;
    let (mapped, hole) = mapped_pages(w, p, r, first, end - first)?;
    if hole {
        return Err(
            "mlock over a hole: which pages it locked before ENOMEM is not modelled".to_string(),
        );
    }
    for i in mapped {
        let pg = w.procs.get_mut(p).unwrap().pages.get_mut(&(r, i)).unwrap();
        if on && pg.prot == libc::PROT_NONE {
            return Err("mlock of PROT_NONE pages".to_string());
        }
        pg.locked = on;
    }
    Ok(Allowed::Success)
}

/// The pages of a range that are mapped, and whether some are not
/// (madvise and msync then fail with ENOMEM, having acted on the rest).
fn mapped_pages(
    w: &World,
    p: &str,
    r: usize,
    first: i64,
    n: i64,
) -> Result<(Vec<i64>, bool), String> {
    let mut mapped = Vec::new();
    let mut hole = false;
    for i in first..first + n {
        match fault::page_at(w, p, r, i) {
            Ok(_) => mapped.push(i),
            Err(Stop::Fault(..)) => hole = true,
            Err(Stop::Unmodeled(why)) => return Err(why),
        }
    }
    Ok((mapped, hole))
}

fn msync(w: &mut World, p: &str, span: &Span, flags: i32) -> Outcome {
    if flags & !(libc::MS_ASYNC | libc::MS_INVALIDATE | libc::MS_SYNC) != 0 {
        return errno("EINVAL");
    }
    let (r, first, len) = match range_start(w, p, span)? {
        Ok(v) => v,
        Err(e) => return errno(e),
    };
    if flags & libc::MS_ASYNC != 0 && flags & libc::MS_SYNC != 0 {
        return errno("EINVAL");
    }
    // PAGE_ALIGN wraps: a length within a page of 2^64 becomes 0, and succeeds.
    let rounded = len.wrapping_add(w.ps - 1) & !(w.ps - 1);
    if rounded == 0 {
        return Ok(Allowed::Success);
    }
    if rounded > TASK_SIZE {
        return errno("ENOMEM");
    }
    let n = (rounded / w.ps) as i64;
    let (lo, hi) = w.regions[r];
    // Past the region's end the kernel finds no mapping or someone else's.
    let last = (first + n).min(hi);
    if first < lo {
        return Err("the range starts before the mappings the case made".to_string());
    }
    let (mapped, hole) = mapped_pages(w, p, r, first, (last - first).max(0))?;
    if first + n > hi && !hole {
        // Whether something maps the rest is unknown; a hole already means ENOMEM.
        return Err("the range reaches past the mappings the case made".to_string());
    }
    if flags & libc::MS_INVALIDATE != 0 && mapped.iter().any(|i| w.procs[p].pages[&(r, *i)].locked)
    {
        return errno("EBUSY");
    }
    if flags & libc::MS_SYNC != 0 {
        let ps = w.ps;
        for i in &mapped {
            let pg = &w.procs[p].pages[&(r, *i)];
            // A MAP_SHARED mapping of an fd not open for writing is not
            // VM_SHARED (do_mmap clears it with VM_MAYWRITE), and msync
            // calls vfs_fsync_range only for VM_SHARED mappings: MS_SYNC
            // there writes nothing back.
            if let Back::Object {
                inode,
                index,
                shared: true,
                ..
            } = pg.back
            {
                if !pg.maywrite {
                    continue;
                }
                durability::sync(w, inode, Some((index * ps, (index + 1) * ps)));
            }
        }
    }
    if hole {
        return errno("ENOMEM");
    }
    Ok(Allowed::Success)
}

fn madvise(w: &mut World, env: &Environment, p: &str, span: &Span, advice: i32) -> Outcome {
    let (r, first, len) = match range_start(w, p, span)? {
        Ok(v) => v,
        Err(e) => return errno(e),
    };
    let simple = [
        libc::MADV_NORMAL,
        libc::MADV_RANDOM,
        libc::MADV_SEQUENTIAL,
        libc::MADV_WILLNEED,
        libc::MADV_HUGEPAGE,
        libc::MADV_NOHUGEPAGE,
    ];
    let modelled = [
        libc::MADV_DONTNEED,
        libc::MADV_FREE,
        libc::MADV_REMOVE,
        libc::MADV_DONTFORK,
        libc::MADV_DOFORK,
        libc::MADV_WIPEONFORK,
        libc::MADV_KEEPONFORK,
    ];
    let populate = [MADV_POPULATE_READ, MADV_POPULATE_WRITE].contains(&advice);
    if populate && env.kernel() < crate::names::KernelVersion(5, 14, 0) {
        return errno("EINVAL");
    }
    if !simple.contains(&advice) && !modelled.contains(&advice) && !populate {
        // madvise_behavior_valid: advice no kernel knows is EINVAL; what a
        // kernel knows since some version (or does to residency) is not modelled.
        if advice > MADV_HIGHEST_KNOWN || (26..100).contains(&advice) {
            return errno("EINVAL");
        }
        return Err(format!("madvise advice {advice} is not modelled"));
    }
    let Some(rounded) = len.checked_next_multiple_of(w.ps) else {
        return errno("EINVAL");
    };
    if rounded == 0 {
        return Ok(Allowed::Success);
    }
    let n = (rounded / w.ps) as i64;
    within_extent(w, r, first, n)?;
    if populate {
        return populate_range(w, p, r, first, n, advice == MADV_POPULATE_WRITE);
    }
    let (mapped, hole) = mapped_pages(w, p, r, first, n)?;
    // Refusals that depend on the kind of mapping come before any effect.
    for i in &mapped {
        let pg = &w.procs[p].pages[&(r, *i)];
        let anon_private = matches!(pg.back, Back::Anon { .. });
        match advice {
            libc::MADV_DONTNEED | libc::MADV_FREE | libc::MADV_REMOVE if pg.locked => {
                return errno("EINVAL")
            }
            libc::MADV_WIPEONFORK | libc::MADV_FREE if !anon_private => return errno("EINVAL"),
            libc::MADV_REMOVE => match &pg.back {
                Back::Anon { .. } => return errno("EINVAL"),
                Back::Object { shared: false, .. } => return errno("EACCES"),
                Back::Object { .. } if !pg.maywrite => return errno("EACCES"),
                Back::Object { inode, .. } => {
                    if w.inodes[*inode].on_target && !fs_table::has(env, Probe::MadvRemove)? {
                        return errno("EOPNOTSUPP");
                    }
                }
            },
            _ => {}
        }
    }
    let ps = w.ps;
    for i in mapped {
        let key = (r, i);
        let pg = w.procs[p].pages[&key].clone();
        match advice {
            libc::MADV_DONTNEED => {
                let pg = w.procs.get_mut(p).unwrap().pages.get_mut(&key).unwrap();
                match &mut pg.back {
                    Back::Object { copy, .. } => *copy = None,
                    Back::Anon { copy, maybe_zero } => {
                        *copy = None;
                        *maybe_zero = None;
                    }
                }
            }
            libc::MADV_FREE => {
                let pg = w.procs.get_mut(p).unwrap().pages.get_mut(&key).unwrap();
                if let Back::Anon { copy, maybe_zero } = &mut pg.back {
                    if copy.is_some() {
                        *maybe_zero = Some(vec![true; ps as usize]);
                    }
                }
            }
            libc::MADV_REMOVE => {
                if let Back::Object { inode, index, .. } = pg.back {
                    let size = w.inodes[inode].size;
                    let from = index * ps;
                    let to = ((index + 1) * ps).min(size);
                    if from < to {
                        w.inodes[inode].zero(ps, from, to);
                    }
                }
            }
            _ => {
                let pg = w.procs.get_mut(p).unwrap().pages.get_mut(&key).unwrap();
                match advice {
                    libc::MADV_DONTFORK => pg.dontfork = true,
                    libc::MADV_DOFORK => pg.dontfork = false,
                    libc::MADV_WIPEONFORK => pg.wipeonfork = true,
                    libc::MADV_KEEPONFORK => pg.wipeonfork = false,
                    _ => {}
                }
            }
        }
    }
    if hole {
        return errno("ENOMEM");
    }
    Ok(Allowed::Success)
}

const MADV_POPULATE_READ: i32 = 22;
const MADV_POPULATE_WRITE: i32 = 23;
/// MADV_GUARD_REMOVE (Linux 6.13), the highest advice a kernel knows today.
const MADV_HIGHEST_KNOWN: i32 = 103;

/// MADV_POPULATE_READ/WRITE: faults every page in, in order, as a load (or
/// a store of nothing) would, and stops at the first that cannot be:
/// ENOMEM where nothing is mapped, EINVAL where the protection forbids
/// the access, EFAULT where the access would raise SIGBUS.
fn populate_range(w: &mut World, p: &str, r: usize, first: i64, n: i64, write: bool) -> Outcome {
    for i in first..first + n {
        let pg = match fault::page_at(w, p, r, i) {
            Ok(pg) => pg.clone(),
            Err(Stop::Fault(..)) => return errno("ENOMEM"),
            Err(Stop::Unmodeled(why)) => return Err(why),
        };
        let allowed = if write {
            pg.prot & libc::PROT_WRITE != 0
        } else {
            pg.prot & (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) != 0
        };
        if !allowed {
            return errno("EINVAL");
        }
        match fault::page_bytes(w, &pg) {
            Ok(_) => {}
            Err(Stop::Fault(..)) => return errno("EFAULT"),
            Err(Stop::Unmodeled(why)) => return Err(why),
        }
        if write {
            // A write fault: a private page gets its own copy now.
            fault::make_private_copy(w, p, r, i).map_err(|s| match s {
                Stop::Unmodeled(why) => why,
                Stop::Fault(..) => "a populate fault".to_string(),
            })?;
        }
    }
    Ok(Allowed::Success)
}

/// Which memory a page is: the object page it follows (no process
/// named), or a process's own private page.
pub type Cell = (String, usize, i64, u64);

/// The memory a process's page is (see [`Cell`]).
pub fn memory_of(w: &World, p: &str, region: usize, page: i64) -> Option<Cell> {
    let pg = w.procs.get(p)?.pages.get(&(region, page))?;
    Some(match &pg.back {
        Back::Object {
            inode,
            index,
            copy: None,
            ..
        }
        | Back::Object {
            inode,
            index,
            shared: true,
            ..
        } => (String::new(), *inode, 0, *index),
        _ => (p.to_string(), region, page, 0),
    })
}
