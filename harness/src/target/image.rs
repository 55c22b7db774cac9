//! Read-only image targets (`--fs erofs`, `--fs squashfs`): filesystems
//! that cannot be written once made, so the harness makes every case's
//! starting files before the run, in a staging tree, builds one image of
//! it (mkfs.erofs, mksquashfs), attaches it read-only to a loop device and
//! mounts it. Cases then run in their directory of the image; nothing is
//! created there, and cases that write to the target's files are skipped
//! (capability `writable`, [`crate::case::model::Case::writes_target`]).
//!
//! The staging tree (`mmapconf-img-<pid>-<target>.tree`) and the image
//! (`…​.img`) carry the names `mmapconf cleanup` looks for; both are
//! registered with `exec::live` before they are made (see `OwnedFs::create`).

use crate::case::model::Probe;
use crate::case::LoadedCase;
use crate::target::{case_dir_name, SCRATCH_PREFIX};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether `fs` is a filesystem the harness builds as a read-only image.
pub fn is_image_fs(fs: &str) -> bool {
    matches!(fs, "erofs" | "squashfs")
}

/// The program that builds an image of `fs`.
pub fn builder(fs: &str) -> &'static str {
    match fs {
        "squashfs" => "mksquashfs",
        _ => "mkfs.erofs",
    }
}

/// Where each case's files are in an image: the scratch root inside it
/// and, per case id, its directory there.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The scratch root, relative to the image's root directory.
    pub root: PathBuf,
    /// Case id → its directory's name in the scratch root.
    pub dirs: HashMap<String, String>,
}

/// Whether a case can run on a read-only target at all: it does not write
/// to the target's files, or it is written for read-only targets.
fn runs_read_only(case: &LoadedCase) -> bool {
    case.case.requires.probes.contains(&Probe::ReadOnly) || case.case.writes_target().is_none()
}

/// Makes the scratch root of an image in `tree` (an empty directory): one
/// directory per case that can run read-only, named as its scratch
/// directory would be (`NNNN-topic_name`, NNNN its place in `cases`),
/// holding its starting files, and the file `regular_files` is measured
/// on. Cases that write get no directory: they are skipped on the target.
pub fn stage(tree: &Path, tag: &str, cases: &[LoadedCase], ps: u64) -> Result<Layout, String> {
    let root = PathBuf::from(format!("{SCRATCH_PREFIX}{tag}"));
    let at = tree.join(&root);
    let mkdir = |d: &Path| std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()));
    mkdir(&at)?;
    let probe = at.join(super::capability::PREMADE_PROBE);
    let f = std::fs::File::create(&probe).map_err(|e| format!("{}: {e}", probe.display()))?;
    std::os::unix::fs::FileExt::write_all_at(&f, b"x", 0)
        .and_then(|()| f.set_len(ps))
        .map_err(|e| format!("{}: {e}", probe.display()))?;
    let mut layout = Layout {
        root,
        dirs: HashMap::new(),
    };
    for (index, case) in cases.iter().enumerate() {
        // One directory per id: mutate runs many copies of a case, whose
        // files are the same.
        if layout.dirs.contains_key(&case.id) || !runs_read_only(case) {
            continue;
        }
        let name = format!("{index:04}-{}", case_dir_name(&case.id));
        mkdir(&at.join(&name))?;
        crate::exec::coordinator::write_files(&at.join(&name), &case.case.files, ps)
            .map_err(|e| format!("{}: {e}", case.id))?;
        layout.dirs.insert(case.id.clone(), name);
    }
    Ok(layout)
}

/// The command that builds `image` of type `fs` from `tree`: uncompressed
/// erofs (the plain layout; compressed files take another read path) and
/// squashfs as mksquashfs makes it by default (compressed blocks). Every
/// file owned by root and given a fixed time, so two runs build the same
/// image; modes are kept (cases give them).
pub fn build_command(fs: &str, tree: &Path, image: &Path, extra: &[String]) -> Command {
    let mut cmd = Command::new(builder(fs));
    match fs {
        "squashfs" => {
            cmd.arg(tree).arg(image).args([
                "-noappend",
                "-quiet",
                "-no-progress",
                "-all-root",
                "-no-xattrs",
                "-mkfs-time",
                "0",
                "-all-time",
                "0",
            ]);
            cmd.args(extra);
        }
        _ => {
            cmd.args(["--quiet", "--all-root", "-T0"]);
            cmd.args(extra);
            cmd.arg(image).arg(tree);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, json: serde_json::Value) -> LoadedCase {
        LoadedCase {
            id: id.into(),
            file: PathBuf::from(format!("{id}.json")),
            case: serde_json::from_value(json).unwrap(),
        }
    }

    #[test]
    fn only_cases_that_can_run_read_only_are_staged_with_their_files() {
        let reads = case(
            "ro/reads",
            serde_json::json!({ "title": "t", "refs": ["r"],
                "files": { "a": { "text": "hello", "size": 8, "mode": 256 } },
                "steps": [ { "in": "p", "do": "open", "path": "a", "flags": "O_RDONLY", "as": "fd" } ] }),
        );
        let writes = case(
            "ro/writes",
            serde_json::json!({ "title": "t", "refs": ["r"],
                "files": { "a": { "size": 8 } },
                "steps": [ { "in": "p", "do": "open", "path": "a", "flags": "O_RDWR", "as": "fd" } ] }),
        );
        let tree = tempfile::tempdir().unwrap();
        let layout = stage(tree.path(), "1-erofs", &[writes, reads], 4096).unwrap();
        assert_eq!(layout.dirs.len(), 1, "{layout:?}");
        assert_eq!(layout.dirs["ro/reads"], "0001-ro_reads");
        let file = tree.path().join(&layout.root).join("0001-ro_reads/a");
        assert_eq!(std::fs::read(&file).unwrap(), b"hello\0\0\0");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
        let probe = tree
            .path()
            .join(&layout.root)
            .join(super::super::capability::PREMADE_PROBE);
        assert_eq!(std::fs::metadata(probe).unwrap().len(), 4096);
    }
}
