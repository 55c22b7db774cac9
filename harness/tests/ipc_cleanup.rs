//! Shared memory a case makes outside its scratch directory (a POSIX shm
//! object in /dev/shm, a System V segment) is gone after the case, and after
//! a run killed with SIGKILL in the middle of such a case `mmapconf cleanup`
//! removes it.

mod common;

use common::{exe, held_by, segment_exists};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A case that makes both kinds and keeps them attached; with `hang`, it
/// then waits for a process that never exits (until its 60 s limit).
fn case(dir: &Path, hang: bool) -> std::path::PathBuf {
    let mut steps = vec![
        r#"{ "in": "p", "do": "shm_open", "name": "left", "flags": "O_RDWR|O_CREAT", "as": "fd" }"#,
        r#"{ "in": "p", "do": "shmget", "size": "1p", "as": "seg" }"#,
        r#"{ "in": "p", "do": "shmat", "seg": "seg", "as": "m" }"#,
        r#"{ "in": "p", "do": "store", "map": "m", "at": 0, "text": "x" }"#,
    ];
    if hang {
        steps.push(r#"{ "in": "q", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" }"#);
        steps.push(r#"{ "do": "wait", "proc": "q", "expect": { "exit": 0 } }"#);
    }
    let text = format!(
        r#"{{ "title": "leaves shared memory", "refs": ["harness/tests/ipc_cleanup.rs"], "timeout": 60, "steps": [{}] }}"#,
        steps.join(",\n")
    );
    let path = dir.join(if hang { "hang.json" } else { "ends.json" });
    std::fs::write(&path, text).unwrap();
    path
}

/// The System V segments listed in a registry file of run `pid`.
fn registered_segments(pid: u32) -> Vec<i32> {
    let prefix = format!("mmapconf-sysv-{pid}-");
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)?.rsplit('-').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn a_case_that_ends_removes_its_shared_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = case(tmp.path(), false);
    let child = exe()
        .args(["run", "--no-health", "--dir"])
        .arg(tmp.path())
        .arg("--report")
        .arg(tmp.path().join("r.json"))
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let report = std::fs::read_to_string(tmp.path().join("r.json")).unwrap();
    assert!(report.contains("\"pass\""), "{report}");
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!("mmapconf-shm-{pid}-"))
                || n.starts_with(&format!("mmapconf-sysv-{pid}-"))
        })
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    assert!(
        held_by(pid, tmp.path()).is_empty(),
        "{:?}",
        held_by(pid, tmp.path())
    );
}

#[test]
fn after_sigkill_cleanup_removes_the_shm_object_and_the_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let file = case(tmp.path(), true);
    let mut child = exe()
        .args(["run", "--no-health", "--dir"])
        .arg(tmp.path())
        .arg("--report")
        .arg(tmp.path().join("r.json"))
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Polls for a state (both objects made), not for an order of processes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let object = |p: u32| {
        std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("mmapconf-shm-{p}-")) && n.ends_with("-left")
            })
    };
    while !object(pid) || registered_segments(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the case did not make its objects in 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let segments = registered_segments(pid);
    assert!(object(pid), "the object was made and nobody removed it yet");
    assert!(
        segments.iter().all(|id| segment_exists(*id)),
        "the segment was made and nobody removed it yet"
    );
    let out = exe().arg("cleanup").arg(tmp.path()).output().unwrap();
    let said = common::text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!object(pid), "cleanup left the shm object: {said}");
    assert!(
        registered_segments(pid).is_empty(),
        "cleanup left the registry file: {said}"
    );
    for id in segments {
        assert!(!segment_exists(id), "cleanup left segment {id}: {said}");
        assert!(said.contains(&format!("segment {id}")), "{said}");
    }
    assert!(
        held_by(pid, tmp.path()).is_empty(),
        "{:?}",
        held_by(pid, tmp.path())
    );
}
