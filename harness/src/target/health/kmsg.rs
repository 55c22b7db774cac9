//! The kernel log as /dev/kmsg gives it: one record per read(2), each
//! `PRIO,SEQ,TIMESTAMP_US,FLAGS[,...];TEXT` followed by ` KEY=VALUE`
//! continuation lines. Opened and moved to its end at the start of a run,
//! so only what the kernel logs from then on is read; non-blocking, so a
//! read at any moment takes what is there and returns.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// Facility of records written from userspace through /dev/kmsg (LOG_USER).
pub const FACILITY_USER: u8 = 1;

/// One record of the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The kernel's sequence number of the record.
    pub seq: u64,
    /// Microseconds since boot (the kernel's clock) when it was logged.
    pub ts_us: u64,
    /// 0 for the kernel, 1 (LOG_USER) for a record written to /dev/kmsg by a program.
    pub facility: u8,
    /// Syslog level: 0 emergency .. 7 debug.
    pub level: u8,
    /// The message, with the kernel's \xNN escapes as they are.
    pub text: String,
}

impl Record {
    /// The record as dmesg prints it: `[   12.345678] text`.
    pub fn line(&self) -> String {
        format!(
            "[{:5}.{:06}] {}",
            self.ts_us / 1_000_000,
            self.ts_us % 1_000_000,
            self.text
        )
    }
}

/// Parses one record as read(2) of /dev/kmsg returns it.
pub fn parse_record(raw: &[u8]) -> Option<Record> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once(';')?;
    let mut fields = head.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_us = fields.next()?.parse().ok()?;
    // The first line is the message; continuation lines (" SUBSYSTEM=...")
    // describe the device and are not part of it.
    let message = rest.lines().next().unwrap_or("");
    Some(Record {
        seq,
        ts_us,
        facility: (prio >> 3) as u8,
        level: (prio & 7) as u8,
        text: message.to_string(),
    })
}

/// What the kernel says when something went wrong in it, as fstests'
/// `_check_dmesg` and syzkaller look for it: the name of the kind of
/// complaint for a record's text, None for an ordinary message.
pub fn complaint_kind(text: &str) -> Option<&'static str> {
    // Order matters: the more specific name first.
    const KINDS: &[(&str, &str)] = &[
        ("possible circular locking", "lockdep"),
        ("possible recursive locking", "lockdep"),
        ("WARNING: possible", "lockdep"),
        ("WARNING: suspicious RCU usage", "lockdep"),
        ("inconsistent lock state", "lockdep"),
        ("BUG: KASAN", "KASAN"),
        ("BUG: KFENCE", "KFENCE"),
        ("UBSAN:", "UBSAN"),
        ("general protection fault", "general protection fault"),
        ("soft lockup", "soft lockup"),
        ("kernel BUG at", "BUG"),
        ("BUG:", "BUG"),
        ("Oops:", "Oops"),
        ("Internal error:", "Oops"),
        ("WARNING:", "WARNING"),
        ("page dumped because", "bad page"),
        ("blocked for more than", "hung task"),
        ("hard LOCKUP", "hard lockup"),
        ("rcu_sched self-detected stall", "RCU stall"),
        ("rcu: INFO: rcu_", "RCU stall"),
        ("Kernel panic", "panic"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, kind)| *kind)
}

/// What one read of the log brought.
#[derive(Debug, Default)]
pub struct Drained {
    pub records: Vec<Record>,
    /// Records the kernel overwrote before they were read (EPIPE).
    pub lost: bool,
}

/// /dev/kmsg, open at the position of the last read.
pub struct Kmsg {
    file: std::fs::File,
}

impl Kmsg {
    /// Opens /dev/kmsg at its end: records logged before are not read.
    pub fn open_at_end() -> std::io::Result<Kmsg> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/kmsg")?;
        // SAFETY: lseek on an fd we own; SEEK_END on /dev/kmsg moves past
        // the last record (see Documentation/ABI/testing/dev-kmsg).
        let rc = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&file), 0, libc::SEEK_END) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Kmsg { file })
    }

    /// Every record logged since the last call.
    pub fn drain(&mut self) -> Drained {
        let mut out = Drained::default();
        // A record is at most 8 KiB (CONSOLE_EXT_LOG_MAX).
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.records.extend(parse_record(&buf[..n])),
                // Overwritten before we read it; the next read goes on
                // from the oldest record still there.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => out.lost = true,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EAGAIN: nothing more now.
                Err(_) => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_with_facility_level_and_continuations() {
        let r = parse_record(
            b"4,1234,5678901,-;WARNING: CPU: 1 PID: 2 at mm/gup.c:10 f+0x1/0x2\n SUBSYSTEM=x\n",
        )
        .unwrap();
        assert_eq!((r.facility, r.level, r.seq, r.ts_us), (0, 4, 1234, 5678901));
        assert_eq!(r.text, "WARNING: CPU: 1 PID: 2 at mm/gup.c:10 f+0x1/0x2");
        assert_eq!(
            r.line(),
            "[    5.678901] WARNING: CPU: 1 PID: 2 at mm/gup.c:10 f+0x1/0x2"
        );
        let user = parse_record(b"12,9,10,-;hello\n").unwrap();
        assert_eq!((user.facility, user.level), (FACILITY_USER, 4));
        assert!(parse_record(b"garbage").is_none());
        assert!(parse_record(b"x,1,2,-;t").is_none());
    }

    #[test]
    fn complaints_are_told_from_ordinary_messages() {
        for (text, kind) in [
            ("WARNING: CPU: 0 PID: 1 at mm/filemap.c:1 x", "WARNING"),
            ("BUG: unable to handle page fault for address: 0", "BUG"),
            ("kernel BUG at mm/memory.c:12!", "BUG"),
            ("Oops: 0000 [#1] PREEMPT SMP", "Oops"),
            (
                "general protection fault, probably for non-canonical address",
                "general protection fault",
            ),
            ("BUG: KASAN: use-after-free in f+0x1/0x2", "KASAN"),
            ("BUG: KFENCE: out-of-bounds read in f", "KFENCE"),
            ("UBSAN: shift-out-of-bounds in mm/x.c:1:2", "UBSAN"),
            (
                "WARNING: possible circular locking dependency detected",
                "lockdep",
            ),
            ("page dumped because: VM_BUG_ON_PAGE(x)", "bad page"),
            (
                "INFO: task a:1 blocked for more than 120 seconds.",
                "hung task",
            ),
            (
                "watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
                "soft lockup",
            ),
            ("Watchdog detected hard LOCKUP on cpu 1", "hard lockup"),
            (
                "rcu: INFO: rcu_preempt self-detected stall on CPU",
                "RCU stall",
            ),
        ] {
            assert_eq!(complaint_kind(text), Some(kind), "{text}");
        }
        for ordinary in [
            "EXT4-fs (loop2): mounted filesystem with ordered data mode",
            "XFS (loop0): User initiated shutdown received.",
            "loop3: detected capacity change from 0 to 131072",
        ] {
            assert_eq!(complaint_kind(ordinary), None, "{ordinary}");
        }
    }
}
