//! `mmapconf cleanup`: removes what a run that was SIGKILLed left behind.
//! Its resources carry our names (`mmapconf-run-`, `mmapconf-mnt-`,
//! `mmapconf-ovl-`, `mmapconf-img-`) and the pid of the run that made them;
//! only those whose run is no longer alive are touched.

use std::path::{Path, PathBuf};

/// The pid in a name such as `mmapconf-mnt-1234-ext4`.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = [
        "mmapconf-run-",
        "mmapconf-mnt-",
        "mmapconf-ovl-",
        "mmapconf-img-",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))?;
    rest.split(['-', '.']).next()?.parse().ok()
}

fn alive(pid: i32) -> bool {
    pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists()
}

fn orphaned(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(owner_pid)
        .is_some_and(|pid| !alive(pid))
}

/// What was removed, one line each.
pub fn cleanup(bases: &[PathBuf]) -> Vec<String> {
    let mut done = Vec::new();
    // 1. Workers whose run is gone (their argv names a mmapconf-run- dir).
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) != Some("__worker") {
            continue;
        }
        let run_dir = args.get(2).and_then(|d| {
            Path::new(d)
                .ancestors()
                .find(|a| {
                    a.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("mmapconf-run-"))
                })
                .map(Path::to_path_buf)
        });
        if run_dir.is_some_and(|d| orphaned(&d)) {
            // SAFETY: kills a leftover worker of a dead run.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            done.push(format!("killed worker {pid}"));
        }
    }
    // 2. Mounts, innermost (longest) first.
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(super::parse_mountinfo_line)
        .map(|m| PathBuf::from(m.mount_point))
        .filter(|p| p.ancestors().any(orphaned))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    mounts.dedup();
    for m in mounts {
        if super::fs::detach_mount(&m).is_ok() {
            done.push(format!("unmounted {}", m.display()));
        }
    }
    // 3. Loop devices backed by our images.
    if let Ok(out) = std::process::Command::new("losetup")
        .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.split_whitespace();
            let (Some(dev), Some(back)) = (parts.next(), parts.next()) else {
                continue;
            };
            if orphaned(Path::new(back)) {
                let _ = std::process::Command::new("losetup")
                    .args(["-d", dev])
                    .output();
                done.push(format!("detached {dev} ({back})"));
            }
        }
    }
    // 4. Scratch directories, images and mount points.
    for base in bases {
        for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let path = entry.path();
            if orphaned(&path) {
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if removed.is_ok() {
                    done.push(format!("removed {}", path.display()));
                }
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_run() {
        assert_eq!(owner_pid("mmapconf-mnt-1234-ext4"), Some(1234));
        assert_eq!(owner_pid("mmapconf-img-77-ext4-1k.img"), Some(77));
        assert_eq!(owner_pid("mmapconf-run-99-17ab"), Some(99));
        assert_eq!(owner_pid("something-else-1"), None);
        assert!(!orphaned(Path::new(&format!(
            "/tmp/mmapconf-run-{}-x",
            std::process::id()
        ))));
    }
}
