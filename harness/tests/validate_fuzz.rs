//! Fuzzing the loader and validator: what `mmapconf validate` does to one
//! file (`parse_case_bytes`), fed with generated files of two kinds:
//!
//! - cases built from the grammar: operations with their own fields and
//!   the common keys, names, sizes, flags, expectations, nested `together`
//!   steps, with now and then a value of any JSON type in any place;
//! - corpus files mutated: keys deleted, duplicated or given a value of the
//!   wrong type, array elements dropped or repeated, then bytes flipped,
//!   inserted or the text cut short.
//!
//! For every file: no panic; every problem has a line and column inside the
//! text; every message starts with the field it is about (or says the file
//! is not JSON or not UTF-8) and none repeats serde's words for Rust types.
//!
//! `cargo test --test validate_fuzz` runs a few thousand files from a fixed
//! seed. A long run: `MMAPCONF_FUZZ_CASES=100000 cargo test --release --test
//! validate_fuzz -- --nocapture` (`MMAPCONF_FUZZ_SEED` picks another seed).
//! Offending files are written to target/validate-fuzz/ for a closer look.

use mmapconf::case::load::op_fields;
use mmapconf::case::{discover, parse_case_bytes, Problem};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

// ---------------------------------------------------------------- grammar

fn pick(items: &'static [&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(items).prop_map(str::to_string).boxed()
}

/// Any JSON value, nested a little: what a wrong type looks like.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(&[0.5f64, -1.25, 1e300, 4096.0][..]).prop_map(Value::from),
        pick(&["", "x", "2p", "READ", "é", "\u{0}", "0x1000"]).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((pick(&["a", "do", "len", "map", "text"]), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Now and then a value of another type than the field takes.
fn or_wrong(s: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![12 => s, 1 => any_json()].boxed()
}

fn size() -> BoxedStrategy<Value> {
    prop_oneof![
        (0i64..70_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        pick(&[
            "1p",
            "2p",
            "p",
            "p-1",
            "2p+100",
            "-1p",
            "0x1000",
            "4096",
            "0x10000000000",
            "0x8000000000000000",
            "0xffffffffffffffff",
            "99999999999999999999p",
            "1.5p",
            "2*p",
            "",
            " ",
            "p+",
            "-",
            "0x",
            "18446744073709551615",
            "64p",
        ])
        .prop_map(Value::from),
    ]
    .boxed()
}

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        8 => pick(&["p", "q", "child", "fd", "fd2", "m", "m2", "f", "data", "snap", "v"]),
        1 => pick(&["", ".", "..", "../x", "/abs", "a/b", "a\u{0}b", "é"]),
        1 => (60usize..300).prop_map(|n| "n".repeat(n)),
    ]
    .boxed()
}

fn flags() -> BoxedStrategy<Value> {
    pick(&[
        "O_RDWR",
        "O_RDONLY|O_CREAT",
        "READ|WRITE",
        "READ",
        "NONE",
        "SHARED",
        "PRIVATE|ANONYMOUS",
        "MS_SYNC",
        "DONTNEED",
        "MAYMOVE",
        "0",
        "",
        "|",
        "BOGUS",
        "0x800000",
        "-1",
    ])
    .prop_map(Value::from)
    .boxed()
}

fn bytes_fields() -> BoxedStrategy<Vec<(String, Value)>> {
    let one = prop_oneof![
        pick(&["hello", "", "\u{0}", "é"]).prop_map(|t| ("text".to_string(), Value::from(t))),
        pick(&["48 65", "4", "zz", ""]).prop_map(|h| ("hex".to_string(), Value::from(h))),
        (0u64..300).prop_map(|f| ("fill".to_string(), Value::from(f))),
        any::<u64>().prop_map(|p| ("pattern".to_string(), Value::from(p))),
        size().prop_map(|s| ("len".to_string(), s)),
    ];
    prop::collection::vec(one, 0..3).boxed()
}

fn expect() -> BoxedStrategy<Value> {
    let field = prop_oneof![
        pick(&["EINVAL", "EACCES", "ENOMEM", "EBOGUS"])
            .prop_map(|e| ("errno".to_string(), Value::from(e))),
        pick(&["SIGBUS", "SIGSEGV", "SIGNOPE"])
            .prop_map(|s| ("signal".to_string(), Value::from(s))),
        pick(&["BUS_ADRERR", "SEGV_MAPERR", "X"])
            .prop_map(|s| ("si_code".to_string(), Value::from(s))),
        pick(&["hello", ""]).prop_map(|t| ("text".to_string(), Value::from(t))),
        (0u64..300).prop_map(|f| ("fill".to_string(), Value::from(f))),
        any::<i64>().prop_map(|v| ("value".to_string(), Value::from(v))),
        (any::<i64>(), any::<i64>())
            .prop_map(|(a, b)| ("range".to_string(), Value::from(vec![a, b]))),
        name().prop_map(|n| ("same_as".to_string(), Value::from(n))),
        (-1i64..300).prop_map(|c| ("exit".to_string(), Value::from(c))),
        pick(&["SIGKILL", "SIGTERM"]).prop_map(|s| ("killed_by".to_string(), Value::from(s))),
        (size(), name()).prop_map(|(s, n)| {
            (
                "stat".to_string(),
                serde_json::json!({ "size": s, "mtime": { "changed_since": n } }),
            )
        }),
        (pick(&["bogus", "lenn"]), any_json()).prop_map(|(k, v)| (k, v)),
    ];
    prop::collection::vec(or_wrong_kv(field.boxed()), 0..3)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
        .boxed()
}

fn or_wrong_kv(s: BoxedStrategy<(String, Value)>) -> BoxedStrategy<(String, Value)> {
    prop_oneof![12 => s.clone(), 1 => (s, any_json()).prop_map(|((k, _), v)| (k, v))].boxed()
}

fn variant() -> BoxedStrategy<Value> {
    (
        prop::option::of(pick(&["ext4", "tmpfs"])),
        prop::option::of(pick(&[">=6.6", "<5", "bogus"])),
        prop::option::of(expect()),
        pick(&["a commit", ""]),
    )
        .prop_map(|(fs, kernel, expect, why)| {
            let mut when = Map::new();
            if let Some(fs) = fs {
                when.insert("fs".into(), Value::from(vec![fs]));
            }
            if let Some(k) = kernel {
                when.insert("kernel".into(), Value::from(k));
            }
            let mut v = Map::new();
            v.insert("when".into(), Value::Object(when));
            v.insert("why".into(), Value::from(why));
            if let Some(e) = expect {
                v.insert("expect".into(), e);
            }
            Value::Object(v)
        })
        .boxed()
}

/// A value for a field of a step, chosen by the field's name.
fn field_value(field: &str, depth: u32) -> BoxedStrategy<Value> {
    let s = match field {
        "len" | "at" | "offset" | "old_len" | "new_len" => size(),
        "flags" | "prot" | "advice" => flags(),
        "path" | "fd" | "map" | "proc" | "in" | "as" | "name" => {
            name().prop_map(Value::from).boxed()
        }
        "signal" => pick(&["SIGKILL", "SIGTERM", "SIGBOGUS"])
            .prop_map(Value::from)
            .boxed(),
        "mode" | "count" | "code" | "time" | "width" | "fill" => {
            (-2i64..1000).prop_map(Value::from).boxed()
        }
        "pattern" => any::<u64>().prop_map(Value::from).boxed(),
        "text" | "hex" | "note" => pick(&["hello", "48 65", "zz", ""])
            .prop_map(Value::from)
            .boxed(),
        "atomic" | "observe" | "read_only" => any::<bool>().prop_map(Value::from).boxed(),
        "addr" | "new_addr" => prop_oneof![
            any::<u64>().prop_map(Value::from),
            (name(), size()).prop_map(|(m, at)| serde_json::json!({ "map": m, "at": at })),
        ]
        .boxed(),
        "expect" => expect(),
        "variants" => prop::collection::vec(variant(), 0..2)
            .prop_map(Value::Array)
            .boxed(),
        "steps" if depth > 0 => prop::collection::vec(step(depth - 1), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        _ => any_json(),
    };
    or_wrong(s)
}

const COMMON: &[&str] = &["in", "as", "expect", "variants", "observe", "note"];

fn step(depth: u32) -> BoxedStrategy<Value> {
    let ops: Vec<String> = op_fields().keys().cloned().collect();
    (prop::sample::select(ops), 0u8..20)
        .prop_flat_map(move |(op, odd)| {
            let mut keys: Vec<String> = op_fields()[&op].iter().cloned().collect();
            keys.extend(COMMON.iter().map(|k| k.to_string()));
            if odd == 0 {
                keys.push("bogus".to_string());
            }
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = keys
                .into_iter()
                .map(|k| {
                    let p = if k == "in" { 0.9 } else { 0.6 };
                    prop::option::weighted(
                        p,
                        field_value(&k, depth).prop_map(move |v| (k.clone(), v)),
                    )
                    .boxed()
                })
                .collect();
            let do_value = if odd == 1 {
                any_json().boxed()
            } else {
                Just(Value::from(op)).boxed()
            };
            (do_value, fields)
        })
        .prop_map(|(op, fields)| {
            let mut obj = Map::new();
            obj.insert("do".into(), op);
            obj.extend(fields.into_iter().flatten());
            Value::Object(obj)
        })
        .boxed()
}

fn file_init() -> BoxedStrategy<Value> {
    (
        prop::option::of(size()),
        prop::option::of(0u32..0o7777),
        bytes_fields(),
    )
        .prop_map(|(size, mode, data)| {
            let mut obj = Map::new();
            if let Some(s) = size {
                obj.insert("size".into(), s);
            }
            if let Some(m) = mode {
                obj.insert("mode".into(), Value::from(m));
            }
            obj.extend(data);
            Value::Object(obj)
        })
        .boxed()
}

/// A whole case from the grammar, as JSON text.
fn grammar_case() -> BoxedStrategy<Vec<u8>> {
    (
        or_wrong(pick(&["A title", "", "  "]).prop_map(Value::from).boxed()),
        or_wrong(
            prop::collection::vec(pick(&["mmap(2)", ""]), 0..3)
                .prop_map(Value::from)
                .boxed(),
        ),
        prop::collection::vec((name(), or_wrong(file_init())), 0..3),
        or_wrong(
            prop::collection::vec(step(2), 0..8)
                .prop_map(Value::Array)
                .boxed(),
        ),
        prop::option::of(or_wrong(
            (
                prop::option::of(any::<bool>()),
                prop::option::of(pick(&[">=5.8", "x"])),
                prop::option::of(pick(&["pagemap_pfn", "mlock", "nope"])),
            )
                .prop_map(|(root, kernel, probe)| {
                    let mut r = Map::new();
                    if let Some(b) = root {
                        r.insert("root".into(), Value::from(b));
                    }
                    if let Some(k) = kernel {
                        r.insert("kernel".into(), Value::from(k));
                    }
                    if let Some(p) = probe {
                        r.insert("probes".into(), Value::from(vec![p]));
                    }
                    Value::Object(r)
                })
                .boxed(),
        )),
        prop::option::of(or_wrong(
            prop::sample::select(&[1.0f64, 0.0, -3.0, 0.5][..])
                .prop_map(Value::from)
                .boxed(),
        )),
        any::<bool>(),
    )
        .prop_map(|(title, refs, files, steps, requires, timeout, pretty)| {
            let mut case = Map::new();
            case.insert("title".into(), title);
            case.insert("refs".into(), refs);
            case.insert("files".into(), Value::Object(files.into_iter().collect()));
            case.insert("steps".into(), steps);
            if let Some(r) = requires {
                case.insert("requires".into(), r);
            }
            if let Some(t) = timeout {
                case.insert("timeout".into(), t);
            }
            let v = Value::Object(case);
            if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            }
        })
        .boxed()
}

// ---------------------------------------------------------------- mutations

#[derive(Debug, Clone)]
enum Edit {
    DeleteKey(usize, usize),
    WrongType(usize, usize, Value),
    DropElement(usize, usize),
    RepeatElement(usize, usize),
}

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(o, k)| Edit::DeleteKey(o, k)),
        (any::<usize>(), any::<usize>(), any_json()).prop_map(|(o, k, v)| Edit::WrongType(o, k, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, i)| Edit::DropElement(a, i)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, i)| Edit::RepeatElement(a, i)),
    ]
    .boxed()
}

fn byte_edit() -> BoxedStrategy<ByteEdit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, x)| ByteEdit::Flip(i, x | 1)),
        2 => (any::<usize>(), prop::collection::vec(
                prop::sample::select(&b"{}[]\",:0123456789-.eE \n\\\xff\xc3\x80ptrue"[..]), 1..4))
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        1 => any::<usize>().prop_map(ByteEdit::Truncate),
    ]
    .boxed()
}

/// Visits every object (or array) of a document in order, until `f` says it is done.
fn nth_container(
    v: &mut Value,
    want_object: bool,
    n: &mut usize,
    f: &mut dyn FnMut(&mut Value),
) -> bool {
    let is_target = if want_object {
        v.is_object()
    } else {
        v.is_array()
    };
    if is_target {
        if *n == 0 {
            f(v);
            return true;
        }
        *n -= 1;
    }
    match v {
        Value::Object(o) => o.values_mut().any(|c| nth_container(c, want_object, n, f)),
        Value::Array(a) => a.iter_mut().any(|c| nth_container(c, want_object, n, f)),
        _ => false,
    }
}

fn count(v: &Value, object: bool) -> usize {
    let me = usize::from(if object { v.is_object() } else { v.is_array() });
    me + match v {
        Value::Object(o) => o.values().map(|c| count(c, object)).sum(),
        Value::Array(a) => a.iter().map(|c| count(c, object)).sum(),
        _ => 0,
    }
}

fn apply(doc: &mut Value, e: &Edit) {
    let (object, which) = match e {
        Edit::DeleteKey(o, _) | Edit::WrongType(o, _, _) => (true, *o),
        Edit::DropElement(a, _) | Edit::RepeatElement(a, _) => (false, *a),
    };
    let total = count(doc, object);
    if total == 0 {
        return;
    }
    let mut n = which % total;
    nth_container(doc, object, &mut n, &mut |c| match (e, c) {
        (Edit::DeleteKey(_, k), Value::Object(o)) if !o.is_empty() => {
            let key = o.keys().nth(k % o.len()).unwrap().clone();
            o.remove(&key);
        }
        (Edit::WrongType(_, k, v), Value::Object(o)) if !o.is_empty() => {
            let key = o.keys().nth(k % o.len()).unwrap().clone();
            o.insert(key, v.clone());
        }
        (Edit::DropElement(_, i), Value::Array(a)) if !a.is_empty() => {
            a.remove(i % a.len());
        }
        (Edit::RepeatElement(_, i), Value::Array(a)) if !a.is_empty() => {
            let x = a[i % a.len()].clone();
            a.insert(i % a.len(), x);
        }
        _ => {}
    });
}

/// JSON text of `v` in which the `dup`-th object (if any) has its first key twice.
fn write_with_duplicate(v: &Value, dup: Option<usize>) -> Vec<u8> {
    fn go(v: &Value, dup: &mut Option<usize>, out: &mut String) {
        match v {
            Value::Object(o) => {
                let here = match dup {
                    Some(0) => {
                        *dup = None;
                        true
                    }
                    Some(n) => {
                        *n -= 1;
                        false
                    }
                    None => false,
                };
                out.push('{');
                let mut first = true;
                if let (true, Some((k, val))) = (here, o.iter().next()) {
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    go(val, dup, out);
                    first = false;
                }
                for (k, val) in o {
                    if !first {
                        out.push_str(",\n");
                    }
                    first = false;
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push_str(": ");
                    go(val, dup, out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    go(x, dup, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut dup = dup.map(|d| d % count(v, true).max(1));
    let mut out = String::new();
    go(v, &mut dup, &mut out);
    out.into_bytes()
}

fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
        discover(&[dir])
            .expect("cases/")
            .iter()
            .map(|f| std::fs::read(f).expect("read a case"))
            .collect()
    })
}

fn mutated_case() -> BoxedStrategy<Vec<u8>> {
    (
        any::<prop::sample::Index>(),
        prop::collection::vec(edit(), 0..3),
        prop::option::weighted(0.3, any::<usize>()),
        prop::collection::vec(byte_edit(), 0..3),
    )
        .prop_map(|(file, edits, dup, byte_edits)| {
            let original = &corpus()[file.index(corpus().len())];
            let mut doc: Value = serde_json::from_slice(original).expect("corpus is JSON");
            for e in &edits {
                apply(&mut doc, e);
            }
            let mut bytes = if edits.is_empty() && dup.is_none() {
                original.clone()
            } else {
                write_with_duplicate(&doc, dup)
            };
            for b in &byte_edits {
                match b {
                    ByteEdit::Flip(i, x) if !bytes.is_empty() => {
                        let i = i % bytes.len();
                        bytes[i] ^= x;
                    }
                    ByteEdit::Insert(i, ins) => {
                        let i = i % (bytes.len() + 1);
                        bytes.splice(i..i, ins.iter().copied());
                    }
                    ByteEdit::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
                    _ => {}
                }
            }
            bytes
        })
        .boxed()
}

// ---------------------------------------------------------------- checks

/// Serde's words for Rust types, which mean nothing to a case author.
const SERDE_WORDS: &[&str] = &[
    "untagged enum",
    "variant index",
    "did not match any variant",
    "invalid type",
    "invalid value",
    "expected struct",
    "expected enum",
    "internally tagged",
    "expected i64",
    "expected u64",
    "expected u8",
    "expected u32",
    "expected i32",
    "expected f64",
];

/// How a message may start: the field it is about, or what is wrong with the whole file.
fn names_a_field(msg: &str) -> bool {
    const FIELDS: &[&str] = &[
        "title",
        "description",
        "refs",
        "profile",
        "requires",
        "timeout",
        "files",
        "processes",
        "steps",
    ];
    const WHOLE_FILE: &[&str] = &[
        "invalid JSON: ",
        "invalid UTF-8: ",
        "duplicate key `",
        "unknown field `",
        "missing field `",
        "a case is a JSON object",
    ];
    WHOLE_FILE.iter().any(|w| msg.starts_with(w))
        || FIELDS.iter().any(|f| {
            msg.strip_prefix(f)
                .is_some_and(|r| r.starts_with([':', '.', '[']))
        })
}

/// What is wrong with one problem, if anything.
fn bad_problem(text: &str, p: &Problem) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    if p.line < 1 || p.col < 1 || p.line > lines.len() {
        return Some(format!("no position in the text: {p}"));
    }
    let width = lines[p.line - 1].chars().count();
    if p.col > width + 1 {
        return Some(format!(
            "column past the end of line {} ({width} characters): {p}",
            p.line
        ));
    }
    if let Some(w) = SERDE_WORDS.iter().find(|w| p.message.contains(**w)) {
        return Some(format!("serde's words ({w}): {p}"));
    }
    if !names_a_field(&p.message) {
        return Some(format!("names no field: {p}"));
    }
    None
}

#[derive(Default)]
struct Tally {
    files: usize,
    valid: usize,
    problems: usize,
    panics: usize,
    unpositioned: usize,
    bad_messages: usize,
    examples: Vec<(Vec<u8>, String)>,
}

fn check(bytes: &[u8], t: &mut Tally) {
    t.files += 1;
    let result = std::panic::catch_unwind(|| parse_case_bytes(Path::new("fuzz.json"), bytes, 4096));
    let problems = match result {
        Err(e) => {
            t.panics += 1;
            let what = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            t.examples.push((bytes.to_vec(), format!("panic: {what}")));
            return;
        }
        Ok(Ok(_)) => {
            t.valid += 1;
            return;
        }
        Ok(Err(problems)) => problems,
    };
    t.problems += problems.len();
    if problems.is_empty() {
        t.bad_messages += 1;
        t.examples
            .push((bytes.to_vec(), "rejected without a problem".into()));
    }
    let text = String::from_utf8_lossy(bytes);
    for p in &problems {
        if let Some(why) = bad_problem(&text, p) {
            if why.starts_with("no position") || why.starts_with("column past") {
                t.unpositioned += 1;
            } else {
                t.bad_messages += 1;
            }
            t.examples.push((bytes.to_vec(), why));
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn validate_survives_generated_and_mutated_cases() {
    let n = env_number("MMAPCONF_FUZZ_CASES", 2_000) as usize;
    let seed = env_number("MMAPCONF_FUZZ_SEED", 0x6d6d_6170);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = prop_oneof![grammar_case(), mutated_case()];
    // Panics are counted, not printed one by one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut t = Tally::default();
    // MMAPCONF_FUZZ_KEEP=DIR writes every generated file there, to run `mmapconf validate` on.
    let keep = std::env::var_os("MMAPCONF_FUZZ_KEEP").map(PathBuf::from);
    for i in 0..n {
        let bytes = strategy.new_tree(&mut runner).expect("a file").current();
        if let Some(dir) = &keep {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join(format!("{i:06}.json")), &bytes);
        }
        check(&bytes, &mut t);
    }
    std::panic::set_hook(hook);
    let elapsed = started.elapsed();
    println!(
        "{} files in {:.1} s: {} valid, {} problems; {} panics, {} problems without a position in the text, {} bad messages",
        t.files,
        elapsed.as_secs_f64(),
        t.valid,
        t.problems,
        t.panics,
        t.unpositioned,
        t.bad_messages
    );
    if !t.examples.is_empty() {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("validate-fuzz");
        let _ = std::fs::create_dir_all(&dir);
        for (i, (bytes, why)) in t.examples.iter().take(20).enumerate() {
            let _ = std::fs::write(dir.join(format!("{i}.json")), bytes);
            println!("{}: {why}", dir.join(format!("{i}.json")).display());
        }
    }
    assert_eq!(
        (t.panics, t.unpositioned, t.bad_messages),
        (0, 0, 0),
        "see the files listed above"
    );
}
