//! The coordinator's steps that act on a whole filesystem the harness
//! owns: `drop_caches`, `fill_fs`, `remount` and `crash` (simulated, or a
//! real power cut that pauses the run and resumes it after the reboot).

use super::{lock, Proc, Reaped, Run, Stop};
use crate::case::model::{Op, Step};
use crate::exec::ops::open_beneath;
use crate::exec::power_cut::{Paused, PausedProcess};
use crate::exec::protocol::{Channel, Observation};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Makes the case's directory again after its filesystem lost it; not
/// once teardown has begun, when the filesystem may be unmounted already
/// and the directory would be made under its mount point, to outlive the run.
fn make_case_dir(dir: &std::path::Path) {
    if let Ok(_making) = crate::exec::live::creating() {
        let _ = std::fs::create_dir_all(dir);
    }
}

impl Run<'_> {
    /// Writes back the case's filesystem (syncfs: not every filesystem of
    /// the machine, which sync(2) would wait for), then drops clean caches.
    pub(super) fn drop_caches(&self) -> Observation {
        let synced = std::fs::File::open(&self.dir).map(|d| {
            // SAFETY: syncfs on a directory fd we own.
            unsafe { libc::syncfs(d.as_raw_fd()) }
        });
        if !matches!(synced, Ok(0)) {
            return Observation::errno(nix::errno::Errno::last_raw());
        }
        match std::fs::write("/proc/sys/vm/drop_caches", "3") {
            Ok(()) => Observation::ok(),
            Err(e) => Observation::errno(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    pub(super) fn owned_fs(
        &self,
    ) -> Result<&std::sync::Arc<std::sync::Mutex<crate::target::fs::OwnedFs>>, Stop> {
        self.opts.owned_fs.as_ref().ok_or_else(|| {
            Stop::Broken("this step needs a filesystem the harness made (run --fs)".into())
        })
    }

    /// The case's directory is on the filesystem just mounted again: the
    /// old descriptor refers to the unmounted one.
    pub(super) fn reopen_dir(&mut self) -> Result<(), Stop> {
        let fd = nix::fcntl::open(
            &self.dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Stop::Broken(format!("scratch dir after remount: {e}")))?;
        // SAFETY: the kernel just gave us this fd.
        self.dirfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(())
    }

    /// Fills `path` until ENOSPC: fallocate(2) first where the filesystem
    /// has it, then smaller and smaller writes, so the filesystem is full to
    /// its last block.
    pub(super) fn fill_fs(&mut self, path: &str) -> Result<Observation, Stop> {
        self.owned_fs()?;
        let fd = match open_beneath(
            self.dirfd.as_raw_fd(),
            path,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        ) {
            Ok(fd) => fd,
            Err(e) => return Ok(Observation::errno(e as i32)),
        };
        let file = std::fs::File::from(fd);
        let chunk = vec![0x5au8; 1 << 20];
        // On the local filesystems listed in `fills_by_fallocate`, most of
        // the room is taken by allocating blocks without writing them:
        // writing them all (320 MiB for xfs's smallest image) took seconds a
        // case under emulation (TCG) for bytes no case reads. The writes
        // below take what fallocate left, and all of the room elsewhere.
        let mut offset = if fills_by_fallocate(&file) {
            allocate_free_space(&file, chunk.len() as u64)
        } else {
            0
        };
        let allocated = offset;
        // Where write(2) only fills a cache (FUSE_WRITEBACK_CACHE, as NFS),
        // it succeeds past the free space and ENOSPC comes at write-back:
        // once more than the whole filesystem has been written, write-back
        // says whether it fit (unreachable elsewhere).
        let capacity = nix::sys::statvfs::fstatvfs(&file)
            .map(|v| v.blocks() * v.fragment_size())
            .unwrap_or(u64::MAX);
        // Delayed allocation reserves blocks at write time, more than it
        // turns out to need (room for extent tree blocks); fsync makes the
        // allocation real and gives the rest back. So write until ENOSPC
        // and fsync, again, until a pass finds no room at all: only then
        // is no block left for a later page fault.
        'fill: loop {
            let before = offset;
            let mut size = chunk.len();
            while size >= 512 {
                if Instant::now() >= self.deadline {
                    return Err(Stop::Broken("timed out filling the filesystem".into()));
                }
                match std::os::unix::fs::FileExt::write_at(&file, &chunk[..size], offset) {
                    Ok(n) if n > 0 => {
                        offset += n as u64;
                        if offset > capacity && file.sync_all().is_err() {
                            break 'fill;
                        }
                    }
                    _ => size /= 2,
                }
            }
            let _ = file.sync_all();
            if offset == before {
                break;
            }
        }
        let mut obs = Observation::ok();
        obs.value = Some(offset as i64);
        obs.detail = Some(format!(
            "filled {offset} bytes until ENOSPC ({allocated} by fallocate, the rest by writes)"
        ));
        Ok(obs)
    }

    pub(super) fn remount(&mut self, read_only: bool) -> Result<Observation, Stop> {
        let fs = self.owned_fs()?.clone();
        // Our own descriptor of the case directory would keep the mount busy.
        let placeholder = std::fs::File::open("/").map_err(|e| Stop::Broken(e.to_string()))?;
        self.dirfd = OwnedFd::from(placeholder);
        let result = lock(&fs).remount(read_only);
        if result.is_ok() && !self.dir.exists() && !read_only {
            // tmpfs keeps nothing across an unmount, not even the case's
            // directory; the harness needs one to go on.
            make_case_dir(&self.dir);
        }
        self.reopen_dir()?;
        Ok(match result {
            Ok(()) => Observation::ok(),
            Err(e) => Observation::errno(e as i32),
        })
    }

    pub(super) fn crash(&mut self) -> Result<Observation, Stop> {
        if std::mem::take(&mut self.resuming) {
            // The machine was switched off here and booted again.
            let mut obs = Observation::ok();
            obs.detail = Some(crate::exec::power_cut::DETAIL.to_string());
            return Ok(obs);
        }
        if let Some(cut) = self.opts.power_cut.clone() {
            // Returns only if the state could not be saved.
            let Err(why) = cut.cut(self.pause());
            return Err(Stop::Broken(format!("power cut: {why}")));
        }
        let fs = self.owned_fs()?.clone();
        // A power cut kills every process at once; nothing they hold is flushed.
        self.kill_all(Reaped::AtCrash);
        for p in self.procs.values_mut() {
            p.gone = true;
            // Dead now, reaped by us or by a parent that died too: either
            // way its pid is not its own any more.
            p.reaped.get_or_insert(Reaped::AtCrash);
        }
        let placeholder = std::fs::File::open("/").map_err(|e| Stop::Broken(e.to_string()))?;
        self.dirfd = OwnedFd::from(placeholder);
        let method = lock(&fs)
            .crash()
            .map_err(|e| Stop::Broken(format!("crash: {e}")))?;
        if method == crate::target::fs::CrashMethod::Lost {
            // Nothing survived, not even the case's directory: the harness
            // needs one to go on, empty, as after a reboot.
            make_case_dir(&self.dir);
        }
        self.reopen_dir()?;
        let mut obs = Observation::ok();
        obs.detail = Some(method.describe().to_string());
        Ok(obs)
    }

    /// What a power cut must keep of this run to go on after the reboot.
    pub(super) fn pause(&self) -> Paused {
        let index = self.current.as_ref().map(|(i, _)| i.as_str());
        Paused {
            resume_at: index.and_then(|i| i.parse::<usize>().ok()).unwrap_or(1) - 1,
            steps: self.steps.clone(),
            values: self.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            snapshots: self
                .snapshots
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            processes: self
                .procs
                .iter()
                .map(|(name, p)| PausedProcess {
                    name: name.clone(),
                    parent: p.parent.clone(),
                    pid: p.pid,
                })
                .collect(),
            elapsed_ms: self.earlier_ms + self.started.elapsed().as_millis() as u64,
        }
    }

    /// Takes up a case after a power cut: the state saved then, and every
    /// process of before the cut gone, as after a simulated `crash`.
    /// Returns where the walk starts: the crash step.
    pub(super) fn restore(&mut self, paused: Paused, steps: &[Step]) -> Result<usize, Stop> {
        if !steps
            .get(paused.resume_at)
            .is_some_and(|s| matches!(s.op, Op::Crash))
        {
            return Err(Stop::Broken(format!(
                "the saved state resumes at step {}, which is not a crash step of this case",
                paused.resume_at + 1
            )));
        }
        self.steps = paused.steps;
        self.values = paused.values.into_iter().collect();
        self.snapshots = paused.snapshots.into_iter().collect();
        for p in paused.processes {
            // A channel whose other end is closed, as a dead process leaves it.
            let (ours, _) =
                UnixStream::pair().map_err(|e| Stop::Broken(format!("socketpair: {e}")))?;
            let chan = Channel::new(ours).map_err(|e| Stop::Broken(format!("channel: {e}")))?;
            self.procs.insert(
                p.name,
                Proc {
                    // Not a process of this boot: never signalled (see kill).
                    pid: 0,
                    pidfd: None,
                    chan,
                    spawned: p.parent.is_none(),
                    parent: p.parent,
                    reaped: Some(Reaped::AtCrash),
                    gone: true,
                    signalled: None,
                    born: self.procs.len(),
                    group: None,
                    attached: super::processes::Attached::Refused,
                },
            );
        }
        self.earlier_ms = paused.elapsed_ms;
        self.resuming = true;
        Ok(paused.resume_at)
    }
}

/// Whether `fill_fs` may take the room with fallocate(2): only on the local
/// filesystems where a file of allocated, unwritten blocks leaves the same
/// nothing free as one of written blocks (tmpfs, ext4, xfs, btrfs; ext2 and
/// ext3 have no fallocate and say so). Elsewhere the writes alone fill, as a
/// program would: a FUSE server may keep its own reserve for writes that
/// fallocate does not respect (fuse2fs), and NFS, 9p or virtiofs pass
/// fallocate to a server whose space is not the mount's.
fn fills_by_fallocate(file: &std::fs::File) -> bool {
    use nix::sys::statfs::{
        fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    fstatfs(file).is_ok_and(|s| {
        [
            TMPFS_MAGIC,
            EXT4_SUPER_MAGIC,
            XFS_SUPER_MAGIC,
            BTRFS_SUPER_MAGIC,
        ]
        .contains(&s.filesystem_type())
    })
}

/// Allocates the filesystem's free space to `file` from offset 0 with
/// fallocate(2), in requests that halve at each ENOSPC down to `smallest`
/// bytes; returns the bytes allocated (the file's new size). Stops at the
/// first other error: a filesystem without fallocate (EOPNOTSUPP) gets 0.
fn allocate_free_space(file: &std::fs::File, smallest: u64) -> u64 {
    let free = nix::sys::statvfs::fstatvfs(file)
        .map(|v| v.blocks_available() * v.fragment_size())
        .unwrap_or(0);
    let (mut offset, mut len) = (0u64, free);
    while len >= smallest {
        match nix::fcntl::fallocate(
            file.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            offset as i64,
            len as i64,
        ) {
            Ok(()) => offset += len,
            Err(nix::errno::Errno::ENOSPC) => len /= 2,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    offset
}
