//! `mmapconf mutate`: proves every expectation can fail (see crate::mutate).

use super::{handle_interrupts, jobs_or_cpus, loaded, reported, run_options};
use crate::case::LoadedCase;
use crate::mutate::mutants;
use crate::report::Status;
use crate::runner;
use crate::target::fs::{OwnedFs, TargetConfig};
use crate::target::Environment;
use std::path::PathBuf;
use std::process::ExitCode;

pub struct MutateArgs {
    pub paths: Vec<PathBuf>,
    pub dir: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub select: crate::case::select::SelectArgs,
    pub every: Option<usize>,
    pub fs: Option<String>,
    pub second_dir: Option<PathBuf>,
}

pub fn mutate(args: MutateArgs) -> ExitCode {
    handle_interrupts();
    let Some((cases, problems)) = loaded(&args.paths) else {
        return ExitCode::from(2);
    };
    for p in &problems {
        eprintln!("{p}");
    }
    let Some(mut cases) = super::selected(&args.select, cases) else {
        return ExitCode::from(2);
    };
    if let Some(n) = args.every.filter(|n| *n > 1) {
        cases = cases.into_iter().step_by(n).collect();
    }
    let Some(mut opts) = reported(run_options(None)) else {
        return ExitCode::from(2);
    };
    let mut base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    if let Some(second) = &args.second_dir {
        match crate::target::second_mount::SecondMount::new(&base, second) {
            Ok(m) => opts.second_mount = Some(m),
            Err(e) => {
                eprintln!("mmapconf: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // Kept alive (and torn down on drop) for the whole check.
    let _owned = match &args.fs {
        None => None,
        Some(fs) => match OwnedFs::create_for(&TargetConfig::plain(fs), &base, &cases) {
            Ok(made) => {
                base = made.mount_point.clone();
                let made = std::sync::Arc::new(std::sync::Mutex::new(made));
                opts.owned_fs = Some(made.clone());
                Some(made)
            }
            Err(e) => {
                eprintln!("mmapconf: cannot make a scratch {fs}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let jobs = jobs_or_cpus(args.jobs);
    let quiet = |_: &crate::report::CaseReport| {};
    let started = std::time::Instant::now();

    // Mutants of a case that does not pass prove nothing: run the originals first.
    let originals = match runner::run_all(&cases, &base, jobs, &opts, &quiet) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mmapconf: scratch directory: {e}");
            return ExitCode::from(2);
        }
    };
    let mut env = Environment::probe(&base);
    // Variants by target (`when.target`) pick the expectation to mutate, as in the run.
    env.target = args.fs.clone();
    let mut pool = Vec::new();
    let mut observing = 0;
    let mut not_passing = Vec::new();
    for (case, result) in cases.iter().zip(&originals.cases) {
        match result.status {
            Status::Pass => {}
            Status::Skip => continue,
            _ => {
                not_passing.push(case.id.clone());
                continue;
            }
        }
        let (ms, obs) = mutants(&case.case, &env);
        observing += obs;
        for m in ms {
            pool.push((
                format!("{} step {}: {}", case.id, m.step, m.change),
                LoadedCase {
                    id: case.id.clone(),
                    file: case.file.clone(),
                    case: m.case,
                },
            ));
        }
    }
    let runnable: Vec<LoadedCase> = pool.iter().map(|(_, c)| c.clone()).collect();
    let results = match runner::run_all(&runnable, &base, jobs, &opts, &quiet) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mmapconf: scratch directory: {e}");
            return ExitCode::from(2);
        }
    };
    let mut survivors = Vec::new();
    let mut errored = 0;
    for ((what, _), r) in pool.iter().zip(&results.cases) {
        match r.status {
            Status::Pass => survivors.push(what.clone()),
            Status::Error => {
                // Killed, but not by its expectation: worth a look.
                errored += 1;
                println!("ERRORED {what}: {}", r.reason.as_deref().unwrap_or(""));
            }
            _ => {}
        }
    }
    for id in &not_passing {
        println!("NOT MUTATED {id}: the case itself does not pass");
    }
    for s in &survivors {
        println!("SURVIVED {s}");
    }
    let tested = originals
        .cases
        .iter()
        .filter(|c| c.status == Status::Pass)
        .count();
    println!(
        "{} cases, {} mutants: {} killed ({} by a failed step, {} by an error), {} survived; {} observe-only steps not mutated; {:.1} s",
        tested,
        pool.len(),
        pool.len() - survivors.len(),
        pool.len() - survivors.len() - errored,
        errored,
        survivors.len(),
        observing,
        started.elapsed().as_secs_f64()
    );
    if survivors.is_empty() && not_passing.is_empty() && problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
