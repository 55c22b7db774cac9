//! `mmapconf cleanup`: removes what a run that was SIGKILLed left behind.
//! Its resources carry our names (`mmapconf-run-`, `mmapconf-mnt-`,
//! `mmapconf-ovl-`, `mmapconf-img-`) and the pid of the run that made them;
//! only those whose run is no longer alive are touched. A crash copy
//! (`mmapconf-img-<pid>-<target>.crash.img`) is one of its images.

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

/// The command line of `pid`, split into arguments.
fn args_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Workers (and fork servers) whose harness is gone. A worker is a copy of
/// the fork server, so it carries the server's command line; its parent is
/// the harness, or another worker whose parent is. A run that died leaves
/// them to init (pid 1), which is how they are told apart from the workers
/// of a run still going. Each comes with a pidfd opened before it was
/// looked at, so a signal through it cannot reach a process that took its
/// pid after the look.
fn orphaned_workers() -> Vec<(i32, std::os::fd::OwnedFd)> {
    let is_worker = |pid: i32| args_of(pid).get(1).map(String::as_str) == Some("__fork-server");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(pidfd) = crate::exec::pidfd::open(pid) else {
            continue;
        };
        if !is_worker(pid) {
            continue;
        }
        let mut top = pid;
        let mut parent = parent_of(pid);
        while let Some(p) = parent.filter(|&p| p > 1 && is_worker(p)) {
            top = p;
            parent = parent_of(p);
        }
        // Unless the harness itself is init, as in a container or a VM.
        let exe = |p: i32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
        if parent.is_some_and(|p| p <= 1 && exe(1) != exe(top)) {
            found.push((pid, pidfd));
        }
    }
    found
}

/// What was removed, one line each.
pub fn cleanup(bases: &[PathBuf]) -> Vec<String> {
    let mut done = Vec::new();
    // 1. Workers whose run is gone, dead before the mounts they may keep
    // busy are looked at (else an unmount is lazy, and the loop device
    // under it stays until they die).
    let mut dying = Vec::new();
    for (pid, pidfd) in orphaned_workers() {
        if crate::exec::pidfd::send_signal(&pidfd, libc::SIGKILL).is_ok() {
            done.push(format!("killed worker {pid}"));
            dying.push(pidfd);
        }
    }
    crate::exec::live::wait_dead(
        &dying,
        std::time::Instant::now() + std::time::Duration::from_secs(10),
    );
    done.extend(super::fuse::orphans(bases));
    done.extend(super::fuse::targets::orphan_servers(orphaned));
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
    // 3. Loop devices backed by our images, removed ones (" (deleted)")
    // and crash copies included. From sysfs: no losetup needed, and a path
    // with spaces stays whole.
    for (dev, back) in super::fs::loop_devices() {
        if orphaned(&back) && super::fs::detach_loop_if(&dev, orphaned) {
            done.push(format!("detached /dev/{dev} ({})", back.display()));
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
    done.extend(super::hugetlb::cleanup());
    // 5. Shared memory outside the scratch directory (POSIX names, System V segments).
    done.extend(super::ipc::orphans());
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
