//! A worker: one process of a case, doing what the coordinator asks, one
//! request at a time. Started by the fork server with its channel on fd 3,
//! or by fork of another worker.

use super::ops::WorkerState;
use super::protocol::{recv_blocking, send, Observation, Request};
use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

/// The fd a fresh worker (and the fork server) finds its channel on.
pub const CHANNEL_FD: i32 = 3;

/// A fresh worker's life, in the fork server's copy. Never returns.
pub fn main(dir: &str) -> ! {
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
    let dir = std::path::PathBuf::from(dir);
    if !dir.is_dir() {
        eprintln!("mmapconf worker: no scratch dir {}", dir.display());
        std::process::exit(101);
    }
    // SAFETY: the fork server put our channel on fd 3.
    let chan = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    let state = WorkerState {
        dir,
        fds: HashMap::new(),
        maps: HashMap::new(),
        page_size: crate::target::page_size(),
    };
    serve(chan, state)
}

fn serve(mut chan: UnixStream, mut state: WorkerState) -> ! {
    loop {
        let (req, fd) = match recv_blocking::<Request>(&chan) {
            Ok(Some(msg)) => msg,
            // The coordinator is gone: nothing more will be asked.
            Ok(None) | Err(_) => unsafe { libc::_exit(0) },
        };
        let obs = match req {
            Request::Call(call) => state.perform(&call),
            Request::Exit(code) => unsafe { libc::_exit(code) },
            Request::Fork => {
                let Some(child_chan) = fd else {
                    reply(
                        &chan,
                        &Observation::error("fork request came without the child's channel"),
                    );
                    continue;
                };
                // SAFETY: workers are single-threaded, so the child may run any code.
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => {
                        // The child answers on its own channel from now on;
                        // dropping the parent's closes only the child's copy.
                        chan = UnixStream::from(child_chan);
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
        };
        reply(&chan, &obs);
    }
}

fn reply(chan: &UnixStream, obs: &Observation) {
    if send(chan, obs, None).is_err() {
        // Nobody to report to.
        unsafe { libc::_exit(0) }
    }
}
