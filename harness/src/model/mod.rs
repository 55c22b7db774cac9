//! The reference model: what each step of a case must observe, computed
//! from the case alone and the target's capabilities, without running it.
//! `model-check` compares it with the corpus; `explore` judges random cases by it.
//!
//! `allowed` is the set of outcomes a step may observe; `state` what the
//! model knows between steps; `ops` and `remap` what each operation does;
//! `fault` loads, stores and their signals; `durability` what survives a
//! power cut; `fs_table` where filesystems may legitimately differ.

pub mod allowed;
pub mod durability;
pub mod fault;
pub mod fs_table;
pub mod ops;
pub mod remap;
pub mod state;
#[cfg(test)]
mod tests;

pub use allowed::{Allowed, PossibleBytes};

use crate::case::model::Op;
use crate::case::Case;
use crate::target::Environment;

/// What the model allows one step to observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPrediction {
    /// The step's number as reports write it ("3", "4.2").
    pub number: String,
    pub allowed: Allowed,
}

/// What the model allows every step of a case to observe, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub steps: Vec<StepPrediction>,
}

/// A step the model does not know how to predict, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmodeled {
    pub step: String,
    pub why: String,
}

/// What every step of the case may observe in `env`.
pub fn predict(case: &Case, env: &Environment) -> Result<Prediction, Unmodeled> {
    let (steps, stop) = predict_prefix(case, env);
    match stop {
        Some(u) => Err(u),
        None => Ok(Prediction { steps }),
    }
}

/// The predictions of the steps up to the first the model cannot
/// predict, and that step with the reason (None when all are predicted).
pub fn predict_prefix(case: &Case, env: &Environment) -> (Vec<StepPrediction>, Option<Unmodeled>) {
    let mut out = Vec::new();
    let mut w = match start(case, env) {
        Ok(w) => w,
        Err(why) => {
            return (
                out,
                Some(Unmodeled {
                    step: "files".to_string(),
                    why,
                }),
            )
        }
    };
    for (i, step) in case.steps.iter().enumerate() {
        let number = (i + 1).to_string();
        let result = match &step.op {
            Op::Together { steps } => together(&mut w, env, &number, steps),
            _ => ops::perform(&mut w, env, step)
                .map(|a| {
                    vec![StepPrediction {
                        number: number.clone(),
                        allowed: a,
                    }]
                })
                .map_err(|why| (number.clone(), why)),
        };
        match result {
            Ok(v) => out.extend(v),
            Err((step, why)) => return (out, Some(Unmodeled { step, why })),
        }
    }
    (out, None)
}

/// The model's state before the first step: the case's files.
fn start(case: &Case, env: &Environment) -> Result<state::World, String> {
    let ps = env.page_size;
    let mut w = state::World {
        ps,
        track_durability: case.steps.iter().any(|s| matches!(s.op, Op::Crash)),
        arch_x86: env.arch == "x86_64",
        // Unmeasured: both outcomes allowed rather than a guess.
        eof_tail_zeroed_by_writeback: env
            .capabilities
            .get(&crate::case::model::Probe::Writeback)
            .is_none_or(|m| m.present),
        ..Default::default()
    };
    if env.fs_type == "hugetlbfs" {
        return Err("hugetlbfs is not modelled".to_string());
    }
    for (name, f) in &case.files {
        let size = f.size.as_ref().map(|s| s.resolve_len(ps)).transpose()?;
        let content = if f.data.is_empty() {
            Vec::new()
        } else {
            f.data.resolve(ps, size)?.materialize()?
        };
        let mut inode = state::Inode {
            on_target: true,
            ..Default::default()
        };
        inode.write(ps, 0, &content);
        inode.size = content.len() as u64;
        if let Some(s) = size {
            inode.set_size(ps, s);
        }
        let id = w.new_inode(inode);
        w.dir.insert(name.clone(), id);
    }
    Ok(w)
}

/// Steps that run at the same time. The model runs them in the listed
/// order, which is exact when none of them writes memory another reads or
/// writes, or when they are all atomic increments (which commute).
fn together(
    w: &mut state::World,
    env: &Environment,
    number: &str,
    steps: &[crate::case::model::Step],
) -> Result<Vec<StepPrediction>, (String, String)> {
    // Its races are judged between processes; two threads of one process
    // at once (an munmap under a fault, say) the model does not order.
    let threaded = |o: &crate::case::model::Step| {
        o.thread
            .as_deref()
            .is_some_and(|t| t != crate::case::validate::MAIN_THREAD)
    };
    for (j, s) in steps.iter().enumerate() {
        let p = &s.process;
        if steps[..j]
            .iter()
            .any(|o| &o.process == p && (threaded(o) || threaded(s)))
        {
            return Err((
                format!("{number}.{}", j + 1),
                "threads of one process at once in `together` are not modelled".to_string(),
            ));
        }
    }
    let mut touched: Vec<(usize, Footprint)> = Vec::new();
    let mut out = Vec::new();
    for (j, s) in steps.iter().enumerate() {
        let n = format!("{number}.{}", j + 1);
        touched.push((j, footprint(w, s)));
        let a = ops::perform(w, env, s).map_err(|why| (n.clone(), why))?;
        out.push(StepPrediction {
            number: n,
            allowed: a,
        });
    }
    // Increments of one integer that raced: (object, offset, width) -> counts.
    let mut races: std::collections::BTreeMap<(usize, u64, u64), Vec<(usize, u64)>> =
        Default::default();
    for (a, fa) in &touched {
        for (b, fb) in &touched {
            // Atomic increments of one integer commute, unless one of them
            // makes a private copy of a page the other changes: the copy
            // takes the file page as it is at that instant.
            if a >= b
                || !(fa.writes || fb.writes)
                || (fa.atomic && fb.atomic && !fa.copies && !fb.copies)
            {
                continue;
            }
            let overlap = fa
                .cells
                .iter()
                .any(|(c, lo, hi)| fb.cells.iter().any(|(d, l, h)| c == d && lo < h && l < hi));
            if !overlap {
                continue;
            }
            match (&fa.increment, &fb.increment) {
                (Some((la, ca)), Some((lb, cb))) if la == lb => {
                    let e = races.entry(*la).or_default();
                    for (step, count) in [(*a, *ca), (*b, *cb)] {
                        if !e.iter().any(|(s, _)| *s == step) {
                            e.push((step, count));
                        }
                    }
                }
                _ => {
                    return Err((
                        format!("{number}.{}", b + 1),
                        "steps that run at the same time touch the same memory: the outcome depends on their interleaving".to_string(),
                    ))
                }
            }
        }
    }
    for ((inode, at, width), counts) in races {
        let racing: Vec<u64> = counts.iter().map(|(_, c)| *c).filter(|c| *c > 0).collect();
        let total: u64 = racing.iter().sum();
        // The steps ran in order above: the value now is the start plus every count.
        let bytes: Vec<u8> = (at..at + width)
            .map(|o| w.inodes[inode].byte(w.ps, o))
            .collect();
        let mut raw = [0u8; 8];
        raw[..width as usize].copy_from_slice(&bytes);
        let now = u64::from_ne_bytes(raw);
        let start = now.wrapping_sub(total);
        let max = if width == 4 {
            u32::MAX as u64
        } else {
            u64::MAX
        };
        if start > now || now > max || w.inodes[inode].alt.range(at..at + width).next().is_some() {
            return Err((
                number.to_string(),
                "racing increments of an integer that wraps or is already uncertain".to_string(),
            ));
        }
        if racing.len() < 2 {
            continue;
        }
        // Plain increments lose updates: the last store may write any value
        // from the start + 1 (+ 2 when every process increments at least
        // twice) up to the start plus every increment.
        let least = if racing.iter().all(|c| *c >= 2) { 2 } else { 1 };
        let ps = w.ps;
        w.inodes[inode].set_counter(
            ps,
            state::Counter {
                at,
                width,
                lo: start + least,
                hi: now,
            },
        );
    }
    Ok(out)
}

/// The memory a step inside `together` touches (each page with the bytes
/// in it), whether it writes, and for an increment the integer it adds to
/// (object, offset, width, when it lies in one page of an object) and its count.
struct Footprint {
    cells: Vec<(ops::Cell, usize, usize)>,
    writes: bool,
    atomic: bool,
    /// A write into a private page that still follows the file: its first
    /// store copies the page, taking whatever the file page holds then.
    copies: bool,
    increment: Option<((usize, u64, u64), u64)>,
}

fn footprint(w: &mut state::World, s: &crate::case::model::Step) -> Footprint {
    let mut f = Footprint {
        cells: Vec::new(),
        writes: true,
        atomic: false,
        copies: false,
        increment: None,
    };
    let (map, at, len) = match &s.op {
        Op::Load { map, at, len } => {
            f.writes = false;
            (map, at, len.resolve_len(w.ps).unwrap_or(0))
        }
        Op::Store { map, at, data } => (
            map,
            at,
            data.resolve(w.ps, None).map(|b| b.len()).unwrap_or(0),
        ),
        Op::Increment {
            map,
            at,
            width,
            atomic,
            ..
        } => {
            f.atomic = *atomic;
            (map, at, *width as u64)
        }
        _ => return f,
    };
    let Some(p) = s.process.as_ref() else {
        return f;
    };
    let Some(m) = w.procs.get(p).and_then(|pr| pr.maps.get(map)).copied() else {
        return f;
    };
    let start = m.at + at.resolve_offset(w.ps).unwrap_or(0);
    let ps = w.ps as i64;
    let end = start + len.max(1) as i64;
    for pg in start.div_euclid(ps)..=(end - 1).div_euclid(ps) {
        let lo = (start - pg * ps).max(0) as usize;
        let hi = (end - pg * ps).min(ps) as usize;
        if let Some(c) = ops::memory_of(w, p, m.region, pg) {
            f.cells.push((c, lo, hi));
        }
        if f.writes {
            f.copies |= matches!(
                w.procs[p].pages.get(&(m.region, pg)).map(|page| &page.back),
                Some(state::Back::Object {
                    shared: false,
                    copy: None,
                    ..
                })
            );
        }
    }
    if let Op::Increment { count, .. } = &s.op {
        f.increment = ops::object_at(w, p, m.region, start, len)
            .map(|(inode, off)| ((inode, off, len), *count));
    }
    f
}

/// The case with every step's `expect` replaced by the model's (`observe: true` where several outcomes are
/// allowed), variants removed: what `explore` runs and what a shrunk finding is saved as.
pub fn annotate(case: &Case, env: &Environment) -> Result<Case, Unmodeled> {
    let prediction = predict(case, env)?;
    let mut out = case.clone();
    let mut it = prediction.steps.into_iter();
    for step in out.steps.iter_mut() {
        let inner: Vec<&mut crate::case::model::Step> = match &mut step.op {
            Op::Together { steps } => steps.iter_mut().collect(),
            _ => vec![step],
        };
        for s in inner {
            let Some(p) = it.next() else {
                return Err(Unmodeled {
                    step: String::new(),
                    why: "the prediction has fewer steps than the case".to_string(),
                });
            };
            s.variants.clear();
            // A short read (past the end of file) returns fewer bytes than
            // `len`, which an expectation cannot state: the step observes.
            let short = match (&s.op, &p.allowed) {
                (Op::Pread { len, .. }, Allowed::Bytes(b))
                | (Op::CheckFile { len: Some(len), .. }, Allowed::Bytes(b)) => {
                    len.resolve_len(env.page_size).ok() != Some(b.len() as u64)
                }
                _ => false,
            };
            match p.allowed.as_expect().filter(|_| !short) {
                Some(e) => {
                    s.expect = (e != crate::case::model::Expect::default()).then_some(e);
                    s.observe = false;
                }
                None => {
                    s.expect = None;
                    s.observe = true;
                }
            }
        }
    }
    Ok(out)
}
