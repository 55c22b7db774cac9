//! Per-step cost of the harness against the floor (issue 16).
//!
//! For each scenario, a floor program (plain libc in forked processes, no
//! harness code) performs the same steps with only the hand-offs a minimal
//! design needs, and the harness runs the same steps as a case through
//! `runner::run_one`. They run on the same scratch filesystem (tmpfs at
//! /dev/shm, or $MMAPCONF_BENCH_DIR), interleaved, each repeated and the
//! median kept, since the machine is shared and loaded. The floors run in a
//! process of their own, forked from this one before the harness starts (as
//! the harness's workers come from a small fork server): forked from this
//! process, they left every page of the coordinator, which runs here,
//! copy-on-write, and the harness side then took a fault on each page it
//! wrote (about 250 us a case), which no real run has.
//! A benchmark, not a test: it prints numbers and never fails on time.
//!
//! The floor's hand-offs, per scenario:
//! - one process: none per step; the process is forked, does its steps and
//!   reports once on a pipe (what a design that batches a process's
//!   consecutive steps needs);
//! - alternating: one pipe hand-off each time the acting process changes;
//! - fresh processes, forks: fork, _exit and waitpid, nothing more;
//! - corpus cases: their files made, a hand-off each time the acting
//!   process changes, `check_file` as pread by the supervisor.
//!
//! Children of the floor never allocate: every buffer and path is made
//! before fork.
//!
//! Besides wall time, each side's CPU time (this process's and its reaped
//! children's: every floor process, every harness worker) is printed, per
//! step, as the median of the rounds: on a machine others load, CPU time
//! moves less than wall time. `MMAPCONF_BENCH_ONLY=WORD` runs only the
//! scenarios whose name contains WORD, `MMAPCONF_BENCH_ROUNDS=N` N rounds.
//! `MMAPCONF_BENCH_NO_FLOOR=1` runs the harness side alone, for a profiler.

use mmapconf::case::{parse_case_bytes, LoadedCase};
use mmapconf::exec::RunOptions;
use mmapconf::report::Status;
use mmapconf::runner;
use mmapconf::target::{Environment, ScratchRoot};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Repetitions of each measurement; the median is printed.
/// `MMAPCONF_BENCH_ROUNDS` overrides it (more, for a profiler's samples).
const ROUNDS: usize = 7;
/// Store/load pairs in the one-process scenario.
const PAIRS: usize = 100;
/// Stores in the alternating scenario.
const ALTERNATING: usize = 200;
/// Processes in the fresh-process and fork scenarios.
const PROCS: usize = 20;

fn main() {
    let base = std::env::var_os("MMAPCONF_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let root = ScratchRoot::create(&base).expect("scratch root");
    let env = Environment::of_run(&root.path, None);
    let mut opts = RunOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_mmapconf")));
    // The executor is measured, not the kernel-log and taint checks.
    opts.health = false;
    let floor_dir = root.path.join("floor");
    std::fs::create_dir(&floor_dir).expect("floor dir");
    let ps = env.page_size as usize;

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let load = |id: &str| -> LoadedCase {
        mmapconf::case::load_file(&corpus.join(format!("{id}.json")), env.page_size)
            .unwrap_or_else(|p| panic!("{id}: {p:?}"))
    };
    let scenarios: Vec<Scenario> = vec![
        Scenario {
            name: "one process, store+load",
            case: synthetic("one-process", &one_process_case(), env.page_size),
            floor: Box::new(floor_one_process),
        },
        Scenario {
            name: "alternating 2 processes",
            case: synthetic("alternating", &alternating_case(), env.page_size),
            floor: Box::new(floor_alternating),
        },
        Scenario {
            name: "fresh processes",
            case: synthetic("fresh", &fresh_case(), env.page_size),
            floor: Box::new(floor_fresh),
        },
        Scenario {
            name: "forks",
            case: synthetic("forks", &forks_case(), env.page_size),
            floor: Box::new(move |d| floor_forks(d, ps)),
        },
        Scenario {
            name: "seed/writer-reader",
            case: load("seed/writer-reader"),
            floor: Box::new(floor_writer_reader),
        },
        Scenario {
            name: "concurrency/ping-pong",
            case: load("concurrency/ping-pong-unrelated-processes"),
            floor: Box::new(move |d| floor_ping_pong(d, ps)),
        },
        Scenario {
            name: "seed/private-copy-on-first-write",
            case: load("seed/private-copy-on-first-write"),
            floor: Box::new(move |d| floor_private_copy(d, ps)),
        },
        Scenario {
            name: "seed/anonymous-shared-across-fork",
            case: load("seed/anonymous-shared-across-fork"),
            floor: Box::new(move |d| floor_anon_fork(d, ps)),
        },
        Scenario {
            name: "seed/fork-counter-atomic",
            case: load("seed/fork-counter-atomic"),
            floor: Box::new(floor_fork_counter),
        },
    ];

    let only = std::env::var("MMAPCONF_BENCH_ONLY").unwrap_or_default();
    let rounds = std::env::var("MMAPCONF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let no_floor = std::env::var_os("MMAPCONF_BENCH_NO_FLOOR").is_some_and(|v| v == "1");
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| s.name.contains(only.as_str()))
        .collect();
    // Before the first case starts the harness's threads and fork server.
    let floors = (!no_floor).then(|| FloorRunner::start(&scenarios, &floor_dir));
    // Warm up: the fork server starts on the first case.
    for s in &scenarios {
        run_harness(&s.case, &env, &root, &opts);
    }
    println!("load average: {}", load_average());
    println!(
        "{:<36} {:>6} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "scenario",
        "steps",
        "floor",
        "harness",
        "ratio",
        "floor/st",
        "harn/st",
        "fcpu/st",
        "hcpu/st"
    );
    let mut mix = Totals::default();
    for (index, s) in scenarios.iter().enumerate() {
        let steps = count_steps(&s.case);
        let mut row = Totals {
            steps,
            ..Totals::default()
        };
        let (mut floor, mut harness) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            if let Some(f) = &floors {
                floor.push(f.run(index));
            }
            harness.push(time(|| run_harness(&s.case, &env, &root, &opts)));
        }
        let (fw, fc): (Vec<_>, Vec<_>) = floor.into_iter().unzip();
        let (hw, hc): (Vec<_>, Vec<_>) = harness.into_iter().unzip();
        row.floor = [median(fw), median(fc)];
        row.harness = [median(hw), median(hc)];
        if s.name.contains('/') {
            mix.add(&row);
        }
        print_row(s.name, &row);
    }
    if mix.steps > 0 {
        print_row("corpus mix (the corpus cases above)", &mix);
    }
    println!("load average: {}", load_average());
    if let Some(f) = floors {
        f.finish();
    }
    let _ = std::fs::remove_dir_all(&floor_dir);
}

/// A process that runs floors on request: a scenario's index in, the
/// floor's wall and CPU time (its own and its reaped children's) out, on
/// pipes. Forked while this process is small and has one thread.
struct FloorRunner {
    to: i32,
    from: i32,
    pid: i32,
}

impl FloorRunner {
    fn start(scenarios: &[Scenario], floor_dir: &Path) -> FloorRunner {
        let (mut ask, mut answer) = ([0; 2], [0; 2]);
        // SAFETY: pipe2 fills the arrays.
        assert_eq!(unsafe { libc::pipe2(ask.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        assert_eq!(
            unsafe { libc::pipe2(answer.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: this process has one thread yet (the harness has not run).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: the bench's ends, not ours: with them open here, the
            // read below would never see the end of the requests.
            unsafe {
                libc::close(ask[1]);
                libc::close(answer[0]);
            }
            let mut index = [0u8; 8];
            // SAFETY: reads and writes of our pipe ends.
            while unsafe { libc::read(ask[0], index.as_mut_ptr().cast(), 8) } == 8 {
                let s = &scenarios[u64::from_le_bytes(index) as usize];
                let (wall, cpu) = time(|| (s.floor)(floor_dir));
                let mut out = [0u8; 16];
                out[..8].copy_from_slice(&(wall.as_nanos() as u64).to_le_bytes());
                out[8..].copy_from_slice(&(cpu.as_nanos() as u64).to_le_bytes());
                assert_eq!(
                    unsafe { libc::write(answer[1], out.as_ptr().cast(), 16) },
                    16
                );
            }
            unsafe { libc::_exit(0) };
        }
        // SAFETY: the child's ends, not ours.
        unsafe {
            libc::close(ask[0]);
            libc::close(answer[1]);
        }
        FloorRunner {
            to: ask[1],
            from: answer[0],
            pid,
        }
    }

    /// Runs scenario `index`'s floor once; its (wall, CPU) time.
    fn run(&self, index: usize) -> (Duration, Duration) {
        let mut out = [0u8; 16];
        // SAFETY: a write and a read of our pipe ends.
        assert_eq!(
            unsafe { libc::write(self.to, (index as u64).to_le_bytes().as_ptr().cast(), 8) },
            8
        );
        assert_eq!(
            unsafe { libc::read(self.from, out.as_mut_ptr().cast(), 16) },
            16
        );
        let nanos = |b: &[u8]| Duration::from_nanos(u64::from_le_bytes(b.try_into().unwrap()));
        (nanos(&out[..8]), nanos(&out[8..]))
    }

    fn finish(self) {
        // SAFETY: closing our ends ends the runner's loop.
        unsafe {
            libc::close(self.to);
            libc::close(self.from);
        }
        wait_ok(self.pid);
    }
}

struct Scenario {
    name: &'static str,
    case: LoadedCase,
    floor: Box<dyn Fn(&Path)>,
}

/// A scenario's (or the mix's) steps, and the medians of wall and CPU time of each side.
#[derive(Default)]
struct Totals {
    steps: usize,
    floor: [Duration; 2],
    harness: [Duration; 2],
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.steps += other.steps;
        for k in 0..2 {
            self.floor[k] += other.floor[k];
            self.harness[k] += other.harness[k];
        }
    }
}

fn print_row(name: &str, t: &Totals) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let per = |d: Duration| us(d) / t.steps as f64;
    println!(
        "{:<36} {:>6} {:>8.0}us {:>8.0}us {:>6.1}x {:>7.1}us {:>7.1}us {:>7.1}us {:>7.1}us",
        name,
        t.steps,
        us(t.floor[0]),
        us(t.harness[0]),
        us(t.harness[0]) / us(t.floor[0]),
        per(t.floor[0]),
        per(t.harness[0]),
        per(t.floor[1]),
        per(t.harness[1])
    );
}

fn count_steps(case: &LoadedCase) -> usize {
    case.case
        .steps
        .iter()
        .map(|s| match &s.op {
            mmapconf::case::model::Op::Together { steps } => steps.len(),
            _ => 1,
        })
        .sum()
}

/// Wall time and CPU time (this process's and its reaped children's) of `f`.
fn time(f: impl FnOnce()) -> (Duration, Duration) {
    let (t, cpu) = (Instant::now(), cpu_time());
    f();
    (t.elapsed(), cpu_time().saturating_sub(cpu))
}

fn cpu_time() -> Duration {
    let of = |who| {
        // SAFETY: a zeroed rusage is valid, and getrusage fills it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

/// The median; zero for a side that was not run.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("({e})"))
}

fn synthetic(id: &str, json: &str, page_size: u64) -> LoadedCase {
    let file = PathBuf::from(format!("bench/{id}.json"));
    let case = parse_case_bytes(&file, json.as_bytes(), page_size)
        .unwrap_or_else(|p| panic!("{id}: {p:?}"));
    LoadedCase {
        id: format!("bench/{id}"),
        file,
        case,
    }
}

fn run_harness(case: &LoadedCase, env: &Environment, root: &ScratchRoot, opts: &RunOptions) {
    let r = runner::run_one(0, case, env, root, opts);
    assert_eq!(
        r.status,
        Status::Pass,
        "{}: {:?} {:?}",
        case.id,
        r.status,
        r.reason
    );
}

// ---- the cases the harness runs ----

fn open_mmap(proc: &str, file: &str, len: &str, flags: &str) -> String {
    format!(
        r#"{{ "in": "{proc}", "do": "open", "path": "{file}", "flags": "O_RDWR", "as": "fd" }},
        {{ "in": "{proc}", "do": "mmap", "fd": "fd", "len": "{len}", "prot": "READ|WRITE", "flags": "{flags}", "as": "m" }}"#
    )
}

fn case_json(files: &str, steps: &[String]) -> String {
    format!(
        r#"{{ "title": "bench", "description": "bench", "refs": ["bench"], "profile": "linux", "files": {{ {files} }}, "steps": [ {} ] }}"#,
        steps.join(",\n")
    )
}

fn one_process_case() -> String {
    let mut steps = vec![open_mmap("a", "f", "1p", "SHARED")];
    for i in 0..PAIRS {
        steps.push(format!(
            r#"{{ "in": "a", "do": "store", "map": "m", "at": {}, "text": "abcdefgh" }},
            {{ "in": "a", "do": "load", "map": "m", "at": {}, "len": 8, "expect": {{ "text": "abcdefgh" }} }}"#,
            i * 8,
            i * 8
        ));
    }
    case_json(r#""f": { "size": "1p" }"#, &steps)
}

fn alternating_case() -> String {
    let mut steps = vec![
        open_mmap("a", "f", "1p", "SHARED"),
        open_mmap("b", "f", "1p", "SHARED"),
    ];
    for i in 0..ALTERNATING {
        let p = if i % 2 == 0 { "a" } else { "b" };
        steps.push(format!(
            r#"{{ "in": "{p}", "do": "store", "map": "m", "at": {}, "text": "abcdefgh" }}"#,
            (i * 8) % 4096
        ));
    }
    case_json(r#""f": { "size": "1p" }"#, &steps)
}

fn fresh_case() -> String {
    let mut steps = Vec::new();
    for i in 0..PROCS {
        steps.push(format!(
            r#"{},
            {{ "in": "p{i}", "do": "store", "map": "m", "at": {}, "text": "abcdefgh" }},
            {{ "in": "p{i}", "do": "exit", "code": 0 }},
            {{ "do": "wait", "proc": "p{i}", "expect": {{ "exit": 0 }} }}"#,
            open_mmap(&format!("p{i}"), "f", "1p", "SHARED"),
            i * 8
        ));
    }
    case_json(r#""f": { "size": "1p" }"#, &steps)
}

fn forks_case() -> String {
    let mut steps = vec![
        r#"{ "in": "a", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" }"#
            .to_string(),
    ];
    for i in 0..PROCS {
        steps.push(format!(
            r#"{{ "in": "a", "do": "fork", "as": "c{i}" }},
            {{ "in": "c{i}", "do": "store", "map": "m", "at": {}, "text": "abcdefgh" }},
            {{ "in": "c{i}", "do": "exit", "code": 0 }},
            {{ "do": "wait", "proc": "c{i}", "expect": {{ "exit": 0 }} }}"#,
            i * 8
        ));
    }
    case_json("", &steps)
}

// ---- the floor: libc only ----

/// One pipe per member; member 0 is the bench process, the others are
/// forked children. A member waits for its turn on its own pipe.
struct Relay {
    rx: Vec<i32>,
    tx: Vec<i32>,
    kids: std::cell::RefCell<Vec<i32>>,
}

impl Relay {
    fn new(members: usize) -> Relay {
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        for _ in 0..members {
            let mut p = [0; 2];
            // SAFETY: pipe2 fills the array.
            assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            rx.push(p[0]);
            tx.push(p[1]);
        }
        Relay {
            rx,
            tx,
            kids: Default::default(),
        }
    }

    /// Forks member `me` running `body`, which must not allocate.
    fn spawn(&self, body: impl FnOnce()) {
        // SAFETY: the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            body();
            unsafe { libc::_exit(0) };
        }
        self.kids.borrow_mut().push(pid);
    }

    fn pass(&self, to: usize) {
        // SAFETY: a one-byte write to our pipe.
        assert_eq!(
            unsafe { libc::write(self.tx[to], [1u8].as_ptr().cast(), 1) },
            1
        );
    }

    fn wait(&self, me: usize) {
        let mut b = [0u8; 1];
        // SAFETY: a one-byte read from our pipe.
        assert_eq!(
            unsafe { libc::read(self.rx[me], b.as_mut_ptr().cast(), 1) },
            1
        );
    }

    fn finish(self) {
        for pid in self.kids.borrow().iter() {
            wait_ok(*pid);
        }
        for fd in self.rx.iter().chain(&self.tx) {
            // SAFETY: our pipe ends.
            unsafe { libc::close(*fd) };
        }
    }
}

fn wait_ok(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

fn check(ok: bool) {
    if !ok {
        // SAFETY: ends a floor child that saw the wrong thing.
        unsafe { libc::_exit(1) };
    }
}

/// Makes `name` in `dir` of `len` bytes holding `text`, like the harness's
/// `files`, and returns its path.
fn make_file(dir: &Path, name: &str, len: usize, text: &[u8]) -> CString {
    let path = dir.join(name);
    let mut data = text.to_vec();
    data.resize(len, 0);
    std::fs::write(&path, data).expect("floor file");
    CString::new(path.into_os_string().into_encoded_bytes()).unwrap()
}

fn unlink(path: &CString) {
    // SAFETY: a path we made.
    unsafe { libc::unlink(path.as_ptr()) };
}

fn open_rw(path: &CString) -> i32 {
    // SAFETY: open of a path we made.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    check(fd >= 0);
    fd
}

fn map(fd: i32, len: usize, flags: i32) -> *mut u8 {
    // SAFETY: a new mapping the kernel places.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    check(p != libc::MAP_FAILED);
    p.cast()
}

fn store(m: *mut u8, at: usize, data: &[u8]) {
    for (i, b) in data.iter().enumerate() {
        // SAFETY: inside a mapping of ours.
        unsafe { m.add(at + i).write_volatile(*b) };
    }
}

fn load_is(m: *mut u8, at: usize, want: &[u8]) {
    for (i, b) in want.iter().enumerate() {
        // SAFETY: inside a mapping of ours.
        check(unsafe { m.add(at + i).read_volatile() } == *b);
    }
}

fn pread_is(path: &CString, at: usize, want: &[u8]) {
    let mut buf = [0u8; 64];
    let fd = open_rw(path);
    // SAFETY: reads into our buffer.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), want.len(), at as i64) };
    unsafe { libc::close(fd) };
    assert_eq!(&buf[..n as usize], want);
}

fn floor_one_process(dir: &Path) {
    let f = make_file(dir, "f", 4096, b"");
    let r = Relay::new(1);
    r.spawn(|| {
        let fd = open_rw(&f);
        let m = map(fd, 4096, libc::MAP_SHARED);
        for i in 0..PAIRS {
            store(m, i * 8, b"abcdefgh");
            load_is(m, i * 8, b"abcdefgh");
        }
        r.pass(0);
    });
    r.wait(0);
    r.finish();
    unlink(&f);
}

fn floor_alternating(dir: &Path) {
    let f = make_file(dir, "f", 4096, b"");
    let r = Relay::new(3);
    for me in 1..=2 {
        let r2 = &r;
        let f = &f;
        let body = move || {
            r2.wait(me);
            let fd = open_rw(f);
            let m = map(fd, 4096, libc::MAP_SHARED);
            r2.pass(if me == 1 { 2 } else { 1 });
            r2.wait(me);
            for i in 0..ALTERNATING {
                if i % 2 + 1 != me {
                    continue;
                }
                store(m, (i * 8) % 4096, b"abcdefgh");
                r2.pass(if i + 1 == ALTERNATING { 0 } else { 3 - me });
                if i + 2 < ALTERNATING {
                    r2.wait(me);
                }
            }
        };
        r.spawn(body);
    }
    // a sets up, then b, then the stores alternate from a.
    r.pass(1);
    r.wait(0);
    r.finish();
    unlink(&f);
}

fn floor_fresh(dir: &Path) {
    let f = make_file(dir, "f", 4096, b"");
    for i in 0..PROCS {
        let r = Relay::new(0);
        r.spawn(|| {
            let fd = open_rw(&f);
            let m = map(fd, 4096, libc::MAP_SHARED);
            store(m, i * 8, b"abcdefgh");
        });
        r.finish();
    }
    unlink(&f);
}

fn floor_forks(_dir: &Path, ps: usize) {
    let r = Relay::new(0);
    r.spawn(|| {
        let m = map(-1, ps, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
        for i in 0..PROCS {
            // SAFETY: the child stores and exits.
            let pid = unsafe { libc::fork() };
            check(pid >= 0);
            if pid == 0 {
                store(m, i * 8, b"abcdefgh");
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: our child.
            check(unsafe { libc::waitpid(pid, &mut status, 0) } == pid && status == 0);
        }
    });
    r.finish();
}

fn floor_writer_reader(dir: &Path) {
    let f = make_file(dir, "shared.dat", 64, b"");
    let r = Relay::new(3);
    let (rl, ff) = (&r, &f);
    r.spawn(|| {
        rl.wait(1);
        let fd = open_rw(ff);
        let m = map(fd, 64, libc::MAP_SHARED);
        unsafe { libc::close(fd) };
        store(m, 0, b"Hello from writer!");
        rl.pass(2);
        rl.wait(1);
        load_is(m, 0, b"Reader replied!\0");
        rl.pass(0);
    });
    r.spawn(|| {
        rl.wait(2);
        let fd = open_rw(ff);
        let m = map(fd, 64, libc::MAP_SHARED);
        unsafe { libc::close(fd) };
        load_is(m, 0, b"Hello from writer!");
        store(m, 0, b"Reader replied!\0");
        // SAFETY: our mapping.
        unsafe { libc::munmap(m.cast(), 64) };
        rl.pass(1);
    });
    r.pass(1);
    r.wait(0);
    pread_is(&f, 0, b"Reader replied!\0");
    r.finish();
    unlink(&f);
}

fn floor_ping_pong(dir: &Path, ps: usize) {
    let f = make_file(dir, "mailbox", ps, b"");
    let r = Relay::new(3);
    let rl = &r;
    let ff = &f;
    r.spawn(|| {
        rl.wait(1);
        let m = map(open_rw(ff), ps, libc::MAP_SHARED);
        rl.pass(2);
        rl.wait(1);
        for (ping, pong) in [
            (b"ping 1", b"pong 1"),
            (b"ping 2", b"pong 2"),
            (b"ping 3", b"pong 3"),
        ] {
            store(m, 0, ping);
            rl.pass(2);
            rl.wait(1);
            load_is(m, 0, pong);
        }
        rl.pass(0);
    });
    r.spawn(|| {
        rl.wait(2);
        let m = map(open_rw(ff), ps, libc::MAP_SHARED);
        rl.pass(1);
        for (ping, pong) in [
            (b"ping 1", b"pong 1"),
            (b"ping 2", b"pong 2"),
            (b"ping 3", b"pong 3"),
        ] {
            rl.wait(2);
            load_is(m, 0, ping);
            store(m, 0, pong);
            rl.pass(1);
        }
    });
    r.pass(1);
    r.wait(0);
    pread_is(&f, 0, b"pong 3");
    r.finish();
    unlink(&f);
}

fn floor_private_copy(dir: &Path, ps: usize) {
    let f = make_file(dir, "data.txt", ps, b"ORIGINAL CONTENT");
    let r = Relay::new(3);
    let rl = &r;
    let ff = &f;
    r.spawn(|| {
        rl.wait(2);
        let m = map(open_rw(ff), ps, libc::MAP_SHARED);
        load_is(m, 0, b"ORIGINAL CONTENT");
        rl.pass(1);
        rl.wait(2);
        load_is(m, 0, b"ORIGINAL CONTENT");
        load_is(m, 100, &[0; 12]);
        rl.pass(0);
    });
    r.spawn(|| {
        rl.wait(1);
        let m = map(open_rw(ff), ps, libc::MAP_PRIVATE);
        store(m, 0, b"MODIFIED");
        store(m, 100, b"second write");
        load_is(m, 0, b"MODIFIED CONTENT");
        load_is(m, 100, b"second write");
        rl.pass(2);
    });
    r.pass(2);
    r.wait(0);
    pread_is(&f, 0, b"ORIGINAL CONTENT");
    pread_is(&f, 100, &[0; 12]);
    r.finish();
    unlink(&f);
}

fn floor_anon_fork(_dir: &Path, ps: usize) {
    // The parent forks the child; they hand over through pipes the child inherits.
    let r = Relay::new(3);
    let rl = &r;
    r.spawn(|| {
        let m = map(-1, ps, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
        load_is(m, 0, &[0; 16]);
        // SAFETY: the child only stores, loads and exits.
        let pid = unsafe { libc::fork() };
        check(pid >= 0);
        if pid == 0 {
            store(m, 0, b"hello from child");
            rl.pass(1);
            rl.wait(2);
            load_is(m, 100, b"parent replies");
            unsafe { libc::_exit(0) };
        }
        rl.wait(1);
        load_is(m, 0, b"hello from child");
        store(m, 100, b"parent replies");
        rl.pass(2);
        let mut status = 0;
        // SAFETY: our child.
        check(unsafe { libc::waitpid(pid, &mut status, 0) } == pid && status == 0);
        load_is(m, 0, b"hello from child");
    });
    r.finish();
}

fn floor_fork_counter(_dir: &Path) {
    let r = Relay::new(0);
    r.spawn(|| {
        let m = map(-1, 4, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
        store(m, 0, &[0; 4]);
        let counter = m as *const std::sync::atomic::AtomicU32;
        let bump = || {
            for _ in 0..1000 {
                // SAFETY: an aligned u32 in our shared mapping.
                unsafe { &*counter }.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        };
        // SAFETY: the child increments and exits.
        let pid = unsafe { libc::fork() };
        check(pid >= 0);
        if pid == 0 {
            bump();
            unsafe { libc::_exit(0) };
        }
        bump();
        let mut status = 0;
        // SAFETY: our child.
        check(unsafe { libc::waitpid(pid, &mut status, 0) } == pid && status == 0);
        check(unsafe { &*counter }.load(std::sync::atomic::Ordering::SeqCst) == 2000);
    });
    r.finish();
}
