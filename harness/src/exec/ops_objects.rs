//! Worker operations on objects outside the scratch directory (/dev/zero,
//! pipes, the directory itself, POSIX and System V shared memory), on the
//! process's own limits and privileges, and on another process's memory.
//! Kept apart from `ops` (files and mappings) because each reaches beyond
//! the case's sandbox in its own named way, never through a path.

#![allow(clippy::result_large_err)]

use super::ops::{check, counted, last_errno, with_bytes, MapInfo, OpResult, WorkerState};
use super::protocol::{Call, Observation};
use crate::case::model::{Remote, Rlimit, Special};
use crate::case::values::Bytes;
use crate::target::ipc;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGXFSZ handler: the step's call went past RLIMIT_FSIZE.
static XFSZ: AtomicBool = AtomicBool::new(false);

extern "C" fn on_xfsz(_: libc::c_int) {
    XFSZ.store(true, Ordering::SeqCst);
}

/// SIGXFSZ is caught, like SIGSEGV and SIGBUS, so a case can expect it as
/// the step's signal instead of losing the process to its default action
/// (which ends it). `ignore_signal` replaces the handler: then the call's
/// EFBIG is what the step observes.
pub fn install_xfsz_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler only stores an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_xfsz as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGXFSZ, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(super) fn xfsz_clear() {
    XFSZ.store(false, Ordering::SeqCst);
}

/// The step's observation, or SIGXFSZ if the call raised it (the kernel
/// sends it with the EFBIG it returns; si_code SI_USER, nothing done).
pub(super) fn xfsz_observed(obs: Observation) -> Observation {
    if !XFSZ.swap(false, Ordering::SeqCst) {
        return obs;
    }
    Observation::of(super::protocol::Outcome::Signal {
        signal: "SIGXFSZ".to_string(),
        si_code: crate::names::si_code_name(libc::SIGXFSZ, libc::SI_USER),
        offset: 0,
        done: 0,
        map_offset: 0,
    })
}

/// The uid and gid an unprivileged process runs as (nobody, nogroup).
const NOBODY: libc::uid_t = 65534;

pub(super) fn dispatch(w: &mut WorkerState, call: &Call) -> OpResult {
    match call {
        Call::OpenSpecial { what, flags, name } => open_special(w, *what, *flags, name),
        Call::ShmOpen {
            label,
            flags,
            mode,
            name,
        } => {
            let c = shm_path(w, label)?;
            // SAFETY: valid C string.
            let fd = unsafe { libc::shm_open(c.as_ptr(), *flags | libc::O_CLOEXEC, *mode) };
            keep_fd(w, fd, name)
        }
        Call::ShmUnlink { label } => {
            let c = shm_path(w, label)?;
            // SAFETY: valid C string.
            check(unsafe { libc::shm_unlink(c.as_ptr()) })
        }
        Call::Shmget {
            size,
            hugetlb,
            name,
        } => shmget(w, *size, *hugetlb, name),
        Call::Shmat {
            seg,
            read_only,
            name,
        } => shmat(w, seg, *read_only, name),
        Call::Shmdt { map } => {
            let m = w.map(map)?;
            // SAFETY: detaches an attachment; a non-attachment is EINVAL.
            // The name stays, as after munmap: later accesses must fault.
            check(unsafe { libc::shmdt(m.addr as *const _) })
        }
        Call::ShmRmid { seg } => {
            let id = segment(w, seg)?;
            // SAFETY: plain syscall.
            check(unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) })
        }
        Call::Setrlimit { resource, limit } => {
            let r = match resource {
                Rlimit::As => libc::RLIMIT_AS,
                Rlimit::Memlock => libc::RLIMIT_MEMLOCK,
                Rlimit::Fsize => libc::RLIMIT_FSIZE,
            };
            let lim = libc::rlimit {
                rlim_cur: *limit,
                rlim_max: *limit,
            };
            // SAFETY: a valid rlimit.
            check(unsafe { libc::setrlimit(r, &lim) })
        }
        Call::IgnoreSignal { signo } => {
            // SAFETY: SIG_IGN for a signal the harness does not use itself
            // (validation refuses the fault signals and the death signal).
            let old = unsafe { libc::signal(*signo, libc::SIG_IGN) };
            if old == libc::SIG_ERR {
                return Err(last_errno());
            }
            Ok(Observation::ok())
        }
        Call::DropPrivileges => drop_privileges(),
        Call::Address { map, at } => {
            let m = w.map(map)?;
            let mut obs = Observation::ok();
            obs.value = Some(m.addr.wrapping_add(*at as usize) as i64);
            Ok(obs)
        }
        Call::RemoteRead {
            pid,
            addr,
            len,
            via,
        } => remote_read(*pid, *addr, *len, *via),
        Call::RemoteWrite {
            pid,
            addr,
            data,
            via,
        } => remote_write(*pid, *addr, data, *via),
        _ => Err(Observation::error("not an object operation")),
    }
}

fn keep_fd(w: &mut WorkerState, fd: i32, name: &str) -> OpResult {
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: the kernel just gave us this fd.
    w.fds
        .insert(name.to_string(), unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(Observation::ok())
}

fn open_special(w: &mut WorkerState, what: Special, flags: i32, name: &str) -> OpResult {
    match what {
        Special::DevZero => {
            // SAFETY: a constant path.
            let fd = unsafe { libc::open(c"/dev/zero".as_ptr(), flags | libc::O_CLOEXEC) };
            keep_fd(w, fd, name)
        }
        Special::Directory => {
            let c = CString::new(w.dir.as_os_str().as_encoded_bytes())
                .map_err(|_| Observation::error("NUL in the scratch directory's path"))?;
            // SAFETY: valid C string.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            keep_fd(w, fd, name)
        }
        Special::Pipe => {
            let mut fds = [0i32; 2];
            // SAFETY: room for two fds.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(last_errno());
            }
            keep_fd(w, fds[0], name)?;
            keep_fd(w, fds[1], &format!("{name}_w"))
        }
    }
}

/// The case's shm_open name `label`, made the run's and the case's own.
fn shm_path(w: &WorkerState, label: &str) -> Result<CString, Observation> {
    let name = ipc::shm_name(
        super::worker::harness_pid(),
        &ipc::case_token(&w.dir),
        label,
    );
    CString::new(name).map_err(|_| Observation::error("NUL in shm name"))
}

fn segment(w: &WorkerState, name: &str) -> Result<i32, Observation> {
    w.segs.get(name).copied().ok_or_else(|| {
        Observation::error(format!(
            "no segment named `{name}` in this process (did its shmget fail?)"
        ))
    })
}

fn shmget(w: &mut WorkerState, size: u64, hugetlb: bool, name: &str) -> OpResult {
    let flags = 0o600 | libc::IPC_CREAT | if hugetlb { libc::SHM_HUGETLB } else { 0 };
    // SAFETY: plain syscall.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size as usize, flags) };
    if id < 0 {
        return Err(last_errno());
    }
    // Registered before anything else happens, so cleanup finds it even
    // if this process is killed a moment later.
    let me = std::process::id() as i32;
    if let Err(e) = ipc::register_segment(
        super::worker::harness_pid(),
        &ipc::case_token(&w.dir),
        id,
        me,
    ) {
        // SAFETY: removes the segment just made.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        return Err(Observation::error(format!(
            "cannot register segment {id} for cleanup in {}: {e}",
            ipc::SHM_DIR
        )));
    }
    w.segs.insert(name.to_string(), id);
    Ok(Observation::ok())
}

fn shmat(w: &mut WorkerState, seg: &str, read_only: bool, name: &str) -> OpResult {
    let id = segment(w, seg)?;
    // SAFETY: a zeroed shmid_ds is valid for IPC_STAT to fill.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: valid buffer.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } != 0 {
        return Err(last_errno());
    }
    let flags = if read_only { libc::SHM_RDONLY } else { 0 };
    // SAFETY: the kernel picks the address.
    let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if p as isize == -1 {
        return Err(last_errno());
    }
    w.maps.insert(
        name.to_string(),
        MapInfo {
            addr: p as usize,
            len: ds.shm_segsz as u64,
            leak: None,
        },
    );
    Ok(Observation::ok())
}

fn drop_privileges() -> OpResult {
    // SAFETY: credential syscalls with constant arguments.
    unsafe {
        if libc::geteuid() == 0
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0)
        {
            return Err(last_errno());
        }
        // setuid from root cleared the permitted and effective sets; this
        // clears them (and the inheritable and ambient ones) for a process
        // that was never root but had capabilities.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [0u32; 6]; // two {effective, permitted, inheritable}
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(last_errno());
        }
    }
    Ok(Observation::ok())
}

fn proc_mem(pid: i32, flags: i32) -> Result<OwnedFd, Observation> {
    let c = CString::new(format!("/proc/{pid}/mem")).expect("no NUL in a number");
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn remote_read(pid: i32, addr: u64, len: u64, via: Remote) -> OpResult {
    let mut buf = vec![0u8; len as usize];
    let n = match via {
        Remote::ProcessVm => {
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let remote = libc::iovec {
                iov_base: addr as *mut _,
                iov_len: buf.len(),
            };
            // SAFETY: the local iovec is our buffer; the remote one is the target's.
            unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) }
        }
        Remote::ProcMem => {
            let fd = proc_mem(pid, libc::O_RDONLY)?;
            // SAFETY: reading into our buffer.
            unsafe {
                libc::pread64(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    addr as i64,
                )
            }
        }
        Remote::Ptrace => {
            traced(pid, |pid| {
                for (i, chunk) in buf.chunks_mut(8).enumerate() {
                    let word = peek(pid, addr + 8 * i as u64)?;
                    chunk.copy_from_slice(&word.to_ne_bytes()[..chunk.len()]);
                }
                Ok(())
            })?;
            len as isize
        }
    };
    if n < 0 {
        return Err(last_errno());
    }
    buf.truncate(n as usize);
    Ok(with_bytes(buf))
}

fn remote_write(pid: i32, addr: u64, data: &Bytes, via: Remote) -> OpResult {
    let bytes = data.materialize().map_err(Observation::error)?;
    let n = match via {
        Remote::ProcessVm => {
            let local = libc::iovec {
                iov_base: bytes.as_ptr() as *mut _,
                iov_len: bytes.len(),
            };
            let remote = libc::iovec {
                iov_base: addr as *mut _,
                iov_len: bytes.len(),
            };
            // SAFETY: the local iovec is our buffer; the remote one is the target's.
            unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) }
        }
        Remote::ProcMem => {
            let fd = proc_mem(pid, libc::O_RDWR)?;
            // SAFETY: writing from our buffer.
            unsafe {
                libc::pwrite64(
                    fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    addr as i64,
                )
            }
        }
        Remote::Ptrace => {
            traced(pid, |pid| {
                for (i, chunk) in bytes.chunks(8).enumerate() {
                    let at = addr + 8 * i as u64;
                    // A partial last word keeps the target's bytes past the data.
                    let mut word = if chunk.len() < 8 { peek(pid, at)? } else { 0 }.to_ne_bytes();
                    word[..chunk.len()].copy_from_slice(chunk);
                    // SAFETY: POKEDATA into a stopped tracee.
                    let rc = unsafe {
                        libc::ptrace(
                            libc::PTRACE_POKEDATA,
                            pid,
                            at as *mut libc::c_void,
                            i64::from_ne_bytes(word),
                        )
                    };
                    if rc != 0 {
                        return Err(last_errno());
                    }
                }
                Ok(())
            })?;
            bytes.len() as isize
        }
    };
    counted(n)
}

fn peek(pid: i32, at: u64) -> Result<i64, Observation> {
    // SAFETY: PEEKDATA from a stopped tracee; errno tells an error from a word of -1.
    unsafe {
        *libc::__errno_location() = 0;
        let word = libc::ptrace(libc::PTRACE_PEEKDATA, pid, at as *mut libc::c_void, 0);
        if word == -1 && *libc::__errno_location() != 0 {
            return Err(last_errno());
        }
        Ok(word)
    }
}

/// Runs `f` with `pid` seized and stopped (PTRACE_SEIZE, PTRACE_INTERRUPT:
/// no SIGSTOP is queued to it), then detaches, so the target goes on as if
/// nothing was: a blocking read of its channel restarts.
fn traced(pid: i32, f: impl FnOnce(i32) -> Result<(), Observation>) -> Result<(), Observation> {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: ptrace requests on the target pid; waitpid for its stop.
    unsafe {
        if libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) != 0 {
            return Err(last_errno());
        }
        let result = if libc::ptrace(libc::PTRACE_INTERRUPT, pid, null, null) != 0 {
            Err(last_errno())
        } else {
            let mut status = 0;
            loop {
                let r = libc::waitpid(pid, &mut status, libc::__WALL);
                if r == pid || *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
            f(pid)
        };
        libc::ptrace(libc::PTRACE_DETACH, pid, null, null);
        result
    }
}
