//! The shape of a case (types, required and unknown fields, names of
//! operations and probes), checked against the JSON Schema generated from
//! the model before serde sees the value.
//!
//! serde stops at the first mismatch and words it for Rust programmers
//! ("invalid type: integer `5`, expected a string", "data did not match any
//! variant of untagged enum Size"), without saying which field. Walking the
//! schema, which is generated from the same types, finds every mismatch with
//! its path and says it in the case format's words:
//! `title: expected a string, found the number 5`.

use super::load::Issue;
use super::locate::{path_text, Focus, Seg};
use super::model::Case;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;

/// The generated schema of a case, with its definitions.
fn case_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::to_value(schemars::schema_for!(Case)).expect("schema"))
}

fn defs() -> &'static Map<String, Value> {
    case_schema()["definitions"]
        .as_object()
        .expect("the case schema has definitions")
}

/// Checks the case's top level and everything below it except the steps
/// (which `check_step` checks one by one).
pub fn check_case(value: &Value, issues: &mut Vec<Issue>) {
    let mut path = Vec::new();
    node(None, case_schema(), value, &mut path, issues);
}

/// Checks one step (at `path`) and the steps inside it.
pub fn check_step(value: &Value, path: &[Seg], issues: &mut Vec<Issue>) {
    let mut path = path.to_vec();
    node(Some("Step"), &defs()["Step"], value, &mut path, issues);
}

/// Follows `$ref` and single-element `allOf` (schemars' way of adding a
/// default to a reference); returns the definition's name when there is one.
fn resolve<'s>(mut name: Option<&'s str>, mut schema: &'s Value) -> (Option<&'s str>, &'s Value) {
    loop {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let n = r.trim_start_matches("#/definitions/");
            name = Some(n);
            schema = &defs()[n];
        } else if let Some([one]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            schema = one;
        } else {
            return (name, schema);
        }
    }
}

fn issue(path: &[Seg], message: String) -> Issue {
    Issue {
        path: path.to_vec(),
        focus: Focus::Node,
        message: format!("{}: {message}", path_text(path)),
    }
}

/// Whether `v` has the shape of `schema`, without reporting anything.
fn fits(name: Option<&str>, schema: &Value, v: &Value) -> bool {
    let mut quiet = Vec::new();
    node(name, schema, v, &mut Vec::new(), &mut quiet);
    quiet.is_empty()
}

fn node(name: Option<&str>, schema: &Value, v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Issue>) {
    let (name, s) = resolve(name, schema);
    if let Some(branches) = s.get("anyOf").and_then(Value::as_array) {
        any_of(name, s, branches, v, path, out);
        return;
    }
    if let Some(branches) = s.get("oneOf").and_then(Value::as_array) {
        if !one_of(name, s, branches, v, path, out) {
            return;
        }
    }
    if let Some(types) = s.get("type") {
        if !type_fits(name, types, s, v, path, out) {
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let names: Vec<String> = allowed
                .iter()
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
                .collect();
            out.push(issue(
                path,
                format!("must be one of {}; found {}", names.join(", "), found(v)),
            ));
            return;
        }
    }
    match v {
        Value::Object(obj) => object(s, obj, path, out),
        Value::Array(items) => array(s, items, path, out),
        _ => {}
    }
}

/// `anyOf`: an optional value (X or null), a size (number or string), an
/// address (number or object). The branch of the value's JSON type is
/// checked in detail, so a wrong field inside an address is named.
fn any_of(
    name: Option<&str>,
    s: &Value,
    branches: &[Value],
    v: &Value,
    path: &mut Vec<Seg>,
    out: &mut Vec<Issue>,
) {
    let is_null = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
    if v.is_null() && branches.iter().any(is_null) {
        return;
    }
    let real: Vec<&Value> = branches.iter().filter(|b| !is_null(b)).collect();
    if let [only] = real.as_slice() {
        node(name, only, v, path, out);
        return;
    }
    let of_type: Vec<&&Value> = real
        .iter()
        .filter(|b| {
            let (_, r) = resolve(None, b);
            r.get("type")
                .is_some_and(|t| type_names(t).any(|t| json_type_is(t, v)))
        })
        .collect();
    match of_type.as_slice() {
        [one] => node(name, one, v, path, out),
        _ if real.iter().any(|b| fits(name, b, v)) => {}
        _ => out.push(issue(
            path,
            format!("expected {}, found {}", describe(name, s), found(v)),
        )),
    }
}

/// The operation a branch of a step's `oneOf` is for (its `do`). Plain
/// lookups, not `Value::pointer`, which parses and unescapes its path anew
/// on every call.
fn op_name(b: &Value) -> Option<&str> {
    b.get("properties")
        .and_then(|p| p.get("do"))
        .and_then(|d| d.get("enum"))
        .and_then(|e| e.get(0))
        .and_then(Value::as_str)
}

/// Operation name to branch, for a `oneOf` of operations (empty for any
/// other `oneOf`), made once per branch list. Every step of every case
/// loaded looks its operation up among some 90 branches: searching them in
/// turn was most of the time of loading the corpus, which every run and
/// every VM cell pays.
fn op_index(branches: &[Value]) -> Rc<HashMap<String, usize>> {
    thread_local! {
        static INDEX: RefCell<HashMap<usize, Rc<HashMap<String, usize>>>> = RefCell::default();
    }
    INDEX.with(|m| {
        m.borrow_mut()
            .entry(branches.as_ptr() as usize)
            .or_insert_with(|| {
                Rc::new(
                    branches
                        .iter()
                        .enumerate()
                        .filter_map(|(i, b)| op_name(b).map(|n| (n.to_string(), i)))
                        .collect(),
                )
            })
            .clone()
    })
}

/// `oneOf`: the operations of a step (told apart by `do`), the choices of an
/// enum (a profile, a probe), or a `since` object. Returns whether the
/// checks of the schema's own keywords should go on.
fn one_of(
    name: Option<&str>,
    s: &Value,
    branches: &[Value],
    v: &Value,
    path: &mut Vec<Seg>,
    out: &mut Vec<Issue>,
) -> bool {
    let index = op_index(branches);
    if !index.is_empty() {
        let ops = || -> Vec<&str> { branches.iter().filter_map(op_name).collect() };
        let Some(obj) = v.as_object() else {
            out.push(issue(
                path,
                format!("expected a step (an object with `do`), found {}", found(v)),
            ));
            return false;
        };
        let branch = match obj.get("do") {
            None => {
                out.push(issue(
                    path,
                    format!(
                        "missing field `do`: the operation, one of {}",
                        sorted(&ops())
                    ),
                ));
                None
            }
            Some(Value::String(op)) => {
                // The index is checked against the branch it names (it is
                // keyed by the branches' address).
                let found = index
                    .get(op.as_str())
                    .map(|&i| &branches[i])
                    .filter(|b| op_name(b) == Some(op.as_str()));
                match found {
                    Some(b) => Some(b),
                    None => {
                        out.push(Issue {
                            path: path.clone(),
                            focus: Focus::StringValue(op.clone()),
                            message: format!("unknown operation `{op}`; known: {}", sorted(&ops())),
                        });
                        None
                    }
                }
            }
            Some(other) => {
                path.push(Seg::from("do"));
                out.push(issue(
                    path,
                    format!(
                        "`do` must be one of the operation names ({}); found {}",
                        sorted(&ops()),
                        found(other)
                    ),
                ));
                path.pop();
                None
            }
        };
        if let Some(b) = branch {
            node(None, b, v, path, out);
        }
        // The step's common keys (`in`, `as`, `expect` ...) are checked too.
        return true;
    }
    let choices: Vec<&str> = branches
        .iter()
        .filter_map(|b| b.get("enum").and_then(|e| e.get(0)).and_then(Value::as_str))
        .collect();
    if choices.len() == branches.len() {
        if !v.as_str().is_some_and(|x| choices.contains(&x)) {
            out.push(issue(
                path,
                format!("must be one of {}; found {}", choices.join(", "), found(v)),
            ));
        }
        return false;
    }
    // Objects told apart by which required key they have (`changed_since` ...).
    let chosen: Vec<&Value> = branches
        .iter()
        .filter(|b| {
            let req = b.get("required").and_then(Value::as_array);
            req.is_some_and(|r| {
                r.iter()
                    .all(|k| k.as_str().is_some_and(|k| v.get(k).is_some()))
            })
        })
        .collect();
    match chosen.as_slice() {
        [one] if v.is_object() => node(name, one, v, path, out),
        _ => out.push(issue(
            path,
            format!("expected {}, found {}", describe(name, s), found(v)),
        )),
    }
    false
}

fn type_names(t: &Value) -> impl Iterator<Item = &str> {
    let list: Vec<&str> = match t {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    list.into_iter()
}

fn json_type_is(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// The JSON type, and for integers the range of their Rust type.
fn type_fits(
    name: Option<&str>,
    types: &Value,
    s: &Value,
    v: &Value,
    path: &[Seg],
    out: &mut Vec<Issue>,
) -> bool {
    let names: Vec<&str> = type_names(types).collect();
    if !names.iter().any(|t| json_type_is(t, v)) {
        out.push(issue(
            path,
            format!("expected {}, found {}", describe(name, s), found(v)),
        ));
        return false;
    }
    if names.contains(&"integer") && v.is_number() {
        let format = s.get("format").and_then(Value::as_str).unwrap_or("int64");
        let (lo, hi): (i128, i128) = match format {
            "uint8" => (0, u8::MAX.into()),
            "uint32" => (0, u32::MAX.into()),
            "int32" => (i32::MIN.into(), i32::MAX.into()),
            "uint64" => (0, u64::MAX.into()),
            _ => (i64::MIN.into(), i64::MAX.into()),
        };
        let n = v
            .as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from));
        match n {
            Some(n) if (lo..=hi).contains(&n) => {}
            Some(_) if format == "int64" => {
                out.push(issue(
                    path,
                    format!(
                        "{} does not fit in a signed 64-bit number; write a larger size as a string (\"0x8000000000000000\")",
                        found(v)
                    ),
                ));
                return false;
            }
            Some(_) => {
                out.push(issue(
                    path,
                    format!(
                        "expected a whole number from {lo} to {hi}, found {}",
                        found(v)
                    ),
                ));
                return false;
            }
            None => {
                out.push(issue(
                    path,
                    format!("expected a whole number, found {}", found(v)),
                ));
                return false;
            }
        }
    }
    true
}

fn object(s: &Value, obj: &Map<String, Value>, path: &mut Vec<Seg>, out: &mut Vec<Issue>) {
    let props = s.get("properties").and_then(Value::as_object);
    for req in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(k) = req.as_str() {
            if !obj.contains_key(k) {
                out.push(Issue {
                    path: path.clone(),
                    focus: Focus::Node,
                    message: format!("missing field `{k}`"),
                });
            }
        }
    }
    for (k, sub) in obj {
        let schema = match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
            (Some(p), _) => p,
            (None, Some(Value::Bool(false))) => {
                let mut known: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                known.sort_unstable();
                out.push(Issue {
                    path: path.clone(),
                    focus: Focus::Key(k.clone()),
                    message: format!("unknown field `{k}`; expected one of {}", known.join(", ")),
                });
                continue;
            }
            (None, Some(extra)) if extra.is_object() => extra,
            // Keys this schema does not describe are checked elsewhere
            // (a step's operation fields, a file's content fields).
            (None, _) => continue,
        };
        path.push(Seg::Key(k.clone()));
        node(None, schema, sub, path, out);
        path.pop();
    }
}

fn array(s: &Value, items: &[Value], path: &mut Vec<Seg>, out: &mut Vec<Issue>) {
    let min = s.get("minItems").and_then(Value::as_u64);
    let max = s.get("maxItems").and_then(Value::as_u64);
    let n = items.len() as u64;
    if let (Some(lo), Some(hi)) = (min, max) {
        if n < lo || n > hi {
            let what = if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo} to {hi}")
            };
            out.push(issue(
                path,
                format!("expected an array of {what} items ([min, max]), found {n}"),
            ));
            return;
        }
    }
    if let Some(item) = s.get("items") {
        for (i, v) in items.iter().enumerate() {
            path.push(Seg::Index(i));
            node(None, item, v, path, out);
            path.pop();
        }
    }
}

fn type_word(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "true or false",
        "array" => "an array",
        "object" => "an object",
        _ => "null",
    }
}

/// What a value of a named definition may be, in the format's words.
fn describe(name: Option<&str>, s: &Value) -> String {
    match name {
        Some("Size") => "a size: a number of bytes, or a string such as \"4096\", \"0x1000\", \"2p\" (pages), \"2p+100\" or \"p-1\"".to_string(),
        Some("Addr") => "an address: a number, or {\"map\": NAME, \"at\": SIZE}".to_string(),
        Some("FileInit") => {
            "a file: an object such as {\"size\": \"2p\"} or {\"text\": \"hello\"}".to_string()
        }
        Some("Since") => "{\"changed_since\": NAME} or {\"unchanged_since\": NAME}".to_string(),
        _ => match s.get("type") {
            Some(t) => type_names(t)
                .filter(|t| *t != "null")
                .map(type_word)
                .collect::<Vec<_>>()
                .join(" or "),
            None => "another value".to_string(),
        },
    }
}

/// A value as a case author would name it: `the number 5`, `the string "2p"`.
fn found(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            let more = if short.len() < s.len() { "…" } else { "" };
            format!(
                "the string {}{more}",
                serde_json::to_string(&short).unwrap_or_default()
            )
        }
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

fn sorted(names: &[&str]) -> String {
    let mut v = names.to_vec();
    v.sort_unstable();
    v.join(", ")
}
