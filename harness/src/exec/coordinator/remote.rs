//! Steps on another process's memory (`remote_read`, `remote_write`): the
//! coordinator asks the target process where its mapping is, then has the
//! acting process reach that address in the target's pid. Two requests,
//! in order, so the address is the target's own at that moment.

use super::{Run, Stop};
use crate::case::model::{Op, Step};
use crate::exec::plan;
use crate::exec::protocol::{Call, Observation, Outcome, Request};

impl Run<'_> {
    pub(super) fn remote(&mut self, step: &Step) -> Result<Observation, Stop> {
        let (target, map, at) = match &step.op {
            Op::RemoteRead {
                target, map, at, ..
            }
            | Op::RemoteWrite {
                target, map, at, ..
            } => (target, map, at),
            _ => unreachable!("remote() is called for remote_read and remote_write only"),
        };
        let me = self.proc_for(step)?;
        if !self.procs.contains_key(target) {
            return Ok(Observation::error(format!(
                "no process `{target}` (it has not done any step yet)"
            )));
        }
        let at = at.resolve_offset(self.ps()).map_err(Stop::Broken)?;
        self.send(
            target,
            Request::Call(Call::Address {
                map: map.clone(),
                at,
            }),
            None,
        )?;
        let place = self.receive(target)?;
        let addr = match (&place.outcome, place.value) {
            (Outcome::Ok, Some(a)) => a as u64,
            _ => return Ok(place),
        };
        let pid = self.proc(target)?.pid;
        let call = match plan::remote_call(step, self.ps(), pid, addr).map_err(Stop::Broken)? {
            Some(c) => c,
            None => unreachable!("a remote op has a remote call"),
        };
        self.send(&me, Request::Call(call), None)?;
        self.receive(&me)
    }
}
