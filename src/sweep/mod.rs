//! The scheduler: runs a sweep's runs concurrently up to `max_concurrent`,
//! each a state machine persisted in the store (planned → launching →
//! training → trained → evaluating → done, or failed with the reason). A
//! failed run is a row, never an abort of the sweep. Runs are claimed with
//! leases, so processes sharing a database never train a run twice; the
//! intent to launch (with the job's metadata tags and the budget check) is
//! committed before the call that costs money.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinSet;

mod evaluate;
mod search;
pub use search::adopt_stored;

use crate::data::ChatFile;
use crate::pricing::Price;
use crate::provider::{JobEvent, JobOutcome, JobRequest, Provider};
use crate::run::{Origin, RunConfig, RunRecord, RunState};
use crate::spec::Metric;
use crate::store::{Budget, CheckpointRow, Claim, MetricRow, SharedStore, StoreError, TrainingResult};

/// Everything a sweep's runs share.
pub struct SweepContext {
    pub sweep_name: String,
    pub store: SharedStore,
    pub provider: Arc<Provider>,
    pub base_model: String,
    pub training: Arc<ChatFile>,
    pub validation: Arc<ChatFile>,
    pub metric: Metric,
    pub max_concurrent: u32,
    pub options: RunOptions,
    /// The graders, the limit on completions in flight, and the counts.
    pub eval: Arc<crate::eval::Session>,
    /// The sweep as parsed, and what its run ids hash: rungs and replicates
    /// are planned from them as the scores come in.
    pub spec: Arc<crate::spec::Sweep>,
    pub identity: crate::plan::DataIdentity,
}

/// How runs are claimed, budgeted, retried and interrupted.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub sweep_id: i64,
    /// This process, as lease owner: `host:pid:nonce`.
    pub owner: String,
    pub lease: Duration,
    pub budget: Budget,
    /// Attempts after a provider-side failure.
    pub retries: u32,
    /// On interrupt, cancel the running jobs instead of leaving them running.
    pub cancel_on_interrupt: bool,
    /// Becomes `true` when the sweep must stop launching (Ctrl-C).
    pub shutdown: watch::Receiver<bool>,
    /// Each run's estimated training (tokens, USD), for the budget.
    pub estimates: HashMap<String, (u64, f64)>,
    /// The price that turns trained tokens into spent USD.
    pub price: Option<Price>,
    /// How long a run waits after a daily job cap without a `retry-after`.
    pub daily_limit_wait: Duration,
    /// The estimated (tokens, USD) of one epoch, for runs planned during the
    /// sweep (rungs, replicates), and the epochs `auto` stands for.
    pub epoch_estimate: (u64, f64),
    pub auto_epochs: u32,
}

/// The lease owner of this process: `host:pid:nonce`.
pub fn owner_id() -> String {
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}:{}:{nonce:08x}", host_name(), std::process::id())
}

/// This machine's name (`uname -n`; on Linux, what /proc/sys/kernel/hostname says).
fn host_name() -> String {
    #[cfg(unix)]
    let name = Some(rustix::system::uname().nodename().to_string_lossy().trim().to_string());
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").or_else(|_| std::env::var("HOSTNAME")).ok();
    name.filter(|n| !n.is_empty()).unwrap_or_else(|| "localhost".into())
}

/// Whether the process behind an owner id may still run: on this host, its
/// pid must exist (`kill(pid, 0)` succeeds or is refused for permission); on
/// another host, or where that cannot be asked, only its lease tells.
pub fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (_nonce, pid, host) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(h), Some(pid)) if h == host_name() => pid_exists(pid),
        _ => true,
    }
}

#[cfg(unix)]
fn pid_exists(pid: u32) -> bool {
    use rustix::io::Errno;
    // Only a positive pid names one process (0 and negatives name groups).
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH))
}

#[cfg(not(unix))]
fn pid_exists(_pid: u32) -> bool {
    true
}

/// What the scheduler reports as it goes; the CLI renders it on stderr.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Before any work: how many runs need what.
    Started {
        total: usize,
        to_train: usize,
        to_evaluate: usize,
        done: usize,
    },
    Training {
        run_id: String,
        config: RunConfig,
        job_id: String,
    },
    Epoch {
        run_id: String,
        epoch: u32,
        n_epochs: Option<u32>,
        valid_loss: Option<f64>,
    },
    Evaluating {
        run_id: String,
        model: String,
    },
    Done {
        run_id: String,
        score: f64,
        valid_loss: Option<f64>,
        seconds: f64,
    },
    Failed {
        run_id: String,
        reason: String,
    },
    /// Not launched: the budget would be exceeded.
    Skipped {
        run_id: String,
        reason: String,
    },
    /// Back in the queue: the provider refused the launch for now.
    Queued {
        run_id: String,
        reason: String,
        wait: Duration,
    },
    /// Runs owned by another live process; this one waits for them.
    Waiting {
        runs: usize,
        owner: String,
    },
    /// Stopped by an interrupt; how it was left.
    Interrupted {
        run_id: String,
        note: String,
    },
    /// Early stopping cancelled the run's job.
    Stopped {
        run_id: String,
        reason: String,
        trained_tokens: u64,
        /// The checkpoint that became the run's model, if any.
        model: Option<String>,
    },
    /// Runs added to the sweep as it goes (a rung's promotions, replicates).
    Planned {
        run_ids: Vec<String>,
        note: String,
    },
}

/// How a sweep went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub reused: usize,
    pub trained: usize,
    pub evaluated: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: usize,
    /// Runs whose job early stopping cancelled.
    pub stopped: usize,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.reused += o.reused;
        self.trained += o.trained;
        self.evaluated += o.evaluated;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.interrupted += o.interrupted;
        self.stopped += o.stopped;
    }
}

/// What a run still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Nothing,
    Evaluate,
    TrainAndEvaluate,
    /// A checkpoint of another run's job: take it once that job ended, then evaluate.
    FromCheckpoint,
    /// The run's job may exist at the provider (an earlier process created
    /// it, or was about to): adopt it, or create it if it does not exist.
    Resume,
}

fn work_for(run: &RunRecord, jobs_outlive_process: bool) -> Work {
    match run.state {
        RunState::Done | RunState::Cancelled => Work::Nothing,
        RunState::Trained | RunState::Evaluating if run.model.is_some() => Work::Evaluate,
        _ if matches!(run.origin, Origin::Checkpoint { .. }) => Work::FromCheckpoint,
        RunState::Launching | RunState::Training if jobs_outlive_process => Work::Resume,
        // A local job dies with its process: a run left `training` trains
        // again. Failed runs are retried.
        _ => Work::TrainAndEvaluate,
    }
}

/// The metadata tags of a run's attempt: how its job is found again.
pub fn job_tags(sweep_name: &str, run_id: &str, attempt: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ftsweep_sweep".to_string(), sweep_name.chars().take(512).collect()),
        ("ftsweep_run".to_string(), run_id.to_string()),
        ("ftsweep_attempt".to_string(), attempt.to_string()),
    ])
}

/// How one run's work ended, in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    Done {
        trained: bool,
        stopped: bool,
    },
    /// Early stopping ended the job, and no checkpoint could stand in.
    Stopped,
    Failed,
    Skipped,
    Interrupted,
}

/// What a run's training step gave.
enum Trained {
    Model {
        model: String,
        stopped: bool,
    },
    /// Early stopping ended the job without a model to evaluate.
    Stopped,
    Failed {
        reason: String,
        retryable: bool,
    },
    Interrupted,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Runs a sweep to its end: its runs, then, as the scores come in, the next
/// rungs of successive halving and the replicates of the leaders, each
/// planned from the database (so a restarted sweep plans the same ones).
pub async fn run_sweep(
    cx: Arc<SweepContext>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<Summary, StoreError> {
    let mut total = Summary::default();
    let mut handled: HashSet<String> = HashSet::new();
    loop {
        let runs = cx.store.lock().sweep_runs(cx.options.sweep_id)?;
        let summary = run(cx.clone(), runs, &mut handled, progress.clone()).await?;
        total.add(&summary);
        if *cx.options.shutdown.borrow() || summary.interrupted > 0 {
            break;
        }
        if !search::advance(&cx, progress.as_ref())? {
            break;
        }
    }
    Ok(total)
}

/// Whether a run that depends on another (a checkpoint of its job, a
/// continuation of its model) can go ahead.
enum Dependency {
    Ready,
    Wait,
    Broken(String),
}

/// `ended` says whether this process has finished with a run (tried it,
/// and its task, if any, is over).
fn dependency(source_id: &str, source: Option<&RunRecord>, ended: &dyn Fn(&str) -> bool) -> Dependency {
    let Some(source) = source else {
        return Dependency::Broken(format!("its source run {source_id} is not part of the sweep"));
    };
    let why = || {
        let reason = source.stop_reason.as_ref().or(source.error.as_ref());
        format!(
            "its source run {source_id} ended {}{}",
            source.state.as_str(),
            reason.map_or(String::new(), |r| format!(": {r}"))
        )
    };
    match source.state {
        RunState::Trained | RunState::Evaluating | RunState::Done if source.model.is_some() => Dependency::Ready,
        RunState::Cancelled => Dependency::Broken(why()),
        // This process tried the source already: it failed, or the budget skipped it.
        RunState::Failed | RunState::Planned if ended(source_id) => Dependency::Broken(why()),
        _ => Dependency::Wait,
    }
}

/// Runs every run that is not done, claiming each first; returns when every
/// run has ended here or is owned by no live process, or on shutdown.
/// `handled` holds the runs this process has dealt with (across the passes
/// of [`run_sweep`]): they are not tried again.
pub async fn run(
    cx: Arc<SweepContext>,
    runs: Vec<RunRecord>,
    handled: &mut HashSet<String>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    let durable = cx.provider.jobs_outlive_process();
    let work: Vec<Work> =
        runs.iter().map(|r| if handled.contains(&r.run_id) { Work::Nothing } else { work_for(r, durable) }).collect();
    let to_train = work.iter().filter(|w| matches!(w, Work::TrainAndEvaluate | Work::Resume)).count();
    let to_evaluate = work.iter().filter(|w| matches!(w, Work::Evaluate | Work::FromCheckpoint)).count();
    // A run that needs nothing counts as reused once, in the first pass that sees it.
    let reused: Vec<String> = runs
        .iter()
        .zip(&work)
        .filter(|(r, w)| **w == Work::Nothing && !handled.contains(&r.run_id))
        .map(|(r, _)| r.run_id.clone())
        .collect();
    summary.reused = reused.len();
    handled.extend(reused);
    progress(Progress::Started { total: runs.len(), to_train, to_evaluate, done: runs.len() - to_train - to_evaluate });
    // The baseline, and grading of finished runs by graders added since, go alongside the runs.
    let references = tokio::spawn(evaluate::evaluate_references(&cx, &runs, &progress));
    if to_train + to_evaluate == 0 {
        return evaluate::join_references(references, progress.as_ref()).await.map(|()| summary);
    }

    let files = if to_train > 0 {
        let training_file = cx.provider.upload(&cx.training).await;
        let validation_file = cx.provider.upload(&cx.validation).await;
        match (training_file, validation_file) {
            (Ok(t), Ok(v)) => Some(Arc::new((t, v))),
            (Err(e), _) | (_, Err(e)) => {
                // Nothing was launched: the runs stay as they are, and the
                // sweep reports the reason.
                let reason = format!("uploading the data failed: {e}");
                for (run, w) in runs.iter().zip(&work) {
                    if matches!(w, Work::TrainAndEvaluate) {
                        cx.store.lock().fail_run(&run.run_id, &reason)?;
                        progress(Progress::Failed { run_id: run.run_id.clone(), reason: reason.clone() });
                        summary.failed += 1;
                    }
                }
                None
            }
        }
    } else {
        None
    };

    let heartbeat = {
        let (store, owner, lease) = (cx.store.clone(), cx.options.owner.clone(), cx.options.lease);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let _ = store.lock().renew_leases(&owner, lease.as_secs_f64());
            }
        })
    };

    if files.is_none() {
        // Without uploads only evaluations can proceed.
        for (run, w) in runs.iter().zip(&work) {
            if matches!(w, Work::TrainAndEvaluate | Work::Resume) {
                handled.insert(run.run_id.clone());
            }
        }
    }
    let mut tasks: JoinSet<(String, RunEnd)> = JoinSet::new();
    // The runs whose task is running: a dependent waits for them.
    let mut in_flight: HashSet<String> = HashSet::new();
    // Each task's run, to record the run failed if its task panics.
    let mut task_runs: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut waiting_said = false;
    let shutdown = cx.options.shutdown.clone();
    let result = loop {
        let stopping = *shutdown.borrow();
        let current = cx.store.lock().sweep_runs(cx.options.sweep_id)?;
        let by_id: HashMap<&str, &RunRecord> = current.iter().map(|r| (r.run_id.as_str(), r)).collect();
        let mut taken: Vec<String> = Vec::new();
        let mut progressed = false;
        if !stopping {
            for run in &current {
                if tasks.len() >= cx.max_concurrent.max(1) as usize {
                    break;
                }
                let w = work_for(run, durable);
                if w == Work::Nothing || handled.contains(&run.run_id) {
                    continue;
                }
                if let Some(source) = run.origin.source() {
                    let ended = |id: &str| handled.contains(id) && !in_flight.contains(id);
                    match dependency(source, by_id.get(source).copied(), &ended) {
                        Dependency::Ready => {}
                        Dependency::Wait => continue,
                        Dependency::Broken(reason) => {
                            handled.insert(run.run_id.clone());
                            progressed = true;
                            cx.store.lock().fail_run(&run.run_id, &reason)?;
                            progress(Progress::Failed { run_id: run.run_id.clone(), reason });
                            summary.failed += 1;
                            continue;
                        }
                    }
                }
                let launch = (w == Work::TrainAndEvaluate).then(|| {
                    let (tokens, usd) = estimate(&cx, run);
                    (cx.options.budget, tokens, usd, cx.options.sweep_id)
                });
                let claim = cx.store.lock().claim(
                    &run.run_id,
                    &cx.options.owner,
                    cx.options.lease.as_secs_f64(),
                    &owner_alive,
                    launch,
                )?;
                match claim {
                    Claim::Taken { owner } => taken.push(owner),
                    Claim::OverBudget { reason } => {
                        handled.insert(run.run_id.clone());
                        progressed = true;
                        summary.skipped += 1;
                        progress(Progress::Skipped { run_id: run.run_id.clone(), reason });
                    }
                    Claim::Claimed { attempt } => {
                        handled.insert(run.run_id.clone());
                        progressed = true;
                        let mut run = run.clone();
                        if let Some(a) = attempt {
                            run.attempt = a;
                        }
                        in_flight.insert(run.run_id.clone());
                        let (cx, files, progress) = (cx.clone(), files.clone(), progress.clone());
                        let run_id = run.run_id.clone();
                        let task = tasks.spawn(async move {
                            injected_panic(&run.run_id);
                            let end = run_one(&cx, &run, w, files.as_deref(), progress.as_ref()).await;
                            let _ = cx.store.lock().release(&run.run_id, &cx.options.owner);
                            (run.run_id.clone(), end.unwrap_or(RunEnd::Failed))
                        });
                        task_runs.insert(task.id(), run_id);
                    }
                }
            }
        }
        if tasks.is_empty() {
            if progressed && !stopping {
                // A run ended its dependents' wait: look again at once.
                continue;
            }
            if taken.is_empty() || stopping {
                break Ok(());
            }
            if !waiting_said {
                progress(Progress::Waiting { runs: taken.len(), owner: taken[0].clone() });
                waiting_said = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        // Wait for a run to end, or re-check the others now and then.
        let ended = tokio::time::timeout(Duration::from_millis(500), tasks.join_next()).await;
        if let Ok(Some(joined)) = ended {
            let task = match &joined {
                Ok((id, _)) => Some(id.clone()),
                Err(e) => task_runs.remove(&e.id()),
            };
            if let Some(id) = &task {
                in_flight.remove(id);
            }
            match joined {
                Ok((_, RunEnd::Done { trained, stopped })) => {
                    summary.evaluated += 1;
                    summary.trained += usize::from(trained);
                    summary.stopped += usize::from(stopped);
                }
                Ok((_, RunEnd::Stopped)) => {
                    summary.trained += 1;
                    summary.stopped += 1;
                }
                Ok((_, RunEnd::Failed)) => summary.failed += 1,
                Ok((_, RunEnd::Skipped)) => summary.skipped += 1,
                Ok((_, RunEnd::Interrupted)) => summary.interrupted += 1,
                Err(e) => {
                    // A bug, not the sweep's end: the run is a failed row
                    // with the reason, and the other runs go on.
                    summary.failed += 1;
                    let reason = format!("internal error: {}", panic_message(e));
                    let run_id = task.unwrap_or_else(|| "?".into());
                    if run_id != "?" {
                        cx.store.lock().fail_run(&run_id, &reason)?;
                        let _ = cx.store.lock().release(&run_id, &cx.options.owner);
                    }
                    progress(Progress::Failed { run_id, reason });
                }
            }
        }
    };
    heartbeat.abort();
    result?;
    evaluate::join_references(references, progress.as_ref()).await.map(|()| summary)
}

/// What a run's task ended with when it did not return: its panic's message.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    let text =
        payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
    format!("the run's task panicked: {}", text.unwrap_or_else(|| "(no message)".into()))
}

/// Debug builds only: `FTSWEEP_TEST_PANIC_RUN=1` makes every run's task
/// panic, so that tests can check that a panic becomes a failed row.
fn injected_panic(run_id: &str) {
    if cfg!(debug_assertions) && std::env::var_os("FTSWEEP_TEST_PANIC_RUN").is_some_and(|v| v == "1") {
        panic!("injected by FTSWEEP_TEST_PANIC_RUN in run {run_id}");
    }
}

/// A run's estimated training (tokens, USD): from the plan, or, for a run
/// planned during the sweep, from the epochs its own job trains.
fn estimate(cx: &SweepContext, run: &RunRecord) -> (u64, f64) {
    if let Some(e) = cx.options.estimates.get(&run.run_id) {
        return *e;
    }
    let epochs = crate::run::job_epochs(&run.origin, run.config.n_epochs).unwrap_or(cx.options.auto_epochs);
    let (tokens, usd) = cx.options.epoch_estimate;
    (tokens * u64::from(epochs), usd * f64::from(epochs))
}

/// Claimed work on one run: train (with retries by policy) if needed, then
/// evaluate. Store failures are errors; everything else is a `RunEnd`.
async fn run_one(
    cx: &SweepContext,
    run: &RunRecord,
    work: Work,
    files: Option<&(String, String)>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<RunEnd, StoreError> {
    let mut stopped = false;
    let model = match (work, &run.model, files) {
        (Work::Evaluate, Some(model), _) => model.clone(),
        (Work::FromCheckpoint, _, _) => match from_checkpoint(cx, run, progress)? {
            Some(model) => model,
            None => return Ok(RunEnd::Failed),
        },
        (_, _, None) => return Ok(RunEnd::Failed),
        (_, _, Some(files)) => {
            let mut run = run.clone();
            let mut resuming = work == Work::Resume;
            let mut retries_left = cx.options.retries;
            loop {
                match train(cx, &run, resuming, files, progress).await? {
                    Trained::Model { model, stopped: s } => {
                        stopped = s;
                        break model;
                    }
                    Trained::Stopped => return Ok(RunEnd::Stopped),
                    Trained::Interrupted => return Ok(RunEnd::Interrupted),
                    Trained::Failed { reason, retryable } if retryable && retries_left > 0 => {
                        retries_left -= 1;
                        progress(Progress::Failed {
                            run_id: run.run_id.clone(),
                            reason: format!("{reason}; retrying ({retries_left} retries left after this one)"),
                        });
                        // A new attempt of the same run, claimed and budgeted.
                        let (tokens, usd) = estimate(cx, &run);
                        let claim = cx.store.lock().claim(
                            &run.run_id,
                            &cx.options.owner,
                            cx.options.lease.as_secs_f64(),
                            &owner_alive,
                            Some((cx.options.budget, tokens, usd, cx.options.sweep_id)),
                        )?;
                        match claim {
                            Claim::Claimed { attempt } => run.attempt = attempt.unwrap_or(run.attempt + 1),
                            Claim::OverBudget { reason } => {
                                cx.store.lock().fail_run(&run.run_id, &reason)?;
                                progress(Progress::Skipped { run_id: run.run_id.clone(), reason });
                                return Ok(RunEnd::Skipped);
                            }
                            Claim::Taken { .. } => return Ok(RunEnd::Failed),
                        }
                        resuming = false;
                    }
                    Trained::Failed { reason, .. } => {
                        cx.store.lock().fail_run(&run.run_id, &reason)?;
                        progress(Progress::Failed { run_id: run.run_id.clone(), reason });
                        return Ok(RunEnd::Failed);
                    }
                }
            }
        }
    };
    let mut shutdown = cx.options.shutdown.clone();
    if *shutdown.borrow() {
        return Ok(RunEnd::Interrupted);
    }
    tokio::select! {
        ok = evaluate::evaluate_run(cx, run, &model, progress) => {
            let trained = matches!(work, Work::TrainAndEvaluate | Work::Resume);
            Ok(if ok? { RunEnd::Done { trained, stopped } } else { RunEnd::Failed })
        }
        _ = shutdown.wait_for(|s| *s) => {
            // The run stays `evaluating` with its model: the next start evaluates it.
            progress(Progress::Interrupted { run_id: run.run_id.clone(), note: "evaluation stopped; it restarts on resume".into() });
            Ok(RunEnd::Interrupted)
        }
    }
}

/// Takes a checkpoint-derived run's model from its source run's job: the
/// checkpoint at the run's epochs. `None`: there is none (recorded as failed).
fn from_checkpoint(
    cx: &SweepContext,
    run: &RunRecord,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Option<String>, StoreError> {
    let Origin::Checkpoint { source } = &run.origin else {
        return Ok(None);
    };
    let epoch = run.config.n_epochs.unwrap_or(0);
    let mut store = cx.store.lock();
    let source_run = store.run(source)?;
    let checkpoint = store.run_checkpoints(source)?.into_iter().find(|c| c.epoch == epoch);
    match (checkpoint, source_run.and_then(|r| r.job_id)) {
        (Some(c), Some(job_id)) => {
            store.set_job(&run.run_id, &job_id)?;
            store.finish_training(
                &run.run_id,
                &TrainingResult {
                    model: c.model.clone(),
                    // The tokens are the source run's: this run trained nothing.
                    trained_tokens: 0,
                    train_loss: c.train_loss.filter(|l| l.is_finite()),
                    train_accuracy: None,
                    valid_loss: c.valid_loss,
                    valid_accuracy: c.valid_accuracy,
                    seconds: 0.0,
                },
            )?;
            Ok(Some(c.model))
        }
        _ => {
            let reason = format!("the job of its source run {source} kept no checkpoint at epoch {epoch}");
            store.fail_run(&run.run_id, &reason)?;
            drop(store);
            progress(Progress::Failed { run_id: run.run_id.clone(), reason });
            Ok(None)
        }
    }
}

/// Whether a job failure is the provider's (worth another attempt), rather
/// than the data's or the request's.
fn retryable_code(code: &str) -> bool {
    !(code.starts_with("invalid") || code.contains("file") || code == "model_not_available" || code == "bad_request")
}

async fn train(
    cx: &SweepContext,
    run: &RunRecord,
    resuming: bool,
    (training_file, validation_file): &(String, String),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Trained, StoreError> {
    let started = Instant::now();
    // Intent before effect: the claim committed the attempt (state
    // `launching`, its estimate in the budget); the tags go with the job.
    let attempt = run.attempt.max(1);
    // A continuation trains its parent's model for the epochs it adds.
    let base_model = match &run.origin {
        Origin::Continue { parent, .. } => match cx.store.lock().run(parent)?.and_then(|p| p.model) {
            Some(model) => model,
            None => {
                let reason = format!("its parent run {parent} has no model to continue");
                return Ok(Trained::Failed { reason, retryable: false });
            }
        },
        _ => cx.base_model.clone(),
    };
    let job_epochs = crate::run::job_epochs(&run.origin, run.config.n_epochs);
    let epochs_before = run.origin.parent_epochs().unwrap_or(0);
    let request = JobRequest {
        base_model,
        training_file: training_file.clone(),
        validation_file: validation_file.clone(),
        hyperparameters: RunConfig { n_epochs: job_epochs, ..run.config.clone() },
        suffix: run.run_id.clone(),
        metadata: job_tags(&cx.sweep_name, &run.run_id, attempt),
    };
    let known = if resuming { run.job_id.clone() } else { None };
    let found = match known {
        Some(id) => Ok(Some(id)),
        None if resuming => cx.provider.find_job(&request.metadata).await,
        None => Ok(None),
    };
    let job_id = match found {
        Ok(Some(id)) => id,
        Ok(None) => loop {
            if *cx.options.shutdown.borrow() {
                return Ok(Trained::Interrupted);
            }
            match cx.provider.create_job(&request).await {
                Ok(id) => break id,
                Err(e) => {
                    if let Some(wait) = e.queue_for(cx.options.daily_limit_wait) {
                        // The provider refused the launch for now: the run
                        // waits in the queue, its intent kept.
                        let reason = format!("{e}");
                        cx.store.lock().queue(&run.run_id, now_secs() + wait.as_secs_f64(), &reason)?;
                        progress(Progress::Queued { run_id: run.run_id.clone(), reason, wait });
                        let mut shutdown = cx.options.shutdown.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue,
                            _ = shutdown.wait_for(|s| *s) => return Ok(Trained::Interrupted),
                        }
                    }
                    return Ok(Trained::Failed {
                        reason: format!("creating the job failed: {e}"),
                        retryable: e.is_provider_side(),
                    });
                }
            }
        },
        Err(e) => {
            // The provider cannot say whether the job exists: leave the run
            // as it is (launching), to be reconciled by the next start.
            progress(Progress::Interrupted {
                run_id: run.run_id.clone(),
                note: format!("cannot look up the run's job, left to reconcile on the next start: {e}"),
            });
            return Ok(Trained::Interrupted);
        }
    };
    {
        let mut store = cx.store.lock();
        store.set_job(&run.run_id, &job_id)?;
        if resuming {
            // The job's events are read again from its start.
            store.clear_attempt_metrics(&run.run_id, attempt)?;
        }
    }
    progress(Progress::Training { run_id: run.run_id.clone(), config: run.config.clone(), job_id: job_id.clone() });

    let mut pending: Vec<MetricRow> = Vec::new();
    let mut last_checkpoint: Option<CheckpointRow> = None;
    let mut last_train_accuracy = None;
    let mut store_error: Option<StoreError> = None;
    let mut last_validation: Option<(f64, Option<f64>)> = None;
    // Early stopping watches the validations; a verdict goes to the loop
    // below, which cancels the job and follows it to its end.
    let mut stopper = cx.spec.early_stopping.map(|cfg| match run.origin {
        Origin::Continue { .. } => crate::stopping::Stopper::continuing(cfg),
        _ => crate::stopping::Stopper::new(cfg),
    });
    let stop_metric = cx.spec.early_stopping.map(|e| e.metric);
    let (stop_tx, mut stop_rx) = watch::channel::<Option<String>>(None);
    let mut steps_per_epoch: Option<f64> = None;
    // The last step reported, of how many: a cancelled job whose provider does
    // not say what it trained is charged that share of its estimate.
    let mut progress_steps: (u64, u64) = (0, 0);
    let mut watch_stop = |step: u64, epoch: u32, loss: Option<f64>, accuracy: Option<f64>, steps: Option<f64>| {
        let (Some(stopper), Some(metric)) = (stopper.as_mut(), stop_metric) else { return };
        if stop_tx.borrow().is_some() {
            return;
        }
        let at = f64::from(epochs_before)
            + steps.filter(|s| *s > 0.0).map_or(f64::from(epoch), |per_epoch| step as f64 / per_epoch);
        let value = match metric {
            crate::spec::StopMetric::ValidLoss => loss,
            crate::spec::StopMetric::ValidAccuracy => accuracy,
        };
        if let Some(reason) = value.and_then(|v| stopper.observe(at, v)) {
            stop_tx.send_replace(Some(reason.describe(metric)));
        }
    };
    let job_epochs_f = job_epochs.map(f64::from);
    let mut on_event = |event: JobEvent| match event {
        JobEvent::Validation { step, epoch, valid_loss, valid_accuracy } => {
            watch_stop(step, epoch, Some(valid_loss), valid_accuracy, steps_per_epoch);
            last_validation = Some((valid_loss, valid_accuracy));
            // A validation within an epoch is a step row with a loss; one at
            // an epoch's last step (or where the steps per epoch are unknown)
            // is the epoch's.
            let epoch_end = steps_per_epoch.is_none_or(|per| {
                let at = step as f64 / per;
                (at - at.round()).abs() * per < 0.5
            });
            pending.push(MetricRow {
                step,
                epoch,
                epoch_end,
                train_loss: None,
                train_accuracy: None,
                valid_loss: Some(valid_loss),
                valid_accuracy,
            });
        }
        JobEvent::Step { step, total_steps, epoch, train_loss, train_accuracy } => {
            progress_steps = (step.max(progress_steps.0), total_steps);
            if let Some(n) = job_epochs_f.filter(|_| total_steps > 0) {
                steps_per_epoch = Some(total_steps as f64 / n);
            }
            if !train_loss.is_finite() {
                // A loss that is not finite is divergence, whatever the validation says.
                watch_stop(step, epoch, Some(train_loss), None, steps_per_epoch);
            }
            pending.push(MetricRow {
                step,
                epoch,
                epoch_end: false,
                train_loss: Some(train_loss),
                train_accuracy: Some(train_accuracy),
                valid_loss: None,
                valid_accuracy: None,
            })
        }
        JobEvent::Checkpoint { epoch, step, model, train_loss, train_accuracy, valid_loss, valid_accuracy } => {
            watch_stop(step, epoch, valid_loss, valid_accuracy, steps_per_epoch);
            pending.push(MetricRow {
                step,
                epoch,
                epoch_end: true,
                train_loss: Some(train_loss),
                train_accuracy: Some(train_accuracy),
                valid_loss,
                valid_accuracy,
            });
            let checkpoint =
                CheckpointRow { epoch, step, model, train_loss: Some(train_loss), valid_loss, valid_accuracy };
            if let Err(e) = cx.store.lock().record_progress(&run.run_id, attempt, &pending, Some(&checkpoint)) {
                store_error.get_or_insert(e);
            }
            pending.clear();
            last_train_accuracy = Some(train_accuracy);
            last_checkpoint = Some(checkpoint);
            progress(Progress::Epoch { run_id: run.run_id.clone(), epoch, n_epochs: run.config.n_epochs, valid_loss });
        }
    };
    let mut shutdown = cx.options.shutdown.clone();
    let outcome = {
        let follow = cx.provider.follow_job(&job_id, &mut on_event);
        tokio::pin!(follow);
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                outcome = &mut follow => break Some(outcome),
                _ = shutdown.wait_for(|s| *s) => break None,
                changed = stop_rx.changed(), if !cancel_sent => {
                    if changed.is_err() {
                        // No verdict can come any more.
                        cancel_sent = true;
                        continue;
                    }
                }
            }
            cancel_sent = true;
            // The job ends `cancelled`; following it goes on to that end.
            if let Err(e) = cx.provider.cancel_job(&job_id).await {
                tracing::warn!(run = %run.run_id, "early stopping could not cancel job {job_id}: {e}");
            }
        }
    };
    let Some(outcome) = outcome else {
        return interrupted(cx, run, &job_id, progress).await;
    };
    let stop_reason = stop_rx.borrow().clone();
    if !pending.is_empty() {
        cx.store.lock().record_progress(&run.run_id, attempt, &pending, None)?;
    }
    if let Some(e) = store_error {
        return Err(e);
    }
    let (reason, retryable) = match outcome {
        Ok(JobOutcome::Succeeded { model, trained_tokens }) => {
            if let Some(price) = cx.options.price {
                cx.store.lock().set_cost(&run.run_id, crate::pricing::cost(trained_tokens, price.training))?;
            }
            let last = last_checkpoint.as_ref();
            cx.store.lock().finish_training(
                &run.run_id,
                &TrainingResult {
                    model: model.clone(),
                    trained_tokens: trained_tokens as i64,
                    train_loss: last.and_then(|c| c.train_loss).filter(|l| l.is_finite()),
                    train_accuracy: last_train_accuracy.filter(|a| a.is_finite()),
                    valid_loss: last.and_then(|c| c.valid_loss).or(last_validation.map(|v| v.0)),
                    valid_accuracy: last.and_then(|c| c.valid_accuracy).or(last_validation.and_then(|v| v.1)),
                    seconds: started.elapsed().as_secs_f64(),
                },
            )?;
            return Ok(Trained::Model { model, stopped: false });
        }
        Ok(JobOutcome::Cancelled { trained_tokens }) if stop_reason.is_some() => {
            let reason = stop_reason.unwrap_or_default();
            let trained_tokens = match (trained_tokens, progress_steps) {
                (0, (step, total)) if total > 0 => {
                    let (estimate, _) = estimate(cx, run);
                    (estimate as f64 * step.min(total) as f64 / total as f64).round() as u64
                }
                (t, _) => t,
            };
            return stopped_early(cx, run, &reason, trained_tokens, started, progress);
        }
        Ok(JobOutcome::Failed { code, message }) => {
            (format!("the job failed ({code}): {message}"), retryable_code(&code))
        }
        Ok(JobOutcome::Cancelled { trained_tokens }) => {
            cx.store.lock().set_cancelled(&run.run_id, "the job was cancelled", Some(trained_tokens as i64))?;
            progress(Progress::Interrupted { run_id: run.run_id.clone(), note: "the job was cancelled".into() });
            return Ok(Trained::Interrupted);
        }
        Err(e) => (format!("following the job failed: {e}"), false),
    };
    Ok(Trained::Failed { reason, retryable })
}

/// Records a run whose job early stopping cancelled: the tokens it cost, the
/// reason, and as its model the best of the job's kept checkpoints by the
/// stopping metric, when the job left one; otherwise the run ends stopped.
fn stopped_early(
    cx: &SweepContext,
    run: &RunRecord,
    reason: &str,
    trained_tokens: u64,
    started: Instant,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Trained, StoreError> {
    let metric = cx.spec.early_stopping.map_or(crate::spec::StopMetric::ValidLoss, |e| e.metric);
    let mut store = cx.store.lock();
    if let Some(price) = cx.options.price {
        store.set_cost(&run.run_id, crate::pricing::cost(trained_tokens, price.training))?;
    }
    let checkpoints = store.run_checkpoints(&run.run_id)?;
    let value = |c: &CheckpointRow| match metric {
        crate::spec::StopMetric::ValidLoss => c.valid_loss.filter(|l| l.is_finite()).map(|l| -l),
        crate::spec::StopMetric::ValidAccuracy => c.valid_accuracy.filter(|a| a.is_finite()),
    };
    let best = checkpoints
        .iter()
        .rev()
        .take(crate::plan::CHECKPOINT_WINDOW as usize)
        .filter_map(|c| value(c).map(|v| (v, c)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone());
    let epochs_before = run.origin.parent_epochs().unwrap_or(0);
    store.set_stop_reason(&run.run_id, reason, best.as_ref().map(|c| epochs_before + c.epoch))?;
    let run_id = run.run_id.clone();
    match best {
        Some(c) => {
            store.finish_training(
                &run.run_id,
                &TrainingResult {
                    model: c.model.clone(),
                    trained_tokens: trained_tokens as i64,
                    train_loss: c.train_loss.filter(|l| l.is_finite()),
                    train_accuracy: None,
                    valid_loss: c.valid_loss,
                    valid_accuracy: c.valid_accuracy,
                    seconds: started.elapsed().as_secs_f64(),
                },
            )?;
            drop(store);
            let model = Some(c.model.clone());
            progress(Progress::Stopped { run_id, reason: reason.to_string(), trained_tokens, model });
            Ok(Trained::Model { model: c.model, stopped: true })
        }
        None => {
            store.set_stopped(&run.run_id, reason, trained_tokens as i64)?;
            drop(store);
            progress(Progress::Stopped { run_id, reason: reason.to_string(), trained_tokens, model: None });
            Ok(Trained::Stopped)
        }
    }
}

/// Leaves a run whose job was being followed when the sweep was
/// interrupted: a hosted job keeps running (and is adopted on resume) unless
/// `--cancel-on-interrupt`; a local job dies with the process, so its run
/// goes back to `planned`.
async fn interrupted(
    cx: &SweepContext,
    run: &RunRecord,
    job_id: &str,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Trained, StoreError> {
    let note = if cx.options.cancel_on_interrupt || !cx.provider.jobs_outlive_process() {
        let cancelled = cx.provider.cancel_job(job_id).await;
        if cx.provider.jobs_outlive_process() {
            match cancelled {
                Ok(()) => {
                    cx.store.lock().set_cancelled(&run.run_id, "cancelled on interrupt", None)?;
                    format!("job {job_id} cancelled")
                }
                Err(e) => format!("job {job_id} could not be cancelled ({e}); it is adopted on resume"),
            }
        } else {
            cx.store.lock().set_planned(&run.run_id, "interrupted: trains again on resume")?;
            "interrupted: the local job stopped; the run trains again on resume".to_string()
        }
    } else {
        format!("job {job_id} keeps running at the provider; `ftsweep run` or `resume` follows it")
    };
    progress(Progress::Interrupted { run_id: run.run_id.clone(), note });
    Ok(Trained::Interrupted)
}
