//! The case format as Rust types: what a case file may say.
//!
//! These types are the authority the JSON Schema (`specs/case.schema.json`)
//! is generated from. They hold what was written, unresolved: sizes may say
//! "2p" (two pages) and flags are names; `exec::plan` resolves them against
//! the environment a case runs in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One case: processes doing steps on files and mappings, and what each step must observe.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// One line: the property the case checks, stated as a fact.
    pub title: String,
    /// Why the property holds and what would break it.
    #[serde(default)]
    pub description: String,
    /// Where the property comes from: man pages ("mmap(2)"), standard clauses
    /// ("POSIX.1-2017 mmap"), and tests of other suites it mirrors ("ltp:mmap01").
    pub refs: Vec<String>,
    /// Whether the case checks behaviour POSIX requires or behaviour Linux adds.
    #[serde(default)]
    pub profile: Profile,
    /// What the case needs; when unmet the case is skipped with the reason.
    #[serde(default)]
    pub requires: Requires,
    /// Time limit in seconds for the whole case (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Files created in the case's scratch directory before the first step.
    #[serde(default)]
    pub files: BTreeMap<String, FileInit>,
    /// Processes that need more than the defaults, by name: which mount of
    /// the filesystem a fresh process works through.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, ProcessInit>,
    /// The steps, run one at a time in this order.
    pub steps: Vec<Step>,
}

/// What a fresh process of a case is given beyond the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessInit {
    /// The mount of the filesystem the process's paths resolve in: `first`
    /// (the one the scratch directory was made in, as every other process) or
    /// `second`: another mount of the same filesystem (`run --second-dir`),
    /// where the same scratch directory is seen through another client, such
    /// as a second NFS mount of one export with its own cache. A case with a
    /// `second` process is skipped where the run has no second mount.
    #[serde(default)]
    pub mount: Mount,
}

/// Which mount of the filesystem under test a process works through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mount {
    #[default]
    First,
    Second,
}

/// Which standard a case's expectations follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Behaviour POSIX requires of every conforming system.
    Posix,
    /// Behaviour specific to Linux (where POSIX leaves it open or says otherwise).
    #[default]
    Linux,
}

/// What a case needs to run. Anything unmet makes it skipped, never failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Effective uid 0.
    #[serde(default, skip_serializing_if = "is_false")]
    pub root: bool,
    /// Kernel version range, e.g. ">=4.17" or ">=5.8,<6.1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Filesystems the case runs on; empty means any. A name matches the
    /// type in /proc/self/mountinfo ("ext4", "fuse.bindfs", "fuseblk"), a
    /// family ("fuse": every FUSE filesystem) or a FUSE subtype ("fuse.bindfs").
    /// Only for behaviour that belongs to that filesystem: a capability is a probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<String>,
    /// Filesystems the case does not run on (matched as `fs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_fs: Vec<String>,
    /// Names of targets the harness builds (`--fs`/`--target` names) the case runs on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<String>,
    /// Mount options the filesystem must have, each as /proc/self/mountinfo
    /// shows it ("nodelalloc", "data=journal", "dax").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
    /// Architectures (uname -m) the case runs on; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch: Vec<String>,
    /// Page size in bytes the case assumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
    /// Kernel features and target capabilities, probed at run time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// Kernel config options the running kernel must have, read from
    /// /proc/config.gz or /boot/config-$(uname -r): "CONFIG_X" (set, y or
    /// m), "CONFIG_X=y", "CONFIG_X=m", "CONFIG_X=n" (not set) or another value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A kernel feature, or a capability of the target filesystem, that the
/// harness finds out by trying it: kernel features once per run, target
/// capabilities once per target in its scratch root (recorded in the report).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// MAP_FIXED_NOREPLACE is honoured (Linux 4.17); older kernels ignore it.
    MapFixedNoreplace,
    /// MAP_SHARED_VALIDATE rejects unknown flags (Linux 4.15).
    MapSharedValidate,
    /// madvise(MADV_WIPEONFORK) is known (Linux 4.14).
    MadvWipeonfork,
    /// memfd_create(2) exists (Linux 3.17).
    MemfdCreate,
    /// mlock(2) of a page succeeds under the current RLIMIT_MEMLOCK.
    Mlock,
    /// /proc/self/pagemap shows page frame numbers (needs CAP_SYS_ADMIN).
    PagemapPfn,
    /// mremap(2) knows MREMAP_DONTUNMAP (Linux 5.7).
    MremapDontunmap,
    /// At least 16 free huge pages of the kernel's default size
    /// (`Hugepagesize`, what `h` stands for) for the run: the harness
    /// raised /proc/sys/vm/nr_hugepages by that much (it needs root and
    /// the memory), or found them free. Cases that need it run one at a
    /// time, since the pool is one for the whole machine.
    HugetlbPool,
    /// Swap is active: /proc/swaps lists a swap area with free space, so
    /// MADV_PAGEOUT really writes anonymous and shmem pages out (without
    /// swap the kernel keeps them resident and a case about swap-in would
    /// pass without exercising it). Asked at every case, not remembered.
    Swap,
    /// Target: ordinary files: a new file takes a write(2) of one byte and
    /// an ftruncate(2) to one page (not hugetlbfs: no write(2), sizes in
    /// huge pages). Every case with `files` or an `open` step needs it,
    /// unless it names the target's filesystem in `requires.fs`.
    RegularFiles,
    /// Target: open(2) with O_DIRECT and an aligned pwrite(2) succeed.
    ODirect,
    /// Target: the harness can read what reached its storage, apart from
    /// this kernel's page cache (`check_file` `from: storage`): the target's
    /// backing files, or O_DIRECT. Cases that read the storage need it.
    StorageView,
    /// Target: a file extended with ftruncate(2) owns no blocks (st_blocks 0): it has a hole.
    SparseFiles,
    /// Target: fallocate(2) FALLOC_FL_PUNCH_HOLE succeeds.
    PunchHole,
    /// Target: a writable MAP_SHARED mapping of a file can be made.
    SharedWritableMmap,
    /// Target: a read-only MAP_SHARED mapping of a file can be made (a
    /// FUSE file opened with FOPEN_DIRECT_IO, without
    /// FUSE_DIRECT_IO_ALLOW_MMAP, refuses every shared mapping: ENODEV).
    SharedMmap,
    /// Target: madvise(MADV_REMOVE) on a MAP_SHARED file mapping succeeds.
    MadvRemove,
    /// Target: the page cache gets clean: after fsync(2), POSIX_FADV_DONTNEED
    /// drops the file's pages (not so where memory is the storage: tmpfs, ramfs).
    Writeback,
    /// Target: a file's cached pages stay cached when another open(2) of it
    /// happens (a FUSE server without keep_cache drops them at every open).
    CacheSurvivesOpen,
    /// Target: a store through a MAP_SHARED mapping, then msync(MS_SYNC),
    /// changes the file's st_mtime.
    MtimeOnWriteFault,
    /// Target: the write fault of a store through a MAP_SHARED mapping
    /// changes st_mtime at once, before any msync (not on FUSE without the
    /// writeback cache: fuse_iget sets S_NOCMTIME and the server changes
    /// the time only when the page is written back to it).
    MtimeBeforeMsync,
    /// Target: data outlive an unmount and a crash (a filesystem the harness
    /// made on a block device; not tmpfs, nor an overlay on tmpfs).
    Persistent,
    /// Target: the harness can cut its power (`crash` steps): a filesystem
    /// it made, whose every page is then lost (tmpfs) or recovered from
    /// the device; not an overlay, whose layers it cannot cut at one instant.
    Crash,
    /// Target: a file can be made in the scratch root (open(2) with
    /// O_CREAT). Not a read-only image (erofs, squashfs). Every case that
    /// writes to the target's files ([`Case::writes_target`]) needs it,
    /// unless it requires `read_only` (it checks what such writes do there).
    Writable,
    /// Target: the filesystem is read-only: making a file in the scratch
    /// root fails with EROFS (erofs, squashfs, a mount with `ro`).
    ReadOnly,
    /// Target: the filesystem has a size (statvfs f_blocks > 0), so
    /// writing ends in ENOSPC; not ramfs, which grows until memory runs
    /// out. Cases with a `fill_fs` step need it.
    FillsUp,
    /// Target: files are DAX: a new file in the scratch root has
    /// STATX_ATTR_DAX (statx(2), Linux 5.8), so its mappings reach the
    /// persistent memory without the page cache, and MAP_SYNC is possible
    /// (ext4 or xfs mounted `dax=always` on a pmem device in fsdax mode).
    Dax,
    /// io_uring works here: a ring can be set up (not ENOSYS, not refused
    /// by kernel.io_uring_disabled or a seccomp filter) and one anonymous
    /// page registered as a fixed buffer (RLIMIT_MEMLOCK permitting).
    IoUring,
}

impl Probe {
    /// Whether this is a capability of the target filesystem (measured in
    /// its scratch root) rather than a feature of the kernel.
    pub fn is_target_capability(self) -> bool {
        !matches!(
            self,
            Probe::MapFixedNoreplace
                | Probe::MapSharedValidate
                | Probe::MadvWipeonfork
                | Probe::MemfdCreate
                | Probe::Mlock
                | Probe::PagemapPfn
                | Probe::MremapDontunmap
                | Probe::HugetlbPool
                | Probe::Swap
                | Probe::IoUring
        )
    }
}

/// A file that exists before the first step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct FileInit {
    /// Size in bytes; the content is zero-filled up to it (or cut to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// What the zeros up to `size` past the content are on the storage:
    /// `hole` (made by ftruncate; the case is skipped where the target has
    /// no sparse files) or `allocated` (written, so the storage holds them).
    /// Absent: made by ftruncate, and the case must not depend on which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeros: Option<Zeros>,
    /// Permission bits (default 0o644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Initial content.
    #[serde(flatten)]
    pub data: Data,
}

/// How a file's zeros past its content are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Zeros {
    /// A hole: ftruncate(2), no storage allocated.
    Hole,
    /// Zero bytes written, so the storage holds them.
    Allocated,
}

/// Bytes given in one of four ways. Exactly one of `text`, `hex`, `fill`,
/// `pattern` is set; `fill` and `pattern` also need `len` (or take the
/// length from the step they are in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Data {
    /// UTF-8 text, taken byte for byte ("\u0000" for a NUL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Hex digits; spaces are ignored ("48 65 6c").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// One byte value repeated `len` times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<u8>,
    /// A deterministic pseudo-random byte sequence from this seed, `len` long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<u64>,
    /// Length for `fill` and `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<Size>,
}

impl Data {
    pub fn is_empty(&self) -> bool {
        self.text.is_none() && self.hex.is_none() && self.fill.is_none() && self.pattern.is_none()
    }
}

/// A byte count or offset: a number, or an expression in pages such as
/// "1p", "2p+100", "p-1", "0x1000".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Size {
    Bytes(i64),
    Expr(String),
}

/// One step: a process does one operation, and what it must observe.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// The process that performs the step. A name seen for the first time
    /// starts a fresh process (like an unrelated program); a name created by
    /// a `fork` step is that child. Omitted for steps the coordinator does
    /// itself (`check_file`, `wait`, `kill`, `together`).
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The thread of process `in` that performs the step: one a
    /// `spawn_thread` step made, or `main` (the process's first thread,
    /// the default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The operation and its arguments.
    #[serde(flatten)]
    pub op: Op,
    /// Name for what the step creates (an fd, a mapping, a child process, a stat snapshot).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What must be observed. Absent means: the call succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Expectations for particular environments; the first whose `when` matches replaces `expect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// Record what happens without judging it (behaviour the standard leaves open).
    #[serde(default, skip_serializing_if = "is_false")]
    pub observe: bool,
    /// A remark shown in explanations and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An expectation that applies in a particular environment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The environment it applies to; every given field must match.
    pub when: When,
    /// The expectation there. Absent means: the call succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Record instead of judging in that environment.
    #[serde(default, skip_serializing_if = "is_false")]
    pub observe: bool,
    /// Why it differs: a commit, a man page sentence, a standard clause.
    pub why: String,
    /// Where this variant applies and the step meets its expectation, the
    /// rest of the case is skipped with this reason (the step's outcome
    /// leaves nothing for the later steps to test there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_rest: Option<String>,
}

/// A description of environments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Filesystems, matched as `requires.fs` (a type, a family such as
    /// "fuse", or a FUSE subtype such as "fuse.bindfs").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<String>,
    /// Target names (`--fs`/`--target`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<String>,
    /// Mount options that must all be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
    /// Kernel version range (">=5.8", "<6.1").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Page size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
    /// Architectures (uname -m).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch: Vec<String>,
}

/// What a step must observe. Empty means success. Fields combine: a load
/// can expect both success and bytes; a failing call expects `errno`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The call fails with this errno ("EINVAL").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// The memory access raises this signal ("SIGBUS", "SIGSEGV").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// With `signal`: its si_code ("BUS_ADRERR", "SEGV_MAPERR", "SEGV_ACCERR").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub si_code: Option<String>,
    /// Bytes read equal this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Bytes read equal these hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// Every byte read equals this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<u8>,
    /// Bytes read equal the pattern from this seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<u64>,
    /// The number observed (a count, or bytes read as a native-endian
    /// unsigned integer): an integer or a size expression ("0x1000", "2p").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Size>,
    /// The number observed lies in [min, max], both included (integers or
    /// size expressions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[Size; 2]>,
    /// The number observed equals the one an earlier step recorded under this name (`as`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// The number observed differs from the one an earlier step recorded under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differs_from: Option<String>,
    /// For `wait`: the process exited with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// For `wait`: the process was killed by this signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_by: Option<String>,
    /// For `fstat`: fields of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<StatExpect>,
    /// With `signal`: the faulting address (si_addr) as an offset from the
    /// start of the named mapping the step accesses (a size: "2p", "0x1000").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_at: Option<Size>,
    /// With `signal`: the bytes (or increments) the access completed before
    /// the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Size>,
    /// With `pattern`: where in the pattern the expected bytes start (a
    /// size): the bytes the pattern has from this offset on, for data
    /// written with the pattern from 0 and read from further in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Size>,
}

impl Expect {
    pub fn bytes(&self) -> Data {
        Data {
            text: self.text.clone(),
            hex: self.hex.clone(),
            fill: self.fill,
            pattern: self.pattern,
            len: None,
        }
    }
}

/// Expected fields of an fstat result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatExpect {
    /// st_size equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// st_blocks (512-byte units) lies in [min, max].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<[i64; 2]>,
    /// st_mtime compared with an earlier fstat step's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Since>,
    /// st_ctime compared with an earlier fstat step's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<Since>,
}

/// A timestamp compared with the one in an earlier snapshot (named by that fstat step's `as`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Since {
    /// The timestamp differs from the snapshot's.
    ChangedSince(String),
    /// The timestamp equals the snapshot's.
    UnchangedSince(String),
}

/// A place in memory: an offset into a named mapping, or a raw address
/// (for arguments the kernel must reject, such as an unaligned or NULL address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Addr {
    Raw(u64),
    /// A raw address written as sizes are ("0x7f0000000000", "16p"): the
    /// same forms, resolved as a length (0 to 2^64-1).
    Expr(String),
    InMap {
        map: String,
        #[serde(default = "zero")]
        at: Size,
    },
}

fn zero() -> Size {
    Size::Bytes(0)
}

/// The operations. `do` names one; the other fields are its arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr)]
#[serde(tag = "do", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Op {
    /// open(2) a file of the scratch directory; `as` names the fd.
    Open {
        path: String,
        /// O_* flags ("O_RDWR|O_CREAT").
        flags: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// close(2) a named fd.
    Close { fd: String },
    /// ftruncate(2).
    Ftruncate { fd: String, len: Size },
    /// pread(2) `len` bytes at `at`; expect bytes.
    Pread { fd: String, at: Size, len: Size },
    /// pwrite(2) bytes at `at`.
    Pwrite {
        fd: String,
        at: Size,
        #[serde(flatten)]
        data: Data,
    },
    /// write(2) bytes at the fd's current offset.
    Write {
        fd: String,
        #[serde(flatten)]
        data: Data,
    },
    /// fsync(2).
    Fsync { fd: String },
    /// fdatasync(2).
    Fdatasync { fd: String },
    /// fstat(2); `as` names the snapshot for later `changed_since`.
    Fstat { fd: String },
    /// futimens(2): set atime and mtime to `time` seconds since the epoch,
    /// so a later change is visible without waiting for the clock to tick.
    Futimens { fd: String, time: i64 },
    /// unlink(2) a file of the scratch directory.
    Unlink { path: String },
    /// memfd_create(2); `as` names the fd.
    MemfdCreate {
        #[serde(default = "memfd_default_name")]
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<String>,
    },
    /// mmap(2); `as` names the mapping. Without `fd` the call gets fd -1 (anonymous).
    Mmap {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fd: Option<String>,
        len: Size,
        /// PROT_* flags ("READ|WRITE", "NONE").
        prot: String,
        /// MAP_* flags ("SHARED", "PRIVATE|ANONYMOUS|FIXED").
        flags: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<Size>,
        /// The address argument (a hint, or the place for MAP_FIXED).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<Addr>,
    },
    /// munmap(2) of `len` bytes at `at` in a mapping (default: all of it).
    Munmap {
        #[serde(flatten)]
        range: Range,
    },
    /// mprotect(2).
    Mprotect {
        #[serde(flatten)]
        range: Range,
        prot: String,
    },
    /// msync(2) with MS_* flags (any, including invalid ones).
    Msync {
        #[serde(flatten)]
        range: Range,
        flags: String,
    },
    /// madvise(2) with one MADV_* advice.
    Madvise {
        #[serde(flatten)]
        range: Range,
        advice: String,
    },
    /// mlock(2), or mlock2(2) when `flags` is given.
    Mlock {
        #[serde(flatten)]
        range: Range,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<String>,
    },
    /// munlock(2).
    Munlock {
        #[serde(flatten)]
        range: Range,
    },
    /// mincore(2); observes one byte per page, 1 where resident.
    Mincore {
        #[serde(flatten)]
        range: Range,
    },
    /// mremap(2) of `old_len` bytes at `at` to `new_len`; `as` renames the
    /// result (default: the mapping keeps its name and moves).
    Mremap {
        map: String,
        #[serde(default = "zero")]
        at: Size,
        old_len: Size,
        new_len: Size,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_addr: Option<Addr>,
    },
    /// Write bytes into a mapping with volatile byte stores.
    Store {
        map: String,
        #[serde(default = "zero")]
        at: Size,
        #[serde(flatten)]
        data: Data,
    },
    /// Read `len` bytes from a mapping with volatile byte loads.
    Load {
        map: String,
        #[serde(default = "zero")]
        at: Size,
        len: Size,
    },
    /// Add 1 to the integer at `at`, `count` times; atomically (lock add)
    /// or as a plain load, add, store that can lose updates.
    Increment {
        map: String,
        #[serde(default = "zero")]
        at: Size,
        count: u64,
        #[serde(default)]
        atomic: bool,
        /// Integer width in bytes, 4 or 8 (default 4).
        #[serde(default = "four")]
        width: u8,
    },
    /// fork(2) the process; `as` names the child, which inherits mappings and fds.
    Fork,
    /// _exit(2) with a status.
    Exit {
        #[serde(default)]
        code: i32,
    },
    /// waitpid(2) for a process, done by its real parent; expect `exit` or `killed_by`.
    Wait {
        #[serde(rename = "proc")]
        target: String,
    },
    /// kill(2) a process with a signal.
    Kill {
        #[serde(rename = "proc")]
        target: String,
        signal: String,
    },
    /// Run the inner steps at the same time (each in a different process), then join.
    Together { steps: Vec<Step> },
    /// Read the page's entry in /proc/self/pagemap; observes its page frame
    /// number as `value` (0 when the page is not present, or when the kernel
    /// hides frame numbers from an unprivileged reader). `as` names the value
    /// for `same_as` / `differs_from` in later steps.
    Pagemap {
        map: String,
        #[serde(default = "zero")]
        at: Size,
        /// Observe the entry's swap bit (62) instead: `value` is 1 when the
        /// page is swapped out (its page table entry holds a swap entry),
        /// else 0. The kernel's cow selftests check that MADV_PAGEOUT took
        /// effect the same way.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        swapped: bool,
    },
    /// Unmount the filesystem cleanly and mount it again: all write-back is
    /// done and its page cache is gone, so reads come from the device. Fails
    /// with EBUSY while a process still has a file open or mapped there.
    /// Needs a filesystem the harness made (`run --fs`).
    Remount {
        /// Mount it again read-only (`-o ro`).
        #[serde(default, skip_serializing_if = "is_false")]
        read_only: bool,
    },
    /// A power cut: every process of the case is killed and the filesystem
    /// is left as its device holds it at this instant, then recovered from
    /// its journal (FS_IOC_SHUTDOWN with NOLOGFLUSH where supported, else a
    /// copy of the loop image). Later steps see what survived. Needs a
    /// filesystem the harness made (`run --fs`).
    Crash,
    /// sync(2), then drop clean page cache, dentries and inodes
    /// (/proc/sys/vm/drop_caches). Needs root.
    DropCaches,
    /// Fill the filesystem: the harness writes a file of this name until
    /// the filesystem says ENOSPC, so later allocations fail. Needs a
    /// filesystem the harness made (`run --fs`).
    FillFs { path: String },
    /// Read a file through a fresh fd opened by the coordinator: what any
    /// reader of the file sees now, through the page cache; or with
    /// `from: storage`, what reached the filesystem's storage.
    CheckFile {
        path: String,
        #[serde(default = "zero")]
        at: Size,
        /// Bytes to read (default: to the end of the file).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        len: Option<Size>,
        /// Where to read: `cache` (default) or `storage`.
        #[serde(default, skip_serializing_if = "ReadFrom::is_cache")]
        from: ReadFrom,
    },
    // --- issue 18, part A: mappings as syscall buffers, seals, fds, mlockall, smaps ---
    /// read(2), write(2), pread(2), pwrite(2), readv(2) or writev(2) whose
    /// buffer is memory of named mappings (`bufs`), made once, not retried:
    /// observes the count the kernel returned as `value` (a short count is
    /// seen as such) or its errno (EFAULT when the buffer is not accessible).
    Io {
        /// Which call: read, write, pread, pwrite, readv, writev.
        call: IoCall,
        fd: String,
        /// File offset for pread and pwrite (required there, refused elsewhere).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<Size>,
        /// The buffers, each a range of a named mapping (`len` defaults to
        /// the rest of the mapping): exactly one, or one or more for readv
        /// and writev (as their iovec array, in order).
        bufs: Vec<Range>,
    },
    /// fcntl(2) F_ADD_SEALS on a memfd: `seals` are F_SEAL_* names
    /// ("WRITE|SHRINK"; SEAL, SHRINK, GROW, WRITE, FUTURE_WRITE).
    AddSeals { fd: String, seals: String },
    /// fcntl(2) F_GET_SEALS: observes the seal bits as `value` (SEAL 1,
    /// SHRINK 2, GROW 4, WRITE 8, FUTURE_WRITE 16).
    GetSeals { fd: String },
    /// dup(2) of `fd`, `as` names the new fd; or with `onto`, dup2(2) of
    /// `fd` onto the fd named `onto`, which then refers to `fd`'s file.
    Dup {
        fd: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        onto: Option<String>,
    },
    /// lseek(2): observes the resulting offset as `value`. `whence` is
    /// SET, CUR, END, DATA or HOLE (SEEK_ prefix optional).
    Lseek {
        fd: String,
        offset: Size,
        whence: String,
    },
    /// mlockall(2) with MCL_* flags ("CURRENT|FUTURE", "CURRENT|ONFAULT").
    Mlockall { flags: String },
    /// munlockall(2).
    Munlockall,
    /// One field of /proc/self/smaps for the mapping that holds `at` in
    /// `map`: observes its size in bytes (the kernel's kB times 1024) as
    /// `value`. `field` is one of Rss, Pss, Shared_Clean, Shared_Dirty,
    /// Private_Clean, Private_Dirty, Referenced, Anonymous, AnonHugePages,
    /// Swap, Locked.
    Smaps {
        map: String,
        #[serde(default = "zero")]
        at: Size,
        field: SmapsField,
    },
    // ---- Other objects, limits and privileges, another process's memory (issue 18, part B).
    /// Open an object outside the scratch directory that the case names
    /// rather than reaches by path; `as` names the fd. A `pipe` makes two:
    /// `as` is the read end and `as` with `_w` appended the write end.
    OpenSpecial {
        what: Special,
        /// open(2) flags for `dev_zero` (default O_RDWR).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<String>,
    },
    /// shm_open(3) of a POSIX shared memory object; `as` names the fd.
    /// `name` is the case's own: the harness makes it
    /// `/mmapconf-shm-<run>-<case>-<name>`, so parallel cases never share
    /// one, and removes every such object at the end of the case.
    ShmOpen {
        name: String,
        /// open(2) flags: O_RDWR, O_RDONLY, O_CREAT, O_EXCL, O_TRUNC.
        flags: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// shm_unlink(3) of a name made by `shm_open`.
    ShmUnlink { name: String },
    /// shmget(2) of a new System V segment (key IPC_PRIVATE, mode 0600);
    /// `as` names it for `shmat` and `shm_rmid`, in this process and its
    /// later children. Every segment a case makes is removed at its end.
    Shmget {
        size: Size,
        /// SHM_HUGETLB: the segment is made of huge pages.
        #[serde(default, skip_serializing_if = "is_false")]
        hugetlb: bool,
    },
    /// shmat(2) of a segment; `as` names the attachment as a mapping.
    Shmat {
        seg: String,
        /// SHM_RDONLY: attach for reading only.
        #[serde(default, skip_serializing_if = "is_false")]
        read_only: bool,
    },
    /// shmdt(2) of an attachment made by `shmat`.
    Shmdt { map: String },
    /// shmctl(2) IPC_RMID: the segment goes when its last attachment does.
    ShmRmid { seg: String },
    /// setrlimit(2) of one resource, soft and hard limit both to `limit`
    /// (a size, or "unlimited").
    Setrlimit { resource: Rlimit, limit: Size },
    /// Set a signal's disposition to SIG_IGN (RLIMIT_FSIZE: EFBIG instead of SIGXFSZ).
    IgnoreSignal { signal: String },
    /// Become unprivileged: with root, setgroups([]), setgid and setuid to
    /// 65534 (nobody), which drops every capability; without root, clear
    /// the capability sets. Irreversible for this process and its children.
    DropPrivileges,
    /// Read another process's memory: `len` bytes at `at` in its mapping
    /// `map`, with `via` (process_vm_readv, /proc/PID/mem or ptrace).
    RemoteRead {
        #[serde(rename = "proc")]
        target: String,
        via: Remote,
        map: String,
        #[serde(default = "zero")]
        at: Size,
        len: Size,
    },
    /// Write another process's memory at `at` in its mapping `map`, with
    /// `via`. /proc/PID/mem and ptrace write with FOLL_FORCE, so they reach
    /// a read-only private mapping (the write makes a private copy);
    /// process_vm_writev does not (EFAULT).
    RemoteWrite {
        #[serde(rename = "proc")]
        target: String,
        via: Remote,
        map: String,
        #[serde(default = "zero")]
        at: Size,
        #[serde(flatten)]
        data: Data,
    },
    // --- issue 18, threads ---
    /// pthread_create(3) in process `in` (by the thread `thread`, default
    /// `main`); `as` names the new thread, which shares the process's
    /// mappings and fds and performs the steps that name it in `thread`
    /// until the process ends.
    SpawnThread,
    // ---- Pinned pages: vmsplice and io_uring fixed buffers (issue 18, part C; exec::ops_pins).
    /// vmsplice(2) of a range of a mapping into the pipe whose write end is
    /// `fd`: the pipe holds the pages themselves (a read-only pin) until
    /// they are read out. Observes the count spliced.
    Vmsplice {
        fd: String,
        #[serde(flatten)]
        range: Range,
    },
    /// read(2) of at most `len` bytes from `fd` into the harness's own
    /// buffer, once (a pipe gives what it holds). Observes the bytes read.
    Read { fd: String, len: Size },
    /// io_uring_setup(2) of a ring, then IORING_REGISTER_BUFFERS of the
    /// range as fixed buffer 0: a long-term, writable pin of its pages.
    /// `as` names the ring.
    IoUringRegister {
        #[serde(flatten)]
        range: Range,
    },
    /// IORING_OP_WRITE_FIXED (the pinned pages to file `fd` at `offset`) or
    /// IORING_OP_READ_FIXED (file to the pinned pages) with fixed buffer 0
    /// of `ring`, from `at` within the buffer for `len` bytes (default: the
    /// rest of it). Observes the completion's count.
    IoUringFixed {
        ring: String,
        call: FixedCall,
        fd: String,
        offset: Size,
        #[serde(default = "zero")]
        at: Size,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        len: Option<Size>,
    },
    /// IORING_UNREGISTER_BUFFERS and close of `ring`: the pin ends.
    IoUringUnregister { ring: String },
}

/// The fixed-buffer operation of an `io_uring_fixed` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FixedCall {
    /// IORING_OP_WRITE_FIXED: what the pinned pages hold goes to the file.
    WriteFixed,
    /// IORING_OP_READ_FIXED: the file's bytes go into the pinned pages.
    ReadFixed,
}

/// The syscall of an `io` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IoCall {
    Read,
    Write,
    Pread,
    Pwrite,
    Readv,
    Writev,
}

impl IoCall {
    /// Whether the call takes a file offset (pread, pwrite).
    pub fn positioned(self) -> bool {
        matches!(self, IoCall::Pread | IoCall::Pwrite)
    }
    /// Whether the call takes an iovec array (readv, writev).
    pub fn vectored(self) -> bool {
        matches!(self, IoCall::Readv | IoCall::Writev)
    }
    /// Whether the kernel writes into the buffers (the file is read).
    pub fn fills_buffer(self) -> bool {
        matches!(self, IoCall::Read | IoCall::Pread | IoCall::Readv)
    }
    pub fn name(self) -> &'static str {
        match self {
            IoCall::Read => "read",
            IoCall::Write => "write",
            IoCall::Pread => "pread",
            IoCall::Pwrite => "pwrite",
            IoCall::Readv => "readv",
            IoCall::Writev => "writev",
        }
    }
}

/// A size field of /proc/PID/smaps, spelt as the kernel prints it.
// Variants carry the kernel's own spelling ("Shared_Clean"), so a case
// names a field exactly as smaps shows it.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SmapsField {
    Rss,
    Pss,
    Shared_Clean,
    Shared_Dirty,
    Private_Clean,
    Private_Dirty,
    Referenced,
    Anonymous,
    AnonHugePages,
    Swap,
    Locked,
}

impl SmapsField {
    /// The label that starts its line in smaps ("Shared_Dirty").
    pub fn label(self) -> &'static str {
        match self {
            SmapsField::Rss => "Rss",
            SmapsField::Pss => "Pss",
            SmapsField::Shared_Clean => "Shared_Clean",
            SmapsField::Shared_Dirty => "Shared_Dirty",
            SmapsField::Private_Clean => "Private_Clean",
            SmapsField::Private_Dirty => "Private_Dirty",
            SmapsField::Referenced => "Referenced",
            SmapsField::Anonymous => "Anonymous",
            SmapsField::AnonHugePages => "AnonHugePages",
            SmapsField::Swap => "Swap",
            SmapsField::Locked => "Locked",
        }
    }
}

/// The objects `open_special` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Special {
    /// /dev/zero: a shared mapping of it is shared anonymous memory, a
    /// private one private anonymous memory.
    DevZero,
    /// The case's scratch directory, opened O_RDONLY|O_DIRECTORY.
    Directory,
    /// pipe2(2) with O_CLOEXEC.
    Pipe,
}

/// The resources `setrlimit` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Rlimit {
    /// RLIMIT_AS: the address space's size.
    As,
    /// RLIMIT_MEMLOCK: bytes of locked memory.
    Memlock,
    /// RLIMIT_FSIZE: the largest file size the process may write.
    Fsize,
}

/// How `remote_read` and `remote_write` reach another process's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Remote {
    /// process_vm_readv(2) / process_vm_writev(2).
    ProcessVm,
    /// pread(2) / pwrite(2) on /proc/PID/mem.
    ProcMem,
    /// ptrace(2): attach, PTRACE_PEEKDATA / PTRACE_POKEDATA word by word, detach.
    Ptrace,
}

/// Where `check_file` reads a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Through this kernel's page cache: what any reader sees now.
    #[default]
    Cache,
    /// What reached the filesystem's storage, independent of cached pages:
    /// the backing file of a target that has one, else an O_DIRECT read.
    Storage,
}

impl ReadFrom {
    pub fn is_cache(&self) -> bool {
        *self == ReadFrom::Cache
    }
}

/// A range of a named mapping; `at` defaults to 0 and `len` to the rest of the mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Range {
    pub map: String,
    #[serde(default = "zero")]
    pub at: Size,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<Size>,
}

fn four() -> u8 {
    4
}

fn memfd_default_name() -> String {
    "mmapconf".to_string()
}

impl Op {
    /// The operation's name as written in `do` (the variant's name in
    /// snake_case, as serde's `rename_all` spells the tag).
    pub fn name(&self) -> &'static str {
        self.into()
    }

    /// Steps on system state beyond the case's files and its processes'
    /// own memory: /dev/zero, pipes, the directory, POSIX and System V
    /// shared memory, limits, signal dispositions, credentials, another
    /// process's memory. The model and the C reproducer do not know them.
    pub fn uses_system_state(&self) -> bool {
        matches!(
            self,
            Op::OpenSpecial { .. }
                | Op::ShmOpen { .. }
                | Op::ShmUnlink { .. }
                | Op::Shmget { .. }
                | Op::Shmat { .. }
                | Op::Shmdt { .. }
                | Op::ShmRmid { .. }
                | Op::Setrlimit { .. }
                | Op::IgnoreSignal { .. }
                | Op::DropPrivileges
                | Op::RemoteRead { .. }
                | Op::RemoteWrite { .. }
                // Pins: pipes filled by vmsplice and io_uring rings.
                | Op::Vmsplice { .. }
                | Op::Read { .. }
                | Op::IoUringRegister { .. }
                | Op::IoUringFixed { .. }
                | Op::IoUringUnregister { .. }
        )
    }

    /// Steps the coordinator performs itself, with no `in`.
    pub fn is_coordinator_op(&self) -> bool {
        matches!(
            self,
            Op::Wait { .. }
                | Op::Kill { .. }
                | Op::Together { .. }
                | Op::CheckFile { .. }
                | Op::Remount { .. }
                | Op::Crash
                | Op::DropCaches
                | Op::FillFs { .. }
        )
    }

    /// Steps that act on the whole filesystem, so their case must have it to itself.
    /// Whether the step opens a path of the target (inside `together` too).
    pub fn opens_a_path(&self) -> bool {
        match self {
            Op::Open { .. } => true,
            Op::Together { steps } => steps.iter().any(|s| s.op.opens_a_path()),
            _ => false,
        }
    }

    pub fn needs_exclusive_fs(&self) -> bool {
        matches!(
            self,
            Op::Remount { .. } | Op::Crash | Op::DropCaches | Op::FillFs { .. }
        )
    }
}

/// Every step, those inside `together` included, in order.
fn all_steps(steps: &[Step]) -> impl Iterator<Item = &Step> {
    numbered_steps(steps).map(|(_, s)| s)
}

/// A step's number as reports write it ("3", "4.1"): formatted only when
/// shown, since the steps of every case are walked several times before
/// it runs.
#[derive(Clone, Copy)]
struct StepNumber(usize, Option<usize>);

impl std::fmt::Display for StepNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(inner) => write!(f, "{}.{inner}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Every step with its number.
fn numbered_steps(steps: &[Step]) -> impl Iterator<Item = (StepNumber, &Step)> {
    steps.iter().enumerate().flat_map(|(i, s)| {
        let (inner, together) = match &s.op {
            Op::Together { steps: inner } => (inner.as_slice(), true),
            _ => (std::slice::from_ref(s), false),
        };
        inner
            .iter()
            .enumerate()
            .map(move |(j, t)| (StepNumber(i + 1, together.then_some(j + 1)), t))
    })
}

impl Case {
    /// Whether a `check_file` reads what reached the storage.
    pub fn reads_storage(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.op,
                Op::CheckFile {
                    from: ReadFrom::Storage,
                    ..
                }
            )
        })
    }

    /// Whether the case uses the machine's huge page pool (it requires
    /// the `hugetlb_pool` probe).
    pub fn uses_hugetlb_pool(&self) -> bool {
        self.requires.probes.contains(&Probe::HugetlbPool)
    }

    /// Whether the case makes or opens files on the target (not memfds).
    pub fn uses_files(&self) -> bool {
        !self.files.is_empty() || self.steps.iter().any(|s| s.op.opens_a_path())
    }

    /// Whether a step may make a POSIX or System V shared memory object
    /// (`shm_open`, `shmget`): objects that outlive the case's processes.
    pub fn makes_shared_memory(&self) -> bool {
        all_steps(&self.steps).any(|s| matches!(s.op, Op::ShmOpen { .. } | Op::Shmget { .. }))
    }

    /// Whether any step acts on the whole filesystem (remount, crash, drop_caches).
    pub fn needs_exclusive_fs(&self) -> bool {
        self.steps.iter().any(|s| s.op.needs_exclusive_fs())
    }

    /// Whether a step fills the filesystem (`fill_fs`).
    pub fn fills_fs(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.op, Op::FillFs { .. }))
    }

    /// The first step that writes to the target's files, described, or
    /// None for a case that only reads them. Static, from the case text:
    /// an `open` for writing, creating or truncating; ftruncate, write,
    /// pwrite, fsync, fdatasync or futimens of a descriptor that is not a
    /// memfd's (fsync and fdatasync: a read-only filesystem has no fsync
    /// method, so they fail with EINVAL there even on an O_RDONLY fd);
    /// `unlink`; and `fill_fs`, `remount` and `crash`, which exist to test
    /// what writing leaves behind. (A shared writable mapping or a store
    /// needs an fd opened for writing, which is already counted; msync and
    /// madvise of a read-only mapping write nothing, and msync(MS_SYNC)
    /// of one succeeds on erofs and squashfs.)
    pub fn writes_target(&self) -> Option<String> {
        let memfds: std::collections::BTreeSet<&str> = all_steps(&self.steps)
            // Nor are /dev/zero, pipes or POSIX shared memory objects.
            .filter(|s| {
                matches!(
                    s.op,
                    Op::MemfdCreate { .. } | Op::OpenSpecial { .. } | Op::ShmOpen { .. }
                )
            })
            .filter_map(|s| s.name.as_deref())
            .collect();
        let opened: std::collections::BTreeSet<&str> = all_steps(&self.steps)
            .filter(|s| matches!(s.op, Op::Open { .. }))
            .filter_map(|s| s.name.as_deref())
            .collect();
        // An fd name a memfd_create gives and no open does is not the target's.
        let on_target = |fd: &str| opened.contains(fd) || !memfds.contains(fd);
        for (i, s) in numbered_steps(&self.steps) {
            let what = match &s.op {
                Op::Open { flags, .. } => flags
                    .split('|')
                    .map(str::trim)
                    .find(|f| ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"].contains(f))
                    .map(|f| format!("open {f}")),
                Op::Ftruncate { fd, .. }
                | Op::Pwrite { fd, .. }
                | Op::Write { fd, .. }
                | Op::Fsync { fd }
                | Op::Fdatasync { fd }
                | Op::Futimens { fd, .. }
                    if on_target(fd) =>
                {
                    Some(s.op.name().to_string())
                }
                Op::Io { call, fd, .. } if !call.fills_buffer() && on_target(fd) => {
                    Some(format!("io {}", call.name()))
                }
                Op::Unlink { .. } | Op::FillFs { .. } | Op::Remount { .. } | Op::Crash => {
                    Some(s.op.name().to_string())
                }
                _ => None,
            };
            if let Some(w) = what {
                return Some(format!("step {i}: {w}"));
            }
        }
        None
    }

    /// Whether a step acts on system state beyond files and own memory
    /// ([`Op::uses_system_state`]), inside `together` too.
    pub fn uses_system_state(&self) -> bool {
        all_steps(&self.steps).any(|s| s.op.uses_system_state())
    }

    /// Whether a process of the case works through the second mount (`processes`).
    pub fn uses_second_mount(&self) -> bool {
        self.processes.values().any(|p| p.mount == Mount::Second)
    }

    /// The mount process `name` works through.
    pub fn mount_of(&self, name: &str) -> Mount {
        self.processes
            .get(name)
            .map(|p| p.mount)
            .unwrap_or_default()
    }

    /// Whether the case needs a filesystem the harness made (remount, crash, fill_fs).
    pub fn needs_owned_fs(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.op, Op::Remount { .. } | Op::Crash | Op::FillFs { .. }))
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    /// `Op::name` (strum) and the `do` tag serde writes are two spellings
    /// of one name: every operation of the corpus must get the same from both.
    #[test]
    fn every_corpus_operation_is_named_as_its_do_tag() {
        let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
        let (loaded, problems) = crate::cli::load_all(&[cases]).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let mut seen = std::collections::BTreeSet::new();
        for case in &loaded {
            for step in all_steps(&case.case.steps) {
                let tag = serde_json::to_value(&step.op).unwrap()["do"].clone();
                assert_eq!(tag.as_str(), Some(step.op.name()), "{}", case.id);
                seen.insert(step.op.name());
            }
        }
        // The corpus uses (nearly) every operation, so the check covers them.
        assert!(seen.len() >= 55, "{} operations seen: {seen:?}", seen.len());
    }
}
