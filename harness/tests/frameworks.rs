//! mmapconf run from other test frameworks, as ci/INTEGRATION.md says:
//! LTP's kirk with the runtest file `ci/kirk/make-runtest` writes, and a
//! kselftest-style runner over the collection `ci/kselftest/install` makes.
//! The corpus is a small one of two topics, `good` (passes) and `bad` (one
//! case fails), so each framework must tell them apart.

mod common;
#[allow(dead_code)] // the format tests use the rest
#[path = "reports/tools.rs"]
mod tools;

use common::{repo, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary corpus (good/, bad/), state directory and working directory.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let cases = dir.path().join("cases");
        for t in ["good", "bad"] {
            std::fs::create_dir_all(cases.join(t)).unwrap();
        }
        for name in ["writer-reader", "fork-counter-atomic"] {
            let from = repo(&format!("cases/seed/{name}.json"));
            std::fs::copy(from, cases.join(format!("good/{name}.json"))).unwrap();
        }
        let right = std::fs::read_to_string(repo("cases/seed/writer-reader.json")).unwrap();
        let wrong = right.replace(
            "\"expect\": { \"text\": \"Hello from writer!\" }",
            "\"expect\": { \"text\": \"Hello from wrlter!\" }",
        );
        assert_ne!(
            right, wrong,
            "the failing case must differ from the passing one"
        );
        std::fs::write(cases.join("bad/wrong-text.json"), wrong).unwrap();
        for d in ["state", "cwd"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Setup { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Runs one of the repository's scripts with `arg`; its standard output.
    fn script(&self, path: &str, arg: &Path) -> String {
        let out = self.command(repo(path)).arg(arg).output().unwrap();
        assert!(out.status.success(), "{path}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A command with the corpus, the binary and the state directory set.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("MMAPCONF_CASES", self.path("cases"))
            .env("MMAPCONF", env!("CARGO_BIN_EXE_mmapconf"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env_remove("CARGO_MANIFEST_DIR")
            .current_dir(self.path("cwd"));
        c
    }
}

/// A minimal kselftest runner, written from what the kernel's
/// run_kselftest.sh and kselftest/runner.sh do: each `collection:program`
/// line of kselftest-list.txt runs in its collection's directory, under the
/// collection's `timeout=` setting; its output becomes `# ` diagnostics; its
/// exit status the TAP 13 result (0 ok, 4 SKIP, 124 TIMEOUT, else not ok).
fn run_kselftest(dest: &Path, env: &dyn Fn(&mut Command)) -> String {
    let list = std::fs::read_to_string(dest.join("kselftest-list.txt")).unwrap();
    let tests: Vec<(&str, &str)> = list.lines().filter_map(|l| l.split_once(':')).collect();
    let mut tap = format!("TAP version 13\n1..{}\n", tests.len());
    for (n, (collection, program)) in tests.iter().enumerate() {
        let dir = dest.join(collection);
        let timeout = std::fs::read_to_string(dir.join("settings"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("timeout=").map(str::to_string))
            .unwrap_or_else(|| "45".to_string());
        let name = format!("selftests: {collection}: {program}");
        tap.push_str(&format!("# {name}\n"));
        let mut cmd = Command::new("timeout");
        cmd.arg(&timeout)
            .arg(format!("./{program}"))
            .current_dir(&dir);
        env(&mut cmd);
        let out = cmd.output().unwrap();
        for line in text(&out).lines() {
            tap.push_str(&format!("# {line}\n"));
        }
        let n = n + 1;
        tap.push_str(&match out.status.code() {
            Some(0) => format!("ok {n} {name}\n"),
            Some(4) => format!("ok {n} {name} # SKIP\n"),
            Some(124) => format!("not ok {n} {name} # TIMEOUT {timeout} seconds\n"),
            code => format!("not ok {n} {name} # exit={code:?}\n"),
        });
    }
    tap
}

/// What Perl's TAP::Parser makes of a TAP stream: tests run, passed,
/// failed and skipped test numbers, and parse errors.
fn tap_parser(tap: &str) -> Option<String> {
    let perl = tools::find("perl", "apt-get install -y perl")?;
    let script = r#"
        use TAP::Parser;
        my $p = TAP::Parser->new({ tap => do { local $/; <STDIN> } });
        while (my $r = $p->next) {}
        printf "run=%d passed=%s failed=%s skipped=%s errors=%s\n", $p->tests_run,
            join(",", $p->passed), join(",", $p->failed), join(",", $p->skipped),
            join("|", $p->parse_errors);
    "#;
    let mut child = Command::new(perl)
        .args(["-e", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(tap.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string(),
    )
}

#[test]
fn kselftest_style_runner_counts_one_test_a_topic() {
    let s = Setup::new();
    let dest = s.path("kselftest");
    std::fs::create_dir(&dest).unwrap();
    // Someone else's collection already listed stays listed.
    std::fs::write(dest.join("kselftest-list.txt"), "mm:run_vmtests.sh\n").unwrap();
    for _ in 0..2 {
        s.script("ci/kselftest/install", &dest);
    }
    let list = std::fs::read_to_string(dest.join("kselftest-list.txt")).unwrap();
    assert_eq!(
        list,
        "mm:run_vmtests.sh\nmmapconf:bad.sh\nmmapconf:good.sh\n"
    );
    // There is no `mm` collection here to run: only ours stay listed.
    let ours: String = list.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(dest.join("kselftest-list.txt"), ours).unwrap();

    let env = |c: &mut Command| {
        c.env("MMAPCONF_CASES", s.path("cases"))
            .env("MMAPCONF", env!("CARGO_BIN_EXE_mmapconf"))
            .env("XDG_STATE_HOME", s.path("state"))
            .env_remove("CARGO_MANIFEST_DIR");
    };
    let tap = run_kselftest(&dest, &env);
    // The cases' KTAP is there, as diagnostics of its topic.
    assert!(tap.contains("# not ok 1 bad/wrong-text"), "{tap}");
    assert!(tap.contains("# ok 2 good/writer-reader"), "{tap}");
    let Some(parsed) = tap_parser(&tap) else {
        return;
    };
    assert_eq!(parsed, "run=2 passed=2 failed=1 skipped= errors=", "{tap}");
    for topic in ["bad", "good"] {
        let report = s.path(&format!("state/mmapconf/kselftest/{topic}.json"));
        let doc: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert!(doc["cases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"].as_str().unwrap().starts_with(&format!("{topic}/"))));
    }

    // No mmapconf: every topic skips, as kselftest's exit status 4 says.
    let gone = |c: &mut Command| {
        c.env("MMAPCONF", "/nonexistent/mmapconf");
    };
    let tap = run_kselftest(&dest, &gone);
    assert_eq!(
        tap_parser(&tap).unwrap(),
        "run=2 passed=1,2 failed= skipped=1,2 errors=",
        "{tap}"
    );
}

#[test]
fn kirk_runs_a_runtest_file_of_mmapconf_invocations() {
    let Some(kirk) = tools::find("kirk", "pip install kirk") else {
        return;
    };
    let s = Setup::new();
    let ltp = s.path("ltp");
    // An LTP install's layout as kirk reads it: runtest files, and the
    // directory tests run in.
    std::fs::create_dir_all(ltp.join("runtest")).unwrap();
    std::fs::create_dir_all(ltp.join("testcases/bin")).unwrap();
    std::fs::create_dir_all(s.path("kirk-tmp")).unwrap();
    let reports = s.path("reports");
    let runtest = s.script("ci/kirk/make-runtest", &reports);
    assert_eq!(
        runtest.lines().filter(|l| !l.starts_with('#')).count(),
        2,
        "{runtest}"
    );
    std::fs::write(ltp.join("runtest/mmapconf"), &runtest).unwrap();

    let results = s.path("kirk.json");
    let out = s
        .command(kirk)
        .env("LTPROOT", &ltp)
        .args(["--run-suite", "mmapconf", "--no-colors", "--json-report"])
        .arg(&results)
        .arg("--tmp-dir")
        .arg(s.path("kirk-tmp"))
        .output()
        .unwrap();
    let doc: Value = match std::fs::read(&results) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(e) => panic!("kirk wrote no results ({e}): {}", text(&out)),
    };
    let got = common::field_pairs(&doc["results"], "test_fqn", "status");
    let want = [("mmapconf_bad", "fail"), ("mmapconf_good", "pass")];
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want, "{}", text(&out));
    assert_eq!(doc["stats"]["passed"], 1);
    assert_eq!(doc["stats"]["failed"], 1);
    // Each test's log holds its cases' KTAP, and its JSON report is where the runtest says.
    let bad_log = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["test_fqn"] == "mmapconf_bad")
        .map(|r| r["test"]["log"].as_str().unwrap_or_default().to_string())
        .unwrap();
    assert!(bad_log.contains("not ok 1 bad/wrong-text"), "{bad_log}");
    for topic in ["bad", "good"] {
        assert!(reports.join(format!("{topic}.json")).is_file());
    }
}
