//! Mutation check: every expectation must be able to fail.
//!
//! For each step of a case, the expectation that applies here is rewritten
//! to a wrong one (other bytes, another errno, a signal instead of success,
//! no signal instead of one ...), one rewrite per mutant. A mutant that
//! still passes is a survivor: its expectation could not fail, or the
//! harness did not check it. Steps that only `observe` are not mutated;
//! they are counted so a report can say how many there are.

use crate::case::expect::applied;
use crate::case::model::{Case, Expect, Op, Since, Size, Step};
use crate::target::Environment;

/// One wrong variant of a case.
#[derive(Debug, Clone)]
pub struct Mutant {
    /// Step position ("3" or "3.2" inside `together`).
    pub step: String,
    /// What was changed, readable ("errno EINVAL -> EPERM").
    pub change: String,
    pub case: Case,
}

/// All mutants of a case, for the environment it will run in; and the number
/// of steps that only observe (which no mutant can touch).
pub fn mutants(case: &Case, env: &Environment) -> (Vec<Mutant>, usize) {
    let mut out = Vec::new();
    let mut observing = 0;
    for (i, step) in case.steps.iter().enumerate() {
        if let Op::Together { steps } = &step.op {
            for (j, inner) in steps.iter().enumerate() {
                let at = format!("{}.{}", i + 1, j + 1);
                for (change, expect) in step_mutations(inner, env, &mut observing) {
                    let mut m = case.clone();
                    if let Op::Together { steps } = &mut m.steps[i].op {
                        set_expect(&mut steps[j], expect);
                    }
                    out.push(Mutant {
                        step: at.clone(),
                        change,
                        case: m,
                    });
                }
            }
            continue;
        }
        for (change, expect) in step_mutations(step, env, &mut observing) {
            let mut m = case.clone();
            set_expect(&mut m.steps[i], expect);
            out.push(Mutant {
                step: (i + 1).to_string(),
                change,
                case: m,
            });
        }
    }
    (out, observing)
}

fn set_expect(step: &mut Step, expect: Expect) {
    step.expect = Some(expect);
    step.variants.clear();
    step.observe = false;
}

fn other_errno(e: &str) -> &'static str {
    if e == "EINVAL" {
        "EPERM"
    } else {
        "EINVAL"
    }
}

fn other_signal(s: &str) -> &'static str {
    if s == "SIGBUS" {
        "SIGSEGV"
    } else {
        "SIGBUS"
    }
}

fn other_si_code(signal: &str, code: &str) -> &'static str {
    match (signal, code) {
        ("SIGBUS", "BUS_ADRERR") => "BUS_OBJERR",
        ("SIGBUS", _) => "BUS_ADRERR",
        ("SIGSEGV", "SEGV_MAPERR") => "SEGV_ACCERR",
        _ => "SEGV_MAPERR",
    }
}

fn flip_first(bytes: &mut [u8]) {
    if let Some(b) = bytes.first_mut() {
        *b ^= 0x01;
    }
}

/// The wrong expectations for one step, each with a description.
fn step_mutations(step: &Step, env: &Environment, observing: &mut usize) -> Vec<(String, Expect)> {
    let Some(base) = applied(step, env).expect else {
        *observing += 1;
        return Vec::new();
    };
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut Expect)| {
        let mut e = base.clone();
        f(&mut e);
        e
    };
    let memory_access = matches!(
        step.op,
        Op::Load { .. } | Op::Store { .. } | Op::Increment { .. }
    );
    // The outcome: success, an errno, or a signal.
    match (&base.errno, &base.signal) {
        (Some(errno), _) => {
            let other = other_errno(errno);
            out.push((
                format!("errno {errno} -> {other}"),
                with(&|e| e.errno = Some(other.into())),
            ));
            out.push((
                format!("errno {errno} -> success"),
                with(&|e| e.errno = None),
            ));
        }
        (None, Some(sig)) => {
            let other = other_signal(sig);
            out.push((
                format!("signal {sig} -> {other}"),
                with(&|e| {
                    e.signal = Some(other.into());
                    e.si_code = None;
                }),
            ));
            out.push((
                format!("signal {sig} -> no signal"),
                with(&|e| {
                    e.signal = None;
                    e.si_code = None;
                }),
            ));
            if let Some(code) = &base.si_code {
                let oc = other_si_code(sig, code);
                out.push((
                    format!("si_code {code} -> {oc}"),
                    with(&|e| e.si_code = Some(oc.into())),
                ));
            }
        }
        (None, None) if memory_access => {
            out.push((
                "success -> SIGSEGV".into(),
                with(&|e| e.signal = Some("SIGSEGV".into())),
            ));
        }
        (None, None) if !matches!(step.op, Op::Wait { .. }) => {
            out.push((
                "success -> EPERM".into(),
                with(&|e| e.errno = Some("EPERM".into())),
            ));
        }
        _ => {}
    }
    let number = |s: &Size| s.resolve_number(env.page_size).ok();
    // Bytes.
    if let Some(t) = &base.text {
        let mut b = t.clone().into_bytes();
        flip_first(&mut b);
        let hex = crate::case::values::to_hex(&b);
        let shown = if b.is_empty() {
            "(empty) -> one byte".to_string()
        } else {
            "first byte of text flipped".to_string()
        };
        out.push((
            shown,
            with(&|e| {
                e.text = None;
                e.hex = Some(if hex.is_empty() {
                    "00".into()
                } else {
                    hex.clone()
                });
            }),
        ));
    }
    if let Some(h) = &base.hex {
        if let Ok(mut b) = crate::case::values::parse_hex(h) {
            flip_first(&mut b);
            let hex = crate::case::values::to_hex(&b);
            out.push((
                "first byte of hex flipped".into(),
                with(&|e| {
                    e.hex = Some(if hex.is_empty() {
                        "00".into()
                    } else {
                        hex.clone()
                    })
                }),
            ));
        }
    }
    if let Some(f) = base.fill {
        let g = f.wrapping_add(1);
        out.push((format!("fill {f} -> {g}"), with(&|e| e.fill = Some(g))));
    }
    if let Some(p) = base.pattern {
        out.push((
            format!("pattern {p} -> {}", p + 1),
            with(&|e| e.pattern = Some(p + 1)),
        ));
        // The phase: the same pattern read one byte further on.
        let from = base.from.as_ref().and_then(number).unwrap_or(0);
        out.push((
            format!("pattern from {from} -> {}", from + 1),
            with(&|e| e.from = Some(Size::Bytes(from + 1))),
        ));
    }
    // Numbers.
    if let Some(v) = base.value.as_ref().and_then(number) {
        let w = v.wrapping_add(1);
        out.push((
            format!("value {v} -> {w}"),
            with(&|e| e.value = Some(Size::Bytes(w))),
        ));
    }
    let range = base
        .range
        .as_ref()
        .and_then(|[lo, hi]| Some((number(lo)?, number(hi)?)));
    if let Some((lo, hi)) = range {
        if hi < i64::MAX {
            out.push((
                format!("range [{lo}, {hi}] -> above it"),
                with(&|e| e.range = Some([Size::Bytes(hi + 1), Size::Bytes(i64::MAX)])),
            ));
        }
        if lo > i64::MIN {
            out.push((
                format!("range [{lo}, {hi}] -> below it"),
                with(&|e| e.range = Some([Size::Bytes(i64::MIN), Size::Bytes(lo - 1)])),
            ));
        }
    }
    // Where the fault happened.
    for (key, v) in [("fault_at", &base.fault_at), ("done", &base.done)] {
        if let Some(n) = v.as_ref().and_then(number) {
            let w = n.wrapping_add(1);
            let moved = with(&|e| {
                let field = if key == "done" {
                    &mut e.done
                } else {
                    &mut e.fault_at
                };
                *field = Some(Size::Bytes(w));
            });
            out.push((format!("{key} {n} -> {w}"), moved));
        }
    }
    if let Some(name) = &base.same_as {
        out.push((
            format!("same_as {name} -> differs_from"),
            with(&|e| {
                e.same_as = None;
                e.differs_from = Some(name.clone());
            }),
        ));
    }
    if let Some(name) = &base.differs_from {
        out.push((
            format!("differs_from {name} -> same_as"),
            with(&|e| {
                e.differs_from = None;
                e.same_as = Some(name.clone());
            }),
        ));
    }
    // Process ends.
    if let Some(c) = base.exit {
        out.push((
            format!("exit {c} -> {}", c + 1),
            with(&|e| e.exit = Some(c + 1)),
        ));
        out.push((
            format!("exit {c} -> killed by SIGKILL"),
            with(&|e| {
                e.exit = None;
                e.killed_by = Some("SIGKILL".into());
            }),
        ));
    }
    if let Some(k) = &base.killed_by {
        let other = if k == "SIGKILL" { "SIGTERM" } else { "SIGKILL" };
        out.push((
            format!("killed_by {k} -> {other}"),
            with(&|e| e.killed_by = Some(other.into())),
        ));
    }
    // fstat fields.
    if let Some(st) = &base.stat {
        if let Some(size) = &st.size {
            if let Ok(v) = size.resolve(env.page_size) {
                let bumped = Size::Bytes((v + 1) as i64);
                out.push((
                    format!("st_size {v} -> {}", v + 1),
                    with(&|e| {
                        if let Some(s) = e.stat.as_mut() {
                            s.size = Some(bumped.clone());
                        }
                    }),
                ));
            }
        }
        if let Some([lo, hi]) = st.blocks {
            out.push((
                format!("st_blocks [{lo}, {hi}] -> above it"),
                with(&|e| {
                    if let Some(s) = e.stat.as_mut() {
                        s.blocks = Some([hi.saturating_add(1), i64::MAX]);
                    }
                }),
            ));
        }
        for (field, since) in [("mtime", &st.mtime), ("ctime", &st.ctime)] {
            let Some(since) = since else { continue };
            let flipped = match since {
                Since::ChangedSince(s) => Since::UnchangedSince(s.clone()),
                Since::UnchangedSince(s) => Since::ChangedSince(s.clone()),
            };
            out.push((
                format!("{field} change expectation inverted"),
                with(&|e| {
                    if let Some(s) = e.stat.as_mut() {
                        if field == "mtime" {
                            s.mtime = Some(flipped.clone());
                        } else {
                            s.ctime = Some(flipped.clone());
                        }
                    }
                }),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment::probe(std::path::Path::new("/"))
    }

    fn case(steps: &str) -> Case {
        serde_json::from_str(&format!(r#"{{"title":"t","refs":["r"],"steps":{steps}}}"#)).unwrap()
    }

    #[test]
    fn each_expectation_gets_wrong_versions() {
        let c = case(
            r#"[
            {"in":"p","do":"mmap","len":"1p","prot":"READ","flags":"PRIVATE|ANONYMOUS","as":"m"},
            {"in":"p","do":"load","map":"m","len":2,"expect":{"text":"ab"}},
            {"in":"p","do":"store","map":"m","text":"x","expect":{"signal":"SIGSEGV","si_code":"SEGV_ACCERR"}},
            {"in":"p","do":"munmap","map":"m","len":0,"expect":{"errno":"EINVAL"}},
            {"in":"p","do":"load","map":"m","len":4,"observe":true}
        ]"#,
        );
        let (ms, observing) = mutants(&c, &env());
        assert_eq!(observing, 1);
        let changes: Vec<(&str, &str)> = ms
            .iter()
            .map(|m| (m.step.as_str(), m.change.as_str()))
            .collect();
        assert!(changes.contains(&("1", "success -> EPERM")), "{changes:?}");
        assert!(
            changes.contains(&("2", "success -> SIGSEGV")),
            "{changes:?}"
        );
        assert!(
            changes.contains(&("2", "first byte of text flipped")),
            "{changes:?}"
        );
        assert!(
            changes.contains(&("3", "signal SIGSEGV -> no signal")),
            "{changes:?}"
        );
        assert!(
            changes.contains(&("3", "si_code SEGV_ACCERR -> SEGV_MAPERR")),
            "{changes:?}"
        );
        assert!(
            changes.contains(&("4", "errno EINVAL -> EPERM")),
            "{changes:?}"
        );
        assert!(
            !changes.iter().any(|(s, _)| *s == "5"),
            "observe steps are not mutated"
        );
        let flipped = ms
            .iter()
            .find(|m| m.change == "first byte of text flipped")
            .unwrap();
        assert_eq!(
            flipped.case.steps[1]
                .expect
                .as_ref()
                .unwrap()
                .hex
                .as_deref(),
            Some("6062")
        );
    }
}
