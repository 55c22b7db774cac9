//! Shared memory a case makes outside its scratch directory: POSIX shm
//! objects (names in /dev/shm) and System V segments. Both outlive every
//! process, so the harness names them after its run and case and removes
//! them at the end of each case; `cleanup` removes what a killed run left.
//!
//! A POSIX object is `/dev/shm/mmapconf-shm-<run>-<case>-<name>`. A System
//! V segment (IPC_PRIVATE, so it has no name) is registered by the worker
//! that made it in an empty-named file `/dev/shm/mmapconf-sysv-<run>-<case>-<shmid>`
//! holding the creator's pid; the segment is removed only while its
//! shm_cpid still matches, so a recycled id of someone else's is left alone.

use std::path::Path;

pub const SHM_DIR: &str = "/dev/shm";
pub const SHM_PREFIX: &str = "mmapconf-shm-";
pub const SYSV_PREFIX: &str = "mmapconf-sysv-";

/// A short token for one case's scratch directory (unique per run: each
/// case of a run, on each target, has its own directory).
pub fn case_token(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    // FNV-1a: stable across processes, unlike std's RandomState.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in dir.as_os_str().as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The shm_open(3) name of a case's object `label`.
pub fn shm_name(run: i32, token: &str, label: &str) -> String {
    format!("/{SHM_PREFIX}{run}-{token}-{label}")
}

/// Records a System V segment so it is removed even if every process of
/// the run is killed.
pub fn register_segment(run: i32, token: &str, shmid: i32, cpid: i32) -> std::io::Result<()> {
    std::fs::write(
        Path::new(SHM_DIR).join(format!("{SYSV_PREFIX}{run}-{token}-{shmid}")),
        cpid.to_string(),
    )
}

/// shmctl(IPC_RMID) of `shmid` if its creator is still `cpid`.
fn remove_segment(shmid: i32, cpid: i32) -> bool {
    // SAFETY: a zeroed shmid_ds is valid for IPC_STAT to fill.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscalls with a valid buffer.
    unsafe {
        libc::shmctl(shmid, libc::IPC_STAT, &mut ds) == 0
            && ds.shm_cpid == cpid
            && libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) == 0
    }
}

/// Removes our objects in /dev/shm whose `<run>-<case>` part passes `mine`; one line each.
fn remove_where(mine: impl Fn(i32, &str) -> bool) -> Vec<String> {
    let mut done = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (sysv, rest) = if let Some(r) = name.strip_prefix(SYSV_PREFIX) {
            (true, r)
        } else if let Some(r) = name.strip_prefix(SHM_PREFIX) {
            (false, r)
        } else {
            continue;
        };
        let mut parts = rest.splitn(3, '-');
        let (Some(run), Some(token), Some(last)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(run) = run.parse::<i32>() else {
            continue;
        };
        if !mine(run, token) {
            continue;
        }
        if sysv {
            let cpid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|c| c.trim().parse().ok());
            if let (Ok(id), Some(cpid)) = (last.parse::<i32>(), cpid) {
                if remove_segment(id, cpid) {
                    done.push(format!("removed System V shared memory segment {id}"));
                }
            }
        }
        if std::fs::remove_file(entry.path()).is_ok() && !sysv {
            done.push(format!("removed {}", entry.path().display()));
        }
    }
    done
}

/// At the end of a case: every object it made, whatever became of its processes.
pub fn remove_case(run: i32, token: &str) -> Vec<String> {
    remove_where(|r, t| r == run && t == token)
}

/// For `cleanup`: the objects of runs that are no longer alive.
pub fn orphans() -> Vec<String> {
    let me = std::process::id() as i32;
    remove_where(|run, _| run != me && !Path::new(&format!("/proc/{run}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_run_and_case() {
        let t = case_token(Path::new("/tmp/mmapconf-run-1-a/0001-x"));
        assert_eq!(t.len(), 16);
        assert_ne!(t, case_token(Path::new("/tmp/mmapconf-run-1-a/0002-x")));
        assert_eq!(shm_name(42, &t, "seg"), format!("/mmapconf-shm-42-{t}-seg"));
    }

    #[test]
    fn removes_a_dead_runs_segment_and_object_but_not_a_live_ones() {
        // A pid that is not alive: the largest pid_max allows, plus one.
        let dead = 4_194_305;
        let me = std::process::id() as i32;
        // SAFETY: plain syscalls.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        register_segment(dead, "t0", id, me).unwrap();
        let obj = Path::new(SHM_DIR).join(format!("{SHM_PREFIX}{dead}-t0-x"));
        std::fs::write(&obj, b"").unwrap();
        let live = Path::new(SHM_DIR).join(format!("{SHM_PREFIX}{me}-t0-y"));
        std::fs::write(&live, b"").unwrap();
        let done = orphans();
        let gone = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut std::mem::zeroed()) } != 0;
        assert!(live.exists());
        assert_eq!(remove_case(me, "t0").len(), 1);
        assert!(gone, "segment {id} survived cleanup: {done:?}");
        assert!(!obj.exists());
        assert!(done.iter().any(|l| l.contains(&id.to_string())), "{done:?}");
    }
}
