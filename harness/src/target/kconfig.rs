//! Kernel configuration requirements (`requires.config`): a case that
//! needs `CONFIG_TRANSPARENT_HUGEPAGE` (set, as y or m), or an option at a
//! given value (`CONFIG_X=y`, `CONFIG_X=n` for unset), is skipped with the
//! option named where the running kernel's configuration says otherwise.
//! The configuration is read once per process, from /proc/config.gz
//! (CONFIG_IKCONFIG_PROC) or /boot/config-$(uname -r), as LTP's tst_kconfig does.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Env var naming another configuration file to read (plain or .gz):
/// for tests, and for checking cases against a kernel not running here.
pub const CONFIG_FILE_VAR: &str = "MMAPCONF_KERNEL_CONFIG";

/// One entry of `requires.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub name: String,
    /// The value it must have; None: set at all (y or m or any value).
    pub value: Option<String>,
}

impl Requirement {
    /// Parses `CONFIG_NAME` or `CONFIG_NAME=VALUE`.
    pub fn parse(s: &str) -> Result<Requirement, String> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v.trim_matches('"').to_string())),
            None => (s, None),
        };
        let good_name = name.strip_prefix("CONFIG_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
        if !good_name || value.as_deref() == Some("") {
            return Err(format!(
                "`{s}` is not a kernel config option: expected CONFIG_NAME or CONFIG_NAME=VALUE (y, m, n or a value)"
            ));
        }
        Ok(Requirement {
            name: name.to_string(),
            value,
        })
    }

    /// Why `config` does not meet it, or None when it does.
    fn unmet_in(&self, config: &KernelConfig) -> Option<String> {
        let have = config.options.get(&self.name).map(String::as_str);
        let ok = match (self.value.as_deref(), have) {
            (None, Some(v)) => v != "n",
            (None, None) => false,
            (Some("n"), have) => have.is_none_or(|v| v == "n"),
            (Some(want), have) => have == Some(want),
        };
        if ok {
            return None;
        }
        let wanted = match &self.value {
            None => format!("{} set", self.name),
            Some(v) => format!("{}={v}", self.name),
        };
        let found = match have {
            Some(v) => format!("{}={v}", self.name),
            None => format!("{} is not set", self.name),
        };
        Some(format!(
            "needs kernel config {wanted}; {found} in {}",
            config.source
        ))
    }
}

/// A kernel's configuration: option → value, for options that are set.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    /// Where it was read from.
    pub source: String,
    pub options: HashMap<String, String>,
}

impl KernelConfig {
    /// Parses .config text: `CONFIG_X=value` lines; `# CONFIG_X is not
    /// set` and other comments leave the option out.
    pub fn parse(text: &str, source: &str) -> KernelConfig {
        let options = text
            .lines()
            .filter(|l| l.starts_with("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        KernelConfig {
            source: source.to_string(),
            options,
        }
    }

    /// Reads a configuration file, gunzipping a `.gz` one.
    pub fn read(path: &Path) -> Result<KernelConfig, String> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut s)
                .map_err(|e| format!("{shown}: {e}"))?;
            s
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Ok(KernelConfig::parse(&text, &shown))
    }

    /// The running kernel's configuration, or why it cannot be read.
    pub fn running() -> &'static Result<KernelConfig, String> {
        static RUNNING: OnceLock<Result<KernelConfig, String>> = OnceLock::new();
        RUNNING.get_or_init(|| {
            let places: Vec<PathBuf> = match std::env::var_os(CONFIG_FILE_VAR) {
                Some(p) => vec![PathBuf::from(p)],
                None => {
                    let release = nix::sys::utsname::uname()
                        .map(|u| u.release().to_string_lossy().into_owned())
                        .unwrap_or_default();
                    vec![
                        PathBuf::from("/proc/config.gz"),
                        PathBuf::from(format!("/boot/config-{release}")),
                    ]
                }
            };
            let mut tried = Vec::new();
            for p in &places {
                match KernelConfig::read(p) {
                    Ok(c) => return Ok(c),
                    Err(e) => tried.push(e),
                }
            }
            Err(tried.join("; "))
        })
    }
}

/// Why the running kernel does not meet `requires.config`, or None.
pub fn unmet(required: &[String]) -> Option<String> {
    if required.is_empty() {
        return None;
    }
    let config = match KernelConfig::running() {
        Ok(c) => c,
        Err(e) => {
            return Some(format!(
                "needs kernel config {}, but the kernel's configuration cannot be read ({e})",
                required.join(", ")
            ))
        }
    };
    unmet_in(required, config)
}

fn unmet_in(required: &[String], config: &KernelConfig) -> Option<String> {
    required.iter().find_map(|r| match Requirement::parse(r) {
        Ok(req) => req.unmet_in(config),
        Err(e) => Some(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "#\n# Automatically generated\nCONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_EXT4_FS=m\n# CONFIG_KASAN is not set\nCONFIG_LOCALVERSION=\"-test\"\nCONFIG_HZ=250\n";

    fn unmet_here(req: &[&str]) -> Option<String> {
        let c = KernelConfig::parse(CONFIG, "/boot/config-x");
        let req: Vec<String> = req.iter().map(|s| s.to_string()).collect();
        unmet_in(&req, &c)
    }

    #[test]
    fn options_are_met_by_value_or_by_being_set() {
        assert_eq!(
            unmet_here(&["CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_EXT4_FS"]),
            None
        );
        assert_eq!(unmet_here(&["CONFIG_EXT4_FS=m", "CONFIG_HZ=250"]), None);
        assert_eq!(
            unmet_here(&["CONFIG_KASAN=n", "CONFIG_LOCALVERSION=-test"]),
            None
        );
        assert_eq!(
            unmet_here(&["CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_KASAN"]).as_deref(),
            Some("needs kernel config CONFIG_KASAN set; CONFIG_KASAN is not set in /boot/config-x")
        );
        assert_eq!(
            unmet_here(&["CONFIG_EXT4_FS=y"]).as_deref(),
            Some("needs kernel config CONFIG_EXT4_FS=y; CONFIG_EXT4_FS=m in /boot/config-x")
        );
        assert_eq!(
            unmet_here(&["CONFIG_HZ=n"]).as_deref(),
            Some("needs kernel config CONFIG_HZ=n; CONFIG_HZ=250 in /boot/config-x")
        );
    }

    #[test]
    fn requirements_must_be_config_options() {
        for bad in [
            "TRANSPARENT_HUGEPAGE",
            "CONFIG_",
            "CONFIG_x",
            "CONFIG_X=",
            "config_X",
        ] {
            assert!(Requirement::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Requirement::parse("CONFIG_A1_B=y").unwrap(),
            Requirement {
                name: "CONFIG_A1_B".into(),
                value: Some("y".into())
            }
        );
    }

    #[test]
    fn gzipped_and_plain_files_read_alike() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("config");
        std::fs::write(&plain, CONFIG).unwrap();
        let gz = dir.path().join("config.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(CONFIG.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let a = KernelConfig::read(&plain).unwrap();
        let b = KernelConfig::read(&gz).unwrap();
        assert_eq!(a.options, b.options);
        assert_eq!(
            a.options.get("CONFIG_EXT4_FS").map(String::as_str),
            Some("m")
        );
        assert!(!a.options.contains_key("CONFIG_KASAN"));
        let missing = KernelConfig::read(&dir.path().join("nope")).unwrap_err();
        assert!(missing.contains("nope: No such file"), "{missing}");
    }
}
