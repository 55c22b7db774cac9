//! Outside tools the format tests check against: xmllint (JUnit XSD),
//! Python's kcidb-io (KCIDB schema), Chromium (the HTML page). Under CI
//! (CI=true) a missing tool fails the test with what to install; elsewhere
//! the test is skipped with the reason printed.

use std::path::PathBuf;
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says a tool is missing: a panic under CI, a printed skip otherwise.
pub fn missing(what: &str, install: &str) {
    let msg = format!("{what} is not available; install it with: {install}");
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// An executable on PATH.
pub fn find(name: &str, install: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        missing(name, install);
    }
    found
}

pub fn xmllint() -> Option<PathBuf> {
    find("xmllint", "apt-get install -y libxml2-utils")
}

pub fn chromium() -> Option<PathBuf> {
    find("chromium", "apt-get install -y chromium")
}

/// A Python interpreter that can import kcidb_io.
pub fn python_with_kcidb() -> Option<PathBuf> {
    let install = "pip install kcidb-io";
    let py = find("python3", install)?;
    let ok = Command::new(&py)
        .args(["-c", "import kcidb_io"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(py)
    } else {
        missing("the Python package kcidb-io", install);
        None
    }
}

/// Headless Chromium as the machine's root user needs it: no sandbox, no
/// GPU, and no background connections (the network is closed).
pub fn chromium_command(chromium: &PathBuf, profile: &std::path::Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// xmllint's answer to an XPath expression on `file`, without its final newline.
pub fn xpath(xmllint: &std::path::Path, file: &std::path::Path, expr: &str) -> String {
    let o = Command::new(xmllint)
        .args(["--xpath", expr])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

/// The JUnit XSD of the Jenkins/fstests format the JUnit writer follows.
pub fn junit_xsd() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit.xsd")
}

/// xmllint's validation of `file` against [`junit_xsd`].
pub fn junit_schema_check(
    xmllint: &std::path::Path,
    file: &std::path::Path,
) -> std::process::Output {
    Command::new(xmllint)
        .args(["--noout", "--schema"])
        .arg(junit_xsd())
        .arg(file)
        .output()
        .unwrap()
}
