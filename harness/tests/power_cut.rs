//! Power-cut mode (`mmapconf power-cut`, `exec::power_cut`): the state
//! saved at a `crash` step comes back whole, and a case resumed from it on
//! the same filesystem completes with one report.

use mmapconf::case::{self, LoadedCase};
use mmapconf::exec::power_cut::{Paused, PowerCut, State, DETAIL, MARKER, STATE_VERSION};
use mmapconf::exec::{live, run_case_from, RunOptions};
use mmapconf::report::{CaseReport, Status, StepStatus};
use mmapconf::target::{page_size, Environment};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmapconf"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Keeps the coordinator's state instead of cutting any power: the case
/// then ends as an error, its processes killed.
#[derive(Debug, Default)]
struct Keep(Mutex<Option<Paused>>);

impl PowerCut for Keep {
    fn cut(&self, paused: Paused) -> Result<Infallible, String> {
        *self.0.lock().unwrap() = Some(paused);
        Err("kept the state, cut nothing".into())
    }
}

fn load(dir: &Path, name: &str, text: &str) -> LoadedCase {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, text).unwrap();
    case::load_file(&file, page_size()).unwrap_or_else(|p| panic!("{p:?}"))
}

/// Runs `case` in a fresh directory up to its crash step, passes the
/// state through its file format, and resumes it in the same directory,
/// again after every further crash step. Returns each part's report and
/// the state it ended with (None for the last part).
fn cut_and_resume(case: &LoadedCase) -> Vec<(CaseReport, Option<State>)> {
    live::become_subreaper();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("case");
    std::fs::create_dir(&dir).unwrap();
    let env = Environment::probe(&dir);
    let keep = Arc::new(Keep::default());
    let mut opts = RunOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_mmapconf")));
    opts.power_cut = Some(keep.clone());
    let mut parts = Vec::new();
    let mut resume = None;
    loop {
        let report = run_case_from(case, &env, &dir, &opts, resume.take());
        let Some(paused) = keep.0.lock().unwrap().take() else {
            parts.push((report, None));
            return parts;
        };
        let state = State {
            version: STATE_VERSION,
            case: case.id.clone(),
            fs: env.fs_type.clone(),
            case_dir: "case".into(),
            kernel_release: env.kernel_release.clone(),
            cuts: parts.len() as u32 + 1,
            paused,
        };
        let back = State::parse(&state.to_line()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&state).unwrap()
        );
        resume = Some(back.paused);
        parts.push((report, Some(state)));
    }
}

const DURABLE: &str = r#"{
  "title": "t", "refs": ["r"], "files": { "data": { "size": "1p" } },
  "steps": [
    { "in": "p", "do": "open", "path": "data", "flags": "O_RDWR", "as": "fd" },
    { "in": "p", "do": "mmap", "fd": "fd", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED", "as": "m" },
    { "in": "p", "do": "store", "map": "m", "at": 10, "text": "kept" },
    { "in": "p", "do": "msync", "map": "m", "flags": "MS_SYNC" },
    { "in": "p", "do": "fork", "as": "child" },
    { "in": "p", "do": "fstat", "fd": "fd", "as": "synced" },
    { "do": "crash" },
    { "do": "kill", "proc": "child", "signal": "SIGKILL", "expect": { "errno": "ESRCH" } },
    { "do": "check_file", "path": "data", "at": 10, "len": 4, "expect": { "text": "kept" } },
    { "in": "q", "do": "open", "path": "data", "flags": "O_RDONLY", "as": "fd" },
    { "in": "q", "do": "fstat", "fd": "fd", "expect": { "stat": { "mtime": { "unchanged_since": "synced" } } } }
  ]
}"#;

#[test]
fn the_state_at_a_cut_comes_back_and_the_case_resumes_from_it() {
    let files = tempfile::tempdir().unwrap();
    let case = load(files.path(), "durable", DURABLE);
    let mut parts = cut_and_resume(&case);
    assert_eq!(parts.len(), 2);
    let (after, _) = parts.pop().unwrap();
    let (before, state) = parts.pop().unwrap();
    let state = state.unwrap();

    assert_eq!(before.status, Status::Error, "{before:?}");
    assert!(
        before
            .reason
            .as_deref()
            .unwrap()
            .contains("power cut: kept the state"),
        "{before:?}"
    );
    let p = &state.paused;
    assert_eq!(p.resume_at, 6, "the crash step, 0-based");
    assert_eq!(p.steps.len(), 6);
    assert!(p.snapshots.contains_key("synced"));
    let names: Vec<(&str, Option<&str>)> = p
        .processes
        .iter()
        .map(|p| (p.name.as_str(), p.parent.as_deref()))
        .collect();
    assert_eq!(names, [("child", Some("p")), ("p", None)]);
    assert!(p.processes.iter().all(|p| p.pid > 0));

    assert_eq!(after.status, Status::Pass, "{after:#?}");
    assert_eq!(after.steps.len(), 11, "every step reported once");
    let indexes: Vec<&str> = after.steps.iter().map(|s| s.index.as_str()).collect();
    assert_eq!(
        indexes,
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
    );
    let crash = &after.steps[6];
    assert_eq!(crash.op, "crash");
    assert_eq!(crash.status, StepStatus::Pass);
    assert_eq!(
        crash.observed.as_ref().unwrap().detail.as_deref(),
        Some(DETAIL)
    );
    assert!(after.duration_ms >= p.elapsed_ms);
}

#[test]
fn a_second_crash_step_cuts_again() {
    let files = tempfile::tempdir().unwrap();
    let text = r#"{
      "title": "t", "refs": ["r"], "files": { "data": { "size": 8 } },
      "steps": [
        { "in": "a", "do": "open", "path": "data", "flags": "O_RDWR", "as": "fd" },
        { "in": "a", "do": "fstat", "fd": "fd", "as": "first" },
        { "do": "crash" },
        { "in": "b", "do": "open", "path": "data", "flags": "O_RDWR", "as": "fd" },
        { "in": "b", "do": "fstat", "fd": "fd", "as": "second", "expect": { "stat": { "mtime": { "unchanged_since": "first" } } } },
        { "do": "crash" },
        { "in": "c", "do": "open", "path": "data", "flags": "O_RDONLY", "as": "fd" },
        { "in": "c", "do": "fstat", "fd": "fd", "expect": { "stat": { "mtime": { "unchanged_since": "second" } } } }
      ]
    }"#;
    let case = load(files.path(), "twice", text);
    let parts = cut_and_resume(&case);
    assert_eq!(parts.len(), 3, "two cuts, three parts");
    let (middle, second) = &parts[1];
    let second = second.as_ref().unwrap();
    assert_eq!(second.cuts, 2);
    assert_eq!(second.paused.resume_at, 5);
    assert_eq!(second.paused.steps.len(), 5, "steps of both parts");
    assert_eq!(
        second.paused.snapshots.keys().collect::<Vec<_>>(),
        ["first", "second"]
    );
    let names: Vec<&str> = second
        .paused
        .processes
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(middle.failed_step, Some(6));
    let (last, _) = &parts[2];
    assert_eq!(last.status, Status::Pass, "{last:#?}");
    assert_eq!(last.steps.len(), 8);
    for i in [2, 5] {
        let detail = last.steps[i].observed.as_ref().unwrap().detail.as_deref();
        assert_eq!(detail, Some(DETAIL));
    }
}

#[test]
fn a_state_for_another_step_is_refused() {
    let files = tempfile::tempdir().unwrap();
    let case = load(files.path(), "durable", DURABLE);
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::probe(dir.path());
    let opts = RunOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_mmapconf")));
    let paused = Paused {
        resume_at: 2,
        ..Paused::default()
    };
    let r = run_case_from(&case, &env, dir.path(), &opts, Some(paused));
    assert_eq!(r.status, Status::Error);
    assert!(r.reason.unwrap().contains("not a crash step"));
}

// ------------------------------------------------------------------ on the host, as root

/// Everything the host test makes, removed whatever happens.
struct Host {
    dir: tempfile::TempDir,
    image: PathBuf,
    mount: PathBuf,
    loop_dev: Option<String>,
    child: Option<Child>,
}

impl Host {
    fn new(fs: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let force = if fs == "btrfs" { "-f" } else { "-F" };
        let mkfs = Command::new(format!("mkfs.{fs}"))
            .args(["-q", force])
            .arg(&image)
            .output()
            .unwrap();
        assert!(mkfs.status.success(), "{mkfs:?}");
        let mount = dir.path().join("mnt");
        let mut host = Host {
            dir,
            image,
            mount,
            loop_dev: None,
            child: None,
        };
        host.attach();
        host
    }

    fn attach(&mut self) {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&self.image)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        self.loop_dev = Some(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }

    /// Unmounts (once nothing holds the mount any more) and detaches.
    fn release(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.mounted() {
            match nix::mount::umount(&self.mount) {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => {
                    let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
                    break;
                }
            }
        }
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).output();
        }
    }

    fn mounted(&self) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(self.mount.to_str().unwrap()))
    }

    fn power_cut(&self, fs: &str) -> Command {
        let mut cmd = exe();
        cmd.arg("power-cut")
            .arg(repo("cases"))
            .args(["--device", self.loop_dev.as_deref().unwrap(), "--fs", fs])
            .arg("--mount")
            .arg(&self.mount)
            .arg("--report")
            .arg(self.dir.path().join("report.json"));
        cmd
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.release();
    }
}

/// The whole power-cut cycle on a loop device: `before` until the marker,
/// SIGKILL, then `--resume` on the same image.
///
/// On the host this is NOT a real power cut: the harness and its workers
/// die, but the machine and its page cache live on, and unmounting writes
/// back everything the case left dirty. It checks the mechanics (the
/// marker, the state, the resume on a newly mounted device, one complete
/// report); only the VM (`ci/power-cut`) checks what survives a cut.
#[test]
fn a_case_cut_on_the_host_resumes_on_the_same_image() {
    let Some(fs) = ["btrfs", "ext4"].into_iter().find(|fs| {
        mmapconf::target::fs::kernel_knows(fs)
            && Command::new(format!("mkfs.{fs}"))
                .arg("-V")
                .output()
                .is_ok()
    }) else {
        eprintln!("SKIPPED: needs btrfs or ext4 with its mkfs");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (a loop device, mount)");
        return;
    }
    let id = "durability/msync-crash-new-process-maps";
    let mut host = Host::new(fs);
    let state_path = host.dir.path().join("state.json");

    let mut child = host
        .power_cut(fs)
        .args(["--case", id])
        .arg("--state-out")
        .arg(&state_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    host.child = Some(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.starts_with(MARKER), "{line:?}");
    assert!(line.contains(id), "{line:?}");
    // The state is complete before the marker.
    let state = State::read(&state_path).unwrap();
    let pids: Vec<i32> = state.paused.processes.iter().map(|p| p.pid).collect();
    assert_eq!(state.paused.processes.len(), 1);
    assert!(
        pids.iter()
            .all(|&p| Path::new(&format!("/proc/{p}")).exists()),
        "the case's processes are alive at the cut"
    );
    let mut child = host.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The workers die of PR_SET_PDEATHSIG (and of their closed channels).
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| is_alive(p)) {
        assert!(Instant::now() < deadline, "workers outlived the harness");
        std::thread::sleep(Duration::from_millis(5));
    }
    for &p in &pids {
        // Orphans come to this process when another test made it a subreaper.
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(p),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
    host.release();
    host.attach();

    let out = host
        .power_cut(fs)
        .arg("--resume")
        .arg(&state_path)
        .arg("--state-out")
        .arg(host.dir.path().join("state-2.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no second cut");
    assert!(!host.mounted(), "the resume unmounts");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(host.dir.path().join("report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["summary"]["total"], 1);
    assert_eq!(report["environment"]["fs_type"], fs);
    let case = &report["cases"][0];
    assert_eq!(case["id"], id);
    assert_eq!(case["status"], "pass", "{case:#}");
    let steps = case["steps"].as_array().unwrap();
    let text = std::fs::read_to_string(repo(&format!("cases/{id}.json"))).unwrap();
    assert_eq!(steps.len(), text.matches("\"do\":").count(), "{case:#}");
    assert_eq!(steps[4]["op"], "crash");
    assert_eq!(steps[4]["observed"]["detail"], DETAIL);
    assert_eq!(steps[5]["process"], "reader");
    host.release();
    assert!(!host.mounted());
}

fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}
