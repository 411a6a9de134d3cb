//! `ftsweep serve`: an OpenAI-protocol server over the local trainer.

use anyhow::Result;

use super::{Cli, ExitStatus, UsageError};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_cli: &Cli, _args: &Args) -> Result<ExitStatus> {
    Err(UsageError { message: "`serve` is being built".into(), hint: "use `run` with the local provider".into() }
        .into())
}
