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

/// The fields of /proc/PID/stat after the command name, from the state
/// (field 3) on: field N is at index N - 3.
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let fields = stat_fields(pid)?;
    let state = fields.first()?.chars().next()?;
    Some((fields.get(1)?.parse().ok()?, state))
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

/// Whether a name of ours (`mmapconf-<kind>-<pid>-...`) belongs to run `pid`.
pub fn names_run(name: &str, pid: u32) -> bool {
    name.strip_prefix("mmapconf-")
        .and_then(|rest| rest.split(['-', '.']).nth(1))
        .is_some_and(|p| p == pid.to_string())
}

/// What run `pid` (with `--dir base`) still holds: files and directories
/// of its name (images, backing and source directories, mount points),
/// loop devices backed by them, mounts, and processes whose arguments
/// name one of them (FUSE servers).
pub fn held_by(pid: u32, base: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [Path::new("/dev/shm"), &std::env::temp_dir(), base] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if names_run(&name, pid) {
                found.push(format!("file {}", e.path().display()));
            }
        }
    }
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(back) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let file = back.trim_end().trim_end_matches(" (deleted)").to_string();
        let name = Path::new(&file).file_name().unwrap_or_default();
        if names_run(&name.to_string_lossy(), pid) || Path::new(&file).starts_with(base) {
            found.push(format!("loop device {} on {file}", e.path().display()));
        }
    }
    let b = base.to_string_lossy().into_owned();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let Some(at) = line.split(' ').nth(4) else {
            continue;
        };
        let name = Path::new(at).file_name().unwrap_or_default();
        if at.starts_with(&b) || names_run(&name.to_string_lossy(), pid) {
            found.push(format!("mount {at}"));
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let args = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let names_it = args.split(|c| *c == 0).any(|a| {
            let a = String::from_utf8_lossy(a);
            Path::new(a.as_ref()).ancestors().any(|x| {
                x.file_name()
                    .is_some_and(|n| names_run(&n.to_string_lossy(), pid))
            })
        });
        if names_it {
            found.push(format!(
                "process {p}: {}",
                String::from_utf8_lossy(&args).replace('\0', " ")
            ));
        }
    }
    found
}

/// Two string fields of each object in a JSON array, as a sorted map
/// (a report's `id` → `status`, kirk's `test_fqn` → `status`).
pub fn field_pairs(
    items: &serde_json::Value,
    key: &str,
    value: &str,
) -> std::collections::BTreeMap<String, String> {
    items
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap_or_default().to_string();
            (s(key), s(value))
        })
        .collect()
}

/// Whether System V shared memory segment `id` exists.
pub fn segment_exists(id: i32) -> bool {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
}
