//! Threads of a worker: a process of a case may run several, sharing its
//! mappings and fds as threads do, each performing the steps that name it.
//!
//! Each thread has its own channel to the coordinator (handed over with the
//! `spawn_thread` request, as a forked child's is with `fork`), so that
//! inside `together` the steps of two threads of one process run at once
//! and are answered each on its own channel.
//!
//! Names (fds, mappings, segments) belong to the process, not to a thread,
//! as the kernel's fd table and address space do. Once a process has a
//! second thread, its names live in one table every thread shares; a step
//! works on a copy of it (the fds lent, not owned) and, when the step ends,
//! applies to the table only what the step itself changed. The table is
//! locked only for that copy and that update, never during a call: a
//! thread blocked in a read, or faulting on a page another thread unmaps,
//! must not hold up the others.

use super::ops::{MapInfo, WorkerState};
use super::protocol::{ends_batch, send, Call, Observation, Receiver, Request};
use std::collections::HashMap;
use std::hash::Hash;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, Once};

/// What a process holds by name, with fds as plain numbers: the table
/// owns them, a step's copy only borrows them.
#[derive(Clone, Default)]
struct Names {
    fds: HashMap<String, RawFd>,
    maps: HashMap<String, MapInfo>,
    segs: HashMap<String, i32>,
}

/// The process's names once it has threads; None while it has one thread
/// (then the worker's own state holds them, as before threads existed).
static SHARED: Mutex<Option<Names>> = Mutex::new(None);

/// The channels of this process's threads, which a child forked from it
/// must not keep open: the coordinator sees a thread's (and so its
/// process's) end as its channel closing.
static CHANNELS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// The main thread's channel, closed in a child that another thread forks.
static MAIN_CHANNEL: Mutex<Option<RawFd>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Performs one call in the calling thread, on the process's names.
pub fn perform(state: &mut WorkerState, call: &Call) -> Observation {
    // The guard is dropped at the end of the statement: not held during the call.
    let before = lock(&SHARED).clone();
    let Some(before) = before else {
        return state.perform(call);
    };
    lend(state, &before);
    let obs = state.perform(call);
    let after = take_back(state);
    if let Some(shared) = lock(&SHARED).as_mut() {
        merge(&mut shared.fds, &before.fds, &after.fds, |a, b| a == b);
        merge(&mut shared.maps, &before.maps, &after.maps, |a, b| {
            (a.addr, a.len, a.leak) == (b.addr, b.len, b.leak)
        });
        merge(&mut shared.segs, &before.segs, &after.segs, |a, b| a == b);
    }
    obs
}

/// Puts the process's names into a thread's state for one step.
fn lend(state: &mut WorkerState, names: &Names) {
    state.fds = names
        .fds
        .iter()
        // SAFETY: lent for one step and taken back with into_raw_fd
        // (take_back): never closed by this copy, only by a `close`.
        .map(|(k, &fd)| (k.clone(), unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect();
    state.maps = names.maps.clone();
    state.segs = names.segs.clone();
}

/// Takes the names out of a state (the fds without closing them).
fn take_back(state: &mut WorkerState) -> Names {
    Names {
        fds: state
            .fds
            .drain()
            .map(|(k, fd)| (k, fd.into_raw_fd()))
            .collect(),
        maps: std::mem::take(&mut state.maps),
        segs: std::mem::take(&mut state.segs),
    }
}

/// Applies to `shared` what a step changed between `before` and `after`:
/// names it made, replaced or removed. Names another thread changed
/// meanwhile and this step did not touch stay as that thread left them.
fn merge<V: Clone>(
    shared: &mut HashMap<String, V>,
    before: &HashMap<String, V>,
    after: &HashMap<String, V>,
    same: impl Fn(&V, &V) -> bool,
) {
    for k in before.keys().chain(after.keys()) {
        changed(shared, k, before.get(k), after.get(k), &same);
    }
}

fn changed<K: Eq + Hash + Clone, V: Clone>(
    shared: &mut HashMap<K, V>,
    k: &K,
    before: Option<&V>,
    after: Option<&V>,
    same: &impl Fn(&V, &V) -> bool,
) {
    match (before, after) {
        (Some(b), Some(a)) if same(b, a) => {}
        (None, None) => {}
        (_, Some(a)) => {
            shared.insert(k.clone(), a.clone());
        }
        (Some(_), None) => {
            shared.remove(k);
        }
    }
}

/// `spawn_thread`: starts a thread that serves `chan`. The first one moves
/// the process's names from the worker's state to the shared table.
/// `main_channel` is the main thread's channel when it is the caller.
pub fn spawn(
    state: &mut WorkerState,
    chan: Option<OwnedFd>,
    main_channel: Option<RawFd>,
) -> Observation {
    let Some(chan) = chan else {
        return Observation::error("spawn_thread request came without the thread's channel");
    };
    {
        let mut shared = lock(&SHARED);
        if shared.is_none() {
            *shared = Some(take_back(state));
        }
    }
    if let Some(fd) = main_channel {
        *lock(&MAIN_CHANNEL) = Some(fd);
    }
    static ATFORK: Once = Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only closes fds.
        unsafe { libc::pthread_atfork(None, None, Some(close_thread_channels)) };
    });
    let chan = UnixStream::from(chan);
    lock(&CHANNELS).push(chan.as_raw_fd());
    let mine = WorkerState {
        dir: state.dir.clone(),
        fds: HashMap::new(),
        maps: HashMap::new(),
        segs: HashMap::new(),
        page_size: state.page_size,
    };
    match std::thread::Builder::new().spawn(move || serve(chan, mine)) {
        Ok(_) => Observation::ok(),
        Err(e) => Observation::errno(e.raw_os_error().unwrap_or(libc::EAGAIN)),
    }
}

/// In a child just forked: it has only the forking thread, so the other
/// threads' channels it inherited are closed, and forgotten.
extern "C" fn close_thread_channels() {
    // Not contended: no thread of the parent was between steps' names
    // updates when it forked (fork is never inside `together`).
    if let Ok(mut chans) = CHANNELS.try_lock() {
        for fd in chans.drain(..) {
            // SAFETY: our copy of a channel of the parent's threads.
            unsafe { libc::close(fd) };
        }
    }
}

/// A thread's life: the steps sent to it, until the channel closes.
fn serve(chan: UnixStream, mut state: WorkerState) {
    let mut receiver = Receiver::default();
    loop {
        let (req, fd) = match receiver.recv::<Request>(&chan) {
            Ok(Some((req, fds))) => (req, fds.into_iter().next()),
            Ok(None) | Err(_) => break,
        };
        let obs = match req {
            Request::Call(call) => perform(&mut state, &call),
            Request::Batch(calls) => {
                for call in &calls {
                    let obs = perform(&mut state, call);
                    reply(&chan, &obs);
                    if ends_batch(&obs) {
                        break;
                    }
                }
                continue;
            }
            // _exit(2) is exit_group: the whole process ends, as it must.
            Request::Exit(code) => unsafe { libc::_exit(code) },
            Request::Thread => spawn(&mut state, fd, None),
            // The coordinator plans hand-off runs for main threads only (coordinator/relay.rs).
            Request::Attach | Request::Relay { .. } => {
                Observation::error("a thread other than main takes no part in hand-off runs")
            }
            Request::Fork => match fd {
                None => Observation::error("fork request came without the child's channel"),
                Some(child_chan) => {
                    let parent = std::process::id() as i32;
                    // SAFETY: the other threads are between steps, waiting
                    // on their channels, holding no lock the child needs.
                    let forked = unsafe { nix::unistd::fork() };
                    if let Ok(nix::unistd::ForkResult::Child) = forked {
                        // The child has only this thread: it becomes the
                        // child's main thread. Its old channel was closed
                        // with the other threads' (close_thread_channels),
                        // so it is forgotten, not closed again; the main
                        // thread's is closed here, as the main thread's
                        // own fork closes it in its child.
                        let _ = chan.into_raw_fd();
                        if let Some(fd) = lock(&MAIN_CHANNEL).take() {
                            // SAFETY: our copy of the parent's main channel.
                            unsafe { libc::close(fd) };
                        }
                        super::worker::forked_child(parent, UnixStream::from(child_chan), state)
                    }
                    // The child has its own copy of its channel.
                    drop(child_chan);
                    forked_parent(forked)
                }
            },
        };
        reply(&chan, &obs);
    }
    lock(&CHANNELS).retain(|&fd| fd != chan.as_raw_fd());
}

/// What the forking thread observes: the child's pid, or fork's errno.
fn forked_parent(forked: nix::Result<nix::unistd::ForkResult>) -> Observation {
    match forked {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let mut obs = Observation::ok();
            obs.pid = Some(child.as_raw());
            obs
        }
        Ok(nix::unistd::ForkResult::Child) => unreachable!("the child went on above"),
        Err(e) => Observation::errno(e as i32),
    }
}

fn reply(chan: &UnixStream, obs: &Observation) {
    if send(chan, obs, None).is_err() {
        // Nobody to report to: the process is being torn down.
        unsafe { libc::_exit(0) }
    }
}
