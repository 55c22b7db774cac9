//! `run --device DEV --fs TYPE`: the owned-filesystem cases on a disk the
//! user gives, as fstests' SCRATCH_DEV. The harness makes the filesystem
//! on that device (never on another), mounts it under a name `cleanup`
//! knows, and leaves the device as the run left it. Before touching it,
//! it refuses a device that is in use (mounted, held by device-mapper, md
//! or swap, opened exclusively) and, unless `--force-mkfs`, one that
//! holds a filesystem or partition table.

use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

/// Filesystems `--device` can make (those with mkfs and a crash by shutdown).
pub const DEVICE_FILESYSTEMS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs"];

/// "MAJ:MIN" of a block device, as mountinfo and sysfs write it.
fn dev_number(rdev: u64) -> String {
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// The device and its partitions, as "MAJ:MIN" with their sysfs names.
fn device_and_partitions(number: &str) -> Vec<(String, String)> {
    let sys = Path::new("/sys/dev/block").join(number);
    let name = std::fs::canonicalize(&sys)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| number.to_string());
    let mut out = vec![(number.to_string(), name)];
    for entry in std::fs::read_dir(&sys).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.join("partition").is_file() {
            if let Ok(n) = std::fs::read_to_string(p.join("dev")) {
                out.push((
                    n.trim().to_string(),
                    entry.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
    }
    out
}

/// Why `device` must not be used, or Ok when it may be overwritten.
pub fn check(device: &Path, fs: &str, force_mkfs: bool) -> Result<(), String> {
    if !DEVICE_FILESYSTEMS.contains(&fs) {
        return Err(format!(
            "--device needs a block filesystem to make on it ({}), not {fs}",
            DEVICE_FILESYSTEMS.join(", ")
        ));
    }
    let meta = std::fs::metadata(device).map_err(|e| format!("{}: {e}", device.display()))?;
    if !meta.file_type().is_block_device() {
        return Err(format!("{} is not a block device", device.display()));
    }
    let parts = device_and_partitions(&dev_number(meta.rdev()));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if let Some((_, name)) = parts.iter().find(|(n, _)| f.get(2) == Some(&n.as_str())) {
            return Err(format!(
                "{} is mounted ({name} at {})",
                device.display(),
                f.get(4).unwrap_or(&"?")
            ));
        }
    }
    for (number, name) in &parts {
        let holders = Path::new("/sys/dev/block").join(number).join("holders");
        let held: Vec<String> = std::fs::read_dir(holders)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !held.is_empty() {
            return Err(format!(
                "{} is in use: {name} is held by {} (device-mapper, md ...)",
                device.display(),
                held.join(", ")
            ));
        }
    }
    // What the checks above miss (swap, another program's exclusive open):
    // the kernel refuses O_EXCL on a block device that is claimed.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
        .map_err(|e| format!("{} is in use (exclusive open: {e})", device.display()))?;
    if !force_mkfs {
        if let Some(what) = holds(device)? {
            return Err(format!(
                "{} holds {what}; give --force-mkfs to make a new filesystem over it",
                device.display()
            ));
        }
    }
    Ok(())
}

/// What blkid's low-level probe finds on the device (a filesystem, a
/// partition table), or None when it finds nothing.
fn holds(device: &Path) -> Result<Option<String>, String> {
    let out = crate::exec::fork_server::output(
        Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(device),
    )
    .map_err(|e| format!("blkid: {e}"))?;
    // blkid -p exits 2 when it finds nothing.
    if out.status.code() == Some(2) {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
    };
    Ok(Some(match (value("TYPE="), value("PTTYPE=")) {
        (Some(t), _) => format!("a {t} filesystem"),
        (None, Some(p)) => format!("a {p} partition table"),
        (None, None) => format!(
            "something blkid -p recognises (exit status {:?})",
            out.status.code()
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_block_devices_and_block_filesystems_are_accepted() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = check(file.path(), "ext4", false).unwrap_err();
        assert_eq!(
            err,
            format!("{} is not a block device", file.path().display())
        );
        let err = check(file.path(), "tmpfs", false).unwrap_err();
        assert!(
            err.starts_with("--device needs a block filesystem"),
            "{err}"
        );
        assert!(check(Path::new("/nonexistent-dev"), "ext4", false)
            .unwrap_err()
            .starts_with("/nonexistent-dev: "));
    }

    #[test]
    fn the_root_filesystem_device_is_refused_as_mounted() {
        let Some(root) = crate::target::mount_of(Path::new("/")) else {
            return;
        };
        // Only where / is on a block device we can see (not in a container's overlay).
        if !root.source.starts_with("/dev/") || !Path::new(&root.source).exists() {
            eprintln!("SKIPPED: / is not on a visible block device");
            return;
        }
        let err = check(Path::new(&root.source), "ext4", true).unwrap_err();
        assert!(err.contains("is mounted"), "{err}");
    }
}
