//! One test per case file under cases/, named by the case's id, so
//! `cargo test -- seed/` runs the seed cases and `cargo test` runs them all.
//! A case whose requirements are unmet here is reported as ignored, with the reason.

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use mmapconf::case::{self, LoadedCase};
use mmapconf::exec::{live, RunOptions};
use mmapconf::report::Status;
use mmapconf::runner;
use mmapconf::target::{page_size, Environment, ScratchRoot};
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases")
}

fn run_trial(loaded: &LoadedCase) -> Result<Completion, Failed> {
    let opts = RunOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_mmapconf")));
    let root = ScratchRoot::create(&std::env::temp_dir())
        .map_err(|e| Failed::from(format!("scratch dir: {e}")))?;
    // The target's capabilities are the same for every trial: measured
    // once, in the first trial's root, as a run measures them once.
    static CAPABILITIES: std::sync::OnceLock<Environment> = std::sync::OnceLock::new();
    let measured = CAPABILITIES.get_or_init(|| Environment::of_run(&root.path, None));
    let mut env = Environment::probe(&root.path);
    env.capabilities = measured.capabilities.clone();
    let report = runner::run_one(0, loaded, &env, &root, &opts);
    let reason = report.reason.clone().unwrap_or_default();
    match report.status {
        Status::Pass => Ok(Completion::Completed),
        Status::Skip => Ok(Completion::ignored_with(reason)),
        Status::Fail => Err(format!("FAIL: {reason}").into()),
        Status::Error => Err(format!("ERROR: {reason}").into()),
    }
}

fn main() {
    let args = Arguments::from_args();
    live::become_subreaper();
    let files = case::discover(&[cases_dir()]).expect("cases/ exists");
    let trials = files
        .into_iter()
        .map(|file| {
            let id = case::case_id(&file);
            match case::load_file(&file, page_size()) {
                Ok(loaded) => Trial::ignorable_test(id, move || run_trial(&loaded)),
                Err(problems) => {
                    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    Trial::test(id, move || Err(text.join("\n").into()))
                }
            }
        })
        .collect();
    // The hugetlb cases need the run's huge page pool (as `mmapconf run`
    // reserves it); given back before the exit, which skips destructors.
    let pool = mmapconf::target::hugetlb::reserve();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(pool);
    conclusion.exit();
}
