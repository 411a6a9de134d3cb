//! The OpenAI provider: a sweep's runs as fine-tuning jobs on any server
//! that speaks the OpenAI protocol (OpenAI, Azure OpenAI, a gateway,
//! `ftsweep serve`). Uploads are keyed by content hash and server; jobs carry
//! metadata tags so that a create whose answer was lost is found again
//! instead of being sent twice.

pub mod client;
pub mod results;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// How long a running job's events go unread at first when nothing needs
/// them as they come (then twice as long after each read): `status` shows
/// a hosted job's step from them.
pub const QUIET_EVENTS: Duration = Duration::from_secs(3);

/// A job is first read at this share of its expected length ...
const EARLY: f64 = 0.97;
/// ... then, past it, after this share of it (at least [`TIGHT_MIN`] s), twice as long each time.
const TIGHT: f64 = 0.03;
const TIGHT_MIN: f64 = 0.02;
/// A job that had ended when first read makes the next expectations this much shorter.
const SHRINK: f64 = 0.95;

/// The provider.
pub struct OpenAiProvider {
    pub client: Client,
    store: SharedStore,
    poll: PollPolicy,
    /// See [`OpenAiProvider::set_live_events`].
    live_events: AtomicBool,
    /// The lengths of the jobs this provider saw succeed, to expect the next ones'.
    pace: Mutex<Pace>,
    /// The jobs this provider created: their training file and epochs.
    created: Mutex<HashMap<String, (String, f64)>>,
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
        OpenAiProvider {
            client,
            store,
            poll,
            live_events: AtomicBool::new(false),
            pace: Mutex::new(Pace::default()),
            created: Mutex::new(HashMap::new()),
            wait_until_processed: false,
            find_by_suffix: false,
        }
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
        let remember = |id: &str| {
            if let Some(epochs) = hp.n_epochs {
                lock(&self.created).insert(id.to_string(), (request.training_file.clone(), f64::from(epochs)));
            }
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
                Ok(job) => {
                    remember(&job.id);
                    return Ok(job.id);
                }
                Err(e) if e.may_have_taken_effect() => {
                    tracing::warn!(error = %e, "a job create's answer was lost: looking for the job by its metadata");
                    let suffix = self.find_by_suffix.then_some(body.suffix.as_deref()).flatten();
                    if let Some(job) = self.find_job_by(&request.metadata, suffix).await? {
                        remember(&job.id);
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

    /// Whether a running job's events are needed as they come (early
    /// stopping reads its validations): then they are read at every poll.
    pub fn set_live_events(&self, live: bool) {
        self.live_events.store(live, Ordering::Relaxed);
    }

    /// Follows a job to its end, reporting its metrics events and, when it
    /// succeeds, its checkpoints (read once).
    ///
    /// Quietly: the job is read when it is expected to have ended (from the
    /// pace of this provider's finished jobs on the same training file, else
    /// from the job's progress, else its `estimated_finish`), a little early
    /// and then at tightening intervals; with no expectation, at intervals
    /// growing from `min` to `max`. Its events are read when the job changed
    /// since the last read, at its end, and else every [`QUIET_EVENTS`],
    /// doubling (for `status`); with [`set_live_events`](Self::set_live_events),
    /// at every poll, the poll interval reset to `min` whenever something new came.
    pub async fn follow_job(
        &self,
        job_id: &str,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        let started = Instant::now();
        let live = self.live_events.load(Ordering::Relaxed);
        let mut events = EventsSeen::default();
        let mut interval = self.poll.min;
        let mut last: Option<serde_json::Value> = None;
        let mut last_poll: Option<f64> = None;
        let mut overdue = 0i32;
        let quiet = quiet_events();
        let (mut events_every, mut events_at) = (quiet, quiet.as_secs_f64());
        let mut peeked = false;
        // A job created here is first read when it may have ended (or after
        // `min`); one adopted from an earlier process, at once.
        let created = lock(&self.created).get(job_id).cloned();
        if let Some((file, epochs)) = created {
            let first = lock(&self.pace).predict(&file, epochs).map_or(self.poll.min.as_secs_f64(), |t| EARLY * t);
            tokio::time::sleep(Duration::from_secs_f64(first.min(self.poll.max.as_secs_f64()))).await;
        }
        loop {
            let path = ["fine_tuning", "jobs", job_id];
            let raw: serde_json::Value =
                self.client.json(Method::GET, &path, &[], Body::None, Kind::Poll, Retry::Always).await?;
            let polled = started.elapsed().as_secs_f64();
            let job: Job =
                serde_json::from_value(raw.clone()).map_err(|e| ApiError::Decode(format!("{e} in job `{job_id}`")))?;
            let n_epochs = job_epochs(&job);
            let status = JobStatus::parse(&job.status);
            let changed = last.as_ref().is_some_and(|l| *l != raw);
            if status.is_terminal() {
                self.drain_events(job_id, &mut events, started, n_epochs, on_event).await?;
                if status == JobStatus::Succeeded
                    && let Some(epochs) = n_epochs
                {
                    // The job ended between the last two reads: the middle,
                    // when they were close; else (an upper bound) the last.
                    let (end, exact) = match last_poll {
                        Some(before) if polled - before <= 0.1 * polled => ((polled + before) / 2.0, true),
                        _ => (polled, false),
                    };
                    lock(&self.pace).record(&job.training_file, epochs, end, exact);
                }
                return self.finish(&job, status, events.steps, n_epochs, on_event).await;
            }
            let mut fresh = 0;
            if live || changed || polled >= events_at {
                fresh = self.drain_events(job_id, &mut events, started, n_epochs, on_event).await?;
                if polled >= events_at {
                    events_every *= 2;
                    events_at = polled + events_every.as_secs_f64();
                }
            }
            let running = status == JobStatus::Running;
            let pace = n_epochs.and_then(|e| lock(&self.pace).predict(&job.training_file, e));
            if running && pace.is_none() && events.progress.is_none() && !peeked && !live {
                // Nothing tells how long the job lasts yet: its newest step does.
                peeked = true;
                events.progress = self.peek_progress(job_id, started).await?;
            }
            let expected = pace
                .or_else(|| events.progress.map(|(step, total, at)| at * total as f64 / step as f64))
                .or_else(|| estimated_end(&job, polled))
                .filter(|_| matches!(status, JobStatus::Running | JobStatus::Queued | JobStatus::ValidatingFiles));
            let now = started.elapsed().as_secs_f64();
            let wait = if live {
                interval = if changed || fresh > 0 { self.poll.min } else { interval.mul_f64(1.5).min(self.poll.max) };
                interval.as_secs_f64()
            } else {
                match expected {
                    Some(total) if now < EARLY * total => EARLY * total - now,
                    Some(total) => {
                        // Past the expected end: tighter reads, growing slowly.
                        overdue += 1;
                        (TIGHT * total).max(TIGHT_MIN) * 2f64.powi(overdue - 1)
                    }
                    None => {
                        let wait = interval.as_secs_f64();
                        interval = interval.mul_f64(1.5).min(self.poll.max);
                        wait
                    }
                }
            };
            last = Some(raw);
            last_poll = Some(polled);
            let mut wait = wait.clamp(TIGHT_MIN, self.poll.max.as_secs_f64());
            // The events fall due before the next read of the job: read them alone then.
            while !live && now + wait > events_at {
                let until = (events_at - started.elapsed().as_secs_f64()).max(0.0);
                tokio::time::sleep(Duration::from_secs_f64(until)).await;
                self.drain_events(job_id, &mut events, started, n_epochs, on_event).await?;
                let at = started.elapsed().as_secs_f64();
                events_every *= 2;
                events_at = at + events_every.as_secs_f64();
                wait = (now + wait - at).max(0.0);
            }
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    /// The newest step of a running job (and when it was seen, in seconds
    /// since `started`), from its newest events; they are read again in full later.
    async fn peek_progress(&self, job_id: &str, started: Instant) -> Result<Option<(u64, u64, f64)>, ProviderError> {
        let path = ["fine_tuning", "jobs", job_id, "events"];
        let q = [("limit".to_string(), "10".to_string())];
        let page: List<crate::wire::openai::JobEvent> =
            self.client.json(Method::GET, &path, &q, Body::None, Kind::Events, Retry::Always).await?;
        let at = started.elapsed().as_secs_f64();
        Ok(page.data.iter().find_map(|e| step_of(e).map(|(s, t)| (s, t, at))))
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

    /// Reads the events not seen yet (newest first on the wire: the pages
    /// from the newest down to the first one seen, with `after` for the next
    /// page) and reports the metrics ones oldest first; returns how many
    /// steps were reported.
    async fn drain_events(
        &self,
        job_id: &str,
        seen: &mut EventsSeen,
        started: Instant,
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
                if seen.ids.contains(&e.id) {
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
        if let Some((step, total)) = fresh.iter().find_map(step_of) {
            seen.progress = Some((step, total, started.elapsed().as_secs_f64()));
        }
        let mut steps = 0;
        for e in fresh.iter().rev() {
            seen.ids.insert(e.id.clone());
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
        seen.steps += steps;
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

/// [`QUIET_EVENTS`]; debug builds only: `FTSWEEP_TEST_QUIET_EVENTS_SECS`
/// sets it, so that tests can tell the reads at a job's changes from the ones by the clock.
fn quiet_events() -> Duration {
    let set = std::env::var("FTSWEEP_TEST_QUIET_EVENTS_SECS").ok().and_then(|v| v.parse::<f64>().ok());
    match set {
        Some(s) if cfg!(debug_assertions) && s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
        _ => QUIET_EVENTS,
    }
}

/// A job's events read so far: their ids, the steps reported, and the
/// newest step (of how many, seen when, in seconds since following began).
#[derive(Default)]
struct EventsSeen {
    ids: HashSet<String>,
    steps: usize,
    progress: Option<(u64, u64, f64)>,
}

/// The step and total steps of a metrics event.
fn step_of(e: &crate::wire::openai::JobEvent) -> Option<(u64, u64)> {
    let m = serde_json::from_value::<Metrics>(integral_steps(e.data.clone()?)).ok()?;
    Some((m.step?, m.total_steps?)).filter(|(s, t)| *s > 0 && *t > 0)
}

/// When the server expects the job to end, in seconds since following
/// began (`polled` is now, in those seconds), from its `estimated_finish`.
fn estimated_end(job: &Job, polled: f64) -> Option<f64> {
    let at = job.estimated_finish? as f64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    Some(polled + (at - now).max(0.0))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lengths of succeeded jobs, by training file: (epochs, seconds from
/// following the job to its end). A job's length is about proportional to
/// the tokens it trains (its epochs times the tokens of the file), plus a
/// wait that is the same for every job (validation, a hosted queue).
#[derive(Default)]
struct Pace {
    jobs: HashMap<String, Lengths>,
}

/// The lengths seen on one training file.
struct Lengths {
    /// Known closely: the job was seen running shortly before it was seen ended.
    exact: Vec<(f64, f64)>,
    /// Upper bounds: it had ended when it was first read near its expected end.
    upper: Vec<(f64, f64)>,
    /// What the expectation is scaled by: less after each job that had
    /// ended when first read (it was shorter than expected), back to 1 on an exact length.
    shrink: f64,
}

impl Pace {
    fn record(&mut self, training_file: &str, epochs: f64, seconds: f64, exact: bool) {
        let l = self.jobs.entry(training_file.to_string()).or_insert(Lengths {
            exact: Vec::new(),
            upper: Vec::new(),
            shrink: 1.0,
        });
        if exact {
            l.exact.push((epochs, seconds));
            l.shrink = 1.0;
        } else {
            l.upper.push((epochs, seconds));
            l.shrink = (l.shrink * SHRINK).max(0.5);
        }
    }

    fn predict(&self, training_file: &str, epochs: f64) -> Option<f64> {
        let l = self.jobs.get(training_file)?;
        let seen = if l.exact.is_empty() { &l.upper } else { &l.exact };
        expected_length(seen, epochs).map(|t| t * l.shrink)
    }
}

/// A job's expected length from the (epochs, seconds) of finished ones: the
/// least-squares line when they trained two or more different epochs and its
/// slope is positive, else in proportion to the epochs.
fn expected_length(jobs: &[(f64, f64)], epochs: f64) -> Option<f64> {
    if jobs.is_empty() || epochs <= 0.0 {
        return None;
    }
    let n = jobs.len() as f64;
    let (mx, my) = (jobs.iter().map(|j| j.0).sum::<f64>() / n, jobs.iter().map(|j| j.1).sum::<f64>() / n);
    let sxx: f64 = jobs.iter().map(|j| (j.0 - mx).powi(2)).sum();
    let sxy: f64 = jobs.iter().map(|j| (j.0 - mx) * (j.1 - my)).sum();
    if sxx > 0.0 && sxy > 0.0 {
        let slope = sxy / sxx;
        let intercept = (my - slope * mx).max(0.0);
        return Some(intercept + slope * epochs);
    }
    Some(my / mx * epochs)
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
    fn the_pace_prefers_close_lengths_and_shrinks_after_jobs_that_ended_sooner() {
        let mut pace = Pace::default();
        assert_eq!(pace.predict("f", 3.0), None);
        pace.record("f", 6.0, 2.0, false);
        assert_eq!(pace.predict("f", 3.0), Some(1.0 * SHRINK), "an upper bound, shrunk");
        pace.record("f", 6.0, 2.4, true);
        assert_eq!(pace.predict("f", 3.0), Some(1.2), "the close length alone, unshrunk");
        assert_eq!(pace.predict("other", 3.0), None, "by training file");
    }

    #[test]
    fn a_jobs_length_is_expected_from_the_finished_ones() {
        assert_eq!(expected_length(&[], 3.0), None);
        assert_eq!(expected_length(&[(6.0, 2.0)], 3.0), Some(1.0), "in proportion to the epochs");
        let line = expected_length(&[(6.0, 2.5), (3.0, 1.5), (1.0, 0.833_333_333_333_333_4)], 2.0).unwrap();
        assert!((line - 1.166_666).abs() < 1e-3, "a fixed wait plus a pace: {line}");
        assert_eq!(expected_length(&[(3.0, 1.0), (3.0, 2.0)], 6.0), Some(3.0), "one epoch count: the mean pace");
    }

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
