//! `ftsweep run`: plan, train, evaluate, record, then print the ranked table.
//! Running it again resumes: finished runs are not trained again.

use std::collections::HashMap;
use std::env::VarError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::out::errln;
use super::{Cli, ExitStatus, Signal, UsageError, leaderboard, open_store, sweepfile};
use crate::provider::Provider;
use crate::provider::command::CommandProvider;
use crate::provider::local::LocalProvider;
use crate::provider::openai::client::{Client, ClientConfig, Secret};
use crate::provider::openai::{OpenAiProvider, PollPolicy};
use crate::report::{self, PlanRow};
use crate::run::{RunRecord, show};
use crate::spec::{CommandSettings, OpenAiSettings, ProviderKind, Sweep};
use crate::store::{Budget, BudgetState, NewSweep, SharedStore, SweepRecord};
use crate::sweep::{self, Progress, RunOptions, Summary, SweepContext};

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

/// The API key, from the environment variable the sweep names: set, UTF-8, and made only of
/// characters an HTTP header can carry. The errors name the variable, never the value.
pub fn api_key(settings: &OpenAiSettings) -> Result<Secret> {
    let var = &settings.api_key_env;
    read_api_key(var)?.ok_or_else(|| {
        UsageError {
            message: format!("the environment variable `{var}` is not set"),
            hint: format!(
                "export {var}=... with the server's API key (the sweep's [openai] api_key_env names the variable)"
            ),
        }
        .into()
    })
}

/// The key in the variable `var`: `None` when it is unset or empty, an error when it is set but
/// cannot be a key.
pub fn read_api_key(var: &str) -> Result<Option<Secret>> {
    let bad = |what: String| UsageError {
        message: format!("the environment variable `{var}` {what}, so it cannot be sent as an API key"),
        hint: format!(
            "set {var} to the key alone, without quotes, spaces or line breaks (e.g. export {var}=\"$(tr -d ' \\r\\n' < key.txt)\")"
        ),
    };
    let value = match std::env::var(var) {
        Ok(v) => v,
        Err(VarError::NotPresent) => return Ok(None),
        Err(VarError::NotUnicode(_)) => return Err(bad("is not valid UTF-8".into()).into()),
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    // HTTP header values cannot carry CR, LF or other control bytes; keys are printable ASCII.
    if let Some((i, c)) = value.chars().enumerate().find(|(_, c)| !c.is_ascii_graphic()) {
        let what = match c {
            '\r' | '\n' => "a line break (CR or LF)",
            c if c.is_whitespace() => "white space",
            c if c.is_control() => "a control character",
            _ => "a character that is not ASCII",
        };
        return Err(bad(format!("holds {what} at character {} of its value", i + 1)).into());
    }
    Ok(Some(Secret::new(value)))
}

/// The client for an OpenAI-protocol server: `OPENAI_BASE_URL` overrides the sweep's base URL;
/// the key goes nowhere but the request headers.
pub fn openai_client(settings: &OpenAiSettings, key: Secret) -> Result<Client> {
    let base_url = sweepfile::server_url(settings)?;
    let mut cfg = ClientConfig::new(&base_url, key, &settings.api_key_env, settings.auth.clone());
    cfg.organization = settings.organization.clone();
    cfg.project = settings.project.clone();
    Ok(Client::new(cfg)?)
}

/// Builds the OpenAI-protocol provider from the sweep's settings and the environment.
pub fn openai_provider(settings: &OpenAiSettings, store: SharedStore) -> Result<OpenAiProvider> {
    let client = openai_client(settings, api_key(settings)?)?;
    Ok(OpenAiProvider::new(client, store, PollPolicy::default()))
}

/// Asks before spending more than the sweep's threshold; a run that cannot
/// ask (no terminal) refuses unless `--yes`.
fn confirm_spend(args: &LaunchArgs, loaded: &sweepfile::LoadedSweep, rows: &[PlanRow]) -> Result<()> {
    let pending: Vec<_> = rows.iter().filter(|r| r.to_train).collect();
    // Later rungs of successive halving are planned during the sweep; their cost counts now.
    let later: Option<f64> = super::plan::later_rungs(loaded, rows).iter().map(|r| r.estimated_training_cost_usd).sum();
    let later = match super::plan::replicates_estimate(loaded, rows) {
        Some((_, _, usd)) => later.zip(usd).map(|(a, b)| a + b),
        None => later,
    };
    let cost: Option<f64> =
        pending.iter().map(|r| r.estimated_cost_usd).sum::<Option<f64>>().zip(later).map(|(a, b)| a + b);
    let threshold = loaded.sweep.limits.confirm_above_usd;
    let over = match cost {
        Some(c) => c > threshold,
        // Unknown prices on a paid provider: ask, as for a large amount. A
        // trainer command runs on the user's own hardware: no USD to confirm.
        None => matches!(loaded.sweep.provider, ProviderKind::OpenAi | ProviderKind::Together | ProviderKind::Azure),
    };
    if !over || args.yes || pending.is_empty() {
        return Ok(());
    }
    let amount = report::format_usd(cost);
    let question = format!(
        "{} runs to train, estimated {amount} (above the confirmation threshold of ${threshold:.2})",
        pending.len()
    );
    super::confirm_on_terminal(
        &format!("{question}. Go ahead?"),
        UsageError {
            message: format!("refusing to spend without confirmation: {question}"),
            hint: "check `ftsweep plan`, then pass --yes (or raise [limits] confirm_above_usd)".into(),
        },
        "not confirmed: nothing was launched",
    )
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    // Every check happens before the database is opened: bad input writes nothing.
    let loaded = sweepfile::load(&args.sweep)?;
    execute(cli, &args.launch, loaded)
}

/// Records, trains, evaluates and prints a loaded sweep; `run` and `resume`.
pub fn execute(cli: &Cli, args: &LaunchArgs, loaded: sweepfile::LoadedSweep) -> Result<ExitStatus> {
    // Everything is checked, then the user is asked, then the database is written.
    let started = Instant::now();
    super::plan::warn_local_coverage(&loaded)?;
    let rows = super::plan::rows(cli, &loaded)?;
    let client = check_before_asking(&loaded)?;
    confirm_spend(args, &loaded, &rows)?;
    let estimates: HashMap<String, (u64, f64)> = rows
        .into_iter()
        .map(|r| (r.run_id, (r.estimated_trained_tokens, r.estimated_training_cost_usd.unwrap_or(0.0))))
        .collect();
    let store = open_store(&cli.db)?;
    let (record, runs) = record(&store, &loaded)?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let options = RunOptions {
        sweep_id: record.id,
        owner: sweep::owner_id(),
        lease: Duration::from_secs(60),
        budget: Budget { usd: loaded.sweep.limits.budget_usd, tokens: loaded.sweep.limits.max_trained_tokens },
        retries: loaded.sweep.limits.retries,
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
    };
    let owner = options.owner.clone();
    let cx = context(&loaded, &store, client, options)?;
    cx.provider.bind_sweep(record.id, &owner);
    // A progress line that cannot be written stops the sweep as Ctrl-C does: nothing new is
    // launched, the runs in flight are recorded, and the exit code is 1.
    // On a terminal, the live display too: the lines print above it.
    let live = super::live::wanted().then(|| super::live::Live::start(cx.clone(), &runs, shutdown_tx.clone()));
    let _cleared = Cleared(live.clone());
    let metric = loaded.sweep.evaluation.metric.as_str();
    let progress = progress_printer(&runs, cli.verbose, metric, shutdown_tx.clone(), live.clone());
    let (summary, signalled) = sweep_until_done(cx.clone(), progress, shutdown_tx)?;
    drop(_cleared);
    print_counts(cli, &cx, &store, &record, &summary, started)?;
    leaderboard::print(&store, &record, args.json)?;
    Ok(if signalled == Some(Signal::Terminate) {
        ExitStatus::Terminated
    } else if signalled.is_some() || summary.interrupted > 0 {
        ExitStatus::Interrupted
    } else if summary.failed > 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// Who trains a sweep's runs, made before anything is written.
enum Backend {
    Local,
    OpenAi(Client),
    Command(CommandProvider),
    /// Checked before anything is written; the provider is made once the store is open.
    Together,
    Azure,
}

/// The checks before the user is asked or anything is written: a price for the budget, and for
/// an OpenAI-protocol sweep the key and its client; for a command sweep its provider.
fn check_before_asking(loaded: &sweepfile::LoadedSweep) -> Result<Backend> {
    let s = &loaded.sweep;
    if (s.limits.budget_usd.is_some()) && loaded.price.is_none() {
        return Err(UsageError {
            message: format!("`budget_usd` needs a price for `{}`, and none is known", s.base_model),
            hint: "add a [pricing] table to the sweep file (USD per million tokens)".into(),
        }
        .into());
    }
    Ok(match s.provider {
        ProviderKind::Local => Backend::Local,
        ProviderKind::OpenAi => Backend::OpenAi(openai_client(&s.openai, api_key(&s.openai)?)?),
        ProviderKind::Command => Backend::Command(command_provider(s, crate::data::file_tokens(&loaded.training))?),
        ProviderKind::Together => {
            super::hosted::check_together(s)?;
            Backend::Together
        }
        ProviderKind::Azure => {
            super::hosted::check_azure(s)?;
            Backend::Azure
        }
    })
}

/// The `[command]` settings of a command sweep, or a usage error (a sweep without them was not
/// parsed as one).
fn command_settings(sweep: &Sweep) -> Result<&CommandSettings> {
    sweep.command.as_ref().ok_or_else(|| {
        UsageError {
            message: format!("sweep `{}` has `provider = \"command\"` but no [command] table", sweep.name),
            hint: "add a [command] table with `train`, `output_root` and `inference_url`".into(),
        }
        .into()
    })
}

/// The provider of a command sweep: its engine and its inference server (with the key from the
/// variable `inference_api_key_env` names, if it names one); `training_tokens` is what an epoch trains.
pub fn command_provider(sweep: &Sweep, training_tokens: u64) -> Result<CommandProvider> {
    let settings = command_settings(sweep)?;
    let key = match &settings.inference_api_key_env {
        None => None,
        Some(var) => Some(read_api_key(var)?.ok_or_else(|| UsageError {
            message: format!("the environment variable `{var}` is not set"),
            hint: format!(
                "export {var}=... with the inference server's key (the sweep's [command] inference_api_key_env names the variable)"
            ),
        })?),
    };
    let key = key.map(|k| crate::provider::command::infer::Key::new(k.reveal().to_string()));
    CommandProvider::new(settings, &sweep.name, &sweep.base_model, key, training_tokens).map_err(|e| {
        UsageError { message: e.to_string(), hint: "check the sweep's [command] and [engine] tables".into() }.into()
    })
}

/// Records the sweep and its planned runs (adopting runs stored under older ids); returns the
/// sweep's record and its runs.
fn record(store: &SharedStore, loaded: &sweepfile::LoadedSweep) -> Result<(SweepRecord, Vec<RunRecord>)> {
    let s = &loaded.sweep;
    let planned = crate::sweep::adopt_stored(&store.lock(), s, &loaded.identity, loaded.runs.clone())?;
    let planned = crate::sweep::with_decided(&store.lock(), s, &loaded.text, planned)?;
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
        &planned,
    )?;
    let runs = store.lock().sweep_runs(record.id)?;
    Ok((record, runs))
}

/// The sweep's context: its provider (`backend`), data,
/// evaluation session, limits and `options`.
fn context(
    loaded: &sweepfile::LoadedSweep,
    store: &SharedStore,
    backend: Backend,
    options: RunOptions,
) -> Result<Arc<SweepContext>> {
    let s = &loaded.sweep;
    let provider = match backend {
        Backend::Local => Provider::Local(
            // Validating four times an epoch lets early stopping act within an epoch.
            LocalProvider::new(Arc::new(store.clone()))
                .with_validations_per_epoch(crate::provider::local::VALIDATIONS_PER_EPOCH)
                .for_sweep(s),
        ),
        Backend::OpenAi(client) => Provider::OpenAi(OpenAiProvider::new(client, store.clone(), PollPolicy::default())),
        Backend::Command(p) => Provider::Command(p),
        Backend::Together => Provider::Together(super::hosted::together_provider(s, store.clone())?),
        Backend::Azure => Provider::Azure(super::hosted::azure_provider(s, store.clone())?),
    };
    Ok(Arc::new(SweepContext {
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
        options,
    }))
}

/// Clears the live display when the sweep ends, also on an error.
struct Cleared(Option<Arc<super::live::Live>>);

impl Drop for Cleared {
    fn drop(&mut self) {
        if let Some(live) = self.0.take() {
            live.finish();
        }
    }
}

/// Prints each progress event as a line on stderr, numbered by the run's place in `runs` (runs
/// planned as the sweep goes after these), and gives it to the live display if there is one; a
/// line that cannot be written sends `stop`.
fn progress_printer(
    runs: &[RunRecord],
    verbose: bool,
    metric: &'static str,
    stop: tokio::sync::watch::Sender<bool>,
    live: Option<Arc<super::live::Live>>,
) -> Arc<dyn Fn(Progress) + Send + Sync> {
    // Runs planned as the sweep goes (rungs, replicates) are numbered after these.
    let positions: Mutex<HashMap<String, usize>> =
        Mutex::new(runs.iter().enumerate().map(|(i, r)| (r.run_id.clone(), i + 1)).collect());
    let total = runs.len();
    let printer = Mutex::new(());
    Arc::new(move |p: Progress| {
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
        if let (Some(live), Some(id)) = (&live, run_of(&p)) {
            live.event(&p, &at(id));
        } else if let Some(live) = &live {
            live.event(&p, "");
        }
        if let Some(line) = progress_line(p, at, verbose, metric)
            && errln!("{line}").is_err()
        {
            let _ = stop.send(true);
        }
    })
}

/// The line a progress event prints, if any; `at` names a run with its place.
fn progress_line(p: Progress, at: impl Fn(&str) -> String, verbose: bool, metric: &str) -> Option<String> {
    match p {
        Progress::Started { total, to_train, to_evaluate, done } => Some(if to_train + to_evaluate == 0 {
            format!("sweep: all {total} runs are done already; nothing new to train")
        } else {
            format!("sweep: {total} runs: {to_train} to train, {to_evaluate} to evaluate, {done} done already")
        }),
        Progress::Training { run_id, config, job_id } => {
            Some(format!("{} training  {} ({job_id})", at(&run_id), config.summary()))
        }
        Progress::Epoch { run_id, epoch, n_epochs, valid_loss } if verbose => Some(format!(
            "{} epoch {epoch}/{} valid_loss={}",
            at(&run_id),
            show(n_epochs),
            valid_loss.map_or("-".into(), |l| format!("{l:.4}"))
        )),
        Progress::Epoch { .. } | Progress::Step { .. } => None,
        Progress::Evaluating { run_id, model } if verbose => Some(format!("{} evaluating {model}", at(&run_id))),
        Progress::Evaluating { .. } => None,
        Progress::Done { run_id, score, valid_loss, seconds } => Some(format!(
            "{} done      {metric}={score:.3} valid_loss={} (eval {seconds:.2}s)",
            at(&run_id),
            valid_loss.map_or("-".into(), |l| format!("{l:.3}"))
        )),
        Progress::Failed { run_id, reason } => Some(format!("{} FAILED    {reason}", at(&run_id))),
        Progress::Skipped { run_id, reason } => Some(format!("{} SKIPPED   {reason}", at(&run_id))),
        Progress::Queued { run_id, reason, wait } => {
            Some(format!("{} queued    {reason}; next try in {:.0}s", at(&run_id), wait.as_secs_f64()))
        }
        Progress::Waiting { runs, owner } => {
            Some(format!("sweep: waiting for {runs} run(s) being trained by another process ({owner})"))
        }
        Progress::Interrupted { run_id, note } => Some(format!("{} stopped   {note}", at(&run_id))),
        Progress::Stopped { run_id, reason, trained_tokens, model } => Some(format!(
            "{} STOPPED   early after {trained_tokens} trained tokens: {reason}; {}",
            at(&run_id),
            model.map_or("no checkpoint to evaluate".to_string(), |m| format!("its best checkpoint {m} is the model"))
        )),
        Progress::Planned { note, .. } => Some(format!("sweep: {note}")),
    }
}

/// The run an event is about, if one.
fn run_of(p: &Progress) -> Option<&str> {
    match p {
        Progress::Training { run_id, .. }
        | Progress::Epoch { run_id, .. }
        | Progress::Step { run_id, .. }
        | Progress::Evaluating { run_id, .. }
        | Progress::Done { run_id, .. }
        | Progress::Failed { run_id, .. }
        | Progress::Skipped { run_id, .. }
        | Progress::Queued { run_id, .. }
        | Progress::Interrupted { run_id, .. }
        | Progress::Stopped { run_id, .. } => Some(run_id),
        Progress::Started { .. } | Progress::Waiting { .. } | Progress::Planned { .. } => None,
    }
}

/// Runs the sweep on a tokio runtime until it ends or Ctrl-C or SIGTERM stops it (which sends
/// `shutdown`); returns its summary and the signal, if one came.
fn sweep_until_done(
    cx: Arc<SweepContext>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
    shutdown: tokio::sync::watch::Sender<bool>,
) -> Result<(Summary, Option<Signal>)> {
    // Ctrl-C and SIGTERM stop the sweep the same way; the exit code says which it was.
    let signalled = Arc::new(OnceLock::new());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = runtime.block_on(async {
        let seen = signalled.clone();
        tokio::spawn(async move {
            let signal = super::shutdown_signal().await;
            let _ = seen.set(signal);
            let what = match signal {
                Signal::Interrupt => "interrupted",
                Signal::Terminate => "terminated (SIGTERM)",
            };
            let _ = errln!("{what}: no new launches; recording the runs in flight");
            let _ = shutdown.send(true);
        });
        // Deployments a crashed process left (billed while they exist) go first.
        match cx.provider.clean_up().await {
            Ok(0) => {}
            Ok(n) => {
                let _ = errln!("sweep: deleted {n} deployment(s) that an earlier process left behind");
            }
            Err(e) => {
                let _ = errln!("warning: cannot delete the deployments an earlier process left behind: {e}");
            }
        }
        sweep::run_sweep(cx, progress).await
    })?;
    // The training threads of interrupted local jobs are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok((summary, signalled.get().copied()))
}

/// Prints the request and evaluation counts, the budget and the sweep's summary on stderr.
fn print_counts(
    cli: &Cli,
    cx: &SweepContext,
    store: &SharedStore,
    record: &SweepRecord,
    summary: &Summary,
    started: Instant,
) -> Result<()> {
    let s = &cx.spec;
    // These lines are not worth stopping for: a failed write is remembered (exit code 1), and
    // the leaderboard is still printed.
    if let Some(client) = cx.provider.client() {
        let counts = client.counts.snapshot();
        let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = errln!("requests to {}: total={} {}", client.base_url(), client.counts.total(), list.join(" "));
    }
    let _ = errln!("evaluation: {}", cx.eval.counts.snapshot());
    let budget = store.lock().budget_state(record.id)?;
    let _ = errln!("{}", budget_line(&budget, s.limits.budget_usd, s.limits.max_trained_tokens));
    let _ = errln!(
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
    Ok(())
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
