//! Fresh workers come from a fork server, not from exec.
//!
//! An exec of the harness costs a dynamic link, glibc's CPU-feature probing
//! (cpuid, which traps to the hypervisor on a VM) and Rust's start-up:
//! about 1.7 ms of CPU here and tens of milliseconds under TCG, for every
//! process of every case, on every target. The fork server is one exec'd
//! harness process (`mmapconf __fork-server`) that only forks: a worker is
//! a copy of a small, idle, single-threaded process.
//!
//! A worker must still be the coordinator's own child: `wait` steps and
//! the reaping after a kill are the coordinator's waitpid calls. So the
//! server forks with CLONE_PARENT, which makes the new process its sibling:
//! a child of the coordinator, which gets its SIGCHLD and its exit status.
//!
//! PR_SET_PDEATHSIG fires when the parent *thread* exits, not the parent
//! process, and a CLONE_PARENT child's parent thread is the one that
//! started the server. So the server is started by a thread that never
//! ends, and workers die with the harness, never with a job thread.

use super::protocol::{recv_blocking, send};
use super::worker::CHANNEL_FD;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Asks the server for a worker; the worker's channel travels with it.
#[derive(Serialize, Deserialize)]
struct SpawnRequest {
    /// The case's scratch directory.
    dir: String,
}

/// The new worker's pid, or why there is none.
#[derive(Serialize, Deserialize)]
enum SpawnReply {
    Spawned(i32),
    Failed(String),
}

struct Server {
    chan: UnixStream,
}

static SERVER: OnceLock<Mutex<Result<Server, String>>> = OnceLock::new();

/// The server's pid while it runs, for `stop`, which must not wait for the
/// lock above (a panic may come while it is held).
static SERVER_PID: AtomicI32 = AtomicI32::new(0);

/// Starts a worker for the case in `dir`, its channel being `channel`:
/// the pid of the new process, which is our child and leads its own
/// process group, or why it could not be started.
pub fn spawn_worker(exe: &Path, dir: &Path, channel: &UnixStream) -> Result<i32, String> {
    let server = SERVER.get_or_init(|| Mutex::new(start_from_lasting_thread(exe.to_path_buf())));
    let guard = server.lock().unwrap_or_else(|e| e.into_inner());
    let server = guard.as_ref().map_err(Clone::clone)?;
    if SERVER_PID.load(Ordering::SeqCst) < 0 {
        return Err("the harness is stopping".to_string());
    }
    let request = SpawnRequest {
        dir: dir.to_string_lossy().into_owned(),
    };
    send(&server.chan, &request, Some(channel.as_raw_fd()))
        .map_err(|e| format!("fork server: {e}"))?;
    match recv_blocking::<SpawnReply>(&server.chan) {
        Ok(Some((SpawnReply::Spawned(pid), _))) => Ok(pid),
        Ok(Some((SpawnReply::Failed(why), _))) => Err(why),
        Ok(None) => Err("the fork server has ended".to_string()),
        Err(e) => Err(format!("fork server: {e}")),
    }
}

/// Starts the server from a thread that stays parked for the life of the
/// harness (see the module comment for why).
fn start_from_lasting_thread(exe: PathBuf) -> Result<Server, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("fork-server-parent".into())
        .spawn(move || {
            let _ = tx.send(start(&exe));
            loop {
                std::thread::park();
            }
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread for the fork server: {e}"));
    }
    rx.recv()
        .unwrap_or_else(|_| Err("the fork server's thread ended".to_string()))
}

fn start(exe: &Path) -> Result<Server, String> {
    // Orphaned grandchildren of a killed worker come back to us.
    super::live::become_subreaper();
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__fork-server")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Its own group: a Ctrl-C at the terminal is the harness's to handle.
        .process_group(0)
        .current_dir("/");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The channel becomes fd 3 (dup2 clears close-on-exec on the copy).
            if libc::dup2(their_fd, CHANNEL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = {
        let _gate = super::live::forking();
        cmd.spawn()
    }
    .map_err(|e| format!("cannot start the fork server ({}): {e}", exe.display()))?;
    // `stop` kills and reaps it by pid; std's handle is not needed.
    SERVER_PID.store(child.id() as i32, Ordering::SeqCst);
    std::mem::forget(child);
    Ok(Server { chan: ours })
}

/// Kills and reaps the server, so nothing of the harness outlives it
/// (the server would otherwise die of PR_SET_PDEATHSIG a moment after the
/// harness, not before). Spawning after this fails.
pub fn stop() {
    let pid = SERVER_PID.swap(-1, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: signals and reaps our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            while libc::waitpid(pid, std::ptr::null_mut(), 0) < 0
                && nix::errno::Errno::last() == nix::errno::Errno::EINTR
            {}
        }
    }
}

/// Entry point of `mmapconf __fork-server`: serves spawn requests on fd 3
/// until the harness closes the channel. Never returns.
pub fn main() -> ! {
    // SAFETY: fd 3 was set up as our channel by the harness before exec.
    let chan = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    let harness = unsafe { libc::getppid() };
    loop {
        let (request, fd) = match recv_blocking::<SpawnRequest>(&chan) {
            Ok(Some(msg)) => msg,
            // The harness is gone: nothing more will be asked.
            Ok(None) | Err(_) => unsafe { libc::_exit(0) },
        };
        let reply = match fd {
            None => SpawnReply::Failed("a spawn request came without a channel".to_string()),
            Some(worker_chan) => fork_worker(worker_chan, &request.dir, harness),
        };
        if send(&chan, &reply, None).is_err() {
            unsafe { libc::_exit(0) }
        }
    }
}

/// Forks one worker as a child of `harness` and returns once it is ready
/// to be signalled as a group: it has its own process group and its
/// channel on fd 3.
fn fork_worker(worker_chan: OwnedFd, dir: &str, harness: libc::pid_t) -> SpawnReply {
    let (ready_read, ready_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return SpawnReply::Failed(format!("pipe2: {e}")),
    };
    // A raw clone: glibc's fork cannot pass CLONE_PARENT. The server is
    // single-threaded and holds no locks, so the copy may run any code;
    // glibc's cached thread id in the copy is stale, which only raise()
    // and pthread mutex ownership would notice, and workers use neither.
    // SAFETY: clone with a null stack behaves as fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_PARENT as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if pid == 0 {
        // SAFETY: we are the new, single-threaded worker.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The harness died before the line above: nobody will ask us anything.
            if libc::getppid() != harness {
                libc::_exit(1);
            }
            // fd 3 was the server's channel; in this process it becomes the worker's.
            if libc::dup2(worker_chan.as_raw_fd(), CHANNEL_FD) < 0 {
                libc::_exit(1);
            }
        }
        drop(worker_chan);
        drop(ready_read);
        // Closing the last write end tells the server we are ready.
        drop(ready_write);
        super::worker::main(dir);
    }
    drop(ready_write);
    drop(worker_chan);
    if pid < 0 {
        return SpawnReply::Failed(format!("clone: {}", std::io::Error::last_os_error()));
    }
    // EOF comes when the worker has set up, or died trying.
    let mut byte = [0u8; 1];
    while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(ready_read.as_raw_fd(), &mut byte) {
    }
    SpawnReply::Spawned(pid as i32)
}
