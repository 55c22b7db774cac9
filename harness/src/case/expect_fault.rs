//! Where a fault happened (issue 18, part C): `fault_at`, the faulting
//! address as an offset into the named mapping, and `done`, what the
//! access completed before it. Both refine an expected `signal`: a SIGBUS
//! past the end of a file is only right if it is raised at the first page
//! past EOF, not one page later.

use super::model::{Expect, Op, Size};
use crate::exec::protocol::Outcome;

/// Adds to `problems` where the observed fault is not where `expect` says.
/// (A missing or different signal is judge_outcome's to report.)
pub(super) fn judge_fault(
    expect: &Expect,
    got: &Outcome,
    page_size: u64,
    problems: &mut Vec<String>,
) {
    let Outcome::Signal {
        done, map_offset, ..
    } = got
    else {
        return;
    };
    let checks = [
        (
            "fault_at",
            &expect.fault_at,
            *map_offset,
            "the fault at offset",
        ),
        (
            "done",
            &expect.done,
            *done as i64,
            "bytes done before the fault:",
        ),
    ];
    for (key, want, observed, what) in checks {
        let Some(want) = want else { continue };
        match want.resolve_number(page_size) {
            Ok(w) if w == observed => {}
            Ok(w) => problems.push(format!("expected {what} {w} ({key}), observed {observed}")),
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
}

/// What validation says of `fault_at` and `done` on `op`: (key, message).
pub(super) fn problems(op: &Op, e: &Expect, page_size: u64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let access = matches!(
        op,
        Op::Load { .. } | Op::Store { .. } | Op::Increment { .. }
    );
    for (key, v) in [("fault_at", &e.fault_at), ("done", &e.done)] {
        let Some(v) = v else { continue };
        if e.signal.is_none() || !access {
            out.push((
                key,
                format!("`{key}` says where a memory access faulted: it goes with `signal` on load, store or increment"),
            ));
        }
        if let Err(err) = v.resolve_number(page_size) {
            out.push((key, err));
        }
        if let (Size::Bytes(n), "done") = (v, key) {
            if *n < 0 {
                out.push((key, "`done` counts bytes: not negative".to_string()));
            }
        }
    }
    out
}
