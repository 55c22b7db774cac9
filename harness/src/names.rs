//! Symbolic names of flags, errnos, signals and si_codes, and their values on
//! the architecture the harness was built for.
//!
//! Cases spell flags by name ("PROT_READ|PROT_WRITE", or short "READ|WRITE");
//! this module is the one place that turns those names into numbers. Values
//! come from the libc crate, which follows the kernel's per-architecture
//! headers, so a case means the same thing on x86_64 and on aarch64.

use std::fmt;

/// Which family of flags a field takes; decides the table and the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Open,
    Prot,
    Map,
    Msync,
    Madvise,
    Mremap,
    Mlock,
    Memfd,
    Seal,
    Mlockall,
    Whence,
}

impl FlagKind {
    /// The conventional prefix that may be left out in a case ("SHARED" for "MAP_SHARED").
    pub fn prefix(self) -> &'static str {
        match self {
            FlagKind::Open => "O_",
            FlagKind::Prot => "PROT_",
            FlagKind::Map => "MAP_",
            FlagKind::Msync => "MS_",
            FlagKind::Madvise => "MADV_",
            FlagKind::Mremap => "MREMAP_",
            FlagKind::Mlock => "MLOCK_",
            FlagKind::Memfd => "MFD_",
            FlagKind::Seal => "F_SEAL_",
            FlagKind::Mlockall => "MCL_",
            FlagKind::Whence => "SEEK_",
        }
    }

    fn table(self) -> &'static [(&'static str, i64)] {
        match self {
            FlagKind::Open => OPEN_FLAGS,
            FlagKind::Prot => PROT_FLAGS,
            FlagKind::Map => MAP_FLAGS,
            FlagKind::Msync => MSYNC_FLAGS,
            FlagKind::Madvise => MADVISE_ADVICE,
            FlagKind::Mremap => MREMAP_FLAGS,
            FlagKind::Mlock => MLOCK_FLAGS,
            FlagKind::Memfd => MEMFD_FLAGS,
            FlagKind::Seal => SEAL_FLAGS,
            FlagKind::Mlockall => MLOCKALL_FLAGS,
            FlagKind::Whence => WHENCE,
        }
    }

    /// Whether a value is one choice (madvise advice) rather than a set of bits.
    fn is_choice(self) -> bool {
        matches!(self, FlagKind::Madvise | FlagKind::Whence)
    }
}

const OPEN_FLAGS: &[(&str, i64)] = &[
    ("O_RDONLY", libc::O_RDONLY as i64),
    ("O_WRONLY", libc::O_WRONLY as i64),
    ("O_RDWR", libc::O_RDWR as i64),
    ("O_CREAT", libc::O_CREAT as i64),
    ("O_EXCL", libc::O_EXCL as i64),
    ("O_TRUNC", libc::O_TRUNC as i64),
    ("O_APPEND", libc::O_APPEND as i64),
    ("O_DIRECT", libc::O_DIRECT as i64),
    ("O_SYNC", libc::O_SYNC as i64),
    ("O_DSYNC", libc::O_DSYNC as i64),
    ("O_CLOEXEC", libc::O_CLOEXEC as i64),
    ("O_NOATIME", libc::O_NOATIME as i64),
    ("O_PATH", libc::O_PATH as i64),
];

const PROT_FLAGS: &[(&str, i64)] = &[
    ("PROT_NONE", libc::PROT_NONE as i64),
    ("PROT_READ", libc::PROT_READ as i64),
    ("PROT_WRITE", libc::PROT_WRITE as i64),
    ("PROT_EXEC", libc::PROT_EXEC as i64),
    ("PROT_GROWSDOWN", libc::PROT_GROWSDOWN as i64),
    ("PROT_GROWSUP", libc::PROT_GROWSUP as i64),
];

const MAP_FLAGS: &[(&str, i64)] = &[
    ("MAP_SHARED", libc::MAP_SHARED as i64),
    ("MAP_PRIVATE", libc::MAP_PRIVATE as i64),
    ("MAP_SHARED_VALIDATE", libc::MAP_SHARED_VALIDATE as i64),
    ("MAP_ANONYMOUS", libc::MAP_ANONYMOUS as i64),
    ("MAP_ANON", libc::MAP_ANONYMOUS as i64),
    ("MAP_FIXED", libc::MAP_FIXED as i64),
    ("MAP_FIXED_NOREPLACE", libc::MAP_FIXED_NOREPLACE as i64),
    ("MAP_POPULATE", libc::MAP_POPULATE as i64),
    ("MAP_NORESERVE", libc::MAP_NORESERVE as i64),
    ("MAP_LOCKED", libc::MAP_LOCKED as i64),
    ("MAP_NONBLOCK", libc::MAP_NONBLOCK as i64),
    ("MAP_GROWSDOWN", libc::MAP_GROWSDOWN as i64),
    ("MAP_STACK", libc::MAP_STACK as i64),
    ("MAP_HUGETLB", libc::MAP_HUGETLB as i64),
    ("MAP_SYNC", libc::MAP_SYNC as i64),
    ("MAP_DENYWRITE", libc::MAP_DENYWRITE as i64),
    ("MAP_EXECUTABLE", libc::MAP_EXECUTABLE as i64),
    // x86_64's alone: 0x40 is MAP_NORESERVE on powerpc, so the name exists only where libc has it.
    #[cfg(target_arch = "x86_64")]
    ("MAP_32BIT", libc::MAP_32BIT as i64),
];

const MSYNC_FLAGS: &[(&str, i64)] = &[
    ("MS_ASYNC", libc::MS_ASYNC as i64),
    ("MS_SYNC", libc::MS_SYNC as i64),
    ("MS_INVALIDATE", libc::MS_INVALIDATE as i64),
];

const MADVISE_ADVICE: &[(&str, i64)] = &[
    ("MADV_NORMAL", libc::MADV_NORMAL as i64),
    ("MADV_RANDOM", libc::MADV_RANDOM as i64),
    ("MADV_SEQUENTIAL", libc::MADV_SEQUENTIAL as i64),
    ("MADV_WILLNEED", libc::MADV_WILLNEED as i64),
    ("MADV_DONTNEED", libc::MADV_DONTNEED as i64),
    ("MADV_FREE", libc::MADV_FREE as i64),
    ("MADV_REMOVE", libc::MADV_REMOVE as i64),
    ("MADV_DONTFORK", libc::MADV_DONTFORK as i64),
    ("MADV_DOFORK", libc::MADV_DOFORK as i64),
    ("MADV_MERGEABLE", libc::MADV_MERGEABLE as i64),
    ("MADV_UNMERGEABLE", libc::MADV_UNMERGEABLE as i64),
    ("MADV_HUGEPAGE", libc::MADV_HUGEPAGE as i64),
    ("MADV_NOHUGEPAGE", libc::MADV_NOHUGEPAGE as i64),
    ("MADV_DONTDUMP", libc::MADV_DONTDUMP as i64),
    ("MADV_DODUMP", libc::MADV_DODUMP as i64),
    ("MADV_WIPEONFORK", libc::MADV_WIPEONFORK as i64),
    ("MADV_KEEPONFORK", libc::MADV_KEEPONFORK as i64),
    ("MADV_COLD", libc::MADV_COLD as i64),
    ("MADV_PAGEOUT", libc::MADV_PAGEOUT as i64),
    ("MADV_POPULATE_READ", 22),
    ("MADV_POPULATE_WRITE", 23),
    ("MADV_DONTNEED_LOCKED", 24),
    ("MADV_COLLAPSE", 25),
    ("MADV_HWPOISON", libc::MADV_HWPOISON as i64),
    ("MADV_GUARD_INSTALL", 102),
    ("MADV_GUARD_REMOVE", 103),
];

const MREMAP_FLAGS: &[(&str, i64)] = &[
    ("MREMAP_MAYMOVE", libc::MREMAP_MAYMOVE as i64),
    ("MREMAP_FIXED", libc::MREMAP_FIXED as i64),
    ("MREMAP_DONTUNMAP", libc::MREMAP_DONTUNMAP as i64),
];

const MLOCK_FLAGS: &[(&str, i64)] = &[("MLOCK_ONFAULT", 1)];

const MEMFD_FLAGS: &[(&str, i64)] = &[
    ("MFD_CLOEXEC", libc::MFD_CLOEXEC as i64),
    ("MFD_ALLOW_SEALING", libc::MFD_ALLOW_SEALING as i64),
    ("MFD_HUGETLB", libc::MFD_HUGETLB as i64),
    ("MFD_NOEXEC_SEAL", 0x8),
    ("MFD_EXEC", 0x10),
];

const SEAL_FLAGS: &[(&str, i64)] = &[
    ("F_SEAL_SEAL", libc::F_SEAL_SEAL as i64),
    ("F_SEAL_SHRINK", libc::F_SEAL_SHRINK as i64),
    ("F_SEAL_GROW", libc::F_SEAL_GROW as i64),
    ("F_SEAL_WRITE", libc::F_SEAL_WRITE as i64),
    ("F_SEAL_FUTURE_WRITE", 0x10),
];

const MLOCKALL_FLAGS: &[(&str, i64)] = &[
    ("MCL_CURRENT", libc::MCL_CURRENT as i64),
    ("MCL_FUTURE", libc::MCL_FUTURE as i64),
    ("MCL_ONFAULT", libc::MCL_ONFAULT as i64),
];

const WHENCE: &[(&str, i64)] = &[
    ("SEEK_SET", libc::SEEK_SET as i64),
    ("SEEK_CUR", libc::SEEK_CUR as i64),
    ("SEEK_END", libc::SEEK_END as i64),
    ("SEEK_DATA", libc::SEEK_DATA as i64),
    ("SEEK_HOLE", libc::SEEK_HOLE as i64),
];

/// Turns "PROT_READ|PROT_WRITE", "READ|WRITE", "0x40|SHARED" or "0" into a number.
///
/// Unknown bits are allowed as numbers on purpose: cases pass flags the kernel
/// must reject (MAP_SHARED_VALIDATE with an unknown bit), so this never filters.
pub fn parse_flags(kind: FlagKind, text: &str) -> Result<i64, String> {
    Ok(flag_tokens(kind, text)?
        .iter()
        .fold(0, |value, t| value | t.value()))
}

/// One token of a flag field, resolved: a name of the table, spelt in full
/// ("MAP_SHARED" for "shared"), or a number the case wrote as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagToken {
    Name(&'static str, i64),
    Number(i64),
}

impl FlagToken {
    pub fn value(self) -> i64 {
        match self {
            FlagToken::Name(_, v) | FlagToken::Number(v) => v,
        }
    }
}

/// The tokens of a flag field ("READ|WRITE"), each resolved, in the order written.
pub fn flag_tokens(kind: FlagKind, text: &str) -> Result<Vec<FlagToken>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty {} flags", kind.prefix()));
    }
    let parts: Vec<&str> = text.split('|').map(str::trim).collect();
    if kind.is_choice() && parts.len() > 1 {
        return Err(format!("madvise takes one advice, not `{text}`"));
    }
    parts
        .into_iter()
        .map(|part| parse_flag_token(kind, part))
        .collect()
}

fn parse_flag_token(kind: FlagKind, token: &str) -> Result<FlagToken, String> {
    if let Some(n) = parse_int(token) {
        return Ok(FlagToken::Number(n));
    }
    let upper = token.to_ascii_uppercase();
    let full = if upper.starts_with(kind.prefix()) {
        upper
    } else {
        format!("{}{}", kind.prefix(), upper)
    };
    kind.table()
        .iter()
        .find(|(name, _)| *name == full)
        .map(|(name, v)| FlagToken::Name(name, *v))
        .ok_or_else(|| {
            let known: Vec<&str> = kind.table().iter().map(|(n, _)| *n).collect();
            format!("unknown flag `{token}`; known: {}", known.join(", "))
        })
}

/// Parses a decimal or 0x-hex integer, with an optional leading minus.
pub fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()? as i64
    } else {
        body.parse::<u64>().ok()? as i64
    };
    Some(if neg { value.wrapping_neg() } else { value })
}

/// The symbolic name of an errno value ("EINVAL"), or "E<number>" when unknown.
pub fn errno_name(code: i32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(code));
    if name.starts_with('E') && name != "UnknownErrno" {
        name
    } else {
        format!("E{code}")
    }
}

/// The errno value of a name ("EINVAL" -> 22).
pub fn errno_value(name: &str) -> Option<i32> {
    (1..4096).find(|&code| errno_name(code) == name)
}

/// The name of a signal number ("SIGBUS").
pub fn signal_name(signo: i32) -> String {
    match nix::sys::signal::Signal::try_from(signo) {
        Ok(sig) => sig.as_str().to_string(),
        Err(_) => format!("SIG{signo}"),
    }
}

/// The number of a signal name ("SIGBUS" -> 7).
pub fn signal_value(name: &str) -> Option<i32> {
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// si_code names for the fault signals a mapping can raise (see sigaction(2)).
const SI_CODES: &[(&str, i32, i32)] = &[
    ("BUS_ADRALN", libc::SIGBUS, 1),
    ("BUS_ADRERR", libc::SIGBUS, 2),
    ("BUS_OBJERR", libc::SIGBUS, 3),
    ("BUS_MCEERR_AR", libc::SIGBUS, 4),
    ("BUS_MCEERR_AO", libc::SIGBUS, 5),
    ("SEGV_MAPERR", libc::SIGSEGV, 1),
    ("SEGV_ACCERR", libc::SIGSEGV, 2),
    ("SEGV_BNDERR", libc::SIGSEGV, 3),
    ("SEGV_PKUERR", libc::SIGSEGV, 4),
];

/// Every si_code name with its signal and value, for programs that print them.
pub fn si_codes() -> &'static [(&'static str, i32, i32)] {
    SI_CODES
}

/// The name of an si_code for a given signal, or its number as text.
pub fn si_code_name(signo: i32, code: i32) -> String {
    SI_CODES
        .iter()
        .find(|(_, s, c)| *s == signo && *c == code)
        .map(|(n, _, _)| n.to_string())
        .unwrap_or_else(|| code.to_string())
}

/// Whether `name` is an si_code that belongs to `signal` (e.g. BUS_ADRERR to SIGBUS).
pub fn si_code_known(signal: &str, name: &str) -> bool {
    let Some(signo) = signal_value(signal) else {
        return false;
    };
    SI_CODES.iter().any(|(n, s, _)| *n == name && *s == signo)
}

/// A kernel version as (major, minor, patch), comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Parses the leading "6.1.12" of a release string such as "6.1.0-18-amd64".
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut nums = release
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|s| s.parse::<u32>().ok());
        let major = nums.next()??;
        let minor = nums.next().flatten().unwrap_or(0);
        let patch = nums.next().flatten().unwrap_or(0);
        Some(KernelVersion(major, minor, patch))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A kernel version constraint: ">=4.17", "<5.8", ">=5.8,<6.1".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRange {
    bounds: Vec<(Cmp, KernelVersion)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

impl KernelRange {
    pub fn parse(text: &str) -> Result<KernelRange, String> {
        let mut bounds = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (cmp, rest) = if let Some(r) = part.strip_prefix(">=") {
                (Cmp::Ge, r)
            } else if let Some(r) = part.strip_prefix("<=") {
                (Cmp::Le, r)
            } else if let Some(r) = part.strip_prefix('>') {
                (Cmp::Gt, r)
            } else if let Some(r) = part.strip_prefix('<') {
                (Cmp::Lt, r)
            } else if let Some(r) = part.strip_prefix('=') {
                (Cmp::Eq, r)
            } else {
                return Err(format!(
                    "kernel range `{text}`: each bound starts with >=, >, <=, < or ="
                ));
            };
            let rest = rest.trim();
            if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(format!("kernel range `{text}`: `{rest}` is not a version"));
            }
            let version = KernelVersion::parse(rest)
                .ok_or_else(|| format!("kernel range `{text}`: `{rest}` is not a version"))?;
            bounds.push((cmp, version));
        }
        Ok(KernelRange { bounds })
    }

    pub fn contains(&self, v: KernelVersion) -> bool {
        self.bounds.iter().all(|(cmp, b)| match cmp {
            Cmp::Ge => v >= *b,
            Cmp::Gt => v > *b,
            Cmp::Le => v <= *b,
            Cmp::Lt => v < *b,
            Cmp::Eq => v == *b,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(FlagKind::Prot, "READ|WRITE", (libc::PROT_READ | libc::PROT_WRITE) as i64)]
    #[case(FlagKind::Prot, "PROT_NONE", 0)]
    #[case(FlagKind::Map, "SHARED|ANONYMOUS", (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as i64)]
    #[case(FlagKind::Map, "MAP_SHARED_VALIDATE|0x800000", libc::MAP_SHARED_VALIDATE as i64 | 0x800000)]
    #[case(FlagKind::Open, "O_RDWR|O_CREAT", (libc::O_RDWR | libc::O_CREAT) as i64)]
    #[case(FlagKind::Msync, "0", 0)]
    #[case(FlagKind::Madvise, "DONTNEED", libc::MADV_DONTNEED as i64)]
    fn flags_parse(#[case] kind: FlagKind, #[case] text: &str, #[case] want: i64) {
        assert_eq!(parse_flags(kind, text), Ok(want));
    }

    #[test]
    fn map_32bit_is_a_name_only_where_the_target_has_it() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            parse_flags(FlagKind::Map, "MAP_32BIT"),
            Ok(libc::MAP_32BIT as i64)
        );
        #[cfg(not(target_arch = "x86_64"))]
        assert!(parse_flags(FlagKind::Map, "MAP_32BIT").is_err());
    }

    #[rstest]
    #[case(FlagKind::Prot, "READ|WRTE")]
    #[case(FlagKind::Map, "")]
    #[case(FlagKind::Madvise, "DONTNEED|FREE")]
    fn flags_reject(#[case] kind: FlagKind, #[case] text: &str) {
        assert!(parse_flags(kind, text).is_err());
    }

    #[test]
    fn errno_and_signal_names_round_trip() {
        assert_eq!(errno_value("EINVAL"), Some(libc::EINVAL));
        assert_eq!(errno_name(libc::EEXIST), "EEXIST");
        assert_eq!(errno_value("ENOPE"), None);
        assert_eq!(signal_value("SIGBUS"), Some(libc::SIGBUS));
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(si_code_name(libc::SIGBUS, 2), "BUS_ADRERR");
        assert!(si_code_known("SIGSEGV", "SEGV_ACCERR"));
        assert!(!si_code_known("SIGBUS", "SEGV_ACCERR"));
    }

    #[rstest]
    #[case(">=4.17", "4.17.0", true)]
    #[case(">=4.17", "4.16.9", false)]
    #[case(">=5.8,<6.1", "6.0.19", true)]
    #[case(">=5.8,<6.1", "6.1.0", false)]
    #[case("<5.8", "6.18.44-fc-v657", false)]
    fn kernel_ranges(#[case] range: &str, #[case] release: &str, #[case] inside: bool) {
        let r = KernelRange::parse(range).unwrap();
        assert_eq!(r.contains(KernelVersion::parse(release).unwrap()), inside);
    }

    #[test]
    fn kernel_range_rejects_garbage() {
        assert!(KernelRange::parse("4.17").is_err());
        assert!(KernelRange::parse(">=four").is_err());
    }
}
