//! `mmapconf soak`: runs the same cases many times and reports every case
//! whose verdict is not the same in every run. A suite whose verdicts change
//! between runs of one kernel and filesystem is flaky, and QA drops it; this
//! is how we show it is not (and find it when it is).

use super::{handle_interrupts, jobs_or_cpus, loaded, reported, run_options};
use crate::case::LoadedCase;
use crate::exec::{live, RunOptions};
use crate::report::{CaseReport, Status};
use crate::runner;
use crate::target::fs::{OwnedFs, TargetConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

pub struct SoakArgs {
    pub paths: Vec<PathBuf>,
    pub runs: usize,
    pub dir: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub select: crate::case::select::SelectArgs,
    pub fs: Vec<String>,
}

/// One case's verdicts over the runs of one target.
#[derive(Default)]
struct History {
    /// How many runs gave each status, with the first reason seen for it.
    seen: BTreeMap<&'static str, (usize, Option<String>)>,
}

impl History {
    fn record(&mut self, r: &CaseReport) {
        let entry = self.seen.entry(status_name(r.status)).or_default();
        entry.0 += 1;
        if entry.1.is_none() {
            entry.1 = r.reason.clone();
        }
    }

    fn changed(&self) -> bool {
        self.seen.len() > 1
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::Skip => "skip",
        Status::Error => "error",
    }
}

/// Each case's verdicts over the runs of one target, by case id; Err when a
/// run was interrupted or could not make its scratch directory.
type Verdicts = Result<BTreeMap<String, History>, String>;

fn soak_target(
    label: &str,
    cases: &[LoadedCase],
    runs: usize,
    jobs: usize,
    opts: &RunOptions,
    base: &Path,
) -> Verdicts {
    let mut histories: BTreeMap<String, History> = BTreeMap::new();
    let quiet = |_: &CaseReport| {};
    for n in 1..=runs {
        let started = Instant::now();
        let report = runner::run_all(cases, base, jobs, opts, &quiet)
            .map_err(|e| format!("{label}: scratch directory: {e}"))?;
        if live::interrupted() {
            return Err(format!("{label}: interrupted in run {n}"));
        }
        for r in &report.cases {
            histories.entry(r.id.clone()).or_default().record(r);
        }
        let s = &report.summary;
        let changed = histories.values().filter(|h| h.changed()).count();
        eprintln!(
            "{label} run {n}/{runs}: {} pass, {} fail, {} skip, {} error in {:.1} s; {changed} verdicts changed so far",
            s.pass,
            s.fail,
            s.skip,
            s.error,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(histories)
}

pub fn soak(args: SoakArgs) -> ExitCode {
    handle_interrupts();
    let Some((cases, problems)) = loaded(&args.paths) else {
        return ExitCode::from(2);
    };
    for p in &problems {
        eprintln!("{p}");
    }
    let Some(cases) = super::selected(&args.select, cases) else {
        return ExitCode::from(2);
    };
    let fs_names = crate::target::fs::expand_fs_names(&args.fs);
    if cases.is_empty() || args.runs == 0 {
        eprintln!("mmapconf: soak needs at least one case and one run");
        return ExitCode::from(2);
    }
    let Some(opts) = reported(run_options(None)) else {
        return ExitCode::from(2);
    };
    let jobs = jobs_or_cpus(args.jobs);
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let started = Instant::now();
    // Every target at once, as `run --fs` does: the same conditions as a CI run.
    let results: Vec<(String, Verdicts)> = if fs_names.is_empty() {
        let label = crate::target::mount_of(&base)
            .map(|m| m.fs_type)
            .unwrap_or_else(|| base.display().to_string());
        let r = soak_target(&label, &cases, args.runs, jobs, &opts, &base);
        vec![(label, r)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = fs_names
                .iter()
                .map(|fs| {
                    let (cases, opts, base) = (&cases, &opts, &base);
                    s.spawn(move || {
                        let config = TargetConfig::plain(fs);
                        let r = OwnedFs::create_for(&config, base, cases).and_then(|made| {
                            let mount = made.mount_point.clone();
                            let mut opts = opts.clone();
                            opts.owned_fs = Some(std::sync::Arc::new(std::sync::Mutex::new(made)));
                            soak_target(fs, cases, args.runs, jobs, &opts, &mount)
                        });
                        (fs.clone(), r)
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(&fs_names)
                .map(|(h, fs)| {
                    h.join()
                        .unwrap_or_else(|_| (fs.clone(), Err(format!("{fs}: the run panicked"))))
                })
                .collect()
        })
    };
    let mut changed = 0;
    let mut broken = false;
    for (label, r) in &results {
        match r {
            Err(e) => {
                eprintln!("mmapconf: {e}");
                broken = true;
            }
            Ok(histories) => {
                for (id, h) in histories.iter().filter(|(_, h)| h.changed()) {
                    changed += 1;
                    let counts: Vec<String> = h
                        .seen
                        .iter()
                        .map(|(status, (n, why))| match why {
                            Some(why) => format!("{status} {n}x (first: {why})"),
                            None => format!("{status} {n}x"),
                        })
                        .collect();
                    println!("CHANGED {label} {id}: {}", counts.join("; "));
                }
            }
        }
    }
    println!(
        "soak: {} cases x {} runs on {} target(s) in {:.1} s: {changed} changed verdicts",
        cases.len(),
        args.runs,
        results.len(),
        started.elapsed().as_secs_f64()
    );
    if broken {
        ExitCode::from(2)
    } else if changed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: Status, reason: Option<&str>) -> CaseReport {
        CaseReport::not_run(
            "t/c".into(),
            String::new(),
            status,
            reason.unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn a_verdict_is_changed_only_when_two_runs_disagree() {
        let mut h = History::default();
        h.record(&report(Status::Pass, None));
        h.record(&report(Status::Pass, None));
        assert!(!h.changed());
        h.record(&report(
            Status::Fail,
            Some("step 3: expected 1, observed 2"),
        ));
        h.record(&report(Status::Fail, Some("step 4: later reason")));
        assert!(h.changed());
        assert_eq!(h.seen["pass"].0, 2);
        assert_eq!(
            h.seen["fail"],
            (2, Some("step 3: expected 1, observed 2".to_string())),
            "the first reason is kept"
        );
    }
}
