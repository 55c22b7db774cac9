//! What validation says about threads when a case gets them wrong: one
//! line each, at the `thread` (or `as`) field, naming the thread.

use super::load::parse_case;
use serde_json::{json, Value};
use std::path::Path;

/// Problems (line, column, message) of a case whose process `p` has
/// mapping `m` and thread `t1`, then `steps`.
fn problems(steps: Vec<Value>) -> Vec<(usize, usize, String)> {
    let text = case_text(steps);
    match parse_case(Path::new("x.json"), &text, 4096) {
        Ok(_) => vec![],
        Err(ps) => ps.into_iter().map(|p| (p.line, p.col, p.message)).collect(),
    }
}

/// The text of that case, as `problems` parses it.
fn case_text(steps: Vec<Value>) -> String {
    let mut all = vec![
        json!({ "in": "p", "do": "mmap", "len": "1p", "prot": "READ|WRITE", "flags": "PRIVATE|ANONYMOUS", "as": "m" }),
        json!({ "in": "p", "do": "spawn_thread", "as": "t1" }),
    ];
    all.extend(steps);
    let case = json!({ "title": "t", "refs": ["r"], "steps": all });
    serde_json::to_string_pretty(&case).unwrap()
}

/// The one problem of `steps`, checked to be one line at a place in the file.
fn one_message(steps: Vec<Value>) -> String {
    match problems(steps).as_slice() {
        [(line, col, msg)] if *line > 1 && *col > 0 && !msg.contains('\n') => msg.clone(),
        other => panic!("expected one one-line problem at a place in the file: {other:#?}"),
    }
}

#[test]
fn steps_in_a_spawned_thread_and_in_main_pass() {
    let ps = problems(vec![
        json!({ "in": "p", "thread": "t1", "do": "store", "map": "m", "text": "x" }),
        json!({ "in": "p", "thread": "main", "do": "load", "map": "m", "len": 1, "expect": { "text": "x" } }),
        json!({ "do": "together", "steps": [
            { "in": "p", "thread": "t1", "do": "load", "map": "m", "len": 1, "expect": { "text": "x" } },
            { "in": "p", "do": "load", "map": "m", "len": 1, "expect": { "text": "x" } }
        ] }),
    ]);
    assert!(ps.is_empty(), "{ps:#?}");
}

#[test]
fn an_unknown_thread_is_one_line_at_its_field() {
    let m = one_message(vec![
        json!({ "in": "p", "thread": "t9", "do": "load", "map": "m", "len": 1 }),
    ]);
    assert!(
        m.contains("steps[2]") && m.contains("thread `t9` does not exist in process `p`"),
        "{m}"
    );
    // It points at the step's `thread` field: serde_json's pretty text
    // puts each key on a line of its own.
    let steps = vec![json!({ "in": "p", "thread": "t9", "do": "load", "map": "m", "len": 1 })];
    let (line, col, _) = problems(steps.clone()).remove(0);
    let text = case_text(steps);
    let at = text.lines().nth(line - 1).unwrap();
    assert!(at.contains("\"thread\": \"t9\""), "{line}:{col} {at}");
}

#[test]
fn a_thread_of_another_process_is_unknown() {
    let m = one_message(vec![
        json!({ "in": "q", "thread": "t1", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "as": "m" }),
    ]);
    assert!(
        m.contains("thread `t1` does not exist in process `q`"),
        "{m}"
    );
}

#[test]
fn a_forked_child_has_no_threads_of_its_parent() {
    let m = one_message(vec![
        json!({ "in": "p", "thread": "t1", "do": "fork", "as": "c" }),
        json!({ "in": "c", "thread": "t1", "do": "load", "map": "m", "len": 1 }),
    ]);
    assert!(
        m.contains("steps[3]") && m.contains("thread `t1` does not exist in process `c`"),
        "{m}"
    );
}

#[test]
fn spawn_thread_names_a_new_thread() {
    let m = one_message(vec![json!({ "in": "p", "do": "spawn_thread", "as": "t1" })]);
    assert!(
        m.contains("thread `t1` already exists in process `p`"),
        "{m}"
    );
    let m = one_message(vec![
        json!({ "in": "p", "do": "spawn_thread", "as": "main" }),
    ]);
    assert!(m.contains("`main` is the process's first thread"), "{m}");
    let m = one_message(vec![json!({ "in": "p", "do": "spawn_thread" })]);
    assert!(m.contains("`spawn_thread` needs `as`"), "{m}");
    let m = one_message(vec![
        json!({ "in": "p", "do": "spawn_thread", "as": "a/b" }),
    ]);
    assert!(m.contains("no `/`"), "{m}");
}

#[test]
fn harness_steps_take_no_thread() {
    let m = one_message(vec![
        json!({ "do": "check_file", "thread": "t1", "path": "f", "len": 1, "expect": { "text": "x" } }),
    ]);
    assert!(m.contains("leave out `thread`"), "{m}");
}

#[test]
fn one_thread_twice_in_together_is_refused_but_two_threads_of_a_process_are_not() {
    let m = one_message(vec![json!({ "do": "together", "steps": [
        { "in": "p", "thread": "t1", "do": "load", "map": "m", "len": 1 },
        { "in": "p", "thread": "t1", "do": "load", "map": "m", "len": 1 }
    ] })]);
    assert!(
        m.contains("thread `t1` of process `p` appears twice"),
        "{m}"
    );
    let m = one_message(vec![json!({ "do": "together", "steps": [
        { "in": "p", "do": "load", "map": "m", "len": 1 },
        { "in": "p", "thread": "main", "do": "load", "map": "m", "len": 1 }
    ] })]);
    assert!(
        m.contains("thread `main` of process `p` appears twice"),
        "{m}"
    );
}
