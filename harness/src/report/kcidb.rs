//! Reports as KCIDB I/O data, schema version 5.0 (KernelCI's common
//! reporting database; the schema ships in PyPI's `kcidb-io`).
//!
//! KCIDB hangs tests on a build, and builds on a checkout. mmapconf tests a
//! kernel that is already running and does not know where it came from, so
//! by default it describes that kernel itself: one checkout and one build per
//! kernel release and architecture, under the origin `mmapconf`. A CI system
//! that already submitted its own build sets `MMAPCONF_KCIDB_BUILD_ID` (and
//! usually `MMAPCONF_KCIDB_ORIGIN`): then only tests are written, pointing
//! at that build.
//!
//! A failure the baseline lists keeps its status (FAIL or ERROR) and is
//! linked to a KCIDB issue, the known defect, by an incident with `present:
//! true`: KCIDB 5 replaced the test's `waived` flag by exactly that (its
//! upgrade from v4 turns `waived: true` into an issue and an incident), and
//! dashboards show such failures as known rather than as new ones.

use super::{CaseReport, Report, Status};
use serde_json::{json, Map, Value};

pub const MAJOR: u32 = 5;
pub const MINOR: u32 = 0;
/// KCIDB caps `log_excerpt` at this many characters.
const EXCERPT_MAX: usize = 16384;

/// Who submits, and which build the tests belong to.
#[derive(Debug, Clone)]
pub struct Options {
    /// The submitting CI system: `[a-z0-9_]+`.
    pub origin: String,
    /// An existing build's id (`origin:...`); None: describe the running kernel.
    pub build_id: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            origin: "mmapconf".to_string(),
            build_id: None,
        }
    }
}

impl Options {
    /// From `MMAPCONF_KCIDB_ORIGIN` and `MMAPCONF_KCIDB_BUILD_ID`, checked
    /// against the patterns the schema imposes.
    pub fn from_env() -> Result<Options, String> {
        let mut o = Options::default();
        if let Ok(origin) = std::env::var("MMAPCONF_KCIDB_ORIGIN") {
            if origin.is_empty()
                || !origin
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(format!(
                    "MMAPCONF_KCIDB_ORIGIN={origin:?}: KCIDB origins are [a-z0-9_]+"
                ));
            }
            o.origin = origin;
        }
        if let Ok(id) = std::env::var("MMAPCONF_KCIDB_BUILD_ID") {
            let ok = id.split_once(':').is_some_and(|(o, _)| {
                !o.is_empty()
                    && o.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            }) && !id.contains('\0');
            if !ok {
                return Err(format!(
                    "MMAPCONF_KCIDB_BUILD_ID={id:?}: KCIDB build ids are ORIGIN:ID"
                ));
            }
            o.build_id = Some(id);
        }
        Ok(o)
    }
}

/// The reports as one KCIDB document.
pub fn render(reports: &[Report], opts: &Options) -> Value {
    let mut checkouts: Vec<Value> = Vec::new();
    let mut builds: Vec<Value> = Vec::new();
    let mut tests = Vec::new();
    let mut issues: Vec<Value> = Vec::new();
    let mut incidents = Vec::new();
    for r in reports {
        let build_id = match &opts.build_id {
            Some(id) => id.clone(),
            None => {
                let (checkout, build) = kernel_objects(r, &opts.origin);
                let id = build["id"].as_str().unwrap_or_default().to_string();
                if !checkouts.iter().any(|c| c["id"] == checkout["id"]) {
                    checkouts.push(checkout);
                }
                if !builds.iter().any(|b| b["id"] == build["id"]) {
                    builds.push(build);
                }
                id
            }
        };
        for c in &r.cases {
            let t = test(r, c, &build_id, &opts.origin);
            if let Some(known) = c.known.as_deref().filter(|_| c.is_known_failure()) {
                let (issue, incident) = known_defect(r, c, known, &t["id"], &opts.origin);
                if !issues.iter().any(|i| i["id"] == issue["id"]) {
                    issues.push(issue);
                }
                incidents.push(incident);
            }
            tests.push(t);
        }
    }
    let mut doc = Map::new();
    doc.insert("version".into(), json!({ "major": MAJOR, "minor": MINOR }));
    if !checkouts.is_empty() {
        doc.insert("checkouts".into(), Value::Array(checkouts));
    }
    if !builds.is_empty() {
        doc.insert("builds".into(), Value::Array(builds));
    }
    doc.insert("tests".into(), Value::Array(tests));
    if !issues.is_empty() {
        doc.insert("issues".into(), Value::Array(issues));
        doc.insert("incidents".into(), Value::Array(incidents));
    }
    Value::Object(doc)
}

/// A known failure as a KCIDB issue (the defect the baseline names, one per
/// case and target) and the incident that says this test shows it.
fn known_defect(
    r: &Report,
    c: &CaseReport,
    known: &str,
    test_id: &Value,
    origin: &str,
) -> (Value, Value) {
    let issue_id = format!("{origin}:known:{}:{}", CaseReport::target_of(r), c.id);
    let issue = json!({
        "id": text(&issue_id),
        "version": 1,
        "origin": origin,
        "comment": text(&format!("known failure of {} (baseline {known})", c.id)),
        // The baseline lists defects of the kernel or filesystem under test.
        "culprit": { "code": true, "tool": false, "harness": false },
    });
    let incident = json!({
        "id": text(&format!("{issue_id}:{}", test_id.as_str().unwrap_or_default())),
        "origin": origin,
        "issue_id": text(&issue_id),
        "issue_version": 1,
        "test_id": test_id,
        "present": true,
        "comment": text(known),
    });
    (issue, incident)
}

/// The running kernel as a KCIDB checkout and build.
fn kernel_objects(r: &Report, origin: &str) -> (Value, Value) {
    let e = &r.environment;
    let checkout_id = format!("{origin}:{}", e.kernel_release);
    let build_id = format!("{checkout_id}:{}", e.arch);
    let checkout = json!({
        "id": checkout_id,
        "origin": origin,
        "comment": text(&format!("Linux {} (running kernel; source unknown to mmapconf)", e.kernel_release)),
        "valid": true,
    });
    let build = json!({
        "id": build_id,
        "checkout_id": checkout_id,
        "origin": origin,
        "architecture": arch(&e.arch),
        "comment": text(&format!("{} {}", e.kernel_release, e.kernel_version)),
        // It booted and ran the tests, so as a build it passed.
        "status": "PASS",
        "misc": { "kernel_version": e.kernel_version },
    });
    (checkout, build)
}

fn test(r: &Report, c: &CaseReport, build_id: &str, origin: &str) -> Value {
    let e = &r.environment;
    let mut t = Map::new();
    // Unique per origin: the target and the run's start pin down one run.
    t.insert(
        "id".into(),
        json!(format!(
            "{origin}:{}:{}:{}:{}",
            e.kernel_release, e.fs_type, r.started_at, c.id
        )),
    );
    t.insert("build_id".into(), json!(build_id));
    t.insert("origin".into(), json!(origin));
    t.insert("path".into(), json!(path(&c.id)));
    t.insert("comment".into(), json!(text(&c.title)));
    t.insert("status".into(), json!(status(c.status)));
    t.insert("start_time".into(), json!(r.started_at));
    t.insert("duration".into(), json!(c.duration_ms as f64 / 1000.0));
    t.insert(
        "environment".into(),
        json!({
            "comment": text(&format!(
                "{} ({}) on {} from {}, {}, page size {}",
                e.fs_type, e.mount_options, e.mount_point, e.mount_source, e.distro, e.page_size
            )),
            "misc": {
                "fs_type": e.fs_type,
                "mount_options": e.mount_options,
                "mount_point": e.mount_point,
                "mount_source": e.mount_source,
                "page_size": e.page_size,
                "arch": e.arch,
                "distro": e.distro,
                "kernel_release": e.kernel_release,
                "euid": e.euid,
            },
        }),
    );
    if let Some(reason) = &c.reason {
        t.insert("log_excerpt".into(), json!(excerpt(reason)));
    }
    let mut misc = Map::new();
    misc.insert("case_id".into(), json!(c.id));
    misc.insert("harness_version".into(), json!(e.harness_version));
    if let Some(n) = c.failed_step {
        misc.insert("failed_step".into(), json!(n));
    }
    if let Some(known) = &c.known {
        misc.insert("known_failure".into(), json!(known));
    }
    t.insert("misc".into(), Value::Object(misc));
    Value::Object(t)
}

/// KCIDB statuses: FAIL and ERROR keep their meaning (the tested code is
/// faulty / the test could not complete); a requirement unmet is SKIP.
pub fn status(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skip => "SKIP",
        Status::Error => "ERROR",
    }
}

/// `mmapconf.<case id>` with the id's `/` as `.`; other characters the
/// schema's path pattern (`[a-zA-Z0-9_-]` between dots) refuses become `_`.
pub fn path(id: &str) -> String {
    let mut out = String::from("mmapconf");
    for part in id.split('/') {
        out.push('.');
        if part.is_empty() {
            out.push('_');
        }
        out.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        }));
    }
    out
}

/// `uname -m` as a KCIDB architecture (`[a-z0-9_]*`).
fn arch(a: &str) -> String {
    a.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Strings in KCIDB must not hold NUL.
fn text(s: &str) -> String {
    s.replace('\0', " ")
}

fn excerpt(s: &str) -> String {
    text(s).chars().take(EXCERPT_MAX).collect()
}
