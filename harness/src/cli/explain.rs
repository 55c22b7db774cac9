//! `mmapconf explain`: a case as a timeline, one column per process, the
//! way the seed draws who does what and what each must see; with `--html`,
//! the same as swimlanes on a page (`swimlanes`).

use crate::case::model::{Expect, Op, Step};
use crate::exec::plan;
use std::process::ExitCode;

const LANE: usize = 38;

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
        print!("{}", timeline(&loaded.id, &loaded.case));
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
        parts.push(format!("pattern {p}"));
    }
    if let Some(v) = e.value {
        parts.push(format!("= {v}"));
    }
    if let Some([lo, hi]) = e.range {
        parts.push(format!("in [{lo}, {hi}]"));
    }
    if let Some(c) = e.exit {
        parts.push(format!("exit {c}"));
    }
    if let Some(k) = &e.killed_by {
        parts.push(format!("killed by {k}"));
    }
    if e.stat.is_some() {
        parts.push("stat".to_string());
    }
    parts.join(", ")
}

fn cell(text: &str) -> String {
    let t: String = text.chars().take(LANE - 1).collect();
    format!("{t:<LANE$}")
}

fn row(index: &str, lanes: &[String], step: &Step, out: &mut String) {
    let mut text = plan::summary(step);
    if let Some(p) = &step.process {
        text = text.trim_start_matches(&format!("{p}: ")).to_string();
    }
    let exp = expectation(step);
    let mut lines = vec![text];
    if !exp.is_empty() {
        lines.push(format!("  ⇒ {exp}"));
    }
    if let Some(note) = &step.note {
        lines.push(format!("  ({note})"));
    }
    for (n, line) in lines.iter().enumerate() {
        let idx = if n == 0 { index } else { "" };
        out.push_str(&format!("{idx:>5}  "));
        match &step.process {
            Some(p) => {
                for l in lanes {
                    out.push_str(&if l == p { cell(line) } else { cell("│") });
                }
            }
            None => out.push_str(&format!("[harness] {line}")),
        }
        out.push('\n');
    }
}

/// The whole timeline as text.
pub fn timeline(id: &str, case: &crate::case::Case) -> String {
    let mut names = Vec::new();
    lanes(&case.steps, &mut names);
    let mut out = format!("{id}: {}\n", case.title);
    if !case.files.is_empty() {
        let files: Vec<String> = case.files.keys().cloned().collect();
        out.push_str(&format!("files: {}\n", files.join(", ")));
    }
    out.push_str("\n       ");
    for n in &names {
        out.push_str(&cell(n));
    }
    out.push('\n');
    for (i, s) in case.steps.iter().enumerate() {
        let index = (i + 1).to_string();
        match &s.op {
            Op::Together { steps } => {
                out.push_str(&format!(
                    "{index:>5}  ── together (concurrently, then joined) ──\n"
                ));
                for (j, inner) in steps.iter().enumerate() {
                    row(&format!("{index}.{}", j + 1), &names, inner, &mut out);
                }
            }
            _ => row(&index, &names, s, &mut out),
        }
    }
    out
}
