//! Where filesystems legitimately differ, the model asks the target's
//! measured capabilities (`target::capability`), never its name. Each
//! entry says what differs and why it is allowed to.

use crate::case::model::Probe;
use crate::target::Environment;

/// One legitimate difference between filesystems.
pub struct Difference {
    pub probe: Probe,
    /// Why filesystems may differ here.
    pub why: &'static str,
}

/// The table: every capability the model consults, with its reason.
pub const TABLE: &[Difference] = &[
    Difference {
        probe: Probe::ODirect,
        why: "open(2): O_DIRECT fails with EINVAL where the filesystem has no direct I/O (tmpfs before Linux 6.6)",
    },
    Difference {
        probe: Probe::MadvRemove,
        why: "madvise(2) MADV_REMOVE: only filesystems that can punch holes support it; others fail with EOPNOTSUPP",
    },
    Difference {
        probe: Probe::Persistent,
        why: "a filesystem kept in memory (tmpfs, ramfs) keeps nothing across a power cut",
    },
    Difference {
        probe: Probe::Writable,
        why: "a read-only filesystem (erofs, squashfs) refuses to make or write files: EROFS",
    },
    Difference {
        probe: Probe::StorageView,
        why: "`check_file from: storage` reads a FUSE target's backing files (what its server was sent, which write-back decides) or, elsewhere, with O_DIRECT, which writes the range's dirty pages back first and so reads what the page cache holds",
    },
    Difference {
        probe: Probe::SharedMmap,
        why: "a FUSE file opened with FOPEN_DIRECT_IO refuses shared mappings",
    },
    Difference {
        probe: Probe::SharedWritableMmap,
        why: "a FUSE file opened with FOPEN_DIRECT_IO refuses writable shared mappings",
    },
];

/// Whether the target has a capability. Err when it was not measured (no
/// target capabilities in the environment): the model does not guess.
pub fn has(env: &Environment, probe: Probe) -> Result<bool, String> {
    debug_assert!(TABLE.iter().any(|d| d.probe == probe));
    match env.capabilities.get(&probe) {
        Some(m) => Ok(m.present),
        None => Err(format!(
            "the target's `{}` capability was not measured",
            serde_json::to_value(probe)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )),
    }
}

/// Whether a storage read shows what the page cache holds: an O_DIRECT
/// read writes back the range's dirty pages before it reads (the probe's
/// detail names the method, `target::capability::measure`). Err where the
/// target reads its backing files, whose content write-back decides.
pub fn storage_is_cache(env: &Environment) -> Result<(), String> {
    match env.capabilities.get(&Probe::StorageView) {
        Some(m) if m.present && m.detail.contains("O_DIRECT") => Ok(()),
        Some(m) if m.present => Err(format!(
            "what reached the target's storage ({}) before write-back is not modelled",
            m.detail
        )),
        _ => Err("the target has no storage view".to_string()),
    }
}
