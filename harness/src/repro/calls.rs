//! The calls of a worker step, as the body of a C function
//! `static void step_N(struct obs *o)`: the same syscalls with the same
//! arguments as `exec::ops`, flags by their libc names, sizes as
//! expressions of the page size.

use super::c::{self, Flags, Idents};
use crate::case::model::{Addr, Data, IoCall, Op, Range, Remote, Size};
use crate::case::values::parse_hex;
use crate::names::{parse_flags, FlagKind};

/// What step bodies refer to: the C names of fds and mappings, and the
/// flag names used (for their fallback definitions).
#[derive(Default)]
pub struct Names {
    pub ids: Idents,
    pub fds: Vec<String>,
    pub maps: Vec<String>,
    pub flags: Flags,
    /// System V segments (`seg_*`), io_uring rings (`ring_*`) and the
    /// shm_open names the case uses (removed at the program's end): see
    /// `system`.
    pub segs: Vec<String>,
    pub rings: Vec<String>,
    pub shm_labels: Vec<String>,
}

impl Names {
    pub(super) fn fd(&mut self, name: &str) -> String {
        let id = self.ids.get("fd_", name);
        if !self.fds.contains(&id) {
            self.fds.push(id.clone());
        }
        id
    }

    pub(super) fn map(&mut self, name: &str) -> String {
        let id = self.ids.get("map_", name);
        if !self.maps.contains(&id) {
            self.maps.push(id.clone());
        }
        id
    }
}

/// A body being written: guards first (a name whose creating call failed
/// is a harness error, as in `exec::ops`), then the call.
pub(super) struct Body<'a> {
    pub(super) names: &'a mut Names,
    lines: Vec<String>,
}

impl Body<'_> {
    pub(super) fn line(&mut self, l: impl Into<String>) {
        self.lines.push(format!("    {}", l.into()));
    }

    pub(super) fn fd(&mut self, name: &str) -> String {
        let id = self.names.fd(name);
        self.line(format!(
            "if (!need_fd(o, {id}, {}))\n        return;",
            c::text(name)
        ));
        id
    }

    pub(super) fn map(&mut self, name: &str) -> String {
        let id = self.names.map(name);
        self.line(format!(
            "if (!need_map(o, &{id}, {}))\n        return;",
            c::text(name)
        ));
        id
    }

    /// `map.addr + at`, or `map.addr` when at is 0.
    pub(super) fn at(&mut self, map: &str, at: &Size) -> Result<String, String> {
        let id = self.map(map);
        Ok(match c::size(at)?.as_str() {
            "0" => format!("{id}.addr"),
            off => format!("{id}.addr + {off}"),
        })
    }

    fn place(&mut self, a: Option<&Addr>) -> Result<String, String> {
        Ok(match a {
            None => "NULL".to_string(),
            Some(Addr::Raw(0)) => "NULL".to_string(),
            Some(Addr::Raw(v)) => format!("(void *){v:#x}UL"),
            Some(Addr::Expr(e)) => {
                format!("(void *)(uintptr_t)({})", c::size(&Size::Expr(e.clone()))?)
            }
            Some(Addr::InMap { map, at }) => self.at(map, at)?,
        })
    }

    /// Address and length of a range; the length defaults to the rest of the mapping.
    pub(super) fn range(&mut self, r: &Range) -> Result<(String, String), String> {
        let addr = self.at(&r.map, &r.at)?;
        let id = self.names.map(&r.map);
        let len = match &r.len {
            Some(l) => format!("(size_t){}", c::size(l)?),
            None => format!("rest(&{id}, {})", c::size(&r.at)?),
        };
        Ok((addr, len))
    }

    /// The call's result `var` as the step's number, or its errno.
    pub(super) fn counted(&mut self, var: &str) {
        self.line(format!(
            "if (check(o, (long){var})) {{\n        o->has_value = 1;\n        o->value = {var};\n    }}"
        ));
    }

    pub(super) fn flags(&mut self, kind: FlagKind, text: &str) -> Result<String, String> {
        self.names.flags.spell(kind, text)
    }

    /// A new fd under `name`; as in the harness, one it replaces is closed.
    pub(super) fn keep_fd(&mut self, name: &str) {
        let id = self.names.fd(name);
        self.line(format!(
            "if (check(o, fd)) {{\n        if ({id} >= 0)\n            close({id});\n        {id} = fd;\n    }}"
        ));
    }
}

/// A `struct data` initializer; `default_len` is the length a fill or
/// pattern takes when it has none (a file's size).
pub fn data(d: &Data, default_len: Option<&Size>) -> Result<String, String> {
    let len = || match d.len.as_ref().or(default_len) {
        Some(l) => c::size(l),
        None => Err("`fill` and `pattern` need `len`".to_string()),
    };
    if let Some(t) = &d.text {
        return Ok(format!(
            "{{ .kind = D_LITERAL, .lit = {}, .len = {} }}",
            c::string(t.as_bytes()),
            t.len()
        ));
    }
    if let Some(h) = &d.hex {
        let b = parse_hex(h)?;
        return Ok(format!(
            "{{ .kind = D_LITERAL, .lit = {}, .len = {} }}",
            c::string(&b),
            b.len()
        ));
    }
    if let Some(f) = d.fill {
        return Ok(format!(
            "{{ .kind = D_FILL, .fill = {f}, .len = {} }}",
            len()?
        ));
    }
    if let Some(p) = d.pattern {
        return Ok(format!(
            "{{ .kind = D_PATTERN, .seed = {p}ULL, .len = {} }}",
            len()?
        ));
    }
    Err("give exactly one of `text`, `hex`, `fill`, `pattern`".to_string())
}

/// The runtime's name of a `via` of `remote_read`/`remote_write`.
fn via_name(via: Remote) -> &'static str {
    match via {
        Remote::ProcessVm => "VIA_PROCESS_VM",
        Remote::ProcMem => "VIA_PROC_MEM",
        Remote::Ptrace => "VIA_PTRACE",
    }
}

/// The body that tells where `at` in mapping `map` is in the process that
/// runs it, as the step's value (the harness's `Call::Address`): the first
/// half of a `remote_read`/`remote_write`, run in the target.
pub fn address(map: &str, at: &Size, names: &mut Names) -> Result<String, String> {
    let mut b = Body {
        names,
        lines: Vec::new(),
    };
    let a = b.at(map, at)?;
    b.line(format!(
        "o->has_value = 1;\n    o->value = (long long)(uintptr_t)({a});"
    ));
    Ok(b.lines.join("\n"))
}

/// The body of a worker step's function, or Err when the operation is not
/// a worker's (fork, exit and the coordinator's steps are orchestration).
pub fn body(op: &Op, name: Option<&str>, names: &mut Names) -> Result<String, String> {
    let mut b = Body {
        names,
        lines: Vec::new(),
    };
    let as_name = || name.ok_or_else(|| format!("`{}` needs `as`", op.name()));
    match op {
        Op::Open { path, flags, mode } => {
            let f = b.flags(FlagKind::Open, flags)?;
            let creates = parse_flags(FlagKind::Open, flags)? & libc::O_CREAT as i64 != 0;
            let mode = if creates {
                format!(", 0{:o}", mode.unwrap_or(0o644))
            } else {
                String::new()
            };
            b.line(format!(
                "int fd = open({}, {f} | O_CLOEXEC{mode});",
                c::text(path)
            ));
            b.keep_fd(as_name()?);
        }
        Op::Close { fd } => {
            let id = b.fd(fd);
            b.line(format!("int fd = {id};"));
            b.line(format!("{id} = -1;"));
            b.line("check(o, close(fd));");
        }
        Op::Ftruncate { fd, len } => {
            let id = b.fd(fd);
            b.line(format!("check(o, ftruncate({id}, {}));", c::size(len)?));
        }
        Op::Pread { fd, at, len } => {
            let id = b.fd(fd);
            b.line(format!(
                "read_at(o, {id}, {}, {});",
                c::size(at)?,
                c::size(len)?
            ));
        }
        Op::Pwrite { fd, at, data: d } => {
            let id = b.fd(fd);
            b.line(format!("const struct data d = {};", data(d, None)?));
            b.line(format!("write_data(o, {id}, {}, &d, 1);", c::size(at)?));
        }
        Op::Write { fd, data: d } => {
            let id = b.fd(fd);
            b.line(format!("const struct data d = {};", data(d, None)?));
            b.line(format!("write_data(o, {id}, 0, &d, 0);"));
        }
        Op::Fsync { fd } => {
            let id = b.fd(fd);
            b.line(format!("check(o, fsync({id}));"));
        }
        Op::Fdatasync { fd } => {
            let id = b.fd(fd);
            b.line(format!("check(o, fdatasync({id}));"));
        }
        Op::Fstat { fd } => {
            let id = b.fd(fd);
            b.line(format!("fstat_of(o, {id});"));
        }
        Op::Futimens { fd, time } => {
            let id = b.fd(fd);
            b.line(format!(
                "const struct timespec t[2] = {{ {{ {time}, 0 }}, {{ {time}, 0 }} }};"
            ));
            b.line(format!("check(o, futimens({id}, t));"));
        }
        Op::Unlink { path } => {
            b.line(format!("check(o, unlink({}));", c::text(path)));
        }
        Op::MemfdCreate { name: label, flags } => {
            let f = match flags {
                Some(f) => b.flags(FlagKind::Memfd, f)?,
                None => "0".to_string(),
            };
            b.line(format!("int fd = memfd_create({}, {f});", c::text(label)));
            b.keep_fd(as_name()?);
        }
        Op::Mmap {
            fd,
            len,
            prot,
            flags,
            offset,
            addr,
        } => {
            let fd = match fd {
                Some(f) => b.fd(f),
                None => "-1".to_string(),
            };
            let addr = b.place(addr.as_ref())?;
            let prot = b.flags(FlagKind::Prot, prot)?;
            let flags = b.flags(FlagKind::Map, flags)?;
            let len = c::size(len)?;
            let offset = match offset {
                Some(o) => format!("(off_t){}", c::size(o)?),
                None => "0".to_string(),
            };
            let id = b.names.map(as_name()?);
            b.line(format!(
                "void *p = mmap({addr}, (size_t){len}, {prot}, {flags}, {fd}, {offset});"
            ));
            b.line("if (p == MAP_FAILED) {\n        failed(o);\n        return;\n    }");
            b.line(format!("{id} = (struct map){{ p, (long long){len}, 1 }};"));
        }
        Op::Munmap { range } => {
            let (a, l) = b.range(range)?;
            b.line(format!("check(o, munmap({a}, {l}));"));
        }
        Op::Mprotect { range, prot } => {
            let (a, l) = b.range(range)?;
            let p = b.flags(FlagKind::Prot, prot)?;
            b.line(format!("check(o, mprotect({a}, {l}, {p}));"));
        }
        Op::Msync { range, flags } => {
            let (a, l) = b.range(range)?;
            let f = b.flags(FlagKind::Msync, flags)?;
            b.line(format!("check(o, msync({a}, {l}, {f}));"));
        }
        Op::Madvise { range, advice } => {
            let (a, l) = b.range(range)?;
            let f = b.flags(FlagKind::Madvise, advice)?;
            b.line(format!("check(o, madvise({a}, {l}, {f}));"));
        }
        Op::Mlock { range, flags } => {
            let (a, l) = b.range(range)?;
            match flags {
                None => b.line(format!("check(o, mlock({a}, {l}));")),
                Some(f) => {
                    let f = b.flags(FlagKind::Mlock, f)?;
                    b.line(format!("check(o, syscall(SYS_mlock2, {a}, {l}, {f}));"));
                }
            }
        }
        Op::Munlock { range } => {
            let (a, l) = b.range(range)?;
            b.line(format!("check(o, munlock({a}, {l}));"));
        }
        Op::Mincore { range } => {
            let (a, l) = b.range(range)?;
            b.line(format!("residency(o, {a}, {l});"));
        }
        Op::Mremap {
            map,
            at,
            old_len,
            new_len,
            flags,
            new_addr,
        } => {
            let old = b.at(map, at)?;
            let target = b.place(new_addr.as_ref())?;
            let f = match flags {
                Some(f) => b.flags(FlagKind::Mremap, f)?,
                None => "0".to_string(),
            };
            let (old_len, new_len) = (c::size(old_len)?, c::size(new_len)?);
            let id = b.names.map(name.unwrap_or(map));
            b.line(format!(
                "void *p = mremap({old}, (size_t){old_len}, (size_t){new_len}, {f}, {target});"
            ));
            b.line("if (p == MAP_FAILED) {\n        failed(o);\n        return;\n    }");
            b.line(format!(
                "{id} = (struct map){{ p, (long long){new_len}, 1 }};"
            ));
        }
        Op::Store { map, at, data: d } => {
            let a = b.at(map, at)?;
            b.line(format!("const struct data d = {};", data(d, None)?));
            b.line(format!("store(o, {a}, &d);"));
        }
        Op::Load { map, at, len } => {
            let a = b.at(map, at)?;
            b.line(format!("load(o, {a}, {});", c::size(len)?));
        }
        Op::Increment {
            map,
            at,
            count,
            atomic,
            width,
        } => {
            let a = b.at(map, at)?;
            b.line(format!(
                "increment(o, {a}, {count}ULL, {}, {width});",
                *atomic as u8
            ));
        }
        Op::Pagemap { map, at, swapped } => {
            let a = b.at(map, at)?;
            b.line(format!("frame_of(o, {a}, {});", *swapped as u8));
        }
        // --- issue 18, part A ---
        Op::Io {
            call,
            fd,
            offset,
            bufs,
        } => {
            let id = b.fd(fd);
            let mut iov = Vec::new();
            for r in bufs {
                let (a, l) = b.range(r)?;
                iov.push(format!("{{ (void *)({a}), {l} }}"));
            }
            b.line(format!("struct iovec iov[] = {{ {} }};", iov.join(", ")));
            let off = match offset {
                Some(o) => format!("(off_t){}", c::size(o)?),
                None => "0".to_string(),
            };
            let n = match call {
                IoCall::Read => format!("read({id}, iov[0].iov_base, iov[0].iov_len)"),
                IoCall::Write => format!("write({id}, iov[0].iov_base, iov[0].iov_len)"),
                IoCall::Pread => format!("pread({id}, iov[0].iov_base, iov[0].iov_len, {off})"),
                IoCall::Pwrite => format!("pwrite({id}, iov[0].iov_base, iov[0].iov_len, {off})"),
                IoCall::Readv => format!("readv({id}, iov, {})", bufs.len()),
                IoCall::Writev => format!("writev({id}, iov, {})", bufs.len()),
            };
            b.line(format!("ssize_t n = {n};"));
            b.counted("n");
        }
        Op::AddSeals { fd, seals } => {
            let id = b.fd(fd);
            let f = b.flags(FlagKind::Seal, seals)?;
            b.line(format!("check(o, fcntl({id}, F_ADD_SEALS, {f}));"));
        }
        Op::GetSeals { fd } => {
            let id = b.fd(fd);
            b.line(format!("long n = fcntl({id}, F_GET_SEALS);"));
            b.counted("n");
        }
        Op::Dup { fd, onto } => {
            let id = b.fd(fd);
            match onto {
                Some(target) => {
                    let to = b.fd(target);
                    b.line(format!("check(o, dup2({id}, {to}));"));
                }
                None => {
                    b.line(format!("int fd = fcntl({id}, F_DUPFD_CLOEXEC, 0);"));
                    b.keep_fd(as_name()?);
                }
            }
        }
        Op::Lseek { fd, offset, whence } => {
            let id = b.fd(fd);
            let w = b.flags(FlagKind::Whence, whence)?;
            b.line(format!(
                "off_t n = lseek({id}, (off_t){}, {w});",
                c::size(offset)?
            ));
            b.counted("n");
        }
        // The target's pid and address come with the command (remote_step).
        Op::RemoteRead { via, len, .. } => {
            b.line(format!("remote_read(o, {}, {});", via_name(*via), c::size(len)?));
        }
        Op::RemoteWrite { via, data: d, .. } => {
            b.line(format!("const struct data d = {};", data(d, None)?));
            b.line(format!("remote_write(o, {}, &d);", via_name(*via)));
        }
        Op::Mlockall { flags } => {
            let f = b.flags(FlagKind::Mlockall, flags)?;
            b.line(format!("check(o, mlockall({f}));"));
        }
        Op::Munlockall => b.line("check(o, munlockall());"),
        Op::Smaps { map, at, field } => {
            let a = b.at(map, at)?;
            b.line(format!("smaps_field(o, {a}, {});", c::text(field.label())));
}
        // Pins, special objects, shared memory, limits, credentials.
        op if super::system::expresses(op) => super::system::body(op, name, &mut b)?,
        op if op.uses_system_state() => {
            return Err(format!(
                "cannot express `{}` in a C reproducer yet: another process's memory needs its pid and the address of its mapping",
                op.name()
            ))
        }
        other => return Err(format!("`{}` is not a worker's call", other.name())),
    }
    Ok(b.lines.join("\n"))
}
