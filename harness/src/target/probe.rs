//! Whether a case can run here: its `requires` against the environment,
//! and kernel features found by trying them (once per run).

use super::Environment;
use crate::case::model::{Probe, Requires};
use crate::names::KernelRange;
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a case cannot run here, or None when it can.
pub fn unmet(req: &Requires, env: &Environment) -> Option<String> {
    if req.root && env.euid != 0 {
        return Some("needs root".to_string());
    }
    if let Some(k) = &req.kernel {
        match KernelRange::parse(k) {
            Ok(range) if !range.contains(env.kernel()) => {
                return Some(format!("needs kernel {k}, running {}", env.kernel_release))
            }
            Err(e) => return Some(e),
            _ => {}
        }
    }
    if !req.fs.is_empty() && !req.fs.contains(&env.fs_type) {
        return Some(format!(
            "needs filesystem {}, running on {}",
            req.fs.join(" or "),
            env.fs_type
        ));
    }
    if req.not_fs.contains(&env.fs_type) {
        return Some(format!("does not apply to {}", env.fs_type));
    }
    if !req.arch.is_empty() && !req.arch.contains(&env.arch) {
        return Some(format!(
            "needs architecture {}, running {}",
            req.arch.join(" or "),
            env.arch
        ));
    }
    if let Some(ps) = req.page_size {
        if ps != env.page_size {
            return Some(format!("needs page size {ps}, running {}", env.page_size));
        }
    }
    for p in &req.probes {
        if let Err(why) = probe(*p) {
            return Some(why);
        }
    }
    None
}

/// Tries a feature once and remembers the answer for the rest of the run.
pub fn probe(p: Probe) -> Result<(), String> {
    static CACHE: Mutex<Option<HashMap<Probe, Result<(), String>>>> = Mutex::new(None);
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    cache.entry(p).or_insert_with(|| try_feature(p)).clone()
}

struct Anon {
    addr: *mut libc::c_void,
    len: usize,
}

impl Anon {
    fn new(len: usize, flags: i32) -> Option<Anon> {
        // SAFETY: a fresh private anonymous mapping, unmapped on drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (addr != libc::MAP_FAILED).then_some(Anon { addr, len })
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: we mapped it.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

fn try_feature(p: Probe) -> Result<(), String> {
    let ps = super::page_size() as usize;
    match p {
        Probe::MapFixedNoreplace => {
            let a = Anon::new(ps, libc::MAP_PRIVATE).ok_or("probe mmap failed")?;
            // SAFETY: NOREPLACE over our own mapping must fail; a kernel that
            // ignores the flag places the mapping elsewhere, which we unmap.
            let r = unsafe {
                libc::mmap(
                    a.addr,
                    ps,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if r == libc::MAP_FAILED && errno() == libc::EEXIST {
                Ok(())
            } else {
                if r != libc::MAP_FAILED && r != a.addr {
                    unsafe { libc::munmap(r, ps) };
                }
                Err("kernel does not honour MAP_FIXED_NOREPLACE (Linux 4.17)".into())
            }
        }
        Probe::MapSharedValidate => {
            // A kernel that knows MAP_SHARED_VALIDATE refuses MAP_SYNC on
            // shmem with EOPNOTSUPP; one that does not sees an unknown map
            // type (3) and says EINVAL. Anonymous mappings do not validate.
            // SAFETY: static C string.
            let fd = unsafe { libc::memfd_create(c"mmapconf-probe".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err("cannot probe MAP_SHARED_VALIDATE without memfd_create".into());
            }
            // SAFETY: fd is ours; a successful mapping is unmapped at once.
            let r = unsafe {
                libc::ftruncate(fd, ps as i64);
                libc::mmap(
                    std::ptr::null_mut(),
                    ps,
                    libc::PROT_READ,
                    libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
                    fd,
                    0,
                )
            };
            let e = errno();
            if r != libc::MAP_FAILED {
                unsafe { libc::munmap(r, ps) };
            }
            unsafe { libc::close(fd) };
            if r == libc::MAP_FAILED && e == libc::EOPNOTSUPP {
                Ok(())
            } else {
                Err("kernel does not validate MAP_SHARED_VALIDATE flags (Linux 4.15)".into())
            }
        }
        Probe::MadvWipeonfork => {
            let a = Anon::new(ps, libc::MAP_PRIVATE).ok_or("probe mmap failed")?;
            // SAFETY: advice on our own mapping.
            if unsafe { libc::madvise(a.addr, ps, libc::MADV_WIPEONFORK) } == 0 {
                Ok(())
            } else {
                Err("kernel does not know MADV_WIPEONFORK (Linux 4.14)".into())
            }
        }
        Probe::MemfdCreate => {
            // SAFETY: static C string.
            let fd = unsafe { libc::memfd_create(c"mmapconf-probe".as_ptr(), libc::MFD_CLOEXEC) };
            if fd >= 0 {
                unsafe { libc::close(fd) };
                Ok(())
            } else {
                Err("kernel has no memfd_create (Linux 3.17)".into())
            }
        }
        Probe::Mlock => {
            let a = Anon::new(ps, libc::MAP_PRIVATE).ok_or("probe mmap failed")?;
            // SAFETY: locking our own mapping.
            if unsafe { libc::mlock(a.addr, ps) } == 0 {
                unsafe { libc::munlock(a.addr, ps) };
                Ok(())
            } else {
                Err(format!(
                    "mlock not permitted here ({})",
                    crate::names::errno_name(errno())
                ))
            }
        }
        Probe::PagemapPfn => {
            use std::io::{Read, Seek, SeekFrom};
            let a =
                Anon::new(ps, libc::MAP_PRIVATE | libc::MAP_POPULATE).ok_or("probe mmap failed")?;
            let mut f = std::fs::File::open("/proc/self/pagemap")
                .map_err(|e| format!("no /proc/self/pagemap: {e}"))?;
            let mut entry = [0u8; 8];
            f.seek(SeekFrom::Start((a.addr as u64 / ps as u64) * 8))
                .and_then(|_| f.read_exact(&mut entry))
                .map_err(|e| format!("cannot read /proc/self/pagemap: {e}"))?;
            let v = u64::from_le_bytes(entry);
            if v & (1 << 63) != 0 && v & ((1 << 55) - 1) != 0 {
                Ok(())
            } else {
                Err("/proc/self/pagemap hides page frame numbers (needs CAP_SYS_ADMIN)".into())
            }
        }
        Probe::MremapDontunmap => {
            let a = Anon::new(ps, libc::MAP_PRIVATE).ok_or("probe mmap failed")?;
            // SAFETY: moves our own mapping; the result is unmapped below.
            let r = unsafe {
                libc::mremap(
                    a.addr,
                    ps,
                    ps,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                unsafe { libc::munmap(r, ps) };
                Ok(())
            } else {
                Err("kernel does not know MREMAP_DONTUNMAP (Linux 5.7)".into())
            }
        }
    }
}
