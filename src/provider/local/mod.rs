//! The local provider: fine-tunes the embedded reply classifier on the CPU,
//! with jobs, events, checkpoints (the last three epochs) and chat
//! completions shaped like a hosted fine-tune's. Weights live in a `ModelRepo`.

pub mod trainer;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::sync::mpsc;

use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError};
use crate::data::{ChatFile, Conversation, Message, file_tokens};
use crate::plan::RunConfig;
use crate::store::SharedStore;
use trainer::{Example, ReplyModel, TrainConfig, TrainEvent};

/// The local provider's one model family.
pub const BASE_MODEL: &str = "local/ngram";

/// How many epoch checkpoints a job keeps, like OpenAI.
pub const KEPT_CHECKPOINTS: u32 = 3;

struct UploadedFile {
    examples: Arc<Vec<Example>>,
    tokens: u64,
}

enum Message2Scheduler {
    Event(JobEvent),
    End(JobOutcome),
}

/// Where the local provider keeps trained weights: the sweep's database, or
/// `ftsweep serve`'s own.
pub trait ModelRepo: Send + Sync + 'static {
    /// Saves a model's weights; keeps only the job's last `keep` epochs.
    fn save_model(&self, model: &str, job_id: &str, epoch: u32, weights: &[u8], keep: u32) -> Result<(), String>;
    /// A model's weights, if it exists.
    fn load_model(&self, model: &str) -> Result<Option<Vec<u8>>, String>;
}

impl ModelRepo for SharedStore {
    fn save_model(&self, model: &str, job_id: &str, epoch: u32, weights: &[u8], keep: u32) -> Result<(), String> {
        self.lock().save_local_model(model, job_id, epoch, weights, keep).map_err(|e| e.to_string())
    }

    fn load_model(&self, model: &str) -> Result<Option<Vec<u8>>, String> {
        self.lock().load_local_model(model).map_err(|e| e.to_string())
    }
}

/// The embedded provider.
pub struct LocalProvider {
    repo: Arc<dyn ModelRepo>,
    files: Mutex<HashMap<String, Arc<UploadedFile>>>,
    jobs: Mutex<HashMap<String, mpsc::UnboundedReceiver<Message2Scheduler>>>,
    cancels: Mutex<HashMap<String, Arc<AtomicBool>>>,
    models: Mutex<HashMap<String, Arc<ReplyModel>>>,
}

/// Turns a conversation into a training example: the messages before the
/// last assistant turn, and that turn.
pub fn example(c: &Conversation) -> Example {
    Example {
        context: c.prompt().iter().map(|m| (m.role.clone(), m.content.clone())).collect(),
        reply: c.reference().unwrap_or_default().trim().to_string(),
    }
}

impl LocalProvider {
    pub fn new(repo: Arc<dyn ModelRepo>) -> LocalProvider {
        LocalProvider {
            repo,
            files: Mutex::default(),
            jobs: Mutex::default(),
            cancels: Mutex::default(),
            models: Mutex::default(),
        }
    }

    /// Makes a file's conversations available to jobs; returns its file id
    /// (derived from the content hash, so the same file has the same id).
    pub fn upload(&self, file: &ChatFile) -> String {
        let id = format!("file-{}", &file.sha256[..24]);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.entry(id.clone()).or_insert_with(|| {
            Arc::new(UploadedFile {
                examples: Arc::new(file.conversations.iter().map(example).collect()),
                tokens: file_tokens(file),
            })
        });
        id
    }

    fn file(&self, id: &str) -> Result<Arc<UploadedFile>, ProviderError> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.get(id).cloned().ok_or_else(|| ProviderError::UnknownFile(id.to_string()))
    }

    /// Starts training on a blocking thread; returns the job id.
    pub fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        let training = self.file(&request.training_file)?;
        let validation = self.file(&request.validation_file)?;
        let short: String = {
            let mut rng = rand::rng();
            (0..8).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
        };
        let job_id = format!("ftjob-local-{short}");
        let model_id = format!("ft:{}:local:{}:{short}", request.base_model, request.suffix);
        let config = resolve(&request.hyperparameters, training.examples.len() as u64);
        let (tx, rx) = mpsc::unbounded_channel();
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(job_id.clone(), rx);
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(job_id.clone(), cancel.clone());
        let repo = self.repo.clone();
        let job = job_id.clone();
        tokio::task::spawn_blocking(move || {
            let job = LocalJob { id: &job, model_id: &model_id, config: &config, cancel: &cancel };
            let end = train_job(&job, &training, &validation, repo.as_ref(), &tx);
            // The follower may be gone (the process is stopping): nothing to tell.
            let _ = tx.send(Message2Scheduler::End(end));
        });
        Ok(job_id)
    }

    /// Follows a job to its end (once: the events are consumed).
    pub async fn follow_job(
        &self,
        job_id: &str,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        let mut rx = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job_id)
            .ok_or_else(|| ProviderError::UnknownJob(job_id.to_string()))?;
        while let Some(message) = rx.recv().await {
            match message {
                Message2Scheduler::Event(e) => on_event(e),
                Message2Scheduler::End(outcome) => return Ok(outcome),
            }
        }
        Err(ProviderError::Crashed(format!("job `{job_id}` ended without a result")))
    }

    /// Asks a running job to stop after its current step; returns whether
    /// the job was known. Its outcome becomes `Cancelled`.
    pub fn cancel_job(&self, job_id: &str) -> bool {
        match self.cancels.lock().unwrap_or_else(|p| p.into_inner()).get(job_id) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// The model's top reply and its probability.
    pub fn complete(&self, model: &str, messages: &[Message]) -> Result<Completion, ProviderError> {
        // The base model has learnt no replies, as `ftsweep serve` answers for it.
        if model == BASE_MODEL {
            return Ok(Completion { content: String::new(), probability: None });
        }
        let m = self.model(model)?;
        let context: Vec<(String, String)> = messages.iter().map(|m| (m.role.clone(), m.content.clone())).collect();
        let (content, probability) = m.top(&context);
        Ok(Completion { content, probability: Some(probability) })
    }

    /// The model's `k` most probable replies (at least one) with their probabilities, most
    /// probable first: what `top_logprobs` reports.
    pub fn top_replies(
        &self,
        model: &str,
        messages: &[Message],
        k: usize,
    ) -> Result<Vec<(String, f64)>, ProviderError> {
        let m = self.model(model)?;
        let context: Vec<(String, String)> = messages.iter().map(|m| (m.role.clone(), m.content.clone())).collect();
        Ok(m.predict(&context).into_iter().take(k.max(1)).map(|(c, p)| (m.classes()[c].clone(), p)).collect())
    }

    fn model(&self, id: &str) -> Result<Arc<ReplyModel>, ProviderError> {
        if let Some(m) = self.models.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(m.clone());
        }
        let bytes =
            self.repo.load_model(id).map_err(|reason| ProviderError::BadModel { model: id.to_string(), reason })?;
        let bytes = bytes.ok_or_else(|| ProviderError::ModelNotFound(id.to_string()))?;
        let m = Arc::new(
            ReplyModel::from_bytes(&bytes)
                .map_err(|e| ProviderError::BadModel { model: id.to_string(), reason: e.to_string() })?,
        );
        self.models.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), m.clone());
        Ok(m)
    }
}

/// Resolves `"auto"` hyperparameters for the local trainer: epochs by the
/// cookbook's heuristic, a batch of about 0.2 % of the examples (1 to 256),
/// and a multiplier of 1.
pub fn resolve(hp: &RunConfig, n_examples: u64) -> TrainConfig {
    TrainConfig {
        n_epochs: hp.n_epochs.unwrap_or_else(|| crate::data::stats::default_epochs(n_examples)),
        batch_size: hp.batch_size.unwrap_or_else(|| (n_examples.div_ceil(500)).clamp(1, 256) as u32),
        learning_rate: trainer::BASE_LEARNING_RATE * hp.learning_rate_multiplier.unwrap_or(1.0),
        seed: hp.seed,
    }
}

/// Trains one job on this (blocking) thread, saving a checkpoint per epoch
/// and the final model, and streaming events to the follower.
struct LocalJob<'a> {
    id: &'a str,
    model_id: &'a str,
    config: &'a TrainConfig,
    cancel: &'a AtomicBool,
}

fn train_job(
    job: &LocalJob<'_>,
    training: &UploadedFile,
    validation: &UploadedFile,
    repo: &dyn ModelRepo,
    tx: &mpsc::UnboundedSender<Message2Scheduler>,
) -> JobOutcome {
    let mut save_error = None;
    let mut epochs_done = 0u32;
    let (job_id, model_id, config) = (job.id, job.model_id, job.config);
    let mut cancelled = false;
    let mut on_event = |event: TrainEvent<'_>| {
        if job.cancel.load(Ordering::SeqCst) {
            cancelled = true;
            return ControlFlow::Break(());
        }
        let event = match event {
            TrainEvent::Step { step, total_steps, epoch, train_loss, train_accuracy } => {
                JobEvent::Step { step, total_steps, epoch, train_loss, train_accuracy }
            }
            TrainEvent::Epoch { epoch, step, train_loss, train_accuracy, valid_loss, valid_accuracy, model } => {
                let checkpoint = format!("{model_id}:ckpt-step-{step}");
                let saved = repo.save_model(&checkpoint, job_id, epoch, &model.to_bytes(), KEPT_CHECKPOINTS);
                if let Err(e) = saved {
                    save_error = Some(e.to_string());
                    return ControlFlow::Break(());
                }
                epochs_done = epoch;
                JobEvent::Checkpoint {
                    epoch,
                    step,
                    model: checkpoint,
                    train_loss,
                    train_accuracy,
                    valid_loss,
                    valid_accuracy,
                }
            }
        };
        let _ = tx.send(Message2Scheduler::Event(event));
        ControlFlow::Continue(())
    };
    let summary = match trainer::train(&training.examples, &validation.examples, config, None, &mut on_event) {
        Ok(s) => s,
        Err(e) => return JobOutcome::Failed { code: "invalid_training_file".into(), message: e.to_string() },
    };
    if let Some(e) = save_error {
        return JobOutcome::Failed { code: "server_error".into(), message: format!("saving a checkpoint failed: {e}") };
    }
    if cancelled {
        return JobOutcome::Cancelled { trained_tokens: training.tokens * u64::from(epochs_done) };
    }
    let saved = repo.save_model(model_id, job_id, epochs_done, &summary.model.to_bytes(), KEPT_CHECKPOINTS);
    if let Err(e) = saved {
        return JobOutcome::Failed { code: "server_error".into(), message: format!("saving the model failed: {e}") };
    }
    JobOutcome::Succeeded { model: model_id.to_string(), trained_tokens: training.tokens * u64::from(epochs_done) }
}
