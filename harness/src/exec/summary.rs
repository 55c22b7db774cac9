//! A step's one-line summary ("writer: store at=0 map=\"m\" text=\"Hello\""),
//! as every step of every report carries it.
//!
//! The arguments are the step's fields as its JSON form has them, in the
//! order of their names (what serde_json's map keeps), strings quoted and
//! cut at 40 characters, other values as compact JSON. They are collected
//! by a serializer of the operation's top level, rather than through a
//! whole `serde_json::Value` of it: a summary is made for every step on the
//! coordinator's path, and the tree of the operation was most of its cost.

use crate::case::model::Step;
use serde::ser::{self, Impossible, Serialize};
use std::borrow::Cow;
use std::fmt::Write;
use std::ops::Range;

/// One readable line for a step.
pub fn summary(step: &Step) -> String {
    let mut out = String::with_capacity(64);
    match (&step.process, &step.thread) {
        (Some(p), Some(t)) => write!(out, "{p}/{t}: "),
        (Some(p), None) => write!(out, "{p}: "),
        _ => Ok(()),
    }
    .expect("writing to a String");
    out.push_str(step.op.name());
    out.push(' ');
    let Collected { text, mut args } = step.op.serialize(Fields::default()).unwrap_or_default();
    // Sorted by name, and of a name given twice the last, as a map keeps them.
    args.sort_by(|a, b| a.0.cmp(&b.0));
    args.reverse();
    args.dedup_by(|later, kept| later.0 == kept.0);
    args.reverse();
    for (k, (_, shown)) in args.into_iter().enumerate() {
        if k > 0 {
            out.push(' ');
        }
        out.push_str(&text[shown]);
    }
    if let Some(n) = &step.name {
        write!(out, " -> {n}").expect("writing to a String");
    }
    out.truncate(out.trim_end().len());
    out
}

/// Appends `name=value` of one field to `out`; false for the fields a
/// summary leaves out.
fn shown(out: &mut String, name: &str, value: &(impl Serialize + ?Sized)) -> Result<bool, Error> {
    if name == "do" || name == "steps" {
        return Ok(false);
    }
    // Strings, numbers and flags (nearly every field) are written as they
    // come; anything else is shown as its compact JSON through a `Value`.
    let start = out.len();
    let plain = Plain {
        out,
        name: Some(name),
    };
    if value.serialize(plain).is_ok() {
        return Ok(true);
    }
    out.truncate(start);
    let v = serde_json::to_value(value).map_err(|e| Error(e.to_string()))?;
    match &v {
        // Collected up to 40 characters, the rest as an ellipsis.
        serde_json::Value::String(s) => match s.char_indices().nth(40) {
            Some((cut, _)) => write!(out, "{name}={:?}…", &s[..cut]),
            None => write!(out, "{name}={s:?}"),
        },
        other => write!(out, "{name}={other}"),
    }
    .expect("writing to a String");
    Ok(true)
}

/// `name=value` of a value that is a string, an integer, a flag or null,
/// written into `out` as `shown` would through a `Value`; Err (with `out`
/// to be cut back) for any other value. Without a name: the value as a
/// JSON map's key is, a string as it is (the names of flattened fields).
struct Plain<'o> {
    out: &'o mut String,
    name: Option<&'o str>,
}

impl Plain<'_> {
    fn number(self, v: impl std::fmt::Display) -> Result<(), Error> {
        match self.name {
            Some(name) => write!(self.out, "{name}={v}"),
            None => write!(self.out, "{v}"),
        }
        .expect("writing to a String");
        Ok(())
    }
}

fn not_plain<T>() -> Result<T, Error> {
    Err(Error("not a plain value".into()))
}

/// Numbers and flags: JSON writes them as Display does.
macro_rules! shown_as_displayed {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<(), Error> {
            self.number(v)
        })*
    };
}

impl ser::Serializer for Plain<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    shown_as_displayed!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
    );
    // JSON writes floats its own way (1.0, not 1): through a `Value`.
    fn serialize_f32(self, _: f32) -> Result<(), Error> {
        not_plain()
    }
    fn serialize_f64(self, _: f64) -> Result<(), Error> {
        not_plain()
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, s: &str) -> Result<(), Error> {
        let Some(name) = self.name else {
            self.out.push_str(s);
            return Ok(());
        };
        // Collected up to 40 characters, the rest as an ellipsis.
        match s.char_indices().nth(40) {
            Some((cut, _)) => write!(self.out, "{name}={:?}…", &s[..cut]),
            None => write!(self.out, "{name}={s:?}"),
        }
        .expect("writing to a String");
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Error> {
        not_plain()
    }
    fn serialize_none(self) -> Result<(), Error> {
        match self.name {
            Some(_) => self.number("null"),
            None => not_plain(),
        }
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.number("null")
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.number("null")
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        not_plain()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        not_plain()
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        not_plain()
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        not_plain()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        not_plain()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        not_plain()
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        not_plain()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        not_plain()
    }
}

/// The fields collected: their `name=value` texts one after the other in
/// `text` (one buffer, not a String a field), and each field's name and
/// place in it.
#[derive(Default)]
struct Collected {
    text: String,
    args: Vec<(Cow<'static, str>, Range<usize>)>,
}

#[derive(Debug)]
struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The serializer of an operation's top level: a struct, or a map when a
/// field is flattened into it. Anything else has no fields to show.
#[derive(Default)]
struct Fields {
    collected: Collected,
    key: Option<String>,
}

impl Fields {
    fn push(
        &mut self,
        name: Cow<'static, str>,
        value: &(impl Serialize + ?Sized),
    ) -> Result<(), Error> {
        let start = self.collected.text.len();
        if shown(&mut self.collected.text, &name, value)? {
            let end = self.collected.text.len();
            self.collected.args.push((name, start..end));
        }
        Ok(())
    }
}

macro_rules! nothing_to_show {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Collected, Error> {
            Ok(Collected::default())
        })*
    };
}

impl ser::Serializer for Fields {
    type Ok = Collected;
    type Error = Error;
    type SerializeSeq = Impossible<Collected, Error>;
    type SerializeTuple = Impossible<Collected, Error>;
    type SerializeTupleStruct = Impossible<Collected, Error>;
    type SerializeTupleVariant = Impossible<Collected, Error>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<Collected, Error>;

    nothing_to_show!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Collected, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Collected, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Collected, Error> {
        Ok(Collected::default())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Error("not an operation".into()))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Error("not an operation".into()))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Error("not an operation".into()))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error("not an operation".into()))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error("not an operation".into()))
    }
}

impl ser::SerializeStruct for Fields {
    type Ok = Collected;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.push(Cow::Borrowed(name), value)
    }

    fn end(self) -> Result<Collected, Error> {
        Ok(self.collected)
    }
}

impl ser::SerializeMap for Fields {
    type Ok = Collected;
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // Names are strings, as in JSON: written as they are, or through a `Value`.
        let mut name = String::new();
        let plain = Plain {
            out: &mut name,
            name: None,
        };
        if key.serialize(plain).is_err() {
            name = match serde_json::to_value(key).map_err(|e| Error(e.to_string()))? {
                serde_json::Value::String(k) => k,
                other => other.to_string(),
            };
        }
        self.key = Some(name);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a value without a name".into()))?;
        self.push(Cow::Owned(key), value)
    }

    fn end(self) -> Result<Collected, Error> {
        Ok(self.collected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the summary was before this serializer: from a whole `Value`.
    fn through_value(step: &Step) -> String {
        let who = match (&step.process, &step.thread) {
            (Some(p), Some(t)) => format!("{p}/{t}: "),
            (Some(p), None) => format!("{p}: "),
            _ => String::new(),
        };
        let v = serde_json::to_value(&step.op).unwrap_or_default();
        let mut args = Vec::new();
        for (k, val) in v.as_object().into_iter().flatten() {
            if k == "do" || k == "steps" {
                continue;
            }
            args.push(match val {
                serde_json::Value::String(s) => {
                    let short: String = s.chars().take(40).collect();
                    if s.chars().count() > 40 {
                        format!("{k}={short:?}…")
                    } else {
                        format!("{k}={short:?}")
                    }
                }
                other => format!("{k}={other}"),
            });
        }
        let named = step
            .name
            .as_deref()
            .map(|n| format!(" -> {n}"))
            .unwrap_or_default();
        format!("{who}{} {}{named}", step.op.name(), args.join(" "))
            .trim_end()
            .to_string()
    }

    #[test]
    fn every_step_of_the_corpus_is_summarized_as_through_a_value() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
        let mut seen = 0;
        let mut ops = std::collections::BTreeSet::new();
        let files = crate::case::discover(&[corpus]).expect("the corpus");
        for file in files {
            let Ok(case) = crate::case::load_file(&file, 4096) else {
                continue;
            };
            let steps = case.case.steps.iter().flat_map(|s| match &s.op {
                crate::case::model::Op::Together { steps } => {
                    std::iter::once(s).chain(steps.iter()).collect::<Vec<_>>()
                }
                _ => vec![s],
            });
            for step in steps {
                assert_eq!(summary(step), through_value(step), "{}", case.id);
                ops.insert(step.op.name());
                seen += 1;
            }
        }
        // The corpus has thousands of steps of dozens of operations.
        assert!(seen > 1000 && ops.len() > 40, "{seen} steps, {ops:?}");
    }
}
