//! `ftsweep status [NAME]`: each run's state, job, progress and age, and the
//! budget. A run whose process died is shown as such, never as alive.

use anyhow::Result;
use comfy_table::{Table, presets};

use super::out::{errln, outln};
use super::{Cli, ExitStatus, open_existing, open_sweep, run::budget_line};
use crate::run::{RunState, show};
use crate::store::{RunControl, SharedStore, SweepRecord};
use crate::sweep::owner_alive;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name; all sweeps when omitted.
    pub sweep: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let sweeps: Vec<(SharedStore, SweepRecord)> = match &args.sweep {
        Some(name) => vec![open_sweep(&cli.db, name)?],
        None => {
            let (store, _) = match open_store_existing(cli)? {
                Some(s) => (s, ()),
                None => return Ok(ExitStatus::Success),
            };
            let names = store.lock().sweep_names()?;
            let mut out = Vec::new();
            for n in names {
                if let Some(rec) = store.lock().sweep(&n)? {
                    out.push((store.clone(), rec));
                }
            }
            out
        }
    };
    let mut json = Vec::new();
    for (store, sweep) in sweeps {
        let (runs, controls, budget) = {
            let s = store.lock();
            (s.sweep_runs(sweep.id)?, s.run_controls(sweep.id)?, s.budget_state(sweep.id)?)
        };
        let spec = crate::spec::parse(std::path::Path::new(&sweep.spec_path), &store.lock().sweep_text(sweep.id)?).ok();
        let limits = spec.map(|s| (s.limits.budget_usd, s.limits.max_trained_tokens)).unwrap_or_default();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let hyper = crate::run::shown_names(runs.iter().map(|r| &r.config));
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED).set_header(status_header(&hyper));
        let mut rows = Vec::new();
        for (r, c) in runs.iter().zip(&controls) {
            let progress = store.lock().run_progress(&r.run_id)?;
            let state = shown_state(r.state, c, now);
            let age = format_age(now - c.updated_at);
            let progress_text = match (r.state, progress) {
                (RunState::Done, _) => "done".to_string(),
                (_, Some((step, epoch))) => format!("epoch {epoch}/{} step {step}", show(r.config.n_epochs)),
                _ => "-".to_string(),
            };
            let note = c.note.clone().or_else(|| r.error.clone()).unwrap_or_default();
            let mut cells: Vec<String> = vec![r.run_id.clone(), show(r.config.n_epochs)];
            cells.extend(hyper.iter().map(|n| r.config.show(n)));
            cells.extend([
                state.clone(),
                r.job_id.clone().unwrap_or_else(|| "-".into()),
                progress_text.clone(),
                age.clone(),
                note.chars().take(70).collect(),
            ]);
            t.add_row(cells);
            rows.push(serde_json::json!({
                "run_id": r.run_id, "state": state, "job_id": r.job_id, "progress": progress_text,
                "age_seconds": (now - c.updated_at).max(0.0), "owner": c.owner, "note": note,
                "estimated_cost_usd": c.estimated_cost_usd, "cost_usd": c.cost_usd,
            }));
        }
        let line = budget_line(&budget, limits.0, limits.1);
        if args.json {
            json.push(serde_json::json!({
                "sweep": sweep.name, "runs": rows, "budget": {
                    "spent_usd": budget.spent_usd, "running_usd": budget.running_usd,
                    "spent_tokens": budget.spent_tokens, "running_tokens": budget.running_tokens,
                    "budget_usd": limits.0, "max_trained_tokens": limits.1,
                }
            }));
        } else {
            outln!("sweep `{}` ({}, {})\n{t}\n{line}", sweep.name, sweep.provider, sweep.base_model)?;
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&json)?)?;
    }
    Ok(ExitStatus::Success)
}

fn open_store_existing(cli: &Cli) -> Result<Option<SharedStore>> {
    if !cli.db.exists() {
        errln!("no database at `{}`: no sweep has run here", cli.db.display())?;
        return Ok(None);
    }
    Ok(Some(open_existing(&cli.db)?))
}

/// A run's state as a person should read it: a run in flight whose process
/// is gone says so.
fn shown_state(state: RunState, c: &RunControl, now: f64) -> String {
    let in_flight = matches!(state, RunState::Launching | RunState::Training | RunState::Evaluating);
    let live = c.owner.as_deref().is_some_and(|o| c.lease_until.is_some_and(|l| l > now) && owner_alive(o));
    match (in_flight, live) {
        (true, false) if state == RunState::Training => "training (no process follows it: resume)".into(),
        (true, false) => format!("{} (interrupted: resume)", state.as_str()),
        _ if c.not_before.is_some_and(|t| t > now) => {
            format!("queued (until {})", format_age(c.not_before.unwrap_or(now) - now))
        }
        _ => state.as_str().to_string(),
    }
}

fn format_age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// The status table's header; `hyper` are the hyperparameter columns
/// between the epochs and the state.
fn status_header(hyper: &[String]) -> Vec<String> {
    let mut h = vec!["run".to_string(), "n_epochs".to_string()];
    h.extend(hyper.iter().map(|n| crate::space::short(n).to_string()));
    h.extend(["state", "job", "progress", "age", "note"].iter().map(|s| s.to_string()));
    h
}
