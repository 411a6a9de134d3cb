//! `ftsweep status [NAME]`: each run's state, job, progress and age, and the
//! budget. A run whose process died is shown as such, never as alive.

use std::io::IsTerminal;

use anyhow::Result;
use comfy_table::{Table, presets};

use super::out::{errln, outln};
use super::{Cli, ExitStatus, open_existing, open_sweep, run::budget_line};
use crate::run::{RunState, show};
use crate::store::{RunControl, RunProgress, SharedStore, SweepRecord};
use crate::sweep::owner_alive;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name; all sweeps when omitted.
    pub sweep: Option<String>,
    /// Print JSON instead of tables (with --watch: one JSON document per line).
    #[arg(long)]
    pub json: bool,
    /// Refresh the view every SECONDS (2 if not given) until every run has ended or Ctrl-C;
    /// on a terminal it is redrawn in place, otherwise printed again after a blank line.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2", value_parser = parse_interval)]
    pub watch: Option<f64>,
}

/// `--watch`'s interval: seconds, from 0.1 to an hour.
fn parse_interval(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if (0.1..=3600.0).contains(&s) => Ok(s),
        Ok(_) => Err("the interval must be from 0.1 to 3600 seconds".into()),
        Err(_) => Err("expected seconds, e.g. --watch 5 (write the sweep's name before --watch)".into()),
    }
}

/// What `status` shows once: the text, the JSON, and whether every run shown has ended.
struct View {
    text: String,
    json: serde_json::Value,
    ended: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let Some(interval) = args.watch else {
        let Some(view) = view(cli, args)? else { return Ok(ExitStatus::Success) };
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&view.json)?)?;
        } else {
            outln!("{}", view.text)?;
        }
        return Ok(ExitStatus::Success);
    };
    watch(cli, args, interval)
}

/// `status --watch`: the view every `interval` seconds until every run has ended (exit 0) or
/// Ctrl-C. On a terminal the screen is cleared and the view drawn at its top; otherwise each
/// view is printed after a blank line and a timestamp; with `--json`, one compact JSON document
/// a line (NDJSON), terminal or not.
fn watch(cli: &Cli, args: &Args, interval: f64) -> Result<ExitStatus> {
    let tty = std::io::stdout().is_terminal();
    let what = args.sweep.as_deref().map_or(String::new(), |n| format!(" {n}"));
    for n in 0u64.. {
        let Some(view) = view(cli, args)? else { return Ok(ExitStatus::Success) };
        let at = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now());
        if args.json {
            outln!("{}", serde_json::to_string(&view.json)?)?;
        } else if tty {
            // Home and clear the screen, as watch(1) does.
            outln!("\x1b[H\x1b[2Jevery {interval}s: ftsweep status{what}  {at}  (Ctrl-C to stop)\n\n{}", view.text)?;
        } else {
            outln!("{}status at {at}\n{}", if n == 0 { "" } else { "\n" }, view.text)?;
        }
        if view.ended {
            errln!("status: every run has ended")?;
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
    }
    Ok(ExitStatus::Success)
}

/// The status of the sweep `args` names (or of every sweep); `None` when there is no database.
fn view(cli: &Cli, args: &Args) -> Result<Option<View>> {
    let sweeps: Vec<(SharedStore, SweepRecord)> = match &args.sweep {
        Some(name) => vec![open_sweep(&cli.db, name)?],
        None => {
            let Some(store) = open_store_existing(cli)? else { return Ok(None) };
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
    let (mut json, mut text, mut ended) = (Vec::new(), Vec::new(), true);
    for (store, sweep) in sweeps {
        let (t, j, e) = sweep_view(&store, &sweep)?;
        text.push(t);
        json.push(j);
        ended &= e;
    }
    Ok(Some(View { text: text.join("\n"), json: serde_json::Value::Array(json), ended }))
}

/// One sweep's table and budget, its JSON, and whether all its runs have ended (done, failed
/// or cancelled).
fn sweep_view(store: &SharedStore, sweep: &SweepRecord) -> Result<(String, serde_json::Value, bool)> {
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
        let progress_text = progress_text(r.state, r.config.n_epochs, progress);
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
            "step": progress.map(|p| p.step), "epoch": progress.map(|p| p.epoch).filter(|e| *e > 0),
            "train_loss": progress.and_then(|p| p.train_loss),
            "age_seconds": (now - c.updated_at).max(0.0), "owner": c.owner, "note": note,
            "estimated_cost_usd": c.estimated_cost_usd, "cost_usd": c.cost_usd,
        }));
    }
    let ended = runs.iter().all(|r| matches!(r.state, RunState::Done | RunState::Failed | RunState::Cancelled));
    let line = budget_line(&budget, limits.0, limits.1);
    let json = serde_json::json!({
        "sweep": sweep.name, "runs": rows, "budget": {
            "spent_usd": budget.spent_usd, "running_usd": budget.running_usd,
            "spent_tokens": budget.spent_tokens, "running_tokens": budget.running_tokens,
            "budget_usd": limits.0, "max_trained_tokens": limits.1,
        }
    });
    Ok((format!("sweep `{}` ({}, {})\n{t}\n{line}", sweep.name, sweep.provider, sweep.base_model), json, ended))
}

/// A run's progress as `status` shows it: `done`, or its job's epoch (of the run's epochs), step
/// and latest training loss from its metric rows, or `-` before its first.
fn progress_text(state: RunState, n_epochs: Option<u32>, progress: Option<RunProgress>) -> String {
    match (state, progress) {
        (RunState::Done, _) => "done".to_string(),
        (_, Some(p)) => {
            let mut parts = Vec::new();
            if p.epoch > 0 {
                parts.push(format!("epoch {}/{}", p.epoch, show(n_epochs)));
            }
            parts.push(format!("step {}", p.step));
            if let Some(l) = p.train_loss {
                parts.push(format!("loss {l:.3}"));
            }
            parts.join(" ")
        }
        _ => "-".to_string(),
    }
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

pub(super) fn format_age(secs: f64) -> String {
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
