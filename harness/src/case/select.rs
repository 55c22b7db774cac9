//! Which cases a command runs: `--filter` and `--exclude` patterns, a list
//! of ids (`--ids FILE`) and tags (`--tag`). Finding the cases directory is
//! `locate`'s concern; this only narrows what was found.
//!
//! A pattern with a glob character (`*`, `?`, `[`, `{`) is matched against
//! the whole id, `*` crossing `/` (so `fork/*` is the fork topic and
//! `*sigbus*` any id naming SIGBUS); a plain word still matches as a
//! substring, as `--filter` always did. Each kind given narrows the
//! selection (a case must pass all of them); within a kind, any one
//! pattern, id or tag is enough. A selection that keeps nothing is an
//! error: a typo must not pass CI by running no case.

use super::model::Profile;
use super::LoadedCase;
use clap::Args;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The selection options every command that takes cases shares.
#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Only cases whose id matches PATTERN: a glob on the whole id
    /// (`fork/*`, `*sigbus*`) or a plain word, matched as a substring.
    /// Repeatable and comma-separated (a comma inside `{a,b}` belongs to
    /// the glob); any one pattern is enough.
    #[arg(long, value_name = "PATTERN")]
    pub filter: Vec<String>,
    /// Leave out cases whose id matches PATTERN (same syntax as --filter).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Only the cases listed in FILE: one id a line ("fork/cow-after-fork"),
    /// `#` starts a comment. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub ids: Vec<PathBuf>,
    /// Only cases with tag T: a case's tags are its topic (the directory it
    /// is in: `shared`, `msync`) and its profile (`posix` or `linux`).
    /// Repeatable and comma-separated.
    #[arg(long, value_name = "T", value_delimiter = ',')]
    pub tag: Vec<String>,
}

impl SelectArgs {
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
            && self.exclude.is_empty()
            && self.ids.is_empty()
            && self.tag.is_empty()
    }

    /// The options as the user wrote them, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |flag: &str, values: Vec<String>| {
            if !values.is_empty() {
                parts.push(format!("{flag} {}", values.join(",")));
            }
        };
        add("--filter", self.filter.clone());
        add("--exclude", self.exclude.clone());
        add(
            "--ids",
            self.ids.iter().map(|p| p.display().to_string()).collect(),
        );
        add("--tag", self.tag.clone());
        parts.join(" ")
    }
}

/// Patterns of one option: the globs as one set, the plain words apart.
#[derive(Debug, Default)]
struct Patterns {
    globs: GlobSet,
    words: Vec<String>,
}

impl Patterns {
    fn new(flag: &str, patterns: &[String]) -> Result<Patterns, String> {
        let mut globs = GlobSetBuilder::new();
        let mut words = Vec::new();
        let split: Vec<&str> = patterns.iter().flat_map(|p| split_patterns(p)).collect();
        for p in split.into_iter().map(str::trim) {
            if p.is_empty() {
                return Err(format!("{flag}: an empty pattern"));
            }
            if p.contains(['*', '?', '[', '{']) {
                let glob = GlobBuilder::new(p)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("{flag}: bad pattern `{p}`: {}", e.kind()))?;
                globs.add(glob);
            } else {
                words.push(p.to_string());
            }
        }
        let globs = globs
            .build()
            .map_err(|e| format!("{flag}: bad patterns: {e}"))?;
        Ok(Patterns { globs, words })
    }

    fn is_empty(&self) -> bool {
        self.globs.is_empty() && self.words.is_empty()
    }

    fn matches(&self, id: &str) -> bool {
        self.words.iter().any(|w| id.contains(w.as_str())) || self.globs.is_match(id)
    }
}

/// An id from an `--ids` file and where it was written, for errors.
#[derive(Debug)]
struct Listed {
    id: String,
    file: PathBuf,
    line: usize,
    col: usize,
}

/// A compiled selection.
#[derive(Debug, Default)]
pub struct Selection {
    filter: Patterns,
    exclude: Patterns,
    /// None: no `--ids` given; Some: only these.
    ids: Option<Vec<Listed>>,
    tags: BTreeSet<String>,
    described: String,
}

impl Selection {
    /// Compiles the options; a bad glob or an unreadable or malformed ids
    /// file is an error (one line, naming the file, line, column and field).
    pub fn new(args: &SelectArgs) -> Result<Selection, String> {
        let mut ids = None;
        for file in &args.ids {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{}: cannot read --ids file: {e}", file.display()))?;
            ids.get_or_insert_with(Vec::new)
                .extend(parse_ids(file, &text)?);
        }
        Ok(Selection {
            filter: Patterns::new("--filter", &args.filter)?,
            exclude: Patterns::new("--exclude", &args.exclude)?,
            ids,
            tags: args.tag.iter().map(|t| t.trim().to_string()).collect(),
            described: args.describe(),
        })
    }

    /// Whether a case of this id and profile is selected. The profile is
    /// None for a file that did not parse: only its topic is known then.
    pub fn matches(&self, id: &str, profile: Option<Profile>) -> bool {
        if !self.filter.is_empty() && !self.filter.matches(id) {
            return false;
        }
        if self.exclude.matches(id) {
            return false;
        }
        if let Some(ids) = &self.ids {
            if !ids.iter().any(|l| l.id == id) {
                return false;
            }
        }
        if !self.tags.is_empty() {
            let profile = profile.map(|p| match p {
                Profile::Posix => "posix",
                Profile::Linux => "linux",
            });
            let mut tags = std::iter::once(crate::report::topic_of(id)).chain(profile);
            if !tags.any(|t| self.tags.contains(t)) {
                return false;
            }
        }
        true
    }

    /// Keeps the selected cases. `broken` are the ids of case files that
    /// did not parse, which a run still reports: they count as found.
    /// Err when an id listed in an `--ids` file names no case found, or
    /// when nothing is left though cases were found.
    pub fn apply(
        &self,
        cases: Vec<LoadedCase>,
        broken: &[String],
    ) -> Result<Vec<LoadedCase>, String> {
        let known = |id: &str| cases.iter().any(|c| c.id == id) || broken.iter().any(|b| b == id);
        if let Some(ids) = &self.ids {
            if let Some(l) = ids.iter().find(|l| !known(&l.id)) {
                return Err(format!(
                    "{}:{}:{}: id: no case `{}` among the cases given",
                    l.file.display(),
                    l.line,
                    l.col,
                    l.id
                ));
            }
        }
        let found = cases.len() + broken.len();
        let kept: Vec<LoadedCase> = cases
            .into_iter()
            .filter(|c| self.matches(&c.id, Some(c.case.profile)))
            .collect();
        let broken_kept = broken.iter().filter(|b| self.matches(b, None)).count();
        if kept.is_empty() && broken_kept == 0 && found > 0 && !self.described.is_empty() {
            return Err(format!(
                "no case matches {} (of {found} cases found)",
                self.described
            ));
        }
        Ok(kept)
    }
}

/// One option's value cut at its commas, except those inside a glob's
/// `{a,b}` alternatives or `[...]` class.
fn split_patterns(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in value.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The ids of an `--ids` file: one a line, blank lines and `#` comments
/// (whole-line or after the id) ignored.
fn parse_ids(file: &Path, text: &str) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        let id = line.trim();
        if id.is_empty() {
            continue;
        }
        let col = line.len() - line.trim_start().len() + 1;
        let bad =
            id.chars().any(char::is_whitespace) || id.ends_with(".json") || id.starts_with('/');
        if bad {
            return Err(format!(
                "{}:{}:{col}: id: `{id}` is not a case id (one id a line, like `fork/cow-after-fork`, without .json)",
                file.display(),
                n + 1
            ));
        }
        out.push(Listed {
            id: id.to_string(),
            file: file.to_path_buf(),
            line: n + 1,
            col,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn args(filter: &[&str], exclude: &[&str], tag: &[&str]) -> SelectArgs {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        SelectArgs {
            filter: v(filter),
            exclude: v(exclude),
            ids: Vec::new(),
            tag: v(tag),
        }
    }

    const IDS: [&str; 6] = [
        "fork/cow-after-fork",
        "fork/nested/deep",
        "shared/sigbus-past-eof",
        "truncate/sigbus-after-shrink",
        "seed/writer-reader",
        "msync/ms-sync",
    ];

    fn picked(s: &Selection) -> Vec<&'static str> {
        IDS.iter()
            .copied()
            .filter(|id| s.matches(id, Some(Profile::Linux)))
            .collect()
    }

    #[rstest]
    #[case(&["fork/*"], &[], &["fork/cow-after-fork", "fork/nested/deep"])]
    #[case(&["*sigbus*"], &[], &["shared/sigbus-past-eof", "truncate/sigbus-after-shrink"])]
    // A plain word is a substring, as before.
    #[case(&["sync"], &[], &["msync/ms-sync"])]
    #[case(&["fork/*", "seed"], &[], &["fork/cow-after-fork", "fork/nested/deep", "seed/writer-reader"])]
    #[case(&["fork/*"], &["*deep"], &["fork/cow-after-fork"])]
    #[case(&[], &["fork", "*sigbus*"], &["seed/writer-reader", "msync/ms-sync"])]
    #[case(&["?eed/*"], &[], &["seed/writer-reader"])]
    #[case(&["{seed,msync}/*"], &[], &["seed/writer-reader", "msync/ms-sync"])]
    fn patterns(#[case] filter: &[&str], #[case] exclude: &[&str], #[case] want: &[&str]) {
        let s = Selection::new(&args(filter, exclude, &[])).unwrap();
        assert_eq!(picked(&s), want);
    }

    #[test]
    fn commas_separate_patterns_except_inside_a_glob() {
        assert_eq!(split_patterns("fork/*,seed"), ["fork/*", "seed"]);
        assert_eq!(split_patterns("{seed,msync}/*,x"), ["{seed,msync}/*", "x"]);
        assert_eq!(split_patterns("[,a]*"), ["[,a]*"]);
        let s = Selection::new(&args(&["{seed,msync}/*,fork/c*"], &[], &[])).unwrap();
        assert_eq!(
            picked(&s),
            ["fork/cow-after-fork", "seed/writer-reader", "msync/ms-sync"]
        );
    }

    #[test]
    fn a_glob_matches_the_whole_id_not_a_part() {
        let s = Selection::new(&args(&["fork*"], &[], &[])).unwrap();
        assert!(s.matches("fork/x", None));
        assert!(!s.matches("shared/fork-x", None));
    }

    #[test]
    fn tags_are_the_topic_and_the_profile() {
        let s = Selection::new(&args(&[], &[], &["fork", "seed"])).unwrap();
        assert_eq!(
            picked(&s),
            [
                "fork/cow-after-fork",
                "fork/nested/deep",
                "seed/writer-reader"
            ]
        );
        let s = Selection::new(&args(&[], &[], &["posix"])).unwrap();
        assert!(s.matches("msync/ms-sync", Some(Profile::Posix)));
        assert!(!s.matches("msync/ms-sync", Some(Profile::Linux)));
        // A topic is a whole directory name, not a prefix of one.
        let s = Selection::new(&args(&[], &[], &["for"])).unwrap();
        assert!(picked(&s).is_empty());
    }

    #[test]
    fn kinds_narrow_together() {
        let s = Selection::new(&args(&["*sigbus*"], &[], &["truncate"])).unwrap();
        assert_eq!(picked(&s), ["truncate/sigbus-after-shrink"]);
    }

    #[test]
    fn a_bad_glob_is_an_error_naming_it() {
        let e = Selection::new(&args(&["fork/[a"], &[], &[])).unwrap_err();
        assert!(e.starts_with("--filter: bad pattern `fork/[a`"), "{e}");
        let e = Selection::new(&args(&[], &["{x"], &[])).unwrap_err();
        assert!(e.starts_with("--exclude: bad pattern `{x`"), "{e}");
    }

    #[test]
    fn ids_files_allow_comments_and_say_where_a_bad_line_is() {
        let f = Path::new("ids.txt");
        let ids = parse_ids(f, "# picked by hand\nfork/a\n\n  seed/b  # the seed\n").unwrap();
        let got: Vec<(&str, usize, usize)> =
            ids.iter().map(|l| (l.id.as_str(), l.line, l.col)).collect();
        assert_eq!(got, [("fork/a", 2, 1), ("seed/b", 4, 3)]);
        let e = parse_ids(f, "fork/a\n  fork/b.json\n").unwrap_err();
        assert!(
            e.starts_with("ids.txt:2:3: id: `fork/b.json` is not a case id"),
            "{e}"
        );
        let e = parse_ids(f, "fork/a fork/b\n").unwrap_err();
        assert!(e.starts_with("ids.txt:1:1: id:"), "{e}");
    }

    #[test]
    fn describe_names_every_option_given() {
        let mut a = args(&["fork/*", "x"], &["y"], &["seed"]);
        a.ids.push(PathBuf::from("l.txt"));
        assert_eq!(
            a.describe(),
            "--filter fork/*,x --exclude y --ids l.txt --tag seed"
        );
        assert!(SelectArgs::default().is_empty());
        assert!(!a.is_empty());
    }
}
