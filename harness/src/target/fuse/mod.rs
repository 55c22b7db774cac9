//! A passthrough FUSE filesystem of our own, as a target: every file of
//! the mount is a file of a backing directory (on tmpfs), and the server
//! is a mode of the one binary (`mmapconf __fuse-server`), started like
//! any helper program by the fork server.
//!
//! Why our own server: FUSE has several page-cache paths in the kernel
//! (cache invalidated at open, FOPEN_KEEP_CACHE, the writeback cache,
//! FOPEN_DIRECT_IO with and without shared mmap, passthrough to a backing
//! file), chosen by what the server answers at INIT and at open. A server
//! we write picks each on purpose ([`FuseMode`]), and its storage (the
//! backing directory) can be read directly: what reached the server, not
//! what this kernel's page cache of the FUSE file holds.
//!
//! Names carry the run's pid, as every resource of a run does:
//! `mmapconf-fuse-<pid>-<mode>` (the mount point) and
//! `mmapconf-fbk-<pid>-<mode>` (the backing directory), so that
//! `mmapconf cleanup` can find what a killed run left ([`orphans`]).

pub mod server;
mod table;
pub mod targets;

use crate::exec::live;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Which of the kernel's FUSE data paths the server makes files take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum FuseMode {
    /// Page cache; the kernel drops a file's cached pages at every open
    /// (no FOPEN_KEEP_CACHE).
    Default,
    /// Page cache kept across opens (FOPEN_KEEP_CACHE).
    KeepCache,
    /// FUSE_WRITEBACK_CACHE negotiated at INIT: writes stay in the page
    /// cache and the kernel keeps size and times.
    Writeback,
    /// FOPEN_DIRECT_IO without FUSE_DIRECT_IO_ALLOW_MMAP: no page cache for
    /// read and write, and the kernel refuses every MAP_SHARED mapping
    /// (fs/fuse/file.c, fuse_file_mmap: VM_MAYSHARE and not
    /// direct_io_allow_mmap gives -ENODEV, read-only ones too; unchanged up
    /// to 6.18 at least). MAP_PRIVATE goes through the page cache.
    DirectIo,
    /// FOPEN_DIRECT_IO with FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6): read and
    /// write bypass the cache, shared mappings use it.
    DirectIoMmap,
    /// FUSE passthrough (Linux 6.9, CONFIG_FUSE_PASSTHROUGH, CAP_SYS_ADMIN):
    /// each open file is backed by the backing file itself, registered with
    /// FUSE_DEV_IOC_BACKING_OPEN; read, write and mmap go to it directly.
    Passthrough,
}

impl FuseMode {
    pub const ALL: [FuseMode; 6] = [
        FuseMode::Default,
        FuseMode::KeepCache,
        FuseMode::Writeback,
        FuseMode::DirectIo,
        FuseMode::DirectIoMmap,
        FuseMode::Passthrough,
    ];

    /// The name on the command line and in resource names.
    pub fn name(self) -> &'static str {
        match self {
            FuseMode::Default => "default",
            FuseMode::KeepCache => "keep-cache",
            FuseMode::Writeback => "writeback",
            FuseMode::DirectIo => "direct-io",
            FuseMode::DirectIoMmap => "direct-io-mmap",
            FuseMode::Passthrough => "passthrough",
        }
    }

    pub fn parse(name: &str) -> Option<FuseMode> {
        FuseMode::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the kernel refuses MAP_SHARED mappings of this mode's
    /// files (with ENODEV).
    pub fn refuses_shared_mmap(self) -> bool {
        self == FuseMode::DirectIo
    }
}

impl std::fmt::Display for FuseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub const MOUNT_PREFIX: &str = "mmapconf-fuse-";
pub const BACKING_PREFIX: &str = "mmapconf-fbk-";

/// The subcommand that runs the server.
pub const SERVER_COMMAND: &str = "__fuse-server";

/// How long a server may take to mount and answer INIT. It takes
/// milliseconds; the bound only turns a wedged server into an error.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// How long a server may take to end after its filesystem was unmounted
/// (it ends as soon as it reads ENODEV from /dev/fuse) before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The line the server writes on stdout once the mount is up and INIT is
/// answered.
pub(crate) const READY: &str = "ready";

/// Why a FUSE mount cannot be made here, or None when it can.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("a FUSE target needs root (the server mounts with mount(2))".to_string());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (modprobe fuse)".to_string());
    }
    if !super::fs::kernel_knows("fuse") {
        return Some("the kernel does not support fuse (not in /proc/filesystems)".to_string());
    }
    None
}

/// A mounted FUSE filesystem served by a `mmapconf __fuse-server` child.
#[derive(Debug)]
pub struct FuseMount {
    mode: FuseMode,
    mount_point: PathBuf,
    backing_dir: PathBuf,
    /// The server's pid while it runs (our child, to reap).
    server: Option<i32>,
    /// Forwards the server's stderr to ours while it runs.
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl FuseMount {
    /// Starts a server of `mode` (this executable) with its mount point in
    /// `base_dir` and its backing directory in /dev/shm (else `base_dir`).
    pub fn start(mode: FuseMode, base_dir: &Path) -> Result<FuseMount, String> {
        let exe = std::env::current_exe().map_err(|e| format!("the harness binary: {e}"))?;
        FuseMount::start_with(&exe, mode, base_dir)
    }

    /// As [`start`](Self::start), with the harness binary given (tests run
    /// from another executable).
    pub fn start_with(exe: &Path, mode: FuseMode, base_dir: &Path) -> Result<FuseMount, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        // Absolute, as mountinfo shows it (and `orphans` compares it).
        let base_dir =
            &std::fs::canonicalize(base_dir).map_err(|e| format!("{}: {e}", base_dir.display()))?;
        let tag = unique_tag(mode);
        let mut mount = FuseMount {
            mode,
            mount_point: base_dir.join(format!("{MOUNT_PREFIX}{tag}")),
            backing_dir: super::fs::image_dir(base_dir).join(format!("{BACKING_PREFIX}{tag}")),
            server: None,
            stderr: None,
        };
        // Registered before it is made: an interrupted run unmounts it and
        // removes both directories (the server dies with the harness).
        let _making = live::creating()?;
        live::set_fs(live::FsResources {
            // The storage's own tmpfs is unmounted after the FUSE mount.
            mounts: vec![mount.mount_point.clone(), mount.backing_dir.clone()],
            dirs: vec![mount.backing_dir.clone()],
            ..Default::default()
        });
        // From here, dropping `mount` on an error removes whatever was made.
        for dir in [&mount.mount_point, &mount.backing_dir] {
            std::fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        targets::mount_store(&mount.backing_dir)?;
        let mut cmd = Command::new(exe);
        cmd.arg(SERVER_COMMAND)
            .args(["--mode", mode.name()])
            .arg(&mount.backing_dir)
            .arg(&mount.mount_point);
        let (pid, stdout, stderr) = crate::exec::fork_server::spawn_program(exe, &cmd)
            .map_err(|e| format!("cannot start the FUSE server: {e}"))?;
        mount.server = Some(pid);
        let ready = wait_ready(&stdout, START_DEADLINE);
        drop(stdout);
        if let Err(why) = ready {
            // It failed (and said why on stderr) or hangs: end it, then read.
            mount.kill_server();
            let mut text = String::new();
            let _ = std::fs::File::from(stderr).read_to_string(&mut text);
            let text = text.trim();
            return Err(if text.is_empty() {
                format!("FUSE server ({mode}): {why}")
            } else {
                format!("FUSE server ({mode}): {text}")
            });
        }
        mount.stderr = Some(forward_stderr(stderr, mode));
        // INIT is answered, so the mount exists already: this only checks
        // that it is where we asked and is ours.
        let at = mount.mount_point.to_string_lossy().into_owned();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(super::parse_mountinfo_line)
            .any(|m| m.mount_point == at && m.fs_type.starts_with("fuse"));
        if !mounted {
            return Err(format!(
                "FUSE server ({mode}) said it was ready but {at} is not a fuse mount"
            ));
        }
        Ok(mount)
    }

    pub fn mode(&self) -> FuseMode {
        self.mode
    }

    /// Where cases run.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The server's storage.
    pub fn backing_dir(&self) -> &Path {
        &self.backing_dir
    }

    /// Where the server stores the file at `rel` (a path inside the mount):
    /// reading it shows what reached the server, not the kernel's cache of
    /// the FUSE file.
    pub fn backing_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix(&self.mount_point).unwrap_or(rel);
        // Never outside the storage: an absolute path is taken as
        // relative to the mount's root.
        self.backing_dir.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// The server's pid while it runs.
    pub fn server_pid(&self) -> Option<i32> {
        self.server
    }

    /// Unmounts, ends the server and removes both directories. The
    /// unmount is strict first, so that all dirty data has been written to
    /// the server when it succeeds; if something still uses the mount it is
    /// detached (the error says so), and the server is killed at once.
    pub fn stop(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        if self.server.is_some() || is_mounted(&self.mount_point) {
            match super::fs::unmount(&self.mount_point) {
                Ok(()) => {
                    // It reads ENODEV from /dev/fuse and ends on its own;
                    // anything else is worth saying (its stderr said why).
                    if let Err(why) = self.wait_server(STOP_DEADLINE) {
                        result = Err(format!("the server {why}"));
                    }
                }
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    let detached =
                        nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
                    result = Err(format!(
                        "unmount {}: {e}; detached lazily ({})",
                        self.mount_point.display(),
                        detached.map_or_else(|e| format!("failed: {e}"), |_| "done".into())
                    ));
                }
            }
        }
        self.kill_server();
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        live::remove_fs(&self.mount_point);
        if let Err(e) = super::fs::detach_mount(&self.backing_dir) {
            if result.is_ok() {
                result = Err(e);
            }
        }
        for (dir, all) in [(&self.mount_point, false), (&self.backing_dir, true)] {
            // Never remove_dir_all a mount point: if it is somehow still
            // mounted, that would empty the filesystem instead.
            let removed = if all {
                std::fs::remove_dir_all(dir)
            } else {
                std::fs::remove_dir(dir)
            };
            if let Err(e) = removed {
                if e.kind() != std::io::ErrorKind::NotFound && result.is_ok() {
                    result = Err(format!("{}: {e}", dir.display()));
                }
            }
        }
        result
    }

    /// Waits up to `deadline` for the server to end by itself and reaps
    /// it: Ok if it ended with status 0, else what happened.
    fn wait_server(&mut self, deadline: Duration) -> Result<(), String> {
        let Some(pid) = self.server else {
            return Ok(());
        };
        let status = wait_exit(pid, deadline).ok_or_else(|| {
            format!(
                "did not end within {} s of the unmount (killed)",
                deadline.as_secs()
            )
        })?;
        self.server = None;
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(format!("ended with wait status {status:#x}"))
        }
    }

    /// Kills and reaps the server if it still runs.
    fn kill_server(&mut self) {
        if let Some(pid) = self.server.take() {
            kill_and_reap(pid);
        }
    }
}

/// SIGKILLs and reaps a server the harness started (its unreaped child, so
/// the pid is still its own), through a pidfd like every other signal.
pub(super) fn kill_and_reap(pid: i32) {
    // An error opening it: already reaped, nothing of ours to signal.
    if let Ok(fd) = crate::exec::pidfd::open(pid) {
        let _ = crate::exec::pidfd::send_signal(&fd, libc::SIGKILL);
        let _ = crate::exec::pidfd::wait(&fd, true);
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("mmapconf: FUSE target {}: {e}", self.mode);
        }
    }
}

/// `<pid>-<mode>` for the first mount of a mode in this process,
/// `<pid>-<mode>-<n>` after (tests mount one mode several times at once).
fn unique_tag(mode: FuseMode) -> String {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let pid = std::process::id();
    if n == 0 {
        format!("{pid}-{mode}")
    } else {
        format!("{pid}-{mode}-{n}")
    }
}

fn is_mounted(at: &Path) -> bool {
    let at = at.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(super::parse_mountinfo_line)
        .any(|m| m.mount_point == at)
}

/// Reads the server's stdout until its ready line, EOF (it ended) or the
/// deadline, whichever first; poll(2) wakes us, nothing sleeps.
fn wait_ready(stdout: &OwnedFd, deadline: Duration) -> Result<(), String> {
    let end = Instant::now() + deadline;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("not ready within {} s", deadline.as_secs()));
        }
        let mut pfd = libc::pollfd {
            fd: stdout.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return Err(format!("poll: {}", std::io::Error::last_os_error()));
        }
        if r == 0 {
            continue;
        }
        let mut buf = [0u8; 256];
        match nix::unistd::read(stdout.as_raw_fd(), &mut buf) {
            Ok(0) => return Err("ended before it was ready".to_string()),
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.split(|b| *b == b'\n').any(|l| l == READY.as_bytes()) {
                    return Ok(());
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("reading its stdout: {e}")),
        }
    }
}

/// Waits up to `deadline` for our child `pid` to end, and reaps it: its
/// wait status, or None if it still runs. A pidfd makes the wait a
/// poll(2), not a sleep loop.
pub(crate) fn wait_exit(pid: i32, deadline: Duration) -> Option<i32> {
    // SAFETY: pidfd_open on our own child; the fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR && !left.is_zero() {
                continue;
            }
            if r <= 0 {
                return None;
            }
            break;
        }
    }
    // Readable pidfd (or no pidfd: a blocking wait would risk a hang, so
    // only a finished child is reaped here).
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then_some(status)
}

/// Copies the server's stderr to ours, each line prefixed, until it ends.
fn forward_stderr(stderr: OwnedFd, mode: FuseMode) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(std::fs::File::from(stderr)).lines();
        for line in lines.map_while(Result::ok) {
            eprintln!("mmapconf: FUSE server ({mode}): {line}");
        }
    })
}

/// The run pid in `mmapconf-fuse-<pid>-...` or `mmapconf-fbk-<pid>-...`.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name
        .strip_prefix(MOUNT_PREFIX)
        .or_else(|| name.strip_prefix(BACKING_PREFIX))?;
    rest.split('-').next()?.parse().ok()
}

fn run_alive(pid: i32) -> bool {
    pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists()
}

fn orphaned(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(owner_pid)
        .is_some_and(|pid| !run_alive(pid))
}

/// For `mmapconf cleanup`: what runs that are no longer alive left of
/// FUSE targets in the directories `bases` (cleanup's include /dev/shm,
/// where backing directories go): servers still running (killed), mounts
/// (unmounted, lazily if busy: nobody can use a dead run's mount), mount
/// points and backing directories (removed). Only what lies in `bases` is
/// touched. One line for each thing done.
pub fn orphans(bases: &[PathBuf]) -> Vec<String> {
    // Mount points in mountinfo and in a server's arguments are absolute.
    let bases: Vec<PathBuf> = bases
        .iter()
        .map(|b| std::fs::canonicalize(b).unwrap_or_else(|_| b.clone()))
        .collect();
    let ours = |p: &Path| orphaned(p) && p.parent().is_some_and(|d| bases.contains(&d.into()));
    let mut done = Vec::new();
    // 1. Servers: their last argument is the mount point, named for the run.
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_server = args.get(1).map(String::as_str) == Some(SERVER_COMMAND);
        let mount_point = args.iter().rev().find(|a| !a.is_empty());
        if is_server && mount_point.is_some_and(|m| ours(Path::new(m))) {
            // SAFETY: kills a leftover server of a dead run.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            done.push(format!("killed FUSE server {pid}"));
        }
    }
    // 2. Mounts.
    let mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(super::parse_mountinfo_line)
        .map(|m| PathBuf::from(m.mount_point))
        .filter(|p| ours(p))
        .collect();
    for m in mounts {
        if super::fs::detach_mount(&m).is_ok() {
            done.push(format!("unmounted {}", m.display()));
        }
    }
    // 3. Mount points (empty once unmounted) and backing directories.
    for dir in &bases {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if !ours(&path) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let removed = if name.starts_with(BACKING_PREFIX) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_dir(&path)
            };
            if removed.is_ok() {
                done.push(format!("removed {}", path.display()));
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for m in FuseMode::ALL {
            assert_eq!(FuseMode::parse(m.name()), Some(m));
            assert_eq!(
                <FuseMode as clap::ValueEnum>::from_str(m.name(), false),
                Ok(m)
            );
        }
    }

    #[test]
    fn backing_paths_stay_in_the_storage() {
        let m = FuseMount {
            mode: FuseMode::Default,
            mount_point: "/nonexistent/mnt".into(),
            backing_dir: "/nonexistent/bk".into(),
            server: None,
            stderr: None,
        };
        let want = Path::new("/nonexistent/bk/d/f");
        assert_eq!(m.backing_path("d/f"), want);
        assert_eq!(m.backing_path("/nonexistent/mnt/d/f"), want);
        assert_eq!(m.backing_path("/d/f"), want);
    }

    #[test]
    fn names_carry_their_run() {
        assert_eq!(owner_pid("mmapconf-fuse-1234-keep-cache"), Some(1234));
        assert_eq!(owner_pid("mmapconf-fbk-77-direct-io-mmap-2"), Some(77));
        assert_eq!(owner_pid("mmapconf-mnt-77-ext4"), None);
        assert!(!orphaned(Path::new(&format!(
            "/tmp/mmapconf-fuse-{}-default",
            std::process::id()
        ))));
    }
}
