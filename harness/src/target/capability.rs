//! What the target filesystem can do, measured by trying it in the run's
//! scratch root at the start of the run, never guessed from its name:
//! FUSE servers, ramfs, FAT-family and network filesystems each lack a
//! different subset, and a case that needs one is skipped with the reason.

use crate::case::model::Probe;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// One capability's answer on this target, with what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Measured {
    pub present: bool,
    /// What the probe saw, e.g. "st_blocks 8 after ftruncate" or "EINVAL".
    pub detail: String,
}

/// What the harness knows of a target because it made it: whether its data
/// outlive an unmount (a block device) and whether it can cut its power.
/// None for an existing mount, which it can do neither to.
#[derive(Debug, Clone, Copy)]
pub struct Made {
    pub persistent: bool,
    pub can_crash: bool,
    /// Why not, when it is more than "this kind of target cannot be cut"
    /// (a device given with --device whose filesystem cannot shut down).
    pub no_crash_because: Option<&'static str>,
    /// The target keeps each file in a backing file the harness can read
    /// (its own FUSE servers' storage).
    pub has_backing_files: bool,
}

/// Every target capability, measured in `dir` (a directory the run owns).
/// `persistent` and `crash` come from how the target was made, not from a
/// trial: only an unmount or a crash could show them, and those are the
/// cases' business.
pub fn measure(dir: &Path, made: Option<Made>) -> BTreeMap<Probe, Measured> {
    let ps = super::page_size() as usize;
    let mut out = BTreeMap::new();
    let mut put = |p: Probe, r: Result<String, String>| {
        let (present, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        out.insert(p, Measured { present, detail });
    };
    let writable = writable(dir);
    let read_only = match &writable {
        Err(d) if d.ends_with("EROFS") => Ok(format!("a read-only filesystem: {d}")),
        Ok(_) => Err("a file was made in the scratch root".to_string()),
        Err(d) => Err(format!("not read-only, yet no file could be made: {d}")),
    };
    put(
        Probe::RegularFiles,
        match read_only {
            // Nothing can be made here: look at what the image holds.
            Ok(_) => premade_regular_file(dir, ps),
            Err(_) => regular_files(dir, ps),
        },
    );
    put(Probe::Writable, writable);
    put(Probe::ReadOnly, read_only);
    put(Probe::FillsUp, fills_up(dir));
    let direct = o_direct(dir, ps);
    let has_direct = direct.is_ok();
    put(Probe::ODirect, direct);
    put(
        Probe::StorageView,
        match made {
            Some(m) if m.has_backing_files => Ok("the target's backing files".into()),
            _ if has_direct => Ok("O_DIRECT reads".into()),
            _ => Err("no backing files and no O_DIRECT: only the page cache can be read".into()),
        },
    );
    put(Probe::SparseFiles, sparse_files(dir, ps));
    put(Probe::PunchHole, punch_hole(dir, ps));
    put(Probe::SharedWritableMmap, shared_writable_mmap(dir, ps));
    put(Probe::SharedMmap, shared_mmap(dir, ps));
    put(Probe::MadvRemove, madv_remove(dir, ps));
    put(Probe::Writeback, writeback(dir, ps));
    put(Probe::CacheSurvivesOpen, cache_survives_open(dir, ps));
    let (before_msync, on_write_fault) = mtimes_of_a_mapped_store(dir, ps);
    put(Probe::MtimeOnWriteFault, on_write_fault);
    put(Probe::MtimeBeforeMsync, before_msync);
    put(Probe::Dax, dax(dir));
    let existing = || Err("an existing mount: the harness cannot unmount or crash it".into());
    put(
        Probe::Persistent,
        match made {
            Some(m) if m.persistent => Ok("a filesystem the harness made on a block device".into()),
            Some(_) => Err("the harness made it in memory: an unmount or crash loses it".into()),
            None => existing(),
        },
    );
    put(
        Probe::Crash,
        match made {
            Some(m) if m.can_crash => Ok("a filesystem the harness made and can cut".into()),
            Some(m) => Err(m
                .no_crash_because
                .unwrap_or("the harness cannot cut the power of this target at one instant")
                .into()),
            None => existing(),
        },
    );
    out
}

/// A probe file in `dir`, removed when dropped.
struct Scratch {
    path: std::path::PathBuf,
    file: File,
}

impl Scratch {
    fn new(dir: &Path, name: &str, custom_flags: i32) -> Result<Scratch, String> {
        let path = dir.join(format!(".mmapconf-probe-{name}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(custom_flags)
            .open(&path)
            .map_err(|e| format!("open: {}", errno_of(&e)))?;
        Ok(Scratch { path, file })
    }

    fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    fn write(&self, bytes: &[u8], at: u64) -> Result<(), String> {
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| format!("pwrite: {}", errno_of(&e)))
    }

    fn stat(&self) -> Result<libc::stat, String> {
        // SAFETY: fstat fills the struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(self.fd(), &mut st) }, "fstat")?;
        Ok(st)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A shared mapping of a probe file, unmapped when dropped.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn shared(fd: i32, len: usize, prot: i32) -> Result<Mapping, String> {
        // SAFETY: a fresh mapping of our own file, unmapped on drop.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if addr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", last_errno()));
        }
        Ok(Mapping { addr, len })
    }

    /// Pages of the mapping in the page cache, by mincore(2).
    fn resident(&self, ps: usize) -> Result<usize, String> {
        let mut vec = vec![0u8; self.len.div_ceil(ps)];
        // SAFETY: one byte per page of our mapping.
        check(
            unsafe { libc::mincore(self.addr, self.len, vec.as_mut_ptr()) },
            "mincore",
        )?;
        Ok(vec.iter().filter(|b| *b & 1 != 0).count())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we mapped it.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn last_errno() -> String {
    crate::names::errno_name(nix::errno::Errno::last_raw())
}

fn errno_of(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(crate::names::errno_name)
        .unwrap_or_else(|| e.to_string())
}

fn check(r: i32, what: &str) -> Result<(), String> {
    if r == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", last_errno()))
    }
}

/// The name of the file an image target holds in its scratch root for
/// `regular_files` (nothing can be made there to try it on).
pub const PREMADE_PROBE: &str = ".mmapconf-probe-regular";

fn writable(dir: &Path) -> Result<String, String> {
    Scratch::new(dir, "writable", 0)?;
    Ok("open(O_CREAT) of a file in the scratch root".into())
}

/// On a read-only target: the file the harness put in its image, one
/// byte "x" then zeros to one page, reads back as such with read(2).
fn premade_regular_file(dir: &Path, ps: usize) -> Result<String, String> {
    let path = dir.join(PREMADE_PROBE);
    let f = File::open(&path)
        .map_err(|e| format!("read-only, and {PREMADE_PROBE}: {}", errno_of(&e)))?;
    let mut buf = vec![0u8; ps + 1];
    let n = f
        .read_at(&mut buf, 0)
        .map_err(|e| format!("pread: {}", errno_of(&e)))?;
    if n == ps && buf[0] == b'x' && buf[1..ps].iter().all(|b| *b == 0) {
        Ok("read-only: a one-page file of the image reads back with pread(2)".to_string())
    } else {
        Err(format!(
            "read-only, and {PREMADE_PROBE} reads back {n} bytes, not the page it was made with"
        ))
    }
}

fn fills_up(dir: &Path) -> Result<String, String> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(|e| format!("statvfs: {e}"))?;
    if s.blocks() > 0 {
        Ok(format!(
            "statvfs: {} blocks of {} bytes",
            s.blocks(),
            s.fragment_size()
        ))
    } else {
        Err("statvfs reports no size (f_blocks 0): writing grows it until memory runs out".into())
    }
}

fn regular_files(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "regular", 0)?;
    f.write(b"x", 0)?;
    check(
        unsafe { libc::ftruncate(f.fd(), ps as i64) },
        "ftruncate to a page",
    )?;
    Ok("write(2) of a byte and ftruncate(2) to a page".into())
}

fn o_direct(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "odirect", libc::O_DIRECT)?;
    let mut buf = vec![0x5au8; 2 * ps];
    let off = buf.as_ptr().align_offset(ps);
    let page = &mut buf[off..off + ps];
    // SAFETY: an aligned buffer of one page, ours.
    let n = unsafe { libc::pwrite(f.fd(), page.as_ptr().cast(), ps, 0) };
    if n != ps as isize {
        return Err(format!("O_DIRECT pwrite of a page: {}", last_errno()));
    }
    Ok(format!("O_DIRECT pwrite of {ps} bytes"))
}

fn sparse_files(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "sparse", 0)?;
    check(
        unsafe { libc::ftruncate(f.fd(), 16 * ps as i64) },
        "ftruncate",
    )?;
    check(unsafe { libc::fsync(f.fd()) }, "fsync")?;
    let st = f.stat()?;
    if st.st_blocks == 0 {
        Ok(format!("st_blocks 0 after ftruncate to {}", 16 * ps))
    } else {
        Err(format!(
            "st_blocks {} after ftruncate to {}: the zeros were allocated",
            st.st_blocks,
            16 * ps
        ))
    }
}

fn punch_hole(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "punch", 0)?;
    f.write(&vec![1u8; 2 * ps], 0)?;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    check(
        unsafe { libc::fallocate(f.fd(), mode, 0, ps as i64) },
        "fallocate(PUNCH_HOLE)",
    )?;
    Ok("fallocate(PUNCH_HOLE|KEEP_SIZE) of a page".into())
}

fn shared_writable_mmap(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "shared", 0)?;
    check(unsafe { libc::ftruncate(f.fd(), ps as i64) }, "ftruncate")?;
    Mapping::shared(f.fd(), ps, libc::PROT_READ | libc::PROT_WRITE)?;
    Ok("mmap(PROT_READ|PROT_WRITE, MAP_SHARED) of an O_RDWR file".into())
}

fn shared_mmap(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "shared-ro", 0)?;
    f.write(&vec![1u8; ps], 0)?;
    let ro = File::open(&f.path).map_err(|e| format!("open O_RDONLY: {e}"))?;
    Mapping::shared(ro.as_raw_fd(), ps, libc::PROT_READ)?;
    Ok("mmap(PROT_READ, MAP_SHARED) of an O_RDONLY file".into())
}

fn madv_remove(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "remove", 0)?;
    f.write(&vec![1u8; ps], 0)?;
    let m = Mapping::shared(f.fd(), ps, libc::PROT_READ | libc::PROT_WRITE)?;
    check(
        unsafe { libc::madvise(m.addr, ps, libc::MADV_REMOVE) },
        "madvise(MADV_REMOVE)",
    )?;
    Ok("madvise(MADV_REMOVE) of a shared file page".into())
}

fn writeback(dir: &Path, ps: usize) -> Result<String, String> {
    let pages = 8;
    let f = Scratch::new(dir, "writeback", 0)?;
    f.write(&vec![1u8; pages * ps], 0)?;
    check(unsafe { libc::fsync(f.fd()) }, "fsync")?;
    let m = Mapping::shared(f.fd(), pages * ps, libc::PROT_READ)?;
    let before = m.resident(ps)?;
    // SAFETY: advice on our own file.
    let r = unsafe { libc::posix_fadvise(f.fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(format!(
            "posix_fadvise(DONTNEED): {}",
            crate::names::errno_name(r)
        ));
    }
    let after = m.resident(ps)?;
    if after < pages {
        Ok(format!(
            "after fsync, POSIX_FADV_DONTNEED left {after} of {before} cached pages"
        ))
    } else {
        Err(format!(
            "after fsync, all {pages} pages stayed cached through POSIX_FADV_DONTNEED: the cache is the storage"
        ))
    }
}

fn cache_survives_open(dir: &Path, ps: usize) -> Result<String, String> {
    let f = Scratch::new(dir, "reopen", 0)?;
    f.write(&vec![7u8; ps], 0)?;
    let m = Mapping::shared(f.fd(), ps, libc::PROT_READ)?;
    // SAFETY: reading the first byte of our own mapping of a one-page file.
    let _ = unsafe { std::ptr::read_volatile(m.addr as *const u8) };
    if m.resident(ps)? != 1 {
        return Err("the page was not cached after a load".into());
    }
    drop(File::open(&f.path).map_err(|e| format!("second open: {}", errno_of(&e)))?);
    if m.resident(ps)? == 1 {
        Ok("a cached page stayed cached across another open(2)".into())
    } else {
        Err("another open(2) of the file dropped its cached page".into())
    }
}

/// A new file's STATX_ATTR_DAX: the kernel's own word that the file's
/// mappings go to the medium directly (Documentation/filesystems/dax.rst,
/// "Summary" 6: statx reports the effective DAX state). The mount option
/// alone is not enough: `dax=always` on a device that cannot do DAX only
/// warns, and `dax=inode` turns it on per file.
fn dax(dir: &Path) -> Result<String, String> {
    let f = Scratch::new(dir, "dax", 0)?;
    // SAFETY: statx fills the struct; the empty path with AT_EMPTY_PATH names the fd.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    check(
        unsafe {
            libc::statx(
                f.fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_BASIC_STATS,
                &mut stx,
            )
        },
        "statx",
    )?;
    let dax = libc::STATX_ATTR_DAX as u64;
    if stx.stx_attributes_mask & dax == 0 {
        Err("statx does not report STATX_ATTR_DAX here (kernel before 5.8 or filesystem without DAX)".into())
    } else if stx.stx_attributes & dax != 0 {
        Ok("statx: a new file has STATX_ATTR_DAX".into())
    } else {
        Err("statx: a new file lacks STATX_ATTR_DAX".into())
    }
}

/// Both mtime capabilities from one trial: a file whose mtime is set far in
/// the past gets a store through a shared mapping (its first access, so a
/// write fault), then an msync(MS_SYNC); st_mtime is read after each.
/// Returns (mtime_before_msync, mtime_on_write_fault).
fn mtimes_of_a_mapped_store(
    dir: &Path,
    ps: usize,
) -> (Result<String, String>, Result<String, String>) {
    let trial = || -> Result<(bool, bool), String> {
        let f = Scratch::new(dir, "mtime", 0)?;
        f.write(&vec![0u8; ps], 0)?;
        let old = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        check(
            unsafe { libc::futimens(f.fd(), [old, old].as_ptr()) },
            "futimens",
        )?;
        let m = Mapping::shared(f.fd(), ps, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: a store into our own writable mapping of a one-page file:
        // the first access, so it takes the write fault.
        unsafe { std::ptr::write_volatile(m.addr as *mut u8, 1) };
        let at_fault = f.stat()?.st_mtime != 1;
        check(
            unsafe { libc::msync(m.addr, ps, libc::MS_SYNC) },
            "msync(MS_SYNC)",
        )?;
        Ok((at_fault, f.stat()?.st_mtime != 1))
    };
    match trial() {
        Err(e) => (Err(e.clone()), Err(e)),
        Ok((at_fault, after_msync)) => (
            if at_fault {
                Ok("st_mtime changed at the write fault of a mapped store, before msync".into())
            } else {
                Err("st_mtime unchanged after the write fault of a mapped store (no msync)".into())
            },
            if after_msync {
                Ok("st_mtime changed after a mapped store and msync(MS_SYNC)".into())
            } else {
                Err("st_mtime unchanged after a mapped store and msync(MS_SYNC)".into())
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_capability_is_measured_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let got = measure(dir.path(), None);
        let all = [
            Probe::MapFixedNoreplace,
            Probe::MapSharedValidate,
            Probe::MadvWipeonfork,
            Probe::MemfdCreate,
            Probe::Mlock,
            Probe::PagemapPfn,
            Probe::MremapDontunmap,
            Probe::RegularFiles,
            Probe::ODirect,
            Probe::StorageView,
            Probe::SparseFiles,
            Probe::PunchHole,
            Probe::SharedWritableMmap,
            Probe::MadvRemove,
            Probe::Writeback,
            Probe::CacheSurvivesOpen,
            Probe::MtimeOnWriteFault,
            Probe::Persistent,
            Probe::Crash,
            Probe::Writable,
            Probe::ReadOnly,
            Probe::FillsUp,
            Probe::Dax,
            Probe::IoUring,
        ];
        for p in all {
            assert_eq!(got.contains_key(&p), p.is_target_capability(), "{p:?}");
        }
        assert!(!got[&Probe::Persistent].present, "an existing mount");
        // Any local directory can be mapped shared and writable.
        assert!(got[&Probe::SharedWritableMmap].present, "{got:?}");
        // A temporary directory is on a page-cache filesystem, not DAX.
        assert!(!got[&Probe::Dax].present, "{got:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe files are removed"
        );
    }

    #[test]
    fn on_tmpfs_the_cache_is_the_storage() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        if super::super::mount_of(dir.path()).map(|m| m.fs_type) != Some("tmpfs".into()) {
            return;
        }
        let got = measure(
            dir.path(),
            Some(Made {
                persistent: false,
                can_crash: true,
                no_crash_because: None,
                has_backing_files: false,
            }),
        );
        assert!(!got[&Probe::Writeback].present, "{got:?}");
        assert!(got[&Probe::SparseFiles].present, "{got:?}");
        assert!(got[&Probe::CacheSurvivesOpen].present, "{got:?}");
        assert!(!got[&Probe::Persistent].present);
        assert!(got[&Probe::Crash].present);
    }
}
