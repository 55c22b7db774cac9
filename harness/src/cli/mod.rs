//! The `mmapconf` command line.

mod explain;
mod explore;
mod model_check;
mod mutate;
mod power_cut;
mod progress;
mod reports;

pub use reports::baseline_file_name;
mod soak;
mod swimlanes;

use crate::case::{self, LoadedCase, Problem};
use crate::exec::{live, RunOptions};
use crate::report::{self, CaseReport, Status};
use crate::runner;
use crate::target;
use crate::target::fs::{OwnedFs, TargetConfig};
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
        #[command(flatten)]
        targets: TargetArgs,
        #[command(flatten)]
        outputs: reports::OutputArgs,
    },
    /// Remove what a killed run left behind: workers, mounts, loop devices,
    /// images and scratch directories (found by their mmapconf- names).
    Cleanup {
        /// Directories to look in besides $TMPDIR and /dev/shm (where loop images go).
        dirs: Vec<PathBuf>,
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
        /// Draw it as an HTML page of swimlanes instead, to FILE (`-` or no FILE: standard output).
        #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
        html: Option<PathBuf>,
    },
    /// Show where reports from several kernels and filesystems differ, case by case.
    Compare(reports::CompareArgs),
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
        /// Run originals and mutants on a scratch filesystem of this type
        /// (as `run --fs`), so remount and crash cases are mutated too.
        #[arg(long)]
        fs: Option<String>,
    },
    /// Generate random cases, judge what they observe by the reference
    /// model, and shrink every divergence to a minimal case (saved in --out).
    Explore(explore::ExploreArgs),
    /// Compare the reference model with every case's expectations on a
    /// target (made and measured as `run` does; no case runs): print each
    /// disagreement, and the counts of cases that agree, disagree or are
    /// not modelled. Exit status 1 on any disagreement.
    ModelCheck {
        /// Case files or directories (default: the cases/ directory).
        paths: Vec<PathBuf>,
        /// Directory to make scratch directories in (default: $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only cases whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Also print every step the model does not predict, with the reason.
        #[arg(long, short)]
        verbose: bool,
        /// Make a scratch filesystem of each type (as `run --fs`) and check against each.
        #[arg(long, value_delimiter = ',')]
        fs: Vec<String>,
        /// Named target configurations from the targets file (comma-separated).
        #[arg(long, value_delimiter = ',')]
        target: Vec<String>,
        /// The file of named targets (default: ci/targets.json).
        #[arg(long)]
        targets_file: Option<PathBuf>,
        /// Write every case's and step's verdict as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Judge the observations of a run's JSON report (in its
        /// environment) instead of the cases' expectations; no target is made.
        #[arg(long, value_name = "REPORT")]
        observed: Option<PathBuf>,
    },
    /// Run the cases many times and list every case whose verdict changed
    /// between runs (a flakiness check); exit 1 when one did.
    Soak {
        /// Case files or directories (default: the cases/ directory).
        paths: Vec<PathBuf>,
        /// How many times to run the cases on each target.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Directory to make scratch directories in (default: $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Cases run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Only cases whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Scratch filesystems to make and soak at once, as `run --fs` (root).
        #[arg(long, value_delimiter = ',')]
        fs: Vec<String>,
    },
    /// Run one case on a block device whose `crash` steps are real power
    /// cuts of the machine (a VM the runner kills): save the state at the
    /// cut, then `--resume` it after the reboot.
    PowerCut(power_cut::PowerCutArgs),
    /// Print the JSON Schema of case files (specs/case.schema.json).
    Schema,
    /// Print the JSON Schema of reports (specs/report.schema.json).
    ReportSchema,
    /// The fork server that starts the processes of running cases (internal).
    #[command(name = "__fork-server", hide = true)]
    ForkServer,
    /// A FUSE server serving BACKING at MOUNT_POINT (internal; target::fuse).
    #[command(name = "__fuse-server", hide = true)]
    FuseServer {
        #[arg(long, value_enum)]
        mode: target::fuse::FuseMode,
        backing: PathBuf,
        mount_point: PathBuf,
    },
}

/// Where cases run: scratch filesystems the harness makes (`run`, `explore`).
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Make a scratch filesystem of each type (comma-separated: tmpfs,
    /// ramfs, ext2, ext3, ext4, xfs, btrfs, f2fs, overlay, hugetlbfs, the
    /// read-only images erofs and squashfs, the own FUSE server's
    /// fuse-<mode>, ntfs-3g, exfat-fuse, fuse2fs, bindfs, fuse-overlayfs;
    /// `host` for tmpfs, ramfs, ext4, hugetlbfs, the images and every
    /// FUSE target) and run the cases on each, one report per
    /// filesystem. Needs root.
    #[arg(long, value_delimiter = ',')]
    pub fs: Vec<String>,
    /// Named target configurations from the targets file (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// The file of named targets (default: ci/targets.json).
    #[arg(long)]
    pub targets_file: Option<PathBuf>,
}

impl TargetArgs {
    /// The targets asked for: `--fs` types and `--target` names, or none
    /// (cases then run in a scratch directory of `--dir`).
    pub(crate) fn resolve(&self) -> Result<Vec<TargetConfig>, String> {
        targets_of(&self.fs, &self.target, self.targets_file.as_deref())
    }
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
        Command::ForkServer => crate::exec::fork_server::main(),
        Command::FuseServer {
            mode,
            backing,
            mount_point,
        } => target::fuse::server::main(mode, &backing, &mount_point),
        Command::Validate { paths } => validate(default_paths(paths)),
        Command::List { paths } => list(default_paths(paths)),
        Command::Explain { case, html } => explain::explain(&case, html.as_deref()),
        Command::Compare(args) => reports::compare(args),
        Command::Explore(args) => explore::explore(args),
        Command::ReportSchema => reports::print_report_schema(),
        Command::PowerCut(args) => power_cut::power_cut(args),
        Command::Mutate {
            paths,
            dir,
            jobs,
            filter,
            every,
            fs,
        } => mutate::mutate(mutate::MutateArgs {
            paths: default_paths(paths),
            dir,
            jobs,
            filter,
            every,
            fs,
        }),
        Command::Soak {
            paths,
            runs,
            dir,
            jobs,
            filter,
            fs,
        } => soak::soak(soak::SoakArgs {
            paths: default_paths(paths),
            runs,
            dir,
            jobs,
            filter,
            fs,
        }),
        Command::ModelCheck {
            paths,
            dir,
            filter,
            verbose,
            fs,
            target,
            targets_file,
            json,
            observed,
        } => model_check::model_check(model_check::ModelCheckArgs {
            paths: default_paths(paths),
            dir,
            filter,
            verbose,
            fs,
            target,
            targets_file,
            json,
            observed,
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
            targets,
            outputs,
        } => run(RunArgs {
            paths: default_paths(paths),
            dir,
            report,
            jobs,
            filter,
            timeout,
            verbose,
            targets,
            outputs,
        }),
        Command::Cleanup { dirs } => {
            let tmp = std::env::temp_dir();
            let mut bases = vec![target::fs::image_dir(&tmp), tmp];
            bases.extend(dirs);
            bases.dedup();
            for line in target::cleanup::cleanup(&bases) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// The case JSON Schema, as checked in at specs/case.schema.json.
pub fn case_schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(crate::case::model::Case))
        .expect("schema serializes")
}

fn validate(paths: Vec<PathBuf>) -> ExitCode {
    let Some((cases, problems)) = loaded(&paths) else {
        return ExitCode::from(2);
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
    let Some((cases, problems)) = loaded(&paths) else {
        return ExitCode::from(2);
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
        if !r.target.is_empty() {
            req.push(format!("target {}", r.target.join("|")));
        }
        if !r.mount_options.is_empty() {
            req.push(format!("mount options {}", r.mount_options.join(",")));
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
    targets: TargetArgs,
    outputs: reports::OutputArgs,
}

/// The targets a run asks for: `--fs` types and `--target` names, or none
/// (cases then run in a scratch directory of `--dir`).
pub(crate) fn targets_of(
    fs: &[String],
    targets: &[String],
    targets_file: Option<&Path>,
) -> Result<Vec<TargetConfig>, String> {
    let mut out: Vec<TargetConfig> = target::fs::expand_fs_names(fs)
        .iter()
        .map(|f| TargetConfig::plain(f))
        .collect();
    if !targets.is_empty() {
        let file = targets_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| project_root().join("ci").join("targets.json"));
        let known = target::fs::load_targets(&file)?;
        for name in targets {
            let t = known
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| format!("no target `{name}` in {}", file.display()))?;
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Where a target's report goes: the given path, or with `-<target>`
/// before the extension when several targets share one run.
fn report_path(base: &Path, target: Option<&str>, several: bool) -> PathBuf {
    match (target, several) {
        (Some(t), true) => {
            let stem = base
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("report");
            let ext = base.extension().and_then(|s| s.to_str()).unwrap_or("json");
            base.with_file_name(format!("{stem}-{t}.{ext}"))
        }
        _ => base.to_path_buf(),
    }
}

/// `load_all`, with a failure (an unreadable path) printed.
pub(crate) fn loaded(paths: &[PathBuf]) -> Option<(Vec<LoadedCase>, Vec<Problem>)> {
    reported(load_all(paths))
}

/// The value, or None with the error printed the way every command prints it.
pub(crate) fn reported<T>(r: Result<T, String>) -> Option<T> {
    r.map_err(|e| eprintln!("mmapconf: {e}")).ok()
}

/// Options shared by commands that run cases.
pub(crate) fn run_options(timeout: Option<f64>) -> Result<RunOptions, String> {
    let worker_exe =
        std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut opts = RunOptions::new(worker_exe);
    opts.force_timeout = timeout.map(Duration::from_secs_f64);
    Ok(opts)
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
    let Some((mut cases, problems)) = loaded(&args.paths) else {
        return ExitCode::from(2);
    };
    if let Some(f) = &args.filter {
        cases.retain(|c| c.id.contains(f.as_str()));
    }
    let Some(opts) = reported(run_options(args.timeout)) else {
        return ExitCode::from(2);
    };
    let outputs = match reports::Prepared::new(&args.outputs) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    let targets = match args.targets.resolve() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let report_base = args
        .report
        .clone()
        .unwrap_or_else(|| project_root().join("reports").join("latest.json"));
    if targets.is_empty() {
        let code = run_on(
            &args,
            &cases,
            &problems,
            opts,
            &outputs,
            &base,
            &report_base,
        );
        return outputs.close(code);
    }
    let several = targets.len() > 1;
    // Every target at once, each on its own filesystem: what one target's
    // steps do to the machine is fenced by locks (forks never overlap an
    // unmount, drop_caches runs alone), and a target's own remount or crash
    // still never meets that target's other cases.
    let codes: Vec<ExitCode> = std::thread::scope(|s| {
        let runs: Vec<_> = targets
            .iter()
            .map(|t| {
                let (args, cases, problems, opts, outputs, base) =
                    (&args, &cases, &problems, &opts, &outputs, &base);
                let path = report_path(&report_base, Some(&t.name), several);
                s.spawn(move || match OwnedFs::create_for(t, base, cases) {
                    Ok(fs) => {
                        let mount = fs.mount_point.clone();
                        let mut opts = opts.clone();
                        opts.owned_fs = Some(std::sync::Arc::new(std::sync::Mutex::new(fs)));
                        run_on(args, cases, problems, opts, outputs, &mount, &path)
                    }
                    Err(why) => {
                        eprintln!("mmapconf: target {}: skipped: {why}", t.name);
                        let mut env = target::Environment::probe(base);
                        env.target = Some(t.name.clone());
                        env.fs_type = t.fs.clone();
                        env.mount_options = String::new();
                        let why = format!("target {}: {why}", t.name);
                        skip_all(cases, env, &why, &path, outputs)
                    }
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap_or(ExitCode::from(2)))
            .collect()
    });
    let code = codes
        .into_iter()
        .find(|c| *c != ExitCode::SUCCESS)
        .unwrap_or(ExitCode::SUCCESS);
    outputs.close(code)
}

/// A report in which every case is skipped for one reason (a target that cannot be made here).
fn skip_all(
    cases: &[LoadedCase],
    env: target::Environment,
    why: &str,
    path: &Path,
    outputs: &reports::Prepared,
) -> ExitCode {
    let cases: Vec<CaseReport> = cases
        .iter()
        .map(|c| {
            CaseReport::not_run(
                c.id.clone(),
                c.case.title.clone(),
                Status::Skip,
                why.to_string(),
            )
        })
        .collect();
    let report = report::Report {
        schema_version: report::SCHEMA_VERSION,
        environment: env,
        started_at: report::now_rfc3339(),
        summary: report::Summary::of(&cases, 0),
        cases,
    };
    // Written like any other target's, so KTAP, JUnit and KCIDB show the skips too.
    let written = report::write_json(&report, path);
    outputs.finish(&report, path, written)
}

/// Runs the cases once with scratch directories under `base` and writes the report to `path`.
fn run_on(
    args: &RunArgs,
    cases: &[LoadedCase],
    problems: &[Problem],
    opts: RunOptions,
    outputs: &reports::Prepared,
    base: &Path,
    path: &Path,
) -> ExitCode {
    let jobs = jobs_or_cpus(args.jobs);
    let target = target::mount_of(base)
        .map(|m| format!("{} {}", m.fs_type, base.display()))
        .unwrap_or_else(|| base.display().to_string());
    let bar = progress::Progress::new(
        cases.len(),
        args.verbose,
        outputs.console(),
        &target,
        &outputs.bars,
    );
    let progress = |r: &CaseReport| bar.case_done(r);
    let ran = runner::run_all(cases, base, jobs, &opts, &progress);
    bar.finish();
    let mut report = match ran {
        Ok(r) => r,
        Err(e) => {
            // One diagnosis for the target, not one error per case; the
            // report still lists every case, skipped for that reason. The
            // run fails: the directory was the user's choice.
            let why = format!(
                "the target cannot be used: cannot make a scratch directory under {}: {e}",
                base.display()
            );
            eprintln!("mmapconf: {why}");
            let _ = skip_all(cases, target::Environment::probe(base), &why, path, outputs);
            return ExitCode::from(2);
        }
    };
    // Files that did not parse are errors of the run, not silently dropped:
    // one error entry per file, with all its problems.
    let mut by_file: std::collections::BTreeMap<&Path, Vec<String>> = Default::default();
    for p in problems {
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
        report.cases.push(CaseReport::not_run(
            id,
            String::new(),
            Status::Error,
            lines.join("\n"),
        ));
    }
    report.summary = report::Summary::of(&report.cases, report.summary.duration_ms);
    let written = report::write_json(&report, path);
    outputs.finish(&report, path, written)
}

/// SIGINT, SIGTERM and SIGHUP (a closed terminal) end the run cleanly:
/// every case's processes and helper programs are killed, and the scratch
/// directories, mounts, loop devices and images (crash copies included)
/// removed before the harness exits with 128 + the signal.
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
            // Say so first: the cases die now and the run would otherwise
            // finish and exit with its own status before cleanup is done.
            live::set_interrupted(sig as i32);
            live::kill_everything();
            std::process::exit(128 + sig as i32);
        }
    });
}
