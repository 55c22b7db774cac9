//! A KTAP consumer that counts as the kernel's kunit_tool does
//! (tools/testing/kunit/kunit_parser.py), written here from its rules, not
//! its code, so a test can check that kunit_tool would count an mmapconf run
//! as mmapconf counts it:
//!
//! - Parsing starts at the first `KTAP version N` or `TAP version N` line;
//!   whatever precedes that text on its line is cut from every later line.
//! - A result line is `ok|not ok <number> [- ]<name>[ # <rest>]`, the name
//!   without `#`; a line that does not fit is a diagnostic, as is every line
//!   that is not a version, `# Subtest:` header, plan or result line.
//! - Only `# SKIP` changes a status (to skipped, for `ok` and `not ok`);
//!   every other directive (XFAIL, TIMEOUT, ERROR, TODO) falls back to
//!   `ok` = passed, `not ok` = failed.
//! - A test is a parent when a version line or a `# Subtest:` header opens
//!   it; it then reads subtests up to its plan (or, without a plan, up to a
//!   result line carrying its header's name).
//! - Counts are of leaves: a parent's counts are the sum of its subtests';
//!   a parent whose own line is `not ok` over subtests that all passed adds
//!   one failure; a subtest missing before the plan is reached counts as
//!   crashed, and a wrong test number, a missing result line or a parent
//!   with no subtests each count as a parse error.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failure,
    Skipped,
    Crashed,
    NoTests,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub crashed: usize,
    pub skipped: usize,
    pub errors: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.crashed + self.skipped
    }

    fn add(&mut self, o: &Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.crashed += o.crashed;
        self.skipped += o.skipped;
        self.errors += o.errors;
    }

    fn add_status(&mut self, s: Status) {
        match s {
            Status::Success => self.passed += 1,
            Status::Failure => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Crashed => self.crashed += 1,
            Status::NoTests => {}
        }
    }

    fn status(&self) -> Status {
        if self.total() == 0 {
            Status::NoTests
        } else if self.crashed > 0 {
            Status::Crashed
        } else if self.failed > 0 {
            Status::Failure
        } else if self.passed > 0 {
            Status::Success
        } else {
            Status::Skipped
        }
    }
}

#[derive(Debug, Clone)]
pub struct Test {
    pub name: String,
    pub status: Status,
    pub counts: Counts,
    pub subtests: Vec<Test>,
}

/// The kinds of line the parser tells apart.
enum Line<'a> {
    Version,
    Header(&'a str),
    Plan(usize),
    Result {
        ok: bool,
        number: usize,
        name: &'a str,
        skip: bool,
    },
    Diagnostic,
}

fn classify(line: &str) -> Line<'_> {
    let l = line.trim_start();
    let version = |p: &str| {
        l.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if version("KTAP version ") || version("TAP version ") {
        return Line::Version;
    }
    if let Some(name) = l.strip_prefix("# Subtest: ") {
        return Line::Header(name);
    }
    if let Some(n) = l.strip_prefix("1..") {
        let digits: String = n.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            return Line::Plan(n);
        }
    }
    let (ok, rest) = match (l.strip_prefix("ok "), l.strip_prefix("not ok ")) {
        (Some(r), _) => (true, r),
        (_, Some(r)) => (false, r),
        _ => return Line::Diagnostic,
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(number) = digits.parse() else {
        return Line::Diagnostic;
    };
    let rest = &rest[digits.len()..];
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let rest = rest.strip_prefix("- ").unwrap_or(rest);
    // The name runs to the first `#`, which must open ` # ...`.
    let (name, tail) = match rest.find('#') {
        None => (rest, ""),
        // `ok 1 # SKIP`: no name, the space before `#` was the number's.
        Some(0) if rest.starts_with("# ") => ("", rest),
        Some(i) if i > 0 && rest[..i].ends_with(' ') && rest[i..].starts_with("# ") => {
            (&rest[..i - 1], &rest[i..])
        }
        Some(_) => return Line::Diagnostic,
    };
    Line::Result {
        ok,
        number,
        name,
        skip: tail.starts_with("# SKIP") || tail.contains(" # SKIP"),
    }
}

struct Lines<'a> {
    lines: Vec<&'a str>,
    pos: usize,
}

impl<'a> Lines<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.pos).map(|l| classify(l))
    }

    fn skip_diagnostics(&mut self) {
        while matches!(self.peek(), Some(Line::Diagnostic)) {
            self.pos += 1;
        }
    }

    fn result_named(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Line::Result { name: n, .. }) if !n.is_empty() && n == name)
    }
}

/// Counts a KTAP or TAP document as kunit_tool would; the top test is "main".
pub fn parse(text: &str) -> Test {
    let mut kept = Vec::new();
    let mut prefix = None;
    for line in text.lines() {
        match prefix {
            None => {
                for marker in ["KTAP version", "TAP version"] {
                    if let Some(i) = line.find(marker) {
                        if matches!(classify(&line[i..]), Line::Version) {
                            prefix = Some(i);
                            kept.push(&line[i..]);
                            break;
                        }
                    }
                }
            }
            Some(p) => kept.push(line.get(p..).unwrap_or("")),
        }
    }
    let mut lines = Lines {
        lines: kept,
        pos: 0,
    };
    let mut main = test(&mut lines, 0, false);
    if main.status != Status::NoTests {
        main.status = main.counts.status();
    }
    main
}

fn test(lines: &mut Lines, number: usize, is_subtest: bool) -> Test {
    let mut t = Test {
        name: String::new(),
        status: Status::Crashed,
        counts: Counts::default(),
        subtests: Vec::new(),
    };
    lines.skip_diagnostics();
    let mut opened = !is_subtest;
    if !is_subtest {
        t.name = "main".into();
    }
    if matches!(lines.peek(), Some(Line::Version)) {
        lines.pos += 1;
        opened = true;
    }
    if is_subtest {
        if let Some(Line::Header(name)) = lines.peek() {
            t.name = name.to_string();
            lines.pos += 1;
            opened = true;
        }
    }
    lines.skip_diagnostics();
    let mut plan = None;
    if let Some(Line::Plan(n)) = lines.peek() {
        plan = Some(n);
        lines.pos += 1;
    }
    let mut n = 1;
    while opened && plan.is_none_or(|p| n <= p) {
        lines.skip_diagnostics();
        let at_end = lines.peek().is_none() || (is_subtest && lines.result_named(&t.name));
        if at_end {
            if plan.is_some_and(|p| n <= p) {
                t.counts.errors += 1;
                t.counts.add_status(Status::Crashed);
                t.subtests.push(Test {
                    name: String::new(),
                    status: Status::Crashed,
                    counts: Counts::default(),
                    subtests: Vec::new(),
                });
            } else {
                break;
            }
        } else {
            t.subtests.push(test(lines, n, true));
        }
        n += 1;
    }
    if is_subtest {
        lines.skip_diagnostics();
        if !t.name.is_empty() && !lines.result_named(&t.name) {
            t.counts.errors += 1;
        } else if let Some(Line::Result {
            ok,
            number: got,
            name,
            skip,
        }) = lines.peek()
        {
            lines.pos += 1;
            t.name = name.to_string();
            if got != number {
                t.counts.errors += 1;
            }
            t.status = match (skip, ok) {
                (true, _) => Status::Skipped,
                (false, true) => Status::Success,
                (false, false) => Status::Failure,
            };
        } else {
            t.status = Status::NoTests;
            t.counts.errors += 1;
        }
    }
    if opened && t.subtests.is_empty() && matches!(t.status, Status::Crashed | Status::Success) {
        t.status = Status::NoTests;
        t.counts.errors += 1;
    }
    let subtotal = t.subtests.iter().fold(Counts::default(), |mut c, s| {
        c.add(&s.counts);
        c
    });
    t.counts.add(&subtotal);
    if t.counts.total() == 0 {
        t.counts.add_status(t.status);
    } else if t.counts.status() == Status::Crashed {
        t.status = Status::Crashed;
    }
    if t.status == Status::Failure && t.counts.status() == Status::Success {
        t.counts.add_status(Status::Failure);
    }
    t
}

/// Every leaf with its status, `parent/child` named, for assertions by name.
pub fn leaves(t: &Test) -> Vec<(String, Status)> {
    if t.subtests.is_empty() {
        return vec![(t.name.clone(), t.status)];
    }
    t.subtests.iter().flat_map(leaves).collect()
}
