//! `mmapconf power-cut`: one case on a block device the harness mounts
//! itself, whose `crash` steps are real power cuts (`crate::exec::power_cut`).
//!
//! Before the cut: `--case ID` runs the case from its start; at a crash
//! step the state goes to `--state-out`, the marker to standard output,
//! and the harness waits to be killed with the machine. After the reboot:
//! `--resume STATE` mounts the device again (journal or log replay) and
//! runs the rest of the case. A case that ends without (another) cut gets
//! a JSON report of that one case in `--report`.

use crate::case::LoadedCase;
use crate::exec::power_cut::{Cutter, State};
use crate::report::{self, CaseReport, Status};
use crate::target::fs::{OwnedFs, TargetConfig};
use crate::target::{probe, Environment};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Where case directories go, under the mount point.
const CASES_DIR: &str = "mmapconf-power-cut";

#[derive(clap::Args, Debug)]
pub struct PowerCutArgs {
    /// Case files or directories to find the case in (default: the cases/ directory).
    pub paths: Vec<PathBuf>,
    /// The block device holding the filesystem (made beforehand, with mkfs).
    #[arg(long)]
    pub device: String,
    /// The filesystem type on the device.
    #[arg(long, default_value = "btrfs")]
    pub fs: String,
    /// Mount options (-o).
    #[arg(long, default_value = "")]
    pub mount_options: String,
    /// Run this case (its id) from its start.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub case: Option<String>,
    /// Go on with a case after a power cut, from the state saved at the cut.
    #[arg(long, value_name = "STATE")]
    pub resume: Option<PathBuf>,
    /// Where a crash step writes the state: a file, a device (a serial
    /// port), or `-` for standard output, where the marker follows it.
    #[arg(long, value_name = "PATH")]
    pub state_out: PathBuf,
    /// Where to mount the device (default: $TMPDIR/mmapconf-mnt-<pid>-power-cut).
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// The JSON report of the case, written when it ends without a power
    /// cut (default: $XDG_STATE_HOME/mmapconf/latest.json, as `run`; `-`:
    /// standard output).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Time limit of the case in seconds (each boot's part), overriding its own.
    #[arg(long)]
    pub timeout: Option<f64>,
}

pub fn power_cut(args: PowerCutArgs) -> ExitCode {
    super::handle_interrupts();
    let state = match args.resume.as_deref().map(State::read).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mmapconf: cannot resume: {e}");
            return ExitCode::from(2);
        }
    };
    let id = match (&state, &args.case) {
        (Some(s), _) => s.case.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => unreachable!("clap requires --case or --resume"),
    };
    if let Some(s) = state.as_ref().filter(|s| s.fs != args.fs) {
        eprintln!(
            "mmapconf: the state is of a {} filesystem, not {}",
            s.fs, args.fs
        );
        return ExitCode::from(2);
    }
    let Some((cases, _)) = super::loaded(&super::default_paths(args.paths.clone())) else {
        return ExitCode::from(2);
    };
    let Some(case) = cases.into_iter().find(|c| c.id == id) else {
        eprintln!("mmapconf: no case `{id}` (or it does not load: see `mmapconf validate`)");
        return ExitCode::from(2);
    };
    let Some(mut opts) = super::reported(super::run_options(args.timeout)) else {
        return ExitCode::from(2);
    };
    let report_path = args.report.clone().unwrap_or_else(super::default_report);
    let config = TargetConfig {
        mount_options: args.mount_options.clone(),
        ..TargetConfig::plain(&args.fs)
    };
    let mount = args.mount.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("mmapconf-mnt-{}-power-cut", std::process::id()))
    });
    let started_at = report::now_rfc3339();
    let rel = match &state {
        Some(s) => s.case_dir.clone(),
        None => format!("{CASES_DIR}/{}", crate::target::case_dir_name(&case.id)),
    };
    let dir = mount.join(&rel);
    let mut env = Environment::probe(&mount);
    env.target = Some(config.name.clone());
    env.fs_type = config.fs.clone();

    let fs = match OwnedFs::mount_device(&config, &args.device, &mount) {
        Ok(fs) => Arc::new(Mutex::new(fs)),
        Err(e) => {
            let why = match &state {
                Some(_) => format!("mounting {} after the power cut failed: {e}", args.device),
                None => format!("mounting {} failed: {e}", args.device),
            };
            let r = entry(&case, Status::Error, why);
            return finish(env, started_at, r, &report_path);
        }
    };
    let prepared = match &state {
        // A cut attempt that never resumed may have left the directory.
        None => std::fs::remove_dir_all(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .and_then(|()| std::fs::create_dir_all(&dir))
            .map_err(|e| format!("cannot make the case directory {}: {e}", dir.display())),
        Some(_) if dir.is_dir() => Ok(()),
        Some(_) => Err(format!(
            "the case's directory {rel} is not on {} after the power cut",
            args.device
        )),
    };
    let report = match prepared {
        Err(why) => entry(&case, Status::Error, why),
        Ok(()) => {
            env = Environment::of_run(&dir, Some(&fs.lock().unwrap_or_else(|e| e.into_inner())));
            let unmet = match &state {
                None => probe::unmet(&case.case, &env),
                Some(_) => None,
            };
            match unmet {
                Some(reason) => entry(&case, Status::Skip, reason),
                None => {
                    opts.owned_fs = Some(fs.clone());
                    opts.power_cut = Some(Arc::new(Cutter {
                        case: case.id.clone(),
                        fs: config.fs.clone(),
                        case_dir: rel.clone(),
                        earlier_cuts: state.as_ref().map_or(0, |s| s.cuts),
                        out: args.state_out.clone(),
                    }));
                    let paused = state.map(|s| s.paused);
                    crate::exec::run_case_from(&case, &env, &dir, &opts, paused)
                }
            }
        }
    };
    // The case ended without a power cut: leave the device clean for the next one.
    let fs = fs.lock().unwrap_or_else(|e| e.into_inner());
    fs.ensure_writable();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir(mount.join(CASES_DIR));
    fs.sync();
    if let Err(e) = crate::target::fs::unmount(&mount) {
        eprintln!("mmapconf: unmounting {}: {e}", mount.display());
    }
    drop(fs);
    finish(env, started_at, report, &report_path)
}

/// The report of a case that did not run (skipped, or its setup broke).
fn entry(case: &LoadedCase, status: Status, reason: String) -> CaseReport {
    CaseReport::not_run(case.id.clone(), case.case.title.clone(), status, reason)
}

/// Writes the report of the one case and prints its line.
fn finish(env: Environment, started_at: String, case: CaseReport, path: &Path) -> ExitCode {
    let status = case.status;
    eprintln!(
        "{:5} {} ({} ms){}",
        status.as_str().to_uppercase(),
        case.id,
        case.duration_ms,
        case.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let cases = vec![case];
    let report = report::Report {
        schema_version: report::SCHEMA_VERSION,
        environment: env,
        started_at,
        summary: report::Summary::of(&cases, cases[0].duration_ms),
        cases,
        health: None,
    };
    if let Err(e) = report::write_json(&report, path) {
        eprintln!("mmapconf: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    match status {
        Status::Pass | Status::Skip => ExitCode::SUCCESS,
        Status::Fail | Status::Error => ExitCode::from(1),
    }
}
