//! A step's expectation, as the harness would choose it for the target
//! (`case::expect::applied`), written as a C `struct expect` initializer.

use super::c;
use crate::case::expect::{applied, Applied};
use crate::case::model::{Expect, Op, Since, Size, Step};
use crate::case::values::parse_hex;
use crate::names::{errno_value, si_code_known, signal_value};
use crate::target::Environment;
use std::collections::{BTreeMap, BTreeSet};

/// Names recorded during the case (`as` of load/pread/mincore/pagemap, of
/// fstat), numbered from 1 as the C tables index them.
#[derive(Default)]
pub struct Recorded {
    pub values: BTreeMap<String, usize>,
    pub snapshots: BTreeMap<String, usize>,
}

impl Recorded {
    fn index(table: &mut BTreeMap<String, usize>, name: &str) -> usize {
        let next = table.len() + 1;
        *table.entry(name.to_string()).or_insert(next)
    }
}

/// The initializer, with what applied: the variant's `why` (for a
/// comment) and its `skip_rest`.
pub fn initializer(
    step: &Step,
    env: &Environment,
    rec: &mut Recorded,
    errnos: &mut BTreeSet<String>,
) -> Result<(String, Applied), String> {
    let applied = applied(step, env);
    let mut fields = Vec::new();
    match &applied.expect {
        None => fields.push(".observe = 1".to_string()),
        Some(e) => expect_fields(e, rec, errnos, &mut fields)?,
    }
    // What later steps compare with is recorded whether or not this step is judged.
    if let Some(name) = &step.name {
        match step.op {
            // The operations whose number validation lets `as` record.
            ref op if crate::case::validate::records_value(op) => {
                fields.push(format!(
                    ".record = {}",
                    Recorded::index(&mut rec.values, name)
                ));
            }
            Op::Fstat { .. } => fields.push(format!(
                ".snapshot = {}",
                Recorded::index(&mut rec.snapshots, name)
            )),
            _ => {}
        }
    }
    let init = if fields.is_empty() {
        "{ 0 }".to_string()
    } else {
        format!("{{ {} }}", fields.join(", "))
    };
    Ok((init, applied))
}

fn expect_fields(
    e: &Expect,
    rec: &mut Recorded,
    errnos: &mut BTreeSet<String>,
    out: &mut Vec<String>,
) -> Result<(), String> {
    if let Some(errno) = &e.errno {
        errno_value(errno).ok_or_else(|| format!("unknown errno `{errno}`"))?;
        errnos.insert(errno.clone());
        out.push(format!(".err = {errno}"));
    }
    if let Some(sig) = &e.signal {
        signal_value(sig).ok_or_else(|| format!("unknown signal `{sig}`"))?;
        out.push(format!(".signo = {sig}"));
        if let Some(code) = &e.si_code {
            if !si_code_known(sig, code) {
                return Err(format!("si_code `{code}` is not one of {sig}'s"));
            }
            out.push(format!(".si_code = {code}"));
        }
    }
    if let Some(t) = &e.text {
        out.push(format!(
            ".bytes = {}, .nbytes = {}",
            c::string(t.as_bytes()),
            t.len()
        ));
    }
    if let Some(h) = &e.hex {
        let b = parse_hex(h)?;
        out.push(format!(".bytes = {}, .nbytes = {}", c::string(&b), b.len()));
    }
    if let Some(f) = e.fill {
        out.push(format!(".has_fill = 1, .fill = {f}"));
    }
    if let Some(p) = e.pattern {
        out.push(format!(".has_pattern = 1, .seed = {p}ULL"));
    }
    if let Some(f) = &e.from {
        out.push(format!(".from = {}", number(f)?));
    }
    if let Some(v) = &e.value {
        out.push(format!(".has_value = 1, .value = {}", number(v)?));
    }
    if let Some([lo, hi]) = &e.range {
        out.push(format!(
            ".has_range = 1, .lo = {}, .hi = {}",
            number(lo)?,
            number(hi)?
        ));
    }
    for (field, name) in [("same_as", &e.same_as), ("differs_from", &e.differs_from)] {
        if let Some(name) = name {
            let i = Recorded::index(&mut rec.values, name);
            out.push(format!(".{field} = {i}"));
        }
    }
    if let Some(code) = e.exit {
        out.push(format!(".has_exit = 1, .exit_code = {code}"));
    }
    if let Some(sig) = &e.killed_by {
        signal_value(sig).ok_or_else(|| format!("unknown signal `{sig}`"))?;
        out.push(format!(".killed_by = {sig}"));
    }
    if let Some(st) = &e.stat {
        if let Some(size) = &st.size {
            out.push(format!(".has_size = 1, .st_size = {}", c::size(size)?));
        }
        if let Some([lo, hi]) = st.blocks {
            out.push(format!(
                ".has_blocks = 1, .blocks_lo = {}, .blocks_hi = {}",
                long_long(lo),
                long_long(hi)
            ));
        }
        for (field, since) in [("mtime", &st.mtime), ("ctime", &st.ctime)] {
            let Some(since) = since else { continue };
            let (how, snap) = match since {
                Since::ChangedSince(s) => ("SINCE_CHANGED", s),
                Since::UnchangedSince(s) => ("SINCE_UNCHANGED", s),
            };
            let i = Recorded::index(&mut rec.snapshots, snap);
            out.push(format!(".{field} = {how}, .{field}_snap = {i}"));
        }
    }
    Ok(())
}

/// A long long literal, including the one C cannot write directly.
/// A number of `value`/`range` as C: a literal, or a size expression of the page size.
fn number(s: &Size) -> Result<String, String> {
    match s {
        Size::Bytes(v) => Ok(long_long(*v)),
        Size::Expr(_) => Ok(format!("(long long)({})", super::c::size(s)?)),
    }
}

fn long_long(v: i64) -> String {
    if v == i64::MIN {
        "(-0x7fffffffffffffffLL - 1)".to_string()
    } else {
        format!("{v}LL")
    }
}
