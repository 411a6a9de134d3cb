//! The Together AI provider: a sweep's runs as Together fine-tuning jobs
//! (`/files` with the SDKs' presigned upload flow, `/fine-tunes`, its events,
//! metrics and checkpoints), its models asked through Together's
//! OpenAI-compatible chat completions, serverless or on a dedicated endpoint
//! made for the evaluation and deleted after it (recorded in `deployments`
//! before it is created).
//!
//! Money is handled as the OpenAI provider handles it: one upload per content
//! hash and server (`uploads`), a create sent at most once per attempt (its
//! `suffix` is `{run_id}-{attempt}`, so a create whose answer was lost is
//! found again by listing the jobs, never sent twice blindly), and every
//! endpoint recorded before the request that creates it.

mod follow;
mod inference;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::openai::PollPolicy;
use super::openai::client::{ApiError, Body, Client, ClientConfig, Kind, Retry, Secret};
use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError, Scope};
use crate::data::{ChatFile, Prompt};
use crate::provider::local::KEPT_CHECKPOINTS;
use crate::run::RunConfig;
use crate::spec::{Decoding, Sweep, TogetherSettings, TogetherTraining};
use crate::store::SharedStore;
use crate::wire::together::{
    CreateFineTune, FILE_ID_HEADER, FileObject, FileState, FineTune, List, TrainingMethod, TrainingType,
    UploadConflict, UploadRequest,
};

/// The longest a job's suffix may be (the SDKs' limit; TS allows 64).
const MAX_SUFFIX: usize = 40;
/// The most `n_evals` ftsweep asks for by default.
const MAX_DEFAULT_COUNT: i64 = 100;
/// The most `n_checkpoints` ftsweep asks for by default: the sweep evaluates
/// the last [`KEPT_CHECKPOINTS`] epochs' checkpoints at most.
const MAX_DEFAULT_CHECKPOINTS: i64 = KEPT_CHECKPOINTS as i64;
/// How long an uploaded file may stay in processing before the upload fails.
const FILE_PROCESSING_WAIT: Duration = Duration::from_secs(600);

/// What the sweep asks of every job, beyond its hyperparameters: the
/// defaults of `n_checkpoints` and `n_evals` that the sweep's evaluation and
/// early stopping need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobDefaults {
    /// The sweep's base model: a request for another model continues it (`from_checkpoint`).
    pub base_model: String,
    /// Whether every epoch needs a checkpoint: the sweep evaluates the
    /// runs' checkpoints, or early stopping takes the best one as the model.
    pub checkpoint_every_epoch: bool,
    /// Early stopping's patience, when it is on: the job must validate
    /// often enough for it to see a plateau.
    pub stopping_patience: Option<u32>,
    /// The hyperparameters the sweep file writes: a written `"auto"` leaves
    /// the field out (the server's default) instead of taking ours.
    pub written: Vec<String>,
}

impl JobDefaults {
    pub fn of(sweep: &Sweep) -> JobDefaults {
        JobDefaults {
            base_model: sweep.base_model.clone(),
            checkpoint_every_epoch: sweep.evaluation.checkpoints || sweep.early_stopping.is_some(),
            stopping_patience: sweep.early_stopping.map(|e| e.patience),
            written: sweep.hyperparameters.written().map(str::to_string).collect(),
        }
    }

    /// `n_checkpoints` of a job of `n_epochs`: the run's value; else, unless
    /// the file wrote `"auto"`, one per epoch when the sweep needs them (for
    /// at most the last three epochs: a longer job's are spread by Together).
    fn n_checkpoints(&self, hp: &RunConfig) -> Option<i64> {
        hp.int("n_checkpoints").or_else(|| {
            let epochs = i64::from(hp.n_epochs?);
            (self.checkpoint_every_epoch && !self.wrote("n_checkpoints")).then_some(epochs.min(MAX_DEFAULT_CHECKPOINTS))
        })
    }

    /// `n_evals`: the run's value; else, unless the file wrote `"auto"`, four
    /// validations an epoch (at least patience + 2) when early stopping is on.
    fn n_evals(&self, hp: &RunConfig) -> Option<i64> {
        hp.int("n_evals").or_else(|| {
            let patience = i64::from(self.stopping_patience?);
            let epochs = i64::from(hp.n_epochs.unwrap_or(1));
            (!self.wrote("n_evals")).then_some((4 * epochs).max(patience + 2).min(MAX_DEFAULT_COUNT))
        })
    }

    fn wrote(&self, name: &str) -> bool {
        self.written.iter().any(|n| n == name)
    }
}

/// The provider.
pub struct TogetherProvider {
    pub client: Client,
    store: SharedStore,
    settings: TogetherSettings,
    defaults: JobDefaults,
    poll: PollPolicy,
    /// The sweep and process its deployments are recorded under.
    pub scope: Scope,
    /// The models open for evaluation, and how each answers.
    open: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<inference::Opened>>>>>,
    /// Whether the process behind a deployment's owner may still run (its
    /// endpoints are then its own to delete); the CLI gives the scheduler's check.
    owner_alive: fn(&str) -> bool,
}

impl TogetherProvider {
    /// The provider for `settings` (its `base_url` already overridden by
    /// `TOGETHER_BASE_URL` if set), authenticated with `key`.
    pub fn new(
        settings: &TogetherSettings,
        key: Secret,
        store: SharedStore,
        poll: PollPolicy,
    ) -> Result<TogetherProvider, ProviderError> {
        let cfg = ClientConfig::new(&settings.base_url, key, &settings.api_key_env, crate::spec::Auth::Bearer);
        Ok(TogetherProvider {
            client: Client::new(cfg)?,
            store,
            settings: settings.clone(),
            defaults: JobDefaults::default(),
            poll,
            scope: Scope::default(),
            open: Mutex::default(),
            owner_alive: |_| true,
        })
    }

    /// The provider with the sweep's job defaults.
    pub fn with_defaults(self, defaults: JobDefaults) -> TogetherProvider {
        TogetherProvider { defaults, ..self }
    }

    /// The provider with the check whether a deployment's owner still runs
    /// ([`TogetherProvider::clean_up`] leaves a running owner's endpoints
    /// alone); without it every owner is taken to be running.
    pub fn with_owner_check(self, owner_alive: fn(&str) -> bool) -> TogetherProvider {
        TogetherProvider { owner_alive, ..self }
    }

    fn server(&self) -> &str {
        self.client.base_url()
    }

    /// Makes a data file available to jobs, once per content and server: a
    /// file uploaded before (by any run or sweep) is reused once the server
    /// confirms it still has it. The upload is the SDKs' flow: `POST /files`
    /// answers 302 with a presigned URL (or 409 naming an identical earlier
    /// file), the bytes go there by `PUT` without our key, then `preprocess`.
    pub async fn upload(&self, file: &ChatFile) -> Result<String, ProviderError> {
        let server = self.server().to_string();
        let known = self.store.lock().upload(&server, &file.sha256)?;
        if let Some(id) = known {
            match self.file(&id).await {
                Ok(f) if matches!(f.state(), FileState::Ready) => return Ok(id),
                Ok(_) => self.store.lock().forget_upload(&server, &file.sha256)?,
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
        let name = file.path.file_name().map_or("data.jsonl".into(), |n| n.to_string_lossy().into_owned());
        let request = UploadRequest {
            purpose: "fine-tune".into(),
            file_name: name,
            file_type: "jsonl".into(),
            checksum: Some(file.sha256.clone()),
        };
        let accept = |s: StatusCode| s == StatusCode::FOUND || s == StatusCode::CONFLICT;
        let answer = self
            .client
            .exchange(Method::POST, &["files"], &[], &Client::body(&request), Kind::Upload, Retry::Always, accept)
            .await?;
        let id = if answer.status == StatusCode::CONFLICT {
            // The same content was uploaded before, complete: that file is ours.
            let conflict: UploadConflict = serde_json::from_slice(&answer.bytes).unwrap_or_default();
            let id = conflict.file_id.filter(|id| plausible_id(id)).ok_or_else(|| {
                decode(format!(
                    "`POST /files` answered 409 without the `file_id` of the identical file{}",
                    request_note(&answer.headers)
                ))
            })?;
            let _ = self.file(&id).await?;
            id
        } else {
            let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
            let (Some(location), Some(id)) = (header("location"), header(FILE_ID_HEADER)) else {
                return Err(decode(format!(
                    "`POST /files` answered 302 without `Location` and `X-Together-File-Id`{}",
                    request_note(&answer.headers)
                )));
            };
            if !plausible_id(id) {
                return Err(decode("`POST /files` named an implausible file id".into()));
            }
            let id = id.to_string();
            self.client.put_presigned(location, bytes).await?;
            let processed: FileObject = self
                .client
                .json(Method::POST, &["files", &id, "preprocess"], &[], Body::None, Kind::Other, Retry::Always)
                .await?;
            self.until_processed(processed).await?;
            id
        };
        self.store.lock().record_upload(&server, &file.sha256, &id, file.bytes)?;
        Ok(id)
    }

    async fn file(&self, id: &str) -> Result<FileObject, ApiError> {
        self.client.json(Method::GET, &["files", id], &[], Body::None, Kind::Other, Retry::Always).await
    }

    /// Waits until the file is processed; a rejected file is an error naming its status.
    async fn until_processed(&self, mut file: FileObject) -> Result<(), ProviderError> {
        let started = std::time::Instant::now();
        let mut interval = self.poll.min;
        loop {
            match file.state() {
                FileState::Ready => return Ok(()),
                FileState::Rejected(status) => {
                    let name = file.filename.clone().unwrap_or_default();
                    return Err(ProviderError::Engine {
                        message: format!("Together rejected the uploaded file `{}` {name} ({status})", file.id),
                        retryable: false,
                    });
                }
                FileState::Processing if started.elapsed() > FILE_PROCESSING_WAIT => {
                    return Err(decode(format!(
                        "the file `{}` was still processing after {} s",
                        file.id,
                        FILE_PROCESSING_WAIT.as_secs()
                    )));
                }
                FileState::Processing => {}
            }
            tokio::time::sleep(interval).await;
            interval = interval.mul_f64(1.5).min(self.poll.max);
            file = self.file(&file.id).await?;
        }
    }

    /// The create request of a job.
    fn create_body(&self, request: &JobRequest) -> CreateFineTune {
        let hp = &request.hyperparameters;
        let d = &self.defaults;
        let continues = !d.base_model.is_empty() && request.base_model != d.base_model;
        let n_evals = d.n_evals(hp);
        let training_type = match self.settings.training {
            TogetherTraining::Full => Some(TrainingType {
                kind: "Full".into(),
                lora_r: None,
                lora_alpha: None,
                lora_dropout: None,
                lora_trainable_modules: None,
            }),
            TogetherTraining::Lora => {
                let lora_r = hp.int("lora_r");
                // The SDKs' default alpha: twice the rank.
                let lora_alpha = hp.int("lora_alpha").or(lora_r.map(|r| 2 * r));
                let lora_dropout = hp.float("lora_dropout");
                let modules = self.settings.lora_trainable_modules.clone();
                let any = lora_r.is_some() || lora_alpha.is_some() || lora_dropout.is_some() || modules.is_some();
                // Without any of them the field is left out: the server's LoRA defaults.
                any.then(|| TrainingType {
                    kind: "Lora".into(),
                    lora_r,
                    lora_alpha,
                    lora_dropout,
                    lora_trainable_modules: modules,
                })
            }
        };
        CreateFineTune {
            model: (!continues).then(|| request.base_model.clone()),
            from_checkpoint: continues.then(|| request.base_model.clone()),
            training_file: request.training_file.clone(),
            // The validation file is read only when the job validates.
            validation_file: n_evals.filter(|n| *n > 0).map(|_| request.validation_file.clone()),
            n_epochs: hp.n_epochs,
            n_checkpoints: d.n_checkpoints(hp),
            n_evals,
            batch_size: hp.int("batch_size").map(serde_json::Value::from),
            learning_rate: hp.float("learning_rate"),
            warmup_ratio: hp.float("warmup_ratio"),
            max_grad_norm: hp.float("max_grad_norm"),
            weight_decay: hp.float("weight_decay"),
            training_type,
            training_method: Some(match request.method {
                crate::space::Method::Sft => TrainingMethod {
                    method: "sft".into(),
                    train_on_inputs: Some(self.settings.train_on_inputs.map_or("auto".into(), serde_json::Value::from)),
                    dpo_beta: None,
                },
                // `auto` leaves `dpo_beta` out: Together's default.
                crate::space::Method::Dpo => TrainingMethod {
                    method: "dpo".into(),
                    train_on_inputs: None,
                    dpo_beta: hp.float(crate::space::BETA),
                },
            }),
            suffix: Some(suffix(request)),
            random_seed: i64::try_from(hp.seed).ok(),
        }
    }

    /// Creates a job. A create is never blindly sent twice: when its answer
    /// is lost, the jobs are listed and the one with the attempt's suffix is
    /// adopted; only when none exists is the create sent again.
    pub async fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        let body = self.create_body(request);
        for _ in 0..3 {
            let sent = self
                .client
                .json::<FineTune>(
                    Method::POST,
                    &["fine-tunes"],
                    &[],
                    Client::body(&body),
                    Kind::Create,
                    Retry::OnlyIfNotSent,
                )
                .await;
            match sent {
                Ok(job) => return Ok(job.id),
                Err(e) if e.may_have_taken_effect() => {
                    tracing::warn!(error = %e, "a job create's answer was lost: looking for the job by its suffix");
                    if let Some(job) = self.find_by_suffix(&suffix(request)).await? {
                        return Ok(job.id);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ProviderError::Crashed("the job could not be created after 3 tries".into()))
    }

    /// The job of the attempt these metadata tags name (`ftsweep_run`,
    /// `ftsweep_attempt`): the one whose suffix is `{run_id}-{attempt}`.
    pub async fn find_job(&self, metadata: &BTreeMap<String, String>) -> Result<Option<String>, ProviderError> {
        let Some(suffix) = tags_suffix(metadata) else { return Ok(None) };
        Ok(self.find_by_suffix(&suffix).await?.map(|j| j.id))
    }

    /// The newest job whose echoed suffix is `suffix`, or whose output name
    /// carries it as a whole word (`…-r-0123-1-abcd`, never `…-r-0123-12-…`).
    async fn find_by_suffix(&self, suffix: &str) -> Result<Option<FineTune>, ProviderError> {
        let list: List<FineTune> =
            self.client.json(Method::GET, &["fine-tunes"], &[], Body::None, Kind::List, Retry::Always).await?;
        let mut found: Vec<FineTune> = list
            .data
            .into_iter()
            .filter(|j| match &j.suffix {
                Some(s) if !s.is_empty() => s == suffix,
                _ => j.model_output_name.as_deref().is_some_and(|n| carries(n, suffix)),
            })
            .collect();
        found.sort_by_key(|j| j.created_at.as_ref().map(|v| v.to_string()).unwrap_or_default());
        Ok(found.pop())
    }

    /// Cancels a job (a job already ended answers as it is).
    pub async fn cancel_job(&self, job_id: &str) -> Result<(), ProviderError> {
        let path = ["fine-tunes", job_id, "cancel"];
        self.client.json::<FineTune>(Method::POST, &path, &[], Body::None, Kind::Other, Retry::Always).await?;
        Ok(())
    }

    /// Polls a job to its end, reporting its training and validation losses
    /// as they come and, at the end, its checkpoints.
    pub async fn follow_job(
        &self,
        job_id: &str,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        follow::follow(self, job_id, on_event).await
    }

    /// Asks a model for the reply to a prompt under the decoding settings: by its name
    /// serverless, or through the dedicated endpoint `open_model` made.
    pub async fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> Result<Completion, ProviderError> {
        inference::complete(self, model, prompt, decoding).await
    }

    /// Makes `model` answerable: serverless, or on a dedicated endpoint
    /// (recorded before it is created, ready once it has started).
    pub async fn open_model(&self, model: &str) -> Result<(), ProviderError> {
        inference::open_model(self, model).await
    }

    /// Deletes the dedicated endpoint `open_model` made, if it made one, and
    /// records it deleted once Together confirms.
    pub async fn close_model(&self, model: &str) -> Result<(), ProviderError> {
        inference::close_model(self, model).await
    }

    /// Deletes the sweep's endpoints a previous process left (not `deleted`
    /// in `deployments`, its owner no longer running); returns how many were deleted.
    pub async fn clean_up(&self) -> Result<usize, ProviderError> {
        inference::clean_up(self).await
    }

    /// The decoding settings, for the prediction cache's key.
    pub fn decoding(&self, decoding: &Decoding) -> String {
        format!("together {} {}", self.client.base_url(), decoding.key("max_tokens"))
    }
}

/// The suffix of a request's job: `{run_id}-{attempt}` from its tags.
fn suffix(request: &JobRequest) -> String {
    tags_suffix(&request.metadata).unwrap_or_else(|| request.suffix.chars().take(MAX_SUFFIX).collect())
}

fn tags_suffix(metadata: &BTreeMap<String, String>) -> Option<String> {
    let (run, attempt) = (metadata.get("ftsweep_run")?, metadata.get("ftsweep_attempt")?);
    Some(format!("{run}-{attempt}").chars().take(MAX_SUFFIX).collect())
}

/// Whether `name` holds `word` bounded by non-alphanumeric characters (or its ends).
fn carries(name: &str, word: &str) -> bool {
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
    name.match_indices(word)
        .any(|(i, _)| boundary(name[..i].chars().next_back()) && boundary(name[i + word.len()..].chars().next()))
}

/// A short printable id, as a server's header or body may name one.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic())
}

fn decode(message: String) -> ProviderError {
    ProviderError::Api(ApiError::Decode(message))
}

/// `, request ID` when the answer carries one.
fn request_note(headers: &reqwest::header::HeaderMap) -> String {
    super::openai::client::request_id(headers).map(|r| format!(" (request {r})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Value;

    fn request(config: RunConfig) -> JobRequest {
        JobRequest {
            base_model: "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference".into(),
            training_file: "file-t".into(),
            validation_file: "file-v".into(),
            hyperparameters: config,
            method: crate::space::Method::Sft,
            suffix: "r-0123456789abcdef".into(),
            metadata: BTreeMap::from([
                ("ftsweep_sweep".to_string(), "s".to_string()),
                ("ftsweep_run".to_string(), "r-0123456789abcdef".to_string()),
                ("ftsweep_attempt".to_string(), "2".to_string()),
            ]),
        }
    }

    fn provider(settings: TogetherSettings, defaults: JobDefaults) -> TogetherProvider {
        let store = SharedStore::new(crate::store::Store::open_in_memory().unwrap());
        let settings = TogetherSettings { base_url: "http://127.0.0.1:9/v1".into(), ..settings };
        TogetherProvider::new(&settings, Secret::new("k".into()), store, PollPolicy::default())
            .unwrap()
            .with_defaults(defaults)
    }

    #[test]
    fn a_create_carries_the_runs_names_and_leaves_auto_out() {
        let mut config = RunConfig { n_epochs: Some(3), seed: 7, ..RunConfig::default() };
        config.set("learning_rate", Some(Value::Float(2e-4)));
        config.set("batch_size", Some(Value::Int(16)));
        config.set("lora_r", Some(Value::Int(8)));
        config.set("warmup_ratio", Some(Value::Float(0.1)));
        let base = JobDefaults { base_model: request(RunConfig::default()).base_model, ..JobDefaults::default() };
        let p = provider(TogetherSettings::default(), base.clone());
        let body = serde_json::to_value(p.create_body(&request(config.clone()))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
                "training_file": "file-t",
                "n_epochs": 3,
                "batch_size": 16,
                "learning_rate": 2e-4,
                "warmup_ratio": 0.1,
                "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
                "training_method": {"method": "sft", "train_on_inputs": "auto"},
                "suffix": "r-0123456789abcdef-2",
                "random_seed": 7,
            })
        );
        // Full training, inputs trained on, checkpoints evaluated and early stopping on.
        let settings = TogetherSettings {
            training: TogetherTraining::Full,
            train_on_inputs: Some(true),
            ..TogetherSettings::default()
        };
        let defaults = JobDefaults { checkpoint_every_epoch: true, stopping_patience: Some(4), ..base.clone() };
        let p = provider(settings, defaults.clone());
        let body = serde_json::to_value(p.create_body(&request(config.clone()))).unwrap();
        assert_eq!(body["training_type"], serde_json::json!({"type": "Full"}));
        assert_eq!(body["training_method"]["train_on_inputs"], true);
        assert_eq!((body["n_checkpoints"].as_i64(), body["n_evals"].as_i64()), (Some(3), Some(12)));
        assert_eq!(body["validation_file"], "file-v", "a job that validates gets the file");
        // Written as "auto": left to the server; written as a value: sent.
        let written = JobDefaults { written: vec!["n_checkpoints".into(), "n_evals".into()], ..defaults };
        let p = provider(TogetherSettings::default(), written);
        let body = serde_json::to_value(p.create_body(&request(config.clone()))).unwrap();
        assert!(body.get("n_checkpoints").is_none() && body.get("n_evals").is_none(), "{body}");
        assert!(body.get("validation_file").is_none(), "{body}");
        config.set("n_evals", Some(Value::Int(2)));
        let body = serde_json::to_value(p.create_body(&request(config.clone()))).unwrap();
        assert_eq!(body["n_evals"], 2);
        // A DPO run: `training_method` carries its beta (auto: left out), not `train_on_inputs`.
        let mut dpo = request(config.clone());
        dpo.method = crate::space::Method::Dpo;
        dpo.hyperparameters.set("beta", Some(Value::Float(0.5)));
        let p = provider(
            TogetherSettings::default(),
            JobDefaults { base_model: dpo.base_model.clone(), ..JobDefaults::default() },
        );
        let body = serde_json::to_value(p.create_body(&dpo)).unwrap();
        assert_eq!(body["training_method"], serde_json::json!({"method": "dpo", "dpo_beta": 0.5}));
        dpo.hyperparameters.set("beta", None);
        let body = serde_json::to_value(p.create_body(&dpo)).unwrap();
        assert_eq!(body["training_method"], serde_json::json!({"method": "dpo"}));
        // A continuation trains from its parent's output.
        let mut r = request(config);
        r.base_model = "acct/parent-out".into();
        let body = serde_json::to_value(provider(TogetherSettings::default(), base).create_body(&r)).unwrap();
        assert_eq!((body.get("model"), &body["from_checkpoint"]), (None, &serde_json::json!("acct/parent-out")));
    }

    #[test]
    fn a_suffix_is_found_only_as_a_whole_word() {
        assert!(carries("acct/Llama-3-r-0a-1-deadbeef", "r-0a-1"));
        assert!(carries("r-0a-1", "r-0a-1"));
        assert!(!carries("acct/Llama-3-r-0a-12-deadbeef", "r-0a-1"));
        assert!(!carries("acct/Llama-3-xr-0a-1", "r-0a-1"));
    }
}
