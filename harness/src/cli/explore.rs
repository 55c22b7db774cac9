//! `mmapconf explore`: random cases judged by the reference model on one
//! or more targets, a summary, and the divergences shrunk and saved.

use super::{handle_interrupts, jobs_or_cpus, reported, run_options, TargetArgs};
use crate::exec::RunOptions;
use crate::explore::gen::step_count;
use crate::explore::run::{self, Bench, CaseResult, Judged, Settings};
use crate::explore::shrink::Signature;
use crate::target::fs::OwnedFs;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ExploreArgs {
    /// Directory to make scratch directories in (default: $TMPDIR).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    targets: TargetArgs,
    /// The seed of the cases (default: from the clock, printed so the run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// How many cases per target (default 1000 when --time is not given).
    #[arg(long)]
    cases: Option<u64>,
    /// Explore for this many seconds per target instead of a number of cases.
    #[arg(long)]
    time: Option<f64>,
    /// Cases run at once (default: the number of CPUs).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Where shrunk findings are saved (default: explore-findings/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write one JSON line per case (number, verdict, divergence, the case) to FILE.
    #[arg(long)]
    log: Option<PathBuf>,
    /// At most this many runs to shrink one divergence (0: do not shrink).
    #[arg(long, default_value_t = 400)]
    shrink_runs: usize,
    /// Time limit per case in seconds, overriding the default.
    #[arg(long)]
    timeout: Option<f64>,
}

pub fn explore(args: ExploreArgs) -> ExitCode {
    handle_interrupts();
    let Some(opts) = reported(run_options(args.timeout)) else {
        return ExitCode::from(2);
    };
    let Some(targets) = reported(args.targets.resolve()) else {
        return ExitCode::from(2);
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    println!("explore: seed {seed} (repeat with --seed {seed})");
    let settings = Settings {
        seed,
        cases: args.cases.or(args.time.is_none().then_some(1000)),
        time: args.time.map(Duration::from_secs_f64),
        jobs: jobs_or_cpus(args.jobs),
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut codes = Vec::new();
    if targets.is_empty() {
        codes.push(explore_on(&args, &settings, &opts, &base));
    }
    for t in &targets {
        match OwnedFs::create_for(t, &base, &[]) {
            Ok(fs) => {
                let mount = fs.mount_point.clone();
                let mut opts = opts.clone();
                opts.owned_fs = Some(std::sync::Arc::new(std::sync::Mutex::new(fs)));
                codes.push(explore_on(&args, &settings, &opts, &mount));
            }
            Err(why) => {
                eprintln!("mmapconf: target {}: cannot be made: {why}", t.name);
                codes.push(ExitCode::from(2));
            }
        }
    }
    codes
        .into_iter()
        .find(|c| *c != ExitCode::SUCCESS)
        .unwrap_or(ExitCode::SUCCESS)
}

/// Explores one target (scratch directories under `base`): 0 when nothing
/// diverged, 1 when something did, 2 when it could not start.
fn explore_on(args: &ExploreArgs, s: &Settings, opts: &RunOptions, base: &Path) -> ExitCode {
    let root = match run::scratch_root(base, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "mmapconf: cannot make a scratch directory under {}: {e}",
                base.display()
            );
            return ExitCode::from(2);
        }
    };
    let env = run::environment(&root, opts);
    let target = run::target_name(&env);
    let bench = Bench {
        env: &env,
        root: &root,
        opts,
        spent: Default::default(),
    };
    let bar = match s.cases {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos} cases {per_sec} {wide_msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("explore {target}"));
    let diverged = AtomicU64::new(0);
    let progress = |r: &CaseResult| {
        if let Some(d) = r.judged.divergence() {
            let n = diverged.fetch_add(1, Ordering::SeqCst) + 1;
            let line = format!(
                "DIVERGES case {} step {} ({} {}): {}",
                r.index,
                d.step,
                d.op,
                d.kind,
                crate::report::first_line(&d.detail)
            );
            // A hidden bar (not a terminal) prints nothing, not even this.
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
            bar.set_message(format!("{n} divergences"));
        }
        bar.inc(1);
    };
    let started = Instant::now();
    let results = bench.explore(s, &progress);
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    if let Some(path) = &args.log {
        if let Err(e) = write_log(path, &results) {
            eprintln!("mmapconf: {}: {e}", path.display());
        }
    }
    print!("{}", summary(&target, &results, elapsed));
    println!("  time: {}", bench.spent.per_case(results.len()));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("explore-findings"));
    let mut shrunk: BTreeMap<Signature, ()> = BTreeMap::new();
    for r in &results {
        let Some(d) = r.judged.divergence() else {
            continue;
        };
        // One finding per kind of divergence: the others are most likely the same.
        if args.shrink_runs == 0 || shrunk.insert(d.signature(), ()).is_some() {
            continue;
        }
        let (small, d) = bench.shrink(&r.case, d, args.shrink_runs);
        let saved = run::finding(&small, &d, s.seed, r.index, &env)
            .map_err(|u| format!("the model cannot annotate it: step {}: {}", u.step, u.why))
            .and_then(|c| run::save(&out, &c, s.seed, r.index, &env).map_err(|e| e.to_string()));
        match saved {
            Ok(path) => println!(
                "finding: {}{} ({} steps, {} {} at step {})",
                path.display(),
                if path.with_extension("c").exists() {
                    format!(" and {}", path.with_extension("c").display())
                } else {
                    String::new()
                },
                step_count(&small.steps),
                d.op,
                d.kind,
                d.step
            ),
            Err(e) => eprintln!("mmapconf: case {} could not be saved: {e}", r.index),
        }
    }
    drop(root);
    if diverged.load(Ordering::SeqCst) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The summary: cases, steps, verdicts, rate, and the most common reasons
/// the model gave up (what to model next) and the harness broke.
fn summary(target: &str, results: &[CaseResult], elapsed: Duration) -> String {
    let mut count: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unmodeled: BTreeMap<String, u64> = BTreeMap::new();
    let mut broke: BTreeMap<String, u64> = BTreeMap::new();
    let mut steps = 0;
    for r in results {
        *count.entry(r.judged.word()).or_default() += 1;
        match &r.judged {
            Judged::Unmodeled(u) => *unmodeled.entry(u.why.clone()).or_default() += 1,
            Judged::Verdict(crate::explore::judge::Verdict::Broke(why)) => {
                *broke.entry(masked(why)).or_default() += 1;
                steps += step_count(&r.case.steps);
            }
            Judged::BadAnnotation(e) => {
                *broke
                    .entry(format!("bad annotation: {}", masked(e)))
                    .or_default() += 1
            }
            _ => steps += step_count(&r.case.steps),
        }
    }
    let n = results.len() as f64;
    let get = |k: &str| count.get(k).copied().unwrap_or(0);
    let mut out = format!(
        "explore {target}: {} cases ({} run, {} steps), {} agree, {} diverge, {} unmodeled, {} broke, {} bad annotations, {} skipped; {:.1} s, {:.0} cases/s\n",
        results.len(),
        results.len() as u64 - get("unmodeled") - get("bad-annotation"),
        steps,
        get("agrees"),
        get("diverges"),
        get("unmodeled"),
        get("broke"),
        get("bad-annotation"),
        get("skipped"),
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64().max(1e-9)
    );
    let top = |m: &BTreeMap<String, u64>, what: &str, out: &mut String| {
        let mut v: Vec<(&String, &u64)> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (why, k) in v.into_iter().take(5) {
            out.push_str(&format!("  {what} {k}×: {why}\n"));
        }
    };
    top(&unmodeled, "unmodeled", &mut out);
    top(&broke, "broke", &mut out);
    out
}

/// The first line of a reason with its numbers as `N`, so reasons that
/// differ only in a step number or a position are counted together.
fn masked(why: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in crate::report::first_line(why).chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

fn write_log(path: &Path, results: &[CaseResult]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in results {
        let d = r
            .judged
            .divergence()
            .map(|d| serde_json::json!({"step": d.step, "op": d.op, "kind": d.kind}));
        let line = serde_json::json!({
            "index": r.index,
            "verdict": r.judged.word(),
            "divergence": d,
            "why": r.judged.why(),
            "case": r.case,
        });
        writeln!(f, "{line}")?;
    }
    f.flush()
}
