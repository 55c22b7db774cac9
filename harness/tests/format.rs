//! specs/FORMAT.md and the code agree, on everything a program can check:
//! every JSON example that is a case, a step, a part of a case or a report
//! validates (a step is wrapped into a minimal case that makes the
//! processes, fds, mappings and names it uses); every operation and field
//! the document names exists in the schema generated from the types
//! (specs/case.schema.json, kept equal to them by tests/behaviour.rs), and
//! every operation and field of the schema is named where it belongs.

mod common;

use common::repo;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn format_md() -> String {
    std::fs::read_to_string(repo("specs/FORMAT.md")).unwrap()
}

fn schema() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("specs/case.schema.json")).unwrap()).unwrap()
}

/// The ```json blocks of a Markdown text: (line of the fence, body).
fn json_blocks(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in md.lines().enumerate() {
        match &mut open {
            None if line.trim_start().starts_with("```json") => open = Some((n + 1, String::new())),
            Some(_) if line.trim_start().starts_with("```") => out.push(open.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// What a block holds: one value, values one after another (with or
/// without commas between them), or the members of an object (a part of
/// a case, `"requires": {...}`). None when it is none of these.
fn block_values(body: &str) -> Option<Vec<Value>> {
    let stream: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .collect();
    if let Ok(v) = stream {
        return Some(v);
    }
    let trimmed = body.trim().trim_end_matches(',');
    if let Ok(Value::Array(v)) = serde_json::from_str(&format!("[{trimmed}]")) {
        return Some(v);
    }
    serde_json::from_str::<Value>(&format!("{{{trimmed}}}"))
        .ok()
        .map(|v| vec![v])
}

/// The names a list of steps uses and the ones it makes itself.
#[derive(Default)]
struct Names {
    procs: BTreeSet<String>,
    fds: BTreeSet<String>,
    maps: BTreeSet<String>,
    snapshots: BTreeSet<String>,
    values: BTreeSet<String>,
    paths: BTreeSet<String>,
    segs: BTreeSet<String>,
    /// io_uring rings (`ring`), each registered over the first mapping.
    rings: BTreeSet<String>,
    made: BTreeSet<String>,
    pagemap: bool,
}

impl Names {
    fn walk(&mut self, steps: &[Value]) {
        for s in steps {
            let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
            let op = text("do").unwrap_or_default();
            self.procs.extend(text("in"));
            self.procs.extend(text("proc"));
            self.fds.extend(text("fd"));
            self.maps.extend(text("map"));
            self.paths.extend(text("path"));
            self.fds.extend(text("onto"));
            for b in s
                .get("bufs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.maps
                    .extend(b.get("map").and_then(Value::as_str).map(str::to_string));
            }
            self.segs.extend(text("seg"));
            self.rings.extend(text("ring"));
            for addr in ["addr", "new_addr"] {
                self.maps.extend(
                    s.pointer(&format!("/{addr}/map"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                );
            }
            self.made.extend(text("as"));
            self.pagemap |= op == "pagemap";
            let mut expects: Vec<&Value> = s.get("expect").into_iter().collect();
            for v in s
                .get("variants")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                expects.extend(v.get("expect"));
            }
            for e in expects {
                for k in ["same_as", "differs_from"] {
                    self.values
                        .extend(e.get(k).and_then(Value::as_str).map(str::to_string));
                }
                for t in ["mtime", "ctime"] {
                    for k in ["changed_since", "unchanged_since"] {
                        self.snapshots.extend(
                            e.pointer(&format!("/stat/{t}/{k}"))
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        );
                    }
                }
            }
            if let Some(inner) = s.get("steps").and_then(Value::as_array) {
                self.walk(inner);
            }
        }
    }

    /// `set` less the names the example makes itself.
    fn used(&self, set: &BTreeSet<String>) -> Vec<String> {
        set.difference(&self.made).cloned().collect()
    }
}

/// A minimal case around example steps: a file `data` (and every other
/// path named), each process the steps use, opening the fds and mapping
/// the mappings they use, and the snapshots and numbers they compare with.
fn wrap_steps(line: usize, steps: Vec<Value>) -> Value {
    let mut n = Names::default();
    n.walk(&steps);
    let procs = n.used(&n.procs);
    let mut fds = n.used(&n.fds);
    let mut maps = n.used(&n.maps);
    let rings = n.used(&n.rings);
    if maps.is_empty() && !rings.is_empty() {
        maps.push("prelude_map".into());
    }
    let snapshots = n.used(&n.snapshots);
    let values = n.used(&n.values);
    if fds.is_empty() && !(maps.is_empty() && snapshots.is_empty()) {
        fds.push("prelude_fd".into());
    }
    let mut prelude = Vec::new();
    for p in &procs {
        if fds.is_empty() {
            // Brings the process into being for a `wait`, `kill` or `exit`.
            prelude.push(json!({ "in": p, "do": "memfd_create", "as": "prelude_fd" }));
        }
        for f in &fds {
            prelude
                .push(json!({ "in": p, "do": "open", "path": "data", "flags": "O_RDWR", "as": f }));
        }
        for m in &maps {
            prelude.push(json!({ "in": p, "do": "mmap", "fd": fds[0], "len": "4p",
                "prot": "READ|WRITE", "flags": "SHARED", "as": m }));
        }
        for g in n.used(&n.segs) {
            prelude.push(json!({ "in": p, "do": "shmget", "size": "1p", "as": g }));
        }
        for r in &rings {
            prelude.push(json!({ "in": p, "do": "io_uring_register", "map": maps[0], "as": r }));
        }
    }
    let first = procs.first().cloned().unwrap_or_else(|| "p".into());
    for s in &snapshots {
        prelude.push(json!({ "in": first, "do": "fstat", "fd": fds[0], "as": s }));
    }
    for v in &values {
        prelude.push(json!({ "in": first, "do": "load", "map": maps[0], "len": 8, "as": v }));
    }
    let mut files = Map::new();
    for p in n.paths.iter().chain(std::iter::once(&"data".to_string())) {
        files.insert(p.clone(), json!({ "size": "4p" }));
    }
    let mut case = json!({
        "title": format!("FORMAT.md example at line {line}"),
        "refs": ["specs/FORMAT.md"],
        "files": files,
        "steps": prelude.into_iter().chain(steps).collect::<Vec<_>>(),
    });
    if n.pagemap {
        case["requires"] = json!({ "probes": ["pagemap_pfn"] });
    }
    case
}

/// Why a case does not validate, or None when it does.
fn problems(case: &Value) -> Option<String> {
    let text = serde_json::to_string_pretty(case).unwrap();
    match mmapconf::case::parse_case(Path::new("example.json"), &text, 4096) {
        Ok(_) => None,
        Err(p) => Some(format!(
            "{}\n{text}",
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

/// Checks every JSON example: returns one line per example that fails,
/// and counts the kinds seen.
fn check_examples(md: &str) -> (Vec<String>, BTreeMap<&'static str, usize>) {
    let schema = schema();
    let top: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let report_schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("specs/report.schema.json")).unwrap())
            .unwrap();
    let reports = jsonschema::validator_for(&report_schema).unwrap();
    let mut bad = Vec::new();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (line, body) in json_blocks(md) {
        let Some(values) = block_values(&body) else {
            bad.push(format!("FORMAT.md:{line}: the example is not JSON"));
            continue;
        };
        let mut steps = Vec::new();
        for v in values {
            let o = v.as_object();
            let has = |k: &str| o.is_some_and(|o| o.contains_key(k));
            if has("title") && has("steps") {
                *kinds.entry("case").or_default() += 1;
                if let Some(p) = problems(&v) {
                    bad.push(format!("FORMAT.md:{line}: the case does not validate: {p}"));
                }
            } else if has("do") {
                *kinds.entry("step").or_default() += 1;
                steps.push(v);
            } else if has("schema_version") {
                *kinds.entry("report").or_default() += 1;
                let errors: Vec<String> = reports.iter_errors(&v).map(|e| e.to_string()).collect();
                if !errors.is_empty() {
                    bad.push(format!(
                        "FORMAT.md:{line}: the report does not validate: {errors:?}"
                    ));
                }
            } else if o.is_some_and(|o| !o.is_empty() && o.keys().all(|k| top.contains(k.as_str())))
            {
                *kinds.entry("part of a case").or_default() += 1;
                let mut case =
                    wrap_steps(line, vec![json!({ "in": "p", "do": "fork", "as": "c" })]);
                for (k, val) in o.unwrap() {
                    case[k] = val.clone();
                }
                if let Some(p) = problems(&case) {
                    bad.push(format!(
                        "FORMAT.md:{line}: the part of a case does not validate: {p}"
                    ));
                }
            } else {
                bad.push(format!(
                    "FORMAT.md:{line}: neither a case, a step, a part of a case nor a report: {v}"
                ));
            }
        }
        if !steps.is_empty() {
            if let Some(p) = problems(&wrap_steps(line, steps)) {
                bad.push(format!("FORMAT.md:{line}: the steps do not validate: {p}"));
            }
        }
    }
    (bad, kinds)
}

#[test]
fn every_json_example_in_format_md_validates() {
    let (bad, kinds) = check_examples(&format_md());
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
    // The walk saw every kind (so a change to the document cannot make it
    // check nothing).
    assert!(kinds["case"] >= 1 && kinds["step"] >= 35, "{kinds:?}");
    assert!(
        kinds["report"] >= 1 && kinds["part of a case"] >= 1,
        "{kinds:?}"
    );
}

#[test]
fn the_example_check_rejects_examples_the_code_would_reject() {
    let broken = [
        // An unknown field.
        "```json\n{ \"in\": \"p\", \"do\": \"close\", \"fd\": \"fd\", \"len\": 3 }\n```\n",
        // A `wait` that does not say how the process ends.
        "```json\n{ \"do\": \"wait\", \"proc\": \"child\" }\n```\n",
        // An unknown probe in a part of a case.
        "```json\n\"requires\": { \"probes\": [\"teleport\"] }\n```\n",
        // Not JSON.
        "```json\n{ \"do\": \n```\n",
        // A case without refs.
        "```json\n{ \"title\": \"t\", \"steps\": [ { \"in\": \"p\", \"do\": \"fork\", \"as\": \"c\" } ] }\n```\n",
    ];
    for md in broken {
        let (bad, _) = check_examples(md);
        assert_eq!(bad.len(), 1, "{md}: {bad:?}");
    }
    let (bad, _) = check_examples("```json\n{ \"in\": \"p\", \"do\": \"msync\", \"map\": \"m\", \"flags\": \"MS_SYNC\" }\n```\n");
    assert!(bad.is_empty(), "{bad:?}");
}

/// The document's sections: heading line (with its #s) → text below it,
/// up to the next heading of any level.
fn sections(md: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            out.push((line.to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// The `code` spans of a text.
fn code_spans(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The names in the first column of a section's tables, each with the
/// operation it belongs to when the row writes a step out
/// (`{"do": "remount", "read_only": true}` names `read_only` of `remount`).
fn first_column_by_op(text: &str) -> Vec<(Option<String>, String)> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| code_spans(l.split('|').nth(1).unwrap_or("")))
        .flat_map(
            |span| match serde_json::from_str::<Map<String, Value>>(&span) {
                Ok(step) => {
                    let op = step.get("do").and_then(Value::as_str).map(str::to_string);
                    step.keys()
                        .filter(|k| *k != "do")
                        .map(|k| (op.clone(), k.clone()))
                        .collect()
                }
                Err(_) => vec![(None, span)],
            },
        )
        .collect()
}

fn first_column(text: &str) -> BTreeSet<String> {
    first_column_by_op(text)
        .into_iter()
        .map(|(_, f)| f)
        .collect()
}

/// Whether `name` is named in `text`: as a `code` span or a "quoted" key.
fn names(text: &str, name: &str) -> bool {
    code_spans(text).contains(name) || text.contains(&format!("\"{name}\""))
}

/// The sections of §4, the operations.
fn operations_part(all: &[(String, String)]) -> &[(String, String)] {
    let at = |prefix: &str| all.iter().position(|(h, _)| h.starts_with(prefix)).unwrap();
    &all[at("## 4.") + 1..at("## 5.")]
}

fn section<'a>(all: &'a [(String, String)], heading_starts: &str) -> &'a str {
    all.iter()
        .find(|(h, _)| h.starts_with(heading_starts))
        .map(|(_, b)| b.as_str())
        .unwrap_or_else(|| panic!("FORMAT.md has no heading starting {heading_starts:?}"))
}

fn properties(def: &Value) -> BTreeSet<String> {
    def["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// Where the operations of the schema and of §4 disagree, one line each.
fn operation_problems(md: &str) -> Vec<String> {
    let schema = schema();
    let branches = schema["definitions"]["Step"]["oneOf"].as_array().unwrap();
    let ops: BTreeMap<String, BTreeSet<String>> = branches
        .iter()
        .map(|b| {
            let mut fields = properties(b);
            fields.remove("do");
            (
                b["properties"]["do"]["enum"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
                fields,
            )
        })
        .collect();
    let all = sections(md);
    // §4's ### headings name the operations, several to a heading at times.
    let mut documented: BTreeMap<String, String> = BTreeMap::new();
    for (h, body) in operations_part(&all) {
        if h.starts_with("### ") {
            let head = h.split(':').next().unwrap();
            for op in code_spans(head) {
                documented.insert(op, body.clone());
            }
        }
    }
    let mut missing = Vec::new();
    for op in ops.keys().filter(|op| !documented.contains_key(*op)) {
        missing.push(format!("operation `{op}` has no ### heading in §4"));
    }
    for op in documented.keys().filter(|op| !ops.contains_key(*op)) {
        missing.push(format!(
            "§4 describes `{op}`, the schema has no such operation"
        ));
    }
    let count = format!("one of the {} names", ops.len());
    if !md.contains(&count) {
        missing.push(format!("FORMAT.md should say `do` is {count}"));
    }

    let common = properties(&schema["definitions"]["Step"]);
    let ranges = section(&all, "### 3.4");
    let bytes = section(&all, "### 3.5");
    for (op, fields) in ops.iter().filter(|(op, _)| documented.contains_key(*op)) {
        // An operation's text, with the sections it refers to for its
        // range or bytes fields.
        let mut text = documented[op].clone();
        if text.contains("§3.4") {
            text.push_str(ranges);
        }
        if text.contains("§3.5") {
            text.push_str(bytes);
        }
        let allowed = |f: &str| fields.contains(f) || common.contains(f) || f == "do";
        missing.extend(disagreements(op, &text, &documented[op], fields, allowed));
    }
    missing
}

/// Where a part of FORMAT.md and the schema disagree: a field of `fields`
/// that `text` does not name, or a field in the first column of `table`'s
/// tables (rows writing out a step of another operation left aside) that
/// is not `allowed`.
fn disagreements(
    place: &str,
    text: &str,
    table: &str,
    fields: &BTreeSet<String>,
    allowed: impl Fn(&str) -> bool,
) -> Vec<String> {
    let unnamed = fields
        .iter()
        .filter(|f| !names(text, f))
        .map(|f| format!("{place}: `{f}` of the schema is not named"));
    let unknown = first_column_by_op(table)
        .into_iter()
        .filter(|(of, f)| of.as_deref().is_none_or(|of| of == place) && !allowed(f))
        .map(|(_, f)| format!("{place}: FORMAT.md names `{f}`, the schema has no such field"));
    unnamed.chain(unknown).collect()
}

#[test]
fn every_operation_of_the_schema_is_in_format_md_and_no_other() {
    let problems = operation_problems(&format_md());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Where the fields of the schema's parts of a case and FORMAT.md's
/// tables for them disagree, one line each.
fn field_problems(md: &str) -> Vec<String> {
    let schema = schema();
    let defs = &schema["definitions"];
    let all = sections(md);
    let probes: BTreeSet<String> = defs["Probe"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["enum"][0].as_str().unwrap().to_string())
        .collect();
    // Where each part of a case is described, and what the schema says it has.
    let parts: Vec<(&str, BTreeSet<String>)> = vec![
        ("### Top-level fields", properties(&schema)),
        ("### `files`", properties(&defs["FileInit"])),
        ("### Steps", {
            let mut s = properties(&defs["Step"]);
            s.insert("do".into());
            s
        }),
        ("## 5. Expectations", properties(&defs["Expect"])),
        ("### 5.5 `stat`", properties(&defs["StatExpect"])),
        ("### 5.7 `variants`", {
            let mut s = properties(&defs["Variant"]);
            s.extend(properties(&defs["When"]));
            s
        }),
        ("## 6. Requirements", {
            let mut s = properties(&defs["Requires"]);
            s.extend(probes);
            s
        }),
    ];
    let mut wrong = Vec::new();
    for (heading, fields) in parts {
        let text = section(&all, heading);
        wrong.extend(disagreements(heading, text, text, &fields, |f| {
            fields.contains(f)
        }));
    }
    wrong
}

#[test]
fn every_field_of_the_schema_is_in_format_md_and_no_other() {
    let problems = field_problems(&format_md());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_name_checks_see_a_document_that_drifted() {
    let md = format_md();
    let drifted = md
        .replace("### `munlock`", "### munlock, which is gone")
        .replace("`width`", "`size`")
        .replace("| `why` | string", "| `because` | string")
        .replace("| `probes` |", "| `probe` |");
    let ops = operation_problems(&drifted);
    for want in [
        "operation `munlock` has no ### heading in §4",
        "increment: FORMAT.md names `size`, the schema has no such field",
        "increment: `width` of the schema is not named",
    ] {
        assert!(ops.iter().any(|p| p == want), "no {want:?} in {ops:?}");
    }
    let fields = field_problems(&drifted);
    for want in [
        "### 5.7 `variants`: FORMAT.md names `because`, the schema has no such field",
        "## 6. Requirements: FORMAT.md names `probe`, the schema has no such field",
    ] {
        assert!(
            fields.iter().any(|p| p == want),
            "no {want:?} in {fields:?}"
        );
    }
    // Whatever the count says now, one less must be caught.
    let said = md
        .split("one of the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("FORMAT.md says how many names `do` takes");
    let count = md.replace(
        &format!("one of the {said} names"),
        &format!("one of the {} names", said - 1),
    );
    assert!(operation_problems(&count)
        .iter()
        .any(|p| p.contains("should say `do` is one of the")));
}

/// The operations whose step takes `as`, found by asking validation: each
/// operation's first example in §4, given an `as` if it has none.
fn operations_taking_as(md: &str) -> BTreeSet<String> {
    let all = sections(md);
    let mut seen = BTreeSet::new();
    let mut taking = BTreeSet::new();
    for (_, body) in operations_part(&all) {
        for (line, block) in json_blocks(body) {
            for mut step in block_values(&block).unwrap_or_default() {
                let Some(op) = step.get("do").and_then(Value::as_str).map(str::to_string) else {
                    continue;
                };
                if !seen.insert(op.clone()) {
                    continue;
                }
                if step.get("as").is_none() {
                    step["as"] = "named".into();
                }
                if problems(&wrap_steps(line, vec![step])).is_none() {
                    taking.insert(op);
                }
            }
        }
    }
    taking
}

#[test]
fn the_names_table_lists_every_operation_that_takes_as() {
    let md = format_md();
    let all = sections(&md);
    let table = first_column(section(&all, "### 2.4"));
    let taking = operations_taking_as(&md);
    assert!(
        taking.contains("open") && !taking.contains("close"),
        "{taking:?}"
    );
    assert_eq!(
        table, taking,
        "§2.4's table and the operations validation lets take `as`"
    );
}
