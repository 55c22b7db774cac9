//! Selection on the command line: `--filter` globs and words, `--exclude`,
//! `--ids FILE` and `--tag`, shared by `list`, `validate`, `run`, `mutate`
//! and `soak`; a selection that keeps nothing exits 2 naming what was asked.

mod common;

use common::{exe, repo, text};
use std::path::PathBuf;

/// The ids `list` prints for these selection options on the corpus.
fn listed(args: &[&str]) -> Vec<String> {
    let o = exe()
        .arg("list")
        .arg(repo("cases"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn filters_are_globs_or_words_repeatable_and_comma_separated() {
    let all = listed(&[]);
    let fork = listed(&["--filter", "fork/*"]);
    assert!(!fork.is_empty());
    assert!(fork.iter().all(|id| id.starts_with("fork/")), "{fork:?}");
    assert_eq!(
        fork.len(),
        all.iter().filter(|id| id.starts_with("fork/")).count()
    );
    let sigbus = listed(&["--filter", "*sigbus*"]);
    assert!(!sigbus.is_empty());
    assert!(sigbus.iter().all(|id| id.contains("sigbus")), "{sigbus:?}");
    // A plain word is still a substring.
    assert_eq!(listed(&["--filter", "sigbus"]), sigbus);
    // Repeated and comma-separated are the same union.
    let both = listed(&["--filter", "fork/*,*sigbus*"]);
    assert_eq!(
        both,
        listed(&["--filter", "fork/*", "--filter", "*sigbus*"])
    );
    let mut union: Vec<String> = fork.iter().chain(&sigbus).cloned().collect();
    union.sort();
    union.dedup();
    assert_eq!(both, union);
    // --exclude takes them out again.
    let rest = listed(&["--filter", "fork/*,*sigbus*", "--exclude", "fork/*"]);
    assert_eq!(
        rest,
        sigbus
            .iter()
            .filter(|id| !id.starts_with("fork/"))
            .cloned()
            .collect::<Vec<_>>()
    );
}

#[test]
fn tags_select_topics_and_profiles() {
    let all = listed(&[]);
    let seed = listed(&["--tag", "seed"]);
    assert_eq!(
        seed,
        all.iter()
            .filter(|id| id.starts_with("seed/"))
            .cloned()
            .collect::<Vec<_>>()
    );
    // validate checks only the selection.
    let o = exe()
        .args(["validate", "--tag", "seed"])
        .arg(repo("cases"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let want = format!("{} files checked: {} good", seed.len(), seed.len());
    assert!(text(&o).contains(&want), "{}", text(&o));
    let posix = listed(&["--tag", "posix"]);
    let linux = listed(&["--tag", "linux"]);
    assert!(!posix.is_empty() && !linux.is_empty());
    assert_eq!(posix.len() + linux.len(), all.len());
    assert!(posix.iter().all(|id| !linux.contains(id)));
}

#[test]
fn an_ids_file_lists_cases_with_comments() {
    let dir = scratch("select-ids");
    let ids = dir.join("ids.txt");
    std::fs::write(
        &ids,
        "# the two seed programs we care about\nseed/writer-reader\n\n  fork/child-exit-status   # exit codes\n",
    )
    .unwrap();
    let got = listed(&["--ids", ids.to_str().unwrap()]);
    assert_eq!(got, ["fork/child-exit-status", "seed/writer-reader"]);

    // An id that names no case is an error at its line and column.
    std::fs::write(&ids, "seed/writer-reader\n  seed/no-such-case\n").unwrap();
    let err = refused(&["mutate", "--ids", ids.to_str().unwrap()], &dir);
    let want = format!("{}:2:3: id: no case `seed/no-such-case`", ids.display());
    assert!(err.contains(&want), "{err}");
}

/// Runs the harness on the corpus (scratch and report in `dir`), expects
/// exit 2 with one line on standard error, and returns that line.
fn refused(args: &[&str], dir: &std::path::Path) -> String {
    let o = exe()
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg(repo("cases/seed"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    lines[0].to_string()
}

#[test]
fn a_selection_of_nothing_exits_2_naming_the_patterns() {
    let dir = scratch("select-nothing");
    let report = dir.join("r.json");
    let err = refused(
        &[
            "run",
            "--filter",
            "frok/*,sigbsu",
            "--tag",
            "seed",
            "--report",
            report.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(
        err.starts_with("mmapconf: no case matches --filter frok/*,sigbsu --tag seed"),
        "{err}"
    );
    assert!(!report.exists(), "nothing ran, nothing written");
    // A bad glob is one line too; mutate and soak take the same options
    // and refuse the same way.
    let err = refused(&["mutate", "--exclude", "fork/[x"], &dir);
    assert!(err.contains("--exclude: bad pattern `fork/[x`"), "{err}");
    for cmd in ["mutate", "soak"] {
        let err = refused(&[cmd, "--filter", "nothing-is-called-this"], &dir);
        assert!(
            err.contains("no case matches --filter nothing-is-called-this"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn run_runs_only_the_selection() {
    let dir = scratch("select-run");
    let report = dir.join("r.json");
    let o = exe()
        .args(["run", "--tag", "seed", "--exclude", "*fork*"])
        .arg("--report")
        .arg(&report)
        .arg("--dir")
        .arg(&dir)
        .arg(repo("cases"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let ids: Vec<&str> = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(!ids.is_empty());
    assert!(
        ids.iter()
            .all(|id| id.starts_with("seed/") && !id.contains("fork")),
        "{ids:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
