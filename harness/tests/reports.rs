//! The report formats, each checked against its own specification: the
//! JSON report against specs/report.schema.json, KTAP against the rules of
//! the kernel's ktap.rst (a strict parser here), JUnit against an XSD of the
//! Jenkins/fstests format (xmllint), KCIDB against the schema in kcidb-io
//! (Python); then `compare` in text and in a browser, baselines, the end of
//! run summary, and `explain --html`.

mod common;
#[path = "reports/demo.rs"]
mod demo;
#[path = "reports/ktap_check.rs"]
mod ktap_check;
#[path = "reports/tools.rs"]
mod tools;

use demo::{exe, repo, text, workdir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// One run of the demo corpus writing all four formats, shared by the
/// tests that check each format (it takes a second: `hang` runs to its limit).
struct Acceptance {
    dir: PathBuf,
    out: Output,
}

fn acceptance() -> &'static Acceptance {
    static RUN: OnceLock<Acceptance> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = workdir("reports-acceptance");
        let cases = demo::corpus(&dir, true);
        let out = demo::run(
            &dir,
            &cases,
            &[
                "--ktap", "-", "--junit", "j.xml", "--kcidb", "k.json", "--report", "r.json",
            ],
        );
        Acceptance { dir, out }
    })
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn report_schema() -> Value {
    json(&repo("specs/report.schema.json"))
}

/// Every way `instance` breaks the report schema.
fn schema_errors(instance: &Value) -> Vec<String> {
    let schema = report_schema();
    let v = jsonschema::validator_for(&schema).expect("the report schema compiles");
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_checked_in_report_schema_matches_the_code() {
    let checked_in = std::fs::read_to_string(repo("specs/report.schema.json")).unwrap_or_default();
    assert!(
        checked_in.trim_end() == mmapconf::report::report_schema().trim_end(),
        "specs/report.schema.json is stale: run `cargo run -q -- report-schema > specs/report.schema.json`"
    );
}

#[test]
fn run_writes_all_four_formats_and_keeps_stdout_for_ktap() {
    let a = acceptance();
    let err = String::from_utf8_lossy(&a.out.stderr);
    assert_eq!(a.out.status.code(), Some(1), "{}", text(&a.out));
    for f in ["r.json", "j.xml", "k.json"] {
        assert!(a.dir.join(f).is_file(), "{f} missing: {err}");
    }
    // With KTAP on stdout, the person's view goes to stderr.
    assert!(
        err.contains("5 cases: 1 pass, 1 fail, 1 skip, 2 error"),
        "{err}"
    );
    for line in [
        "report: r.json",
        "ktap: - (standard output)",
        "junit: j.xml",
        "kcidb: k.json",
    ] {
        assert!(err.lines().any(|l| l == line), "no {line:?} in: {err}");
    }
}

#[test]
fn the_json_report_validates_against_its_schema() {
    let a = acceptance();
    let r = json(&a.dir.join("r.json"));
    assert_eq!(schema_errors(&r), Vec::<String>::new());
    let statuses: Vec<(&str, &str)> = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("demo/fail", "fail"),
            ("demo/hang", "error"),
            ("demo/pass", "pass"),
            ("demo/skip", "skip"),
            ("demo/broken", "error"),
        ]
    );
    // And the schema can say no.
    let mut bad = r.clone();
    bad["cases"][0]["status"] = "passed".into();
    assert!(!schema_errors(&bad).is_empty());
    let mut bad = r.clone();
    bad["cases"][0]["steps"][0]["observed"]["outcome"] = serde_json::json!({ "kind": "maybe" });
    assert!(!schema_errors(&bad).is_empty());
    let mut bad = r;
    bad.as_object_mut().unwrap().remove("summary");
    assert!(!schema_errors(&bad).is_empty());
}

#[test]
fn ktap_output_follows_ktap_rst() {
    let a = acceptance();
    let ktap = String::from_utf8_lossy(&a.out.stdout);
    let tests = ktap_check::parse(&ktap).unwrap_or_else(|e| panic!("{e}\n{ktap}"));
    let by = |name: &str| {
        tests
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no {name} in\n{ktap}"))
    };
    let pass = by("demo/pass");
    assert!(pass.ok && pass.directive.is_none() && pass.subtests.is_empty());
    let skip = by("demo/skip");
    assert!(skip.ok);
    assert_eq!(skip.directive.as_deref(), Some("SKIP"));
    assert!(skip.data.contains("nosuchfs"), "{}", skip.data);
    let fail = by("demo/fail");
    assert!(!fail.ok && fail.directive.is_none());
    // The steps are diagnostics, not subtests (kunit_tool counts subtests
    // as tests): five ok, the sixth failed with its byte diff.
    assert!(fail.subtests.is_empty(), "{ktap}");
    assert!(fail
        .diagnostics
        .iter()
        .any(|d| d == "step 5 reader mmap: ok"));
    assert!(fail
        .diagnostics
        .iter()
        .any(|d| d == "step 6 reader load: fail"));
    assert!(fail
        .diagnostics
        .iter()
        .any(|d| d.contains("bytes differ at offset 13: expected 0x6c l, observed 0x69 i")));
    let hang = by("demo/hang");
    assert!(!hang.ok);
    // Its time limit ended it: KTAP's TIMEOUT, with the step it was on.
    assert_eq!(hang.directive.as_deref(), Some("TIMEOUT"));
    assert!(hang.data.contains("timed out"), "{}", hang.data);
    assert!(hang.data.starts_with("step "), "{}", hang.data);
    let broken = by("demo/broken");
    assert_eq!(broken.directive.as_deref(), Some("ERROR"));
    assert!(broken.subtests.is_empty());
}

#[test]
fn the_ktap_checker_rejects_what_ktap_rst_forbids() {
    let good = "KTAP version 1\n1..1\n  KTAP version 1\n  1..1\n  not ok 1 inner\nnot ok 1 outer\n";
    assert!(ktap_check::parse(good).is_ok());
    for (bad, why) in [
        ("1..1\nok 1 a\n", "no version line"),
        ("KTAP version 1\nok 1 a\n", "no plan"),
        ("KTAP version 1\n1..2\nok 1 a\n", "plan says 2"),
        ("KTAP version 1\n1..2\nok 1 a\nok 3 b\n", "numbers skip"),
        ("KTAP version 1\n1..1\nok 1 a#b\n", "# in a description"),
        ("KTAP version 1\n1..1\nok 1 a # ERROR x\n", "ERROR with ok"),
        (
            "KTAP version 1\n1..1\nok 1 a # MAYBE x\n",
            "unknown directive",
        ),
        (
            "KTAP version 1\n1..1\n#no space\nok 1 a\n",
            "diagnostic without space",
        ),
        ("KTAP version 1\n1..1\nstray line\nok 1 a\n", "unknown line"),
        (
            "KTAP version 1\n1..1\n    KTAP version 1\n    1..1\n    ok 1 x\nok 1 a\n",
            "subtest two levels in",
        ),
        (
            "KTAP version 1\n1..1\n  KTAP version 1\n  1..1\n  not ok 1 x\nok 1 a\n",
            "parent ok over a failed subtest",
        ),
    ] {
        assert!(ktap_check::parse(bad).is_err(), "accepted ({why}):\n{bad}");
    }
}

use tools::xpath;

#[test]
fn junit_output_validates_against_the_junit_schema() {
    let Some(xmllint) = tools::xmllint() else {
        return;
    };
    let a = acceptance();
    let file = a.dir.join("j.xml");
    let o = tools::junit_schema_check(&xmllint, &file);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&a.dir.join("r.json"));
    let q = |e: &str| xpath(&xmllint, &file, e);
    assert_eq!(q("count(//testsuite)"), "1");
    assert_eq!(q("count(//testcase)"), "5");
    assert_eq!(q("string(//testsuite/@failures)"), "1");
    assert_eq!(q("string(//testsuite/@errors)"), "2");
    assert_eq!(q("string(//testsuite/@skipped)"), "1");
    assert_eq!(
        q("string(//property[@name='fs']/@value)"),
        r["environment"]["fs_type"].as_str().unwrap()
    );
    assert_eq!(
        q("string(//property[@name='kernel']/@value)"),
        r["environment"]["kernel_release"].as_str().unwrap()
    );
    for p in ["arch", "mount_options"] {
        assert_eq!(q(&format!("count(//property[@name='{p}'])")), "1", "{p}");
    }
    let failure = "//testcase[@name='demo/fail']/failure";
    assert!(q(&format!("string({failure}/@message)")).starts_with("step 6 (reader: load"));
    let body = q(&format!("string({failure})"));
    assert!(body.contains("bytes differ at offset 13"), "{body}");
    assert!(body.contains("marks"), "the byte diff: {body}");
    assert_eq!(q("count(//testcase[@name='demo/hang']/error)"), "1");
    assert_eq!(q("count(//testcase[@name='demo/skip']/skipped)"), "1");
    assert_eq!(q("count(//testcase[@name='demo/pass']/*)"), "0");
    assert_eq!(
        q("string(//testcase[@name='demo/pass']/@classname)"),
        format!(
            "mmapconf.{}.demo",
            r["environment"]["fs_type"].as_str().unwrap()
        )
    );
}

#[test]
fn the_junit_schema_rejects_malformed_documents() {
    let Some(xmllint) = tools::xmllint() else {
        return;
    };
    let dir = workdir("reports-junit-bad");
    for (name, doc) in [
        ("no-name.xml", "<testsuites><testsuite tests=\"1\" failures=\"0\" errors=\"0\"/></testsuites>"),
        ("two-results.xml", "<testsuites><testsuite name=\"s\" tests=\"1\" failures=\"1\" errors=\"1\"><testcase name=\"c\"><failure/><error/></testcase></testsuite></testsuites>"),
        ("bad-time.xml", "<testsuites><testsuite name=\"s\" tests=\"1\" failures=\"0\" errors=\"0\"><testcase name=\"c\" time=\"soon\"/></testsuite></testsuites>"),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, doc).unwrap();
        let o = tools::junit_schema_check(&xmllint, &f);
        assert!(!o.status.success(), "{name} was accepted");
    }
}

/// Validates with kcidb-io: exactly v5.0, and as the latest v5 accepts it.
/// Prints the tests' status by path.
const KCIDB_CHECK: &str = r#"
import json, sys
import kcidb_io
data = json.load(open(sys.argv[1]))
kcidb_io.schema.V5_0.validate_exactly(data)
kcidb_io.schema.LATEST.validate(data)
print(json.dumps({t["path"]: t["status"] for t in data["tests"]}))
"#;

fn kcidb_validate(py: &Path, file: &Path) -> Output {
    Command::new(py)
        .args(["-c", KCIDB_CHECK])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn kcidb_output_validates_against_the_kcidb_schema() {
    let Some(py) = tools::python_with_kcidb() else {
        return;
    };
    let a = acceptance();
    let file = a.dir.join("k.json");
    let o = kcidb_validate(&py, &file);
    assert!(o.status.success(), "{}", text(&o));
    let statuses: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        statuses,
        serde_json::json!({
            "mmapconf.demo.pass": "PASS",
            "mmapconf.demo.fail": "FAIL",
            "mmapconf.demo.skip": "SKIP",
            "mmapconf.demo.hang": "ERROR",
            "mmapconf.demo.broken": "ERROR",
        })
    );
    let k = json(&file);
    let r = json(&a.dir.join("r.json"));
    let test = k["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == "mmapconf.demo.fail")
        .unwrap();
    assert_eq!(test["origin"], "mmapconf");
    assert_eq!(test["build_id"], k["builds"][0]["id"]);
    assert_eq!(
        test["environment"]["misc"]["fs_type"],
        r["environment"]["fs_type"]
    );
    assert!(test["duration"].as_f64().unwrap() >= 0.0);
    assert!(test["log_excerpt"]
        .as_str()
        .unwrap()
        .contains("bytes differ at offset 13"));
    // The validator can say no.
    let mut bad = k.clone();
    bad["tests"][0]["status"] = "OK".into();
    let f = a.dir.join("k-bad.json");
    std::fs::write(&f, bad.to_string()).unwrap();
    assert!(!kcidb_validate(&py, &f).status.success());
}

#[test]
fn kcidb_tests_can_hang_on_an_existing_build() {
    let dir = workdir("reports-kcidb-env");
    let cases = demo::corpus(&dir, false);
    let o = exe()
        .args([
            "run", "--report", "r.json", "--kcidb", "k.json", "--filter", "pass",
        ])
        .arg(&cases)
        .env("MMAPCONF_KCIDB_ORIGIN", "myci")
        .env("MMAPCONF_KCIDB_BUILD_ID", "myci:build-42")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let k = json(&dir.join("k.json"));
    assert!(
        k.get("builds").is_none() && k.get("checkouts").is_none(),
        "{k}"
    );
    assert_eq!(k["tests"][0]["build_id"], "myci:build-42");
    assert_eq!(k["tests"][0]["origin"], "myci");
    assert!(k["tests"][0]["id"].as_str().unwrap().starts_with("myci:"));
    if let Some(py) = tools::python_with_kcidb() {
        let v = kcidb_validate(&py, &dir.join("k.json"));
        assert!(v.status.success(), "{}", text(&v));
    }
    // An origin KCIDB would refuse stops the run before it starts.
    let o = exe()
        .args(["run", "--report", "r2.json", "--kcidb", "k2.json"])
        .arg(&cases)
        .env("MMAPCONF_KCIDB_ORIGIN", "My-CI")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("[a-z0-9_]+"), "{}", text(&o));
    assert!(!dir.join("r2.json").exists());
}

/// The acceptance report, and a copy as if from tmpfs where demo/fail passed.
fn two_reports(dir: &Path) -> (PathBuf, PathBuf) {
    let a = acceptance();
    let first = dir.join("ext.json");
    std::fs::copy(a.dir.join("r.json"), &first).unwrap();
    let mut r = json(&first);
    r["environment"]["fs_type"] = "tmpfs".into();
    for c in r["cases"].as_array_mut().unwrap() {
        if c["id"] == "demo/fail" {
            c["status"] = "pass".into();
            let o = c.as_object_mut().unwrap();
            o.remove("reason");
            o.remove("failed_step");
        }
    }
    let second = dir.join("tmpfs.json");
    std::fs::write(&second, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    (first, second)
}

#[test]
fn compare_prints_exactly_the_case_that_differs() {
    let dir = workdir("reports-compare");
    let (first, second) = two_reports(&dir);
    let o = exe()
        .arg("compare")
        .arg(&first)
        .arg(&second)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let kernel = json(&first)["environment"]["kernel_release"]
        .as_str()
        .unwrap()
        .to_string();
    let fs = json(&first)["environment"]["fs_type"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        lines,
        vec![
            vec![
                "case",
                kernel.as_str(),
                fs.as_str(),
                kernel.as_str(),
                "tmpfs"
            ],
            vec!["demo/fail", "fail", "pass"],
        ],
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 5 cases differ across 2 reports"));

    // The same report twice: nothing differs, exit 0, only the header.
    let o = exe()
        .arg("compare")
        .arg(&first)
        .arg(&first)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);

    // A case one report lacks differs too, shown as `-`.
    let mut r = json(&second);
    r["cases"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["id"] != "demo/pass");
    let third = dir.join("partial.json");
    std::fs::write(&third, r.to_string()).unwrap();
    let o = exe()
        .arg("compare")
        .arg(&second)
        .arg(&third)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["demo/pass", "pass", "-"]),
        "{stdout}"
    );

    // What is not a report is an error.
    let o = exe()
        .arg("compare")
        .arg(&first)
        .arg(dir.join("nope.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// `compare REPORTS --html PAGE`, which must exit with `code`.
fn compare_html(reports: &[&Path], page: &Path, code: i32) -> Output {
    let o = exe()
        .arg("compare")
        .args(reports)
        .arg("--html")
        .arg(page)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(code), "{}", text(&o));
    o
}

/// Chromium's DOM of a page after its scripts ran.
fn dump_dom(chromium: &Path, dir: &Path, url: &str) -> String {
    let o = tools::chromium_command(&chromium.to_path_buf(), &dir.join("profile-dom"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn screenshot(chromium: &Path, dir: &Path, url: &str, png: &Path) -> Vec<[u8; 3]> {
    let o = tools::chromium_command(&chromium.to_path_buf(), &dir.join("profile-shot"))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1400,900")
        .arg(url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

fn count_near(pixels: &[[u8; 3]], rgb: [u8; 3]) -> usize {
    pixels
        .iter()
        .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 6))
        .count()
}

/// The row of the grid for a case, from the DOM.
fn grid_row<'a>(dom: &'a str, case: &str) -> &'a str {
    let at = dom
        .find(&format!("data-case=\"{case}\""))
        .unwrap_or_else(|| panic!("no row for {case}"));
    let start = dom[..at].rfind("<tr").unwrap();
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

#[test]
fn compare_html_shows_the_grid_and_the_diff_in_a_browser() {
    let dir = workdir("reports-compare-html");
    let (first, second) = two_reports(&dir);
    let page = dir.join("compare.html");
    compare_html(&[&first, &second], &page, 1);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must be self-contained"
    );
    let Some(chromium) = tools::chromium() else {
        return;
    };
    // Opened at the differing cell, as a click would leave it.
    let url = format!("file://{}#case=demo%2Ffail&col=0", page.display());
    let dom = dump_dom(&chromium, &dir, &url);
    let row = grid_row(&dom, "demo/fail");
    assert!(row.contains("data-col=\"0\" data-status=\"fail\""), "{row}");
    assert!(row.contains("data-col=\"1\" data-status=\"pass\""), "{row}");
    assert!(
        row.contains("selected"),
        "the clicked cell is marked: {row}"
    );
    let row = grid_row(&dom, "demo/hang");
    assert!(
        row.contains("data-col=\"0\" data-status=\"error\""),
        "{row}"
    );
    assert!(
        row.contains("data-col=\"1\" data-status=\"error\""),
        "{row}"
    );
    let panel_at = dom.find("<aside id=\"detail\"").unwrap();
    let panel = &dom[panel_at..dom[panel_at..].find("</aside>").unwrap() + panel_at];
    assert!(!panel.contains("hidden"), "detail panel shown: {panel}");
    assert!(panel.contains("bytes differ at offset 13"), "{panel}");
    assert!(panel.contains("demo/fail on"), "{panel}");

    // Filtering by outcome hides the rows without one.
    let dom = dump_dom(
        &chromium,
        &dir,
        &format!("file://{}#outcome=fail", page.display()),
    );
    assert!(grid_row(&dom, "demo/pass").contains("class=\"case hidden\""));
    assert!(!grid_row(&dom, "demo/fail").contains("hidden"));
    // ... and by topic.
    let dom = dump_dom(
        &chromium,
        &dir,
        &format!("file://{}#topic=none", page.display()),
    );
    assert!(grid_row(&dom, "demo/fail").contains("class=\"case hidden\""));

    // The picture: red for the failed cell, green for passes, orange for errors.
    let pixels = screenshot(&chromium, &dir, &url, &dir.join("compare.png"));
    assert!(
        count_near(&pixels, [0xd7, 0x26, 0x3d]) > 500,
        "no fail cell drawn"
    );
    assert!(
        count_near(&pixels, [0x2e, 0x9d, 0x4f]) > 1500,
        "no pass cells drawn"
    );
    assert!(
        count_near(&pixels, [0xf0, 0x8a, 0x24]) > 1000,
        "no error cells drawn"
    );
}

/// The compare page with a script added that measures, after the page's
/// own script opened `#case=demo/fail&col=0`, where the byte that differs
/// and the `^^` under it are drawn in the side panel: the page's DOM dumped
/// by Chromium at `width` pixels ends with `<output id="probe">` holding
/// "<byte> <its x> <the marks' x> <scroll width> <client width>".
fn hexdump_probe(chromium: &Path, dir: &Path, page: &Path, width: u32) -> Vec<String> {
    let probe = dir.join("probe.html");
    let html = std::fs::read_to_string(page).unwrap();
    let script = r#"<script>(function () {
  var pre = document.getElementById('detail-body'), node = pre.firstChild, t = node.textContent;
  function left(i) { var r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 2); return r.getClientRects()[0].left; }
  var byte = t.indexOf('observed 48') + 'observed '.length + 13 * 3, marks = t.indexOf('^^');
  var out = document.createElement('output'); out.id = 'probe';
  out.textContent = [t.substr(byte, 2), left(byte), left(marks), pre.scrollWidth, pre.clientWidth].join(' ');
  document.body.appendChild(out);
})();</script></body>"#;
    std::fs::write(&probe, html.replace("</body>", script)).unwrap();
    let o = tools::chromium_command(&chromium.to_path_buf(), &dir.join("profile-probe"))
        .arg(format!("--window-size={width},900"))
        .arg("--dump-dom")
        .arg(format!("file://{}#case=demo%2Ffail&col=0", probe.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let dom = String::from_utf8_lossy(&o.stdout);
    let at = dom.find("<output id=\"probe\">").expect("the probe ran") + 19;
    let end = dom[at..].find('<').unwrap() + at;
    dom[at..end].split(' ').map(str::to_string).collect()
}

#[test]
fn compare_html_tells_columns_apart_counts_absent_and_keeps_hexdumps_whole() {
    let dir = workdir("reports-compare-columns");
    let (first, second) = two_reports(&dir);
    // The same kernel and filesystem twice (another target's run), and a
    // report that lacks one case: the headers must differ, and the missing
    // case is absent, not a difference.
    let mut r = json(&first);
    r["environment"]["target"] = "ext4-1k".into();
    r["cases"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["id"] != "demo/pass");
    let again = dir.join("ext-1k.json");
    std::fs::write(&again, r.to_string()).unwrap();
    let page = dir.join("compare.html");
    let o = compare_html(&[&first, &again], &page, 0);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("0 of 5 cases differ across 2 reports; 1 absent from some report (-)"),
        "{}",
        text(&o)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let headers: Vec<&str> = html
        .split("<th class=\"col\"")
        .skip(1)
        .map(|h| &h[..h.find("</th>").unwrap()])
        .collect();
    assert_eq!(headers.len(), 2, "{html}");
    assert_ne!(headers[0], headers[1], "column headers must differ");
    // The first has no target name (a --dir run): the file names tell them apart.
    assert!(
        headers[0].contains("<small class=\"extra\">ext.json</small>"),
        "{}",
        headers[0]
    );
    assert!(
        headers[1].contains("<small class=\"extra\">ext-1k.json</small>"),
        "{}",
        headers[1]
    );
    let counts = &html[html.find("<p id=\"counts\">").unwrap()..];
    let counts = &counts[..counts.find("</p>").unwrap()];
    assert!(
        counts.contains("<strong id=\"differ-count\">0</strong>"),
        "{counts}"
    );
    assert!(
        counts.contains("<strong id=\"absent-count\">1</strong>"),
        "{counts}"
    );
    let row = grid_row(&html, "demo&#x2f;pass");
    assert!(
        row.contains("data-differs=\"false\" data-absent=\"true\""),
        "{row}"
    );

    // The side panel's hexdump: on a narrow window the line is wider than
    // the panel, which scrolls sideways instead of wrapping it, so the
    // marks stay under the byte that differs.
    let Some(chromium) = tools::chromium() else {
        return;
    };
    let page = dir.join("two.html");
    compare_html(&[&first, &second], &page, 1);
    let m = hexdump_probe(&chromium, &dir, &page, 900);
    assert_eq!(m[0], "69", "the byte that differs: {m:?}");
    let (byte_x, marks_x): (f64, f64) = (m[1].parse().unwrap(), m[2].parse().unwrap());
    assert!(
        (byte_x - marks_x).abs() < 1.0,
        "marks not under the byte: {m:?}"
    );
    let (scroll, client): (u32, u32) = (m[3].parse().unwrap(), m[4].parse().unwrap());
    assert!(
        scroll > client,
        "the line did not need to scroll at this width: {m:?}"
    );
    // "only cases whose outcome differs" keeps the one that does.
    let dom = dump_dom(&chromium, &dir, &format!("file://{}#diff", page.display()));
    assert!(grid_row(&dom, "demo/pass").contains("class=\"case hidden\""));
    assert!(!grid_row(&dom, "demo/fail").contains("hidden"));
}

/// Case text with markup in it is shown as text on every page, never run.
#[test]
fn pages_escape_markup_in_case_text() {
    let dir = workdir("reports-escape");
    let hostile = "<script>alert('pwned')</script> & \"quoted\"";
    let (first, second) = two_reports(&dir);
    for f in [&first, &second] {
        let mut r = json(f);
        for c in r["cases"].as_array_mut().unwrap() {
            c["title"] = hostile.into();
        }
        std::fs::write(f, r.to_string()).unwrap();
    }
    let page = dir.join("compare.html");
    compare_html(&[&first, &second], &page, 1);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script>alert"),
        "unescaped title in the page"
    );
    assert!(html.contains(
        "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;&#x2f;script&gt; &amp; &quot;quoted&quot;"
    ));

    // explain --html of a case whose title, note and file name carry markup.
    let mut case: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("cases/seed/writer-reader.json")).unwrap(),
    )
    .unwrap();
    case["title"] = hostile.into();
    case["steps"][0]["note"] = "</title><script>alert(1)</script>".into();
    let file = dir.join("hostile.json");
    std::fs::write(&file, case.to_string()).unwrap();
    let o = exe()
        .args(["explain", "--html", "-"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let html = String::from_utf8_lossy(&o.stdout);
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#x27;pwned&#x27;)"),
        "{html}"
    );
    assert!(
        html.contains("note: &lt;&#x2f;title&gt;&lt;script&gt;"),
        "{html}"
    );
}

fn baseline_run(dir: &Path, cases: &Path, baseline: &str) -> Output {
    let file = dir.join("baseline.txt");
    std::fs::write(&file, baseline).unwrap();
    demo::run(
        dir,
        cases,
        &["--report", "r.json", "--baseline", file.to_str().unwrap()],
    )
}

#[test]
fn a_baseline_turns_known_failures_into_success_and_names_new_ones() {
    let dir = workdir("reports-baseline");
    let cases = demo::corpus(&dir, false);

    let o = baseline_run(
        &dir,
        &cases,
        "# known\ndemo/fail   # one wrong byte on purpose\n",
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("1 known failure(s), 0 new"), "{t}");
    assert!(t.contains("FAIL  demo/fail [known]: step 6 ("), "{t}");

    let o = baseline_run(&dir, &cases, "# nothing is known to fail\n");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("new failure: demo/fail (fail)"), "{t}");

    let o = baseline_run(
        &dir,
        &cases,
        "demo/fail # known\ndemo/pass # was broken once\n",
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains(
            "now passes (remove it from the baseline, line 2): demo/pass  # was broken once"
        ),
        "{t}"
    );

    let o = baseline_run(&dir, &cases, "demo/fail two words\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("baseline.txt:1: expected one case id"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_baseline_directory_gives_each_target_its_own_file() {
    let dir = workdir("reports-baseline-dir");
    let cases = demo::corpus(&dir, false);
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    // The file this kernel and filesystem would use, named as the harness names it.
    let probe = demo::run(&dir, &cases, &["--report", "r.json"]);
    let report: mmapconf::report::Report =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap())
            .unwrap_or_else(|e| panic!("{e}: {}", text(&probe)));
    let name = mmapconf::cli::baseline_file_name(&report);
    let run = || demo::run_with_baseline(&dir, &cases, &baselines);
    // No file for this kernel and target: every failure is new.
    let o = run();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    std::fs::write(
        baselines.join(&name),
        "demo/fail # one wrong byte on purpose\n",
    )
    .unwrap();
    let o = run();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!("baseline {}", baselines.join(&name).display())),
        "{t}"
    );
    assert!(t.contains("1 known failure(s), 0 new"), "{t}");
}

#[test]
fn checked_in_baselines_parse_and_name_real_cases() {
    let dir = repo("reports/baselines");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "txt") {
            continue;
        }
        seen += 1;
        let b = mmapconf::report::baseline::Baseline::load(&path)
            .unwrap_or_else(|e| panic!("{}", e.join("\n")));
        for e in &b.entries {
            assert!(
                repo(&format!("cases/{}.json", e.id)).is_file(),
                "{}:{}: no case {}",
                path.display(),
                e.line,
                e.id
            );
            assert!(
                !e.reason.is_empty(),
                "{}:{}: give a reason",
                path.display(),
                e.line
            );
        }
    }
    assert!(seen > 0, "no baselines in {}", dir.display());
}

#[test]
fn the_end_of_a_run_names_failures_with_their_step_and_the_reports() {
    let dir = workdir("reports-summary");
    let cases = demo::corpus(&dir, false);
    let o = demo::run(
        &dir,
        &cases,
        &["--report", "out/r.json", "--junit", "out/j.xml"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // Not a terminal: plain lines, the failure with its diff as it happens...
    assert!(stdout.contains("FAIL  demo/fail ("), "{stdout}");
    assert!(stdout.contains("^^"), "{stdout}");
    assert!(
        !stdout.contains("PASS  demo/pass"),
        "passes only with -v: {stdout}"
    );
    // ... then the summary.
    let tail: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("3 cases:"))
        .collect();
    assert!(
        tail[0].starts_with("3 cases: 1 pass, 1 fail, 1 skip, 0 error"),
        "{stdout}"
    );
    assert_eq!(tail[1], "did not pass:");
    assert!(
        tail[2].starts_with("  FAIL  demo/fail: step 6 (reader: load"),
        "{stdout}"
    );
    assert_eq!(tail[3], "report: out/r.json");
    assert_eq!(tail[4], "junit: out/j.xml");
    assert!(dir.join("out/j.xml").is_file());

    let o = demo::run(&dir, &cases, &["--report", "r.json", "-v"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("PASS  demo/pass ("));
}

#[test]
fn on_a_terminal_the_run_still_shows_failures_and_the_summary() {
    let Some(script) = tools::find("script", "apt-get install -y bsdutils") else {
        return;
    };
    let dir = workdir("reports-terminal");
    let cases = demo::corpus(&dir, false);
    let cmd = format!(
        "{} run --report {} {}",
        env!("CARGO_BIN_EXE_mmapconf"),
        dir.join("r.json").display(),
        cases.display()
    );
    // script(1) gives the run a pseudo-terminal.
    let o = Command::new(script)
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  demo/fail ("), "{t}");
    assert!(
        t.contains("3 cases: 1 pass, 1 fail, 1 skip, 0 error"),
        "{t}"
    );
}

/// Where `explain seed/writer-reader`'s header puts the reader's lane, and
/// its widest line, in characters.
fn explain_layout(out: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(out).replace('\r', "");
    let header = text
        .lines()
        .find(|l| l.trim_start().starts_with("writer"))
        .unwrap();
    let reader = header.chars().count() - "reader".len();
    let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
    (reader, widest)
}

#[test]
fn explain_text_shares_the_terminal_width_between_lanes() {
    // Not a terminal: 100 columns, two lanes of 46.
    let o = exe()
        .args(["explain", "seed/writer-reader"])
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (reader, widest) = explain_layout(&o.stdout);
    assert_eq!(reader, 7 + 46, "{}", text(&o));
    assert!(widest <= 100 && widest > 7 + 46, "{}", text(&o));
    // COLUMNS, as a shell exports it.
    let o = exe()
        .args(["explain", "seed/writer-reader"])
        .env("COLUMNS", "70")
        .output()
        .unwrap();
    let (reader, widest) = explain_layout(&o.stdout);
    assert_eq!(reader, 7 + 31, "{}", text(&o));
    assert!(widest <= 70, "{}", text(&o));
    // A terminal 150 columns wide (script(1) gives the command a pty).
    let Some(script) = tools::find("script", "apt-get install -y bsdutils") else {
        return;
    };
    let o = Command::new(script)
        .args(["-qec"])
        .arg(format!(
            "stty cols 150 rows 40; env -u COLUMNS {} explain seed/writer-reader",
            env!("CARGO_BIN_EXE_mmapconf")
        ))
        .arg("/dev/null")
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (reader, widest) = explain_layout(&o.stdout);
    assert_eq!(reader, 7 + 71, "{}", text(&o));
    assert!(widest <= 150, "{}", text(&o));
}

#[test]
fn explain_html_draws_a_lane_per_process_and_forks_as_branches() {
    let dir = workdir("reports-explain");
    let page = dir.join("writer-reader.html");
    let o = exe()
        .args(["explain", "seed/writer-reader", "--html"])
        .arg(&page)
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<g class=\"lane\" data-process=\"writer\">"));
    assert!(html.contains("<g class=\"lane\" data-process=\"reader\">"));
    assert!(html.contains("<g class=\"lane\" data-process=\"harness\">"));
    let case = std::fs::read_to_string(repo("cases/seed/writer-reader.json")).unwrap();
    let steps = serde_json::from_str::<Value>(&case).unwrap()["steps"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(html.matches("<g class=\"step").count(), steps);
    assert!(
        html.contains("⇒ &quot;Hello from writer!&quot;"),
        "expectations beside the steps"
    );
    // Lanes in order of appearance: the writer left of the reader.
    assert!(html.find("data-process=\"writer\"") < html.find("data-process=\"reader\""));

    let o = exe()
        .args(["explain", "fork/child-exit-status", "--html"])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let html = String::from_utf8_lossy(&o.stdout);
    assert!(
        html.contains("class=\"arrow fork\" data-from=\"parent\" data-to=\"child\""),
        "{html}"
    );
    assert!(html.contains("forked from parent"));
    assert!(html.contains("class=\"arrow wait\" data-from=\"harness\" data-to=\"child\""));
    assert!(html.contains("⇒ exit 42"));

    let Some(chromium) = tools::chromium() else {
        return;
    };
    let pixels = screenshot(
        &chromium,
        &dir,
        &format!("file://{}", page.display()),
        &dir.join("writer-reader.png"),
    );
    // The step boxes' fill.
    assert!(
        count_near(&pixels, [0xee, 0xf3, 0xfb]) > 10_000,
        "no step boxes drawn"
    );
}

#[test]
fn several_targets_make_one_document_in_each_format() {
    use mmapconf::report::{junit, kcidb, ktap, Report};
    let a = acceptance();
    let first: Report = mmapconf::report::read_json(&a.dir.join("r.json")).unwrap();
    let mut second = first.clone();
    second.environment.fs_type = "tmpfs".into();
    let both = [first, second];

    // KTAP: a test per target, its cases nested one level in.
    let doc = ktap::render_all(&both, ktap::Version::Ktap1);
    let tests = ktap_check::parse(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    assert_eq!(tests.len(), 2);
    assert!(tests[1].name.ends_with(" tmpfs"), "{}", tests[1].name);
    assert!(!tests[0].ok, "a target with failures fails");
    assert_eq!(tests[0].subtests.len(), 5);
    assert!(
        tests[0].subtests[0].subtests.is_empty() && tests[0].subtests[0].diagnostics.len() > 6,
        "steps as diagnostics of their case"
    );

    let dir = workdir("reports-several");
    if let Some(xmllint) = tools::xmllint() {
        let file = dir.join("j.xml");
        std::fs::write(&file, junit::render(&both)).unwrap();
        let o = tools::junit_schema_check(&xmllint, &file);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(xpath(&xmllint, &file, "count(//testsuite)"), "2");
        assert_eq!(
            xpath(
                &xmllint,
                &file,
                "string(//testsuite[2]/properties/property[@name='fs']/@value)"
            ),
            "tmpfs"
        );
    }
    if let Some(py) = tools::python_with_kcidb() {
        let file = dir.join("k.json");
        let doc = kcidb::render(&both, &kcidb::Options::default());
        assert_eq!(doc["tests"].as_array().unwrap().len(), 10);
        std::fs::write(&file, doc.to_string()).unwrap();
        let o = kcidb_validate(&py, &file);
        assert!(o.status.success(), "{}", text(&o));
        // Same kernel: one checkout and one build, tests of both targets on it.
        assert_eq!(doc["builds"].as_array().unwrap().len(), 1);
    }
}
