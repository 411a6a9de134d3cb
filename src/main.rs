//! The `ftsweep` binary: parse the command line, set up logging, hand over
//! to the library's `cli::run`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // SIGPIPE stays ignored, as Rust sets it: a reader of stdout that goes away
    // (`ftsweep leaderboard x | head`) ends the command quietly through `cli::out`, and a
    // command grader that does not read its input is not the death of the process.
    let cli = ftsweep::cli::Cli::parse();
    let default = if cli.verbose { "ftsweep=debug" } else { "ftsweep=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A log line that cannot be written must not panic: it is remembered, and the exit code is 1.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ftsweep::cli::out::TracingStderr)
        .log_internal_errors(false)
        .init();
    ftsweep::cli::run(cli)
}
