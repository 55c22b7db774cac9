//! Random cases: a seed and a case number give one valid `Case` of a few
//! processes doing a weighted choice of operations on a few files and
//! mappings, the way fsx does for one file in one process.
//!
//! The generator keeps a static picture of each process (its fds and
//! mappings by name, copied at fork), the same picture validation walks,
//! so every name it uses exists; it does not try to predict outcomes: a
//! store past the end of a file or into an unmapped range is wanted (the
//! model says SIGBUS or SIGSEGV), a name that does not exist is not.
//! Every case is checked with the case validator before it is handed out.

use super::rng::Rng;
use crate::case::model::{Case, Data, FileInit, Op, Range, Size, Step};
use crate::case::parse_case;
use std::collections::BTreeMap;
use std::path::Path;

/// What the target can do that changes which operations are worth generating.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// `crash` steps work here (a filesystem the harness made).
    pub crash: bool,
}

/// Upper bounds of a generated case (issue 12: 1 to 4 processes, 1 to 3
/// files, a few pages, 10 to 60 steps).
pub const MAX_PROCS: usize = 4;
pub const MAX_FILES: u64 = 3;
pub const MIN_STEPS: u64 = 10;
pub const MAX_STEPS: u64 = 60;
/// Mappings and file sizes stay within this many pages.
pub const MAX_PAGES: u64 = 3;

#[derive(Debug, Clone)]
struct Fd {
    name: String,
    /// The file it opened, or None for a memfd.
    file: Option<String>,
    writable: bool,
}

#[derive(Debug, Clone)]
struct Map {
    name: String,
    /// Its length in pages when made or last remapped (an upper bound after munmap).
    pages: u64,
}

#[derive(Debug, Clone)]
struct Proc {
    name: String,
    /// The process that forked it (None: a fresh process).
    parent: Option<String>,
    fds: Vec<Fd>,
    maps: Vec<Map>,
    exited: bool,
}

struct Gen {
    rng: Rng,
    ps: u64,
    caps: Caps,
    files: Vec<String>,
    procs: Vec<Proc>,
    steps: Vec<Step>,
    counter: u32,
}

/// One step without expectations: the model gives them (`model::annotate`).
pub fn step(process: Option<&str>, op: Op, name: Option<String>) -> Step {
    Step {
        process: process.map(str::to_string),
        thread: None,
        op,
        name,
        expect: None,
        variants: Vec::new(),
        observe: false,
        note: None,
    }
}

/// Steps, counting each of those inside `together`.
pub fn step_count(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match &s.op {
            Op::Together { steps } => steps.len(),
            _ => 1,
        })
        .sum()
}

/// `pages` pages and `bytes` bytes, written as the corpus writes sizes ("2p+12").
pub fn pages_plus(pages: u64, bytes: u64) -> Size {
    match (pages, bytes) {
        (0, b) => Size::Bytes(b as i64),
        (p, 0) => Size::Expr(format!("{p}p")),
        (p, b) => Size::Expr(format!("{p}p+{b}")),
    }
}

/// Case `index` of the run with `seed`: valid, 10 to 60 steps. The same
/// arguments give the same case on every machine with the same page size.
pub fn generate(seed: u64, index: u64, caps: Caps, page_size: u64) -> Case {
    // A draw the validator refuses is a generator bug; rather than hand it
    // out, the next stream of the same case is tried (tests hold this at 0).
    for attempt in 0..16u64 {
        let rng = Rng::for_case(seed ^ attempt.wrapping_mul(0x5851_f42d), index);
        let case = Gen::new(rng, page_size, caps).case(seed, index);
        if validate(&case, page_size).is_ok() {
            return case;
        }
    }
    panic!("explore: 16 invalid draws for seed {seed} case {index}: a generator bug");
}

/// Runs the case validator's walk on a case value (names, sizes, flags,
/// expectations): what a generated or annotated case could get wrong. The
/// checks of the JSON text itself (keys, shapes) cannot fail for a value
/// serde writes; `validate_as_file` runs them too, 30 times slower.
pub fn validate(case: &Case, page_size: u64) -> Result<(), String> {
    let steps: Vec<(usize, Step)> = case.steps.iter().cloned().enumerate().collect();
    let issues = crate::case::validate::validate(case, &steps, page_size, true);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues
            .iter()
            .map(|i| format!("{}: {}", crate::case::locate::path_text(&i.path), i.message))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Runs every check `mmapconf validate` runs on a file, on the case's JSON text.
pub fn validate_as_file(case: &Case, page_size: u64) -> Result<(), String> {
    let text = serde_json::to_string_pretty(case).map_err(|e| e.to_string())?;
    parse_case(Path::new("explore.json"), &text, page_size)
        .map(|_| ())
        .map_err(|problems| {
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
}

impl Gen {
    fn new(rng: Rng, ps: u64, caps: Caps) -> Gen {
        Gen {
            rng,
            ps,
            caps,
            files: Vec::new(),
            procs: Vec::new(),
            steps: Vec::new(),
            counter: 0,
        }
    }

    fn fresh_name(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    fn case(mut self, seed: u64, index: u64) -> Case {
        let mut files = BTreeMap::new();
        for i in 0..self.rng.range(1, MAX_FILES) {
            let name = format!("f{i}.dat");
            files.insert(name.clone(), self.file_init());
            self.files.push(name);
        }
        let wanted = self.rng.range(MIN_STEPS, MAX_STEPS) as usize;
        // One case in ten on a target that can crash ends with a power cut
        // and reads what survived (such cases run alone, so not more).
        let crash_at = (self.caps.crash && self.rng.chance(10))
            .then(|| self.rng.range(MIN_STEPS / 2, wanted as u64) as usize);
        let mut tries = 0;
        while self.count() < wanted && tries < wanted * 20 {
            tries += 1;
            if crash_at.is_some_and(|n| self.count() >= n) {
                self.crash();
                break;
            }
            self.one_step();
        }
        Case {
            title: format!("explore seed {seed} case {index}"),
            description: String::new(),
            refs: vec!["mmapconf explore".to_string()],
            profile: Default::default(),
            requires: Default::default(),
            timeout: None,
            files,
            processes: Default::default(),
            steps: self.steps,
        }
    }

    fn count(&self) -> usize {
        step_count(&self.steps)
    }

    fn file_init(&mut self) -> FileInit {
        let size = pages_plus(self.rng.below(MAX_PAGES), self.small_offset());
        let data = if self.rng.chance(50) {
            Data {
                fill: Some(self.rng.range(1, 255) as u8),
                len: Some(size.clone()),
                ..Default::default()
            }
        } else {
            Data::default()
        };
        FileInit {
            size: Some(size),
            data,
            ..Default::default()
        }
    }

    /// 0 half the time, else a few bytes into a page.
    fn small_offset(&mut self) -> u64 {
        if self.rng.chance(50) {
            0
        } else {
            self.rng.range(1, 100)
        }
    }

    /// An offset somewhere in the first `pages` pages, sometimes near a page boundary.
    fn offset_in(&mut self, pages: u64) -> Size {
        let page = self.rng.below(pages.max(1));
        let within = match self.rng.below(3) {
            0 => 0,
            1 => self.ps - self.rng.range(1, 8),
            _ => self.rng.below(self.ps),
        };
        pages_plus(page, within)
    }

    /// An offset for an access of `len` bytes inside a mapping of `pages`
    /// pages (what lies beyond a mapping is not the case's to know).
    fn access_at(&mut self, pages: u64, len: u64) -> Size {
        let at = self.offset_in(pages).resolve(self.ps).unwrap_or(0) as u64;
        let at = at.min((pages * self.ps).saturating_sub(len));
        pages_plus(at / self.ps, at % self.ps)
    }

    fn data(&mut self) -> Data {
        if self.rng.chance(60) {
            let n = self.rng.range(1, 12) as usize;
            let text: String = (0..n)
                .map(|_| (b'a' + self.rng.below(26) as u8) as char)
                .collect();
            Data {
                text: Some(text),
                ..Default::default()
            }
        } else {
            let len = if self.rng.chance(30) {
                self.ps + self.rng.below(64)
            } else {
                self.rng.range(1, 200)
            };
            Data {
                fill: Some(self.rng.range(1, 255) as u8),
                len: Some(Size::Bytes(len as i64)),
                ..Default::default()
            }
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| !self.procs[i].exited)
            .collect()
    }

    /// A process to act: a live one, or (while there is room) a fresh one.
    fn actor(&mut self) -> usize {
        let live = self.live();
        let room = self.procs.len() < MAX_PROCS;
        if live.is_empty() || (room && self.rng.chance(8)) {
            let name = format!("p{}", self.procs.len());
            self.procs.push(Proc {
                name,
                parent: None,
                fds: Vec::new(),
                maps: Vec::new(),
                exited: false,
            });
            return self.procs.len() - 1;
        }
        *self.rng.pick(&live)
    }

    fn push(&mut self, p: usize, op: Op, name: Option<String>) {
        let who = self.procs[p].name.clone();
        self.steps.push(step(Some(&who), op, name));
    }

    /// A power cut, then reads of what survived (the processes are gone).
    fn crash(&mut self) {
        self.steps.push(step(None, Op::Crash, None));
        for _ in 0..self.rng.range(1, 3) {
            self.check_file();
        }
    }

    /// Adds one step (or a few that belong together).
    fn one_step(&mut self) {
        // open, memfd, ftruncate, pwrite, write, pread, fsync, mmap, munmap,
        // mprotect, msync, madvise, mremap, store, load, check_file, fork,
        // exit+wait, together.
        #[rustfmt::skip]
        let weights = [8, 2, 5, 5, 2, 5, 2, 12, 3, 3, 4, 3, 2, 18, 16, 5, 3, 2, 3];
        let p = self.actor();
        match self.rng.weighted(&weights) {
            0 => self.open(p),
            1 => self.memfd(p),
            2 => self.fd_op(p, |g, fd| {
                let len = pages_plus(g.rng.below(MAX_PAGES + 1), g.small_offset());
                fd.writable.then(|| Op::Ftruncate {
                    fd: fd.name.clone(),
                    len,
                })
            }),
            3 => self.fd_op(p, |g, fd| {
                let at = g.offset_in(MAX_PAGES);
                let data = g.data();
                fd.writable.then(|| Op::Pwrite {
                    fd: fd.name.clone(),
                    at,
                    data,
                })
            }),
            4 => self.fd_op(p, |g, fd| {
                let data = g.data();
                fd.writable.then(|| Op::Write {
                    fd: fd.name.clone(),
                    data,
                })
            }),
            5 => self.fd_op(p, |g, fd| {
                Some(Op::Pread {
                    fd: fd.name.clone(),
                    at: g.offset_in(MAX_PAGES),
                    len: Size::Bytes(g.rng.range(1, 64) as i64),
                })
            }),
            6 => self.fd_op(p, |_, fd| {
                fd.file.is_some().then(|| Op::Fsync {
                    fd: fd.name.clone(),
                })
            }),
            7 => self.mmap(p),
            8 => self.munmap(p),
            9 => self.map_op(p, |g, m| Op::Mprotect {
                range: g.whole(m),
                prot: g.rng.pick(&["READ", "READ|WRITE", "NONE"]).to_string(),
            }),
            10 => self.map_op(p, |g, m| Op::Msync {
                range: g.whole(m),
                flags: g
                    .rng
                    .pick(&[
                        "MS_SYNC",
                        "MS_ASYNC",
                        "MS_INVALIDATE",
                        "MS_SYNC|MS_INVALIDATE",
                    ])
                    .to_string(),
            }),
            11 => self.map_op(p, |g, m| {
                let range = if g.rng.chance(70) {
                    g.whole(m)
                } else {
                    g.page_range(m)
                };
                let advice = g.rng.pick(&["DONTNEED", "DONTFORK", "DOFORK", "WILLNEED"]);
                Op::Madvise {
                    range,
                    advice: advice.to_string(),
                }
            }),
            12 => self.mremap(p),
            13 => self.map_op(p, |g, m| {
                let mut data = g.data();
                let limit = m.pages * g.ps;
                if data
                    .len
                    .as_ref()
                    .is_some_and(|l| l.resolve(g.ps).unwrap_or(0) > limit as i128)
                {
                    data.len = Some(Size::Bytes(limit as i64));
                }
                let len = data.resolve(g.ps, None).map(|b| b.len()).unwrap_or(1);
                Op::Store {
                    map: m.name.clone(),
                    at: g.access_at(m.pages, len),
                    data,
                }
            }),
            14 => self.map_op(p, |g, m| {
                let len = g.rng.range(1, 64);
                Op::Load {
                    map: m.name.clone(),
                    at: g.access_at(m.pages, len),
                    len: Size::Bytes(len as i64),
                }
            }),
            15 => self.check_file(),
            16 => self.fork(p),
            17 => self.exit(),
            _ => self.together(),
        }
    }

    fn whole(&mut self, m: &Map) -> Range {
        Range {
            map: m.name.clone(),
            at: Size::Bytes(0),
            len: None,
        }
    }

    /// One page of the mapping (or just past it).
    fn page_range(&mut self, m: &Map) -> Range {
        Range {
            map: m.name.clone(),
            at: pages_plus(self.rng.below(m.pages), 0),
            len: Some(Size::Expr("1p".to_string())),
        }
    }

    fn open(&mut self, p: usize) {
        let file = self.rng.pick(&self.files).clone();
        let writable = self.rng.chance(80);
        let name = self.fresh_name("fd");
        self.procs[p].fds.push(Fd {
            name: name.clone(),
            file: Some(file.clone()),
            writable,
        });
        let flags = if writable { "O_RDWR" } else { "O_RDONLY" };
        self.push(
            p,
            Op::Open {
                path: file,
                flags: flags.to_string(),
                mode: None,
            },
            Some(name),
        );
    }

    /// memfd_create and an ftruncate to give it pages.
    fn memfd(&mut self, p: usize) {
        let name = self.fresh_name("mfd");
        self.procs[p].fds.push(Fd {
            name: name.clone(),
            file: None,
            writable: true,
        });
        self.push(
            p,
            Op::MemfdCreate {
                name: "explore".to_string(),
                flags: None,
            },
            Some(name.clone()),
        );
        let len = pages_plus(self.rng.range(1, MAX_PAGES), 0);
        self.push(p, Op::Ftruncate { fd: name, len }, None);
    }

    fn fd_op(&mut self, p: usize, f: impl FnOnce(&mut Gen, &Fd) -> Option<Op>) {
        if self.procs[p].fds.is_empty() {
            return;
        }
        let fd = self.rng.pick(&self.procs[p].fds).clone();
        if let Some(op) = f(self, &fd) {
            self.push(p, op, None);
        }
    }

    fn map_op(&mut self, p: usize, f: impl FnOnce(&mut Gen, &Map) -> Op) {
        if self.procs[p].maps.is_empty() {
            return;
        }
        let m = self.rng.pick(&self.procs[p].maps).clone();
        let op = f(self, &m);
        self.push(p, op, None);
    }

    fn mmap(&mut self, p: usize) {
        let pages = self.rng.range(1, MAX_PAGES);
        let kind = self.rng.below(10);
        let fds = self.procs[p].fds.clone();
        let (fd, flags, offset, writable_fd) = if kind < 6 && !fds.is_empty() {
            let fd = self.rng.pick(&fds).clone();
            let shared = self.rng.chance(55);
            let offset = (fd.file.is_some() && self.rng.chance(25)).then(|| pages_plus(1, 0));
            let flags = if shared { "SHARED" } else { "PRIVATE" };
            // A shared writable mapping of a read-only fd is EACCES, and
            // every later use of the name would find no mapping: not drawn.
            let writable = fd.writable || !shared;
            (Some(fd.name), flags, offset, writable)
        } else if self.rng.chance(50) {
            (None, "SHARED|ANONYMOUS", None, true)
        } else {
            (None, "PRIVATE|ANONYMOUS", None, true)
        };
        let prot = if writable_fd && self.rng.chance(85) {
            "READ|WRITE"
        } else {
            "READ"
        };
        let name = self.fresh_name("m");
        self.procs[p].maps.push(Map {
            name: name.clone(),
            pages,
        });
        self.push(
            p,
            Op::Mmap {
                fd,
                len: pages_plus(pages, 0),
                prot: prot.to_string(),
                flags: flags.to_string(),
                offset,
                addr: None,
            },
            Some(name),
        );
    }

    /// munmap of the whole mapping (the name is then left alone: a later
    /// mmap may take its place) or of one page (accesses stay below it).
    fn munmap(&mut self, p: usize) {
        if self.procs[p].maps.is_empty() {
            return;
        }
        let i = self.rng.below(self.procs[p].maps.len() as u64) as usize;
        let m = self.procs[p].maps[i].clone();
        let range = if self.rng.chance(50) {
            self.procs[p].maps.remove(i);
            self.whole(&m)
        } else {
            let r = self.page_range(&m);
            let page = r.at.resolve(self.ps).unwrap_or(0) as u64 / self.ps;
            if page == 0 {
                self.procs[p].maps.remove(i);
            } else {
                self.procs[p].maps[i].pages = page;
            }
            r
        };
        self.push(p, Op::Munmap { range }, None);
    }

    fn mremap(&mut self, p: usize) {
        if self.procs[p].maps.is_empty() {
            return;
        }
        let i = self.rng.below(self.procs[p].maps.len() as u64) as usize;
        let old = self.procs[p].maps[i].clone();
        let new_pages = self.rng.range(1, MAX_PAGES + 1);
        self.procs[p].maps[i].pages = new_pages;
        self.push(
            p,
            Op::Mremap {
                map: old.name,
                at: Size::Bytes(0),
                old_len: pages_plus(old.pages, 0),
                new_len: pages_plus(new_pages, 0),
                flags: Some("MAYMOVE".to_string()),
                new_addr: None,
            },
            None,
        );
    }

    fn check_file(&mut self) {
        let path = self.rng.pick(&self.files).clone();
        let (at, len) = if self.rng.chance(50) {
            (Size::Bytes(0), None)
        } else {
            let at = self.offset_in(MAX_PAGES);
            (at, Some(Size::Bytes(self.rng.range(1, 64) as i64)))
        };
        self.steps.push(step(
            None,
            Op::CheckFile {
                path,
                at,
                len,
                from: Default::default(),
            },
            None,
        ));
    }

    fn fork(&mut self, p: usize) {
        if self.procs.len() >= MAX_PROCS {
            return;
        }
        let mut child = self.procs[p].clone();
        child.name = format!("c{}", self.procs.len());
        child.parent = Some(self.procs[p].name.clone());
        let name = child.name.clone();
        self.procs.push(child);
        self.push(p, Op::Fork, Some(name));
    }

    /// A forked child without children of its own exits (or is killed with
    /// SIGKILL), and its parent (the harness does the waitpid in it) reaps it.
    fn exit(&mut self) {
        let candidates: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|&i| {
                let name = &self.procs[i].name;
                let parent_live = self.procs[i]
                    .parent
                    .as_ref()
                    .is_some_and(|par| self.procs.iter().any(|q| &q.name == par && !q.exited));
                let has_live_children = self
                    .procs
                    .iter()
                    .any(|q| q.parent.as_ref() == Some(name) && !q.exited);
                parent_live && !has_live_children
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let c = *self.rng.pick(&candidates);
        let target = self.procs[c].name.clone();
        if self.rng.chance(30) {
            // Killed instead: the model says the wait sees SIGKILL.
            let kill = Op::Kill {
                target: target.clone(),
                signal: "SIGKILL".to_string(),
            };
            self.steps.push(step(None, kill, None));
        } else {
            let code = self.rng.below(4) as i32;
            self.push(c, Op::Exit { code }, None);
        }
        self.procs[c].exited = true;
        // `wait` must say how the process ends; the model fills in the exit.
        let mut wait = step(None, Op::Wait { target }, None);
        wait.observe = true;
        self.steps.push(wait);
    }

    /// Two or three processes at once. Only sections whose result does not
    /// depend on the interleaving: all reads, or all atomic increments.
    fn together(&mut self) {
        let mut live = self.live();
        if live.len() < 2 {
            return;
        }
        let n = self.rng.range(2, live.len().min(3) as u64) as usize;
        let increments = self.rng.chance(40);
        let mut inner = Vec::new();
        for _ in 0..n {
            let p = live.remove(self.rng.below(live.len() as u64) as usize);
            let proc_ = self.procs[p].clone();
            let op = if proc_.maps.is_empty() {
                continue;
            } else {
                let m = self.rng.pick(&proc_.maps).clone();
                // Aligned to 8, so a 4-byte atomic never straddles a page.
                let at = pages_plus(self.rng.below(m.pages), self.rng.below(self.ps / 8) * 8);
                if increments {
                    Op::Increment {
                        map: m.name,
                        at: Size::Bytes(0),
                        count: self.rng.range(1, 200),
                        atomic: true,
                        width: 4,
                    }
                } else {
                    Op::Load {
                        map: m.name,
                        at,
                        len: Size::Bytes(self.rng.range(1, 32) as i64),
                    }
                }
            };
            inner.push(step(Some(&proc_.name), op, None));
        }
        if inner.len() >= 2 {
            self.steps
                .push(step(None, Op::Together { steps: inner }, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cases_are_valid_bounded_and_reproducible() {
        let ps = crate::target::page_size();
        for caps in [Caps { crash: false }, Caps { crash: true }] {
            for i in 0..300 {
                // The first draw is valid: the retry in `generate` is never needed.
                let c = Gen::new(Rng::for_case(42, i), ps, caps).case(42, i);
                validate_as_file(&c, ps).unwrap_or_else(|e| panic!("case {i}: {e}"));
                let again = generate(42, i, caps, ps);
                assert_eq!(
                    serde_json::to_string(&c).unwrap(),
                    serde_json::to_string(&again).unwrap()
                );
                let n = step_count(&c.steps);
                assert!(n <= MAX_STEPS as usize + 3, "case {i}: {n} steps");
                let procs: std::collections::BTreeSet<_> =
                    c.steps.iter().filter_map(|s| s.process.clone()).collect();
                assert!(procs.len() <= MAX_PROCS, "case {i}: {procs:?}");
                assert!((1..=MAX_FILES as usize).contains(&c.files.len()));
                let crashes = c.steps.iter().any(|s| matches!(s.op, Op::Crash));
                assert!(
                    caps.crash || !crashes,
                    "case {i}: a crash without the capability"
                );
            }
        }
    }

    #[test]
    fn seeds_differ_and_cover_the_operations() {
        let ps = crate::target::page_size();
        let a = serde_json::to_string(&generate(1, 0, Caps::default(), ps)).unwrap();
        let b = serde_json::to_string(&generate(2, 0, Caps::default(), ps)).unwrap();
        assert_ne!(a, b);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            for s in generate(5, i, Caps { crash: true }, ps).steps {
                seen.insert(s.op.name());
            }
        }
        for op in [
            "open",
            "memfd_create",
            "ftruncate",
            "pwrite",
            "write",
            "pread",
            "fsync",
            "mmap",
            "munmap",
            "mprotect",
            "msync",
            "madvise",
            "mremap",
            "store",
            "load",
            "check_file",
            "fork",
            "exit",
            "wait",
            "together",
            "crash",
        ] {
            assert!(seen.contains(op), "no {op} in 200 cases: {seen:?}");
        }
    }
}
