//! Threads of a case's processes, as the coordinator sees them. Each
//! thread has its own channel, kept with the processes' under a key that
//! joins the process's and the thread's names, so that a step in a thread
//! is sent, batched, joined in `together` and timed out like any other;
//! what differs is told here: how a thread is started, and that a thread's
//! channel closing means its whole process ended.

use super::processes::{death_message, Proc, Reaped};
use super::{Run, Stop};
use crate::case::model::Step;
use crate::case::validate::MAIN_THREAD;
use crate::exec::protocol::{Channel, Observation, Outcome, Request};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// Joins process and thread names in a key; validation keeps control
/// characters out of both names, so no process name is such a key.
const SEP: char = '\u{1f}';

/// Whether `step` is performed by its process's main thread (its key is
/// the process's name), told without making the key.
pub(super) fn in_main_thread(step: &Step) -> bool {
    step.thread.as_deref().is_none_or(|t| t == MAIN_THREAD)
}

/// The key of the channel that performs `step`: its process's name, or
/// that joined with a thread's name other than `main`.
pub(super) fn key(step: &Step, process: &str) -> String {
    match step.thread.as_deref() {
        Some(t) if t != MAIN_THREAD => format!("{process}{SEP}{t}"),
        _ => process.to_string(),
    }
}

/// The process and thread a key names, if it names a thread.
fn split(key: &str) -> Option<(&str, &str)> {
    key.split_once(SEP)
}

/// The process of a key: itself, or the process of the thread it names.
pub(super) fn process_of(key: &str) -> &str {
    split(key).map_or(key, |(p, _)| p)
}

/// "process `a`" or "thread `t2` of process `a`", for messages.
pub(super) fn describe(key: &str) -> String {
    match split(key) {
        Some((p, t)) => format!("thread `{t}` of process `{p}`"),
        None => format!("process `{key}`"),
    }
}

impl Run<'_> {
    /// `spawn_thread`: the thread (or main thread) `by` starts a thread,
    /// which serves the channel made here; `step.name` names it.
    pub(super) fn spawn_thread(&mut self, by: &str, step: &Step) -> Result<Observation, Stop> {
        let process = process_of(by).to_string();
        let name = step.name.as_deref().unwrap_or_default();
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Stop::Broken(format!("socketpair: {e}")))?;
        self.send(by, Request::Thread, Some(theirs.as_raw_fd()))?;
        drop(theirs);
        let obs = self.receive(by)?;
        if obs.outcome != Outcome::Ok {
            return Ok(obs);
        }
        let chan = Channel::new(ours).map_err(|e| Stop::Broken(format!("channel: {e}")))?;
        let owner = self.proc(&process)?;
        let (pid, group) = (owner.pid, owner.group);
        let born = self.procs.len();
        self.procs.insert(
            format!("{process}{SEP}{name}"),
            Proc {
                pid,
                // Signals, waits and reaping go to the process, never to a thread.
                pidfd: None,
                chan,
                parent: None,
                spawned: false,
                reaped: None,
                gone: false,
                signalled: None,
                born,
                group,
                // A thread serves its own channel only: hand-off runs are for main threads.
                attached: super::processes::Attached::Refused,
            },
        );
        Ok(obs)
    }

    /// A thread's channel closed during a step: its process ended (a
    /// thread's death by a signal kills the whole process). Reported on the
    /// step as the process's death, naming the thread the step was in.
    pub(super) fn thread_ended(&mut self, key: &str, step: String) -> Observation {
        let Some((process, thread)) = split(key) else {
            return Observation::error(format!("`{key}` is not a thread"));
        };
        if let Some(t) = self.procs.get_mut(key) {
            t.gone = true;
        }
        let Some(p) = self.procs.get_mut(process) else {
            return Observation::error(format!("no process `{process}`"));
        };
        p.gone = true;
        let status = match p.reap(Reaped::DiedDuring(step)) {
            Some(Ok(status)) => Some(status),
            _ => None,
        };
        let message = death_message(process, p.signalled.as_ref(), status);
        Observation::of(Outcome::Error {
            message: format!("{message}; the step was in its thread `{thread}`"),
        })
    }
}
