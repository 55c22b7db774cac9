//! FUSE filesystems as run targets (`--fs NAME`): the harness's own
//! passthrough server in each of its modes (`fuse-default`,
//! `fuse-keep-cache`, `fuse-writeback`, `fuse-direct-io`,
//! `fuse-direct-io-mmap`, `fuse-passthrough`), and real FUSE filesystems
//! from distribution packages (`ntfs-3g`, `exfat-fuse`, `fuse2fs`,
//! `bindfs`, `fuse-overlayfs`).
//!
//! A packaged server is started in the foreground through the fork server
//! (so it is the harness's child and dies with it, PR_SET_PDEATHSIG), on
//! what it needs: an image file made by its mkfs
//! (`mmapconf-img-<pid>-<target>`, in /dev/shm when that is a tmpfs), or
//! directories (`mmapconf-ovl-<pid>-<target>/`). Its mount point is
//! `mmapconf-mnt-<pid>-<target>`. Every name is registered with
//! `exec::live` before it is made, and carries the run's pid, so that an
//! interrupted run removes it and `mmapconf cleanup` finds what a killed
//! one left ([`orphan_servers`] for servers that outlived it).

use super::{FuseMode, FuseMount};
use crate::exec::live;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A packaged FUSE filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaged {
    /// ntfs-3g on an image made by mkntfs (package ntfs-3g).
    Ntfs3g,
    /// exfat-fuse on an image made by mkfs.exfat (packages exfat-fuse, exfatprogs).
    ExfatFuse,
    /// fuse2fs on an ext4 image made by mkfs.ext4 (packages fuse2fs, e2fsprogs).
    Fuse2fs,
    /// bindfs mirroring a directory (package bindfs).
    Bindfs,
    /// fuse-overlayfs over lower, upper and work directories (package fuse-overlayfs).
    FuseOverlayfs,
}

/// What a `--fs` name that is a FUSE target stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuseTarget {
    Own(FuseMode),
    Packaged(Packaged),
}

impl Packaged {
    pub const ALL: [Packaged; 5] = [
        Packaged::Ntfs3g,
        Packaged::ExfatFuse,
        Packaged::Fuse2fs,
        Packaged::Bindfs,
        Packaged::FuseOverlayfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Packaged::Ntfs3g => "ntfs-3g",
            Packaged::ExfatFuse => "exfat-fuse",
            Packaged::Fuse2fs => "fuse2fs",
            Packaged::Bindfs => "bindfs",
            Packaged::FuseOverlayfs => "fuse-overlayfs",
        }
    }

    /// The programs it needs, with the Debian package that has each.
    fn programs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Packaged::Ntfs3g => &[("ntfs-3g", "ntfs-3g"), ("mkntfs", "ntfs-3g")],
            Packaged::ExfatFuse => &[
                ("mount.exfat-fuse", "exfat-fuse"),
                ("mkfs.exfat", "exfatprogs"),
            ],
            Packaged::Fuse2fs => &[("fuse2fs", "fuse2fs"), ("mkfs.ext4", "e2fsprogs")],
            Packaged::Bindfs => &[("bindfs", "bindfs")],
            Packaged::FuseOverlayfs => &[("fuse-overlayfs", "fuse-overlayfs")],
        }
    }

    /// Whether it is served from a block device, as it is used for real:
    /// a loop device on the image (teardown and cleanup find it by its
    /// backing file). exfat-fuse asks the kernel for a `blkdev` mount as
    /// root ("Block device required" on a plain file); ntfs-3g then mounts
    /// as `fuseblk`.
    fn on_block_device(self) -> bool {
        matches!(self, Packaged::Ntfs3g | Packaged::ExfatFuse)
    }

    /// Whether it keeps its files in an image made by a mkfs.
    fn on_image(self) -> bool {
        matches!(
            self,
            Packaged::Ntfs3g | Packaged::ExfatFuse | Packaged::Fuse2fs
        )
    }
}

/// The prefix of the own server's target names.
const OWN_PREFIX: &str = "fuse-";

/// The FUSE target `name` stands for, if it is one.
pub fn parse(name: &str) -> Option<FuseTarget> {
    if let Some(p) = Packaged::ALL.into_iter().find(|p| p.name() == name) {
        return Some(FuseTarget::Packaged(p));
    }
    name.strip_prefix(OWN_PREFIX)
        .and_then(FuseMode::parse)
        .map(FuseTarget::Own)
}

/// Every FUSE target name, for help texts and tests.
pub fn names() -> Vec<String> {
    FuseMode::ALL
        .iter()
        .map(|m| format!("{OWN_PREFIX}{m}"))
        .chain(Packaged::ALL.iter().map(|p| p.name().to_string()))
        .collect()
}

fn have_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
        || ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(name).is_file())
}

fn program_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/sbin", "/usr/sbin", "/bin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Why the FUSE target cannot be made here, or None when it can: one
/// diagnosis for the whole target (the run then skips its cases).
pub fn unavailable(target: FuseTarget) -> Option<String> {
    if let Some(why) = super::unavailable() {
        return Some(why);
    }
    if let FuseTarget::Packaged(p) = target {
        for (program, package) in p.programs() {
            if !have_program(program) {
                return Some(format!(
                    "{program} is not installed (Debian package {package})"
                ));
            }
        }
    }
    None
}

/// A FUSE target, mounted and served.
#[derive(Debug)]
pub enum FuseTargetMount {
    Own(FuseMount),
    Packaged(PackagedMount),
}

impl FuseTargetMount {
    /// Makes and mounts `target` (named `name`) under `base`.
    pub fn start(target: FuseTarget, name: &str, base: &Path) -> Result<FuseTargetMount, String> {
        if let Some(why) = unavailable(target) {
            return Err(why);
        }
        match target {
            FuseTarget::Own(mode) => FuseMount::start(mode, base).map(FuseTargetMount::Own),
            FuseTarget::Packaged(p) => PackagedMount::start(p, name, base).map(Self::Packaged),
        }
    }

    pub fn mount_point(&self) -> &Path {
        match self {
            FuseTargetMount::Own(m) => m.mount_point(),
            FuseTargetMount::Packaged(m) => &m.mount_point,
        }
    }

    /// Where the target's storage keeps each file as a file of the same
    /// relative path: our server's backing directory, bindfs's source.
    pub fn backing_dir(&self) -> Option<&Path> {
        match self {
            FuseTargetMount::Own(m) => Some(m.backing_dir()),
            FuseTargetMount::Packaged(m) if m.which == Packaged::Bindfs => m.dirs.as_deref(),
            FuseTargetMount::Packaged(_) => None,
        }
    }

    /// Unmounts, ends the server and removes what the target made.
    pub fn stop(&mut self) -> Result<(), String> {
        match self {
            FuseTargetMount::Own(m) => m.stop(),
            FuseTargetMount::Packaged(m) => m.stop(),
        }
    }
}

/// A packaged FUSE server serving a mount the harness made.
#[derive(Debug)]
pub struct PackagedMount {
    which: Packaged,
    mount_point: PathBuf,
    image: Option<PathBuf>,
    /// The directory holding the server's source directories: bindfs's
    /// source is this directory itself; fuse-overlayfs's layers are in it.
    dirs: Option<PathBuf>,
    server: Option<i32>,
    /// Drains the server's stderr (exfat-fuse runs in the foreground only
    /// with -d, which logs every request) and keeps its last lines.
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// How long a server may take to mount. It takes milliseconds; the bound
/// only turns a wedged server into an error.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a server may take to end after its unmount before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Image size: as the loop targets' ext4 (64 MiB); small images make
/// `fill_fs` fast.
const IMAGE_MIB: u64 = 64;

fn run(cmd: &mut Command) -> Result<(), String> {
    if live::stopping() {
        return Err("the harness is stopping".to_string());
    }
    let shown = format!("{cmd:?}").replace('"', "");
    let out = crate::exec::fork_server::output(cmd).map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let out_text = String::from_utf8_lossy(&out.stdout);
        let text = if err.trim().is_empty() { out_text } else { err };
        Err(format!(
            "{shown}: {}",
            text.trim().lines().last().unwrap_or("failed")
        ))
    }
}

/// The size of the tmpfs under a FUSE target's directories: as the
/// loop targets' images, so that `fill_fs` fills it, not the machine's
/// memory (/dev/shm is bounded only by half of it).
const STORE_SIZE: &str = "size=128m";

/// Mounts a tmpfs of [`STORE_SIZE`] at `dir` (our own server's backing
/// directory, bindfs's source, fuse-overlayfs's layers): with mount(2),
/// since a test may start a server before the fork server runs.
pub(crate) fn mount_store(dir: &Path) -> Result<(), String> {
    nix::mount::mount(
        Some("mmapconf"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(STORE_SIZE),
    )
    .map_err(|e| format!("mount tmpfs at {}: {e}", dir.display()))
}

/// Attaches `image` to a free loop device and returns the device.
fn attach(image: &Path) -> Result<PathBuf, String> {
    // Targets start at once; two `losetup --find` may pick the same device.
    static ATTACHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ATTACHING.lock().unwrap_or_else(|e| e.into_inner());
    if live::stopping() {
        return Err("the harness is stopping".to_string());
    }
    let out = crate::exec::fork_server::output(
        Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image),
    )
    .map_err(|e| format!("losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "losetup --find --show {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

impl PackagedMount {
    fn start(which: Packaged, name: &str, base: &Path) -> Result<PackagedMount, String> {
        let base = &std::fs::canonicalize(base).map_err(|e| format!("{}: {e}", base.display()))?;
        let tag = format!("{}-{name}", std::process::id());
        let store = super::super::fs::image_dir(base);
        let mut m = PackagedMount {
            which,
            mount_point: base.join(format!("mmapconf-mnt-{tag}")),
            image: which
                .on_image()
                .then(|| store.join(format!("mmapconf-img-{tag}"))),
            dirs: (!which.on_image()).then(|| store.join(format!("mmapconf-ovl-{tag}"))),
            server: None,
            stderr: None,
        };
        let _making = live::creating()?;
        // Registered before anything is made: an interrupted run unmounts
        // the mount (its server, our child, is killed first) and removes
        // the image and directories.
        live::set_fs(m.resources());
        // From here, dropping `m` on an error removes whatever was made.
        std::fs::create_dir(&m.mount_point)
            .map_err(|e| format!("{}: {e}", m.mount_point.display()))?;
        let source = m.make_storage()?;
        let argv = m.server_argv(&source);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let exe = std::env::current_exe().map_err(|e| format!("the harness binary: {e}"))?;
        let (pid, stdout, stderr) = crate::exec::fork_server::spawn_program(&exe, &cmd)
            .map_err(|e| format!("cannot start {}: {e}", which.name()))?;
        m.server = Some(pid);
        drop(stdout);
        m.stderr = Some(drain(stderr));
        if let Err(why) = m.wait_mounted(START_DEADLINE) {
            m.kill_server();
            let said = m
                .stderr
                .take()
                .and_then(|t| t.join().ok())
                .unwrap_or_default();
            let said = said.join(" / ");
            return Err(if said.is_empty() {
                format!("{}: {why}", which.name())
            } else {
                format!("{}: {why}: {said}", which.name())
            });
        }
        Ok(m)
    }

    fn resources(&self) -> live::FsResources {
        live::FsResources {
            // The FUSE mount first, then the tmpfs under its directories.
            mounts: std::iter::once(self.mount_point.clone())
                .chain(self.dirs.iter().cloned())
                .collect(),
            images: self.image.iter().cloned().collect(),
            dirs: self.dirs.iter().cloned().collect(),
        }
    }

    /// Makes the image or the directories; returns the server's source.
    fn make_storage(&self) -> Result<PathBuf, String> {
        if let Some(image) = &self.image {
            let f =
                std::fs::File::create(image).map_err(|e| format!("{}: {e}", image.display()))?;
            f.set_len(IMAGE_MIB * 1024 * 1024)
                .map_err(|e| format!("{}: {e}", image.display()))?;
            drop(f);
            let mut mkfs = match self.which {
                // -F: a plain file, not a block device; -Q: no zeroing.
                Packaged::Ntfs3g => {
                    let mut c = Command::new(program_path("mkntfs"));
                    c.args(["-q", "-F", "-Q"]);
                    c
                }
                Packaged::ExfatFuse => Command::new(program_path("mkfs.exfat")),
                // 4 KiB blocks, as the ext4 loop target (mke2fs would pick
                // 1 KiB for a small image).
                _ => {
                    let mut c = Command::new(program_path("mkfs.ext4"));
                    c.args(["-q", "-F", "-b", "4096"]);
                    c
                }
            };
            run(mkfs.arg(image))?;
            if self.which.on_block_device() {
                return attach(image);
            }
            return Ok(image.clone());
        }
        let dirs = self.dirs.as_ref().ok_or("no directories")?;
        std::fs::create_dir(dirs).map_err(|e| format!("{}: {e}", dirs.display()))?;
        mount_store(dirs)?;
        if self.which == Packaged::FuseOverlayfs {
            for d in ["lower", "upper", "work"] {
                std::fs::create_dir(dirs.join(d)).map_err(|e| format!("overlay {d}: {e}"))?;
            }
        }
        Ok(dirs.clone())
    }

    /// The server's command line: in the foreground, so that it is the
    /// process we started (and our child, which dies with us).
    fn server_argv(&self, source: &Path) -> Vec<String> {
        let src = source.to_string_lossy().into_owned();
        let mnt = self.mount_point.to_string_lossy().into_owned();
        let prog = |n: &str| program_path(n).to_string_lossy().into_owned();
        match self.which {
            // no_detach: stay in the foreground (ntfs-3g(8)).
            Packaged::Ntfs3g => vec![prog("ntfs-3g"), "-o".into(), "no_detach".into(), src, mnt],
            // exfat-fuse daemonizes unless -d (debug, which also logs
            // every request: drained, see `stderr`).
            Packaged::ExfatFuse => vec![prog("mount.exfat-fuse"), "-d".into(), src, mnt],
            Packaged::Fuse2fs => vec![prog("fuse2fs"), src, mnt, "-f".into()],
            // A subtype, so that mountinfo says fuse.bindfs, not just fuse.
            Packaged::Bindfs => vec![
                prog("bindfs"),
                "-f".into(),
                "-o".into(),
                "subtype=bindfs".into(),
                src,
                mnt,
            ],
            Packaged::FuseOverlayfs => {
                let d = Path::new(&src);
                vec![
                    prog("fuse-overlayfs"),
                    "-f".into(),
                    "-o".into(),
                    format!(
                        "lowerdir={},upperdir={},workdir={}",
                        d.join("lower").display(),
                        d.join("upper").display(),
                        d.join("work").display()
                    ),
                    mnt,
                ]
            }
        }
    }

    /// Waits until the mount point is a FUSE mount that answers, the
    /// server ends, or the deadline passes. A change of the mount table
    /// wakes poll(2) on /proc/self/mountinfo (POLLPRI), the server's end
    /// wakes it on its pidfd: nothing sleeps.
    fn wait_mounted(&self, deadline: Duration) -> Result<(), String> {
        let end = Instant::now() + deadline;
        let mountinfo = std::fs::File::open("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let pid = self.server.ok_or("no server")?;
        let pidfd = crate::exec::pidfd::open(pid).map_err(|e| format!("pidfd_open: {e}"))?;
        let at = self.mount_point.to_string_lossy().into_owned();
        loop {
            // Read it whole each time: poll reports a change since the last read.
            let mut text = String::new();
            let mut f = &mountinfo;
            let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0));
            let _ = f.read_to_string(&mut text);
            let mounted = text
                .lines()
                .filter_map(super::super::parse_mountinfo_line)
                .any(|m| m.mount_point == at && super::super::is_fuse(&m.fs_type));
            if mounted {
                // statfs waits for the server's answer to INIT and its own.
                return nix::sys::statfs::statfs(&self.mount_point)
                    .map(|_| ())
                    .map_err(|e| format!("statfs of the new mount: {e}"));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("not mounted within {} s", deadline.as_secs()));
            }
            let mut pfds = [
                libc::pollfd {
                    fd: mountinfo.as_raw_fd(),
                    events: libc::POLLPRI,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, left.as_millis() as i32) };
            if r < 0 && nix::errno::Errno::last() != nix::errno::Errno::EINTR {
                return Err(format!("poll: {}", std::io::Error::last_os_error()));
            }
            if pfds[1].revents != 0 {
                return Err("the server ended before its filesystem was mounted".to_string());
            }
        }
    }

    /// Unmounts (strictly first, so that the server has been given all
    /// dirty data), waits for the server to end, kills it if it does not,
    /// and removes the mount point, the image and the directories.
    fn stop(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        match super::super::fs::unmount(&self.mount_point) {
            Ok(()) => {
                if let Some(pid) = self.server {
                    match super::wait_exit(pid, STOP_DEADLINE) {
                        Some(_) => self.server = None,
                        None => {
                            result = Err(format!(
                                "{} did not end within {} s of the unmount (killed)",
                                self.which.name(),
                                STOP_DEADLINE.as_secs()
                            ))
                        }
                    }
                }
            }
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                result = Err(format!(
                    "unmount {}: {e} (the server is killed, the mount detached)",
                    self.mount_point.display()
                ))
            }
        }
        self.kill_server();
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        // Detaches what is still mounted, removes the image and directories.
        live::release_fs(&self.resources());
        live::remove_fs(&self.mount_point);
        result
    }

    fn kill_server(&mut self) {
        if let Some(pid) = self.server.take() {
            super::kill_and_reap(pid);
        }
    }
}

impl Drop for PackagedMount {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("mmapconf: FUSE target {}: {e}", self.which.name());
        }
    }
}

/// Reads the server's stderr to its end, keeping the last few lines (to
/// say why it failed).
fn drain(stderr: OwnedFd) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut last = std::collections::VecDeque::new();
        let mut r = std::io::BufReader::new(std::fs::File::from(stderr));
        let mut line = Vec::new();
        while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            if last.len() == 4 {
                last.pop_front();
            }
            last.push_back(String::from_utf8_lossy(&line).trim().to_string());
            line.clear();
        }
        last.into_iter().collect()
    })
}

/// For `mmapconf cleanup`: packaged servers of runs that are gone (a
/// server outlives a SIGKILLed harness only if it escaped
/// PR_SET_PDEATHSIG, e.g. by forking): every process that is one of our
/// packaged FUSE programs and whose arguments name a `mmapconf-` path of
/// a dead run is killed, before the mounts are looked at. One line each.
pub fn orphan_servers(orphaned: impl Fn(&Path) -> bool) -> Vec<String> {
    let programs: Vec<&str> = Packaged::ALL
        .iter()
        .flat_map(|p| p.programs().iter().map(|(prog, _)| *prog))
        .collect();
    let mut done = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(pidfd) = crate::exec::pidfd::open(pid) else {
            continue;
        };
        let args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = args.first().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| programs.iter().any(|p| n == *p))
        });
        let names_dead_run = args.iter().skip(1).any(|a| {
            Path::new(a)
                .ancestors()
                .any(|p| p.file_name().is_some() && orphaned(p))
        });
        if ours && names_dead_run && crate::exec::pidfd::send_signal(&pidfd, libc::SIGKILL).is_ok()
        {
            done.push(format!("killed FUSE server {pid} ({})", args[0]));
            live::wait_dead(&[pidfd], Instant::now() + STOP_DEADLINE);
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        for n in names() {
            assert!(parse(&n).is_some(), "{n}");
        }
        assert_eq!(
            parse("fuse-keep-cache"),
            Some(FuseTarget::Own(FuseMode::KeepCache))
        );
        assert_eq!(
            parse("bindfs"),
            Some(FuseTarget::Packaged(Packaged::Bindfs))
        );
        assert_eq!(parse("fuse"), None);
        assert_eq!(parse("ext4"), None);
    }
}
