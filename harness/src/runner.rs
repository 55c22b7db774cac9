//! Running a set of cases: requirements, scratch directories, parallel
//! jobs, and the report.

use crate::case::model::Op;
use crate::case::LoadedCase;
use crate::exec::{live, run_case, RunOptions};
use crate::report::{now_rfc3339, CaseReport, Report, Status, Summary, SCHEMA_VERSION};
use crate::target::{health, probe, Environment, ScratchRoot};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

/// Held shared by every running case, and exclusively by a case whose
/// steps act on the whole machine.
static MACHINE_WIDE: RwLock<()> = RwLock::new(());
use std::time::Instant;

/// Runs one case in a fresh directory under `root`: skipped when its
/// requirements are unmet, otherwise executed; the directory is removed after.
pub fn run_one(
    index: usize,
    case: &LoadedCase,
    env: &Environment,
    root: &ScratchRoot,
    opts: &RunOptions,
) -> CaseReport {
    let unmet = if live::interrupted() {
        Some("the run was interrupted".to_string())
    } else if case.case.needs_owned_fs() && opts.owned_fs.is_none() {
        Some("remount, crash and fill_fs need a filesystem the harness made (run --fs)".to_string())
    } else {
        probe::unmet(&case.case, env)
    };
    let not_run = |status, reason| {
        CaseReport::not_run(case.id.clone(), case.case.title.clone(), status, reason)
    };
    if let Some(reason) = unmet {
        return not_run(Status::Skip, reason);
    }
    let dir = match root.case_dir(index, &case.id) {
        Ok(d) => d,
        Err(e) => {
            let why = format!("cannot create scratch dir: {e}{}", room_left(&root.path));
            return not_run(Status::Error, why);
        }
    };
    // drop_caches empties the page cache of the whole machine, which a case
    // running beside it on another target could observe (mincore, say):
    // such cases run alone, every other case shares.
    // The pool is one for the machine and a case may take all of it
    // (MAP_NORESERVE until SIGBUS): such cases run one at a time, while
    // other cases go on.
    let _pool = case
        .case
        .uses_hugetlb_pool()
        .then(crate::target::hugetlb::one_case_at_a_time);
    let report = if case
        .case
        .steps
        .iter()
        .any(|s| matches!(s.op, Op::DropCaches))
    {
        let _alone = MACHINE_WIDE.write().unwrap_or_else(|e| e.into_inner());
        run_case(case, env, &dir, opts)
    } else {
        let _shared = MACHINE_WIDE.read().unwrap_or_else(|e| e.into_inner());
        run_case(case, env, &dir, opts)
    };
    let exclusive_fs = opts
        .owned_fs
        .as_ref()
        .filter(|_| case.case.needs_exclusive_fs());
    if let Some(fs) = exclusive_fs {
        // A case may have left the filesystem read-only.
        fs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .ensure_writable();
    }
    let mut report = report;
    let removed = root.remove_case_dir(&dir).or_else(|e| match e.kind() {
        // A crash on tmpfs or a remount took it already.
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    });
    if let Err(e) = removed {
        // Said, not hidden: a filesystem that cannot remove what a case
        // made is worth knowing about, and the directory is still there.
        report.leftover = Some(format!("{}: {e}", dir.display()));
    }
    if let Some(fs) = exclusive_fs {
        // Blocks of deleted files are free for reuse only once the journal
        // commits the deletion (ext4, xfs, btrfs): without this, the next
        // case may meet ENOSPC left by `fill_fs`, or find room it should not.
        fs.lock().unwrap_or_else(|e| e.into_inner()).sync();
    }
    report
}

/// What is left on the filesystem of `dir`, to explain an ENOSPC.
fn room_left(dir: &Path) -> String {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => format!(
            " ({} KiB and {} inodes free)",
            s.blocks_available() * s.fragment_size() / 1024,
            s.files_available()
        ),
        Err(e) => format!(" (statvfs: {e})"),
    }
}

/// Runs `cases` on `jobs` threads in a scratch root under `base`; reports
/// come back in the order of `cases`. `progress` is told of each finished case.
pub fn run_all(
    cases: &[LoadedCase],
    base: &Path,
    jobs: usize,
    opts: &RunOptions,
    progress: &(dyn Fn(&CaseReport) + Sync),
) -> std::io::Result<Report> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let lower = opts.owned_fs.as_ref().and_then(|fs| {
        fs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .lower_dir
            .clone()
    });
    // Held to the end of the run, so every way out gives the pages back.
    let _pool = cases
        .iter()
        .any(|c| c.case.uses_hugetlb_pool())
        .then(crate::target::hugetlb::reserve);
    let premade = opts.owned_fs.as_ref().and_then(|fs| {
        let fs = fs.lock().unwrap_or_else(|e| e.into_inner());
        fs.premade()
            .map(|(path, layout)| (path, layout.dirs.clone()))
    });
    let root = match premade {
        // A read-only image: its scratch root and case directories exist.
        Some((path, dirs)) => ScratchRoot::premade(path, &dirs),
        None => ScratchRoot::create_layered(base, lower.as_deref())?,
    };
    let env = match &opts.owned_fs {
        Some(fs) => Environment::of_run(
            &root.path,
            Some(&fs.lock().unwrap_or_else(|e| e.into_inner())),
        ),
        None => Environment::of_run(&root.path, None),
    };
    let mut env = env;
    env.second_mount = opts.second_mount.as_ref().map(|m| m.description.clone());
    // Cases that remount, crash or drop caches act on the whole filesystem:
    // they run one at a time after the others, never beside another case.
    let (exclusive, shared): (Vec<usize>, Vec<usize>) =
        (0..cases.len()).partition(|&i| cases[i].case.needs_exclusive_fs());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CaseReport>>> = Mutex::new(vec![None; cases.len()]);
    let monitor = opts.health.then(health::Monitor::start);
    let record = |i: usize| {
        let r = match &monitor {
            Some(m) => m.around(&cases[i].id, || run_one(i, &cases[i], &env, &root, opts)),
            None => run_one(i, &cases[i], &env, &root, opts),
        };
        progress(&r);
        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(shared.len().max(1)) {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(&i) = shared.get(n) else { break };
                record(i);
            });
        }
    });
    for i in exclusive {
        record(i);
    }
    drop(root);
    let mut cases: Vec<CaseReport> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let health = monitor.map(|m| {
        // The filesystem is checked after its cases, before it goes away.
        let fsck = opts
            .owned_fs
            .as_ref()
            .and_then(|fs| fs.lock().unwrap_or_else(|e| e.into_inner()).check());
        m.finish(fsck, &mut cases)
    });
    let summary = Summary::of(&cases, started.elapsed().as_millis() as u64);
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        environment: env,
        started_at,
        summary,
        cases,
        health,
    })
}
