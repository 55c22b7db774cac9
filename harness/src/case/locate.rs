//! Finding where in a case file a problem is: JSON path -> line and column.
//!
//! serde reports *what* is wrong; a person fixing the file needs *where*.
//! We keep a syntax tree with byte ranges (jsonc-parser) beside the parsed
//! value and look up the node a problem belongs to.

use jsonc_parser::ast::{ObjectPropName, Value as Node};
use jsonc_parser::{CollectOptions, ParseOptions};

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
pub struct Locator<'a> {
    text: &'a str,
    root: Option<Node<'a>>,
}

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
        Locator { text, root }
    }

    /// Line and column (both 1-based, column in characters) of `focus` under `path`.
    pub fn locate(&self, path: &[Seg], focus: &Focus) -> (usize, usize) {
        let Some(root) = &self.root else {
            return (1, 1);
        };
        let node = walk(root, path);
        let offset = match focus {
            Focus::Node => Some(start_of(node)),
            Focus::Key(key) => find_key(node, key),
            Focus::StringValue(s) => find_string(node, s),
        }
        .unwrap_or_else(|| start_of(node));
        line_col(self.text, offset)
    }
}

/// Follows `path` as far as it exists; stops at the deepest node found.
fn walk<'n, 'a>(mut node: &'n Node<'a>, path: &[Seg]) -> &'n Node<'a> {
    for seg in path {
        let next = match (node, seg) {
            (Node::Object(obj), Seg::Key(k)) => obj
                .properties
                .iter()
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
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
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
