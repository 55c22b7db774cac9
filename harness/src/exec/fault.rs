//! Rust side of the fault-guarded accesses in `fault.c`.

use std::os::raw::c_int;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawFault {
    signo: c_int,
    code: c_int,
    addr: usize,
    done: u64,
}

extern "C" {
    fn mc_install_fault_handlers() -> c_int;
    fn mc_store(dst: *mut u8, src: *const u8, n: usize, f: *mut RawFault) -> c_int;
    fn mc_load(dst: *mut u8, src: *const u8, n: usize, f: *mut RawFault) -> c_int;
    fn mc_increment(p: *mut u8, count: u64, atomic: c_int, width: c_int, f: *mut RawFault)
        -> c_int;
}

/// A signal raised by a guarded access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub signo: i32,
    pub code: i32,
    pub addr: usize,
    /// Bytes (or increments) completed before the fault.
    pub done: u64,
}

/// Installs the SIGBUS/SIGSEGV handlers; call once at worker start.
pub fn install_handlers() -> std::io::Result<()> {
    // SAFETY: installs process-wide handlers from a single-threaded worker.
    if unsafe { mc_install_fault_handlers() } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn check(rc: c_int, raw: RawFault) -> Result<(), Fault> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Fault {
            signo: raw.signo,
            code: raw.code,
            addr: raw.addr,
            done: raw.done,
        })
    }
}

/// Stores `src` at `addr` byte by byte.
///
/// # Safety
/// `addr` must be an address the case chose; it may be unmapped or
/// protected (that is the point), but it must not alias the worker's own
/// heap or stack, which case addresses never do: they come from mmap.
pub unsafe fn store(addr: usize, src: &[u8]) -> Result<(), Fault> {
    let mut raw = RawFault::default();
    let rc = mc_store(addr as *mut u8, src.as_ptr(), src.len(), &mut raw);
    check(rc, raw)
}

/// Loads `dst.len()` bytes from `addr` byte by byte.
///
/// # Safety
/// As for [`store`].
pub unsafe fn load(addr: usize, dst: &mut [u8]) -> Result<(), Fault> {
    let mut raw = RawFault::default();
    let rc = mc_load(dst.as_mut_ptr(), addr as *const u8, dst.len(), &mut raw);
    check(rc, raw)
}

/// Increments the `width`-byte integer at `addr` `count` times.
///
/// # Safety
/// As for [`store`].
pub unsafe fn increment(addr: usize, count: u64, atomic: bool, width: u8) -> Result<(), Fault> {
    let mut raw = RawFault::default();
    let rc = mc_increment(
        addr as *mut u8,
        count,
        atomic as c_int,
        width as c_int,
        &mut raw,
    );
    check(rc, raw)
}
