//! Validation of the pinning steps (issue 18, part C): vmsplice, read,
//! io_uring_register, io_uring_fixed, io_uring_unregister. A child module
//! of `validate`, so it walks with the same picture of each process.

use super::super::model::Op;
use super::{Seg, Walk};

/// The pinning steps that observe a number `as` can record: the count
/// spliced, the bytes read (as a number when 1, 2, 4 or 8), the count a
/// fixed-buffer operation completed with.
pub(super) fn records_value(op: &Op) -> bool {
    matches!(
        op,
        Op::Vmsplice { .. } | Op::Read { .. } | Op::IoUringFixed { .. }
    )
}

impl Walk {
    /// Checks one pinning step; returns the length it reads into the
    /// harness (for `read`), which its byte expectations must match.
    pub(super) fn pin_step(
        &mut self,
        op: &Op,
        path: &[Seg],
        proc_name: &str,
        has_proc: bool,
    ) -> Option<i128> {
        match op {
            Op::Vmsplice { fd, range } => {
                if has_proc {
                    self.fd(path, proc_name, fd);
                    self.range(path, proc_name, range);
                }
                None
            }
            Op::Read { fd, len } => {
                if has_proc {
                    self.fd(path, proc_name, fd);
                }
                let l = self.len(path, "len", len);
                self.read_len(path, l);
                l
            }
            Op::IoUringRegister { range } => {
                if has_proc {
                    self.range(path, proc_name, range);
                }
                None
            }
            Op::IoUringFixed {
                ring,
                fd,
                offset,
                at,
                len,
                ..
            } => {
                if has_proc {
                    self.ring(path, proc_name, ring);
                    self.fd(path, proc_name, fd);
                }
                self.size(path, "offset", offset);
                self.len(path, "at", at);
                if let Some(l) = len {
                    self.len(path, "len", l);
                }
                None
            }
            Op::IoUringUnregister { ring } => {
                if has_proc {
                    self.ring(path, proc_name, ring);
                }
                None
            }
            _ => None,
        }
    }

    fn ring(&mut self, path: &[Seg], proc_name: &str, ring: &str) {
        self.label(path, "ring", ring);
        let known = self
            .procs
            .get(proc_name)
            .is_some_and(|p| p.rings.contains(ring));
        if !known && self.check_names {
            self.key_issue(
                path,
                "ring",
                format!(
                    "no io_uring ring `{ring}` registered in process `{proc_name}` at this step"
                ),
            );
        }
    }
}
