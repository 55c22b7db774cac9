//! What serde_json lets through silently, checked on the text itself:
//! bytes that are not UTF-8, and keys given twice in one object (serde_json
//! keeps the last, so the first would be ignored without a word).

use super::locate::{LineIndex, Locator};
use jsonc_parser::ast::{ObjectPropName, Value as Node};
use std::collections::HashMap;

/// The text of a case file, or where its first byte that is not UTF-8 is
/// (line, column in characters of the valid text before it) and what it is.
pub fn utf8(bytes: &[u8]) -> Result<&str, (usize, usize, String)> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let at = e.valid_up_to();
            // The valid prefix is text, so it can be indexed like any other.
            let valid = std::str::from_utf8(&bytes[..at]).expect("valid up to here");
            let (line, col) = LineIndex::new(valid).line_col(at);
            Err((
                line,
                col,
                format!(
                    "invalid UTF-8: byte 0x{:02x} does not belong here; a case file is UTF-8 text",
                    bytes[at]
                ),
            ))
        }
    }
}

/// Every key that appears a second time in its object: (byte offset of the
/// repeated key, message naming where the first one is).
pub fn duplicate_keys(locator: &Locator<'_>) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    if let Some(root) = locator.root() {
        walk(root, locator, &mut out);
    }
    out
}

fn walk(node: &Node<'_>, locator: &Locator<'_>, out: &mut Vec<(usize, String)>) {
    match node {
        Node::Object(obj) => {
            let mut first: HashMap<&str, usize> = HashMap::with_capacity(obj.properties.len());
            for p in &obj.properties {
                let (name, start) = match &p.name {
                    ObjectPropName::String(s) => (s.value.as_ref(), s.range.start),
                    ObjectPropName::Word(w) => (w.value, w.range.start),
                };
                match first.get(name) {
                    Some(&at) => {
                        let (line, col) = locator.line_col(at);
                        out.push((
                            start,
                            format!("duplicate key `{name}` (first at {line}:{col})"),
                        ));
                    }
                    None => {
                        first.insert(name, start);
                    }
                }
                walk(&p.value, locator, out);
            }
        }
        Node::Array(arr) => {
            for e in &arr.elements {
                walk(e, locator, out);
            }
        }
        _ => {}
    }
}
