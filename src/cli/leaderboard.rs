//! `ftsweep leaderboard`: a sweep's runs, ranked, from the database.

use anyhow::Result;

use super::{Cli, ExitStatus, open_sweep};
use crate::store::{SharedStore, SweepRecord};
use crate::{rank, report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name (the `name` in its file).
    pub sweep: String,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = open_sweep(&cli.db, &args.sweep)?;
    print(&store, &sweep, args.json)?;
    Ok(ExitStatus::Success)
}

/// Prints the sweep's leaderboard on stdout.
pub fn print(store: &SharedStore, sweep: &SweepRecord, json: bool) -> Result<()> {
    let runs = store.lock().sweep_runs(sweep.id)?;
    let rows = report::leaderboard_rows(&rank::rank(&runs), &sweep.metric);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{}", report::leaderboard_table(&rows, &sweep.metric));
    }
    Ok(())
}
