//! The report as KTAP version 1 (Documentation/dev-tools/ktap.rst in the
//! kernel tree), the format KUnit prints and kunit_tool parses, or as TAP
//! version 13, what kselftest prints and its runners (and TAP 13 consumers
//! such as tappy) read.
//!
//! One result line per case, numbered in report order, and nothing else
//! that a parser counts: kunit_parser.py counts the leaves of the test tree,
//! so steps as a nested block would be counted as tests, and a case's
//! counted status would be its steps' rather than its own. A case's status
//! is its own line's:
//! - pass: `ok N id`;
//! - skip: `ok N id # SKIP reason`;
//! - fail: `not ok N id`, its failing step and diff as `# ` lines before it;
//! - error: `not ok N id # ERROR step K (...): why`, or `# TIMEOUT` when the
//!   time limit ended it (ktap.rst's directive for that);
//! - a failure or error the baseline lists: `ok N id # XFAIL why` in KTAP
//!   (kselftest's way, `ksft_test_result_xfail`: counted as passed, not
//!   red), `not ok N id # TODO known failure: why` in TAP 13 (TAP's
//!   expected failure).
//!
//! Steps are `# ` diagnostic lines before the result line of a case that
//! failed or broke: one line each, the failing one with its message.
//!
//! A KTAP run over several targets is one document with a test per target,
//! its cases nested one level in; the target's line is `ok` when none of
//! its failures is new. TAP 13 has no nesting kselftest runners read, so
//! there every case is one flat line named `<target>:<id>`.

use super::{brief, first_line, CaseReport, Report, Status, StepStatus};

/// Which protocol to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// `KTAP version 1`, nested per target.
    #[default]
    Ktap1,
    /// `TAP version 13`, flat, as kselftest prints it.
    Tap13,
}

/// The whole report as KTAP text, ending with a newline.
pub fn render(report: &Report) -> String {
    render_all(std::slice::from_ref(report), Version::Ktap1)
}

/// Several reports (one per target) as one document.
pub fn render_all(reports: &[Report], version: Version) -> String {
    let mut out = String::new();
    match (version, reports) {
        (Version::Tap13, _) => {
            out.push_str("TAP version 13\n");
            let total: usize = reports.iter().map(|r| r.cases.len()).sum();
            out.push_str(&format!("1..{total}\n"));
            let mut n = 0;
            for r in reports {
                environment(&mut out, "", r);
                let prefix = if reports.len() > 1 {
                    format!("{}:", CaseReport::target_of(r))
                } else {
                    String::new()
                };
                for case in &r.cases {
                    n += 1;
                    render_case(
                        &mut out,
                        "",
                        n,
                        &format!("{prefix}{}", case.id),
                        case,
                        version,
                    );
                }
                totals(&mut out, "", r);
            }
        }
        (Version::Ktap1, [one]) => document(&mut out, "", one),
        (Version::Ktap1, _) => {
            out.push_str("KTAP version 1\n");
            out.push_str(&format!("1..{}\n", reports.len()));
            for (i, r) in reports.iter().enumerate() {
                document(&mut out, "  ", r);
                let result = if r.summary.ok() { "ok" } else { "not ok" };
                out.push_str(&format!(
                    "{result} {} {}\n",
                    i + 1,
                    description(&format!("mmapconf {}", r.target_label()))
                ));
            }
        }
    }
    out
}

/// One report's cases as a KTAP document indented by `pad`.
fn document(out: &mut String, pad: &str, report: &Report) {
    out.push_str(&format!("{pad}KTAP version 1\n"));
    out.push_str(&format!("{pad}1..{}\n", report.cases.len()));
    environment(out, pad, report);
    for (i, case) in report.cases.iter().enumerate() {
        render_case(out, pad, i + 1, &case.id, case, Version::Ktap1);
    }
    totals(out, pad, report);
}

fn environment(out: &mut String, pad: &str, report: &Report) {
    let e = &report.environment;
    diag(
        out,
        pad,
        &format!(
            "mmapconf {}: kernel {} {}, {} ({}) on {}, page size {}",
            e.harness_version,
            e.kernel_release,
            e.arch,
            e.fs_type,
            e.mount_options,
            e.mount_point,
            e.page_size
        ),
    );
}

/// The totals line kselftest prints, which its tooling greps for: known
/// failures are its xfail, and fail and error count only new ones.
fn totals(out: &mut String, pad: &str, report: &Report) {
    let known = |s: Status| {
        report
            .cases
            .iter()
            .filter(|c| c.status == s && c.is_known_failure())
            .count()
    };
    let s = &report.summary;
    diag(
        out,
        pad,
        &format!(
            "Totals: pass:{} fail:{} xfail:{} xpass:0 skip:{} error:{}",
            s.pass,
            s.fail - known(Status::Fail),
            s.known,
            s.skip,
            s.error - known(Status::Error)
        ),
    );
}

fn render_case(out: &mut String, pad: &str, n: usize, name: &str, case: &CaseReport, v: Version) {
    let name = description(name);
    let reason = case.reason.as_deref().unwrap_or("");
    match case.status {
        Status::Pass => out.push_str(&format!("{pad}ok {n} {name}\n")),
        Status::Skip => {
            // Only the first line fits after the directive; the rest (rare) goes before.
            diag_lines(out, pad, reason.lines().skip(1));
            out.push_str(&format!("{pad}ok {n} {name} # SKIP {}\n", one_line(reason)));
        }
        Status::Fail | Status::Error => {
            steps(out, pad, case);
            diag_lines(out, pad, reason.lines());
            let line = match (&case.known, v) {
                (Some(known), Version::Ktap1) => {
                    format!("ok {n} {name} # XFAIL {}", one_line(known))
                }
                (Some(known), Version::Tap13) => {
                    format!(
                        "not ok {n} {name} # TODO known failure: {}",
                        one_line(known)
                    )
                }
                (None, _) if case.status == Status::Fail => format!("not ok {n} {name}"),
                (None, _) if case.timed_out => {
                    format!("not ok {n} {name} # TIMEOUT {}", one_line(reason))
                }
                (None, _) => format!("not ok {n} {name} # ERROR {}", one_line(reason)),
            };
            out.push_str(&format!("{pad}{line}\n"));
        }
    }
}

/// The steps of a case that failed or broke, one diagnostic line each; the
/// one that failed or broke with its message below it.
fn steps(out: &mut String, pad: &str, case: &CaseReport) {
    for step in &case.steps {
        let who = step.process.as_deref().unwrap_or("harness");
        let line = match step.status {
            StepStatus::Pass => format!("step {} {who} {}: ok", step.index, step.op),
            StepStatus::Observed => format!(
                "step {} {who} {}: observed {}",
                step.index,
                step.op,
                step.observed.as_ref().map(brief).unwrap_or_default()
            ),
            StepStatus::Fail | StepStatus::Error => {
                format!(
                    "step {} {who} {}: {}",
                    step.index,
                    step.op,
                    step.status_str()
                )
            }
        };
        diag(out, pad, &line);
        if matches!(step.status, StepStatus::Fail | StepStatus::Error) {
            diag(out, pad, &format!("  {}", step.summary));
            if let Some(m) = &step.message {
                diag_lines(out, pad, m.lines());
            }
        }
    }
}

fn diag(out: &mut String, pad: &str, text: &str) {
    diag_lines(out, pad, text.lines());
}

fn diag_lines<'a>(out: &mut String, pad: &str, lines: impl Iterator<Item = &'a str>) {
    for line in lines {
        let mut line = clean(line);
        // kunit_parser takes `# Subtest: x` for the header of a nested test.
        if line.trim_start().starts_with("Subtest:") {
            line.insert(0, ' ');
        }
        if !line.trim().is_empty() {
            out.push_str(&format!("{pad}# {line}\n"));
        }
    }
}

/// A test description: ktap.rst allows any words but not `#`, and it must
/// stay on one line.
fn description(text: &str) -> String {
    clean(text).replace('#', "_")
}

/// The first line of a text, cleaned, for diagnostic data after a directive.
fn one_line(text: &str) -> String {
    clean(first_line(text))
}

/// Control characters would break the line structure or a terminal.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}
