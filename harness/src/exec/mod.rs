//! Running cases: the coordinator, the workers, the wire between them, and
//! the syscall operations.

pub mod coordinator;
pub mod fault;
pub mod fork_server;
pub mod live;
pub mod ops;
pub mod ops_buffers;
mod ops_objects;
pub mod ops_pins;
mod packed;
pub mod pidfd;
pub mod plan;
pub mod plant;
pub mod power_cut;
pub mod protocol;
pub mod relay;
mod summary;
mod threads;
pub mod worker;

pub use coordinator::{run_case, run_case_from, RunOptions};
