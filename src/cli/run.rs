//! `ftsweep run`: plan, train, evaluate, record, then print the ranked table.
//! Running it again resumes: finished runs are not trained again.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;

use super::{Cli, ExitStatus, UsageError, leaderboard, open_store, sweepfile};
use crate::plan::show;
use crate::provider::Provider;
use crate::provider::local::LocalProvider;
use crate::report;
use crate::spec::ProviderKind;
use crate::store::NewSweep;
use crate::sweep::{self, Progress, SweepContext};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file.
    pub sweep: PathBuf,
    /// Do not ask for confirmation before spending.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the final leaderboard as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Asks before spending more than the sweep's threshold; a run that cannot
/// ask (no terminal) refuses unless `--yes`.
fn confirm_spend(cli: &Cli, args: &Args, loaded: &sweepfile::LoadedSweep) -> Result<()> {
    let rows = super::plan::rows(cli, loaded)?;
    let pending: Vec<_> = rows.iter().filter(|r| r.to_train).collect();
    let cost: Option<f64> = pending.iter().map(|r| r.estimated_cost_usd).sum();
    let threshold = loaded.sweep.limits.confirm_above_usd;
    let over = match cost {
        Some(c) => c > threshold,
        // Unknown prices on a paid provider: ask, as for a large amount.
        None => loaded.sweep.provider != ProviderKind::Local,
    };
    if !over || args.yes || pending.is_empty() {
        return Ok(());
    }
    let amount = report::format_usd(cost);
    let question = format!(
        "{} runs to train, estimated {amount} (above the confirmation threshold of ${threshold:.2})",
        pending.len()
    );
    if !std::io::stdin().is_terminal() {
        return Err(UsageError {
            message: format!("refusing to spend without confirmation: {question}"),
            hint: "check `ftsweep plan`, then pass --yes (or raise [limits] confirm_above_usd)".into(),
        }
        .into());
    }
    eprint!("{question}. Go ahead? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(UsageError {
            message: "not confirmed: nothing was launched".into(),
            hint: "pass --yes to skip the question".into(),
        }
        .into())
    }
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let started = Instant::now();
    // Every check happens before the database is opened: bad input writes nothing.
    let loaded = sweepfile::load(&args.sweep)?;
    confirm_spend(cli, args, &loaded)?;
    let store = open_store(&cli.db)?;
    let s = &loaded.sweep;
    let record = store.lock().record_sweep(
        &NewSweep {
            name: &s.name,
            spec_path: &loaded.path.display().to_string(),
            spec_toml: &loaded.text,
            provider: s.provider.as_str(),
            base_model: &s.base_model,
            training_file: &s.training_file.display().to_string(),
            training_sha256: &loaded.training.sha256,
            validation_file: &s.validation_file.display().to_string(),
            validation_sha256: &loaded.validation.sha256,
            metric: s.evaluation.metric.as_str(),
        },
        &loaded.runs,
    )?;
    let runs = store.lock().sweep_runs(record.id)?;

    let provider = match s.provider {
        ProviderKind::Local => Provider::Local(LocalProvider::new(Arc::new(store.clone()))),
        ProviderKind::OpenAi => {
            return Err(UsageError {
                message: "`run` cannot use the `openai` provider yet".into(),
                hint: "`plan` works with it (to estimate the cost); use `provider = \"local\"` to run".into(),
            }
            .into());
        }
    };
    let cx = Arc::new(SweepContext {
        store: store.clone(),
        provider: Arc::new(provider),
        base_model: s.base_model.clone(),
        training: loaded.training.clone(),
        validation: loaded.validation.clone(),
        metric: s.evaluation.metric,
        max_concurrent: s.limits.max_concurrent,
    });
    let positions: HashMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.run_id.clone(), i + 1)).collect();
    let total = runs.len();
    let verbose = cli.verbose;
    let metric = s.evaluation.metric.as_str();
    let printer = Mutex::new(());
    let progress = Arc::new(move |p: Progress| {
        let _line = printer.lock();
        let at = |id: &str| {
            format!(
                "[{:>width$}/{total}] {id}",
                positions.get(id).copied().unwrap_or(0),
                width = total.to_string().len()
            )
        };
        match p {
            Progress::Started { total, to_train, to_evaluate, done } => {
                if to_train + to_evaluate == 0 {
                    eprintln!("sweep: all {total} runs are done already; nothing new to train");
                } else {
                    eprintln!(
                        "sweep: {total} runs: {to_train} to train, {to_evaluate} to evaluate, {done} done already"
                    );
                }
            }
            Progress::Training { run_id, config, job_id } => eprintln!(
                "{} training  n_epochs={} lr_mult={} batch={} seed={} ({job_id})",
                at(&run_id),
                show(config.n_epochs),
                show(config.learning_rate_multiplier),
                show(config.batch_size),
                config.seed
            ),
            Progress::Epoch { run_id, epoch, n_epochs, valid_loss } if verbose => {
                eprintln!(
                    "{} epoch {epoch}/{} valid_loss={}",
                    at(&run_id),
                    show(n_epochs),
                    valid_loss.map_or("-".into(), |l| format!("{l:.4}"))
                );
            }
            Progress::Epoch { .. } => {}
            Progress::Evaluating { run_id, model } if verbose => eprintln!("{} evaluating {model}", at(&run_id)),
            Progress::Evaluating { .. } => {}
            Progress::Done { run_id, score, valid_loss, seconds } => eprintln!(
                "{} done      {metric}={score:.3} valid_loss={} (eval {seconds:.2}s)",
                at(&run_id),
                valid_loss.map_or("-".into(), |l| format!("{l:.3}"))
            ),
            Progress::Failed { run_id, reason } => eprintln!("{} FAILED    {reason}", at(&run_id)),
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = runtime.block_on(sweep::run(cx, runs, progress))?;
    eprintln!(
        "sweep `{}`: {} trained, {} evaluated, {} reused, {} failed in {:.1}s (database: {})",
        s.name,
        summary.trained,
        summary.evaluated,
        summary.reused,
        summary.failed,
        started.elapsed().as_secs_f64(),
        cli.db.display()
    );
    leaderboard::print(&store, &record, args.json)?;
    Ok(if summary.failed > 0 { ExitStatus::Failure } else { ExitStatus::Success })
}
