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
    for (a, fa) in &touched {
        for (b, fb) in &touched {
            if a >= b || !(fa.writes || fb.writes) || (fa.atomic && fb.atomic) {
                continue;
            }
            if fa.cells.iter().any(|c| fb.cells.contains(c)) {
                return Err((
                    format!("{number}.{}", b + 1),
                    "steps that run at the same time touch the same memory: the outcome depends on their interleaving".to_string(),
                ));
            }
        }
    }
    Ok(out)
}

/// The memory a step inside `together` touches, whether it writes, and
/// whether it is an atomic increment.
struct Footprint {
    cells: Vec<ops::Cell>,
    writes: bool,
    atomic: bool,
}

fn footprint(w: &mut state::World, s: &crate::case::model::Step) -> Footprint {
    let (map, at, len, writes, atomic) = match &s.op {
        Op::Load { map, at, len } => (map, at, len.resolve_len(w.ps).unwrap_or(0), false, false),
        Op::Store { map, at, data } => (
            map,
            at,
            data.resolve(w.ps, None).map(|b| b.len()).unwrap_or(0),
            true,
            false,
        ),
        Op::Increment {
            map,
            at,
            width,
            atomic,
            ..
        } => (map, at, *width as u64, true, *atomic),
        _ => {
            return Footprint {
                cells: Vec::new(),
                writes: true,
                atomic: false,
            }
        }
    };
    let none = Footprint {
        cells: Vec::new(),
        writes,
        atomic,
    };
    let Some(p) = s.process.as_ref() else {
        return none;
    };
    let Some(m) = w.procs.get(p).and_then(|pr| pr.maps.get(map)).copied() else {
        return none;
    };
    let start = m.at + at.resolve_offset(w.ps).unwrap_or(0);
    let ps = w.ps as i64;
    let cells = (start.div_euclid(ps)..=(start + len.max(1) as i64 - 1).div_euclid(ps))
        .filter_map(|pg| ops::memory_of(w, p, m.region, pg))
        .collect();
    Footprint {
        cells,
        writes,
        atomic,
    }
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
            match p.allowed.as_expect() {
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
