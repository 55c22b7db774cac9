//! Validation of threads: the `thread` key of a step and `spawn_thread`.
//! A thread is named within its process, as fds and mappings are; a step
//! that names a thread its process does not have at that step is an
//! error at that step's `thread` field.

use super::Walk;
use crate::case::locate::Seg;
use crate::case::model::Step;

/// The name of a process's first thread: the one a step without `thread` runs in.
pub const MAIN_THREAD: &str = "main";

/// The most threads a process may spawn. Each is a real thread holding a
/// channel to the harness; the corpus uses at most 3.
pub const MAX_THREADS: usize = 32;

/// Why a thread name cannot be used, if it cannot. The coordinator keys a
/// thread's channel by process and thread name joined with a control
/// character, so names have none (and a `/`, which reports use to join them).
fn bad_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a thread name is not empty")
    } else if name.chars().any(|c| c.is_control() || c == '/') {
        Some("a thread name has no `/` and no control characters")
    } else {
        None
    }
}

impl Walk {
    /// The `thread` key of a step: only on a process's own steps, naming
    /// `main` or a thread its process spawned before this step.
    pub(super) fn thread(&mut self, step: &Step, path: &[Seg], coordinator_op: bool) {
        let Some(t) = &step.thread else { return };
        self.label(path, "thread", t);
        if coordinator_op {
            self.key_issue(
                path,
                "thread",
                format!(
                    "`{}` is done by the harness itself, not by a thread; leave out `thread`",
                    step.op.name()
                ),
            );
            return;
        }
        let Some(p) = &step.process else { return };
        if let Some(why) = bad_name(t) {
            self.value_issue(path, "thread", why);
            return;
        }
        if p.chars().any(|c| c.is_control()) {
            self.value_issue(
                path,
                "in",
                "a process with threads has no control characters in its name",
            );
        }
        if t == MAIN_THREAD {
            return;
        }
        let known = self.procs.get(p).is_some_and(|v| v.threads.contains(t));
        if !known && self.check_names {
            self.key_issue(
                path,
                "thread",
                format!(
                    "thread `{t}` does not exist in process `{p}` at this step (a `spawn_thread` makes it)"
                ),
            );
        }
    }

    /// `spawn_thread ... as NAME` in process `p`.
    pub(super) fn spawn_thread(&mut self, path: &[Seg], p: &str, name: &str) {
        if let Some(why) = bad_name(name) {
            self.value_issue(path, "as", why);
            return;
        }
        if name == MAIN_THREAD {
            self.key_issue(
                path,
                "as",
                format!(
                    "`{MAIN_THREAD}` is the process's first thread; name the new one otherwise"
                ),
            );
            return;
        }
        let Some(view) = self.procs.get_mut(p) else {
            return;
        };
        if view.threads.contains(name) {
            let msg = format!("thread `{name}` already exists in process `{p}`");
            self.key_issue(path, "as", msg);
        } else if view.threads.len() >= MAX_THREADS {
            let msg =
                format!("a process has at most {MAX_THREADS} threads; `{name}` would be one more");
            self.key_issue(path, "as", msg);
        } else {
            view.threads.insert(name.to_string());
        }
    }
}
