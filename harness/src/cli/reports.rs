//! The command line of reports: `run`'s extra formats and baseline, the end
//! of a run, and `compare`.

use super::progress::{self, Console, Written};
use crate::report::{self, baseline::Baseline, compare::Matrix, html, junit, kcidb, ktap, Report};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

/// `run`'s options for what to write besides the JSON report.
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Also write the run as KTAP version 1 to FILE; `-` for standard output
    /// (everything else then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub ktap: Option<PathBuf>,
    /// Also write the run as JUnit XML (one testsuite per target).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write the run as KCIDB v5 JSON (origin from
    /// MMAPCONF_KCIDB_ORIGIN, an existing build from MMAPCONF_KCIDB_BUILD_ID).
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// Known failures of this kernel and filesystem (reports/baselines/):
    /// exit non-zero only for failures it does not list. A directory: each
    /// target's own file in it, `<major>.<minor>-<target>.txt` (the target
    /// name, or the filesystem type for `--dir`), when there is one.
    #[arg(long, value_name = "FILE|DIR")]
    pub baseline: Option<PathBuf>,
}

/// Where known failures come from: one file for the run, or a directory
/// holding one file per kernel and target.
enum Baselines {
    One(Baseline, String),
    Dir(PathBuf),
}

impl Baselines {
    /// The baseline that applies to `report`, with its name; None when a
    /// directory has no file for this kernel and target (every failure is new).
    fn for_report(&self, report: &Report) -> Result<Option<(Baseline, String)>, String> {
        match self {
            Baselines::One(b, name) => Ok(Some((b.clone(), name.clone()))),
            Baselines::Dir(dir) => {
                let path = dir.join(baseline_file_name(report));
                if !path.is_file() {
                    return Ok(None);
                }
                let b = Baseline::load(&path).map_err(|e| e.join("\n"))?;
                Ok(Some((b, path.display().to_string())))
            }
        }
    }
}

/// `6.18-ext4.txt`: the kernel's major.minor and the target's name (the
/// filesystem type when the run was on an existing mount).
pub fn baseline_file_name(report: &Report) -> String {
    baseline_file_for(&report.environment)
}

/// The baseline file name of an environment: `<major>.<minor>-<target or fs>.txt`.
pub fn baseline_file_for(env: &crate::target::Environment) -> String {
    let k = env.kernel();
    let target = env.target.clone().unwrap_or_else(|| env.fs_type.clone());
    format!("{}.{}-{target}.txt", k.0, k.1)
}

/// What `run` checked before running anything (a bad baseline or KCIDB
/// setting should stop the run at once, not after every case ran), and the
/// reports of the targets run so far.
pub struct Prepared {
    args: OutputArgs,
    baseline: Option<Baselines>,
    kcidb: kcidb::Options,
    reports: Mutex<Vec<Report>>,
    /// The progress bars of the run, one per target, drawn together.
    pub bars: indicatif::MultiProgress,
}

impl Prepared {
    pub fn new(args: &OutputArgs) -> Result<Prepared, String> {
        let baseline = match &args.baseline {
            Some(p) if p.is_dir() => Some(Baselines::Dir(p.clone())),
            Some(p) => Some(Baselines::One(
                Baseline::load(p).map_err(|e| e.join("\n"))?,
                p.display().to_string(),
            )),
            None => None,
        };
        let kcidb = if args.kcidb.is_some() {
            kcidb::Options::from_env()?
        } else {
            kcidb::Options::default()
        };
        let console = Console {
            stderr: args.ktap.as_deref().is_some_and(is_stdout),
        };
        let bars = indicatif::MultiProgress::with_draw_target(if console.stderr {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::stdout()
        });
        Ok(Prepared {
            args: args.clone(),
            baseline,
            kcidb,
            reports: Mutex::new(Vec::new()),
            bars,
        })
    }

    /// Human output moves to standard error when KTAP takes standard output.
    pub fn console(&self) -> Console {
        Console {
            stderr: self.ktap_to_stdout(),
        }
    }

    fn ktap_to_stdout(&self) -> bool {
        self.args.ktap.as_deref().is_some_and(is_stdout)
    }

    /// The end of one target's run: its JSON report was written (or not) to
    /// `json_path`; writes the other formats for every target so far (a
    /// later target rewrites them with its own added, so each file holds
    /// one run), prints the summary, and decides the target's exit status:
    /// 2 if an output could not be written; else, with a baseline, 1 only
    /// for new failures; without, 1 for any failure.
    pub fn finish(&self, report: &Report, json_path: &Path, json: std::io::Result<()>) -> ExitCode {
        let mut all = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        all.push(report.clone());
        // Targets run at once and finish in any order; files list them by name.
        all.sort_by(|a, b| a.environment.target.cmp(&b.environment.target));
        let mut written = Vec::new();
        let mut broken = false;
        match json {
            Ok(()) => written.push(Written {
                kind: "report",
                place: json_path.display().to_string(),
            }),
            Err(e) => {
                eprintln!("mmapconf: cannot write report {}: {e}", json_path.display());
                broken = true;
            }
        }
        if self.ktap_to_stdout() {
            // Written once, whole, by `close`: a stream cannot be rewritten.
            written.push(Written {
                kind: "ktap",
                place: "- (standard output)".to_string(),
            });
        }
        let formats: [(&'static str, &Option<PathBuf>, &Render); 3] = [
            ("ktap", &self.args.ktap, &|| ktap::render_all(&all)),
            ("junit", &self.args.junit, &|| junit::render(&all)),
            ("kcidb", &self.args.kcidb, &|| {
                let doc = kcidb::render(&all, &self.kcidb);
                serde_json::to_string_pretty(&doc).expect("KCIDB serializes") + "\n"
            }),
        ];
        for (kind, path, render) in formats {
            let Some(path) = path.as_deref().filter(|p| !is_stdout(p)) else {
                continue;
            };
            match write_output(path, &render()) {
                Ok(place) => written.push(Written { kind, place }),
                Err(e) => {
                    eprintln!("mmapconf: cannot write {kind} {}: {e}", path.display());
                    broken = true;
                }
            }
        }
        let chosen = match self.baseline.as_ref().map(|b| b.for_report(report)) {
            Some(Err(e)) => {
                eprintln!("mmapconf: {e}");
                broken = true;
                None
            }
            Some(Ok(chosen)) => chosen,
            None => None,
        };
        let verdict = chosen.as_ref().map(|(b, _)| b.judge(report));
        let name = chosen.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
        let text = progress::summary(
            report,
            verdict.as_ref().map(|v| (name.as_str(), v)),
            &written,
        );
        self.console().line(text.trim_end());
        let good = match &verdict {
            Some(v) => v.ok(),
            None => report.summary.ok(),
        };
        if broken {
            ExitCode::from(2)
        } else if good {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    /// The end of the whole run: writes KTAP to standard output when asked
    /// (all targets in one document). Returns `code`, or 2 if that failed.
    pub fn close(&self, code: ExitCode) -> ExitCode {
        if !self.ktap_to_stdout() {
            return code;
        }
        let all = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if all.is_empty() {
            return code;
        }
        match write_output(Path::new("-"), &ktap::render_all(&all)) {
            Ok(_) => code,
            Err(e) => {
                eprintln!("mmapconf: cannot write ktap to standard output: {e}");
                ExitCode::from(2)
            }
        }
    }
}

/// Renders one format of the reports so far.
type Render<'a> = dyn Fn() -> String + 'a;

fn is_stdout(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Writes `text` to a file (making its directory) or to standard output for `-`.
fn write_output(path: &Path, text: &str) -> std::io::Result<String> {
    if is_stdout(path) {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        return Ok("- (standard output)".to_string());
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(path, text)?;
    Ok(path.display().to_string())
}

/// `mmapconf compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// JSON reports, one per target (kernel x filesystem).
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Also write the whole matrix as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Prints the cases whose outcome differs across the reports. Exit status
/// 0 when none differs, 1 when some do, 2 when a report cannot be read or
/// the page cannot be written (like diff(1)).
pub fn compare(args: CompareArgs) -> ExitCode {
    let mut loaded = Vec::new();
    for p in &args.reports {
        match report::read_json(p) {
            Ok(r) => loaded.push((source_name(p), r)),
            Err(e) => {
                eprintln!("mmapconf: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let matrix = Matrix::build(&loaded);
    print!("{}", report::compare::render_text(&matrix));
    let differ = matrix.differing().count();
    eprintln!(
        "{differ} of {} cases differ across {} reports",
        matrix.rows.len(),
        matrix.columns.len()
    );
    if let Some(path) = &args.html {
        match write_output(path, &html::render(&matrix)) {
            Ok(place) => eprintln!("html: {place}"),
            Err(e) => {
                eprintln!("mmapconf: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    if differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A report's name in column headers: its file name.
fn source_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// `mmapconf report-schema`.
pub fn print_report_schema() -> ExitCode {
    println!("{}", report::report_schema());
    ExitCode::SUCCESS
}
