//! `ftsweep aliases`: every alias, the model it points at and where that
//! model came from.

use anyhow::Result;

use super::open_existing;
use super::out::{errln, outln};
use super::{Cli, ExitStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the aliases with their full provenance as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let store = open_existing(&cli.db)?;
    let aliases = store.lock().aliases()?;
    if args.json {
        let all: Vec<serde_json::Value> = aliases
            .iter()
            .map(|a| serde_json::json!({"alias": a.name, "model": a.model, "provenance": a.provenance}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(ExitStatus::Success);
    }
    if aliases.is_empty() {
        errln!("no aliases yet: `ftsweep promote RUN --alias champion` sets one")?;
        return Ok(ExitStatus::Success);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(vec!["alias", "model", "run", "sweep", "metric", "score", "95% CI", "promoted", "note"]);
    for a in &aliases {
        let p = &a.provenance;
        let num = |k: &str| p[k].as_f64().map_or("-".into(), |v| format!("{v:.3}"));
        let ci = match (p["ci_low"].as_f64(), p["ci_high"].as_f64()) {
            (Some(lo), Some(hi)) => format!("[{lo:.3}, {hi:.3}]"),
            _ => "-".into(),
        };
        let run = match (a.run_id.as_deref(), p["epoch"].as_u64()) {
            (Some(r), Some(e)) => format!("{r}@{e}"),
            (Some(r), None) => r.to_string(),
            (None, _) => "-".into(),
        };
        let note = match (p["forced"].as_bool(), p["previous"]["model"].as_str()) {
            (Some(true), Some(prev)) => format!("forced over {prev}"),
            (_, Some(prev)) => format!("replaced {prev}"),
            _ => String::new(),
        };
        t.add_row(vec![
            a.name.clone(),
            a.model.clone(),
            run,
            a.sweep.clone().unwrap_or_else(|| "-".into()),
            p["metric"].as_str().unwrap_or("-").to_string(),
            num("score"),
            ci,
            p["promoted_at"].as_str().unwrap_or("-").to_string(),
            note,
        ]);
    }
    outln!("{t}")?;
    Ok(ExitStatus::Success)
}
