//! Helpers the harness's integration tests share: the binary, the
//! repository, a command's whole output, and the processes of a run.
#![allow(dead_code)] // each test crate uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmapconf"))
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The living (not zombie) processes running the harness binary that
/// descend from `root`: its fork server and the workers of its cases.
pub fn harness_descendants(root: u32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((ppid, state)) = ppid_and_state(pid) {
            if state != 'Z' {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root as i32];
    let mut grew = true;
    while grew {
        grew = false;
        for &(pid, ppid) in &parent_of {
            if found.contains(&ppid) && !found.contains(&pid) {
                found.push(pid);
                grew = true;
            }
        }
    }
    found.retain(|&p| p != root as i32 && runs_the_harness(p));
    found
}

pub fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((rest.next()?.parse().ok()?, state))
}

pub fn runs_the_harness(pid: i32) -> bool {
    let ours = std::fs::canonicalize(env!("CARGO_BIN_EXE_mmapconf")).unwrap();
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == ours)
}

/// Which of `pids` still run the harness (not zombies).
pub fn still_running(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|&p| ppid_and_state(p).is_some_and(|(_, s)| s != 'Z') && runs_the_harness(p))
        .collect()
}
