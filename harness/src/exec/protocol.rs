//! The wire between the coordinator and a worker.
//!
//! One Unix stream socket per worker. A message is a 4-byte little-endian
//! length and a body, encoded as its kind's [`Message`] impl says:
//! requests in postcard, observations packed (`packed`). The coordinator sends a [`Request`] and waits for
//! one [`Observation`] back (except after `Exit`, whose answer is the socket
//! closing, and `Batch`, answered by one observation per call performed,
//! each sent as soon as its call ends). A `Fork` request carries the child's new socket as SCM_RIGHTS
//! on its first byte, so every process, forked or not, has its own channel.
//!
//! Requests carry resolved values only (numbers, not "2p" or "READ|WRITE"),
//! so a worker never interprets the case format.

use crate::case::values::{hex_bytes, Bytes};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// A place in a worker's address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Raw(u64),
    InMap { map: String, at: i64 },
}

/// A range of a named mapping; `len` None means to the end of the mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub map: String,
    pub at: i64,
    pub len: Option<u64>,
}

/// One operation with its arguments resolved.
///
/// Externally tagged on the wire (`{"store": {...}}`), not internally
/// (`{"op": "store", ...}`): serde reads an internally tagged enum by
/// buffering each value first, which made decoding a run's calls most of
/// a worker's time in a long run of steps. Only the wire carries calls,
/// between two copies of the same binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Open {
        path: String,
        flags: i32,
        mode: u32,
        name: String,
    },
    Close {
        fd: String,
    },
    Ftruncate {
        fd: String,
        len: i64,
    },
    Pread {
        fd: String,
        at: i64,
        len: u64,
    },
    Pwrite {
        fd: String,
        at: i64,
        data: Bytes,
    },
    Write {
        fd: String,
        data: Bytes,
    },
    Fsync {
        fd: String,
    },
    Fdatasync {
        fd: String,
    },
    Fstat {
        fd: String,
    },
    Futimens {
        fd: String,
        time: i64,
    },
    Unlink {
        path: String,
    },
    MemfdCreate {
        label: String,
        flags: u32,
        name: String,
    },
    Mmap {
        fd: Option<String>,
        len: u64,
        prot: i32,
        flags: i32,
        offset: i64,
        addr: Option<Place>,
        name: String,
    },
    Munmap {
        span: Span,
    },
    Mprotect {
        span: Span,
        prot: i32,
    },
    Msync {
        span: Span,
        flags: i32,
    },
    Madvise {
        span: Span,
        advice: i32,
    },
    Mlock {
        span: Span,
        flags: Option<u32>,
    },
    Munlock {
        span: Span,
    },
    Mincore {
        span: Span,
    },
    Mremap {
        map: String,
        at: i64,
        old_len: u64,
        new_len: u64,
        flags: i32,
        new_addr: Option<Place>,
        name: String,
    },
    Store {
        map: String,
        at: i64,
        data: Bytes,
    },
    Load {
        map: String,
        at: i64,
        len: u64,
    },
    Increment {
        map: String,
        at: i64,
        count: u64,
        atomic: bool,
        width: u8,
    },
    Pagemap {
        map: String,
        at: i64,
        swapped: bool,
    },
    /// waitpid(2) for a child this worker forked.
    Wait {
        pid: i32,
    },
    // --- issue 18, part A ---
    /// read/write/pread/pwrite/readv/writev with buffers in named mappings.
    Io {
        call: crate::case::model::IoCall,
        fd: String,
        offset: i64,
        bufs: Vec<Span>,
    },
    AddSeals {
        fd: String,
        seals: i32,
    },
    GetSeals {
        fd: String,
    },
    Dup {
        fd: String,
        onto: Option<String>,
        name: String,
    },
    Lseek {
        fd: String,
        offset: i64,
        whence: i32,
    },
    Mlockall {
        flags: i32,
    },
    Munlockall,
    Smaps {
        map: String,
        at: i64,
        field: crate::case::model::SmapsField,
    },
    // ---- Other objects, limits, another process's memory (exec::ops_objects).
    OpenSpecial {
        what: crate::case::model::Special,
        flags: i32,
        name: String,
    },
    ShmOpen {
        label: String,
        flags: i32,
        mode: u32,
        name: String,
    },
    ShmUnlink {
        label: String,
    },
    Shmget {
        size: u64,
        hugetlb: bool,
        name: String,
    },
    Shmat {
        seg: String,
        read_only: bool,
        name: String,
    },
    Shmdt {
        map: String,
    },
    ShmRmid {
        seg: String,
    },
    Setrlimit {
        resource: crate::case::model::Rlimit,
        limit: u64,
    },
    IgnoreSignal {
        signo: i32,
    },
    DropPrivileges,
    /// The address of `at` in a mapping, as `value` (for another process's
    /// `remote_read`/`remote_write` of it).
    Address {
        map: String,
        at: i64,
    },
    RemoteRead {
        pid: i32,
        addr: u64,
        len: u64,
        via: crate::case::model::Remote,
    },
    RemoteWrite {
        pid: i32,
        addr: u64,
        data: Bytes,
        via: crate::case::model::Remote,
    },
    // ---- Pinned pages (exec::ops_pins).
    Vmsplice {
        fd: String,
        span: Span,
    },
    Read {
        fd: String,
        len: u64,
    },
    IoUringRegister {
        span: Span,
        name: String,
    },
    IoUringFixed {
        ring: String,
        call: crate::case::model::FixedCall,
        fd: String,
        offset: i64,
        at: u64,
        len: Option<u64>,
    },
    IoUringUnregister {
        ring: String,
    },
}

/// What the coordinator asks of a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Call(Call),
    /// Consecutive calls of one process, performed in order without waiting
    /// for the coordinator between them: one round trip for many steps. The
    /// worker sends each call's observation when the call ends, so a death
    /// or a hang is still seen at the call it happened in, and stops after
    /// the first call that [`ends_batch`]: the rest are not performed.
    Batch(Vec<Call>),
    /// fork(2); the child's channel travels with this message.
    Fork,
    /// _exit(2) with this status; no answer but the channel closing.
    Exit(i32),
    /// pthread_create(3): a thread that serves the channel traveling with this message.
    Thread,
    /// Map the shared region of direct hand-offs, whose memfd travels with
    /// this message (see `relay`); answered ok, or with the errno of mmap.
    Attach,
    /// This worker's steps of a run of hand-offs (see `relay`): `slot` is
    /// its futex bit. Answered only if it ends the run, with that step's
    /// observation.
    Relay {
        epoch: u32,
        slot: u8,
        items: Vec<super::relay::Item>,
    },
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The call returned success (or the access completed).
    Ok,
    /// The call failed with this errno.
    Errno { errno: String },
    /// The access raised a signal. `offset` is the faulting address relative
    /// to the start of the access; `done` the bytes completed before it;
    /// `map_offset` the faulting address relative to the start of the named
    /// mapping accessed (what `expect.fault_at` compares; 0 where the
    /// signal came from no access, as SIGXFSZ).
    Signal {
        signal: String,
        si_code: String,
        offset: i64,
        done: u64,
        #[serde(default)]
        map_offset: i64,
    },
    /// The harness could not perform the step (an unknown name, say).
    Error { message: String },
}

/// A process's end, as waitpid(2) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    Killed(String),
}

/// Timestamps and sizes from fstat(2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatInfo {
    pub size: i64,
    pub blocks: i64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

/// What a worker saw when it performed a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Observation {
    pub outcome: Outcome,
    /// The bytes read, as lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    #[schemars(with = "Option<String>")]
    pub bytes: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<StatInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// How the harness did a step where that matters (the crash method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Observation {
    pub fn of(outcome: Outcome) -> Observation {
        Observation {
            outcome,
            bytes: None,
            value: None,
            stat: None,
            pid: None,
            exit: None,
            detail: None,
        }
    }

    pub fn ok() -> Observation {
        Observation::of(Outcome::Ok)
    }

    pub fn errno(code: i32) -> Observation {
        Observation::of(Outcome::Errno {
            errno: crate::names::errno_name(code),
        })
    }

    pub fn error(message: impl Into<String>) -> Observation {
        Observation::of(Outcome::Error {
            message: message.into(),
        })
    }
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::hex_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| crate::case::values::parse_hex(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Whether a worker stops a batch after a call that observed this: a
/// fault (the access was cut short: what follows may rely on it) or a step
/// the harness could not perform (the case ends there).
pub fn ends_batch(obs: &Observation) -> bool {
    matches!(obs.outcome, Outcome::Signal { .. } | Outcome::Error { .. })
}

/// Why a message did not arrive.
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed its end: the process exited (or died).
    Closed,
    /// The deadline passed first.
    TimedOut,
    Io(std::io::Error),
    Malformed(String),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Closed => write!(f, "channel closed"),
            RecvError::TimedOut => write!(f, "timed out"),
            RecvError::Io(e) => write!(f, "{e}"),
            RecvError::Malformed(m) => write!(f, "malformed message: {m}"),
        }
    }
}

/// How one kind of message is written in a frame's body.
///
/// Why not JSON for all, as before: a long run of steps is one request
/// with every call of it, and a worker decoding it as JSON spent more
/// time there than in the steps; nobody reads the wire but another copy
/// of the same binary. Requests go in postcard, a serde format the same
/// derives serve (no mirror types to keep), observations in the packed
/// layout of `packed`, which the relay log uses too (`Observation`'s
/// serde shape, made for reports, is not one a non-self-describing
/// format can carry).
pub trait Message: Sized {
    /// Appends the body to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Err says what is wrong with the body.
    fn decode(body: &[u8]) -> Result<Self, String>;
}

/// [`Message::encode`] for types whose wire form is postcard.
pub fn encode_postcard<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(msg, taken).expect("wire messages serialize");
}

/// [`Message::decode`] for types whose wire form is postcard: the whole
/// body, nothing left over.
pub fn decode_postcard<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(format!("{} bytes left over", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

impl Message for Request {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_postcard(self, out)
    }

    fn decode(body: &[u8]) -> Result<Self, String> {
        decode_postcard(body)
    }
}

impl Message for Observation {
    fn encode(&self, out: &mut Vec<u8>) {
        let packed = super::packed::Packed::of(self);
        let at = out.len();
        out.resize(at + packed.len(), 0);
        packed.write(&mut out[at..]);
    }

    fn decode(body: &[u8]) -> Result<Self, String> {
        super::packed::unpack(body)
    }
}

fn frame<T: Message>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[0; 4]);
    msg.encode(&mut out);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// Sends one message, with `fd` attached when given.
pub fn send<T: Message>(sock: &UnixStream, msg: &T, fd: Option<RawFd>) -> std::io::Result<()> {
    send_fds(sock, msg, fd.as_slice())
}

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 3;

/// Sends one message with up to [`MAX_FDS`] descriptors attached.
pub fn send_fds<T: Message>(sock: &UnixStream, msg: &T, fds: &[RawFd]) -> std::io::Result<()> {
    let bytes = frame(msg);
    match fds {
        [] => (&*sock).write_all(&bytes),
        fds => {
            let cmsg = [ControlMessage::ScmRights(fds)];
            let first = [IoSlice::new(&bytes[..1])];
            sendmsg::<()>(sock.as_raw_fd(), &first, &cmsg, MsgFlags::empty(), None)
                .map_err(std::io::Error::from)?;
            (&*sock).write_all(&bytes[1..])
        }
    }
}

/// Blocking receive for workers: one message and the first fd that came with it.
/// `Ok(None)` means the coordinator closed the channel.
pub fn recv_blocking<T: Message>(
    sock: &UnixStream,
) -> Result<Option<(T, Option<OwnedFd>)>, RecvError> {
    Ok(recv_blocking_fds(sock)?.map(|(msg, fds)| (msg, fds.into_iter().next())))
}

/// Blocking receive: one message and every fd that came with it.
pub fn recv_blocking_fds<T: Message>(
    sock: &UnixStream,
) -> Result<Option<(T, Vec<OwnedFd>)>, RecvError> {
    let mut first = [0u8; 1];
    let mut fds = Vec::new();
    let n = recvmsg_fds(sock, &mut first, &mut fds)?;
    if n == 0 {
        return Ok(None);
    }
    let mut rest = [0u8; 3];
    (&*sock).read_exact(&mut rest).map_err(RecvError::Io)?;
    let len = u32::from_le_bytes([first[0], rest[0], rest[1], rest[2]]) as usize;
    let mut body = vec![0u8; len];
    (&*sock).read_exact(&mut body).map_err(RecvError::Io)?;
    let msg = T::decode(&body).map_err(RecvError::Malformed)?;
    Ok(Some((msg, fds)))
}

/// One blocking recvmsg into `buf`, adding the fds that came with it to
/// `fds`; returns the bytes read, 0 when the peer closed the channel.
fn recvmsg_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, RecvError> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|e| RecvError::Io(e.into()))?,
        }
    };
    for c in msg.cmsgs().map_err(|e| RecvError::Io(e.into()))? {
        if let ControlMessageOwned::ScmRights(received) = c {
            for raw in received {
                // SAFETY: the kernel just installed this fd for us.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok(msg.bytes)
}

/// Decodes the whole message at the front of `buf`, if it holds one, and
/// takes it off; returns it and its frame's length.
fn take_frame<T: Message>(buf: &mut Vec<u8>) -> Option<(Result<T, RecvError>, usize)> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let body = buf.get(4..4 + len)?;
    let msg = T::decode(body).map_err(RecvError::Malformed);
    buf.drain(..4 + len);
    Some((msg, 4 + len))
}

/// The most one read of a channel takes.
const READ_CHUNK: usize = 65536;

thread_local! {
    /// Where reads of a channel land before their bytes join the message
    /// being received: one buffer a thread, made once. A zeroed array on
    /// the stack at every read cost a 64 KiB memset a read, and in a fresh
    /// worker 16 page faults on its stack; under emulation (TCG) both were a
    /// visible part of every case.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `read` with this thread's read buffer.
fn with_read_chunk<R>(read: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_empty() {
            b.resize(READ_CHUNK, 0);
        }
        read(&mut b)
    })
}

/// Makes this thread's read buffer now: the fork server does, so that every
/// worker, a copy of it, has one without zeroing its own.
pub fn make_read_buffer() {
    with_read_chunk(|_| ());
}

/// A worker's blocking end of its channel. One recvmsg takes whatever has
/// arrived (a whole request, as a rule), where reading the length and then
/// the body would cost three system calls a step.
#[derive(Default)]
pub struct Receiver {
    buf: Vec<u8>,
    /// Fds received, each with the place in `buf` of the last byte of the
    /// read that brought them: the kernel ends a read with the piece of data
    /// they rode on, so that byte is of the message they came with.
    fds: Vec<(usize, OwnedFd)>,
}

impl Receiver {
    /// One message and every fd that came with it; `Ok(None)` means the
    /// peer closed the channel.
    pub fn recv<T: Message>(
        &mut self,
        sock: &UnixStream,
    ) -> Result<Option<(T, Vec<OwnedFd>)>, RecvError> {
        loop {
            if let Some((msg, taken)) = take_frame::<T>(&mut self.buf) {
                let (ours, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.fds)
                    .into_iter()
                    .partition(|(at, _)| *at < taken);
                self.fds = later.into_iter().map(|(at, fd)| (at - taken, fd)).collect();
                return Ok(Some((msg?, ours.into_iter().map(|(_, fd)| fd).collect())));
            }
            let mut fds = Vec::new();
            let n = with_read_chunk(|chunk| {
                let n = recvmsg_fds(sock, chunk, &mut fds)?;
                self.buf.extend_from_slice(&chunk[..n]);
                Ok::<_, RecvError>(n)
            })?;
            if n == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(RecvError::Malformed("channel closed mid-message".into())),
                };
            }
            let last = self.buf.len() - 1;
            self.fds.extend(fds.into_iter().map(|fd| (last, fd)));
        }
    }
}

/// The coordinator's end of one worker's channel: non-blocking, read with a deadline.
pub struct Channel {
    sock: UnixStream,
    buf: Vec<u8>,
}

impl Channel {
    pub fn new(sock: UnixStream) -> std::io::Result<Channel> {
        sock.set_nonblocking(true)?;
        Ok(Channel {
            sock,
            buf: Vec::new(),
        })
    }

    /// Whether bytes already read wait here (a poll of the socket would not see them).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The socket, for a poll on several channels at once (`relay`).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.sock)
    }

    pub fn send(&self, req: &Request, fd: Option<RawFd>) -> std::io::Result<()> {
        let bytes = frame(req);
        let mut sent = 0;
        if let Some(fd) = fd {
            let fds = [fd];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let first = [IoSlice::new(&bytes[..1])];
            sendmsg::<()>(
                self.sock.as_raw_fd(),
                &first,
                &cmsg,
                MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)?;
            sent = 1;
        }
        // The worker has read the previous request, so the socket buffer is
        // empty and a request fits; wait for room only if it somehow does not.
        // MSG_NOSIGNAL: a worker that died is seen on receive, not as SIGPIPE.
        while sent < bytes.len() {
            match nix::sys::socket::send(
                self.sock.as_raw_fd(),
                &bytes[sent..],
                MsgFlags::MSG_NOSIGNAL,
            )
            .map_err(std::io::Error::from)
            {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                    use std::os::fd::AsFd;
                    let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(1000u16));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits for one observation until `deadline`.
    pub fn recv(&mut self, deadline: Instant) -> Result<Observation, RecvError> {
        loop {
            if let Some((msg, _)) = take_frame(&mut self.buf) {
                return msg;
            }
            match self.fill(deadline)? {
                0 => return Err(RecvError::Closed),
                _ => continue,
            }
        }
    }

    /// Waits until the peer closes its end (the process has exited).
    pub fn wait_closed(&mut self, deadline: Instant) -> Result<(), RecvError> {
        loop {
            match self.fill(deadline) {
                Ok(0) => return Ok(()),
                Ok(_) => self.buf.clear(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what is available, waiting for it until the deadline. 0 = closed.
    /// Polls first: the answer waited for has, as a rule, not come yet, and
    /// a read first would fail with EAGAIN before every poll.
    fn fill(&mut self, deadline: Instant) -> Result<usize, RecvError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        loop {
            // At or past the deadline the poll does not wait, so what has
            // come already is still taken.
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = match left.is_zero() {
                true => 0,
                false => left.as_millis().clamp(1, i32::MAX as u128) as i32,
            };
            let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) if left.is_zero() => return Err(RecvError::TimedOut),
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(RecvError::Io(e.into())),
            }
            let read: std::io::Result<usize> = with_read_chunk(|chunk| {
                let n = (&self.sock).read(chunk)?;
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            });
            match read {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(0),
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::time::Duration;

    #[rstest]
    #[case(Request::Fork)]
    #[case(Request::Exit(3))]
    #[case(Request::Call(Call::Store { map: "m".into(), at: -1, data: Bytes::Literal(vec![0, 255]) }))]
    #[case(Request::Call(Call::Mmap { fd: None, len: u64::MAX, prot: 3, flags: 0x22, offset: 0, addr: Some(Place::Raw(1)), name: "m".into() }))]
    #[case(Request::Batch(vec![Call::Pwrite { fd: "f".into(), at: i64::MIN, data: Bytes::Fill { byte: 7, len: 1 << 40 } }, Call::Munlockall]))]
    #[case(Request::Relay { epoch: 4095, slot: 31, items: vec![crate::exec::relay::Item { seq: 3, call: Call::Load { map: "m".into(), at: 8, len: 8 }, next: None }] })]
    fn requests_round_trip(#[case] req: Request) {
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &req, None).unwrap();
        let (got, fd) = recv_blocking::<Request>(&b).unwrap().unwrap();
        assert_eq!(got, req);
        assert!(fd.is_none());
    }

    #[test]
    fn a_damaged_request_is_an_error_not_a_panic() {
        let req = Request::Call(Call::Store {
            map: "m".into(),
            at: 3,
            data: Bytes::Literal(b"abc".to_vec()),
        });
        let mut body = Vec::new();
        req.encode(&mut body);
        assert_eq!(Request::decode(&body), Ok(req));
        for cut in 0..body.len() {
            assert!(Request::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        body.push(0);
        assert!(Request::decode(&body).is_err());
    }

    #[test]
    fn fd_travels_with_the_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, _y) = UnixStream::pair().unwrap();
        send(&a, &Request::Fork, Some(x.as_raw_fd())).unwrap();
        let (got, fd) = recv_blocking::<Request>(&b).unwrap().unwrap();
        assert_eq!(got, Request::Fork);
        assert!(fd.is_some());
    }

    #[test]
    fn a_receiver_takes_messages_one_by_one_however_they_arrive() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, _y) = UnixStream::pair().unwrap();
        let batch = Request::Batch(vec![Call::Close { fd: "f".into() }]);
        // Two messages in one write, then one whose fd rides on its first byte.
        let mut both = frame(&Request::Exit(1));
        both.extend(frame(&batch));
        (&a).write_all(&both).unwrap();
        send(&a, &Request::Fork, Some(x.as_raw_fd())).unwrap();
        drop(a);
        let mut rx = Receiver::default();
        let mut next = || rx.recv::<Request>(&b).unwrap();
        let (first, fds) = next().unwrap();
        assert_eq!((first, fds.len()), (Request::Exit(1), 0));
        let (second, fds) = next().unwrap();
        assert_eq!((second, fds.len()), (batch, 0));
        let (third, fds) = next().unwrap();
        assert_eq!((third, fds.len()), (Request::Fork, 1));
        assert!(next().is_none());
    }

    #[test]
    fn observations_round_trip_and_close_is_seen() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut obs = Observation::of(Outcome::Signal {
            signal: "SIGBUS".into(),
            si_code: "BUS_ADRERR".into(),
            offset: 4096,
            done: 4096,
            map_offset: 8192,
        });
        obs.bytes = Some(vec![1, 2, 3]);
        send(&a, &obs, None).unwrap();
        drop(a);
        let mut chan = Channel::new(b).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(chan.recv(deadline).unwrap(), obs);
        assert!(matches!(chan.recv(deadline), Err(RecvError::Closed)));
    }

    #[test]
    fn recv_times_out_when_nothing_comes() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut chan = Channel::new(b).unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(matches!(chan.recv(deadline), Err(RecvError::TimedOut)));
    }
}
