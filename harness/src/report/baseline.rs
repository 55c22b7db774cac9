//! Baselines: the cases known not to pass on one kernel + filesystem, with
//! the reason, like fstests' expunge lists. A run judged against a baseline
//! fails only for failures the baseline does not know.
//!
//! The format (documented in reports/README.md): one case id a line,
//! optionally followed by `# reason`; blank lines and lines starting with
//! `#` are comments. An optional header line `when: {...}` before the first
//! id says where the file applies, as a case variant's `when` does (the same
//! JSON object, matched by `case::expect::matches`), so one file can serve
//! several kernels and filesystems.
//!
//! ```text
//! # Linux 6.1 and later, ext4 and xfs
//! when: {"fs": ["ext4", "xfs"], "kernel": ">=6.1"}
//! msync/async-returns-at-once    # ext4 starts write-back on MS_ASYNC (commit ...)
//! ```

use super::{CaseReport, Report, Status};
use crate::case::model::When;
use crate::target::Environment;
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
    /// The `when:` header: where the file applies (None: wherever it is used).
    pub when: Option<When>,
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
        let mut when = None;
        let mut kmsg = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(json) = raw.trim_start().strip_prefix("when:") {
                // Columns count from 1 at the line's first character.
                let start = raw.len() - json.len();
                match (&when, entries.is_empty()) {
                    (Some(_), _) => problems.push(format!(
                        "{name}:{line}:1: when: a file has one `when:` header"
                    )),
                    (None, false) => problems.push(format!(
                        "{name}:{line}:1: when: the `when:` header goes before the first case id"
                    )),
                    (None, true) => match serde_json::from_str::<When>(json) {
                        Ok(w) => when = Some(w),
                        Err(e) => problems.push(format!(
                            "{name}:{line}:{}: when: {}",
                            start + e.column().max(1),
                            serde_error_text(&e)
                        )),
                    },
                }
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
            Ok(Baseline {
                entries,
                when,
                kmsg,
            })
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

    /// The entry that makes a failed case known: its id listed, or (for a
    /// case that failed only for the kernel's complaints) `kmsg:` lines
    /// matching every complaint.
    fn entry_for(&self, c: &CaseReport) -> Option<&Entry> {
        self.get(&c.id)
            .or_else(|| super::kmsg_baseline::known(&self.kmsg, c))
    }

    /// Whether the file's `when:` header (if any) describes `env`.
    pub fn applies_to(&self, env: &Environment) -> bool {
        self.when
            .as_ref()
            .is_none_or(|w| crate::case::expect::matches(w, env))
    }

    /// Sets `known` (`NAME:LINE: reason`) on each failure the baseline
    /// lists, and the summary's count of them, so every output shows them
    /// as expected.
    pub fn mark(&self, report: &mut Report, name: &str) {
        for c in report.cases.iter_mut().filter(|c| c.is_failure()) {
            if let Some(e) = self.entry_for(c) {
                c.known = Some(if e.reason.is_empty() {
                    format!("{name}:{}", e.line)
                } else {
                    format!("{name}:{}: {}", e.line, e.reason)
                });
            }
        }
        report.summary = super::Summary::of(&report.cases, report.summary.duration_ms);
    }

    /// Several baselines as one (the files of a directory that apply to
    /// one target); the first file listing an id gives its entry.
    pub fn merged(parts: Vec<Baseline>) -> Baseline {
        let mut out = Baseline::default();
        for b in parts {
            out.kmsg.extend(b.kmsg);
            for e in b.entries {
                if out.get(&e.id).is_none() {
                    out.entries.push(e);
                }
            }
        }
        out
    }

    /// Judges a run against the baseline.
    pub fn judge<'a>(&'a self, report: &'a Report) -> Verdict<'a> {
        let mut v = Verdict::default();
        for c in &report.cases {
            match (c.is_failure(), self.get(&c.id)) {
                (true, _) => match self.entry_for(c) {
                    Some(e) => v.known_failures.push((c, e)),
                    None => v.new_failures.push(c),
                },
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

/// A serde error without its " at line L column C" tail (the caller gives
/// the position in the file instead).
fn serde_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
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

    #[test]
    fn a_when_header_says_where_the_file_applies() {
        let b = Baseline::parse(
            "# ext4 and xfs from 6.1\nwhen: {\"fs\": [\"ext4\", \"xfs\"], \"kernel\": \">=6.1\"}\nshared/a # why\n",
            "b.txt",
        )
        .unwrap();
        assert_eq!(b.entries.len(), 1);
        let mut env = Environment::probe(Path::new("/"));
        env.kernel_release = "6.12.1".into();
        for (fs, release, applies) in [
            ("ext4", "6.12.1", true),
            ("xfs", "6.1.0", true),
            ("tmpfs", "6.12.1", false),
            ("ext4", "5.10.0", false),
        ] {
            env.fs_type = fs.into();
            env.kernel_release = release.into();
            assert_eq!(b.applies_to(&env), applies, "{fs} {release}");
        }
        assert!(Baseline::parse("a\n", "c.txt").unwrap().applies_to(&env));
    }

    #[test]
    fn a_bad_when_header_names_file_line_column_and_field() {
        let err = Baseline::parse("when: {\"fss\": [\"ext4\"]}\n", "b.txt").unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].starts_with("b.txt:1:"), "{err:?}");
        assert!(err[0].contains("unknown field `fss`"), "{err:?}");
        let col: usize = err[0].split(':').nth(2).unwrap().parse().unwrap();
        assert!((7..=13).contains(&col), "column {col}: {err:?}");
        let err = Baseline::parse("a\nwhen: {}\n", "b.txt").unwrap_err();
        assert!(err[0].starts_with("b.txt:2:1: when: the `when:` header goes before"));
        let err = Baseline::parse("when: {}\nwhen: {}\n", "b.txt").unwrap_err();
        assert!(err[0].starts_with("b.txt:2:1: when: a file has one"));
    }
}
