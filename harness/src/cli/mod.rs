//! The `mmapconf` command line.

mod explain;
mod explore;
mod model_check;
mod mutate;
mod power_cut;
mod progress;
mod reports;
mod repro;
mod run;

pub use reports::{baseline_file_for, baseline_file_name};
mod soak;
mod swimlanes;

use crate::case::corpus::{self, Corpus};
use crate::case::select::{SelectArgs, Selection};
use crate::case::{self, LoadedCase, Problem};
use crate::exec::{live, RunOptions};
use crate::target;
use crate::target::fs::TargetConfig;
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

// One value a process, parsed once at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run cases (default: the whole corpus, see `mmapconf corpus`) and write a JSON report.
    Run(run::RunArgs),
    /// Remove what a killed run left behind: workers, mounts, loop devices,
    /// images and scratch directories (found by their mmapconf- names).
    Cleanup {
        /// Directories to look in besides $TMPDIR and /dev/shm (where loop images go).
        dirs: Vec<PathBuf>,
    },
    /// Check case files; print every problem as file:line:col.
    Validate {
        /// Case files or directories (default: the corpus, see `mmapconf corpus`).
        paths: Vec<PathBuf>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// List cases: id, title, requirements.
    List {
        /// Case files or directories (default: the corpus, see `mmapconf corpus`).
        paths: Vec<PathBuf>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Show a case as a timeline, one column per process.
    Explain {
        /// A case id ("seed/writer-reader") or file.
        case: String,
        /// Draw it as an HTML page of swimlanes instead, to FILE (`-` or no FILE: standard output).
        #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
        html: Option<PathBuf>,
    },
    /// Write a case as a standalone C program (one file, libc only) that
    /// performs its steps in the same processes and order and checks the
    /// expectations that apply to the target: for a kernel bug report.
    Repro {
        /// A case id ("seed/writer-reader") or file.
        case: String,
        /// Write C (the one format there is; accepted for clarity).
        #[arg(long = "c")]
        c: bool,
        /// Where to write the program (default: standard output).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// The filesystem type the program is for, as `run --fs`: picks the
        /// case's variants for it (nothing is mounted).
        #[arg(long, conflicts_with = "dir")]
        fs: Option<String>,
        /// The directory the program will run in, as `run --dir`: its
        /// filesystem picks the case's variants (default: $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show where reports from several kernels and filesystems differ, case by case.
    Compare(reports::CompareArgs),
    /// Mutation check: rewrite each expectation to a wrong one, run the
    /// mutants, and list every mutant that still passes.
    Mutate {
        /// Case files or directories (default: the corpus, see `mmapconf corpus`).
        paths: Vec<PathBuf>,
        /// Directory to make scratch directories in (default: $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Cases run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        select: SelectArgs,
        /// Only every Nth case (a quick sample for CI).
        #[arg(long)]
        every: Option<usize>,
        /// Run originals and mutants on a scratch filesystem of this type
        /// (as `run --fs`), so remount and crash cases are mutated too.
        #[arg(long)]
        fs: Option<String>,
        /// Another mount of --dir's filesystem, as `run --second-dir`.
        #[arg(long, value_name = "DIR", requires = "dir", conflicts_with = "fs")]
        second_dir: Option<PathBuf>,
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
        #[command(flatten)]
        select: SelectArgs,
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
        /// Case files or directories (default: the corpus, see `mmapconf corpus`).
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
        #[command(flatten)]
        select: SelectArgs,
        /// Scratch filesystems to make and soak at once, as `run --fs` (root).
        #[arg(long, value_delimiter = ',')]
        fs: Vec<String>,
    },
    /// Run one case on a block device whose `crash` steps are real power
    /// cuts of the machine (a VM the runner kills): save the state at the
    /// cut, then `--resume` it after the reboot.
    PowerCut(power_cut::PowerCutArgs),
    /// Print which corpus runs when no case paths are given: its source
    /// (env: $MMAPCONF_CASES, checkout, data-dir, embedded) and location.
    Corpus,
    /// Print the manual page (roff), generated from these options; with
    /// DIR, write mmapconf.1 and one mmapconf-COMMAND.1 a command there.
    #[command(hide = true)]
    Man { dir: Option<PathBuf> },
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
    /// ramfs, ext2, ext3, ext4, xfs, btrfs, f2fs, vfat, exfat, ntfs3 or ntfs (the
    /// kernel drivers), overlay, hugetlbfs, the
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

/// The paths to load and the corpus they stand for: the paths given, or
/// the corpus found as `case::corpus` orders it. An unusable
/// `$MMAPCONF_CASES` ends the command here, before anything has started.
fn corpus_for(paths: Vec<PathBuf>) -> (Vec<PathBuf>, Corpus) {
    if !paths.is_empty() {
        let location = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let given = Corpus {
            source: corpus::Source::Paths,
            location,
        };
        return (paths, given);
    }
    match corpus::find() {
        Ok(c) => (vec![c.root()], c),
        Err(e) => {
            eprintln!("mmapconf: {e}");
            std::process::exit(2)
        }
    }
}

/// The file of a case named on the command line: a file as given, else
/// an id under the project's `cases/`.
pub(crate) fn case_file(which: &str) -> PathBuf {
    let p = PathBuf::from(which);
    if p.is_file() {
        p
    } else {
        // An id: in the corpus a run would use.
        let corpus = corpus_for(Vec::new()).1;
        corpus.root().join(format!("{which}.json"))
    }
}

fn default_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    corpus_for(paths).0
}

/// Where a run's JSON report goes unless `--report` says: the user's XDG
/// state directory (`$XDG_STATE_HOME`, default `~/.local/state`), never the
/// current directory (which may be a source tree, `/`, or read-only) nor the
/// tree the binary was built from. The path is printed at the end of a run.
pub fn default_report() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match state {
        Some(dir) => dir.join("mmapconf").join("latest.json"),
        // No home at all (a bare service): the current directory is all there is.
        None => PathBuf::from("latest.json"),
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
        Command::Validate { paths, select } => validate(default_paths(paths), &select),
        Command::List { paths, select } => list(default_paths(paths), &select),
        Command::Explain { case, html } => explain::explain(&case, html.as_deref()),
        Command::Compare(args) => reports::compare(args),
        Command::Repro {
            case,
            c: _,
            output,
            fs,
            dir,
        } => repro::repro(&case, output.as_deref(), fs.as_deref(), dir.as_deref()),
        Command::Explore(args) => explore::explore(args),
        Command::ReportSchema => reports::print_report_schema(),
        Command::PowerCut(args) => power_cut::power_cut(args),
        Command::Mutate {
            paths,
            dir,
            jobs,
            select,
            every,
            fs,
            second_dir,
        } => mutate::mutate(mutate::MutateArgs {
            paths: default_paths(paths),
            dir,
            jobs,
            select,
            every,
            fs,
            second_dir,
        }),
        Command::Soak {
            paths,
            runs,
            dir,
            jobs,
            select,
            fs,
        } => soak::soak(soak::SoakArgs {
            paths: default_paths(paths),
            runs,
            dir,
            jobs,
            select,
            fs,
        }),
        Command::ModelCheck {
            paths,
            dir,
            select,
            verbose,
            fs,
            target,
            targets_file,
            json,
            observed,
        } => model_check::model_check(model_check::ModelCheckArgs {
            paths: default_paths(paths),
            dir,
            select,
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
        Command::Corpus => {
            println!("{}", corpus_for(Vec::new()).1);
            ExitCode::SUCCESS
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            let written = match &dir {
                Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
                None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock()),
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mmapconf: cannot write the manual page: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(args) => run::run(args),
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

fn validate(paths: Vec<PathBuf>, select: &SelectArgs) -> ExitCode {
    let Some((cases, problems)) = loaded(&paths) else {
        return ExitCode::from(2);
    };
    let Some((cases, problems)) = selected_with_problems(select, cases, problems) else {
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

fn list(paths: Vec<PathBuf>, select: &SelectArgs) -> ExitCode {
    let Some((cases, problems)) = loaded(&paths) else {
        return ExitCode::from(2);
    };
    let Some(cases) = selected(select, cases) else {
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
        if !r.config.is_empty() {
            req.push(format!("config {}", r.config.join(",")));
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

/// `--fs` types and `--target` names (looked up in `targets_file`, else the
/// built-in targets) as target configurations.
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
        let (file, known) = match targets_file {
            Some(file) => (file.display().to_string(), target::fs::load_targets(file)?),
            None => target::fs::default_targets()?,
        };
        for name in targets {
            let t = known
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| format!("no target `{name}` in {file}"))?;
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// The cases `select` keeps, or None with the error printed (a bad
/// pattern or ids file, or a selection that keeps nothing).
pub(crate) fn selected(select: &SelectArgs, cases: Vec<LoadedCase>) -> Option<Vec<LoadedCase>> {
    reported(Selection::new(select).and_then(|s| s.apply(cases, &[])))
}

/// `selected` for commands that also report the files that did not load:
/// such a file is kept when the selection would have had its case.
fn selected_with_problems(
    select: &SelectArgs,
    cases: Vec<LoadedCase>,
    mut problems: Vec<Problem>,
) -> Option<(Vec<LoadedCase>, Vec<Problem>)> {
    let selection = reported(Selection::new(select))?;
    let mut broken: Vec<String> = problems.iter().map(|p| case::case_id(&p.file)).collect();
    broken.dedup();
    let cases = reported(selection.apply(cases, &broken))?;
    problems.retain(|p| selection.matches(&case::case_id(&p.file), None));
    Some((cases, problems))
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
