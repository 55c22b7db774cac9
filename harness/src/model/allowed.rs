//! What the model allows a step to observe: one outcome or a set of them,
//! and how that set is compared with an observation and with a case's
//! expectation.

use crate::case::model::{Expect, Size};
use crate::exec::protocol::{ExitStatus, Observation, Outcome};
use std::collections::BTreeMap;

/// Bytes a read may return: `first` is one allowed content; where a byte
/// may also hold other values (a crash may have kept the old or the new
/// one), `also` lists them by offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PossibleBytes {
    pub first: Vec<u8>,
    pub also: BTreeMap<usize, Vec<u8>>,
}

impl PossibleBytes {
    /// Exactly these bytes.
    pub fn exact(bytes: Vec<u8>) -> PossibleBytes {
        PossibleBytes {
            first: bytes,
            also: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Whether byte `i` may be `v`.
    pub fn allows(&self, i: usize, v: u8) -> bool {
        self.first.get(i) == Some(&v) || self.also.get(&i).is_some_and(|o| o.contains(&v))
    }

    /// Whether `got` is one of the allowed contents.
    pub fn admits(&self, got: &[u8]) -> bool {
        got.len() == self.first.len() && got.iter().enumerate().all(|(i, b)| self.allows(i, *b))
    }

    /// Whether only one content is allowed.
    pub fn is_exact(&self) -> bool {
        self.also.values().all(|o| o.is_empty())
    }
}

/// What a step may observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// The call succeeds; it returns nothing the model judges.
    Success,
    /// The call succeeds and reads bytes among these.
    Bytes(PossibleBytes),
    /// The call succeeds and returns a number in `lo..=hi` (a count).
    Value { lo: i64, hi: i64 },
    /// The call fails with this errno.
    Errno(String),
    /// The access raises this signal with this si_code.
    Signal { signal: String, si_code: String },
    /// `wait` sees the process end so.
    Exit(ExitStatus),
    /// fstat succeeds with this st_size (timestamps and st_blocks are not modelled).
    Stat { size: i64 },
    /// Any one of these (never nested, never empty).
    OneOf(Vec<Allowed>),
}

impl Allowed {
    /// Any one of `options`, flattened; one option stands for itself.
    pub fn one_of(options: Vec<Allowed>) -> Allowed {
        let mut flat: Vec<Allowed> = Vec::new();
        for o in options {
            match o {
                Allowed::OneOf(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        flat.dedup();
        if flat.len() == 1 {
            flat.pop().unwrap()
        } else {
            Allowed::OneOf(flat)
        }
    }

    pub fn errno(name: &str) -> Allowed {
        Allowed::Errno(name.to_string())
    }

    pub fn signal(signal: &str, si_code: &str) -> Allowed {
        Allowed::Signal {
            signal: signal.to_string(),
            si_code: si_code.to_string(),
        }
    }

    pub fn value(v: i64) -> Allowed {
        Allowed::Value { lo: v, hi: v }
    }

    /// The single outcomes this set is made of.
    pub fn options(&self) -> &[Allowed] {
        match self {
            Allowed::OneOf(v) => v,
            other => std::slice::from_ref(other),
        }
    }

    /// Whether an observation is one of the allowed outcomes.
    pub fn admits(&self, obs: &Observation, page_size: u64) -> bool {
        let _ = page_size; // outcomes are already in bytes; kept for callers' symmetry with admits_expect
        self.options().iter().any(|a| admits_one(a, obs))
    }

    /// The one expectation the case format can state for this step, or None when several outcomes are allowed.
    pub fn as_expect(&self) -> Option<Expect> {
        let e = Expect::default();
        Some(match self {
            Allowed::Success => e,
            Allowed::Bytes(b) if b.is_exact() => bytes_expect(&b.first),
            Allowed::Bytes(_) => return None,
            Allowed::Value { lo, hi } if lo == hi => Expect {
                value: Some(Size::Bytes(*lo)),
                ..e
            },
            Allowed::Value { lo, hi } => Expect {
                range: Some([Size::Bytes(*lo), Size::Bytes(*hi)]),
                ..e
            },
            Allowed::Errno(name) => Expect {
                errno: Some(name.clone()),
                ..e
            },
            Allowed::Signal { signal, si_code } => Expect {
                signal: Some(signal.clone()),
                si_code: Some(si_code.clone()),
                ..e
            },
            Allowed::Exit(ExitStatus::Exited(code)) => Expect {
                exit: Some(*code),
                ..e
            },
            Allowed::Exit(ExitStatus::Killed(sig)) => Expect {
                killed_by: Some(sig.clone()),
                ..e
            },
            Allowed::Stat { size } => Expect {
                stat: Some(crate::case::model::StatExpect {
                    size: Some(crate::case::model::Size::Bytes(*size)),
                    ..Default::default()
                }),
                ..e
            },
            Allowed::OneOf(_) => return None,
        })
    }

    /// Whether a case's expectation (after variants) names only outcomes
    /// the model allows. What the expectation leaves unstated (the bytes of
    /// a load that only expects success, a signal's si_code) is not
    /// compared: the case does not judge it, so it cannot contradict the model.
    pub fn admits_expect(&self, e: &Expect, page_size: u64) -> bool {
        self.options()
            .iter()
            .any(|a| admits_expect_one(a, e, page_size))
    }
}

/// The expectation of exactly these bytes, in the shortest form the format has.
fn bytes_expect(b: &[u8]) -> Expect {
    let e = Expect::default();
    if let Some(&first) = b.first() {
        if b.iter().all(|x| *x == first) && b.len() > 1 {
            return Expect {
                fill: Some(first),
                ..e
            };
        }
    }
    match std::str::from_utf8(b) {
        Ok(t) if t.chars().all(|c| c == ' ' || c.is_ascii_graphic()) => Expect {
            text: Some(t.to_string()),
            ..e
        },
        _ => Expect {
            hex: Some(crate::case::values::to_hex(b)),
            ..e
        },
    }
}

fn admits_one(a: &Allowed, obs: &Observation) -> bool {
    let ok = obs.outcome == Outcome::Ok;
    match a {
        Allowed::Success => ok,
        Allowed::Bytes(b) => ok && obs.bytes.as_ref().is_some_and(|got| b.admits(got)),
        Allowed::Value { lo, hi } => ok && obs.value.is_some_and(|v| (*lo..=*hi).contains(&v)),
        Allowed::Errno(name) => {
            matches!(&obs.outcome, Outcome::Errno { errno } if errno == name)
        }
        Allowed::Signal { signal, si_code } => matches!(
            &obs.outcome,
            Outcome::Signal { signal: s, si_code: c, .. } if s == signal && c == si_code
        ),
        Allowed::Exit(want) => ok && obs.exit.as_ref() == Some(want),
        Allowed::Stat { size } => ok && obs.stat.as_ref().is_some_and(|s| s.size == *size),
        Allowed::OneOf(v) => v.iter().any(|a| admits_one(a, obs)),
    }
}

/// The number a read of these bytes reports (as `exec::ops::with_bytes`).
fn number_of(b: &[u8]) -> Option<i64> {
    match b.len() {
        1 => Some(b[0] as i64),
        2 => Some(u16::from_ne_bytes([b[0], b[1]]) as i64),
        4 => Some(u32::from_ne_bytes(b[..4].try_into().ok()?) as i64),
        8 => Some(u64::from_ne_bytes(b[..8].try_into().ok()?) as i64),
        _ => None,
    }
}

fn admits_expect_one(a: &Allowed, e: &Expect, page_size: u64) -> bool {
    if let Some(errno) = &e.errno {
        return matches!(a, Allowed::Errno(n) if n == errno);
    }
    if let Some(sig) = &e.signal {
        return matches!(a, Allowed::Signal { signal, si_code }
            if signal == sig && e.si_code.as_ref().is_none_or(|c| c == si_code));
    }
    if matches!(a, Allowed::Errno(_) | Allowed::Signal { .. }) {
        return false;
    }
    let want = e.bytes();
    if !want.is_empty() {
        let Allowed::Bytes(b) = a else { return false };
        let Ok(w) = e.want_bytes(page_size, Some(b.len() as u64)) else {
            return false;
        };
        if !b.admits(&w) {
            return false;
        }
    }
    if e.value.is_some() || e.range.is_some() {
        let number = |s: &Size| s.resolve_number(page_size).ok();
        let value = match &e.value {
            Some(v) => match number(v) {
                Some(v) => Some(v),
                None => return false,
            },
            None => None,
        };
        let [lo, hi] = match &e.range {
            Some([lo, hi]) => match (number(lo), number(hi)) {
                (Some(lo), Some(hi)) => [lo, hi],
                _ => return false,
            },
            None => [value.unwrap_or(0); 2],
        };
        let lo = value.map_or(lo, |v| v.max(lo));
        let hi = value.map_or(hi, |v| v.min(hi));
        let fits = match a {
            Allowed::Value { lo: l, hi: h } => *l <= lo && hi <= *h,
            // A number read from memory: every allowed content must give one in range.
            Allowed::Bytes(b) if b.is_exact() => {
                number_of(&b.first).is_some_and(|v| (lo..=hi).contains(&v))
            }
            _ => false,
        };
        if !fits {
            return false;
        }
    }
    if e.same_as.is_some() || e.differs_from.is_some() {
        return false;
    }
    if let Some(st) = &e.stat {
        let Allowed::Stat { size } = a else {
            return false;
        };
        let stated_size_ok = st
            .size
            .as_ref()
            .is_none_or(|s| s.resolve(page_size).is_ok_and(|v| v == *size as i128));
        if !stated_size_ok || st.blocks.is_some() || st.mtime.is_some() || st.ctime.is_some() {
            return false;
        }
    }
    match (&e.exit, &e.killed_by) {
        (Some(code), _) => matches!(a, Allowed::Exit(ExitStatus::Exited(c)) if c == code),
        (None, Some(sig)) => matches!(a, Allowed::Exit(ExitStatus::Killed(s)) if s == sig),
        (None, None) => true,
    }
}
