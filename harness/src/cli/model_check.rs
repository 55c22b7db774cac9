//! `mmapconf model-check`: the reference model against the corpus. For every
//! case whose requirements the target meets, each step's expectation (after
//! variants) is compared with what the model allows there: agree, disagree
//! (a model bug or a case bug), or unmodeled. No case is run; the target is
//! made and measured as `run` does, since the model reads its capabilities.

use super::{handle_interrupts, loaded, targets_of};
use crate::case::expect::applied;
use crate::case::LoadedCase;
use crate::model::{self, Allowed};
use crate::target::fs::OwnedFs;
use crate::target::{probe, Environment, ScratchRoot};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub struct ModelCheckArgs {
    pub paths: Vec<PathBuf>,
    pub dir: Option<PathBuf>,
    pub filter: Option<String>,
    pub verbose: bool,
    pub fs: Vec<String>,
    pub target: Vec<String>,
    pub targets_file: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// A report of a run: judge its observations instead of the cases' expectations.
    pub observed: Option<PathBuf>,
}

/// What became of one step.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Agree,
    Disagree,
    Unmodeled,
    /// The step only observes: nothing to compare.
    Observed,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepCheck {
    pub number: String,
    pub verdict: Verdict,
    /// The case's expectation, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<serde_json::Value>,
    /// What the model allows, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
    /// Why the model cannot say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseCheck {
    pub id: String,
    /// agree, disagree, unmodeled; or skip (requirements unmet).
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub steps: Vec<StepCheck>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub agree: usize,
    pub disagree: usize,
    pub unmodeled: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub fs_type: String,
    pub cases: Counts,
    pub steps: Counts,
    pub results: Vec<CaseCheck>,
}

/// Every step of a case compared with the model in `env`.
pub fn check_case(case: &LoadedCase, env: &Environment) -> CaseCheck {
    if let Some(why) = probe::unmet(&case.case, env) {
        return CaseCheck {
            id: case.id.clone(),
            verdict: "skip".to_string(),
            skipped: Some(why),
            steps: Vec::new(),
        };
    }
    let (predicted, stop) = model::predict_prefix(&case.case, env);
    let mut steps = Vec::new();
    for (number, step) in numbered(&case.case.steps) {
        let a = applied(step, env);
        let expect = a
            .expect
            .as_ref()
            .map(|e| serde_json::to_value(e).unwrap_or_default());
        let prediction = predicted.iter().find(|p| p.number == number);
        let (verdict, allowed, why) = match (prediction, &a.expect) {
            (Some(p), None) => (Verdict::Observed, Some(p.allowed.to_string()), None),
            (Some(p), Some(e)) => {
                let v = if p.allowed.admits_expect(e, env.page_size) {
                    Verdict::Agree
                } else {
                    Verdict::Disagree
                };
                (v, Some(p.allowed.to_string()), None)
            }
            (None, _) => {
                let why = match &stop {
                    Some(s) if s.step == number => s.why.clone(),
                    Some(s) => format!("after step {}, which the model cannot predict", s.step),
                    None => "no prediction".to_string(),
                };
                (Verdict::Unmodeled, None, Some(why))
            }
        };
        steps.push(StepCheck {
            number,
            verdict,
            expect,
            allowed,
            why,
        });
    }
    let verdict = if steps.iter().any(|s| s.verdict == Verdict::Disagree) {
        "disagree"
    } else if steps.iter().any(|s| s.verdict == Verdict::Unmodeled) {
        "unmodeled"
    } else {
        "agree"
    };
    CaseCheck {
        id: case.id.clone(),
        verdict: verdict.to_string(),
        skipped: None,
        steps,
    }
}

fn numbered(steps: &[crate::case::model::Step]) -> Vec<(String, &crate::case::model::Step)> {
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if let crate::case::model::Op::Together { steps: inner } = &s.op {
            for (j, t) in inner.iter().enumerate() {
                out.push((format!("{}.{}", i + 1, j + 1), t));
            }
        } else {
            out.push(((i + 1).to_string(), s));
        }
    }
    out
}

/// Checks every case against the model in `env`, printing disagreements.
pub fn check_all(
    cases: &[LoadedCase],
    env: &Environment,
    label: &str,
    verbose: bool,
) -> TargetCheck {
    let mut out = TargetCheck {
        target: label.to_string(),
        fs_type: env.fs_type.clone(),
        cases: Counts::default(),
        steps: Counts::default(),
        results: Vec::new(),
    };
    for case in cases {
        let c = check_case(case, env);
        match c.verdict.as_str() {
            "agree" => out.cases.agree += 1,
            "disagree" => out.cases.disagree += 1,
            "unmodeled" => out.cases.unmodeled += 1,
            _ => out.cases.skipped += 1,
        }
        for s in &c.steps {
            match s.verdict {
                Verdict::Agree => out.steps.agree += 1,
                Verdict::Disagree => {
                    out.steps.disagree += 1;
                    println!(
                        "{label}: DISAGREE {} step {}: the case expects {}, the model allows {}",
                        c.id,
                        s.number,
                        s.expect.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                        s.allowed.as_deref().unwrap_or("")
                    );
                }
                Verdict::Unmodeled => out.steps.unmodeled += 1,
                Verdict::Observed => {}
            }
            let first = s
                .why
                .as_deref()
                .is_some_and(|w| !w.starts_with("after step"));
            if verbose && s.verdict == Verdict::Unmodeled && first {
                println!(
                    "{label}: UNMODELED {} step {}: {}",
                    c.id,
                    s.number,
                    s.why.as_deref().unwrap_or("")
                );
            }
        }
        out.results.push(c);
    }
    println!(
        "{label}: {} agree, {} disagree, {} unmodeled ({} skipped) of {} cases; steps: {} agree, {} disagree, {} unmodeled",
        out.cases.agree,
        out.cases.disagree,
        out.cases.unmodeled,
        out.cases.skipped,
        cases.len(),
        out.steps.agree,
        out.steps.disagree,
        out.steps.unmodeled
    );
    out
}

/// The environment of a run on `base` (the target's mount, or a directory),
/// measured in a scratch root made and removed here.
fn environment(base: &Path, owned: Option<&OwnedFs>) -> Result<Environment, String> {
    if let Some((path, _)) = owned.and_then(|fs| fs.premade()) {
        return Ok(Environment::of_run(&path, owned));
    }
    let lower = owned.and_then(|fs| fs.lower_dir.clone());
    let root = ScratchRoot::create_layered(base, lower.as_deref()).map_err(|e| {
        format!(
            "cannot make a scratch directory under {}: {e}",
            base.display()
        )
    })?;
    let env = Environment::of_run(&root.path, owned);
    drop(root);
    Ok(env)
}

pub fn model_check(args: ModelCheckArgs) -> ExitCode {
    handle_interrupts();
    let run = &args;
    let Some((mut cases, problems)) = loaded(&run.paths) else {
        return ExitCode::from(2);
    };
    for p in &problems {
        eprintln!("{p}");
    }
    if let Some(f) = &run.filter {
        cases.retain(|c| c.id.contains(f.as_str()));
    }
    if let Some(report) = &args.observed {
        return judge_report(&cases, report);
    }
    let targets = match targets_of(&run.fs, &run.target, run.targets_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mmapconf: {e}");
            return ExitCode::from(2);
        }
    };
    let base = run.dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut checks = Vec::new();
    let mut failed = false;
    if targets.is_empty() {
        match environment(&base, None) {
            Ok(env) => {
                let label = env.fs_type.clone();
                checks.push(check_all(&cases, &env, &label, run.verbose));
            }
            Err(e) => {
                eprintln!("mmapconf: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for t in &targets {
        let made = match OwnedFs::create_for(t, &base, &cases) {
            Ok(fs) => fs,
            Err(why) => {
                eprintln!("mmapconf: target {}: skipped: {why}", t.name);
                failed = true;
                continue;
            }
        };
        let env = environment(&made.mount_point.clone(), Some(&made));
        drop(made);
        match env {
            Ok(env) => checks.push(check_all(&cases, &env, &t.name, run.verbose)),
            Err(e) => {
                eprintln!("mmapconf: target {}: {e}", t.name);
                failed = true;
            }
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&checks).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("mmapconf: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if checks.iter().any(|c| c.cases.disagree > 0) || !problems.is_empty() {
        ExitCode::from(1)
    } else if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Every observation of a run's report against what the model allows in
/// the report's environment: a model that admits less than a kernel does
/// (on a step that passed) is wrong, or the kernel is.
fn judge_report(cases: &[LoadedCase], path: &Path) -> ExitCode {
    let report: crate::report::Report = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mmapconf: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let env = &report.environment;
    let (mut admitted, mut refused, mut unmodeled) = (0, 0, 0);
    for ran in &report.cases {
        let Some(case) = cases.iter().find(|c| c.id == ran.id) else {
            continue;
        };
        let (predicted, _) = model::predict_prefix(&case.case, env);
        for step in &ran.steps {
            let Some(obs) = &step.observed else { continue };
            match predicted.iter().find(|p| p.number == step.index) {
                None => unmodeled += 1,
                Some(p) if p.allowed.admits(obs, env.page_size) => admitted += 1,
                Some(p) => {
                    refused += 1;
                    println!(
                        "NOT ADMITTED {} step {} ({:?}): observed {}, the model allows {}",
                        ran.id,
                        step.index,
                        step.status,
                        serde_json::to_string(obs).unwrap_or_default(),
                        p.allowed
                    );
                }
            }
        }
    }
    println!(
        "{}: {admitted} observations admitted, {refused} not admitted, {unmodeled} unmodeled",
        env.fs_type
    );
    if refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowed::Success => write!(f, "success"),
            Allowed::Bytes(b) => {
                let shown: String = b
                    .first
                    .iter()
                    .take(32)
                    .map(|c| {
                        if c.is_ascii_graphic() || *c == b' ' {
                            (*c as char).to_string()
                        } else {
                            format!("\\x{c:02x}")
                        }
                    })
                    .collect();
                write!(f, "{} bytes \"{shown}\"", b.len())?;
                if b.len() > 32 {
                    write!(f, "…")?;
                }
                if !b.also.is_empty() {
                    write!(f, " ({} of them may also hold other values)", b.also.len())?;
                }
                Ok(())
            }
            Allowed::Value { lo, hi } if lo == hi => write!(f, "the value {lo}"),
            Allowed::Value { lo, hi } => write!(f, "a value in [{lo}, {hi}]"),
            Allowed::Errno(e) => write!(f, "failure with {e}"),
            Allowed::Signal { signal, si_code } => write!(f, "{signal} ({si_code})"),
            Allowed::Exit(crate::exec::protocol::ExitStatus::Exited(c)) => {
                write!(f, "exit status {c}")
            }
            Allowed::Exit(crate::exec::protocol::ExitStatus::Killed(s)) => {
                write!(f, "killed by {s}")
            }
            Allowed::Stat { size } => write!(f, "st_size {size}"),
            Allowed::OneOf(v) => {
                let parts: Vec<String> = v.iter().map(|a| a.to_string()).collect();
                write!(f, "one of: {}", parts.join("; "))
            }
        }
    }
}
