//! An observation's encoding on the wire (`protocol`) and in the relay
//! log (see `relay`): a fixed,
//! hand-packed layout for the observations nearly every step makes (ok or
//! an errno, with a number and bytes or not), and JSON for the rest.
//!
//! Why not JSON for all: in a run of steps of one process the worker's
//! JSON encoding and the coordinator's decoding were most of a step's
//! cost. Why not a serde binary format (postcard, bincode): they cannot
//! carry `Observation` as its serde attributes shape it for the wire and
//! the report (an internally tagged enum, fields skipped when None), so
//! they would need a mirror type of every field; the common cases packed
//! by hand are a few lines, and JSON keeps the rare ones exact.
//!
//! Layout, all integers little-endian:
//! - `0`, then the observation as JSON;
//! - `1`, a flags byte ([`ERRNO`], [`VALUE`], [`BYTES`]), then in that
//!   order: the errno's name (a length byte and the name), the value (8
//!   bytes), the bytes (a 4-byte length and the bytes).

use super::protocol::{Observation, Outcome};

const JSON: u8 = 0;
const PACKED: u8 = 1;
/// The outcome is an errno (else ok).
const ERRNO: u8 = 1;
const VALUE: u8 = 2;
const BYTES: u8 = 4;

/// An observation's encoding, ready to be written somewhere.
pub enum Packed<'a> {
    Fixed {
        flags: u8,
        errno: &'a [u8],
        value: i64,
        bytes: &'a [u8],
    },
    Json(Vec<u8>),
}

impl<'a> Packed<'a> {
    pub fn of(obs: &'a Observation) -> Packed<'a> {
        let errno = match &obs.outcome {
            Outcome::Ok => None,
            Outcome::Errno { errno } if errno.len() <= u8::MAX as usize => Some(errno.as_bytes()),
            _ => return Packed::json(obs),
        };
        let plain = obs.stat.is_none()
            && obs.pid.is_none()
            && obs.exit.is_none()
            && obs.detail.is_none()
            && obs
                .bytes
                .as_ref()
                .is_none_or(|b| u32::try_from(b.len()).is_ok());
        if !plain {
            return Packed::json(obs);
        }
        let mut flags = 0;
        if errno.is_some() {
            flags |= ERRNO;
        }
        if obs.value.is_some() {
            flags |= VALUE;
        }
        if obs.bytes.is_some() {
            flags |= BYTES;
        }
        Packed::Fixed {
            flags,
            errno: errno.unwrap_or_default(),
            value: obs.value.unwrap_or_default(),
            bytes: obs.bytes.as_deref().unwrap_or_default(),
        }
    }

    fn json(obs: &Observation) -> Packed<'static> {
        Packed::Json(serde_json::to_vec(obs).expect("observations serialize"))
    }

    /// The encoding's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Packed::Json(body) => 1 + body.len(),
            Packed::Fixed {
                flags,
                errno,
                bytes,
                ..
            } => {
                let mut n = 2;
                if flags & ERRNO != 0 {
                    n += 1 + errno.len();
                }
                if flags & VALUE != 0 {
                    n += 8;
                }
                if flags & BYTES != 0 {
                    n += 4 + bytes.len();
                }
                n
            }
        }
    }

    /// Writes the encoding at the start of `out`, which holds at least
    /// [`Packed::len`] bytes.
    pub fn write(&self, out: &mut [u8]) {
        let mut w = Writer { out, at: 0 };
        match self {
            Packed::Json(body) => {
                w.put(&[JSON]);
                w.put(body);
            }
            Packed::Fixed {
                flags,
                errno,
                value,
                bytes,
            } => {
                w.put(&[PACKED, *flags]);
                if flags & ERRNO != 0 {
                    w.put(&[errno.len() as u8]);
                    w.put(errno);
                }
                if flags & VALUE != 0 {
                    w.put(&value.to_le_bytes());
                }
                if flags & BYTES != 0 {
                    w.put(&(bytes.len() as u32).to_le_bytes());
                    w.put(bytes);
                }
            }
        }
    }
}

struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
}

/// Decodes what [`Packed::write`] wrote; Err says what is wrong with it.
pub fn unpack(body: &[u8]) -> Result<Observation, String> {
    let mut r = Reader { body, at: 0 };
    match r.take(1)?[0] {
        JSON => serde_json::from_slice(&body[1..]).map_err(|e| e.to_string()),
        PACKED => {
            let flags = r.take(1)?[0];
            let mut obs = Observation::ok();
            if flags & ERRNO != 0 {
                let n = r.take(1)?[0] as usize;
                let name = std::str::from_utf8(r.take(n)?).map_err(|e| e.to_string())?;
                obs.outcome = Outcome::Errno {
                    errno: name.to_string(),
                };
            }
            if flags & VALUE != 0 {
                let v = r.take(8)?;
                obs.value = Some(i64::from_le_bytes(v.try_into().expect("8 bytes")));
            }
            if flags & BYTES != 0 {
                let n = r.take(4)?;
                let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
                obs.bytes = Some(r.take(n)?.to_vec());
            }
            if r.at != body.len() {
                return Err(format!("{} bytes left over", body.len() - r.at));
            }
            Ok(obs)
        }
        kind => Err(format!("unknown encoding {kind}")),
    }
}

struct Reader<'b> {
    body: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], String> {
        let got = self
            .body
            .get(self.at..self.at + n)
            .ok_or_else(|| format!("cut short at byte {}", self.at))?;
        self.at += n;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::protocol::{ExitStatus, StatInfo};

    fn round_trip(obs: &Observation) -> (Observation, bool) {
        let p = Packed::of(obs);
        let fixed = matches!(p, Packed::Fixed { .. });
        let mut buf = vec![0xaa; p.len()];
        p.write(&mut buf);
        (unpack(&buf).unwrap(), fixed)
    }

    #[test]
    fn common_observations_are_packed_and_come_back_the_same() {
        let mut load = Observation::ok();
        load.bytes = Some(b"abcdefgh".to_vec());
        load.value = Some(-3);
        let mut empty = Observation::ok();
        empty.bytes = Some(Vec::new());
        let mut errno = Observation::errno(libc::EACCES);
        errno.value = Some(i64::MIN);
        for obs in [Observation::ok(), load, empty, errno] {
            assert_eq!(round_trip(&obs), (obs.clone(), true), "{obs:?}");
        }
    }

    #[test]
    fn the_rest_goes_as_json_and_comes_back_the_same() {
        let mut stat = Observation::ok();
        stat.stat = Some(StatInfo {
            size: 1,
            blocks: 2,
            mtime_sec: 3,
            mtime_nsec: 4,
            ctime_sec: 5,
            ctime_nsec: 6,
        });
        let mut exit = Observation::ok();
        exit.exit = Some(ExitStatus::Killed("SIGKILL".into()));
        let signal = Observation::of(Outcome::Signal {
            signal: "SIGBUS".into(),
            si_code: "BUS_ADRERR".into(),
            offset: 4096,
            done: 7,
            map_offset: 8192,
        });
        for obs in [stat, exit, signal, Observation::error("no map `m`")] {
            assert_eq!(round_trip(&obs), (obs.clone(), false), "{obs:?}");
        }
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_panic() {
        let mut obs = Observation::errno(libc::EINVAL);
        obs.bytes = Some(vec![1, 2, 3]);
        let p = Packed::of(&obs);
        let mut buf = vec![0; p.len()];
        p.write(&mut buf);
        for cut in 0..buf.len() {
            assert!(unpack(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(unpack(&longer).is_err());
        assert!(unpack(&[9]).is_err());
    }
}
