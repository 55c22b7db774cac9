//! Shrinking a divergent case: smaller and smaller variants (steps,
//! processes and files dropped, pages and lengths reduced, data made
//! short text) are tried, and one is kept whenever it still diverges the
//! same way (same operation at the divergent step, same kind of mismatch).
//!
//! Dropping a step can leave later steps naming what no longer exists (a
//! store into a mapping never made, the wait for an exit that is gone):
//! `prune` drops those too, so every candidate is a valid case.

use super::gen::{pages_plus, validate};
use crate::case::model::{Case, Data, Op, Size, Step};
use std::collections::{BTreeMap, BTreeSet};

/// The signature a candidate must keep: see `judge::Divergence::signature`.
pub type Signature = (String, String);

#[derive(Debug, Clone, Default)]
struct View {
    fds: BTreeSet<String>,
    maps: BTreeSet<String>,
    parent: Option<String>,
    exited: bool,
    waited: bool,
}

/// The case without the steps that name what does not exist at their
/// point (fds, mappings, processes, files), exits of processes with live
/// children, waits without their exit, and with `together` sections of
/// fewer than two steps unwrapped.
pub fn prune(case: &Case) -> Case {
    let mut procs: BTreeMap<String, View> = BTreeMap::new();
    let files: BTreeSet<String> = case.files.keys().cloned().collect();
    let mut out = Vec::new();
    for s in &case.steps {
        if let Op::Together { steps } = &s.op {
            let mut inner: Vec<Step> = Vec::new();
            let mut who = BTreeSet::new();
            for t in steps {
                // Each process once, and only its own operations.
                if t.process.as_ref().is_some_and(|p| who.insert(p.clone()))
                    && !matches!(t.op, Op::Fork | Op::Exit { .. } | Op::MemfdCreate { .. })
                    && keep(t, &mut procs, &files)
                {
                    inner.push(t.clone());
                }
            }
            match inner.len() {
                0 => {}
                1 => out.push(inner.pop().expect("one step")),
                _ => {
                    let mut t = s.clone();
                    t.op = Op::Together { steps: inner };
                    out.push(t);
                }
            }
        } else if keep(s, &mut procs, &files) {
            out.push(s.clone());
        }
    }
    let mut c = case.clone();
    c.steps = out;
    c
}

/// Whether a step may stay, updating the picture of the processes when it does.
fn keep(s: &Step, procs: &mut BTreeMap<String, View>, files: &BTreeSet<String>) -> bool {
    let Some(p) = s.process.clone() else {
        return match &s.op {
            Op::CheckFile { path, .. } => files.contains(path),
            Op::Kill { target, .. } => {
                let orphans = procs
                    .values()
                    .any(|c| c.parent.as_ref() == Some(target) && !c.exited);
                match procs.get_mut(target) {
                    Some(v) if !v.exited && v.parent.is_some() && !orphans => {
                        v.exited = true;
                        true
                    }
                    _ => false,
                }
            }
            Op::Wait { target } => {
                let parent_live = |v: &View| {
                    v.parent
                        .as_ref()
                        .and_then(|par| procs.get(par))
                        .is_some_and(|pv| !pv.exited)
                };
                match procs.get(target) {
                    Some(v) if v.exited && !v.waited && parent_live(v) => {
                        procs.get_mut(target).expect("present").waited = true;
                        true
                    }
                    _ => false,
                }
            }
            _ => true,
        };
    };
    let v = procs.entry(p.clone()).or_default().clone();
    if v.exited {
        return false;
    }
    let has_fd = |fd: &String| v.fds.contains(fd);
    let has_map = |m: &String| v.maps.contains(m);
    // The fd a step uses (a clone of the op, as fd_mut borrows mutably).
    let fd_ok = fd_mut(&mut s.op.clone()).is_none_or(|fd| has_fd(fd));
    let ok = fd_ok
        && match &s.op {
            Op::Open { path, .. } => files.contains(path),
            Op::Munmap { range }
            | Op::Mprotect { range, .. }
            | Op::Msync { range, .. }
            | Op::Madvise { range, .. }
            | Op::Mlock { range, .. }
            | Op::Munlock { range }
            | Op::Mincore { range } => has_map(&range.map),
            Op::Mremap { map, .. }
            | Op::Store { map, .. }
            | Op::Load { map, .. }
            | Op::Increment { map, .. }
            | Op::Pagemap { map, .. } => has_map(map),
            Op::Exit { .. } => !procs
                .values()
                .any(|c| c.parent.as_ref() == Some(&p) && !c.exited),
            _ => true,
        };
    if !ok {
        return false;
    }
    let name = s.name.clone().unwrap_or_default();
    match &s.op {
        Op::Open { .. } | Op::MemfdCreate { .. } => {
            procs.get_mut(&p).expect("present").fds.insert(name);
        }
        Op::Mmap { .. } => {
            procs.get_mut(&p).expect("present").maps.insert(name);
        }
        Op::Fork => {
            let mut child = v.clone();
            child.parent = Some(p.clone());
            procs.insert(name, child);
        }
        Op::Exit { .. } => procs.get_mut(&p).expect("present").exited = true,
        _ => {}
    }
    true
}

/// Shrinks `case`, which diverges with `sig`, using `diverges` (it runs a
/// candidate and gives its divergence's signature, None when it agrees)
/// at most `budget` times. `divergent_step` is the top-level step number
/// (1-based) where it diverged: later steps are dropped first.
pub fn shrink(
    case: &Case,
    sig: &Signature,
    divergent_step: usize,
    page_size: u64,
    budget: usize,
    diverges: &mut dyn FnMut(&Case) -> Option<Signature>,
) -> Case {
    let mut s = Shrinker {
        best: case.clone(),
        sig: sig.clone(),
        page_size,
        tries: 0,
        budget,
        diverges,
        seen: BTreeSet::new(),
    };
    let mut cut = case.clone();
    cut.steps.truncate(divergent_step.max(1));
    s.try_accept(prune(&cut));
    loop {
        let before = serde_json::to_string(&s.best).unwrap_or_default();
        s.drop_chunks();
        s.drop_processes();
        s.merge_forks();
        s.merge_fresh();
        s.merge_fds();
        s.unwrap_together();
        s.simplify();
        s.drop_files();
        let after = serde_json::to_string(&s.best).unwrap_or_default();
        if before == after || s.tries >= s.budget {
            break;
        }
    }
    s.best
}

struct Shrinker<'a> {
    best: Case,
    sig: Signature,
    page_size: u64,
    tries: usize,
    budget: usize,
    diverges: &'a mut dyn FnMut(&Case) -> Option<Signature>,
    /// Candidates already run, by their text: never run twice.
    seen: BTreeSet<String>,
}

impl Shrinker<'_> {
    /// Runs a candidate (pruned, valid, new, within budget); keeps it when it
    /// still diverges the same way.
    fn try_accept(&mut self, candidate: Case) -> bool {
        let candidate = prune(&candidate);
        if candidate.steps.is_empty() || self.tries >= self.budget {
            return false;
        }
        let text = serde_json::to_string(&candidate).unwrap_or_default();
        if !self.seen.insert(text) || validate(&candidate, self.page_size).is_err() {
            return false;
        }
        self.tries += 1;
        if (self.diverges)(&candidate).as_ref() == Some(&self.sig) {
            self.best = candidate;
            true
        } else {
            false
        }
    }

    /// Drops runs of top-level steps, halves first, then smaller runs, from the end.
    fn drop_chunks(&mut self) {
        let mut size = self.best.steps.len() / 2;
        while size >= 1 {
            let mut start = self.best.steps.len().saturating_sub(size);
            loop {
                let mut c = self.best.clone();
                if start < c.steps.len() {
                    let end = (start + size).min(c.steps.len());
                    c.steps.drain(start..end);
                    self.try_accept(c);
                }
                if start == 0 {
                    break;
                }
                start = start.saturating_sub(size);
            }
            size /= 2;
        }
    }

    /// Drops every step of one process (its children's go with their fork).
    fn drop_processes(&mut self) {
        let procs: BTreeSet<String> = self
            .best
            .steps
            .iter()
            .flat_map(|s| match &s.op {
                Op::Together { steps } => steps.iter().filter_map(|t| t.process.clone()).collect(),
                _ => s.process.clone().into_iter().collect::<Vec<_>>(),
            })
            .collect();
        for p in procs {
            let mut c = self.best.clone();
            c.steps.retain(|s| s.process.as_ref() != Some(&p));
            for s in c.steps.iter_mut() {
                if let Op::Together { steps } = &mut s.op {
                    steps.retain(|t| t.process.as_ref() != Some(&p));
                }
            }
            self.try_accept(c);
        }
    }

    /// A fresh process's steps are done by another process instead (names
    /// of fds and mappings are unique in a generated case, so none clash).
    fn merge_fresh(&mut self) {
        let forked: BTreeSet<String> = self
            .best
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::Fork))
            .filter_map(|s| s.name.clone())
            .collect();
        let mut order: Vec<String> = Vec::new();
        for s in &self.best.steps {
            let inner: Vec<&Step> = match &s.op {
                Op::Together { steps } => steps.iter().collect(),
                _ => vec![s],
            };
            for t in inner {
                if let Some(p) = &t.process {
                    if !order.contains(p) {
                        order.push(p.clone());
                    }
                }
            }
        }
        for (i, b) in order.iter().enumerate() {
            if forked.contains(b) {
                continue;
            }
            for a in &order[..i] {
                let mut c = self.best.clone();
                rename_process(&mut c, b, a);
                if self.try_accept(c) {
                    break;
                }
            }
        }
    }

    /// Uses of an fd go to an fd opened before it instead, and its own open
    /// goes: three opens of one file often shrink to one.
    fn merge_fds(&mut self) {
        let opens: Vec<(usize, String)> = self
            .best
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.op, Op::Open { .. } | Op::MemfdCreate { .. }))
            .filter_map(|(i, s)| s.name.clone().map(|n| (i, n)))
            .collect();
        for (k, (i, b)) in opens.iter().enumerate().rev() {
            for (_, a) in &opens[..k] {
                let mut c = self.best.clone();
                if c.steps.get(*i).and_then(|s| s.name.as_ref()) != Some(b) {
                    break;
                }
                c.steps.remove(*i);
                for s in c.steps.iter_mut() {
                    if let Some(fd) = fd_mut(&mut s.op) {
                        if fd == b {
                            *fd = a.clone();
                        }
                    }
                }
                if self.try_accept(c) {
                    break;
                }
            }
        }
    }

    /// A forked child's steps are done by its parent instead, without the
    /// fork (and without the child's exit and the wait for it).
    fn merge_forks(&mut self) {
        for i in 0..self.best.steps.len() {
            let Some(s) = self.best.steps.get(i) else {
                break;
            };
            let (Op::Fork, Some(parent), Some(child)) = (&s.op, &s.process, &s.name) else {
                continue;
            };
            let (parent, child) = (parent.clone(), child.clone());
            let mut c = self.best.clone();
            c.steps.remove(i);
            c.steps.retain(|s| match &s.op {
                Op::Exit { .. } => s.process.as_ref() != Some(&child),
                Op::Wait { target } | Op::Kill { target, .. } => target != &child,
                _ => true,
            });
            rename_process(&mut c, &child, &parent);
            self.try_accept(c);
        }
    }

    /// A `together` section becomes its steps one after another, or loses one.
    fn unwrap_together(&mut self) {
        for i in 0..self.best.steps.len() {
            let Some(Op::Together { steps }) = self.best.steps.get(i).map(|s| s.op.clone()) else {
                continue;
            };
            let mut c = self.best.clone();
            c.steps.splice(i..=i, steps.clone());
            if self.try_accept(c) {
                continue;
            }
            for j in 0..steps.len() {
                let mut c = self.best.clone();
                if let Op::Together { steps } = &mut c.steps[i].op {
                    if j < steps.len() {
                        steps.remove(j);
                    }
                }
                self.try_accept(c);
            }
        }
    }

    /// Smaller sizes, offsets and data, one field of one step at a time.
    fn simplify(&mut self) {
        for i in 0..self.best.steps.len() {
            let mut field = 0;
            loop {
                let mut c = self.best.clone();
                let Some(options) = sizes_mut(&mut c.steps[i].op)
                    .get(field)
                    .map(|s| smaller(s, self.page_size))
                else {
                    break;
                };
                for o in options {
                    let mut c = self.best.clone();
                    if let Some(s) = sizes_mut(&mut c.steps[i].op).into_iter().nth(field) {
                        *s = o;
                    }
                    if self.try_accept(c) {
                        break;
                    }
                }
                field += 1;
            }
            let data = data_mut(&mut self.best.steps[i].op).cloned();
            if let Some(d) = data {
                for simpler in simpler_data(&d) {
                    let mut c = self.best.clone();
                    if let Some(slot) = data_mut(&mut c.steps[i].op) {
                        *slot = simpler;
                    }
                    if self.try_accept(c) {
                        break;
                    }
                }
            }
        }
    }

    /// Files no step names go; the others lose their content, then pages.
    fn drop_files(&mut self) {
        let names: Vec<String> = self.best.files.keys().cloned().collect();
        for name in names {
            let mut c = self.best.clone();
            c.files.remove(&name);
            if self.try_accept(c) {
                continue;
            }
            if !self.best.files[&name].data.is_empty() {
                let mut c = self.best.clone();
                c.files.get_mut(&name).expect("present").data = Data::default();
                self.try_accept(c);
            }
            let size = self.best.files[&name].size.clone();
            if let Some(size) = size {
                for o in smaller(&size, self.page_size) {
                    let mut c = self.best.clone();
                    let f = c.files.get_mut(&name).expect("present");
                    if f.data.len.is_some() {
                        f.data.len = Some(o.clone());
                    }
                    f.size = Some(o);
                    if self.try_accept(c) {
                        break;
                    }
                }
            }
        }
    }
}

/// Every step of process `from` (inside `together` too) is done by `to`.
fn rename_process(c: &mut Case, from: &str, to: &str) {
    for s in c.steps.iter_mut() {
        let inner: Vec<&mut Step> = match &mut s.op {
            Op::Together { steps } => steps.iter_mut().collect(),
            _ => vec![s],
        };
        for t in inner {
            if t.process.as_deref() == Some(from) {
                t.process = Some(to.to_string());
            }
        }
    }
}

/// The sizes of an operation a shrinker may reduce, in a fixed order.
fn sizes_mut(op: &mut Op) -> Vec<&mut Size> {
    match op {
        Op::Ftruncate { len, .. } => vec![len],
        Op::Pread { at, len, .. } => vec![at, len],
        Op::Pwrite { at, .. } => vec![at],
        Op::Mmap { len, offset, .. } => {
            let mut v = vec![len];
            v.extend(offset.as_mut());
            v
        }
        Op::Munmap { range }
        | Op::Mprotect { range, .. }
        | Op::Msync { range, .. }
        | Op::Madvise { range, .. } => {
            let mut v = vec![&mut range.at];
            v.extend(range.len.as_mut());
            v
        }
        Op::Mremap { new_len, .. } => vec![new_len],
        Op::Store { at, .. } => vec![at],
        Op::Load { at, len, .. } => vec![at, len],
        Op::CheckFile { at, len, .. } => {
            let mut v = vec![at];
            v.extend(len.as_mut());
            v
        }
        _ => Vec::new(),
    }
}

/// The fd an operation uses, if it names one.
fn fd_mut(op: &mut Op) -> Option<&mut String> {
    match op {
        Op::Close { fd }
        | Op::Ftruncate { fd, .. }
        | Op::Pread { fd, .. }
        | Op::Pwrite { fd, .. }
        | Op::Write { fd, .. }
        | Op::Fsync { fd }
        | Op::Fdatasync { fd }
        | Op::Fstat { fd }
        | Op::Futimens { fd, .. } => Some(fd),
        Op::Mmap { fd, .. } => fd.as_mut(),
        _ => None,
    }
}

fn data_mut(op: &mut Op) -> Option<&mut Data> {
    match op {
        Op::Pwrite { data, .. } | Op::Write { data, .. } | Op::Store { data, .. } => Some(data),
        _ => None,
    }
}

/// Smaller values of a size, smallest first: 0, whole pages below it, half of it.
fn smaller(size: &Size, page_size: u64) -> Vec<Size> {
    let Ok(v) = size.resolve(page_size) else {
        return Vec::new();
    };
    let v = v.max(0) as u64;
    let mut out = Vec::new();
    let mut push = |n: u64| {
        if n < v && !out.contains(&n) {
            out.push(n);
        }
    };
    push(0);
    for p in 1..=v / page_size {
        push(p * page_size);
    }
    push((v / page_size) * page_size + (v % page_size) / 2);
    push(v / 2);
    out.into_iter()
        .map(|n| pages_plus(n / page_size, n % page_size))
        .collect()
}

/// Shorter data: one letter, a few letters, and for long fills a shorter fill.
fn simpler_data(d: &Data) -> Vec<Data> {
    let text = |t: &str| Data {
        text: Some(t.to_string()),
        ..Default::default()
    };
    let mut out = vec![text("x")];
    match (&d.text, d.fill, &d.len) {
        (Some(t), _, _) if t.len() > 1 => {}
        (None, Some(v), Some(Size::Bytes(n))) if *n > 4 => {
            out.push(text("xxxx"));
            out.push(Data {
                fill: Some(v),
                len: Some(Size::Bytes(n / 2)),
                ..Default::default()
            });
        }
        _ => {}
    }
    out.retain(|o| o != d);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::model::FileInit;
    use crate::explore::gen::step;

    fn case(steps: Vec<Step>) -> Case {
        let mut files = BTreeMap::new();
        files.insert(
            "f0.dat".to_string(),
            FileInit {
                size: Some(Size::Expr("1p".to_string())),
                ..Default::default()
            },
        );
        files.insert("f1.dat".to_string(), FileInit::default());
        Case {
            title: "t".to_string(),
            description: String::new(),
            refs: vec!["r".to_string()],
            profile: Default::default(),
            requires: Default::default(),
            timeout: None,
            files,
            processes: Default::default(),
            steps,
        }
    }

    fn open(p: &str, fd: &str) -> Step {
        step(
            Some(p),
            Op::Open {
                path: "f0.dat".to_string(),
                flags: "O_RDWR".to_string(),
                mode: None,
            },
            Some(fd.to_string()),
        )
    }

    fn mmap(p: &str, fd: &str, m: &str) -> Step {
        step(
            Some(p),
            Op::Mmap {
                fd: Some(fd.to_string()),
                len: Size::Expr("2p".to_string()),
                prot: "READ|WRITE".to_string(),
                flags: "PRIVATE".to_string(),
                offset: None,
                addr: None,
            },
            Some(m.to_string()),
        )
    }

    fn store(p: &str, m: &str, text: &str) -> Step {
        step(
            Some(p),
            Op::Store {
                map: m.to_string(),
                at: Size::Expr("1p+7".to_string()),
                data: Data {
                    fill: Some(9),
                    len: Some(Size::Bytes(300)),
                    text: (!text.is_empty()).then(|| text.to_string()),
                    ..Default::default()
                },
            },
            None,
        )
    }

    #[test]
    fn prune_drops_what_names_the_missing() {
        let c = case(vec![
            mmap("p0", "fd1", "m1"), // fd1 was never opened
            store("p0", "m1", ""),
            open("p0", "fd2"),
            step(Some("p0"), Op::Fork, Some("c1".to_string())),
            step(Some("c1"), Op::Exit { code: 1 }, None),
            step(
                None,
                Op::Wait {
                    target: "c2".to_string(),
                },
                None,
            ),
            step(
                None,
                Op::Wait {
                    target: "c1".to_string(),
                },
                None,
            ),
        ]);
        let names: Vec<&str> = prune(&c).steps.iter().map(|s| s.op.name()).collect();
        assert_eq!(names, ["open", "fork", "exit", "wait"]);
        // Without the fork, c1 is a fresh process: its exit cannot be waited for.
        let mut c2 = c.clone();
        c2.steps.remove(3);
        let names: Vec<&str> = prune(&c2).steps.iter().map(|s| s.op.name()).collect();
        assert_eq!(names, ["open", "exit"]);
    }

    #[test]
    fn shrinking_keeps_the_divergence_and_drops_the_rest() {
        // A stand-in for running: "diverges" while a store into m1 follows
        // a private mapping of a file, whatever else the case holds.
        let mut steps = vec![open("p0", "fd1")];
        for i in 0..10 {
            steps.push(open("p1", &format!("fd{}", i + 10)));
        }
        steps.push(mmap("p0", "fd1", "m1"));
        steps.push(step(Some("p0"), Op::Fork, Some("c3".to_string())));
        steps.push(store("c3", "m1", ""));
        steps.push(store("p0", "m1", ""));
        let c = case(steps);
        let sig = ("store".to_string(), "bytes".to_string());
        let runs = std::cell::Cell::new(0);
        let mut diverges = |c: &Case| {
            runs.set(runs.get() + 1);
            let mapped = c
                .steps
                .iter()
                .any(|s| matches!(&s.op, Op::Mmap { flags, .. } if flags == "PRIVATE"));
            let stored = c
                .steps
                .iter()
                .any(|s| matches!(&s.op, Op::Store { map, .. } if map == "m1"));
            (mapped && stored).then(|| ("store".to_string(), "bytes".to_string()))
        };
        let small = shrink(&c, &sig, 15, 4096, 500, &mut diverges);
        let names: Vec<&str> = small.steps.iter().map(|s| s.op.name()).collect();
        assert_eq!(names, ["open", "mmap", "store"], "{small:#?}");
        assert_eq!(small.files.len(), 1, "the unused file goes");
        let Op::Store { at, data, .. } = &small.steps[2].op else {
            panic!()
        };
        assert_eq!(*at, Size::Bytes(0));
        assert_eq!(data.text.as_deref(), Some("x"));
        let Op::Mmap { len, .. } = &small.steps[1].op else {
            panic!()
        };
        assert_eq!(
            *len,
            Size::Bytes(0),
            "the stand-in does not care about the length"
        );
        assert!(runs.get() <= 500);
        // A signature that never comes back leaves the case as it was.
        let other = ("load".to_string(), "bytes".to_string());
        let same = shrink(&c, &other, 15, 4096, 50, &mut diverges);
        assert_eq!(same.steps.len(), c.steps.len());
    }
}
