//! The harness's promises, checked through its command line: clear errors
//! for bad input, a time limit that kills, a diff when bytes differ,
//! cleanup after interruption, and a schema that matches the code.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits (bounded) until the run `child` has at least `n` processes of
/// its own: the fork server and the workers of its case.
fn wait_for_processes(child: &std::process::Child, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = harness_descendants(child.id());
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "workers never appeared: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn leftovers(base: &Path) -> Vec<String> {
    std::fs::read_dir(base)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn validate_reports_every_problem_with_its_position() {
    let file = fixture("invalid.json");
    let out = exe().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let prefix = file.display().to_string();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{prefix}:7:24: steps[1]: unknown operation `mmapp`"
        ))),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{prefix}:8:5: steps[2]: missing field `len`"))),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{prefix}:9:32:")) && l.contains("`..`")),
        "{stdout}"
    );
    assert_eq!(lines.len(), 3, "one line per problem: {stdout}");
}

#[test]
fn validate_accepts_the_corpus() {
    let out = exe().arg("validate").arg(repo("cases")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_case_that_blocks_is_killed_at_its_limit_and_leaves_nothing() {
    let base = tempfile::tempdir().unwrap();
    let report = base.path().join("report.json");
    let scratch = base.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let started = Instant::now();
    let child = exe()
        .args(["run", "--jobs", "1", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(&scratch)
        .arg(fixture("blocks-forever.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The fork server, the parent, the child and the grandchild.
    let processes = wait_for_processes(&child, 4);
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let case = &json["cases"][0];
    assert_eq!(case["status"], "error");
    assert_eq!(case["failed_step"], 4, "{case}");
    assert!(
        case["reason"].as_str().unwrap().contains("timed out"),
        "{case}"
    );
    assert_eq!(still_running(&processes), Vec::<i32>::new());
    assert!(leftovers(&scratch).is_empty(), "{:?}", leftovers(&scratch));
}

#[test]
fn a_wrong_expected_byte_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(repo("cases/seed/writer-reader.json")).unwrap();
    let mutated = original.replacen(
        "\"expect\": { \"text\": \"Hello from writer!\" }",
        "\"expect\": { \"text\": \"Hello from wrlter!\" }",
        1,
    );
    assert_ne!(original, mutated, "the seed case changed; update this test");
    let file = dir.path().join("mutant.json");
    std::fs::write(&file, mutated).unwrap();
    let out = exe()
        .arg("run")
        .arg("--report")
        .arg(dir.path().join("r.json"))
        .arg(&file)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL"), "{t}");
    assert!(
        t.contains("bytes differ at offset 13: expected 0x6c l, observed 0x69 i"),
        "{t}"
    );
    assert!(t.contains("^^"), "{t}");
}

#[test]
fn an_interrupted_run_kills_its_workers_and_removes_its_scratch() {
    let base = tempfile::tempdir().unwrap();
    let scratch = base.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut child = exe()
        .args(["run", "--timeout", "60", "--report"])
        .arg(base.path().join("r.json"))
        .arg("--dir")
        .arg(&scratch)
        .arg(fixture("blocks-forever.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the case's processes exist, interrupt.
    let processes = wait_for_processes(&child, 4);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(still_running(&processes), Vec::<i32>::new());
    assert!(leftovers(&scratch).is_empty(), "{:?}", leftovers(&scratch));
}

#[test]
fn the_checked_in_case_schema_matches_the_code() {
    let checked_in = std::fs::read_to_string(repo("specs/case.schema.json")).unwrap_or_default();
    let generated = mmapconf::cli::case_schema();
    assert!(
        checked_in.trim_end() == generated.trim_end(),
        "specs/case.schema.json is stale: run `cargo run -q -- schema > specs/case.schema.json`"
    );
}

#[test]
fn explain_draws_one_column_per_process() {
    let out = exe()
        .args(["explain", "seed/writer-reader"])
        .current_dir(repo(""))
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    let header = t.lines().find(|l| l.contains("writer")).unwrap();
    assert!(header.contains("reader"), "{t}");
    assert!(t.contains("⇒ \"Hello from writer!\""), "{t}");
}

#[test]
fn list_shows_ids_titles_and_requirements() {
    let out = exe().arg("list").arg(repo("cases")).output().unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        t.lines().any(|l| l.starts_with("seed/writer-reader\t")),
        "{t}"
    );
}

/// What the run `pid` still has attached: mounts under `base`, loop
/// devices backed by its images (in `base` or /dev/shm), and its images.
fn attached(base: &Path, pid: u32) -> Vec<String> {
    let b = base.to_string_lossy().into_owned();
    let image = format!("mmapconf-img-{pid}-");
    let mut found: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&b))
        .map(str::to_string)
        .collect();
    let loops = Command::new("losetup")
        .args(["--list", "--noheadings"])
        .output();
    if let Ok(o) = loops {
        found.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains(&b) || l.contains(&image))
                .map(str::to_string),
        );
    }
    found.extend(
        leftovers(Path::new("/dev/shm"))
            .into_iter()
            .filter(|n| n.starts_with(&image)),
    );
    found
}

/// Starts a run of the blocking fixture on a scratch ext4 under `base` and
/// returns it once its processes exist, with their pids; None when this
/// machine cannot make ext4.
fn blocked_fs_run(base: &Path) -> Option<(std::process::Child, Vec<i32>)> {
    if !nix::unistd::geteuid().is_root() || Command::new("mkfs.ext4").arg("-V").output().is_err() {
        eprintln!("SKIPPED: needs root and mkfs.ext4");
        return None;
    }
    let child = exe()
        .args(["run", "--fs", "ext4", "--timeout", "60", "--report"])
        .arg(base.join("r.json"))
        .arg("--dir")
        .arg(base)
        .arg(fixture("blocks-forever.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let processes = wait_for_processes(&child, 4);
    Some((child, processes))
}

#[test]
fn an_interrupted_fs_run_leaves_no_mount_loop_device_or_image() {
    let base = tempfile::tempdir().unwrap();
    let Some((mut child, processes)) = blocked_fs_run(base.path()) else {
        return;
    };
    let pid = child.id();
    assert!(
        !attached(base.path(), pid).is_empty(),
        "the run made no filesystem"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert!(
        attached(base.path(), pid).is_empty(),
        "{:?}",
        attached(base.path(), pid)
    );
    assert_eq!(still_running(&processes), Vec::<i32>::new());
    let left: Vec<String> = leftovers(base.path())
        .into_iter()
        .filter(|n| n.starts_with("mmapconf-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn cleanup_removes_what_a_killed_run_left() {
    let base = tempfile::tempdir().unwrap();
    let Some((mut child, processes)) = blocked_fs_run(base.path()) else {
        return;
    };
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    // SIGKILL leaves everything: that is what cleanup is for.
    assert!(!attached(base.path(), pid).is_empty());
    let out = exe().arg("cleanup").arg(base.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        attached(base.path(), pid).is_empty(),
        "{:?}\n{}",
        attached(base.path(), pid),
        text(&out)
    );
    // SIGKILL gives no chance to clean up: the processes die of
    // PR_SET_PDEATHSIG, on their own time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !still_running(&processes).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", still_running(&processes));
        std::thread::sleep(Duration::from_millis(5));
    }
    let left: Vec<String> = leftovers(base.path())
        .into_iter()
        .filter(|n| n.starts_with("mmapconf-"))
        .collect();
    assert!(left.is_empty(), "{left:?}\n{}", text(&out));
}

#[test]
fn soak_runs_the_cases_as_often_as_asked_and_counts_changed_verdicts() {
    let o = exe()
        .args(["soak", "--runs", "3"])
        .arg(repo("cases/seed"))
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for n in 1..=3 {
        assert!(
            out.contains(&format!("run {n}/3:")),
            "run {n} missing: {out}"
        );
    }
    assert!(!out.contains("run 4/3"), "{out}");
    assert!(out.contains("x 3 runs on 1 target(s)"), "{out}");
    assert!(out.contains(": 0 changed verdicts"), "{out}");
    let none = exe()
        .args(["soak", "--runs", "0"])
        .arg(repo("cases/seed"))
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
}

#[test]
fn a_file_says_whether_its_zeros_are_a_hole_or_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("zeros.json");
    // Blocks are counted in 512-byte units: a hole owns none, two written
    // pages own at least two pages' worth.
    std::fs::write(
        &case,
        r#"{
  "title": "zeros", "refs": ["r"],
  "files": { "hole": { "size": "2p", "zeros": "hole" }, "full": { "size": "2p", "zeros": "allocated" } },
  "steps": [
    { "in": "p", "do": "open", "path": "hole", "flags": "O_RDONLY", "as": "h" },
    { "in": "p", "do": "fstat", "fd": "h", "expect": { "stat": { "size": "2p", "blocks": [0, 0] } } },
    { "in": "p", "do": "open", "path": "full", "flags": "O_RDONLY", "as": "f" },
    { "in": "p", "do": "fstat", "fd": "f", "expect": { "stat": { "size": "2p", "blocks": [16, 1000000] } } },
    { "do": "check_file", "path": "full", "at": 0, "len": "2p", "expect": { "fill": 0 } }
  ]
}"#,
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let o = exe()
        .args(["run", "-v", "--report"])
        .arg(&report)
        .arg(&case)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(r["environment"]["capabilities"]["sparse_files"]["present"].is_boolean());
    assert_eq!(r["cases"][0]["status"], "pass", "{}", text(&o));

    std::fs::write(
        &case,
        r#"{ "title": "t", "refs": ["r"], "files": { "f": { "zeros": "hole" } },
  "steps": [ { "in": "p", "do": "exit", "code": 0 } ] }"#,
    )
    .unwrap();
    let o = exe().arg("validate").arg(&case).output().unwrap();
    assert!(
        text(&o).contains(
            "zeros.json:1:50: files.f.zeros: `zeros` says what the zeros up to `size` are"
        ),
        "{}",
        text(&o)
    );
}

/// A tmpfs mounted read-only for one test, unmounted when dropped.
struct ReadOnlyMount(tempfile::TempDir);

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_directory_the_suite_cannot_use_gets_one_diagnosis() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to mount a read-only tmpfs");
        return;
    }
    let ro = ReadOnlyMount(tempfile::tempdir().unwrap());
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "mmapconf-test-ro"])
        .arg(ro.0.path())
        .status()
        .unwrap();
    assert!(mounted.success());
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("r.json");
    let o = exe()
        .args(["run", "--dir"])
        .arg(ro.0.path())
        .arg("--report")
        .arg(&report)
        .arg(repo("cases/seed"))
        .output()
        .unwrap();
    let all = text(&o);
    assert_eq!(o.status.code(), Some(2), "{all}");
    assert_eq!(
        all.matches("the target cannot be used").count(),
        1,
        "one diagnosis: {all}"
    );
    assert!(all.contains("Read-only file system"), "{all}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let cases = r["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        assert_eq!(c["status"], "skip", "{c}");
        assert!(c["reason"].as_str().unwrap().contains("cannot be used"));
    }
}
