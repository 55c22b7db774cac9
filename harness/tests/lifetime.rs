//! The lives of a run's processes: a `kill` reaches only the process the
//! case means, a step to a killed process says who killed it, and nothing
//! of a run outlives its harness, even a SIGKILLed one.

mod common;

use common::*;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes `json` as the case file `name.json` in `dir`.
fn case_file(dir: &Path, name: &str, json: &str) -> PathBuf {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, json).unwrap();
    file
}

/// Runs one case file to the end and returns its entry in the report.
fn run_one(dir: &Path, file: &Path) -> serde_json::Value {
    let report = dir.join("report.json");
    let out = exe()
        .arg("run")
        .arg("--report")
        .arg(&report)
        .arg(file)
        .output()
        .unwrap();
    let said = || {
        format!(
            "{:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let bytes = std::fs::read(&report).unwrap_or_else(|e| panic!("{e}: {}", said()));
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", said()));
    json["cases"][0].clone()
}

/// Polls `f` every few milliseconds until it gives Some, or panics with
/// `what` after `limit`. (Observes; orders nothing.)
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: the kernel just gave us this descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// SIGKILL to `pids`, through pidfds checked to still be the harness's:
/// a failing test must not leave busy workers behind, nor hit strangers.
fn kill_leftovers(pids: &[i32]) {
    for &pid in pids {
        if let Some(fd) = pidfd_open(pid) {
            if runs_the_harness(pid) {
                // SAFETY: plain syscall on our descriptor.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
        }
    }
}

/// The worker among `pids` that has a file named `name` open.
fn holder_of(pids: &[i32], name: &str) -> Option<i32> {
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.file_name().is_some_and(|n| n == name))
            })
    })
}

#[test]
fn a_step_to_a_killed_process_names_the_kill_step() {
    let dir = tempfile::tempdir().unwrap();
    // A forked process (no exit status for the harness: its parent holds it).
    let forked = case_file(
        dir.path(),
        "forked",
        r#"{ "title": "t", "refs": ["r"], "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "fork", "as": "child" },
          { "do": "kill", "proc": "child", "signal": "SIGKILL" },
          { "in": "child", "do": "load", "map": "m", "at": 0, "len": 1 }
        ] }"#,
    );
    let case = run_one(dir.path(), &forked);
    assert_eq!(case["status"], "error", "{case}");
    assert_eq!(case["failed_step"], 4, "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(
        reason.contains("process `child` was killed by SIGKILL at step 3 (before this step)"),
        "{reason}"
    );
    // A fresh process, whose status the harness reaps: a catchable signal.
    let fresh = case_file(
        dir.path(),
        "fresh",
        r#"{ "title": "t", "refs": ["r"], "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
          { "do": "kill", "proc": "p", "signal": "SIGTERM" },
          { "in": "p", "do": "load", "map": "m", "at": 0, "len": 1 }
        ] }"#,
    );
    let case = run_one(dir.path(), &fresh);
    assert_eq!(case["status"], "error", "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(
        reason.contains("process `p` was killed by SIGTERM at step 2 (before this step)"),
        "{reason}"
    );
}

#[test]
fn a_kill_after_wait_is_a_case_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        (
            "forked",
            r#"{ "in": "p", "do": "fork", "as": "child" },
               { "in": "child", "do": "exit", "code": 0 },
               { "do": "wait", "proc": "child", "expect": { "exit": 0 } },
               { "do": "kill", "proc": "child", "signal": "SIGKILL" }"#,
        ),
        (
            "fresh",
            r#"{ "in": "p", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" },
               { "in": "child", "do": "exit", "code": 0 },
               { "do": "wait", "proc": "child", "expect": { "exit": 0 } },
               { "do": "kill", "proc": "child", "signal": "SIGKILL" }"#,
        ),
    ] {
        let json = format!(r#"{{ "title": "t", "refs": ["r"], "steps": [ {body} ] }}"#);
        let case = run_one(dir.path(), &case_file(dir.path(), name, &json));
        assert_eq!(case["status"], "error", "{name}: {case}");
        assert_eq!(case["failed_step"], 4, "{name}: {case}");
        let reason = case["reason"].as_str().unwrap();
        assert!(
            reason.contains(
                "process `child` was already reaped by the `wait` of step 3: it has no pid to signal"
            ),
            "{name}: {reason}"
        );
    }
}

/// Writes /proc/sys/kernel/ns_last_pid so that the next process started
/// gets `pid`, and starts `sleep` there; None if others kept taking it.
fn sleep_on_pid(pid: i32) -> Option<Child> {
    for _ in 0..200 {
        if Path::new(&format!("/proc/{pid}")).exists() {
            // Someone else has it: nothing a kill could be blamed for.
            return None;
        }
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let mut sleep = Command::new("sleep").arg("600").spawn().unwrap();
        if sleep.id() as i32 == pid {
            return Some(sleep);
        }
        // Another process was started in between and took it: again.
        let _ = sleep.kill();
        let _ = sleep.wait();
    }
    None
}

#[test]
fn a_kill_after_wait_does_not_reach_the_process_now_on_that_pid() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: placing a process on a given pid (ns_last_pid) needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    // The case waits for a gate process, which this test kills when it is
    // ready: `gate1` until it has seen which pid `child` has, `gate2` until
    // it has put another process on that pid, after `child` was reaped.
    let file = case_file(
        dir.path(),
        "reuse",
        r#"{ "title": "t", "refs": ["r"], "timeout": 60,
             "files": { "gate1": { "size": 1 }, "gate2": { "size": 1 }, "victim": { "size": 1 } },
             "steps": [
          { "in": "gate1", "do": "open", "path": "gate1", "flags": "O_RDONLY", "as": "fd" },
          { "in": "gate2", "do": "open", "path": "gate2", "flags": "O_RDONLY", "as": "fd" },
          { "in": "p", "do": "fork", "as": "child" },
          { "in": "child", "do": "open", "path": "victim", "flags": "O_RDONLY", "as": "fd" },
          { "do": "wait", "proc": "gate1", "expect": { "killed_by": "SIGKILL" } },
          { "in": "child", "do": "exit", "code": 0 },
          { "do": "wait", "proc": "child", "expect": { "exit": 0 } },
          { "do": "wait", "proc": "gate2", "expect": { "killed_by": "SIGKILL" } },
          { "do": "kill", "proc": "child", "signal": "SIGKILL" }
        ] }"#,
    );
    let report = dir.path().join("report.json");
    let run = exe()
        .args(["run", "--jobs", "1", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(&scratch)
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (gate1, gate2, child) = poll(Duration::from_secs(30), "the case's processes", || {
        let pids = harness_descendants(run.id());
        Some((
            holder_of(&pids, "gate1")?,
            holder_of(&pids, "gate2")?,
            holder_of(&pids, "victim")?,
        ))
    });
    kill_leftovers(&[gate1]);
    // Reaped by its parent's `wait` (step 7): the pid is free.
    poll(Duration::from_secs(30), "child reaped", || {
        (!Path::new(&format!("/proc/{child}")).exists()).then_some(())
    });
    let sleep = sleep_on_pid(child);
    // Let the case go on to its `kill` in any case.
    kill_leftovers(&[gate2]);
    let out = run.wait_with_output().unwrap();
    let Some(mut sleep) = sleep else {
        eprintln!("SKIPPED: could not place a process on pid {child} (a busy machine took it)");
        return;
    };
    let ended = sleep.try_wait().unwrap();
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_eq!(
        ended, None,
        "the kill step reached pid {child}'s new process"
    );
    let json: serde_json::Value = std::fs::read(&report)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {:?}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let case = &json["cases"][0];
    assert_eq!(case["status"], "error", "{case}");
    assert_eq!(case["failed_step"], 9, "{case}");
    assert!(
        case["reason"]
            .as_str()
            .unwrap()
            .contains("was already reaped by the `wait` of step 7"),
        "{case}"
    );
}

/// Reads `pipe` to its end on a thread; the receiver gets the bytes then.
fn read_to_eof(mut pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

#[test]
fn a_sigkilled_run_takes_its_busy_processes_and_its_output_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    // A fresh process, its child and its grandchild, all busy in a step
    // that would take hours: none reads its channel until it ends.
    let file = case_file(
        dir.path(),
        "busy",
        r#"{ "title": "t", "refs": ["r"], "timeout": 600, "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "fork", "as": "child" },
          { "in": "child", "do": "fork", "as": "grandchild" },
          { "do": "together", "steps": [
            { "in": "p", "do": "increment", "map": "m", "count": 1000000000000, "atomic": true },
            { "in": "child", "do": "increment", "map": "m", "count": 1000000000000, "atomic": true },
            { "in": "grandchild", "do": "increment", "map": "m", "count": 1000000000000, "atomic": true }
          ] }
        ] }"#,
    );
    let mut run = exe()
        .args(["run", "--jobs", "1", "--report"])
        .arg(dir.path().join("report.json"))
        .arg("--dir")
        .arg(&scratch)
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = read_to_eof(run.stdout.take().unwrap());
    let stderr = read_to_eof(run.stderr.take().unwrap());
    // The fork server and three workers, the workers running (not asleep
    // on their channels): they are in the `together`.
    let processes = poll(Duration::from_secs(30), "three busy workers", || {
        let pids = harness_descendants(run.id());
        let busy = pids
            .iter()
            .filter(|&&p| ppid_and_state(p).is_some_and(|(_, s)| s == 'R'))
            .count();
        (pids.len() >= 4 && busy >= 3).then_some(pids)
    });
    // None of them holds the run's output: /dev/null, or the harness's own
    // pipe for the fork server's stderr.
    let output_of =
        |pid: i32| [1, 2].map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok());
    let run_output = output_of(run.id() as i32);
    assert!(run_output.iter().all(|o| o.is_some()), "{run_output:?}");
    for &pid in &processes {
        for held in output_of(pid).into_iter().flatten() {
            if run_output.contains(&Some(held.clone())) {
                kill_leftovers(&processes);
                panic!("process {pid} holds the run's output {held:?}");
            }
        }
    }
    run.kill().unwrap();
    let killed = Instant::now();
    run.wait().unwrap();
    let deadline = killed + Duration::from_secs(10);
    while !still_running(&processes).is_empty() {
        if Instant::now() >= deadline {
            let left = still_running(&processes);
            kill_leftovers(&left);
            panic!("still running 10 s after the harness was SIGKILLed: {left:?} of {processes:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let gone_after = killed.elapsed();
    for (name, pipe) in [("stdout", stdout), ("stderr", stderr)] {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            pipe.recv_timeout(left).is_ok(),
            "the run's {name} did not reach EOF: someone still holds it"
        );
    }
    eprintln!(
        "all {} processes gone {gone_after:?} after the SIGKILL, output closed after {:?}",
        processes.len(),
        killed.elapsed()
    );
}

#[test]
fn a_forked_process_outlives_its_parent_as_an_orphan_does() {
    // Forked workers die with the harness, not with their parent: in Linux
    // an orphan lives on, reparented, with its mappings.
    let dir = tempfile::tempdir().unwrap();
    let file = case_file(
        dir.path(),
        "orphans",
        r#"{ "title": "t", "refs": ["r"], "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "fork", "as": "child" },
          { "in": "child", "do": "fork", "as": "grandchild" },
          { "do": "kill", "proc": "p", "signal": "SIGKILL" },
          { "do": "wait", "proc": "p", "expect": { "killed_by": "SIGKILL" } },
          { "in": "child", "do": "store", "map": "m", "at": 0, "text": "orphan" },
          { "in": "child", "do": "exit", "code": 0 },
          { "in": "grandchild", "do": "load", "map": "m", "at": 0, "len": 6, "expect": { "text": "orphan" } }
        ] }"#,
    );
    let case = run_one(dir.path(), &file);
    assert_eq!(case["status"], "pass", "{case}");
}

// Consecutive steps of one process go to it in one batch (exec::coordinator):
// a fault ends the batch at that step and the rest still runs after it, a
// failed step is the last one reported, and a step that never ends is the
// one the time limit names.

/// Runs one case given as JSON and returns its entry in the report.
fn run_json(json: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = case_file(dir.path(), "case", json);
    run_one(dir.path(), &file)
}

#[test]
fn a_fault_inside_a_batch_ends_it_there_and_the_steps_after_it_still_run() {
    let case = run_json(
        r#"{ "title": "t", "refs": ["r"], "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "x", "expect": { "signal": "SIGSEGV" } },
          { "in": "p", "do": "load", "map": "m", "at": 0, "len": 1, "expect": { "fill": 0 } },
          { "in": "p", "do": "mprotect", "map": "m", "prot": "READ|WRITE" },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "ok" },
          { "in": "p", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "ok" } }
        ] }"#,
    );
    assert_eq!(case["steps"].as_array().map(Vec::len), Some(6), "{case}");
    passed_past_a_fault(&case, 2, "6f6b");
}

/// A case that passed: every step reported in order, step `fault` (from 1)
/// observed SIGSEGV and the last one read `last_bytes`.
fn passed_past_a_fault(case: &serde_json::Value, fault: usize, last_bytes: &str) {
    assert_eq!(case["status"], "pass", "{case}");
    let steps = case["steps"].as_array().unwrap();
    let indexes: Vec<String> = steps
        .iter()
        .map(|s| s["index"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=steps.len()).map(|i| i.to_string()).collect();
    assert_eq!(indexes, expected, "{case}");
    assert_eq!(
        steps[fault - 1]["observed"]["outcome"]["signal"],
        "SIGSEGV",
        "{case}"
    );
    assert_eq!(
        steps.last().unwrap()["observed"]["bytes"],
        last_bytes,
        "{case}"
    );
}

/// A case that failed at step `at` (from 1), which read `bytes`, the last step reported.
fn failed_at(case: &serde_json::Value, at: usize, bytes: &str) {
    assert_eq!(case["status"], "fail", "{case}");
    assert_eq!(case["failed_step"], at, "{case}");
    assert_eq!(case["steps"].as_array().unwrap().len(), at, "{case}");
    assert_eq!(case["steps"][at - 1]["observed"]["bytes"], bytes, "{case}");
}

#[test]
fn a_failed_step_inside_a_batch_is_the_last_reported() {
    let case = run_json(
        r#"{ "title": "t", "refs": ["r"], "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "PRIVATE|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "ab" },
          { "in": "p", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "zz" } },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "cd" },
          { "in": "p", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "cd" } }
        ] }"#,
    );
    failed_at(&case, 3, "6162");
}

#[test]
fn the_time_limit_names_the_step_of_a_batch_that_never_ends() {
    let case = run_json(
        r#"{ "title": "t", "refs": ["r"], "timeout": 0.5, "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "store", "map": "m", "at": 0, "hex": "00000000" },
          { "in": "p", "do": "increment", "map": "m", "at": 0, "count": 1000000000000000 },
          { "in": "p", "do": "load", "map": "m", "at": 0, "len": 4 }
        ] }"#,
    );
    assert_eq!(case["status"], "error", "{case}");
    assert_eq!(case["timed_out"], true, "{case}");
    assert_eq!(case["failed_step"], 3, "{case}");
    assert_eq!(case["steps"].as_array().unwrap().len(), 2, "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(reason.starts_with("step 3 ("), "{reason}");
}

// A run of one process's steps long enough to go as direct hand-offs
// (exec::relay) from a case's first step, the process started for it:
// the same promises as a batch.

/// `pairs` store/load pairs of process `p` on its mapping `m`, as steps.
fn filler(pairs: usize) -> String {
    (0..pairs)
        .map(|i| {
            format!(
                r#"{{ "in": "p", "do": "store", "map": "m", "at": {i}, "text": "{c}" }},
                   {{ "in": "p", "do": "load", "map": "m", "at": {i}, "len": 1, "expect": {{ "text": "{c}" }} }},"#,
                c = (b'a' + i as u8) as char
            )
        })
        .collect()
}

#[test]
fn a_fault_inside_a_long_run_of_one_process_ends_it_there_and_the_steps_after_it_still_run() {
    let case = run_json(&format!(
        r#"{{ "title": "t", "refs": ["r"], "steps": [
          {{ "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "PRIVATE|ANONYMOUS", "as": "m" }},
          {filler}
          {{ "in": "p", "do": "mprotect", "map": "m", "prot": "READ" }},
          {{ "in": "p", "do": "store", "map": "m", "at": 0, "text": "x", "expect": {{ "signal": "SIGSEGV" }} }},
          {{ "in": "p", "do": "mprotect", "map": "m", "prot": "READ|WRITE" }},
          {{ "in": "p", "do": "store", "map": "m", "at": 0, "text": "ok" }},
          {{ "in": "p", "do": "load", "map": "m", "at": 0, "len": 2, "expect": {{ "text": "ok" }} }}
        ] }}"#,
        filler = filler(5)
    ));
    assert_eq!(case["steps"].as_array().map(Vec::len), Some(16), "{case}");
    passed_past_a_fault(&case, 13, "6f6b");
}

#[test]
fn a_failed_step_inside_a_long_run_of_one_process_is_the_last_reported() {
    let case = run_json(&format!(
        r#"{{ "title": "t", "refs": ["r"], "steps": [
          {{ "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "PRIVATE|ANONYMOUS", "as": "m" }},
          {filler}
          {{ "in": "p", "do": "load", "map": "m", "at": 0, "len": 2, "expect": {{ "text": "zz" }} }},
          {{ "in": "p", "do": "store", "map": "m", "at": 0, "text": "cd" }},
          {{ "in": "p", "do": "load", "map": "m", "at": 0, "len": 2, "expect": {{ "text": "cd" }} }}
        ] }}"#,
        filler = filler(5)
    ));
    failed_at(&case, 12, "6162");
}

#[test]
fn the_time_limit_names_the_step_of_a_long_run_of_one_process_that_never_ends() {
    let case = run_json(&format!(
        r#"{{ "title": "t", "refs": ["r"], "timeout": 0.5, "steps": [
          {{ "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" }},
          {filler}
          {{ "in": "p", "do": "increment", "map": "m", "at": 0, "count": 1000000000000000 }},
          {{ "in": "p", "do": "load", "map": "m", "at": 0, "len": 4 }}
        ] }}"#,
        filler = filler(5)
    ));
    assert_eq!(case["status"], "error", "{case}");
    assert_eq!(case["timed_out"], true, "{case}");
    assert_eq!(case["failed_step"], 12, "{case}");
    assert_eq!(case["steps"].as_array().unwrap().len(), 11, "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(reason.starts_with("step 12 ("), "{reason}");
    assert!(reason.contains("waiting for process `p`"), "{reason}");
}

// Runs of direct hand-offs between processes (exec::relay): the same
// promises as one step at a time, for steps of several processes.

#[test]
fn a_fault_inside_a_run_of_two_processes_ends_it_there_and_the_steps_after_it_still_run() {
    let case = run_json(
        r#"{ "title": "t", "refs": ["r"], "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "fork", "as": "q" },
          { "in": "q", "do": "store", "map": "m", "at": 0, "text": "q1" },
          { "in": "p", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "q1" } },
          { "in": "q", "do": "mprotect", "map": "m", "prot": "READ" },
          { "in": "q", "do": "store", "map": "m", "at": 0, "text": "x", "expect": { "signal": "SIGSEGV" } },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "p2" },
          { "in": "q", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "p2" } },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "p3" },
          { "in": "q", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "p3" } }
        ] }"#,
    );
    assert_eq!(case["steps"].as_array().map(Vec::len), Some(10), "{case}");
    passed_past_a_fault(&case, 6, "7033");
}

#[test]
fn a_failed_step_inside_a_run_of_two_processes_is_the_last_reported() {
    let case = run_json(
        r#"{ "title": "t", "refs": ["r"], "steps": [
          { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
          { "in": "p", "do": "fork", "as": "q" },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "ab" },
          { "in": "q", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "zz" } },
          { "in": "p", "do": "store", "map": "m", "at": 0, "text": "cd" },
          { "in": "q", "do": "load", "map": "m", "at": 0, "len": 2, "expect": { "text": "cd" } }
        ] }"#,
    );
    failed_at(&case, 4, "6162");
}

/// Two processes that alternate, the second stuck in its step 5.
const STUCK_IN_A_RUN: &str = r#"{ "title": "t", "refs": ["r"], "timeout": TIMEOUT, "steps": [
      { "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS", "as": "m" },
      { "in": "p", "do": "fork", "as": "q" },
      { "in": "p", "do": "store", "map": "m", "at": 0, "hex": "00000000" },
      { "in": "q", "do": "load", "map": "m", "at": 0, "len": 4, "expect": { "fill": 0 } },
      { "in": "q", "do": "increment", "map": "m", "at": 0, "count": 1000000000000000 },
      { "in": "p", "do": "load", "map": "m", "at": 0, "len": 4 },
      { "in": "q", "do": "load", "map": "m", "at": 0, "len": 4 }
    ] }"#;

#[test]
fn the_time_limit_names_the_step_of_a_run_of_two_processes_that_never_ends() {
    let case = run_json(&STUCK_IN_A_RUN.replace("TIMEOUT", "0.5"));
    assert_eq!(case["status"], "error", "{case}");
    assert_eq!(case["timed_out"], true, "{case}");
    assert_eq!(case["failed_step"], 5, "{case}");
    assert_eq!(case["steps"].as_array().unwrap().len(), 4, "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(reason.starts_with("step 5 ("), "{reason}");
    assert!(reason.contains("waiting for process `q`"), "{reason}");
}

/// The system call a process is blocked in (/proc/PID/syscall), None
/// while it runs in user space.
fn blocked_in(pid: i32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The user-space CPU time of `pid` so far, in clock ticks (utime, the
/// 14th field of /proc/PID/stat; 100 a second on Linux).
fn user_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(14 - 3)?.parse().ok()
}

#[test]
fn a_death_in_a_run_is_told_at_its_step_and_a_death_out_of_turn_does_not_end_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = case_file(dir.path(), "case", &STUCK_IN_A_RUN.replace("TIMEOUT", "60"));
    let report = dir.path().join("report.json");
    let run = exe()
        .args(["run", "--jobs", "1", "--report"])
        .arg(&report)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // q is busy in user space in its increment (no system call); p waits
    // for its turn on the futex of the hand-off. Running is not enough to
    // tell q is in step 5: it also runs, briefly, in step 4 while p already
    // waits. Only the increment takes user time by the tenth of a second.
    let (p, q) = poll(Duration::from_secs(30), "p waiting and q busy", || {
        let pids = harness_descendants(run.id());
        let busy: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&pid| ppid_and_state(pid).is_some_and(|(_, s)| s == 'R'))
            .filter(|&pid| user_ticks(pid).is_some_and(|t| t >= 10))
            .collect();
        let waiting: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&pid| blocked_in(pid) == Some(libc::SYS_futex))
            .collect();
        match (&waiting[..], &busy[..]) {
            ([p], [q]) => Some((*p, *q)),
            _ => None,
        }
    });
    // p dies out of turn: the run goes on waiting for q's step ...
    unsafe { libc::kill(p, libc::SIGKILL) };
    poll(Duration::from_secs(10), "p gone", || {
        ppid_and_state(p)
            .is_none_or(|(_, s)| s == 'Z')
            .then_some(())
    });
    // ... which then dies in it, and is named there.
    unsafe { libc::kill(q, libc::SIGKILL) };
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let case = &json["cases"][0];
    assert_eq!(case["status"], "error", "{case}");
    assert_ne!(case["timed_out"], true, "{case}");
    assert_eq!(case["failed_step"], 5, "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("step 5 (") && reason.contains("process `q` died during the step"),
        "{reason}"
    );
}
