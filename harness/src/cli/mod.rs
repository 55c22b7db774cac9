//! The `mmapconf` command line.

mod explain;
mod mutate;

use crate::case::{self, LoadedCase, Problem};
use crate::exec::{live, RunOptions};
use crate::report::{self, CaseReport, Status};
use crate::runner;
use crate::target;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "mmapconf",
    version,
    about = "Conformance suite for Linux memory-mapping semantics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run cases (default: all of cases/) and write a JSON report.
    Run {
        /// Case files or directories (default: the cases/ directory).
        paths: Vec<PathBuf>,
        /// Directory to make scratch directories in (default: $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where to write the JSON report (default: reports/latest.json).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Cases run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run only cases whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Time limit per case in seconds, overriding each case's own.
        #[arg(long)]
        timeout: Option<f64>,
        /// Print every case, not only those that did not pass.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Check case files; print every problem as file:line:col.
    Validate {
        /// Case files or directories (default: the cases/ directory).
        paths: Vec<PathBuf>,
    },
    /// List cases: id, title, requirements.
    List {
        /// Case files or directories (default: the cases/ directory).
        paths: Vec<PathBuf>,
    },
    /// Show a case as a timeline, one column per process.
    Explain {
        /// A case id ("seed/writer-reader") or file.
        case: String,
    },
    /// Mutation check: rewrite each expectation to a wrong one, run the
    /// mutants, and list every mutant that still passes.
    Mutate {
        /// Case files or directories (default: the cases/ directory).
        paths: Vec<PathBuf>,
        /// Directory to make scratch directories in (default: $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Cases run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Only cases whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Only every Nth case (a quick sample for CI).
        #[arg(long)]
        every: Option<usize>,
    },
    /// Print the JSON Schema of case files (specs/case.schema.json).
    Schema,
    /// A worker process of a running case (internal).
    #[command(name = "__worker", hide = true)]
    Worker { dir: String },
}

/// The repository's top directory: the nearest ancestor of the current
/// directory holding `cases/`, else the one this binary was built from.
pub fn project_root() -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join("cases").is_dir() && dir.join("Cargo.toml").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn default_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![project_root().join("cases")]
    } else {
        paths
    }
}

/// Loads every case under `paths`; problems are returned beside the good cases.
pub fn load_all(paths: &[PathBuf]) -> Result<(Vec<LoadedCase>, Vec<Problem>), String> {
    let files = case::discover(paths)?;
    let ps = target::page_size();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match case::load_file(&f, ps) {
            Ok(c) => cases.push(c),
            Err(p) => problems.extend(p),
        }
    }
    Ok((cases, problems))
}

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Worker { dir } => crate::exec::worker::main(&dir),
        Command::Validate { paths } => validate(default_paths(paths)),
        Command::List { paths } => list(default_paths(paths)),
        Command::Explain { case } => explain::explain(&case),
        Command::Mutate {
            paths,
            dir,
            jobs,
            filter,
            every,
        } => mutate::mutate(mutate::MutateArgs {
            paths: default_paths(paths),
            dir,
            jobs,
            filter,
            every,
        }),
        Command::Schema => {
            println!("{}", case_schema());
            ExitCode::SUCCESS
        }
        Command::Run {
            paths,
            dir,
            report,
            jobs,
            filter,
            timeout,
            verbose,
        } => run(RunArgs {
            paths: default_paths(paths),
            dir,
            report,
            jobs,
            filter,
            timeout,
            verbose,
        }),
    }
}

/// The case JSON Schema, as checked in at specs/case.schema.json.
pub fn case_schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(crate::case::model::Case))
        .expect("schema serializes")
}

fn validate(paths: Vec<PathBuf>) -> ExitCode {
    let (cases, problems) = match load_all(&paths) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    for p in &problems {
        println!("{p}");
    }
    let bad_files = {
        let mut f: Vec<&Path> = problems.iter().map(|p| p.file.as_path()).collect();
        f.dedup();
        f.len()
    };
    eprintln!(
        "{} files checked: {} good, {} with {} problems",
        cases.len() + bad_files,
        cases.len(),
        bad_files,
        problems.len()
    );
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn list(paths: Vec<PathBuf>) -> ExitCode {
    let (cases, problems) = match load_all(&paths) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    for c in &cases {
        let r = &c.case.requires;
        let mut req = Vec::new();
        if r.root {
            req.push("root".to_string());
        }
        if let Some(k) = &r.kernel {
            req.push(format!("kernel {k}"));
        }
        if !r.fs.is_empty() {
            req.push(format!("fs {}", r.fs.join("|")));
        }
        if !r.not_fs.is_empty() {
            req.push(format!("not fs {}", r.not_fs.join("|")));
        }
        for p in &r.probes {
            req.push(
                serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            );
        }
        let req = if req.is_empty() {
            String::new()
        } else {
            format!("  [requires {}]", req.join(", "))
        };
        println!("{}\t{}{req}", c.id, c.case.title);
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

struct RunArgs {
    paths: Vec<PathBuf>,
    dir: Option<PathBuf>,
    report: Option<PathBuf>,
    jobs: Option<usize>,
    filter: Option<String>,
    timeout: Option<f64>,
    verbose: bool,
}

/// Options shared by commands that run cases.
pub(crate) fn run_options(timeout: Option<f64>) -> Result<RunOptions, String> {
    let worker_exe =
        std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    Ok(RunOptions {
        worker_exe,
        default_timeout: Duration::from_secs(10),
        force_timeout: timeout.map(Duration::from_secs_f64),
    })
}

pub(crate) fn jobs_or_cpus(jobs: Option<usize>) -> usize {
    jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

fn run(args: RunArgs) -> ExitCode {
    handle_interrupts();
    let (mut cases, problems) = match load_all(&args.paths) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(f) = &args.filter {
        cases.retain(|c| c.id.contains(f.as_str()));
    }
    let opts = match run_options(args.timeout) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let jobs = jobs_or_cpus(args.jobs);
    let verbose = args.verbose;
    let progress = move |r: &CaseReport| {
        if verbose || !matches!(r.status, Status::Pass | Status::Skip) {
            print_case_line(r);
        }
    };
    let mut report = match runner::run_all(&cases, &base, jobs, &opts, &progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "mmapconf: cannot make a scratch directory under {}: {e}",
                base.display()
            );
            return ExitCode::from(2);
        }
    };
    // Files that did not parse are errors of the run, not silently dropped:
    // one error entry per file, with all its problems.
    let mut by_file: std::collections::BTreeMap<&Path, Vec<String>> = Default::default();
    for p in &problems {
        eprintln!("{p}");
        by_file
            .entry(p.file.as_path())
            .or_default()
            .push(p.to_string());
    }
    for (file, lines) in by_file {
        let id = case::case_id(file);
        if args.filter.as_deref().is_some_and(|f| !id.contains(f)) {
            continue;
        }
        report.cases.push(CaseReport {
            id,
            title: String::new(),
            status: Status::Error,
            duration_ms: 0,
            reason: Some(lines.join("\n")),
            failed_step: None,
            steps: Vec::new(),
        });
    }
    report.summary = report::Summary::of(&report.cases, report.summary.duration_ms);
    let path = args
        .report
        .unwrap_or_else(|| project_root().join("reports").join("latest.json"));
    let written = report::write_json(&report, &path);
    print_summary(&report);
    match written {
        Ok(()) => println!("report: {}", path.display()),
        Err(e) => {
            eprintln!("mmapconf: cannot write report {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_case_line(r: &CaseReport) {
    let tag = match r.status {
        Status::Pass => "PASS ",
        Status::Fail => "FAIL ",
        Status::Skip => "SKIP ",
        Status::Error => "ERROR",
    };
    println!("{tag} {} ({} ms)", r.id, r.duration_ms);
    if let Some(reason) = &r.reason {
        for line in reason.lines() {
            println!("      {line}");
        }
    }
}

fn print_summary(report: &report::Report) {
    let s = &report.summary;
    let e = &report.environment;
    println!(
        "{} cases: {} pass, {} fail, {} skip, {} error in {} ms ({} {} on {}, page size {})",
        s.total,
        s.pass,
        s.fail,
        s.skip,
        s.error,
        s.duration_ms,
        e.kernel_release,
        e.arch,
        e.fs_type,
        e.page_size
    );
}

/// SIGINT and SIGTERM end the run cleanly: every case's processes are
/// killed and the scratch directories removed before the harness exits.
pub(crate) fn handle_interrupts() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    // Blocked here, before any thread starts, so every thread inherits the
    // mask and the waiting thread below is the only one that takes them.
    if nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!(
                "mmapconf: {} received; stopping cases and removing scratch directories",
                sig.as_str()
            );
            live::kill_everything();
            std::process::exit(128 + sig as i32);
        }
    });
}
