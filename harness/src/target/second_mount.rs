//! A second mount of the filesystem under test (`run --second-dir`): the
//! same files seen through another client, such as a second NFS mount of
//! one export with `nosharecache` (its own superblock, page cache and
//! attribute cache). Cases put processes there (`processes.NAME.mount`) to
//! check what one client's writes and mappings show another: NFS promises
//! close-to-open consistency between clients, nothing finer.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the first mount's directory `first` is seen on the second mount.
#[derive(Debug, Clone)]
pub struct SecondMount {
    first: PathBuf,
    second: PathBuf,
    /// For the report: the second mount's point, type and options, and
    /// whether it shares the first's superblock (the same st_dev).
    pub description: String,
}

impl SecondMount {
    /// Checks that `second` shows what `first` holds: a file made in `first`
    /// is found in `second` as the same inode. Anything else (another
    /// filesystem, another directory of it) would make every case on it
    /// meaningless, so the run refuses it at once.
    pub fn new(first: &Path, second: &Path) -> Result<SecondMount, String> {
        let canon = |p: &Path, what: &str| {
            std::fs::canonicalize(p).map_err(|e| format!("{what} {}: {e}", p.display()))
        };
        let (first, second) = (canon(first, "--dir")?, canon(second, "--second-dir")?);
        if first == second {
            return Err(format!(
                "--second-dir {} is --dir itself: give another mount of its filesystem",
                second.display()
            ));
        }
        let name = format!(".mmapconf-second-mount-{}", std::process::id());
        let made = first.join(&name);
        std::fs::File::create(&made).map_err(|e| {
            format!(
                "cannot make {} to find it on the second mount: {e}",
                made.display()
            )
        })?;
        let seen = (made.metadata(), second.join(&name).metadata());
        let _ = std::fs::remove_file(&made);
        let (ours, theirs) = match seen {
            (Ok(a), Ok(b)) if a.ino() == b.ino() => (a, b),
            (Ok(_), Ok(_)) | (Ok(_), Err(_)) | (Err(_), _) => {
                return Err(format!(
                    "--second-dir {} is not a second mount of --dir {}: a file made in the one is not in the other",
                    second.display(),
                    first.display()
                ))
            }
        };
        let mount = super::mount_of(&second).unwrap_or_default();
        let shared = if ours.dev() == theirs.dev() {
            "the same superblock as the first (one cache)"
        } else {
            "its own superblock (st_dev differs)"
        };
        let description = format!(
            "{} ({} {}, {}), scratch directories as {}",
            mount.mount_point,
            mount.fs_type,
            mount.options,
            shared,
            second.display()
        );
        Ok(SecondMount {
            first,
            second,
            description,
        })
    }

    /// A scratch directory under the first mount's directory, as the second mount shows it.
    pub fn translate(&self, dir: &Path) -> PathBuf {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        match dir.strip_prefix(&self.first) {
            Ok(rest) => self.second.join(rest),
            Err(_) => dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_mount_stand_in_maps_scratch_directories_and_another_directory_is_refused() {
        // Two paths of one directory (a symlink) stand for two mounts of one filesystem.
        let top = tempfile::tempdir().unwrap();
        let real = top.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, top.path().join("alias")).unwrap();
        let other = top.path().join("other");
        std::fs::create_dir(&other).unwrap();
        // A symlink canonicalizes to the same path: refused as the same directory.
        let same = SecondMount::new(&real, &top.path().join("alias")).unwrap_err();
        assert!(same.contains("is --dir itself"), "{same}");
        let err = SecondMount::new(&real, &other).unwrap_err();
        assert!(err.contains("is not a second mount"), "{err}");
        assert_eq!(
            std::fs::read_dir(&real).unwrap().count(),
            0,
            "probe file left"
        );
        let m = SecondMount {
            first: real.clone(),
            second: other.clone(),
            description: String::new(),
        };
        std::fs::create_dir(real.join("case")).unwrap();
        assert_eq!(m.translate(&real.join("case")), other.join("case"));
    }
}
