//! `mmapconf run`: the cases on each target asked for, one report each.

use super::progress;
use super::reports;
use super::{
    corpus_for, default_report, handle_interrupts, jobs_or_cpus, loaded, reported, run_options,
    selected_with_problems, TargetArgs,
};
use crate::case::corpus::Corpus;
use crate::case::select::SelectArgs;
use crate::case::{self, LoadedCase, Problem};
use crate::exec::RunOptions;
use crate::report::{self, CaseReport, Status};
use crate::runner;
use crate::target;
use crate::target::fs::{OwnedFs, TargetConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
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
    #[command(flatten)]
    targets: TargetArgs,
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
}

/// What a run runs: the cases that loaded and were selected, the files
/// that did not load, and the corpus they came from.
struct Loaded {
    cases: Vec<LoadedCase>,
    problems: Vec<Problem>,
    corpus: Corpus,
}

/// The targets a run asks for: `--fs` types and `--target` names, or none
/// (cases then run in a scratch directory of `--dir`).
fn resolve_targets(args: &RunArgs) -> Result<Vec<TargetConfig>, String> {
    let mut out = args.targets.resolve()?;
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

pub(super) fn run(mut args: RunArgs) -> ExitCode {
    let (paths, corpus) = corpus_for(std::mem::take(&mut args.paths));
    handle_interrupts();
    let Some((cases, problems)) = loaded(&paths) else {
        return ExitCode::from(2);
    };
    let Some((cases, problems)) = selected_with_problems(&args.select, cases, problems) else {
        return ExitCode::from(2);
    };
    let run = Loaded {
        cases,
        problems,
        corpus,
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
        let code = run_on(&args, &run, opts, &outputs, &base, &report_base, None);
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
                let (args, run, opts, outputs, base) = (&args, &run, &opts, &outputs, &base);
                let path = report_path(&report_base, Some(&t.name), several);
                let tag = several.then_some(t.name.as_str());
                let made = move || match &args.device {
                    Some(dev) => OwnedFs::make_on_device(t, &dev.to_string_lossy(), base),
                    None => OwnedFs::create_for(t, base, &run.cases),
                };
                s.spawn(move || match made() {
                    Ok(fs) => {
                        let mount = fs.mount_point.clone();
                        let mut opts = opts.clone();
                        opts.owned_fs = Some(std::sync::Arc::new(std::sync::Mutex::new(fs)));
                        run_on(args, run, opts, outputs, &mount, &path, tag)
                    }
                    Err(why) => {
                        eprintln!("mmapconf: target {}: skipped: {why}", t.name);
                        let mut env = target::Environment::probe(base);
                        env.target = Some(t.name.clone());
                        env.fs_type = t.fs.clone();
                        env.mount_options = String::new();
                        env.corpus = Some(run.corpus.clone());
                        let why = format!("target {}: {why}", t.name);
                        skip_all(&run.cases, env, &why, &path, outputs, tag)
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
fn run_on(
    args: &RunArgs,
    run: &Loaded,
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
        run.cases.len(),
        args.verbose,
        outputs.console(),
        &target,
        tag,
        &outputs.bars,
    );
    let progress = |r: &CaseReport| bar.case_done(r);
    let ran = runner::run_all(&run.cases, base, jobs, &opts, &progress);
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
            env.corpus = Some(run.corpus.clone());
            let _ = skip_all(&run.cases, env, &why, path, outputs, tag);
            return ExitCode::from(2);
        }
    };
    // Files that did not parse are errors of the run, not silently dropped:
    // one error entry per file, with all its problems.
    let mut by_file: std::collections::BTreeMap<&Path, Vec<String>> = Default::default();
    for p in &run.problems {
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
    report.environment.corpus = Some(run.corpus.clone());
    outputs.finish(report, path, tag)
}
