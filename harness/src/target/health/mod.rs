//! Health checks around every case (like fstests' dmesg and fsck checks and
//! LTP's taint check): what the kernel logged while a case ran, the taint
//! flags before and after, and the owned filesystem's read-only fsck at the
//! end of a run. A case during which the kernel complained fails with the
//! log excerpt even when every observation was right.
//!
//! Cases run at once on several threads, and the kernel log does not say
//! which process a message is about, so a message is attributed by when it
//! was read: to every case that was running then; the excerpt then names
//! the other cases, since it cannot be tied to one.

pub mod fsck;
pub mod kmsg;
pub mod taint;

use crate::report::{CaseReport, Status};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Env var that makes records written to /dev/kmsg from userspace
/// (facility LOG_USER) count as kernel ones: only for tests that plant a
/// warning. Without it, userspace noise in the log never fails a case.
pub const ACCEPT_USER_RECORDS: &str = "MMAPCONF_KMSG_ACCEPT_USER";
/// Test-only: a case whose id contains this variable's value gets a
/// kernel-like WARNING written to /dev/kmsg while it runs.
pub const PLANT_WARNING: &str = "MMAPCONF_TEST_PLANT_KMSG";

/// The health of a run as a whole, in its report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunHealth {
    /// How the kernel log was read ("/dev/kmsg"), or why it could not be.
    pub kernel_log: String,
    /// /proc/sys/kernel/tainted at the start and the end of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint_after: Option<u64>,
    /// Complaints of the kernel while no case ran (making, checking or
    /// removing the target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_cases: Vec<String>,
    /// The kernel overwrote records before the harness read them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub records_lost: bool,
    /// The read-only fsck of the owned filesystem at the end of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsck: Option<fsck::Outcome>,
}

/// A complaint, numbered in the order the harness read it.
struct Complaint {
    at: u64,
    line: String,
}

/// When a case ran, in the numbering of records read.
struct Window {
    case: String,
    start: u64,
    end: Option<u64>,
}

struct State {
    kmsg: Option<kmsg::Kmsg>,
    accept_user: bool,
    /// Records read so far (all of them, not only complaints).
    read: u64,
    taint: Option<u64>,
    complaints: Vec<Complaint>,
    windows: Vec<Window>,
    lost: bool,
}

impl State {
    /// Reads what the kernel logged and the taint flags since last time.
    fn catch_up(&mut self) {
        if let Some(k) = self.kmsg.as_mut() {
            let drained = k.drain();
            self.lost |= drained.lost;
            for r in drained.records {
                self.read += 1;
                if r.facility == kmsg::FACILITY_USER && !self.accept_user {
                    continue;
                }
                if r.facility > kmsg::FACILITY_USER {
                    continue;
                }
                if let Some(kind) = kmsg::complaint_kind(&r.text) {
                    let line = format!("{kind}: {}", r.line());
                    self.complaints.push(Complaint {
                        at: self.read,
                        line,
                    });
                }
            }
        }
        let now = taint::read();
        if let (Some(before), Some(after)) = (self.taint, now) {
            if let Some(line) = taint::newly_set(before, after) {
                self.read += 1;
                self.complaints.push(Complaint {
                    at: self.read,
                    line,
                });
            }
        }
        self.taint = now.or(self.taint);
    }

    fn in_window(w: &Window, at: u64) -> bool {
        w.start < at && w.end.is_none_or(|e| at <= e)
    }
}

/// The health checks of one run, shared by the threads that run its cases.
pub struct Monitor {
    state: Mutex<State>,
    kernel_log: String,
    taint_before: Option<u64>,
}

/// A running case, as the monitor knows it.
pub struct CaseMark(usize);

impl Monitor {
    /// Starts watching: the kernel log from now on, the taint flags now.
    pub fn start() -> Monitor {
        let (kmsg, kernel_log) = match kmsg::Kmsg::open_at_end() {
            Ok(k) => (Some(k), "/dev/kmsg".to_string()),
            Err(e) => (None, format!("not read: /dev/kmsg: {e}")),
        };
        let taint_before = taint::read();
        Monitor {
            state: Mutex::new(State {
                kmsg,
                accept_user: std::env::var(ACCEPT_USER_RECORDS).is_ok_and(|v| v == "1"),
                read: 0,
                taint: taint_before,
                complaints: Vec::new(),
                windows: Vec::new(),
                lost: false,
            }),
            kernel_log,
            taint_before,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A case starts: what was logged before is not its.
    pub fn case_started(&self, id: &str) -> CaseMark {
        let mut s = self.lock();
        s.catch_up();
        let start = s.read;
        s.windows.push(Window {
            case: id.to_string(),
            start,
            end: None,
        });
        drop(s);
        plant_if_asked(id);
        CaseMark(self.lock().windows.len() - 1)
    }

    /// A case ended: the complaints logged while it ran, each naming the
    /// other cases that were running then.
    pub fn case_finished(&self, mark: CaseMark) -> Vec<String> {
        let mut s = self.lock();
        s.catch_up();
        let end = s.read;
        s.windows[mark.0].end = Some(end);
        let w = &s.windows[mark.0];
        s.complaints
            .iter()
            .filter(|c| State::in_window(w, c.at))
            .map(|c| {
                let others: Vec<&str> = s
                    .windows
                    .iter()
                    .enumerate()
                    .filter(|(i, o)| *i != mark.0 && State::in_window(o, c.at))
                    .map(|(_, o)| o.case.as_str())
                    .collect();
                if others.is_empty() {
                    c.line.clone()
                } else {
                    format!(
                        "{} (cannot be tied to this case alone: also running {})",
                        c.line,
                        others.join(", ")
                    )
                }
            })
            .collect()
    }

    /// Runs a case with the checks around it: its report, failed when the
    /// kernel complained meanwhile. A skipped case ran nothing, so what
    /// was logged meanwhile goes to the others, or to the run.
    pub fn around(&self, id: &str, run: impl FnOnce() -> CaseReport) -> CaseReport {
        let mark = self.case_started(id);
        let mut report = run();
        if report.status == Status::Skip {
            let mut s = self.lock();
            let w = &mut s.windows[mark.0];
            w.end = Some(w.start);
        } else {
            let complaints = self.case_finished(mark);
            judge(&mut report, complaints);
        }
        report
    }

    /// The run's health at its end, with the fsck of its filesystem;
    /// what the kernel logged outside every case and a damaged filesystem
    /// each fail the run, as an entry of `cases` (`health/kernel-log`,
    /// `health/fsck`) that reports, baselines and exit statuses all see.
    pub fn finish(&self, fsck: Option<fsck::Outcome>, cases: &mut Vec<CaseReport>) -> RunHealth {
        let mut health = self.summary();
        health.fsck = fsck;
        let mut entry = |id: &str, title: &str, reason: String, log: &[String]| {
            let mut c =
                CaseReport::not_run(id.to_string(), title.to_string(), Status::Fail, reason);
            // So that a baseline's `kmsg:` lines can know them too.
            c.kernel_log = log.to_vec();
            cases.push(c)
        };
        if !health.outside_cases.is_empty() {
            entry(
                "health/kernel-log",
                "The kernel complained while no case ran",
                format!(
                    "the kernel complained outside the cases (making, checking or removing the target):\n  {}",
                    health.outside_cases.join("\n  ")
                ),
                &health.outside_cases,
            );
        }
        if let Some(f) = health.fsck.as_ref().filter(|f| !f.clean) {
            entry(
                "health/fsck",
                "The filesystem is consistent after the run",
                f.describe(),
                &[],
            );
        }
        health
    }

    fn summary(&self) -> RunHealth {
        let mut s = self.lock();
        s.catch_up();
        let outside = s
            .complaints
            .iter()
            .filter(|c| !s.windows.iter().any(|w| State::in_window(w, c.at)))
            .map(|c| c.line.clone())
            .collect();
        RunHealth {
            kernel_log: self.kernel_log.clone(),
            taint_before: self.taint_before,
            taint_after: s.taint,
            outside_cases: outside,
            records_lost: s.lost,
            fsck: None,
        }
    }
}

/// Test hook ([`PLANT_WARNING`]): a kernel-like warning in the log while
/// the case runs. Written from userspace, it has facility LOG_USER, so it
/// counts only where [`ACCEPT_USER_RECORDS`] is set.
fn plant_if_asked(id: &str) {
    let Ok(want) = std::env::var(PLANT_WARNING) else {
        return;
    };
    if want.is_empty() || !id.contains(&want) {
        return;
    }
    let text = format!(
        "<4>WARNING: CPU: 0 PID: {} at mm/mmapconf_planted.c:1 planted_for_{id}+0x0/0x0\n",
        std::process::id()
    );
    if let Err(e) = std::fs::write("/dev/kmsg", text) {
        eprintln!("mmapconf: {PLANT_WARNING}: /dev/kmsg: {e}");
    }
}

/// A case report with the kernel's complaints during the case: a case
/// that passed fails, with the excerpt as its reason; one that already
/// failed or broke keeps its status and gets the excerpt added.
pub fn judge(report: &mut CaseReport, complaints: Vec<String>) {
    if complaints.is_empty() {
        return;
    }
    let excerpt = format!(
        "the kernel complained during the case:\n  {}",
        complaints.join("\n  ")
    );
    report.reason = Some(match report.reason.take() {
        Some(r) => format!("{r}\n{excerpt}"),
        None => excerpt,
    });
    if report.status == Status::Pass {
        report.status = Status::Fail;
    }
    report.kernel_log = complaints;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complaint_belongs_to_the_cases_running_when_it_was_read() {
        let w = |start, end| Window {
            case: String::new(),
            start,
            end,
        };
        assert!(State::in_window(&w(0, Some(3)), 1));
        assert!(State::in_window(&w(0, Some(3)), 3));
        assert!(!State::in_window(&w(3, Some(5)), 3));
        assert!(!State::in_window(&w(3, Some(3)), 3));
        assert!(State::in_window(&w(3, None), 9));
    }

    #[test]
    fn complaints_outside_cases_and_a_damaged_filesystem_fail_the_run() {
        let m = Monitor::start();
        m.lock().complaints.push(Complaint {
            at: 0,
            line: "WARNING: [ 1.000000] WARNING: at setup".into(),
        });
        let bad = fsck::Outcome {
            command: "e2fsck -f -n /dev/loop9".into(),
            clean: false,
            exit_status: Some(4),
            output: "Root inode not allocated.".into(),
        };
        let mut cases = Vec::new();
        let h = m.finish(Some(bad.clone()), &mut cases);
        let ids: Vec<(&str, Status)> = cases.iter().map(|c| (c.id.as_str(), c.status)).collect();
        assert_eq!(
            ids,
            [
                ("health/kernel-log", Status::Fail),
                ("health/fsck", Status::Fail)
            ]
        );
        assert!(cases[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("Root inode not allocated."));
        assert_eq!(h.fsck, Some(bad));
        let clean = Monitor::start();
        let mut none = Vec::new();
        let fine = fsck::Outcome {
            clean: true,
            output: String::new(),
            exit_status: Some(0),
            command: "x".into(),
        };
        clean.finish(Some(fine), &mut none);
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn a_passing_case_fails_with_the_excerpt_and_a_failing_one_keeps_its_status() {
        use crate::report::{CaseReport, Status};
        let mut r = CaseReport::not_run("a/b".into(), "t".into(), Status::Pass, String::new());
        r.reason = None;
        judge(&mut r, vec!["WARNING: [ 1.000000] WARNING: at x".into()]);
        assert_eq!(r.status, Status::Fail);
        assert!(r
            .reason
            .as_deref()
            .unwrap()
            .starts_with("the kernel complained during the case:\n  WARNING: "));
        assert_eq!(r.kernel_log.len(), 1);
        let mut e = CaseReport::not_run("a/c".into(), "t".into(), Status::Error, "timeout".into());
        judge(&mut e, vec!["BUG: x".into()]);
        assert_eq!(e.status, Status::Error);
        assert!(e
            .reason
            .as_deref()
            .unwrap()
            .starts_with("timeout\nthe kernel"));
        let mut p = CaseReport::not_run("a/d".into(), "t".into(), Status::Pass, "x".into());
        judge(&mut p, Vec::new());
        assert_eq!(p.status, Status::Pass);
    }
}
