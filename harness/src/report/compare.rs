//! Comparing reports from several targets (kernels x filesystems): a matrix
//! of cases by target, and the rows where outcomes differ.

use super::{CaseReport, Report, Status};
use std::collections::BTreeMap;

/// One report's place in the matrix.
#[derive(Debug, Clone)]
pub struct Column {
    /// "6.1.0-18-amd64 ext4", with `extra` in parentheses when it has one:
    /// every column's label is different.
    pub label: String,
    pub kernel: String,
    pub fs: String,
    /// Where the report came from (a file name).
    pub source: String,
    /// The machine's architecture and page size ("aarch64 64K"), when the
    /// reports compared are not all of one (then every label ends with it).
    pub machine: Option<String>,
    /// What tells this column from another of the same kernel and
    /// filesystem: the report's target name when those differ, else its
    /// file name (with its position when even that is the same).
    pub extra: Option<String>,
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

    /// Outcomes differ: two reports that have the case gave it different
    /// statuses. A report without the case is `absent`, not a difference.
    pub fn differs(&self) -> bool {
        let mut s = self.statuses().into_iter().flatten();
        let first = s.next();
        s.any(|x| Some(x) != first)
    }

    /// Some report does not have the case at all.
    pub fn absent(&self) -> bool {
        self.cells.iter().any(Option::is_none)
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
                machine: None,
                extra: None,
            })
            .collect();
        name_machines(&mut columns, reports);
        let targets: Vec<Option<String>> = reports
            .iter()
            .map(|(_, r)| r.environment.target.clone())
            .collect();
        distinguish(&mut columns, &targets);
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

    pub fn absent(&self) -> impl Iterator<Item = &Row<'a>> {
        self.rows.iter().filter(|r| r.absent())
    }

    /// The rows a person must look at: outcomes differ, or a report lacks the case.
    pub fn notable(&self) -> impl Iterator<Item = &Row<'a>> {
        self.rows.iter().filter(|r| r.differs() || r.absent())
    }
}

/// The architecture and page size of each report ("aarch64 64K"), put in
/// every column and label when they are not the same for all: the same
/// kernel version on two architectures or page sizes is two columns.
fn name_machines(columns: &mut [Column], reports: &[(String, Report)]) {
    let machines: Vec<String> = reports
        .iter()
        .map(|(_, r)| machine_of(&r.environment.arch, r.environment.page_size))
        .collect();
    if machines.iter().all(|m| *m == machines[0]) {
        return;
    }
    for (c, m) in columns.iter_mut().zip(machines) {
        c.label = format!("{} {m}", c.label);
        c.machine = Some(m);
    }
}

/// "x86_64 4K", "ppc64le 64K": uname's machine and the page size in KiB.
pub fn machine_of(arch: &str, page_size: u64) -> String {
    format!("{arch} {}K", page_size / 1024)
}

/// Gives every column that shares its kernel and filesystem with another
/// an `extra` that tells them apart: the target names if they are all
/// different, else the file names if they are, else the file name and the
/// column's position.
fn distinguish(columns: &mut [Column], targets: &[Option<String>]) {
    let mut labels: Vec<String> = columns.iter().map(|c| c.label.clone()).collect();
    labels.sort();
    labels.dedup();
    for label in &labels {
        let group: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].label == *label)
            .collect();
        if group.len() < 2 {
            continue;
        }
        let by_target: Option<Vec<String>> = group.iter().map(|&i| targets[i].clone()).collect();
        let by_file: Vec<String> = group.iter().map(|&i| columns[i].source.clone()).collect();
        let extras: Vec<String> = if let Some(t) = by_target.filter(|t| all_different(t)) {
            t
        } else if all_different(&by_file) {
            by_file
        } else {
            group
                .iter()
                .map(|&i| format!("{} #{}", columns[i].source, i + 1))
                .collect()
        };
        for (&i, extra) in group.iter().zip(extras) {
            columns[i].label = format!("{label} ({extra})");
            columns[i].extra = Some(extra);
        }
    }
}

fn all_different(names: &[String]) -> bool {
    let mut seen: Vec<&String> = names.iter().collect();
    seen.sort();
    seen.dedup();
    seen.len() == names.len()
}

/// A cell as text: the status, or `-` where the case was not run.
pub fn cell_text(c: Option<&CaseReport>) -> &'static str {
    c.map(|c| c.status.as_str()).unwrap_or("-")
}

/// The text comparison: a header naming the columns, then one line per
/// case whose outcome differs or that a report lacks (`-`). Nothing else:
/// the caller prints counts.
pub fn render_text(m: &Matrix) -> String {
    let id_width = m
        .notable()
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
    for r in m.notable() {
        out.push_str(&line(
            &r.id,
            r.cells.iter().map(|c| cell_text(*c)).collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(source: &str) -> Column {
        Column {
            label: "6.1 ext4".into(),
            kernel: "6.1".into(),
            fs: "ext4".into(),
            source: source.into(),
            machine: None,
            extra: None,
        }
    }

    #[test]
    fn columns_of_several_machines_name_their_architecture_and_page_size() {
        let report = |arch: &str, page_size: u64| {
            let mut r: Report = serde_json::from_value(serde_json::json!({
                "schema_version": 1, "started_at": "", "cases": [],
                "summary": {"total": 0, "pass": 0, "fail": 0, "skip": 0, "error": 0, "duration_ms": 0},
                "environment": {"kernel_release": "6.12", "kernel_version": "", "arch": "x86_64",
                    "page_size": 4096, "distro": "", "fs_type": "ext4", "mount_options": "",
                    "mount_point": "", "mount_source": "", "scratch_dir": "", "euid": 0,
                    "harness_version": ""}
            }))
            .expect("a minimal report parses");
            r.environment.arch = arch.into();
            r.environment.page_size = page_size;
            ("r.json".to_string(), r)
        };
        let mixed = [report("x86_64", 4096), report("ppc64le", 65536)];
        let m = Matrix::build(&mixed);
        let labels: Vec<&str> = m.columns.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["6.12 ext4 x86_64 4K", "6.12 ext4 ppc64le 64K"]);
        // One machine for all: the labels stay as they were.
        let same = [report("aarch64", 16384), report("aarch64", 16384)];
        let m = Matrix::build(&same);
        assert!(m.columns.iter().all(|c| c.machine.is_none()));
        assert!(m.columns[0].label.starts_with("6.12 ext4 ("));
    }

    #[test]
    fn a_case_a_report_lacks_is_absent_not_different() {
        let case = |s| CaseReport::not_run("t/c".into(), String::new(), s, String::new());
        let (pass, fail) = (case(Status::Pass), case(Status::Fail));
        let row = |cells| Row {
            id: "t/c".into(),
            title: String::new(),
            cells,
        };
        let r = row(vec![Some(&pass), None, Some(&pass)]);
        assert!(!r.differs() && r.absent());
        let r = row(vec![Some(&pass), None, Some(&fail)]);
        assert!(r.differs() && r.absent());
        let r = row(vec![None, Some(&fail), Some(&pass)]);
        assert!(r.differs());
        let r = row(vec![Some(&pass), Some(&pass)]);
        assert!(!r.differs() && !r.absent());
    }

    fn labels(sources: &[&str], targets: &[Option<&str>]) -> Vec<String> {
        let mut cols: Vec<Column> = sources.iter().map(|s| column(s)).collect();
        let targets: Vec<Option<String>> = targets.iter().map(|t| t.map(String::from)).collect();
        distinguish(&mut cols, &targets);
        cols.into_iter().map(|c| c.label).collect()
    }

    #[test]
    fn columns_of_one_kernel_and_filesystem_get_unique_labels() {
        // Targets tell them apart when they differ ...
        assert_eq!(
            labels(&["a.json", "b.json"], &[Some("ext4"), Some("ext4-1k")]),
            ["6.1 ext4 (ext4)", "6.1 ext4 (ext4-1k)"]
        );
        // ... else the file names ...
        assert_eq!(
            labels(&["a.json", "b.json"], &[Some("ext4"), Some("ext4")]),
            ["6.1 ext4 (a.json)", "6.1 ext4 (b.json)"]
        );
        assert_eq!(
            labels(&["a.json", "b.json"], &[None, Some("x")]),
            ["6.1 ext4 (a.json)", "6.1 ext4 (b.json)"]
        );
        // ... else the file name and position.
        assert_eq!(
            labels(&["a.json", "a.json"], &[None, None]),
            ["6.1 ext4 (a.json #1)", "6.1 ext4 (a.json #2)"]
        );
        // A column alone with its kernel and filesystem keeps its label.
        let mut cols = vec![column("a.json"), column("b.json")];
        cols[1].label = "6.1 tmpfs".into();
        distinguish(&mut cols, &[None, None]);
        assert!(cols.iter().all(|c| c.extra.is_none()));
    }
}
