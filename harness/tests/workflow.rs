//! The GitHub workflow in ci/github/ as a runner would run it: ci/github/check-workflow plays the cell
//! job's steps from the YAML as written, as `nobody`, in a runner's directory layout, with
//! ci/kernel-matrix in its dry-run mode (everything up to downloading and booting a kernel). Needs root,
//! python3 with PyYAML, and a static mmapconf (the artifact of the workflow's first job): the one
//! ci/kernel-matrix builds into its cache, or $MMAPCONF_STATIC_HARNESS. Without them the test says so
//! and passes; .ci/run runs check-workflow itself after the kernel matrix built the static harness.

mod common;

use common::{repo, text};
use std::path::PathBuf;
use std::process::Command;

fn static_harness() -> Option<PathBuf> {
    let path = std::env::var_os("MMAPCONF_STATIC_HARNESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(
                "/var/cache/mmapconf-kernels/target/x86_64-unknown-linux-gnu/release/mmapconf",
            )
        });
    path.is_file().then_some(path)
}

/// Whether the harness takes this tree's corpus (a stale build in the cache does not).
fn of_this_tree(harness: &PathBuf) -> bool {
    Command::new(harness)
        .arg("list")
        .arg(repo("cases"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ready() -> Option<PathBuf> {
    let yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    let why = if !nix::unistd::geteuid().is_root() {
        "not root"
    } else if !yaml {
        "python3 has no yaml module (apt-get install python3-yaml)"
    } else if static_harness().is_none() {
        "no static mmapconf (run ci/kernel-matrix once, or set MMAPCONF_STATIC_HARNESS)"
    } else if !of_this_tree(&static_harness().unwrap()) {
        // A build of another tree, left in the cache, rejects this corpus: that says nothing
        // about the workflow. .ci/run builds it afresh and runs check-workflow after.
        "the static mmapconf is of another tree (its `list` rejects this corpus): rebuild it (ci/package)"
    } else {
        return static_harness();
    };
    eprintln!("SKIPPED: {why}");
    None
}

fn check(harness: &PathBuf, kernel_matrix: Option<&PathBuf>) -> std::process::Output {
    let mut c = Command::new("python3");
    c.arg(repo("ci/github/check-workflow"))
        .arg("--harness")
        .arg(harness);
    if let Some(k) = kernel_matrix {
        c.arg("--kernel-matrix").arg(k);
    }
    c.output().unwrap()
}

#[test]
fn the_cell_step_runs_as_written_as_a_runner_user() {
    let Some(harness) = ready() else { return };
    let o = check(&harness, None);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("check-workflow: 68 cells, 0 failed"), "{t}");
    assert!(t.contains("dry run: 5.10-tmpfs: "), "{t}");
    // The matrix's `exclude` is played: ntfs3 (Linux 5.15, built by Debian's 6.12 only) has a 6.12
    // cell and no 5.10, 6.1 or 7.x cell.
    assert!(t.contains("dry run: 6.12-ntfs3: "), "{t}");
    for k in ["5.10", "6.1", "7.x"] {
        assert!(!t.contains(&format!("dry run: {k}-ntfs3: ")), "{t}");
    }
    // and Debian 7.x's new ntfs driver a 7.x cell only.
    assert!(t.contains("dry run: 7.x-ntfs: "), "{t}");
    for k in ["5.10", "6.1", "6.12"] {
        assert!(!t.contains(&format!("dry run: {k}-ntfs: ")), "{t}");
    }
    assert!(t.contains("dry run: ppc64el-7.x-ext4: "), "{t}");
    assert!(!t.contains("dry run: s390x-6.12-"), "{t}");

    // The check can fail: ci/kernel-matrix as it was, taking `--harness ./mmapconf` for a name
    // to look up in PATH, fails every cell.
    let old = std::fs::read_to_string(repo("ci/kernel-matrix"))
        .unwrap()
        .replace(
            "find_harness(harnesses[a]) if a in harnesses",
            "Path(harnesses[a]) if a in harnesses",
        );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("workflow-old");
    std::fs::create_dir_all(&dir).unwrap();
    let old_path = dir.join("kernel-matrix");
    std::fs::write(&old_path, old).unwrap();
    let o = check(&harness, Some(&old_path));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("check-workflow: 68 cells, 68 failed"), "{t}");
}
