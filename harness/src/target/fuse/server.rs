//! `mmapconf __fuse-server --mode MODE BACKING_DIR MOUNT_POINT`: serves
//! BACKING_DIR at MOUNT_POINT through FUSE, each request done with the
//! same syscall on the backing file, until the filesystem is unmounted.
//!
//! One thread serves requests in order (fuser's loop): correctness and
//! plain code matter here, not throughput. Every open file handle keeps
//! its own descriptor of the backing file, so a file unlinked while open
//! (or while mapped: the kernel releases a file only after its last
//! mapping is gone) is still read and written, as on a local filesystem.

use super::table::{Table, ROOT};
use super::{FuseMode, READY};
use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may trust an entry or attributes we returned.
/// Zero: the kernel takes a zero timeout as already expired, so every
/// stat and every path walk asks the server, which answers from the
/// backing file, and the kernel never shows a size or time older than the
/// storage's (with the writeback cache the kernel keeps size and times of
/// regular files itself anyway). It costs a request per stat, which the
/// corpus does not notice.
const TTL: Duration = Duration::ZERO;

/// Entry point of the subcommand.
pub fn main(mode: FuseMode, backing: &Path, mount_point: &Path) -> ExitCode {
    // Modes in the kernel's requests are already masked with the caller's
    // umask; the server's own must not mask them again.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0) };
    let root = match std::fs::canonicalize(backing) {
        Ok(r) if r.is_dir() => r,
        Ok(r) => return fail(&format!("{} is not a directory", r.display())),
        Err(e) => return fail(&format!("{}: {e}", backing.display())),
    };
    let root_ino = match std::fs::metadata(&root) {
        Ok(m) => m.ino(),
        Err(e) => return fail(&format!("{}: {e}", root.display())),
    };
    let fs = Server {
        mode,
        state: Mutex::new(State {
            table: Table::new(&root, root_ino),
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            backing_ids: HashMap::new(),
            unlinked: HashMap::new(),
        }),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        // mountinfo: type fuse.mmapconf, source mmapconf-<mode>.
        MountOption::FSName(format!("mmapconf-{mode}")),
        MountOption::CUSTOM("subtype=mmapconf".to_string()),
        // The kernel checks permissions from the modes we report, as a
        // local filesystem does; the server (root) would allow anything.
        MountOption::DefaultPermissions,
    ];
    // Any user's processes may use it, as a local filesystem (allow_other;
    // fuser would otherwise refuse requests from uids other than ours).
    config.acl = SessionACL::All;
    // Mounts, then answers INIT (where the mode's capabilities are checked).
    let session = match fuser::Session::new(fs, mount_point, &config) {
        Ok(s) => s,
        Err(e) => {
            return fail(&format!(
                "cannot serve {} at {}: {e}",
                root.display(),
                mount_point.display()
            ))
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{READY}").and_then(|_| out.flush()).is_err() {
        return fail("the harness is gone");
    }
    drop(out);
    match session.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("session ended: {e}")),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("{why}");
    ExitCode::from(1)
}

struct Server {
    mode: FuseMode,
    state: Mutex<State>,
}

struct State {
    table: Table,
    /// Open files by handle.
    files: HashMap<u64, OpenFile>,
    /// Open directories by handle: their entries as read at opendir.
    dirs: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_fh: u64,
    /// Passthrough: the backing id of each node that has open files. The
    /// kernel wants one backing file per inode at a time, so every open of
    /// a node reuses its id while any handle holds it.
    backing_ids: HashMap<u64, Weak<BackingId>>,
    /// Nodes unlinked (or replaced by a rename) that the kernel may still
    /// ask about, until it FORGETs them: a descriptor of each. The kernel
    /// asks even when no file is open, e.g. the writeback cache's SETATTR
    /// of a deleted file's times at the next syncfs; failing that request
    /// would make syncfs fail, which no local filesystem does.
    unlinked: HashMap<u64, File>,
}

struct OpenFile {
    node: u64,
    file: File,
    /// Passthrough: keeps the backing id registered while this handle lives.
    _backing: Option<Arc<BackingId>>,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn last_errno() -> Errno {
    errno(std::io::Error::last_os_error())
}

fn check(r: libc::c_int) -> Result<(), Errno> {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

fn kind(ft: std::fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

fn attr(node: u64, m: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(node),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind(m.file_type()),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, libc::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, libc::UTIME_NOW),
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                // Before 1970: whole seconds down, nanoseconds up.
                let d = e.duration();
                let mut s = -(d.as_secs() as i64);
                let mut ns = d.subsec_nanos() as i64;
                if ns > 0 {
                    s -= 1;
                    ns = 1_000_000_000 - ns;
                }
                (s, ns)
            }
        },
    };
    libc::timespec { tv_sec, tv_nsec }
}

/// Opens a backing file for a FUSE open. Read-write whatever the caller
/// asked (the kernel has checked its permissions already): with the
/// writeback cache the kernel reads pages in through handles it opened
/// write-only, and writes back a shared mapping through any writable one.
/// Never O_APPEND (writes come with their offset, and pwrite on an
/// O_APPEND descriptor would ignore it) nor O_DIRECT (the backing file's
/// caching is not the case's business). `nofollow` for paths in the
/// backing directory (a symlink there is never followed out of it), not
/// for /proc/self/fd links, which are symlinks to follow.
fn open_backing(path: &Path, flags: i32, nofollow: bool) -> Result<File, Errno> {
    let custom = if nofollow { libc::O_NOFOLLOW } else { 0 };
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(custom)
        .open(path);
    match rw {
        Ok(f) => Ok(f),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            let acc = flags & libc::O_ACCMODE;
            std::fs::OpenOptions::new()
                .read(acc != libc::O_WRONLY)
                .write(acc != libc::O_RDONLY)
                .custom_flags(custom)
                .open(path)
                .map_err(errno)
        }
        Err(e) => Err(errno(e)),
    }
}

impl State {
    /// A descriptor of `node` when it has no path: any open handle's, or
    /// the one kept since it was unlinked.
    fn open_file_of(&self, node: u64) -> Option<&File> {
        self.files
            .values()
            .find(|f| f.node == node)
            .map(|f| &f.file)
            .or_else(|| self.unlinked.get(&node))
    }

    /// Before `path` is unlinked or replaced: keeps a descriptor of its
    /// node (see `unlinked`). Best effort: a node nobody can open (a
    /// socket) just becomes unknown, as before this existed.
    fn keep_unlinked(&mut self, path: &Path) {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return;
        };
        let node = self.table.node(m.ino());
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let opened = if m.is_dir() {
            File::open(path)
        } else {
            // Read-write where possible, so a SETATTR of the size works too.
            std::fs::OpenOptions::new()
                .read(true)
                .write(m.is_file())
                .custom_flags(flags)
                .open(path)
        };
        if let Ok(f) = opened {
            self.unlinked.insert(node, f);
        }
    }

    fn handle(&self, fh: FileHandle) -> Result<&OpenFile, Errno> {
        self.files.get(&fh.0).ok_or(Errno::EBADF)
    }

    /// Where `node` is: its path, else (unlinked) an open handle's file.
    fn place(&self, node: u64, fh: Option<FileHandle>) -> Result<Place<'_>, Errno> {
        if let Some(f) = fh.and_then(|fh| self.files.get(&fh.0)) {
            return Ok(Place::Fd(&f.file));
        }
        if let Some(p) = self.table.path(node) {
            return Ok(Place::Path(p));
        }
        self.open_file_of(node).map(Place::Fd).ok_or(Errno::ENOENT)
    }

    fn stat(&self, node: u64, fh: Option<FileHandle>) -> Result<Metadata, Errno> {
        match self.place(node, fh)? {
            Place::Fd(f) => f.metadata().map_err(errno),
            Place::Path(p) => std::fs::symlink_metadata(p).map_err(errno),
        }
    }

    /// Looks `path` up: its attributes, and it is remembered under its node.
    fn lookup(&mut self, path: PathBuf) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(&path).map_err(errno)?;
        let node = self.table.node(m.ino());
        self.table.remember(node, path);
        Ok(attr(node, &m))
    }

    /// Undoes `keep_unlinked(path)` when the unlink did not happen.
    fn forget_unlinked_at(&mut self, path: &Path) {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            let node = self.table.node(m.ino());
            self.unlinked.remove(&node);
        }
    }

    fn new_fh(&mut self) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        fh
    }

    /// The gid a new file in `parent` gets: the parent's if it is setgid.
    fn new_gid(&self, parent: &Path, req: &Request) -> u32 {
        match std::fs::metadata(parent) {
            Ok(m) if m.mode() & libc::S_ISGID != 0 => m.gid(),
            _ => req.gid(),
        }
    }
}

enum Place<'a> {
    Fd(&'a File),
    Path(&'a Path),
}

impl Place<'_> {
    fn chmod(&self, mode: u32) -> Result<(), Errno> {
        // SAFETY: plain syscalls on a valid fd or NUL-terminated path.
        match self {
            Place::Fd(f) => check(unsafe { libc::fchmod(f.as_raw_fd(), mode) }),
            Place::Path(p) => check(unsafe { libc::chmod(cpath(p)?.as_ptr(), mode) }),
        }
    }

    fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
        let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
        // SAFETY: as above; -1 leaves an id as it is.
        match self {
            Place::Fd(f) => check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) }),
            Place::Path(p) => check(unsafe { libc::lchown(cpath(p)?.as_ptr(), uid, gid) }),
        }
    }

    fn truncate(&self, size: u64) -> Result<(), Errno> {
        let size = i64::try_from(size).map_err(|_| Errno::EFBIG)?;
        // SAFETY: as above.
        match self {
            Place::Fd(f) => check(unsafe { libc::ftruncate(f.as_raw_fd(), size) }),
            Place::Path(p) => check(unsafe { libc::truncate(cpath(p)?.as_ptr(), size) }),
        }
    }

    fn utimens(&self, atime: Option<TimeOrNow>, mtime: Option<TimeOrNow>) -> Result<(), Errno> {
        let ts = [timespec(atime), timespec(mtime)];
        // SAFETY: as above; ts holds two timespecs.
        match self {
            Place::Fd(f) => check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) }),
            Place::Path(p) => check(unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    cpath(p)?.as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            }),
        }
    }
}

impl Server {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open flags this mode answers with (FOPEN_PASSTHROUGH is added
    /// by fuser with the backing id).
    fn fopen_flags(&self) -> FopenFlags {
        match self.mode {
            FuseMode::Default | FuseMode::Writeback | FuseMode::Passthrough => FopenFlags::empty(),
            FuseMode::KeepCache => FopenFlags::FOPEN_KEEP_CACHE,
            FuseMode::DirectIo | FuseMode::DirectIoMmap => FopenFlags::FOPEN_DIRECT_IO,
        }
    }

    /// Passthrough: the backing id for `node`, the one its open handles
    /// already use or a new one for `file` made by `register`.
    fn backing_id(
        &self,
        state: &mut State,
        node: u64,
        register: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> Result<Option<Arc<BackingId>>, Errno> {
        if self.mode != FuseMode::Passthrough {
            return Ok(None);
        }
        if let Some(id) = state.backing_ids.get(&node).and_then(Weak::upgrade) {
            return Ok(Some(id));
        }
        let id = Arc::new(register().map_err(errno)?);
        state.backing_ids.insert(node, Arc::downgrade(&id));
        Ok(Some(id))
    }
}

fn unsupported(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("unsupported: the kernel does not offer {what}"),
    )
}

impl Filesystem for Server {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let want = match self.mode {
            FuseMode::Writeback => Some((InitFlags::FUSE_WRITEBACK_CACHE, "FUSE_WRITEBACK_CACHE")),
            FuseMode::DirectIoMmap => Some((
                InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
                "FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6 and later)",
            )),
            FuseMode::Passthrough => Some((
                InitFlags::FUSE_PASSTHROUGH,
                "FUSE_PASSTHROUGH (Linux 6.9 and later, CONFIG_FUSE_PASSTHROUGH)",
            )),
            _ => None,
        };
        if let Some((flag, what)) = want {
            config
                .add_capabilities(flag)
                .map_err(|_| unsupported(what))?;
        }
        if self.mode == FuseMode::Passthrough {
            if !nix::unistd::geteuid().is_root() {
                return Err(std::io::Error::other(
                    "unsupported: passthrough needs CAP_SYS_ADMIN (FUSE_DEV_IOC_BACKING_OPEN)",
                ));
            }
            // Backing files on a stacked filesystem (overlay) need depth 2;
            // the kernel allows no more.
            config
                .set_max_stack_depth(2)
                .map_err(|_| std::io::Error::other("max_stack_depth 2 refused"))?;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.state();
        let Some(path) = st.table.child(parent.0, name) else {
            return reply.error(Errno::ENOENT);
        };
        match st.lookup(path) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        // The kernel no longer knows the node. A linked node keeps its
        // path (its number is its backing inode's, valid at the next
        // lookup); an unlinked one is gone for good now.
        self.state().unlinked.remove(&ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.state();
        match st.stat(ino.0, fh) {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        // The backing file sets its own ctime at each change above; the
        // kernel sends one only with the writeback cache, where it keeps
        // the times of regular files itself.
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let st = self.state();
        let done = (|| {
            let place = st.place(ino.0, fh)?;
            if let Some(mode) = mode {
                place.chmod(mode & 0o7777)?;
            }
            if uid.is_some() || gid.is_some() {
                place.chown(uid, gid)?;
            }
            if let Some(size) = size {
                place.truncate(size)?;
            }
            if atime.is_some() || mtime.is_some() {
                place.utimens(atime, mtime)?;
            }
            st.stat(ino.0, fh)
        })();
        match done {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.state();
        let done = (|| {
            let path = st.table.child(parent.0, name).ok_or(Errno::ENOENT)?;
            let gid = st.new_gid(path.parent().unwrap_or(&path), req);
            // SAFETY: a NUL-terminated path.
            check(unsafe { libc::mkdir(cpath(&path)?.as_ptr(), mode & !umask & 0o7777) })?;
            // Created by root: give it to the caller, as a local mkdir would.
            let _ = Place::Path(&path).chown(Some(req.uid()), Some(gid));
            st.lookup(path)
        })();
        match done {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        // FIFOs and sockets (the kernel creates regular files with CREATE;
        // device nodes are useless on a nodev mount but cost nothing).
        let mut st = self.state();
        let done = (|| {
            let path = st.table.child(parent.0, name).ok_or(Errno::ENOENT)?;
            let gid = st.new_gid(path.parent().unwrap_or(&path), req);
            let mode = (mode & libc::S_IFMT) | (mode & !umask & 0o7777);
            // SAFETY: a NUL-terminated path.
            check(unsafe { libc::mknod(cpath(&path)?.as_ptr(), mode, rdev.into()) })?;
            let _ = Place::Path(&path).chown(Some(req.uid()), Some(gid));
            st.lookup(path)
        })();
        match done {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        // The target is only text: the kernel resolves it inside the mount.
        let mut st = self.state();
        let done = (|| {
            let path = st.table.child(parent.0, link_name).ok_or(Errno::ENOENT)?;
            std::os::unix::fs::symlink(target, &path).map_err(errno)?;
            let _ = Place::Path(&path).chown(Some(req.uid()), Some(req.gid()));
            st.lookup(path)
        })();
        match done {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.state();
        let done = st
            .table
            .path(ino.0)
            .ok_or(Errno::ENOENT)
            .and_then(|p| std::fs::read_link(p).map_err(errno));
        match done {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.state();
        let Some(path) = st.table.child(parent.0, name) else {
            return reply.error(Errno::ENOENT);
        };
        st.keep_unlinked(&path);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                // Its node is served from a descriptor from now on.
                st.table.removed(&path);
                reply.ok()
            }
            Err(e) => {
                st.forget_unlinked_at(&path);
                reply.error(errno(e))
            }
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.state();
        let Some(path) = st.table.child(parent.0, name) else {
            return reply.error(Errno::ENOENT);
        };
        st.keep_unlinked(&path);
        match std::fs::remove_dir(&path) {
            Ok(()) => {
                st.table.removed(&path);
                reply.ok()
            }
            Err(e) => {
                st.forget_unlinked_at(&path);
                reply.error(errno(e))
            }
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        let done = (|| {
            let from = st.table.child(parent.0, name).ok_or(Errno::ENOENT)?;
            let to = st.table.child(newparent.0, newname).ok_or(Errno::ENOENT)?;
            let (cf, ct) = (cpath(&from)?, cpath(&to)?);
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            if !exchange {
                st.keep_unlinked(&to);
            }
            // SAFETY: NUL-terminated paths.
            let renamed = check(unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    cf.as_ptr(),
                    libc::AT_FDCWD,
                    ct.as_ptr(),
                    flags.bits(),
                )
            });
            if let Err(e) = renamed {
                st.forget_unlinked_at(&to);
                return Err(e);
            }
            if exchange {
                st.table.exchanged(&from, &to);
            } else {
                st.table.removed(&to);
                st.table.renamed(&from, &to);
            }
            Ok(())
        })();
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.state();
        let done = (|| {
            let file = match st.table.path(ino.0) {
                Some(p) => open_backing(p, flags.0, true)?,
                // Unlinked, opened again through /proc/<pid>/fd: reopen
                // what a descriptor of ours holds.
                None => {
                    let f = st.open_file_of(ino.0).ok_or(Errno::ENOENT)?;
                    let link = format!("/proc/self/fd/{}", f.as_raw_fd());
                    open_backing(Path::new(&link), flags.0, false)?
                }
            };
            let backing = self.backing_id(&mut st, ino.0, || reply.open_backing(&file))?;
            let fh = st.new_fh();
            st.files.insert(
                fh,
                OpenFile {
                    node: ino.0,
                    file,
                    _backing: backing.clone(),
                },
            );
            Ok((fh, backing))
        })();
        match done {
            Ok((fh, Some(id))) => reply.opened_passthrough(FileHandle(fh), self.fopen_flags(), &id),
            Ok((fh, None)) => reply.opened(FileHandle(fh), self.fopen_flags()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.state();
        let done = (|| {
            let path = st.table.child(parent.0, name).ok_or(Errno::ENOENT)?;
            let gid = st.new_gid(path.parent().unwrap_or(&path), req);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .create_new(flags & libc::O_EXCL != 0)
                // The file may have appeared since the kernel's lookup.
                .truncate(flags & libc::O_TRUNC != 0)
                .mode(mode & !umask & 0o7777)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(errno)?;
            // Created by root: give it to the caller, as a local create would.
            let _ = Place::Fd(&file).chown(Some(req.uid()), Some(gid));
            let m = file.metadata().map_err(errno)?;
            let node = st.table.node(m.ino());
            st.table.remember(node, path);
            let backing = self.backing_id(&mut st, node, || reply.open_backing(&file))?;
            let fh = st.new_fh();
            st.files.insert(
                fh,
                OpenFile {
                    node,
                    file,
                    _backing: backing.clone(),
                },
            );
            Ok((attr(node, &m), fh, backing))
        })();
        match done {
            Ok((a, fh, Some(id))) => reply.created_passthrough(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                self.fopen_flags(),
                &id,
            ),
            Ok((a, fh, None)) => {
                reply.created(&TTL, &a, Generation(0), FileHandle(fh), self.fopen_flags())
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.state();
        let done = (|| {
            let f = &st.handle(fh)?.file;
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            // Short only at the end of the file, as the kernel expects.
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(got);
            Ok(buf)
        })();
        match done {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let st = self.state();
        let done = st
            .handle(fh)
            .and_then(|f| f.file.write_all_at(data, offset).map_err(errno));
        match done {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Every write reached the backing file when it was answered.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        // Closes the descriptor, and for passthrough the backing id when
        // this was the node's last handle.
        st.files.remove(&fh.0);
        st.backing_ids.retain(|_, id| id.strong_count() > 0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let st = self.state();
        let done = st.handle(fh).and_then(|f| {
            if datasync {
                f.file.sync_data().map_err(errno)
            } else {
                f.file.sync_all().map_err(errno)
            }
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.state();
        let done = (|| {
            let path = st.table.path(ino.0).ok_or(Errno::ENOENT)?.to_path_buf();
            // Read whole now: a reader that unlinks entries as it goes
            // (rm -r) must still see each entry once, which offsets into a
            // listing read again at every readdir would not give.
            let parent = match path.parent() {
                Some(p) if ino.0 != ROOT => std::fs::metadata(p)
                    .map(|m| st.table.node(m.ino()))
                    .unwrap_or(ROOT),
                _ => ROOT,
            };
            let mut entries = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (parent, FileType::Directory, OsString::from("..")),
            ];
            for e in std::fs::read_dir(&path).map_err(errno)? {
                let e = e.map_err(errno)?;
                let ft = e.file_type().map(kind).unwrap_or(FileType::RegularFile);
                entries.push((st.table.node(e.ino()), ft, e.file_name()));
            }
            let fh = st.new_fh();
            st.dirs.insert(fh, entries);
            Ok(fh)
        })();
        match done {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.state();
        let Some(entries) = st.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // An entry's offset is that of the next one.
        for (i, (node, ft, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*node), i as u64 + 1, *ft, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.state().dirs.remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.state();
        let Some(root) = st.table.path(ROOT) else {
            return reply.error(Errno::EIO);
        };
        match nix::sys::statvfs::statvfs(root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks access(2) itself and
        // never asks; should it, existence is what is left to check.
        match self.state().stat(ino.0, None) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let st = self.state();
        let done = st.handle(fh).and_then(|f| {
            // The same mode on the backing file: KEEP_SIZE, PUNCH_HOLE,
            // ZERO_RANGE ... (the kernel has dropped the cached range).
            // SAFETY: fallocate on an open descriptor.
            check(unsafe {
                libc::fallocate(f.file.as_raw_fd(), mode, offset as i64, length as i64)
            })
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel asks only for SEEK_DATA and SEEK_HOLE; the backing
        // file's holes are the answer. The descriptor's own offset is
        // never used for I/O (pread/pwrite), so moving it is harmless.
        let st = self.state();
        let done = st.handle(fh).and_then(|f| {
            // SAFETY: lseek on an open descriptor.
            let r = unsafe { libc::lseek(f.file.as_raw_fd(), offset, whence) };
            if r < 0 {
                Err(last_errno())
            } else {
                Ok(r)
            }
        });
        match done {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(e),
        }
    }
}
