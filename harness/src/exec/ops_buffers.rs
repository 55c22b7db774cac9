//! Operations of issue 18 part A: a named mapping as the buffer of a file
//! syscall (`io`), fd duplication, and one field of /proc/self/smaps.
//!
//! The buffer calls are made once and never retried: a short count is what
//! a case about a buffer running into unmapped memory must see, and the
//! kernel's copy to or from user memory reports EFAULT instead of a signal.

#![allow(clippy::result_large_err)]

use super::ops::{check, counted, last_errno, OpResult, WorkerState};
use super::protocol::{Observation, Span};
use crate::case::model::{IoCall, SmapsField};
use std::os::fd::{FromRawFd, OwnedFd};

impl WorkerState {
    /// The call on `fd` with the mappings' memory as its buffers.
    pub(super) fn io(&self, call: IoCall, fd: &str, offset: i64, bufs: &[Span]) -> OpResult {
        let fd = self.fd(fd)?;
        let iov = bufs
            .iter()
            .map(|s| {
                self.span(s).map(|(a, l)| libc::iovec {
                    iov_base: a as *mut _,
                    iov_len: l,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let one = |i: usize| (iov[i].iov_base, iov[i].iov_len);
        // SAFETY: the buffers are the case's own mappings (or memory the
        // case expects to be refused); the kernel checks every address and
        // reports EFAULT rather than touching memory the process lacks.
        let n = unsafe {
            match call {
                IoCall::Read => libc::read(fd, one(0).0, one(0).1),
                IoCall::Write => libc::write(fd, one(0).0, one(0).1),
                IoCall::Pread => libc::pread(fd, one(0).0, one(0).1, offset),
                IoCall::Pwrite => libc::pwrite(fd, one(0).0, one(0).1, offset),
                IoCall::Readv => libc::readv(fd, iov.as_ptr(), iov.len() as i32),
                IoCall::Writev => libc::writev(fd, iov.as_ptr(), iov.len() as i32),
            }
        };
        counted(n)
    }

    /// dup(2) under a new name, or dup2(2) onto the fd named `onto`.
    pub(super) fn dup(&mut self, fd: &str, onto: Option<&str>, name: &str) -> OpResult {
        let old = self.fd(fd)?;
        match onto {
            Some(target) => {
                let new = self.fd(target)?;
                // SAFETY: both fds are ours; dup2 makes `new` refer to `old`'s
                // file, and the name `onto` keeps owning that number.
                let rc = unsafe { libc::dup2(old, new) };
                check(if rc < 0 { rc } else { 0 })
            }
            None => {
                // SAFETY: plain dup of an fd we own; the copy closes on exec
                // like every fd the harness opens.
                let new = unsafe { libc::fcntl(old, libc::F_DUPFD_CLOEXEC, 0) };
                if new < 0 {
                    return Err(last_errno());
                }
                // SAFETY: the kernel just gave us this fd.
                self.fds
                    .insert(name.to_string(), unsafe { OwnedFd::from_raw_fd(new) });
                Ok(Observation::ok())
            }
        }
    }
}

/// The field of the smaps entry whose address range holds `addr`, in bytes.
pub(super) fn smaps_field(addr: usize, field: SmapsField) -> OpResult {
    let text = std::fs::read_to_string("/proc/self/smaps")
        .map_err(|e| Observation::errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    match field_in(&text, addr as u64, field.label()) {
        Ok(kb) => {
            let mut obs = Observation::ok();
            obs.value = Some(kb * 1024);
            Ok(obs)
        }
        Err(e) => Err(Observation::error(e)),
    }
}

/// Parses smaps text: entries start with a header "start-end perms ...",
/// followed by "Label:   N kB" lines until the next header.
fn field_in(text: &str, addr: u64, label: &str) -> Result<i64, String> {
    let mut inside = false;
    for line in text.lines() {
        if let Some((start, end)) = header_range(line) {
            if inside {
                break; // the entry ended without the field
            }
            inside = start <= addr && addr < end;
            continue;
        }
        if !inside {
            continue;
        }
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name == label {
            let kb = rest.trim().trim_end_matches("kB").trim();
            return kb
                .parse()
                .map_err(|_| format!("smaps line `{line}` is not a size in kB"));
        }
    }
    if inside {
        Err(format!("this kernel's smaps has no `{label}` field"))
    } else {
        Err(format!(
            "no mapping holds address {addr:#x} in /proc/self/smaps (was it unmapped?)"
        ))
    }
}

/// The address range of an smaps header line ("7f00-7f10 rw-s ..."), or None
/// for a field line.
fn header_range(line: &str) -> Option<(u64, u64)> {
    let first = line.split_whitespace().next()?;
    let (a, b) = first.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::field_in;

    const SAMPLE: &str = "\
1000-3000 rw-s 00000000 00:05 7 /tmp/f
Size:                  8 kB
Rss:                   4 kB
Shared_Dirty:          0 kB
3000-4000 rw-p 00000000 00:00 0
Rss:                   0 kB
Private_Dirty:         0 kB
";

    #[test]
    fn finds_the_field_of_the_entry_holding_the_address() {
        assert_eq!(field_in(SAMPLE, 0x2fff, "Rss"), Ok(4));
        assert_eq!(field_in(SAMPLE, 0x3000, "Rss"), Ok(0));
    }

    #[test]
    fn a_missing_field_or_address_is_an_error() {
        assert!(field_in(SAMPLE, 0x1000, "Private_Dirty")
            .unwrap_err()
            .contains("no `Private_Dirty`"));
        assert!(field_in(SAMPLE, 0x5000, "Rss")
            .unwrap_err()
            .contains("no mapping holds"));
    }
}
