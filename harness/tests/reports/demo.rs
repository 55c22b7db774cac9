//! A small corpus with one case of each outcome, and running the harness on it.

use std::path::{Path, PathBuf};
use std::process::Output;

pub use crate::common::{exe, repo, text};

/// A fresh directory under cargo's target/tmp, kept after the test so a
/// person can look at what was written (the screenshots, say).
pub fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A writer stores, a reader loads; `expected` is what the load must see.
fn writer_reader(expected: &str) -> String {
    format!(
        r#"{{
  "title": "Demo: a MAP_SHARED store is seen by another process",
  "description": "Test fixture of harness/tests/reports.rs, not a case.",
  "refs": ["harness self-test"],
  "files": {{ "f": {{ "size": 64 }} }},
  "steps": [
    {{ "in": "writer", "do": "open", "path": "f", "flags": "O_RDWR", "as": "fd" }},
    {{ "in": "writer", "do": "mmap", "fd": "fd", "len": 64, "prot": "READ|WRITE", "flags": "SHARED", "as": "m" }},
    {{ "in": "writer", "do": "store", "map": "m", "at": 0, "text": "Hello from writer!" }},
    {{ "in": "reader", "do": "open", "path": "f", "flags": "O_RDWR", "as": "fd" }},
    {{ "in": "reader", "do": "mmap", "fd": "fd", "len": 64, "prot": "READ|WRITE", "flags": "SHARED", "as": "m" }},
    {{ "in": "reader", "do": "load", "map": "m", "at": 0, "len": 18, "expect": {{ "text": "{expected}" }} }}
  ]
}}
"#
    )
}

/// Writes `<dir>/cases/demo/`: `pass`, `fail` (one expected byte wrong:
/// step 6 fails with a byte diff at offset 13), `skip` (requires a
/// filesystem that does not exist); with `broken`, also `hang` (killed at
/// its 1 s limit: an error with steps) and `broken` (a file that does not
/// load: an error without steps).
pub fn corpus(dir: &Path, broken: bool) -> PathBuf {
    let cases = dir.join("cases");
    let demo = cases.join("demo");
    std::fs::create_dir_all(&demo).unwrap();
    let pass = writer_reader("Hello from writer!");
    std::fs::write(demo.join("pass.json"), &pass).unwrap();
    std::fs::write(demo.join("fail.json"), writer_reader("Hello from wrlter!")).unwrap();
    let mut skip: serde_json::Value = serde_json::from_str(&pass).unwrap();
    skip["requires"] = serde_json::json!({ "fs": ["nosuchfs"] });
    std::fs::write(
        demo.join("skip.json"),
        serde_json::to_string_pretty(&skip).unwrap(),
    )
    .unwrap();
    if broken {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        std::fs::copy(fixtures.join("blocks-forever.json"), demo.join("hang.json")).unwrap();
        std::fs::copy(fixtures.join("invalid.json"), demo.join("broken.json")).unwrap();
    }
    cases
}

/// `mmapconf run` on `cases` with a scratch directory inside `dir`.
pub fn run(dir: &Path, cases: &Path, extra: &[&str]) -> Output {
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    exe()
        .arg("run")
        .arg("--dir")
        .arg(&scratch)
        .args(extra)
        .arg(cases)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `run` writing `r.json`, judged against `baseline` (a file or a directory).
pub fn run_with_baseline(dir: &Path, cases: &Path, baseline: &Path) -> Output {
    run(
        dir,
        cases,
        &[
            "--report",
            "r.json",
            "--baseline",
            baseline.to_str().unwrap(),
        ],
    )
}
