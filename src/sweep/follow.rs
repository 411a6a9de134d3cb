//! Following one run's job: a [`Follower`] takes the provider's events one
//! method each (steps, validations, checkpoints), batches their metric rows
//! into the store per epoch (and every few seconds within one, for `status`),
//! reports the steps (throttled), feeds the validations to early stopping (whose
//! verdict cancels the job), and records how the job ended: succeeded,
//! stopped early, failed, cancelled, or left as it was on an interrupt.

use std::time::Instant;

use tokio::sync::watch;

use super::decide::retryable_code;
use super::task::Trained;
use super::{METRICS_EVERY, Progress, STEP_EVERY, SweepContext};
use crate::provider::{JobEvent, JobOutcome, ProviderError};
use crate::run::{Origin, RunRecord};
use crate::spec::StopMetric;
use crate::stopping::Stopper;
use crate::store::{CheckpointRow, MetricRow, StoreError, TrainingResult};

/// What following one attempt's job has seen so far.
pub(super) struct Follower<'a> {
    cx: &'a SweepContext,
    run: &'a RunRecord,
    attempt: i64,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
    /// The epochs of the parent chain (a continuation), and of this job.
    epochs_before: u32,
    job_epochs: Option<f64>,
    /// Metric rows not yet written: they go with the epoch's checkpoint.
    pending: Vec<MetricRow>,
    last_checkpoint: Option<CheckpointRow>,
    last_train_accuracy: Option<f64>,
    last_validation: Option<(f64, Option<f64>)>,
    /// A write that failed during the job: raised once it has ended.
    store_error: Option<StoreError>,
    /// Early stopping, if the sweep asks for it, and its verdict.
    stopper: Option<(Stopper, StopMetric)>,
    verdict: watch::Sender<Option<String>>,
    steps_per_epoch: Option<f64>,
    /// The last step reported, of how many: a cancelled job whose provider
    /// does not say what it trained is charged that share of its estimate.
    progress_steps: (u64, u64),
    /// When the last [`Progress::Step`] was reported, and the metric rows last written.
    step_reported: Option<Instant>,
    metrics_written: Instant,
}

impl<'a> Follower<'a> {
    pub(super) fn new(
        cx: &'a SweepContext,
        run: &'a RunRecord,
        attempt: i64,
        progress: &'a (dyn Fn(Progress) + Send + Sync),
    ) -> Follower<'a> {
        let stopper = cx.spec.early_stopping.map(|cfg| {
            let stopper = match run.origin {
                Origin::Continue { .. } => Stopper::continuing(cfg),
                _ => Stopper::new(cfg),
            };
            (stopper, cfg.metric)
        });
        Follower {
            cx,
            run,
            attempt,
            progress,
            epochs_before: run.origin.parent_epochs().unwrap_or(0),
            job_epochs: crate::run::job_epochs(&run.origin, run.config.n_epochs).map(f64::from),
            pending: Vec::new(),
            last_checkpoint: None,
            last_train_accuracy: None,
            last_validation: None,
            store_error: None,
            stopper,
            verdict: watch::channel(None).0,
            steps_per_epoch: None,
            progress_steps: (0, 0),
            step_reported: None,
            metrics_written: Instant::now(),
        }
    }

    /// Follows the job to its end, cancelling it once early stopping gives
    /// its verdict (the job then ends `cancelled`); `None`: the sweep was
    /// interrupted first.
    pub(super) async fn follow(&mut self, job_id: &str) -> Option<Result<JobOutcome, ProviderError>> {
        let (cx, run) = (self.cx, self.run);
        let mut verdict = self.verdict.subscribe();
        let mut shutdown = cx.options.shutdown.clone();
        let mut on_event = |event: JobEvent| self.event(event);
        let follow = cx.provider.follow_job(job_id, &mut on_event);
        tokio::pin!(follow);
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                outcome = &mut follow => return Some(outcome),
                _ = shutdown.wait_for(|s| *s) => return None,
                changed = verdict.changed(), if !cancel_sent => {
                    if changed.is_err() {
                        // No verdict can come any more.
                        cancel_sent = true;
                        continue;
                    }
                }
            }
            cancel_sent = true;
            // The job ends `cancelled`; following it goes on to that end.
            if let Err(e) = cx.provider.cancel_job(job_id).await {
                tracing::warn!(run = %run.run_id, "early stopping could not cancel job {job_id}: {e}");
            }
        }
    }

    fn event(&mut self, event: JobEvent) {
        match event {
            JobEvent::Validation { step, epoch, valid_loss, valid_accuracy } => {
                self.validation(step, epoch, valid_loss, valid_accuracy)
            }
            JobEvent::Step { step, total_steps, epoch, train_loss, train_accuracy } => {
                self.step(step, total_steps, epoch, train_loss, train_accuracy)
            }
            JobEvent::Checkpoint { epoch, step, model, train_loss, train_accuracy, valid_loss, valid_accuracy } => {
                let checkpoint =
                    CheckpointRow { epoch, step, model, train_loss: Some(train_loss), valid_loss, valid_accuracy };
                self.checkpoint(checkpoint, train_accuracy)
            }
        }
    }

    fn validation(&mut self, step: u64, epoch: u32, valid_loss: f64, valid_accuracy: Option<f64>) {
        self.check_stop(step, epoch, Some(valid_loss), valid_accuracy);
        self.last_validation = Some((valid_loss, valid_accuracy));
        // A validation within an epoch is a step row with a loss; one at an
        // epoch's last step (or where the steps per epoch are unknown) is the epoch's.
        let epoch_end = self.steps_per_epoch.is_none_or(|per| {
            let at = step as f64 / per;
            (at - at.round()).abs() * per < 0.5
        });
        self.pending.push(MetricRow {
            step,
            epoch,
            epoch_end,
            train_loss: None,
            train_accuracy: None,
            valid_loss: Some(valid_loss),
            valid_accuracy,
        });
        self.write_due();
    }

    fn step(&mut self, step: u64, total_steps: u64, epoch: u32, train_loss: f64, train_accuracy: f64) {
        self.progress_steps = (step.max(self.progress_steps.0), total_steps);
        if let Some(n) = self.job_epochs.filter(|_| total_steps > 0) {
            self.steps_per_epoch = Some(total_steps as f64 / n);
        }
        if !train_loss.is_finite() {
            // A loss that is not finite is divergence, whatever the validation says.
            self.check_stop(step, epoch, Some(train_loss), None);
        }
        self.pending.push(MetricRow {
            step,
            epoch,
            epoch_end: false,
            train_loss: Some(train_loss),
            train_accuracy: Some(train_accuracy),
            valid_loss: None,
            valid_accuracy: None,
        });
        self.report_step(step, total_steps, epoch, train_loss);
        self.write_due();
    }

    /// Reports a step, at most every [`STEP_EVERY`] (and the job's last step), so that a fast
    /// local job does not flood the display.
    fn report_step(&mut self, step: u64, total_steps: u64, epoch: u32, train_loss: f64) {
        let last = total_steps > 0 && step >= total_steps;
        if !last && self.step_reported.is_some_and(|t| t.elapsed() < STEP_EVERY) {
            return;
        }
        self.step_reported = Some(Instant::now());
        (self.progress)(Progress::Step {
            run_id: self.run.run_id.clone(),
            step,
            total_steps: (total_steps > 0).then_some(total_steps),
            epoch,
            n_epochs: self.run.config.n_epochs,
            train_loss: train_loss.is_finite().then_some(train_loss),
        });
    }

    /// Writes the rows not yet written when the last write is [`METRICS_EVERY`] old: a hosted
    /// job's checkpoints come only at its end, and `status` reads a job's progress from them.
    fn write_due(&mut self) {
        if self.pending.is_empty() || self.metrics_written.elapsed() < METRICS_EVERY {
            return;
        }
        let written = self.cx.store.lock().record_progress(&self.run.run_id, self.attempt, &self.pending, None);
        if let Err(e) = written {
            self.store_error.get_or_insert(e);
        }
        self.pending.clear();
        self.metrics_written = Instant::now();
    }

    /// An epoch's end: its rows and checkpoint are written together.
    fn checkpoint(&mut self, checkpoint: CheckpointRow, train_accuracy: f64) {
        let CheckpointRow { epoch, step, train_loss, valid_loss, valid_accuracy, .. } = checkpoint;
        self.check_stop(step, epoch, valid_loss, valid_accuracy);
        self.pending.push(MetricRow {
            step,
            epoch,
            epoch_end: true,
            train_loss,
            train_accuracy: Some(train_accuracy),
            valid_loss,
            valid_accuracy,
        });
        let written =
            self.cx.store.lock().record_progress(&self.run.run_id, self.attempt, &self.pending, Some(&checkpoint));
        if let Err(e) = written {
            self.store_error.get_or_insert(e);
        }
        self.pending.clear();
        self.metrics_written = Instant::now();
        self.last_train_accuracy = Some(train_accuracy);
        self.last_checkpoint = Some(checkpoint);
        let run = self.run;
        (self.progress)(Progress::Epoch {
            run_id: run.run_id.clone(),
            epoch,
            n_epochs: run.config.n_epochs,
            valid_loss,
        });
    }

    /// Early stopping's look at a validation (or a diverged training loss);
    /// a verdict is sent once, to [`Follower::follow`], which cancels the job.
    fn check_stop(&mut self, step: u64, epoch: u32, loss: Option<f64>, accuracy: Option<f64>) {
        let Some((stopper, metric)) = self.stopper.as_mut() else { return };
        if self.verdict.borrow().is_some() {
            return;
        }
        let at = f64::from(self.epochs_before)
            + self.steps_per_epoch.filter(|s| *s > 0.0).map_or(f64::from(epoch), |per_epoch| step as f64 / per_epoch);
        let value = match metric {
            StopMetric::ValidLoss => loss,
            StopMetric::ValidAccuracy => accuracy,
        };
        if let Some(reason) = value.and_then(|v| stopper.observe(at, v)) {
            self.verdict.send_replace(Some(reason.describe(*metric)));
        }
    }

    /// The job ended: the rows not yet written go to the store, then its
    /// outcome is recorded.
    pub(super) fn finished(
        mut self,
        outcome: Result<JobOutcome, ProviderError>,
        started: Instant,
    ) -> Result<Trained, StoreError> {
        let stop_reason = self.verdict.borrow().clone();
        if !self.pending.is_empty() {
            self.cx.store.lock().record_progress(&self.run.run_id, self.attempt, &self.pending, None)?;
        }
        if let Some(e) = self.store_error.take() {
            return Err(e);
        }
        match outcome {
            Ok(JobOutcome::Succeeded { model, trained_tokens }) => self.succeeded(model, trained_tokens, started),
            Ok(JobOutcome::Cancelled { trained_tokens }) if stop_reason.is_some() => {
                self.stopped(&stop_reason.unwrap_or_default(), trained_tokens, started)
            }
            Ok(JobOutcome::Failed { code, message }) => Ok(Self::failed(&code, &message)),
            Ok(JobOutcome::Cancelled { trained_tokens }) => self.cancelled(trained_tokens),
            Err(e) => Ok(Trained::Failed { reason: format!("following the job failed: {e}"), retryable: false }),
        }
    }

    fn succeeded(self, model: String, trained_tokens: u64, started: Instant) -> Result<Trained, StoreError> {
        let (cx, run) = (self.cx, self.run);
        if let Some(price) = cx.options.price {
            cx.store.lock().set_cost(&run.run_id, crate::pricing::cost(trained_tokens, price.training))?;
        }
        let last = self.last_checkpoint.as_ref();
        let last_validation = self.last_validation;
        cx.store.lock().finish_training(
            &run.run_id,
            &TrainingResult {
                model: model.clone(),
                trained_tokens: trained_tokens as i64,
                train_loss: last.and_then(|c| c.train_loss).filter(|l| l.is_finite()),
                train_accuracy: self.last_train_accuracy.filter(|a| a.is_finite()),
                valid_loss: last.and_then(|c| c.valid_loss).or(last_validation.map(|v| v.0)),
                valid_accuracy: last.and_then(|c| c.valid_accuracy).or(last_validation.and_then(|v| v.1)),
                seconds: started.elapsed().as_secs_f64(),
            },
        )?;
        Ok(Trained::Model { model, stopped: false })
    }

    /// The job was cancelled by early stopping's verdict.
    fn stopped(self, reason: &str, trained_tokens: u64, started: Instant) -> Result<Trained, StoreError> {
        let trained_tokens = match (trained_tokens, self.progress_steps) {
            (0, (step, total)) if total > 0 => {
                let (estimate, _) = self.cx.options.estimate(self.run);
                (estimate as f64 * step.min(total) as f64 / total as f64).round() as u64
            }
            (t, _) => t,
        };
        stopped_early(self.cx, self.run, reason, trained_tokens, started, self.progress)
    }

    /// The job failed: another attempt is worth it when the failure is the provider's.
    fn failed(code: &str, message: &str) -> Trained {
        Trained::Failed { reason: format!("the job failed ({code}): {message}"), retryable: retryable_code(code) }
    }

    /// The job was cancelled by someone else (`ftsweep cancel`, the provider).
    fn cancelled(self, trained_tokens: u64) -> Result<Trained, StoreError> {
        let run_id = &self.run.run_id;
        self.cx.store.lock().set_cancelled(run_id, "the job was cancelled", Some(trained_tokens as i64))?;
        (self.progress)(Progress::Interrupted { run_id: run_id.clone(), note: "the job was cancelled".into() });
        Ok(Trained::Interrupted)
    }

    /// Leaves a run whose job was being followed when the sweep was
    /// interrupted: a hosted job keeps running (and is adopted on resume)
    /// unless `--cancel-on-interrupt`; a local job dies with the process, so
    /// its run goes back to `planned`.
    pub(super) async fn interrupted(self, job_id: &str) -> Result<Trained, StoreError> {
        let (cx, run) = (self.cx, self.run);
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
        (self.progress)(Progress::Interrupted { run_id: run.run_id.clone(), note });
        Ok(Trained::Interrupted)
    }
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
    let metric = cx.spec.early_stopping.map_or(StopMetric::ValidLoss, |e| e.metric);
    let mut store = cx.store.lock();
    if let Some(price) = cx.options.price {
        store.set_cost(&run.run_id, crate::pricing::cost(trained_tokens, price.training))?;
    }
    let checkpoints = store.run_checkpoints(&run.run_id)?;
    let value = |c: &CheckpointRow| match metric {
        StopMetric::ValidLoss => c.valid_loss.filter(|l| l.is_finite()).map(|l| -l),
        StopMetric::ValidAccuracy => c.valid_accuracy.filter(|a| a.is_finite()),
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
