//! A strict KTAP version 1 parser, written from the kernel's
//! Documentation/dev-tools/ktap.rst ("The Kernel Test Anything Protocol
//! (KTAP), version 1"). Its rules, as checked here:
//!
//! - A document starts with the version line `KTAP version 1`, followed by
//!   the plan `1..N` (ktap.rst lets a plan be omitted when the count is not
//!   known in advance; mmapconf always knows it, so here it is required).
//! - A result line is `<ok|not ok> <number> [<description>][ # [<directive>]
//!   [<diagnostic data>]]`; numbers start at 1 and go up by one at each
//!   level; a description cannot contain `#`; the directives are SKIP, TODO,
//!   XFAIL, TIMEOUT and ERROR, and TIMEOUT and ERROR go with `not ok`.
//! - Diagnostic lines are `# <text>`.
//! - A nested (sub)test document starts with its own version line and plan,
//!   every line of it indented by one more level of two spaces, and ends
//!   before its parent's result line; a parent with a failed subtest fails.
//! - The result count at each level equals its plan.
//!
//! ktap.rst allows "unknown lines" anywhere; this checker rejects them, since
//! a writer of ours has no reason to print any.

#[derive(Debug, Clone)]
pub struct Test {
    pub ok: bool,
    pub number: usize,
    pub name: String,
    pub directive: Option<String>,
    /// Diagnostic data after `#` on the result line (after the directive).
    pub data: String,
    /// `# ` lines directly before the result line, at its level.
    pub diagnostics: Vec<String>,
    pub subtests: Vec<Test>,
}

const DIRECTIVES: [&str; 5] = ["SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR"];

/// Parses a whole KTAP document; every rule broken is an error naming the line.
pub fn parse(text: &str) -> Result<Vec<Test>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut pos = 0;
    let tests = document(&lines, &mut pos, 0)?;
    if pos != lines.len() {
        return Err(format!("line {}: after the end of the document", pos + 1));
    }
    Ok(tests)
}

fn indent_of(line: &str) -> Result<(usize, &str), String> {
    let rest = line.trim_start_matches(' ');
    if rest.starts_with('\t') {
        return Err("tab in indentation".into());
    }
    let n = line.len() - rest.len();
    if !n.is_multiple_of(2) {
        return Err(format!("indentation of {n} spaces is not a whole level"));
    }
    Ok((n / 2, rest))
}

fn document(lines: &[&str], pos: &mut usize, level: usize) -> Result<Vec<Test>, String> {
    let at = |p: usize| format!("line {}", p + 1);
    let pad = "  ".repeat(level);
    if lines.get(*pos).copied() != Some(&format!("{pad}KTAP version 1")) {
        return Err(format!(
            "{}: expected `{pad}KTAP version 1`, got {:?}",
            at(*pos),
            lines.get(*pos)
        ));
    }
    *pos += 1;
    let plan = lines
        .get(*pos)
        .and_then(|l| l.strip_prefix(&pad))
        .and_then(|l| l.strip_prefix("1.."))
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| format!("{}: expected the plan `{pad}1..N`", at(*pos)))?;
    *pos += 1;
    let mut tests = Vec::new();
    let mut diags = Vec::new();
    let mut sub: Option<Vec<Test>> = None;
    while let Some(line) = lines.get(*pos) {
        let (lvl, rest) = indent_of(line).map_err(|e| format!("{}: {e}", at(*pos)))?;
        if lvl < level {
            break;
        }
        if lvl > level {
            if lvl == level + 1 && rest == "KTAP version 1" && sub.is_none() {
                sub = Some(document(lines, pos, level + 1)?);
                continue;
            }
            return Err(format!("{}: unexpected indentation: {line:?}", at(*pos)));
        }
        if let Some(d) = rest.strip_prefix('#') {
            let d = d
                .strip_prefix(' ')
                .ok_or_else(|| format!("{}: a diagnostic line is `# text`", at(*pos)))?;
            diags.push(d.to_string());
        } else if rest.starts_with("ok ") || rest.starts_with("not ok ") {
            let mut t = result(rest).map_err(|e| format!("{}: {e}", at(*pos)))?;
            if t.number != tests.len() + 1 {
                return Err(format!(
                    "{}: test number {} where {} comes next",
                    at(*pos),
                    t.number,
                    tests.len() + 1
                ));
            }
            t.diagnostics = std::mem::take(&mut diags);
            t.subtests = sub.take().unwrap_or_default();
            let failed_sub = t
                .subtests
                .iter()
                .any(|s| !s.ok && s.directive.as_deref() != Some("SKIP"));
            if failed_sub && t.ok {
                return Err(format!("{}: `ok` although a subtest failed", at(*pos)));
            }
            tests.push(t);
        } else {
            return Err(format!("{}: not a KTAP line: {line:?}", at(*pos)));
        }
        *pos += 1;
    }
    if sub.is_some() {
        return Err(format!("{}: subtests without their result line", at(*pos)));
    }
    if tests.len() != plan {
        return Err(format!(
            "plan at level {level} says {plan} tests, {} given",
            tests.len()
        ));
    }
    Ok(tests)
}

fn result(line: &str) -> Result<Test, String> {
    let (ok, rest) = match line.strip_prefix("ok ") {
        Some(r) => (true, r),
        None => (false, line.strip_prefix("not ok ").unwrap_or(line)),
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number: usize = num
        .parse()
        .map_err(|_| format!("test number {num:?} is not a number"))?;
    let (name, after) = match (rest.strip_prefix("# "), rest.split_once(" # ")) {
        (Some(a), _) => ("", Some(a)),
        (None, Some((n, a))) => (n, Some(a)),
        (None, None) => (rest, None),
    };
    if name.contains('#') {
        return Err(format!("description {name:?} contains `#`"));
    }
    let (mut directive, mut data) = (None, String::new());
    if let Some(after) = after {
        let (word, tail) = after.split_once(' ').unwrap_or((after, ""));
        if DIRECTIVES.contains(&word) {
            directive = Some(word.to_string());
            data = tail.to_string();
        } else if !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!("unknown directive {word}"));
        } else {
            data = after.to_string();
        }
    }
    if ok && matches!(directive.as_deref(), Some("TIMEOUT") | Some("ERROR")) {
        return Err("TIMEOUT and ERROR go with `not ok`".into());
    }
    Ok(Test {
        ok,
        number,
        name: name.to_string(),
        directive,
        data,
        diagnostics: Vec::new(),
        subtests: Vec::new(),
    })
}
