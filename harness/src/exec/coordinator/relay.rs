//! The coordinator's side of direct hand-offs (see `exec::relay`): which
//! upcoming steps can be one run, starting it, supervising it (deaths, the
//! time limit), and judging its observations in step order afterwards.
//!
//! A run holds only plain calls of processes that exist already: any step
//! the coordinator acts in (fork, exit, wait, kill, together, check_file,
//! remount, crash, fill_fs ...), a process still to be started, or a step
//! whose call cannot be planned ends it, exactly as it ends a batch; so
//! does a step in a thread other than a process's main thread.

use super::processes::Attached;
use super::{us_since, worker_step, Run, Stop};
use crate::case::model::Step;
use crate::exec::plan;
use crate::exec::protocol::{Call, Outcome, Request};
use crate::exec::relay::{self, Item, Region, ENDED, WAITING};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The most steps of one run: enough that the coordinator's wake-up is rare.
const MAX_RELAY: usize = 1024;
/// A run of one process's steps shorter than this goes as a batch. A batch
/// of n steps wakes the coordinator n times (each answer as it comes); a
/// run wakes it once, after one round trip to map the region (once per
/// process). From three steps on the run switches less, which is what
/// costs under TCG (every switch flushes the emulated TLB).
const MIN_ALONE: usize = 3;

/// A run: its processes (slot = index) and each step's owner slot and call.
struct Plan {
    names: Vec<String>,
    calls: Vec<(usize, Call)>,
}

impl Run<'_> {
    /// The run at the start of `steps`, if one is worth it.
    fn relay_plan(&self, steps: &[Step]) -> Option<Plan> {
        let mut plan = Plan {
            names: Vec::new(),
            calls: Vec::new(),
        };
        for step in steps.iter().take(MAX_RELAY.min(relay::MAX_SEQ)) {
            // A step in a thread other than main goes over that thread's own channel.
            let Some(name) = step
                .process
                .as_ref()
                .filter(|_| worker_step(step) && super::threads::in_main_thread(step))
            else {
                break;
            };
            let usable = self
                .procs
                .get(name)
                .is_some_and(|p| !p.gone && p.reaped.is_none() && p.attached != Attached::Refused);
            let Some(call) = usable.then(|| plan::call(step, self.ps()).ok().flatten()) else {
                break;
            };
            let Some(call) = call else { break };
            let slot = match plan.names.iter().position(|n| n == name) {
                Some(slot) => slot,
                None if plan.names.len() < relay::MAX_SLOTS => {
                    plan.names.push(name.clone());
                    plan.names.len() - 1
                }
                None => break,
            };
            plan.calls.push((slot, call));
        }
        (plan.names.len() >= 2 || plan.calls.len() >= MIN_ALONE).then_some(plan)
    }

    /// Maps the region in process `name` (making the region first if need
    /// be). A process that cannot map it is left out of runs from now on.
    fn attach(&mut self, name: &str) -> Result<(), Stop> {
        let fd = self.region_fd()?;
        self.send(name, Request::Attach, Some(fd))?;
        let obs = self.receive(name)?;
        self.proc(name)?.attached = match obs.outcome {
            Outcome::Ok => Attached::Yes,
            _ => Attached::Refused,
        };
        Ok(())
    }

    /// Performs the run at the start of `steps` (`first` is the index of
    /// the first, from 0) and records its steps. None when no run fits
    /// (the caller sends the steps as before); Some(0) when the run ended
    /// before its first step (the caller performs that step alone).
    pub(super) fn relay(&mut self, steps: &[Step], first: usize) -> Result<Option<usize>, Stop> {
        let Some(mut plan) = self.relay_plan(steps) else {
            return Ok(None);
        };
        let unattached: Vec<String> = plan
            .names
            .iter()
            .filter(|n| {
                self.procs
                    .get(*n)
                    .is_some_and(|p| p.attached == Attached::No)
            })
            .cloned()
            .collect();
        for name in &unattached {
            self.attach(name)?;
        }
        let refused = unattached.iter().any(|n| {
            self.procs
                .get(n)
                .is_none_or(|p| p.attached == Attached::Refused)
        });
        if refused {
            // Without the processes that could not map it.
            match self.relay_plan(steps) {
                Some(p) => plan = p,
                None => return Ok(None),
            }
        }
        self.epoch = self.epoch.wrapping_add(1);
        let epoch = self.epoch;
        let owners: Vec<usize> = plan.calls.iter().map(|(slot, _)| *slot).collect();
        let mut items: Vec<Vec<Item>> = vec![Vec::new(); plan.names.len()];
        for (seq, (slot, call)) in plan.calls.into_iter().enumerate() {
            items[slot].push(Item {
                seq: seq as u32,
                call,
                next: owners.get(seq + 1).map(|&s| s as u8),
            });
        }
        self.region().start(epoch);
        let started = Instant::now();
        for (slot, (name, items)) in plan.names.iter().zip(items).enumerate() {
            let req = Request::Relay {
                epoch,
                slot: slot as u8,
                items,
            };
            if let Err(stop) = self.send(name, req, None) {
                self.region().cancel();
                return Err(stop);
            }
        }
        self.supervise(steps, first, &plan.names, &owners, started)
            .map(Some)
    }

    /// The region's memfd, making the region first if need be.
    pub(super) fn region_fd(&mut self) -> Result<std::os::fd::RawFd, Stop> {
        if self.region.is_none() {
            let made = Region::create().map_err(|e| Stop::Broken(format!("relay region: {e}")))?;
            self.region = Some(made);
        }
        Ok(self
            .region
            .as_ref()
            .map(|(_, fd)| fd.as_raw_fd())
            .expect("made above"))
    }

    fn region(&self) -> &Region {
        &self.region.as_ref().expect("attached before a run").0
    }

    /// Waits for the run to end: its last step's answer, a death, or the
    /// time limit; then records what was performed, in step order.
    fn supervise(
        &mut self,
        steps: &[Step],
        first: usize,
        names: &[String],
        owners: &[usize],
        started: Instant,
    ) -> Result<usize, Stop> {
        let mut watched = vec![true; names.len()];
        loop {
            let Some(slot) = self.ready(names, &watched)? else {
                // The time limit: the step the turn is at is the one that hung.
                let s = relay::seq_of(self.region().cancel()) as usize;
                self.record_logged(steps, first, s)?;
                self.current = Some(((first + s + 1).to_string(), plan::summary(&steps[s])));
                return Err(Stop::Broken(format!(
                    "timed out after {:.1}s waiting for process `{}`",
                    self.limit.as_secs_f64(),
                    names[owners[s]]
                )));
            };
            let t = self.region().turn().load(Ordering::Acquire);
            let (s, state) = (relay::seq_of(t) as usize, relay::state_of(t));
            // Either the owner of the step the run ended at answers, or a
            // process's channel closed: it died. Either way the run is over.
            let t = if state == ENDED && owners[s] == slot {
                t
            } else {
                self.region().cancel()
            };
            let s = relay::seq_of(t) as usize;
            if relay::state_of(t) == WAITING {
                // Nobody performs step `s` now: it is the caller's.
                self.record_logged(steps, first, s)?;
                return Ok(s);
            }
            if owners[s] != slot {
                // A process died out of turn: the step running ends the
                // run, and the dead process's steps go alone from now on,
                // where its death is seen at its next step.
                watched[slot] = false;
                self.proc(&names[slot])?.attached = Attached::Refused;
                continue;
            }
            let index = (first + s + 1).to_string();
            self.current = Some((index.clone(), plan::summary(&steps[s])));
            // Its answer, or its death as `receive` tells it.
            let obs = self.receive(&names[slot])?;
            self.if_last(steps, s);
            let logged = self.record_logged(steps, first, s)?;
            let us = us_since(started).saturating_sub(logged);
            self.record(&index, &steps[s], obs, us)?;
            return Ok(s + 1);
        }
    }

    /// Records the first `n` steps of the run from the log, in order;
    /// returns the time they took, in microseconds.
    fn record_logged(&mut self, steps: &[Step], first: usize, n: usize) -> Result<u64, Stop> {
        let entries = self.region().entries(n).map_err(Stop::Broken)?;
        let mut total = 0;
        for (k, (obs, us)) in entries.into_iter().enumerate() {
            // Described by `record`, once.
            let index = (first + k + 1).to_string();
            self.record(&index, &steps[k], obs, us)?;
            total += us;
        }
        Ok(total)
    }

    /// The slot of a watched process whose channel has something (an
    /// answer, or its end), or None at the case's deadline.
    fn ready(&self, names: &[String], watched: &[bool]) -> Result<Option<usize>, Stop> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let chans: Vec<(usize, &crate::exec::protocol::Channel)> = names
            .iter()
            .enumerate()
            .filter(|(slot, _)| watched[*slot])
            .filter_map(|(slot, n)| self.procs.get(n).map(|p| (slot, &p.chan)))
            .collect();
        if let Some((slot, _)) = chans.iter().find(|(_, c)| c.has_buffered()) {
            return Ok(Some(*slot));
        }
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return Ok(None);
            }
            let ms = (self.deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut fds: Vec<PollFd> = chans
                .iter()
                .map(|(_, c)| PollFd::new(c.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {
                    let hit = fds
                        .iter()
                        .position(|f| f.revents().is_some_and(|r| !r.is_empty()));
                    if let Some(k) = hit {
                        return Ok(Some(chans[k].0));
                    }
                }
                Err(e) => return Err(Stop::Broken(format!("poll on the workers: {e}"))),
            }
        }
    }
}
