//! Providers: who trains a run and answers chat completions. The shapes
//! follow the OpenAI fine-tuning protocol (upload a file, create a job,
//! follow its events and checkpoints, complete with the model), so a hosted
//! provider fits the same scheduler.

pub mod local;
pub mod openai;

use crate::data::{ChatFile, Message};
use crate::plan::RunConfig;

/// A provider error. The message never holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("unknown file `{0}`")]
    UnknownFile(String),
    #[error("unknown job `{0}`")]
    UnknownJob(String),
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("the model `{model}` cannot be loaded: {reason}")]
    BadModel { model: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the training task stopped unexpectedly: {0}")]
    Crashed(String),
}

/// What a fine-tuning job is asked to do.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub base_model: String,
    pub training_file: String,
    pub validation_file: String,
    pub hyperparameters: RunConfig,
    /// Goes into the model id (`ft:<base>:<org>:<suffix>:<id>`).
    pub suffix: String,
}

/// Something a job reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A minibatch step.
    Step { step: u64, total_steps: u64, epoch: u32, train_loss: f64, train_accuracy: f64 },
    /// The end of an epoch: full validation metrics and the epoch's model.
    Checkpoint {
        epoch: u32,
        step: u64,
        model: String,
        train_loss: f64,
        train_accuracy: f64,
        valid_loss: Option<f64>,
        valid_accuracy: Option<f64>,
    },
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Succeeded {
        model: String,
        trained_tokens: u64,
    },
    Failed {
        code: String,
        message: String,
    },
    /// Stopped on request; `trained_tokens` is what was trained until then.
    Cancelled {
        trained_tokens: u64,
    },
}

/// A chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: String,
    /// The model's probability of its reply, when it knows it.
    pub probability: Option<f64>,
}

/// The providers ftsweep knows; a closed set, dispatched by `match`.
pub enum Provider {
    Local(local::LocalProvider),
}

impl Provider {
    /// Makes a data file available to jobs; returns its file id.
    pub async fn upload(&self, file: &ChatFile) -> Result<String, ProviderError> {
        match self {
            Provider::Local(p) => Ok(p.upload(file)),
        }
    }

    /// Starts a fine-tuning job; returns its id.
    pub async fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        match self {
            Provider::Local(p) => p.create_job(request),
        }
    }

    /// Follows a job to its end, handing each event to `on_event`.
    pub async fn follow_job(
        &self,
        job_id: &str,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        match self {
            Provider::Local(p) => p.follow_job(job_id, on_event).await,
        }
    }

    /// Answers a conversation with a model.
    pub async fn complete(&self, model: &str, messages: &[Message]) -> Result<Completion, ProviderError> {
        match self {
            Provider::Local(p) => p.complete(model, messages),
        }
    }
}
