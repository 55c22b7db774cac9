//! Whether a case can run here: its `requires` against the environment,
//! and kernel features found by trying them (once per run).

use super::Environment;
use crate::case::model::{Case, Probe, Zeros};
use crate::names::KernelRange;
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a case cannot run here, or None when it can.
pub fn unmet(case: &Case, env: &Environment) -> Option<String> {
    let req = &case.requires;
    if req.root && env.euid != 0 {
        return Some("needs root".to_string());
    }
    if case.uses_second_mount() && env.second_mount.is_none() {
        return Some("a process works through a second mount of the filesystem, and the run has none (run --dir with --second-dir)".to_string());
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
    if !req.fs.is_empty() && !req.fs.iter().any(|f| env.is_fs(f)) {
        return Some(format!(
            "needs filesystem {}, running on {}",
            req.fs.join(" or "),
            env.fs_type
        ));
    }
    if let Some(f) = req.not_fs.iter().find(|f| env.is_fs(f)) {
        return Some(format!(
            "does not apply to {f} (running on {})",
            env.fs_type
        ));
    }
    if !req.target.is_empty() && !env.is_target(&req.target) {
        return Some(format!(
            "needs target {}, running on {}",
            req.target.join(" or "),
            env.target.as_deref().unwrap_or("an existing mount")
        ));
    }
    if !env.has_mount_options(&req.mount_options) {
        return Some(format!(
            "needs mount options {}, mounted {}",
            req.mount_options.join(","),
            env.mount_options
        ));
    }
    if !req.arch.is_empty() && !req.arch.contains(&env.arch) {
        return Some(format!(
            "needs architecture {}, running {}",
            req.arch.join(" or "),
            env.arch
        ));
    }
    if let Some(why) = super::kconfig::unmet(&req.config) {
        return Some(why);
    }
    if let Some(ps) = req.page_size {
        if ps != env.page_size {
            return Some(format!("needs page size {ps}, running {}", env.page_size));
        }
    }
    // Files need a target with ordinary files, unless the case names this
    // filesystem (hugetlbfs cases state their sizes in huge pages); a file
    // that must start with a hole needs sparse files.
    let files = case.uses_files() && !req.fs.iter().any(|f| env.is_fs(f));
    // A case that writes to the target's files needs a writable target,
    // unless it is written for read-only ones (and expects the writes to fail).
    let writes = if req.probes.contains(&Probe::ReadOnly) {
        None
    } else {
        case.writes_target()
    };
    if files {
        if let Err(why) = capability(Probe::RegularFiles, env) {
            return Some(why);
        }
    }
    if let Some(step) = &writes {
        if let Err(why) = capability(Probe::Writable, env) {
            return Some(format!(
                "the case writes to the target's files ({step}); {why}"
            ));
        }
    }
    let holes = case.files.values().any(|f| f.zeros == Some(Zeros::Hole));
    let storage = case.reads_storage();
    let fills = case.fills_fs();
    // A `crash` step needs a target the harness can cut, whatever the case
    // says it requires (on a device given with --device, ext2 cannot be).
    let crashes = case
        .steps
        .iter()
        .any(|s| matches!(s.op, crate::case::model::Op::Crash));
    let needed = req
        .probes
        .iter()
        .copied()
        .chain(fills.then_some(Probe::FillsUp))
        .chain(crashes.then_some(Probe::Crash))
        .chain(holes.then_some(Probe::SparseFiles))
        .chain(storage.then_some(Probe::StorageView));
    for p in needed {
        let answer = if p.is_target_capability() {
            capability(p, env)
        } else {
            probe(p)
        };
        if let Err(why) = answer {
            return Some(why);
        }
    }
    None
}

/// A capability of the target as measured at the start of the run.
fn capability(p: Probe, env: &Environment) -> Result<(), String> {
    let name = serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match env.capabilities.get(&p) {
        Some(m) if m.present => Ok(()),
        Some(m) => Err(format!("target lacks {name}: {}", m.detail)),
        None => Err(format!("{name} was not measured on this target")),
    }
}

/// Tries a feature once and remembers the answer for the rest of the run.
pub fn probe(p: Probe) -> Result<(), String> {
    // Not remembered: the pool is reserved when a run starts, after which
    // the answer changes.
    if p == Probe::HugetlbPool {
        return super::hugetlb::probe();
    }
    // Not remembered either: swap may be switched on or off during a run.
    if p == Probe::Swap {
        return swap_active(&std::fs::read_to_string("/proc/swaps").unwrap_or_default());
    }
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
        // Measured on the target, not tried here (see target::capability).
        Probe::RegularFiles
        | Probe::ODirect
        | Probe::StorageView
        | Probe::SparseFiles
        | Probe::PunchHole
        | Probe::SharedWritableMmap
        | Probe::SharedMmap
        | Probe::MadvRemove
        | Probe::Writeback
        | Probe::CacheSurvivesOpen
        | Probe::MtimeOnWriteFault
        | Probe::MtimeBeforeMsync
        | Probe::Persistent
        | Probe::Crash
        | Probe::Writable
        | Probe::ReadOnly
        | Probe::FillsUp
        | Probe::Dax => Err(format!("{p:?} is a capability of the target")),
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
            if shows_frame(entry) {
                Ok(())
            } else {
                Err("/proc/self/pagemap hides page frame numbers (needs CAP_SYS_ADMIN)".into())
            }
        }
        Probe::HugetlbPool => super::hugetlb::probe(),
        Probe::Swap => swap_active(&std::fs::read_to_string("/proc/swaps").unwrap_or_default()),
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
        Probe::IoUring => crate::exec::ops_pins::probe_io_uring(ps),
    }
}

/// Whether a /proc/self/pagemap entry (a u64 in the machine's own byte
/// order: big-endian on s390x) has its page present and a frame number.
fn shows_frame(entry: [u8; 8]) -> bool {
    let v = u64::from_ne_bytes(entry);
    v & (1 << 63) != 0 && v & ((1 << 55) - 1) != 0
}

/// Whether the text of /proc/swaps lists a swap area with room left: its
/// lines after the header are `Filename Type Size Used Priority`, sizes in KiB.
fn swap_active(proc_swaps: &str) -> Result<(), String> {
    let free: Vec<u64> = proc_swaps
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let size = f.get(2)?.parse::<u64>().ok()?;
            let used = f.get(3)?.parse::<u64>().ok()?;
            Some(size.saturating_sub(used))
        })
        .collect();
    match free.iter().max() {
        None => Err("no swap is active (/proc/swaps lists no swap area)".into()),
        Some(0) => Err("every swap area in /proc/swaps is full".into()),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::capability::Measured;

    #[test]
    fn a_pagemap_entry_is_read_in_the_machine_byte_order() {
        let present_pfn_42 = (1u64 << 63) | 42;
        assert!(shows_frame(present_pfn_42.to_ne_bytes()));
        // Read in the other byte order, the present bit would be bit 7 and the frame 0x80 << 56.
        assert!(!shows_frame(present_pfn_42.swap_bytes().to_ne_bytes()));
        assert!(
            !shows_frame((1u64 << 63).to_ne_bytes()),
            "present without a frame number"
        );
        assert!(
            !shows_frame(42u64.to_ne_bytes()),
            "a frame number of a page not present"
        );
    }

    #[test]
    fn swap_is_active_with_an_area_that_has_room() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(swap_active(header).unwrap_err().contains("no swap"));
        assert!(swap_active("").is_err());
        let full = format!("{header}/dev/zram0 partition 1024 1024 100\n");
        assert!(swap_active(&full).unwrap_err().contains("full"));
        let room = format!("{full}/swapfile file 65532 12 -2\n");
        assert_eq!(swap_active(&room), Ok(()));
    }
    use std::path::Path;

    fn case(requires: serde_json::Value, files: serde_json::Value) -> Case {
        serde_json::from_value(serde_json::json!({
            "title": "t", "refs": ["r"], "requires": requires, "files": files,
            "steps": [ { "in": "p", "do": "exit", "code": 0 } ]
        }))
        .unwrap()
    }

    fn env(fs_type: &str) -> Environment {
        let mut env = Environment::probe(Path::new("/"));
        env.fs_type = fs_type.to_string();
        env.fs_subtype = fs_type.strip_prefix("fuse.").map(str::to_string);
        env.capabilities.clear();
        env.capabilities.insert(Probe::RegularFiles, measured(true));
        env
    }

    fn measured(present: bool) -> Measured {
        Measured {
            present,
            detail: "seen".into(),
        }
    }

    #[test]
    fn filesystem_names_match_families_and_subtypes() {
        let none = serde_json::json!({});
        let on = |fs: &str, req| unmet(&case(req, none.clone()), &env(fs));
        assert_eq!(
            on("fuse.bindfs", serde_json::json!({ "fs": ["fuse"] })),
            None
        );
        assert_eq!(on("fuseblk", serde_json::json!({ "fs": ["fuse"] })), None);
        assert!(on("ext4", serde_json::json!({ "fs": ["fuse"] })).is_some());
        let not_fuse = serde_json::json!({ "not_fs": ["fuse"] });
        let why = on("fuse.bindfs", not_fuse.clone()).unwrap();
        assert!(why.contains("does not apply to fuse"), "{why}");
        assert_eq!(on("tmpfs", not_fuse), None);
    }

    #[test]
    fn targets_and_mount_options_are_required_by_name() {
        let none = serde_json::json!({});
        let c = case(serde_json::json!({ "target": ["ext4-1k"] }), none.clone());
        let mut e = env("ext4");
        assert!(unmet(&c, &e).unwrap().contains("needs target ext4-1k"));
        e.target = Some("ext4-1k".into());
        assert_eq!(unmet(&c, &e), None);
        let c = case(serde_json::json!({ "mount_options": ["nodelalloc"] }), none);
        e.mount_options = "rw,relatime rw,delalloc".into();
        assert!(unmet(&c, &e)
            .unwrap()
            .contains("needs mount options nodelalloc"));
        e.mount_options = "rw,relatime rw,nodelalloc".into();
        assert_eq!(unmet(&c, &e), None);
    }

    #[test]
    fn target_capabilities_come_from_the_measurement() {
        let c = case(
            serde_json::json!({ "probes": ["o_direct"] }),
            serde_json::json!({}),
        );
        let mut e = env("fuse.x");
        assert!(unmet(&c, &e).unwrap().contains("o_direct was not measured"));
        e.capabilities.insert(Probe::ODirect, measured(false));
        assert_eq!(
            unmet(&c, &e).as_deref(),
            Some("target lacks o_direct: seen")
        );
        e.capabilities.insert(Probe::ODirect, measured(true));
        assert_eq!(unmet(&c, &e), None);
    }

    #[test]
    fn without_ordinary_files_only_cases_that_name_the_filesystem_use_files() {
        let mut e = env("hugetlbfs");
        e.capabilities.insert(Probe::RegularFiles, measured(false));
        let files = serde_json::json!({ "f": { "size": 4096 } });
        let plain = case(serde_json::json!({}), files.clone());
        assert_eq!(
            unmet(&plain, &e).as_deref(),
            Some("target lacks regular_files: seen")
        );
        let named = case(serde_json::json!({ "fs": ["hugetlbfs"] }), files);
        assert_eq!(unmet(&named, &e), None);
        let anonymous = case(serde_json::json!({}), serde_json::json!({}));
        assert_eq!(unmet(&anonymous, &e), None);
    }

    fn with_steps(requires: serde_json::Value, steps: serde_json::Value) -> Case {
        serde_json::from_value(serde_json::json!({
            "title": "t", "refs": ["r"], "requires": requires,
            "files": { "f": { "size": 8 } }, "steps": steps
        }))
        .unwrap()
    }

    #[test]
    fn on_a_read_only_target_only_cases_that_write_are_skipped() {
        let mut e = env("erofs");
        e.capabilities.insert(Probe::Writable, measured(false));
        e.capabilities.insert(Probe::ReadOnly, measured(true));
        let none = serde_json::json!({});
        let open = |flags: &str| serde_json::json!({ "in": "p", "do": "open", "path": "f", "flags": flags, "as": "fd" });
        let reads = with_steps(none.clone(), serde_json::json!([open("O_RDONLY")]));
        assert_eq!(unmet(&reads, &e), None);
        for flags in ["O_RDWR", "O_WRONLY", "O_RDONLY|O_CREAT", "O_RDONLY|O_TRUNC"] {
            let c = with_steps(none.clone(), serde_json::json!([open(flags)]));
            let why = unmet(&c, &e).unwrap();
            assert!(
                why.contains("writes to the target's files (step 1: open O_"),
                "{why}"
            );
            assert!(why.contains("lacks writable"), "{why}");
        }
        // fsync of a read-only descriptor counts (no fsync on erofs); a
        // memfd's ftruncate, inside `together` or not, does not.
        let fsync = with_steps(
            none.clone(),
            serde_json::json!([open("O_RDONLY"), { "in": "p", "do": "fsync", "fd": "fd" }]),
        );
        assert!(unmet(&fsync, &e).unwrap().contains("step 2: fsync"));
        let memfd = with_steps(
            none.clone(),
            serde_json::json!([
                { "in": "p", "do": "memfd_create", "as": "m" },
                { "do": "together", "steps": [ { "in": "p", "do": "ftruncate", "fd": "m", "len": 8 } ] }
            ]),
        );
        assert_eq!(unmet(&memfd, &e), None);
        let inner = with_steps(
            none,
            serde_json::json!([
                { "do": "together", "steps": [ { "in": "p", "do": "unlink", "path": "f" } ] }
            ]),
        );
        assert!(unmet(&inner, &e).unwrap().contains("step 1.1: unlink"));
        // Written for read-only targets: its writes are expected to fail.
        let ro = with_steps(
            serde_json::json!({ "probes": ["read_only"] }),
            serde_json::json!([open("O_RDWR")]),
        );
        assert_eq!(unmet(&ro, &e), None);
        e.capabilities.insert(Probe::ReadOnly, measured(false));
        assert!(unmet(&ro, &e).unwrap().contains("lacks read_only"));
    }

    #[test]
    fn fill_fs_needs_a_target_that_fills_up() {
        let mut e = env("ramfs");
        e.capabilities.insert(Probe::Writable, measured(true));
        e.capabilities.insert(Probe::FillsUp, measured(false));
        let c = with_steps(
            serde_json::json!({}),
            serde_json::json!([{ "do": "fill_fs", "path": "filler" }]),
        );
        assert_eq!(
            unmet(&c, &e).as_deref(),
            Some("target lacks fills_up: seen")
        );
        e.capabilities.insert(Probe::FillsUp, measured(true));
        assert_eq!(unmet(&c, &e), None);
    }

    #[test]
    fn a_file_that_starts_with_a_hole_needs_sparse_files() {
        let hole = case(
            serde_json::json!({}),
            serde_json::json!({ "f": { "size": 8192, "zeros": "hole" } }),
        );
        let allocated = case(
            serde_json::json!({}),
            serde_json::json!({ "f": { "size": 8192, "zeros": "allocated" } }),
        );
        let mut e = env("fuseblk");
        e.capabilities.insert(Probe::SparseFiles, measured(false));
        assert!(unmet(&hole, &e).unwrap().contains("sparse_files"));
        assert_eq!(unmet(&allocated, &e), None);
        e.capabilities.insert(Probe::SparseFiles, measured(true));
        assert_eq!(unmet(&hole, &e), None);
    }
}
