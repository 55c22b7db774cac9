//! What `mmapconf validate` says about broken case files: where, and in
//! whose words. Each test builds a small case around one mistake.

use super::load::{parse_case, parse_case_bytes};
use super::values::MAX_STEP_BYTES;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A valid case to break: one file, one process that opens and maps it.
fn base() -> Value {
    json!({
        "title": "t",
        "refs": ["r"],
        "files": { "f": { "size": "1p" } },
        "steps": [
            { "in": "p", "do": "open", "path": "f", "flags": "O_RDWR", "as": "fd" },
            { "in": "p", "do": "mmap", "fd": "fd", "len": "1p", "prot": "READ|WRITE", "flags": "SHARED", "as": "m" }
        ]
    })
}

fn problems_of_text(text: &str) -> Vec<(usize, usize, String)> {
    match parse_case(Path::new("x.json"), text, 4096) {
        Ok(_) => vec![],
        Err(ps) => ps.into_iter().map(|p| (p.line, p.col, p.message)).collect(),
    }
}

/// Problems of a case written one key a line, as people write them.
fn problems(case: &Value) -> Vec<(usize, usize, String)> {
    problems_of_text(&serde_json::to_string_pretty(case).unwrap())
}

fn only(case: &Value) -> (usize, usize, String) {
    let ps = problems(case);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    ps.into_iter().next().unwrap()
}

/// The (line, col) of the first occurrence of `needle` in `text`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).expect("needle in text");
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn assert_no_serde_words(msg: &str) {
    for w in [
        "untagged",
        "variant",
        "invalid type",
        "expected struct",
        "expected i64",
        "expected u8",
    ] {
        assert!(!msg.contains(w), "serde's words in {msg:?}");
    }
}

#[test]
fn the_base_case_is_valid() {
    assert_eq!(problems(&base()), vec![]);
}

#[test]
fn a_top_level_field_of_the_wrong_type_is_named_where_its_value_is() {
    let mut c = base();
    c["title"] = json!(5);
    let text = serde_json::to_string_pretty(&c).unwrap();
    let (line, col, msg) = problems_of_text(&text).remove(0);
    let (l, c) = pos(&text, "\"title\": 5");
    assert_eq!((line, col), (l, c + 9));
    assert_eq!(msg, "title: expected a string, found the number 5");

    let mut c = base();
    c["refs"] = json!(["a", 7]);
    let (_, _, msg) = only(&c);
    assert_eq!(msg, "refs[1]: expected a string, found the number 7");
}

#[test]
fn a_file_that_is_not_an_object_says_what_a_file_is() {
    let mut c = base();
    c["files"] = json!({ "data": "2p" });
    let text = serde_json::to_string_pretty(&c).unwrap();
    let (line, col, msg) = problems_of_text(&text).remove(0);
    assert_eq!((line, col), pos(&text, "\"2p\""));
    assert!(msg.starts_with("files.data: expected a file"), "{msg}");
    assert_no_serde_words(&msg);
}

#[test]
fn a_bad_size_says_what_a_size_may_be() {
    for bad in [json!([1]), json!(1.5), json!(true), json!({ "p": 2 })] {
        let mut c = base();
        c["files"]["f"]["size"] = bad.clone();
        let (_, _, msg) = only(&c);
        assert!(
            msg.starts_with("files.f.size: expected a size"),
            "{bad}: {msg}"
        );
        assert!(msg.contains("\"2p\""), "{msg}");
        assert_no_serde_words(&msg);
    }
    let mut c = base();
    c["steps"][1]["len"] = json!([4096]);
    let (_, _, msg) = only(&c);
    assert!(msg.starts_with("steps[1].len: expected a size"), "{msg}");
}

#[test]
fn a_number_in_do_says_do_is_an_operation_name() {
    for n in [5, 99] {
        let mut c = base();
        c["steps"][1]["do"] = json!(n);
        let text = serde_json::to_string_pretty(&c).unwrap();
        let ps = problems_of_text(&text);
        assert_eq!(ps.len(), 1, "{ps:#?}");
        let (line, col, msg) = &ps[0];
        assert_eq!((*line, *col), pos(&text, &format!("{n},")));
        assert!(
            msg.starts_with(
                "steps[1].do: `do` must be one of the operation names (add_seals, check_file, close,"
            ),
            "{msg}"
        );
        assert!(msg.ends_with(&format!("found the number {n}")), "{msg}");
    }
}

#[test]
fn wrong_types_inside_steps_name_the_field() {
    let mut c = base();
    c["steps"][0]["flags"] = json!(2);
    c["steps"][1]["expect"] = json!({ "errno": 22 });
    c["steps"][1]["observe"] = json!("yes");
    let msgs: Vec<String> = problems(&c).into_iter().map(|p| p.2).collect();
    assert_eq!(
        msgs,
        vec![
            "steps[0].flags: expected a string, found the number 2",
            "steps[1].expect.errno: expected a string, found the number 22",
            "steps[1].observe: expected true or false, found the string \"yes\"",
        ]
    );
}

#[test]
fn invalid_utf8_is_reported_at_the_bad_byte() {
    let mut bytes = b"{\n  \"title\": \"caf\xc3\xa9 ".to_vec();
    bytes.extend_from_slice(b"\xff\",\n}");
    let ps = parse_case_bytes(Path::new("x.json"), &bytes, 4096).unwrap_err();
    assert_eq!(ps.len(), 1);
    // Line 2: `  "title": "café ` is 17 characters, so the bad byte is the 18th.
    assert_eq!((ps[0].line, ps[0].col), (2, 18), "{}", ps[0]);
    assert!(ps[0].message.contains("UTF-8"), "{}", ps[0]);
}

#[test]
fn a_duplicate_key_is_an_error_at_its_second_occurrence() {
    let text = "{\n  \"title\": \"a\",\n  \"refs\": [\"r\"],\n  \"title\": \"b\",\n  \"steps\": [\n    { \"in\": \"p\", \"do\": \"fork\", \"as\": \"c\", \"as\": \"d\" }\n  ]\n}\n";
    let ps = problems_of_text(text);
    assert_eq!(
        ps,
        vec![
            (4, 3, "duplicate key `title` (first at 2:3)".to_string()),
            (6, 43, "duplicate key `as` (first at 6:32)".to_string()),
        ]
    );
}

#[test]
fn file_names_longer_than_name_max_are_rejected() {
    let long = "x".repeat(256);
    let mut c = base();
    c["files"] = json!({ long.clone(): { "size": 1 } });
    c["steps"][0]["path"] = json!(long);
    let msgs: Vec<String> = problems(&c).into_iter().map(|p| p.2).collect();
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(
        msgs[0].starts_with(&format!(
            "files[\"{}…\"]: a file name is at most 255 bytes",
            "x".repeat(40)
        )),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].starts_with("steps[0].path: a file name is at most 255 bytes"),
        "{}",
        msgs[1]
    );

    let mut c = base();
    c["files"] = json!({ "x".repeat(255): { "size": 1 } });
    c["steps"][0]["path"] = json!("x".repeat(255));
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn other_names_have_a_sane_limit() {
    let long = "n".repeat(65);
    let mut c = base();
    c["steps"][0]["in"] = json!(long);
    c["steps"][1]["in"] = json!(long);
    c["steps"][1]["as"] = json!(long);
    let msgs: Vec<String> = problems(&c).into_iter().map(|p| p.2).collect();
    assert_eq!(
        msgs,
        vec![
            "steps[0].in: a name is at most 64 bytes; this one has 65",
            "steps[1].as: a name is at most 64 bytes; this one has 65",
            "steps[1].in: a name is at most 64 bytes; this one has 65",
        ]
    );
}

#[test]
fn bytes_the_harness_would_hold_are_capped() {
    let tib = "0x10000000000";
    let mut c = base();
    c["files"]["big"] = json!({ "fill": 1, "size": tib });
    c["files"]["sparse"] = json!({ "size": tib });
    c["steps"].as_array_mut().unwrap().extend([
        json!({ "in": "p", "do": "load", "map": "m", "at": 0, "len": tib }),
        json!({ "in": "p", "do": "store", "map": "m", "fill": 1, "len": tib }),
        json!({ "in": "p", "do": "pwrite", "fd": "fd", "at": 0, "pattern": 1, "len": tib }),
        json!({ "in": "p", "do": "pread", "fd": "fd", "at": 0, "len": tib }),
        json!({ "do": "check_file", "path": "f", "len": tib }),
        json!({ "in": "p", "do": "ftruncate", "fd": "fd", "len": tib }),
    ]);
    let msgs: Vec<String> = problems(&c).into_iter().map(|p| p.2).collect();
    assert_eq!(
        msgs,
        vec![
            "files.big.size: 1 TiB is more than the 64 MiB a file's initial content may have",
            "steps[2].len: 1 TiB is more than the 64 MiB a step may read",
            "steps[3].len: 1 TiB is more than the 64 MiB a step may write",
            "steps[4].len: 1 TiB is more than the 64 MiB a step may write",
            "steps[5].len: 1 TiB is more than the 64 MiB a step may read",
            "steps[6].len: 1 TiB is more than the 64 MiB a step may read",
        ]
    );
    // At the cap exactly is fine.
    let mut c = base();
    c["files"]["big"] = json!({ "fill": 1, "len": MAX_STEP_BYTES });
    assert_eq!(problems(&c), vec![]);
}

/// A case with `n` steps that each close an fd never opened: `n` problems.
fn with_problems(n: usize) -> String {
    let mut c = base();
    let steps = c["steps"].as_array_mut().unwrap();
    for i in 0..n {
        steps.push(json!({ "in": "p", "do": "close", "fd": format!("nope{i}") }));
    }
    serde_json::to_string_pretty(&c).unwrap()
}

fn time_validate(text: &str, n: usize) -> Duration {
    let started = Instant::now();
    let ps = parse_case(Path::new("x.json"), text, 4096).unwrap_err();
    assert_eq!(ps.len(), n);
    started.elapsed()
}

/// Time grows with the number of problems linearly: ten times the problems
/// (2,000 and 20,000: enough for quadratic work to show, little for a debug build)
/// may take at most twenty times as long (quadratic work takes a hundred).
/// The large run is given that long and no longer, in a thread of its own,
/// so a regression fails in seconds instead of minutes.
#[test]
fn validation_time_is_linear_in_the_number_of_problems() {
    let small = with_problems(2_000);
    let large = with_problems(20_000);
    let t_small = (0..3).map(|_| time_validate(&small, 2_000)).min().unwrap();
    let limit = t_small * 20 + Duration::from_millis(200);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(time_validate(&large, 20_000));
    });
    match rx.recv_timeout(limit) {
        Ok(t_large) => assert!(t_large < limit, "{t_large:?} for 20k vs {t_small:?} for 2k"),
        Err(_) => panic!("20k problems took longer than {limit:?} (2k took {t_small:?})"),
    }
}

#[test]
fn a_case_has_a_bounded_number_of_processes() {
    let mut c = base();
    let steps = c["steps"].as_array_mut().unwrap();
    for i in 0..70 {
        steps.push(json!({ "in": "p", "do": "fork", "as": format!("c{i}") }));
        steps.push(json!({ "in": format!("c{i}"), "do": "close", "fd": "fd" }));
    }
    let msgs: Vec<String> = problems(&c).into_iter().map(|p| p.2).collect();
    // p and c0..c62 are 64; c63 is one too many, and its steps are not checked further.
    assert_eq!(
        msgs[0],
        "steps[128].as: a case has at most 64 processes; `c63` would be one more"
    );
    assert!(
        msgs.iter().all(|m| m.contains("at most 64 processes")),
        "{msgs:#?}"
    );
}

/// The case with `steps` appended to base()'s open and mmap.
fn with_steps(steps: Vec<Value>) -> Value {
    let mut c = base();
    c["steps"].as_array_mut().unwrap().extend(steps);
    c
}

#[test]
fn objects_limits_and_remote_steps_name_what_is_wrong() {
    let cases = [
        (
            json!({ "in": "p", "do": "shmat", "seg": "nope", "as": "a" }),
            "seg",
            "segment `nope` was not made by `shmget`",
        ),
        (
            json!({ "in": "p", "do": "shm_open", "name": "a/b", "flags": "O_RDWR", "as": "s" }),
            "name",
            "not a shm name",
        ),
        (
            json!({ "in": "p", "do": "setrlimit", "resource": "MEMLOCK", "limit": "lots" }),
            "limit",
            "\"unlimited\"",
        ),
        (
            json!({ "in": "p", "do": "ignore_signal", "signal": "SIGSEGV" }),
            "signal",
            "cannot be ignored",
        ),
        (
            json!({ "in": "p", "do": "remote_read", "proc": "ghost", "via": "ptrace", "map": "m", "len": 1 }),
            "proc",
            "no process `ghost`",
        ),
        (
            json!({ "in": "q", "do": "remote_read", "proc": "p", "via": "proc_mem", "map": "other", "len": 1 }),
            "map",
            "mapping `other` does not exist in process `p`",
        ),
        (
            json!({ "in": "p", "do": "load", "map": "m", "len": 1, "expect": { "signal": "SIGXFSZ" } }),
            "signal",
            "cannot raise SIGXFSZ",
        ),
    ];
    for (step, key, words) in cases {
        let case = with_steps(vec![step.clone()]);
        let text = serde_json::to_string_pretty(&case).unwrap();
        let (line, col, msg) = only(&case);
        assert!(msg.contains(words), "{step}: {msg}");
        assert!(msg.contains(key), "{step}: {msg} names `{key}`");
        assert!(!msg.contains('\n'), "one line: {msg}");
        // Reported at the step's own lines, not at the top of the file.
        assert!(
            line > pos(&text, "\"mmap\"").0,
            "{step}: line {line} col {col}"
        );
    }
    // An unknown `what` or `via` is a field error in the user's words too.
    let case = with_steps(vec![
        json!({ "in": "p", "do": "open_special", "what": "dev_null", "as": "z" }),
    ]);
    let (_, _, msg) = only(&case);
    assert!(msg.contains("what"), "{msg}");
    assert_no_serde_words(&msg);
}

#[test]
fn a_pipe_names_both_ends_and_a_segment_is_inherited_by_a_child() {
    let case = with_steps(vec![
        json!({ "in": "p", "do": "open_special", "what": "pipe", "as": "pp" }),
        json!({ "in": "p", "do": "close", "fd": "pp_w" }),
        json!({ "in": "p", "do": "shmget", "size": "1p", "as": "seg" }),
        json!({ "in": "p", "do": "fork", "as": "c" }),
        json!({ "in": "c", "do": "shmat", "seg": "seg", "as": "a" }),
        json!({ "in": "c", "do": "shmdt", "map": "a" }),
        json!({ "in": "c", "do": "load", "map": "a", "len": 1, "expect": { "signal": "SIGSEGV" } }),
    ]);
    assert_eq!(problems(&case), vec![]);
    // A fresh process has no segment of its parent's.
    let case = with_steps(vec![
        json!({ "in": "p", "do": "shmget", "size": "1p", "as": "seg" }),
        json!({ "in": "q", "do": "shmat", "seg": "seg", "as": "a" }),
    ]);
    let (_, _, msg) = only(&case);
    assert!(msg.contains("segment `seg`"), "{msg}");
}

#[test]
fn processes_name_fresh_processes_of_the_case_with_a_known_mount() {
    let mut c = base();
    c["processes"] = json!({ "p": { "mount": "second" } });
    assert_eq!(problems(&c), vec![]);

    c["processes"] = json!({ "q": { "mount": "second" } });
    let (_, _, msg) = only(&c);
    assert_eq!(msg, "processes.q: no step runs in a process `q`");

    c["processes"] = json!({ "p": { "mount": "third" } });
    let text = serde_json::to_string_pretty(&c).unwrap();
    let (line, col, msg) = only(&c);
    assert_eq!((line, col), pos(&text, "\"third\""));
    assert!(msg.starts_with("processes.p.mount: "), "{msg}");
    assert_no_serde_words(&msg);

    c["processes"] = json!({ "p": { "mnt": "second" } });
    let (_, _, msg) = only(&c);
    assert!(msg.starts_with("processes.p: unknown field `mnt`"), "{msg}");

    // A forked child inherits its parent's fds and mappings, so its mount too.
    c["processes"] = json!({ "kid": { "mount": "second" } });
    c["steps"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "in": "p", "do": "fork", "as": "kid" }));
    let (_, _, msg) = only(&c);
    assert!(
        msg.starts_with("processes.kid: `kid` is made by a `fork` step"),
        "{msg}"
    );
}
