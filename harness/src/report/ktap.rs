//! The report as KTAP version 1 (Documentation/dev-tools/ktap.rst in the
//! kernel tree), the format kselftest and KUnit print, so kernel CI parsers
//! that already read selftest output read ours.
//!
//! One result line per case, numbered in report order. A case that failed or
//! broke also carries its steps as a nested KTAP document (indented two
//! spaces, as ktap.rst says), so a parser sees which step went wrong; passing
//! cases do not, since a hundred `ok` lines per case would only bury the
//! failures. Reasons and byte diffs become `# ` diagnostic lines placed
//! directly before the result line they explain.
//!
//! A run over several targets is one document with a test per target, its
//! cases nested one level in.

use super::{brief, first_line, CaseReport, Report, Status, StepReport, StepStatus};

/// The whole report as KTAP text, ending with a newline.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    document(&mut out, "", report);
    out
}

/// Several reports (one per target) as one document: each target is a
/// test whose subtests are its cases. One report renders as [`render`].
pub fn render_all(reports: &[Report]) -> String {
    if let [one] = reports {
        return render(one);
    }
    let mut out = String::new();
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
    out
}

/// One report's cases as a KTAP document indented by `pad`.
fn document(out: &mut String, pad: &str, report: &Report) {
    out.push_str(&format!("{pad}KTAP version 1\n"));
    out.push_str(&format!("{pad}1..{}\n", report.cases.len()));
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
    for (i, case) in report.cases.iter().enumerate() {
        render_case(out, pad, i + 1, case);
    }
    let s = &report.summary;
    // The totals line kselftest prints, which its tooling greps for.
    diag(
        out,
        pad,
        &format!(
            "Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
            s.pass, s.fail, s.skip, s.error
        ),
    );
}

fn render_case(out: &mut String, pad: &str, n: usize, case: &CaseReport) {
    let name = description(&case.id);
    let reason = case.reason.as_deref().unwrap_or("");
    match case.status {
        Status::Pass => out.push_str(&format!("{pad}ok {n} {name}\n")),
        Status::Skip => {
            // Only the first line fits after the directive; the rest (rare) goes before.
            diag_lines(out, pad, reason.lines().skip(1));
            out.push_str(&format!("{pad}ok {n} {name} # SKIP {}\n", one_line(reason)));
        }
        Status::Fail | Status::Error => {
            if !case.steps.is_empty() {
                render_steps(out, &format!("{pad}  "), &case.steps);
            }
            let directive = if case.status == Status::Error {
                format!(" # ERROR {}", one_line(reason))
            } else {
                String::new()
            };
            diag_lines(out, pad, reason.lines());
            out.push_str(&format!("{pad}not ok {n} {name}{directive}\n"));
        }
    }
}

/// The steps of a case as a nested KTAP document, indented by `pad`.
fn render_steps(out: &mut String, pad: &str, steps: &[StepReport]) {
    out.push_str(&format!("{pad}KTAP version 1\n"));
    out.push_str(&format!("{pad}1..{}\n", steps.len()));
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let name = description(&format!(
            "step {} {} {}",
            step.index,
            step.process.as_deref().unwrap_or("harness"),
            step.op
        ));
        match step.status {
            StepStatus::Pass => out.push_str(&format!("{pad}ok {n} {name}\n")),
            StepStatus::Observed => {
                // Diagnostic data without a directive: recorded, not judged.
                let seen = step.observed.as_ref().map(brief).unwrap_or_default();
                out.push_str(&format!("{pad}ok {n} {name} # observed {}\n", clean(&seen)));
            }
            StepStatus::Fail | StepStatus::Error => {
                diag(out, pad, &step.summary);
                diag_lines(out, pad, step.message.as_deref().unwrap_or("").lines());
                let directive = if step.status == StepStatus::Error {
                    format!(
                        " # ERROR {}",
                        one_line(step.message.as_deref().unwrap_or(""))
                    )
                } else {
                    String::new()
                };
                out.push_str(&format!("{pad}not ok {n} {name}{directive}\n"));
            }
        }
    }
}

fn diag(out: &mut String, pad: &str, text: &str) {
    diag_lines(out, pad, text.lines());
}

fn diag_lines<'a>(out: &mut String, pad: &str, lines: impl Iterator<Item = &'a str>) {
    for line in lines {
        let line = clean(line);
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
