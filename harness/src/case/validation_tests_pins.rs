//! What validation says about issue 18 part C: pinning steps, where a
//! fault happened, numbers and addresses as sizes, patterns from an offset.

use super::load::parse_case;
use serde_json::{json, Value};
use std::path::Path;

/// Problems of a case whose process has fd `fd` and mapping `m`, then `steps`.
fn problems(steps: Vec<Value>) -> Vec<String> {
    let mut all = vec![
        json!({ "in": "p", "do": "open", "path": "f", "flags": "O_RDWR", "as": "fd" }),
        json!({ "in": "p", "do": "mmap", "fd": "fd", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED", "as": "m" }),
    ];
    all.extend(steps);
    let case =
        json!({ "title": "t", "refs": ["r"], "files": { "f": { "size": "1p" } }, "steps": all });
    let text = serde_json::to_string_pretty(&case).unwrap();
    match parse_case(Path::new("x.json"), &text, 4096) {
        Ok(_) => vec![],
        Err(ps) => ps
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.line, p.col, p.message))
            .collect(),
    }
}

#[test]
fn a_ring_is_used_after_its_registration_and_not_after_unregistering() {
    let reg = json!({ "in": "p", "do": "io_uring_register", "map": "m", "as": "ring" });
    let fixed = json!({ "in": "p", "do": "io_uring_fixed", "ring": "ring", "call": "write_fixed", "fd": "fd", "offset": 0, "expect": { "value": "1p" } });
    let unreg = json!({ "in": "p", "do": "io_uring_unregister", "ring": "ring" });
    assert_eq!(
        problems(vec![reg.clone(), fixed.clone(), unreg.clone()]),
        Vec::<String>::new()
    );
    let ps = problems(vec![fixed.clone()]);
    assert!(
        ps.len() == 1
            && ps[0].contains("steps[2].ring")
            && ps[0].contains("no io_uring ring `ring`"),
        "{ps:?}"
    );
    let ps = problems(vec![reg.clone(), unreg, fixed]);
    assert!(ps.len() == 1 && ps[0].contains("steps[4].ring"), "{ps:?}");
    let ps = problems(vec![
        json!({ "in": "p", "do": "io_uring_register", "map": "m" }),
    ]);
    assert!(ps.len() == 1 && ps[0].contains("needs `as`"), "{ps:?}");
}

#[test]
fn read_bytes_must_match_its_len_and_vmsplice_needs_an_fd() {
    let ps = problems(vec![
        json!({ "in": "p", "do": "read", "fd": "fd", "len": 4, "expect": { "text": "abc" } }),
    ]);
    assert!(
        ps.len() == 1 && ps[0].contains("expects 3 bytes but the step reads 4"),
        "{ps:?}"
    );
    let ps = problems(vec![
        json!({ "in": "p", "do": "vmsplice", "fd": "nope", "map": "m", "len": 4 }),
    ]);
    assert!(ps.len() == 1 && ps[0].contains("fd `nope`"), "{ps:?}");
}

#[test]
fn fault_at_and_done_go_with_a_signal_of_an_access() {
    let ok = json!({ "in": "p", "do": "load", "map": "m", "len": 4, "expect": { "signal": "SIGBUS", "fault_at": "0x1000", "done": "1p" } });
    assert_eq!(problems(vec![ok]), Vec::<String>::new());
    let ps = problems(vec![
        json!({ "in": "p", "do": "load", "map": "m", "len": 4, "expect": { "fault_at": "1p" } }),
    ]);
    assert!(
        ps.len() == 1 && ps[0].contains("expect.fault_at") && ps[0].contains("goes with `signal`"),
        "{ps:?}"
    );
    let ps = problems(vec![
        json!({ "in": "p", "do": "load", "map": "m", "len": 4, "expect": { "signal": "SIGBUS", "done": "2q" } }),
    ]);
    assert!(ps.len() == 1 && ps[0].contains("expect.done"), "{ps:?}");
}

#[test]
fn numbers_addresses_and_pattern_phases_take_sizes_and_say_when_they_do_not_parse() {
    let good = vec![
        json!({ "in": "p", "do": "lseek", "fd": "fd", "offset": 0, "whence": "END", "expect": { "value": "0x1000" } }),
        json!({ "in": "p", "do": "lseek", "fd": "fd", "offset": 0, "whence": "END", "expect": { "range": ["1p-1", "1p"] } }),
        json!({ "in": "p", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "addr": "0x10000", "as": "a" }),
        json!({ "in": "p", "do": "load", "map": "m", "at": 5, "len": 8, "expect": { "pattern": 1, "from": "0x5" } }),
    ];
    assert_eq!(problems(good), Vec::<String>::new());
    let ps = problems(vec![
        json!({ "in": "p", "do": "lseek", "fd": "fd", "offset": 0, "whence": "END", "expect": { "value": "0xg" } }),
    ]);
    assert!(ps.len() == 1 && ps[0].contains("expect.value"), "{ps:?}");
    let ps = problems(vec![
        json!({ "in": "p", "do": "mmap", "len": "1p", "prot": "READ", "flags": "PRIVATE|ANONYMOUS", "addr": "1.5p", "as": "a" }),
    ]);
    assert!(ps.len() == 1 && ps[0].contains("addr"), "{ps:?}");
    let ps = problems(vec![
        json!({ "in": "p", "do": "load", "map": "m", "len": 4, "expect": { "text": "abcd", "from": 1 } }),
    ]);
    assert!(
        ps.len() == 1 && ps[0].contains("expect.from") && ps[0].contains("goes with `pattern`"),
        "{ps:?}"
    );
}

#[test]
fn skip_rest_needs_a_reason_and_an_expectation() {
    let step = |variant: Value| json!({ "in": "p", "do": "load", "map": "m", "len": 1, "variants": [variant] });
    let ok = json!({ "when": { "fs": ["ext4"] }, "expect": { "signal": "SIGBUS" }, "why": "w", "skip_rest": "r" });
    assert_eq!(problems(vec![step(ok)]), Vec::<String>::new());
    let blank = json!({ "when": { "fs": ["ext4"] }, "why": "w", "skip_rest": " " });
    let ps = problems(vec![step(blank)]);
    assert!(
        ps.len() == 1 && ps[0].contains("skip_rest") && ps[0].contains("not blank"),
        "{ps:?}"
    );
    let observing =
        json!({ "when": { "fs": ["ext4"] }, "observe": true, "why": "w", "skip_rest": "r" });
    let ps = problems(vec![step(observing)]);
    assert!(ps.len() == 1 && ps[0].contains("not `observe`"), "{ps:?}");
}
