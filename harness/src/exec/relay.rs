//! Direct hand-off between workers (issue 16): a run of consecutive worker
//! steps, possibly of several processes, performed without the coordinator
//! in between.
//!
//! Why: a step sent by the coordinator costs two switches (coordinator to
//! worker, worker back), and alternating processes pay them at every step.
//! Here the coordinator writes the run's schedule once (each worker gets
//! its own steps with their sequence numbers), and each worker, after its
//! step, writes the observation into a shared log and wakes the owner of
//! the next step itself: one switch a step. The step that ends the run
//! (its last, a fault, a step the worker could not perform, or an
//! observation too big for the log) sends its observation on its channel,
//! as any reply, which is the coordinator's one wake-up for the whole run.
//! The coordinator meanwhile only supervises (deaths, the time limit), and
//! judges the logged observations in step order afterwards.
//!
//! The shared region is a memfd, mapped in the coordinator and in every
//! worker that takes part: a fresh worker maps it as it starts, a forked
//! one inherits its parent's mapping.
//! Its first word is the turn: which run (epoch), which step (sequence
//! number) and in what state that step is. Every change of it is a
//! compare-and-swap, so a worker and the coordinator (cancelling at a time
//! limit or a death) never both think they own a step. Workers wait on it
//! as a futex, each with its own bit, so a hand-off wakes one process.

use super::ops::WorkerState;
use super::packed::{self, Packed};
use super::protocol::{ends_batch, Call, Observation};
use linux_futex::{AsFutex, Shared, WaitError};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// The size of the region: the turn word, the log's length, the log.
pub const REGION_SIZE: usize = 256 * 1024;
/// Where the log starts: past the turn word and the length, on its own cache line.
const LOG_START: usize = 64;

/// The step `seq` of run `epoch` is waiting for its owner to take it.
pub const WAITING: u32 = 0;
/// Its owner is performing it.
pub const RUNNING: u32 = 1;
/// The run ended at it: its owner sent its observation on its channel.
pub const ENDED: u32 = 2;
/// The coordinator ended the run (time limit, a death): a step waiting is
/// not performed; a step running ends the run when it is done.
pub const CANCELLED: u32 = 3;

/// The most steps of one run: the sequence number has 18 bits.
pub const MAX_SEQ: usize = 1 << 18;
/// The most processes in one run: one futex bit each.
pub const MAX_SLOTS: usize = 32;

/// The turn word: epoch (12 bits, wraps), sequence number (18 bits), state (2 bits).
pub fn turn(epoch: u32, seq: u32, state: u32) -> u32 {
    ((epoch & 0xfff) << 20) | ((seq & 0x3ffff) << 2) | state
}

pub fn epoch_of(t: u32) -> u32 {
    t >> 20
}

pub fn seq_of(t: u32) -> u32 {
    (t >> 2) & 0x3ffff
}

pub fn state_of(t: u32) -> u32 {
    t & 3
}

/// One step of a run, as the worker that performs it is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub seq: u32,
    pub call: Call,
    /// The futex slot of the next step's owner; None for the run's last step.
    pub next: Option<u8>,
}

/// The shared region, mapped in this process.
pub struct Region {
    base: *mut u8,
}

// SAFETY: the region is shared memory touched only through atomics (the
// turn, the log's length) and by the one owner of the turn (the log).
unsafe impl Send for Region {}

impl Region {
    /// A new region (a memfd of [`REGION_SIZE`]), mapped here; the fd is
    /// kept to be passed to workers.
    pub fn create() -> std::io::Result<(Region, OwnedFd)> {
        let fd = nix::sys::memfd::memfd_create(
            c"mmapconf relay",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        nix::unistd::ftruncate(&fd, REGION_SIZE as i64).map_err(std::io::Error::from)?;
        let region = Region::map(&fd)?;
        Ok((region, fd))
    }

    /// Maps a region made by [`Region::create`] (a worker's side; the fd
    /// may be closed afterwards: the mapping keeps the memfd).
    pub fn map(fd: &OwnedFd) -> std::io::Result<Region> {
        // SAFETY: a new shared mapping of the whole memfd, at an address
        // the kernel chooses, so it replaces nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Region {
            base: base as *mut u8,
        })
    }

    pub fn turn(&self) -> &AtomicU32 {
        // SAFETY: the first word of a live, page-aligned mapping.
        unsafe { &*(self.base as *const AtomicU32) }
    }

    fn used(&self) -> &AtomicU32 {
        // SAFETY: the second word of a live, page-aligned mapping.
        unsafe { &*(self.base.add(4) as *const AtomicU32) }
    }

    /// Starts run `epoch` at its first step, with an empty log.
    pub fn start(&self, epoch: u32) {
        self.used().store(0, Ordering::Relaxed);
        self.turn()
            .store(turn(epoch, 0, WAITING), Ordering::Release);
    }

    /// Appends one observation and how long its step took; false when it
    /// does not fit (the caller then sends it on its channel).
    fn append(&self, obs: &Observation, us: u32) -> bool {
        let body = Packed::of(obs);
        let at = self.used().load(Ordering::Relaxed) as usize;
        let len = body.len();
        let end = LOG_START + at + 8 + len;
        if end > REGION_SIZE {
            return false;
        }
        // SAFETY: within the mapping (checked above); only the owner of the
        // turn writes the log, and it publishes it with the turn's release.
        let entry =
            unsafe { std::slice::from_raw_parts_mut(self.base.add(LOG_START + at), 8 + len) };
        entry[..4].copy_from_slice(&(len as u32).to_le_bytes());
        entry[4..8].copy_from_slice(&us.to_le_bytes());
        body.write(&mut entry[8..]);
        self.used().store((at + 8 + len) as u32, Ordering::Relaxed);
        true
    }

    /// The first `n` observations of the log, each with its step's time in
    /// microseconds. Read after the run ended (the turn read with acquire).
    pub fn entries(&self, n: usize) -> Result<Vec<(Observation, u64)>, String> {
        let used = self.used().load(Ordering::Acquire) as usize;
        let mut out = Vec::with_capacity(n);
        let mut at = 0;
        for k in 0..n {
            if at + 8 > used {
                return Err(format!("relay log: entry {k} missing"));
            }
            let mut head = [0u8; 8];
            // SAFETY: within the log written so far (checked against `used`).
            unsafe {
                std::ptr::copy_nonoverlapping(self.base.add(LOG_START + at), head.as_mut_ptr(), 8)
            };
            let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
            let us = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as u64;
            if at + 8 + len > used {
                return Err(format!("relay log: entry {k} cut short"));
            }
            // SAFETY: as above.
            let body =
                unsafe { std::slice::from_raw_parts(self.base.add(LOG_START + at + 8), len) };
            let obs = packed::unpack(body).map_err(|e| format!("relay log: entry {k}: {e}"))?;
            out.push((obs, us));
            at += 8 + len;
        }
        Ok(out)
    }

    /// Ends the run from the coordinator's side. Returns the turn word it
    /// ended in: a step WAITING was not performed (nobody will answer for
    /// it); a step RUNNING will be answered on its owner's channel when it
    /// ends; ENDED means its owner has already answered.
    pub fn cancel(&self) -> u32 {
        let turn = self.turn();
        let mut t = turn.load(Ordering::Acquire);
        loop {
            let state = state_of(t);
            if state == ENDED || state == CANCELLED {
                break;
            }
            let to = (t & !3) | CANCELLED;
            match turn.compare_exchange(t, to, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => t = now,
            }
        }
        // Every worker still waiting for a step of this run leaves it.
        AsFutex::<Shared>::as_futex(turn).wake_bitset(i32::MAX, u32::MAX);
        t
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no reference into it outlives the Region.
        unsafe { libc::munmap(self.base as *mut libc::c_void, REGION_SIZE) };
    }
}

/// A worker's part of run `epoch`: its steps in order, each when its turn
/// comes. Returns the observation to send on the channel if this worker
/// ended the run, None if its part ended (its steps done, or the run ended
/// elsewhere).
pub fn perform(
    region: &Region,
    state: &mut WorkerState,
    epoch: u32,
    slot: u8,
    items: &[Item],
) -> Option<Observation> {
    let turn = region.turn();
    let futex = AsFutex::<Shared>::as_futex(turn);
    for item in items {
        let waiting = self::turn(epoch, item.seq, WAITING);
        let running = self::turn(epoch, item.seq, RUNNING);
        loop {
            let t = turn.load(Ordering::Acquire);
            if t == waiting {
                if turn
                    .compare_exchange(t, running, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
                continue;
            }
            if epoch_of(t) != epoch & 0xfff || state_of(t) >= ENDED {
                // The run ended before this step: it is not performed.
                return None;
            }
            match futex.wait_bitset(t, 1 << slot) {
                Ok(()) | Err(WaitError::WrongValue) | Err(WaitError::Interrupted) => {}
            }
        }
        let started = std::time::Instant::now();
        // Through `threads::perform`: a process with threads keeps its names where every thread sees them.
        let obs = super::threads::perform(state, &item.call);
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if let (Some(next), false) = (item.next, ends_batch(&obs)) {
            let handed = region.append(&obs, us)
                && turn
                    .compare_exchange(
                        running,
                        self::turn(epoch, item.seq + 1, WAITING),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
            if handed {
                // A step of our own comes next: nobody to wake.
                if next != slot {
                    futex.wake_bitset(1, 1 << next);
                }
                continue;
            }
        }
        // This step ends the run: its observation goes on the channel, and
        // every worker waiting for a later step leaves.
        turn.store(self::turn(epoch, item.seq, ENDED), Ordering::Release);
        futex.wake_bitset(i32::MAX, u32::MAX);
        return Some(obs);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turn_word_keeps_its_three_parts() {
        let t = turn(4095, MAX_SEQ as u32 - 1, CANCELLED);
        assert_eq!(
            (epoch_of(t), seq_of(t), state_of(t)),
            (4095, MAX_SEQ as u32 - 1, CANCELLED)
        );
        let t = turn(4096 + 7, 3, RUNNING);
        assert_eq!((epoch_of(t), seq_of(t), state_of(t)), (7, 3, RUNNING));
    }

    #[test]
    fn the_log_gives_back_what_was_appended_and_refuses_what_does_not_fit() {
        let (region, _fd) = Region::create().unwrap();
        region.start(1);
        let mut a = Observation::ok();
        a.value = Some(42);
        let mut b = Observation::errno(libc::EINVAL);
        b.bytes = Some(vec![1, 2, 3]);
        assert!(region.append(&a, 5));
        assert!(region.append(&b, 7));
        let got = region.entries(2).unwrap();
        assert_eq!(got, vec![(a.clone(), 5), (b, 7)]);
        assert!(region.entries(3).is_err());
        let mut big = Observation::ok();
        big.bytes = Some(vec![0; REGION_SIZE]);
        assert!(!region.append(&big, 1));
        // A new run starts an empty log.
        region.start(2);
        assert!(region.entries(1).is_err());
    }

    #[test]
    fn cancel_stops_a_waiting_step_and_marks_a_running_one() {
        let (region, _fd) = Region::create().unwrap();
        region.start(3);
        let t = region.cancel();
        assert_eq!((seq_of(t), state_of(t)), (0, WAITING));
        assert_eq!(state_of(region.turn().load(Ordering::Acquire)), CANCELLED);
        region.turn().store(turn(4, 2, RUNNING), Ordering::Release);
        let t = region.cancel();
        assert_eq!((seq_of(t), state_of(t)), (2, RUNNING));
        assert_eq!(region.turn().load(Ordering::Acquire), turn(4, 2, CANCELLED));
        // Ended by its owner: left as it is.
        region.turn().store(turn(5, 1, ENDED), Ordering::Release);
        assert_eq!(state_of(region.cancel()), ENDED);
        assert_eq!(region.turn().load(Ordering::Acquire), turn(5, 1, ENDED));
    }
}
