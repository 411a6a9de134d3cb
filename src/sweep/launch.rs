//! Getting a run's job at the provider: the job request (a continuation
//! trains its parent's model), then the job itself, adopted when an earlier
//! process created it (its recorded id, or found by its metadata tags) or
//! created, waiting in the queue while the provider refuses for now. The
//! run's claim committed the intent (`launching`, the attempt, the estimate
//! in the budget) before anything here calls the provider.

use super::task::Trained;
use super::{Progress, SweepContext, job_tags, now_secs};
use crate::provider::JobRequest;
use crate::run::{Origin, RunConfig, RunRecord};
use crate::store::StoreError;

/// What getting the job gave.
pub(super) enum Launch {
    Job(String),
    /// No job to follow: the attempt ended so.
    Ended(Trained),
}

/// The job request of a run's attempt; `Err`: why there can be none (a
/// continuation whose parent has no model).
pub(super) fn request(
    cx: &SweepContext,
    run: &RunRecord,
    attempt: i64,
    (training_file, validation_file): &(String, String),
) -> Result<Result<JobRequest, String>, StoreError> {
    // A continuation trains its parent's model for the epochs it adds.
    let base_model = match &run.origin {
        Origin::Continue { parent, .. } => match cx.store.lock().run(parent)?.and_then(|p| p.model) {
            Some(model) => model,
            None => return Ok(Err(format!("its parent run {parent} has no model to continue"))),
        },
        _ => cx.base_model.clone(),
    };
    let job_epochs = crate::run::job_epochs(&run.origin, run.config.n_epochs);
    Ok(Ok(JobRequest {
        base_model,
        training_file: training_file.clone(),
        validation_file: validation_file.clone(),
        hyperparameters: RunConfig { n_epochs: job_epochs, ..run.config.clone() },
        method: cx.spec.method,
        suffix: run.run_id.clone(),
        metadata: job_tags(&cx.sweep_name, &run.run_id, attempt),
    }))
}

/// The run's job: when `resuming`, the one recorded or found by its tags,
/// else (or when there is none) a new one.
pub(super) async fn job(
    cx: &SweepContext,
    run: &RunRecord,
    resuming: bool,
    request: &JobRequest,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Launch, StoreError> {
    let known = if resuming { run.job_id.clone() } else { None };
    let found = match known {
        Some(id) => Ok(Some(id)),
        None if resuming => cx.provider.find_job(&request.metadata).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(id)) => Ok(Launch::Job(id)),
        Ok(None) => create(cx, run, request, progress).await,
        Err(e) => {
            // The provider cannot say whether the job exists: leave the run
            // as it is (launching), to be reconciled by the next start.
            progress(Progress::Interrupted {
                run_id: run.run_id.clone(),
                note: format!("cannot look up the run's job, left to reconcile on the next start: {e}"),
            });
            Ok(Launch::Ended(Trained::Interrupted))
        }
    }
}

/// Creates the job; a launch the provider refuses for now (a daily cap)
/// waits in the queue, its intent kept, and is tried again.
async fn create(
    cx: &SweepContext,
    run: &RunRecord,
    request: &JobRequest,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Launch, StoreError> {
    loop {
        if *cx.options.shutdown.borrow() {
            return Ok(Launch::Ended(Trained::Interrupted));
        }
        let e = match cx.provider.create_job(request).await {
            Ok(id) => return Ok(Launch::Job(id)),
            Err(e) => e,
        };
        let Some(wait) = e.queue_for(cx.options.daily_limit_wait) else {
            let reason = format!("creating the job failed: {e}");
            return Ok(Launch::Ended(Trained::Failed { reason, retryable: e.is_provider_side() }));
        };
        // The provider refused the launch for now: the run waits in the
        // queue, its intent kept.
        let reason = format!("{e}");
        cx.store.lock().queue(&run.run_id, now_secs() + wait.as_secs_f64(), &reason)?;
        progress(Progress::Queued { run_id: run.run_id.clone(), reason, wait });
        let mut shutdown = cx.options.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => continue,
            _ = shutdown.wait_for(|s| *s) => return Ok(Launch::Ended(Trained::Interrupted)),
        }
    }
}
