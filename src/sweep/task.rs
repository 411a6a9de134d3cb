//! One claimed run's work, in its task: get its model (train it, retrying a
//! provider-side failure as a new claimed and budgeted attempt; or take the
//! checkpoint it stands for; or the model it has), then evaluate it.

use std::time::Instant;

use super::decide::Work;
use super::follow::Follower;
use super::launch::{self, Launch};
use super::{Progress, SweepContext, evaluate, owner_alive};
use crate::run::{Origin, RunRecord};
use crate::store::{Claim, StoreError, TrainingResult};

/// How one run's work ended, in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunEnd {
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
pub(super) enum Trained {
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

/// Claimed work on one run: train (with retries by policy) if needed, then
/// evaluate; `trained` is called once the run has its model, before its
/// evaluation (its slot is free then). Store failures are errors;
/// everything else is a `RunEnd`.
pub(super) async fn run_one(
    cx: &SweepContext,
    run: &RunRecord,
    work: Work,
    files: Option<&(String, String)>,
    progress: &(dyn Fn(Progress) + Send + Sync),
    trained: impl FnOnce(),
) -> Result<RunEnd, StoreError> {
    let (model, stopped) = match (work, &run.model, files) {
        (Work::Evaluate, Some(model), _) => (model.clone(), false),
        (Work::FromCheckpoint, _, _) => match from_checkpoint(cx, run, progress)? {
            Some(model) => (model, false),
            None => return Ok(RunEnd::Failed),
        },
        (_, _, None) => return Ok(RunEnd::Failed),
        (_, _, Some(files)) => match train_with_retries(cx, run, work, files, progress).await? {
            Ok(trained) => trained,
            Err(end) => return Ok(end),
        },
    };
    trained();
    evaluate(cx, run, work, &model, stopped, progress).await
}

/// Trains a run until it has a model (and whether early stopping chose it),
/// retrying a provider-side failure while retries are left; `Err`: how the
/// run ended without one.
async fn train_with_retries(
    cx: &SweepContext,
    run: &RunRecord,
    work: Work,
    files: &(String, String),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Result<(String, bool), RunEnd>, StoreError> {
    let mut run = run.clone();
    let mut resuming = work == Work::Resume;
    let mut retries_left = cx.options.retries;
    loop {
        let (reason, retryable) = match train(cx, &run, resuming, files, progress).await? {
            Trained::Model { model, stopped } => return Ok(Ok((model, stopped))),
            Trained::Stopped => return Ok(Err(RunEnd::Stopped)),
            Trained::Interrupted => return Ok(Err(RunEnd::Interrupted)),
            Trained::Failed { reason, retryable } => (reason, retryable),
        };
        if !(retryable && retries_left > 0) {
            cx.store.lock().fail_run(&run.run_id, &reason)?;
            progress(Progress::Failed { run_id: run.run_id.clone(), reason });
            return Ok(Err(RunEnd::Failed));
        }
        retries_left -= 1;
        progress(Progress::Failed {
            run_id: run.run_id.clone(),
            reason: format!("{reason}; retrying ({retries_left} retries left after this one)"),
        });
        // A new attempt of the same run, claimed and budgeted.
        let (tokens, usd) = cx.options.estimate(&run);
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
                return Ok(Err(RunEnd::Skipped));
            }
            Claim::Taken { .. } => return Ok(Err(RunEnd::Failed)),
        }
        resuming = false;
    }
}

/// One attempt: gets the run's job (the claim committed the intent), follows
/// it to its end and records how it ended.
async fn train(
    cx: &SweepContext,
    run: &RunRecord,
    resuming: bool,
    files: &(String, String),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Trained, StoreError> {
    let started = Instant::now();
    // Intent before effect: the claim committed the attempt (state
    // `launching`, its estimate in the budget); the tags go with the job.
    let attempt = run.attempt.max(1);
    let request = match launch::request(cx, run, attempt, files)? {
        Ok(request) => request,
        Err(reason) => return Ok(Trained::Failed { reason, retryable: false }),
    };
    let job_id = match launch::job(cx, run, resuming, &request, progress).await? {
        Launch::Job(id) => id,
        Launch::Ended(trained) => return Ok(trained),
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
    let mut follower = Follower::new(cx, run, attempt, progress);
    match follower.follow(&job_id).await {
        Some(outcome) => follower.finished(outcome, started),
        None => follower.interrupted(&job_id).await,
    }
}

/// Evaluates the run's model, unless the sweep is stopping; an interrupted
/// evaluation restarts on resume.
async fn evaluate(
    cx: &SweepContext,
    run: &RunRecord,
    work: Work,
    model: &str,
    stopped: bool,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<RunEnd, StoreError> {
    let mut shutdown = cx.options.shutdown.clone();
    if *shutdown.borrow() {
        return Ok(RunEnd::Interrupted);
    }
    tokio::select! {
        ok = evaluate::evaluate_run(cx, run, model, progress) => {
            let trained = work.trains();
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
