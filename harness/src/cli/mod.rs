//! The `mmapconf` command line.

mod explain;
mod explore;
mod model_check;
mod mutate;
mod power_cut;
mod progress;
mod reports;
mod repro;

pub use reports::{baseline_file_for, baseline_file_name};
mod soak;
mod swimlanes;

use crate::case::corpus::{self, Corpus};
use crate::case::select::{SelectArgs, Selection};
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

// One value a process, parsed once at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run cases (default: the whole corpus, see `mmapconf corpus`) and write a JSON report.
    Run {
        /// Case files or directories (default: the corpus, see `mmapconf corpus`).
        paths: Vec<PathBuf>,
        /// Directory to make scratch directories in (default: $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The same directory as another mount of --dir's filesystem shows it
        /// (a second NFS mount of the export, with nosharecache): processes a
        /// case puts on the second mount (`processes`) work there; without
        /// it such cases are skipped.
        #[arg(long, value_name = "DIR", requires = "dir", conflicts_with_all = ["fs", "target"])]
        second_dir: Option<PathBuf>,
        /// Where to write the JSON report (default:
        /// $XDG_STATE_HOME/mmapconf/latest.json, i.e. ~/.local/state/mmapconf/latest.json).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Cases run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        select: SelectArgs,
        /// Time limit per case in seconds, overriding each case's own.
        #[arg(long)]
        timeout: Option<f64>,
        /// Print every case, not only those that did not pass.
        #[arg(long, short)]
        verbose: bool,
        /// Make a scratch filesystem of each type (comma-separated: tmpfs,
        /// ramfs, ext2, ext3, ext4, xfs, btrfs, f2fs, vfat, exfat, ntfs3 or ntfs (the
        /// kernel drivers), overlay, hugetlbfs, the
        /// read-only images erofs and squashfs, the own FUSE server's
        /// fuse-<mode>, ntfs-3g, exfat-fuse, fuse2fs, bindfs, fuse-overlayfs;
        /// `host` for tmpfs, ramfs, ext4, hugetlbfs, the images and every
        /// FUSE target) and run the cases on each, one report per
        /// filesystem. Needs root.
        #[arg(long, value_delimiter = ',')]
        fs: Vec<String>,
        /// Named target configurations from the targets file (comma-separated).
        #[arg(long, value_delimiter = ',')]
        target: Vec<String>,
        /// The file of named targets (default: ci/targets.json).
        #[arg(long)]
        targets_file: Option<PathBuf>,
        /// Turn off the health checks around every case (kernel log, taint
        /// flags, the owned filesystem's fsck at the end).
        #[arg(long)]
        no_health: bool,
        /// Make the `--fs` filesystem on this block device and run there, as
        /// fstests' SCRATCH_DEV (root). Refused when the device is mounted
        /// or in use, or holds a filesystem (see --force-mkfs). Its data are lost.
        #[arg(long, value_name = "DEV")]
        device: Option<PathBuf>,
        /// With --device: make the filesystem even over one already there.
        #[arg(long, requires = "device")]
        force_mkfs: bool,
        /// Extra mkfs arguments for the targets (split at spaces: "-O ^has_journal").
        #[arg(long, allow_hyphen_values = true)]
        mkfs_options: Option<String>,
        /// Mount options for the targets (mount -o).
        #[arg(long)]
        mount_options: Option<String>,
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
        Command::Run {
            paths,
            dir,
            report,
            jobs,
            select,
            timeout,
            verbose,
            fs,
            target,
            targets_file,
            no_health,
            device,
            force_mkfs,
            mkfs_options,
            mount_options,
            outputs,
            second_dir,
        } => {
            let (paths, corpus) = corpus_for(paths);
            run(RunArgs {
                paths,
                corpus,
                dir,
                second_dir,
                report,
                jobs,
                select,
                timeout,
                verbose,
                fs,
                target,
                targets_file,
                no_health,
                device,
                force_mkfs,
                mkfs_options,
                mount_options,
                outputs,
            })
        }
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

struct RunArgs {
    paths: Vec<PathBuf>,
    /// What the paths are, recorded in the report.
    corpus: Corpus,
    dir: Option<PathBuf>,
    second_dir: Option<PathBuf>,
    report: Option<PathBuf>,
    jobs: Option<usize>,
    select: SelectArgs,
    timeout: Option<f64>,
    verbose: bool,
    fs: Vec<String>,
    target: Vec<String>,
    targets_file: Option<PathBuf>,
    no_health: bool,
    device: Option<PathBuf>,
    force_mkfs: bool,
    mkfs_options: Option<String>,
    mount_options: Option<String>,
    outputs: reports::OutputArgs,
}

/// The targets a run asks for: `--fs` types and `--target` names, or none
/// (cases then run in a scratch directory of `--dir`).
fn resolve_targets(args: &RunArgs) -> Result<Vec<TargetConfig>, String> {
    let mut out = targets_of(&args.fs, &args.target, args.targets_file.as_deref())?;
    for t in &mut out {
        if let Some(o) = &args.mkfs_options {
            t.mkfs_options
                .extend(o.split_whitespace().map(str::to_string));
        }
        if let Some(o) = &args.mount_options {
            t.mount_options = o.clone();
        }
    }
    if let Some(dev) = &args.device {
        // One filesystem on the one device: never another device.
        let [t] = out.as_slice() else {
            return Err("--device needs exactly one --fs (or --target)".to_string());
        };
        target::device::check(dev, &t.fs, args.force_mkfs)
            .map_err(|e| format!("refusing --device: {e}"))?;
    }
    Ok(out)
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

fn run(args: RunArgs) -> ExitCode {
    handle_interrupts();
    let Some((cases, problems)) = loaded(&args.paths) else {
        return ExitCode::from(2);
    };
    let Some((cases, problems)) = selected_with_problems(&args.select, cases, problems) else {
        return ExitCode::from(2);
    };
    let Some(mut opts) = reported(run_options(args.timeout)) else {
        return ExitCode::from(2);
    };
    opts.health = !args.no_health;
    if let (Some(first), Some(second)) = (&args.dir, &args.second_dir) {
        match target::second_mount::SecondMount::new(first, second) {
            Ok(m) => opts.second_mount = Some(m),
            Err(e) => {
                eprintln!("mmapconf: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let outputs = match reports::Prepared::new(&args.outputs, args.report.as_deref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    let targets = match resolve_targets(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    if targets.len() > 1 && outputs.report_to_stdout() {
        eprintln!(
            "mmapconf: --report - takes one target; {} targets make one report each: give a file name (each target's gets `-<target>` added)",
            targets.len()
        );
        return ExitCode::from(2);
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let report_base = args.report.clone().unwrap_or_else(default_report);
    if targets.is_empty() {
        let code = run_on(
            &args,
            &cases,
            &problems,
            opts,
            &outputs,
            &base,
            &report_base,
            None,
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
                let tag = several.then_some(t.name.as_str());
                let made = move || match &args.device {
                    Some(dev) => OwnedFs::make_on_device(t, &dev.to_string_lossy(), base),
                    None => OwnedFs::create_for(t, base, cases),
                };
                s.spawn(move || match made() {
                    Ok(fs) => {
                        let mount = fs.mount_point.clone();
                        let mut opts = opts.clone();
                        opts.owned_fs = Some(std::sync::Arc::new(std::sync::Mutex::new(fs)));
                        run_on(args, cases, problems, opts, outputs, &mount, &path, tag)
                    }
                    Err(why) => {
                        eprintln!("mmapconf: target {}: skipped: {why}", t.name);
                        let mut env = target::Environment::probe(base);
                        env.target = Some(t.name.clone());
                        env.fs_type = t.fs.clone();
                        env.mount_options = String::new();
                        env.corpus = Some(args.corpus.clone());
                        let why = format!("target {}: {why}", t.name);
                        skip_all(cases, env, &why, &path, outputs, tag)
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
    tag: Option<&str>,
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
        health: None,
    };
    // Written like any other target's, so KTAP, JUnit and KCIDB show the skips too.
    outputs.finish(report, path, tag)
}

/// Runs the cases once with scratch directories under `base` and writes the
/// report to `path`; `tag` names the target in every line when several run.
#[allow(clippy::too_many_arguments)]
fn run_on(
    args: &RunArgs,
    cases: &[LoadedCase],
    problems: &[Problem],
    opts: RunOptions,
    outputs: &reports::Prepared,
    base: &Path,
    path: &Path,
    tag: Option<&str>,
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
        tag,
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
            eprintln!("{}", progress::tagged(tag, &format!("mmapconf: {why}")));
            let mut env = target::Environment::probe(base);
            env.corpus = Some(args.corpus.clone());
            let _ = skip_all(cases, env, &why, path, outputs, tag);
            return ExitCode::from(2);
        }
    };
    // Files that did not parse are errors of the run, not silently dropped:
    // one error entry per file, with all its problems.
    let mut by_file: std::collections::BTreeMap<&Path, Vec<String>> = Default::default();
    for p in problems {
        eprintln!("{}", progress::tagged(tag, &p.to_string()));
        by_file
            .entry(p.file.as_path())
            .or_default()
            .push(p.to_string());
    }
    for (file, lines) in by_file {
        let id = case::case_id(file);
        report.cases.push(CaseReport::not_run(
            id,
            String::new(),
            Status::Error,
            lines.join("\n"),
        ));
    }
    report.summary = report::Summary::of(&report.cases, report.summary.duration_ms);
    report.environment.corpus = Some(args.corpus.clone());
    outputs.finish(report, path, tag)
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
