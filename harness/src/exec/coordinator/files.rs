//! The case's files: made before the first step, and read by `check_file`
//! through the page cache or from the storage.

use super::{lock, Run};
use crate::case::model::{ReadFrom, Zeros};
use crate::case::values::Bytes;
use crate::case::LoadedCase;
use crate::exec::ops::{open_beneath, with_bytes, AlignedBuf};
use crate::exec::protocol::Observation;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
impl Run<'_> {
    pub(super) fn create_files(&self, case: &LoadedCase) -> Result<(), String> {
        // On a read-only image target the files are in the image already,
        // made by `write_files` when the image was built.
        if self
            .opts
            .owned_fs
            .as_ref()
            .is_some_and(|fs| lock(fs).premade().is_some())
        {
            return Ok(());
        }
        // On overlayfs the case's files start in the lower layer, so that a
        // write through the merged view meets copy-up.
        let dir = self.files_dir()?;
        write_files(&dir, &case.case.files, self.ps())?;
        if case.case.needs_owned_fs() {
            // The starting state (the case's directory and files) is on the
            // device before the first step, so a crash tests the steps only.
            // (syncfs needs a real descriptor; our dirfd is O_PATH.)
            let d = std::fs::File::open(&self.dir).map_err(|e| format!("syncfs: {e}"))?;
            // SAFETY: syncfs on a directory fd we own.
            if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
                return Err(format!("syncfs: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    pub(super) fn files_dir(&self) -> Result<PathBuf, String> {
        let Some(fs) = self.opts.owned_fs.as_ref() else {
            return Ok(self.dir.clone());
        };
        let fs = lock(fs);
        let (Some(lower), Ok(rel)) = (&fs.lower_dir, self.dir.strip_prefix(&fs.mount_point)) else {
            return Ok(self.dir.clone());
        };
        let dir = lower.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| format!("lower dir {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Reads the file as a newcomer would: a fresh open, then pread. From
    /// the cache, what any reader sees now; from the storage, what reached
    /// the filesystem's storage, whatever this kernel still has cached: the
    /// backing file of a target that has one, else an O_DIRECT read (which
    /// writes back dirty pages of the range first, then reads the device or
    /// asks the FUSE server).
    pub(super) fn check_file(
        &self,
        path: &str,
        at: &crate::case::model::Size,
        len: Option<&crate::case::model::Size>,
        from: ReadFrom,
    ) -> Observation {
        let at = match at.resolve_offset(self.ps()) {
            Ok(v) => v as u64,
            Err(e) => return Observation::error(e),
        };
        let want = match len.map(|l| l.resolve_len(self.ps())) {
            Some(Ok(l)) => Some(l as usize),
            Some(Err(e)) => return Observation::error(e),
            None => None,
        };
        let backing = self.opts.owned_fs.as_ref().and_then(|fs| {
            let fs = lock(fs);
            let rel = self.dir.strip_prefix(&fs.mount_point).ok()?;
            fs.backing_dir().map(|b| b.join(rel).join(path))
        });
        // O_DIRECT reads whole aligned blocks into an aligned buffer.
        let (opened, align) = match (from, backing) {
            (ReadFrom::Cache, _) => (
                open_beneath(self.dirfd.as_raw_fd(), path, libc::O_RDONLY, 0),
                1,
            ),
            (ReadFrom::Storage, Some(file)) => (
                std::fs::File::open(&file).map(OwnedFd::from).map_err(|e| {
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
                }),
                1,
            ),
            (ReadFrom::Storage, None) => (
                open_beneath(
                    self.dirfd.as_raw_fd(),
                    path,
                    libc::O_RDONLY | libc::O_DIRECT,
                    0,
                ),
                self.ps(),
            ),
        };
        let file = match opened {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) => return Observation::errno(e as i32),
        };
        const CHUNK: usize = 1 << 16;
        let mut chunk = match AlignedBuf::zeroed(CHUNK, self.ps()) {
            Ok(c) => c,
            Err(obs) => return obs,
        };
        let mut buf = Vec::new();
        let mut offset = at - at % align;
        let mut skip = (at - offset) as usize;
        loop {
            if want.is_some_and(|w| buf.len() >= w) {
                break;
            }
            match std::os::unix::fs::FileExt::read_at(&file, &mut chunk, offset) {
                Ok(n) if n <= skip => break,
                Ok(n) => {
                    let room = want.map_or(usize::MAX, |w| w - buf.len());
                    let end = n.min(skip + room);
                    buf.extend_from_slice(&chunk[skip..end]);
                    offset += n as u64;
                    skip = 0;
                }
                Err(e) => return Observation::errno(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
        with_bytes(buf)
    }
}

/// Makes a case's starting `files` in `dir`, in name order: the content,
/// then the size, then the mode. (Also how a read-only image target's
/// files are made, before the image is built from them.)
pub fn write_files(
    dir: &Path,
    files: &BTreeMap<String, crate::case::model::FileInit>,
    ps: u64,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (name, init) in files {
        let path = dir.join(name);
        let fail = |e: std::io::Error| format!("creating {name}: {e}");
        let mut f = std::fs::File::create(&path).map_err(fail)?;
        let size = init.size.as_ref().map(|s| s.resolve_len(ps)).transpose()?;
        let mut written = 0;
        if !init.data.is_empty() {
            // Streamed: the content is never held whole in memory.
            let bytes = init.data.resolve(ps, size)?;
            bytes.write_to(&mut f).map_err(fail)?;
            written = bytes.len();
        }
        if let Some(size) = size {
            if init.zeros == Some(Zeros::Allocated) && size > written {
                // Written, not ftruncated: the storage holds these zeros.
                let zeros = Bytes::Fill {
                    byte: 0,
                    len: size - written,
                };
                zeros.write_to(&mut f).map_err(fail)?;
            }
            f.set_len(size).map_err(fail)?;
        }
        let mode = init.mode.unwrap_or(0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    Ok(())
}
