//! The local provider: fine-tunes the embedded reply classifier on the CPU,
//! with jobs, events, checkpoints (the last three epochs) and chat
//! completions shaped like a hosted fine-tune's. Weights live in a `ModelRepo`.
//! A job starts from `local/ngram` (nothing learnt) or continues one of the
//! repo's fine-tuned models or checkpoints (`ft:local/ngram:…`).

pub mod hf;
pub mod labels;
pub mod trainer;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::sync::mpsc;

use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError};
use crate::data::{ChatFile, Conversation, Message, Prompt, Reply, file_tokens};
use crate::run::RunConfig;
use crate::store::SharedStore;
use trainer::{Embedding, Example, ReplyModel, TrainConfig, TrainEvent};

/// The local provider's one model family.
pub const BASE_MODEL: &str = crate::run::LOCAL_BASE_MODEL;

/// What a DPO sweep on the local provider trains, said once on stderr: the trainer has no
/// preference objective, so a preference pair's preferred output is its target (the reference of
/// the conversation, [`example`]) and the non-preferred output and `beta` are not used.
pub const DPO_NOTE: &str = "the local provider has no preference objective: a DPO sweep trains it on the preferred \
                            outputs as its targets (the non-preferred outputs and `beta` are not used)";

/// How many epoch checkpoints a job keeps, like OpenAI.
pub const KEPT_CHECKPOINTS: u32 = 3;

/// The full validation passes per epoch that `ftsweep serve` asks for (at 1/4, 1/2 and 3/4 of
/// each epoch, and its end); see `LocalProvider::with_validations_per_epoch`.
pub const VALIDATIONS_PER_EPOCH: u32 = 4;

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
    /// Saves `model` with the weights of `same_as`, saved before by the same job (a job's final
    /// model is its last epoch's checkpoint); keeps only the job's last `keep` epochs. By
    /// default, a copy.
    fn save_same_as(&self, model: &str, job_id: &str, epoch: u32, same_as: &str, keep: u32) -> Result<(), String> {
        let weights = self.load_model(same_as)?.ok_or_else(|| format!("the weights of `{same_as}` are gone"))?;
        self.save_model(model, job_id, epoch, &weights, keep)
    }
    /// A model's weights, if it exists; an error says why a known model has none.
    fn load_model(&self, model: &str) -> Result<Option<Vec<u8>>, String>;
}

impl ModelRepo for SharedStore {
    fn save_model(&self, model: &str, job_id: &str, epoch: u32, weights: &[u8], keep: u32) -> Result<(), String> {
        self.lock().save_local_model(model, job_id, epoch, weights, keep).map_err(|e| e.to_string())
    }

    fn save_same_as(&self, model: &str, job_id: &str, epoch: u32, same_as: &str, keep: u32) -> Result<(), String> {
        self.lock().save_local_model_same_as(model, job_id, epoch, same_as, keep).map_err(|e| e.to_string())
    }

    fn load_model(&self, model: &str) -> Result<Option<Vec<u8>>, String> {
        let store = self.lock();
        match store.load_local_model(model).map_err(|e| e.to_string())? {
            Some(weights) => Ok(Some(weights)),
            None => match store.missing_weights(model).map_err(|e| e.to_string())? {
                Some(why) => Err(why),
                None => Ok(None),
            },
        }
    }
}

/// Whether a sweep reads the checkpoints of its local jobs before their last epoch: to evaluate
/// them (`[evaluation] checkpoints = true`), to make shorter runs of them
/// (`epochs_from_checkpoints`), or to take the best as an early-stopped run's model. Without
/// any, a job keeps only its final model's weights (see `LocalProvider::keeping_checkpoints`).
pub fn sweep_reads_checkpoints(sweep: &crate::spec::Sweep) -> bool {
    sweep.evaluation.checkpoints || sweep.epochs_from_checkpoints || sweep.early_stopping.is_some()
}

/// The embedded provider.
pub struct LocalProvider {
    repo: Arc<dyn ModelRepo>,
    files: Mutex<HashMap<String, Arc<UploadedFile>>>,
    jobs: Mutex<HashMap<String, mpsc::UnboundedReceiver<Message2Scheduler>>>,
    cancels: Mutex<HashMap<String, Arc<AtomicBool>>>,
    models: Mutex<HashMap<String, Arc<ReplyModel>>>,
    validations_per_epoch: u32,
    /// A pause after each training step, so that jobs last like hosted ones.
    example_delay: std::time::Duration,
    /// Whether jobs keep the weights of their last `KEPT_CHECKPOINTS` epochs, or of the last one
    /// only (their final model).
    keep_checkpoints: bool,
    /// Whether jobs may store their weights compactly (see `compact_weights`).
    compact: bool,
}

/// Turns a conversation into a training example: the messages before the
/// last assistant turn, and that turn's label (its text, or its tool calls, in the
/// canonical encoded form of [`labels::label`]).
pub fn example(c: &Conversation) -> Example {
    Example {
        context: c.prompt().iter().map(|m| (m.role.clone(), m.content.clone())).collect(),
        reply: labels::reference_label(c),
    }
}

impl LocalProvider {
    /// A provider whose jobs validate at the end of each epoch only.
    pub fn new(repo: Arc<dyn ModelRepo>) -> LocalProvider {
        LocalProvider {
            repo,
            files: Mutex::default(),
            jobs: Mutex::default(),
            cancels: Mutex::default(),
            models: Mutex::default(),
            validations_per_epoch: 0,
            example_delay: std::time::Duration::ZERO,
            keep_checkpoints: true,
            compact: false,
        }
    }

    /// Sets how a sweep's jobs keep their weights: only the final model's unless the sweep reads
    /// earlier checkpoints (`sweep_reads_checkpoints`), and compactly unless the sweep continues
    /// its models (successive halving), whose next rung should start from the exact weights.
    pub fn for_sweep(self, sweep: &crate::spec::Sweep) -> LocalProvider {
        let continues = sweep.search.halving().is_some();
        self.keeping_checkpoints(sweep_reads_checkpoints(sweep)).compact_weights(!continues)
    }

    /// Whether jobs store a model's embedding as half-precision differences from its seeded
    /// initial values, about a quarter of the f32 size, where that changes the top reply on no
    /// validation example (the scores on the validation set are the exact model's); other models,
    /// and every model without this, are stored exactly. Completions and continued jobs use what
    /// is stored. Off by default: `ftsweep serve` stores exactly what it trained.
    pub fn compact_weights(self, compact: bool) -> LocalProvider {
        LocalProvider { compact, ..self }
    }

    /// Whether jobs keep the weights of the checkpoints of their last `KEPT_CHECKPOINTS` epochs
    /// (the default, as OpenAI keeps them), or only of their last epoch, which is their final
    /// model: a sweep that reads no earlier checkpoint (`sweep_reads_checkpoints`) needs no more.
    /// The checkpoints are reported either way; asking for one whose weights were not kept
    /// fails with the reason.
    pub fn keeping_checkpoints(self, keep: bool) -> LocalProvider {
        LocalProvider { keep_checkpoints: keep, ..self }
    }

    /// Makes each training step pause `delay` per example of its batch (`ftsweep serve
    /// --example-delay-ms`), so that a job lasts in proportion to what it trains and streams its
    /// events over time, as a hosted job does: early stopping and crash tests need that.
    /// Training itself is unchanged.
    pub fn with_example_delay(self, delay: std::time::Duration) -> LocalProvider {
        LocalProvider { example_delay: delay, ..self }
    }

    /// The pause per example of a step's batch (see [`with_example_delay`](Self::with_example_delay)).
    pub fn example_delay(&self) -> std::time::Duration {
        self.example_delay
    }

    /// Makes jobs also run a full validation pass `n` times per epoch (0: at epoch ends only; see
    /// `TrainConfig::validations_per_epoch`), each reported as a `JobEvent::Validation`.
    /// Validation changes nothing that is trained.
    pub fn with_validations_per_epoch(self, n: u32) -> LocalProvider {
        LocalProvider { validations_per_epoch: n, ..self }
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

    /// Starts training on a blocking thread; returns the job id. The base model is `local/ngram`
    /// or a fine-tuned model or checkpoint in the repo (`ModelNotFound` if it is not there),
    /// whose training continues; the new model's id names the root model
    /// (`ft:local/ngram:local:{suffix}:{id}`).
    pub fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        let (root, init) = self.base(&request.base_model)?;
        let training = self.file(&request.training_file)?;
        let validation = self.file(&request.validation_file)?;
        let short: String = {
            let mut rng = rand::rng();
            (0..8).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
        };
        let job_id = format!("ftjob-local-{short}");
        let model_id = format!("ft:{root}:local:{}:{short}", request.suffix);
        let config = TrainConfig {
            validations_per_epoch: self.validations_per_epoch,
            ..resolve(&request.hyperparameters, training.examples.len() as u64)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(job_id.clone(), rx);
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(job_id.clone(), cancel.clone());
        let repo = self.repo.clone();
        let job = job_id.clone();
        let (example_delay, keep_checkpoints, compact) = (self.example_delay, self.keep_checkpoints, self.compact);
        tokio::task::spawn_blocking(move || {
            let job = LocalJob {
                id: &job,
                model_id: &model_id,
                config: &config,
                cancel: &cancel,
                init: init.as_deref(),
                example_delay,
                keep_checkpoints,
                compact,
            };
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

    /// The model's top reply and its probability. Its replies are the training references as
    /// encoded ([`Reply::encode`]): the chosen one is decoded into its text and its tool calls.
    /// The line's tools are not features: the model picks among the replies it learnt.
    pub fn complete(&self, model: &str, prompt: &Prompt) -> Result<Completion, ProviderError> {
        // The base model has learnt no replies, as `ftsweep serve` answers for it.
        if model == BASE_MODEL {
            return Ok(Completion::default());
        }
        let m = self.model(model)?;
        let context: Vec<(String, String)> =
            prompt.messages.iter().map(|m| (m.role.clone(), m.content.clone())).collect();
        let (label, probability) = m.top(&context);
        let reply = Reply::decode(&label);
        Ok(Completion { content: reply.content, tool_calls: reply.tool_calls, probability: Some(probability) })
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

    /// The root model of a job's base model and the weights it starts from: `local/ngram` starts
    /// afresh; an `ft:` model (the root is its second `:`-separated field) continues.
    fn base(&self, base_model: &str) -> Result<(String, Option<Arc<ReplyModel>>), ProviderError> {
        if base_model == BASE_MODEL {
            return Ok((BASE_MODEL.to_string(), None));
        }
        match base_model.split(':').collect::<Vec<_>>()[..] {
            ["ft", root, ..] if !root.is_empty() => Ok((root.to_string(), Some(self.model(base_model)?))),
            _ => Err(ProviderError::BadModel {
                model: base_model.to_string(),
                reason: format!("the local provider fine-tunes `{BASE_MODEL}` and the models fine-tuned from it"),
            }),
        }
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
/// and a multiplier of 1; validation at epoch ends only.
pub fn resolve(hp: &RunConfig, n_examples: u64) -> TrainConfig {
    TrainConfig {
        n_epochs: hp.n_epochs.unwrap_or_else(|| crate::data::stats::default_epochs(n_examples)),
        batch_size: hp.batch_size().unwrap_or_else(|| (n_examples.div_ceil(500)).clamp(1, 256) as u32),
        learning_rate: trainer::BASE_LEARNING_RATE * hp.learning_rate_multiplier().unwrap_or(1.0),
        seed: hp.seed,
        validations_per_epoch: 0,
    }
}

/// Trains one job on this (blocking) thread, saving a checkpoint per epoch (or only the last
/// epoch's) and the final model, and streaming events to the follower.
struct LocalJob<'a> {
    id: &'a str,
    model_id: &'a str,
    config: &'a TrainConfig,
    cancel: &'a AtomicBool,
    /// The model whose training continues, if any.
    init: Option<&'a ReplyModel>,
    example_delay: std::time::Duration,
    /// See `LocalProvider::keeping_checkpoints`.
    keep_checkpoints: bool,
    /// See `LocalProvider::compact_weights`.
    compact: bool,
}

impl LocalJob<'_> {
    /// Encodes a model to save: compactly when the job stores compact weights and that changes
    /// no top reply on the validation examples (`ReplyModel::encode_keeping_replies`); exactly
    /// otherwise.
    fn encode(&self, model: &ReplyModel, validation: &[Example], training: &[Example]) -> Vec<u8> {
        match self.compact {
            true => model.encode_keeping_replies(self.config.seed, validation, training),
            false => model.encode(Embedding::Exact),
        }
    }
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
    // The epoch and id of the last checkpoint whose weights were saved.
    let mut last_saved: Option<(u32, String)> = None;
    let (job_id, model_id, config) = (job.id, job.model_id, job.config);
    let mut cancelled = false;
    let mut on_event = |event: TrainEvent<'_>| {
        if job.cancel.load(Ordering::SeqCst) {
            cancelled = true;
            return ControlFlow::Break(());
        }
        let event = match event {
            TrainEvent::Step { step, total_steps, epoch, train_loss, train_accuracy } => {
                if !job.example_delay.is_zero() {
                    std::thread::sleep(job.example_delay * config.batch_size);
                }
                JobEvent::Step { step, total_steps, epoch, train_loss, train_accuracy }
            }
            TrainEvent::Validation { step, epoch, valid_loss, valid_accuracy } => match valid_loss {
                Some(valid_loss) => JobEvent::Validation { step, epoch, valid_loss, valid_accuracy },
                // No validation example has a known reply: nothing to report.
                None => return ControlFlow::Continue(()),
            },
            TrainEvent::Epoch { epoch, step, train_loss, train_accuracy, valid_loss, valid_accuracy, model } => {
                let checkpoint = format!("{model_id}:ckpt-step-{step}");
                if job.keep_checkpoints || epoch == config.n_epochs {
                    let weights = job.encode(model, &validation.examples, &training.examples);
                    if let Err(e) = repo.save_model(&checkpoint, job_id, epoch, &weights, KEPT_CHECKPOINTS) {
                        save_error = Some(e.to_string());
                        return ControlFlow::Break(());
                    }
                    last_saved = Some((epoch, checkpoint.clone()));
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
    let summary = match trainer::train(&training.examples, &validation.examples, config, job.init, &mut on_event) {
        Ok(s) => s,
        Err(e) => return JobOutcome::Failed { code: "invalid_training_file".into(), message: e.to_string() },
    };
    if let Some(e) = save_error {
        return JobOutcome::Failed { code: "server_error".into(), message: format!("saving a checkpoint failed: {e}") };
    }
    if cancelled {
        return JobOutcome::Cancelled { trained_tokens: tokens_trained(training.tokens, &summary) };
    }
    // The final model is the last epoch's checkpoint: it refers to its weights.
    let saved = match &last_saved {
        Some((epoch, checkpoint)) if *epoch == epochs_done => {
            repo.save_same_as(model_id, job_id, epochs_done, checkpoint, KEPT_CHECKPOINTS)
        }
        _ => {
            let weights = job.encode(&summary.model, &validation.examples, &training.examples);
            repo.save_model(model_id, job_id, epochs_done, &weights, KEPT_CHECKPOINTS)
        }
    };
    if let Err(e) = saved {
        return JobOutcome::Failed { code: "server_error".into(), message: format!("saving the model failed: {e}") };
    }
    JobOutcome::Succeeded { model: model_id.to_string(), trained_tokens: training.tokens * u64::from(epochs_done) }
}

/// The tokens of the steps trained: an epoch's tokens × steps / steps per epoch, rounded.
fn tokens_trained(tokens_per_epoch: u64, summary: &trainer::TrainSummary) -> u64 {
    let per_epoch = u128::from(summary.steps_per_epoch.max(1));
    let tokens = (u128::from(tokens_per_epoch) * u128::from(summary.steps) + per_epoch / 2) / per_epoch;
    u64::try_from(tokens).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::parse_chat_jsonl;

    /// Weights in memory.
    #[derive(Default)]
    struct MemoryRepo {
        models: Mutex<HashMap<String, Vec<u8>>>,
        /// Set when the first epoch's checkpoint is saved.
        cancel_after_epoch_1: Option<Arc<AtomicBool>>,
    }

    impl ModelRepo for MemoryRepo {
        fn save_model(&self, model: &str, _: &str, epoch: u32, weights: &[u8], _: u32) -> Result<(), String> {
            self.models.lock().unwrap().insert(model.to_string(), weights.to_vec());
            if let (Some(flag), 1) = (&self.cancel_after_epoch_1, epoch) {
                flag.store(true, Ordering::SeqCst);
            }
            Ok(())
        }

        fn load_model(&self, model: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.models.lock().unwrap().get(model).cloned())
        }
    }

    /// The first `n` lines of an example file.
    fn example_file(name: &str, n: usize) -> ChatFile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let head: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
        ChatFile {
            path: path.clone(),
            sha256: crate::data::sha256_hex(head.as_bytes()),
            bytes: head.len() as u64,
            conversations: parse_chat_jsonl(&path, head.as_bytes()).unwrap(),
        }
    }

    fn request(p: &LocalProvider, base_model: &str, n_epochs: u32, suffix: &str) -> JobRequest {
        JobRequest {
            method: crate::space::Method::Sft,
            base_model: base_model.into(),
            training_file: p.upload(&example_file("topics-train.jsonl", 200)),
            validation_file: p.upload(&example_file("topics-valid.jsonl", 60)),
            hyperparameters: RunConfig::supervised(Some(n_epochs), Some(16), Some(1.0), 3),
            suffix: suffix.into(),
            metadata: Default::default(),
        }
    }

    /// Runs a job to its end: its events and outcome.
    async fn run(p: &LocalProvider, request: &JobRequest) -> (Vec<JobEvent>, JobOutcome) {
        let job = p.create_job(request).unwrap();
        let mut events = Vec::new();
        let outcome = p.follow_job(&job, &mut |e| events.push(e)).await.unwrap();
        (events, outcome)
    }

    fn first_valid_loss(events: &[JobEvent]) -> f64 {
        events
            .iter()
            .find_map(|e| match e {
                JobEvent::Checkpoint { valid_loss, .. } => *valid_loss,
                _ => None,
            })
            .unwrap()
    }

    #[tokio::test]
    async fn a_job_continues_a_fine_tuned_model_or_checkpoint() {
        let p = LocalProvider::new(Arc::new(MemoryRepo::default()));
        let (first, outcome) = run(&p, &request(&p, BASE_MODEL, 2, "a")).await;
        let JobOutcome::Succeeded { model, .. } = outcome else { panic!("{outcome:?}") };
        assert!(model.starts_with("ft:local/ngram:local:a:"), "{model}");
        let checkpoint = first
            .iter()
            .find_map(|e| match e {
                JobEvent::Checkpoint { epoch: 1, model, .. } => Some(model.clone()),
                _ => None,
            })
            .unwrap();
        for base in [&model, &checkpoint] {
            let (more, outcome) = run(&p, &request(&p, base, 1, "b")).await;
            let JobOutcome::Succeeded { model: continued, .. } = outcome else { panic!("{outcome:?}") };
            assert!(continued.starts_with("ft:local/ngram:local:b:"), "the root model: {continued}");
            assert!(first_valid_loss(&more) < first_valid_loss(&first), "{base} continued");
        }
        // A fresh job repeats the first one's first epoch: the lower losses come from the weights.
        let (again, _) = run(&p, &request(&p, BASE_MODEL, 1, "c")).await;
        assert_eq!(first_valid_loss(&again), first_valid_loss(&first));

        let unknown = request(&p, "ft:local/ngram:local::nope", 1, "d");
        assert!(matches!(p.create_job(&unknown), Err(ProviderError::ModelNotFound(m)) if m == unknown.base_model));
        for other in ["gpt-4o", "ft:", "ft::x"] {
            let e = p.create_job(&request(&p, other, 1, "d")).unwrap_err();
            assert!(matches!(&e, ProviderError::BadModel { model, .. } if model == other), "{other}: {e}");
        }
    }

    #[tokio::test]
    async fn tool_call_replies_are_learnt_as_one_label_per_distinct_call() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/drone-tools.jsonl");
        let file = crate::data::read_chat_file(&path).unwrap();
        let p = LocalProvider::new(Arc::new(MemoryRepo::default()));
        let id = p.upload(&file);
        let request = JobRequest {
            base_model: BASE_MODEL.into(),
            training_file: id.clone(),
            validation_file: id,
            hyperparameters: RunConfig::supervised(Some(20), Some(4), Some(2.0), 1),
            suffix: "t".into(),
            metadata: Default::default(),
            method: crate::space::Method::Sft,
        };
        let (_, outcome) = run(&p, &request).await;
        let JobOutcome::Succeeded { model, .. } = outcome else { panic!("{outcome:?}") };
        // take_off({"altitude_m":50}) is written twice with other spacing: 11 replies of 12 lines,
        // as `data stats` counts them.
        let m = p.model(&model).unwrap();
        assert_eq!(m.classes().len(), 11, "{:?}", m.classes());
        let labelled = file.conversations.iter().map(labels::reference_label);
        assert!(labelled.clone().all(|l| m.classes().contains(&l)));
        // The model replies with calls it learnt (without their ids), mostly the right ones.
        let replies = file.conversations.iter().map(|c| (crate::data::Reply::decode(&m.top(&example(c).context).0), c));
        let mut right = 0;
        for (got, c) in replies {
            assert!(got.has_tool_calls() && got.tool_calls.iter().all(|t| t.id.is_empty()), "{got:?}");
            right += usize::from(got.same_calls(&c.reference_reply().unwrap()));
            // `complete` answers the same reply decoded, never as its encoding.
            let answer = p.complete(&model, &c.prompt_request()).unwrap();
            assert!(answer.content.is_empty() && answer.reply().same_calls(&got), "{answer:?}");
        }
        assert!(right >= 10, "{right} of 12 training lines replied right");
    }

    #[tokio::test]
    async fn a_job_can_keep_only_its_final_model_and_store_it_compactly() {
        let repo = Arc::new(MemoryRepo::default());
        let checkpoints = |events: &[JobEvent]| -> Vec<String> {
            (events.iter())
                .filter_map(|e| match e {
                    JobEvent::Checkpoint { model, .. } => Some(model.clone()),
                    _ => None,
                })
                .collect()
        };
        let exact = LocalProvider::new(repo.clone());
        let (all, outcome) = run(&exact, &request(&exact, BASE_MODEL, 3, "e")).await;
        let JobOutcome::Succeeded { model: exact_model, .. } = outcome else { panic!("{outcome:?}") };
        assert!(checkpoints(&all).iter().all(|c| repo.load_model(c).unwrap().is_some()), "three kept");
        let p = LocalProvider::new(repo.clone()).keeping_checkpoints(false).compact_weights(true);
        let (events, outcome) = run(&p, &request(&p, BASE_MODEL, 3, "c")).await;
        let JobOutcome::Succeeded { model, .. } = outcome else { panic!("{outcome:?}") };
        let ids = checkpoints(&events);
        assert_eq!(ids.len(), 3, "every epoch's checkpoint is reported");
        let kept: Vec<bool> = ids.iter().map(|c| repo.load_model(c).unwrap().is_some()).collect();
        assert_eq!(kept, [false, false, true], "only the last epoch's weights are kept");
        let (small, full) =
            (repo.load_model(&model).unwrap().unwrap(), repo.load_model(&exact_model).unwrap().unwrap());
        assert_eq!(small, repo.load_model(&ids[2]).unwrap().unwrap(), "the final model is the last checkpoint");
        assert!(small.len() * 2 < full.len(), "{} vs {} bytes", small.len(), full.len());
        // The same replies on the validation examples as the exact model.
        let validation = p.file(&request(&p, BASE_MODEL, 1, "x").validation_file).unwrap();
        for e in validation.examples.iter() {
            let messages: Vec<Message> =
                e.context.iter().map(|(role, content)| Message::text(role, content.clone())).collect();
            let prompt = Prompt::messages(messages);
            let (a, b) = (p.complete(&model, &prompt).unwrap(), exact.complete(&exact_model, &prompt).unwrap());
            // The reply's probability may move (a compact model keeps the replies, not them).
            assert_eq!(a.content, b.content);
            assert!(a.probability.is_some_and(|p| p > 0.0 && p <= 1.0), "{a:?}");
        }
    }

    #[tokio::test]
    async fn validations_within_epochs_are_reported_when_asked() {
        let repo = Arc::new(MemoryRepo::default());
        let quiet = LocalProvider::new(repo.clone());
        let (events, plain) = run(&quiet, &request(&quiet, BASE_MODEL, 2, "q")).await;
        assert!(!events.iter().any(|e| matches!(e, JobEvent::Validation { .. })));
        let p = LocalProvider::new(repo.clone()).with_validations_per_epoch(VALIDATIONS_PER_EPOCH);
        let (validated, outcome) = run(&p, &request(&p, BASE_MODEL, 2, "v")).await;
        // 200 examples in batches of 16: 13 steps an epoch, validated after steps 4, 7 and 10.
        let steps: Vec<u64> = validated
            .iter()
            .filter_map(|e| match e {
                JobEvent::Validation { step, valid_loss, valid_accuracy, .. } => {
                    assert!(valid_loss.is_finite() && valid_accuracy.is_some());
                    Some(*step)
                }
                _ => None,
            })
            .collect();
        assert_eq!(steps, [4, 7, 10, 17, 20, 23]);
        // The same training: the same other events (but the model ids) and the same weights.
        let anonymous = |events: &[JobEvent]| -> Vec<JobEvent> {
            let events = events.iter().filter(|e| !matches!(e, JobEvent::Validation { .. }));
            events
                .map(|e| match e.clone() {
                    JobEvent::Checkpoint {
                        epoch,
                        step,
                        train_loss,
                        train_accuracy,
                        valid_loss,
                        valid_accuracy,
                        ..
                    } => {
                        let model = String::new();
                        JobEvent::Checkpoint {
                            epoch,
                            step,
                            model,
                            train_loss,
                            train_accuracy,
                            valid_loss,
                            valid_accuracy,
                        }
                    }
                    e => e,
                })
                .collect()
        };
        assert_eq!(anonymous(&validated), anonymous(&events));
        let weights = |o: &JobOutcome| match o {
            JobOutcome::Succeeded { model, .. } => repo.load_model(model).unwrap().unwrap(),
            o => panic!("{o:?}"),
        };
        assert_eq!(weights(&outcome), weights(&plain));
    }

    #[tokio::test]
    async fn a_cancelled_job_counts_the_tokens_of_the_steps_it_trained() {
        let cancel = Arc::new(AtomicBool::new(false));
        let repo = MemoryRepo { cancel_after_epoch_1: Some(cancel.clone()), ..MemoryRepo::default() };
        let p = LocalProvider::new(Arc::new(repo));
        let request = request(&p, BASE_MODEL, 3, "x");
        let (training, validation) =
            (p.file(&request.training_file).unwrap(), p.file(&request.validation_file).unwrap());
        let config = resolve(&request.hyperparameters, training.examples.len() as u64);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let job = LocalJob {
            id: "j",
            model_id: "ft:local/ngram:local:x:j",
            config: &config,
            cancel: &cancel,
            init: None,
            example_delay: std::time::Duration::ZERO,
            keep_checkpoints: true,
            compact: false,
        };
        let outcome = train_job(&job, &training, &validation, p.repo.as_ref(), &tx);
        // The flag is seen on the first event after the first epoch's checkpoint: step 14 of
        // 13 per epoch was trained, not reported.
        let per_epoch = 200u64.div_ceil(16);
        let expected = (training.tokens * (per_epoch + 1) + per_epoch / 2) / per_epoch;
        assert_eq!(outcome, JobOutcome::Cancelled { trained_tokens: expected });
        assert!(expected > training.tokens && expected < 2 * training.tokens);
        let mut last_step = 0;
        while let Ok(Message2Scheduler::Event(e)) = rx.try_recv() {
            if let JobEvent::Step { step, .. } = e {
                last_step = step;
            }
        }
        assert_eq!(last_step, per_epoch);
    }
}
