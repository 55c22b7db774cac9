//! An installed binary, away from any checkout: it runs the corpus built
//! into it, writes its report into the XDG state directory and nowhere
//! else, and finds a corpus in `$MMAPCONF_CASES` or a data directory first.
//!
//! The binary under test is this build's, copied out of the tree, or the
//! one `$MMAPCONF_INSTALLED` names (`.ci/run` sets it to a real
//! `cargo install --path harness`).

mod common;

use common::{repo, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// A home, XDG directories, a TMPDIR and an empty working directory, all
/// in one temporary directory, and the installed binary.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    exe: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for d in [
            "home", "state", "data", "sysdata", "config", "cache", "tmp", "cwd",
        ] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let exe = match std::env::var_os("MMAPCONF_INSTALLED") {
            Some(installed) => PathBuf::from(installed),
            None => {
                std::fs::create_dir(root.join("bin")).unwrap();
                let exe = root.join("bin/mmapconf");
                copy_executable(Path::new(env!("CARGO_BIN_EXE_mmapconf")), &exe);
                exe
            }
        };
        Sandbox {
            _dir: dir,
            root,
            exe,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    /// The binary with only PATH kept from this environment: no
    /// CARGO_MANIFEST_DIR (cargo test sets it, and it marks a checkout run).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_DATA_DIRS", self.path("sysdata"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("TMPDIR", self.path("tmp"))
            .current_dir(self.path("cwd"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

/// Copies an executable by `cp`, in a process of its own. Copied here,
/// its descriptor open for writing would be inherited by any child another
/// test's thread forks meanwhile, until that child's exec; executing the
/// copy then fails with ETXTBSY ("Text file busy"), as it did once.
fn copy_executable(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("--")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp {from:?} {to:?}: {status}");
}

/// Every file under `dir` with its size and modification time, and every
/// directory (`skip`: top-level names left out).
fn listing(dir: &Path, skip: &[&str]) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    fn walk(
        dir: &Path,
        top: &Path,
        skip: &[&str],
        out: &mut BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(top).unwrap().to_path_buf();
            if dir == top && skip.iter().any(|s| rel == Path::new(s)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                // A directory by its presence: its times change when scratch
                // directories come and go inside it, which is no leftover.
                out.insert(rel, (0, None));
                walk(&path, top, skip, out);
            } else {
                out.insert(rel, (meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

fn corpus_ids() -> Vec<String> {
    let mut ids = Vec::new();
    let root = repo("cases");
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                let rel = p.strip_prefix(&root).unwrap().with_extension("");
                ids.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    ids.sort();
    ids
}

#[test]
fn installed_run_from_an_empty_directory_runs_the_embedded_corpus_and_writes_only_its_report() {
    let s = Sandbox::new();
    // The checkout without what builds and tests write (target/), and what
    // another process may touch meanwhile (.git).
    let checkout_skip = ["target", ".git"];
    let before_checkout = listing(&repo(""), &checkout_skip);
    let before_sandbox = listing(&s.root, &[]);

    let out = s.run(&["run"]);
    assert!(out.status.success(), "{}", text(&out));

    let report_path = s.path("state/mmapconf/latest.json");
    let mut after_sandbox = listing(&s.root, &[]);
    let added: Vec<PathBuf> = after_sandbox
        .keys()
        .filter(|k| !before_sandbox.contains_key(*k))
        .cloned()
        .collect();
    assert_eq!(
        added,
        vec![
            PathBuf::from("state/mmapconf"),
            PathBuf::from("state/mmapconf/latest.json")
        ],
        "the run wrote elsewhere than its report"
    );
    // What was there before is unchanged, but for the state directory that got the report.
    after_sandbox.retain(|k, _| before_sandbox.contains_key(k) && k != Path::new("state"));
    let mut unchanged = before_sandbox.clone();
    unchanged.retain(|k, _| k != Path::new("state"));
    assert_eq!(after_sandbox, unchanged);
    assert_eq!(
        listing(&repo(""), &checkout_skip),
        before_checkout,
        "the run changed the checkout"
    );
    assert!(
        text(&out).contains(&report_path.display().to_string()),
        "{}",
        text(&out)
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["environment"]["corpus"]["source"], "embedded");
    assert_eq!(
        report["environment"]["corpus"]["location"],
        "embedded:cases"
    );
    let mut ran: Vec<String> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ran.sort();
    assert_eq!(
        ran,
        corpus_ids(),
        "the whole corpus, by the ids it has in the checkout"
    );
    assert_eq!(report["summary"]["fail"], 0);
    assert_eq!(report["summary"]["error"], 0);
}

#[test]
fn corpus_order_env_then_data_dirs_then_embedded() {
    let s = Sandbox::new();
    let say = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    };
    assert_eq!(say(&mut s.command(&["corpus"])), "embedded\tembedded:cases");
    let system = s.path("sysdata/mmapconf/cases");
    std::fs::create_dir_all(&system).unwrap();
    assert_eq!(
        say(&mut s.command(&["corpus"])),
        format!("data-dir\t{}", system.display())
    );
    let user = s.path("data/mmapconf/cases");
    std::fs::create_dir_all(&user).unwrap();
    assert_eq!(
        say(&mut s.command(&["corpus"])),
        format!("data-dir\t{}", user.display())
    );
    let own = s.path("cwd");
    let env = s
        .command(&["corpus"])
        .env("MMAPCONF_CASES", &own)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&env.stdout).trim_end(),
        format!("env\t{}", own.display())
    );
    // Inside a checkout, its cases; a typo in MMAPCONF_CASES is an error, not a fallback.
    let inside = say(s.command(&["corpus"]).current_dir(repo("cases/seed")));
    assert_eq!(
        inside,
        format!(
            "checkout\t{}",
            repo("").canonicalize().unwrap().join("cases").display()
        )
    );
    let typo = s
        .command(&["run"])
        .env("MMAPCONF_CASES", s.path("nope"))
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2), "{}", text(&typo));
    assert!(
        text(&typo).contains("MMAPCONF_CASES") && text(&typo).contains("nope"),
        "{}",
        text(&typo)
    );
    assert!(!s.path("state/mmapconf").exists());
}

#[test]
fn a_data_dir_case_is_run_and_its_problems_name_the_file() {
    let s = Sandbox::new();
    let cases = s.path("data/mmapconf/cases/mine");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::copy(
        repo("cases/seed/writer-reader.json"),
        cases.join("good.json"),
    )
    .unwrap();
    std::fs::write(
        cases.join("bad.json"),
        "{\n  \"title\": \"x\",\n  \"stepz\": []\n}\n",
    )
    .unwrap();
    let out = s.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let bad = format!("{}:3:3: ", cases.join("bad.json").display());
    assert!(text(&out).contains(&bad), "{}", text(&out));

    let out = s.run(&["run", "--report", "r.json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the bad file is an error of the run: {}",
        text(&out)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(s.path("cwd/r.json")).unwrap()).unwrap();
    assert_eq!(report["environment"]["corpus"]["source"], "data-dir");
    let status = common::field_pairs(&report["cases"], "id", "status");
    let want: BTreeMap<String, String> = [("mine/bad", "error"), ("mine/good", "pass")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(status, want);
}

#[test]
fn embedded_cases_are_named_by_id_and_explained() {
    let s = Sandbox::new();
    let out = s.run(&["list", "embedded:cases/seed"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("seed/writer-reader\t")),
        "{listed}"
    );
    assert!(listed.lines().all(|l| l.starts_with("seed/")), "{listed}");
    let out = s.run(&["explain", "seed/writer-reader"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello from writer!"));
    let out = s.run(&["list", "embedded:cases/no-such-topic"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("embedded:cases/no-such-topic: not in the embedded corpus"));
}

#[test]
fn default_report_without_xdg_state_home_is_under_home() {
    let s = Sandbox::new();
    let out = s
        .command(&["run", "embedded:cases/seed/writer-reader.json"])
        .env_remove("XDG_STATE_HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = s.path("home/.local/state/mmapconf/latest.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(doc["environment"]["corpus"]["source"], "paths");
    assert_eq!(doc["cases"][0]["id"], "seed/writer-reader");
    assert_eq!(listing(&s.path("cwd"), &[]).len(), 0);
}

#[test]
fn named_targets_come_built_in_without_a_checkout() {
    let s = Sandbox::new();
    let out = s.run(&["run", "--target", "no-such-target"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no target `no-such-target` in embedded:ci/targets.json"),
        "{}",
        text(&out)
    );
    // In a checkout, its own file.
    let out = s
        .command(&["run", "--target", "no-such-target"])
        .current_dir(repo("cases"))
        .output()
        .unwrap();
    assert!(
        text(&out).contains("ci/targets.json") && !text(&out).contains("embedded:"),
        "{}",
        text(&out)
    );
}
