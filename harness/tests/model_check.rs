//! `mmapconf model-check` over the corpus on a tmpfs directory: the model
//! agrees with every case, and a case with one expectation made wrong is
//! reported as a disagreement naming its step.

mod common;

use common::{exe, repo, text};
use std::path::Path;

fn scratch() -> tempfile::TempDir {
    // /dev/shm is a tmpfs on every machine this runs on (CI: Debian 12).
    tempfile::Builder::new()
        .prefix("model-check-test")
        .tempdir_in("/dev/shm")
        .expect("a directory in /dev/shm")
}

#[test]
fn the_corpus_agrees_with_the_model_on_tmpfs() {
    let dir = scratch();
    let json = dir.path().join("verdicts.json");
    let out = exe()
        .arg("model-check")
        .arg(repo("cases"))
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("DISAGREE"), "{all}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let target = &v[0];
    assert_eq!(target["fs_type"], "tmpfs", "{target}");
    assert_eq!(target["cases"]["disagree"], 0);
    let count = |k: &str| target["cases"][k].as_u64().unwrap();
    let (agree, unmodeled) = (count("agree"), count("unmodeled"));
    // Most of what runs here is modelled: more cases agree than the model
    // gives up on (system state, smaps, pagemap, timestamps ... are not modelled).
    assert!(
        agree > unmodeled && agree > 200,
        "only {agree} cases agree: {all}"
    );
    let summary = all.lines().last().unwrap_or_default();
    assert!(summary.contains(" agree, 0 disagree, "), "{summary}");
    // Nothing of the scratch root is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("mmapconf-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Copies a corpus case under `dir/cases/`, with `edit` applied to its text.
fn copy_case(dir: &Path, id: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let original = std::fs::read_to_string(repo(&format!("cases/{id}.json"))).unwrap();
    let path = dir.join("cases").join(format!("{id}.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, edit(&original)).unwrap();
    path
}

#[test]
fn a_wrong_expectation_is_a_disagreement_naming_its_step() {
    let dir = scratch();
    let check = |path: &Path| {
        exe()
            .arg("model-check")
            .arg(path)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let same = copy_case(dir.path(), "seed/writer-reader", str::to_string);
    let out = check(&same);
    assert!(out.status.success(), "{}", text(&out));

    let wrong = copy_case(dir.path(), "seed/writer-reader", |t| {
        let changed = t.replacen(
            r#""len": 18, "expect": { "text": "Hello from writer!" }"#,
            r#""len": 18, "expect": { "text": "Hello from WRITER!" }"#,
            1,
        );
        assert_ne!(changed, t, "the expectation to change is in the case");
        changed
    });
    let out = check(&wrong);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("DISAGREE seed/writer-reader step 8: the case expects {\"text\":\"Hello from WRITER!\"}"),
        "{all}"
    );
    assert!(all.contains("0 agree, 1 disagree, 0 unmodeled"), "{all}");
}

#[test]
fn observations_of_a_run_are_admitted_and_a_tampered_one_is_not() {
    let dir = scratch();
    let report = dir.path().join("run.json");
    let out = exe()
        .args(["run", "--jobs", "2", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(dir.path())
        .arg(repo("cases/private"))
        .arg(repo("cases/fork"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let judge = |path: &Path| {
        exe()
            .arg("model-check")
            .arg(repo("cases"))
            .arg("--observed")
            .arg(path)
            .output()
            .unwrap()
    };
    let out = judge(&report);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains(" 0 not admitted"), "{all}");
    assert!(!all.contains(" 0 observations admitted"), "{all}");

    // The first load that read bytes now reports other bytes.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let (id, index) = v["cases"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find_map(|c| {
            let id = c["id"].as_str().unwrap().to_string();
            let step = c["steps"].as_array_mut()?.iter_mut().find(|s| {
                s["op"] == "load"
                    && s["observed"]["bytes"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty())
            })?;
            let bytes = step["observed"]["bytes"].as_str().unwrap();
            let flipped = if bytes.starts_with("ff") { "00" } else { "ff" };
            step["observed"]["bytes"] = format!("{flipped}{}", &bytes[2..]).into();
            Some((id, step["index"].as_str().unwrap().to_string()))
        })
        .expect("a load that read bytes");
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = judge(&tampered);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("NOT ADMITTED {id} step {index} ")),
        "{all}"
    );
}
