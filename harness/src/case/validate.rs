//! What serde cannot check: names used before they exist, paths that leave
//! the scratch directory, flags and sizes that do not parse, expectations
//! that cannot apply to their operation.
//!
//! The walk follows the steps in order with a static picture of each
//! process (its fds and maps), copied at `fork` as the kernel would.

use super::load::Issue;
use super::locate::path_text;
use super::locate::Seg;
use super::model::{Addr, Case, Data, Expect, Op, Range, Size, Step};
use super::values::{human_bytes, MAX_STEP_BYTES};
use crate::names::{self, FlagKind, KernelRange};
use std::collections::{BTreeMap, BTreeSet};

#[path = "validate_threads.rs"]
mod threads;
pub use threads::{MAIN_THREAD, MAX_THREADS};

/// The longest file name a filesystem takes (NAME_MAX): longer ones fail
/// with ENAMETOOLONG at run time, so validation says so first.
pub const NAME_MAX: usize = 255;

/// The longest name of a process, fd, mapping, snapshot or recorded value.
/// These are labels a person reads in reports and swimlanes; the corpus uses
/// at most 12 bytes.
pub const MAX_LABEL_BYTES: usize = 64;

/// The most processes (fresh and forked) one case may have. Each is a real
/// process at run time, and validation copies a process's names at each
/// fork, so without a bound a file of forks and opens would cost the
/// validator memory in the square of its length. The corpus uses at most 4.
pub const MAX_PROCESSES: usize = 64;

#[path = "validate_pins.rs"]
mod pins;

#[derive(Debug, Clone, Default)]
struct ProcView {
    fds: BTreeSet<String>,
    maps: BTreeSet<String>,
    /// System V segments made by `shmget` (inherited at fork, like ids are).
    segs: BTreeSet<String>,
    exited: bool,
    /// Threads made by `spawn_thread` (besides `main`); a forked child has none.
    threads: BTreeSet<String>,
    /// io_uring rings made by `io_uring_register` (validate_pins.rs).
    rings: BTreeSet<String>,
}

struct Walk {
    check_names: bool,
    /// The case requires the pagemap_pfn probe.
    pagemap_probe: bool,
    page_size: u64,
    procs: BTreeMap<String, ProcView>,
    snapshots: BTreeSet<String>,
    /// Names of numbers recorded by earlier steps (`pagemap ... as`).
    values: BTreeSet<String>,
    issues: Vec<Issue>,
}

/// Checks a deserialized case header and its parsed steps (with their index
/// in the file). `all_steps_parsed` is false when some steps failed to parse
/// and were left out: names they would have created are then not reported
/// as missing, since that would only echo the first problem.
pub fn validate(
    case: &Case,
    steps: &[(usize, Step)],
    page_size: u64,
    all_steps_parsed: bool,
) -> Vec<Issue> {
    let mut w = Walk {
        check_names: all_steps_parsed,
        pagemap_probe: case
            .requires
            .probes
            .contains(&super::model::Probe::PagemapPfn),
        page_size,
        procs: BTreeMap::new(),
        snapshots: BTreeSet::new(),
        values: BTreeSet::new(),
        issues: Vec::new(),
    };
    if case.title.trim().is_empty() {
        w.issue(vec![Seg::from("title")], "`title` is empty");
    }
    if case.refs.is_empty() || case.refs.iter().any(|r| r.trim().is_empty()) {
        w.issue(
            vec![Seg::from("refs")],
            "`refs` must name at least one man page, standard clause or test it mirrors",
        );
    }
    if let Some(t) = case.timeout {
        if !(t > 0.0 && t.is_finite()) {
            w.issue(
                vec![Seg::from("timeout")],
                "`timeout` must be a positive number of seconds",
            );
        }
    }
    if let Some(k) = &case.requires.kernel {
        if let Err(e) = KernelRange::parse(k) {
            w.issue(vec![Seg::from("requires"), Seg::from("kernel")], e);
        }
    }
    for (i, option) in case.requires.config.iter().enumerate() {
        if let Err(e) = crate::target::kconfig::Requirement::parse(option) {
            w.issue(
                vec![Seg::from("requires"), Seg::from("config"), Seg::Index(i)],
                e,
            );
        }
    }
    for (name, init) in &case.files {
        let path = vec![Seg::from("files"), Seg::from(name.as_str())];
        w.check_path(&path, None, name);
        if !init.data.is_empty() {
            let size = init
                .size
                .as_ref()
                .and_then(|s| s.resolve_len(page_size).ok());
            match init.data.resolve(page_size, size) {
                Err(e) => w.issue(path.clone(), e),
                Ok(bytes) => {
                    // A fill or pattern without `len` takes its length from `size`.
                    let key = match (&init.data.len, &init.data.text, &init.data.hex) {
                        (Some(_), _, _) => "len",
                        (None, Some(_), _) => "text",
                        (None, None, Some(_)) => "hex",
                        (None, None, None) => "size",
                    };
                    w.cap(&path, key, bytes.len(), "a file's initial content may have");
                }
            }
        }
        if init.zeros.is_some() && init.size.is_none() {
            w.key_issue(
                &path,
                "zeros",
                "`zeros` says what the zeros up to `size` are: it needs `size`",
            );
        }
        if let Some(size) = &init.size {
            if let Err(e) = size.resolve_len(page_size) {
                w.issue(path, e);
            }
        }
    }
    if all_steps_parsed && steps.is_empty() {
        w.issue(vec![Seg::from("steps")], "a case needs at least one step");
    }
    for (i, step) in steps {
        w.step(step, vec![Seg::from("steps"), Seg::from(*i)], false);
    }
    if all_steps_parsed {
        check_processes(&mut w, case, steps);
    }
    w.issues
}

/// `processes` names fresh processes of the case: a forked child works
/// through its parent's mount (it inherits the parent's fds and mappings),
/// and a name no step uses would be a typo that silently changes nothing.
fn check_processes(w: &mut Walk, case: &Case, steps: &[(usize, Step)]) {
    let mut forked = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut visit = |s: &Step| {
        if matches!(s.op, Op::Fork) {
            forked.extend(s.name.clone());
        }
        used.extend(s.process.clone());
    };
    for (_, s) in steps {
        visit(s);
        if let Op::Together { steps: inner } = &s.op {
            inner.iter().for_each(&mut visit);
        }
    }
    for name in case.processes.keys() {
        let path = vec![Seg::from("processes"), Seg::from(name.as_str())];
        w.label(&path[..1], name, name);
        if forked.contains(name) {
            w.issue(
                path,
                format!("processes.{name}: `{name}` is made by a `fork` step: a forked process works through its parent's mount (it inherits its fds and mappings)"),
            );
        } else if !used.contains(name) {
            w.issue(
                path,
                format!("processes.{name}: no step runs in a process `{name}`"),
            );
        }
    }
}

impl Walk {
    fn issue(&mut self, path: Vec<Seg>, msg: impl Into<String>) {
        self.issues.push(Issue::at(path, msg));
    }

    fn key_issue(&mut self, path: &[Seg], key: &str, msg: impl Into<String>) {
        self.issues.push(Issue::at_key(path.to_vec(), key, msg));
    }

    /// An issue about the value of `key` in the object at `path`, pointing at that value
    /// and naming the field.
    fn value_issue(&mut self, path: &[Seg], key: &str, msg: impl std::fmt::Display) {
        let mut p = path.to_vec();
        p.push(Seg::from(key));
        let message = format!("{}: {msg}", path_text(&p));
        self.issues.push(Issue::at(p, message));
    }

    /// One process more than [`MAX_PROCESSES`]. It gets no view, so names
    /// used in it are no longer checked (they would only echo this problem).
    fn too_many_processes(&mut self, path: &[Seg], key: &str, name: &str) {
        self.key_issue(
            path,
            key,
            format!("a case has at most {MAX_PROCESSES} processes; `{name}` would be one more"),
        );
        self.check_names = false;
    }

    /// Bytes the harness must produce or hold for one step, at most [`MAX_STEP_BYTES`].
    fn cap(&mut self, path: &[Seg], key: &str, bytes: u64, what: &str) {
        if bytes > MAX_STEP_BYTES {
            self.value_issue(
                path,
                key,
                format!(
                    "{} is more than the {} {what}",
                    human_bytes(bytes),
                    human_bytes(MAX_STEP_BYTES)
                ),
            );
        }
    }

    /// A name of a process, fd, mapping, snapshot or value: at most [`MAX_LABEL_BYTES`].
    fn label(&mut self, path: &[Seg], key: &str, name: &str) {
        if name.len() > MAX_LABEL_BYTES {
            self.value_issue(
                path,
                key,
                format!(
                    "a name is at most {MAX_LABEL_BYTES} bytes; this one has {}",
                    name.len()
                ),
            );
        }
    }

    /// A file name, at `path` + `key` in a step, or the key of `files` at `path` (`key` None).
    fn check_path(&mut self, path: &[Seg], key: Option<&str>, name: &str) {
        if let Err(e) = check_file_name(name) {
            match key {
                Some(k) => {
                    let mut field = path.to_vec();
                    field.push(Seg::from(k));
                    self.key_issue(path, k, format!("{}: {e}", path_text(&field)));
                }
                None => self.issue(path.to_vec(), e),
            }
        }
    }

    fn size(&mut self, path: &[Seg], key: &str, size: &Size) -> Option<i128> {
        match size.resolve(self.page_size) {
            Ok(v) => Some(v),
            Err(e) => {
                self.key_issue(path, key, e);
                None
            }
        }
    }

    /// A length: as `size`, and also not negative.
    fn len(&mut self, path: &[Seg], key: &str, size: &Size) -> Option<i128> {
        let v = self.size(path, key, size)?;
        if let Err(e) = size.resolve_len(self.page_size) {
            self.key_issue(path, key, e);
            return None;
        }
        Some(v)
    }

    fn flags(&mut self, path: &[Seg], key: &str, kind: FlagKind, text: &str) {
        if let Err(e) = names::parse_flags(kind, text) {
            self.key_issue(path, key, e);
        }
    }

    fn fd(&mut self, path: &[Seg], proc_name: &str, fd: &str) {
        self.label(path, "fd", fd);
        let known = self
            .procs
            .get(proc_name)
            .is_some_and(|p| p.fds.contains(fd));
        if !known && self.check_names {
            self.key_issue(
                path,
                "fd",
                format!("fd `{fd}` is not open in process `{proc_name}` at this step"),
            );
        }
    }

    fn map(&mut self, path: &[Seg], key: &str, proc_name: &str, map: &str) {
        self.label(path, key, map);
        let known = self
            .procs
            .get(proc_name)
            .is_some_and(|p| p.maps.contains(map));
        if !known && self.check_names {
            self.key_issue(
                path,
                key,
                format!("mapping `{map}` does not exist in process `{proc_name}` at this step"),
            );
        }
    }

    fn seg(&mut self, path: &[Seg], proc_name: &str, seg: &str) {
        self.label(path, "seg", seg);
        let known = self
            .procs
            .get(proc_name)
            .is_some_and(|p| p.segs.contains(seg));
        if !known && self.check_names {
            self.key_issue(
                path,
                "seg",
                format!("segment `{seg}` was not made by `shmget` in process `{proc_name}` or its parent before this step"),
            );
        }
    }

    /// A shm_open name is one path component the harness puts under its own prefix.
    fn shm_name(&mut self, path: &[Seg], name: &str) {
        self.label(path, "name", name);
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            self.key_issue(
                path,
                "name",
                format!("`{name}` is not a shm name: one component, no `/`"),
            );
        }
    }

    /// `proc` of a remote step: a process that exists, with the mapping `map`.
    fn remote_target(&mut self, path: &[Seg], target: &str, map: &str) {
        self.label(path, "proc", target);
        if !self.procs.contains_key(target) {
            self.key_issue(path, "proc", format!("no process `{target}` at this step"));
            return;
        }
        self.map(path, "map", target, map);
    }

    fn addr(&mut self, path: &[Seg], key: &str, proc_name: &str, addr: &Addr) {
        match addr {
            Addr::InMap { map, at } => {
                self.map(path, key, proc_name, map);
                self.size(path, key, at);
            }
            Addr::Expr(e) => {
                self.len(path, key, &Size::Expr(e.clone()));
            }
            Addr::Raw(_) => {}
        }
    }

    fn range(&mut self, path: &[Seg], proc_name: &str, r: &Range) {
        self.map(path, "map", proc_name, &r.map);
        self.size(path, "at", &r.at);
        if let Some(len) = &r.len {
            self.size(path, "len", len);
        }
    }

    fn data(&mut self, path: &[Seg], data: &Data, default_len: Option<u64>) {
        match data.resolve(self.page_size, default_len) {
            Err(e) => self.issue(path.to_vec(), e),
            Ok(bytes) => {
                let key = match (&data.len, &data.text) {
                    (Some(_), _) => "len",
                    (None, Some(_)) => "text",
                    (None, None) => "hex",
                };
                self.cap(path, key, bytes.len(), "a step may write");
            }
        }
    }

    /// The length a step reads into the harness's memory.
    fn read_len(&mut self, path: &[Seg], len: Option<i128>) {
        if let Some(l) = len.and_then(|l| u64::try_from(l).ok()) {
            self.cap(path, "len", l, "a step may read");
        }
    }

    fn step(&mut self, step: &Step, path: Vec<Seg>, in_together: bool) {
        let op = &step.op;
        let coord = op.is_coordinator_op();
        let proc_name = match (&step.process, coord) {
            (Some(_), true) => {
                self.key_issue(
                    &path,
                    "in",
                    format!(
                        "`{}` is done by the harness itself (the waiting parent for `wait`); leave out `in`",
                        op.name()
                    ),
                );
                None
            }
            (None, false) => {
                self.issue(
                    path.clone(),
                    format!("`{}` needs `in`: the process that does it", op.name()),
                );
                None
            }
            (Some(p), false) => Some(p.clone()),
            (None, true) => None,
        };
        if let Some(p) = &step.process {
            self.label(&path, "in", p);
        }
        self.thread(step, &path, coord);
        if let Some(n) = &step.name {
            self.label(&path, "as", n);
        }
        if let Some(p) = &proc_name {
            if !self.procs.contains_key(p) && self.procs.len() >= MAX_PROCESSES {
                self.too_many_processes(&path, "in", p);
            } else if self.procs.entry(p.clone()).or_default().exited {
                self.key_issue(
                    &path,
                    "in",
                    format!("process `{p}` has exited before this step"),
                );
            }
        }
        if in_together && (coord || matches!(op, Op::Fork | Op::Exit { .. })) {
            self.issue(
                path.clone(),
                format!(
                    "`{}` cannot run inside `together`; only one process's own operations can",
                    op.name()
                ),
            );
        }
        let creates = matches!(
            op,
            Op::Open { .. }
                | Op::MemfdCreate { .. }
                | Op::Mmap { .. }
                | Op::Fork
                | Op::Fstat { .. }
                | Op::Mremap { .. }
                | Op::Pagemap { .. }
                | Op::Load { .. }
                | Op::Pread { .. }
                | Op::Mincore { .. }
                | Op::Dup { .. }
                | Op::Io { .. }
                | Op::GetSeals { .. }
                | Op::Lseek { .. }
                | Op::Smaps { .. }
                | Op::OpenSpecial { .. }
                | Op::ShmOpen { .. }
                | Op::Shmget { .. }
                | Op::Shmat { .. }
                | Op::SpawnThread
                | Op::Vmsplice { .. }
                | Op::Read { .. }
                | Op::IoUringRegister { .. }
                | Op::IoUringFixed { .. }
        );
        let needs_name = matches!(
            op,
            Op::Open { .. }
                | Op::MemfdCreate { .. }
                | Op::Mmap { .. }
                | Op::Fork
                | Op::OpenSpecial { .. }
                | Op::ShmOpen { .. }
                | Op::Shmget { .. }
                | Op::Shmat { .. }
                | Op::SpawnThread
                | Op::IoUringRegister { .. }
        );
        match (&step.name, creates, needs_name) {
            (Some(_), false, _) => self.key_issue(
                &path,
                "as",
                format!("`{}` creates nothing to name with `as`", op.name()),
            ),
            (None, _, true) => self.issue(
                path.clone(),
                format!("`{}` needs `as`: the name of what it creates", op.name()),
            ),
            _ => {}
        }
        let p = proc_name.clone().unwrap_or_default();
        let has_proc = proc_name.is_some();
        let mut load_len: Option<i128> = None;
        match op {
            Op::Open {
                path: name, flags, ..
            } => {
                self.check_path(&path, Some("path"), name);
                self.flags(&path, "flags", FlagKind::Open, flags);
            }
            Op::Close { fd } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
            }
            Op::Ftruncate { fd, len } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                self.size(&path, "len", len);
            }
            Op::Pread { fd, at, len } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                self.size(&path, "at", at);
                load_len = self.len(&path, "len", len);
                self.read_len(&path, load_len);
            }
            Op::Pwrite { fd, at, data } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                self.size(&path, "at", at);
                self.data(&path, data, None);
            }
            Op::Write { fd, data } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                self.data(&path, data, None);
            }
            Op::Fsync { fd }
            | Op::Fdatasync { fd }
            | Op::Fstat { fd }
            | Op::Futimens { fd, .. } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
            }
            Op::Unlink { path: name } => self.check_path(&path, Some("path"), name),
            Op::MemfdCreate { flags, .. } => {
                if let Some(f) = flags {
                    self.flags(&path, "flags", FlagKind::Memfd, f);
                }
            }
            Op::Mmap {
                fd,
                len,
                prot,
                flags,
                offset,
                addr,
            } => {
                if let (Some(fd), true) = (fd, has_proc) {
                    self.fd(&path, &p, fd);
                }
                self.size(&path, "len", len);
                self.flags(&path, "prot", FlagKind::Prot, prot);
                self.flags(&path, "flags", FlagKind::Map, flags);
                if let Some(o) = offset {
                    self.size(&path, "offset", o);
                }
                if let (Some(a), true) = (addr, has_proc) {
                    self.addr(&path, "addr", &p, a);
                }
            }
            Op::Munmap { range } | Op::Munlock { range } => {
                if has_proc {
                    self.range(&path, &p, range);
                }
            }
            Op::Mincore { range } => {
                if has_proc {
                    self.range(&path, &p, range);
                }
                // mincore reports one byte per page of the range.
                let len = range
                    .len
                    .as_ref()
                    .and_then(|l| l.resolve_len(self.page_size).ok());
                if let Some(l) = len {
                    let pages = l.div_ceil(self.page_size.max(1));
                    if pages > MAX_STEP_BYTES {
                        self.value_issue(
                            &path,
                            "len",
                            format!(
                                "{} pages are more than the {} pages a `mincore` may report",
                                pages, MAX_STEP_BYTES
                            ),
                        );
                    }
                }
            }
            Op::Mprotect { range, prot } => {
                if has_proc {
                    self.range(&path, &p, range);
                }
                self.flags(&path, "prot", FlagKind::Prot, prot);
            }
            Op::Msync { range, flags } => {
                if has_proc {
                    self.range(&path, &p, range);
                }
                self.flags(&path, "flags", FlagKind::Msync, flags);
            }
            Op::Madvise { range, advice } => {
                if has_proc {
                    self.range(&path, &p, range);
                }
                self.flags(&path, "advice", FlagKind::Madvise, advice);
            }
            Op::Mlock { range, flags } => {
                if has_proc {
                    self.range(&path, &p, range);
                }
                if let Some(f) = flags {
                    self.flags(&path, "flags", FlagKind::Mlock, f);
                }
            }
            Op::Mremap {
                map,
                at,
                old_len,
                new_len,
                flags,
                new_addr,
            } => {
                if has_proc {
                    self.map(&path, "map", &p, map);
                }
                self.size(&path, "at", at);
                self.len(&path, "old_len", old_len);
                self.len(&path, "new_len", new_len);
                if let Some(f) = flags {
                    self.flags(&path, "flags", FlagKind::Mremap, f);
                }
                if let (Some(a), true) = (new_addr, has_proc) {
                    self.addr(&path, "new_addr", &p, a);
                }
            }
            Op::Store { map, at, data } => {
                if has_proc {
                    self.map(&path, "map", &p, map);
                }
                self.size(&path, "at", at);
                self.data(&path, data, None);
            }
            Op::Load { map, at, len } => {
                if has_proc {
                    self.map(&path, "map", &p, map);
                }
                self.size(&path, "at", at);
                load_len = self.len(&path, "len", len);
                self.read_len(&path, load_len);
            }
            Op::Increment { map, at, width, .. } => {
                if has_proc {
                    self.map(&path, "map", &p, map);
                }
                self.size(&path, "at", at);
                if *width != 4 && *width != 8 {
                    self.key_issue(&path, "width", "`width` is 4 or 8 bytes");
                }
            }
            Op::Fork => {
                if let Some(child) = &step.name {
                    if self.procs.contains_key(child) {
                        self.key_issue(&path, "as", format!("process `{child}` already exists"));
                    } else if self.procs.len() >= MAX_PROCESSES {
                        self.too_many_processes(&path, "as", child);
                    } else if has_proc {
                        let mut view = self.procs.get(&p).cloned().unwrap_or_default();
                        view.exited = false;
                        // fork(2) copies only the calling thread.
                        view.threads.clear();
                        self.procs.insert(child.clone(), view);
                    }
                }
            }
            Op::Remount { .. } | Op::DropCaches => {}
            Op::FillFs { path: name } => self.check_path(&path, Some("path"), name),
            Op::Crash => {
                // A power cut ends every process; later steps need new ones.
                for v in self.procs.values_mut() {
                    v.exited = true;
                }
            }
            Op::Exit { .. } => {
                if let Some(v) = self.procs.get_mut(&p) {
                    v.exited = true;
                }
            }
            Op::Wait { target } => {
                self.label(&path, "proc", target);
                if !self.procs.contains_key(target) {
                    self.key_issue(&path, "proc", format!("no process `{target}` to wait for"));
                }
            }
            Op::Kill { target, signal } => {
                self.label(&path, "proc", target);
                if !self.procs.contains_key(target) {
                    self.key_issue(&path, "proc", format!("no process `{target}` to signal"));
                }
                if names::signal_value(signal).is_none() {
                    self.key_issue(&path, "signal", format!("unknown signal `{signal}`"));
                }
            }
            Op::Together { steps } => {
                if steps.len() < 2 {
                    self.issue(path.clone(), "`together` needs at least two steps");
                }
                let mut seen = BTreeSet::new();
                for (i, inner) in steps.iter().enumerate() {
                    let mut ip = path.clone();
                    ip.push(Seg::from("steps"));
                    ip.push(Seg::from(i));
                    if let Some(pn) = &inner.process {
                        let thread = inner.thread.as_deref().unwrap_or(MAIN_THREAD);
                        if !seen.insert((pn.clone(), thread.to_string())) {
                            let (key, what) = match &inner.thread {
                                Some(t) => ("thread", format!("thread `{t}` of process `{pn}`")),
                                None => ("in", format!("process `{pn}`")),
                            };
                            self.key_issue(
                                &ip,
                                key,
                                format!("{what} appears twice in one `together`"),
                            );
                        }
                    }
                    self.step(inner, ip, true);
                }
            }
            Op::Pagemap { map, at, .. } => {
                if has_proc {
                    self.map(&path, "map", &p, map);
                }
                self.size(&path, "at", at);
            }
            // --- issue 18, part A ---
            Op::Io {
                call,
                fd,
                offset,
                bufs,
            } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                match (call.positioned(), offset) {
                    (true, None) => self.issue(
                        path.clone(),
                        format!("`io` `{}` needs `offset`: the file position", call.name()),
                    ),
                    (false, Some(_)) => self.key_issue(
                        &path,
                        "offset",
                        format!(
                            "`{}` uses the fd's own position; only pread and pwrite take `offset`",
                            call.name()
                        ),
                    ),
                    (true, Some(o)) => {
                        self.size(&path, "offset", o);
                    }
                    (false, None) => {}
                }
                if bufs.is_empty() || (!call.vectored() && bufs.len() != 1) {
                    self.key_issue(
                        &path,
                        "bufs",
                        format!(
                            "`{}` takes {} buffer",
                            call.name(),
                            if call.vectored() {
                                "at least one"
                            } else {
                                "exactly one"
                            }
                        ),
                    );
                }
                for (i, b) in bufs.iter().enumerate() {
                    let mut bp = path.clone();
                    bp.push(Seg::from("bufs"));
                    bp.push(Seg::from(i));
                    if has_proc {
                        self.range(&bp, &p, b);
                    }
                }
            }
            Op::AddSeals { fd, seals } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                self.flags(&path, "seals", FlagKind::Seal, seals);
            }
            Op::GetSeals { fd } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
            }
            Op::Dup { fd, onto } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                if let (Some(o), true) = (onto, has_proc) {
                    let mut op_path = path.clone();
                    op_path.push(Seg::from("onto"));
                    self.fd(&op_path, &p, o);
                }
                match (onto, &step.name) {
                    (Some(_), Some(_)) => self.key_issue(
                        &path,
                        "as",
                        "`dup` with `onto` reuses that fd's name; leave out `as`",
                    ),
                    (None, None) => self.issue(
                        path.clone(),
                        "`dup` needs `as` (the new fd's name) or `onto` (an fd to replace)",
                    ),
                    _ => {}
                }
            }
            Op::Lseek { fd, offset, whence } => {
                if has_proc {
                    self.fd(&path, &p, fd);
                }
                self.size(&path, "offset", offset);
                self.flags(&path, "whence", FlagKind::Whence, whence);
            }
            Op::Mlockall { flags } => self.flags(&path, "flags", FlagKind::Mlockall, flags),
            Op::Munlockall => {}
            Op::Smaps { map, at, .. } => {
                if has_proc {
                    self.map(&path, "map", &p, map);
                }
                self.size(&path, "at", at);
            }
            // ---- Issue 18, part B: other objects, limits, another process's memory.
            Op::OpenSpecial { flags, .. } => {
                if let Some(f) = flags {
                    self.flags(&path, "flags", FlagKind::Open, f);
                }
            }
            Op::ShmOpen { name, flags, .. } => {
                self.shm_name(&path, name);
                self.flags(&path, "flags", FlagKind::Open, flags);
            }
            Op::ShmUnlink { name } => self.shm_name(&path, name),
            Op::Shmget { size, .. } => {
                self.len(&path, "size", size);
            }
            Op::Shmat { seg, .. } | Op::ShmRmid { seg } => {
                if has_proc {
                    self.seg(&path, &p, seg);
                }
            }
            Op::Shmdt { map } => {
                if has_proc {
                    self.map(&path, "map", &p, map);
                }
            }
            Op::Setrlimit { limit, .. } => {
                if let Err(e) = crate::exec::plan::rlimit(limit, self.page_size) {
                    self.key_issue(&path, "limit", format!("{e} (or \"unlimited\")"));
                }
            }
            Op::IgnoreSignal { signal } => match names::signal_value(signal) {
                None => self.key_issue(&path, "signal", format!("unknown signal `{signal}`")),
                // The harness reports faults through its own handlers.
                Some(libc::SIGSEGV | libc::SIGBUS) => self.key_issue(
                    &path,
                    "signal",
                    format!("{signal} is how the harness observes faults; it cannot be ignored"),
                ),
                Some(_) => {}
            },
            Op::DropPrivileges => {}
            Op::RemoteRead {
                target,
                map,
                at,
                len,
                ..
            } => {
                self.remote_target(&path, target, map);
                self.size(&path, "at", at);
                load_len = self.len(&path, "len", len);
                self.read_len(&path, load_len);
            }
            Op::RemoteWrite {
                target,
                map,
                at,
                data,
                ..
            } => {
                self.remote_target(&path, target, map);
                self.size(&path, "at", at);
                self.data(&path, data, None);
            }
            Op::Vmsplice { .. }
            | Op::Read { .. }
            | Op::IoUringRegister { .. }
            | Op::IoUringFixed { .. }
            | Op::IoUringUnregister { .. } => {
                load_len = self.pin_step(op, &path, &p, has_proc);
            }
            Op::CheckFile {
                path: name,
                len,
                at,
                ..
            } => {
                self.check_path(&path, Some("path"), name);
                self.size(&path, "at", at);
                if let Some(l) = len {
                    load_len = self.len(&path, "len", l);
                    self.read_len(&path, load_len);
                }
            }
            Op::SpawnThread => {
                if let (Some(name), true) = (&step.name, has_proc) {
                    self.spawn_thread(&path, &p, name);
                }
            }
        }
        self.expectations(step, &path, load_len);
        // Names created by this step exist from the next step on.
        if let (Some(name), true) = (&step.name, has_proc) {
            let view = self.procs.get_mut(&p);
            match (op, view) {
                (Op::Open { .. } | Op::MemfdCreate { .. } | Op::Dup { .. }, Some(view)) => {
                    view.fds.insert(name.clone());
                }
                (Op::Mmap { .. } | Op::Mremap { .. }, Some(view)) => {
                    view.maps.insert(name.clone());
                }
                (
                    Op::Open { .. }
                    | Op::MemfdCreate { .. }
                    | Op::Dup { .. }
                    | Op::Mmap { .. }
                    | Op::Mremap { .. },
                    None,
                ) => {}
                (Op::Fstat { .. }, _) => {
                    self.snapshots.insert(name.clone());
                }
                (op, _) if records_value(op) => {
                    self.values.insert(name.clone());
                }
                _ => {}
            }
        }
        if let (Some(name), true) = (&step.name, has_proc) {
            if let Some(view) = self.procs.get_mut(&p) {
                match op {
                    Op::OpenSpecial { what, .. } => {
                        view.fds.insert(name.clone());
                        if *what == crate::case::model::Special::Pipe {
                            view.fds.insert(format!("{name}_w"));
                        }
                    }
                    Op::ShmOpen { .. } => {
                        view.fds.insert(name.clone());
                    }
                    Op::Shmat { .. } => {
                        view.maps.insert(name.clone());
                    }
                    Op::Shmget { .. } => {
                        view.segs.insert(name.clone());
                    }
                    Op::IoUringRegister { .. } => {
                        view.rings.insert(name.clone());
                    }
                    _ => {}
                }
            }
        }
        if let (Op::Close { fd }, true) = (op, has_proc) {
            if let Some(v) = self.procs.get_mut(&p) {
                v.fds.remove(fd);
            }
        }
        if let (Op::IoUringUnregister { ring }, true) = (op, has_proc) {
            if let Some(v) = self.procs.get_mut(&p) {
                v.rings.remove(ring);
            }
        }
    }

    fn expectations(&mut self, step: &Step, path: &[Seg], load_len: Option<i128>) {
        if let Op::Together { .. } = step.op {
            if step.expect.is_some() || !step.variants.is_empty() || step.observe {
                self.issue(
                    path.to_vec(),
                    "`together` has no outcome of its own; put expectations on its inner steps",
                );
            }
            return;
        }
        if let Op::Wait { .. } = step.op {
            let says_how = step
                .expect
                .as_ref()
                .is_some_and(|e| e.exit.is_some() || e.killed_by.is_some());
            if !step.observe && !says_how {
                self.issue(
                    path.to_vec(),
                    "`wait` must expect how the process ends: `exit` or `killed_by` (or `observe`)",
                );
            }
        }
        // The swap bit is shown to every reader; frame numbers only to CAP_SYS_ADMIN.
        if let (Op::Pagemap { swapped: false, .. }, false) = (&step.op, self.pagemap_probe) {
            self.issue(
                path.to_vec(),
                "a case using `pagemap` requires the `pagemap_pfn` probe (frame numbers read as 0 without it)",
            );
        }
        if step.observe && step.expect.is_some() {
            self.key_issue(
                path,
                "observe",
                "a step either expects or observes, not both",
            );
        }
        if let Some(e) = &step.expect {
            let mut p = path.to_vec();
            p.push(Seg::from("expect"));
            self.expect(&step.op, e, &p, load_len);
        }
        for (i, v) in step.variants.iter().enumerate() {
            let mut vp = path.to_vec();
            vp.push(Seg::from("variants"));
            vp.push(Seg::from(i));
            let w = &v.when;
            // Every field of §5.7's `when` table counts.
            if w.fs.is_empty()
                && w.target.is_empty()
                && w.mount_options.is_empty()
                && w.kernel.is_none()
                && w.page_size.is_none()
                && w.arch.is_empty()
            {
                self.key_issue(
                    &vp,
                    "when",
                    "`when` must name at least one of fs, target, mount_options, kernel, page_size, arch",
                );
            }
            if let Some(k) = &w.kernel {
                if let Err(e) = KernelRange::parse(k) {
                    self.key_issue(&vp, "kernel", e);
                }
            }
            if v.why.trim().is_empty() {
                self.key_issue(
                    &vp,
                    "why",
                    "a variant says why it differs (a commit, man page or clause)",
                );
            }
            match (&v.skip_rest, v.observe) {
                (Some(r), _) if r.trim().is_empty() => self.key_issue(
                    &vp,
                    "skip_rest",
                    "`skip_rest` is the reason the rest of the case is skipped: not blank",
                ),
                (Some(_), true) => self.key_issue(
                    &vp,
                    "skip_rest",
                    "`skip_rest` needs an expectation the step must meet, not `observe`",
                ),
                _ => {}
            }
            if v.observe && v.expect.is_some() {
                self.key_issue(
                    &vp,
                    "observe",
                    "a variant either expects or observes, not both",
                );
            }
            if let Some(e) = &v.expect {
                vp.push(Seg::from("expect"));
                self.expect(&step.op, e, &vp, load_len);
            }
        }
    }

    fn expect(&mut self, op: &Op, e: &Expect, path: &[Seg], load_len: Option<i128>) {
        let name = op.name();
        for (key, msg) in super::expect_fault::problems(op, e, self.page_size) {
            self.key_issue(path, key, msg);
        }
        if let Some(from) = &e.from {
            if e.pattern.is_none() {
                self.key_issue(
                    path,
                    "from",
                    "`from` says where in a `pattern` the bytes start: it goes with `pattern`",
                );
            }
            self.len(path, "from", from);
        }
        if let Some(errno) = &e.errno {
            if names::errno_value(errno).is_none() {
                self.key_issue(path, "errno", format!("unknown errno `{errno}`"));
            }
        }
        if let Some(sig) = &e.signal {
            if names::signal_value(sig).is_none() {
                self.key_issue(path, "signal", format!("unknown signal `{sig}`"));
            }
            // SIGXFSZ comes from a call that grows a file past RLIMIT_FSIZE
            // (the worker catches it, as it does the fault signals).
            let grows_file = matches!(
                op,
                Op::Write { .. } | Op::Pwrite { .. } | Op::Ftruncate { .. }
            );
            if sig == "SIGXFSZ" && !grows_file {
                self.key_issue(
                    path,
                    "signal",
                    format!("`{name}` cannot raise SIGXFSZ: only write, pwrite and ftruncate grow a file"),
                );
            } else if sig != "SIGXFSZ"
                && !matches!(
                    op,
                    Op::Load { .. } | Op::Store { .. } | Op::Increment { .. }
                )
            {
                self.key_issue(path, "signal", format!("`{name}` makes no memory access that could raise a signal; a failing syscall gives an errno"));
            }
        }
        match (&e.si_code, &e.signal) {
            (Some(_), None) => self.key_issue(path, "si_code", "`si_code` goes with `signal`"),
            (Some(code), Some(sig)) if !names::si_code_known(sig, code) => self.key_issue(
                path,
                "si_code",
                format!("`{code}` is not an si_code of {sig}"),
            ),
            _ => {}
        }
        let outcomes = [
            e.errno.is_some(),
            e.signal.is_some(),
            e.exit.is_some() || e.killed_by.is_some(),
        ];
        if outcomes.iter().filter(|b| **b).count() > 1 {
            self.issue(
                path.to_vec(),
                "expect at most one outcome: `errno`, `signal`, or `exit`/`killed_by`",
            );
        }
        if (e.exit.is_some() || e.killed_by.is_some()) && !matches!(op, Op::Wait { .. }) {
            self.issue(
                path.to_vec(),
                "`exit` and `killed_by` are outcomes of `wait`",
            );
        }
        if e.exit.is_some() && e.killed_by.is_some() {
            self.issue(path.to_vec(), "a process either exits or is killed");
        }
        if let Some(k) = &e.killed_by {
            if names::signal_value(k).is_none() {
                self.key_issue(path, "killed_by", format!("unknown signal `{k}`"));
            }
        }
        let bytes = e.bytes();
        let byte_op = matches!(
            op,
            Op::Load { .. }
                | Op::Pread { .. }
                | Op::CheckFile { .. }
                | Op::Mincore { .. }
                | Op::RemoteRead { .. }
                | Op::Read { .. }
        );
        if !bytes.is_empty() {
            if !byte_op {
                self.issue(path.to_vec(), format!("`{name}` reads no bytes to compare"));
            } else {
                let default_len = load_len.and_then(|l| u64::try_from(l).ok());
                // mincore and check_file without `len` read a length known
                // only at run time; a fill or pattern then takes that length.
                let runtime_len =
                    matches!(op, Op::Mincore { .. } | Op::CheckFile { len: None, .. });
                let resolve_len = if runtime_len { Some(0) } else { default_len };
                match bytes.resolve(self.page_size, resolve_len) {
                    Err(err) => self.issue(path.to_vec(), err),
                    Ok(b) => {
                        if let (Some(want), false) = (default_len, matches!(op, Op::Mincore { .. }))
                        {
                            if b.len() != want {
                                self.issue(
                                    path.to_vec(),
                                    format!("expects {} bytes but the step reads {want}", b.len()),
                                );
                            }
                        }
                    }
                }
            }
        }
        if e.value.is_some() || e.range.is_some() {
            if e.value.is_some() && e.range.is_some() {
                self.issue(path.to_vec(), "give `value` or `range`, not both");
            }
            let number_op = byte_op
                || matches!(
                    op,
                    Op::Pwrite { .. }
                        | Op::Write { .. }
                        | Op::Pagemap { .. }
                        | Op::RemoteWrite { .. }
                )
                || records_value(op);
            if !number_op {
                self.issue(path.to_vec(), format!("`{name}` observes no number"));
            }
            let reads_bytes = matches!(
                op,
                Op::Load { .. } | Op::Pread { .. } | Op::CheckFile { .. } | Op::Read { .. }
            );
            if let (true, Some(l)) = (reads_bytes, load_len) {
                if ![1, 2, 4, 8].contains(&l) {
                    self.issue(
                        path.to_vec(),
                        format!("a number is read from 1, 2, 4 or 8 bytes, not {l}"),
                    );
                }
            }
            if let Some(v) = &e.value {
                if let Err(err) = v.resolve_number(self.page_size) {
                    self.key_issue(path, "value", err);
                }
            }
            if let Some([lo, hi]) = &e.range {
                let number = |s: &Size| s.resolve_number(self.page_size);
                let (lo, hi) = match (number(lo), number(hi)) {
                    (Ok(lo), Ok(hi)) => (lo, hi),
                    (Err(err), _) | (_, Err(err)) => {
                        self.key_issue(path, "range", err);
                        (0, 0)
                    }
                };
                if lo > hi {
                    self.key_issue(path, "range", "`range` is [min, max] with min <= max");
                }
            }
        }
        for (key, name) in [("same_as", &e.same_as), ("differs_from", &e.differs_from)] {
            let Some(name) = name else { continue };
            self.label(path, key, name);
            if !self.values.contains(name) {
                self.key_issue(
                    path,
                    key,
                    format!("no earlier step recorded a value as `{name}`"),
                );
            }
            if !records_value(op) {
                self.key_issue(
                    path,
                    key,
                    format!("`{key}` compares numbers; `{name}` observes none it could compare"),
                );
            }
        }
        if let Some(st) = &e.stat {
            if !matches!(op, Op::Fstat { .. }) {
                self.key_issue(path, "stat", "`stat` is an expectation of `fstat`");
            }
            if let Some(size) = &st.size {
                self.size(path, "size", size);
            }
            for since in [&st.mtime, &st.ctime].into_iter().flatten() {
                let (super::model::Since::ChangedSince(snap)
                | super::model::Since::UnchangedSince(snap)) = since;
                if !self.snapshots.contains(snap) {
                    self.issue(
                        path.to_vec(),
                        format!("no earlier fstat step named `{snap}`"),
                    );
                }
            }
        }
    }
}

/// Operations whose observed number `as` can record and `same_as` can compare.
pub fn records_value(op: &Op) -> bool {
    matches!(
        op,
        Op::Pagemap { .. } | Op::Load { .. } | Op::Pread { .. } | Op::Mincore { .. }
    ) || records_new_value(op)
}

/// The numbers issue 18's operations observe: a count of bytes moved, the
/// seal bits, a file offset, an smaps field.
fn records_new_value(op: &Op) -> bool {
    matches!(
        op,
        Op::Io { .. } | Op::GetSeals { .. } | Op::Lseek { .. } | Op::Smaps { .. }
    ) || pins::records_value(op)
}

/// A file name inside the scratch directory: no `/`, not `.` or `..`, not empty.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty path".to_string());
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "a file name is at most {NAME_MAX} bytes (NAME_MAX); this one has {}",
            name.len()
        ));
    }
    if name.starts_with('/') {
        return Err(format!(
            "path `{name}` is absolute; paths are names inside the case's scratch directory"
        ));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(format!(
            "path `{name}` leaves the scratch directory through `..`"
        ));
    }
    if name.contains('/') || name == "." || name.contains('\0') {
        return Err(format!(
            "path `{name}` must be a plain file name inside the scratch directory"
        ));
    }
    Ok(())
}
