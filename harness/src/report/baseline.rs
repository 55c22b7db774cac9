//! Baselines: the cases known not to pass on one kernel + filesystem, with
//! the reason, like fstests' expunge lists. A run judged against a baseline
//! fails only for failures the baseline does not know.
//!
//! The format (documented in reports/README.md): one case id a line,
//! optionally followed by `# reason`; blank lines and lines starting with
//! `#` are comments.
//!
//! ```text
//! # Linux 6.1, ext4
//! msync/async-returns-at-once    # ext4 starts write-back on MS_ASYNC (commit ...)
//! ```

use super::{CaseReport, Report, Status};
use std::collections::BTreeMap;
use std::path::Path;

/// One known failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// The text after `#`, empty when none was given.
    pub reason: String,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub entries: Vec<Entry>,
    /// Known kernel complaints, `kmsg: <regex> # reason` (see kmsg_baseline).
    pub kmsg: Vec<super::kmsg_baseline::KmsgEntry>,
}

impl Baseline {
    /// Parses baseline text; every malformed line is reported as
    /// `NAME:LINE: message`.
    pub fn parse(text: &str, name: &str) -> Result<Baseline, Vec<String>> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut kmsg = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("kmsg:") {
                match super::kmsg_baseline::parse(rest, line, name) {
                    Ok(k) => kmsg.push(k),
                    Err(e) => problems.push(e),
                }
                continue;
            }
            let (id, reason) = match trimmed.split_once('#') {
                Some((id, reason)) => (id.trim(), reason.trim()),
                None => (trimmed, ""),
            };
            if id.split_whitespace().count() != 1 {
                problems.push(format!(
                    "{name}:{line}: expected one case id, then optionally `# reason`; got {id:?}"
                ));
                continue;
            }
            if let Some(first) = seen.insert(id.to_string(), line) {
                problems.push(format!(
                    "{name}:{line}: {id} is listed twice (first on line {first})"
                ));
                continue;
            }
            entries.push(Entry {
                id: id.to_string(),
                reason: reason.to_string(),
                line,
            });
        }
        if problems.is_empty() {
            Ok(Baseline { entries, kmsg })
        } else {
            Err(problems)
        }
    }

    pub fn load(path: &Path) -> Result<Baseline, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Baseline::parse(&text, &path.display().to_string())
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Judges a run against the baseline.
    pub fn judge<'a>(&'a self, report: &'a Report) -> Verdict<'a> {
        let mut v = Verdict::default();
        for c in &report.cases {
            match (c.is_failure(), self.get(&c.id)) {
                (true, None) => match super::kmsg_baseline::known(&self.kmsg, c) {
                    Some(e) => v.known_failures.push((c, e)),
                    None => v.new_failures.push(c),
                },
                (true, Some(e)) => v.known_failures.push((c, e)),
                (false, Some(e)) if c.status == Status::Pass => v.now_passing.push(e),
                _ => {}
            }
        }
        v
    }
}

/// What a run looks like against a baseline.
#[derive(Debug, Default)]
pub struct Verdict<'a> {
    /// Failed or broke, and the baseline does not list it: a regression.
    pub new_failures: Vec<&'a CaseReport>,
    /// Failed or broke, as the baseline expects.
    pub known_failures: Vec<(&'a CaseReport, &'a Entry)>,
    /// Listed in the baseline but passed: the entry can go.
    pub now_passing: Vec<&'a Entry>,
}

impl Verdict<'_> {
    /// Good when nothing failed that the baseline does not know.
    pub fn ok(&self) -> bool {
        self.new_failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_reasons_and_comments() {
        let b = Baseline::parse(
            "# header\n\nshared/a   # ext4 differs\nfork/b\n  msync/c#tight\n",
            "b.txt",
        )
        .unwrap();
        let ids: Vec<(&str, &str, usize)> = b
            .entries
            .iter()
            .map(|e| (e.id.as_str(), e.reason.as_str(), e.line))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("shared/a", "ext4 differs", 3),
                ("fork/b", "", 4),
                ("msync/c", "tight", 5)
            ]
        );
    }

    #[test]
    fn rejects_two_words_and_duplicates_with_positions() {
        let err = Baseline::parse("a b # why\nc\nc\n", "x.txt").unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].starts_with("x.txt:1: expected one case id"),
            "{err:?}"
        );
        assert!(err[1].starts_with("x.txt:3: c is listed twice (first on line 2)"));
    }
}
