//! Judging a run of a generated case against the model: a step that failed
//! the expectation the model gave it, or an observed step whose observation
//! the model's allowed set rejects, is a divergence.

use crate::case::model::Expect;
use crate::exec::protocol::{Observation, Outcome};
use crate::model::{Allowed, Prediction};
use crate::report::{brief, CaseReport, Status, StepStatus};

/// Where and how a run left the model's prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The step's number ("7", "3.2").
    pub step: String,
    /// Its operation ("store").
    pub op: String,
    /// The kind of mismatch, e.g. "ok≠SIGBUS" or "bytes": what shrinking keeps.
    pub kind: String,
    /// What the model allowed and what was observed, for people.
    pub detail: String,
}

impl Divergence {
    /// What must stay the same while a case is shrunk: the operation and the kind of mismatch.
    pub fn signature(&self) -> (String, String) {
        (self.op.clone(), self.kind.clone())
    }
}

/// The verdict on one run of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every step observed what the model allows.
    Agrees,
    Diverges(Divergence),
    /// The harness could not run a step (its reason): neither agreement nor divergence.
    Broke(String),
    /// Not run here (its reason).
    Skipped(String),
}

impl Verdict {
    /// One word, for the summary and the reproducibility test.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Diverges(_) => "diverges",
            Verdict::Broke(_) => "broke",
            Verdict::Skipped(_) => "skipped",
        }
    }
}

/// The class of an outcome: "ok", an errno name or a signal name.
fn outcome_class(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".to_string(),
        Outcome::Errno { errno } => errno.clone(),
        Outcome::Signal { signal, .. } => signal.clone(),
        Outcome::Error { .. } => "error".to_string(),
    }
}

fn expect_class(e: &Expect) -> String {
    e.errno
        .clone()
        .or_else(|| e.signal.clone())
        .unwrap_or_else(|| "ok".to_string())
}

fn allowed_classes(a: &Allowed) -> Vec<String> {
    let mut v: Vec<String> = a
        .options()
        .iter()
        .map(|o| match o {
            Allowed::Errno(e) => e.clone(),
            Allowed::Signal { signal, .. } => signal.clone(),
            _ => "ok".to_string(),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The kind of a mismatch between wanted outcome classes and an
/// observation: the classes when they differ, else what in the result
/// differed (bytes, value, exit, si_code).
fn kind(wanted: &[String], obs: &Observation, what: &str) -> String {
    let got = outcome_class(&obs.outcome);
    if wanted.contains(&got) {
        what.to_string()
    } else {
        format!("{}≠{got}", wanted.join("|"))
    }
}

/// What in a successful result the expectation judged.
fn content_kind(e: &Expect) -> &'static str {
    if e.exit.is_some() || e.killed_by.is_some() {
        "exit"
    } else if e.value.is_some() || e.range.is_some() {
        "value"
    } else if e.signal.is_some() {
        "si_code"
    } else {
        "bytes"
    }
}

/// Judges the report of an annotated case against the model's prediction of it.
pub fn judge(report: &CaseReport, prediction: &Prediction, page_size: u64) -> Verdict {
    match report.status {
        Status::Skip => {
            return Verdict::Skipped(report.reason.clone().unwrap_or_default());
        }
        Status::Error => return Verdict::Broke(report.reason.clone().unwrap_or_default()),
        Status::Pass | Status::Fail => {}
    }
    for s in &report.steps {
        let Some(obs) = &s.observed else { continue };
        let diverged = match s.status {
            StepStatus::Fail => {
                let e = s.expected.clone().unwrap_or_default();
                Some((
                    kind(&[expect_class(&e)], obs, content_kind(&e)),
                    s.message.clone().unwrap_or_default(),
                ))
            }
            StepStatus::Observed => {
                let Some(p) = prediction.steps.iter().find(|p| p.number == s.index) else {
                    continue;
                };
                (!p.allowed.admits(obs, page_size)).then(|| {
                    (
                        kind(&allowed_classes(&p.allowed), obs, "bytes"),
                        format!("the model allows {:?}", p.allowed),
                    )
                })
            }
            StepStatus::Pass | StepStatus::Error => None,
        };
        if let Some((kind, allowed)) = diverged {
            return Verdict::Diverges(Divergence {
                step: s.index.clone(),
                op: s.op.clone(),
                kind,
                detail: format!("{}: {allowed}; observed {}", s.summary, brief(obs)),
            });
        }
    }
    Verdict::Agrees
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PossibleBytes, StepPrediction};
    use crate::report::StepReport;

    fn step(
        index: &str,
        status: StepStatus,
        expected: Option<Expect>,
        obs: Observation,
    ) -> StepReport {
        StepReport {
            index: index.to_string(),
            process: Some("p0".to_string()),
            op: "load".to_string(),
            summary: "p0 load".to_string(),
            status,
            expected,
            variant: None,
            observed: Some(obs),
            message: None,
            duration_us: 0,
        }
    }

    fn report(status: Status, steps: Vec<StepReport>) -> CaseReport {
        CaseReport {
            id: "explore/0".to_string(),
            title: String::new(),
            status,
            duration_ms: 0,
            reason: None,
            failed_step: None,
            steps,
            leftover: None,
            timed_out: false,
            known: None,
            kernel_log: Vec::new(),
        }
    }

    fn bytes(b: &[u8]) -> Observation {
        Observation {
            bytes: Some(b.to_vec()),
            ..Observation::ok()
        }
    }

    fn sigbus() -> Observation {
        Observation::of(Outcome::Signal {
            signal: "SIGBUS".to_string(),
            si_code: "BUS_ADRERR".to_string(),
            offset: 0,
            done: 0,
            map_offset: 0,
        })
    }

    fn prediction(number: &str, allowed: Allowed) -> Prediction {
        Prediction {
            steps: vec![StepPrediction {
                number: number.to_string(),
                allowed,
            }],
        }
    }

    #[test]
    fn a_failed_step_is_a_divergence_of_its_kind() {
        let none = Prediction { steps: vec![] };
        let want_text = Expect {
            text: Some("ab".to_string()),
            ..Default::default()
        };
        let r = report(
            Status::Fail,
            vec![step(
                "2",
                StepStatus::Fail,
                Some(want_text.clone()),
                bytes(b"ax"),
            )],
        );
        let Verdict::Diverges(d) = judge(&r, &none, 4096) else {
            panic!("no divergence")
        };
        assert_eq!((d.step.as_str(), d.kind.as_str()), ("2", "bytes"));
        let r = report(
            Status::Fail,
            vec![step("3", StepStatus::Fail, Some(want_text), sigbus())],
        );
        let Verdict::Diverges(d) = judge(&r, &none, 4096) else {
            panic!("no divergence")
        };
        assert_eq!(d.signature(), ("load".to_string(), "ok≠SIGBUS".to_string()));
    }

    #[test]
    fn an_observed_step_diverges_only_outside_the_allowed_set() {
        let either = Allowed::one_of(vec![
            Allowed::Bytes(PossibleBytes::exact(b"a".to_vec())),
            Allowed::Bytes(PossibleBytes::exact(b"b".to_vec())),
        ]);
        let p = prediction("4.1", either);
        let ok = report(
            Status::Pass,
            vec![step("4.1", StepStatus::Observed, None, bytes(b"b"))],
        );
        assert_eq!(judge(&ok, &p, 4096), Verdict::Agrees);
        let bad = report(
            Status::Pass,
            vec![step("4.1", StepStatus::Observed, None, bytes(b"c"))],
        );
        assert!(
            matches!(judge(&bad, &p, 4096), Verdict::Diverges(d) if d.step == "4.1" && d.kind == "bytes")
        );
        let fault = report(
            Status::Pass,
            vec![step("4.1", StepStatus::Observed, None, sigbus())],
        );
        assert!(matches!(judge(&fault, &p, 4096), Verdict::Diverges(d) if d.kind == "ok≠SIGBUS"));
    }

    #[test]
    fn harness_errors_and_skips_are_not_divergences() {
        let none = Prediction { steps: vec![] };
        let mut r = report(Status::Error, vec![]);
        r.reason = Some("timeout".to_string());
        assert_eq!(
            judge(&r, &none, 4096),
            Verdict::Broke("timeout".to_string())
        );
        let r = report(Status::Skip, vec![]);
        assert_eq!(judge(&r, &none, 4096).word(), "skipped");
    }
}
