//! The command line of reports: `run`'s extra formats and baseline, the end
//! of a run, and `compare`.

use super::progress::{self, Console, Written};
use crate::report::{self, baseline::Baseline, compare::Matrix, html, junit, kcidb, ktap, Report};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

/// `run`'s options for what to write besides the JSON report. Each writer
/// takes `-` for standard output (one of them at most); the person's view
/// (progress, summary) then goes to standard error.
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Also write the run as KTAP version 1 to FILE (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub ktap: Option<PathBuf>,
    /// Write `--ktap` as TAP version 13, flat, as kselftest prints it (for
    /// kselftest-style runners and TAP 13 consumers).
    #[arg(long, requires = "ktap")]
    pub tap13: bool,
    /// Also write the run as JUnit XML, one testsuite per target (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write the run as KCIDB v5 JSON (`-`: standard output; origin
    /// from MMAPCONF_KCIDB_ORIGIN, an existing build from MMAPCONF_KCIDB_BUILD_ID).
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// Known failures (reports/baselines/): exit non-zero only for failures
    /// they do not list; every output shows the listed ones as expected. A
    /// file applies to every target unless its `when:` header says
    /// otherwise. A directory: for each target, the file named
    /// `<major>.<minor>-<target>.txt` (the target name, or the filesystem
    /// type for `--dir`) if it has no `when:` header, and every file whose
    /// `when:` header matches the target.
    #[arg(long, value_name = "FILE|DIR")]
    pub baseline: Option<PathBuf>,
}

/// Where known failures come from: one file for the run, or the files of a
/// directory (file name, path shown, baseline), all read before any case runs.
enum Baselines {
    One(Baseline, String),
    Dir(Vec<(String, String, Baseline)>),
}

impl Baselines {
    fn load(path: &Path) -> Result<Baselines, String> {
        if !path.is_dir() {
            let b = Baseline::load(path).map_err(|e| e.join("\n"))?;
            return Ok(Baselines::One(b, path.display().to_string()));
        }
        let mut paths: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "txt") && p.is_file())
            .collect();
        paths.sort();
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for p in paths {
            match Baseline::load(&p) {
                Ok(b) => files.push((
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    p.display().to_string(),
                    b,
                )),
                Err(e) => problems.extend(e),
            }
        }
        if problems.is_empty() {
            Ok(Baselines::Dir(files))
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The baseline that applies to `report`, with its name; None when
    /// no file applies (every failure is new).
    fn for_report(&self, report: &Report) -> Option<(Baseline, String)> {
        let env = &report.environment;
        match self {
            Baselines::One(b, name) => b.applies_to(env).then(|| (b.clone(), name.clone())),
            Baselines::Dir(files) => {
                let own = baseline_file_name(report);
                let chosen: Vec<&(String, String, Baseline)> = files
                    .iter()
                    .filter(|(file, _, b)| match &b.when {
                        Some(_) => b.applies_to(env),
                        None => *file == own,
                    })
                    .collect();
                let names: Vec<&str> = chosen.iter().map(|(_, shown, _)| shown.as_str()).collect();
                let merged = Baseline::merged(chosen.iter().map(|(_, _, b)| b.clone()).collect());
                (!chosen.is_empty()).then(|| (merged, names.join(", ")))
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

/// The writers of a run, by the option that names each.
const WRITERS: [&str; 4] = ["--report", "--ktap", "--junit", "--kcidb"];

/// What `run` checked before running anything (a bad baseline or KCIDB
/// setting should stop the run at once, not after every case ran), and the
/// reports of the targets run so far.
pub struct Prepared {
    args: OutputArgs,
    /// Which writer has standard output (an index into WRITERS).
    stdout: Option<usize>,
    baseline: Option<Baselines>,
    kcidb: kcidb::Options,
    reports: Mutex<Vec<Report>>,
    /// The progress bars of the run, one per target, drawn together.
    pub bars: indicatif::MultiProgress,
}

impl Prepared {
    /// `report` is `run --report`'s path.
    pub fn new(args: &OutputArgs, report: Option<&Path>) -> Result<Prepared, String> {
        let paths = [
            report,
            args.ktap.as_deref(),
            args.junit.as_deref(),
            args.kcidb.as_deref(),
        ];
        let to_stdout: Vec<usize> = (0..WRITERS.len())
            .filter(|&i| paths[i].is_some_and(is_stdout))
            .collect();
        if let [first, second, ..] = to_stdout[..] {
            return Err(format!(
                "{} - and {} - both ask for standard output; one output at most can have it",
                WRITERS[first], WRITERS[second]
            ));
        }
        let baseline = args.baseline.as_deref().map(Baselines::load).transpose()?;
        let kcidb = if args.kcidb.is_some() {
            kcidb::Options::from_env()?
        } else {
            kcidb::Options::default()
        };
        let stdout = to_stdout.first().copied();
        let bars = indicatif::MultiProgress::with_draw_target(if stdout.is_some() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::stdout()
        });
        Ok(Prepared {
            args: args.clone(),
            stdout,
            baseline,
            kcidb,
            reports: Mutex::new(Vec::new()),
            bars,
        })
    }

    /// Whether the JSON report goes to standard output.
    pub fn report_to_stdout(&self) -> bool {
        self.stdout == Some(0)
    }

    /// Human output moves to standard error when a writer has standard output.
    pub fn console(&self) -> Console {
        Console {
            stderr: self.stdout.is_some(),
        }
    }

    /// The KTAP or TAP 13 protocol `--ktap` writes.
    fn ktap_version(&self) -> ktap::Version {
        if self.args.tap13 {
            ktap::Version::Tap13
        } else {
            ktap::Version::Ktap1
        }
    }

    /// Renders the writer `WRITERS[i]` for every report so far.
    fn render(&self, i: usize, all: &[Report]) -> String {
        match i {
            0 => all
                .iter()
                .map(|r| serde_json::to_string_pretty(r).expect("reports serialize") + "\n")
                .collect(),
            1 => ktap::render_all(all, self.ktap_version()),
            2 => junit::render(all),
            _ => {
                let doc = kcidb::render(all, &self.kcidb);
                serde_json::to_string_pretty(&doc).expect("KCIDB serializes") + "\n"
            }
        }
    }

    /// The end of one target's run: marks the failures its baseline knows,
    /// writes its JSON report to `json_path` and the other formats' files
    /// for every target so far (a later target rewrites them with its own
    /// added, so each file holds one run), prints the summary, and decides
    /// the target's exit status: 2 if an output could not be written; else
    /// 1 for a failure no baseline lists.
    pub fn finish(&self, mut report: Report, json_path: &Path, tag: Option<&str>) -> ExitCode {
        let mut broken = false;
        let chosen = self.baseline.as_ref().and_then(|b| b.for_report(&report));
        if let Some((b, name)) = &chosen {
            b.mark(&mut report, name);
        } else if let Some(Baselines::One(_, name)) = &self.baseline {
            self.console().line(&progress::tagged(
                tag,
                &format!(
                    "baseline {name}: its when: does not match this target; every failure is new"
                ),
            ));
        }
        let mut written = Vec::new();
        if self.report_to_stdout() {
            written.push(Written {
                kind: "report",
                place: "- (standard output)".to_string(),
            });
        } else {
            match report::write_json(&report, json_path) {
                Ok(()) => written.push(Written {
                    kind: "report",
                    place: json_path.display().to_string(),
                }),
                Err(e) => {
                    eprintln!("mmapconf: cannot write report {}: {e}", json_path.display());
                    broken = true;
                }
            }
        }
        let mut all = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        all.push(report.clone());
        // Targets run at once and finish in any order; files list them by name.
        all.sort_by(|a, b| a.environment.target.cmp(&b.environment.target));
        let paths = [
            None,
            self.args.ktap.as_deref(),
            self.args.junit.as_deref(),
            self.args.kcidb.as_deref(),
        ];
        for (i, path) in paths.into_iter().enumerate() {
            let kind = &WRITERS[i][2..];
            if self.stdout == Some(i) {
                // Written once, whole, by `close`: a stream cannot be rewritten.
                written.push(Written {
                    kind,
                    place: "- (standard output)".to_string(),
                });
                continue;
            }
            let Some(path) = path else { continue };
            match write_output(path, &self.render(i, &all)) {
                Ok(place) => written.push(Written { kind, place }),
                Err(e) => {
                    eprintln!("mmapconf: cannot write {kind} {}: {e}", path.display());
                    broken = true;
                }
            }
        }
        drop(all);
        let verdict = chosen.as_ref().map(|(b, _)| b.judge(&report));
        let name = chosen.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
        let text = progress::summary(
            &report,
            verdict.as_ref().map(|v| (name.as_str(), v)),
            &written,
        );
        for line in text.lines() {
            self.console().line(&progress::tagged(tag, line));
        }
        if broken {
            ExitCode::from(2)
        } else if report.summary.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    /// The end of the whole run: the combined summary of several targets,
    /// and the one output that has standard output, written whole. Returns
    /// `code`, or 2 if that failed.
    pub fn close(&self, code: ExitCode) -> ExitCode {
        let all = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() > 1 {
            self.console().line(progress::combined(&all).trim_end());
        }
        let Some(i) = self.stdout else { return code };
        if all.is_empty() {
            return code;
        }
        match write_output(Path::new("-"), &self.render(i, &all)) {
            Ok(_) => code,
            Err(e) => {
                eprintln!(
                    "mmapconf: cannot write {} to standard output: {e}",
                    &WRITERS[i][2..]
                );
                ExitCode::from(2)
            }
        }
    }
}

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
    /// Also write the whole matrix as one self-contained HTML page (`-`:
    /// standard output; the text table then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Prints the cases whose outcome differs across the reports, and those a
/// report lacks. Exit status 0 when no outcome differs (a case only absent
/// from a report is counted apart, not a difference), 1 when some do, 2
/// when a report cannot be read or the page cannot be written (like diff(1)).
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
    let table = report::compare::render_text(&matrix);
    if args.html.as_deref().is_some_and(is_stdout) {
        // The page has standard output; the table goes with the other messages.
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let differ = matrix.differing().count();
    let absent = matrix.absent().count();
    eprintln!(
        "{differ} of {} cases differ across {} reports{}",
        matrix.rows.len(),
        matrix.columns.len(),
        if absent > 0 {
            format!("; {absent} absent from some report (-)")
        } else {
            String::new()
        }
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
