//! The outputs of a run as their consumers read them: every writer to
//! standard output (`-`), KTAP counted as kunit_tool counts it
//! (reports/kunit_count.rs), TAP 13 read by tappy, baselines shown as
//! expected failures in KTAP, JUnit and KCIDB, and multi-target runs.

// Shared with tests/reports.rs, which uses other parts of them.
#![allow(dead_code, unused_imports)]

mod common;
#[path = "reports/demo.rs"]
mod demo;
#[path = "reports/ktap_check.rs"]
mod ktap_check;
#[path = "reports/kunit_count.rs"]
mod kunit_count;
#[path = "reports/tools.rs"]
mod tools;

use demo::{exe, text, workdir};
use kunit_count::{Counts, Status};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_writer_takes_dash_for_standard_output_and_moves_the_log_to_stderr() {
    let dir = workdir("outputs-stdout");
    let cases = demo::corpus(&dir, false);
    for (args, kind) in [
        (&["--report", "-"][..], "report"),
        (&["--ktap", "-", "--report", "r.json"][..], "ktap"),
        (
            &["--ktap", "-", "--tap13", "--report", "r.json"][..],
            "ktap",
        ),
        (&["--junit", "-", "--report", "r.json"][..], "junit"),
        (&["--kcidb", "-", "--report", "r.json"][..], "kcidb"),
    ] {
        let o = demo::run(&dir, &cases, args);
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            err.contains("3 cases: 1 pass, 1 fail, 1 skip, 0 error"),
            "{args:?}: the summary goes to stderr: {err}"
        );
        assert!(err.contains("FAIL  demo/fail ("), "{args:?}: {err}");
        assert!(
            err.lines()
                .any(|l| l == format!("{kind}: - (standard output)")),
            "{args:?}: {err}"
        );
        match (kind, args.contains(&"--tap13")) {
            ("report", _) => {
                let r: mmapconf::report::Report = serde_json::from_str(&out)
                    .unwrap_or_else(|e| panic!("not a report ({e}): {out}"));
                assert_eq!(r.summary.total, 3);
                assert!(!dir.join("-").exists(), "a file named `-` was written");
            }
            ("ktap", false) => {
                let tests = ktap_check::parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
                assert_eq!(tests.len(), 3);
            }
            ("ktap", true) => {
                assert!(out.starts_with("TAP version 13\n1..3\n"), "{out}")
            }
            ("junit", _) => {
                assert!(out.starts_with("<?xml"), "{out}");
                assert_eq!(out.matches("<testcase ").count(), 3, "{out}");
                if let Some(xmllint) = tools::xmllint() {
                    let f = dir.join("stdout.xml");
                    std::fs::write(&f, &out).unwrap();
                    let v = tools::junit_schema_check(&xmllint, &f);
                    assert!(v.status.success(), "{}", text(&v));
                }
            }
            _ => {
                let k: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
                assert_eq!(k["tests"].as_array().unwrap().len(), 3);
            }
        }
    }
}

#[test]
fn two_writers_cannot_share_standard_output() {
    let dir = workdir("outputs-two-stdout");
    let cases = demo::corpus(&dir, false);
    let o = demo::run(
        &dir,
        &cases,
        &["--report", "r.json", "--ktap", "-", "--junit", "-"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("--ktap - and --junit - both ask for standard output"),
        "{}",
        text(&o)
    );
    assert!(stdout(&o).is_empty() && !dir.join("r.json").exists());
    let o = demo::run(&dir, &cases, &["--report", "-", "--kcidb", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("--report - and --kcidb - both"));
}

#[test]
fn compare_writes_its_page_to_standard_output_and_the_table_to_stderr() {
    let dir = workdir("outputs-compare-stdout");
    let cases = demo::corpus(&dir, false);
    demo::run(&dir, &cases, &["--report", "r.json"]);
    let o = exe()
        .args(["compare", "r.json", "r.json", "--html", "-"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let page = stdout(&o);
    assert!(
        page.trim_start()
            .to_ascii_lowercase()
            .starts_with("<!doctype html"),
        "{page}"
    );
    assert!(stderr(&o).starts_with("case "), "{}", stderr(&o));
}

/// The demo corpus with every outcome, plus `demo/known`: a copy of
/// `demo/fail` that the baseline `b.txt` lists.
fn known_corpus(dir: &Path) -> PathBuf {
    let cases = demo::corpus(dir, true);
    std::fs::copy(cases.join("demo/fail.json"), cases.join("demo/known.json")).unwrap();
    std::fs::write(
        dir.join("b.txt"),
        "demo/known # one wrong byte on purpose\n",
    )
    .unwrap();
    cases
}

/// kunit_tool's counts for an mmapconf summary: known failures are
/// `ok # XFAIL` (passed), errors and new failures `not ok` (failed).
fn expected_counts(s: &mmapconf::report::Summary) -> Counts {
    Counts {
        passed: s.pass + s.known,
        failed: s.fail + s.error - s.known,
        crashed: 0,
        skipped: s.skip,
        errors: 0,
    }
}

#[test]
fn kunit_tool_counts_the_ktap_as_the_run_summary_says() {
    let dir = workdir("outputs-kunit");
    let cases = known_corpus(&dir);
    let o = demo::run(
        &dir,
        &cases,
        &["--ktap", "-", "--report", "r.json", "--baseline", "b.txt"],
    );
    // demo/fail is new, the errors are new: the run fails.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = mmapconf::report::read_json(&dir.join("r.json")).unwrap();
    let s = &report.summary;
    assert_eq!(
        (s.total, s.pass, s.fail, s.skip, s.error, s.known),
        (6, 1, 2, 1, 2, 1),
        "{}",
        text(&o)
    );
    assert!(stderr(&o).contains("6 cases: 1 pass, 2 fail, 1 skip, 2 error (1 known)"));
    let ktap = stdout(&o);
    let main = kunit_count::parse(&ktap);
    assert_eq!(main.counts, expected_counts(s), "{ktap}");
    assert_eq!(main.status, Status::Failure);
    let leaves = kunit_count::leaves(&main);
    let status = |id: &str| leaves.iter().find(|(n, _)| n == id).map(|(_, s)| *s);
    assert_eq!(status("demo/pass"), Some(Status::Success));
    assert_eq!(status("demo/known"), Some(Status::Success), "{ktap}");
    assert_eq!(status("demo/fail"), Some(Status::Failure));
    assert_eq!(status("demo/hang"), Some(Status::Failure));
    assert_eq!(status("demo/broken"), Some(Status::Failure));
    assert_eq!(status("demo/skip"), Some(Status::Skipped));
    assert!(ktap.contains(" demo/known # XFAIL b.txt:1: one wrong byte on purpose\n"));
    assert!(ktap.contains("# Totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:2\n"));
    // Still KTAP by the letter of ktap.rst.
    ktap_check::parse(&ktap).unwrap_or_else(|e| panic!("{e}\n{ktap}"));

    // The count can fail. The known failure as a plain `not ok`:
    let line = ktap
        .lines()
        .find(|l| l.contains(" demo/known # XFAIL"))
        .unwrap();
    let plain = ktap.replace(line, &format!("not {}", line.split(" # ").next().unwrap()));
    assert_ne!(kunit_count::parse(&plain).counts, expected_counts(s));
    // An errored case whose steps are a nested block of passing subtests
    // (the old output): kunit_tool counts the steps, not the case.
    let nested = "KTAP version 1\n1..1\n  KTAP version 1\n  1..2\n  ok 1 step 1\n  ok 2 step 2\nnot ok 1 demo/hang # ERROR step 3 timed out\n";
    let c = kunit_count::parse(nested).counts;
    assert_eq!((c.passed, c.failed), (2, 1), "one case counted as three");
    // A number out of order is a parse error.
    let c = kunit_count::parse("KTAP version 1\n1..2\nok 1 a\nok 3 b\n").counts;
    assert_eq!(c.errors, 1);
    // And a missing case counts as crashed.
    let c = kunit_count::parse("KTAP version 1\n1..2\nok 1 a\n").counts;
    assert_eq!((c.passed, c.crashed), (1, 1));
}

#[test]
fn kunit_tool_counts_a_multi_target_document_by_its_cases() {
    use mmapconf::report::{ktap, Report};
    let dir = workdir("outputs-kunit-two");
    let cases = known_corpus(&dir);
    demo::run(&dir, &cases, &["--report", "r.json", "--baseline", "b.txt"]);
    let first: Report = mmapconf::report::read_json(&dir.join("r.json")).unwrap();
    let mut second = first.clone();
    second.environment.target = Some("second".into());
    let both = [first.clone(), second];
    // TAP 13 is flat: one plan over both targets, each case named `<target>:<id>`.
    let tap = ktap::render_all(&both, ktap::Version::Tap13);
    assert!(tap.starts_with("TAP version 13\n1..12\n"), "{tap}");
    assert!(tap.contains(" second:demo/pass\n"), "{tap}");
    assert_eq!(
        tap.lines()
            .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
            .count(),
        12
    );
    let doc = ktap::render_all(&both, ktap::Version::Ktap1);
    let c = kunit_count::parse(&doc).counts;
    let one = expected_counts(&first.summary);
    assert_eq!(
        (c.passed, c.failed, c.skipped, c.crashed, c.errors),
        (2 * one.passed, 2 * one.failed, 2 * one.skipped, 0, 0),
        "{doc}"
    );
}

/// Reads a TAP file with tap.py's parser: prints the counts as JSON, or
/// fails on a line that is not TAP 13, a version other than 13, or a plan
/// the tests do not meet.
const TAP_CHECK: &str = r#"
import json, sys
from tap.parser import Parser
lines = list(Parser().parse_file(sys.argv[1]))
assert lines[0].category == "version" and lines[0].version == 13, "not TAP version 13"
unknown = [l.text for l in lines if l.category == "unknown"]
assert not unknown, f"not TAP: {unknown[:3]}"
plans = [l for l in lines if l.category == "plan"]
tests = [l for l in lines if l.category == "test"]
assert len(plans) == 1 and plans[0].expected_tests == len(tests), "the plan is not met"
print(json.dumps({
    "ok": sum(t.ok and not t.skip and not t.todo for t in tests),
    "not_ok": sum(not t.ok and not t.todo for t in tests),
    "skip": sum(t.skip for t in tests),
    "todo": sum(t.todo for t in tests),
}))
"#;

fn tappy_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import tap.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        tools::missing("tap.py (tappy)", "pip install tap.py");
    }
    ok && tools::find("tappy", "pip install tap.py").is_some()
}

#[test]
fn tappy_reads_the_tap13_mode() {
    if !tappy_ready() {
        return;
    }
    let dir = workdir("outputs-tap13");
    let cases = known_corpus(&dir);
    let o = demo::run(
        &dir,
        &cases,
        &[
            "--ktap",
            "t.tap",
            "--tap13",
            "--report",
            "r.json",
            "--baseline",
            "b.txt",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = mmapconf::report::read_json(&dir.join("r.json"))
        .unwrap()
        .summary;
    let check = |file: &Path| {
        Command::new("python3")
            .args(["-c", TAP_CHECK])
            .arg(file)
            .output()
            .unwrap()
    };
    let c = check(&dir.join("t.tap"));
    assert!(c.status.success(), "{}", text(&c));
    // tap.py prints a warning about its optional YAML support first.
    let last = stdout(&c).lines().last().unwrap_or_default().to_string();
    let counts: Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {}", text(&c)));
    assert_eq!(
        counts,
        serde_json::json!({
            "ok": s.pass, "not_ok": s.fail + s.error - s.known, "skip": s.skip, "todo": s.known
        })
    );
    // tappy itself: each line a unittest test; the known failure is an expected failure.
    let t = Command::new("tappy")
        .arg(dir.join("t.tap"))
        .output()
        .unwrap();
    let out = text(&t);
    assert!(out.contains(&format!("Ran {} tests", s.total)), "{out}");
    assert!(
        out.contains(&format!(
            "FAILED (failures={}, skipped={}, expected failures={})",
            s.fail + s.error - s.known,
            s.skip,
            s.known
        )),
        "{out}"
    );
    // The check can fail: a line that is not TAP, and a plan not met.
    let tap = std::fs::read_to_string(dir.join("t.tap")).unwrap();
    for (name, bad) in [
        ("stray.tap", tap.replacen("ok 1 ", "garbage\nok 1 ", 1)),
        ("plan.tap", tap.replacen("1..6", "1..7", 1)),
        (
            "ktap.tap",
            tap.replacen("TAP version 13", "KTAP version 1", 1),
        ),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, bad).unwrap();
        assert!(!check(&f).status.success(), "{name} was accepted");
    }
}

#[test]
fn a_known_failure_is_expected_in_junit_and_kcidb() {
    let dir = workdir("outputs-known");
    let cases = known_corpus(&dir);
    let o = demo::run(
        &dir,
        &cases,
        &[
            "--report",
            "r.json",
            "--junit",
            "j.xml",
            "--kcidb",
            "k.json",
            "--baseline",
            "b.txt",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    let known = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "demo/known")
        .unwrap();
    assert_eq!(known["status"], "fail");
    assert_eq!(known["known"], "b.txt:1: one wrong byte on purpose");
    assert_eq!(r["summary"]["known"], 1);

    let k: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("k.json")).unwrap()).unwrap();
    let test = |path: &str| {
        k["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["path"] == path)
            .unwrap()
            .clone()
    };
    // Its status stays; an incident links it to the known defect (KCIDB 5's
    // replacement of `waived`), and only it.
    assert_eq!(test("mmapconf.demo.known")["status"], "FAIL");
    let incidents = k["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{k}");
    assert_eq!(incidents[0]["test_id"], test("mmapconf.demo.known")["id"]);
    assert_eq!(incidents[0]["present"], true);
    assert_eq!(k["issues"][0]["id"], incidents[0]["issue_id"]);
    assert!(k["issues"][0]["comment"]
        .as_str()
        .unwrap()
        .contains("one wrong byte on purpose"));
    if let Some(py) = tools::python_with_kcidb() {
        let v = Command::new(py)
            .args([
                "-c",
                "import json,sys,kcidb_io; d=json.load(open(sys.argv[1])); kcidb_io.schema.V5_0.validate_exactly(d); kcidb_io.schema.LATEST.validate(d)",
            ])
            .arg(dir.join("k.json"))
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", text(&v));
    }

    let Some(xmllint) = tools::xmllint() else {
        return;
    };
    let file = dir.join("j.xml");
    let v = tools::junit_schema_check(&xmllint, &file);
    assert!(v.status.success(), "{}", text(&v));
    let q = |e: &str| tools::xpath(&xmllint, &file, e);
    let case = "//testcase[@name='demo/known']";
    assert_eq!(q(&format!("count({case}/failure)")), "0");
    assert!(q(&format!("string({case}/skipped/@message)"))
        .starts_with("known failure: b.txt:1: one wrong byte on purpose"));
    assert!(q(&format!("string({case}/skipped)")).contains("bytes differ at offset 13"));
    assert_eq!(
        q(&format!(
            "string({case}/properties/property[@name='known_failure']/@value)"
        )),
        "b.txt:1: one wrong byte on purpose"
    );
    // The suite counts it as skipped, not failed: 1 new failure, 2 errors.
    assert_eq!(q("string(//testsuite/@failures)"), "1");
    assert_eq!(q("string(//testsuite/@errors)"), "2");
    assert_eq!(q("string(//testsuite/@skipped)"), "2");
}

#[test]
fn a_baseline_directory_picks_files_by_their_when_header() {
    let dir = workdir("outputs-baseline-when");
    let cases = demo::corpus(&dir, false);
    let probe = demo::run(&dir, &cases, &["--report", "r.json"]);
    let r = mmapconf::report::read_json(&dir.join("r.json"))
        .unwrap_or_else(|e| panic!("{e}: {}", text(&probe)));
    let (fs, release) = (r.environment.fs_type.clone(), r.environment.kernel());
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    // Applies here: this filesystem, a kernel range holding this one.
    std::fs::write(
        baselines.join("shared-here.txt"),
        format!(
            "# any kernel from {0}.{1}, {fs}\nwhen: {{\"fs\": [\"{fs}\", \"nosuchfs\"], \"kernel\": \">={0}.{1}\"}}\ndemo/fail # one wrong byte\n",
            release.0, release.1
        ),
    )
    .unwrap();
    // Does not: another filesystem, although named for this kernel and target.
    std::fs::write(
        baselines.join(mmapconf::cli::baseline_file_name(&r)),
        "when: {\"fs\": [\"nosuchfs\"]}\ndemo/pass # never used\n",
    )
    .unwrap();
    let run = || demo::run_with_baseline(&dir, &cases, &baselines);
    let o = run();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("shared-here.txt: 1 known failure(s), 0 new"),
        "{t}"
    );
    assert!(!t.contains("now passes"), "the other file was used: {t}");

    // One file whose `when` does not match: no baseline for this target.
    let other = baselines.join(mmapconf::cli::baseline_file_name(&r));
    let o = demo::run_with_baseline(&dir, &cases, &other);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("does not match this target; every failure is new"),
        "{t}"
    );

    // A `when` the harness cannot read stops the run, naming file, line, column and field.
    std::fs::write(
        baselines.join("shared-here.txt"),
        "when: {\"fss\": [\"ext4\"]}\ndemo/fail\n",
    )
    .unwrap();
    let o = run();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("shared-here.txt:1:") && t.contains(": when: unknown field `fss`"),
        "{t}"
    );
    assert!(
        !t.contains("demo/fail ("),
        "a case ran before the baseline was read: {t}"
    );
}

#[test]
fn a_multi_target_run_names_its_target_everywhere() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: --fs needs root");
        return;
    }
    let dir = workdir("outputs-multi");
    let cases = demo::corpus(&dir, false);
    let o = demo::run(
        &dir,
        &cases,
        &[
            "--fs",
            "tmpfs,ramfs",
            "--report",
            "r.json",
            "--junit",
            "j.xml",
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("[tmpfs] ")
                || line.starts_with("[ramfs] ")
                || line.starts_with("all 2 targets: "),
            "a line without its target: {line:?}\n{out}"
        );
    }
    assert!(out.contains("[tmpfs] FAIL  demo/fail ("), "{out}");
    assert!(out.contains("[ramfs] FAIL  demo/fail ("), "{out}");
    assert!(
        out.contains("[ramfs] 3 cases: 1 pass, 1 fail, 1 skip, 0 error\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "all 2 targets: 6 cases: 2 pass, 2 fail, 2 skip, 0 error; 2 new failure(s)\n"
        ),
        "{out}"
    );
    let Some(xmllint) = tools::xmllint() else {
        return;
    };
    let q = |e: &str| tools::xpath(&xmllint, &dir.join("j.xml"), e);
    assert_eq!(
        q("count(//testcase[@classname='mmapconf.tmpfs.demo'])"),
        "3"
    );
    assert_eq!(
        q("count(//testcase[@classname='mmapconf.ramfs.demo'])"),
        "3"
    );
    assert_eq!(q("count(//testsuite)"), "2");
}
