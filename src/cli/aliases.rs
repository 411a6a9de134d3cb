//! `ftsweep aliases` (being built).

use anyhow::Result;

use super::{Cli, ExitStatus, UsageError};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_cli: &Cli, _args: &Args) -> Result<ExitStatus> {
    Err(UsageError { message: "`aliases` is being built".into(), hint: "see README.md".into() }.into())
}
