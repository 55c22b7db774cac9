//! What is alive right now: the process groups of running cases and the
//! scratch roots of running runs, so an interrupted run can remove them.

use std::path::PathBuf;
use std::sync::Mutex;

struct Live {
    groups: Vec<i32>,
    roots: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    groups: Vec::new(),
    roots: Vec::new(),
});

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn add_group(pgid: i32) {
    live().groups.push(pgid);
}

pub fn remove_group(pgid: i32) {
    live().groups.retain(|g| *g != pgid);
}

pub fn add_root(path: PathBuf) {
    live().roots.push(path);
}

pub fn remove_root(path: &std::path::Path) {
    live().roots.retain(|r| r != path);
}

/// Makes this process the reaper of orphaned descendants, so workers forked
/// by a worker that was killed come back to us to be reaped, not to init.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
}

/// Reaps every process of a (killed) group that is our child.
pub fn reap_group(pgid: i32) {
    loop {
        // SAFETY: waitpid on a process group we created.
        let r = unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::__WALL) };
        if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        if r <= 0 {
            break;
        }
    }
}

/// Kills every live case's processes and removes every live scratch root.
/// Called on SIGINT/SIGTERM before the harness exits.
pub fn kill_everything() {
    let (groups, roots) = {
        let l = live();
        (l.groups.clone(), l.roots.clone())
    };
    for g in &groups {
        // SAFETY: signals only groups our cases created.
        unsafe { libc::killpg(*g, libc::SIGKILL) };
    }
    for g in &groups {
        reap_group(*g);
    }
    for r in &roots {
        let _ = std::fs::remove_dir_all(r);
    }
}
