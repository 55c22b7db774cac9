//! What a person watching a run sees: a progress bar on a terminal, plain
//! lines otherwise (CI logs), and the end-of-run summary.

use crate::report::{baseline::Verdict, first_line, CaseReport, Report, Status};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Where human-readable output goes: standard output, unless a machine
/// format (`--ktap -`) has taken it, then standard error.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    pub stderr: bool,
}

impl Console {
    pub fn line(&self, text: &str) {
        if self.stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    pub fn is_terminal(&self) -> bool {
        if self.stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        }
    }
}

/// Told of each finished case (from several threads at once).
pub struct Progress {
    bar: Option<ProgressBar>,
    verbose: bool,
    console: Console,
    /// The target's name when several run at once, before every line.
    tag: Option<String>,
}

impl Progress {
    /// A bar for `total` cases, labelled with the target, when the console
    /// is a terminal; otherwise nothing but the per-case lines.
    pub fn new(
        total: usize,
        verbose: bool,
        console: Console,
        target: &str,
        tag: Option<&str>,
        multi: &indicatif::MultiProgress,
    ) -> Progress {
        let bar = console.is_terminal().then(|| {
            let draw = if console.stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            };
            let bar = ProgressBar::with_draw_target(Some(total as u64), draw);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {wide_msg}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(target.to_string());
            // One bar per target, all drawn together when targets run at once.
            multi.add(bar)
        });
        Progress {
            bar,
            verbose,
            console,
            tag: tag.map(str::to_string),
        }
    }

    pub fn case_done(&self, r: &CaseReport) {
        let shown = self.verbose || !matches!(r.status, Status::Pass | Status::Skip);
        let lines: String = case_lines(r)
            .lines()
            .map(|l| tagged(self.tag.as_deref(), l) + "\n")
            .collect();
        match &self.bar {
            Some(bar) => {
                if shown {
                    // Printed above the bar, which stays at the bottom.
                    bar.println(lines.trim_end());
                }
                bar.set_message(r.id.clone());
                bar.inc(1);
            }
            None if shown => self.console.line(lines.trim_end()),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A finished case: its status, id and time, then its reason indented.
pub fn case_lines(r: &CaseReport) -> String {
    let tag = match r.status {
        Status::Pass => "PASS ",
        Status::Fail => "FAIL ",
        Status::Skip => "SKIP ",
        Status::Error => "ERROR",
    };
    let mut out = format!("{tag} {} ({} ms)\n", r.id, r.duration_ms);
    if let Some(reason) = &r.reason {
        for line in reason.lines() {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out
}

/// A log line of one target of a multi-target run: `[ext4] line`.
pub fn tagged(tag: Option<&str>, line: &str) -> String {
    match tag {
        Some(t) => format!("[{t}] {line}"),
        None => line.to_string(),
    }
}

/// Counts in words: "5 cases: 1 pass, 1 fail, 1 skip, 2 error (1 known)".
fn counts(s: &crate::report::Summary) -> String {
    let known = if s.known > 0 {
        format!(" ({} known)", s.known)
    } else {
        String::new()
    };
    format!(
        "{} cases: {} pass, {} fail, {} skip, {} error{known}",
        s.total, s.pass, s.fail, s.skip, s.error
    )
}

/// The end of a multi-target run: each target's counts, then the total.
pub fn combined(reports: &[Report]) -> String {
    let mut total = crate::report::Summary::default();
    let mut out = String::new();
    for r in reports {
        let s = &r.summary;
        out.push_str(&format!(
            "[{}] {}\n",
            crate::report::CaseReport::target_of(r),
            counts(s)
        ));
        total.total += s.total;
        total.pass += s.pass;
        total.fail += s.fail;
        total.skip += s.skip;
        total.error += s.error;
        total.known += s.known;
    }
    let new = total.fail + total.error - total.known;
    out.push_str(&format!(
        "all {} targets: {}; {new} new failure(s)\n",
        reports.len(),
        counts(&total)
    ));
    out
}

/// Where each output of the run went.
pub struct Written {
    pub kind: &'static str,
    pub place: String,
}

/// The end of a run in a few lines: counts, each case that did not hold
/// with its first failing step, the baseline's verdict, and the reports.
pub fn summary(report: &Report, verdict: Option<(&str, &Verdict)>, written: &[Written]) -> String {
    let s = &report.summary;
    let e = &report.environment;
    let mut out = format!(
        "{} in {} ms ({} {} on {}, page size {})\n",
        counts(s),
        s.duration_ms,
        e.kernel_release,
        e.arch,
        match e.target.as_deref() {
            Some(t) if t != e.fs_type => format!("{} (target {t})", e.fs_type),
            _ => e.fs_type.clone(),
        },
        e.page_size
    );
    let leftovers: Vec<&str> = report
        .cases
        .iter()
        .filter_map(|c| c.leftover.as_deref())
        .collect();
    if let Some(first) = leftovers.first() {
        out.push_str(&format!(
            "{} scratch directories could not be removed (first: {first})\n",
            leftovers.len()
        ));
    }
    let failures: Vec<&CaseReport> = report.cases.iter().filter(|c| c.is_failure()).collect();
    if !failures.is_empty() {
        out.push_str("did not pass:\n");
        for c in failures {
            let known = verdict
                .and_then(|(_, v)| v.known_failures.iter().find(|(k, _)| k.id == c.id))
                .map(|_| " [known]")
                .unwrap_or("");
            out.push_str(&format!(
                "  {:<5} {}{known}: {}\n",
                c.status.as_str().to_uppercase(),
                c.id,
                first_line(c.reason.as_deref().unwrap_or(""))
            ));
        }
    }
    if let Some((name, v)) = verdict {
        out.push_str(&format!(
            "baseline {name}: {} known failure(s), {} new\n",
            v.known_failures.len(),
            v.new_failures.len()
        ));
        for c in &v.new_failures {
            out.push_str(&format!(
                "  new failure: {} ({})\n",
                c.id,
                c.status.as_str()
            ));
        }
        for e in &v.now_passing {
            let why = if e.reason.is_empty() {
                String::new()
            } else {
                format!("  # {}", e.reason)
            };
            out.push_str(&format!(
                "  now passes (remove it from the baseline, line {}): {}{why}\n",
                e.line, e.id
            ));
        }
    }
    for w in written {
        out.push_str(&format!("{}: {}\n", w.kind, w.place));
    }
    out
}
