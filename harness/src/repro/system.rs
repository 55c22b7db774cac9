//! Worker steps beyond files and mappings, as C: pinned pages (vmsplice
//! into a pipe, read, io_uring fixed buffers over the raw syscalls),
//! special objects (/dev/zero, a pipe, the directory), POSIX and System V
//! shared memory, limits, signal dispositions and credentials. Each does
//! what `exec::ops_pins` and `exec::ops_objects` do, with the same
//! arguments (defaults as `exec::plan` gives them) and observations; the C
//! side is the runtime's "pins and system state" block.

use super::c;
use super::calls::Body;
use crate::case::model::{FixedCall, Op, Rlimit, Size, Special};
use crate::names::{signal_value, FlagKind};

/// Whether `op` is one of this module's: every step on system state
/// ([`Op::uses_system_state`]) but another process's memory, which needs
/// the coordinator to learn a pid and an address first.
pub fn expresses(op: &Op) -> bool {
    op.uses_system_state() && !matches!(op, Op::RemoteRead { .. } | Op::RemoteWrite { .. })
}

impl Body<'_> {
    /// A System V segment's variable, guarded as the harness's `segment`.
    fn seg(&mut self, name: &str) -> String {
        let id = self.names.ids.get("seg_", name);
        if !self.names.segs.contains(&id) {
            self.names.segs.push(id.clone());
        }
        id
    }

    fn need_seg(&mut self, name: &str) -> String {
        let id = self.seg(name);
        self.line(format!(
            "if (!need_seg(o, {id}, {}))\n        return;",
            c::text(name)
        ));
        id
    }

    fn ring(&mut self, name: &str) -> String {
        let id = self.names.ids.get("ring_", name);
        if !self.names.rings.contains(&id) {
            self.names.rings.push(id.clone());
        }
        id
    }

    /// The shm_open(3) name of the case's `label`, in `path`.
    fn shm_path(&mut self, label: &str) {
        if !self.names.shm_labels.iter().any(|l| l == label) {
            self.names.shm_labels.push(label.to_string());
        }
        self.line("char path[256];");
        self.line(format!("shm_name(path, sizeof path, {});", c::text(label)));
    }

    /// `fd` (already checked) under `name`; one it replaces is closed.
    fn replace_fd(&mut self, name: &str, fd: &str) {
        let id = self.names.fd(name);
        self.line(format!(
            "if ({id} >= 0)\n        close({id});\n    {id} = {fd};"
        ));
    }
}

/// The body of one of [`expresses`]'s steps.
pub(super) fn body(op: &Op, name: Option<&str>, b: &mut Body) -> Result<(), String> {
    let as_name = || name.ok_or_else(|| format!("`{}` needs `as`", op.name()));
    match op {
        Op::OpenSpecial { what, flags } => match what {
            Special::DevZero => {
                let f = match flags {
                    Some(f) => b.flags(FlagKind::Open, f)?,
                    None => "O_RDWR".to_string(),
                };
                b.line(format!("int fd = open(\"/dev/zero\", {f} | O_CLOEXEC);"));
                b.keep_fd(as_name()?);
            }
            // The program runs in the scratch directory.
            Special::Directory => {
                b.line("int fd = open(\".\", O_RDONLY | O_DIRECTORY | O_CLOEXEC);");
                b.keep_fd(as_name()?);
            }
            Special::Pipe => {
                let read_end = as_name()?;
                b.line("int fds[2];");
                b.line("if (!check(o, pipe2(fds, O_CLOEXEC)))\n        return;");
                b.replace_fd(read_end, "fds[0]");
                b.replace_fd(&format!("{read_end}_w"), "fds[1]");
            }
        },
        Op::ShmOpen {
            name: label,
            flags,
            mode,
        } => {
            let f = b.flags(FlagKind::Open, flags)?;
            b.shm_path(label);
            b.line(format!(
                "int fd = shm_open(path, {f} | O_CLOEXEC, 0{:o});",
                mode.unwrap_or(0o600)
            ));
            b.keep_fd(as_name()?);
        }
        Op::ShmUnlink { name: label } => {
            b.shm_path(label);
            b.line("check(o, shm_unlink(path));");
        }
        Op::Shmget { size, hugetlb } => {
            let id = b.seg(as_name()?);
            let huge = if *hugetlb { " | SHM_HUGETLB" } else { "" };
            b.line(format!(
                "int id = shmget(IPC_PRIVATE, (size_t){}, 0600 | IPC_CREAT{huge});",
                c::size(size)?
            ));
            b.line(format!(
                "if (check(o, id) && register_segment(o, id))\n        {id} = id;"
            ));
        }
        Op::Shmat { seg, read_only } => {
            let s = b.need_seg(seg);
            let id = b.names.map(as_name()?);
            let f = if *read_only { "SHM_RDONLY" } else { "0" };
            b.line("struct shmid_ds ds;");
            b.line(format!(
                "if (!check(o, shmctl({s}, IPC_STAT, &ds)))\n        return;"
            ));
            b.line(format!("void *p = shmat({s}, NULL, {f});"));
            b.line("if (p == (void *)-1) {\n        failed(o);\n        return;\n    }");
            b.line(format!(
                "{id} = (struct map){{ p, (long long)ds.shm_segsz, 1 }};"
            ));
        }
        // The name stays, as after munmap: later accesses must fault.
        Op::Shmdt { map } => {
            let id = b.map(map);
            b.line(format!("check(o, shmdt({id}.addr));"));
        }
        Op::ShmRmid { seg } => {
            let s = b.need_seg(seg);
            b.line(format!("check(o, shmctl({s}, IPC_RMID, NULL));"));
        }
        Op::Setrlimit { resource, limit } => {
            let r = match resource {
                Rlimit::As => "RLIMIT_AS",
                Rlimit::Memlock => "RLIMIT_MEMLOCK",
                Rlimit::Fsize => "RLIMIT_FSIZE",
            };
            let l = match limit {
                Size::Expr(e) if e.trim() == "unlimited" => "RLIM_INFINITY".to_string(),
                other => format!("(rlim_t){}", c::size(other)?),
            };
            b.line(format!("const struct rlimit lim = {{ {l}, {l} }};"));
            b.line(format!("check(o, setrlimit({r}, &lim));"));
        }
        Op::IgnoreSignal { signal } => {
            signal_value(signal).ok_or_else(|| format!("unknown signal `{signal}`"))?;
            b.line(format!(
                "if (signal({signal}, SIG_IGN) == SIG_ERR)\n        failed(o);"
            ));
        }
        Op::DropPrivileges => b.line("drop_privileges(o);"),
        Op::Vmsplice { fd, range } => {
            let id = b.fd(fd);
            let (a, l) = b.range(range)?;
            // flags 0: the pages are referenced, not gifted.
            b.line(format!("struct iovec iov = {{ (void *)({a}), {l} }};"));
            b.line(format!("ssize_t n = vmsplice({id}, &iov, 1, 0);"));
            b.counted("n");
        }
        Op::Read { fd, len } => {
            let id = b.fd(fd);
            b.line(format!("read_once(o, {id}, {});", c::size(len)?));
        }
        Op::IoUringRegister { range } => {
            let (a, l) = b.range(range)?;
            let id = b.ring(as_name()?);
            b.line(format!("ring_register(o, &{id}, {a}, (long long){l});"));
        }
        Op::IoUringFixed {
            ring,
            call,
            fd,
            offset,
            at,
            len,
        } => {
            let f = b.fd(fd);
            let id = b.ring(ring);
            b.line(format!(
                "if (!need_ring(o, &{id}, {}, 1))\n        return;",
                c::text(ring)
            ));
            let write = (*call == FixedCall::WriteFixed) as u8;
            let len = match len {
                Some(l) => c::size(l)?,
                None => "-1".to_string(),
            };
            b.line(format!(
                "ring_fixed(o, &{id}, {write}, {f}, (long long){}, (long long){}, (long long){len});",
                c::size(offset)?,
                c::size(at)?
            ));
        }
        Op::IoUringUnregister { ring } => {
            let id = b.ring(ring);
            b.line(format!(
                "if (!need_ring(o, &{id}, {}, 0))\n        return;",
                c::text(ring)
            ));
            b.line(format!("ring_unregister(o, &{id});"));
        }
        other => return Err(format!("`{}` is not a system-state step", other.name())),
    }
    Ok(())
}
