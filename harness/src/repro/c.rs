//! C spellings of case values: string literals, identifiers, sizes as
//! expressions of the page size the program runs with, flags as libc
//! macro names (from the harness's own tables in `names`).

use crate::case::model::Size;
use crate::case::values::SizeUnit;
use crate::names::{flag_tokens, FlagKind, FlagToken};
use std::collections::{BTreeMap, BTreeSet};

/// A C string literal of arbitrary bytes: printable ASCII as is, the rest
/// as three-digit octal escapes (which, unlike `\x`, never swallow the
/// digit after them), split into lines of 32 bytes when long.
pub fn string(bytes: &[u8]) -> String {
    let pieces: Vec<String> = bytes.chunks(32).map(literal).collect();
    if pieces.is_empty() {
        "\"\"".to_string()
    } else {
        pieces.join("\n        ")
    }
}

/// A C string literal on one line, for names and descriptions.
pub fn text(s: &str) -> String {
    literal(s.as_bytes())
}

fn literal(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' | b'?' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s.push('"');
    s
}

/// Text for a C comment: no `*/` inside, nor `/*` (-Wcomment), one line.
pub fn comment(text: &str) -> String {
    text.replace("*/", "* /")
        .replace("/*", "/ *")
        .replace(['\n', '\r'], " ")
}

/// Identifiers for the names a case gives (processes, fds, mappings,
/// recorded values), each a valid C identifier with a prefix, distinct
/// even where two names differ only in characters C does not allow.
#[derive(Default)]
pub struct Idents {
    by_name: BTreeMap<String, String>,
    used: BTreeSet<String>,
}

impl Idents {
    pub fn get(&mut self, prefix: &str, name: &str) -> String {
        let key = format!("{prefix}\0{name}");
        if let Some(id) = self.by_name.get(&key) {
            return id.clone();
        }
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut id = format!("{prefix}{clean}");
        let mut n = 2;
        while self.used.contains(&id) {
            id = format!("{prefix}{clean}_{n}");
            n += 1;
        }
        self.used.insert(id.clone());
        self.by_name.insert(key, id.clone());
        id
    }
}

/// A size as a C expression of `PS` (the page size, read at run time) and
/// `HPS` (the huge page size): "2p+100" is `(2 * PS + 100)`.
pub fn size(s: &Size) -> Result<String, String> {
    let terms = s.terms()?;
    let mut out = String::new();
    for (i, t) in terms.iter().enumerate() {
        let count = if t.count > i64::MAX as u64 {
            format!("{:#x}ULL", t.count)
        } else if t.count > u32::MAX as u64 {
            format!("{}LL", t.count)
        } else {
            t.count.to_string()
        };
        let term = match (t.unit, t.count) {
            (SizeUnit::Bytes, _) => count,
            (SizeUnit::Pages, 1) => "PS".to_string(),
            (SizeUnit::HugePages, 1) => "HPS".to_string(),
            (SizeUnit::Pages, _) => format!("{count} * PS"),
            (SizeUnit::HugePages, _) => format!("{count} * HPS"),
        };
        match (i, t.negative) {
            (0, false) => out.push_str(&term),
            (0, true) => out.push_str(&format!("-{term}")),
            (_, false) => out.push_str(&format!(" + {term}")),
            (_, true) => out.push_str(&format!(" - {term}")),
        }
    }
    Ok(if terms.len() > 1 || terms[0].negative {
        format!("({out})")
    } else {
        out
    })
}

/// Flags as libc macro names joined by `|` ("PROT_READ | PROT_WRITE"),
/// numbers where the case wrote numbers. Every name used is remembered so
/// the program can define the ones an older libc lacks, with the value
/// the harness uses.
#[derive(Default)]
pub struct Flags {
    pub used: BTreeMap<&'static str, i64>,
}

impl Flags {
    pub fn spell(&mut self, kind: FlagKind, text: &str) -> Result<String, String> {
        let tokens = flag_tokens(kind, text)?;
        Ok(tokens
            .iter()
            .map(|t| match *t {
                FlagToken::Name(name, value) => {
                    self.used.insert(name, value);
                    name.to_string()
                }
                FlagToken::Number(n) if n < 0 => format!("({n})"),
                FlagToken::Number(n) if n > 9 => format!("{n:#x}"),
                FlagToken::Number(n) => n.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" | "))
    }

    /// `#ifndef NAME / #define NAME value / #endif` for every name used.
    pub fn fallbacks(&self) -> String {
        self.used
            .iter()
            .map(|(name, value)| format!("#ifndef {name}\n#define {name} {value:#x}\n#endif\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_what_c_would_misread() {
        assert_eq!(string(b"Hi \"x\"\\?"), r#""Hi \"x\"\\\?""#);
        // \0 followed by a digit stays two characters.
        assert_eq!(string(b"\x001"), r#""\0001""#);
        assert_eq!(string(b""), r#""""#);
        assert_eq!(string(&[b'a'; 40]).matches('"').count(), 4);
    }

    #[test]
    fn sizes_are_expressions_of_the_page_size() {
        let e = |s: &str| size(&Size::Expr(s.into())).unwrap();
        assert_eq!(e("2p+100"), "(2 * PS + 100)");
        assert_eq!(e("p"), "PS");
        assert_eq!(e("-1p"), "(-PS)");
        assert_eq!(e("h-1p"), "(HPS - PS)");
        assert_eq!(e("0xffffffffffffffff"), "0xffffffffffffffffULL");
        assert_eq!(size(&Size::Bytes(64)).unwrap(), "64");
        assert_eq!(size(&Size::Bytes(-5)).unwrap(), "(-5)");
        assert!(size(&Size::Expr("2q".into())).is_err());
    }

    #[test]
    fn flags_are_macro_names() {
        let mut f = Flags::default();
        assert_eq!(
            f.spell(FlagKind::Prot, "read|WRITE").unwrap(),
            "PROT_READ | PROT_WRITE"
        );
        assert_eq!(
            f.spell(FlagKind::Map, "SHARED_VALIDATE|0x800000").unwrap(),
            "MAP_SHARED_VALIDATE | 0x800000"
        );
        assert!(f.fallbacks().contains("#define PROT_WRITE 0x2\n"));
        assert!(f.spell(FlagKind::Prot, "READ|WRTE").is_err());
    }

    #[test]
    fn comments_neither_end_nor_open_another() {
        // "concurrency/*-plain-*" in a case's text: `/*` inside a comment is -Wcomment.
        assert_eq!(comment("a/*-b-*/c\nd"), "a/ *-b-* /c d");
        assert!(!comment("*/*").contains("/*") && !comment("*/*").contains("*/"));
    }

    #[test]
    fn identifiers_are_distinct() {
        let mut ids = Idents::default();
        assert_eq!(ids.get("map_", "m-1"), "map_m_1");
        assert_eq!(ids.get("map_", "m_1"), "map_m_1_2");
        assert_eq!(ids.get("map_", "m-1"), "map_m_1");
        assert_eq!(ids.get("fd_", "m-1"), "fd_m_1");
    }
}
