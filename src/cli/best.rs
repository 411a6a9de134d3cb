//! `ftsweep best`: the best run's model id, for scripts.

use anyhow::Result;

use super::{Cli, ExitStatus, NoResult, open_sweep};
use crate::plan::show;
use crate::{rank, report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name (the `name` in its file).
    pub sweep: String,
    /// Print the best run's leaderboard row as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = open_sweep(&cli.db, &args.sweep)?;
    let runs = store.lock().sweep_runs(sweep.id)?;
    let ranked = rank::rank(&runs);
    let rows = report::leaderboard_rows(&ranked, &sweep.metric);
    let Some(best) = rows.into_iter().find(|r| r.rank == Some(1)) else {
        return Err(NoResult(format!("no run of sweep `{}` has finished yet", sweep.name)).into());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&best)?);
    } else {
        println!("{}", best.model.as_deref().unwrap_or_default());
        eprintln!(
            "best of `{}`: {} ({} = {:.3}; n_epochs={}, learning_rate_multiplier={}, batch_size={}, seed={})",
            sweep.name,
            best.run_id,
            sweep.metric,
            best.score.unwrap_or(f64::NAN),
            show(best.n_epochs),
            show(best.learning_rate_multiplier),
            show(best.batch_size),
            best.seed
        );
    }
    Ok(ExitStatus::Success)
}
