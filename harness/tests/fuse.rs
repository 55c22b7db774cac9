//! The FUSE server target (`target::fuse`): each mode mounted for real,
//! checked through the mount with plain syscalls and against its backing
//! storage, then stopped without leaving anything behind. Skipped, with
//! the reason printed, where FUSE cannot be mounted (not root, no
//! /dev/fuse) or the kernel lacks a mode's feature.

use mmapconf::target::fuse::{self, FuseMode, FuseMount};
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mmapconf"))
}

/// A mount of `mode` in a fresh temporary directory, or None (printed) when
/// this machine or kernel cannot have one.
fn start(mode: FuseMode) -> Option<(tempfile::TempDir, FuseMount)> {
    if let Some(why) = fuse::unavailable() {
        eprintln!("skipped ({mode}): {why}");
        return None;
    }
    let base = tempfile::tempdir().unwrap();
    match FuseMount::start_with(exe(), mode, base.path()) {
        Ok(m) => Some((base, m)),
        Err(e) if e.contains("unsupported:") => {
            eprintln!("skipped ({mode}): {e}");
            None
        }
        Err(e) => panic!("{mode}: {e}"),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// mmap(MAP_SHARED, PROT_READ|PROT_WRITE) of `len` bytes of `fd`: the
/// address, or the errno.
fn map_shared(fd: i32, len: usize) -> Result<*mut u8, i32> {
    // SAFETY: a new mapping; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p.cast())
    }
}

/// Stores `bytes` at `at` in a mapping, msync(MS_SYNC)s and unmaps it.
fn store_sync_unmap(p: *mut u8, len: usize, at: usize, bytes: &[u8]) {
    // SAFETY: `p` maps `len` bytes and at + bytes.len() <= len.
    unsafe {
        assert!(at + bytes.len() <= len);
        for (i, b) in bytes.iter().enumerate() {
            std::ptr::write_volatile(p.add(at + i), *b);
        }
        assert_eq!(libc::msync(p.cast(), len, libc::MS_SYNC), 0, "msync");
        assert_eq!(libc::munmap(p.cast(), len), 0, "munmap");
    }
}

/// The page frame mapped at `p` (read first, so it is present), from
/// /proc/self/pagemap (root sees frame numbers).
fn frame(p: *const u8) -> u64 {
    // SAFETY: `p` is a mapped, readable address.
    unsafe { std::ptr::read_volatile(p) };
    let page = mmapconf::target::page_size();
    let mut entry = [0u8; 8];
    std::fs::File::open("/proc/self/pagemap")
        .unwrap()
        .read_exact_at(&mut entry, p as u64 / page * 8)
        .unwrap();
    u64::from_le_bytes(entry) & ((1 << 55) - 1)
}

fn mounted(at: &Path) -> bool {
    let at = at.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*at))
}

/// Whether `pid` is still a process (a zombie counts: not reaped).
fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn exercise(mode: FuseMode) {
    let Some((_base, mut m)) = start(mode) else {
        return;
    };
    let mp = m.mount_point().to_path_buf();
    let page = mmapconf::target::page_size() as usize;

    // Create, write, read back; the bytes are in the server's storage.
    std::fs::write(mp.join("f"), b"hello fuse").unwrap();
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"hello fuse");
    assert_eq!(std::fs::read(m.backing_path("f")).unwrap(), b"hello fuse");
    assert_eq!(m.backing_path(mp.join("f")), m.backing_path("f"));

    // A MAP_SHARED store reaches the storage after msync(MS_SYNC).
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mp.join("f"))
        .unwrap();
    f.set_len(page as u64).unwrap();
    match (map_shared(f.as_raw_fd(), page), mode.refuses_shared_mmap()) {
        (Ok(p), false) => {
            store_sync_unmap(p, page, 100, b"mapped");
            let stored = std::fs::read(m.backing_path("f")).unwrap();
            assert_eq!(
                &stored[100..106],
                b"mapped",
                "{mode}: msync did not reach the server"
            );
            // Passthrough maps the backing file's own page; every other
            // mode has a page cache of its own for the FUSE file.
            let b = OpenOptions::new()
                .read(true)
                .write(true)
                .open(m.backing_path("f"))
                .unwrap();
            let through = map_shared(f.as_raw_fd(), page).unwrap();
            let direct = map_shared(b.as_raw_fd(), page).unwrap();
            let (a, b) = (frame(through), frame(direct));
            // 0: frame numbers hidden (no CAP_SYS_ADMIN in this namespace).
            if a != 0 && b != 0 {
                let same = a == b;
                assert_eq!(
                    same,
                    mode == FuseMode::Passthrough,
                    "{mode}: same frame as the storage"
                );
            }
            store_sync_unmap(through, page, 0, b"");
            store_sync_unmap(direct, page, 0, b"");
        }
        // fs/fuse/file.c: FOPEN_DIRECT_IO without FUSE_DIRECT_IO_ALLOW_MMAP.
        (Err(e), true) => assert_eq!(e, libc::ENODEV, "{mode}: shared mmap"),
        (Ok(_), true) => panic!("{mode}: a shared mapping was allowed"),
        (Err(e), false) => panic!("{mode}: shared mmap failed: errno {e}"),
    }

    // Truncate, through a descriptor and by path: the storage follows.
    f.set_len(10).unwrap();
    assert_eq!(std::fs::metadata(m.backing_path("f")).unwrap().len(), 10);
    assert_eq!(f.metadata().unwrap().len(), 10);
    let c = std::ffi::CString::new(mp.join("f").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 3) }, 0);
    assert_eq!(std::fs::read(m.backing_path("f")).unwrap(), b"hel");
    drop(f);

    // Unlinked while open: the descriptor (and a mapping) still work.
    let mut g = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(mp.join("g"))
        .unwrap();
    g.write_all(b"before").unwrap();
    std::fs::remove_file(mp.join("g")).unwrap();
    assert!(!mp.join("g").exists());
    assert!(!m.backing_path("g").exists());
    g.write_all_at(b"after", 6).unwrap();
    // Opened again through /proc (a new FUSE open of a node with no path).
    let reopened = std::fs::read(format!("/proc/self/fd/{}", g.as_raw_fd())).unwrap();
    assert_eq!(reopened, b"beforeafter", "{mode}: reopened unlinked file");
    g.set_len(page as u64).unwrap();
    let meta = g.metadata().unwrap();
    assert_eq!(
        (meta.len(), std::os::unix::fs::MetadataExt::nlink(&meta)),
        (page as u64, 0)
    );
    if !mode.refuses_shared_mmap() {
        let p = map_shared(g.as_raw_fd(), page).unwrap();
        store_sync_unmap(p, page, 0, b"B");
    }
    let mut got = vec![0u8; 11];
    g.read_exact_at(&mut got, 0).unwrap();
    let first = if mode.refuses_shared_mmap() {
        b'b'
    } else {
        b'B'
    };
    assert_eq!(got, [&[first][..], b"eforeafter"].concat());
    drop(g);

    // A hole punched through the mount is a hole in the storage, and
    // SEEK_HOLE/SEEK_DATA through the mount (FUSE_LSEEK) find it.
    let h = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(mp.join("holes"))
        .unwrap();
    h.write_all_at(&vec![7u8; 3 * page], 0).unwrap();
    // With the writeback cache the bytes may still be only in the page
    // cache, and the kernel's FUSE_LSEEK does not write them back first
    // (6.18: SEEK_HOLE at 0 then answers 0 over cached data): this checks
    // the server, so the data goes to it first.
    h.sync_all().unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate and lseek on an open descriptor.
    unsafe {
        assert_eq!(
            libc::fallocate(h.as_raw_fd(), punch, page as i64, page as i64),
            0
        );
        assert_eq!(libc::lseek(h.as_raw_fd(), 0, libc::SEEK_HOLE), page as i64);
        assert_eq!(
            libc::lseek(h.as_raw_fd(), page as i64, libc::SEEK_DATA),
            2 * page as i64
        );
    }
    let stored = std::fs::read(m.backing_path("holes")).unwrap();
    assert_eq!(stored.len(), 3 * page);
    assert!(stored[page..2 * page].iter().all(|b| *b == 0));
    assert!(stored[2 * page..].iter().all(|b| *b == 7));
    let mut middle = vec![1u8; page];
    h.read_exact_at(&mut middle, page as u64).unwrap();
    assert!(
        middle.iter().all(|b| *b == 0),
        "{mode}: the punched range reads back"
    );
    drop(h);

    // A file written, closed and deleted: the kernel may still ask about
    // it (the writeback cache flushes its times at syncfs), and syncfs
    // must not fail because it is gone.
    std::fs::write(mp.join("w"), b"w").unwrap();
    std::fs::remove_file(mp.join("w")).unwrap();
    let dir = std::fs::File::open(&mp).unwrap();
    // SAFETY: syncfs on an open descriptor.
    let synced = unsafe { libc::syncfs(dir.as_raw_fd()) };
    assert_eq!(synced, 0, "{mode}: syncfs: errno {}", errno());
    drop(dir);

    // Directories and rename.
    std::fs::create_dir(mp.join("d")).unwrap();
    std::fs::rename(mp.join("f"), mp.join("d/h")).unwrap();
    assert_eq!(std::fs::read(mp.join("d/h")).unwrap(), b"hel");
    assert_eq!(std::fs::read(m.backing_path("d/h")).unwrap(), b"hel");
    let names: Vec<_> = std::fs::read_dir(mp.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["h"]);
    std::os::unix::fs::symlink("h", mp.join("d/link")).unwrap();
    assert_eq!(
        std::fs::read_link(mp.join("d/link")).unwrap(),
        Path::new("h")
    );
    assert_eq!(std::fs::read(mp.join("d/link")).unwrap(), b"hel");
    let fifo =
        std::ffi::CString::new(mp.join("d/fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) },
        0,
        "mkfifo: errno {}",
        errno()
    );
    assert!(std::fs::metadata(m.backing_path("d/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    std::fs::remove_dir_all(mp.join("d")).unwrap();

    // Stopped, nothing is left.
    let pid = m.server_pid().expect("a server runs");
    let backing = m.backing_dir().to_path_buf();
    {
        let _no_fork = NO_FORK.lock().unwrap_or_else(|e| e.into_inner());
        m.stop().unwrap();
    }
    assert!(!mounted(&mp), "{mode}: still mounted");
    assert!(!exists(pid), "{mode}: server {pid} is still there");
    assert!(
        !mp.exists() && !backing.exists(),
        "{mode}: directories left"
    );
}

/// Held by a test while it forks, and by one while it unmounts: a child
/// between fork and exec holds copies of every descriptor other test
/// threads have open at that instant, files in their FUSE mounts included,
/// and an unmount then finds the mount busy.
static NO_FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn default() {
    exercise(FuseMode::Default);
}

#[test]
fn keep_cache() {
    exercise(FuseMode::KeepCache);
}

#[test]
fn writeback() {
    exercise(FuseMode::Writeback);
}

#[test]
fn direct_io() {
    exercise(FuseMode::DirectIo);
}

#[test]
fn direct_io_mmap() {
    exercise(FuseMode::DirectIoMmap);
}

#[test]
fn passthrough() {
    exercise(FuseMode::Passthrough);
}

/// A busy mount cannot be unmounted cleanly: stop says so, detaches it and
/// still ends the server and removes both directories.
#[test]
fn stop_while_a_file_is_open() {
    let Some((_base, mut m)) = start(FuseMode::Default) else {
        return;
    };
    let f = std::fs::File::create(m.mount_point().join("busy")).unwrap();
    let pid = m.server_pid().unwrap();
    let err = m.stop().unwrap_err();
    assert!(err.contains("detached lazily"), "{err}");
    assert!(!mounted(m.mount_point()));
    assert!(!exists(pid));
    assert!(!m.mount_point().exists() && !m.backing_dir().exists());
    drop(f);
}

/// `mmapconf cleanup`'s part: a server, mount and directories named for a
/// run that is gone are all removed; those of a live run are not touched.
#[test]
fn orphans_of_a_dead_run_are_removed() {
    if let Some(why) = fuse::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // A pid that is certainly not running: a child that has ended.
    let no_fork = NO_FORK.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let base = tempfile::tempdir().unwrap();
    let mp = base.path().join(format!("mmapconf-fuse-{dead}-default"));
    let backing = base.path().join(format!("mmapconf-fbk-{dead}-default"));
    let live = base
        .path()
        .join(format!("mmapconf-fbk-{}-default", std::process::id()));
    for d in [&mp, &backing, &live] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(backing.join("x"), b"x").unwrap();
    let mut server = std::process::Command::new(exe())
        .args(["__fuse-server", "--mode", "default"])
        .arg(&backing)
        .arg(&mp)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(no_fork);
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    assert!(mounted(&mp));
    let done = fuse::orphans(&[base.path().to_path_buf()]);
    let status = server.wait().unwrap();
    assert!(!mounted(&mp), "{done:?}");
    assert!(!mp.exists() && !backing.exists(), "{done:?}");
    assert!(live.exists(), "a live run's directory was removed");
    assert!(
        done.iter().any(|l| l.starts_with("killed FUSE server")) || status.success(),
        "{done:?}"
    );
}

/// The mode names are the command line's.
#[test]
fn modes_by_name() {
    let names = FuseMode::ALL.map(FuseMode::name);
    assert_eq!(
        names,
        [
            "default",
            "keep-cache",
            "writeback",
            "direct-io",
            "direct-io-mmap",
            "passthrough"
        ]
    );
}
