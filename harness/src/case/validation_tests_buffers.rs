//! What validation says about issue 18 part A's operations when a case
//! gets them wrong: one line each, at the field, in the case's words.

use super::load::parse_case;
use serde_json::{json, Value};
use std::path::Path;

/// A case whose process has fd `fd` and mapping `m`, then `step`.
fn with_step(step: Value) -> Vec<(usize, usize, String)> {
    let case = json!({
        "title": "t",
        "refs": ["r"],
        "files": { "f": { "size": "1p" } },
        "steps": [
            { "in": "p", "do": "open", "path": "f", "flags": "O_RDWR", "as": "fd" },
            { "in": "p", "do": "mmap", "fd": "fd", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED", "as": "m" },
            step
        ]
    });
    let text = serde_json::to_string_pretty(&case).unwrap();
    match parse_case(Path::new("x.json"), &text, 4096) {
        Ok(_) => vec![],
        Err(ps) => ps.into_iter().map(|p| (p.line, p.col, p.message)).collect(),
    }
}

fn one_message(step: Value) -> String {
    let ps = with_step(step);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    let (line, col, msg) = ps.into_iter().next().unwrap();
    assert!(line > 1 && col > 0, "{line}:{col}");
    assert!(!msg.contains('\n'), "{msg:?}");
    msg
}

#[test]
fn a_valid_io_step_passes() {
    let ps = with_step(
        json!({ "in": "p", "do": "io", "call": "pread", "fd": "fd", "offset": 0,
        "bufs": [ { "map": "m", "len": 8 } ], "expect": { "value": 8 } }),
    );
    assert!(ps.is_empty(), "{ps:#?}");
}

#[test]
fn pread_without_offset_and_read_with_one_are_refused() {
    let m = one_message(
        json!({ "in": "p", "do": "io", "call": "pread", "fd": "fd", "bufs": [ { "map": "m" } ] }),
    );
    assert!(m.contains("needs `offset`"), "{m}");
    let m = one_message(
        json!({ "in": "p", "do": "io", "call": "read", "fd": "fd", "offset": 0, "bufs": [ { "map": "m" } ] }),
    );
    assert!(m.contains("only pread and pwrite take `offset`"), "{m}");
}

#[test]
fn buffer_counts_follow_the_call() {
    let m = one_message(json!({ "in": "p", "do": "io", "call": "write", "fd": "fd",
        "bufs": [ { "map": "m" }, { "map": "m" } ] }));
    assert!(m.contains("exactly one buffer"), "{m}");
    let m = one_message(json!({ "in": "p", "do": "io", "call": "writev", "fd": "fd", "bufs": [] }));
    assert!(m.contains("at least one buffer"), "{m}");
}

#[test]
fn a_buffer_in_an_unknown_mapping_is_named() {
    let m = one_message(json!({ "in": "p", "do": "io", "call": "readv", "fd": "fd",
        "bufs": [ { "map": "m" }, { "map": "nope" } ] }));
    assert!(m.contains("bufs[1].map") && m.contains("`nope`"), "{m}");
}

#[test]
fn dup_needs_as_or_onto_but_not_both() {
    let m = one_message(json!({ "in": "p", "do": "dup", "fd": "fd" }));
    assert!(m.contains("needs `as`"), "{m}");
    let m = one_message(json!({ "in": "p", "do": "dup", "fd": "fd", "onto": "fd", "as": "x" }));
    assert!(m.contains("leave out `as`"), "{m}");
}

#[test]
fn unknown_seals_whence_and_smaps_fields_are_refused() {
    let m =
        one_message(json!({ "in": "p", "do": "add_seals", "fd": "fd", "seals": "WRITE|BOGUS" }));
    assert!(m.contains("BOGUS"), "{m}");
    let m = one_message(
        json!({ "in": "p", "do": "lseek", "fd": "fd", "offset": 0, "whence": "SET|END" }),
    );
    assert!(m.contains("whence"), "{m}");
    let m = one_message(json!({ "in": "p", "do": "smaps", "map": "m", "field": "Rsss" }));
    assert!(m.contains("Rsss"), "{m}");
}

#[test]
fn numbers_are_expected_only_of_steps_that_observe_one() {
    let m = one_message(
        json!({ "in": "p", "do": "mlockall", "flags": "CURRENT", "expect": { "value": 1 } }),
    );
    assert!(m.contains("observes no number"), "{m}");
    let ps = with_step(
        json!({ "in": "p", "do": "get_seals", "fd": "fd", "as": "seals", "expect": { "value": 1 } }),
    );
    assert!(ps.is_empty(), "{ps:#?}");
}
