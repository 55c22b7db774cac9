//! Running generated cases: each is annotated by the model, run by the
//! executor in its own scratch directory (as `run` runs a case, on `jobs`
//! threads), and judged; divergent cases are then shrunk and saved.

use super::gen::{self, Caps};
use super::judge::{judge, Divergence, Verdict};
use super::shrink::{self, Signature};
use crate::case::model::{Case, Probe};
use crate::case::LoadedCase;
use crate::exec::RunOptions;
use crate::model::{self, Unmodeled};
use crate::runner;
use crate::target::{Environment, ScratchRoot};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to explore.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    /// Stop after this many cases ...
    pub cases: Option<u64>,
    /// ... or once this much time has passed (no new case starts after it).
    pub time: Option<Duration>,
    pub jobs: usize,
}

/// How one generated case ended.
#[derive(Debug, Clone)]
pub enum Judged {
    Verdict(Verdict),
    /// The model cannot predict a step: counted, not run.
    Unmodeled(Unmodeled),
    /// The model's annotation is not a valid case (a model bug): not run.
    BadAnnotation(String),
}

impl Judged {
    pub fn word(&self) -> &'static str {
        match self {
            Judged::Verdict(v) => v.word(),
            Judged::Unmodeled(_) => "unmodeled",
            Judged::BadAnnotation(_) => "bad-annotation",
        }
    }

    /// Why the case did not simply agree: the model's reason, the bad
    /// annotation, the harness's error, or the divergence's detail.
    pub fn why(&self) -> Option<String> {
        match self {
            Judged::Verdict(Verdict::Agrees) => None,
            Judged::Verdict(Verdict::Diverges(d)) => Some(d.detail.clone()),
            Judged::Verdict(Verdict::Broke(w) | Verdict::Skipped(w)) => Some(w.clone()),
            Judged::Unmodeled(u) => Some(format!("step {}: {}", u.step, u.why)),
            Judged::BadAnnotation(e) => Some(e.clone()),
        }
    }

    pub fn divergence(&self) -> Option<&Divergence> {
        match self {
            Judged::Verdict(Verdict::Diverges(d)) => Some(d),
            _ => None,
        }
    }
}

/// One generated case and its verdict.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub index: u64,
    pub case: Case,
    pub judged: Judged,
}

/// The target's abilities that decide which operations are generated.
pub fn caps(env: &Environment, opts: &RunOptions) -> Caps {
    let has = |p| env.capabilities.get(&p).is_some_and(|m| m.present);
    Caps {
        crash: opts.owned_fs.is_some() && has(Probe::Crash),
    }
}

/// A scratch root for exploring under `base` (on the target's overlay lower layer where it has one).
pub fn scratch_root(base: &Path, opts: &RunOptions) -> std::io::Result<ScratchRoot> {
    let lower = opts.owned_fs.as_ref().and_then(|fs| {
        fs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .lower_dir
            .clone()
    });
    ScratchRoot::create_layered(base, lower.as_deref())
}

/// The environment of the run, measured in its scratch root, as `run` measures it.
pub fn environment(root: &ScratchRoot, opts: &RunOptions) -> Environment {
    match &opts.owned_fs {
        Some(fs) => Environment::of_run(
            &root.path,
            Some(&fs.lock().unwrap_or_else(|e| e.into_inner())),
        ),
        None => Environment::of_run(&root.path, None),
    }
}

/// Where one run of a case happens, and how.
pub struct Bench<'a> {
    pub env: &'a Environment,
    pub root: &'a ScratchRoot,
    pub opts: &'a RunOptions,
    /// Where the time goes, summed over threads.
    pub spent: Spent,
}

/// Microseconds spent generating cases, in the model (predict, annotate and
/// validating the annotation) and running them, over all threads.
#[derive(Debug, Default)]
pub struct Spent {
    pub generate: AtomicU64,
    pub model: AtomicU64,
    pub run: AtomicU64,
}

impl Spent {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// "generate 0.4 ms, model 0.9 ms, run 12.1 ms per case".
    pub fn per_case(&self, cases: usize) -> String {
        let ms = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1000.0 / cases.max(1) as f64;
        format!(
            "generate {:.2} ms, model {:.2} ms, run {:.2} ms per case (thread time)",
            ms(&self.generate),
            ms(&self.model),
            ms(&self.run)
        )
    }
}

impl Bench<'_> {
    /// Annotates, runs and judges one case. `slot` names its scratch directory.
    pub fn try_case(&self, slot: u64, case: &Case) -> Judged {
        let t = Instant::now();
        let prediction = match model::predict(case, self.env) {
            Ok(p) => p,
            Err(u) => return Judged::Unmodeled(u),
        };
        let annotated = match model::annotate(case, self.env) {
            Ok(a) => a,
            Err(u) => return Judged::Unmodeled(u),
        };
        if let Err(e) = gen::validate(&annotated, self.env.page_size) {
            return Judged::BadAnnotation(e);
        }
        Spent::add(&self.spent.model, t);
        let t = Instant::now();
        let loaded = LoadedCase {
            id: format!("explore-{slot}"),
            file: PathBuf::from(format!("explore-{slot}.json")),
            case: annotated,
        };
        let report = runner::run_one(slot as usize, &loaded, self.env, self.root, self.opts);
        Spent::add(&self.spent.run, t);
        Judged::Verdict(judge(&report, &prediction, self.env.page_size))
    }

    /// Generates and judges cases until the count or the time is reached;
    /// `progress` is told of each (from several threads). Results come
    /// back in case order.
    pub fn explore(
        &self,
        s: &Settings,
        progress: &(dyn Fn(&CaseResult) + Sync),
    ) -> Vec<CaseResult> {
        let caps = caps(self.env, self.opts);
        let started = Instant::now();
        let next = AtomicU64::new(0);
        let results = Mutex::new(Vec::new());
        // Cases that act on the whole filesystem (crash) run on one thread
        // after the others, as `run_all` runs them.
        let exclusive = Mutex::new(Vec::new());
        let more = |k: u64| {
            s.cases.is_none_or(|n| k < n)
                && s.time.is_none_or(|t| started.elapsed() < t)
                && !crate::exec::live::interrupted()
        };
        let one = |k: u64, case: Case| {
            let judged = self.try_case(k, &case);
            let r = CaseResult {
                index: k,
                case,
                judged,
            };
            progress(&r);
            results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        };
        std::thread::scope(|scope| {
            for _ in 0..s.jobs.max(1) {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if !more(k) {
                        break;
                    }
                    let t = Instant::now();
                    let case = gen::generate(s.seed, k, caps, self.env.page_size);
                    Spent::add(&self.spent.generate, t);
                    if case.needs_exclusive_fs() {
                        exclusive
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((k, case));
                    } else {
                        one(k, case);
                    }
                });
            }
        });
        for (k, case) in exclusive.into_inner().unwrap_or_else(|e| e.into_inner()) {
            one(k, case);
        }
        let mut out = results.into_inner().unwrap_or_else(|e| e.into_inner());
        out.sort_by_key(|r| r.index);
        out
    }

    /// Shrinks a divergent case (at most `budget` runs) and returns the
    /// smallest case that still diverges the same way, with its divergence.
    pub fn shrink(&self, case: &Case, d: &Divergence, budget: usize) -> (Case, Divergence) {
        let sig: Signature = d.signature();
        let top: usize = d
            .step
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(case.steps.len());
        // Slots far above the case numbers, so directories never collide.
        let slot = AtomicU64::new(1 << 40);
        let mut last = d.clone();
        let mut diverges = |c: &Case| {
            let k = slot.fetch_add(1, Ordering::SeqCst);
            let got = self.try_case(k, c).divergence().cloned()?;
            let s = got.signature();
            if s == sig {
                last = got;
            }
            Some(s)
        };
        let small = shrink::shrink(case, &sig, top, self.env.page_size, budget, &mut diverges);
        // The divergence of the case kept (the last accepted run), re-judged
        // once so its step number and detail are those of `small`.
        let k = slot.fetch_add(1, Ordering::SeqCst);
        let d = self
            .try_case(k, &small)
            .divergence()
            .cloned()
            .unwrap_or(last);
        (small, d)
    }
}

/// A finding as a case file: the model's expectations, a title naming the
/// divergence and a description naming seed, case and target.
pub fn finding(
    small: &Case,
    d: &Divergence,
    seed: u64,
    index: u64,
    env: &Environment,
) -> Result<Case, Unmodeled> {
    let mut c = model::annotate(small, env)?;
    if let Err(e) = gen::validate_as_file(&c, env.page_size) {
        return Err(Unmodeled {
            step: String::new(),
            why: format!("the annotated finding is not a valid case: {e}"),
        });
    }
    let target = target_name(env);
    c.title = format!("explore finding: {} at step {} ({})", d.op, d.step, d.kind);
    c.description = format!(
        "Found by `mmapconf explore --seed {seed}` (case {index}) on {target}, kernel {}, and shrunk. \
         Step {}: {}. The expectations are the reference model's.",
        env.kernel_release, d.step, d.detail
    );
    c.refs = vec![format!("mmapconf explore --seed {seed}")];
    Ok(c)
}

/// The target's name for file names: the `--fs`/`--target` name, else the filesystem type.
pub fn target_name(env: &Environment) -> String {
    env.target.clone().unwrap_or_else(|| env.fs_type.clone())
}

/// Writes a finding as `<target>-seed<N>-<k>.json` in `dir`.
pub fn save(
    dir: &Path,
    case: &Case,
    seed: u64,
    index: u64,
    env: &Environment,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = format!(
        "{}-seed{seed}-{index}.json",
        target_name(env).replace('/', "_")
    );
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(case).map_err(std::io::Error::other)?;
    std::fs::write(&path, text + "\n")?;
    // Beside it, the same case as a C program for a bug report (`repro`),
    // when it can be one (a crash step needs the harness's filesystem).
    let loaded = crate::case::LoadedCase {
        id: format!(
            "explore/{}",
            path.file_stem().unwrap_or_default().to_string_lossy()
        ),
        file: path.clone(),
        case: case.clone(),
    };
    if let Ok(program) = crate::repro::c_program(&loaded, env) {
        std::fs::write(path.with_extension("c"), program)?;
    }
    Ok(path)
}
