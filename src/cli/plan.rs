//! `ftsweep plan`: validate a sweep and print the runs it expands to.

use std::path::PathBuf;

use anyhow::Result;

use super::{Cli, ExitStatus, open_store, sweepfile};
use crate::data::file_tokens;
use crate::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file.
    pub sweep: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let loaded = sweepfile::load(&args.sweep)?;
    // The plan reads the database when it exists, and never creates one.
    let known: Vec<(String, String)> = if cli.db.exists() {
        let store = open_store(&cli.db)?;
        let store = store.lock();
        match store.sweep(&loaded.sweep.name)? {
            Some(s) => store.sweep_runs(s.id)?.into_iter().map(|r| (r.run_id, r.state.as_str().to_string())).collect(),
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let epoch_tokens = file_tokens(&loaded.training);
    let auto_epochs = crate::plan::default_epochs(loaded.training.conversations.len() as u64);
    let rows = report::plan_rows(&loaded.runs, epoch_tokens, auto_epochs, |id| {
        known.iter().find(|(k, _)| k == id).map(|(_, s)| s.clone())
    });
    if args.json {
        let total: u64 = rows.iter().map(|r| r.estimated_trained_tokens).sum();
        let out = serde_json::json!({
            "sweep": loaded.sweep.name,
            "provider": loaded.sweep.provider.as_str(),
            "base_model": loaded.sweep.base_model,
            "training_examples": loaded.training.conversations.len(),
            "validation_examples": loaded.validation.conversations.len(),
            "training_tokens_per_epoch": epoch_tokens,
            "estimated_trained_tokens": total,
            "runs": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", report::plan_table(&rows));
        let new = rows.iter().filter(|r| r.status == "new").count();
        eprintln!(
            "sweep `{}`: {} runs ({} new), {} training and {} validation examples, {} tokens per epoch",
            loaded.sweep.name,
            rows.len(),
            new,
            loaded.training.conversations.len(),
            loaded.validation.conversations.len(),
            epoch_tokens
        );
    }
    Ok(ExitStatus::Success)
}
