//! A defect planted on purpose, for the tests of `mmapconf explore` only:
//! with `MMAPCONF_PLANT_DEFECT=private-store-reaches-file` in the
//! environment of the harness (its workers inherit it), a store into a
//! MAP_PRIVATE file mapping is also pwritten into the file, as a kernel
//! that forgot copy-on-write would behave. The test proves explore finds
//! and shrinks such a defect; nothing else sets the variable.

use std::os::fd::RawFd;
use std::sync::OnceLock;

/// The environment variable that plants the defect.
pub const ENV: &str = "MMAPCONF_PLANT_DEFECT";
/// Its one accepted value.
pub const PRIVATE_STORE_REACHES_FILE: &str = "private-store-reaches-file";

fn planted() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(ENV).as_deref() == Ok(PRIVATE_STORE_REACHES_FILE))
}

/// Where stores into a new mapping would leak to: a duplicate of its fd
/// and its file offset, when the defect is planted and the mapping is a
/// private one of a file. The duplicate stays open for the worker's life.
pub fn leak_target(fd: RawFd, flags: i32, offset: i64) -> Option<(RawFd, i64)> {
    if !planted() || fd < 0 || flags & libc::MAP_PRIVATE == 0 {
        return None;
    }
    // SAFETY: dup of an fd the worker holds.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    (dup >= 0).then_some((dup, offset))
}

/// The defect itself: the stored bytes also go to the file (errors ignored,
/// as a kernel bug would not report them either).
pub fn leak_store(target: Option<(RawFd, i64)>, at: i64, bytes: &[u8]) {
    if let Some((fd, offset)) = target {
        // SAFETY: the buffer is valid for its length; fd is the worker's duplicate.
        unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), offset + at) };
    }
}
