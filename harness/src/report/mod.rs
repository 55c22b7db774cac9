//! The report of a run: what every case and step expected and observed.
//! Documented in specs/FORMAT.md; its schema is specs/report.schema.json.

use crate::case::model::Expect;
use crate::exec::protocol::Observation;
use crate::target::Environment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the report format; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    pub schema_version: u32,
    pub environment: Environment,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    pub summary: Summary,
    pub cases: Vec<CaseReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub total: usize,
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub error: usize,
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
            duration_ms,
        }
    }

    /// A run is good when nothing failed and nothing broke.
    pub fn ok(&self) -> bool {
        self.fail == 0 && self.error == 0
    }
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
    pub title: String,
    pub status: Status,
    pub duration_ms: u64,
    /// Why it was skipped or errored, or which step failed and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// 1-based number of the first step that failed or broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<usize>,
    /// The steps that ran, in order (none for a skipped case).
    pub steps: Vec<StepReport>,
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
    #[schemars(with = "Option<serde_json::Value>")]
    pub observed: Option<Observation>,
    /// How expected and observed differ, with a hex diff for bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_us: u64,
}

/// Writes a report as pretty JSON, creating the parent directory.
pub fn write_json(report: &Report, path: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let text = serde_json::to_string_pretty(report).expect("reports serialize");
    std::fs::write(path, text + "\n")
}

/// Current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
