//! Reports as JUnit XML, the shape fstests' xunit output and Jenkins'
//! JUnit plugin use: one `<testsuite>` per target (kernel + filesystem), the
//! environment as `<properties>`, one `<testcase>` per case with
//! `<failure>`, `<error>` or `<skipped>`; a failure's text is the failed
//! step with its expectation, observation and byte diff.
//!
//! A failure the baseline lists is `<skipped message="known failure: ...">`
//! with the failure's text inside and a `known_failure` property: Jenkins'
//! JUnit plugin and GitLab count skipped tests apart and neither turns the
//! build red for them, while a `<failure>` (even with a property beside it)
//! would be red in both. The classname is `mmapconf.<target>.<topic>`, so
//! Jenkins, GitLab and junit2html, which group by classname, keep the
//! targets of a multi-target run apart.

use super::{first_line, step_detail, CaseReport, Report, Status};
use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

/// The reports as one JUnit XML document.
pub fn render(reports: &[Report]) -> String {
    let mut doc = quick_junit::Report::new("mmapconf");
    let mut total = Duration::ZERO;
    for r in reports {
        doc.add_test_suite(suite(r));
        total += Duration::from_millis(r.summary.duration_ms);
    }
    doc.set_time(total);
    doc.to_string().expect("JUnit documents serialize")
}

fn suite(r: &Report) -> TestSuite {
    let e = &r.environment;
    let mut s = TestSuite::new(format!("mmapconf {}", r.target_label()));
    // fstests records its environment (FSTYP, MOUNT_OPTIONS, ...) the same way.
    for (name, value) in [
        ("kernel", e.kernel_release.as_str()),
        ("kernel_version", e.kernel_version.as_str()),
        ("arch", e.arch.as_str()),
        ("page_size", &e.page_size.to_string()),
        ("fs", e.fs_type.as_str()),
        ("mount_options", e.mount_options.as_str()),
        ("mount_point", e.mount_point.as_str()),
        ("mount_source", e.mount_source.as_str()),
        ("distro", e.distro.as_str()),
        ("harness_version", e.harness_version.as_str()),
        ("started_at", r.started_at.as_str()),
    ] {
        s.add_property(Property::new(name, value));
    }
    s.extra
        .insert("timestamp".into(), r.started_at.as_str().into());
    s.set_time(Duration::from_millis(r.summary.duration_ms));
    let target: String = CaseReport::target_of(r)
        .chars()
        .map(|c| if c == '.' { '_' } else { c })
        .collect();
    for c in &r.cases {
        s.add_test_case(case(c, &target));
    }
    s
}

fn case(c: &CaseReport, target: &str) -> TestCase {
    let reason = c.reason.as_deref().unwrap_or("");
    let status = match c.status {
        Status::Pass => TestCaseStatus::success(),
        Status::Fail | Status::Error if c.known.is_some() => {
            let mut st = TestCaseStatus::skipped();
            st.set_message(format!(
                "known failure: {}",
                first_line(c.known.as_deref().unwrap_or(""))
            ));
            st.set_type(format!("known {}", c.status.as_str()));
            st.set_description(failure_text(c));
            st
        }
        Status::Skip => {
            let mut st = TestCaseStatus::skipped();
            st.set_message(reason);
            st
        }
        Status::Fail | Status::Error => {
            let kind = if c.status == Status::Fail {
                NonSuccessKind::Failure
            } else {
                NonSuccessKind::Error
            };
            let mut st = TestCaseStatus::non_success(kind);
            st.set_message(first_line(reason));
            st.set_type(c.status.as_str());
            st.set_description(failure_text(c));
            st
        }
    };
    let mut t = TestCase::new(c.id.as_str(), status);
    // fstests writes classname="xfstests.<section>"; the target and topic play that part.
    t.set_classname(format!("mmapconf.{target}.{}", c.topic()));
    if let Some(known) = &c.known {
        t.add_property(Property::new("known_failure", known.as_str()));
    }
    t.set_time(Duration::from_millis(c.duration_ms));
    if c.is_failure() && !c.steps.is_empty() {
        t.set_system_out(step_log(c));
    }
    t
}

/// The body of a `<failure>`/`<error>`: the reason, then the failing step in full.
fn failure_text(c: &CaseReport) -> String {
    let mut out = c.reason.clone().unwrap_or_default();
    out.push('\n');
    if let Some(step) = c.failing_step() {
        out.push('\n');
        out.push_str(&step_detail(step));
    }
    out
}

/// Every step that ran, one line each, for `<system-out>`.
fn step_log(c: &CaseReport) -> String {
    c.steps
        .iter()
        .map(|s| format!("{:>5} {:<8} {}\n", s.index, s.status_str(), s.summary))
        .collect()
}
