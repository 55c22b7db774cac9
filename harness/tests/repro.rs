//! `mmapconf repro`: the C program of every corpus case that can be one
//! compiles with `cc -O2 -Wall -Werror -pthread` and, run on a tmpfs, judges the
//! case as the harness does (passes, or fails where this kernel and
//! filesystem's baseline lists a known failure); the program of a mutated
//! case fails and names the mutated step.

mod common;

use common::*;
use mmapconf::case::LoadedCase;
use mmapconf::mutate::mutants;
use mmapconf::repro::c_program;
use mmapconf::target::{probe, Environment};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A scratch root on a tmpfs (/dev/shm), else in the temporary directory;
/// never named `mmapconf-*`, and removed when dropped.
fn scratch_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = mmapconf::target::mount_of(shm).is_some_and(|m| m.fs_type == "tmpfs");
    let b = tempfile::Builder::new().prefix("repro-test-").to_owned();
    if on_tmpfs {
        b.tempdir_in(shm).unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

fn load(id: &str) -> LoadedCase {
    let file = repo(&format!("cases/{id}.json"));
    mmapconf::case::load_file(&file, mmapconf::target::page_size()).unwrap()
}

/// A program, compiled beside its source in `dir` (warnings are errors).
fn compile(dir: &Path, name: &str, program: &str) -> Result<PathBuf, String> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, program).unwrap();
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    if out.status.success() {
        Ok(bin)
    } else {
        Err(text(&out))
    }
}

/// Runs a program in a fresh directory of its own under `dir`. `timeout`
/// only guards the test against a program that would hang despite its
/// own time limit.
fn run(bin: &Path, dir: &Path) -> Output {
    let work = dir.join(format!("{}.d", bin.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir(&work).unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg(bin)
        .arg(&work)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&work).unwrap();
    out
}

/// Processes still running a program of `dir`: none may outlive its run,
/// whether it passed or failed half-way with children alive.
fn left_running(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            exe.starts_with(dir)
                .then(|| format!("pid {} {}", e.file_name().to_string_lossy(), exe.display()))
        })
        .collect()
}

/// `f` over every item, on as many threads as there are CPUs.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// The ids this kernel and filesystem's checked-in baseline lists as known failures.
fn known_failures(env: &Environment) -> Vec<String> {
    let file = repo("reports/baselines").join(mmapconf::cli::baseline_file_for(env));
    match mmapconf::report::baseline::Baseline::load(&file) {
        Ok(b) => b.entries.iter().map(|e| e.id.clone()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn every_expressible_corpus_case_judges_as_the_harness_does() {
    let started = Instant::now();
    let root = scratch_root();
    let env = Environment::of_run(root.path(), None);
    // As `run` does: huge pages for the cases that need them (as root),
    // given back when the test ends.
    let _pool = mmapconf::target::hugetlb::reserve();
    let known = known_failures(&env);
    let (cases, problems) = mmapconf::cli::load_all(&[repo("cases")]).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut programs = Vec::new();
    let (mut inexpressible, mut skipped) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        match c_program(case, &env) {
            Err(e) => {
                // Only steps that need the harness's own filesystem (crash,
                // remount, fill_fs) may be beyond a program; anything else
                // (threads, another process's memory, pins and system state
                // included) is a gap in `repro`.
                assert!(
                    case.case.needs_owned_fs(),
                    "{}: cannot be a C program: {e}",
                    case.id
                );
                assert!(e.starts_with("step "), "{}: {e}", case.id);
                inexpressible += 1;
            }
            Ok(_) if probe::unmet(&case.case, &env).is_some() => skipped += 1,
            Ok(p) => programs.push((i, case, p)),
        }
    }
    let results = in_parallel(&programs, |(i, case, program)| {
        let bin = compile(root.path(), &format!("case{i}"), program)
            .unwrap_or_else(|e| panic!("{}: does not compile cleanly:\n{e}", case.id));
        // drop_caches empties the whole machine's page cache, which other
        // cases' residency checks would see: those run alone, afterwards.
        let alone = case.case.needs_exclusive_fs();
        let out = (!alone).then(|| {
            let _turn = case
                .case
                .uses_hugetlb_pool()
                .then(mmapconf::target::hugetlb::one_case_at_a_time);
            run(&bin, root.path())
        });
        (bin, out)
    });
    let mut failures = Vec::new();
    for ((_, case, _), (bin, out)) in programs.iter().zip(results) {
        let out = out.unwrap_or_else(|| run(&bin, root.path()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let listed = known.contains(&case.id);
        let fail_line = stdout.lines().any(|l| l.starts_with("FAIL "));
        let as_expected = if listed {
            out.status.code() == Some(1) && fail_line
        } else {
            out.status.success() && stdout.ends_with("# passed\n") && !fail_line
        };
        if !as_expected {
            failures.push(format!(
                "{} ({}, {}):\n{}",
                case.id,
                if listed {
                    "a known failure here, so it must fail"
                } else {
                    "must pass"
                },
                out.status,
                text(&out)
            ));
        }
    }
    eprintln!(
        "{} cases: {} expressible as C programs ({} of them run here, {} skipped for unmet requirements), {} not (crash, remount, fill_fs); {:.1} s",
        cases.len(),
        cases.len() - inexpressible,
        programs.len(),
        skipped,
        inexpressible,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} programs did not judge as the harness does:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        programs.len() > 250,
        "too few programs ran: {}",
        programs.len()
    );
    assert_eq!(left_running(root.path()), Vec::<String>::new());
}

#[test]
fn the_program_of_a_mutated_case_fails_and_names_the_step() {
    let root = scratch_root();
    let env = Environment::of_run(root.path(), None);
    // Bytes, a value, an errno, a signal and its si_code, an exit status,
    // a stat field: every kind of expectation the corpus has, mutated.
    // Threads (a fork from one, faults of two at once) and another
    // process's memory (each `via`) too.
    let ids = [
        "seed/writer-reader",
        "mprotect/read-only-store-segv-accerr",
        "fork/child-exit-status",
        "errors/zero-length-einval",
        "timestamps/write-updates-mtime-ctime",
        "concurrency/shared-anon-atomic-four-processes-8byte",
        "threads/fork-from-a-thread-child-has-that-thread",
        "threads/two-threads-fault-at-once-each-catches-its-own",
        "remote/process-vm-writev-read-only-efault",
        "remote/proc-mem-write-read-only-private-cow",
        "remote/ptrace-poke-read-only-private-cow",
        // Pins, POSIX and System V shared memory, limits (SIGXFSZ as the
        // observation), credentials.
        "pins/io-uring-fixed-buffer-fork-child-store-not-seen",
        "pins/vmsplice-before-fork-child-store-not-seen",
        "objects/shm-open-trunc-sigbus-in-other-process",
        "objects/sysv-shm-rmid-in-parent-child-keeps-it",
        "limits/rlimit-fsize-write-sigxfsz",
        "limits/map-locked-unprivileged-over-limit-eagain",
    ];
    let mut all = Vec::new();
    for id in ids {
        let case = load(id);
        // The remote cases need root (ptrace of a process not one's child);
        // a kernel without io_uring skips the io_uring case.
        if let Some(why) = probe::unmet(&case.case, &env) {
            eprintln!("{id}: not mutated here: {why}");
            continue;
        }
        let (ms, _) = mutants(&case.case, &env);
        assert!(!ms.is_empty(), "{id} has no mutants");
        for m in ms {
            let op = step_op(&m.case, &m.step);
            let mutant = LoadedCase {
                case: m.case,
                ..case.clone()
            };
            let name = format!("mutant{}", all.len());
            all.push((id, m.step, m.change, op, mutant, name));
        }
    }
    let outs = in_parallel(&all, |(_, _, _, _, mutant, name)| {
        let program = c_program(mutant, &env).unwrap();
        run(&compile(root.path(), name, &program).unwrap(), root.path())
    });
    let mut survivors = Vec::new();
    for ((id, step, change, op, _, _), out) in all.iter().zip(outs) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let named = stdout
            .lines()
            .any(|l| l.starts_with(&format!("FAIL {step} {op} ")));
        if out.status.code() != Some(1) || !named {
            survivors.push(format!(
                "{id} step {step} ({change}): {}\n{}",
                out.status,
                text(&out)
            ));
        }
    }
    assert!(
        survivors.is_empty(),
        "mutants whose program did not fail at their step:\n{}",
        survivors.join("\n")
    );
    assert_eq!(left_running(root.path()), Vec::<String>::new());
    eprintln!(
        "{} mutants of {} cases, every one failed at its step",
        all.len(),
        ids.len()
    );
}

/// The System V segments whose creator descends from `program`.
fn segments_of(program: i32) -> Vec<i32> {
    let descends = |mut pid: i32| {
        while pid > 1 {
            if pid == program {
                return true;
            }
            pid = ppid_and_state(pid).map_or(0, |(ppid, _)| ppid);
        }
        false
    };
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (id, cpid) = (f.get(1)?.parse().ok()?, f.get(4)?.parse().ok()?);
            descends(cpid).then_some(id)
        })
        .collect()
}

/// A program killed with SIGKILL in the middle of a case leaves no POSIX
/// shm object and no System V segment (one made by a forked child too):
/// its guardian removes them once the case's processes, which die with
/// the program, are gone.
#[test]
fn a_killed_program_leaves_no_shared_memory() {
    use std::io::{BufRead, BufReader};
    let root = scratch_root();
    let env = Environment::of_run(root.path(), None);
    let file = root.path().join("hang.json");
    std::fs::write(
        &file,
        r#"{ "title": "leaves shared memory", "refs": ["harness/tests/repro.rs"], "timeout": 60, "steps": [
  { "in": "p", "do": "shm_open", "name": "left", "flags": "O_RDWR|O_CREAT", "as": "fd" },
  { "in": "p", "do": "shmget", "size": "1p", "as": "seg" },
  { "in": "p", "do": "shmat", "seg": "seg", "as": "m" },
  { "in": "p", "do": "fork", "as": "c" },
  { "in": "c", "do": "shmget", "size": "1p", "as": "seg2" },
  { "in": "q", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" },
  { "do": "wait", "proc": "q", "expect": { "exit": 0 } } ] }"#,
    )
    .unwrap();
    let case = mmapconf::case::load_file(&file, mmapconf::target::page_size()).unwrap();
    let bin = compile(root.path(), "hang", &c_program(&case, &env).unwrap()).unwrap();
    let work = root.path().join("hang.d");
    std::fs::create_dir(&work).unwrap();
    let mut child = Command::new(&bin)
        .arg(&work)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let program = child.id() as i32;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // After step 6 the case waits for `q`, which never exits.
    let reached = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("ok 6 "));
    let object = Path::new("/dev/shm").join(format!("repro-shm-{program}-left"));
    let made = object.exists();
    let segments = segments_of(program);
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(program, libc::SIGKILL) };
    // Every process of the program, the guardian too, holds its standard
    // output: end of file is all of them gone.
    lines.for_each(drop);
    child.wait().unwrap();
    assert!(reached, "the program did not reach step 6");
    assert!(made, "{} was not made", object.display());
    assert_eq!(segments.len(), 2, "segments made: {segments:?}");
    assert!(!object.exists(), "{} left behind", object.display());
    for id in segments {
        assert!(!segment_exists(id), "segment {id} left behind");
    }
    assert_eq!(left_running(root.path()), Vec::<String>::new());
}

/// The operation of step "3" or "3.2".
fn step_op(case: &mmapconf::case::Case, index: &str) -> &'static str {
    let mut parts = index.split('.').map(|p| p.parse::<usize>().unwrap() - 1);
    let top = &case.steps[parts.next().unwrap()];
    match (&top.op, parts.next()) {
        (mmapconf::case::model::Op::Together { steps }, Some(j)) => steps[j].op.name(),
        (op, _) => op.name(),
    }
}

/// Runs the program of the case in `file` in `root`: it must fail, with a
/// line that starts with `head` (the step) and ends with `message`, and
/// leave no process behind.
fn fails_with(root: &Path, file: &Path, head: &str, message: &str) {
    let case = mmapconf::case::load_file(file, mmapconf::target::page_size()).unwrap();
    let env = Environment::of_run(root, None);
    let program = c_program(&case, &env).unwrap();
    let out = run(&compile(root, "program", &program).unwrap(), root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(head) && l.ends_with(message)),
        "{stdout}"
    );
    assert_eq!(left_running(root), Vec::<String>::new());
}

#[test]
fn a_step_in_a_thread_of_a_dead_process_names_the_process_and_the_thread() {
    // The fixture's child, forked while t1 existed, must not keep t1's
    // pipes: if it did, p's death would not close them and the step would
    // time out instead.
    let root = scratch_root();
    fails_with(
        root.path(),
        &repo("harness/tests/fixtures/thread-of-killed-process.json"),
        "FAIL 5 load (p/t1: ",
        "process `p` died during the step; the step was in its thread `t1`",
    );
}

#[test]
fn a_step_in_a_thread_past_the_time_limit_names_the_thread() {
    // Far more increments than a second allows: the program's time limit
    // ends the step, naming the thread, and every process is killed.
    let root = scratch_root();
    let file = root.path().join("slow.json");
    std::fs::write(
        &file,
        r#"{ "title": "t", "refs": ["harness self-test"], "timeout": 1, "steps": [
  { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "PRIVATE|ANONYMOUS", "as": "m" },
  { "in": "p", "do": "spawn_thread", "as": "t1" },
  { "in": "p", "thread": "t1", "do": "increment", "map": "m", "count": 1000000000000 }
] }"#,
    )
    .unwrap();
    fails_with(
        root.path(),
        &file,
        "FAIL 3 increment (p/t1: ",
        "timed out after 1000 ms waiting for thread `t1` of process `p`",
    );
}

#[test]
fn a_step_a_program_cannot_do_is_named() {
    let env = Environment::probe(&std::env::temp_dir());
    let e = c_program(&load("durability/ms-sync-survives-crash"), &env).unwrap_err();
    assert!(e.contains("(crash)") && e.starts_with("step "), "{e}");
}

#[test]
fn the_command_writes_the_program_and_refuses_what_it_cannot_write() {
    let dir = tempfile::Builder::new()
        .prefix("repro-test-")
        .tempdir()
        .unwrap();
    let file = dir.path().join("case.c");
    let out = exe()
        .args(["repro", "seed/writer-reader", "--c", "--fs", "tmpfs", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let program = std::fs::read_to_string(&file).unwrap();
    assert!(program.starts_with("/*\n * mmapconf case seed/writer-reader"));
    assert!(
        program.contains("filesystem tmpfs (target tmpfs)"),
        "{program}"
    );
    assert!(
        program.contains("mmap(NULL, (size_t)64, PROT_READ | PROT_WRITE, MAP_SHARED, fd_fd, 0)")
    );
    // The variant that applies to the target is the one the program checks.
    let residency = |fs: &str| {
        let out = exe()
            .args([
                "repro",
                "madvise/willneed-sparse-file-residency",
                "--fs",
                fs,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(residency("tmpfs").contains(".bytes = \"\\000\\000\", .nbytes = 2"));
    assert!(residency("ext4").contains(".bytes = \"\\001\\001\", .nbytes = 2"));
    let out = exe()
        .args(["repro", "durability/ms-sync-survives-crash", "--c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("crash"), "{}", text(&out));
    let out = exe().args(["repro", "no/such-case"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
