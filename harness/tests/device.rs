//! `run --device` on loop devices standing in for disks: the durability
//! cases pass on a filesystem made on the device; a mounted device, and
//! one holding a filesystem (without --force-mkfs), are refused untouched.
//! Each test's loop image is /dev/shm/mmapconf-img-<pid>-<name>.img, a
//! name `mmapconf cleanup` knows, and is detached and removed after.

mod common;
use common::{exe, repo, text};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a sparse image, detached and removed when dropped.
struct LoopDisk {
    image: PathBuf,
    dev: String,
}

impl LoopDisk {
    fn new(name: &str) -> Option<LoopDisk> {
        let can = nix::unistd::geteuid().is_root()
            && Command::new("mkfs.ext4").arg("-V").output().is_ok()
            && Command::new("blkid").arg("-V").output().is_ok();
        if !can {
            eprintln!("SKIPPED: needs root, mkfs.ext4 and blkid");
            return None;
        }
        let image = PathBuf::from(format!(
            "/dev/shm/mmapconf-img-{}-{name}.img",
            std::process::id()
        ));
        std::fs::File::create(&image)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(LoopDisk { image, dev })
    }

    fn run(&self, extra: &[&str], report: &Path) -> std::process::Output {
        self.run_fs("ext4", extra, report)
    }

    fn run_fs(&self, fs: &str, extra: &[&str], report: &Path) -> std::process::Output {
        exe()
            .args(["run", "--device", &self.dev, "--fs", fs, "--report"])
            .arg(report)
            .args(extra)
            .arg(repo("cases/durability"))
            .output()
            .unwrap()
    }

    /// The first bytes of the device, to see it was not written.
    fn head(&self) -> Vec<u8> {
        let mut b = std::fs::read(&self.image).unwrap();
        b.truncate(1 << 20);
        b
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn the_durability_cases_pass_on_a_device_and_a_second_run_needs_force_mkfs() {
    let Some(disk) = LoopDisk::new("dev-durability") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let out = disk.run(&[], &path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(r["environment"]["mount_source"], disk.dev.as_str());
    assert_eq!(r["environment"]["fs_type"], "ext4");
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "{}", cases.len());
    // Crash (by FS_IOC_SHUTDOWN) and remount cases have a verdict: nothing skipped.
    for c in cases {
        assert_eq!(c["status"], "pass", "{c}");
    }
    assert_eq!(r["health"]["fsck"]["clean"], true, "{}", r["health"]);
    // The device now holds the ext4 the run made: not overwritten unless told.
    let before = disk.head();
    let again = disk.run(&[], &dir.path().join("r2.json"));
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains(&format!(
            "refusing --device: {} holds a ext4 filesystem; give --force-mkfs",
            disk.dev
        )),
        "{}",
        text(&again)
    );
    assert!(disk.head() == before, "a refused device was written");
    let forced = disk.run(
        &["--force-mkfs", "--filter", "remount"],
        &dir.path().join("r3.json"),
    );
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    // Nothing of the runs is left mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!(" {} ", disk.dev)), "{mounts}");
}

#[test]
fn on_a_device_ext2_cannot_crash_so_its_crash_cases_skip_saying_why() {
    let Some(disk) = LoopDisk::new("dev-ext2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let out = disk.run_fs("ext2", &[], &path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let crash = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "durability/ms-sync-survives-crash")
        .unwrap();
    assert_eq!(crash["status"], "skip", "{crash}");
    assert!(
        crash["reason"]
            .as_str()
            .unwrap()
            .contains("FS_IOC_SHUTDOWN"),
        "{crash}"
    );
    let remount = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "durability/remount-keeps-unsynced-store")
        .unwrap();
    assert_eq!(remount["status"], "pass", "{remount}");
}

#[test]
fn a_mounted_device_is_refused_even_with_force_mkfs() {
    let Some(disk) = LoopDisk::new("dev-mounted") else {
        return;
    };
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", &disk.dev])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let at = tempfile::tempdir().unwrap();
    let out = Command::new("mount")
        .arg(&disk.dev)
        .arg(at.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(at.path().join("keep"), b"user data").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refused = disk.run(&["--force-mkfs"], &dir.path().join("r.json"));
    let _ = Command::new("umount").arg(at.path()).status();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("refusing --device: {} is mounted (", disk.dev))
            && text(&refused).contains(&format!("at {})", at.path().display())),
        "{}",
        text(&refused)
    );
    assert!(!dir.path().join("r.json").exists());
    // The user's file is still there.
    let out = Command::new("debugfs")
        .args(["-R", "cat /keep", &disk.dev])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "user data");
}

#[test]
fn device_needs_exactly_one_block_filesystem() {
    let out = exe()
        .args(["run", "--device", "/dev/null", "--fs", "ext4,xfs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--device needs exactly one --fs"),
        "{}",
        text(&out)
    );
    let out = exe()
        .args(["run", "--device", "/dev/null", "--fs", "ext4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("refusing --device: /dev/null is not a block device"),
        "{}",
        text(&out)
    );
}
