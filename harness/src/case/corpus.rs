//! Which corpus a command uses when it is given no case paths, and the
//! corpus built into the binary.
//!
//! An installed `mmapconf` has no checkout to find `cases/` in, so the
//! binary carries the corpus it was built with (`include_dir`). The order,
//! first found wins:
//! 1. case paths on the command line (not decided here);
//! 2. `$MMAPCONF_CASES`;
//! 3. the checkout being run: cargo sets `CARGO_MANIFEST_DIR` for
//!    `cargo run` and `cargo test`, else the nearest ancestor of the current
//!    directory holding `cases/` and `harness/Cargo.toml` (editing a case in
//!    a clone and re-running it uses the edit);
//! 4. a data directory: `$XDG_DATA_HOME/mmapconf/cases` (default
//!    `~/.local/share`), then each of `$XDG_DATA_DIRS` (default
//!    `/usr/local/share:/usr/share`), as the XDG base directory spec orders them;
//! 5. the embedded corpus.
//!
//! Embedded files are named `embedded:cases/<topic>/<name>.json`, so a case
//! keeps its id and a problem in it is still placed as `file:line:col`.

use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../cases");

/// The prefix of embedded file names; `embedded:cases` is the whole embedded corpus.
pub const EMBEDDED_PREFIX: &str = "embedded:";

/// Where the corpus of a run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Case files or directories given on the command line.
    Paths,
    /// `$MMAPCONF_CASES`.
    Env,
    /// The `cases/` of the checkout being run.
    Checkout,
    /// `mmapconf/cases` under an XDG data directory (`/usr/share`, where the Debian package puts it).
    DataDir,
    /// The corpus built into the binary.
    Embedded,
}

/// The corpus a run uses: its source and where it is (`embedded:cases` for the built-in one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Corpus {
    pub source: Source,
    pub location: String,
}

impl Corpus {
    /// The paths to load: the corpus's directory.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(&self.location)
    }
}

impl std::fmt::Display for Corpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = serde_json::to_value(self.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        write!(f, "{source}\t{}", self.location)
    }
}

/// The corpus given no paths, looked up in this process's environment.
pub fn find() -> Result<Corpus, String> {
    let cwd = std::env::current_dir().ok();
    find_with(&|name| std::env::var_os(name), cwd.as_deref())
}

/// The corpus given no paths, with `env` for the environment and `cwd` as the current directory.
pub fn find_with(
    env: &dyn Fn(&str) -> Option<OsString>,
    cwd: Option<&Path>,
) -> Result<Corpus, String> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let dir = |source, path: PathBuf| Corpus {
        source,
        location: path.display().to_string(),
    };
    if let Some(d) = set("MMAPCONF_CASES") {
        let d = PathBuf::from(d);
        // Named on purpose: a wrong value is an error, not a quiet fallback.
        if !d.is_dir() {
            return Err(format!("MMAPCONF_CASES={}: no such directory", d.display()));
        }
        return Ok(dir(Source::Env, d));
    }
    let from_cargo = set("CARGO_MANIFEST_DIR")
        .and_then(|m| Path::new(&m).parent().map(Path::to_path_buf))
        .filter(|d| is_checkout(d));
    let from_cwd = || {
        cwd.and_then(|c| {
            c.ancestors()
                .find(|d| is_checkout(d))
                .map(Path::to_path_buf)
        })
    };
    if let Some(root) = from_cargo.or_else(from_cwd) {
        return Ok(dir(Source::Checkout, root.join("cases")));
    }
    if let Some(d) = data_dirs(env)
        .into_iter()
        .map(|d| d.join("mmapconf").join("cases"))
        .find(|d| d.is_dir())
    {
        return Ok(dir(Source::DataDir, d));
    }
    Ok(Corpus {
        source: Source::Embedded,
        location: format!("{EMBEDDED_PREFIX}cases"),
    })
}

/// A clone of this repository: the corpus beside the harness crate.
fn is_checkout(dir: &Path) -> bool {
    dir.join("cases").is_dir() && dir.join("harness").join("Cargo.toml").is_file()
}

/// The XDG data directories, most important first (relative values are ignored, as the spec says).
fn data_dirs(env: &dyn Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let absolute = |p: PathBuf| Some(p).filter(|p| p.is_absolute());
    let home = env("XDG_DATA_HOME")
        .and_then(|v| absolute(PathBuf::from(v)))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    let system = env("XDG_DATA_DIRS")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| OsString::from("/usr/local/share:/usr/share"));
    home.into_iter()
        .chain(std::env::split_paths(&system).filter_map(absolute))
        .collect()
}

/// The part of an embedded name after `embedded:cases`, or None for a file on disk.
fn embedded_rel(path: &Path) -> Option<&str> {
    let rest = path.to_str()?.strip_prefix(EMBEDDED_PREFIX)?;
    let rest = rest.strip_prefix("cases")?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

/// Whether `path` names the embedded corpus or something in it.
pub fn is_embedded(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| p.starts_with(EMBEDDED_PREFIX))
}

/// Every `.json` file under an embedded name (a file or a folder), or an
/// error naming it when the binary holds no such thing.
pub fn embedded_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let missing = || format!("{}: not in the embedded corpus", path.display());
    let rel = embedded_rel(path).ok_or_else(missing)?;
    let name = |p: &Path| PathBuf::from(format!("{EMBEDDED_PREFIX}cases/{}", p.display()));
    if let Some(f) = EMBEDDED.get_file(rel) {
        return Ok(vec![name(f.path())]);
    }
    let dir = if rel.is_empty() {
        &EMBEDDED
    } else {
        EMBEDDED.get_dir(rel).ok_or_else(missing)?
    };
    let mut out = Vec::new();
    collect(dir, &mut out);
    Ok(out.into_iter().map(|p| name(&p)).collect())
}

fn collect(dir: &Dir<'static>, out: &mut Vec<PathBuf>) {
    for f in dir.files() {
        if f.path().extension().is_some_and(|e| e == "json") {
            out.push(f.path().to_path_buf());
        }
    }
    for d in dir.dirs() {
        collect(d, out);
    }
}

/// The bytes of a case file, embedded or on disk.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    if !is_embedded(path) {
        return std::fs::read(path);
    }
    embedded_rel(path)
        .and_then(|rel| EMBEDDED.get_file(rel))
        .map(|f| f.contents().to_vec())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "not in the embedded corpus")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn checkout_in(dir: &Path) {
        std::fs::create_dir_all(dir.join("cases/t")).unwrap();
        std::fs::create_dir_all(dir.join("harness")).unwrap();
        std::fs::write(dir.join("harness/Cargo.toml"), "").unwrap();
    }

    #[test]
    fn order_env_checkout_data_dir_embedded() {
        let t = tempfile::tempdir().unwrap();
        let (repo, data, home, own) = (
            t.path().join("repo"),
            t.path().join("data"),
            t.path().join("home"),
            t.path().join("own"),
        );
        checkout_in(&repo);
        std::fs::create_dir_all(data.join("mmapconf/cases")).unwrap();
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let deep = repo.join("cases/t");
        let all = [
            ("MMAPCONF_CASES", own.as_path()),
            ("XDG_DATA_DIRS", data.as_path()),
            ("HOME", home.as_path()),
        ];
        let c = find_with(&env_of(&all), Some(&deep)).unwrap();
        assert_eq!(
            (c.source, c.location),
            (Source::Env, own.display().to_string())
        );
        let c = find_with(&env_of(&all[1..]), Some(&deep)).unwrap();
        assert_eq!(c.source, Source::Checkout);
        assert_eq!(c.root(), repo.join("cases"));
        // cargo run from outside the clone still runs the clone's cases.
        let cargo = repo.join("harness");
        let with_cargo = [all[1], all[2], ("CARGO_MANIFEST_DIR", cargo.as_path())];
        let c = find_with(&env_of(&with_cargo), Some(&home)).unwrap();
        assert_eq!(c.root(), repo.join("cases"));
        let c = find_with(&env_of(&all[1..]), Some(&home)).unwrap();
        assert_eq!(c.root(), data.join("mmapconf/cases"));
        assert_eq!(c.source, Source::DataDir);
        let c = find_with(&env_of(&all[2..]), Some(&home)).unwrap();
        // No data dir of ours here (the system ones may hold an installed package's).
        if !Path::new("/usr/share/mmapconf/cases").exists()
            && !Path::new("/usr/local/share/mmapconf/cases").exists()
        {
            assert_eq!(c.source, Source::Embedded);
            assert_eq!(c.location, "embedded:cases");
        }
    }

    #[test]
    fn user_data_dir_comes_before_system_ones() {
        let t = tempfile::tempdir().unwrap();
        let (user, system) = (t.path().join("user"), t.path().join("system"));
        for d in [&user, &system] {
            std::fs::create_dir_all(d.join("mmapconf/cases")).unwrap();
        }
        let vars = [
            ("XDG_DATA_HOME", user.as_path()),
            ("XDG_DATA_DIRS", system.as_path()),
        ];
        let c = find_with(&env_of(&vars), None).unwrap();
        assert_eq!(c.root(), user.join("mmapconf/cases"));
    }

    #[test]
    fn a_missing_mmapconf_cases_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let gone = t.path().join("gone");
        let e = find_with(&env_of(&[("MMAPCONF_CASES", gone.as_path())]), None).unwrap_err();
        assert!(e.contains("MMAPCONF_CASES") && e.contains("gone"), "{e}");
    }

    #[test]
    fn embedded_corpus_is_the_checkouts() {
        let on_disk =
            crate::case::discover(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases")])
                .unwrap();
        let embedded = embedded_files(Path::new("embedded:cases")).unwrap();
        let ids = |v: &[PathBuf]| {
            let mut ids: Vec<String> = v.iter().map(|p| crate::case::case_id(p)).collect();
            ids.sort();
            ids
        };
        assert!(!embedded.is_empty());
        assert_eq!(ids(&embedded), ids(&on_disk));
        let one = &on_disk[0];
        let name = PathBuf::from(format!("embedded:cases/{}.json", crate::case::case_id(one)));
        assert_eq!(read(&name).unwrap(), std::fs::read(one).unwrap());
    }

    #[test]
    fn a_problem_in_an_embedded_case_names_its_file_line_and_column() {
        let name = Path::new("embedded:cases/fork/x.json");
        let problems =
            crate::case::parse_case_bytes(name, b"{\n  \"title\": 3\n}\n", 4096).unwrap_err();
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(lines
            .iter()
            .all(|l| l.starts_with("embedded:cases/fork/x.json:")));
        // The wrong title is pointed at where it stands.
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("embedded:cases/fork/x.json:2:12: title")),
            "{lines:?}"
        );
        assert_eq!(crate::case::case_id(name), "fork/x");
    }

    #[test]
    fn embedded_names_select_files_and_folders() {
        let seed = embedded_files(Path::new("embedded:cases/seed")).unwrap();
        assert!(!seed.is_empty());
        assert!(seed
            .iter()
            .all(|p| p.to_str().unwrap().starts_with("embedded:cases/seed/")));
        let one = embedded_files(&seed[0]).unwrap();
        assert_eq!(one, vec![seed[0].clone()]);
        for bad in ["embedded:cases/nope", "embedded:casesx", "embedded:other"] {
            let e = embedded_files(Path::new(bad)).unwrap_err();
            assert!(e.starts_with(bad), "{e}");
        }
        assert!(read(Path::new("embedded:cases/nope.json")).is_err());
    }
}
