//! Threads of a case's process, end to end: a step in a thread that runs
//! past the time limit is reported naming the step and the thread, and the
//! C reproducer refuses a case with threads naming the step.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Runs one case file that must not pass; returns its report's case.
fn run_failing(case: &Path) -> serde_json::Value {
    let base = tempfile::tempdir().unwrap();
    let report = base.path().join("report.json");
    let scratch = base.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmapconf"))
        .args(["run", "--jobs", "1", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(&scratch)
        .arg(case)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    json["cases"][0].take()
}

#[test]
fn a_thread_that_blocks_is_reported_at_its_step_naming_the_thread() {
    let case = &run_failing(&repo("harness/tests/fixtures/thread-blocks-forever.json"));
    assert_eq!(case["status"], "error", "{case}");
    assert_eq!(case["failed_step"], 4, "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(
        reason.contains("timed out") && reason.contains("thread `t1` of process `p`"),
        "{reason}"
    );
    // The step's summary names the thread too.
    assert!(reason.starts_with("step 4 (p/t1: io"), "{reason}");
}

#[test]
fn a_step_in_a_thread_of_a_killed_process_names_the_kill_and_the_thread() {
    let case = repo("harness/tests/fixtures/thread-of-killed-process.json");
    let case = &run_failing(&case);
    assert_eq!(case["status"], "error", "{case}");
    assert_ne!(case["timed_out"], true, "{case}");
    let reason = case["reason"].as_str().unwrap();
    assert!(
        reason.contains("process `p` was killed by SIGKILL at step 4")
            && reason.contains("thread `t1`"),
        "{reason}"
    );
}
