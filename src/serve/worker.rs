//! A job's life after it is created: validate its files, wait for a training slot, train on the
//! local provider (from `local/ngram` or continuing the job's `ft:` model) while recording events,
//! checkpoints and the result CSV, and end `succeeded`, `failed` or `cancelled`. A terminal status
//! is final: a cancelled job's worker records no more events, only the tokens it trained.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::files::{RESULTS_PURPOSE, file_object};
use super::objects::{message_event, metrics_event};
use super::{App, new_id, unix_now};
use crate::data::{ChatFile, parse_chat_jsonl, sha256_hex};
use crate::provider::local::{KEPT_CHECKPOINTS, resolve};
use crate::provider::{JobEvent as TrainingEvent, JobOutcome, JobRequest, ProviderError};
use crate::run::{BATCH_SIZE, LEARNING_RATE_MULTIPLIER, RunConfig, Value};
use crate::space::BETA;
use crate::store::StoreError;
use crate::store::serve::ServeStore;
use crate::wire::openai::{
    Checkpoint, HyperValue, Hyperparameters, Job, JobError, JobEvent, JobStatus, Method, Metrics,
};

/// The event of a Together job's `uploading` stage.
pub const UPLOADING_MESSAGE: &str = "Uploading output model";

/// The beta a DPO job's `auto` resolves to (Together's default).
const DEFAULT_BETA: f64 = 0.1;

/// OpenAI's minimum number of training examples.
const MIN_EXAMPLES: usize = 10;

/// What the server can ask of a job while its worker runs.
#[derive(Default)]
pub struct Control {
    cancelled: AtomicBool,
    /// The local provider's id of the training, once it started.
    provider_job: Mutex<Option<String>>,
}

impl Control {
    fn provider_job(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.provider_job.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts a worker for a job.
pub fn spawn(app: &Arc<App>, job_id: &str) {
    let control = Arc::new(Control::default());
    app.controls().insert(job_id.to_string(), control.clone());
    let (app, id) = (app.clone(), job_id.to_string());
    tokio::spawn(async move {
        let worker = tokio::spawn(work(app.clone(), id.clone(), control));
        if let Err(e) = worker.await {
            // The worker panicked: the job must not stay unfinished forever.
            let failed = end(&app, &id, "failed", |_, job| {
                job.error = Some(job_error("server_error", format!("the job's worker stopped: {e}"), None));
                Ok(vec![message_event("error", "The job failed because of a server error")])
            });
            if let Err(e) = failed {
                tracing::error!("job {id}: {e}");
            }
        }
        app.controls().remove(&id);
    });
}

/// Asks a job's worker to stop: a queued job never starts, a training one stops after its step.
pub fn cancel(app: &App, job_id: &str) {
    let control = app.controls().get(job_id).cloned();
    if let Some(control) = control {
        control.cancelled.store(true, Ordering::SeqCst);
        if let Some(provider_job) = control.provider_job().clone() {
            app.provider.cancel_job(&provider_job);
        }
    }
}

/// Re-queues the jobs a stopped server left unfinished: they train again from the start.
pub fn resume(app: &Arc<App>) -> Result<(), StoreError> {
    let jobs = app.store.lock().jobs()?;
    // Oldest first, so they queue in the order they were created.
    for mut job in jobs.into_iter().rev().filter(|j| !JobStatus::parse(&j.status).is_terminal()) {
        {
            let mut store = app.store.lock();
            store.forget_attempt(&job.id)?;
            let message = format!(
                "The server restarted while the job was {}: it is queued again and trains from the start",
                job.status
            );
            job.status = "validating_files".into();
            store.update_job(&job)?;
            store.insert_events(&job.id, &[message_event("warn", message)])?;
        }
        spawn(app, &job.id);
    }
    Ok(())
}

fn job_error(code: &str, message: String, param: Option<&str>) -> JobError {
    JobError { code: Some(code.into()), message: Some(message), param: param.map(str::to_string) }
}

/// Moves an unfinished job to `status`, letting `change` edit it and write more (under the same
/// lock) and return events to add. Returns false, changing nothing, if the job is finished.
fn advance(
    app: &App,
    id: &str,
    status: &str,
    change: impl FnOnce(&mut ServeStore, &mut Job) -> Result<Vec<JobEvent>, StoreError>,
) -> Result<bool, StoreError> {
    let mut store = app.store.lock();
    let Some(mut job) = store.job(id)? else { return Ok(false) };
    if JobStatus::parse(&job.status).is_terminal() {
        return Ok(false);
    }
    job.status = status.into();
    let events = change(&mut store, &mut job)?;
    store.update_job(&job)?;
    store.insert_events(id, &events)?;
    Ok(true)
}

/// Ends a job in a terminal status.
fn end(
    app: &App,
    id: &str,
    status: &str,
    change: impl FnOnce(&mut ServeStore, &mut Job) -> Result<Vec<JobEvent>, StoreError>,
) -> Result<bool, StoreError> {
    tracing::info!(job = id, status, "job ended");
    advance(app, id, status, |store, job| {
        job.finished_at = Some(unix_now());
        job.estimated_finish = None;
        change(store, job)
    })
}

fn fail(app: &App, id: &str, error: JobError) -> Result<bool, StoreError> {
    let message = format!("Fine-tuning job failed: {}", error.message.clone().unwrap_or_default());
    end(app, id, "failed", |_, job| {
        job.error = Some(error);
        Ok(vec![message_event("error", message)])
    })
}

async fn work(app: Arc<App>, id: String, control: Arc<Control>) {
    if let Err(e) = run(&app, &id, &control).await {
        tracing::error!("job {id}: {e}");
        if let Err(e) = fail(&app, &id, job_error("server_error", format!("the server's database failed: {e}"), None)) {
            tracing::error!("job {id}: {e}");
        }
    }
}

/// A validated file handed to the local provider.
struct Input {
    provider_id: String,
    examples: usize,
}

/// Reads and parses one of the job's files; a bad file is the job's error, and so is a training
/// file whose lines are not of the job's method (preference pairs for DPO, chat lines for SFT),
/// as OpenAI's `invalid_training_file`. A DPO job's validation file may hold either kind: the
/// preferred output is the reference.
fn read_input(app: &App, file_id: &str, param: &str, dpo: bool) -> Result<Result<Input, JobError>, StoreError> {
    let code = format!("invalid_{param}");
    let file = app.store.lock().file(file_id)?;
    let content = app.store.read_content(file_id)?;
    let (Some(file), Some(content)) = (file, content) else {
        return Ok(Err(job_error(
            &code,
            format!("The file {file_id} was deleted before the job could read it."),
            Some(param),
        )));
    };
    let conversations = match parse_chat_jsonl(Path::new(&file.filename), &content) {
        Ok(c) => c,
        Err(e) => {
            let at = e.line.map_or(String::new(), |l| format!(":{l}"));
            let message = format!("{}{at}: {} (file {file_id})", file.filename, e.message);
            return Ok(Err(job_error(&code, message, Some(param))));
        }
    };
    let wrong = conversations.iter().find(|c| c.is_preference() != dpo && (param == "training_file" || !dpo));
    if let Some(c) = wrong {
        let message = if dpo {
            format!(
                "{}:{}: a DPO job's training file must hold preference pairs (`input`, `preferred_output`, \
                 `non_preferred_output`) on every line, and this line is a chat example (file {file_id})",
                file.filename, c.line
            )
        } else {
            format!(
                "{}:{}: a preference pair (`input`, `preferred_output`, `non_preferred_output`) in the {} of a \
                 supervised job; create the job with `method: {{type: \"dpo\"}}` for preference data (file {file_id})",
                file.filename,
                c.line,
                param.replace('_', " ")
            )
        };
        return Ok(Err(job_error(&code, message, Some(param))));
    }
    if param == "training_file" && conversations.len() < MIN_EXAMPLES {
        let message = format!(
            "Training file {file_id} has {} example(s), but must have at least {MIN_EXAMPLES} examples.",
            conversations.len()
        );
        return Ok(Err(job_error(&code, message, Some(param))));
    }
    let examples = conversations.len();
    let chat = ChatFile {
        path: file.filename.into(),
        sha256: sha256_hex(&content),
        bytes: content.len() as u64,
        conversations,
    };
    Ok(Ok(Input { provider_id: app.provider.upload(&chat), examples }))
}

/// The whole life of a job; store errors end it as failed (by `work`).
async fn run(app: &Arc<App>, id: &str, control: &Control) -> Result<(), StoreError> {
    let Some(job) = app.store.lock().job(id)? else { return Ok(()) };
    let mut checking = format!("Validating training file: {}", job.training_file);
    if let Some(v) = &job.validation_file {
        checking.push_str(&format!(" and validation file: {v}"));
    }
    app.store.lock().insert_events(id, &[message_event("info", checking)])?;
    let dpo = is_dpo(&job);
    let training = match read_input(app, &job.training_file, "training_file", dpo)? {
        Ok(input) => input,
        Err(error) => return fail(app, id, error).map(drop),
    };
    let mut events = Vec::new();
    let validation = match &job.validation_file {
        Some(file_id) => match read_input(app, file_id, "validation_file", dpo)? {
            Ok(input) => input.provider_id,
            Err(error) => return fail(app, id, error).map(drop),
        },
        None => {
            let message = format!(
                "No validation file was given: validation metrics are measured on the training file {}",
                job.training_file
            );
            events.push(message_event("info", message));
            training.provider_id.clone()
        }
    };
    events.push(message_event("info", "Files validated, moving job to queued state"));
    if !advance(app, id, "queued", |_, _| Ok(events))? {
        return Ok(());
    }

    // At most `max_running` jobs train at the same time; the permit is held until the end.
    let Ok(_permit) = app.slots.clone().acquire_owned().await else { return Ok(()) };
    let requested = requested_config(&job);
    let config = resolve(&requested, training.examples as u64);
    let multiplier = requested.learning_rate_multiplier().unwrap_or(1.0);
    let resolved = Hyperparameters {
        n_epochs: Some(HyperValue::Int(i64::from(config.n_epochs))),
        batch_size: Some(HyperValue::Int(i64::from(config.batch_size))),
        learning_rate_multiplier: Some(HyperValue::Float(multiplier)),
        beta: None,
    };
    let estimated_finish = estimated_finish(app, training.examples as u64, config.batch_size, config.n_epochs);
    let started = advance(app, id, "running", |_, job| {
        record_resolved(job, resolved, requested.float(BETA));
        job.estimated_finish = Some(estimated_finish);
        Ok(vec![message_event("info", "Fine-tuning job started")])
    })?;
    if !started {
        return Ok(());
    }
    tracing::info!(job = id, "job running");
    let request = JobRequest {
        base_model: job.model.clone(),
        training_file: training.provider_id,
        validation_file: validation,
        hyperparameters: {
            let mut hp = RunConfig { n_epochs: Some(config.n_epochs), seed: config.seed, ..RunConfig::default() };
            hp.set(BATCH_SIZE, Some(Value::Int(i64::from(config.batch_size))));
            hp.set(LEARNING_RATE_MULTIPLIER, Some(Value::Float(multiplier)));
            hp
        },
        method: if dpo { crate::space::Method::Dpo } else { crate::space::Method::Sft },
        suffix: job.user_provided_suffix.clone().unwrap_or_default(),
        metadata: job.metadata.clone().unwrap_or_default(),
    };
    let provider_job = match app.provider.create_job(&request) {
        Ok(p) => p,
        // The model was checked when the job was created; its weights are gone or damaged.
        Err(e @ (ProviderError::ModelNotFound(_) | ProviderError::BadModel { .. })) => {
            let message = format!("The model {} cannot be fine-tuned: {e}", job.model);
            return fail(app, id, job_error("model_not_available", message, Some("model"))).map(drop);
        }
        Err(e) => return fail(app, id, job_error("server_error", e.to_string(), None)).map(drop),
    };
    app.store.lock().set_provider_job(id, &provider_job)?;
    *control.provider_job() = Some(provider_job.clone());
    // A cancel that came before the provider job was known is passed on now.
    if control.cancelled.load(Ordering::SeqCst) {
        app.provider.cancel_job(&provider_job);
    }

    let mut recorder = Recorder::new(app.clone(), id, control);
    let outcome = app.provider.follow_job(&provider_job, &mut |e| recorder.on_event(e)).await;
    recorder.finish()?;
    match outcome {
        Ok(JobOutcome::Succeeded { model, trained_tokens }) => {
            let csv = match results_csv(&recorder.rows) {
                Ok(csv) => csv,
                Err(e) => return fail(app, id, job_error("server_error", e.to_string(), None)).map(drop),
            };
            // Together's jobs pass through `uploading` (the output model is stored) before they end.
            if app.protocol == super::Protocol::Together
                && !advance(app, id, "uploading", |_, _| Ok(vec![message_event("info", UPLOADING_MESSAGE)]))?
            {
                return Ok(());
            }
            end(app, id, "succeeded", |store, job| {
                let results = file_object("step_metrics.csv", RESULTS_PURPOSE, csv.len());
                store.insert_file(&results, &csv)?;
                job.result_files = vec![results.id];
                job.fine_tuned_model = Some(model.clone());
                job.trained_tokens = Some(trained_tokens);
                Ok(vec![
                    message_event("info", format!("New fine-tuned model created: {model}")),
                    message_event("info", "The job has successfully completed"),
                ])
            })
            .map(drop)
        }
        Ok(JobOutcome::Failed { code, message }) => {
            let param = (code == "invalid_training_file").then_some("training_file");
            fail(app, id, job_error(&code, message, param)).map(drop)
        }
        Ok(JobOutcome::Cancelled { trained_tokens }) => cancelled(app, id, trained_tokens),
        Err(e) => fail(app, id, job_error("server_error", e.to_string(), None)).map(drop),
    }
}

/// When a job starting now is expected to end, as OpenAI's `estimated_finish` (unix seconds, while
/// it runs): the delay model, each step pausing per example of its batch.
fn estimated_finish(app: &App, examples: u64, batch_size: u32, n_epochs: u32) -> i64 {
    let steps = examples.div_ceil(u64::from(batch_size.max(1))) * u64::from(n_epochs);
    let length = app.provider.example_delay().as_secs_f64() * (steps * u64::from(batch_size)) as f64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    (now + length).ceil() as i64
}

/// Records what a cancelled training trained (the job is usually `cancelled` already: the cancel
/// request ended it), and ends it `cancelled` if it is not finished.
fn cancelled(app: &App, id: &str, trained_tokens: u64) -> Result<(), StoreError> {
    let mut store = app.store.lock();
    let Some(mut job) = store.job(id)? else { return Ok(()) };
    match JobStatus::parse(&job.status) {
        JobStatus::Cancelled => {}
        s if s.is_terminal() => return Ok(()),
        _ => {
            job.status = "cancelled".into();
            job.finished_at = Some(unix_now());
            job.estimated_finish = None;
        }
    }
    job.trained_tokens = Some(trained_tokens);
    store.update_job(&job)
}

/// The job's requested hyperparameters, `None` for auto.
fn requested_config(job: &Job) -> RunConfig {
    let from_method = job.method.as_ref().and_then(Method::hyperparameters).cloned();
    let hp = from_method.or_else(|| job.hyperparameters.clone()).unwrap_or_default();
    let number = |v: Option<HyperValue>| v.and_then(HyperValue::number);
    let mut config = RunConfig::supervised(
        number(hp.n_epochs).map(|x| x as u32),
        number(hp.batch_size).map(|x| x as u32),
        number(hp.learning_rate_multiplier),
        job.seed.unwrap_or(0) as u64,
    );
    config.set(BETA, number(hp.beta).map(Value::Float));
    config
}

/// Records the hyperparameters a job trains with in its `method` (and, but for a DPO job of
/// OpenAI's protocol, its `hyperparameters`). A DPO job's `auto` beta resolves to 0.1 (Together's
/// default); the local trainer has no preference objective and trains on the preferred outputs,
/// so beta changes nothing in its training.
fn record_resolved(job: &mut Job, resolved: Hyperparameters, beta: Option<f64>) {
    if is_dpo(job) {
        let resolved = Hyperparameters { beta: Some(HyperValue::Float(beta.unwrap_or(DEFAULT_BETA))), ..resolved };
        job.hyperparameters = job.hyperparameters.is_some().then(|| Hyperparameters { beta: None, ..resolved.clone() });
        job.method = Some(Method::dpo(resolved));
    } else {
        job.hyperparameters = Some(resolved.clone());
        job.method = Some(Method::supervised(resolved));
    }
}

/// Whether a job trains DPO (its `method` says so).
pub fn is_dpo(job: &Job) -> bool {
    job.method.as_ref().is_some_and(|m| m.kind == "dpo")
}

/// The result file: `step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`, with
/// empty validation cells on steps without validation.
fn results_csv(rows: &[Metrics]) -> std::io::Result<Vec<u8>> {
    let cell = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])?;
    for m in rows {
        csv.write_record([
            m.step.unwrap_or(0).to_string(),
            cell(m.train_loss),
            cell(m.train_mean_token_accuracy),
            cell(m.valid_loss),
            cell(m.valid_mean_token_accuracy),
        ])?;
    }
    csv.into_inner().map_err(|e| e.into_error())
}

/// Turns the provider's events into the job's events, checkpoints and result rows. A step's
/// metrics wait for the next event, so the last step of an epoch carries the epoch's validation.
struct Recorder<'a> {
    app: Arc<App>,
    id: String,
    control: &'a Control,
    pending: Option<Metrics>,
    events: Vec<JobEvent>,
    /// An epoch's checkpoint not written yet.
    checkpoint: Option<(u32, Checkpoint)>,
    rows: Vec<Metrics>,
    flushed: Instant,
}

impl<'a> Recorder<'a> {
    fn new(app: Arc<App>, id: &str, control: &'a Control) -> Recorder<'a> {
        let (events, checkpoint, rows, flushed) = (Vec::new(), None, Vec::new(), Instant::now());
        Recorder { app, id: id.to_string(), control, pending: None, events, checkpoint, rows, flushed }
    }

    fn on_event(&mut self, event: TrainingEvent) {
        if self.control.cancelled.load(Ordering::SeqCst) {
            return;
        }
        let result = match event {
            TrainingEvent::Step { step, total_steps, train_loss, train_accuracy, .. } => {
                self.emit_pending();
                self.pending = Some(Metrics {
                    step: Some(step),
                    total_steps: Some(total_steps),
                    train_loss: Some(train_loss),
                    train_mean_token_accuracy: Some(train_accuracy),
                    ..Metrics::default()
                });
                // Steps are written in batches, at least every tenth of a second.
                if self.events.len() >= 200 || self.flushed.elapsed() >= Duration::from_millis(100) {
                    self.flush()
                } else {
                    Ok(())
                }
            }
            TrainingEvent::Validation { step, valid_loss, valid_accuracy, .. } => {
                let fallback = Metrics { step: Some(step), ..Metrics::default() };
                let m = self.validated(step, fallback, Some(valid_loss), valid_accuracy);
                self.push(m);
                Ok(())
            }
            TrainingEvent::Checkpoint {
                epoch,
                step,
                model,
                train_loss,
                train_accuracy,
                valid_loss,
                valid_accuracy,
            } => {
                let fallback = Metrics {
                    step: Some(step),
                    train_loss: Some(train_loss),
                    train_mean_token_accuracy: Some(train_accuracy),
                    ..Metrics::default()
                };
                let m = self.validated(step, fallback, valid_loss, valid_accuracy);
                self.push(m.clone());
                self.events.push(message_event(
                    "info",
                    format!("Checkpoint created at step {step} with Snapshot ID: {model}"),
                ));
                let checkpoint = Checkpoint {
                    id: new_id("ftckpt_"),
                    object: "fine_tuning.job.checkpoint".into(),
                    created_at: unix_now(),
                    fine_tuning_job_id: self.id.clone(),
                    step_number: step,
                    fine_tuned_model_checkpoint: model,
                    metrics: Metrics { total_steps: None, ..m },
                };
                self.checkpoint = Some((epoch, checkpoint));
                self.flush()
            }
        };
        if let Err(e) = result {
            tracing::error!("job {}: recording progress failed: {e}", self.id);
        }
    }

    /// The metrics of `step` (the waiting step's, else `fallback`) with a full validation pass.
    fn validated(&mut self, step: u64, fallback: Metrics, loss: Option<f64>, accuracy: Option<f64>) -> Metrics {
        let mut m = self.pending.take().filter(|m| m.step == Some(step)).unwrap_or(fallback);
        // The local trainer validates on the whole validation set: both kinds of validation
        // metrics are that pass.
        (m.valid_loss, m.valid_mean_token_accuracy) = (loss, accuracy);
        (m.full_valid_loss, m.full_valid_mean_token_accuracy) = (loss, accuracy);
        m
    }

    fn push(&mut self, m: Metrics) {
        self.events.push(metrics_event(&m));
        self.rows.push(m);
    }

    fn emit_pending(&mut self) {
        if let Some(m) = self.pending.take() {
            self.push(m);
        }
    }

    /// Writes the events and checkpoint so far, unless the job has finished meanwhile (it was
    /// cancelled): nothing follows a job's last event.
    fn flush(&mut self) -> Result<(), StoreError> {
        let (events, checkpoint) = (std::mem::take(&mut self.events), self.checkpoint.take());
        self.flushed = Instant::now();
        if events.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        let mut store = self.app.store.lock();
        if store.job(&self.id)?.is_none_or(|j| JobStatus::parse(&j.status).is_terminal()) {
            return Ok(());
        }
        store.insert_events(&self.id, &events)?;
        match checkpoint {
            Some((epoch, c)) => store.insert_checkpoint(&self.id, epoch, &c, KEPT_CHECKPOINTS),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        if !self.control.cancelled.load(Ordering::SeqCst) {
            self.emit_pending();
        }
        self.flush()
    }
}
