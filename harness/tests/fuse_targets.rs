//! FUSE filesystems as run targets (`run --fs fuse-default`, `--fs
//! ntfs-3g`): the whole corpus passes on each with its checked-in
//! baseline, the report names the filesystem precisely, and a run that
//! ends, one stopped by SIGINT in the middle, and one SIGKILLed (then
//! `mmapconf cleanup`) leave no FUSE mount, server, image, loop device or
//! backing directory. Skipped, with the reason printed, where this
//! machine cannot have the targets (not root, no /dev/fuse, ntfs-3g not
//! installed).

mod common;

use common::held_by;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mmapconf"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The own server's target and a packaged one.
const TARGETS: [&str; 2] = ["fuse-default", "ntfs-3g"];

/// Why these targets cannot be had here, or None.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("FUSE targets need root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    let has = |tool: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/sbin".into(), "/usr/sbin".into(), "/usr/bin".into()])
            .any(|d| d.join(tool).is_file())
    };
    for tool in ["ntfs-3g", "mkntfs", "losetup"] {
        if !has(tool) {
            return Some(format!("{tool} is not installed (Debian package ntfs-3g)"));
        }
    }
    None
}

/// The kernel's major.minor, as baselines are named.
fn kernel() -> String {
    let r = nix::sys::utsname::uname().unwrap();
    let r = r.release().to_string_lossy().into_owned();
    r.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn start(base: &Path, fs: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(base.join(format!("stderr-{fs}.log"))).unwrap();
    Command::new(bin())
        .args(["run", "--verbose", "--fs", fs, "--dir"])
        .arg(base)
        .arg("--report")
        .arg(base.join(format!("r-{fs}.json")))
        .args(extra)
        .current_dir(repo(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Reads the run's per-case lines until `n` have been printed (or it ends).
fn after_cases(child: &mut Child, n: usize) -> std::process::ChildStdout {
    let stdout = child.stdout.take().unwrap();
    let mut r = std::io::BufReader::new(stdout);
    let mut line = String::new();
    let mut seen = 0;
    while seen < n && matches!(r.read_line(&mut line), Ok(k) if k > 0) {
        seen += 1;
        line.clear();
    }
    r.into_inner()
}

/// Reaps what the run left to us (we are its subreaper), so that nothing
/// of it lives on when we look.
fn reap_orphans() {
    // SAFETY: waitpid on our own children, blocking until none is left.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL) } > 0 {}
}

fn log(base: &Path, fs: &str) -> String {
    std::fs::read_to_string(base.join(format!("stderr-{fs}.log"))).unwrap_or_default()
}

/// A whole run with the target's baseline: exit status 0, the report
/// names the filesystem, and nothing is left.
fn whole_run(fs: &str, fs_type: &str) -> Result<(), String> {
    let base = tempfile::tempdir().unwrap();
    let baseline = repo(&format!("reports/baselines/{}-{fs}.txt", kernel()));
    let mut extra = Vec::new();
    let b = baseline.to_string_lossy().into_owned();
    if baseline.exists() {
        extra = vec!["--baseline", &b];
    } else {
        eprintln!("no baseline {b} for this kernel: every case must pass");
    }
    let mut child = start(base.path(), fs, &extra);
    let pid = child.id();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let status = child.wait().unwrap();
    reap_orphans();
    let mut wrong = Vec::new();
    if !status.success() {
        let err = log(base.path(), fs);
        let news: Vec<&str> = out
            .lines()
            .chain(err.lines())
            .filter(|l| l.contains("new failure") || l.starts_with("mmapconf:"))
            .collect();
        wrong.push(format!("{fs}: {status}: {news:?}"));
    }
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(base.path().join(format!("r-{fs}.json"))).unwrap_or_default(),
    )
    .unwrap_or_default();
    let env = &report["environment"];
    if env["fs_type"] != fs_type || env["target"] != fs {
        wrong.push(format!(
            "{fs}: the report says fs_type {} target {}, not {fs_type} {fs}",
            env["fs_type"], env["target"]
        ));
    }
    let held = held_by(pid, base.path());
    if !held.is_empty() {
        wrong.push(format!("{fs}: a run that ended left {held:?}"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

/// A run interrupted after `cases` case lines: by SIGINT (it must give
/// everything back itself) or SIGKILL (then `mmapconf cleanup` must).
fn interrupted_run(fs: &str, sig: nix::sys::signal::Signal, cases: usize) -> Result<(), String> {
    let base = tempfile::tempdir().unwrap();
    let mut child = start(base.path(), fs, &[]);
    let pid = child.id();
    let stdout = after_cases(&mut child, cases);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    // Keep reading, so that its lines never block it.
    let drain = std::thread::spawn(move || {
        let _ = std::io::copy(&mut { stdout }, &mut std::io::sink());
    });
    let status: ExitStatus = child.wait().unwrap();
    let _ = drain.join();
    reap_orphans();
    let mut cleaned = String::new();
    if sig == nix::sys::signal::Signal::SIGKILL {
        let out = Command::new(bin())
            .arg("cleanup")
            .arg(base.path())
            .output()
            .unwrap();
        cleaned = String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; ");
        eprintln!("{fs}: cleanup after SIGKILL: {cleaned}");
    }
    let held = held_by(pid, base.path());
    let ended_right = {
        use std::os::unix::process::ExitStatusExt;
        // After 40 of 369 cases the run is still going: it must end by the signal.
        status.code() == Some(128 + sig as i32) || status.signal() == Some(sig as i32)
    };
    if held.is_empty() && ended_right {
        Ok(())
    } else {
        Err(format!(
            "{fs}, {sig} after {cases} cases: exited {status}, left {held:?} (cleanup: {cleaned})\n  stderr: {}",
            log(base.path(), fs).lines().rev().take(3).collect::<Vec<_>>().join(" | ")
        ))
    }
}

#[test]
fn fuse_targets_pass_with_their_baselines_and_leave_nothing() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    // SAFETY: prctl with integer arguments: what the runs leave comes to us.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let fs_types = [("fuse-default", "fuse.mmapconf"), ("ntfs-3g", "fuseblk")];
    let mut failures = Vec::new();
    for (fs, fs_type) in fs_types {
        assert!(TARGETS.contains(&fs));
        if let Err(e) = whole_run(fs, fs_type) {
            failures.push(e);
        }
        for (sig, cases) in [
            (nix::sys::signal::Signal::SIGINT, 40),
            (nix::sys::signal::Signal::SIGKILL, 60),
        ] {
            if let Err(e) = interrupted_run(fs, sig, cases) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
