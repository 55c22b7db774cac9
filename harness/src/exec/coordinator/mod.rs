//! The coordinator: walks one case's steps in order, hands each to the
//! process that performs it, waits for the observation, judges it.
//!
//! Order across processes comes only from here: a step is sent after the
//! previous step's observation came back, so no case ever needs a sleep.
//! Consecutive steps of one process are the exception that keeps the rule:
//! they go to it as one batch, which it performs in order, answering each
//! as it ends; no other process acts in between, and each observation is
//! still judged in step order (see `batch_calls`).
//! The coordinator may run several cases on threads at once, so it never
//! forks: fresh workers come from the fork server, and `fork` steps are
//! performed by the workers themselves.

mod files;
pub use files::write_files;
mod filesystem;
mod processes;
mod relay;
mod remote;
mod threads;

use processes::{Proc, Reaped};

use super::live;
use super::plan;
use super::power_cut::{Paused, PowerCut};
use super::protocol::{ends_batch, Call, Observation, Outcome, Request, StatInfo};
use crate::case::expect::{self, Context};
use crate::case::model::{Mount, Op, Step};
use crate::case::LoadedCase;
use crate::report::{CaseReport, Status, StepReport, StepStatus};
use crate::target::Environment;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How cases are run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The harness binary, exec'd once as the fork server that starts fresh processes.
    pub worker_exe: PathBuf,
    /// Time limit for cases that do not set their own.
    pub default_timeout: Duration,
    /// When set, overrides every case's own limit.
    pub force_timeout: Option<Duration>,
    /// The filesystem the harness made for this run, for `remount` and
    /// `crash`; None when cases run in a directory of an existing mount.
    pub owned_fs: Option<std::sync::Arc<std::sync::Mutex<crate::target::fs::OwnedFs>>>,
    /// Power-cut mode (`mmapconf power-cut`): a `crash` step hands the
    /// coordinator's state to this instead of simulating the crash.
    pub power_cut: Option<std::sync::Arc<dyn PowerCut>>,
    /// Health checks around every case (`target::health`); off with `--no-health`.
    pub health: bool,
    /// Another mount of the filesystem under test (`run --second-dir`), for
    /// the processes a case puts there (`processes.NAME.mount`).
    pub second_mount: Option<crate::target::second_mount::SecondMount>,
}

impl RunOptions {
    pub fn new(worker_exe: PathBuf) -> RunOptions {
        RunOptions {
            worker_exe,
            default_timeout: Duration::from_secs(10),
            force_timeout: None,
            owned_fs: None,
            power_cut: None,
            health: true,
            second_mount: None,
        }
    }
}

/// Why a case stopped early.
enum Stop {
    /// A step did not observe what was expected.
    Failed,
    /// The harness could not go on (timeout, setup, broken worker).
    Broken(String),
    /// A step met a variant that skips the rest of the case, for this reason.
    Skipped(String),
}

struct Run<'a> {
    env: &'a Environment,
    dir: PathBuf,
    /// The scratch directory as the processes on the second mount see it, by process name.
    second_dirs: BTreeMap<String, PathBuf>,
    dirfd: OwnedFd,
    opts: &'a RunOptions,
    deadline: Instant,
    limit: Duration,
    procs: BTreeMap<String, Proc>,
    pgids: Vec<(i32, live::GroupId)>,
    snapshots: HashMap<String, StatInfo>,
    values: HashMap<String, i64>,
    steps: Vec<StepReport>,
    /// The step being performed: its index and summary, for reports of a
    /// case that breaks in the middle of it.
    current: Option<(String, String)>,
    started: Instant,
    /// Time the case ran before a power cut it resumes after.
    earlier_ms: u64,
    /// Resuming after a power cut: the next `crash` step is the one that
    /// was cut, to be recorded as such.
    resuming: bool,
    /// The shared region of direct hand-offs and its memfd, made when the
    /// case first has a run of them (`relay`).
    region: Option<(super::relay::Region, OwnedFd)>,
    /// The number of the last run of hand-offs.
    epoch: u32,
}

/// Runs one case in `dir` (an empty scratch directory) and reports on it.
pub fn run_case(case: &LoadedCase, env: &Environment, dir: &Path, opts: &RunOptions) -> CaseReport {
    run_case_from(case, env, dir, opts, None)
}

/// [`run_case`], or with `resume` the rest of a case after a real power
/// cut: its files are not created again, the state saved at the cut is
/// restored, its processes are gone, and the walk starts at the crash step.
pub fn run_case_from(
    case: &LoadedCase,
    env: &Environment,
    dir: &Path,
    opts: &RunOptions,
    resume: Option<Paused>,
) -> CaseReport {
    let started = Instant::now();
    let limit = opts.force_timeout.unwrap_or_else(|| {
        case.case
            .timeout
            .map(Duration::from_secs_f64)
            .unwrap_or(opts.default_timeout)
    });
    let mut report = CaseReport {
        id: case.id.clone(),
        title: case.case.title.clone(),
        status: Status::Pass,
        duration_ms: 0,
        reason: None,
        failed_step: None,
        steps: Vec::new(),
        leftover: None,
        timed_out: false,
        known: None,
        kernel_log: Vec::new(),
    };
    let dirfd = match nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        // SAFETY: the kernel just gave us this fd.
        Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
        Err(e) => {
            report.status = Status::Error;
            report.reason = Some(format!("cannot open scratch dir {}: {e}", dir.display()));
            return report;
        }
    };
    let second = case
        .case
        .processes
        .iter()
        .filter(|(_, p)| p.mount == Mount::Second);
    let mut second_dirs = BTreeMap::new();
    for (name, _) in second {
        let Some(mount) = &opts.second_mount else {
            report.status = Status::Error;
            report.reason = Some(format!(
                "process `{name}` works through the second mount, and the run has none"
            ));
            return report;
        };
        second_dirs.insert(name.clone(), mount.translate(dir));
    }
    let mut run = Run {
        env,
        dir: dir.to_path_buf(),
        second_dirs,
        dirfd,
        opts,
        deadline: started + limit,
        limit,
        procs: BTreeMap::new(),
        pgids: Vec::new(),
        snapshots: HashMap::new(),
        values: HashMap::new(),
        // One report a step as a rule (a `together` has more): made once.
        steps: Vec::with_capacity(case.case.steps.len()),
        current: None,
        started,
        earlier_ms: 0,
        resuming: false,
        region: None,
        epoch: 0,
    };
    let outcome = match resume {
        None => run
            .create_files(case)
            .map_err(Stop::Broken)
            .and_then(|()| run.walk(&case.case.steps, 0)),
        Some(paused) => run
            .restore(paused, &case.case.steps)
            .and_then(|start| run.walk(&case.case.steps, start)),
    };
    // Before teardown, which takes its own time: did the case stop at its limit?
    let past_deadline = Instant::now() >= run.deadline;
    run.teardown();
    // Shared memory objects live on after every process: removed here,
    // after the processes, whatever way the case ended. Only a case with a
    // step that makes them can have any: the others skip a scan of /dev/shm.
    if case.case.makes_shared_memory() {
        crate::target::ipc::remove_case(
            std::process::id() as i32,
            &crate::target::ipc::case_token(dir),
        );
    }
    report.steps = std::mem::take(&mut run.steps);
    match outcome {
        Ok(()) => {}
        Err(Stop::Failed) => {
            report.status = Status::Fail;
            if let Some(s) = report.steps.iter().find(|s| s.status == StepStatus::Fail) {
                report.failed_step = s.index.split('.').next().and_then(|i| i.parse().ok());
                report.reason = Some(format!(
                    "step {} ({}): {}",
                    s.index,
                    s.summary,
                    s.message.as_deref().unwrap_or("failed")
                ));
            }
        }
        Err(Stop::Skipped(why)) => {
            report.status = Status::Skip;
            report.reason = Some(why);
        }
        Err(Stop::Broken(why)) => {
            report.status = Status::Error;
            // Broken at or past the deadline: the time limit ended it.
            report.timed_out = past_deadline;
            report.reason = Some(why);
            if let Some((index, summary)) = &run.current {
                report.failed_step = index.split('.').next().and_then(|i| i.parse().ok());
                report.reason = Some(format!(
                    "step {index} ({summary}): {}",
                    report.reason.take().unwrap_or_default()
                ));
            }
        }
    }
    report.duration_ms = run.earlier_ms + started.elapsed().as_millis() as u64;
    report
}

impl Run<'_> {
    fn ps(&self) -> u64 {
        self.env.page_size
    }

    fn walk(&mut self, steps: &[Step], start: usize) -> Result<(), Stop> {
        let mut i = start;
        while i < steps.len() {
            let step = &steps[i];
            let index = (i + 1).to_string();
            self.current = Some((index.clone(), plan::summary(step)));
            if let Op::Together { steps: inner } = &step.op {
                self.together(&index, inner)?;
                i += 1;
                continue;
            }
            // Plain steps, of one process or several, hand over to each
            // other directly; a run that ends before its first step
            // leaves that step to go alone. A process new at this step
            // starts now, as it would to perform it, so that its steps can
            // be a run (a case's first steps are, most often, of one new
            // process).
            if worker_step(step) && step.process.is_some() {
                self.proc_for(step)?;
            }
            match self.relay(&steps[i..], i)? {
                Some(n) if n > 0 => {
                    i += n;
                    continue;
                }
                Some(_) => {
                    let started = Instant::now();
                    let obs = self.perform(step)?;
                    self.if_last(steps, i);
                    self.record(&index, step, obs, us_since(started))?;
                    i += 1;
                    continue;
                }
                None => {}
            }
            let batch = self.batch_calls(&steps[i..]);
            if batch.len() > 1 {
                i += self.perform_batch(&steps[i..], batch, i + 1)?;
                continue;
            }
            let started = Instant::now();
            let obs = self.perform(step)?;
            self.if_last(steps, i);
            self.record(&index, step, obs, us_since(started))?;
            i += 1;
        }
        Ok(())
    }

    /// Once the case's last step (`steps[i]`) has been observed, its
    /// processes are sent SIGKILL before the step is judged (see
    /// `signal_all`).
    fn if_last(&self, steps: &[Step], i: usize) {
        if i + 1 == steps.len() {
            self.signal_all();
        }
    }

    /// The calls of the worker steps at the start of `steps` that one
    /// process performs one after the other: what it can do in one round
    /// trip. Every step's observation is still judged in order, and a step
    /// the coordinator acts in (fork, exit, wait, kill, check_file ...)
    /// or another process acts in ends the batch. A step whose call cannot
    /// be planned ends it too, so that its error comes after the steps
    /// before it were performed, as it would one step at a time.
    fn batch_calls(&self, steps: &[Step]) -> Vec<Call> {
        let Some(process) = steps.first().and_then(|s| s.process.as_ref()) else {
            return Vec::new();
        };
        steps
            .iter()
            .take(MAX_BATCH)
            .take_while(|s| s.process.as_ref() == Some(process) && worker_step(s))
            // One channel: a step in another thread of the process ends the batch.
            .take_while(|s| threads::key(s, process) == threads::key(&steps[0], process))
            .map_while(|s| plan::call(s, self.ps()).ok().flatten())
            .collect()
    }

    /// Performs a batch of the steps at the start of `steps` and records
    /// them; returns how many were performed. The worker stops a batch after
    /// a fault or a step it could not perform; a step that fails its
    /// expectation stops the case here, and the steps after it in the batch
    /// (which the worker may have performed meanwhile) are not reported,
    /// as they would not have been performed one step at a time.
    /// `first` is the index of the first of them.
    fn perform_batch(
        &mut self,
        steps: &[Step],
        calls: Vec<Call>,
        first: usize,
    ) -> Result<usize, Stop> {
        let n = calls.len();
        let p = self.proc_for(&steps[0])?;
        let mut started = Instant::now();
        self.send(&p, Request::Batch(calls), None)?;
        for (k, step) in steps[..n].iter().enumerate() {
            let index = (first + k).to_string();
            self.current = Some((index.clone(), plan::summary(step)));
            let obs = self.receive(&p)?;
            self.if_last(steps, k);
            let ends = ends_batch(&obs);
            self.record(&index, step, obs, us_since(started))?;
            if ends {
                return Ok(k + 1);
            }
            started = Instant::now();
        }
        Ok(n)
    }

    /// Judges an observation, records the step, and stops the case on failure.
    fn record(
        &mut self,
        index: &str,
        step: &Step,
        obs: Observation,
        duration_us: u64,
    ) -> Result<(), Stop> {
        let applied = expect::applied(step, self.env);
        let applied_skip = applied.skip_rest.clone();
        let ctx = Context {
            page_size: self.ps(),
            snapshots: &self.snapshots,
            values: &self.values,
        };
        let (status, message) = match (&obs.outcome, &applied.expect) {
            (Outcome::Error { message }, _) => (StepStatus::Error, Some(message.clone())),
            (_, None) => (StepStatus::Observed, None),
            (_, Some(e)) => match expect::judge(e, &obs, &ctx) {
                Ok(()) => (StepStatus::Pass, None),
                Err(m) => (StepStatus::Fail, Some(m)),
            },
        };
        if let (Op::Fstat { .. }, Some(name), Some(st)) = (&step.op, &step.name, &obs.stat) {
            self.snapshots.insert(name.clone(), st.clone());
        }
        // Every operation whose number `as` may record (validation's list).
        let records = crate::case::validate::records_value(&step.op);
        if let (true, Some(name), Some(v)) = (records, &step.name, obs.value) {
            self.values.insert(name.clone(), v);
        }
        // walk() already described the step it is on (taken, not copied:
        // it is described anew before the next step); inner steps of
        // `together`, and the steps of a run, are described here.
        let summary = match self.current.take() {
            Some((i, text)) if i == index => text,
            other => {
                self.current = other;
                plan::summary(step)
            }
        };
        let skip_rest = applied_skip.map(|why| format!("step {index} ({summary}): {why}"));
        if status == StepStatus::Error {
            self.current = Some((index.to_string(), summary.clone()));
        }
        self.steps.push(StepReport {
            index: index.to_string(),
            process: step.process.clone(),
            op: step.op.name().to_string(),
            summary,
            status,
            expected: applied.expect,
            variant: applied.variant,
            observed: Some(obs),
            message: message.clone(),
            duration_us,
        });
        match status {
            StepStatus::Pass if skip_rest.is_some() => {
                Err(Stop::Skipped(skip_rest.unwrap_or_default()))
            }
            StepStatus::Pass | StepStatus::Observed => Ok(()),
            StepStatus::Fail => Err(Stop::Failed),
            StepStatus::Error => Err(Stop::Broken(message.unwrap_or_default())),
        }
    }

    /// Performs one step and returns what was observed. Err only when the
    /// case cannot go on at all (a timeout, a worker that cannot start).
    fn perform(&mut self, step: &Step) -> Result<Observation, Stop> {
        match &step.op {
            Op::Wait { target } => self.wait(target),
            Op::Kill { target, signal } => Ok(self.kill(target, signal)),
            Op::CheckFile {
                path,
                at,
                len,
                from,
            } => Ok(self.check_file(path, at, len.as_ref(), *from)),
            Op::Remount { read_only } => self.remount(*read_only),
            Op::FillFs { path } => self.fill_fs(path),
            Op::Crash => self.crash(),
            Op::DropCaches => Ok(self.drop_caches()),
            Op::Together { .. } => unreachable!("handled by walk"),
            Op::Fork => {
                let p = self.proc_for(step)?;
                self.fork(&p, step.name.as_deref().unwrap_or_default())
            }
            Op::Exit { code } => {
                let p = self.proc_for(step)?;
                self.exit(&p, *code)
            }
            Op::RemoteRead { .. } | Op::RemoteWrite { .. } => self.remote(step),
            Op::SpawnThread => {
                let by = self.proc_for(step)?;
                self.spawn_thread(&by, step)
            }
            _ => {
                let p = self.proc_for(step)?;
                let call = plan::call(step, self.ps())
                    .map_err(Stop::Broken)?
                    .expect("worker op has a call");
                self.send(&p, Request::Call(call), None)?;
                self.receive(&p)
            }
        }
    }

    fn together(&mut self, index: &str, inner: &[Step]) -> Result<(), Stop> {
        let started = Instant::now();
        let mut sent = Vec::new();
        for step in inner {
            let p = self.proc_for(step)?;
            let call = plan::call(step, self.ps()).map_err(Stop::Broken)?;
            let Some(call) = call else {
                return Err(Stop::Broken(format!(
                    "`{}` cannot run inside `together`",
                    step.op.name()
                )));
            };
            self.send(&p, Request::Call(call), None)?;
            sent.push(p);
        }
        // Join: every process's observation, in the order the case lists them.
        let mut observed = Vec::new();
        for p in &sent {
            observed.push(self.receive(p)?);
        }
        for (i, (step, obs)) in inner.iter().zip(observed).enumerate() {
            self.record(&format!("{index}.{}", i + 1), step, obs, us_since(started))?;
        }
        Ok(())
    }

    /// The index of the top-level step being performed, for messages.
    fn step_index(&self) -> String {
        self.current
            .as_ref()
            .map(|(i, _)| i.clone())
            .unwrap_or_default()
    }
}

/// Microseconds since `started`, a step's duration in the report.
fn us_since(started: Instant) -> u64 {
    started.elapsed().as_micros() as u64
}

/// The most calls sent in one batch: a bound on the request's size.
const MAX_BATCH: usize = 64;

/// Whether a step is one call that a worker performs on its own (what
/// `perform` sends as a `Call`), so that it can be part of a batch.
fn worker_step(step: &Step) -> bool {
    !step.op.is_coordinator_op() && !matches!(step.op, Op::Fork | Op::Exit { .. })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
