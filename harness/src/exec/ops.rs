//! The syscall operations a worker performs: one function per operation,
//! and the only place in the harness that makes these calls on behalf of a case.
//!
//! Memory-management calls go through libc, not nix: cases pass arguments
//! the kernel must reject (length 0, NULL or unaligned addresses, unknown
//! flag bits), and nix's typed wrappers cannot express those by design.

// An early-returned observation is the error path of every op here; its
// size does not matter next to the syscall it reports on.
#![allow(clippy::result_large_err)]

use super::fault::{self, Fault};
use super::protocol::{Call, ExitStatus, Observation, Outcome, Place, Span, StatInfo};
use crate::case::values::{zeroed_vec, Bytes};
use crate::names;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// A named mapping: where the case's `mmap` put it and how long it was.
#[derive(Debug, Clone, Copy)]
pub struct MapInfo {
    pub addr: usize,
    pub len: u64,
    /// Only with the planted test defect (`plant`): where its stores leak to.
    pub leak: Option<(RawFd, i64)>,
}

/// Everything a worker holds by name. fork(2) copies it along with the
/// address space, which is exactly the inheritance a child should see.
pub struct WorkerState {
    /// The case's scratch directory. Opened for each path operation rather
    /// than held, so a worker keeps the filesystem busy only through the
    /// files and mappings the case gives it (a remount must see exactly those).
    pub dir: std::path::PathBuf,
    pub fds: HashMap<String, OwnedFd>,
    pub maps: HashMap<String, MapInfo>,
    /// System V segments made by `shmget` (name -> shmid).
    pub segs: HashMap<String, i32>,
    pub page_size: u64,
}

pub(super) type OpResult = Result<Observation, Observation>;

pub(super) fn last_errno() -> Observation {
    Observation::errno(Errno::last_raw())
}

fn from_nix(e: Errno) -> Observation {
    Observation::errno(e as i32)
}

/// A fault of an access that began at `start` in the mapping at `map_start`.
fn fault_observation(f: Fault, start: usize, map_start: usize) -> Observation {
    Observation::of(Outcome::Signal {
        signal: names::signal_name(f.signo),
        si_code: names::si_code_name(f.signo, f.code),
        offset: (f.addr as i64).wrapping_sub(start as i64),
        done: f.done,
        map_offset: (f.addr as i64).wrapping_sub(map_start as i64),
    })
}

impl WorkerState {
    pub(super) fn fd(&self, name: &str) -> Result<RawFd, Observation> {
        self.fds.get(name).map(|f| f.as_raw_fd()).ok_or_else(|| {
            Observation::error(format!(
                "no fd named `{name}` in this process (did its open fail?)"
            ))
        })
    }

    pub(super) fn map(&self, name: &str) -> Result<MapInfo, Observation> {
        self.maps.get(name).copied().ok_or_else(|| {
            Observation::error(format!(
                "no mapping named `{name}` in this process (did its mmap fail?)"
            ))
        })
    }

    fn place(&self, p: &Place) -> Result<usize, Observation> {
        match p {
            Place::Raw(a) => Ok(*a as usize),
            Place::InMap { map, at } => Ok(self.map(map)?.addr.wrapping_add(*at as usize)),
        }
    }

    /// Start address and length of a span; the length defaults to the rest of the map.
    pub(super) fn span(&self, s: &Span) -> Result<(usize, usize), Observation> {
        let m = self.map(&s.map)?;
        let addr = m.addr.wrapping_add(s.at as usize);
        let len = s
            .len
            .unwrap_or_else(|| m.len.saturating_sub(s.at.max(0) as u64));
        Ok((addr, len as usize))
    }

    fn dir_fd(&self) -> Result<OwnedFd, Errno> {
        let fd = nix::fcntl::open(
            &self.dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: the kernel just gave us this fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn open_beneath(&self, path: &str, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        open_beneath(self.dir_fd()?.as_raw_fd(), path, flags, mode)
    }

    /// Performs one call and reports what happened.
    pub fn perform(&mut self, call: &Call) -> Observation {
        super::ops_objects::xfsz_clear();
        let obs = match self.dispatch(call) {
            Ok(obs) | Err(obs) => obs,
        };
        // A write past RLIMIT_FSIZE raised SIGXFSZ: that is what the step observed.
        super::ops_objects::xfsz_observed(obs)
    }

    fn dispatch(&mut self, call: &Call) -> OpResult {
        match call {
            Call::Open {
                path,
                flags,
                mode,
                name,
            } => self.open(path, *flags, *mode, name),
            Call::Close { fd } => self.close(fd),
            Call::Ftruncate { fd, len } => {
                let fd = self.fd(fd)?;
                // SAFETY: plain syscall on an fd we own.
                check(unsafe { libc::ftruncate(fd, *len) })
            }
            Call::Pread { fd, at, len } => self.pread(fd, *at, *len),
            Call::Pwrite { fd, at, data } => {
                let fd = self.fd(fd)?;
                let bytes = AlignedBuf::from(data, self.page_size)?;
                // SAFETY: the buffer is valid for its length.
                let n = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), *at) };
                counted(n)
            }
            Call::Write { fd, data } => {
                let fd = self.fd(fd)?;
                let bytes = AlignedBuf::from(data, self.page_size)?;
                // SAFETY: the buffer is valid for its length.
                let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
                counted(n)
            }
            Call::Fsync { fd } => check(unsafe { libc::fsync(self.fd(fd)?) }),
            Call::Fdatasync { fd } => check(unsafe { libc::fdatasync(self.fd(fd)?) }),
            Call::Fstat { fd } => self.fstat(fd),
            Call::Futimens { fd, time } => {
                let ts = libc::timespec {
                    tv_sec: *time,
                    tv_nsec: 0,
                };
                let times = [ts, ts];
                // SAFETY: two valid timespecs.
                check(unsafe { libc::futimens(self.fd(fd)?, times.as_ptr()) })
            }
            Call::Unlink { path } => {
                let c = std::ffi::CString::new(path.as_str())
                    .map_err(|_| Observation::error("NUL in path"))?;
                let dir = self.dir_fd().map_err(from_nix)?;
                // SAFETY: valid C string and dir fd.
                check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
            }
            Call::MemfdCreate { label, flags, name } => {
                let c = std::ffi::CString::new(label.as_str())
                    .map_err(|_| Observation::error("NUL in name"))?;
                // SAFETY: valid C string.
                let fd = unsafe { libc::memfd_create(c.as_ptr(), *flags) };
                if fd < 0 {
                    return Err(last_errno());
                }
                // SAFETY: the kernel just gave us this fd.
                self.fds
                    .insert(name.clone(), unsafe { OwnedFd::from_raw_fd(fd) });
                Ok(Observation::ok())
            }
            Call::Mmap {
                fd,
                len,
                prot,
                flags,
                offset,
                addr,
                name,
            } => {
                let fd = match fd {
                    Some(f) => self.fd(f)?,
                    None => -1,
                };
                let hint = match addr {
                    Some(p) => self.place(p)?,
                    None => 0,
                };
                // SAFETY: mmap with case-chosen arguments; it cannot touch our
                // memory unless MAP_FIXED names it, and case addresses come from mmap.
                let p = unsafe {
                    libc::mmap(hint as *mut _, *len as usize, *prot, *flags, fd, *offset)
                };
                if p == libc::MAP_FAILED {
                    return Err(last_errno());
                }
                self.maps.insert(
                    name.clone(),
                    MapInfo {
                        addr: p as usize,
                        len: *len,
                        leak: super::plant::leak_target(fd, *flags, *offset),
                    },
                );
                Ok(Observation::ok())
            }
            Call::Munmap { span } => {
                let (a, l) = self.span(span)?;
                check(unsafe { libc::munmap(a as *mut _, l) })
            }
            Call::Mprotect { span, prot } => {
                let (a, l) = self.span(span)?;
                check(unsafe { libc::mprotect(a as *mut _, l, *prot) })
            }
            Call::Msync { span, flags } => {
                let (a, l) = self.span(span)?;
                check(unsafe { libc::msync(a as *mut _, l, *flags) })
            }
            Call::Madvise { span, advice } if *advice == libc::MADV_PAGEOUT => {
                let (a, l) = self.span(span)?;
                check(pageout_from_every_cpu(a as *mut _, l))
            }
            Call::Madvise { span, advice } => {
                let (a, l) = self.span(span)?;
                check(unsafe { libc::madvise(a as *mut _, l, *advice) })
            }
            Call::Mlock { span, flags } => {
                let (a, l) = self.span(span)?;
                match flags {
                    None => check(unsafe { libc::mlock(a as *const _, l) }),
                    Some(f) => check(unsafe { libc::syscall(libc::SYS_mlock2, a, l, *f) } as i32),
                }
            }
            Call::Munlock { span } => {
                let (a, l) = self.span(span)?;
                check(unsafe { libc::munlock(a as *const _, l) })
            }
            Call::Mincore { span } => self.mincore(span),
            Call::Mremap {
                map,
                at,
                old_len,
                new_len,
                flags,
                new_addr,
                name,
            } => {
                let m = self.map(map)?;
                let old = m.addr.wrapping_add(*at as usize);
                let target = match new_addr {
                    Some(p) => self.place(p)?,
                    None => 0,
                };
                // SAFETY: as for mmap.
                let p = unsafe {
                    libc::mremap(
                        old as *mut _,
                        *old_len as usize,
                        *new_len as usize,
                        *flags,
                        target,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(last_errno());
                }
                self.maps.insert(
                    name.clone(),
                    MapInfo {
                        addr: p as usize,
                        len: *new_len,
                        leak: m.leak.map(|(fd, off)| (fd, off + *at)),
                    },
                );
                Ok(Observation::ok())
            }
            Call::Store { map, at, data } => {
                let m = self.map(map)?;
                let start = m.addr.wrapping_add(*at as usize);
                let bytes = data.materialize().map_err(Observation::error)?;
                // SAFETY: see fault::store; faults are caught and reported.
                unsafe { fault::store(start, &bytes) }
                    .map_err(|f| fault_observation(f, start, m.addr))?;
                super::plant::leak_store(m.leak, *at, &bytes);
                Ok(Observation::ok())
            }
            Call::Load { map, at, len } => {
                let base = self.map(map)?.addr;
                let start = base.wrapping_add(*at as usize);
                let mut buf = zeroed_vec(*len).map_err(Observation::error)?;
                // SAFETY: see fault::load.
                unsafe { fault::load(start, &mut buf) }
                    .map_err(|f| fault_observation(f, start, base))?;
                Ok(with_bytes(buf))
            }
            Call::Increment {
                map,
                at,
                count,
                atomic,
                width,
            } => {
                let base = self.map(map)?.addr;
                let start = base.wrapping_add(*at as usize);
                // SAFETY: see fault::increment.
                unsafe { fault::increment(start, *count, *atomic, *width) }
                    .map_err(|f| fault_observation(f, start, base))?;
                Ok(Observation::ok())
            }
            Call::Pagemap { map, at, swapped } => {
                let addr = self.map(map)?.addr.wrapping_add(*at as usize) as u64;
                self.pagemap(addr, *swapped)
            }
            Call::Wait { pid } => wait_child(*pid),
            // --- issue 18, part A (see ops_buffers.rs) ---
            Call::Io {
                call,
                fd,
                offset,
                bufs,
            } => self.io(*call, fd, *offset, bufs),
            Call::AddSeals { fd, seals } => {
                // SAFETY: fcntl on an fd we own.
                check(unsafe { libc::fcntl(self.fd(fd)?, libc::F_ADD_SEALS, *seals) })
            }
            Call::GetSeals { fd } => {
                // SAFETY: fcntl on an fd we own.
                counted(unsafe { libc::fcntl(self.fd(fd)?, libc::F_GET_SEALS) } as isize)
            }
            Call::Dup { fd, onto, name } => self.dup(fd, onto.as_deref(), name),
            Call::Lseek { fd, offset, whence } => {
                // SAFETY: lseek on an fd we own.
                counted(unsafe { libc::lseek(self.fd(fd)?, *offset, *whence) } as isize)
            }
            Call::Mlockall { flags } => check(unsafe { libc::mlockall(*flags) }),
            Call::Munlockall => check(unsafe { libc::munlockall() }),
            Call::Smaps { map, at, field } => {
                let addr = self.map(map)?.addr.wrapping_add(*at as usize);
                super::ops_buffers::smaps_field(addr, *field)
            }
            Call::OpenSpecial { .. }
            | Call::ShmOpen { .. }
            | Call::ShmUnlink { .. }
            | Call::Shmget { .. }
            | Call::Shmat { .. }
            | Call::Shmdt { .. }
            | Call::ShmRmid { .. }
            | Call::Setrlimit { .. }
            | Call::IgnoreSignal { .. }
            | Call::DropPrivileges
            | Call::Address { .. }
            | Call::RemoteRead { .. }
            | Call::RemoteWrite { .. } => super::ops_objects::dispatch(self, call),
            Call::Vmsplice { .. }
            | Call::Read { .. }
            | Call::IoUringRegister { .. }
            | Call::IoUringFixed { .. }
            | Call::IoUringUnregister { .. } => super::ops_pins::dispatch(self, call),
        }
    }

    fn open(&mut self, path: &str, flags: i32, mode: u32, name: &str) -> OpResult {
        let fd = self.open_beneath(path, flags, mode).map_err(from_nix)?;
        self.fds.insert(name.to_string(), fd);
        Ok(Observation::ok())
    }

    fn close(&mut self, name: &str) -> OpResult {
        let fd = self
            .fds
            .remove(name)
            .ok_or_else(|| Observation::error(format!("no fd named `{name}`")))?;
        let raw = fd.into_raw_fd();
        // SAFETY: we owned it; close(2) reports its own errors (EIO on NFS, say).
        check(unsafe { libc::close(raw) })
    }

    fn pread(&self, fd: &str, at: i64, len: u64) -> OpResult {
        let fd = self.fd(fd)?;
        let mut buf = AlignedBuf::zeroed(len as usize, self.page_size)?;
        let mut got = 0usize;
        // Loop: a short read is not the end of the file until read returns 0.
        while got < buf.len() {
            // SAFETY: reading into our own buffer.
            let n = unsafe {
                libc::pread(
                    fd,
                    buf[got..].as_mut_ptr().cast(),
                    buf.len() - got,
                    at + got as i64,
                )
            };
            if n < 0 {
                return Err(last_errno());
            }
            if n == 0 {
                break;
            }
            got += n as usize;
        }
        Ok(with_bytes(buf[..got].to_vec()))
    }

    fn fstat(&self, fd: &str) -> OpResult {
        let st = nix::sys::stat::fstat(self.fd(fd)?).map_err(from_nix)?;
        let mut obs = Observation::ok();
        obs.stat = Some(StatInfo {
            size: st.st_size,
            blocks: st.st_blocks,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec,
        });
        Ok(obs)
    }

    /// The page frame number backing `addr`, from /proc/self/pagemap
    /// (bits 0-54; bit 63 says the page is present), or with `swapped`
    /// the swap bit (62: the entry is a swap entry) as 1 or 0.
    fn pagemap(&self, addr: u64, swapped: bool) -> OpResult {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open("/proc/self/pagemap")
            .map_err(|e| Observation::errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let mut entry = [0u8; 8];
        file.read_exact_at(&mut entry, (addr / self.page_size) * 8)
            .map_err(|e| Observation::errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
        // Entries are in the machine's own byte order.
        let e = u64::from_ne_bytes(entry);
        let mut obs = Observation::ok();
        obs.value = Some(if swapped {
            (e >> 62 & 1) as i64
        } else if e & (1 << 63) != 0 {
            (e & ((1 << 55) - 1)) as i64
        } else {
            0
        });
        Ok(obs)
    }

    fn mincore(&self, span: &Span) -> OpResult {
        let (a, l) = self.span(span)?;
        let ps = self.page_size as usize;
        let pages = l.div_ceil(ps).max(1);
        let mut vec = vec![0u8; pages];
        // SAFETY: vec holds one byte per page of the range.
        if unsafe { libc::mincore(a as *mut _, l, vec.as_mut_ptr()) } != 0 {
            return Err(last_errno());
        }
        vec.truncate(l.div_ceil(ps));
        let resident: Vec<u8> = vec.iter().map(|b| b & 1).collect();
        let mut obs = Observation::ok();
        obs.value = Some(resident.iter().map(|b| *b as i64).sum());
        obs.bytes = Some(resident);
        Ok(obs)
    }
}

/// Opens `path` inside `dir` and never outside it: RESOLVE_BENEATH refuses
/// `..` and symlinks that lead out (openat2, Linux 5.6). Older kernels fall
/// back to O_NOFOLLOW on a name already checked to be a plain file name.
pub fn open_beneath(dir: RawFd, path: &str, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    // openat2 refuses a mode without O_CREAT or O_TMPFILE, unlike open(2).
    let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let how = OpenHow::new()
        .flags(OFlag::from_bits_retain(flags | libc::O_CLOEXEC))
        .mode(Mode::from_bits_retain(if creates { mode } else { 0 }))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let raw = match openat2(dir, path, how) {
        Err(Errno::ENOSYS) => {
            let c = std::ffi::CString::new(path).map_err(|_| Errno::EINVAL)?;
            // SAFETY: valid C string and dir fd.
            let fd = unsafe {
                libc::openat(
                    dir,
                    c.as_ptr(),
                    flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    mode,
                )
            };
            Errno::result(fd)?
        }
        other => other?,
    };
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A page-aligned buffer, so pread/pwrite on an O_DIRECT fd meet its
/// alignment rule (the file offset and length are the case's to choose).
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    /// Err (an error observation, not an abort) when the memory cannot be
    /// had: a case may ask for more than the machine has.
    pub(crate) fn zeroed(len: usize, align: u64) -> Result<AlignedBuf, Observation> {
        let fail = || Observation::error(format!("cannot allocate {len} bytes: out of memory"));
        let layout =
            std::alloc::Layout::from_size_align(len.max(1), align as usize).map_err(|_| fail())?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).ok_or_else(fail)?;
        Ok(AlignedBuf { ptr, len, layout })
    }

    /// The bytes, made straight into an aligned buffer (O_DIRECT needs one).
    fn from(bytes: &Bytes, align: u64) -> Result<AlignedBuf, Observation> {
        let mut b = AlignedBuf::zeroed(bytes.len() as usize, align)?;
        bytes.copy_range(0, &mut b);
        Ok(b)
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialized bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len initialized bytes, and uniquely ours.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in zeroed().
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// madvise(MADV_PAGEOUT), then the same from each CPU the process may run
/// on, and the process's own CPU affinity back; the result is the first call's.
///
/// Reclaim can take only a page that is on an LRU list. A page faulted in a
/// moment ago may still sit in the per-CPU batch of the CPU that faulted it,
/// and madvise drains only the batch of the CPU it runs on (lru_add_drain).
/// A worker waits for its next step and may wake on another CPU, so a single
/// call missed such a page about once in 500 cases on a 2-CPU machine (the
/// kernel's cow selftest skips when that happens). One call on every allowed
/// CPU drains every batch that can hold the page; the extra calls see the
/// same range, so they cannot fail where the first succeeded.
fn pageout_from_every_cpu(addr: *mut libc::c_void, len: usize) -> i32 {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    // SAFETY: advice on a range of the worker's own mappings; errno is read by `check`.
    let rc = unsafe { libc::madvise(addr, len, libc::MADV_PAGEOUT) };
    if rc != 0 {
        return rc; // before any other call can change errno
    }
    let me = Pid::from_raw(0);
    let Ok(allowed) = sched_getaffinity(me) else {
        return rc;
    };
    for cpu in (0..CpuSet::count()).filter(|&c| allowed.is_set(c).unwrap_or(false)) {
        let mut one = CpuSet::new();
        if one.set(cpu).is_ok() && sched_setaffinity(me, &one).is_ok() {
            // SAFETY: as above; its result repeats the first call's.
            unsafe { libc::madvise(addr, len, libc::MADV_PAGEOUT) };
        }
    }
    let _ = sched_setaffinity(me, &allowed);
    rc
}

pub(super) fn check(rc: i32) -> OpResult {
    if rc == 0 {
        Ok(Observation::ok())
    } else {
        Err(last_errno())
    }
}

pub(super) fn counted(n: isize) -> OpResult {
    if n < 0 {
        return Err(last_errno());
    }
    let mut obs = Observation::ok();
    obs.value = Some(n as i64);
    Ok(obs)
}

/// Bytes read, and the same bytes as a number when they fit an integer.
pub fn with_bytes(buf: Vec<u8>) -> Observation {
    let mut obs = Observation::ok();
    obs.value = match buf.len() {
        1 => Some(buf[0] as i64),
        2 => Some(u16::from_ne_bytes([buf[0], buf[1]]) as i64),
        4 => Some(u32::from_ne_bytes(buf[..4].try_into().unwrap()) as i64),
        8 => Some(u64::from_ne_bytes(buf[..8].try_into().unwrap()) as i64),
        _ => None,
    };
    obs.bytes = Some(buf);
    obs
}

fn wait_child(pid: i32) -> OpResult {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(from_nix(e)),
            Ok(status) => {
                let mut obs = Observation::ok();
                obs.exit = Some(match status {
                    WaitStatus::Exited(_, code) => ExitStatus::Exited(code),
                    WaitStatus::Signaled(_, sig, _) => ExitStatus::Killed(sig.as_str().to_string()),
                    other => {
                        return Err(Observation::error(format!(
                            "unexpected wait status {other:?}"
                        )))
                    }
                });
                return Ok(obs);
            }
        }
    }
}
