//! `ftsweep resume NAME`: resume a sweep from the database alone (its
//! recorded sweep file), following the jobs still running at the provider.

use std::path::Path;

use anyhow::Result;

use super::run as run_command;
use super::{Cli, ExitStatus, UsageError, open_sweep, sweepfile};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name.
    pub sweep: String,
    #[command(flatten)]
    pub launch: run_command::LaunchArgs,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = open_sweep(&cli.db, &args.sweep)?;
    let text = store.lock().sweep_text(sweep.id)?;
    drop(store);
    let loaded = sweepfile::load_text(Path::new(&sweep.spec_path), text)?;
    if loaded.training.sha256 != sweep.training_sha256 || loaded.validation.sha256 != sweep.validation_sha256 {
        return Err(UsageError {
            message: format!("the data files of sweep `{}` changed since it was recorded", sweep.name),
            hint:
                "its runs were trained on the old data: run the sweep file again (`ftsweep run FILE`) to plan new runs"
                    .into(),
        }
        .into());
    }
    run_command::execute(cli, &args.launch, loaded)
}
