//! `ftsweep run`: plan, train, evaluate, record, then print the ranked table.
//! Running it again resumes: finished runs are not trained again.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Cli, ExitStatus, UsageError, leaderboard, open_store, sweepfile};
use crate::plan::show;
use crate::provider::Provider;
use crate::provider::local::LocalProvider;
use crate::provider::openai::client::{Client, ClientConfig, Secret};
use crate::provider::openai::{OpenAiProvider, PollPolicy};
use crate::report::{self, PlanRow};
use crate::spec::{OpenAiSettings, ProviderKind};
use crate::store::{Budget, BudgetState, NewSweep, SharedStore};
use crate::sweep::{self, Progress, RunOptions, SweepContext};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file.
    pub sweep: PathBuf,
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// The flags of the commands that launch runs: `run` and `resume`.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    /// Do not ask for confirmation before spending.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the final leaderboard as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// On Ctrl-C, cancel the running jobs at the provider (by default they
    /// keep running, and the next `run` or `resume` follows them).
    #[arg(long)]
    pub cancel_on_interrupt: bool,
}

/// Builds the OpenAI-protocol provider from the sweep's settings and the
/// environment: `OPENAI_BASE_URL` overrides the base URL; the key is read from
/// the variable the sweep names, and goes nowhere but the request headers.
pub fn openai_provider(settings: &OpenAiSettings, store: SharedStore) -> Result<OpenAiProvider> {
    let base_url = sweepfile::server_url(settings)?;
    let key = std::env::var(&settings.api_key_env).ok().filter(|k| !k.trim().is_empty()).ok_or_else(|| UsageError {
        message: format!("the environment variable `{}` is not set", settings.api_key_env),
        hint: format!(
            "export {}=... with the server's API key (the sweep's [openai] api_key_env names the variable)",
            settings.api_key_env
        ),
    })?;
    let mut cfg = ClientConfig::new(&base_url, Secret::new(key), &settings.api_key_env, settings.auth.clone());
    cfg.organization = settings.organization.clone();
    cfg.project = settings.project.clone();
    let client = Client::new(cfg)?;
    Ok(OpenAiProvider::new(client, store, PollPolicy::default()))
}

/// Asks before spending more than the sweep's threshold; a run that cannot
/// ask (no terminal) refuses unless `--yes`.
fn confirm_spend(args: &LaunchArgs, loaded: &sweepfile::LoadedSweep, rows: &[PlanRow]) -> Result<()> {
    let pending: Vec<_> = rows.iter().filter(|r| r.to_train).collect();
    // Later rungs of successive halving are planned during the sweep; their cost counts now.
    let later: Option<f64> = super::plan::later_rungs(loaded).iter().map(|r| r.estimated_training_cost_usd).sum();
    let later = match super::plan::replicates_estimate(loaded) {
        Some((_, _, usd)) => later.zip(usd).map(|(a, b)| a + b),
        None => later,
    };
    let cost: Option<f64> =
        pending.iter().map(|r| r.estimated_cost_usd).sum::<Option<f64>>().zip(later).map(|(a, b)| a + b);
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
    // Every check happens before the database is opened: bad input writes nothing.
    let loaded = sweepfile::load(&args.sweep)?;
    execute(cli, &args.launch, loaded)
}

/// Records, trains, evaluates and prints a loaded sweep; `run` and `resume`.
pub fn execute(cli: &Cli, args: &LaunchArgs, loaded: sweepfile::LoadedSweep) -> Result<ExitStatus> {
    let started = Instant::now();
    let rows = super::plan::rows(cli, &loaded)?;
    confirm_spend(args, &loaded, &rows)?;
    let s = &loaded.sweep;
    if (s.limits.budget_usd.is_some()) && loaded.price.is_none() {
        return Err(UsageError {
            message: format!("`budget_usd` needs a price for `{}`, and none is known", s.base_model),
            hint: "add a [pricing] table to the sweep file (USD per million tokens)".into(),
        }
        .into());
    }
    let estimates: HashMap<String, (u64, f64)> = rows
        .into_iter()
        .map(|r| (r.run_id, (r.estimated_trained_tokens, r.estimated_training_cost_usd.unwrap_or(0.0))))
        .collect();
    let store = open_store(&cli.db)?;
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

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let provider = match s.provider {
        ProviderKind::Local => Provider::Local(
            // Validating four times an epoch lets early stopping act within an epoch.
            LocalProvider::new(Arc::new(store.clone()))
                .with_validations_per_epoch(crate::provider::local::VALIDATIONS_PER_EPOCH)
                .for_sweep(s),
        ),
        ProviderKind::OpenAi => Provider::OpenAi(openai_provider(&s.openai, store.clone())?),
    };
    let cx = Arc::new(SweepContext {
        sweep_name: s.name.clone(),
        store: store.clone(),
        provider: Arc::new(provider),
        base_model: s.base_model.clone(),
        training: loaded.training.clone(),
        validation: loaded.validation.clone(),
        metric: s.evaluation.metric,
        eval: Arc::new(crate::eval::Session::new(&s.evaluation, &loaded.path)),
        spec: Arc::new(s.clone()),
        identity: loaded.identity.clone(),
        max_concurrent: s.limits.max_concurrent,
        options: RunOptions {
            sweep_id: record.id,
            owner: sweep::owner_id(),
            lease: Duration::from_secs(60),
            budget: Budget { usd: s.limits.budget_usd, tokens: s.limits.max_trained_tokens },
            retries: s.limits.retries,
            cancel_on_interrupt: args.cancel_on_interrupt,
            shutdown: shutdown_rx,
            estimates,
            price: loaded.price,
            daily_limit_wait: Duration::from_secs(3600),
            epoch_estimate: {
                let one = crate::pricing::estimate(Some(1), &super::plan::figures(&loaded), loaded.price);
                (one.trained_tokens, one.training_usd.unwrap_or(0.0))
            },
            auto_epochs: crate::data::stats::default_epochs(loaded.training_report.examples as u64),
        },
    });
    // Runs planned as the sweep goes (rungs, replicates) are numbered after these.
    let positions: Mutex<HashMap<String, usize>> =
        Mutex::new(runs.iter().enumerate().map(|(i, r)| (r.run_id.clone(), i + 1)).collect());
    let total = runs.len();
    let verbose = cli.verbose;
    let metric = s.evaluation.metric.as_str();
    let printer = Mutex::new(());
    let progress = Arc::new(move |p: Progress| {
        let _line = printer.lock();
        let mut positions = positions.lock().unwrap_or_else(|p| p.into_inner());
        if let Progress::Planned { run_ids, .. } = &p {
            for id in run_ids {
                let next = positions.len() + 1;
                positions.entry(id.clone()).or_insert(next);
            }
        }
        let at = |id: &str| {
            format!(
                "[{:>width$}/{}] {id}",
                positions.get(id).copied().unwrap_or(0),
                positions.len().max(total),
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
            Progress::Skipped { run_id, reason } => eprintln!("{} SKIPPED   {reason}", at(&run_id)),
            Progress::Queued { run_id, reason, wait } => {
                eprintln!("{} queued    {reason}; next try in {:.0}s", at(&run_id), wait.as_secs_f64())
            }
            Progress::Waiting { runs, owner } => {
                eprintln!("sweep: waiting for {runs} run(s) being trained by another process ({owner})")
            }
            Progress::Interrupted { run_id, note } => eprintln!("{} stopped   {note}", at(&run_id)),
            Progress::Stopped { run_id, reason, trained_tokens, model } => eprintln!(
                "{} STOPPED   early after {trained_tokens} trained tokens: {reason}; {}",
                at(&run_id),
                model.map_or("no checkpoint to evaluate".to_string(), |m| format!(
                    "its best checkpoint {m} is the model"
                ))
            ),
            Progress::Planned { note, .. } => eprintln!("sweep: {note}"),
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = runtime.block_on(async {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: no new launches; recording the runs in flight");
                let _ = shutdown_tx.send(true);
            }
        });
        sweep::run_sweep(cx.clone(), progress).await
    })?;
    // The training threads of interrupted local jobs are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Provider::OpenAi(p) = cx.provider.as_ref() {
        let counts = p.client.counts.snapshot();
        let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("requests to {}: total={} {}", p.client.base_url(), p.client.counts.total(), list.join(" "));
    }
    eprintln!("evaluation: {}", cx.eval.counts.snapshot());
    let budget = store.lock().budget_state(record.id)?;
    eprintln!("{}", budget_line(&budget, s.limits.budget_usd, s.limits.max_trained_tokens));
    eprintln!(
        "sweep `{}`: {} trained ({} stopped early), {} evaluated, {} reused, {} failed, {} skipped, {} interrupted in {:.1}s (database: {})",
        s.name,
        summary.trained,
        summary.stopped,
        summary.evaluated,
        summary.reused,
        summary.failed,
        summary.skipped,
        summary.interrupted,
        started.elapsed().as_secs_f64(),
        cli.db.display()
    );
    leaderboard::print(&store, &record, args.json)?;
    Ok(if summary.interrupted > 0 {
        ExitStatus::Interrupted
    } else if summary.failed > 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// The budget as `status` and `run` show it.
pub fn budget_line(b: &BudgetState, usd: Option<f64>, tokens: Option<u64>) -> String {
    let mut line = format!(
        "budget: ${:.2} spent and ${:.2} committed to running jobs; {} trained tokens (+{} running)",
        b.spent_usd, b.running_usd, b.spent_tokens, b.running_tokens
    );
    if let Some(u) = usd {
        line.push_str(&format!("; budget ${u:.2}, ${:.2} left", (u - b.spent_usd - b.running_usd).max(0.0)));
    }
    if let Some(t) = tokens {
        line.push_str(&format!("; max_trained_tokens {t}"));
    }
    line
}
