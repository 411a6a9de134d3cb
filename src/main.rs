//! The `ftsweep` binary: parse the command line, set up logging, hand over
//! to the library's `cli::run`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly when the reader of stdout goes away (`ftsweep leaderboard x | head`),
    // as Unix tools do, instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
