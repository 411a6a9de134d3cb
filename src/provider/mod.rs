//! Providers: who trains a run and answers chat completions. The shapes
//! follow the OpenAI fine-tuning protocol (upload a file, create a job,
//! follow its events and checkpoints, complete with the model), so a hosted
//! provider fits the same scheduler.

pub mod azure;
pub mod command;
pub mod local;
pub mod openai;
pub mod together;

use crate::data::{ChatFile, Prompt};
use crate::run::RunConfig;
use crate::spec::Decoding;

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
    #[error(transparent)]
    Api(#[from] openai::client::ApiError),
    /// The trainer's engine (a local process, a Ray cluster) or the
    /// inference server failed; `retryable` when another try may succeed
    /// (a refused connection, a 5xx).
    #[error("{message}")]
    Engine { message: String, retryable: bool },
}

impl ProviderError {
    /// How long a launch refused for now (a daily cap, a full concurrency
    /// limit) should wait in the queue; `None` if it is not such a refusal.
    pub fn queue_for(&self, default: std::time::Duration) -> Option<std::time::Duration> {
        match self {
            ProviderError::Api(e) => e.queue_for(default),
            _ => None,
        }
    }

    /// Whether the failure is the provider's, so another attempt may succeed.
    pub fn is_provider_side(&self) -> bool {
        match self {
            ProviderError::Api(e) => e.is_provider_side(),
            ProviderError::Crashed(_) => true,
            ProviderError::Engine { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// What a fine-tuning job is asked to do.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub base_model: String,
    pub training_file: String,
    pub validation_file: String,
    pub hyperparameters: RunConfig,
    /// What the job trains: SFT on chat lines, or DPO on preference pairs.
    pub method: crate::space::Method,
    /// Goes into the model id (`ft:<base>:<org>:<suffix>:<id>`).
    pub suffix: String,
    /// Tags that identify the sweep, run and attempt at the provider, so a
    /// job whose creation was not confirmed can be found again.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Something a job reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A minibatch step.
    Step { step: u64, total_steps: u64, epoch: u32, train_loss: f64, train_accuracy: f64 },
    /// A full validation pass without a checkpoint model: within an epoch
    /// (the local provider and `ftsweep serve` validate four times an
    /// epoch), or a hosted job's epoch end whose model is read at the end.
    Validation { step: u64, epoch: u32, valid_loss: f64, valid_accuracy: Option<f64> },
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

/// A chat completion: the reply's text and its tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<crate::data::ToolCall>,
    /// The model's probability of its reply, when it knows it.
    pub probability: Option<f64>,
}

impl Completion {
    /// The reply, as the caches and the store keep it once encoded.
    pub fn reply(&self) -> crate::data::Reply {
        crate::data::Reply { content: self.content.clone(), tool_calls: self.tool_calls.clone() }
    }
}

impl From<crate::wire::openai::Choice> for Completion {
    /// A chat completion's first choice: its text, and the probability of
    /// the whole reply when the server sent its tokens' log probabilities.
    fn from(choice: crate::wire::openai::Choice) -> Completion {
        let probability = choice
            .logprobs
            .and_then(|l| l.content)
            .filter(|c| !c.is_empty())
            .map(|c| c.iter().map(|t| t.logprob).sum::<f64>().exp());
        let reply = choice.message.reply();
        Completion { content: reply.content, tool_calls: reply.tool_calls, probability }
    }
}

/// Whom a provider's deployments belong to (the `deployments` rows'
/// `sweep_id` and `owner`): set once, when the sweep is recorded, before any
/// model is evaluated.
#[derive(Debug, Default)]
pub struct Scope(std::sync::OnceLock<(i64, String)>);

impl Scope {
    /// Binds the scope; a second call is ignored.
    pub fn bind(&self, sweep_id: i64, owner: &str) {
        let _ = self.0.set((sweep_id, owner.to_string()));
    }

    /// The sweep id and owner, or an error if nothing bound them.
    pub fn get(&self) -> Result<(i64, &str), ProviderError> {
        self.0.get().map(|(id, owner)| (*id, owner.as_str())).ok_or_else(|| ProviderError::Engine {
            message: "a deployment was asked for outside a recorded sweep".into(),
            retryable: false,
        })
    }
}

/// The providers ftsweep knows; a closed set, dispatched by `match`.
pub enum Provider {
    Local(local::LocalProvider),
    OpenAi(openai::OpenAiProvider),
    Command(command::CommandProvider),
    Together(together::TogetherProvider),
    Azure(azure::AzureProvider),
}

impl Provider {
    /// Makes a data file available to jobs; returns its file id.
    pub async fn upload(&self, file: &ChatFile) -> Result<String, ProviderError> {
        match self {
            Provider::Local(p) => Ok(p.upload(file)),
            Provider::OpenAi(p) => p.upload(file).await,
            Provider::Command(p) => Ok(p.upload(file)),
            Provider::Together(p) => p.upload(file).await,
            Provider::Azure(p) => p.upload(file).await,
        }
    }

    /// Starts a fine-tuning job; returns its id.
    pub async fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        match self {
            Provider::Local(p) => p.create_job(request),
            Provider::OpenAi(p) => p.create_job(request).await,
            Provider::Command(p) => p.create_job(request).await,
            Provider::Together(p) => p.create_job(request).await,
            Provider::Azure(p) => p.create_job(request).await,
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
            Provider::OpenAi(p) => p.follow_job(job_id, on_event).await,
            Provider::Command(p) => p.follow_job(job_id, on_event).await,
            Provider::Together(p) => p.follow_job(job_id, on_event).await,
            Provider::Azure(p) => p.follow_job(job_id, on_event).await,
        }
    }

    /// Whether a running job's events are needed as they come (early
    /// stopping): the OpenAI protocol (and Azure's) then reads them at every
    /// poll, else only when the job changed, at its end and at a slow cadence.
    pub fn set_live_events(&self, live: bool) {
        match self {
            Provider::OpenAi(p) => p.set_live_events(live),
            Provider::Azure(p) => p.data.set_live_events(live),
            _ => {}
        }
    }

    /// Cancels a job.
    pub async fn cancel_job(&self, job_id: &str) -> Result<(), ProviderError> {
        match self {
            Provider::Local(p) => {
                p.cancel_job(job_id);
                Ok(())
            }
            Provider::OpenAi(p) => p.cancel_job(job_id).await,
            Provider::Command(p) => p.cancel_job(job_id).await,
            Provider::Together(p) => p.cancel_job(job_id).await,
            Provider::Azure(p) => p.cancel_job(job_id).await,
        }
    }

    /// Whether jobs outlive this process (a server's and a trainer command's
    /// do; local ones die with it), so an unfinished run should be adopted
    /// rather than relaunched.
    pub fn jobs_outlive_process(&self) -> bool {
        !matches!(self, Provider::Local(_))
    }

    /// The job carrying all these metadata tags, if the provider has one.
    pub async fn find_job(
        &self,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>, ProviderError> {
        match self {
            Provider::Local(_) => Ok(None),
            Provider::OpenAi(p) => Ok(p.find_job(metadata).await?.map(|j| j.id)),
            Provider::Command(p) => p.find_job(metadata).await,
            Provider::Together(p) => p.find_job(metadata).await,
            Provider::Azure(p) => p.find_job(metadata).await,
        }
    }

    /// Answers a prompt (its messages and the line's tools) with a model, under the decoding
    /// settings (which the local provider has no use for: it answers its top reply).
    pub async fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> Result<Completion, ProviderError> {
        match self {
            Provider::Local(p) => p.complete(model, prompt),
            Provider::OpenAi(p) => p.complete(model, prompt, decoding).await,
            Provider::Command(p) => p.complete(model, prompt, decoding).await,
            Provider::Together(p) => p.complete(model, prompt, decoding).await,
            Provider::Azure(p) => p.complete(model, prompt, decoding).await,
        }
    }

    /// Makes a model answerable before its evaluation (a command sweep's
    /// adapter is loaded at its inference server); nothing for the others.
    pub async fn open_model(&self, model: &str) -> Result<(), ProviderError> {
        match self {
            Provider::Command(p) => p.open_model(model).await,
            Provider::Together(p) => p.open_model(model).await,
            Provider::Azure(p) => p.open_model(model).await,
            Provider::Local(_) | Provider::OpenAi(_) => Ok(()),
        }
    }

    /// Frees what [`Provider::open_model`] took, after the evaluation (also a failed one).
    pub async fn close_model(&self, model: &str) -> Result<(), ProviderError> {
        match self {
            Provider::Command(p) => p.close_model(model).await,
            Provider::Together(p) => p.close_model(model).await,
            Provider::Azure(p) => p.close_model(model).await,
            Provider::Local(_) | Provider::OpenAi(_) => Ok(()),
        }
    }

    /// Tells a provider that deploys models which sweep and process its
    /// deployments belong to; nothing for the others.
    pub fn bind_sweep(&self, sweep_id: i64, owner: &str) {
        match self {
            Provider::Together(p) => p.scope.bind(sweep_id, owner),
            Provider::Azure(p) => p.scope.bind(sweep_id, owner),
            Provider::Local(_) | Provider::OpenAi(_) | Provider::Command(_) => {}
        }
    }

    /// Deletes the bound sweep's deployments that a previous process left
    /// behind (`resume`, `run` again, `cancel`); returns how many.
    pub async fn clean_up(&self) -> Result<usize, ProviderError> {
        match self {
            Provider::Together(p) => p.clean_up().await,
            Provider::Azure(p) => p.clean_up().await,
            Provider::Local(_) | Provider::OpenAi(_) | Provider::Command(_) => Ok(0),
        }
    }

    /// The HTTP client of a hosted provider (request counts, the base URL).
    pub fn client(&self) -> Option<&openai::client::Client> {
        match self {
            Provider::OpenAi(p) => Some(&p.client),
            Provider::Together(p) => Some(&p.client),
            Provider::Azure(p) => Some(&p.data.client),
            Provider::Local(_) | Provider::Command(_) => None,
        }
    }
}
