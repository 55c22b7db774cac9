//! A worker: one process of a case, doing what the coordinator asks, one
//! request at a time. Started by the fork server with its channel on fd 3,
//! or by fork of another worker.
//!
//! No worker outlives the harness, even a SIGKILLed one, even when busy in
//! a step (a long `together` loop never reads its channel's EOF). A fresh
//! worker has PR_SET_PDEATHSIG(SIGKILL) from the fork server, tied to a
//! harness thread that lives as long as the harness. A forked worker's
//! parent is a worker, and the parent's death must not end it: in Linux an
//! orphan lives on, and a case may use it after its parent's `exit` or
//! `kill` (it is then the harness's child, the harness being a child
//! subreaper). So a forked worker's death signal is a real-time signal
//! that no case can send, whose handler ends the process only if its new
//! parent is not the harness: its parent died because the harness did.

use super::ops::WorkerState;
use super::protocol::{ends_batch, send, Observation, Receiver, Request};
use super::relay::{self, Region};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

/// The fd a fresh worker (and the fork server) finds its channel on.
pub const CHANNEL_FD: i32 = 3;

/// The harness's pid: a forked worker whose parent died lives on only if
/// it was reparented to the harness.
static HARNESS: AtomicI32 = AtomicI32::new(0);

/// The pid of the harness this worker belongs to (its run), which names
/// the shared memory objects a case makes so `cleanup` can tell its own.
pub fn harness_pid() -> i32 {
    HARNESS.load(Ordering::Relaxed)
}

/// A fresh worker's life, in the fork server's copy; `harness` is the
/// harness's pid, `region` the memfd of its case's region of direct
/// hand-offs (see `relay`), mapped here and closed, so the case's own
/// descriptors get the numbers they would have got anyway. Never returns.
pub fn main(dir: &str, harness: i32, region: Option<OwnedFd>) -> ! {
    HARNESS.store(harness, Ordering::SeqCst);
    // A fresh process starts with default signal state, whatever the harness had.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    if let Err(e) = super::fault::install_handlers() {
        eprintln!("mmapconf worker: cannot install fault handlers: {e}");
        std::process::exit(101);
    }
    if let Err(e) = super::ops_objects::install_xfsz_handler() {
        eprintln!("mmapconf worker: cannot install the SIGXFSZ handler: {e}");
        std::process::exit(101);
    }
    if let Err(e) = install_parent_death_handler() {
        eprintln!("mmapconf worker: cannot install the parent-death handler: {e}");
        std::process::exit(101);
    }
    let dir = std::path::PathBuf::from(dir);
    if !dir.is_dir() {
        eprintln!("mmapconf worker: no scratch dir {}", dir.display());
        std::process::exit(101);
    }
    let region = match region.map(|fd| Region::map(&fd)).transpose() {
        Ok(region) => region,
        Err(e) => {
            eprintln!("mmapconf worker: cannot map the region of hand-offs: {e}");
            std::process::exit(101);
        }
    };
    // SAFETY: the fork server put our channel on fd 3.
    let chan = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    let state = WorkerState {
        dir,
        fds: HashMap::new(),
        maps: HashMap::new(),
        segs: HashMap::new(),
        page_size: crate::target::page_size(),
    };
    serve(chan, state, region)
}

/// `region`: the shared region of direct hand-offs, if mapped; the
/// coordinator may ask for it later (`Attach`). A forked child inherits
/// the mapping, and so this too.
fn serve(mut chan: UnixStream, mut state: WorkerState, mut region: Option<Region>) -> ! {
    let mut receiver = Receiver::default();
    loop {
        let (req, fd) = match receiver.recv::<Request>(&chan) {
            Ok(Some((req, fds))) => (req, fds.into_iter().next()),
            // The coordinator is gone: nothing more will be asked.
            Ok(None) | Err(_) => unsafe { libc::_exit(0) },
        };
        let obs = match req {
            Request::Call(call) => super::threads::perform(&mut state, &call),
            Request::Batch(calls) => {
                for call in &calls {
                    let obs = super::threads::perform(&mut state, call);
                    reply(&chan, &obs);
                    if ends_batch(&obs) {
                        break;
                    }
                }
                continue;
            }
            Request::Exit(code) => unsafe { libc::_exit(code) },
            Request::Attach => match fd.map(|fd| Region::map(&fd)) {
                // The memfd's descriptor is closed here: the case's own
                // descriptors get the numbers they would have got anyway.
                Some(Ok(mapped)) => {
                    region = Some(mapped);
                    Observation::ok()
                }
                Some(Err(e)) => Observation::errno(e.raw_os_error().unwrap_or(libc::EIO)),
                None => Observation::error("attach request came without the region"),
            },
            Request::Relay { epoch, slot, items } => {
                let Some(region) = &region else {
                    reply(
                        &chan,
                        &Observation::error("relay before the region was mapped"),
                    );
                    continue;
                };
                if let Some(obs) = relay::perform(region, &mut state, epoch, slot, &items) {
                    reply(&chan, &obs);
                }
                continue;
            }
            Request::Fork => {
                let Some(child_chan) = fd else {
                    reply(
                        &chan,
                        &Observation::error("fork request came without the child's channel"),
                    );
                    continue;
                };
                let parent = std::process::id() as i32;
                // SAFETY: a worker's other threads (`spawn_thread`) are
                // between steps, holding no lock the child needs.
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => {
                        // Cleared by fork: armed again in every generation.
                        arm_parent_death(parent);
                        // The child answers on its own channel from now on;
                        // dropping the parent's closes only the child's copy.
                        chan = UnixStream::from(child_chan);
                        // Nothing was left unread: the parent's next request comes after our answer.
                        receiver = Receiver::default();
                        continue;
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        drop(child_chan);
                        let mut obs = Observation::ok();
                        obs.pid = Some(child.as_raw());
                        obs
                    }
                    Err(e) => Observation::errno(e as i32),
                }
            }
            Request::Thread => super::threads::spawn(&mut state, fd, Some(chan.as_raw_fd())),
        };
        reply(&chan, &obs);
    }
}

/// The death signal of forked workers: SIGRTMAX, which a case cannot
/// name in a `kill` step, and which glibc keeps for nothing of its own.
fn parent_death_signal() -> i32 {
    libc::SIGRTMAX()
}

extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: getppid and _exit are async-signal-safe.
    unsafe {
        if libc::getppid() != HARNESS.load(Ordering::Relaxed) {
            // The harness is gone: nobody will ask or reap anything.
            libc::_exit(1);
        }
    }
}

/// Installed once in a fresh worker; forked workers inherit it.
fn install_parent_death_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; installs a handler that only
    // makes async-signal-safe calls. SA_RESTART: a step blocked in a
    // syscall when a parent dies (harness alive) goes on as if nothing was.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_parent_death as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(parent_death_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In a just-forked worker: the death signal, then a check that the parent
/// did not die (and the harness with it) before it was armed.
fn arm_parent_death(parent: i32) {
    // SAFETY: prctl with integer arguments, getppid, _exit.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, parent_death_signal());
        let now = libc::getppid();
        if now != parent && now != HARNESS.load(Ordering::Relaxed) {
            libc::_exit(1);
        }
    }
}

/// A child that a thread other than main forked (`threads`): this thread
/// is its only one, and serves the child's channel as its main thread.
pub(super) fn forked_child(parent: i32, chan: UnixStream, state: WorkerState) -> ! {
    arm_parent_death(parent);
    // The region's mapping came along, but its `Region` is the main
    // thread's: the coordinator asks this child to map it anew (`Attach`).
    serve(chan, state, None)
}

fn reply(chan: &UnixStream, obs: &Observation) {
    if send(chan, obs, None).is_err() {
        // Nobody to report to.
        unsafe { libc::_exit(0) }
    }
}
