//! What is alive right now: the process groups of running cases and the
//! scratch roots of running runs, so an interrupted run can remove them.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Mutex;

struct Live {
    groups: Vec<Group>,
    next_group: u64,
    roots: Vec<PathBuf>,
    filesystems: Vec<FsResources>,
}

/// A case's process group: a fresh worker and what it forks.
struct Group {
    /// Names this group in the registry: its pgid may come back for
    /// another group once the leader is reaped and the group is empty.
    id: GroupId,
    pgid: i32,
    /// Once the leader is reaped, the pgid is not ours to signal: it may
    /// name another group by then. Members are then reached by pidfd.
    leader_reaped: bool,
    /// Pidfds (copies) of the processes forked in this group.
    members: Vec<OwnedFd>,
}

/// A registered process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupId(u64);

/// What a scratch filesystem holds: mounts (innermost first), a loop device, an image.
#[derive(Debug, Clone, Default)]
pub struct FsResources {
    pub mounts: Vec<PathBuf>,
    pub loop_dev: Option<String>,
    pub image: Option<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    groups: Vec::new(),
    next_group: 0,
    roots: Vec::new(),
    filesystems: Vec::new(),
});

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers the group a fresh worker `pgid` leads.
pub fn add_group(pgid: i32) -> GroupId {
    let mut l = live();
    let id = GroupId(l.next_group);
    l.next_group += 1;
    l.groups.push(Group {
        id,
        pgid,
        leader_reaped: false,
        members: Vec::new(),
    });
    id
}

/// Registers a process forked in group `id`, by a copy of its pidfd.
pub fn add_member(id: GroupId, pidfd: &OwnedFd) {
    if let Ok(copy) = pidfd.try_clone() {
        if let Some(g) = live().groups.iter_mut().find(|g| g.id == id) {
            g.members.push(copy);
        }
    }
}

/// Records that the leader of group `id` was reaped.
pub fn leader_reaped(id: GroupId) {
    if let Some(g) = live().groups.iter_mut().find(|g| g.id == id) {
        g.leader_reaped = true;
    }
}

pub fn remove_group(id: GroupId) {
    live().groups.retain(|g| g.id != id);
}

pub fn add_root(path: PathBuf) {
    live().roots.push(path);
}

pub fn remove_root(path: &std::path::Path) {
    live().roots.retain(|r| r != path);
}

pub fn add_fs(r: FsResources) {
    live().filesystems.push(r);
}

/// Forgets the filesystem whose first mount is `mount_point`.
pub fn remove_fs(mount_point: &std::path::Path) {
    live()
        .filesystems
        .retain(|f| f.mounts.first().map(PathBuf::as_path) != Some(mount_point));
}

/// Unmounts, detaches and removes what a scratch filesystem held.
pub fn release_fs(r: &FsResources) {
    for m in &r.mounts {
        let _ = crate::target::fs::detach_mount(m);
        let _ = std::fs::remove_dir(m);
    }
    if let Some(dev) = &r.loop_dev {
        let _ = std::process::Command::new("losetup")
            .args(["-d", dev])
            .output();
    }
    if let Some(img) = &r.image {
        let _ = std::fs::remove_file(img);
    }
}

/// Between fork and exec a child holds a copy of every descriptor of the
/// harness, including ones other threads opened on a scratch filesystem a
/// moment ago; an unmount then fails with EBUSY. The harness forks only
/// once, to start the fork server (which starts everything else); that
/// fork takes this gate shared, unmounts exclusively, so the two never
/// overlap.
static FORK_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held while the harness forks.
pub fn forking() -> std::sync::RwLockReadGuard<'static, ()> {
    FORK_GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held while unmounting a scratch filesystem.
pub fn unmounting() -> std::sync::RwLockWriteGuard<'static, ()> {
    FORK_GATE.write().unwrap_or_else(|e| e.into_inner())
}

static INTERRUPTED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Records that the run was interrupted by `sig`; the interrupt handler
/// owns the exit from then on.
pub fn set_interrupted(sig: i32) {
    INTERRUPTED.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// Whether an interrupt is being handled.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) != 0
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

/// Reaps our children in group `pgid` until its leader `leader` (a zombie
/// until then, which keeps the group id from being reused) is reaped.
pub fn reap_group_until(pgid: i32, leader: i32) {
    loop {
        // SAFETY: waitpid on a process group whose leader is our unreaped child.
        let r = unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::__WALL) };
        if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        if r <= 0 || r == leader {
            break;
        }
    }
}

/// Kills every live case's processes, removes every live scratch root and
/// tears down every scratch filesystem.
/// Called on SIGINT/SIGTERM before the harness exits.
pub fn kill_everything() {
    // First, so no new worker starts while the groups are killed.
    super::fork_server::stop();
    let (groups, roots, filesystems) = {
        let mut l = live();
        (
            std::mem::take(&mut l.groups),
            l.roots.clone(),
            l.filesystems.clone(),
        )
    };
    for g in &groups {
        if !g.leader_reaped {
            // SAFETY: signals only groups our cases created, whose leader
            // (alive or a zombie) still holds the group id.
            unsafe { libc::killpg(g.pgid, libc::SIGKILL) };
        }
        for m in &g.members {
            let _ = super::pidfd::send_signal(m, libc::SIGKILL);
        }
    }
    for g in &groups {
        reap_group(g.pgid);
    }
    for r in &roots {
        let _ = std::fs::remove_dir_all(r);
    }
    for f in &filesystems {
        release_fs(f);
    }
    // Last: the pool's pages come free once the processes and mounts holding them are gone.
    crate::target::hugetlb::release_all();
}
