//! Finding where in a case file a problem is: JSON path -> line and column.
//!
//! serde reports *what* is wrong; a person fixing the file needs *where*.
//! We keep a syntax tree with byte ranges (jsonc-parser) beside the parsed
//! value and look up the node a problem belongs to.

use jsonc_parser::ast::{ObjectPropName, Value as Node};
use jsonc_parser::{CollectOptions, ParseOptions};
use std::cell::RefCell;
use std::collections::HashMap;

/// One element of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// A path as a case author reads it: `steps[4].len`, `files.data.size`,
/// `files["a b"].size` (keys that are not plain words are quoted).
pub fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                let plain = !k.is_empty()
                    && k.len() <= 64
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                } else {
                    let short: String = k.chars().take(40).collect();
                    let mut quoted = serde_json::to_string(&short).unwrap_or_default();
                    if short.len() < k.len() {
                        quoted.insert(quoted.len() - 1, '…');
                    }
                    out.push_str(&format!("[{quoted}]"));
                }
            }
        }
    }
    if out.is_empty() {
        "the case".to_string()
    } else {
        out
    }
}

/// What inside the node at a path to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Focus {
    /// The node itself.
    Node,
    /// The first property with this name in the node's subtree (its key).
    Key(String),
    /// The first string value equal to this in the node's subtree.
    StringValue(String),
}

/// Byte-range index of one document.
///
/// Every lookup costs time in the depth of the path and a bounded scan, never
/// in the size of the document: a file with 100,000 problems is located in
/// one pass over its text, not 100,000.
pub struct Locator<'a> {
    root: Option<Node<'a>>,
    lines: LineIndex<'a>,
    /// Property positions of large objects by name, built on first use
    /// (keyed by the object's start offset), so that a path through an object
    /// with many keys (`files` with thousands of entries) is not a linear search.
    keys: RefCell<HashMap<usize, HashMap<String, usize>>>,
}

/// Objects with more properties than this get a name index.
const INDEX_KEYS_ABOVE: usize = 16;

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Locator<'a> {
        let opts = ParseOptions {
            allow_comments: false,
            allow_loose_object_property_names: false,
            allow_trailing_commas: false,
        };
        let root = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &opts)
            .ok()
            .and_then(|r| r.value);
        Locator {
            root,
            lines: LineIndex::new(text),
            keys: RefCell::new(HashMap::new()),
        }
    }

    /// The syntax tree, when the text is valid JSON.
    pub fn root(&self) -> Option<&Node<'a>> {
        self.root.as_ref()
    }

    /// Line and column (both 1-based, column in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        self.lines.line_col(offset)
    }

    /// Line and column (both 1-based, column in characters) of `focus` under `path`.
    pub fn locate(&self, path: &[Seg], focus: &Focus) -> (usize, usize) {
        let Some(root) = &self.root else {
            return (1, 1);
        };
        let node = self.walk(root, path);
        let offset = match focus {
            Focus::Node => Some(start_of(node)),
            Focus::Key(key) => find_key(node, key),
            Focus::StringValue(s) => find_string(node, s),
        }
        .unwrap_or_else(|| start_of(node));
        self.lines.line_col(offset)
    }

    /// Whether the whole of `path` exists in the document.
    pub fn exists(&self, path: &[Seg]) -> bool {
        let Some(root) = &self.root else {
            return false;
        };
        let mut node = root;
        for i in 0..path.len() {
            let next = self.walk(node, &path[i..=i]);
            if std::ptr::eq(next, node) {
                return false;
            }
            node = next;
        }
        true
    }

    /// Follows `path` as far as it exists; stops at the deepest node found.
    /// Of duplicate keys the last is taken, as serde_json does.
    fn walk<'n>(&self, mut node: &'n Node<'a>, path: &[Seg]) -> &'n Node<'a> {
        for seg in path {
            let next = match (node, seg) {
                (Node::Object(obj), Seg::Key(k)) if obj.properties.len() > INDEX_KEYS_ABOVE => {
                    let mut keys = self.keys.borrow_mut();
                    let index = keys.entry(obj.range.start).or_insert_with(|| {
                        obj.properties
                            .iter()
                            .enumerate()
                            .map(|(i, p)| (prop_name(&p.name).to_string(), i))
                            .collect()
                    });
                    index.get(k).map(|&i| &obj.properties[i].value)
                }
                (Node::Object(obj), Seg::Key(k)) => obj
                    .properties
                    .iter()
                    .rev()
                    .find(|p| prop_name(&p.name) == k.as_str())
                    .map(|p| &p.value),
                (Node::Array(arr), Seg::Index(i)) => arr.elements.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

/// Byte offset -> line and character column, in time independent of the
/// text's length: line starts are binary-searched, and characters are
/// counted from the nearest checkpoint (one every [`CHUNK`] bytes), so a
/// minified one-line file is as cheap as a pretty-printed one.
pub struct LineIndex<'a> {
    bytes: &'a [u8],
    line_starts: Vec<usize>,
    /// `chars_at[k]`: characters that start before byte `k * CHUNK`.
    chars_at: Vec<usize>,
}

const CHUNK: usize = 256;

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        line_starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let mut chars_at = Vec::with_capacity(bytes.len() / CHUNK + 1);
        let mut count = 0;
        for chunk in bytes.chunks(CHUNK) {
            chars_at.push(count);
            count += chunk.iter().filter(|b| !is_continuation(**b)).count();
        }
        chars_at.push(count);
        LineIndex {
            bytes,
            line_starts,
            chars_at,
        }
    }

    fn chars_before(&self, offset: usize) -> usize {
        let k = offset / CHUNK;
        self.chars_at[k]
            + self.bytes[k * CHUNK..offset]
                .iter()
                .filter(|b| !is_continuation(**b))
                .count()
    }

    /// A 1-based line and a 0- or 1-based column counted in bytes (as
    /// serde_json reports them) as line and character column, both clamped
    /// to the text and at least 1.
    pub fn line_col_of_byte_column(&self, line: usize, byte_col: usize) -> (usize, usize) {
        let line = line.clamp(1, self.line_starts.len());
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map_or(self.bytes.len(), |next| next - 1);
        let mut offset = (start + byte_col.saturating_sub(1)).min(end);
        // Back to the start of the character the column falls in.
        while offset > start && offset < self.bytes.len() && is_continuation(self.bytes[offset]) {
            offset -= 1;
        }
        self.line_col(offset)
    }

    /// 1-based line and character column of a byte offset (clamped to the text).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.bytes.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        (
            line,
            self.chars_before(offset) - self.chars_before(start) + 1,
        )
    }
}

/// A UTF-8 continuation byte: part of the character before it.
fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

fn prop_name<'x>(name: &'x ObjectPropName<'_>) -> &'x str {
    match name {
        ObjectPropName::String(s) => s.value.as_ref(),
        ObjectPropName::Word(w) => w.value,
    }
}

fn start_of(node: &Node<'_>) -> usize {
    match node {
        Node::StringLit(n) => n.range.start,
        Node::NumberLit(n) => n.range.start,
        Node::BooleanLit(n) => n.range.start,
        Node::Object(n) => n.range.start,
        Node::Array(n) => n.range.start,
        Node::NullKeyword(n) => n.range.start,
    }
}

fn find_key(node: &Node<'_>, key: &str) -> Option<usize> {
    match node {
        Node::Object(obj) => obj.properties.iter().find_map(|p| {
            if prop_name(&p.name) == key {
                Some(p.range.start)
            } else {
                find_key(&p.value, key)
            }
        }),
        Node::Array(arr) => arr.elements.iter().find_map(|e| find_key(e, key)),
        _ => None,
    }
}

fn find_string(node: &Node<'_>, want: &str) -> Option<usize> {
    match node {
        Node::StringLit(s) if s.value == want => Some(s.range.start),
        Node::Object(obj) => obj
            .properties
            .iter()
            .find_map(|p| find_string(&p.value, want)),
        Node::Array(arr) => arr.elements.iter().find_map(|e| find_string(e, want)),
        _ => None,
    }
}

/// 1-based line and character column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).line_col(offset)
}

/// Picks what a serde error message is about, so the position can point at it:
/// "unknown field `lenn`" points at that key, "unknown variant `stor`" at that value.
pub fn focus_of_message(message: &str) -> Focus {
    let quoted = message.split('`').nth(1).map(str::to_string);
    match quoted {
        Some(q) if message.starts_with("unknown field") => Focus::Key(q),
        Some(q) if message.starts_with("unknown variant") => Focus::StringValue(q),
        _ => Focus::Node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DOC: &str =
        "{\n  \"steps\": [\n    {\"do\": \"stor\", \"lenn\": 3},\n    {\"do\": \"load\"}\n  ]\n}\n";

    #[rstest]
    #[case(vec![Seg::from("steps"), Seg::from(0)], Focus::Node, (3, 5))]
    #[case(vec![Seg::from("steps"), Seg::from(0)], Focus::Key("lenn".into()), (3, 20))]
    #[case(vec![Seg::from("steps"), Seg::from(0)], Focus::StringValue("stor".into()), (3, 12))]
    #[case(vec![Seg::from("steps"), Seg::from(1)], Focus::Node, (4, 5))]
    #[case(vec![Seg::from("steps"), Seg::from(7)], Focus::Node, (2, 12))]
    fn locates(#[case] path: Vec<Seg>, #[case] focus: Focus, #[case] want: (usize, usize)) {
        assert_eq!(Locator::new(DOC).locate(&path, &focus), want);
    }

    #[test]
    fn message_focus() {
        assert_eq!(
            focus_of_message("unknown field `lenn`, expected one of `map`"),
            Focus::Key("lenn".into())
        );
        assert_eq!(
            focus_of_message("unknown variant `stor`, expected one of `store`"),
            Focus::StringValue("stor".into())
        );
        assert_eq!(focus_of_message("missing field `map`"), Focus::Node);
    }
}
