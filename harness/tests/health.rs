//! The health checks around cases (target::health, target::kconfig): a
//! warning planted in the kernel log during a case fails that case with the
//! excerpt, records written from userspace count only when asked, a
//! damaged scratch filesystem fails the run through its fsck, and a case
//! needing a kernel config option is skipped with the option named.

mod common;
use common::{exe, repo, text};
use std::process::Command;

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn case<'a>(r: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {r}"))
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs one seed case with a kernel-like WARNING written to /dev/kmsg
/// while it runs; `accept` makes records from userspace count.
fn planted_run(accept: bool, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
    // One planting run at a time: a run that accepts userspace records
    // would also see the warning another test's run planted meanwhile.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let mut cmd = exe();
    cmd.args(["run", "--jobs", "1", "--report"])
        .arg(&path)
        .args(extra)
        .arg(repo("cases/seed/writer-reader.json"))
        .env("MMAPCONF_TEST_PLANT_KMSG", "seed/writer-reader");
    if accept {
        cmd.env("MMAPCONF_KMSG_ACCEPT_USER", "1");
    } else {
        cmd.env_remove("MMAPCONF_KMSG_ACCEPT_USER");
    }
    let out = cmd.output().unwrap();
    let r = report(&path);
    (out, r)
}

#[test]
fn a_planted_warning_fails_the_case_with_the_excerpt() {
    if !root() {
        eprintln!("SKIPPED: writing to /dev/kmsg needs root");
        return;
    }
    let (out, r) = planted_run(true, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let c = case(&r, "seed/writer-reader");
    assert_eq!(c["status"], "fail", "{c}");
    let reason = c["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the kernel complained during the case:\n  WARNING: ")
            && reason.contains("at mm/mmapconf_planted.c:1 planted_for_seed/writer-reader"),
        "{reason}"
    );
    // Every step observed what it expected: the kernel log alone failed it.
    assert!(c["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "pass"));
    assert_eq!(c["kernel_log"].as_array().unwrap().len(), 1, "{c}");
    assert!(
        text(&out).contains("planted_for_seed/writer-reader"),
        "{}",
        text(&out)
    );
    assert_eq!(r["health"]["kernel_log"], "/dev/kmsg");
}

#[test]
fn a_baseline_kmsg_line_makes_a_known_warning_a_known_failure() {
    if !root() {
        eprintln!("SKIPPED: writing to /dev/kmsg needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("b.txt");
    std::fs::write(
        &baseline,
        "kmsg: at mm/mmapconf_planted\\.c:1 # planted by this test\n",
    )
    .unwrap();
    let b = baseline.to_string_lossy().into_owned();
    let (out, r) = planted_run(true, &["--baseline", &b]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(case(&r, "seed/writer-reader")["status"], "fail");
    std::fs::write(&baseline, "kmsg: at mm/other\\.c # another message\n").unwrap();
    let (out, _) = planted_run(true, &["--baseline", &b]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("new failure"), "{}", text(&out));
}

#[test]
fn a_record_written_from_userspace_does_not_fail_a_case_unless_asked() {
    if !root() {
        eprintln!("SKIPPED: writing to /dev/kmsg needs root");
        return;
    }
    let (out, r) = planted_run(false, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let c = case(&r, "seed/writer-reader");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(c.get("kernel_log").is_none(), "{c}");
}

#[test]
fn no_health_leaves_the_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let out = exe()
        .args(["run", "--no-health", "--report"])
        .arg(&path)
        .arg(repo("cases/seed/writer-reader.json"))
        .env("MMAPCONF_TEST_PLANT_KMSG", "seed/writer-reader")
        .env("MMAPCONF_KMSG_ACCEPT_USER", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&path);
    assert!(r.get("health").is_none(), "{r}");
    assert_eq!(case(&r, "seed/writer-reader")["status"], "pass");
}

/// Runs the remount cases on a scratch ext4, the filesystem damaged
/// after them when `damage`; None when this machine cannot.
fn ext4_run(damage: bool) -> Option<(std::process::Output, serde_json::Value)> {
    let can = root()
        && Command::new("mkfs.ext4").arg("-V").output().is_ok()
        && Command::new("debugfs").arg("-V").output().is_ok();
    if !can {
        eprintln!("SKIPPED: needs root, mkfs.ext4 and debugfs");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let mut cmd = exe();
    cmd.args(["run", "--fs", "ext4", "--report"])
        .arg(&path)
        .arg(repo("cases/durability"));
    if damage {
        cmd.env("MMAPCONF_TEST_DAMAGE_FS", "1");
    }
    let out = cmd.output().unwrap();
    Some((out, report(&path)))
}

#[test]
fn a_damaged_scratch_filesystem_fails_the_run_through_its_fsck() {
    let Some((out, r)) = ext4_run(true) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let fsck = &r["health"]["fsck"];
    assert_eq!(fsck["clean"], false, "{fsck}");
    assert!(fsck["command"]
        .as_str()
        .unwrap()
        .starts_with("e2fsck -f -n /dev/loop"));
    let c = case(&r, "health/fsck");
    assert_eq!(c["status"], "fail");
    let reason = c["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("fsck found the filesystem damaged: `e2fsck -f -n /dev/loop")
            && reason.contains("Root inode not allocated"),
        "{reason}"
    );
    assert!(text(&out).contains("health/fsck"), "{}", text(&out));
}

#[test]
fn a_clean_scratch_filesystem_passes_its_fsck() {
    let Some((out, r)) = ext4_run(false) else {
        return;
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(r["health"]["fsck"]["clean"], true, "{}", r["health"]);
    assert_eq!(r["health"]["fsck"]["exit_status"], 0);
    assert!(r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| !c["id"].as_str().unwrap().starts_with("health/")));
}

const NEEDS_CONFIG: &str = r#"{
  "title": "needs two config options",
  "refs": ["test"],
  "requires": { "config": ["CONFIG_MMU", "CONFIG_MMAPCONF_NEVER_SET=y"] },
  "steps": [ { "in": "p", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" } ]
}
"#;

fn config_run(config_file: Option<&std::path::Path>) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("needs-config.json");
    std::fs::write(&file, NEEDS_CONFIG).unwrap();
    let path = dir.path().join("r.json");
    let mut cmd = exe();
    cmd.args(["run", "--report"]).arg(&path).arg(&file);
    if let Some(c) = config_file {
        cmd.env("MMAPCONF_KERNEL_CONFIG", c);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    report(&path)["cases"][0].clone()
}

#[test]
fn a_missing_config_option_skips_the_case_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        "CONFIG_MMU=y\n# CONFIG_MMAPCONF_NEVER_SET is not set\n",
    )
    .unwrap();
    let c = config_run(Some(&config));
    assert_eq!(c["status"], "skip", "{c}");
    assert_eq!(
        c["reason"].as_str().unwrap(),
        format!(
            "needs kernel config CONFIG_MMAPCONF_NEVER_SET=y; CONFIG_MMAPCONF_NEVER_SET is not set in {}",
            config.display()
        )
    );
    std::fs::write(&config, "CONFIG_MMU=y\nCONFIG_MMAPCONF_NEVER_SET=y\n").unwrap();
    assert_eq!(config_run(Some(&config))["status"], "pass");
    let unreadable = config_run(Some(&dir.path().join("absent")));
    let reason = unreadable["reason"].as_str().unwrap();
    assert!(
        reason.contains("the kernel's configuration cannot be read") && reason.contains("absent"),
        "{reason}"
    );
    // The running kernel, read from /proc/config.gz or /boot.
    let running = config_run(None);
    assert_eq!(running["status"], "skip", "{running}");
}

#[test]
fn a_malformed_config_option_is_a_validation_error_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, NEEDS_CONFIG.replace("CONFIG_MMU\"", "MMU\"")).unwrap();
    let out = exe().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{}:4:28: requires.config[0]: `MMU` is not a kernel config option",
            file.display()
        )),
        "{stdout}"
    );
}
