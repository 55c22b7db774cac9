//! Where cases run: the environment (kernel, architecture, page size, the
//! filesystem under the scratch directory) and what it can do.

pub mod capability;
pub mod cleanup;
pub mod device;
pub mod fs;
pub mod fuse;
pub mod health;
pub mod hugetlb;
pub mod image;
pub mod ipc;
pub mod kconfig;
pub mod probe;
pub mod second_mount;

use crate::case::model::Probe;
use crate::names::KernelVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as u64
    } else {
        4096
    }
}

/// Facts about where a run happens, as recorded in its report.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Environment {
    /// uname -r.
    pub kernel_release: String,
    /// uname -v.
    pub kernel_version: String,
    /// uname -m.
    pub arch: String,
    pub page_size: u64,
    /// PRETTY_NAME from /etc/os-release.
    pub distro: String,
    /// Filesystem type of the scratch directory, from /proc/self/mountinfo
    /// ("ext4", "fuse.bindfs", "fuseblk").
    pub fs_type: String,
    /// For FUSE: the server's subtype when the mount names one ("bindfs"
    /// of "fuse.bindfs"); the mount source then often names the server or device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_subtype: Option<String>,
    /// Mount options of that filesystem (per-mount and superblock options).
    pub mount_options: String,
    /// Mount point of that filesystem.
    pub mount_point: String,
    /// Device or source of that filesystem.
    pub mount_source: String,
    /// Where the cases' scratch directories were made.
    pub scratch_dir: String,
    /// The scratch filesystem configuration the harness made for the run
    /// (`--fs`/`--target`); absent when cases ran in a directory of an existing mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the target filesystem can do, measured in the scratch root at
    /// the start of the run (absent when no case ran).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capabilities: BTreeMap<Probe, capability::Measured>,
    /// The second mount of the filesystem (`run --second-dir`): where, its
    /// options, and whether it shares the first's superblock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_mount: Option<String>,
    /// Effective uid of the harness.
    pub euid: u32,
    pub harness_version: String,
    /// The cases the run was given: their source (paths on the command
    /// line, `$MMAPCONF_CASES`, a checkout, a data directory, the corpus
    /// built into the binary) and location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<crate::case::corpus::Corpus>,
}

impl Environment {
    /// Reads the environment of the machine, for a scratch directory at `dir`.
    pub fn probe(dir: &Path) -> Environment {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let mount = mount_of(dir).unwrap_or_default();
        Environment {
            kernel_release: field(|u| u.release()),
            kernel_version: field(|u| u.version()),
            arch: field(|u| u.machine()),
            page_size: page_size(),
            distro: distro(),
            fs_subtype: fuse_subtype(&mount.fs_type),
            fs_type: mount.fs_type,
            mount_options: mount.options,
            mount_point: mount.mount_point,
            mount_source: mount.source,
            scratch_dir: dir.display().to_string(),
            target: None,
            capabilities: BTreeMap::new(),
            second_mount: None,
            euid: nix::unistd::geteuid().as_raw(),
            harness_version: env!("CARGO_PKG_VERSION").to_string(),
            corpus: None,
        }
    }

    /// The environment of a run whose scratch root is `root`: the machine,
    /// the target the harness made for it (if any) and what the target can
    /// do, measured in `root`. Every way of running cases starts here.
    pub fn of_run(root: &Path, owned: Option<&fs::OwnedFs>) -> Environment {
        let mut env = Environment::probe(root);
        env.target = owned.map(|fs| fs.config.name.clone());
        env.capabilities = capability::measure(root, owned.map(|fs| fs.made()));
        env
    }

    /// Whether a filesystem name of a case (`requires.fs`, `when.fs`)
    /// names this one: its type, its family ("fuse" for every FUSE
    /// filesystem, fuseblk included) or its FUSE subtype ("fuse.bindfs").
    pub fn is_fs(&self, name: &str) -> bool {
        name == self.fs_type
            || (name == "fuse" && is_fuse(&self.fs_type))
            || self
                .fs_subtype
                .as_ref()
                .is_some_and(|sub| name.strip_prefix("fuse.") == Some(sub))
    }

    /// Whether the target is one of `names` (targets the harness built).
    pub fn is_target(&self, names: &[String]) -> bool {
        self.target.as_ref().is_some_and(|t| names.contains(t))
    }

    /// Whether the mount has every option of `wanted`, as mountinfo writes them.
    pub fn has_mount_options(&self, wanted: &[String]) -> bool {
        let have: Vec<&str> = self.mount_options.split([',', ' ']).collect();
        wanted.iter().all(|w| have.contains(&w.as_str()))
    }

    pub fn kernel(&self) -> KernelVersion {
        KernelVersion::parse(&self.kernel_release).unwrap_or(KernelVersion(0, 0, 0))
    }
}

/// FUSE mounts show as "fuse", "fuseblk" (a block device) or "fuse.SUBTYPE".
pub fn is_fuse(fs_type: &str) -> bool {
    fs_type == "fuse" || fs_type == "fuseblk" || fs_type.starts_with("fuse.")
}

fn fuse_subtype(fs_type: &str) -> Option<String> {
    fs_type
        .strip_prefix("fuse.")
        .or_else(|| fs_type.strip_prefix("fuseblk."))
        .map(str::to_string)
}

fn distro() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// One line of /proc/self/mountinfo, the parts we report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    pub options: String,
}

/// The mount that holds `path`: the longest mount point that is a prefix of
/// it. The last such line wins, since later mounts stack on earlier ones.
pub fn mount_of(path: &Path) -> Option<MountInfo> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<MountInfo> = None;
    for line in text.lines() {
        let Some(m) = parse_mountinfo_line(line) else {
            continue;
        };
        if !path.starts_with(&m.mount_point) {
            continue;
        }
        let better = best
            .as_ref()
            .is_none_or(|b| m.mount_point.len() >= b.mount_point.len());
        if better {
            best = Some(m);
        }
    }
    best
}

/// Parses "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
pub fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    let mount_point = unescape(l.get(4)?);
    let mount_opts = l.get(5)?.to_string();
    let fs_type = r.first()?.to_string();
    let source = unescape(r.get(1).unwrap_or(&""));
    let super_opts = r.get(2).unwrap_or(&"").to_string();
    Some(MountInfo {
        mount_point,
        fs_type,
        source,
        options: if super_opts.is_empty() {
            mount_opts
        } else {
            format!("{mount_opts} {super_opts}")
        },
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The scratch area of one run: `<base>/mmapconf-run-<pid>-<n>/`, one
/// subdirectory per case. The fixed prefix lets `cleanup` find what a
/// killed run left behind.
pub struct ScratchRoot {
    pub path: PathBuf,
    /// On overlayfs: (mount point, lower dir). Directories are made in the
    /// lower layer before the overlay ever looks them up, so the files a
    /// case starts with are lower files that a write must copy up.
    lower: Option<(PathBuf, PathBuf)>,
    /// On a read-only image: every case's directory, made with the image
    /// (case id → path). Nothing is made or removed there.
    premade: Option<std::collections::HashMap<String, PathBuf>>,
}

pub const SCRATCH_PREFIX: &str = "mmapconf-run-";

impl ScratchRoot {
    pub fn create(base: &Path) -> std::io::Result<ScratchRoot> {
        ScratchRoot::create_layered(base, None)
    }

    /// A scratch root on an overlay mounted at `base` whose lower layer is `lower`.
    pub fn create_layered(base: &Path, lower: Option<&Path>) -> std::io::Result<ScratchRoot> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = base.join(format!("{SCRATCH_PREFIX}{}-{stamp:x}", std::process::id()));
        let root = ScratchRoot {
            path,
            lower: lower.map(|l| (base.to_path_buf(), l.to_path_buf())),
            premade: None,
        };
        // Registered before it is made, so an interrupt removes it (exec::live).
        let _making = crate::exec::live::creating().map_err(std::io::Error::other)?;
        crate::exec::live::add_root(root.path.clone());
        std::fs::create_dir_all(root.physical(&root.path))?;
        Ok(root)
    }

    /// Where a directory of the scratch root is made: itself, or its place in the lower layer.
    fn physical(&self, dir: &Path) -> PathBuf {
        match &self.lower {
            Some((mount, lower)) => dir
                .strip_prefix(mount)
                .map(|rel| lower.join(rel))
                .unwrap_or_else(|_| dir.to_path_buf()),
            None => dir.to_path_buf(),
        }
    }

    /// The scratch root of a read-only image target, at `path`, with the
    /// directory (a name under it) of each case id the image holds.
    pub fn premade(path: PathBuf, dirs: &std::collections::HashMap<String, String>) -> ScratchRoot {
        let premade = dirs
            .iter()
            .map(|(id, name)| (id.clone(), path.join(name)))
            .collect();
        ScratchRoot {
            path,
            lower: None,
            premade: Some(premade),
        }
    }

    /// Removes a case's directory after the case; not a premade one.
    pub fn remove_case_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.premade.is_some() {
            return Ok(());
        }
        std::fs::remove_dir_all(dir)
    }

    /// A fresh directory for one case (on a read-only image: the one it
    /// holds for the case).
    pub fn case_dir(&self, index: usize, id: &str) -> std::io::Result<PathBuf> {
        if let Some(dirs) = &self.premade {
            return dirs.get(id).cloned().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("the read-only image holds no directory for {id}"),
                )
            });
        }
        let dir = self.path.join(format!("{index:04}-{}", case_dir_name(id)));
        // Not once teardown has begun: made under an unmounted scratch
        // filesystem's mount point, it would outlive the run.
        let _making = crate::exec::live::creating().map_err(std::io::Error::other)?;
        // The root itself may be gone: a crash on tmpfs keeps nothing.
        std::fs::create_dir_all(self.physical(&self.path))?;
        std::fs::create_dir(self.physical(&dir))?;
        Ok(dir)
    }
}

/// A directory name for a case id: its letters, digits and dashes, `_`
/// for anything else (the `/` between topic and name, say).
pub fn case_dir_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        if self.premade.is_some() {
            // Part of the image: it goes with the target.
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
        crate::exec::live::remove_root(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            "36 35 98:0 / /mnt\\040x rw,noatime master:1 - ext4 /dev/vda rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.mount_point, "/mnt x");
        assert_eq!(m.fs_type, "ext4");
        assert_eq!(m.source, "/dev/vda");
        assert_eq!(m.options, "rw,noatime rw,errors=continue");
        assert!(parse_mountinfo_line("garbage").is_none());
    }

    #[test]
    fn fuse_filesystems_match_their_family_and_subtype() {
        let mut env = Environment::probe(Path::new("/"));
        env.fs_type = "fuse.bindfs".into();
        env.fs_subtype = fuse_subtype(&env.fs_type);
        for yes in ["fuse", "fuse.bindfs"] {
            assert!(env.is_fs(yes), "{yes}");
        }
        for no in ["fuseblk", "fuse.sshfs", "bindfs", "ext4"] {
            assert!(!env.is_fs(no), "{no}");
        }
        env.fs_type = "fuseblk".into();
        env.fs_subtype = fuse_subtype(&env.fs_type);
        assert!(env.is_fs("fuse") && env.is_fs("fuseblk") && !env.is_fs("fuse.ntfs"));
        env.fs_type = "ext4".into();
        env.fs_subtype = None;
        assert!(env.is_fs("ext4") && !env.is_fs("fuse"));
    }

    #[test]
    fn mount_options_match_whole_options() {
        let mut env = Environment::probe(Path::new("/"));
        env.mount_options = "rw,relatime rw,nodelalloc,data=journal".into();
        let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(env.has_mount_options(&opts(&["nodelalloc", "data=journal"])));
        assert!(!env.has_mount_options(&opts(&["delalloc"])));
        assert!(!env.has_mount_options(&opts(&["data=ordered"])));
        assert!(env.has_mount_options(&[]));
    }

    #[test]
    fn the_root_is_on_some_filesystem() {
        let m = mount_of(Path::new("/")).expect("/ is mounted");
        assert_eq!(m.mount_point, "/");
        assert!(!m.fs_type.is_empty());
    }
}
