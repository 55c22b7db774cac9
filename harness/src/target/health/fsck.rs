//! The read-only fsck of an owned filesystem at the end of a run (as
//! fstests' `_check_scratch_fs`): e2fsck -fn, xfs_repair -n, btrfs check
//! --readonly, fsck.f2fs --dry-run, fsck.fat -n, fsck.exfat -n (ntfs3 and ntfs have no
//! read-only checker on Linux: ntfsfix repairs), on the unmounted device. Nothing is
//! repaired: a filesystem the kernel left inconsistent is reported.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::process::Command;

/// Test-only env var: the filesystem is damaged (its root inode cleared
/// with debugfs) after the cases and before the fsck, so the check's
/// failure path can be shown to work.
pub const DAMAGE_BEFORE_FSCK: &str = "MMAPCONF_TEST_DAMAGE_FS";

/// What the fsck said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// The command, as run.
    pub command: String,
    /// It found nothing wrong (exit status 0).
    pub clean: bool,
    /// Its exit status; absent when it could not be run or was killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The end of its output when it was not clean (at most 20 lines).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl Outcome {
    /// One line for the report's reason and the terminal.
    pub fn describe(&self) -> String {
        let status = match self.exit_status {
            Some(c) => format!("exit status {c}"),
            None => "did not run".to_string(),
        };
        let mut s = format!(
            "fsck found the filesystem damaged: `{}`: {status}",
            self.command
        );
        if !self.output.is_empty() {
            s.push_str(":\n  ");
            s.push_str(&self.output.lines().collect::<Vec<_>>().join("\n  "));
        }
        s
    }
}

/// The read-only check of filesystem `fs` on `dev`; None for filesystems
/// that have no fsck (tmpfs, ramfs ...) or whose image is read-only anyway.
pub fn command(fs: &str, dev: &str) -> Option<Command> {
    let (prog, args): (&str, &[&str]) = match fs {
        "ext2" | "ext3" | "ext4" => ("e2fsck", &["-f", "-n"]),
        "xfs" => ("xfs_repair", &["-n"]),
        "btrfs" => ("btrfs", &["check", "--readonly"]),
        "f2fs" => ("fsck.f2fs", &["-f", "--dry-run"]),
        "vfat" => ("fsck.fat", &["-n"]),
        "exfat" => ("fsck.exfat", &["-n"]),
        _ => return None,
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).arg(dev);
    Some(cmd)
}

/// Runs the check of `fs` on the unmounted device `dev`.
pub fn check(fs: &str, dev: &str) -> Option<Outcome> {
    let cmd = command(fs, dev)?;
    if std::env::var(DAMAGE_BEFORE_FSCK).is_ok_and(|v| v == "1") {
        damage(fs, dev);
    }
    let shown = format!("{cmd:?}").replace('"', "");
    Some(match crate::exec::fork_server::output(&cmd) {
        Ok(out) => {
            let clean = out.status.success();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            Outcome {
                command: shown,
                clean,
                exit_status: out.status.code(),
                output: if clean {
                    String::new()
                } else {
                    lines[lines.len().saturating_sub(20)..].join("\n")
                },
            }
        }
        Err(e) => Outcome {
            command: shown,
            clean: false,
            exit_status: None,
            output: e.to_string(),
        },
    })
}

/// Test hook: clears the root inode of an ext2/3/4 filesystem.
fn damage(fs: &str, dev: &str) {
    if !fs.starts_with("ext") {
        eprintln!("mmapconf: {DAMAGE_BEFORE_FSCK}: only ext2/3/4 can be damaged");
        return;
    }
    let done = crate::exec::fork_server::output(
        Command::new("debugfs").args(["-w", "-R", "clri <2>", dev]),
    );
    if !done.is_ok_and(|o| o.status.success()) {
        eprintln!("mmapconf: {DAMAGE_BEFORE_FSCK}: debugfs could not damage {dev}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_block_filesystem_has_its_read_only_check() {
        let shown = |fs: &str| command(fs, "/dev/loop9").map(|c| format!("{c:?}").replace('"', ""));
        assert_eq!(shown("ext4").as_deref(), Some("e2fsck -f -n /dev/loop9"));
        assert_eq!(shown("xfs").as_deref(), Some("xfs_repair -n /dev/loop9"));
        assert_eq!(
            shown("btrfs").as_deref(),
            Some("btrfs check --readonly /dev/loop9")
        );
        assert_eq!(
            shown("f2fs").as_deref(),
            Some("fsck.f2fs -f --dry-run /dev/loop9")
        );
        assert_eq!(shown("vfat").as_deref(), Some("fsck.fat -n /dev/loop9"));
        assert_eq!(shown("exfat").as_deref(), Some("fsck.exfat -n /dev/loop9"));
        assert!(shown("tmpfs").is_none() && shown("erofs").is_none());
        let o = Outcome {
            command: "e2fsck -f -n /dev/loop9".into(),
            clean: false,
            exit_status: Some(4),
            output: "Root inode not allocated.\nAbort? no".into(),
        };
        assert_eq!(
            o.describe(),
            "fsck found the filesystem damaged: `e2fsck -f -n /dev/loop9`: exit status 4:\n  Root inode not allocated.\n  Abort? no"
        );
    }
}
