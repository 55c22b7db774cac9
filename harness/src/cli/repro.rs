//! `mmapconf repro CASE --c`: the case as a standalone C program (see crate::repro).

use crate::target::Environment;
use std::path::Path;
use std::process::ExitCode;

pub fn repro(which: &str, output: Option<&Path>, fs: Option<&str>, dir: Option<&Path>) -> ExitCode {
    let loaded = match crate::case::load_file(&super::case_file(which), crate::target::page_size())
    {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitCode::from(2);
        }
    };
    let base = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let mut env = Environment::probe(&base);
    if let Some(fs) = fs {
        // As `run --fs` would see it: a target of that name, whose mount
        // has that type, except FUSE targets: the own server's mounts are
        // fuse.mmapconf; a packaged server's exact type is known only once
        // mounted (`--dir` on its mount), so it counts as the family `fuse`.
        use crate::target::fuse::targets::{parse, FuseTarget};
        let (fs_type, subtype) = match parse(fs) {
            Some(FuseTarget::Own(_)) => ("fuse.mmapconf", Some("mmapconf".to_string())),
            Some(FuseTarget::Packaged(_)) => ("fuse", None),
            None => (fs, None),
        };
        env.fs_type = fs_type.to_string();
        env.fs_subtype = subtype;
        env.target = Some(fs.to_string());
        env.mount_options = String::new();
    }
    let program = match crate::repro::c_program(&loaded, &env) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "mmapconf: {}: cannot be written as a C program: {e}",
                loaded.id
            );
            return ExitCode::from(1);
        }
    };
    let written = match output {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(program.as_bytes())
        }
        Some(path) => std::fs::write(path, program),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "mmapconf: cannot write {}: {e}",
                output.map_or("standard output".into(), |p| p.display().to_string())
            );
            ExitCode::from(2)
        }
    }
}
