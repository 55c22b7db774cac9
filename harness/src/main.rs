use clap::Parser;

fn main() -> std::process::ExitCode {
    // A run owns mounts and loop devices: whatever ends it early must give
    // them back. Output to a closed pipe (`mmapconf run | head`) ends the
    // run quietly, as SIGPIPE would, but only after that cleanup; any other
    // panic cleans up too before it is reported.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        mmapconf::exec::live::set_interrupted(libc::SIGPIPE);
        mmapconf::exec::live::kill_everything();
        if info.to_string().contains("Broken pipe") {
            std::process::exit(128 + libc::SIGPIPE);
        }
        default_hook(info);
        std::process::exit(101);
    }));
    let code = mmapconf::cli::main(mmapconf::cli::Cli::parse());
    mmapconf::exec::fork_server::stop();
    // An interrupt's handler is cleaning up and will exit with 128+signal.
    while mmapconf::exec::live::interrupted() {
        std::thread::park();
    }
    code
}
