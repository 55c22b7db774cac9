//! Corpus wall time: runs every case under cases/ on tmpfs (/dev/shm, or
//! $MMAPCONF_BENCH_DIR), several rounds, and prints the time of each round
//! and cases per second. A benchmark, not a test: it prints numbers and
//! never fails on time.

use mmapconf::exec::RunOptions;
use mmapconf::report::Status;
use mmapconf::{cli, runner};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let (cases, problems) = cli::load_all(&[cases_dir]).expect("cases/ exists");
    assert!(problems.is_empty(), "invalid cases: {problems:?}");
    let base = std::env::var_os("MMAPCONF_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let opts = RunOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_mmapconf")));
    let rounds = 5;
    let mut times = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        let report = runner::run_all(&cases, &base, jobs, &opts, &|_| {}).expect("scratch dir");
        let t = started.elapsed();
        let not_ok = report
            .cases
            .iter()
            .filter(|c| !matches!(c.status, Status::Pass | Status::Skip))
            .count();
        println!(
            "round {round}: {} cases ({} on {}) in {:.0} ms, {:.0} cases/s, {} not passing, {jobs} jobs",
            report.cases.len(),
            report.environment.kernel_release,
            report.environment.fs_type,
            t.as_secs_f64() * 1000.0,
            report.cases.len() as f64 / t.as_secs_f64(),
            not_ok
        );
        times.push(t);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "median of {rounds}: {:.0} ms for {} cases, {:.0} cases/s",
        median.as_secs_f64() * 1000.0,
        cases.len(),
        cases.len() as f64 / median.as_secs_f64()
    );
}
