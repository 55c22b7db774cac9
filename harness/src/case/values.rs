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

/// As written: a number, or the expression ("2p+100").
impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Bytes(n) => write!(f, "{n}"),
            Size::Expr(e) => f.write_str(e),
        }
    }
}

impl Size {
    /// The size in bytes for a given page size. "2p+100" = 2 pages and 100 bytes.
    pub fn resolve(&self, page_size: u64) -> Result<i128, String> {
        // A plain number (most sizes on the step path) needs no terms: no
        // allocation for it.
        if let Size::Bytes(n) = self {
            return Ok(i128::from(*n));
        }
        let mut total: i128 = 0;
        for t in self.terms()? {
            let unit = match t.unit {
                SizeUnit::Bytes => 1,
                SizeUnit::Pages => page_size,
                SizeUnit::HugePages => huge_page_size(),
            };
            let v = i128::from(t.count)
                .checked_mul(unit as i128)
                .ok_or_else(|| format!("size {self:?} is out of range"))?;
            total += if t.negative { -v } else { v };
        }
        Ok(total)
    }

    /// The terms of the size as written, unresolved: "2p+100" is 2 pages
    /// plus 100 bytes. `resolve` sums them for one page size; a C
    /// reproducer writes them as an expression of the page size it runs with.
    pub fn terms(&self) -> Result<Vec<SizeTerm>, String> {
        match self {
            Size::Bytes(n) => Ok(vec![SizeTerm {
                negative: *n < 0,
                count: n.unsigned_abs(),
                unit: SizeUnit::Bytes,
            }]),
            Size::Expr(text) => parse_size_expr(text),
        }
    }

    /// A length: non-negative, up to u64::MAX (huge lengths are how cases provoke ENOMEM).
    pub fn resolve_len(&self, page_size: u64) -> Result<u64, String> {
        let v = self.resolve(page_size)?;
        u64::try_from(v).map_err(|_| format!("length {v} is out of range 0..=2^64-1"))
    }

    /// A number an expectation compares with what a step observed (a
    /// signed 64-bit value). Values from 2^63 to 2^64-1 wrap to the negative
    /// numbers they read as, so "0xffffffffffffffff" is the 8 bytes ff.
    pub fn resolve_number(&self, page_size: u64) -> Result<i64, String> {
        let v = self.resolve(page_size)?;
        i64::try_from(v)
            .or_else(|_| u64::try_from(v).map(|u| u as i64))
            .map_err(|_| format!("number {v} is out of the 64-bit range"))
    }

    /// An offset: may be negative (below a mapping's start).
    pub fn resolve_offset(&self, page_size: u64) -> Result<i64, String> {
        let v = self.resolve(page_size)?;
        i64::try_from(v).map_err(|_| format!("offset {v} is out of range"))
    }
}

/// What a term of a size counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeUnit {
    Bytes,
    /// The page size.
    Pages,
    /// The default huge page size (`h`).
    HugePages,
}

/// One term of a size: `count` units, added or subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeTerm {
    pub negative: bool,
    pub count: u64,
    pub unit: SizeUnit,
}

fn parse_size_expr(text: &str) -> Result<Vec<SizeTerm>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err("empty size".to_string());
    }
    let mut terms = Vec::new();
    let mut rest = compact.as_str();
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    }
    loop {
        let end = rest.find(['+', '-']).unwrap_or(rest.len());
        let (count, unit) = parse_term(&rest[..end]).ok_or_else(|| {
            format!("bad size `{text}`: terms are N, 0xN, Np (N pages), p, Nh (N huge pages) or h, joined by + or -")
        })?;
        terms.push(SizeTerm {
            negative,
            count,
            unit,
        });
        if end == rest.len() {
            break;
        }
        negative = rest.as_bytes()[end] == b'-';
        rest = &rest[end + 1..];
    }
    Ok(terms)
}

fn parse_term(term: &str) -> Option<(u64, SizeUnit)> {
    for (letter, unit) in [('p', SizeUnit::Pages), ('h', SizeUnit::HugePages)] {
        if term.len() == 1 && term.starts_with(letter) {
            return Some((1, unit));
        }
        if let Some(n) = term.strip_suffix(letter) {
            return Some((parse_unsigned(n)?, unit));
        }
    }
    Some((parse_unsigned(term)?, SizeUnit::Bytes))
}

/// The size of `h`: the kernel's default huge page size, what MAP_HUGETLB
/// and MFD_HUGETLB use. Where the kernel has none, 2 MiB: the cases that
/// say `h` require the `hugetlb_pool` probe and skip there anyway.
pub fn huge_page_size() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        crate::target::hugetlb::default_huge_page_size()
            .unwrap_or(crate::target::hugetlb::FALLBACK_HUGE_PAGE)
    })
}

fn parse_unsigned(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        s.parse::<u64>().ok()
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

    /// The bytes in memory. Err (not an abort) when they cannot be
    /// allocated: a case can ask for more than the machine has.
    pub fn materialize(&self) -> Result<Vec<u8>, String> {
        let mut out = zeroed_vec(self.len())?;
        self.copy_range(0, &mut out);
        Ok(out)
    }

    /// Bytes `offset..offset + buf.len()` of the content, into `buf`, so
    /// large contents can be produced a chunk at a time.
    pub fn copy_range(&self, offset: u64, buf: &mut [u8]) {
        match self {
            Bytes::Literal(b) => {
                let start = (offset as usize).min(b.len());
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
            }
            Bytes::Fill { byte, .. } => buf.fill(*byte),
            Bytes::Pattern { seed, .. } => pattern_into(*seed, offset, buf),
        }
    }

    /// Writes the content a chunk at a time: a file's content of any size
    /// is created without holding it in memory.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut chunk = vec![0u8; self.len().min(CHUNK) as usize];
        let mut offset = 0;
        while offset < self.len() {
            let n = (self.len() - offset).min(CHUNK) as usize;
            self.copy_range(offset, &mut chunk[..n]);
            out.write_all(&chunk[..n])?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// `len` zero bytes, or Err naming the size when they cannot be allocated.
pub fn zeroed_vec(len: u64) -> Result<Vec<u8>, String> {
    let fail = || format!("cannot allocate {len} bytes: out of memory");
    let n = usize::try_from(len).map_err(|_| fail())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| fail())?;
    v.resize(n, 0);
    Ok(v)
}

/// Deterministic bytes from a seed (splitmix64), the same on every machine.
pub fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    pattern_into(seed, 0, &mut out);
    out
}

/// Bytes `offset..` of the pattern of `seed`: byte i is byte i % 8 of
/// splitmix64's output number i / 8, so any range can be made on its own.
fn pattern_into(seed: u64, offset: u64, buf: &mut [u8]) {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    for (i, b) in buf.iter_mut().enumerate() {
        let at = offset + i as u64;
        let mut z = seed.wrapping_add((at / 8 + 1).wrapping_mul(GAMMA));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        *b = z.to_le_bytes()[(at % 8) as usize];
    }
}

impl crate::case::model::Expect {
    /// The bytes this expectation wants, `default_len` long where a fill or
    /// pattern has no length of its own; a pattern starts at `from`.
    pub fn want_bytes(&self, page_size: u64, default_len: Option<u64>) -> Result<Vec<u8>, String> {
        let want = self.bytes().resolve(page_size, default_len)?;
        let from = match (&self.from, &want) {
            (None, _) => 0,
            (Some(f), Bytes::Pattern { .. }) => f.resolve_len(page_size)?,
            (Some(_), _) => return Err("`from` goes with `pattern`".to_string()),
        };
        let mut out = zeroed_vec(want.len())?;
        want.copy_range(from, &mut out);
        Ok(out)
    }
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
    // By table, not `format!` per byte: observations of whole pages are
    // written as hex into every report, and a String per byte made that a
    // visible part of a run under emulation (TCG).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    hex
}

/// serde helper: Vec<u8> as a hex string on the wire and in reports.
/// Bytes as hex in JSON, and as they are in a binary format (the wire to
/// workers, `exec::protocol`), where hex would only double their size.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match s.is_human_readable() {
            true => s.serialize_str(&super::to_hex(bytes)),
            false => s.serialize_bytes(bytes),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if !d.is_human_readable() {
            return d.deserialize_byte_buf(Raw);
        }
        let text = String::deserialize(d)?;
        super::parse_hex(&text).map_err(serde::de::Error::custom)
    }

    struct Raw;

    impl serde::de::Visitor<'_> for Raw {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lowercase_digits_a_byte_and_parses_back() {
        let all: Vec<u8> = (0..=255).collect();
        let hex = super::to_hex(&all);
        assert_eq!(&hex[..8], "00010203");
        assert_eq!(&hex[hex.len() - 4..], "feff");
        assert_eq!(hex.len(), 512);
        assert_eq!(super::parse_hex(&hex).unwrap(), all);
    }
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Size::Bytes(64), 64)]
    #[case(Size::Bytes(-3), -3)]
    #[case(Size::Bytes(i64::MIN), i64::MIN as i128)]
    #[case(Size::Expr("1p".into()), 4096)]
    #[case(Size::Expr("2p+100".into()), 8292)]
    #[case(Size::Expr("p-1".into()), 4095)]
    #[case(Size::Expr("0x1000".into()), 4096)]
    #[case(Size::Expr("-1p".into()), -4096)]
    #[case(Size::Expr(" 3p - 2p ".into()), 4096)]
    #[case(Size::Expr("2h".into()), 2 * huge_page_size() as i128)]
    #[case(Size::Expr("h-1p".into()), huge_page_size() as i128 - 4096)]
    fn sizes(#[case] size: Size, #[case] want: i128) {
        assert_eq!(size.resolve(4096), Ok(want));
    }

    #[rstest]
    #[case("2q")]
    #[case("")]
    #[case("p+")]
    #[case("1.5p")]
    #[case("hp")]
    #[case("0.5h")]
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
        assert_eq!(
            hex.resolve(4096, None).unwrap().materialize().unwrap(),
            b"Hi"
        );
        let fill = Data {
            fill: Some(7),
            ..Data::default()
        };
        assert_eq!(
            fill.resolve(4096, Some(3)).unwrap().materialize().unwrap(),
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

    /// splitmix64 run forward from the seed, as the pattern was first
    /// defined: cases and reports made before must keep their bytes.
    fn sequential_pattern(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::new();
        while out.len() < len {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            out.extend_from_slice(&z.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn any_range_of_a_content_is_the_same_bytes_as_the_whole() {
        assert_eq!(pattern_bytes(7, 1000), sequential_pattern(7, 1000));
        for bytes in [
            Bytes::Pattern { seed: 3, len: 5000 },
            Bytes::Fill { byte: 9, len: 5000 },
            Bytes::Literal((0..=255).cycle().take(5000).collect()),
        ] {
            let whole = bytes.materialize().unwrap();
            for (at, n) in [(0, 1), (3, 13), (4093, 7), (4999, 1), (1, 4999)] {
                let mut part = vec![0u8; n];
                bytes.copy_range(at as u64, &mut part);
                assert_eq!(part, whole[at..at + n], "{bytes:?} at {at}");
            }
            let mut streamed = Vec::new();
            bytes.write_to(&mut streamed).unwrap();
            assert_eq!(streamed, whole);
        }
    }

    #[test]
    fn contents_too_large_to_hold_are_an_error_not_an_abort() {
        let huge = Bytes::Fill {
            byte: 0,
            len: 1 << 50,
        };
        let e = huge.materialize().unwrap_err();
        assert!(e.contains("cannot allocate 1125899906842624 bytes"), "{e}");
    }
}
