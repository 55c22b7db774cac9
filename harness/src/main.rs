use clap::Parser;

fn main() -> std::process::ExitCode {
    // Die quietly of SIGPIPE like any Unix tool when output goes to a closed
    // pipe (`mmapconf run | head`); channels to workers use MSG_NOSIGNAL.
    // SAFETY: set before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let code = mmapconf::cli::main(mmapconf::cli::Cli::parse());
    // An interrupt's handler is cleaning up and will exit with 128+signal.
    while mmapconf::exec::live::interrupted() {
        std::thread::park();
    }
    code
}
