//! The `isotest` command line: parses arguments and hands each subcommand to the library.

use clap::{Parser, Subcommand};

/// Run programs in fresh Linux namespaces on a copy-on-write root filesystem.
#[derive(Debug, Parser)]
#[command(name = "isotest", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a program from a root filesystem in a fresh sandbox
    Run(isotest::cli::RunArgs),
    /// Check that this machine can run sandboxes, and say how to fix what is missing
    Doctor(isotest::doctor::DoctorArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => isotest::cli::run(args),
        Command::Doctor(args) => isotest::doctor::main(args),
    };
    std::process::exit(code);
}
