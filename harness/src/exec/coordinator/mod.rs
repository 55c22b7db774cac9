//! The coordinator: walks one case's steps in order, hands each to the
//! process that performs it, waits for the observation, judges it.
//!
//! Order across processes comes only from here: a step is sent after the
//! previous step's observation came back, so no case ever needs a sleep.
//! The coordinator may run several cases on threads at once, so it never
//! forks: fresh workers come from the fork server, and `fork` steps are
//! performed by the workers themselves.

mod filesystem;

use super::live;
use super::ops::{open_beneath, with_bytes, AlignedBuf};
use super::pidfd;
use super::plan;
use super::power_cut::{Paused, PowerCut};
use super::protocol::{
    Call, Channel, ExitStatus, Observation, Outcome, RecvError, Request, StatInfo,
};
use crate::case::expect::{self, Context};
use crate::case::model::{Op, ReadFrom, Step, Zeros};
use crate::case::values::Bytes;
use crate::case::LoadedCase;
use crate::report::{CaseReport, Status, StepReport, StepStatus};
use crate::target::Environment;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
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
}

impl RunOptions {
    pub fn new(worker_exe: PathBuf) -> RunOptions {
        RunOptions {
            worker_exe,
            default_timeout: Duration::from_secs(10),
            force_timeout: None,
            owned_fs: None,
            power_cut: None,
        }
    }
}

struct Proc {
    /// For reports and the power-cut state only: signals and waits go
    /// through `pidfd`, since this number may belong to another process
    /// once this one is reaped.
    pid: i32,
    /// Opened while the process was certainly not reaped (see spawn and
    /// fork); None for a process of before a power cut, or if opening failed.
    pidfd: Option<std::os::fd::OwnedFd>,
    chan: Channel,
    /// The worker that forked this one; None for a process the coordinator spawned.
    parent: Option<String>,
    /// A process the coordinator spawned, so its child: waiting is ours to do.
    spawned: bool,
    /// Its exit status was collected, and when: it has no pid any more.
    reaped: Option<Reaped>,
    /// It performed `exit`, was waited for, or its channel closed.
    gone: bool,
    /// The last signal a `kill` step sent it (step index, signal name), so
    /// that its death is reported as that kill, not as the next step's.
    signalled: Option<(String, String)>,
    /// Creation order: a forked process comes after its parent.
    born: usize,
    /// The registered process group it belongs to (None: of before a power cut).
    group: Option<live::GroupId>,
}

/// When a process's exit status was collected.
#[derive(Debug, Clone)]
enum Reaped {
    /// By a `wait` step (index).
    ByWait(String),
    /// By the coordinator, when the process died during a step (index).
    DiedDuring(String),
    /// By a `crash` step, or before a real power cut: it died with the machine.
    AtCrash,
    /// By the end of the case.
    AtTeardown,
}

/// Why a case stopped early.
enum Stop {
    /// A step did not observe what was expected.
    Failed,
    /// The harness could not go on (timeout, setup, broken worker).
    Broken(String),
}

struct Run<'a> {
    env: &'a Environment,
    dir: PathBuf,
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
    let mut run = Run {
        env,
        dir: dir.to_path_buf(),
        dirfd,
        opts,
        deadline: started + limit,
        limit,
        procs: BTreeMap::new(),
        pgids: Vec::new(),
        snapshots: HashMap::new(),
        values: HashMap::new(),
        steps: Vec::new(),
        current: None,
        started,
        earlier_ms: 0,
        resuming: false,
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
    run.teardown();
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
        Err(Stop::Broken(why)) => {
            report.status = Status::Error;
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

/// Makes a case's starting `files` in `dir`, in name order: the content,
/// then the size, then the mode. (Also how a read-only image target's
/// files are made, before the image is built from them.)
pub fn write_files(
    dir: &Path,
    files: &BTreeMap<String, crate::case::model::FileInit>,
    ps: u64,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (name, init) in files {
        let path = dir.join(name);
        let fail = |e: std::io::Error| format!("creating {name}: {e}");
        let mut f = std::fs::File::create(&path).map_err(fail)?;
        let size = init.size.as_ref().map(|s| s.resolve_len(ps)).transpose()?;
        let mut written = 0;
        if !init.data.is_empty() {
            // Streamed: the content is never held whole in memory.
            let bytes = init.data.resolve(ps, size)?;
            bytes.write_to(&mut f).map_err(fail)?;
            written = bytes.len();
        }
        if let Some(size) = size {
            if init.zeros == Some(Zeros::Allocated) && size > written {
                // Written, not ftruncated: the storage holds these zeros.
                let zeros = Bytes::Fill {
                    byte: 0,
                    len: size - written,
                };
                zeros.write_to(&mut f).map_err(fail)?;
            }
            f.set_len(size).map_err(fail)?;
        }
        let mode = init.mode.unwrap_or(0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    Ok(())
}

impl Run<'_> {
    fn ps(&self) -> u64 {
        self.env.page_size
    }

    fn create_files(&self, case: &LoadedCase) -> Result<(), String> {
        // On a read-only image target the files are in the image already,
        // made by `write_files` when the image was built.
        if self
            .opts
            .owned_fs
            .as_ref()
            .is_some_and(|fs| lock(fs).premade().is_some())
        {
            return Ok(());
        }
        // On overlayfs the case's files start in the lower layer, so that a
        // write through the merged view meets copy-up.
        let dir = self.files_dir()?;
        write_files(&dir, &case.case.files, self.ps())?;
        if case.case.needs_owned_fs() {
            // The starting state (the case's directory and files) is on the
            // device before the first step, so a crash tests the steps only.
            // (syncfs needs a real descriptor; our dirfd is O_PATH.)
            let d = std::fs::File::open(&self.dir).map_err(|e| format!("syncfs: {e}"))?;
            // SAFETY: syncfs on a directory fd we own.
            if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
                return Err(format!("syncfs: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    fn files_dir(&self) -> Result<PathBuf, String> {
        let Some(fs) = self.opts.owned_fs.as_ref() else {
            return Ok(self.dir.clone());
        };
        let fs = lock(fs);
        let (Some(lower), Ok(rel)) = (&fs.lower_dir, self.dir.strip_prefix(&fs.mount_point)) else {
            return Ok(self.dir.clone());
        };
        let dir = lower.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| format!("lower dir {}: {e}", dir.display()))?;
        Ok(dir)
    }

    fn walk(&mut self, steps: &[Step], start: usize) -> Result<(), Stop> {
        for (i, step) in steps.iter().enumerate().skip(start) {
            let index = (i + 1).to_string();
            self.current = Some((index.clone(), plan::summary(step)));
            if let Op::Together { steps: inner } = &step.op {
                self.together(&index, inner)?;
            } else {
                let started = Instant::now();
                let obs = self.perform(step)?;
                self.record(&index, step, obs, started)?;
            }
        }
        Ok(())
    }

    /// Judges an observation, records the step, and stops the case on failure.
    fn record(
        &mut self,
        index: &str,
        step: &Step,
        obs: Observation,
        started: Instant,
    ) -> Result<(), Stop> {
        let applied = expect::applied(step, self.env);
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
        let records = matches!(
            step.op,
            Op::Pagemap { .. } | Op::Load { .. } | Op::Pread { .. } | Op::Mincore { .. }
        );
        if let (true, Some(name), Some(v)) = (records, &step.name, obs.value) {
            self.values.insert(name.clone(), v);
        }
        // walk() already described the step it is on; inner steps of
        // `together` are described here.
        let summary = match &self.current {
            Some((i, text)) if i == index => text.clone(),
            _ => plan::summary(step),
        };
        self.steps.push(StepReport {
            index: index.to_string(),
            process: step.process.clone(),
            op: step.op.name().to_string(),
            summary: summary.clone(),
            status,
            expected: applied.expect,
            variant: applied.variant,
            observed: Some(obs),
            message: message.clone(),
            duration_us: started.elapsed().as_micros() as u64,
        });
        match status {
            StepStatus::Pass | StepStatus::Observed => Ok(()),
            StepStatus::Fail => Err(Stop::Failed),
            StepStatus::Error => {
                self.current = Some((index.to_string(), summary));
                Err(Stop::Broken(message.unwrap_or_default()))
            }
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
            self.record(&format!("{index}.{}", i + 1), step, obs, started)?;
        }
        Ok(())
    }

    /// The process a worker step names, spawning it if it is new.
    fn proc_for(&mut self, step: &Step) -> Result<String, Stop> {
        let name = step
            .process
            .clone()
            .ok_or_else(|| Stop::Broken(format!("`{}` has no `in`", step.op.name())))?;
        if !self.procs.contains_key(&name) {
            self.spawn(&name)?;
        }
        Ok(name)
    }

    fn spawn(&mut self, name: &str) -> Result<(), Stop> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Stop::Broken(format!("socketpair: {e}")))?;
        // Before the process exists, so nothing can fail between its start
        // and its record (teardown finds it only there).
        let chan = Channel::new(ours).map_err(|e| Stop::Broken(format!("channel: {e}")))?;
        let pid = super::fork_server::spawn_worker(&self.opts.worker_exe, &self.dir, &theirs)
            .map_err(|e| Stop::Broken(format!("cannot start process `{name}`: {e}")))?;
        drop(theirs);
        let group = live::add_group(pid);
        self.pgids.push((pid, group));
        // Our child, not reaped before we say so: `pid` is still its own.
        let pidfd = pidfd::open(pid);
        let failed = pidfd.as_ref().err().map(|e| e.to_string());
        self.procs.insert(
            name.to_string(),
            Proc {
                pid,
                pidfd: pidfd.ok(),
                chan,
                parent: None,
                spawned: true,
                reaped: None,
                gone: false,
                signalled: None,
                born: self.procs.len(),
                group: Some(group),
            },
        );
        match failed {
            // Recorded anyway: teardown kills and reaps it by its group.
            Some(e) => Err(Stop::Broken(format!("pidfd_open for `{name}`: {e}"))),
            None => Ok(()),
        }
    }

    fn proc(&mut self, name: &str) -> Result<&mut Proc, Stop> {
        self.procs
            .get_mut(name)
            .ok_or_else(|| Stop::Broken(format!("no process `{name}`")))
    }

    fn send(&mut self, name: &str, req: Request, fd: Option<i32>) -> Result<(), Stop> {
        let p = self.proc(name)?;
        if p.gone {
            let why = match &p.signalled {
                Some((at, sig)) => format!(" (it was sent {sig} at step {at})"),
                None => String::new(),
            };
            return Err(Stop::Broken(format!(
                "process `{name}` has already ended{why}"
            )));
        }
        // A send to a process that died is seen as a closed channel on receive.
        let _ = p.chan.send(&req, fd);
        Ok(())
    }

    fn receive(&mut self, name: &str) -> Result<Observation, Stop> {
        let deadline = self.deadline;
        let limit = self.limit;
        let step = self.step_index();
        let p = self.proc(name)?;
        match p.chan.recv(deadline) {
            Ok(obs) => Ok(obs),
            Err(RecvError::TimedOut) => Err(Stop::Broken(format!(
                "timed out after {:.1}s waiting for process `{name}`",
                limit.as_secs_f64()
            ))),
            Err(RecvError::Closed) => {
                p.gone = true;
                let status = match p.reap(Reaped::DiedDuring(step)) {
                    Some(Ok(status)) => Some(status),
                    _ => None,
                };
                Ok(Observation::of(Outcome::Error {
                    message: death_message(name, p.signalled.as_ref(), status),
                }))
            }
            Err(e) => Err(Stop::Broken(format!("channel of `{name}`: {e}"))),
        }
    }

    fn fork(&mut self, parent: &str, child: &str) -> Result<Observation, Stop> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Stop::Broken(format!("socketpair: {e}")))?;
        self.send(parent, Request::Fork, Some(theirs.as_raw_fd()))?;
        drop(theirs);
        let obs = self.receive(parent)?;
        if let Some(pid) = obs.pid {
            let chan = Channel::new(ours).map_err(|e| Stop::Broken(format!("channel: {e}")))?;
            // Only its parent reaps it, and only on a `wait` step, which
            // has not come yet: `pid` is still the child's. (Were the
            // parent dead already, the child would be ours, unreaped.)
            let pidfd = pidfd::open(pid);
            let failed = pidfd.as_ref().err().map(|e| e.to_string());
            // In its parent's process group.
            let group = self.proc(parent)?.group;
            if let (Some(group), Ok(fd)) = (group, &pidfd) {
                live::add_member(group, fd);
            }
            self.procs.insert(
                child.to_string(),
                Proc {
                    pid,
                    pidfd: pidfd.ok(),
                    chan,
                    parent: Some(parent.to_string()),
                    spawned: false,
                    reaped: None,
                    gone: false,
                    signalled: None,
                    born: self.procs.len(),
                    group,
                },
            );
            if let Some(e) = failed {
                return Err(Stop::Broken(format!("pidfd_open for `{child}`: {e}")));
            }
        }
        Ok(obs)
    }

    fn exit(&mut self, name: &str, code: i32) -> Result<Observation, Stop> {
        self.send(name, Request::Exit(code), None)?;
        let deadline = self.deadline;
        let p = self.proc(name)?;
        p.gone = true;
        match p.chan.wait_closed(deadline) {
            Ok(()) => Ok(Observation::ok()),
            Err(RecvError::TimedOut) => Err(Stop::Broken(format!(
                "timed out waiting for `{name}` to exit"
            ))),
            Err(e) => Err(Stop::Broken(format!("channel of `{name}`: {e}"))),
        }
    }

    /// waitpid by the real parent: the coordinator for spawned processes,
    /// the forking worker for forked ones.
    fn wait(&mut self, target: &str) -> Result<Observation, Stop> {
        let deadline = self.deadline;
        let limit = self.limit;
        let step = self.step_index();
        if let Some(how) = &self.proc(target)?.reaped {
            return Ok(Observation::error(format!(
                "process `{target}` was already reaped {}",
                how.describe()
            )));
        }
        let parent = self.proc(target)?.parent.clone();
        match parent {
            Some(parent) => {
                // The parent is a worker, and the pid is the child's until
                // the parent's waitpid itself reaps it.
                let pid = self.proc(target)?.pid;
                self.send(&parent, Request::Call(Call::Wait { pid }), None)?;
                let obs = self.receive(&parent)?;
                let p = self.proc(target)?;
                p.gone = true;
                if obs.exit.is_some() {
                    p.reaped = Some(Reaped::ByWait(step));
                }
                Ok(obs)
            }
            None => {
                let p = self.proc(target)?;
                // The channel closes when the process ends; only then is
                // waitpid sure not to block past the deadline.
                match p.chan.wait_closed(deadline) {
                    Ok(()) => {}
                    Err(RecvError::TimedOut) => {
                        return Err(Stop::Broken(format!(
                            "timed out after {:.1}s waiting for process `{target}` to end",
                            limit.as_secs_f64()
                        )))
                    }
                    Err(e) => return Err(Stop::Broken(format!("channel of `{target}`: {e}"))),
                }
                p.gone = true;
                match p.reap(Reaped::ByWait(step)) {
                    None => Ok(Observation::error(format!(
                        "`{target}` is not a child of the harness"
                    ))),
                    Some(Ok(status)) => {
                        let mut obs = Observation::ok();
                        obs.exit = Some(status);
                        Ok(obs)
                    }
                    Some(Err(errno)) => Ok(Observation::errno(errno as i32)),
                }
            }
        }
    }

    /// Signals the process through its pidfd. A process that ended but
    /// was not reaped (a zombie) accepts the signal, as with kill(2); one
    /// that was reaped has no pid any more, and its old number may be
    /// another process's, so a `kill` of it is a case error.
    fn kill(&mut self, target: &str, signal: &str) -> Observation {
        let step = self.step_index();
        let Some(p) = self.procs.get_mut(target) else {
            return Observation::error(format!("no process `{target}`"));
        };
        let Some(sig) = crate::names::signal_value(signal) else {
            return Observation::error(format!("unknown signal `{signal}`"));
        };
        match &p.reaped {
            None => {}
            // It died with the machine: to a case after a crash it is a
            // process that no longer exists, as it is after a real power cut.
            Some(Reaped::AtCrash) => return Observation::errno(libc::ESRCH),
            Some(how) => {
                return Observation::error(format!(
                    "process `{target}` was already reaped {}: it has no pid to signal",
                    how.describe()
                ))
            }
        }
        let Some(fd) = &p.pidfd else {
            return Observation::error(format!("process `{target}` has no pidfd to signal"));
        };
        match pidfd::send_signal(fd, sig) {
            Ok(()) => {
                p.signalled = Some((step, crate::names::signal_name(sig)));
                Observation::ok()
            }
            Err(e) => Observation::errno(e as i32),
        }
    }

    /// The index of the top-level step being performed, for messages.
    fn step_index(&self) -> String {
        self.current
            .as_ref()
            .map(|(i, _)| i.clone())
            .unwrap_or_default()
    }

    /// Reads the file as a newcomer would: a fresh open, then pread. From
    /// the cache, what any reader sees now; from the storage, what reached
    /// the filesystem's storage, whatever this kernel still has cached: the
    /// backing file of a target that has one, else an O_DIRECT read (which
    /// writes back dirty pages of the range first, then reads the device or
    /// asks the FUSE server).
    fn check_file(
        &self,
        path: &str,
        at: &crate::case::model::Size,
        len: Option<&crate::case::model::Size>,
        from: ReadFrom,
    ) -> Observation {
        let at = match at.resolve_offset(self.ps()) {
            Ok(v) => v as u64,
            Err(e) => return Observation::error(e),
        };
        let want = match len.map(|l| l.resolve_len(self.ps())) {
            Some(Ok(l)) => Some(l as usize),
            Some(Err(e)) => return Observation::error(e),
            None => None,
        };
        let backing = self.opts.owned_fs.as_ref().and_then(|fs| {
            let fs = lock(fs);
            let rel = self.dir.strip_prefix(&fs.mount_point).ok()?;
            fs.backing_dir().map(|b| b.join(rel).join(path))
        });
        // O_DIRECT reads whole aligned blocks into an aligned buffer.
        let (opened, align) = match (from, backing) {
            (ReadFrom::Cache, _) => (
                open_beneath(self.dirfd.as_raw_fd(), path, libc::O_RDONLY, 0),
                1,
            ),
            (ReadFrom::Storage, Some(file)) => (
                std::fs::File::open(&file).map(OwnedFd::from).map_err(|e| {
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
                }),
                1,
            ),
            (ReadFrom::Storage, None) => (
                open_beneath(
                    self.dirfd.as_raw_fd(),
                    path,
                    libc::O_RDONLY | libc::O_DIRECT,
                    0,
                ),
                self.ps(),
            ),
        };
        let file = match opened {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) => return Observation::errno(e as i32),
        };
        const CHUNK: usize = 1 << 16;
        let mut chunk = match AlignedBuf::zeroed(CHUNK, self.ps()) {
            Ok(c) => c,
            Err(obs) => return obs,
        };
        let mut buf = Vec::new();
        let mut offset = at - at % align;
        let mut skip = (at - offset) as usize;
        loop {
            if want.is_some_and(|w| buf.len() >= w) {
                break;
            }
            match std::os::unix::fs::FileExt::read_at(&file, &mut chunk, offset) {
                Ok(n) if n <= skip => break,
                Ok(n) => {
                    let room = want.map_or(usize::MAX, |w| w - buf.len());
                    let end = n.min(skip + room);
                    buf.extend_from_slice(&chunk[skip..end]);
                    offset += n as u64;
                    skip = 0;
                }
                Err(e) => return Observation::errno(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
        with_bytes(buf)
    }

    /// Kills every process of the case and reaps them, recording `how`.
    fn kill_all(&mut self, how: Reaped) {
        // 1. SIGKILL to everything.
        for p in self.procs.values() {
            if p.reaped.is_some() {
                continue;
            }
            if p.spawned {
                // Its group, with any process a worker started that the
                // case does not know of. The leader is not reaped, so the
                // group id is still this group's.
                // SAFETY: signals a process group this case created.
                unsafe { libc::killpg(p.pid, libc::SIGKILL) };
            }
            // Forked processes whose group leader was reaped by a `wait`
            // (so whose group id may be reused) are reached only this way.
            if let Some(fd) = &p.pidfd {
                let _ = pidfd::send_signal(fd, libc::SIGKILL);
            }
        }
        // Fresh workers die but stay zombies for now: a group id is not
        // reused while its leader is unreaped, so step 3 may still use it.
        for p in self
            .procs
            .values()
            .filter(|p| p.spawned && p.reaped.is_none())
        {
            if let Some(fd) = &p.pidfd {
                let _ = pidfd::wait(fd, false);
            }
        }
        // 2. Forked processes, parents first: once a process has ended, its
        // children are ours (the harness is a child subreaper) to reap.
        let mut forked: Vec<&mut Proc> = self.procs.values_mut().filter(|p| !p.spawned).collect();
        forked.sort_by_key(|p| p.born);
        for p in forked {
            p.collect(how.clone());
        }
        // 3. Each group, its leader last: with it goes any process of the
        // group the case did not know of (a fork whose reply never came).
        for p in self
            .procs
            .values_mut()
            .filter(|p| p.spawned && p.reaped.is_none())
        {
            live::reap_group_until(p.pid, p.pid);
            p.reaped = Some(how.clone());
            if let Some(group) = p.group {
                live::leader_reaped(group);
            }
        }
    }

    /// Ends every process of the case, whatever state it is in, and reaps them.
    fn teardown(&mut self) {
        // Forked workers whose parents die are reparented to us (we are a
        // child subreaper); kill_all collects them so no zombie outlives the case.
        self.kill_all(Reaped::AtTeardown);
        for &(_, group) in &self.pgids {
            live::remove_group(group);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proc {
    /// Waits for a process the coordinator spawned, once, and records
    /// `how` it was reaped: None for a forked process (its parent is a
    /// worker) or one already reaped.
    fn reap(&mut self, how: Reaped) -> Option<Result<ExitStatus, nix::errno::Errno>> {
        if !self.spawned || self.reaped.is_some() {
            return None;
        }
        let r = match &self.pidfd {
            Some(fd) => pidfd::wait(fd, true),
            // pidfd_open failed at spawn: our child, never reaped, so its
            // pid is still its own.
            None => wait_pid(self.pid),
        };
        self.reaped = Some(how);
        if let Some(group) = self.group {
            live::leader_reaped(group);
        }
        Some(r.map(|ended| match ended {
            pidfd::Ended::Exited(c) => ExitStatus::Exited(c),
            pidfd::Ended::Killed(s) => ExitStatus::Killed(crate::names::signal_name(s)),
        }))
    }

    /// In kill_all: reaps a forked process once it is ours (its parent
    /// has ended), whatever it was doing.
    fn collect(&mut self, how: Reaped) {
        if self.reaped.is_some() {
            return;
        }
        if let Some(fd) = &self.pidfd {
            // ECHILD if it is not ours: its parent reaped it before ending.
            if pidfd::wait(fd, true).is_ok() {
                self.reaped = Some(how);
            }
        }
    }
}

impl Reaped {
    fn describe(&self) -> String {
        match self {
            Reaped::ByWait(step) => format!("by the `wait` of step {step}"),
            Reaped::DiedDuring(step) => {
                format!("by the harness when it died during step {step}")
            }
            Reaped::AtCrash => "at the crash".to_string(),
            Reaped::AtTeardown => "at the end of the case".to_string(),
        }
    }
}

/// waitpid(2) for our own unreaped child.
fn wait_pid(pid: i32) -> Result<pidfd::Ended, nix::errno::Errno> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r >= 0 {
            break;
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::EINTR => continue,
            e => return Err(e),
        }
    }
    Ok(if libc::WIFSIGNALED(status) {
        pidfd::Ended::Killed(libc::WTERMSIG(status))
    } else {
        pidfd::Ended::Exited(libc::WEXITSTATUS(status))
    })
}

/// What a step reports when its process's channel closed: the process
/// died during the step, or before it, of a signal a `kill` step sent.
/// `status` is known only for processes the coordinator spawned.
fn death_message(
    name: &str,
    signalled: Option<&(String, String)>,
    status: Option<ExitStatus>,
) -> String {
    match (signalled, status) {
        // The status says it was that signal.
        (Some((at, sig)), Some(ExitStatus::Killed(s))) if *s == *sig => {
            format!("process `{name}` was killed by {sig} at step {at} (before this step)")
        }
        // No status (a forked process: its parent holds it), but SIGKILL
        // cannot be caught, and between steps a worker does nothing else.
        (Some((at, sig)), None) if sig == "SIGKILL" => {
            format!("process `{name}` was killed by {sig} at step {at} (before this step)")
        }
        (Some((at, sig)), None) if terminates(sig) => format!(
            "process `{name}` ended before this step, after the {sig} sent to it at step {at}"
        ),
        (_, Some(ExitStatus::Exited(c))) => {
            format!("process `{name}` died during the step (exit status {c})")
        }
        (_, Some(ExitStatus::Killed(s))) => {
            format!("process `{name}` died during the step (killed by {s})")
        }
        (_, None) => format!("process `{name}` died during the step"),
    }
}

/// Whether a signal's default action ends a process (workers handle
/// none but SIGBUS and SIGSEGV, which end them too outside an access).
fn terminates(sig: &str) -> bool {
    !matches!(
        sig,
        "SIGSTOP"
            | "SIGTSTP"
            | "SIGTTIN"
            | "SIGTTOU"
            | "SIGCONT"
            | "SIGCHLD"
            | "SIGURG"
            | "SIGWINCH"
    )
}
