//! Comparing reports from several targets (kernels x filesystems): a matrix
//! of cases by target, and the rows where outcomes differ.

use super::{CaseReport, Report, Status};
use std::collections::BTreeMap;

/// One report's place in the matrix.
#[derive(Debug, Clone)]
pub struct Column {
    /// "6.1.0-18-amd64 ext4"; made unique with the file name when two
    /// reports share a target.
    pub label: String,
    pub kernel: String,
    pub fs: String,
    /// Where the report came from (a file name).
    pub source: String,
}

/// One case across all reports; `cells[i]` is its report in column i,
/// None where that run did not have the case.
#[derive(Debug)]
pub struct Row<'a> {
    pub id: String,
    pub title: String,
    pub cells: Vec<Option<&'a CaseReport>>,
}

impl Row<'_> {
    pub fn topic(&self) -> &str {
        super::topic_of(&self.id)
    }

    pub fn statuses(&self) -> Vec<Option<Status>> {
        self.cells.iter().map(|c| c.map(|c| c.status)).collect()
    }

    /// Outcomes differ: some column has another status, or lacks the case.
    pub fn differs(&self) -> bool {
        let s = self.statuses();
        s.iter().any(|x| *x != s[0])
    }
}

#[derive(Debug)]
pub struct Matrix<'a> {
    pub columns: Vec<Column>,
    /// Every case of every report, sorted by id (so topics stay together).
    pub rows: Vec<Row<'a>>,
}

impl<'a> Matrix<'a> {
    /// `reports` are (source name, report) pairs, one column each, in order.
    pub fn build(reports: &'a [(String, Report)]) -> Matrix<'a> {
        let mut columns: Vec<Column> = reports
            .iter()
            .map(|(source, r)| Column {
                label: r.target_label(),
                kernel: r.environment.kernel_release.clone(),
                fs: r.environment.fs_type.clone(),
                source: source.clone(),
            })
            .collect();
        let labels: Vec<String> = columns.iter().map(|c| c.label.clone()).collect();
        for c in columns.iter_mut() {
            if labels.iter().filter(|l| **l == c.label).count() > 1 {
                c.label = format!("{} ({})", c.label, c.source);
            }
        }
        let mut rows: BTreeMap<&str, Row<'a>> = BTreeMap::new();
        for (i, (_, r)) in reports.iter().enumerate() {
            for case in &r.cases {
                let row = rows.entry(case.id.as_str()).or_insert_with(|| Row {
                    id: case.id.clone(),
                    title: case.title.clone(),
                    cells: vec![None; reports.len()],
                });
                if row.title.is_empty() {
                    row.title = case.title.clone();
                }
                row.cells[i] = Some(case);
            }
        }
        Matrix {
            columns,
            rows: rows.into_values().collect(),
        }
    }

    pub fn differing(&self) -> impl Iterator<Item = &Row<'a>> {
        self.rows.iter().filter(|r| r.differs())
    }
}

/// A cell as text: the status, or `-` where the case was not run.
pub fn cell_text(c: Option<&CaseReport>) -> &'static str {
    c.map(|c| c.status.as_str()).unwrap_or("-")
}

/// The text comparison: a header naming the columns, then one line per
/// case whose outcome differs. Nothing else: the caller prints counts.
pub fn render_text(m: &Matrix) -> String {
    let id_width = m
        .differing()
        .map(|r| r.id.chars().count())
        .chain(std::iter::once("case".len()))
        .max()
        .unwrap_or(4);
    let widths: Vec<usize> = m
        .columns
        .iter()
        .map(|c| c.label.chars().count().max("error".len()))
        .collect();
    let line = |first: &str, cells: Vec<&str>| {
        let mut s = format!("{first:<id_width$}");
        for (c, w) in cells.iter().zip(&widths) {
            s.push_str(&format!("  {c:<w$}"));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line("case", m.columns.iter().map(|c| c.label.as_str()).collect());
    for r in m.differing() {
        out.push_str(&line(
            &r.id,
            r.cells.iter().map(|c| cell_text(*c)).collect(),
        ));
    }
    out
}
