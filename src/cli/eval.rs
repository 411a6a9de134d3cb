//! `ftsweep eval --model ID`: evaluates any model (a base model, an older
//! fine-tune) on a data file with a sweep's graders, through the predictions
//! cache, and records it so that `leaderboard`, `compare` and `promote` see it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;

use super::leaderboard::Board;
use super::out::{errln, outln};
use super::{Cli, ExitStatus, UsageError, open_store, open_sweep_for_writing};
use crate::data;
use crate::eval::runner::{self, Target};
use crate::eval::scores::Grades;
use crate::eval::{EvalError, Session};
use crate::provider::Provider;
use crate::provider::local::LocalProvider;
use crate::rank;
use crate::report::LeaderboardRow;
use crate::run::EvalKind;
use crate::spec::{self, Evaluation, ProviderKind, Sweep};
use crate::store::{SharedStore, SweepRecord};

#[derive(Debug, clap::Args)]
#[command(override_usage = "ftsweep eval --model ID --data FILE [--json]\n       \
                            ftsweep eval --model ID --sweep NAME [--data FILE] [--json]")]
pub struct Args {
    /// The model to evaluate: any model id the provider answers for.
    #[arg(long)]
    pub model: String,
    /// The chat JSONL file to evaluate on: required without --sweep; with it, the default is the
    /// sweep's validation file.
    #[arg(long, required_unless_present = "sweep")]
    pub data: Option<PathBuf>,
    /// Use this sweep's provider and graders, and show the model in its leaderboard.
    /// Without it: the local provider and exact match.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, record) = match &args.sweep {
        Some(name) => {
            let (store, record) = open_sweep_for_writing(&cli.db, name)?;
            (store, Some(record))
        }
        None => (open_store(&cli.db)?, None),
    };
    let (sweep, spec_path) = recorded_sweep(&store, record.as_ref())?;
    let data_path = data_path(args, record.as_ref())?;
    let file = data::read_chat_file(&data_path)?;
    if let Some(r) = record.as_ref().filter(|r| args.data.is_none() && r.validation_sha256 != file.sha256) {
        errln!(
            "warning: `{}` changed since sweep `{}` was recorded: the model will not be comparable with its runs",
            data_path.display(),
            r.name
        )?;
    }
    let evaluation = sweep.as_ref().map(|s| s.evaluation.clone()).unwrap_or_default();
    crate::eval::config::check_references(&evaluation, &file)?;
    let provider = match sweep.as_ref() {
        None => Provider::Local(LocalProvider::new(Arc::new(store.clone()))),
        Some(s) => match s.provider {
            ProviderKind::Local => Provider::Local(LocalProvider::new(Arc::new(store.clone()))),
            ProviderKind::OpenAi => Provider::OpenAi(super::run::openai_provider(&s.openai, store.clone())?),
            ProviderKind::Command => Provider::Command(super::run::command_provider(s, 0)?),
            ProviderKind::Together => Provider::Together(super::hosted::together_provider(s, store.clone())?),
            ProviderKind::Azure => Provider::Azure(super::hosted::azure_provider(s, store.clone())?),
        },
    };
    if let Some(r) = record.as_ref() {
        // An Azure model is deployed for its evaluation, recorded under the sweep.
        provider.bind_sweep(r.id, &crate::sweep::owner_id());
    }
    let provider = Arc::new(provider);
    let session = Arc::new(Session::new(&evaluation, &spec_path));
    let target = Target {
        model: &args.model,
        data: &file,
        kind: EvalKind::Model,
        run_id: None,
        epoch: None,
        sweep_id: record.as_ref().map(|r| r.id),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = match runtime.block_on(runner::evaluate(&store, &provider, &session, &target)) {
        Ok(o) => o,
        Err(EvalError::Store(e)) => return Err(e.into()),
        Err(e) => anyhow::bail!("{e}"),
    };
    let counts = session.counts.snapshot();
    errln!("eval `{}` on {} ({} examples): {counts}", args.model, data_path.display(), outcome.examples.len())?;
    if let Some(f) = session.first_failure() {
        errln!("warning: {} examples left ungraded; the first: {f}", counts.grader_failures)?;
    }

    let scores = score_rows(&evaluation, &outcome.grades);
    // Where the model stands in the sweep, when it was evaluated on the sweep's data.
    let row = match &record {
        Some(r) if r.validation_sha256 == file.sha256 => {
            let board = Board::load(&store, r, None)?;
            board.find(&args.model).ok().map(|i| board.rows().swap_remove(i))
        }
        _ => None,
    };
    if args.json {
        let out = json!({
            "model": args.model,
            "data_file": data_path.display().to_string(),
            "data_sha256": file.sha256,
            "n_examples": outcome.examples.len(),
            "metric": evaluation.metric.as_str(),
            "scores": scores,
            "counts": counts,
            "sweep": record.as_ref().map(|r| r.name.clone()),
            "leaderboard_row": row,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(ExitStatus::Success);
    }
    outln!("{}", score_table(&scores))?;
    if let Some(row) = row {
        let name = record.as_ref().map_or("", |r| &r.name);
        errln!("in sweep `{name}`: {}; see `ftsweep leaderboard {name}`", standing(row))?;
    }
    Ok(ExitStatus::Success)
}

/// The recorded sweep's parsed file and its path; without a sweep, none and `sweep.toml`.
fn recorded_sweep(store: &SharedStore, record: Option<&SweepRecord>) -> Result<(Option<Sweep>, PathBuf)> {
    let Some(r) = record else { return Ok((None, PathBuf::from("sweep.toml"))) };
    let (path, text) = store.lock().sweep_spec(r.id)?.unwrap_or_default();
    let parsed = spec::parse(Path::new(&path), &text).map_err(|e| UsageError {
        message: format!("the sweep file recorded for `{}` no longer parses: {e}", r.name),
        hint: "run the sweep again with `ftsweep run SWEEP.toml` to record it anew".into(),
    })?;
    Ok((Some(parsed), PathBuf::from(path)))
}

/// The data file: `--data`, or the sweep's validation file; it must exist.
fn data_path(args: &Args, record: Option<&SweepRecord>) -> Result<PathBuf> {
    let data_path = match (&args.data, record) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => PathBuf::from(&r.validation_file),
        (None, None) => unreachable!("clap requires --data without --sweep"),
    };
    if !data_path.is_file() {
        return Err(UsageError {
            message: format!("the data file `{}` does not exist", data_path.display()),
            hint: "give the chat JSONL file with --data FILE".into(),
        }
        .into());
    }
    Ok(data_path)
}

/// One JSON object per score: grader, primary or not, mean and interval.
fn score_rows(evaluation: &Evaluation, grades: &Grades) -> Vec<serde_json::Value> {
    let names = evaluation.score_names();
    names
        .iter()
        .map(|n| {
            let pass_fail = evaluation.grader(n).is_some_and(|g| g.is_pass_fail());
            let s = grades.get(n);
            let ci = s.map(|s| rank::interval(s, pass_fail));
            json!({
                "grader": n,
                "primary": n == evaluation.metric.as_str(),
                "mean": s.map(crate::stats::mean),
                "ci_low": ci.map(|c| c.0),
                "ci_high": ci.map(|c| c.1),
                "pass_fail": pass_fail,
            })
        })
        .collect()
}

/// The scores as a table: grader, mean, 95% interval, and which is primary.
fn score_table(scores: &[serde_json::Value]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["grader", "mean", "95% CI", ""]);
    for s in scores {
        let num = |k: &str| s[k].as_f64().map_or("-".into(), |v| format!("{v:.3}"));
        t.add_row(vec![
            s["grader"].as_str().unwrap_or_default().to_string(),
            num("mean"),
            if s["ci_low"].is_null() { "-".into() } else { format!("[{}, {}]", num("ci_low"), num("ci_high")) },
            if s["primary"] == true { "primary".into() } else { String::new() },
        ]);
    }
    t
}

/// Where the model stands against the sweep's leader.
fn standing(row: LeaderboardRow) -> String {
    match (row.is_leader, row.tied_with_best, row.p_value, row.diff_from_leader) {
        (true, _, _, _) => "it leads the sweep".to_string(),
        (_, true, Some(p), _) => {
            format!(
                "not significantly different from the sweep's leader ({} p = {p:.3}), which does not show it is as \
                 good",
                row.test.unwrap_or_default()
            )
        }
        (_, false, Some(p), Some(d)) => format!(
            "significantly {} the sweep's leader by {:.3} ({} p = {p:.4})",
            if d > 0.0 { "above" } else { "below" },
            d.abs(),
            row.test.unwrap_or_default()
        ),
        _ => "not compared with the sweep's leader (no run has finished)".to_string(),
    }
}
