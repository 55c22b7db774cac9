//! `mmapconf explain`: a case as a timeline, one column per process, the
//! way the seed draws who does what and what each must see, with every
//! variant (where it applies, what it expects there, and why); with
//! `--html`, the same as swimlanes on a page (`swimlanes`).
//!
//! The columns share the terminal's width (100 characters when standard
//! output is not a terminal, or `COLUMNS` when set); text longer than its
//! column wraps inside it rather than being cut.

use crate::case::model::{Expect, Op, Step, Variant, When};
use crate::exec::plan;
use std::process::ExitCode;

/// The width when standard output is not a terminal and COLUMNS is unset.
const DEFAULT_WIDTH: usize = 100;
/// The step number column: "  12.3  ".
const INDEX: usize = 7;
/// Narrower lanes than this wrap every word; past it, lines scroll instead.
const MIN_LANE: usize = 16;

/// The width to draw in: the terminal's, else COLUMNS, else 100.
fn width() -> usize {
    if let Some((terminal_size::Width(w), _)) = terminal_size::terminal_size() {
        return w as usize;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

pub fn explain(which: &str, html: Option<&std::path::Path>) -> ExitCode {
    let path = super::case_file(which);
    let loaded = match crate::case::load_file(&path, crate::target::page_size()) {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitCode::from(1);
        }
    };
    let Some(dest) = html else {
        print!("{}", timeline(&loaded.id, &loaded.case, width()));
        return ExitCode::SUCCESS;
    };
    let page = super::swimlanes::page(&loaded.id, &loaded.case);
    let written = if dest.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(page.as_bytes())
    } else {
        std::fs::write(dest, page)
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmapconf: cannot write {}: {e}", dest.display());
            ExitCode::from(2)
        }
    }
}

/// The processes in order of first appearance (fork children included).
fn lanes(steps: &[Step], out: &mut Vec<String>) {
    for s in steps {
        if let Some(p) = &s.process {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        if let (Op::Fork, Some(child)) = (&s.op, &s.name) {
            if !out.contains(child) {
                out.push(child.clone());
            }
        }
        if let Op::Together { steps } = &s.op {
            lanes(steps, out);
        }
    }
}

pub(super) fn expectation(s: &Step) -> String {
    if s.observe {
        return "observe".to_string();
    }
    let Some(e) = &s.expect else {
        return String::new();
    };
    describe(e)
}

fn describe(e: &Expect) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &e.errno {
        parts.push(v.clone());
    }
    if let Some(v) = &e.signal {
        parts.push(match &e.si_code {
            Some(c) => format!("{v}/{c}"),
            None => v.clone(),
        });
    }
    if let Some(t) = &e.text {
        parts.push(format!("{t:?}"));
    }
    if let Some(h) = &e.hex {
        parts.push(format!("hex {h}"));
    }
    if let Some(f) = e.fill {
        parts.push(format!("all 0x{f:02x}"));
    }
    if let Some(p) = e.pattern {
        parts.push(match &e.from {
            Some(f) => format!("pattern {p} from {f}"),
            None => format!("pattern {p}"),
        });
    }
    if let Some(v) = &e.value {
        parts.push(format!("= {v}"));
    }
    if let Some([lo, hi]) = &e.range {
        parts.push(format!("in [{lo}, {hi}]"));
    }
    if let Some(c) = e.exit {
        parts.push(format!("exit {c}"));
    }
    if let Some(k) = &e.killed_by {
        parts.push(format!("killed by {k}"));
    }
    if let Some(st) = &e.stat {
        parts.push(describe_stat(st));
    }
    if let Some(at) = &e.fault_at {
        parts.push(format!("at {at} in the mapping"));
    }
    if let Some(d) = &e.done {
        parts.push(format!("after {d} done"));
    }
    parts.join(", ")
}

/// The fields an fstat step checks: "stat size=2p blocks 8..16".
fn describe_stat(st: &crate::case::model::StatExpect) -> String {
    let json = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => s,
        v => v.to_string(),
    };
    let mut parts = vec!["stat".to_string()];
    if let Some(size) = &st.size {
        parts.push(format!("size={}", json(serde_json::json!(size))));
    }
    match st.blocks {
        Some([lo, hi]) if lo == hi => parts.push(format!("blocks={lo}")),
        Some([lo, i64::MAX]) => parts.push(format!("blocks>={lo}")),
        Some([lo, hi]) => parts.push(format!("blocks {lo}..{hi}")),
        None => {}
    }
    for (name, since) in [("mtime", &st.mtime), ("ctime", &st.ctime)] {
        use crate::case::model::Since;
        match since {
            Some(Since::ChangedSince(snap)) => parts.push(format!("{name} changed since {snap}")),
            Some(Since::UnchangedSince(snap)) => {
                parts.push(format!("{name} unchanged since {snap}"))
            }
            None => {}
        }
    }
    parts.join(" ")
}

/// Where a variant applies, in words: "fs xfs, kernel >=6.9,<6.17, page size 4096".
fn describe_when(w: &When) -> String {
    let mut parts = Vec::new();
    let list =
        |name: &str, v: &[String]| (!v.is_empty()).then(|| format!("{name} {}", v.join("|")));
    parts.extend(list("fs", &w.fs));
    parts.extend(list("target", &w.target));
    parts.extend(list("mount options", &w.mount_options));
    parts.extend(w.kernel.as_ref().map(|k| format!("kernel {k}")));
    parts.extend(w.page_size.map(|p| format!("page size {p}")));
    parts.extend(list("arch", &w.arch));
    if parts.is_empty() {
        "always".to_string()
    } else {
        parts.join(", ")
    }
}

/// What a variant expects where it applies: absent means the call succeeds.
fn variant_expectation(v: &Variant) -> String {
    if v.observe {
        return "observe".to_string();
    }
    v.expect
        .as_ref()
        .map(describe)
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "succeeds".to_string())
}

/// A step's lines before wrapping: what it does, what it must observe (by
/// default, then in each variant with its reason), its note.
fn step_lines(step: &Step) -> Vec<String> {
    let mut text = plan::summary(step);
    if let Some(p) = &step.process {
        // The lane is the process's; a step of one of its threads says which.
        text = match &step.thread {
            Some(t) => format!(
                "[thread {t}] {}",
                text.trim_start_matches(&format!("{p}/{t}: "))
            ),
            None => text.trim_start_matches(&format!("{p}: ")).to_string(),
        };
    }
    let mut lines = vec![text];
    let mut exp = expectation(step);
    if exp.is_empty() && !step.variants.is_empty() {
        // Say what the default is when variants say something else.
        exp = "succeeds".to_string();
    }
    if !exp.is_empty() {
        lines.push(format!("  ⇒ {exp}"));
    }
    for v in &step.variants {
        lines.push(format!(
            "  ⇒ {} when {}",
            variant_expectation(v),
            describe_when(&v.when)
        ));
        lines.push(format!("      why: {}", v.why));
        if let Some(r) = &v.skip_rest {
            lines.push(format!("      then the rest is skipped: {r}"));
        }
    }
    if let Some(note) = &step.note {
        lines.push(format!("  ({note})"));
    }
    lines
}

/// `text` wrapped to `width` columns, continuation lines indented as the
/// first line is.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let indent = " ".repeat(text.len() - text.trim_start().len() + 2);
    let opts = textwrap::Options::new(width.max(4))
        .subsequent_indent(&indent)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .break_words(true);
    textwrap::wrap(text, opts)
        .into_iter()
        .map(|l| l.into_owned())
        .collect()
}

/// `text` padded with spaces to `width` display columns.
fn pad(text: &str, width: usize) -> String {
    let w = textwrap::core::display_width(text);
    format!("{text}{}", " ".repeat(width.saturating_sub(w)))
}

/// One step: its lines in its process's column (a `│` in the others), or
/// across the whole width for the harness's own steps.
fn row(index: &str, lanes: &[String], lane: usize, step: &Step, width: usize, out: &mut String) {
    let harness = "[harness] ";
    let lines: Vec<String> = step_lines(step)
        .iter()
        .flat_map(|l| match &step.process {
            Some(_) => wrap(l, lane - 1),
            None => wrap(l, width.saturating_sub(INDEX + harness.len()).max(MIN_LANE)),
        })
        .collect();
    for (n, line) in lines.iter().enumerate() {
        let idx = if n == 0 { index } else { "" };
        let mut text = format!("{idx:>5}  ");
        match &step.process {
            Some(p) => {
                for l in lanes {
                    text.push_str(&pad(if l == p { line } else { "│" }, lane));
                }
            }
            None => {
                text.push_str(harness);
                text.push_str(line);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
}

/// The whole timeline as text, `width` columns wide.
pub fn timeline(id: &str, case: &crate::case::Case, width: usize) -> String {
    let mut names = Vec::new();
    lanes(&case.steps, &mut names);
    let lane = (width.saturating_sub(INDEX) / names.len().max(1)).max(MIN_LANE);
    let mut out = String::new();
    for l in wrap(&format!("{id}: {}", case.title), width) {
        out.push_str(&l);
        out.push('\n');
    }
    if !case.files.is_empty() {
        let files: Vec<String> = case.files.keys().cloned().collect();
        out.push_str(&format!("files: {}\n", files.join(", ")));
    }
    let second: Vec<&str> = case
        .processes
        .iter()
        .filter(|(_, p)| p.mount == crate::case::model::Mount::Second)
        .map(|(n, _)| n.as_str())
        .collect();
    if !second.is_empty() {
        out.push_str(&format!(
            "on the second mount of the filesystem (another client): {}\n",
            second.join(", ")
        ));
    }
    let mut header = " ".repeat(INDEX);
    for n in &names {
        header.push_str(&pad(n, lane));
    }
    out.push('\n');
    out.push_str(header.trim_end());
    out.push('\n');
    for (i, s) in case.steps.iter().enumerate() {
        let index = (i + 1).to_string();
        match &s.op {
            Op::Together { steps } => {
                out.push_str(&format!(
                    "{index:>5}  ── together (concurrently, then joined) ──\n"
                ));
                for (j, inner) in steps.iter().enumerate() {
                    row(
                        &format!("{index}.{}", j + 1),
                        &names,
                        lane,
                        inner,
                        width,
                        &mut out,
                    );
                }
            }
            _ => row(&index, &names, lane, s, width, &mut out),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A two-process case whose msync step has two variants.
    fn case() -> crate::case::Case {
        let text = r#"{
  "title": "A MAP_SHARED store reaches the file by msync, whatever the filesystem does about it",
  "refs": ["test"],
  "files": { "shared-data-file.dat": { "size": 64 } },
  "steps": [
    { "in": "writer", "do": "open", "path": "shared-data-file.dat", "flags": "O_RDWR", "as": "fd" },
    { "in": "writer", "do": "mmap", "fd": "fd", "len": 64, "prot": "READ|WRITE", "flags": "SHARED", "as": "m" },
    { "in": "writer", "do": "msync", "map": "m", "flags": "MS_SYNC", "note": "the flush a database relies on",
      "variants": [
        { "when": { "fs": ["tmpfs", "ramfs"] }, "expect": { "errno": "EINVAL" }, "why": "an invented reason that is long enough to need wrapping at a narrow width" },
        { "when": { "kernel": ">=6.1", "page_size": 4096 }, "observe": true, "why": "recorded only" }
      ] },
    { "in": "reader", "do": "open", "path": "shared-data-file.dat", "flags": "O_RDWR", "as": "fd" }
  ]
}"#;
        crate::case::parse_case(Path::new("t.json"), text, 4096).expect("the test case parses")
    }

    fn widths(text: &str) -> Vec<usize> {
        text.lines().map(textwrap::core::display_width).collect()
    }

    #[test]
    fn variants_show_where_they_apply_what_they_expect_and_why() {
        let t = timeline("t/v", &case(), 200);
        let at = t.find("msync").expect("the msync step");
        let step = &t[at..t.find("    4  ").unwrap()];
        for want in [
            "⇒ succeeds",
            "⇒ EINVAL when fs tmpfs|ramfs",
            "why: an invented reason that is long enough to need wrapping at a narrow width",
            "⇒ observe when kernel >=6.1, page size 4096",
            "why: recorded only",
            "(the flush a database relies on)",
        ] {
            assert!(step.contains(want), "no {want:?} in\n{t}");
        }
    }

    #[test]
    fn lanes_use_the_width_given_and_wrap_instead_of_cutting() {
        // Wide: the open step is whole on its line (38-character lanes cut it).
        let wide = timeline("t/v", &case(), 160);
        assert!(
            wide.lines()
                .any(|l| l.contains("open flags=\"O_RDWR\" path=\"shared-data-file.dat\" -> fd")),
            "{wide}"
        );
        assert!(widths(&wide).iter().all(|&w| w <= 160), "{wide}");
        // The second lane starts past the first's half of the width.
        let header = wide.lines().find(|l| l.contains("writer")).unwrap();
        assert!(header.find("reader").unwrap() >= 7 + 76, "{header}");
        // Narrow: nothing is longer than the width, and nothing is cut
        // (the same characters, only placed on more lines).
        let narrow = timeline("t/v", &case(), 60);
        assert!(widths(&narrow).iter().all(|&w| w <= 60), "{narrow}");
        assert!(narrow.lines().count() > wide.lines().count());
        let chars = |t: &str| -> Vec<char> {
            let mut c: Vec<char> = t
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '│')
                .collect();
            c.sort();
            c
        };
        assert_eq!(chars(&narrow), chars(&wide));
    }

    #[test]
    fn a_step_in_a_thread_is_in_its_process_lane_naming_the_thread() {
        let text = r#"{ "title": "t", "refs": ["r"], "steps": [
    { "in": "p", "do": "spawn_thread", "as": "t1" },
    { "in": "p", "thread": "t1", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" },
    { "in": "q", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" }
  ] }"#;
        let case = crate::case::parse_case(Path::new("t.json"), text, 4096).unwrap();
        let t = timeline("t/threads", &case, 160);
        // Two lanes (p, q): the thread is not a process.
        let header = t
            .lines()
            .find(|l| l.contains(" p ") || l.ends_with(" p"))
            .unwrap_or("");
        assert!(!header.contains("t1"), "{t}");
        let line = t.lines().find(|l| l.contains("   2  ")).expect("step 2");
        assert!(line.contains("[thread t1] mmap"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.contains("spawn_thread") && l.contains("-> t1")),
            "{t}"
        );
    }
}
