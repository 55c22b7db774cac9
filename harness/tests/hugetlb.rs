//! The huge page pool a run reserves is given back however the run ends:
//! at its end, on SIGINT, and after a SIGKILL by `mmapconf cleanup`.
//! `/proc/sys/vm/nr_hugepages` is the same before and after. Root only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NR: &str = "/proc/sys/vm/nr_hugepages";

/// These tests compare the machine's pool before and after a run: two at
/// once would see each other's reservation.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmapconf"))
}

fn nr_hugepages() -> u64 {
    std::fs::read_to_string(NR).unwrap().trim().parse().unwrap()
}

/// Why these tests cannot run here, printed when they skip.
fn cannot_run() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to change /proc/sys/vm/nr_hugepages");
    }
    if !Path::new(NR).exists() {
        return Some("the kernel has no huge pages");
    }
    None
}

macro_rules! root_only {
    () => {
        if let Some(why) = cannot_run() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Gives back the pages of runs a failed test left SIGKILLed, so a
/// failure does not leave the machine's pool raised (only runs that are gone).
struct GiveBack;

impl Drop for GiveBack {
    fn drop(&mut self) {
        for line in mmapconf::target::hugetlb::cleanup() {
            eprintln!("{line}");
        }
    }
}

fn state_file(pid: u32) -> PathBuf {
    PathBuf::from(format!("/dev/shm/mmapconf-hugetlb-{pid}"))
}

/// A case that holds a huge page and then stays busy for hours.
fn busy_case(dir: &Path) -> PathBuf {
    let file = dir.join("busy.json");
    std::fs::write(
        &file,
        r#"{ "title": "t", "refs": ["r"], "timeout": 600,
          "requires": { "probes": ["hugetlb_pool"] },
          "steps": [
            { "in": "p", "do": "mmap", "len": "1h", "prot": "READ|WRITE", "flags": "SHARED|ANONYMOUS|HUGETLB", "as": "m" },
            { "in": "p", "do": "increment", "map": "m", "count": 1000000000000, "atomic": true }
          ] }"#,
    )
    .unwrap();
    file
}

/// Starts a run of the busy case and returns once its pool is reserved
/// and its worker is busy in the increment (polled: observes, orders nothing).
fn start_busy_run(dir: &Path) -> Child {
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut run = exe()
        .args(["run", "--jobs", "1", "--report"])
        .arg(dir.join("report.json"))
        .arg("--dir")
        .arg(&scratch)
        .arg(busy_case(dir))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(state_file(run.id()).exists() && worker_busy(run.id())) {
        if Instant::now() >= deadline {
            let _ = run.kill();
            let _ = run.wait();
            panic!("no reservation and busy worker within 30 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    run
}

/// Whether a child of `pid` (a worker: the harness is their parent) is
/// running, busy in the increment.
fn worker_busy(pid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next();
        let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
        state == Some("R") && ppid == Some(pid)
    })
}

#[test]
fn a_run_gives_the_pool_back_at_its_end() {
    root_only!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _give_back = GiveBack;
    let before = nr_hugepages();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let case = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cases/hugetlb/fork-private-copy-on-write.json");
    let out = exe()
        .args(["run", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(dir.path())
        .arg(&case)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // It ran on the pool, not skipped for want of one.
    assert_eq!(json["cases"][0]["status"], "pass", "{json}");
    assert_eq!(nr_hugepages(), before);
}

#[test]
fn an_interrupted_run_gives_the_pool_back() {
    root_only!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _give_back = GiveBack;
    let before = nr_hugepages();
    let dir = tempfile::tempdir().unwrap();
    let mut run = start_busy_run(dir.path());
    assert_eq!(nr_hugepages(), before + 16, "the run's reservation");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(nr_hugepages(), before);
    assert!(!state_file(run.id()).exists());
}

#[test]
fn cleanup_gives_back_the_pool_of_a_sigkilled_run() {
    root_only!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _give_back = GiveBack;
    let before = nr_hugepages();
    let dir = tempfile::tempdir().unwrap();
    let mut run = start_busy_run(dir.path());
    run.kill().unwrap();
    run.wait().unwrap();
    // Nothing ran to give the pages back.
    assert_eq!(nr_hugepages(), before + 16);
    let out = exe().arg("cleanup").arg(dir.path()).output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("gave back 16 huge pages of run {}", run.id())),
        "{said}"
    );
    assert_eq!(nr_hugepages(), before);
    assert!(!state_file(run.id()).exists());
}
