//! Processes addressed by pidfd, never by a bare pid.
//!
//! A pid names a process only until that process is reaped; after that the
//! kernel may give the number to any new process (pid_max is often 32768).
//! A pidfd, opened while the process is known not to be reaped yet, keeps
//! naming that one process: signals through it to a reaped process fail
//! with ESRCH instead of reaching a stranger. These are the harness's only
//! calls of the three syscalls, one function each (raw syscalls: glibc
//! wrappers for them are recent).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// waitid's idtype for a pidfd (Linux 5.4); libc does not name it.
const P_PIDFD: libc::idtype_t = 3;

/// pidfd_open(2): a descriptor for process `pid`. Call it only while `pid`
/// cannot have been reaped: our own unreaped child, or a process whose
/// parent has not reaped it.
pub fn open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor (close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// pidfd_send_signal(2): `sig` to the process of `pidfd`, like kill(2)
/// (a zombie accepts it), but ESRCH once it was reaped.
pub fn send_signal(pidfd: &OwnedFd, sig: i32) -> Result<(), nix::errno::Errno> {
    // SAFETY: plain syscall; a null siginfo makes it behave as kill(2).
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last())
    }
}

/// How a process ended, as waitid reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Killed(i32),
}

/// waitid(P_PIDFD, WEXITED): waits for the process of `pidfd`, which must
/// be our child, to end, and reaps it unless `reap` is false (WNOWAIT: it
/// stays a zombie, which keeps its pid and process group id taken).
/// ECHILD if it is not our child (or was reaped already). EINTR is retried.
pub fn wait(pidfd: &OwnedFd, reap: bool) -> Result<Ended, nix::errno::Errno> {
    let options = libc::WEXITED | libc::__WALL | if reap { 0 } else { libc::WNOWAIT };
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on a descriptor we own, `info` is ours to fill.
        let r =
            unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, options) };
        if r < 0 {
            match nix::errno::Errno::last() {
                nix::errno::Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        // SAFETY: waitid filled `info` for a child that changed state.
        let status = unsafe { info.si_status() };
        return Ok(match info.si_code {
            libc::CLD_EXITED => Ended::Exited(status),
            _ => Ended::Killed(status),
        });
    }
}
