//! Following a Together job: the job is polled (fast while it changes,
//! slower while it does not, as the OpenAI provider polls), its `/metrics`
//! read when its step or evaluation counters move, each new training loss
//! reported as a step and each new `eval/loss` as a validation; at the end
//! its checkpoints (`{job_id}:{step}`, the final one its output name), and
//! for a failed job the message of its error event.

use std::collections::BTreeMap;

use reqwest::Method;

use super::{TogetherProvider, decode};
use crate::provider::openai::client::{Body, Kind, Retry};
use crate::provider::openai::epoch_of;
use crate::provider::{JobEvent, JobOutcome, ProviderError};
use crate::wire::together::{Checkpoint, Event, FineTune, JobStatus, List, MetricRow, MetricsAnswer};

/// The curve of a job read so far, by step.
#[derive(Debug, Default)]
struct Curve {
    train: BTreeMap<u64, f64>,
    eval: BTreeMap<u64, f64>,
    /// `train/epoch` where the rows give it.
    epochs: BTreeMap<u64, f64>,
}

impl Curve {
    /// The epoch of `step`: from the rows' `train/epoch` when a row of that
    /// step has it, else from the job's steps and epochs.
    fn epoch_at(&self, step: u64, total_steps: Option<u64>, n_epochs: Option<f64>) -> u32 {
        match self.epochs.get(&step) {
            Some(e) if e.is_finite() && *e > 0.0 => (e - 1e-9).ceil().max(1.0) as u32,
            _ => epoch_of(step, total_steps, n_epochs),
        }
    }

    /// Takes the rows of a metrics answer; reports the training steps after
    /// the last one reported and the validations not reported yet, in order.
    /// Returns how many events were new.
    fn take(
        &mut self,
        rows: &[MetricRow],
        total_steps: Option<u64>,
        n_epochs: Option<f64>,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> usize {
        let mut new = 0;
        for r in rows {
            if let Some(e) = r.epoch {
                self.epochs.insert(r.step, e);
            }
            let epoch = self.epoch_at(r.step, total_steps, n_epochs);
            let last_train = self.train.keys().next_back().copied();
            if let Some(train_loss) = r.train_loss
                && last_train.is_none_or(|l| r.step > l)
            {
                self.train.insert(r.step, train_loss);
                new += 1;
                on_event(JobEvent::Step {
                    step: r.step,
                    total_steps: total_steps.unwrap_or(0),
                    epoch,
                    train_loss,
                    train_accuracy: f64::NAN,
                });
            }
            if let Some(valid_loss) = r.eval_loss
                && !self.eval.contains_key(&r.step)
            {
                self.eval.insert(r.step, valid_loss);
                new += 1;
                on_event(JobEvent::Validation { step: r.step, epoch, valid_loss, valid_accuracy: None });
            }
        }
        new
    }

    /// The last training loss at or before `step`.
    fn train_at(&self, step: u64) -> Option<f64> {
        self.train.range(..=step).next_back().map(|(_, l)| *l)
    }

    /// The last validation at or before `step` within `step`'s epoch.
    fn eval_at(&self, step: u64, epoch_of: impl Fn(u64) -> u32) -> Option<f64> {
        let (at, loss) = self.eval.range(..=step).next_back()?;
        (epoch_of(*at) == epoch_of(step)).then_some(*loss)
    }

    fn last_step(&self) -> Option<u64> {
        self.train.keys().chain(self.eval.keys()).max().copied()
    }
}

/// Polls the job to its end.
pub(super) async fn follow(
    p: &TogetherProvider,
    job_id: &str,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobOutcome, ProviderError> {
    let mut curve = Curve::default();
    let mut interval = p.poll.min;
    let mut last_status = String::new();
    // The counters at the last metrics read: read again only when they move.
    let mut read_at: Option<(Option<u64>, Option<u64>)> = None;
    let mut warned = false;
    loop {
        let path = ["fine-tunes", job_id];
        let job: FineTune = p.client.json(Method::GET, &path, &[], Body::None, Kind::Poll, Retry::Always).await?;
        let status = JobStatus::parse(&job.status);
        let counters = (job.steps_completed, job.evals_completed);
        let has_counters = counters != (None, None);
        let moved = !has_counters || read_at != Some(counters);
        let mut new = 0;
        if status.is_terminal() || (status != JobStatus::Queued && moved) {
            new = read_metrics(p, &job, &mut curve, on_event).await;
            read_at = Some(counters);
        }
        if status.is_terminal() {
            return finish(p, &job, &status, &curve, on_event).await;
        }
        if let JobStatus::Other(s) = &status
            && !warned
        {
            warned = true;
            tracing::warn!(job = job_id, status = %s, "a job status ftsweep does not know: still following it");
        }
        interval =
            if job.status != last_status || new > 0 { p.poll.min } else { interval.mul_f64(1.5).min(p.poll.max) };
        last_status = job.status.clone();
        tokio::time::sleep(interval).await;
    }
}

/// Reads the job's metrics and reports what is new; a failure to read them
/// is logged, not fatal (the job's outcome matters more than its curve).
async fn read_metrics(
    p: &TogetherProvider,
    job: &FineTune,
    curve: &mut Curve,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> usize {
    let path = ["fine-tunes", job.id.as_str(), "metrics"];
    match p.client.json::<MetricsAnswer>(Method::GET, &path, &[], Body::None, Kind::Events, Retry::Always).await {
        Ok(answer) => {
            let rows: Vec<MetricRow> = answer.metrics.iter().filter_map(MetricRow::read).collect();
            curve.take(&rows, job.total_steps, job.n_epochs.map(|n| n as f64), on_event)
        }
        Err(e) => {
            tracing::warn!(job = %job.id, "cannot read the job's metrics: {e}");
            0
        }
    }
}

async fn finish(
    p: &TogetherProvider,
    job: &FineTune,
    status: &JobStatus,
    curve: &Curve,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobOutcome, ProviderError> {
    match status {
        JobStatus::Completed => {
            let model = job
                .model_output_name
                .clone()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| decode(format!("job `{}` completed without a model_output_name", job.id)))?;
            let checkpoints = checkpoints(p, &job.id).await?;
            report_checkpoints(job, &checkpoints, Some(&model), curve, on_event);
            Ok(JobOutcome::Succeeded { model, trained_tokens: job.token_count.unwrap_or(0) })
        }
        JobStatus::Cancelled => {
            // Early stopping takes the best checkpoint the job kept.
            match checkpoints(p, &job.id).await {
                Ok(c) => report_checkpoints(job, &c, None, curve, on_event),
                Err(e) => tracing::warn!(job = %job.id, "cannot read the cancelled job's checkpoints: {e}"),
            }
            Ok(JobOutcome::Cancelled { trained_tokens: cancelled_tokens(job) })
        }
        _ => {
            let (code, message) = failure(p, job, status).await;
            Ok(JobOutcome::Failed { code, message })
        }
    }
}

async fn checkpoints(p: &TogetherProvider, job_id: &str) -> Result<Vec<Checkpoint>, ProviderError> {
    let path = ["fine-tunes", job_id, "checkpoints"];
    let list: List<Checkpoint> =
        p.client.json(Method::GET, &path, &[], Body::None, Kind::Checkpoints, Retry::Always).await?;
    Ok(list.data)
}

/// Reports one checkpoint per epoch (the last of each), oldest first: an
/// intermediate one as `{job_id}:{step}`, the final one as `final_model`
/// (added at the last step when the list lacks it).
fn report_checkpoints(
    job: &FineTune,
    checkpoints: &[Checkpoint],
    final_model: Option<&str>,
    curve: &Curve,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) {
    let mut list: Vec<(u64, bool)> = checkpoints.iter().filter_map(|c| Some((c.step?, c.is_final()))).collect();
    list.sort();
    let last = list.iter().map(|c| c.0).chain(curve.last_step()).chain(job.total_steps).max();
    let total = job.total_steps.or(last);
    let n_epochs = job.n_epochs.map(|n| n as f64);
    let epoch = |step: u64| curve.epoch_at(step, total, n_epochs);
    let mut by_epoch: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    for (step, is_final) in &list {
        let model = match final_model {
            Some(m) if *is_final || Some(*step) == total => m.to_string(),
            _ => format!("{}:{step}", job.id),
        };
        by_epoch.insert(epoch(*step), (*step, model));
    }
    if let (Some(model), Some(step)) = (final_model, last)
        && !by_epoch.values().any(|(_, m)| m == model)
    {
        by_epoch.insert(epoch(step), (step, model.to_string()));
    }
    for (epoch_no, (step, model)) in by_epoch {
        on_event(JobEvent::Checkpoint {
            epoch: epoch_no,
            step,
            model,
            train_loss: curve.train_at(step).unwrap_or(f64::NAN),
            train_accuracy: f64::NAN,
            valid_loss: curve.eval_at(step, epoch),
            valid_accuracy: None,
        });
    }
}

/// What a cancelled job trained: its billed tokens' share of the steps it
/// completed; 0 (the scheduler then estimates from the steps) when unknown.
fn cancelled_tokens(job: &FineTune) -> u64 {
    match (job.token_count, job.steps_completed, job.total_steps) {
        (Some(tokens), Some(done), Some(total)) if total > 0 => {
            (tokens as f64 * done.min(total) as f64 / total as f64).round() as u64
        }
        _ => 0,
    }
}

/// The code and message of a failed job: the message of its last error
/// event (from the job, else its events), the code by whose fault it was
/// (`invalid_input` for a `user_error`, not worth another attempt).
async fn failure(p: &TogetherProvider, job: &FineTune, status: &JobStatus) -> (String, String) {
    let mut events = job.events.clone();
    if !events.iter().any(Event::is_error) {
        let path = ["fine-tunes", job.id.as_str(), "events"];
        match p.client.json::<List<Event>>(Method::GET, &path, &[], Body::None, Kind::Events, Retry::Always).await {
            Ok(list) => events = list.data,
            Err(e) => tracing::warn!(job = %job.id, "cannot read the failed job's events: {e}"),
        }
    }
    let error = events.iter().rev().find(|e| e.is_error());
    let user = *status == JobStatus::UserError
        || error.is_some_and(|e| e.kind.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("job_user_error")));
    let code = if user { "invalid_input" } else { "server_error" };
    let message = error
        .and_then(|e| e.message.clone())
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("the job ended as `{}`", job.status));
    (code.to_string(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(total_steps: Option<u64>, n_epochs: u64) -> FineTune {
        serde_json::from_value(serde_json::json!({
            "id": "ft-1", "status": "completed", "model_output_name": "acct/out",
            "total_steps": total_steps, "n_epochs": n_epochs,
        }))
        .unwrap()
    }

    fn row(step: u64, train: Option<f64>, eval: Option<f64>) -> MetricRow {
        MetricRow { step, train_loss: train, eval_loss: eval, epoch: None }
    }

    #[test]
    fn metrics_become_steps_and_validations_once_each() {
        let mut curve = Curve::default();
        let mut events = Vec::new();
        let rows = [row(1, Some(2.0), None), row(2, Some(1.5), None), row(2, None, Some(1.7))];
        assert_eq!(curve.take(&rows, Some(4), Some(2.0), &mut |e| events.push(e)), 3);
        // The same rows again, and two more: only the new ones are reported.
        let more = [rows[0], rows[1], rows[2], row(3, Some(1.2), None), row(4, Some(1.0), Some(1.1))];
        assert_eq!(curve.take(&more, Some(4), Some(2.0), &mut |e| events.push(e)), 3);
        let kinds: Vec<(String, u64, u32)> = events
            .iter()
            .map(|e| match e {
                JobEvent::Step { step, epoch, .. } => ("step".into(), *step, *epoch),
                JobEvent::Validation { step, epoch, .. } => ("valid".into(), *step, *epoch),
                JobEvent::Checkpoint { .. } => unreachable!(),
            })
            .collect();
        let expect = [("step", 1, 1), ("step", 2, 1), ("valid", 2, 1), ("step", 3, 2), ("step", 4, 2), ("valid", 4, 2)];
        assert_eq!(kinds, expect.map(|(k, s, e)| (k.to_string(), s, e)));
    }

    #[test]
    fn checkpoints_are_one_per_epoch_and_the_last_is_the_output() {
        let mut curve = Curve::default();
        let rows = [row(2, Some(1.5), Some(1.6)), row(4, Some(1.0), None), row(6, Some(0.8), Some(0.9))];
        curve.take(&rows, Some(6), Some(3.0), &mut |_| {});
        let list: Vec<Checkpoint> = serde_json::from_value(serde_json::json!([
            {"step": 4, "checkpoint_type": "Intermediate"},
            {"step": 2, "checkpoint_type": "Intermediate"},
            {"step": 6, "checkpoint_type": "Final Merged"},
            {"step": 6, "checkpoint_type": "Final Adapter"},
        ]))
        .unwrap();
        let mut events = Vec::new();
        report_checkpoints(&job(Some(6), 3), &list, Some("acct/out"), &curve, &mut |e| events.push(e));
        let got: Vec<(u32, u64, String, Option<f64>)> = events
            .into_iter()
            .map(|e| match e {
                JobEvent::Checkpoint { epoch, step, model, valid_loss, .. } => (epoch, step, model, valid_loss),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 2, "ft-1:2".to_string(), Some(1.6)),
                (2, 4, "ft-1:4".to_string(), None),
                (3, 6, "acct/out".to_string(), Some(0.9)),
            ]
        );
        // A list without the final checkpoint still ends with the output model.
        let mut events = Vec::new();
        report_checkpoints(&job(Some(6), 3), &list[..1], Some("acct/out"), &curve, &mut |e| events.push(e));
        assert!(matches!(events.last(), Some(JobEvent::Checkpoint { model, step: 6, .. }) if model == "acct/out"));
        // A cancelled job's checkpoints are all intermediate.
        let mut events = Vec::new();
        report_checkpoints(&job(Some(6), 3), &list[..2], None, &curve, &mut |e| events.push(e));
        assert!(events.iter().all(|e| matches!(e, JobEvent::Checkpoint { model, .. } if model.starts_with("ft-1:"))));
    }

    #[test]
    fn a_cancelled_job_is_charged_its_share_of_the_steps() {
        let mut j = job(Some(10), 1);
        j.token_count = Some(1000);
        j.steps_completed = Some(4);
        assert_eq!(cancelled_tokens(&j), 400);
        j.total_steps = None;
        assert_eq!(cancelled_tokens(&j), 0);
    }
}
