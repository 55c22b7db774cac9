//! `mmapconf explore`: random cases (`gen`, from `rng`), run like `run`
//! does and judged by the reference model (`run`, `judge`), divergences
//! shrunk to a minimal case (`shrink`) and saved as findings.

pub mod gen;
pub mod judge;
pub mod rng;
pub mod run;
pub mod shrink;
