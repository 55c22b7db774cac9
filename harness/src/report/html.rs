//! The comparison as one self-contained HTML page: a grid of cases (rows,
//! grouped by topic) by target (columns: kernel, filesystem), one colour per
//! outcome, filters by topic and outcome, and a cell's steps and byte diff
//! shown on click.
//!
//! The grid is rendered on the server side (this module builds the context,
//! templates/compare.html the markup, escaping every value), not by script,
//! so the page reads without JavaScript and a test can check the cells in
//! the DOM. The script only
//! filters and shows details. Its state lives in the URL fragment
//! (`#case=ID&col=N`, `#outcome=fail,error`, `#topic=shared`, `#diff`), so a
//! link can point a colleague at one cell.

use super::compare::{Matrix, Row};
use super::pages;
use super::{brief, first_line, step_detail, CaseReport, Status};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What templates/compare.html shows; every string is escaped there.
#[derive(Serialize)]
struct Page<'a> {
    rows: usize,
    differing: usize,
    absent: usize,
    topics: Vec<Count<'a>>,
    outcomes: Vec<Count<'a>>,
    columns: Vec<Header<'a>>,
    groups: Vec<Group<'a>>,
    details: Vec<Detail>,
}

#[derive(Serialize)]
struct Count<'a> {
    name: &'a str,
    count: usize,
}

#[derive(Serialize)]
struct Header<'a> {
    kernel: &'a str,
    fs: &'a str,
    /// The target or file name when another column has the same kernel and filesystem.
    extra: Option<&'a str>,
    /// Architecture and page size, when the columns are not all of one.
    machine: Option<&'a str>,
    source: &'a str,
}

/// The rows of one topic, under its heading row.
#[derive(Serialize)]
struct Group<'a> {
    topic: &'a str,
    rows: Vec<GridRow<'a>>,
}

#[derive(Serialize)]
struct GridRow<'a> {
    id: &'a str,
    title: &'a str,
    differs: bool,
    absent: bool,
    cells: Vec<Cell>,
}

#[derive(Serialize)]
struct Cell {
    status: &'static str,
    /// The status, or a dash where the report lacks the case.
    text: &'static str,
    step: Option<usize>,
    /// The id of its hidden story in `details`.
    detail: String,
}

/// A cell's story, shown in the side panel when the cell is clicked.
#[derive(Serialize)]
struct Detail {
    id: String,
    title: String,
    body: String,
}

/// The page, complete.
pub fn render(m: &Matrix) -> String {
    let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &m.rows {
        *topics.entry(r.topic()).or_default() += 1;
    }
    let outcomes = OUTCOMES
        .iter()
        .map(|&o| Count {
            name: o,
            count: m
                .rows
                .iter()
                .filter(|r| r.cells.iter().any(|c| status_class(*c) == o))
                .count(),
        })
        .collect();
    let mut groups: Vec<Group> = Vec::new();
    let mut details = Vec::new();
    for (ri, r) in m.rows.iter().enumerate() {
        if groups.last().is_none_or(|g| g.topic != r.topic()) {
            groups.push(Group {
                topic: r.topic(),
                rows: Vec::new(),
            });
        }
        let row = grid_row(ri, r);
        for (ci, c) in r.cells.iter().enumerate() {
            details.push(Detail {
                id: row.cells[ci].detail.clone(),
                title: format!("{} on {}", r.id, m.columns[ci].label),
                body: cell_story(*c, &r.title),
            });
        }
        groups.last_mut().expect("pushed above").rows.push(row);
    }
    pages::render(
        "compare.html",
        Page {
            rows: m.rows.len(),
            differing: m.differing().count(),
            absent: m.absent().count(),
            topics: topics
                .into_iter()
                .map(|(name, count)| Count { name, count })
                .collect(),
            outcomes,
            columns: m
                .columns
                .iter()
                .map(|c| Header {
                    kernel: &c.kernel,
                    fs: &c.fs,
                    extra: c.extra.as_deref(),
                    machine: c.machine.as_deref(),
                    source: &c.source,
                })
                .collect(),
            groups,
            details,
        },
    )
}

const OUTCOMES: [&str; 5] = ["pass", "fail", "skip", "error", "absent"];

fn status_class(c: Option<&CaseReport>) -> &'static str {
    match c.map(|c| c.status) {
        Some(Status::Pass) => "pass",
        Some(Status::Fail) => "fail",
        Some(Status::Skip) => "skip",
        Some(Status::Error) => "error",
        None => "absent",
    }
}

fn grid_row<'a>(ri: usize, r: &'a Row) -> GridRow<'a> {
    GridRow {
        id: &r.id,
        title: &r.title,
        differs: r.differs(),
        absent: r.absent(),
        cells: r
            .cells
            .iter()
            .enumerate()
            .map(|(ci, c)| Cell {
                status: status_class(*c),
                text: if c.is_some() { status_class(*c) } else { "—" },
                step: c.and_then(|c| c.failed_step),
                detail: format!("d{ri}-{ci}"),
            })
            .collect(),
    }
}

/// What a person wants on clicking a cell: the outcome and why, the failing
/// step with its diff, then every step that ran.
fn cell_story(c: Option<&CaseReport>, title: &str) -> String {
    let Some(c) = c else {
        return format!("{title}\n\nnot in this report");
    };
    let mut s = format!("{}\n\n{}", c.title, c.status.as_str().to_uppercase());
    if let Some(reason) = &c.reason {
        let _ = write!(s, ": {}", first_line(reason));
    }
    s.push_str("\n\n");
    if let Some(step) = c.failing_step() {
        s.push_str(&step_detail(step));
        s.push('\n');
    } else if let Some(reason) = &c.reason {
        s.push_str(reason);
        s.push_str("\n\n");
    }
    if !c.steps.is_empty() {
        s.push_str("steps:\n");
        for st in &c.steps {
            let seen = st.observed.as_ref().map(brief).unwrap_or_default();
            let _ = writeln!(
                s,
                "{:>5} {:<8} {}  → {seen}",
                st.index,
                st.status_str(),
                st.summary
            );
        }
    }
    s
}
