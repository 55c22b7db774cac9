//! `mmapconf explore`: random cases (`gen`), judged by the reference model
//! (`judge`), run like `run` does (`run`), and divergences shrunk to a
//! minimal case (`shrink`).

pub mod gen;
pub mod rng;
