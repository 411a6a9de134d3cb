//! `ftsweep __command-job DIR -- ARGV...` (hidden): the local engine's
//! wrapper of a trainer command, started detached by a command sweep
//! (`provider::command::local`); not for people to run.

use std::path::PathBuf;

use anyhow::Result;

use super::{Cli, ExitStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run attempt's output directory.
    pub output_dir: PathBuf,
    /// The trainer's command.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

pub fn run(_cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let code = crate::provider::command::local::wrap(&args.output_dir, &args.argv);
    Ok(if code == 0 { ExitStatus::Success } else { ExitStatus::Failure })
}
