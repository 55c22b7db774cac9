//! `run --fs host` (every host target at once: memory filesystems, ext4,
//! hugetlbfs, read-only images, every FUSE target) ended by SIGINT two
//! seconds in, as `timeout -s INT 2` would, and by SIGKILL followed by
//! `mmapconf cleanup`: nothing of the run is left — no mount, loop device,
//! FUSE server, image, directory, or huge page of its reservation.
//! Needs root (skipped with the reason otherwise).

mod common;

use common::*;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The two tests share the machine's huge page pool: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn nr_hugepages() -> String {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default()
}

fn start(base: &std::path::Path) -> Child {
    exe()
        .args(["run", "--fs", "host", "--dir"])
        .arg(base)
        .arg("--report")
        .arg(base.join("report.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls until nothing of run `pid` (whose `--dir` was `base`) is left, or
/// gives what is after `limit`: its files (images, the huge page state),
/// loop devices, mounts and FUSE servers (see `common::held_by`).
/// (Processes of a SIGKILLed run die of their death signals on their own
/// time; this observes, it orders nothing.)
fn settles(pid: u32, base: &std::path::Path, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = held_by(pid, base);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: needs root (loop devices, mounts, FUSE servers, the huge page pool)");
    false
}

#[test]
fn sigint_two_seconds_into_a_host_run_leaves_nothing() {
    if !root() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = nr_hugepages();
    let base = tempfile::tempdir().unwrap();
    let mut run = start(base.path());
    let pid = run.id();
    // When to signal (as `timeout -s INT 2`), not an order between processes.
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = run.wait().unwrap();
    // 130 if the signal came first, 0 or 1 if the run had already ended.
    assert!(matches!(status.code(), Some(130 | 0 | 1)), "{status:?}");
    assert_eq!(
        settles(pid, base.path(), Duration::from_secs(10)),
        Vec::<String>::new()
    );
    assert_eq!(nr_hugepages(), before, "the pool is given back");
}

#[test]
fn sigkill_then_cleanup_of_a_host_run_leaves_nothing() {
    if !root() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = nr_hugepages();
    let base = tempfile::tempdir().unwrap();
    let mut run = start(base.path());
    let pid = run.id();
    std::thread::sleep(Duration::from_secs(2));
    run.kill().unwrap();
    run.wait().unwrap();
    // What its workers and servers need to notice the harness is gone.
    let _ = settles(pid, base.path(), Duration::from_secs(5));
    let out = exe().arg("cleanup").arg(base.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        settles(pid, base.path(), Duration::from_secs(10)),
        Vec::<String>::new(),
        "after cleanup: {}",
        text(&out)
    );
    assert_eq!(nr_hugepages(), before, "cleanup gives the pool back");
}
