use clap::Parser;

fn main() -> std::process::ExitCode {
    mmapconf::cli::main(mmapconf::cli::Cli::parse())
}
