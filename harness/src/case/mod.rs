//! Cases: the model, reading and checking case files, and finding them.

pub mod corpus;
pub mod expect;
mod expect_fault;
pub mod json;
pub mod load;
pub mod locate;
pub mod model;
pub mod select;
pub mod shape;
pub mod validate;
#[cfg(test)]
mod validation_tests;
#[cfg(test)]
mod validation_tests_buffers;
#[cfg(test)]
mod validation_tests_pins;
#[cfg(test)]
mod validation_tests_threads;
pub mod values;

pub use load::{parse_case, parse_case_bytes, Problem};
pub use model::Case;

use std::path::{Path, PathBuf};

/// A case read from disk, with its id (its path under `cases/`, without `.json`).
#[derive(Debug, Clone)]
pub struct LoadedCase {
    pub id: String,
    pub file: PathBuf,
    pub case: Case,
}

/// Every `.json` file under `paths` (files are taken as given, directories
/// are walked, `embedded:cases/...` names are looked up in the binary),
/// sorted, so runs are reproducible.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if corpus::is_embedded(p) {
            out.extend(corpus::embedded_files(p)?);
        } else if p.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// The id of a case file: its path relative to the `cases` directory that
/// contains it, without `.json` ("seed/writer-reader"); the same for an
/// embedded file (`embedded:cases/seed/writer-reader.json`).
pub fn case_id(file: &Path) -> String {
    let file = file
        .to_str()
        .and_then(|f| f.strip_prefix(corpus::EMBEDDED_PREFIX))
        .map_or(file, Path::new);
    let comps: Vec<String> = file
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match comps.iter().rposition(|c| c == "cases") {
        Some(i) if i + 1 < comps.len() => comps[i + 1..].join("/"),
        _ => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// Reads and checks one case file (on disk or embedded).
pub fn load_file(file: &Path, page_size: u64) -> Result<LoadedCase, Vec<Problem>> {
    let bytes = corpus::read(file).map_err(|e| {
        vec![Problem {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read: {e}"),
        }]
    })?;
    let case = parse_case_bytes(file, &bytes, page_size)?;
    Ok(LoadedCase {
        id: case_id(file),
        file: file.to_path_buf(),
        case,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("cases/seed/writer-reader.json", "seed/writer-reader")]
    #[case("/x/y/cases/shared/a/b.json", "shared/a/b")]
    #[case("elsewhere/one.json", "one")]
    #[case("embedded:cases/fork/x.json", "fork/x")]
    fn ids(#[case] path: &str, #[case] id: &str) {
        assert_eq!(case_id(Path::new(path)), id);
    }
}
