//! The reference model: what each step of a case must observe, computed
//! from the case alone and the target's capabilities, without running it.
//! `model-check` compares it with the corpus; `explore` judges random cases by it.
//!
//! `allowed` is the set of outcomes a step may observe.

pub mod allowed;

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
    let _ = (case, env);
    (
        Vec::new(),
        Some(Unmodeled {
            step: "1".to_string(),
            why: "the model is not written yet".to_string(),
        }),
    )
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
