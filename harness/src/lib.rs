//! mmapconf: a conformance suite for Linux memory-mapping semantics.
//!
//! `case` reads and checks case files, `exec` runs them in real processes,
//! `target` describes where they run, `report` records what happened, and
//! `runner` runs many cases at once; `repro` writes a case as a C program.

pub mod case;
pub mod cli;
pub mod exec;
pub mod explore;
pub mod model;
pub mod mutate;
pub mod names;
pub mod report;
pub mod repro;
pub mod runner;
pub mod target;
