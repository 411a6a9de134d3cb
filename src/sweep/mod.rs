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

use crate::data::ChatFile;
use crate::plan::RunConfig;
use crate::pricing::Price;
use crate::provider::{JobEvent, JobOutcome, JobRequest, Provider};
use crate::spec::Metric;
use crate::store::{
    Budget, CheckpointRow, Claim, MetricRow, RunRecord, RunState, SharedStore, StoreError, TrainingResult,
};

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
}

/// The lease owner of this process.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into());
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nonce:08x}", std::process::id())
}

/// Whether the process behind an owner id may still run: on this host, its
/// pid must exist; on another host, only its lease tells.
pub fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (_nonce, pid, host) = (parts.next(), parts.next(), parts.next());
    let me = owner_id();
    let my_host = me.rsplitn(3, ':').nth(2);
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(h), Some(pid)) if Some(h) == my_host => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        _ => true,
    }
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
}

/// What a run still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Nothing,
    Evaluate,
    TrainAndEvaluate,
    /// The run's job may exist at the provider (an earlier process created
    /// it, or was about to): adopt it, or create it if it does not exist.
    Resume,
}

fn work_for(run: &RunRecord, jobs_outlive_process: bool) -> Work {
    match run.state {
        RunState::Done | RunState::Cancelled => Work::Nothing,
        RunState::Trained | RunState::Evaluating if run.model.is_some() => Work::Evaluate,
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
    Done { trained: bool },
    Failed,
    Skipped,
    Interrupted,
}

/// What a run's training step gave.
enum Trained {
    Model(String),
    Failed { reason: String, retryable: bool },
    Interrupted,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Runs every run that is not done, claiming each first; returns when every
/// run has ended here or is owned by no live process, or on shutdown.
pub async fn run(
    cx: Arc<SweepContext>,
    runs: Vec<RunRecord>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    let durable = cx.provider.jobs_outlive_process();
    let work: Vec<Work> = runs.iter().map(|r| work_for(r, durable)).collect();
    let to_train = work.iter().filter(|w| matches!(w, Work::TrainAndEvaluate | Work::Resume)).count();
    let to_evaluate = work.iter().filter(|w| **w == Work::Evaluate).count();
    summary.reused = work.iter().filter(|w| **w == Work::Nothing).count();
    progress(Progress::Started { total: runs.len(), to_train, to_evaluate, done: summary.reused });
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

    let mut handled: HashSet<String> = HashSet::new();
    if files.is_none() {
        // Without uploads only evaluations can proceed.
        for (run, w) in runs.iter().zip(&work) {
            if matches!(w, Work::TrainAndEvaluate | Work::Resume) {
                handled.insert(run.run_id.clone());
            }
        }
    }
    let mut tasks: JoinSet<(String, RunEnd)> = JoinSet::new();
    let mut waiting_said = false;
    let shutdown = cx.options.shutdown.clone();
    let result = loop {
        let stopping = *shutdown.borrow();
        let current = cx.store.lock().sweep_runs(cx.options.sweep_id)?;
        let mut taken: Vec<String> = Vec::new();
        if !stopping {
            for run in &current {
                if tasks.len() >= cx.max_concurrent.max(1) as usize {
                    break;
                }
                let w = work_for(run, durable);
                if w == Work::Nothing || handled.contains(&run.run_id) {
                    continue;
                }
                let launch = (w == Work::TrainAndEvaluate).then(|| {
                    let (tokens, usd) = cx.options.estimates.get(&run.run_id).copied().unwrap_or((0, 0.0));
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
                        summary.skipped += 1;
                        progress(Progress::Skipped { run_id: run.run_id.clone(), reason });
                    }
                    Claim::Claimed { attempt } => {
                        handled.insert(run.run_id.clone());
                        let mut run = run.clone();
                        if let Some(a) = attempt {
                            run.attempt = a;
                        }
                        let (cx, files, progress) = (cx.clone(), files.clone(), progress.clone());
                        tasks.spawn(async move {
                            let end = run_one(&cx, &run, w, files.as_deref(), progress.as_ref()).await;
                            let _ = cx.store.lock().release(&run.run_id, &cx.options.owner);
                            (run.run_id.clone(), end.unwrap_or(RunEnd::Failed))
                        });
                    }
                }
            }
        }
        if tasks.is_empty() {
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
            match joined {
                Ok((_, RunEnd::Done { trained })) => {
                    summary.evaluated += 1;
                    if trained {
                        summary.trained += 1;
                    }
                }
                Ok((_, RunEnd::Failed)) => summary.failed += 1,
                Ok((_, RunEnd::Skipped)) => summary.skipped += 1,
                Ok((_, RunEnd::Interrupted)) => summary.interrupted += 1,
                Err(e) => {
                    summary.failed += 1;
                    progress(Progress::Failed { run_id: "?".into(), reason: format!("internal error: {e}") });
                }
            }
        }
    };
    heartbeat.abort();
    result?;
    evaluate::join_references(references, progress.as_ref()).await.map(|()| summary)
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
    let model = match (work, &run.model, files) {
        (Work::Evaluate, Some(model), _) => model.clone(),
        (_, _, None) => return Ok(RunEnd::Failed),
        (_, _, Some(files)) => {
            let mut run = run.clone();
            let mut resuming = work == Work::Resume;
            let mut retries_left = cx.options.retries;
            loop {
                match train(cx, &run, resuming, files, progress).await? {
                    Trained::Model(model) => break model,
                    Trained::Interrupted => return Ok(RunEnd::Interrupted),
                    Trained::Failed { reason, retryable } if retryable && retries_left > 0 => {
                        retries_left -= 1;
                        progress(Progress::Failed {
                            run_id: run.run_id.clone(),
                            reason: format!("{reason}; retrying ({retries_left} retries left after this one)"),
                        });
                        // A new attempt of the same run, claimed and budgeted.
                        let (tokens, usd) = cx.options.estimates.get(&run.run_id).copied().unwrap_or((0, 0.0));
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
            Ok(if ok? { RunEnd::Done { trained: work != Work::Evaluate } } else { RunEnd::Failed })
        }
        _ = shutdown.wait_for(|s| *s) => {
            // The run stays `evaluating` with its model: the next start evaluates it.
            progress(Progress::Interrupted { run_id: run.run_id.clone(), note: "evaluation stopped; it restarts on resume".into() });
            Ok(RunEnd::Interrupted)
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
    let request = JobRequest {
        base_model: cx.base_model.clone(),
        training_file: training_file.clone(),
        validation_file: validation_file.clone(),
        hyperparameters: run.config,
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
    progress(Progress::Training { run_id: run.run_id.clone(), config: run.config, job_id: job_id.clone() });

    let mut pending: Vec<MetricRow> = Vec::new();
    let mut last_checkpoint: Option<CheckpointRow> = None;
    let mut last_train_accuracy = None;
    let mut store_error: Option<StoreError> = None;
    let mut last_validation: Option<(f64, Option<f64>)> = None;
    let mut on_event = |event: JobEvent| match event {
        JobEvent::Validation { step, epoch, valid_loss, valid_accuracy } => {
            last_validation = Some((valid_loss, valid_accuracy));
            pending.push(MetricRow {
                step,
                epoch,
                epoch_end: true,
                train_loss: None,
                train_accuracy: None,
                valid_loss: Some(valid_loss),
                valid_accuracy,
            });
        }
        JobEvent::Step { step, epoch, train_loss, train_accuracy, .. } => pending.push(MetricRow {
            step,
            epoch,
            epoch_end: false,
            train_loss: Some(train_loss),
            train_accuracy: Some(train_accuracy),
            valid_loss: None,
            valid_accuracy: None,
        }),
        JobEvent::Checkpoint { epoch, step, model, train_loss, train_accuracy, valid_loss, valid_accuracy } => {
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
    let outcome = tokio::select! {
        outcome = cx.provider.follow_job(&job_id, &mut on_event) => Some(outcome),
        _ = shutdown.wait_for(|s| *s) => None,
    };
    let Some(outcome) = outcome else {
        return interrupted(cx, run, &job_id, progress).await;
    };
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
            return Ok(Trained::Model(model));
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
