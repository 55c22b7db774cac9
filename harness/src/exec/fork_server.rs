//! The harness never forks itself: fresh workers and helper programs
//! (mount, mkfs, losetup ...) are started by a fork server.
//!
//! Why not fork the harness: it runs cases (and whole targets) on several
//! threads at once, and a forked child holds a copy of every descriptor
//! of the harness until it execs, including files another thread has just
//! opened on a scratch filesystem. Those copies made unmounts fail with
//! EBUSY, and kept a deleted file's blocks allocated so that the next case
//! met ENOSPC or a `fill_fs` that was not full. The server holds no
//! descriptor of any case.
//!
//! Why not exec a worker each time: an exec of the harness costs a dynamic
//! link, glibc's CPU-feature probing (cpuid, which traps to the hypervisor
//! on a VM) and Rust's start-up: about 1.7 ms of CPU here and tens of
//! milliseconds under TCG, for every process of every case. The server is
//! exec'd once (`mmapconf __fork-server`); a worker is a copy of this
//! small, idle, single-threaded process.
//!
//! Every process it starts must still be the harness's own child, for
//! waitpid (`wait` steps, reaping after a kill, a program's exit status).
//! So the server forks with CLONE_PARENT, which makes the new process its
//! sibling: a child of the harness.
//!
//! PR_SET_PDEATHSIG fires when the parent *thread* exits, not the parent
//! process, and a CLONE_PARENT child's parent thread is the one that
//! started the server. So the server is started by a thread that never
//! ends, and workers die with the harness, never with a job thread.
//! (Workers forked by workers die with the harness too: see worker.rs.)
//!
//! Nothing the server starts holds the harness's stdout or stderr: a
//! process that outlived a killed harness would keep a reader of its
//! output (`mmapconf run | cat`) waiting. The server's stderr, which
//! workers inherit, is a pipe that the lasting thread copies to the
//! harness's stderr (a worker's panic or start-up failure says why there).

use super::protocol::{recv_blocking_fds, send_fds};
use super::worker::CHANNEL_FD;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// What the harness asks of the server. Descriptors travel with it.
#[derive(Serialize, Deserialize)]
enum SpawnRequest {
    /// A worker for the case in `dir`; its channel comes along.
    Worker { dir: String },
    /// A program, run with stdin from /dev/null; the write ends of its
    /// stdout and stderr pipes come along.
    Program { argv: Vec<String> },
}

/// The new process's pid, or why there is none.
#[derive(Serialize, Deserialize)]
enum SpawnReply {
    Spawned(i32),
    Failed(String),
}

impl super::protocol::Message for SpawnRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        super::protocol::encode_postcard(self, out)
    }

    fn decode(body: &[u8]) -> Result<Self, String> {
        super::protocol::decode_postcard(body)
    }
}

impl super::protocol::Message for SpawnReply {
    fn encode(&self, out: &mut Vec<u8>) {
        super::protocol::encode_postcard(self, out)
    }

    fn decode(body: &[u8]) -> Result<Self, String> {
        super::protocol::decode_postcard(body)
    }
}

struct Server {
    chan: UnixStream,
}

static SERVER: OnceLock<Mutex<Result<Server, String>>> = OnceLock::new();

/// A pidfd of the server while it runs, for `stop`, which must not wait
/// for the lock above (a panic may come while it is held); -1 once stopped.
static SERVER_PIDFD: AtomicI32 = AtomicI32::new(0);

/// The server, started on first use from `exe` (the harness binary; the
/// running executable when not given).
fn server(exe: Option<&Path>) -> Result<MutexGuard<'static, Result<Server, String>>, String> {
    // Teardown may have begun before any server was started: never start
    // one then, or its workers would outlive the teardown's look.
    if super::live::stopping() {
        return Err("the harness is stopping".to_string());
    }
    let server = SERVER.get_or_init(|| {
        let exe = match exe {
            Some(e) => Ok(e.to_path_buf()),
            None => std::env::current_exe().map_err(|e| format!("the harness binary: {e}")),
        };
        Mutex::new(exe.and_then(start_from_lasting_thread))
    });
    if SERVER_PIDFD.load(Ordering::SeqCst) < 0 {
        return Err("the harness is stopping".to_string());
    }
    Ok(server.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Sends one request and returns the pid it started.
fn request(exe: Option<&Path>, req: &SpawnRequest, fds: &[i32]) -> Result<i32, String> {
    let guard = server(exe)?;
    let server = guard.as_ref().map_err(Clone::clone)?;
    send_fds(&server.chan, req, fds).map_err(|e| format!("fork server: {e}"))?;
    match recv_blocking_fds::<SpawnReply>(&server.chan) {
        Ok(Some((SpawnReply::Spawned(pid), _))) => Ok(pid),
        Ok(Some((SpawnReply::Failed(why), _))) => Err(why),
        Ok(None) => Err("the fork server has ended".to_string()),
        Err(e) => Err(format!("fork server: {e}")),
    }
}

/// Starts a worker for the case in `dir`, its channel being `channel`
/// and `region` the memfd of the case's region of direct hand-offs (see
/// `relay`), which it maps before it reads its channel: the pid of the new
/// process, which is our child and leads its own process group, or why it
/// could not be started.
pub fn spawn_worker(
    exe: &Path,
    dir: &Path,
    channel: &UnixStream,
    region: Option<RawFd>,
) -> Result<i32, String> {
    let req = SpawnRequest::Worker {
        dir: dir.to_string_lossy().into_owned(),
    };
    let mut fds = vec![channel.as_raw_fd()];
    fds.extend(region);
    let pid = request(Some(exe), &req, &fds)?;
    // The worker makes its own group too (become_worker); whichever of the
    // two calls comes first makes it, as a shell does for a job, so that the
    // group exists when this returns although the server did not wait for
    // the worker. The worker is our child (CLONE_PARENT): we may. It never
    // execs, so EACCES cannot come; ESRCH means it died already, which its
    // first step will find.
    // SAFETY: setpgid on our own child.
    unsafe { libc::setpgid(pid, pid) };
    Ok(pid)
}

/// Runs `cmd` (its program and arguments only: no environment, directory
/// or stdio settings) to the end and collects its output, like
/// `Command::output`, but started by the server.
pub fn output(cmd: &Command) -> std::io::Result<Output> {
    debug_assert!(cmd.get_envs().next().is_none() && cmd.get_current_dir().is_none());
    let (pid, out_read, err_read) = start_program(None, cmd)?;
    // Our child, not reaped yet: the pid is still its own.
    let pidfd = super::pidfd::open(pid)?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| std::fs::File::from(err_read).read_to_end(&mut stderr));
        let _ = std::fs::File::from(out_read).read_to_end(&mut stdout);
    });
    // As a wait status word, which ExitStatus is built from.
    let status = match super::pidfd::wait(&pidfd, true).map_err(std::io::Error::from)? {
        super::pidfd::Ended::Exited(code) => (code & 0xff) << 8,
        super::pidfd::Ended::Killed(sig) => sig & 0x7f,
    };
    Ok(Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    })
}

/// Starts `cmd` (its program and arguments only, as for `output`) and
/// returns at once, for a helper that lives on (a FUSE server): its pid,
/// our child and the caller's to reap, and the read ends of its stdout and
/// stderr. `exe` starts the server on first use, as for `spawn_worker`.
pub fn spawn_program(exe: &Path, cmd: &Command) -> std::io::Result<(i32, OwnedFd, OwnedFd)> {
    start_program(Some(exe), cmd)
}

/// Asks the server to start `cmd` with its stdout and stderr on pipes:
/// the pid and the read ends.
fn start_program(exe: Option<&Path>, cmd: &Command) -> std::io::Result<(i32, OwnedFd, OwnedFd)> {
    let argv: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let started = request(
        exe,
        &SpawnRequest::Program { argv },
        &[out_write.as_raw_fd(), err_write.as_raw_fd()],
    );
    // Only the program holds the write ends now: EOF comes when it ends.
    drop((out_write, err_write));
    let pid = started.map_err(std::io::Error::other)?;
    Ok((pid, out_read, err_read))
}

/// Starts the server from a thread that stays parked for the life of the
/// harness (see the module comment for why).
fn start_from_lasting_thread(exe: PathBuf) -> Result<Server, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("fork-server-parent".into())
        .spawn(move || {
            let (server, errors) = match start(&exe) {
                Ok((server, errors)) => (Ok(server), Some(errors)),
                Err(e) => (Err(e), None),
            };
            let _ = tx.send(server);
            if let Some(errors) = errors {
                // Until the server and every worker have ended.
                let _ = std::io::copy(&mut std::fs::File::from(errors), &mut std::io::stderr());
            }
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

/// Starts the server: its channel, and the read end of its stderr.
fn start(exe: &Path) -> Result<(Server, OwnedFd), String> {
    // Orphaned grandchildren of a killed worker come back to us.
    super::live::become_subreaper();
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let (errors, errors_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let their_fd = theirs.as_raw_fd();
    let harness = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(exe);
    cmd.arg("__fork-server")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(errors_write))
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
            // Kept across exec. Our parent thread never ends before the
            // harness does (start_from_lasting_thread).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The harness died before the line above: nobody wants us.
            if libc::getppid() != harness {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    // The one fork of the harness itself: it must not overlap an unmount.
    let child = {
        let _gate = super::live::forking();
        cmd.spawn()
    }
    .map_err(|e| format!("cannot start the fork server ({}): {e}", exe.display()))?;
    // Only the server (and the workers it starts) may hold the write end,
    // so that the copy in our thread sees EOF when they have all ended.
    drop(cmd);
    // Our unreaped child: the pid is still its own.
    let pidfd = super::pidfd::open(child.id() as i32)
        .map_err(|e| format!("pidfd_open for the fork server: {e}"))?;
    // `stop` kills and reaps it by pidfd; std's handle is not needed.
    SERVER_PIDFD.store(std::os::fd::IntoRawFd::into_raw_fd(pidfd), Ordering::SeqCst);
    std::mem::forget(child);
    Ok((Server { chan: ours }, errors))
}

/// Kills and reaps the server, so nothing of the harness outlives it
/// (the server would otherwise die of PR_SET_PDEATHSIG a moment after the
/// harness, not before). Starting processes fails after this.
pub fn stop() {
    let fd = SERVER_PIDFD.swap(-1, Ordering::SeqCst);
    if fd > 0 {
        // SAFETY: the swap above hands the descriptor to us alone.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = super::pidfd::send_signal(&pidfd, libc::SIGKILL);
        let _ = super::pidfd::wait(&pidfd, true);
    }
}

/// Entry point of `mmapconf __fork-server`: serves requests on fd 3 until
/// the harness closes the channel. Never returns.
pub fn main() -> ! {
    // Programs must not inherit the channel (dup2 left it without close-on-exec).
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(CHANNEL_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: fd 3 was set up as our channel by the harness before exec.
    let chan = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    let harness = unsafe { libc::getppid() };
    super::protocol::make_read_buffer();
    loop {
        let (request, fds) = match recv_blocking_fds::<SpawnRequest>(&chan) {
            Ok(Some(msg)) => msg,
            // The harness is gone: nothing more will be asked.
            Ok(None) | Err(_) => unsafe { libc::_exit(0) },
        };
        let reply = match request {
            SpawnRequest::Worker { dir } if (1..=2).contains(&fds.len()) => {
                let mut fds = fds.into_iter();
                let worker_chan = fds.next().expect("one fd at least");
                let region = fds.next();
                // No wait for the worker to be ready: the harness puts it in
                // its own group itself (spawn_worker), and what it sends waits
                // in the channel until the worker reads it. One hand-off fewer
                // for every process of every case.
                fork_child(harness, Ready::DontWait, |ready| {
                    become_worker(worker_chan, region, &dir, harness, ready)
                })
            }
            SpawnRequest::Program { argv } if fds.len() == 2 => {
                let mut fds = fds.into_iter();
                let (out, err) = (fds.next().unwrap(), fds.next().unwrap());
                match argv
                    .iter()
                    .map(|a| CString::new(a.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(args) if !args.is_empty() => fork_child(harness, Ready::Wait, |ready| {
                        exec_program(&args, &out, &err, ready)
                    }),
                    _ => SpawnReply::Failed(format!("cannot run {argv:?}")),
                }
            }
            _ => SpawnReply::Failed("a request came with the wrong descriptors".to_string()),
        };
        if send_fds(&chan, &reply, &[]).is_err() {
            unsafe { libc::_exit(0) }
        }
    }
}

/// The first two arguments of the raw clone system call on `arch`: the
/// flags, then the new stack, except on s390x, whose clone takes the stack
/// first (arch/s390/Kconfig selects CLONE_BACKWARDS2: kernel/fork.c then
/// declares clone(newsp, clone_flags, ...); clone(2) NOTES). Given the other order
/// there, the kernel read CLONE_PARENT as a stack pointer and no flags: the
/// copy crashed on its first push and was the server's child, not the
/// harness's, so every wait for it said ECHILD.
fn clone_flags_and_stack(
    arch: &str,
    flags: libc::c_long,
    stack: libc::c_long,
) -> [libc::c_long; 2] {
    if arch == "s390x" {
        [stack, flags]
    } else {
        [flags, stack]
    }
}

/// Forks a child of `harness` that runs `child` (which never returns).
/// Returns once the child is ready (set up, exec'd, or failed and
/// exiting): when it has closed the readiness pipe, by exec or by ending.
/// Whether the server answers only once the new process has closed its
/// end of the ready pipe (a program: once it has exec'd).
#[derive(PartialEq)]
enum Ready {
    Wait,
    DontWait,
}

fn fork_child(harness: libc::pid_t, ready: Ready, child: impl FnOnce(OwnedFd)) -> SpawnReply {
    let (ready_read, ready_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return SpawnReply::Failed(format!("pipe2: {e}")),
    };
    // A raw clone: glibc's fork cannot pass CLONE_PARENT. The server is
    // single-threaded and holds no locks, so the copy may run any code;
    // glibc's cached thread id in the copy is stale, which only raise()
    // and pthread mutex ownership would notice, and workers use neither.
    let [first, second] = clone_flags_and_stack(
        std::env::consts::ARCH,
        libc::CLONE_PARENT as libc::c_long,
        0,
    );
    // SAFETY: clone with a null stack behaves as fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            first,
            second,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if pid == 0 {
        // SAFETY: we are the new, single-threaded process.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The harness died before the line above: nobody wants us.
            if libc::getppid() != harness {
                libc::_exit(1);
            }
        }
        drop(ready_read);
        child(ready_write);
        unsafe { libc::_exit(127) }
    }
    drop(ready_write);
    if pid < 0 {
        return SpawnReply::Failed(format!("clone: {}", std::io::Error::last_os_error()));
    }
    if ready == Ready::Wait {
        let mut byte = [0u8; 1];
        while let Err(nix::errno::Errno::EINTR) =
            nix::unistd::read(ready_read.as_raw_fd(), &mut byte)
        {}
    }
    SpawnReply::Spawned(pid as i32)
}

/// In the new process: its own process group, its channel on fd 3, then
/// the worker's life.
fn become_worker(
    worker_chan: OwnedFd,
    region: Option<OwnedFd>,
    dir: &str,
    harness: libc::pid_t,
    ready: OwnedFd,
) {
    // SAFETY: we are the new, single-threaded process.
    unsafe {
        libc::setpgid(0, 0);
        // fd 3 was the server's channel; in this process it becomes the worker's.
        if libc::dup2(worker_chan.as_raw_fd(), CHANNEL_FD) < 0 {
            libc::_exit(1);
        }
    }
    drop(worker_chan);
    // Ready to be signalled as a group: the server may answer. (The
    // worker never execs, so close-on-exec would never close this.)
    drop(ready);
    super::worker::main(dir, harness, region);
}

/// In the new process: stdin from /dev/null, stdout and stderr to the
/// harness's pipes, then exec. If exec fails, the reason goes to stderr
/// and the exit status is 127, as a shell would do. `ready` closes on exec.
fn exec_program(args: &[CString], out: &OwnedFd, err: &OwnedFd, _ready: OwnedFd) {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: plain syscalls on descriptors we own; argv is null-terminated.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null < 0
            || libc::dup2(null, 0) < 0
            || libc::dup2(out.as_raw_fd(), 1) < 0
            || libc::dup2(err.as_raw_fd(), 2) < 0
        {
            libc::_exit(127);
        }
        libc::execvp(argv[0], argv.as_ptr());
        let why = format!(
            "cannot run {}: {}\n",
            args[0].to_string_lossy(),
            std::io::Error::last_os_error()
        );
        libc::write(2, why.as_ptr().cast(), why.len());
    }
}

#[cfg(test)]
mod tests {
    use super::clone_flags_and_stack;

    #[test]
    fn s390x_clone_takes_the_stack_before_the_flags() {
        let flags = libc::CLONE_PARENT as libc::c_long;
        assert_eq!(clone_flags_and_stack("s390x", flags, 0), [0, flags]);
        for arch in ["x86_64", "aarch64", "powerpc64", "riscv64"] {
            assert_eq!(clone_flags_and_stack(arch, flags, 0), [flags, 0], "{arch}");
        }
    }
}
