//! The report of a run: what every case and step expected and observed.
//! Documented in specs/FORMAT.md; its schema is specs/report.schema.json.

pub mod baseline;
pub mod compare;
pub mod html;
pub mod junit;
pub mod kcidb;
pub mod kmsg_baseline;
pub mod ktap;
pub mod pages;

use crate::case::model::Expect;
use crate::exec::protocol::Observation;
use crate::target::Environment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the report format; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Version of this format, bumped when a field changes meaning.
    pub schema_version: u32,
    /// Where the run happened: kernel, architecture, filesystem.
    pub environment: Environment,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    /// Counts of cases by status.
    pub summary: Summary,
    /// One entry per case, in the order of case file paths; then one error
    /// entry per case file that did not load.
    pub cases: Vec<CaseReport>,
    /// The health checks of the run (kernel log, taint, fsck); absent with `--no-health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::target::health::RunHealth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Entries in `cases`.
    pub total: usize,
    /// Cases that passed.
    pub pass: usize,
    /// Cases that failed.
    pub fail: usize,
    /// Cases skipped (a requirement unmet).
    pub skip: usize,
    /// Cases the harness could not carry out.
    pub error: usize,
    /// Of the failed and errored cases, those the run's baseline lists
    /// (known failures, each with `known` set); 0 without a baseline.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub known: usize,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}

impl Summary {
    pub fn of(cases: &[CaseReport], duration_ms: u64) -> Summary {
        let count = |s: Status| cases.iter().filter(|c| c.status == s).count();
        Summary {
            total: cases.len(),
            pass: count(Status::Pass),
            fail: count(Status::Fail),
            skip: count(Status::Skip),
            error: count(Status::Error),
            known: cases.iter().filter(|c| c.is_known_failure()).count(),
            duration_ms,
        }
    }

    /// A run is good when nothing failed and nothing broke that its
    /// baseline does not list.
    pub fn ok(&self) -> bool {
        self.fail + self.error == self.known
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The outcome of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every expectation held.
    Pass,
    /// A step observed something other than expected.
    Fail,
    /// A requirement is unmet here; `reason` says which.
    Skip,
    /// The harness or the setup broke (or the case timed out); `reason` says how.
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CaseReport {
    /// Path under cases/ without .json.
    pub id: String,
    /// The case's title (empty for a file that did not load).
    pub title: String,
    pub status: Status,
    /// Wall time of the case (0 when skipped).
    pub duration_ms: u64,
    /// Why it was skipped or errored, or which step failed and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// 1-based number of the first step that failed or broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<usize>,
    /// The steps that ran, in order (none for a skipped case).
    pub steps: Vec<StepReport>,
    /// The case's scratch directory could not be removed afterwards: where
    /// it is and why (a filesystem that refuses unlink or rmdir, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leftover: Option<String>,
    /// An error because the case ran past its time limit.
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// A failure or error the run's baseline lists for this kernel and
    /// target: `FILE:LINE: reason`. Every output shows it as expected
    /// (KTAP XFAIL, JUnit skipped, KCIDB waived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<String>,
    /// What the kernel complained of while the case ran (a WARNING, an
    /// Oops, new taint flags ...), one line each; such a case fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_log: Vec<String>,
}

impl CaseReport {
    /// The report of a case that did not run: skipped, or broken before
    /// its first step, for `reason`.
    pub fn not_run(id: String, title: String, status: Status, reason: String) -> CaseReport {
        CaseReport {
            id,
            title,
            status,
            duration_ms: 0,
            reason: Some(reason),
            failed_step: None,
            steps: Vec::new(),
            leftover: None,
            timed_out: false,
            known: None,
            kernel_log: Vec::new(),
        }
    }
}

/// The verdict on one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// The observation met the expectation.
    Pass,
    /// It did not; `message` says how.
    Fail,
    /// Recorded without judging (`observe`).
    Observed,
    /// The harness could not perform the step.
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StepReport {
    /// 1-based position in the case ("3" or, inside `together`, "3.2").
    pub index: String,
    /// The process that did it; absent for the harness's own steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The operation, as written in `do`.
    pub op: String,
    /// The step in one readable line.
    pub summary: String,
    pub status: StepStatus,
    /// The expectation that applied (after variants); absent when observing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expect>,
    /// The `why` of the variant that replaced the default expectation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observation>,
    /// How expected and observed differ, with a hex diff for bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Microseconds from sending the step to its judgement.
    pub duration_us: u64,
}

/// Writes a report as pretty JSON, creating the parent directory; `-` is
/// standard output.
pub fn write_json(report: &Report, path: &std::path::Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).expect("reports serialize");
    if path.as_os_str() == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        return out.flush();
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(path, text + "\n")
}

/// Current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Reads a JSON report written by [`write_json`].
pub fn read_json(path: &std::path::Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a report: {e}", path.display()))
}

/// The report JSON Schema, as checked in at specs/report.schema.json.
pub fn report_schema() -> String {
    // Absent optional fields are left out, never null, so the schema says
    // so rather than allowing null.
    let settings = schemars::gen::SchemaSettings::draft07().with(|s| {
        s.option_nullable = false;
        s.option_add_null_type = false;
    });
    let schema = settings.into_generator().into_root_schema_for::<Report>();
    serde_json::to_string_pretty(&schema).expect("schema serializes")
}

impl Report {
    /// The target in a few words: "6.1.0-18-amd64 ext4".
    pub fn target_label(&self) -> String {
        format!(
            "{} {}",
            self.environment.kernel_release, self.environment.fs_type
        )
    }
}

impl CaseReport {
    /// The topic of a case: the first segment of its id ("shared" for "shared/x").
    pub fn topic(&self) -> &str {
        topic_of(&self.id)
    }

    /// The step that failed or broke, if one did.
    pub fn failing_step(&self) -> Option<&StepReport> {
        self.steps
            .iter()
            .find(|s| matches!(s.status, StepStatus::Fail | StepStatus::Error))
    }

    /// Whether the case did not hold here (failed or broke).
    pub fn is_failure(&self) -> bool {
        matches!(self.status, Status::Fail | Status::Error)
    }

    /// A failure or error the baseline expects.
    pub fn is_known_failure(&self) -> bool {
        self.is_failure() && self.known.is_some()
    }

    /// The target of a report in a word: its name (`--fs`/`--target`), else
    /// the filesystem type.
    pub fn target_of(report: &Report) -> &str {
        report
            .environment
            .target
            .as_deref()
            .unwrap_or(&report.environment.fs_type)
    }
}

/// The first segment of a case id; the id itself when it has no `/`.
pub fn topic_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

/// The first line of a text, for one-line renderings of multi-line reasons.
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// A step's full story in plain text: what it did, expected, observed, and
/// the difference (with the byte diff). Shared by the JUnit and HTML writers.
pub fn step_detail(step: &StepReport) -> String {
    let mut out = format!(
        "step {} [{}] {}\n",
        step.index,
        step.status_str(),
        step.summary
    );
    if let Some(e) = &step.expected {
        out.push_str(&format!(
            "  expected: {}\n",
            serde_json::to_string(e).unwrap_or_default()
        ));
    }
    if let Some(v) = &step.variant {
        out.push_str(&format!("  variant:  {v}\n"));
    }
    if let Some(o) = &step.observed {
        out.push_str(&format!(
            "  observed: {}\n",
            serde_json::to_string(o).unwrap_or_default()
        ));
    }
    if let Some(m) = &step.message {
        for line in m.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

impl StepReport {
    pub fn status_str(&self) -> &'static str {
        match self.status {
            StepStatus::Pass => "pass",
            StepStatus::Fail => "fail",
            StepStatus::Observed => "observed",
            StepStatus::Error => "error",
        }
    }
}

/// An observation in a few words: "ok", "EINVAL", "SIGBUS/BUS_ADRERR",
/// "ok, value 2000", "ok, bytes 48656c6c…".
pub fn brief(o: &Observation) -> String {
    use crate::exec::protocol::{ExitStatus, Outcome};
    let mut parts = vec![match &o.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Errno { errno } => errno.clone(),
        Outcome::Signal {
            signal, si_code, ..
        } => format!("{signal}/{si_code}"),
        Outcome::Error { message } => format!("harness error: {message}"),
    }];
    if let Some(v) = o.value {
        parts.push(format!("value {v}"));
    }
    if let Some(b) = &o.bytes {
        let hex: String = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
        let more = if b.len() > 16 { "…" } else { "" };
        parts.push(format!("{} bytes {hex}{more}", b.len()));
    }
    if let Some(st) = &o.stat {
        parts.push(format!(
            "size {} mtime {}.{:09}",
            st.size, st.mtime_sec, st.mtime_nsec
        ));
    }
    if let Some(pid) = o.pid {
        parts.push(format!("pid {pid}"));
    }
    match &o.exit {
        Some(ExitStatus::Exited(c)) => parts.push(format!("exited {c}")),
        Some(ExitStatus::Killed(s)) => parts.push(format!("killed by {s}")),
        None => {}
    }
    parts.join(", ")
}
