//! Huge pages for a run: a pool of the kernel's default huge pages
//! (`Hugepagesize`: 2 MiB on x86_64 and arm64 with 4 KiB pages, 1 MiB on
//! s390x, 32 MiB on arm64 with 16 KiB pages, 2 or 16 MiB on ppc64) the harness reserves in
//! `/proc/sys/vm/nr_hugepages` while cases need it and gives back on every
//! way out (the run's end, SIGINT/SIGTERM/SIGHUP and panics through
//! `live::kill_everything`, `mmapconf cleanup` after a SIGKILL), and the
//! hugetlbfs target (`--fs hugetlbfs`), a mount of that pool.
//!
//! Other runs on the machine may reserve at the same time, so the harness
//! never writes back a value it read earlier: it adds its own count and
//! later subtracts what it was granted, each as one read-modify-write of
//! the current value under an flock (on the sysctl file) that every mmapconf process takes
//! (`LOCK`). Writers that are not mmapconf do not take it; the window in
//! which one could interleave is the two syscalls of one update.
//!
//! What was granted is written to `/dev/shm/mmapconf-hugetlb-<pid>` before
//! the pool is raised (a SIGKILL between the two leaves a file that says
//! more than was granted, never less), so `mmapconf cleanup` can give it
//! back once that pid is gone.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Huge pages a run reserves. Cases that use the pool run one at a time
/// (`runner`) and none needs more than 4; the rest is room for what the
/// hugetlbfs target's own files hold while such a case runs.
pub const PAGES: u64 = 16;

/// The size `h` stands for where the kernel has no huge pages (no
/// `Hugepagesize` in /proc/meminfo): x86_64's. The cases that say `h`
/// require the `hugetlb_pool` probe and skip there anyway. Elsewhere the
/// pool, the hugetlbfs target and `h` are the kernel's default size, what
/// MAP_HUGETLB and MFD_HUGETLB without a size flag use, so the cases test
/// the same properties on every architecture (other sizes, such as x86_64's
/// 1 GiB pages, are not reserved: one would cost as much as 512 of 2 MiB).
pub const FALLBACK_HUGE_PAGE: u64 = 2 * 1024 * 1024;

/// The hugetlbfs target's size= limit, in huge pages: what its files may
/// hold at once, so a case that fills it never drains the whole pool.
pub const MOUNT_PAGES: u64 = 8;

/// Memory left to the rest of the machine after the reservation.
const SPARE_BYTES: u64 = 512 * 1024 * 1024;

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const STATE_DIR: &str = "/dev/shm";
const STATE_PREFIX: &str = "mmapconf-hugetlb-";
/// The flocks are taken on the sysctl files themselves (flock works on any
/// open file, procfs included), so no lock file is left on the machine.
/// Updates of the pool lock the file they update.
const LOCK: &str = NR_HUGEPAGES;
/// Pool-using cases lock the pool's other sysctl, which the harness never
/// writes: one such case at a time on the machine.
const CASES_LOCK: &str = "/proc/sys/vm/nr_overcommit_hugepages";

struct Pool {
    /// Runs (targets, tests) in this process that hold the reservation.
    users: usize,
    /// Pages this process added to the pool and must take back.
    granted: u64,
    /// Why the last attempt did not reserve, for the probe's reason.
    why_not: Option<String>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    users: 0,
    granted: 0,
    why_not: None,
});

thread_local! {
    /// This thread holds [`POOL`]: a panic while it does must not wait for it.
    static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`POOL`], marked as held by this thread until dropped.
struct Held(std::sync::MutexGuard<'static, Pool>);

impl std::ops::Deref for Held {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.0
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Pool {
        &mut self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(false));
    }
}

fn pool() -> Held {
    let guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    HOLDING.with(|h| h.set(true));
    Held(guard)
}

/// Holds the run's pool; the last one dropped gives the pages back.
pub struct Reservation(());

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut p = pool();
        p.users = p.users.saturating_sub(1);
        if p.users == 0 {
            give_back(&mut p);
        }
    }
}

/// Reserves the pool for a run (once per process; later callers share it).
/// Never fails: a pool that cannot be had leaves the `hugetlb_pool` probe
/// absent with the reason, and the cases that need it skip.
pub fn reserve() -> Reservation {
    let mut p = pool();
    p.users += 1;
    if p.users == 1 {
        match raise() {
            Ok(n) => {
                p.granted = n;
                p.why_not = None;
            }
            Err(why) => p.why_not = Some(why),
        }
    }
    Reservation(())
}

/// Gives the pool back at once (an interrupt or a panic: the process is
/// about to exit, and Drop will not run).
pub fn release_all() {
    // A panic of this very thread while it holds the pool would wait for
    // itself: its pages are left to `mmapconf cleanup` (the state file says
    // how many). Another thread holding it (the run's end giving the pages
    // back as a signal arrives) is waited for: it is brief, and exiting in
    // the middle of it would leave the state file behind the pages.
    if HOLDING.with(|h| h.get()) {
        eprintln!("mmapconf: the huge page pool is busy; `mmapconf cleanup` gives it back");
        return;
    }
    give_back(&mut pool());
}

fn give_back(p: &mut Pool) {
    if p.granted == 0 {
        return;
    }
    let n = std::mem::take(&mut p.granted);
    if let Err(e) = adjust(|cur| cur.saturating_sub(n)) {
        eprintln!("mmapconf: giving back {n} huge pages: {e}");
        return;
    }
    let _ = std::fs::remove_file(state_path(std::process::id()));
}

/// The `hugetlb_pool` probe: at least [`PAGES`] huge pages of the default
/// size for this run, reserved by it (or, where it cannot reserve, found free).
pub fn probe() -> Result<(), String> {
    if default_huge_page_size().is_none() {
        return Err("the kernel has no huge pages (no Hugepagesize in /proc/meminfo)".into());
    }
    let p = pool();
    if p.granted >= PAGES {
        return Ok(());
    }
    let free = meminfo("HugePages_Free").unwrap_or(0);
    let rsvd = meminfo("HugePages_Rsvd").unwrap_or(0);
    if free.saturating_sub(rsvd) >= PAGES {
        return Ok(());
    }
    Err(match &p.why_not {
        Some(why) => format!("no huge page pool for the run: {why}"),
        None if p.granted > 0 => format!(
            "no huge page pool for the run: the kernel granted {} of {PAGES} huge pages",
            p.granted
        ),
        None => format!(
            "no huge page pool reserved for this run and {} of {PAGES} huge pages free",
            free.saturating_sub(rsvd)
        ),
    })
}

/// The kernel's default huge page size in bytes (what MAP_HUGETLB uses).
pub fn default_huge_page_size() -> Option<u64> {
    meminfo("Hugepagesize").map(|kib| kib * 1024)
}

/// A field of /proc/meminfo (kB fields in KiB, counts as they are).
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Adds [`PAGES`] to the pool; returns how many the kernel granted.
fn raise() -> Result<u64, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("raising /proc/sys/vm/nr_hugepages needs root".into());
    }
    let size = default_huge_page_size().ok_or("the kernel has no huge pages")?;
    let available = meminfo("MemAvailable").unwrap_or(0) * 1024;
    if available < PAGES * size + SPARE_BYTES {
        return Err(format!(
            "{} MiB of memory available, {} MiB needed for {PAGES} huge pages of {} KiB and the rest",
            available >> 20,
            (PAGES * size + SPARE_BYTES) >> 20,
            size >> 10
        ));
    }
    let _lock = Lock::take()?;
    let state = state_path(std::process::id());
    let before = read_nr()?;
    // Written first: a SIGKILL after the pool grew must leave it for cleanup.
    write_state(&state, PAGES, before)?;
    if let Err(e) = write_nr(before + PAGES) {
        let _ = std::fs::remove_file(&state);
        return Err(e);
    }
    // The kernel grants what it can find contiguous memory for.
    let granted = read_nr()?.saturating_sub(before).min(PAGES);
    if granted == 0 {
        let _ = write_nr(before);
        let _ = std::fs::remove_file(&state);
        return Err("the kernel granted no huge pages (memory too fragmented?)".into());
    }
    write_state(&state, granted, before)?;
    Ok(granted)
}

/// One read-modify-write of nr_hugepages under the lock.
fn adjust(f: impl FnOnce(u64) -> u64) -> Result<(), String> {
    let _lock = Lock::take()?;
    let cur = read_nr()?;
    write_nr(f(cur))
}

fn read_nr() -> Result<u64, String> {
    std::fs::read_to_string(NR_HUGEPAGES)
        .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))
}

fn write_nr(n: u64) -> Result<(), String> {
    std::fs::write(NR_HUGEPAGES, format!("{n}\n")).map_err(|e| format!("{NR_HUGEPAGES}: {e}"))
}

fn state_path(pid: u32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{STATE_PREFIX}{pid}"))
}

/// "granted N" and, for a person reading it, the pool before the run.
fn write_state(path: &Path, granted: u64, before: u64) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "granted {granted}\nbefore {before}")
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn granted_in(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("granted "))?
        .trim()
        .parse()
        .ok()
}

/// An exclusive flock on [`LOCK`], held while nr_hugepages is updated.
struct Lock {
    _held: std::fs::File,
}

impl Lock {
    fn take() -> Result<Lock, String> {
        let f = std::fs::File::open(LOCK).map_err(|e| format!("{LOCK}: {e}"))?;
        flock_exclusive(&f).map_err(|e| format!("{LOCK}: flock: {e}"))?;
        Ok(Lock { _held: f })
    }
}

/// Held while a case that uses the pool runs: one such case at a time on
/// the machine, in this run (every target) and in any other mmapconf run,
/// since a case may take every free huge page for a moment. An flock is
/// per open file, so two threads of one run exclude each other too; where
/// the sysctl cannot be opened, a mutex still orders this run's cases.
pub fn one_case_at_a_time() -> CaseTurn {
    static IN_THIS_RUN: Mutex<()> = Mutex::new(());
    let here = IN_THIS_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::File::open(CASES_LOCK)
        .ok()
        .filter(|f| flock_exclusive(f).is_ok());
    CaseTurn {
        _machine: file,
        _here: here,
    }
}

/// One pool-using case's turn (see [`one_case_at_a_time`]).
pub struct CaseTurn {
    _machine: Option<std::fs::File>,
    _here: std::sync::MutexGuard<'static, ()>,
}

fn flock_exclusive(f: &std::fs::File) -> Result<(), nix::errno::Errno> {
    loop {
        // SAFETY: flock on a descriptor we own; released on close.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = nix::errno::Errno::last();
        if e != nix::errno::Errno::EINTR {
            return Err(e);
        }
    }
}

/// `mmapconf cleanup`: gives back the pages of runs that are gone.
pub fn cleanup() -> Vec<String> {
    let mut done = Vec::new();
    for entry in std::fs::read_dir(STATE_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(STATE_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let Some(n) = std::fs::read_to_string(&path)
            .ok()
            .as_deref()
            .and_then(granted_in)
        else {
            continue;
        };
        match adjust(|cur| cur.saturating_sub(n)) {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                done.push(format!("gave back {n} huge pages of run {pid}"));
            }
            Err(e) => done.push(format!(
                "could not give back {n} huge pages of run {pid}: {e}"
            )),
        }
    }
    done
}

/// The hugetlbfs target's mount options for huge pages of `size` bytes:
/// that size, at most [`MOUNT_PAGES`] of them (in KiB, which hugetlbfs's
/// memparse takes for every size: s390x's are 1 MiB, arm64's 16K-page
/// kernels' 32 MiB).
fn mount_options(size: u64) -> String {
    format!(
        "pagesize={}K,size={}K",
        size >> 10,
        (MOUNT_PAGES * size) >> 10
    )
}

/// Mounts the hugetlbfs target at `at`: pages of the default size, at most
/// [`MOUNT_PAGES`] of them (mount options of the target replace these).
pub fn mount(at: &Path, options: &str) -> Result<(), String> {
    let opts = if options.is_empty() {
        mount_options(default_huge_page_size().unwrap_or(FALLBACK_HUGE_PAGE))
    } else {
        options.to_string()
    };
    let out = crate::exec::fork_server::output(
        std::process::Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", &opts, "mmapconf"])
            .arg(at),
    )
    .map_err(|e| format!("mount -t hugetlbfs: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount -t hugetlbfs -o {opts}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_say_what_was_granted() {
        assert_eq!(granted_in("granted 16\nbefore 0\n"), Some(16));
        assert_eq!(granted_in("before 3\n"), None);
    }

    #[test]
    fn the_mount_names_the_default_size_and_eight_pages() {
        assert_eq!(mount_options(2 << 20), "pagesize=2048K,size=16384K");
        assert_eq!(mount_options(1 << 20), "pagesize=1024K,size=8192K");
        assert_eq!(mount_options(32 << 20), "pagesize=32768K,size=262144K");
    }

    #[test]
    fn meminfo_knows_the_huge_page_size() {
        // Every x86_64 kernel built with hugetlb says so; elsewhere absent.
        if let Some(s) = default_huge_page_size() {
            assert!(s >= 64 * 1024, "{s}");
        }
    }
}
