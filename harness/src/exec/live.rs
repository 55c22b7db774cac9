//! What is alive right now: the process groups of running cases, the
//! scratch roots of running runs and what the scratch filesystems hold, so
//! that an interrupted run (SIGINT, SIGTERM, SIGHUP, a panic) can remove
//! them.
//!
//! Every name is registered *before* the thing is made, and teardown
//! removes whatever of it exists: a signal between the making and the
//! registering would otherwise leave it behind. Making is done inside a
//! [`creating`] section; once teardown has begun no section can start, and
//! teardown waits for those under way (their helper programs killed) before
//! it looks at the registry, so nothing is made after it has looked.

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

struct Live {
    groups: Vec<Group>,
    next_group: u64,
    roots: Vec<PathBuf>,
    filesystems: Vec<FsResources>,
    /// Teardown has begun: nothing new may be made.
    stopping: bool,
    /// Sections under way in which something is made ([`creating`]).
    creating: usize,
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

/// What a scratch filesystem holds or may be about to hold.
#[derive(Debug, Clone, Default)]
pub struct FsResources {
    /// Mount points, innermost first: unmounted, then removed.
    pub mounts: Vec<PathBuf>,
    /// Loop images (and the name of their crash copy): every loop device
    /// backed by one is detached, then they are removed. Loop devices are
    /// found by their backing file, not by name, so one attached a moment
    /// before a signal (whose name the harness has not read yet) goes too,
    /// and a device the harness detached and someone else took is left alone.
    pub images: Vec<PathBuf>,
    /// Directory trees removed whole (the staging tree of a read-only image).
    pub trees: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    groups: Vec::new(),
    next_group: 0,
    roots: Vec::new(),
    filesystems: Vec::new(),
    stopping: false,
    creating: 0,
});

/// Signalled when a [`creating`] section ends.
static CREATED: Condvar = Condvar::new();

thread_local! {
    /// How many [`creating`] sections this thread is in: a panic inside one
    /// tears down from that thread, which must not wait for itself.
    static OWN_SECTIONS: Cell<usize> = const { Cell::new(0) };
}

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

pub fn remove_root(path: &Path) {
    live().roots.retain(|r| r != path);
}

/// Records what the filesystem whose first mount is `r.mounts[0]` holds,
/// replacing what was recorded for it (in one step: teardown never sees it
/// missing).
pub fn set_fs(r: FsResources) {
    let mut l = live();
    let key = r.mounts.first().cloned();
    match l
        .filesystems
        .iter_mut()
        .find(|f| f.mounts.first() == key.as_ref())
    {
        Some(f) => *f = r,
        None => l.filesystems.push(r),
    }
}

/// Forgets the filesystem whose first mount is `mount_point`.
pub fn remove_fs(mount_point: &Path) {
    live()
        .filesystems
        .retain(|f| f.mounts.first().map(PathBuf::as_path) != Some(mount_point));
}

/// A section in which the harness makes something teardown must remove
/// (an image, a loop device, a mount, a scratch directory). Its names are
/// registered first; teardown waits for the section to end.
pub struct Creating(());

/// Enters a [`Creating`] section, or says why not: teardown has begun.
pub fn creating() -> Result<Creating, String> {
    let mut l = live();
    if l.stopping {
        return Err("the harness is stopping".to_string());
    }
    l.creating += 1;
    OWN_SECTIONS.with(|n| n.set(n.get() + 1));
    Ok(Creating(()))
}

impl Drop for Creating {
    fn drop(&mut self) {
        let mut l = live();
        l.creating = l.creating.saturating_sub(1);
        OWN_SECTIONS.with(|n| n.set(n.get().saturating_sub(1)));
        CREATED.notify_all();
    }
}

/// Whether teardown has begun.
pub fn stopping() -> bool {
    live().stopping
}

/// Unmounts, detaches and removes what a scratch filesystem held (what of
/// it exists).
pub fn release_fs(r: &FsResources) {
    for m in &r.mounts {
        let _ = crate::target::fs::detach_mount(m);
        crate::target::fs::remove_mount_point(m);
    }
    crate::target::fs::detach_loops_backed_by(&r.images);
    for img in &r.images {
        let _ = std::fs::remove_file(img);
    }
    for t in &r.trees {
        let _ = std::fs::remove_dir_all(t);
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
    // Children this process had before (a shell's background job that
    // `exec mmapconf` kept) are not the harness's to kill at teardown.
    let mut inherited = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    if !SUBREAPER.swap(true, std::sync::atomic::Ordering::SeqCst) {
        *inherited = living_children();
    }
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
/// tears down every scratch filesystem. Called on SIGINT, SIGTERM, SIGHUP
/// and panic, before the harness exits; the first caller does it, and a
/// later one (a panic on another thread meanwhile) waits for its exit.
pub fn kill_everything() {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    thread_local! {
        static TEARING_DOWN: Cell<bool> = const { Cell::new(false) };
    }
    if STARTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        if TEARING_DOWN.with(Cell::get) {
            // A panic in teardown itself: its hook exits.
            return;
        }
        // Teardown must not wait for the sections this thread will never leave.
        let own = OWN_SECTIONS.with(|n| n.replace(0));
        let mut l = live();
        l.creating = l.creating.saturating_sub(own);
        drop(l);
        CREATED.notify_all();
        loop {
            std::thread::park();
        }
    }
    TEARING_DOWN.with(|t| t.set(true));
    // First, so nothing new is made from now on.
    live().stopping = true;
    // So no new worker or program starts while the groups are killed.
    super::fork_server::stop();
    let groups = std::mem::take(&mut live().groups);
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
    // Helper programs under way (a `cp` of an image, a `losetup`, a `mount`)
    // and workers started a moment ago, not yet in a group above: dead
    // before anything is looked at, so what they did is done, and nothing
    // of theirs keeps a filesystem busy.
    if SUBREAPER.load(std::sync::atomic::Ordering::SeqCst) {
        kill_children(Instant::now() + Duration::from_secs(10));
    }
    // The sections under way end soon: their programs are dead and no new
    // one can start. (Bounded, should one hang: teardown goes on then.)
    let own = OWN_SECTIONS.with(Cell::get);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (roots, filesystems) = {
        let mut l = live();
        while l.creating > own && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            l = CREATED
                .wait_timeout(l, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        (l.roots.clone(), l.filesystems.clone())
    };
    for r in &roots {
        let _ = std::fs::remove_dir_all(r);
    }
    for f in &filesystems {
        release_fs(f);
    }
}

/// Set once this process made itself the reaper of its descendants: then
/// every child it has from then on is a worker or a program of the harness
/// (or an orphan of one).
static SUBREAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The children this process had when it became a subreaper.
static INHERITED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// This process's children that are not zombies.
fn living_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| parent_and_zombie(pid) == Some((me, false)))
        .collect()
}

/// The parent of `pid` and whether it is a zombie, from /proc.
fn parent_and_zombie(pid: i32) -> Option<(i32, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let zombie = rest.next()? == "Z";
    Some((rest.next()?.parse().ok()?, zombie))
}

/// SIGKILLs every living child of this process, again for the orphans
/// that come back to us as their parents die, and waits (until `deadline`)
/// until they are dead.
fn kill_children(deadline: Instant) {
    let me = std::process::id() as i32;
    let inherited = INHERITED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    loop {
        let mut dying = Vec::new();
        for pid in living_children() {
            if !inherited.contains(&pid) {
                dying.extend(kill_if(pid, |p| {
                    parent_and_zombie(p).is_some_and(|(parent, _)| parent == me)
                }));
            }
        }
        if dying.is_empty() {
            return;
        }
        wait_dead(&dying, deadline);
        if Instant::now() >= deadline {
            return;
        }
    }
}

/// SIGKILLs `pid` if `still` holds for it once a pidfd holds the process,
/// and returns that pidfd (to wait for its death). Through a pidfd, so a
/// pid that was reaped and reused meanwhile is never signalled. Without
/// pidfds (before Linux 5.3), the pid is signalled as it is and None comes back.
pub(crate) fn kill_if(pid: i32, still: impl Fn(i32) -> bool) -> Option<OwnedFd> {
    let Ok(fd) = super::pidfd::open(pid) else {
        if still(pid) {
            // SAFETY: signals a process `still` vouched for a moment ago.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        return None;
    };
    if !still(pid) {
        return None;
    }
    let _ = super::pidfd::send_signal(&fd, libc::SIGKILL);
    Some(fd)
}

/// Waits until the processes of `pidfds` have ended (a pidfd becomes
/// readable then), or until `deadline`.
pub(crate) fn wait_dead(pidfds: &[OwnedFd], deadline: Instant) {
    for fd in pidfds {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(fd),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one pollfd we own.
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if !(r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR) {
                break;
            }
        }
    }
}
