//! Resolving the values a case writes loosely: page-relative sizes, and
//! bytes given as text, hex, fill or a seeded pattern.

use super::model::{Data, Size};
use serde::{Deserialize, Serialize};

/// The most bytes one step may make the harness itself produce or hold: a
/// file's initial content, the data of a `store`, `pwrite` or `write`, the
/// length a `load`, `pread` or `check_file` reads, the page vector of a
/// `mincore`. Validation rejects more, so that no case can make the harness
/// allocate without bound. The corpus uses at most 4 pages (256 KiB with
/// 64 KiB pages); sparse file sizes (`size` without content, `ftruncate`)
/// and mapping lengths are not bytes the harness holds and are not capped.
pub const MAX_STEP_BYTES: u64 = 64 << 20;

/// A byte count for people: "64 MiB" when exact in a binary unit, else "1000 bytes".
pub fn human_bytes(n: u64) -> String {
    for (unit, name) in [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
    }
    if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

impl Size {
    /// The size in bytes for a given page size. "2p+100" = 2 pages and 100 bytes.
    pub fn resolve(&self, page_size: u64) -> Result<i128, String> {
        match self {
            Size::Bytes(n) => Ok(*n as i128),
            Size::Expr(text) => parse_size_expr(text, page_size),
        }
    }

    /// A length: non-negative, up to u64::MAX (huge lengths are how cases provoke ENOMEM).
    pub fn resolve_len(&self, page_size: u64) -> Result<u64, String> {
        let v = self.resolve(page_size)?;
        u64::try_from(v).map_err(|_| format!("length {v} is out of range 0..=2^64-1"))
    }

    /// An offset: may be negative (below a mapping's start).
    pub fn resolve_offset(&self, page_size: u64) -> Result<i64, String> {
        let v = self.resolve(page_size)?;
        i64::try_from(v).map_err(|_| format!("offset {v} is out of range"))
    }
}

fn parse_size_expr(text: &str, page_size: u64) -> Result<i128, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err("empty size".to_string());
    }
    let mut total: i128 = 0;
    let mut rest = compact.as_str();
    let mut sign: i128 = 1;
    if let Some(r) = rest.strip_prefix('-') {
        sign = -1;
        rest = r;
    }
    loop {
        let end = rest.find(['+', '-']).unwrap_or(rest.len());
        let term = &rest[..end];
        total += sign
            * parse_term(term, page_size).ok_or_else(|| {
                format!("bad size `{text}`: terms are N, 0xN, Np (N pages) or p, joined by + or -")
            })?;
        if end == rest.len() {
            break;
        }
        sign = if rest.as_bytes()[end] == b'+' { 1 } else { -1 };
        rest = &rest[end + 1..];
    }
    Ok(total)
}

fn parse_term(term: &str, page_size: u64) -> Option<i128> {
    if term == "p" {
        return Some(page_size as i128);
    }
    if let Some(n) = term.strip_suffix('p') {
        let n = parse_unsigned(n)?;
        return n.checked_mul(page_size as i128);
    }
    parse_unsigned(term)
}

fn parse_unsigned(s: &str) -> Option<i128> {
    if let Some(hex) = s.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok().map(i128::from)
    } else if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        s.parse::<u64>().ok().map(i128::from)
    } else {
        None
    }
}

/// Bytes as the worker needs them: literal bytes, or a compact recipe for
/// large fills and patterns so the wire does not carry megabytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bytes {
    Literal(#[serde(with = "hex_bytes")] Vec<u8>),
    Fill { byte: u8, len: u64 },
    Pattern { seed: u64, len: u64 },
}

impl Bytes {
    pub fn len(&self) -> u64 {
        match self {
            Bytes::Literal(b) => b.len() as u64,
            Bytes::Fill { len, .. } | Bytes::Pattern { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn materialize(&self) -> Vec<u8> {
        match self {
            Bytes::Literal(b) => b.clone(),
            Bytes::Fill { byte, len } => vec![*byte; *len as usize],
            Bytes::Pattern { seed, len } => pattern_bytes(*seed, *len as usize),
        }
    }
}

/// Deterministic bytes from a seed (splitmix64), the same on every machine.
pub fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for b in z.to_le_bytes() {
            if out.len() < len {
                out.push(b);
            }
        }
    }
    out
}

impl Data {
    /// Resolves to bytes. `default_len` is the length the step implies
    /// (a load's `len`), used when a fill or pattern has no `len` of its own.
    pub fn resolve(&self, page_size: u64, default_len: Option<u64>) -> Result<Bytes, String> {
        let sources = [
            self.text.is_some(),
            self.hex.is_some(),
            self.fill.is_some(),
            self.pattern.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources != 1 {
            return Err("give exactly one of `text`, `hex`, `fill`, `pattern`".to_string());
        }
        let explicit_len = match &self.len {
            Some(len) => Some(len.resolve_len(page_size)?),
            None => None,
        };
        if let Some(text) = &self.text {
            if explicit_len.is_some() {
                return Err("`len` goes with `fill` or `pattern`, not `text`".to_string());
            }
            return Ok(Bytes::Literal(text.as_bytes().to_vec()));
        }
        if let Some(hex) = &self.hex {
            if explicit_len.is_some() {
                return Err("`len` goes with `fill` or `pattern`, not `hex`".to_string());
            }
            return parse_hex(hex).map(Bytes::Literal);
        }
        let len = explicit_len
            .or(default_len)
            .ok_or_else(|| "`fill` and `pattern` need `len`".to_string())?;
        if let Some(byte) = self.fill {
            return Ok(Bytes::Fill { byte, len });
        }
        Ok(Bytes::Pattern {
            seed: self.pattern.unwrap_or_default(),
            len,
        })
    }
}

/// Parses hex digits, ignoring whitespace ("48 65 6c 6c 6f").
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex `{text}` has an odd number of digits"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| format!("bad hex `{text}`"))?;
            u8::from_str_radix(s, 16).map_err(|_| format!("bad hex digits `{s}` in `{text}`"))
        })
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// serde helper: Vec<u8> as a hex string on the wire and in reports.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Size::Bytes(64), 64)]
    #[case(Size::Expr("1p".into()), 4096)]
    #[case(Size::Expr("2p+100".into()), 8292)]
    #[case(Size::Expr("p-1".into()), 4095)]
    #[case(Size::Expr("0x1000".into()), 4096)]
    #[case(Size::Expr("-1p".into()), -4096)]
    #[case(Size::Expr(" 3p - 2p ".into()), 4096)]
    fn sizes(#[case] size: Size, #[case] want: i128) {
        assert_eq!(size.resolve(4096), Ok(want));
    }

    #[rstest]
    #[case("2q")]
    #[case("")]
    #[case("p+")]
    #[case("1.5p")]
    fn bad_sizes(#[case] text: &str) {
        assert!(Size::Expr(text.into()).resolve(4096).is_err());
    }

    #[test]
    fn data_forms() {
        let text = Data {
            text: Some("Hi".into()),
            ..Data::default()
        };
        assert_eq!(text.resolve(4096, None), Ok(Bytes::Literal(b"Hi".to_vec())));
        let hex = Data {
            hex: Some("48 69".into()),
            ..Data::default()
        };
        assert_eq!(hex.resolve(4096, None).unwrap().materialize(), b"Hi");
        let fill = Data {
            fill: Some(7),
            ..Data::default()
        };
        assert_eq!(
            fill.resolve(4096, Some(3)).unwrap().materialize(),
            vec![7, 7, 7]
        );
        assert!(fill.resolve(4096, None).is_err(), "fill without a length");
        let both = Data {
            text: Some("a".into()),
            fill: Some(1),
            ..Data::default()
        };
        assert!(both.resolve(4096, Some(1)).is_err());
    }

    #[test]
    fn patterns_are_deterministic_and_seeded() {
        assert_eq!(pattern_bytes(1, 100), pattern_bytes(1, 100));
        assert_ne!(pattern_bytes(1, 100), pattern_bytes(2, 100));
        assert_eq!(&pattern_bytes(1, 100)[..10], &pattern_bytes(1, 10)[..]);
    }
}
