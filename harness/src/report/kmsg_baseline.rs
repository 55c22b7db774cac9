//! Known kernel complaints in a baseline: a line `kmsg: <regex> # reason`
//! says a message this kernel is known to log (a WARNING fixed in a later
//! release, say) does not make a new failure. A case that failed only
//! because the kernel complained (every step passed) and whose every
//! complaint matches such a line counts as a known failure of the baseline.

use super::baseline::Entry;
use super::{CaseReport, StepStatus};

/// One `kmsg:` line of a baseline.
#[derive(Debug, Clone)]
pub struct KmsgEntry {
    pub pattern: regex::Regex,
    /// The line as an entry: `id` is `kmsg: <regex>`, for messages.
    pub entry: Entry,
}

/// Parses the text after `kmsg:` on line `line` of baseline `name`. The
/// reason follows ` #` (a `#` inside the regex needs no space before it).
pub fn parse(rest: &str, line: usize, name: &str) -> Result<KmsgEntry, String> {
    let (pattern, reason) = match rest.split_once(" #") {
        Some((p, r)) => (p.trim(), r.trim()),
        None => (rest.trim(), ""),
    };
    if pattern.is_empty() {
        return Err(format!(
            "{name}:{line}: `kmsg:` needs a regular expression, then optionally `# reason`"
        ));
    }
    let re = regex::Regex::new(pattern)
        .map_err(|e| format!("{name}:{line}: kmsg: bad regular expression: {e}"))?;
    Ok(KmsgEntry {
        pattern: re,
        entry: Entry {
            id: format!("kmsg: {pattern}"),
            reason: reason.to_string(),
            line,
        },
    })
}

/// The entry that makes a failed case known: the case failed only for
/// the kernel's complaints, and `entries` match every one; the entry of
/// the first complaint is returned.
pub fn known<'a>(entries: &'a [KmsgEntry], case: &CaseReport) -> Option<&'a Entry> {
    let only_the_kernel = !case.kernel_log.is_empty()
        && case.failed_step.is_none()
        && case
            .steps
            .iter()
            .all(|s| s.status != StepStatus::Fail && s.status != StepStatus::Error);
    if !only_the_kernel {
        return None;
    }
    let matching = |line: &String| entries.iter().find(|e| e.pattern.is_match(line));
    let first = matching(&case.kernel_log[0])?;
    case.kernel_log
        .iter()
        .all(|l| matching(l).is_some())
        .then_some(&first.entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn failed_by_kernel(lines: &[&str]) -> CaseReport {
        let mut c = CaseReport::not_run("a/b".into(), "t".into(), Status::Pass, String::new());
        crate::target::health::judge(&mut c, lines.iter().map(|s| s.to_string()).collect());
        c
    }

    #[test]
    fn lines_parse_with_reasons_and_bad_regexes_are_named() {
        let e = parse(
            " WARNING: .* at mm/gup\\.c # fixed in 6.19 (commit abc)",
            3,
            "b.txt",
        )
        .unwrap();
        assert_eq!(e.entry.id, "kmsg: WARNING: .* at mm/gup\\.c");
        assert_eq!(e.entry.reason, "fixed in 6.19 (commit abc)");
        assert_eq!(e.entry.line, 3);
        assert!(parse(" x(", 7, "b.txt")
            .unwrap_err()
            .starts_with("b.txt:7: kmsg: bad regular expression"));
        assert!(parse("  # why", 8, "b.txt")
            .unwrap_err()
            .starts_with("b.txt:8: `kmsg:` needs"));
    }

    #[test]
    fn a_case_failed_only_by_known_messages_is_known() {
        let entries = vec![parse(" at mm/gup\\.c # known", 1, "b").unwrap()];
        let known_one = failed_by_kernel(&["WARNING: [ 1.0] WARNING: CPU: 0 at mm/gup.c:9 f"]);
        assert_eq!(known(&entries, &known_one).unwrap().reason, "known");
        let other = failed_by_kernel(&[
            "WARNING: [ 1.0] WARNING: CPU: 0 at mm/gup.c:9 f",
            "BUG: [ 2.0] BUG: KASAN: use-after-free",
        ]);
        assert!(known(&entries, &other).is_none());
        let mut also_a_step = known_one.clone();
        also_a_step.failed_step = Some(2);
        assert!(known(&entries, &also_a_step).is_none());
        let plain = CaseReport::not_run("a/c".into(), "t".into(), Status::Fail, "x".into());
        assert!(known(&entries, &plain).is_none());
    }

    #[test]
    fn a_baseline_judges_kernel_complaints_by_its_kmsg_lines() {
        let b = crate::report::baseline::Baseline::parse(
            "# 6.18 ext4\nkmsg: mm/gup\\.c:9 # fixed in 6.19\nother/case # reason\n",
            "b.txt",
        )
        .unwrap();
        assert_eq!(b.entries.len(), 1);
        assert_eq!(b.kmsg.len(), 1);
        let report = crate::report::Report {
            schema_version: crate::report::SCHEMA_VERSION,
            environment: crate::target::Environment::probe(std::path::Path::new("/")),
            started_at: String::new(),
            summary: Default::default(),
            cases: vec![
                failed_by_kernel(&["WARNING: [ 1.0] WARNING: at mm/gup.c:9 f"]),
                failed_by_kernel(&["WARNING: [ 1.0] WARNING: at mm/memory.c:1 f"]),
            ],
            health: None,
        };
        let v = b.judge(&report);
        assert_eq!(v.known_failures.len(), 1);
        assert_eq!(v.known_failures[0].1.id, "kmsg: mm/gup\\.c:9");
        assert_eq!(v.new_failures.len(), 1);
        let bad = crate::report::baseline::Baseline::parse("kmsg: [\n", "c.txt").unwrap_err();
        assert!(
            bad[0].starts_with("c.txt:1: kmsg: bad regular expression"),
            "{bad:?}"
        );
    }
}
