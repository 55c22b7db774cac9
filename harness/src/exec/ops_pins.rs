//! Pinned pages (issue 18, part C): vmsplice(2) into a pipe, and io_uring
//! fixed buffers, the two ways a process can make the kernel hold on to
//! its pages while copy-on-write goes on around them (the territory of the
//! kernel's tools/testing/selftests/mm/cow.c). Plus a plain read(2) into
//! the harness's buffer, to see what a pipe holds.
//!
//! The rings come from the `io-uring` crate (tokio-rs), not hand-written
//! ring code: setup, registration and the submission/completion queues are
//! its business. A ring is not an fd a case may close or map, so rings live
//! in their own table, by name, in this process; fork(2) copies the table
//! with the address space (the child inherits the ring fd as the kernel
//! makes it do).

#![allow(clippy::result_large_err)]

use super::ops::{counted, last_errno, with_bytes, OpResult, WorkerState};
use super::protocol::{Call, Observation};
use crate::case::model::FixedCall;
use crate::case::values::zeroed_vec;
use io_uring::{opcode, types, IoUring};
use std::collections::HashMap;
use std::sync::Mutex;

/// A ring with its one registered buffer (start address and length).
struct Ring {
    ring: IoUring,
    addr: usize,
    len: usize,
}

/// The process's rings by name. A worker is one process performing one
/// call at a time, so the lock is never contended; it is a Mutex only to be
/// a safe static.
static RINGS: Mutex<Option<HashMap<String, Ring>>> = Mutex::new(None);

fn with_rings<T>(f: impl FnOnce(&mut HashMap<String, Ring>) -> T) -> T {
    let mut guard = RINGS.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

fn io_errno(e: std::io::Error) -> Observation {
    Observation::errno(e.raw_os_error().unwrap_or(libc::EIO))
}

pub(super) fn dispatch(w: &mut WorkerState, call: &Call) -> OpResult {
    match call {
        Call::Vmsplice { fd, span } => {
            let fd = w.fd(fd)?;
            let (addr, len) = w.span(span)?;
            let iov = libc::iovec {
                iov_base: addr as *mut _,
                iov_len: len,
            };
            // SAFETY: the kernel reads the case's own mapping (or refuses
            // with EFAULT); flags 0: the pages are referenced, not gifted.
            counted(unsafe { libc::vmsplice(fd, &iov, 1, 0) })
        }
        Call::Read { fd, len } => {
            let fd = w.fd(fd)?;
            let mut buf = zeroed_vec(*len).map_err(Observation::error)?;
            // SAFETY: reading into our own buffer of that length. One call,
            // as a pipe answers with what it holds.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(last_errno());
            }
            buf.truncate(n as usize);
            Ok(with_bytes(buf))
        }
        Call::IoUringRegister { span, name } => {
            let (addr, len) = w.span(span)?;
            let ring = IoUring::new(2).map_err(io_errno)?;
            let iov = libc::iovec {
                iov_base: addr as *mut _,
                iov_len: len,
            };
            // SAFETY: the buffer is the case's mapping; the kernel pins its
            // pages (FOLL_WRITE | FOLL_LONGTERM) or refuses with an errno.
            unsafe { ring.submitter().register_buffers(&[iov]) }.map_err(io_errno)?;
            with_rings(|r| r.insert(name.clone(), Ring { ring, addr, len }));
            Ok(Observation::ok())
        }
        Call::IoUringFixed {
            ring,
            call,
            fd,
            offset,
            at,
            len,
        } => {
            let fd = w.fd(fd)?;
            with_rings(|rings| {
                let r = rings.get_mut(ring).ok_or_else(|| {
                    Observation::error(format!(
                        "no io_uring ring named `{ring}` in this process (did its registration fail?)"
                    ))
                })?;
                let start = r.addr.wrapping_add(*at as usize);
                let n = len.unwrap_or((r.len as u64).saturating_sub(*at)) as u32;
                let entry = match call {
                    FixedCall::WriteFixed => {
                        opcode::WriteFixed::new(types::Fd(fd), start as *const u8, n, 0)
                            .offset(*offset as u64)
                            .build()
                    }
                    FixedCall::ReadFixed => {
                        opcode::ReadFixed::new(types::Fd(fd), start as *mut u8, n, 0)
                            .offset(*offset as u64)
                            .build()
                    }
                };
                // SAFETY: the entry names fixed buffer 0, which the kernel
                // checks the range against; it outlives the call (we wait).
                unsafe { r.ring.submission().push(&entry) }
                    .map_err(|_| Observation::error("io_uring submission queue full"))?;
                r.ring.submit_and_wait(1).map_err(io_errno)?;
                let cqe = r.ring.completion().next().ok_or_else(|| {
                    Observation::error("io_uring gave no completion after waiting")
                })?;
                let res = cqe.result();
                if res < 0 {
                    return Err(Observation::errno(-res));
                }
                let mut obs = Observation::ok();
                obs.value = Some(res as i64);
                Ok(obs)
            })
        }
        Call::IoUringUnregister { ring } => {
            let r = with_rings(|rings| rings.remove(ring)).ok_or_else(|| {
                Observation::error(format!("no io_uring ring named `{ring}` in this process"))
            })?;
            r.ring.submitter().unregister_buffers().map_err(io_errno)?;
            // Dropping the ring closes its fd and unmaps its queues.
            drop(r);
            Ok(Observation::ok())
        }
        other => Err(Observation::error(format!(
            "{other:?} is not a pinning call"
        ))),
    }
}

/// The `io_uring` probe: a ring, and one anonymous page as its fixed buffer.
pub fn probe_io_uring(page_size: usize) -> Result<(), String> {
    let ring = IoUring::new(1).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => "kernel has no io_uring (CONFIG_IO_URING)".to_string(),
        Some(libc::EPERM) => format!(
            "io_uring is disabled here (kernel.io_uring_disabled = {})",
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into())
        ),
        _ => format!("io_uring_setup failed: {e}"),
    })?;
    // SAFETY: a fresh private anonymous page, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err("probe mmap failed".into());
    }
    let iov = libc::iovec {
        iov_base: page,
        iov_len: page_size,
    };
    // SAFETY: our own page, unregistered before it is unmapped.
    let r = unsafe { ring.submitter().register_buffers(&[iov]) };
    let _ = ring.submitter().unregister_buffers();
    drop(ring);
    // SAFETY: the page mapped above.
    unsafe { libc::munmap(page, page_size) };
    r.map_err(|e| format!("io_uring cannot register a fixed buffer here: {e}"))
}
