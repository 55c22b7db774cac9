//! Filesystems the harness makes for a run (like fstests' SCRATCH_DEV):
//! a sparse image on a loop device, mkfs, mount; or tmpfs or ramfs; or
//! overlayfs over a scratch tmpfs; or a read-only image of the cases'
//! files (erofs, squashfs: `target::image`). The harness owns them, so it can also unmount and
//! mount them again (`remount`) and simulate a power cut (`crash`).
//!
//! Every resource is named `mmapconf-{img,mnt,ovl}-<pid>-<target>` so that
//! `mmapconf cleanup` can find what a SIGKILLed run left behind.

use crate::exec::live;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A named filesystem configuration, like an fstests section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The name used with `--target` and in report file names.
    pub name: String,
    /// Filesystem type: tmpfs, ramfs, ext2, ext3, ext4, xfs, btrfs, f2fs,
    /// vfat, exfat, ntfs3 or ntfs (the kernel's NTFS drivers, made by mkfs.ntfs),
    /// overlay, erofs, squashfs (read-only images, see `target::image`).
    pub fs: String,
    /// Extra mkfs arguments.
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    /// Mount options (-o).
    #[serde(default)]
    pub mount_options: String,
    /// Image size in MiB (default 64 for ext2/3/4, 320 for xfs, which needs
    /// at least 300, else 128).
    #[serde(default)]
    pub size_mib: Option<u64>,
}

impl TargetConfig {
    /// The default configuration of a filesystem type.
    pub fn plain(fs: &str) -> TargetConfig {
        TargetConfig {
            name: fs.to_string(),
            fs: fs.to_string(),
            mkfs_options: Vec::new(),
            mount_options: String::new(),
            size_mib: None,
        }
    }
}

/// What `--fs host` stands for: every kind of filesystem a QA machine has
/// besides block filesystems on disks, each built by the harness: memory
/// filesystems, one block filesystem, FUSE in every mode of the own server
/// and the FUSE filesystems distributions ship, huge pages, and read-only
/// images. (A target this machine cannot make is skipped with its reason.)
pub fn host_targets() -> Vec<String> {
    ["tmpfs", "ramfs", "ext4", "hugetlbfs", "erofs", "squashfs"]
        .into_iter()
        .map(str::to_string)
        .chain(super::fuse::targets::names())
        .collect()
}

/// `--fs` names with `host` expanded (see [`host_targets`]), in order, each once.
pub fn expand_fs_names(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let more = if n == "host" {
            host_targets()
        } else {
            vec![n.clone()]
        };
        for m in more {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

/// Reads named targets from a JSON file (a list of [`TargetConfig`]).
pub fn load_targets(path: &Path) -> Result<Vec<TargetConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_targets(&path.display().to_string(), &text)
}

fn parse_targets(name: &str, text: &str) -> Result<Vec<TargetConfig>, String> {
    serde_json::from_str(text).map_err(|e| format!("{name}:{}:{}: {e}", e.line(), e.column()))
}

/// The named targets when no `--targets-file` is given, with the name of
/// where they came from: the `ci/targets.json` of the checkout whose corpus
/// runs, else the copy built into the binary (an install has no checkout).
pub fn default_targets() -> Result<(String, Vec<TargetConfig>), String> {
    let checkout = crate::case::corpus::find()
        .ok()
        .filter(|c| c.source == crate::case::corpus::Source::Checkout)
        .and_then(|c| c.root().parent().map(|r| r.join("ci").join("targets.json")))
        .filter(|f| f.is_file());
    if let Some(file) = checkout {
        return Ok((file.display().to_string(), load_targets(&file)?));
    }
    const BUILT_IN: &str = include_str!("../../../ci/targets.json");
    let name = "embedded:ci/targets.json";
    Ok((name.to_string(), parse_targets(name, BUILT_IN)?))
}

/// How `crash` reached the state a power cut would leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMethod {
    /// FS_IOC_SHUTDOWN with NOLOGFLUSH, then unmount and mount (journal replay).
    Shutdown,
    /// A copy of the loop image taken at that instant, mounted in place of
    /// the original (journal replay on mount).
    ImageCopy,
    /// tmpfs, ramfs: memory only, so nothing survives.
    Lost,
}

impl CrashMethod {
    pub fn describe(self) -> &'static str {
        match self {
            CrashMethod::Shutdown => {
                "shutdown: FS_IOC_SHUTDOWN(NOLOGFLUSH), unmount, mount with log recovery"
            }
            CrashMethod::ImageCopy => {
                "image: copy of the block device at the crash, mounted with log recovery (fsck first where there is no journal: ext2, vfat, exfat)"
            }
            CrashMethod::Lost => "tmpfs, ramfs: memory only, nothing survives",
        }
    }
}

/// A mounted filesystem the harness made and will tear down.
#[derive(Debug)]
pub struct OwnedFs {
    pub config: TargetConfig,
    /// Where cases run.
    pub mount_point: PathBuf,
    /// The backing image and its loop device (not for tmpfs/overlay). A
    /// device given to `mount_device` has no image: teardown unmounts it
    /// and leaves the device alone (loop devices go by their image).
    image: Option<PathBuf>,
    loop_dev: Option<String>,
    /// For overlay: the tmpfs holding lower/upper/work, and the lower dir.
    overlay_base: Option<PathBuf>,
    pub lower_dir: Option<PathBuf>,
    /// A read-only image target: the staging tree it was built from (gone
    /// once the image is made) and where each case's files are in it.
    tree: Option<PathBuf>,
    layout: Option<super::image::Layout>,
    /// A FUSE target: its server and what it made (see fuse::targets).
    fuse: Option<super::fuse::targets::FuseTargetMount>,
    /// Made on a device the user gave (`run --device`), not a loop image:
    /// a crash can only be a shutdown (FS_IOC_SHUTDOWN), never a copy.
    on_device: bool,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    // After teardown has begun a program could only make what it has
    // already looked at (a mount, a loop device).
    if live::stopping() {
        return Err("the harness is stopping".to_string());
    }
    let shown = format!("{cmd:?}").replace('"', "");
    let out = crate::exec::fork_server::output(cmd).map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{shown}: {}",
            err.trim().lines().last().unwrap_or("failed")
        ))
    }
}

fn have_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
        || ["/sbin", "/usr/sbin"]
            .iter()
            .any(|d| Path::new(d).join(name).is_file())
}

/// Whether the running kernel knows a filesystem type.
pub fn kernel_knows(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
        .unwrap_or(false)
}

/// Why this target cannot be made here, or None when it can.
pub fn unavailable(config: &TargetConfig) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("making a scratch filesystem needs root".to_string());
    }
    if let Some(t) = super::fuse::targets::parse(&config.fs) {
        return super::fuse::targets::unavailable(t);
    }
    if !kernel_knows(&config.fs) {
        return Some(format!(
            "the kernel does not support {} (not in /proc/filesystems)",
            config.fs
        ));
    }
    let needs = match config.fs.as_str() {
        "tmpfs" | "overlay" | "ramfs" | "hugetlbfs" => None,
        fs if super::image::is_image_fs(fs) => Some(super::image::builder(fs).to_string()),
        fs => Some(mkfs_program(fs)),
    };
    if let Some(tool) = needs {
        if !have_command(&tool) {
            return Some(format!("{tool} is not installed"));
        }
        if !have_command("losetup") {
            return Some("losetup is not installed".to_string());
        }
    }
    None
}

/// The smallest comfortable image for each filesystem: small images make
/// `fill_fs`, crash-image copies and e2fsck fast (mkfs.xfs refuses under
/// 300 MiB, mkfs.btrfs under 114 MiB; the corpus passes on 16 MiB ext4).
fn default_size_mib(fs: &str) -> u64 {
    match fs {
        "ext2" | "ext3" | "ext4" => 64,
        "xfs" => 320,
        _ => 128,
    }
}

/// Where loop images go: /dev/shm when it is a tmpfs, else `base`.
///
/// What a case observes is the scratch filesystem's own behaviour, which
/// does not depend on the medium under its loop device; in RAM, fsync,
/// `fill_fs` and crash-image copies cost memory copies, not disk writes.
/// The images are sparse: they take what the filesystem wrote, at most
/// their size (128 MiB to 320 MiB) each.
pub fn image_dir(base: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let in_ram = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    let writable = nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok();
    if in_ram && writable {
        shm.to_path_buf()
    } else {
        base.to_path_buf()
    }
}

/// The program that makes filesystem `fs`: `mkfs.FS`, except for the
/// kernel's NTFS drivers (ntfs3, and `ntfs`, the driver that replaced it in
/// Debian's 7.x kernels), whose volumes ntfs-3g's mkfs.ntfs makes (neither
/// driver has a mkfs of its own).
fn mkfs_program(fs: &str) -> String {
    match fs {
        "ntfs3" | "ntfs" => "mkfs.ntfs".to_string(),
        fs => format!("mkfs.{fs}"),
    }
}

fn mkfs_args(config: &TargetConfig) -> Vec<String> {
    let mut args: Vec<String> = match config.fs.as_str() {
        // Quiet, no questions. 4 KiB blocks unless the target says
        // otherwise: mke2fs would pick 1 KiB for an image this small
        // (mke2fs.conf's "small" type), which is not the ext4 people run.
        "ext2" | "ext3" | "ext4" if !config.mkfs_options.iter().any(|o| o == "-b") => {
            vec!["-q".into(), "-F".into(), "-b".into(), "4096".into()]
        }
        "ext2" | "ext3" | "ext4" => vec!["-q".into(), "-F".into()],
        "xfs" => vec!["-q".into(), "-f".into()],
        "btrfs" => vec!["-q".into(), "-f".into()],
        "f2fs" => vec!["-q".into(), "-f".into()],
        // Quick (no zeroing of the whole device), quiet, and forced: mkntfs
        // refuses a whole disk (a loop device) that is not a partition.
        "ntfs3" | "ntfs" => vec!["-Q".into(), "-q".into(), "-F".into()],
        _ => Vec::new(),
    };
    args.extend(config.mkfs_options.iter().cloned());
    args
}

impl OwnedFs {
    /// Makes and mounts a filesystem for `config` under `base`.
    pub fn create(config: &TargetConfig, base: &Path) -> Result<OwnedFs, String> {
        OwnedFs::create_for(config, base, &[])
    }

    /// [`OwnedFs::create`] for a run of `cases`: a read-only image target
    /// is built holding their starting files (see `target::image`).
    pub fn create_for(
        config: &TargetConfig,
        base: &Path,
        cases: &[crate::case::LoadedCase],
    ) -> Result<OwnedFs, String> {
        if let Some(why) = unavailable(config) {
            return Err(why);
        }
        let _making = live::creating()?;
        if let Some(t) = super::fuse::targets::parse(&config.fs) {
            // The FUSE target registers and removes what it makes itself.
            let fuse = super::fuse::targets::FuseTargetMount::start(t, &config.name, base)?;
            return Ok(OwnedFs {
                config: config.clone(),
                mount_point: fuse.mount_point().to_path_buf(),
                image: None,
                loop_dev: None,
                overlay_base: None,
                lower_dir: None,
                tree: None,
                layout: None,
                fuse: Some(fuse),
                on_device: false,
            });
        }
        let tag = format!("{}-{}", std::process::id(), config.name);
        let mount_point = base.join(format!("mmapconf-mnt-{tag}"));
        let mut fs = OwnedFs {
            config: config.clone(),
            mount_point,
            image: None,
            loop_dev: None,
            overlay_base: None,
            lower_dir: None,
            tree: None,
            layout: None,
            fuse: None,
            on_device: false,
        };
        // Each name is registered before it is made (see exec::live).
        live::set_fs(fs.resources());
        let made = std::fs::create_dir_all(&fs.mount_point)
            .map_err(|e| format!("{}: {e}", fs.mount_point.display()))
            .and_then(|()| match config.fs.as_str() {
                "tmpfs" => fs.mount_tmpfs(&fs.mount_point.clone()),
                "ramfs" => fs.mount_ramfs(),
                "overlay" => fs.make_overlay(base, &tag),
                "hugetlbfs" => super::hugetlb::mount(&fs.mount_point, &config.mount_options),
                f if super::image::is_image_fs(f) => fs.make_image(base, &tag, cases),
                _ => fs.make_block_fs(base, &tag),
            });
        if let Err(e) = made {
            fs.destroy();
            return Err(e);
        }
        Ok(fs)
    }

    /// Mounts an existing block device of type `config.fs` at
    /// `mount_point` (made if missing), for power-cut mode: a VM's disk, or
    /// a loop device someone else made. The harness owns the mount, not
    /// the device: teardown unmounts and leaves the device as it is.
    pub fn mount_device(
        config: &TargetConfig,
        device: &str,
        mount_point: &Path,
    ) -> Result<OwnedFs, String> {
        let _making = live::creating()?;
        let fs = OwnedFs {
            config: config.clone(),
            mount_point: mount_point.to_path_buf(),
            image: None,
            loop_dev: Some(device.to_string()),
            overlay_base: None,
            lower_dir: None,
            tree: None,
            layout: None,
            fuse: None,
            on_device: false,
        };
        live::set_fs(fs.resources());
        let mounted = std::fs::create_dir_all(mount_point)
            .map_err(|e| format!("{}: {e}", mount_point.display()))
            .and_then(|()| fs.mount_block());
        if let Err(e) = mounted {
            live::remove_fs(&fs.mount_point);
            let _ = std::fs::remove_dir(&fs.mount_point);
            return Err(e);
        }
        Ok(fs)
    }

    /// Makes filesystem `config.fs` on `device` (a disk the user gave,
    /// checked by `target::device`) and mounts it under `base`, as fstests
    /// uses SCRATCH_DEV. The device stays as the run leaves it.
    pub fn make_on_device(
        config: &TargetConfig,
        device: &str,
        base: &Path,
    ) -> Result<OwnedFs, String> {
        run(Command::new(mkfs_program(&config.fs))
            .args(mkfs_args(config))
            .arg(device))?;
        let mount_point = base.join(format!(
            "mmapconf-mnt-{}-{}",
            std::process::id(),
            config.name
        ));
        let mut fs = OwnedFs::mount_device(config, device, &mount_point)?;
        fs.on_device = true;
        Ok(fs)
    }

    /// What the run's capabilities say of this target (see `crash`).
    pub fn made(&self) -> crate::target::capability::Made {
        let device_can_crash = !self.on_device || can_shut_down(&self.mount_point, &self.config.fs);
        crate::target::capability::Made {
            // Data outlive an unmount and a crash on a block device, not in
            // memory (tmpfs, ramfs: a remount or crash loses everything).
            persistent: self.loop_dev.is_some(),
            // A read-only image holds nothing a power cut could lose; a FUSE
            // target's server cannot be cut at one instant with its storage.
            // On a given device only a shutdown can cut, and ext2 has no
            // journal to make that a power cut (see `crash`).
            can_crash: !matches!(self.config.fs.as_str(), "overlay" | "hugetlbfs")
                && device_can_crash
                && self.layout.is_none()
                && self.fuse.is_none(),
            no_crash_because: (!device_can_crash).then_some(
                "on a device given with --device a crash is FS_IOC_SHUTDOWN, which this filesystem does not offer as a power cut (no journal, or no shutdown)",
            ),
            has_backing_files: self.backing_dir().is_some(),
        }
    }

    /// The directory that holds the target's files as its storage keeps
    /// them, mirroring the mount (the harness's own FUSE servers); None
    /// for a filesystem on a device or in memory.
    pub fn backing_dir(&self) -> Option<&Path> {
        self.fuse.as_ref().and_then(|f| f.backing_dir())
    }

    /// Whether this is a read-only image target (erofs, squashfs).
    fn is_image(&self) -> bool {
        super::image::is_image_fs(&self.config.fs)
    }

    /// For a read-only image target, where each case's files are: the
    /// scratch root (an absolute path under the mount point) and the
    /// layout. None for a target cases make their files on.
    pub fn premade(&self) -> Option<(PathBuf, &super::image::Layout)> {
        self.layout
            .as_ref()
            .map(|l| (self.mount_point.join(&l.root), l))
    }

    /// What teardown removes: the mounts, and the image with the name its
    /// crash copy will have (a given device has no image: it is left alone).
    fn resources(&self) -> live::FsResources {
        live::FsResources {
            mounts: [Some(self.mount_point.clone()), self.overlay_base.clone()]
                .into_iter()
                .flatten()
                .collect(),
            images: self
                .image
                .iter()
                .flat_map(|i| [i.clone(), crash_copy_of(i)])
                .collect(),
            dirs: self.tree.iter().cloned().collect(),
        }
    }

    fn mount_tmpfs(&self, at: &Path) -> Result<(), String> {
        // Small, as the images are (default_size_mib): no case needs more
        // than a few pages, and `fill_fs` writes all of it, which under TCG
        // took 2 to 12 s a case at 128 MiB (issue 16).
        let opts = if self.config.mount_options.is_empty() {
            "size=32m".to_string()
        } else {
            self.config.mount_options.clone()
        };
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "mmapconf"])
            .arg(at))
        .map(|_| ())
    }

    /// ramfs has no size limit (no `size=` option: it grows until memory
    /// runs out), so cases that fill it are kept off by the `fills_up`
    /// capability, which its statfs (f_blocks 0) fails.
    fn mount_ramfs(&self) -> Result<(), String> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "ramfs"]);
        if !self.config.mount_options.is_empty() {
            cmd.args(["-o", &self.config.mount_options]);
        }
        run(cmd.arg("mmapconf").arg(&self.mount_point)).map(|_| ())
    }

    /// A read-only image of every case's files (see `target::image`):
    /// staged in a tree, built, attached read-only and mounted.
    fn make_image(
        &mut self,
        base: &Path,
        tag: &str,
        cases: &[crate::case::LoadedCase],
    ) -> Result<(), String> {
        let dir = image_dir(base);
        let image = dir.join(format!("mmapconf-img-{tag}.img"));
        let tree = dir.join(format!("mmapconf-img-{tag}.tree"));
        self.image = Some(image.clone());
        self.tree = Some(tree.clone());
        live::set_fs(self.resources());
        std::fs::create_dir(&tree).map_err(|e| format!("{}: {e}", tree.display()))?;
        let layout = super::image::stage(&tree, tag, cases, super::page_size())?;
        run(&mut super::image::build_command(
            &self.config.fs,
            &tree,
            &image,
            &self.config.mkfs_options,
        ))?;
        // The image holds it all now.
        std::fs::remove_dir_all(&tree).map_err(|e| format!("{}: {e}", tree.display()))?;
        self.attach(&image)?;
        self.mount_block()?;
        self.layout = Some(layout);
        Ok(())
    }

    fn make_overlay(&mut self, base: &Path, tag: &str) -> Result<(), String> {
        // lower, upper and work on one scratch tmpfs, so a case's files can
        // be put in the lower layer and copied up by a write.
        let ovl = base.join(format!("mmapconf-ovl-{tag}"));
        self.overlay_base = Some(ovl.clone());
        live::set_fs(self.resources());
        std::fs::create_dir_all(&ovl).map_err(|e| format!("{}: {e}", ovl.display()))?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=128m", "mmapconf"])
            .arg(&ovl))?;
        for d in ["lower", "upper", "work"] {
            std::fs::create_dir(ovl.join(d)).map_err(|e| format!("overlay {d}: {e}"))?;
        }
        self.lower_dir = Some(ovl.join("lower"));
        self.mount_overlay()
    }

    fn mount_overlay(&self) -> Result<(), String> {
        let ovl = self.overlay_base.as_ref().ok_or("no overlay base")?;
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            ovl.join("lower").display(),
            ovl.join("upper").display(),
            ovl.join("work").display()
        );
        if !self.config.mount_options.is_empty() {
            opts = format!("{opts},{}", self.config.mount_options);
        }
        run(Command::new("mount")
            .args(["-t", "overlay", "-o", &opts, "mmapconf"])
            .arg(&self.mount_point))
        .map(|_| ())
    }

    fn make_block_fs(&mut self, base: &Path, tag: &str) -> Result<(), String> {
        let image = image_dir(base).join(format!("mmapconf-img-{tag}.img"));
        let size = self
            .config
            .size_mib
            .unwrap_or_else(|| default_size_mib(&self.config.fs))
            * 1024
            * 1024;
        self.image = Some(image.clone());
        live::set_fs(self.resources());
        let f = std::fs::File::create(&image).map_err(|e| format!("{}: {e}", image.display()))?;
        f.set_len(size)
            .map_err(|e| format!("{}: {e}", image.display()))?;
        drop(f);
        let dev = self.attach(&image)?;
        run(Command::new(mkfs_program(&self.config.fs))
            .args(mkfs_args(&self.config))
            .arg(&dev))?;
        self.mount_block()
    }

    /// Attaches `image` to a free loop device. (Teardown finds it by its
    /// backing file, which is registered.)
    fn attach(&mut self, image: &Path) -> Result<String, String> {
        // Targets are made at once; two losetup --find may pick the same free device.
        static ATTACHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let dev = {
            let _one_at_a_time = ATTACHING.lock().unwrap_or_else(|e| e.into_inner());
            // An image target's device is read-only too: nothing reaches the image.
            let ro = self.is_image().then_some("--read-only");
            run(Command::new("losetup")
                .args(["--find", "--show"])
                .args(ro)
                .arg(image))?
        };
        self.loop_dev = Some(dev.clone());
        Ok(dev)
    }

    fn mount_block(&self) -> Result<(), String> {
        let dev = self.loop_dev.as_ref().ok_or("no loop device")?;
        let mut cmd = Command::new("mount");
        if self.config.fs == "ntfs" {
            // `mount -t ntfs` runs /sbin/mount.ntfs when it exists, and
            // ntfs-3g installs that as itself: -i keeps the kernel's driver.
            cmd.arg("-i");
        }
        cmd.args(["-t", &self.config.fs]);
        let opts = match (self.is_image(), self.config.mount_options.as_str()) {
            (true, "") => "ro".to_string(),
            (true, o) => format!("ro,{o}"),
            (false, o) => o.to_string(),
        };
        if !opts.is_empty() {
            cmd.args(["-o", &opts]);
        }
        run(cmd.arg(dev).arg(&self.mount_point)).map(|_| ())
    }

    fn mount_again(&self) -> Result<(), String> {
        match self.config.fs.as_str() {
            "tmpfs" => self.mount_tmpfs(&self.mount_point),
            "ramfs" => self.mount_ramfs(),
            "overlay" => self.mount_overlay(),
            "hugetlbfs" => super::hugetlb::mount(&self.mount_point, &self.config.mount_options),
            _ => self.mount_block(),
        }
    }

    /// Makes the mount read-only or read-write in place (`mount -o remount`).
    fn set_read_only(&self, read_only: bool) -> Result<(), String> {
        let opt = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        run(Command::new("mount")
            .args(["-o", opt])
            .arg(&self.mount_point))
        .map(|_| ())
    }

    /// Clean unmount and mount again: all write-back is done, the page cache
    /// of the filesystem is gone. Fails with EBUSY while files are in use.
    /// With `read_only`, it is mounted again read-only; the next remount
    /// (or the end of the case) makes it writable again.
    pub fn remount(&self, read_only: bool) -> Result<(), nix::errno::Errno> {
        let _making = live::creating().map_err(|_| nix::errno::Errno::EINTR)?;
        if self.fuse.is_some() {
            // Unmounting ends a FUSE server and what it keeps in memory;
            // its targets are not `persistent`, so no case asks for this.
            return Err(nix::errno::Errno::EOPNOTSUPP);
        }
        unmount(&self.mount_point)?;
        self.mount_again().map_err(|e| {
            eprintln!("mmapconf: remount of {}: {e}", self.mount_point.display());
            nix::errno::Errno::EIO
        })?;
        if read_only {
            self.set_read_only(true).map_err(|e| {
                eprintln!(
                    "mmapconf: read-only remount of {}: {e}",
                    self.mount_point.display()
                );
                nix::errno::Errno::EIO
            })?;
        }
        Ok(())
    }

    /// Commits everything pending on this filesystem (syncfs), frees of
    /// deleted files included.
    pub fn sync(&self) {
        if let Ok(d) = std::fs::File::open(&self.mount_point) {
            let _ = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d));
        }
    }

    /// The read-only fsck of a block filesystem the harness made, on its
    /// device unmounted for it, mounted again after (`target::health`);
    /// None for targets without one (memory, FUSE, read-only images).
    pub fn check(&self) -> Option<super::health::fsck::Outcome> {
        let dev = self.loop_dev.as_ref()?;
        if self.is_image() || super::health::fsck::command(&self.config.fs, dev).is_none() {
            return None;
        }
        let _making = live::creating().ok()?;
        let not_run = |why: String| super::health::fsck::Outcome {
            command: format!("fsck of {dev}"),
            clean: false,
            exit_status: None,
            output: why,
        };
        if let Err(e) = unmount(&self.mount_point) {
            return Some(not_run(format!("unmount before fsck: {e}")));
        }
        let outcome = super::health::fsck::check(&self.config.fs, dev);
        if let Err(e) = self.mount_again() {
            eprintln!("mmapconf: mount after fsck: {e}");
        }
        outcome
    }

    /// Makes the filesystem writable again if a case left it read-only.
    pub fn ensure_writable(&self) {
        if self.is_image() {
            // A read-only image: it never was writable.
            return;
        }
        let ro = super::mount_of(&self.mount_point).is_some_and(|m| {
            m.mount_point == self.mount_point.to_string_lossy()
                && m.options.split([',', ' ']).next() == Some("ro")
        });
        if ro {
            let _ = self.set_read_only(false);
        }
    }

    /// What a power cut leaves: the filesystem as its device holds it now,
    /// recovered from its journal. The caller has killed every process
    /// using it (a power cut does that too).
    pub fn crash(&mut self) -> Result<CrashMethod, String> {
        // It makes a crash copy, a loop device and a mount.
        let _making = live::creating()?;
        if self.fuse.is_some() {
            return Err("crash is not supported on FUSE targets".to_string());
        }
        match self.config.fs.as_str() {
            "tmpfs" | "ramfs" => {
                unmount(&self.mount_point).map_err(|e| format!("unmount: {e}"))?;
                self.mount_again()?;
                Ok(CrashMethod::Lost)
            }
            "overlay" => Err("crash is not supported on overlay targets".to_string()),
            // Without a journal, unmounting after a shutdown still writes
            // metadata held in memory; only a copy of the device is faithful.
            fs if !journaled(fs) => {
                self.crash_by_image_copy()?;
                Ok(CrashMethod::ImageCopy)
            }
            _ if shutdown(&self.mount_point).is_ok() => {
                unmount(&self.mount_point).map_err(|e| format!("unmount after shutdown: {e}"))?;
                self.mount_again()?;
                Ok(CrashMethod::Shutdown)
            }
            _ => {
                self.crash_by_image_copy()?;
                Ok(CrashMethod::ImageCopy)
            }
        }
    }

    /// Copies the image as the device holds it at this instant (the loop
    /// driver writes through to the image file, so the file is the disk),
    /// then mounts the copy where the original was.
    fn crash_by_image_copy(&mut self) -> Result<(), String> {
        let image = self.image.clone().ok_or_else(|| {
            format!(
                "{} refused FS_IOC_SHUTDOWN, and a crash by copying the device needs a loop image the harness made, not a device it was given",
                self.config.fs
            )
        })?;
        // Registered with the image (see `resources`).
        let copy = crash_copy_of(&image);
        // Reflink where the host filesystem can, else a sparse copy.
        run(Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&image)
            .arg(&copy))?;
        unmount(&self.mount_point).map_err(|e| format!("unmount: {e}"))?;
        if let Some(dev) = self.loop_dev.take() {
            run(Command::new("losetup").args(["-d", &dev]))?;
        }
        let _ = std::fs::remove_file(&image);
        std::fs::rename(&copy, &image).map_err(|e| format!("rename crash image: {e}"))?;
        let dev = self.attach(&image)?;
        if let Some(repair) = repair_command(&self.config.fs, &dev) {
            // No journal to replay: as after a real power cut, fsck repairs
            // the metadata (0, 1 and 2 mean clean or corrected for e2fsck,
            // fsck.fat and fsck.exfat alike).
            let shown = format!("{repair:?}").replace('"', "");
            let out =
                crate::exec::fork_server::output(&repair).map_err(|e| format!("{shown}: {e}"))?;
            if out.status.code().is_none_or(|c| c > 2) {
                return Err(format!(
                    "{shown} after the crash could not repair {dev}: {}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
        self.mount_block()
    }

    /// Unmounts and removes everything this filesystem used, as teardown
    /// would: a crash copy left by a failed crash step included.
    pub fn destroy(&mut self) {
        if let Some(mut f) = self.fuse.take() {
            if let Err(e) = f.stop() {
                eprintln!("mmapconf: target {}: {e}", self.config.name);
            }
        }
        live::release_fs(&self.resources());
        live::remove_fs(&self.mount_point);
        self.overlay_base = None;
        self.loop_dev = None;
        self.image = None;
        self.tree = None;
        self.layout = None;
    }
}

impl Drop for OwnedFs {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Whether filesystem `fs` recovers from a power cut by itself on mount
/// (a journal, a log or checkpoints). ext2, vfat and exfat do not: the FAT
/// drivers only mark the volume dirty (vfat's and exfat's "volume was not
/// properly unmounted" warning) and leave the repair to fsck.
fn journaled(fs: &str) -> bool {
    !matches!(fs, "ext2" | "vfat" | "exfat")
}

/// The fsck that repairs `fs` on `dev` after a crash, as a user would run
/// it after a power cut; None for journaled filesystems (the mount replays
/// the journal).
fn repair_command(fs: &str, dev: &str) -> Option<Command> {
    let (prog, args): (&str, &[&str]) = match fs {
        "ext2" => ("e2fsck", &["-f", "-y"]),
        "vfat" => ("fsck.fat", &["-a", "-w"]),
        "exfat" => ("fsck.exfat", &["-y"]),
        _ => return None,
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).arg(dev);
    Some(cmd)
}

/// Where the crash copy of `image` is made before it takes the image's place.
fn crash_copy_of(image: &Path) -> PathBuf {
    image.with_extension("crash.img")
}

/// _IOR('X', 125, __u32)
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;

/// FS_IOC_SHUTDOWN with FSOP_GOING_FLAGS_NOLOGFLUSH: the filesystem stops
/// at once without writing its log, as in fstests' `_scratch_shutdown -f`.
fn shutdown(mount_point: &Path) -> Result<(), nix::errno::Errno> {
    const NOLOGFLUSH: u32 = 2;
    let dir = std::fs::File::open(mount_point).map_err(|_| nix::errno::Errno::EIO)?;
    let flags: u32 = NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 from a valid pointer.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            FS_IOC_SHUTDOWN,
            &flags,
        )
    };
    nix::errno::Errno::result(rc).map(|_| ())
}

/// Whether the filesystem at `mount_point` knows FS_IOC_SHUTDOWN, asked
/// harmlessly: with a flag no filesystem defines, one that knows the ioctl
/// answers EINVAL, one that does not ENOTTY. ext2 knows it but has no
/// journal, so a shutdown is no power cut there.
fn can_shut_down(mount_point: &Path, fs: &str) -> bool {
    let Ok(dir) = std::fs::File::open(mount_point) else {
        return false;
    };
    let flags: u32 = 0xff;
    // SAFETY: the ioctl reads one u32 from a valid pointer; no filesystem
    // acts on this flag.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            FS_IOC_SHUTDOWN,
            &flags,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    rc != 0 && errno == Some(libc::EINVAL) && fs != "ext2"
}

/// Unmounts, and fails if anything still uses the filesystem: `remount`
/// and `crash` must really end this mount before mounting the device again
/// (a lazily detached one would live on and be mounted again as it is).
pub fn unmount(at: &Path) -> Result<(), nix::errno::Errno> {
    let _gate = live::unmounting();
    nix::mount::umount(at)
}

/// Unmounts for teardown; lazily if something still holds it (a killed
/// process's last references go away on their own).
pub fn detach_mount(at: &Path) -> Result<(), String> {
    let strict = {
        let _gate = live::unmounting();
        nix::mount::umount(at)
    };
    match strict {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(_) => nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("umount {}: {e}", at.display())),
    }
}

/// Removes a mount point once nothing is mounted there. One of the
/// harness's own names (`mmapconf-mnt-...`) goes with what is in it:
/// something made there while it was not mounted. Not if it is still a
/// mount point (its filesystem is not ours to empty), and never a mount
/// point someone gave (`power-cut --mount`).
pub fn remove_mount_point(at: &Path) {
    let ours = at
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("mmapconf-"));
    match std::fs::remove_dir(at) {
        Err(e) if ours && e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            let dev =
                |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
            let parent = at.parent().unwrap_or(Path::new("/"));
            if dev(at).is_ok() && dev(at).ok() == dev(parent).ok() {
                let _ = std::fs::remove_dir_all(at);
            }
        }
        _ => {}
    }
}

/// The loop devices that are attached, each with its backing file (as the
/// kernel names it now, without the " (deleted)" of a removed file).
pub fn loop_devices() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Some(back) = backing_file(&name) {
            found.push((name, back));
        }
    }
    found
}

fn backing_file(loop_name: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/sys/block/{loop_name}/loop/backing_file")).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

/// Detaches the loop device `loop_name` (`loop3`) if its backing file is
/// one `ours` accepts, as `losetup -d` does (LOOP_CLR_FD), but without
/// starting a program (teardown runs after the fork server is gone). The
/// backing file is checked with the device open: from then on it cannot be
/// detached and attached to another file, so someone else's device is never
/// taken. A device still in use is detached when its last user closes it.
pub fn detach_loop_if(loop_name: &str, ours: impl Fn(&Path) -> bool) -> bool {
    const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
    let Ok(dev) = std::fs::File::open(format!("/dev/{loop_name}")) else {
        return false;
    };
    if !backing_file(loop_name).is_some_and(|b| ours(&b)) {
        return false;
    }
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dev), LOOP_CLR_FD, 0) };
    rc == 0
}

/// Detaches every loop device backed by one of `images`.
pub fn detach_loops_backed_by(images: &[PathBuf]) {
    if images.is_empty() {
        return;
    }
    let ours = |b: &Path| images.iter().any(|i| i == b);
    for (name, back) in loop_devices() {
        if ours(&back) {
            detach_loop_if(&name, ours);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(cmd: Option<Command>) -> Option<String> {
        cmd.map(|c| format!("{c:?}").replace('"', ""))
    }

    #[test]
    fn each_filesystem_has_its_mkfs_and_ntfs3_uses_mkfs_ntfs() {
        let args = |fs: &str| mkfs_args(&TargetConfig::plain(fs)).join(" ");
        assert_eq!(mkfs_program("vfat"), "mkfs.vfat");
        assert_eq!(mkfs_program("exfat"), "mkfs.exfat");
        assert_eq!(mkfs_program("f2fs"), "mkfs.f2fs");
        assert_eq!(mkfs_program("ntfs3"), "mkfs.ntfs");
        assert_eq!(args("ntfs3"), "-Q -q -F");
        assert_eq!(mkfs_program("ntfs"), "mkfs.ntfs");
        assert_eq!(args("ntfs"), "-Q -q -F");
        assert_eq!(args("f2fs"), "-q -f");
        assert_eq!(args("vfat"), "");
        let mut extra = TargetConfig::plain("vfat");
        extra.mkfs_options = vec!["-F".into(), "32".into()];
        assert_eq!(mkfs_args(&extra).join(" "), "-F 32");
    }

    #[test]
    fn filesystems_without_a_journal_are_repaired_by_fsck_after_a_crash() {
        for fs in ["ext2", "vfat", "exfat"] {
            assert!(!journaled(fs), "{fs}");
        }
        for fs in ["ext4", "xfs", "btrfs", "f2fs", "ntfs3"] {
            assert!(journaled(fs), "{fs}");
            assert!(repair_command(fs, "/dev/loop9").is_none(), "{fs}");
        }
        assert_eq!(
            shown(repair_command("ext2", "/dev/loop9")).as_deref(),
            Some("e2fsck -f -y /dev/loop9")
        );
        assert_eq!(
            shown(repair_command("vfat", "/dev/loop9")).as_deref(),
            Some("fsck.fat -a -w /dev/loop9")
        );
        assert_eq!(
            shown(repair_command("exfat", "/dev/loop9")).as_deref(),
            Some("fsck.exfat -y /dev/loop9")
        );
    }
}
