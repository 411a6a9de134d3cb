//! The local provider: fine-tunes the embedded reply classifier on the CPU,
//! with jobs, events, checkpoints (the last three epochs) and chat
//! completions shaped like a hosted fine-tune's. Weights live in the store.

pub mod trainer;

use std::collections::HashMap;
use std::ops::ControlFlow;
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

/// The embedded provider.
pub struct LocalProvider {
    store: SharedStore,
    files: Mutex<HashMap<String, Arc<UploadedFile>>>,
    jobs: Mutex<HashMap<String, mpsc::UnboundedReceiver<Message2Scheduler>>>,
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
    pub fn new(store: SharedStore) -> LocalProvider {
        LocalProvider { store, files: Mutex::default(), jobs: Mutex::default(), models: Mutex::default() }
    }

    pub(super) fn upload(&self, file: &ChatFile) -> String {
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

    pub(super) fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
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
        let store = self.store.clone();
        let job = job_id.clone();
        tokio::task::spawn_blocking(move || {
            let end = train_job(&job, &model_id, &config, &training, &validation, &store, &tx);
            // The follower may be gone (the process is stopping): nothing to tell.
            let _ = tx.send(Message2Scheduler::End(end));
        });
        Ok(job_id)
    }

    pub(super) async fn follow_job(
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

    pub(super) fn complete(&self, model: &str, messages: &[Message]) -> Result<Completion, ProviderError> {
        let m = self.model(model)?;
        let context: Vec<(String, String)> = messages.iter().map(|m| (m.role.clone(), m.content.clone())).collect();
        let (content, probability) = m.top(&context);
        Ok(Completion { content, probability: Some(probability) })
    }

    fn model(&self, id: &str) -> Result<Arc<ReplyModel>, ProviderError> {
        if let Some(m) = self.models.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(m.clone());
        }
        let bytes = self.store.lock().load_local_model(id)?;
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
        n_epochs: hp.n_epochs.unwrap_or_else(|| crate::plan::default_epochs(n_examples)),
        batch_size: hp.batch_size.unwrap_or_else(|| (n_examples.div_ceil(500)).clamp(1, 256) as u32),
        learning_rate: trainer::BASE_LEARNING_RATE * hp.learning_rate_multiplier.unwrap_or(1.0),
        seed: hp.seed,
    }
}

/// Trains one job on this (blocking) thread, saving a checkpoint per epoch
/// and the final model, and streaming events to the follower.
fn train_job(
    job_id: &str,
    model_id: &str,
    config: &TrainConfig,
    training: &UploadedFile,
    validation: &UploadedFile,
    store: &SharedStore,
    tx: &mpsc::UnboundedSender<Message2Scheduler>,
) -> JobOutcome {
    let mut save_error = None;
    let mut epochs_done = 0u32;
    let mut on_event = |event: TrainEvent<'_>| {
        let event = match event {
            TrainEvent::Step { step, total_steps, epoch, train_loss, train_accuracy } => {
                JobEvent::Step { step, total_steps, epoch, train_loss, train_accuracy }
            }
            TrainEvent::Epoch { epoch, step, train_loss, train_accuracy, valid_loss, valid_accuracy, model } => {
                let checkpoint = format!("{model_id}:ckpt-step-{step}");
                let saved =
                    store.lock().save_local_model(&checkpoint, job_id, epoch, &model.to_bytes(), KEPT_CHECKPOINTS);
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
    let saved =
        store.lock().save_local_model(model_id, job_id, epochs_done, &summary.model.to_bytes(), KEPT_CHECKPOINTS);
    if let Err(e) = saved {
        return JobOutcome::Failed { code: "server_error".into(), message: format!("saving the model failed: {e}") };
    }
    JobOutcome::Succeeded { model: model_id.to_string(), trained_tokens: training.tokens * u64::from(epochs_done) }
}
