//! The ramfs target and the read-only image targets (erofs, squashfs):
//! a run of the corpus on each passes (known failures excepted, from the
//! checked-in baseline of this kernel and filesystem), its report names the
//! filesystem, and nothing of the target (mount, loop device, image,
//! staging tree, scratch directory) is left after a run that ends, one
//! stopped by SIGINT while a case holds a mapping of a file of the target,
//! and one SIGKILLed then (after `mmapconf cleanup`). Needs root, the
//! kernel's support and the image builders (packages erofs-utils and
//! squashfs-tools); a target that cannot be made is skipped with the
//! reason printed.

mod common;

use common::held_by;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const TARGETS: [&str; 3] = ["ramfs", "erofs", "squashfs"];

/// The tests run one at a time: one reaps every child of this process
/// (waitpid(-1)), which would take the other's harness.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn harness_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mmapconf"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn has_tool(tool: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/sbin".into(), "/usr/sbin".into()])
        .any(|d| d.join(tool).is_file())
}

/// Why `fs` cannot be made here, or None.
fn unavailable(fs: &str) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("making scratch filesystems needs root".into());
    }
    let known = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !known
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
    {
        return Some(format!("the kernel has no {fs}"));
    }
    let tools: &[&str] = match fs {
        "erofs" => &["mkfs.erofs", "losetup"],
        "squashfs" => &["mksquashfs", "losetup"],
        _ => &[],
    };
    tools
        .iter()
        .find(|t| !has_tool(t))
        .map(|t| format!("{t} is not installed"))
}

/// The targets this machine can make; the others are printed as skipped.
fn available() -> Vec<&'static str> {
    TARGETS
        .into_iter()
        .filter(|fs| match unavailable(fs) {
            Some(why) => {
                eprintln!("SKIPPED {fs}: {why}");
                false
            }
            None => true,
        })
        .collect()
}

/// The checked-in baseline for this kernel and `fs`, if there is one.
fn baseline(fs: &str) -> Option<PathBuf> {
    let release = nix::sys::utsname::uname().ok()?;
    let release = release.release().to_string_lossy().into_owned();
    let mut parts = release.split(['.', '-']);
    let (major, minor) = (parts.next()?, parts.next()?);
    let path = repo(&format!("reports/baselines/{major}.{minor}-{fs}.txt"));
    path.is_file().then_some(path)
}

/// Waits for `child`, at most `limit`: a harness that does not end fails.
fn finish(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the harness did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_run_on_each_target_passes_reports_its_filesystem_and_leaves_nothing() {
    let _alone = alone();
    for fs in available() {
        let base = tempfile::tempdir().unwrap();
        let report = base.path().join("r.json");
        let mut cmd = Command::new(harness_bin());
        cmd.args(["run", "--fs", fs, "--dir"])
            .arg(base.path())
            .arg("--report")
            .arg(&report)
            .arg(repo("cases"));
        // Known defects of this kernel and filesystem (ramfs: see its
        // baseline), picked by file name from the directory.
        if baseline(fs).is_some() {
            cmd.arg("--baseline").arg(repo("reports/baselines"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = {
            let status = finish(&mut child, Duration::from_secs(300));
            let mut text = String::new();
            for mut s in [
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read>,
                Box::new(child.stderr.take().unwrap()),
            ] {
                let _ = s.read_to_string(&mut text);
            }
            (status, text)
        };
        assert!(out.0.success(), "{fs}: {:?}\n{}", out.0, out.1);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let env = &json["environment"];
        assert_eq!(env["fs_type"], fs, "{fs}: {env}");
        assert_eq!(env["target"], fs, "{fs}: {env}");
        let status_of = |id: &str| {
            json["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .map(|c| c["status"].as_str().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        let read_only = fs != "ramfs";
        let caps = &env["capabilities"];
        assert_eq!(caps["read_only"]["present"], read_only, "{fs}: {caps}");
        assert_eq!(caps["writable"]["present"], !read_only, "{fs}: {caps}");
        // ramfs has no size: fill_fs would eat the machine's memory.
        assert_eq!(caps["fills_up"]["present"], read_only, "{fs}: {caps}");
        // The cases written for read-only filesystems run on the images
        // (their files came from the image), and only there; a case that
        // writes is skipped on them, one that only reads passes.
        let expected = if read_only { "pass" } else { "skip" };
        assert_eq!(
            status_of("readonly/reads-see-image-content"),
            expected,
            "{fs}"
        );
        assert_eq!(
            status_of("seed/writer-reader"),
            if read_only { "skip" } else { "pass" },
            "{fs}"
        );
        let held = held_by(pid, base.path());
        assert!(held.is_empty(), "{fs}: a run that ended left {held:?}");
    }
}

/// A case that maps a file of the target and then waits for ever (for a
/// process that never exits): the run is inside it, with the mount busy,
/// until it is interrupted.
const HOLDING_CASE: &str = r#"{
  "title": "holds a mapping of a file of the target until interrupted",
  "refs": ["test"],
  "files": { "data": { "size": "1p", "text": "held" } },
  "steps": [
    { "in": "p", "do": "open", "path": "data", "flags": "O_RDONLY", "as": "fd" },
    { "in": "p", "do": "mmap", "fd": "fd", "len": "1p", "prot": "READ", "flags": "SHARED", "as": "m" },
    { "in": "p", "do": "load", "map": "m", "at": 0, "len": 4, "expect": { "text": "held" } },
    { "do": "wait", "proc": "p", "expect": { "exit": 0 } }
  ]
}"#;

/// Whether some process maps a file under a mount point of run `pid`.
fn a_process_maps_the_target(pid: u32) -> bool {
    let mark = format!("/mmapconf-mnt-{pid}-");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .any(|e| std::fs::read_to_string(e.path().join("maps")).is_ok_and(|m| m.contains(&mark)))
}

/// Waits (at most 30 s) until every process the run left has ended: this
/// test is their reaper (PR_SET_CHILD_SUBREAPER), so they come back to it.
fn reap_orphans() {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: waitpid on our own children.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) };
        if r < 0 {
            return;
        }
        if r == 0 {
            assert!(Instant::now() < deadline, "processes of the run lived on");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_run_interrupted_inside_a_case_leaves_nothing_and_cleanup_finds_a_killed_one() {
    let _alone = alone();
    let targets = available();
    if targets.is_empty() {
        return;
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let cases = tempfile::tempdir().unwrap();
    let case = cases.path().join("holds.json");
    std::fs::write(&case, HOLDING_CASE).unwrap();
    for fs in targets {
        for kill in [false, true] {
            let base = tempfile::tempdir().unwrap();
            let mut child = Command::new(harness_bin())
                .args(["run", "--timeout", "120", "--fs", fs, "--dir"])
                .arg(base.path())
                .arg("--report")
                .arg(base.path().join("r.json"))
                .arg(&case)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let pid = child.id();
            // Observes the run (orders none of its processes): the case
            // is inside its wait, a worker mapping a file of the target.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !a_process_maps_the_target(pid) {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "{fs}: the run ended before its case mapped the file"
                );
                assert!(Instant::now() < deadline, "{fs}: no mapping within 60 s");
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut held_before = held_by(pid, base.path());
            held_before.sort();
            assert!(
                held_before.iter().any(|h| h.starts_with("mount")),
                "{fs}: {held_before:?}"
            );
            if fs != "ramfs" {
                // An image on a loop device: both must go too.
                for what in ["loop device", ".img"] {
                    assert!(
                        held_before.iter().any(|h| h.contains(what)),
                        "{fs}: no {what} in {held_before:?}"
                    );
                }
            }
            if kill {
                child.kill().unwrap();
                let status = finish(&mut child, Duration::from_secs(60));
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(libc::SIGKILL));
                reap_orphans();
                let out = Command::new(harness_bin())
                    .arg("cleanup")
                    .arg(base.path())
                    .output()
                    .unwrap();
                let held = held_by(pid, base.path());
                assert!(
                    held.is_empty(),
                    "{fs}: after SIGKILL and cleanup ({}), {held:?} is left",
                    String::from_utf8_lossy(&out.stdout)
                );
            } else {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGINT,
                )
                .unwrap();
                let status = finish(&mut child, Duration::from_secs(60));
                assert_eq!(status.code(), Some(128 + libc::SIGINT), "{fs}");
                reap_orphans();
                let held = held_by(pid, base.path());
                assert!(held.is_empty(), "{fs}: after SIGINT, {held:?} is left");
            }
        }
    }
}
