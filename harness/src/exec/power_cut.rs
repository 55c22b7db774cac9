//! Power-cut mode (`mmapconf power-cut`): a case's `crash` step as a real
//! power cut. The harness runs one case on a block device it mounts
//! itself; at the `crash` step it simulates nothing: it writes the
//! coordinator's state (a [`State`]) to its destination, then a marker
//! line ([`MARKER`]), and waits for the machine to die with every process
//! of the case still alive. The runner (`ci/power-cut`) kills the VM on
//! the marker and boots it again with the state; `--resume` mounts the
//! device (journal or log replay happens there), restores the state, marks
//! the processes of before the cut as gone, and runs the remaining steps.
//!
//! Nothing here is used by `run`: without a [`PowerCut`] in the run
//! options, `crash` is simulated as before.

use super::protocol::StatInfo;
use crate::report::StepReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// The start of the line that says "the state is safe: cut the power now".
pub const MARKER: &str = "@@mmapconf cut now";

/// The observed `detail` of a crash step that was a real power cut.
pub const DETAIL: &str = "power cut (VM killed)";

/// The coordinator's part of the state: what it knew of the case when the
/// power was cut.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Paused {
    /// 0-based index of the `crash` step: the resumed run records that
    /// step as the power cut, then goes on with the next one.
    pub resume_at: usize,
    /// The reports of the steps before the crash step.
    pub steps: Vec<StepReport>,
    /// Values recorded with `as` (pagemap, load, pread, mincore).
    pub values: BTreeMap<String, i64>,
    /// Stat snapshots recorded with `as` (fstat).
    pub snapshots: BTreeMap<String, StatInfo>,
    /// Every process the case had started; all of them die with the power.
    pub processes: Vec<PausedProcess>,
    /// Time the case had run, across earlier cuts too.
    pub elapsed_ms: u64,
}

/// A process of the case at the cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedProcess {
    pub name: String,
    /// The worker that forked it; absent for a fresh process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Its pid in the boot that was cut (for the record, and for a test on
    /// the host that waits for the processes to end).
    pub pid: i32,
}

/// What the coordinator calls at a `crash` step in power-cut mode, with
/// every process of the case alive. It returns only when it could not
/// save the state (the case is then an error); otherwise it waits for the
/// power to go.
pub trait PowerCut: Send + Sync + std::fmt::Debug {
    fn cut(&self, paused: Paused) -> Result<Infallible, String>;
}

/// The state file: one line of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The case id.
    pub case: String,
    /// The filesystem type of the device.
    pub fs: String,
    /// The case's directory, relative to the mount point.
    pub case_dir: String,
    /// `uname -r` of the boot that was cut.
    pub kernel_release: String,
    /// Power cuts of this case so far, this one included.
    pub cuts: u32,
    #[serde(flatten)]
    pub paused: Paused,
}

impl State {
    /// The state as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("the state serializes");
        s.push('\n');
        s
    }

    /// Reads a state: the first line of `text` that holds a JSON object.
    pub fn parse(text: &str) -> Result<State, String> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or("no state in it")?;
        let state: State = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if state.version != STATE_VERSION {
            return Err(format!(
                "state version {} (this harness reads {STATE_VERSION})",
                state.version
            ));
        }
        Ok(state)
    }

    pub fn read(path: &Path) -> Result<State, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        State::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The [`PowerCut`] of `mmapconf power-cut`: writes the state to `out`
/// (`-`: standard output), then the marker to standard output, then waits.
#[derive(Debug)]
pub struct Cutter {
    pub case: String,
    pub fs: String,
    pub case_dir: String,
    /// Cuts before this one.
    pub earlier_cuts: u32,
    pub out: PathBuf,
}

impl Cutter {
    fn state(&self, paused: Paused) -> State {
        State {
            version: STATE_VERSION,
            case: self.case.clone(),
            fs: self.fs.clone(),
            case_dir: self.case_dir.clone(),
            kernel_release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cuts: self.earlier_cuts + 1,
            paused,
        }
    }
}

impl PowerCut for Cutter {
    fn cut(&self, paused: Paused) -> Result<Infallible, String> {
        let step = paused.resume_at + 1;
        let line = self.state(paused).to_line();
        write_durably(&self.out, line.as_bytes())
            .map_err(|e| format!("writing the state to {}: {e}", self.out.display()))?;
        // Only now, after the state: whoever cuts the power on this line
        // has the state already (standard output and the state may be the
        // same stream, read in order).
        let marker = format!("{MARKER}: {} at step {step}\n", self.case);
        write_durably(Path::new("-"), marker.as_bytes())
            .map_err(|e| format!("writing the marker: {e}"))?;
        eprintln!(
            "mmapconf: {} reached its crash step {step}: waiting for the power cut",
            self.case
        );
        // Every process of the case stays as it is, mappings and dirty
        // pages included, until the machine dies.
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
}

/// Writes `bytes` to `path` (`-`: standard output) and makes sure they
/// left this process: fsync for a regular file (and its directory entry);
/// a device or pipe has nothing to flush once write returned (a virtio
/// serial port queues the bytes for the host in order).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()?;
        return sync_if_file(out.as_raw_fd());
    }
    let existing = std::fs::metadata(path).ok();
    let regular = existing.as_ref().is_none_or(|m| m.is_file());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(regular)
        .truncate(regular)
        .open(path)?;
    f.write_all(bytes)?;
    sync_if_file(f.as_raw_fd())?;
    if regular && existing.is_none() {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn sync_if_file(fd: i32) -> std::io::Result<()> {
    let st = nix::sys::stat::fstat(fd).map_err(std::io::Error::from)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        nix::unistd::fsync(fd).map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::protocol::Observation;
    use crate::report::StepStatus;

    fn sample() -> State {
        let mut obs = Observation::ok();
        obs.bytes = Some(b"durable\n\0".to_vec());
        State {
            version: STATE_VERSION,
            case: "durability/ms-sync-survives-crash".into(),
            fs: "btrfs".into(),
            case_dir: "mmapconf-power-cut/durability_ms-sync-survives-crash".into(),
            kernel_release: "7.3.4+deb13-cloud-amd64".into(),
            cuts: 1,
            paused: Paused {
                resume_at: 4,
                steps: vec![StepReport {
                    index: "1".into(),
                    process: Some("p".into()),
                    op: "load".into(),
                    summary: "p: load at=0 len=9 map=\"m\"".into(),
                    status: StepStatus::Observed,
                    expected: None,
                    variant: None,
                    observed: Some(obs),
                    message: None,
                    duration_us: 17,
                }],
                values: [("v".to_string(), -3)].into(),
                snapshots: [(
                    "old".to_string(),
                    StatInfo {
                        size: 4096,
                        blocks: 8,
                        mtime_sec: 1_000_000_000,
                        mtime_nsec: 5,
                        ctime_sec: 1_700_000_000,
                        ctime_nsec: 999_999_999,
                    },
                )]
                .into(),
                processes: vec![
                    PausedProcess {
                        name: "p".into(),
                        parent: None,
                        pid: 41,
                    },
                    PausedProcess {
                        name: "child".into(),
                        parent: Some("p".into()),
                        pid: 42,
                    },
                ],
                elapsed_ms: 12,
            },
        }
    }

    fn same(a: &State, b: &State) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }

    #[test]
    fn the_state_is_one_line_and_comes_back_the_same() {
        let state = sample();
        let line = state.to_line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.ends_with('\n'));
        same(&State::parse(&line).unwrap(), &state);
        // As the runner hands it over: after protocol lines, before the marker.
        let stream = format!("@@mmapconf before x\n{line}{MARKER}: x at step 5\n");
        same(&State::parse(&stream).unwrap(), &state);
    }

    #[test]
    fn a_written_state_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = sample();
        write_durably(&path, state.to_line().as_bytes()).unwrap();
        // A second cut overwrites, never appends.
        write_durably(&path, state.to_line().as_bytes()).unwrap();
        same(&State::read(&path).unwrap(), &state);
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut state = sample();
        state.version = STATE_VERSION + 1;
        assert!(State::parse(&state.to_line())
            .unwrap_err()
            .contains("version"));
        assert!(State::parse("@@mmapconf boot\n").is_err());
        assert!(State::parse("{\"version\": 1}\n").is_err());
    }
}
