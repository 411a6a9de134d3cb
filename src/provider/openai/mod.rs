//! The OpenAI provider: a sweep's runs as fine-tuning jobs on any server
//! that speaks the OpenAI protocol (OpenAI, Azure OpenAI, a gateway,
//! `ftsweep serve`). Uploads are keyed by content hash and server; jobs carry
//! metadata tags so that a create whose answer was lost is found again
//! instead of being sent twice.

pub mod client;
pub mod results;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::Method;

use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError};
use crate::data::{ChatFile, Prompt};
use crate::spec::Decoding;
use crate::store::SharedStore;
use crate::wire::openai::{
    ChatRequest, ChatResponse, Checkpoint, CreateJob, FileObject, HyperValue, Hyperparameters, Job, JobStatus, List,
    Method as WireMethod, Metrics,
};
use client::{ApiError, Body, Client, Kind, Retry};

/// How often to poll a job: fast at first, slower while nothing changes.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    pub min: Duration,
    pub max: Duration,
    /// How long a fresh model may answer 404 before it counts as missing.
    pub model_load_wait: Duration,
}

impl Default for PollPolicy {
    fn default() -> PollPolicy {
        PollPolicy {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
            model_load_wait: Duration::from_secs(300),
        }
    }
}

/// The provider.
pub struct OpenAiProvider {
    pub client: Client,
    store: SharedStore,
    poll: PollPolicy,
    /// Whether an uploaded file is usable only once its `status` is
    /// `processed` (Azure OpenAI): then it is polled until it is.
    pub wait_until_processed: bool,
    /// Whether a job whose create answer was lost may also be found by its
    /// echoed suffix when no job carries its metadata (Azure OpenAI).
    pub find_by_suffix: bool,
}

/// The processing state of an uploaded file.
#[derive(Debug, serde::Deserialize)]
struct FileStatus {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_details: Option<String>,
}

impl OpenAiProvider {
    pub fn new(client: Client, store: SharedStore, poll: PollPolicy) -> OpenAiProvider {
        OpenAiProvider { client, store, poll, wait_until_processed: false, find_by_suffix: false }
    }

    /// Waits until the file `id` is `processed` (when the provider needs it);
    /// a file the server could not process is an error naming it.
    async fn wait_processed(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        if !self.wait_until_processed {
            return Ok(());
        }
        let mut interval = self.poll.min;
        loop {
            let file: FileStatus =
                self.client.json(Method::GET, &["files", id], &[], Body::None, Kind::Poll, Retry::Always).await?;
            match file.status.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("processed") | None => return Ok(()),
                Some(s @ ("error" | "deleted" | "deleting")) => {
                    let details = file.status_details.filter(|d| !d.trim().is_empty());
                    return Err(ProviderError::Engine {
                        message: format!(
                            "the server could not process the uploaded file `{name}` (file {id}, status `{s}`){}",
                            details.map(|d| format!(": {d}")).unwrap_or_default()
                        ),
                        retryable: false,
                    });
                }
                Some(_) => {
                    tokio::time::sleep(interval).await;
                    interval = (interval.mul_f64(1.5)).min(self.poll.max);
                }
            }
        }
    }

    /// Uploads a training or validation file once per server: a file with the
    /// same content uploaded before (by any run or sweep) is reused.
    pub async fn upload(&self, file: &ChatFile) -> Result<String, ProviderError> {
        let server = self.client.base_url().to_string();
        let known = self.store.lock().upload(&server, &file.sha256)?;
        let name = file.path.file_name().map_or("data.jsonl".into(), |n| n.to_string_lossy().into_owned());
        if let Some(id) = known {
            // The server may have deleted it since: check, and upload again if so.
            match self
                .client
                .json::<FileObject>(Method::GET, &["files", &id], &[], Body::None, Kind::Other, Retry::Always)
                .await
            {
                Ok(_) => {
                    self.wait_processed(&id, &name).await?;
                    return Ok(id);
                }
                Err(e) if e.status() == Some(404) => self.store.lock().forget_upload(&server, &file.sha256)?,
                Err(e) => return Err(e.into()),
            }
        }
        let bytes = std::fs::read(&file.path).map_err(|e| {
            ProviderError::Api(ApiError::Transport {
                reason: format!("cannot read {}: {e}", file.path.display()),
                sent: false,
            })
        })?;
        let body =
            Body::Multipart { file_name: name.clone(), bytes, fields: vec![("purpose".into(), "fine-tune".into())] };
        let uploaded: FileObject =
            self.client.json(Method::POST, &["files"], &[], body, Kind::Upload, Retry::Always).await?;
        self.wait_processed(&uploaded.id, &name).await?;
        self.store.lock().record_upload(&server, &file.sha256, &uploaded.id, file.bytes)?;
        Ok(uploaded.id)
    }

    /// Creates a job. A create is never blindly sent twice: when its answer
    /// is lost, the jobs carrying the request's metadata are listed and the
    /// one found is adopted; only when none exists is the create sent again.
    pub async fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        let hp = &request.hyperparameters;
        let body = CreateJob {
            model: request.base_model.clone(),
            training_file: request.training_file.clone(),
            validation_file: Some(request.validation_file.clone()),
            suffix: Some(request.suffix.chars().take(64).collect()),
            seed: Some(hp.seed as i64),
            metadata: Some(request.metadata.clone()),
            method: Some(method(request)),
            hyperparameters: None,
        };
        for _ in 0..3 {
            let sent = self
                .client
                .json::<Job>(
                    Method::POST,
                    &["fine_tuning", "jobs"],
                    &[],
                    Client::body(&body),
                    Kind::Create,
                    Retry::OnlyIfNotSent,
                )
                .await;
            match sent {
                Ok(job) => return Ok(job.id),
                Err(e) if e.may_have_taken_effect() => {
                    tracing::warn!(error = %e, "a job create's answer was lost: looking for the job by its metadata");
                    let suffix = self.find_by_suffix.then_some(body.suffix.as_deref()).flatten();
                    if let Some(job) = self.find_job_by(&request.metadata, suffix).await? {
                        return Ok(job.id);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ProviderError::Crashed("the job could not be created after 3 tries".into()))
    }

    /// The newest job whose metadata includes every pair of `metadata`.
    pub async fn find_job(&self, metadata: &BTreeMap<String, String>) -> Result<Option<Job>, ProviderError> {
        self.find_job_by(metadata, None).await
    }

    /// The newest job whose metadata includes every pair of `metadata`; when
    /// none has them and a `suffix` is given, the newest job that echoes that
    /// suffix (`suffix` or `user_provided_suffix`), listed without the filter.
    pub async fn find_job_by(
        &self,
        metadata: &BTreeMap<String, String>,
        suffix: Option<&str>,
    ) -> Result<Option<Job>, ProviderError> {
        let mut query: Vec<(String, String)> =
            metadata.iter().map(|(k, v)| (format!("metadata[{k}]"), v.clone())).collect();
        query.push(("limit".into(), "100".into()));
        let tagged = |j: &Job, _: &serde_json::Value| {
            let m = j.metadata.clone().unwrap_or_default();
            metadata.iter().all(|(k, v)| m.get(k) == Some(v))
        };
        if let Some(job) = self.list_jobs_until(&query, &tagged).await? {
            return Ok(Some(job));
        }
        let Some(suffix) = suffix else { return Ok(None) };
        let echoes = |j: &Job, raw: &serde_json::Value| {
            raw.get("suffix").and_then(serde_json::Value::as_str) == Some(suffix)
                || j.user_provided_suffix.as_deref() == Some(suffix)
        };
        self.list_jobs_until(&[("limit".into(), "100".into())], &echoes).await
    }

    /// The first job, newest first, that `matches` (the job and its raw JSON).
    async fn list_jobs_until(
        &self,
        query: &[(String, String)],
        matches: &(dyn Fn(&Job, &serde_json::Value) -> bool + Sync),
    ) -> Result<Option<Job>, ProviderError> {
        let mut after: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            if let Some(a) = &after {
                q.push(("after".into(), a.clone()));
            }
            let page: List<serde_json::Value> = self
                .client
                .json(Method::GET, &["fine_tuning", "jobs"], &q, Body::None, Kind::List, Retry::Always)
                .await?;
            let mut last = None;
            for raw in &page.data {
                let job: Job = serde_json::from_value(raw.clone())
                    .map_err(|e| ApiError::Decode(format!("{e} in a job of the job list")))?;
                // Filter here too: a server that ignores the filter must not make us adopt a stranger.
                if matches(&job, raw) {
                    return Ok(Some(job));
                }
                last = Some(job.id);
            }
            // The list has no `last_id`: the last item's id is the cursor.
            match (page.has_more, last) {
                (true, Some(last)) => after = Some(last),
                _ => return Ok(None),
            }
        }
    }

    /// Cancels a job.
    pub async fn cancel_job(&self, job_id: &str) -> Result<(), ProviderError> {
        let path = ["fine_tuning", "jobs", job_id, "cancel"];
        self.client.json::<Job>(Method::POST, &path, &[], Body::None, Kind::Other, Retry::Always).await?;
        Ok(())
    }

    /// Polls a job to its end, reporting its metrics events and, when it
    /// succeeds, its checkpoints.
    pub async fn follow_job(
        &self,
        job_id: &str,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut steps_seen = 0usize;
        let mut interval = self.poll.min;
        let mut last_status = String::new();
        loop {
            let path = ["fine_tuning", "jobs", job_id];
            let job: Job = self.client.json(Method::GET, &path, &[], Body::None, Kind::Poll, Retry::Always).await?;
            let n_epochs = job_epochs(&job);
            let new_events = self.drain_events(job_id, &mut seen, n_epochs, on_event).await?;
            steps_seen += new_events;
            let status = JobStatus::parse(&job.status);
            if status.is_terminal() {
                return self.finish(&job, status, steps_seen, n_epochs, on_event).await;
            }
            interval = if job.status != last_status || new_events > 0 {
                self.poll.min
            } else {
                (interval.mul_f64(1.5)).min(self.poll.max)
            };
            last_status = job.status.clone();
            tokio::time::sleep(interval).await;
        }
    }

    async fn finish(
        &self,
        job: &Job,
        status: JobStatus,
        steps_seen: usize,
        n_epochs: Option<f64>,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        let trained_tokens = job.trained_tokens.unwrap_or(0);
        match status {
            JobStatus::Succeeded => {
                if steps_seen == 0 {
                    // No metrics events: the result file still has the curve.
                    if let Some(file) = job.result_files.first() {
                        self.replay_result_file(file, n_epochs, on_event).await;
                    }
                }
                let path = ["fine_tuning", "jobs", job.id.as_str(), "checkpoints"];
                let q = [("limit".to_string(), "10".to_string())];
                let page: List<serde_json::Value> =
                    self.client.json(Method::GET, &path, &q, Body::None, Kind::Checkpoints, Retry::Always).await?;
                let mut checkpoints = page
                    .data
                    .into_iter()
                    .map(|v| {
                        serde_json::from_value::<Checkpoint>(integral_steps(v))
                            .map_err(|e| ApiError::Decode(format!("{e} in a checkpoint of job `{}`", job.id)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                checkpoints.sort_by_key(|c| c.step_number);
                let total_steps = checkpoints.last().map_or(0, |c| c.step_number);
                for c in checkpoints {
                    let m = &c.metrics;
                    on_event(JobEvent::Checkpoint {
                        epoch: epoch_of(c.step_number, Some(total_steps), n_epochs),
                        step: c.step_number,
                        // A server that names no checkpoint model deploys it by its id.
                        model: if c.fine_tuned_model_checkpoint.is_empty() {
                            c.id.clone()
                        } else {
                            c.fine_tuned_model_checkpoint.clone()
                        },
                        train_loss: m.train_loss.unwrap_or(f64::NAN),
                        train_accuracy: m.train_mean_token_accuracy.unwrap_or(f64::NAN),
                        valid_loss: m.full_valid_loss.or(m.valid_loss),
                        valid_accuracy: m.full_valid_mean_token_accuracy.or(m.valid_mean_token_accuracy),
                    });
                }
                match &job.fine_tuned_model {
                    Some(model) => Ok(JobOutcome::Succeeded { model: model.clone(), trained_tokens }),
                    None => Err(ProviderError::Api(ApiError::Decode(format!(
                        "job `{}` succeeded without a fine_tuned_model",
                        job.id
                    )))),
                }
            }
            JobStatus::Cancelled => Ok(JobOutcome::Cancelled { trained_tokens }),
            _ => {
                let e = job.error.clone().filter(crate::wire::openai::JobError::is_error).unwrap_or_default();
                Ok(JobOutcome::Failed {
                    code: e.code.unwrap_or_else(|| "unknown".into()),
                    message: e.message.unwrap_or_else(|| format!("the job ended as `{}`", job.status)),
                })
            }
        }
    }

    /// Reads the events not seen yet (newest first on the wire) and reports
    /// the metrics ones oldest first; returns how many steps were reported.
    async fn drain_events(
        &self,
        job_id: &str,
        seen: &mut HashSet<String>,
        n_epochs: Option<f64>,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<usize, ProviderError> {
        let path = ["fine_tuning", "jobs", job_id, "events"];
        let mut fresh = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = vec![("limit".to_string(), "100".to_string())];
            if let Some(a) = &after {
                q.push(("after".into(), a.clone()));
            }
            let page: List<crate::wire::openai::JobEvent> =
                self.client.json(Method::GET, &path, &q, Body::None, Kind::Events, Retry::Always).await?;
            let mut reached_seen = false;
            for e in &page.data {
                if seen.contains(&e.id) {
                    reached_seen = true;
                    break;
                }
                fresh.push(e.clone());
            }
            match (reached_seen, page.has_more, page.data.last()) {
                (false, true, Some(last)) => after = Some(last.id.clone()),
                _ => break,
            }
        }
        let mut steps = 0;
        for e in fresh.iter().rev() {
            seen.insert(e.id.clone());
            if e.kind.as_deref() != Some("metrics") {
                continue;
            }
            let Some(m) = e.data.clone().and_then(|d| serde_json::from_value::<Metrics>(integral_steps(d)).ok()) else {
                continue;
            };
            let Some(step) = m.step else { continue };
            let epoch = epoch_of(step, m.total_steps, n_epochs);
            if let Some(train_loss) = m.train_loss {
                steps += 1;
                on_event(JobEvent::Step {
                    step,
                    total_steps: m.total_steps.unwrap_or(0),
                    epoch,
                    train_loss,
                    train_accuracy: m.train_mean_token_accuracy.unwrap_or(f64::NAN),
                });
            }
            if let Some(valid_loss) = m.full_valid_loss {
                on_event(JobEvent::Validation {
                    step,
                    epoch,
                    valid_loss,
                    valid_accuracy: m.full_valid_mean_token_accuracy,
                });
            }
        }
        Ok(steps)
    }

    async fn replay_result_file(
        &self,
        file_id: &str,
        n_epochs: Option<f64>,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) {
        let path = ["files", file_id, "content"];
        let Ok(bytes) = self.client.send(Method::GET, &path, &[], &Body::None, Kind::Other, Retry::Always).await else {
            return;
        };
        let rows = match results::parse_result_csv(file_id, &bytes) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("{e}: the job's training curve is not replayed from it");
                return;
            }
        };
        let total = rows.last().map(|r| r.step);
        for r in rows {
            if let Some(train_loss) = r.train_loss {
                on_event(JobEvent::Step {
                    step: r.step,
                    total_steps: total.unwrap_or(0),
                    epoch: epoch_of(r.step, total, n_epochs),
                    train_loss,
                    train_accuracy: r.train_accuracy.unwrap_or(f64::NAN),
                });
            }
        }
    }

    /// The decoding settings, for the prediction cache's key.
    pub fn decoding(&self, decoding: &Decoding) -> String {
        format!("openai {} {}", self.client.base_url(), decoding.key("max_completion_tokens"))
    }

    /// Asks a model for the reply to a prompt (with the line's tools) under the decoding
    /// settings. A fresh model may answer 404 while it loads: that is retried for a while.
    pub async fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> Result<Completion, ProviderError> {
        let request = ChatRequest {
            max_completion_tokens: Some(decoding.max_tokens),
            ..ChatRequest::asking(model, prompt, decoding)
        };
        let started = std::time::Instant::now();
        let mut wait = Duration::from_secs(2);
        loop {
            let sent = self
                .client
                .json::<ChatResponse>(
                    Method::POST,
                    &["chat", "completions"],
                    &[],
                    Client::body(&request),
                    Kind::Completion,
                    Retry::Always,
                )
                .await;
            match sent {
                Ok(r) => {
                    let choice = r.choices.into_iter().next().ok_or_else(|| {
                        ProviderError::Api(ApiError::Decode("a chat completion without choices".into()))
                    })?;
                    return Ok(Completion::from(choice));
                }
                Err(e) if e.status() == Some(404) && started.elapsed() + wait < self.poll.model_load_wait => {
                    tracing::info!(model, "the model is not available yet; waiting for it to load");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The job's epochs, once resolved: the top-level hyperparameters' or the
/// method's, whichever is a positive number (Azure reports an `auto` not yet
/// resolved as -1).
fn job_epochs(job: &Job) -> Option<f64> {
    let resolved = |v: Option<HyperValue>| v.and_then(HyperValue::number).filter(|n| *n >= 1.0);
    resolved(job.hyperparameters.as_ref().and_then(|h| h.n_epochs))
        .or_else(|| resolved(job.method.as_ref().and_then(WireMethod::hyperparameters).and_then(|h| h.n_epochs)))
}

/// The create's `method`: `supervised`, or `dpo` with `beta` (`"auto"`
/// unless the run gives it), each with the run's three hyperparameters.
fn method(request: &JobRequest) -> WireMethod {
    let hp = &request.hyperparameters;
    let mut hyperparameters = Hyperparameters {
        n_epochs: Some(HyperValue::int(hp.n_epochs)),
        batch_size: Some(HyperValue::int(hp.batch_size())),
        learning_rate_multiplier: Some(HyperValue::float(hp.learning_rate_multiplier())),
        beta: None,
    };
    match request.method {
        crate::space::Method::Sft => WireMethod::supervised(hyperparameters),
        crate::space::Method::Dpo => {
            hyperparameters.beta = Some(HyperValue::float(hp.float(crate::space::BETA)));
            WireMethod::dpo(hyperparameters)
        }
    }
}

/// `step`, `total_steps` and `step_number` written as whole floats (Azure's
/// checkpoint metrics say `"step": 100.0`) become integers, recursively.
fn integral_steps(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    let whole = x.as_f64().filter(|f| x.is_f64() && f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15);
                    match whole {
                        Some(f) if matches!(k.as_str(), "step" | "total_steps" | "step_number") => {
                            *x = serde_json::Value::from(f as u64);
                        }
                        _ => walk(x),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The epoch a step belongs to, when the job's epochs and steps are known.
pub(crate) fn epoch_of(step: u64, total_steps: Option<u64>, n_epochs: Option<f64>) -> u32 {
    match (total_steps, n_epochs) {
        (Some(total), Some(n)) if total > 0 && n >= 1.0 => {
            let per_epoch = total as f64 / n;
            ((step as f64 / per_epoch).ceil() as u32).max(1)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_derived_from_steps() {
        assert_eq!(epoch_of(1, Some(30), Some(3.0)), 1);
        assert_eq!(epoch_of(10, Some(30), Some(3.0)), 1);
        assert_eq!(epoch_of(11, Some(30), Some(3.0)), 2);
        assert_eq!(epoch_of(30, Some(30), Some(3.0)), 3);
        assert_eq!(epoch_of(5, None, Some(3.0)), 0);
    }

    #[test]
    fn an_unresolved_auto_of_minus_one_is_no_epoch_count() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "ftjob-1", "status": "pending",
            "hyperparameters": {"n_epochs": -1, "batch_size": -1, "learning_rate_multiplier": 1},
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}
        }))
        .unwrap();
        assert_eq!(job_epochs(&job), Some(3.0), "the method's resolved count is taken over the -1");
        let job: Job =
            serde_json::from_value(serde_json::json!({"id": "j", "hyperparameters": {"n_epochs": -1}})).unwrap();
        assert_eq!(job_epochs(&job), None);
        assert_eq!(epoch_of(7, Some(30), job_epochs(&job)), 0, "no division by a negative epoch count");
    }

    #[test]
    fn whole_float_steps_decode_as_integers() {
        let raw = serde_json::json!({"id": "ftchkpt-1", "step_number": 20, "fine_tuned_model_checkpoint": "m",
            "metrics": {"step": 20.0, "train_loss": 0.5, "full_valid_loss": 0.75}});
        let c: Checkpoint = serde_json::from_value(integral_steps(raw)).unwrap();
        assert_eq!((c.step_number, c.metrics.step, c.metrics.train_loss), (20, Some(20), Some(0.5)));
    }
}
