//! The processes of a case: starting fresh ones through the fork server,
//! forks, exits, waits and kills, each addressed by pidfd, and the end of
//! every process when the case ends. How a process died is told once, as
//! the step that caused it.

use super::{Run, Stop};
use crate::case::model::Step;
use crate::exec::protocol::{Call, Channel, ExitStatus, Observation, Outcome, RecvError, Request};
use crate::exec::{fork_server, live, pidfd};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
pub(super) struct Proc {
    /// For reports and the power-cut state only: signals and waits go
    /// through `pidfd`, since this number may belong to another process
    /// once this one is reaped.
    pub(super) pid: i32,
    /// Opened while the process was certainly not reaped (see spawn and
    /// fork); None for a process of before a power cut, or if opening failed.
    pub(super) pidfd: Option<std::os::fd::OwnedFd>,
    pub(super) chan: Channel,
    /// The worker that forked this one; None for a process the coordinator spawned.
    pub(super) parent: Option<String>,
    /// A process the coordinator spawned, so its child: waiting is ours to do.
    pub(super) spawned: bool,
    /// Its exit status was collected, and when: it has no pid any more.
    pub(super) reaped: Option<Reaped>,
    /// It performed `exit`, was waited for, or its channel closed.
    pub(super) gone: bool,
    /// The last signal a `kill` step sent it (step index, signal name), so
    /// that its death is reported as that kill, not as the next step's.
    pub(super) signalled: Option<(String, String)>,
    /// Creation order: a forked process comes after its parent.
    pub(super) born: usize,
    /// The registered process group it belongs to (None: of before a power cut).
    pub(super) group: Option<live::GroupId>,
    /// Whether it has mapped the region of direct hand-offs (`relay`).
    pub(super) attached: Attached,
}

/// Whether a process can take part in runs of direct hand-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attached {
    /// Not mapped yet: a child forked by a thread other than main, or by
    /// a process that had not mapped it (fresh processes map it as they
    /// start); asked to at its first run.
    No,
    /// It mapped the region (or inherited it from its parent by fork).
    Yes,
    /// It could not map it (a case's limit), or it died out of turn in a
    /// run: its steps are sent one by one, as before.
    Refused,
}

/// When a process's exit status was collected.
#[derive(Debug, Clone)]
pub(super) enum Reaped {
    /// By a `wait` step (index).
    ByWait(String),
    /// By the coordinator, when the process died during a step (index).
    DiedDuring(String),
    /// By a `crash` step, or before a real power cut: it died with the machine.
    AtCrash,
    /// By the end of the case.
    AtTeardown,
}

impl Run<'_> {
    /// The process a worker step names, spawning it if it is new.
    pub(super) fn proc_for(&mut self, step: &Step) -> Result<String, Stop> {
        let name = step
            .process
            .clone()
            .ok_or_else(|| Stop::Broken(format!("`{}` has no `in`", step.op.name())))?;
        if !self.procs.contains_key(&name) {
            self.spawn(&name)?;
        }
        let key = super::threads::key(step, &name);
        if !self.procs.contains_key(&key) {
            return Err(Stop::Broken(format!(
                "no {} (was its spawn_thread performed?)",
                super::threads::describe(&key)
            )));
        }
        Ok(key)
    }

    pub(super) fn spawn(&mut self, name: &str) -> Result<(), Stop> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Stop::Broken(format!("socketpair: {e}")))?;
        // Before the process exists, so nothing can fail between its start
        // and its record (teardown finds it only there).
        let chan = Channel::new(ours).map_err(|e| Stop::Broken(format!("channel: {e}")))?;
        // The region of direct hand-offs goes along: the process maps it as
        // it starts, rather than at a round trip of its own before its
        // first run of steps (most processes have one).
        let region = self.region_fd()?;
        let dir = self.second_dirs.get(name).unwrap_or(&self.dir);
        let pid = fork_server::spawn_worker(&self.opts.worker_exe, dir, &theirs, Some(region))
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
                attached: Attached::Yes,
            },
        );
        match failed {
            // Recorded anyway: teardown kills and reaps it by its group.
            Some(e) => Err(Stop::Broken(format!("pidfd_open for `{name}`: {e}"))),
            None => Ok(()),
        }
    }

    pub(super) fn proc(&mut self, name: &str) -> Result<&mut Proc, Stop> {
        self.procs
            .get_mut(name)
            .ok_or_else(|| Stop::Broken(format!("no process `{name}`")))
    }

    pub(super) fn send(&mut self, name: &str, req: Request, fd: Option<i32>) -> Result<(), Stop> {
        let p = self.proc(name)?;
        if p.gone {
            let why = match &p.signalled {
                Some((at, sig)) => format!(" (it was sent {sig} at step {at})"),
                None => String::new(),
            };
            return Err(Stop::Broken(format!(
                "{} has already ended{why}",
                super::threads::describe(name)
            )));
        }
        // A send to a process that died is seen as a closed channel on receive.
        let _ = p.chan.send(&req, fd);
        Ok(())
    }

    pub(super) fn receive(&mut self, name: &str) -> Result<Observation, Stop> {
        let deadline = self.deadline;
        let limit = self.limit;
        let step = self.step_index();
        let p = self.proc(name)?;
        match p.chan.recv(deadline) {
            Ok(obs) => Ok(obs),
            Err(RecvError::TimedOut) => Err(Stop::Broken(format!(
                "timed out after {:.1}s waiting for {}",
                limit.as_secs_f64(),
                super::threads::describe(name)
            ))),
            Err(RecvError::Closed) if super::threads::process_of(name) != name => {
                Ok(self.thread_ended(name, step))
            }
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

    pub(super) fn fork(&mut self, parent: &str, child: &str) -> Result<Observation, Stop> {
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
            // fork(2) copies the parent's mapping of the region, shared;
            // but a child forked by a thread other than main is served by
            // that thread, which does not hold the mapping: it maps it anew.
            let by_main = super::threads::process_of(parent) == parent;
            let attached = match self.proc(parent)?.attached {
                Attached::Yes if by_main => Attached::Yes,
                _ => Attached::No,
            };
            if let (Some(group), Ok(fd)) = (group, &pidfd) {
                live::add_member(group, fd);
            }
            self.procs.insert(
                child.to_string(),
                Proc {
                    pid,
                    pidfd: pidfd.ok(),
                    chan,
                    // The process, whichever of its threads forked.
                    parent: Some(super::threads::process_of(parent).to_string()),
                    spawned: false,
                    reaped: None,
                    gone: false,
                    signalled: None,
                    born: self.procs.len(),
                    group,
                    attached,
                },
            );
            if let Some(e) = failed {
                return Err(Stop::Broken(format!("pidfd_open for `{child}`: {e}")));
            }
        }
        Ok(obs)
    }

    pub(super) fn exit(&mut self, name: &str, code: i32) -> Result<Observation, Stop> {
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
    pub(super) fn wait(&mut self, target: &str) -> Result<Observation, Stop> {
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
    pub(super) fn kill(&mut self, target: &str, signal: &str) -> Observation {
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

    /// Kills every process of the case and reaps them, recording `how`.
    pub(super) fn kill_all(&mut self, how: Reaped) {
        // 1. SIGKILL to everything.
        self.signal_all();
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

    /// SIGKILL to every process of the case that was not reaped, without
    /// waiting for any: what `kill_all` starts with, and what the walk does
    /// once the case's last step has been observed, so that the processes'
    /// ends (their address spaces torn down) overlap with the judging of
    /// the steps instead of following it.
    pub(super) fn signal_all(&self) {
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
    }

    /// Ends every process of the case, whatever state it is in, and reaps them.
    pub(super) fn teardown(&mut self) {
        // Forked workers whose parents die are reparented to us (we are a
        // child subreaper); kill_all collects them so no zombie outlives the case.
        self.kill_all(Reaped::AtTeardown);
        for &(_, group) in &self.pgids {
            live::remove_group(group);
        }
    }
}

impl Proc {
    /// Waits for a process the coordinator spawned, once, and records
    /// `how` it was reaped: None for a forked process (its parent is a
    /// worker) or one already reaped.
    pub(super) fn reap(&mut self, how: Reaped) -> Option<Result<ExitStatus, nix::errno::Errno>> {
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
    pub(super) fn collect(&mut self, how: Reaped) {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) fn death_message(
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
