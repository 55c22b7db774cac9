//! Reading a case file: JSON syntax, the case model, and every problem
//! found, each as `file:line:col: message`.
//!
//! A file with three mistakes gets three lines, not one: each step is
//! deserialized on its own so that one bad step does not hide the next.
//!
//! The order: bytes to UTF-8 text and JSON syntax (`json`, serde_json), keys
//! given twice (`json`), unknown keys, the shape of every value against the
//! generated schema (`shape`), serde into the model, then what serde cannot
//! check (`validate`). Every problem is placed by `locate` and starts with
//! the path of the field it is about.

use super::locate::{focus_of_message, path_text, Focus, LineIndex, Locator, Seg};
use super::model::{Case, FileInit, Op, Step};
use super::{json, shape, validate};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One thing wrong with a case file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// A problem found before positions are known: a JSON path, what to point at, and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: Vec<Seg>,
    pub focus: Focus,
    pub message: String,
}

impl Issue {
    pub fn at(path: Vec<Seg>, message: impl Into<String>) -> Issue {
        Issue {
            path,
            focus: Focus::Node,
            message: message.into(),
        }
    }

    pub fn at_key(path: Vec<Seg>, key: &str, message: impl Into<String>) -> Issue {
        Issue {
            path,
            focus: Focus::Key(key.to_string()),
            message: message.into(),
        }
    }
}

/// Keys every step may have besides its operation's own.
const STEP_KEYS: &[&str] = &[
    "in", "thread", "as", "expect", "variants", "observe", "note", "do",
];

/// Parses and validates the bytes of a case file: what `mmapconf validate`
/// does to each file. Bytes that are not UTF-8 are reported where they are.
pub fn parse_case_bytes(file: &Path, bytes: &[u8], page_size: u64) -> Result<Case, Vec<Problem>> {
    match json::utf8(bytes) {
        Ok(text) => parse_case(file, text, page_size),
        Err((line, col, message)) => Err(vec![Problem {
            file: file.to_path_buf(),
            line,
            col,
            message,
        }]),
    }
}

/// Parses and validates case text. `page_size` is used to check sizes.
/// Problems come sorted by position.
pub fn parse_case(file: &Path, text: &str, page_size: u64) -> Result<Case, Vec<Problem>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // serde_json counts the column in bytes; ours count characters.
            let (line, col) = LineIndex::new(text).line_col_of_byte_column(e.line(), e.column());
            return Err(vec![Problem {
                file: file.to_path_buf(),
                line,
                col,
                message: format!("invalid JSON: {}", strip_position(&e.to_string())),
            }]);
        }
    };
    let locator = Locator::new(text);
    let problem = |(line, col): (usize, usize), message: String| Problem {
        file: file.to_path_buf(),
        line,
        col,
        message,
    };
    let mut problems: Vec<Problem> = json::duplicate_keys(&locator)
        .into_iter()
        .map(|(offset, message)| problem(locator.line_col(offset), message))
        .collect();
    let case = match check_value(value, page_size) {
        Ok(case) => Some(case),
        Err(issues) => {
            problems.extend(issues.into_iter().map(|i| {
                let at = locator.locate(&i.path, &i.focus);
                // A problem about a key of the node names that field (an
                // unknown field is named by the object it should not be in).
                let mut field = i.path.clone();
                if let (Focus::Key(k), false) = (&i.focus, i.message.starts_with("unknown field")) {
                    field.push(Seg::Key(k.clone()));
                    if !locator.exists(&field) {
                        field.pop();
                    }
                }
                problem(at, named(&field, i.message))
            }));
            None
        }
    };
    match case {
        Some(case) if problems.is_empty() => Ok(case),
        _ => {
            problems.sort_by_key(|p| (p.line, p.col));
            Err(problems)
        }
    }
}

/// The message with the field it is about in front (`steps[3]: ...`),
/// unless it already starts with that field or one inside it.
fn named(path: &[Seg], message: String) -> String {
    if path.is_empty() {
        return message;
    }
    let field = path_text(path);
    let rest = message.strip_prefix(field.as_str());
    if rest.is_some_and(|r| r.starts_with([':', '.', '['])) {
        message
    } else {
        format!("{field}: {message}")
    }
}

fn check_value(mut value: Value, page_size: u64) -> Result<Case, Vec<Issue>> {
    let mut issues = Vec::new();
    let Some(obj) = value.as_object_mut() else {
        return Err(vec![Issue::at(vec![], "a case is a JSON object")]);
    };
    // Steps one by one, so each bad step is reported; good ones are kept.
    let mut parsed: Vec<(usize, Step)> = Vec::new();
    let mut all_steps_ok = true;
    if let Some(Value::Array(steps)) = obj.get_mut("steps") {
        for (i, step) in std::mem::take(steps).into_iter().enumerate() {
            let path = vec![Seg::from("steps"), Seg::from(i)];
            let before = issues.len();
            check_step_keys(&step, &path, &mut issues);
            if issues.len() == before {
                shape::check_step(&step, &path, &mut issues);
            }
            if issues.len() == before {
                match serde_json::from_value::<Step>(step) {
                    Ok(s) => parsed.push((i, s)),
                    Err(e) => issues.push(explain_serde_error(path, &e.to_string())),
                }
            }
            if issues.len() != before {
                all_steps_ok = false;
            }
        }
    }
    // `files` entries flatten their bytes, so serde cannot refuse unknown keys there either.
    if let Some(Value::Object(files)) = obj.get("files") {
        let allowed =
            struct_fields(&serde_json::to_value(schemars::schema_for!(FileInit)).expect("schema"));
        for (name, init) in files {
            for key in init.as_object().map(|o| o.keys()).into_iter().flatten() {
                if !allowed.contains(key) {
                    let expected: Vec<&str> = allowed.iter().map(String::as_str).collect();
                    issues.push(Issue::at_key(
                        vec![Seg::from("files"), Seg::from(name.as_str())],
                        key,
                        format!(
                            "unknown field `{key}` in a file; expected one of {}",
                            expected.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    // The header is checked with the steps taken out (they were checked above).
    let before = issues.len();
    shape::check_case(&value, &mut issues);
    if issues.len() != before {
        return Err(issues);
    }
    let case = match serde_json::from_value::<Case>(value) {
        Ok(mut case) => {
            issues.extend(validate::validate(&case, &parsed, page_size, all_steps_ok));
            case.steps = parsed.into_iter().map(|(_, s)| s).collect();
            Some(case)
        }
        Err(e) => {
            issues.push(explain_serde_error(vec![], &e.to_string()));
            None
        }
    };
    match case {
        Some(case) if issues.is_empty() => Ok(case),
        _ => Err(issues),
    }
}

/// Rejects keys a step's operation does not take (serde cannot, because the
/// operation's fields are flattened into the step).
fn check_step_keys(step: &Value, path: &[Seg], issues: &mut Vec<Issue>) {
    let Some(obj) = step.as_object() else {
        return;
    };
    let Some(op) = obj.get("do").and_then(Value::as_str) else {
        return;
    };
    let Some(allowed) = op_fields().get(op) else {
        let known: Vec<&str> = op_fields().keys().map(String::as_str).collect();
        issues.push(Issue {
            path: path.to_vec(),
            focus: Focus::StringValue(op.to_string()),
            message: format!("unknown operation `{op}`; known: {}", known.join(", ")),
        });
        return;
    };
    for key in obj.keys() {
        if !STEP_KEYS.contains(&key.as_str()) && !allowed.contains(key) {
            let mut expected: Vec<&str> = allowed.iter().map(String::as_str).collect();
            expected.extend(STEP_KEYS.iter().filter(|k| **k != "do"));
            issues.push(Issue::at_key(
                path.to_vec(),
                key,
                format!(
                    "unknown field `{key}` for `{op}`; expected one of {}",
                    expected.join(", ")
                ),
            ));
        }
    }
    if let (Some("together"), Some(Value::Array(inner))) = (Some(op), obj.get("steps")) {
        for (i, s) in inner.iter().enumerate() {
            let mut p = path.to_vec();
            p.push(Seg::from("steps"));
            p.push(Seg::from(i));
            check_step_keys(s, &p, issues);
        }
    }
}

/// For each operation name, the fields it takes, read off the generated schema
/// so that the model stays the one place that says what an operation takes.
pub fn op_fields() -> &'static BTreeMap<String, BTreeSet<String>> {
    static FIELDS: OnceLock<BTreeMap<String, BTreeSet<String>>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let schema = serde_json::to_value(schemars::schema_for!(Op)).expect("schema serializes");
        let mut map = BTreeMap::new();
        for variant in schema["oneOf"].as_array().into_iter().flatten() {
            let props = variant["properties"].as_object();
            let name = props
                .and_then(|p| p.get("do"))
                .and_then(|d| d["enum"][0].as_str());
            if let (Some(name), Some(props)) = (name, props) {
                let keys = props.keys().filter(|k| *k != "do").cloned().collect();
                map.insert(name.to_string(), keys);
            }
        }
        map
    })
}

/// serde's words for untagged enums say nothing useful; say what is accepted.
/// `shape` finds wrong types first, with the field's path; this is the
/// fallback for whatever serde still refuses after it.
fn explain_serde_error(path: Vec<Seg>, msg: &str) -> Issue {
    if msg.contains("untagged enum Addr") {
        return Issue {
            path,
            focus: Focus::Node,
            message: "an address is a number or {\"map\": NAME, \"at\": SIZE} (no other keys)"
                .to_string(),
        };
    }
    if msg.contains("untagged enum Size") {
        return Issue {
            path,
            focus: Focus::Node,
            message: "a size is a number or a string such as \"4096\", \"1p\", \"2p+100\""
                .to_string(),
        };
    }
    Issue {
        path,
        focus: focus_of_message(msg),
        message: msg.to_string(),
    }
}

fn struct_fields(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// serde_json appends " at line L column C"; we print our own position.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_fields_listed() {
        let fields = op_fields();
        assert!(fields["store"].contains("text"));
        assert!(fields["store"].contains("map"));
        assert!(fields["msync"].contains("flags"));
        assert!(fields["fork"].is_empty());
        assert!(fields["remote_write"].contains("via"));
        assert!(fields["drop_privileges"].is_empty());
        assert!(fields["spawn_thread"].is_empty());
        assert!(fields["vmsplice"].contains("map") && fields["vmsplice"].contains("fd"));
        assert!(fields["io_uring_fixed"].contains("ring"));
        assert_eq!(fields.len(), 61);
    }
}
