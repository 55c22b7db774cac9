//! Every way a run ends gives back what it took: a run that ends, one
//! stopped by SIGINT, SIGTERM or SIGHUP, and one that panics (its standard
//! output closed, as `mmapconf run | head` does) leave no image, crash copy,
//! loop device, mount or scratch directory, whatever step they were on; and
//! what a SIGKILLed one leaves, `mmapconf cleanup` removes.
//!
//! The runs are of every crash case on every filesystem the harness can
//! make on a loop device, so an interruption often falls inside a `crash`
//! step: a shutdown and remount (ext4, xfs) or an image copy attached to a
//! new loop device (btrfs, ext2). The moments are spread over the length
//! of one uninterrupted run, deterministically: the same points every time.
//! `MMAPCONF_EXIT_POINTS` sets how many (default 20, four of each way); `MMAPCONF_EXIT_BIN`
//! runs another build of the harness (to show the test fails on one).

mod common;

use common::held_by;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn harness_bin() -> PathBuf {
    std::env::var_os("MMAPCONF_EXIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mmapconf")))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The filesystems on loop devices that this machine can make, or why none.
fn owned_filesystems() -> Result<Vec<&'static str>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("making scratch filesystems needs root".into());
    }
    let known = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let has = |tool: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/sbin".into(), "/usr/sbin".into()])
            .any(|d| d.join(tool).is_file())
    };
    let found: Vec<&str> = ["ext4", "xfs", "btrfs", "ext2"]
        .into_iter()
        .filter(|fs| {
            known
                .lines()
                .any(|l| l.split_whitespace().last() == Some(fs))
        })
        .filter(|fs| has(&format!("mkfs.{fs}")))
        .collect();
    if found.is_empty() || !has("losetup") {
        return Err("no mkfs for ext4, xfs, btrfs or ext2, or no losetup".into());
    }
    Ok(found)
}

/// Every case with a `crash` step.
fn crash_cases() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "json")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains("\"crash\""))
            {
                out.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo("cases"), &mut found);
    found.sort();
    assert!(!found.is_empty(), "no crash case under cases/");
    found
}

/// How a run is ended early.
#[derive(Debug, Clone, Copy)]
enum End {
    Signal(nix::sys::signal::Signal),
    /// Its standard output closed: the next line it prints panics.
    ClosedStdout,
    /// SIGKILL: nothing is given back; `mmapconf cleanup` must find it all.
    Killed,
}

impl End {
    const ALL: [End; 5] = [
        End::Signal(nix::sys::signal::Signal::SIGINT),
        End::Signal(nix::sys::signal::Signal::SIGTERM),
        End::Signal(nix::sys::signal::Signal::SIGHUP),
        End::ClosedStdout,
        End::Killed,
    ];

    /// Whether `status` is that of a run ended this way (or of one that
    /// ended on its own before).
    fn ended(self, status: ExitStatus) -> bool {
        use std::os::unix::process::ExitStatusExt;
        status.code() == Some(0)
            || match self {
                End::Signal(s) => status.code() == Some(128 + s as i32),
                End::ClosedStdout => status.code() == Some(128 + libc::SIGPIPE),
                End::Killed => status.signal() == Some(libc::SIGKILL),
            }
    }
}

fn start(base: &Path, fs: &[&str], cases: &[PathBuf], stdout: Stdio) -> Child {
    let log = std::fs::File::create(base.join("stderr.log")).unwrap();
    Command::new(harness_bin())
        // Every case line on standard output, so a closed one is noticed soon.
        .args(["run", "--verbose", "--timeout", "60", "--fs", &fs.join(",")])
        .arg("--dir")
        .arg(base)
        .arg("--report")
        .arg(base.join("r.json"))
        .args(cases)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits for `child`, at most a minute: a harness that does not end is a failure too.
fn finish(child: &mut Child) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("did not exit within 60 s of the interruption".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most 30 s) until every process the run left has ended: this
/// test is their reaper (PR_SET_CHILD_SUBREAPER), so they come back to it.
/// After SIGKILL they die of PR_SET_PDEATHSIG on their own time, and one
/// still alive may keep a mount busy or be about to attach a loop device.
fn reap_orphans() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: waitpid on our own children.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) };
        if r < 0 {
            return Ok(());
        }
        if r == 0 {
            if Instant::now() > deadline {
                return Err("processes of the run were alive 30 s after it".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Removes what a failed point left, so the next points start clean.
fn clean_up_after(base: &Path) -> String {
    let out = Command::new(harness_bin())
        .arg("cleanup")
        .arg(base)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_run_that_ends_and_one_ended_by_a_signal_or_a_panic_leave_nothing() {
    let fs = match owned_filesystems() {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let cases = crash_cases();
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let points: usize = std::env::var("MMAPCONF_EXIT_POINTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
        .max(1);

    // A run that ends on its own: it passes and leaves nothing; its length
    // is the span over which the others are interrupted.
    let base = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let mut child = start(base.path(), &fs, &cases, Stdio::null());
    let pid = child.id();
    let status = finish(&mut child).unwrap();
    let span = began.elapsed();
    let log = std::fs::read_to_string(base.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "{status}\n{log}");
    let held = held_by(pid, base.path());
    assert!(held.is_empty(), "a run that ended left {held:?}");

    let mut failures = Vec::new();
    for i in 0..points {
        let end = End::ALL[i % End::ALL.len()];
        // From 50 ms into the run to 90% of its length, evenly.
        let first = Duration::from_millis(50);
        let last = span.mul_f64(0.9).max(first);
        let at = first + (last - first).mul_f64(i as f64 / (points.max(2) - 1) as f64);
        let base = tempfile::tempdir().unwrap();
        let mut child = start(
            base.path(),
            &fs,
            &cases,
            match end {
                End::ClosedStdout => Stdio::piped(),
                _ => Stdio::null(),
            },
        );
        let pid = child.id();
        let stdout = child.stdout.take();
        // Not ordering the harness's processes: only choosing the moment.
        std::thread::sleep(at);
        match end {
            End::Signal(sig) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
            }
            End::ClosedStdout => drop(stdout),
            End::Killed => {
                let _ = child.kill();
            }
        }
        let ended = finish(&mut child);
        let log = std::fs::read_to_string(base.path().join("stderr.log")).unwrap_or_default();
        let mut wrong = Vec::new();
        match &ended {
            Ok(s) if end.ended(*s) => {}
            Ok(s) => wrong.push(format!("exited with {s}")),
            Err(e) => wrong.push(e.clone()),
        }
        if let Err(e) = reap_orphans() {
            wrong.push(e);
        }
        if let End::Killed = end {
            let removed = clean_up_after(base.path());
            eprintln!(
                "SIGKILL at {at:?}: cleanup: {}",
                removed.trim().replace('\n', "; ")
            );
            wrong.extend(held_by(pid, base.path()).into_iter().map(|h| {
                format!(
                    "{h} (after cleanup: {})",
                    removed.trim().replace('\n', "; ")
                )
            }));
        } else {
            wrong.extend(held_by(pid, base.path()));
        }
        if !wrong.is_empty() {
            let removed = clean_up_after(base.path());
            failures.push(format!(
                "{end:?} at {at:?}: {wrong:?}\n  its stderr ended: {}\n  cleanup: {}",
                log.lines().rev().take(3).collect::<Vec<_>>().join(" | "),
                removed.trim().replace('\n', "; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {points} interrupted runs (over {span:?}) did not give everything back \
         (or cleanup did not find it after SIGKILL):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
