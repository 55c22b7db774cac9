//! Turning a step as written (names, page expressions) into the call a
//! worker performs (numbers), for one page size.

use super::protocol::{Call, Place, Span};
use crate::case::model::{Addr, Op, Range, Size, Step};
use crate::names::{parse_flags, FlagKind};

fn len(s: &Size, ps: u64) -> Result<u64, String> {
    s.resolve_len(ps)
}

fn off(s: &Size, ps: u64) -> Result<i64, String> {
    s.resolve_offset(ps)
}

fn flags(kind: FlagKind, text: &str) -> Result<i32, String> {
    parse_flags(kind, text).map(|v| v as i32)
}

fn place(a: &Addr, ps: u64) -> Result<Place, String> {
    Ok(match a {
        Addr::Raw(v) => Place::Raw(*v),
        Addr::Expr(e) => Place::Raw(len(&Size::Expr(e.clone()), ps)?),
        Addr::InMap { map, at } => Place::InMap {
            map: map.clone(),
            at: off(at, ps)?,
        },
    })
}

fn span(r: &Range, ps: u64) -> Result<Span, String> {
    Ok(Span {
        map: r.map.clone(),
        at: off(&r.at, ps)?,
        len: r.len.as_ref().map(|l| len(l, ps)).transpose()?,
    })
}

/// The worker call for a step, or None for steps that are not a single
/// worker call (fork, exit, and the coordinator's own steps).
pub fn call(step: &Step, ps: u64) -> Result<Option<Call>, String> {
    let name = || step.name.clone().unwrap_or_default();
    Ok(Some(match &step.op {
        Op::Open {
            path,
            flags: f,
            mode,
        } => Call::Open {
            path: path.clone(),
            flags: flags(FlagKind::Open, f)?,
            mode: mode.unwrap_or(0o644),
            name: name(),
        },
        Op::Close { fd } => Call::Close { fd: fd.clone() },
        Op::Ftruncate { fd, len: l } => Call::Ftruncate {
            fd: fd.clone(),
            len: off(l, ps)?,
        },
        Op::Pread { fd, at, len: l } => Call::Pread {
            fd: fd.clone(),
            at: off(at, ps)?,
            len: len(l, ps)?,
        },
        Op::Pwrite { fd, at, data } => Call::Pwrite {
            fd: fd.clone(),
            at: off(at, ps)?,
            data: data.resolve(ps, None)?,
        },
        Op::Write { fd, data } => Call::Write {
            fd: fd.clone(),
            data: data.resolve(ps, None)?,
        },
        Op::Fsync { fd } => Call::Fsync { fd: fd.clone() },
        Op::Fdatasync { fd } => Call::Fdatasync { fd: fd.clone() },
        Op::Fstat { fd } => Call::Fstat { fd: fd.clone() },
        Op::Futimens { fd, time } => Call::Futimens {
            fd: fd.clone(),
            time: *time,
        },
        Op::Unlink { path } => Call::Unlink { path: path.clone() },
        Op::MemfdCreate {
            name: label,
            flags: f,
        } => Call::MemfdCreate {
            label: label.clone(),
            flags: f
                .as_deref()
                .map(|f| flags(FlagKind::Memfd, f))
                .transpose()?
                .unwrap_or(0) as u32,
            name: name(),
        },
        Op::Mmap {
            fd,
            len: l,
            prot,
            flags: f,
            offset,
            addr,
        } => Call::Mmap {
            fd: fd.clone(),
            len: len(l, ps)?,
            prot: flags(FlagKind::Prot, prot)?,
            flags: flags(FlagKind::Map, f)?,
            offset: offset
                .as_ref()
                .map(|o| off(o, ps))
                .transpose()?
                .unwrap_or(0),
            addr: addr.as_ref().map(|a| place(a, ps)).transpose()?,
            name: name(),
        },
        Op::Munmap { range } => Call::Munmap {
            span: span(range, ps)?,
        },
        Op::Mprotect { range, prot } => Call::Mprotect {
            span: span(range, ps)?,
            prot: flags(FlagKind::Prot, prot)?,
        },
        Op::Msync { range, flags: f } => Call::Msync {
            span: span(range, ps)?,
            flags: flags(FlagKind::Msync, f)?,
        },
        Op::Madvise { range, advice } => Call::Madvise {
            span: span(range, ps)?,
            advice: flags(FlagKind::Madvise, advice)?,
        },
        Op::Mlock { range, flags: f } => Call::Mlock {
            span: span(range, ps)?,
            flags: f
                .as_deref()
                .map(|f| flags(FlagKind::Mlock, f))
                .transpose()?
                .map(|v| v as u32),
        },
        Op::Munlock { range } => Call::Munlock {
            span: span(range, ps)?,
        },
        Op::Mincore { range } => Call::Mincore {
            span: span(range, ps)?,
        },
        Op::Mremap {
            map,
            at,
            old_len,
            new_len,
            flags: f,
            new_addr,
        } => Call::Mremap {
            map: map.clone(),
            at: off(at, ps)?,
            old_len: len(old_len, ps)?,
            new_len: len(new_len, ps)?,
            flags: f
                .as_deref()
                .map(|f| flags(FlagKind::Mremap, f))
                .transpose()?
                .unwrap_or(0),
            new_addr: new_addr.as_ref().map(|a| place(a, ps)).transpose()?,
            name: step.name.clone().unwrap_or_else(|| map.clone()),
        },
        Op::Store { map, at, data } => Call::Store {
            map: map.clone(),
            at: off(at, ps)?,
            data: data.resolve(ps, None)?,
        },
        Op::Load { map, at, len: l } => Call::Load {
            map: map.clone(),
            at: off(at, ps)?,
            len: len(l, ps)?,
        },
        Op::Increment {
            map,
            at,
            count,
            atomic,
            width,
        } => Call::Increment {
            map: map.clone(),
            at: off(at, ps)?,
            count: *count,
            atomic: *atomic,
            width: *width,
        },
        Op::Pagemap { map, at, swapped } => Call::Pagemap {
            map: map.clone(),
            at: off(at, ps)?,
            swapped: *swapped,
        },
        // --- issue 18, part A ---
        Op::Io {
            call: c,
            fd,
            offset,
            bufs,
        } => Call::Io {
            call: *c,
            fd: fd.clone(),
            offset: offset
                .as_ref()
                .map(|o| off(o, ps))
                .transpose()?
                .unwrap_or(0),
            bufs: bufs.iter().map(|r| span(r, ps)).collect::<Result<_, _>>()?,
        },
        Op::AddSeals { fd, seals } => Call::AddSeals {
            fd: fd.clone(),
            seals: flags(FlagKind::Seal, seals)?,
        },
        Op::GetSeals { fd } => Call::GetSeals { fd: fd.clone() },
        Op::Dup { fd, onto } => Call::Dup {
            fd: fd.clone(),
            onto: onto.clone(),
            name: name(),
        },
        Op::Lseek { fd, offset, whence } => Call::Lseek {
            fd: fd.clone(),
            offset: off(offset, ps)?,
            whence: flags(FlagKind::Whence, whence)?,
        },
        Op::Mlockall { flags: f } => Call::Mlockall {
            flags: flags(FlagKind::Mlockall, f)?,
        },
        Op::Munlockall => Call::Munlockall,
        Op::Smaps { map, at, field } => Call::Smaps {
            map: map.clone(),
            at: off(at, ps)?,
            field: *field,
        },
        Op::OpenSpecial { what, flags: f } => Call::OpenSpecial {
            what: *what,
            flags: f
                .as_deref()
                .map(|f| flags(FlagKind::Open, f))
                .transpose()?
                .unwrap_or(libc::O_RDWR),
            name: name(),
        },
        Op::ShmOpen {
            name: label,
            flags: f,
            mode,
        } => Call::ShmOpen {
            label: label.clone(),
            flags: flags(FlagKind::Open, f)?,
            mode: mode.unwrap_or(0o600),
            name: name(),
        },
        Op::ShmUnlink { name: label } => Call::ShmUnlink {
            label: label.clone(),
        },
        Op::Shmget { size, hugetlb } => Call::Shmget {
            size: len(size, ps)?,
            hugetlb: *hugetlb,
            name: name(),
        },
        Op::Shmat { seg, read_only } => Call::Shmat {
            seg: seg.clone(),
            read_only: *read_only,
            name: name(),
        },
        Op::Shmdt { map } => Call::Shmdt { map: map.clone() },
        Op::ShmRmid { seg } => Call::ShmRmid { seg: seg.clone() },
        Op::Setrlimit { resource, limit } => Call::Setrlimit {
            resource: *resource,
            limit: rlimit(limit, ps)?,
        },
        Op::IgnoreSignal { signal } => Call::IgnoreSignal {
            signo: crate::names::signal_value(signal)
                .ok_or_else(|| format!("unknown signal `{signal}`"))?,
        },
        Op::DropPrivileges => Call::DropPrivileges,
        Op::Vmsplice { fd, range } => Call::Vmsplice {
            fd: fd.clone(),
            span: span(range, ps)?,
        },
        Op::Read { fd, len: l } => Call::Read {
            fd: fd.clone(),
            len: len(l, ps)?,
        },
        Op::IoUringRegister { range } => Call::IoUringRegister {
            span: span(range, ps)?,
            name: name(),
        },
        Op::IoUringFixed {
            ring,
            call: c,
            fd,
            offset,
            at,
            len: l,
        } => Call::IoUringFixed {
            ring: ring.clone(),
            call: *c,
            fd: fd.clone(),
            offset: off(offset, ps)?,
            at: len(at, ps)?,
            len: l.as_ref().map(|l| len(l, ps)).transpose()?,
        },
        Op::IoUringUnregister { ring } => Call::IoUringUnregister { ring: ring.clone() },
        // Two calls in two processes: the coordinator's `remote` does them.
        Op::RemoteRead { .. } | Op::RemoteWrite { .. } => return Ok(None),
        Op::Remount { .. }
        | Op::FillFs { .. }
        | Op::Crash
        | Op::DropCaches
        | Op::Fork
        | Op::Exit { .. }
        | Op::Wait { .. }
        | Op::Kill { .. }
        | Op::Together { .. }
        | Op::CheckFile { .. } => return Ok(None),
        // The coordinator makes the new thread's channel and hands it over.
        Op::SpawnThread => return Ok(None),
    }))
}

/// A `setrlimit` limit: a size, or "unlimited" (RLIM_INFINITY).
pub fn rlimit(limit: &Size, ps: u64) -> Result<u64, String> {
    match limit {
        Size::Expr(e) if e.trim() == "unlimited" => Ok(libc::RLIM_INFINITY),
        other => len(other, ps),
    }
}

/// The acting process's call for `remote_read`/`remote_write`, once the
/// coordinator knows the target's pid and the address in it.
pub fn remote_call(step: &Step, ps: u64, pid: i32, addr: u64) -> Result<Option<Call>, String> {
    Ok(match &step.op {
        Op::RemoteRead { via, len: l, .. } => Some(Call::RemoteRead {
            pid,
            addr,
            len: len(l, ps)?,
            via: *via,
        }),
        Op::RemoteWrite { via, data, .. } => Some(Call::RemoteWrite {
            pid,
            addr,
            data: data.resolve(ps, None)?,
            via: *via,
        }),
        _ => None,
    })
}

pub use super::summary::summary;
