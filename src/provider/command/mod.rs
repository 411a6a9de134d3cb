//! `provider = "command"`: the user's own trainer (TRL, Axolotl, Unsloth,
//! LLaMA-Factory, or `ftsweep train`) run by an engine (a detached local
//! process, or a Ray job), its output read by HF Trainer conventions, its
//! models answered by an OpenAI-compatible inference server with vLLM's
//! runtime LoRA endpoints.
//!
//! A run attempt trains into `{output_root}/{sweep}/{run_id}/attempt-{n}`
//! as the submission `ftsweep-{12 hex of sha256(sweep)}-{run_id}-{n}`, which
//! is also its job id: everything about the job is derivable from it after
//! a crash. A model is the absolute path of an adapter directory.

pub mod engine;
pub mod infer;
pub mod local;
pub mod output;
pub mod ray;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError};
use crate::data::{ChatFile, Prompt};
use crate::spec::{CommandSettings, Decoding};
use engine::{JobState, Submission};
use infer::InferenceClient;
use output::{ADAPTER_CONFIG, OutputReader};

/// How often a job's state and output directory are looked at.
pub const POLL: Duration = Duration::from_millis(200);

/// How many failed looks at a job's state in a row end following it.
const STATE_FAILURES: u32 = 50;

/// The job code of a trainer that failed; not worth another attempt (a
/// command that exits non-zero does it again).
pub const FAILED_CODE: &str = "command_failed";

/// The engine that runs the trainers.
pub enum Engine {
    Local(local::LocalEngine),
    Ray(ray::RayEngine),
}

impl Engine {
    async fn submit(&self, s: &Submission) -> Result<(), ProviderError> {
        match self {
            Engine::Local(e) => e.submit(s).await,
            Engine::Ray(e) => e.submit(s).await,
        }
    }
    async fn find(&self, id: &str) -> Result<Option<JobState>, ProviderError> {
        match self {
            Engine::Local(e) => e.find(id).await,
            Engine::Ray(e) => e.find(id).await,
        }
    }
    async fn state(&self, id: &str) -> Result<JobState, ProviderError> {
        match self {
            Engine::Local(e) => e.state(id).await,
            Engine::Ray(e) => e.state(id).await,
        }
    }
    async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        match self {
            Engine::Local(e) => e.stop(id).await,
            Engine::Ray(e) => e.stop(id).await,
        }
    }
    async fn log_tail(&self, id: &str) -> Result<String, ProviderError> {
        match self {
            Engine::Local(e) => e.log_tail(id).await,
            Engine::Ray(e) => e.log_tail(id).await,
        }
    }
}

/// The provider of a command sweep.
pub struct CommandProvider {
    settings: CommandSettings,
    sweep: String,
    base_model: String,
    /// Absolute.
    output_root: PathBuf,
    engine: Engine,
    pub inference: InferenceClient,
    /// The training file's tokens: an epoch's trained tokens.
    training_tokens: u64,
}

/// The submission id (and job id) of a run's attempt.
pub fn submission_id(sweep: &str, run_id: &str, attempt: i64) -> String {
    let digest = Sha256::digest(sweep.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("ftsweep-{hex}-{run_id}-{attempt}")
}

/// The run and attempt of a submission id of `sweep`.
pub fn parse_submission_id(sweep: &str, id: &str) -> Option<(String, i64)> {
    let prefix = submission_id(sweep, "", 0);
    let prefix = prefix.strip_suffix("-0")?;
    let (run_id, attempt) = id.strip_prefix(prefix)?.rsplit_once('-')?;
    let attempt: i64 = attempt.parse().ok()?;
    let valid = !run_id.is_empty() && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then(|| (run_id.to_string(), attempt))
}

/// The output directory of a submission: of `sweep`, or of another sweep
/// under the same root that planned the same run (runs are shared by sweeps
/// that plan the same point, so a sweep may follow a job another started).
pub fn submission_dir(output_root: &Path, sweep: &str, id: &str) -> Option<PathBuf> {
    if let Some((run, attempt)) = parse_submission_id(sweep, id) {
        return Some(attempt_dir(output_root, sweep, &run, attempt));
    }
    let entries = std::fs::read_dir(output_root).ok()?;
    entries.filter_map(|e| e.ok()).find_map(|e| {
        let other = e.file_name().to_str()?.to_string();
        let (run, attempt) = parse_submission_id(&other, id)?;
        Some(attempt_dir(output_root, &other, &run, attempt))
    })
}

/// A run attempt's output directory.
pub fn attempt_dir(output_root: &Path, sweep: &str, run_id: &str, attempt: i64) -> PathBuf {
    output_root.join(sweep).join(run_id).join(format!("attempt-{attempt}"))
}

/// An absolute form of a path (symbolic links resolved where it exists).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// What a job's placeholders stand for, beyond the request's own.
pub struct Fixed<'a> {
    pub base_model: &'a str,
    pub output_dir: &'a Path,
    pub run_id: &'a str,
    pub ftsweep: &'a str,
    pub config: Option<&'a Path>,
}

/// The values of a job's placeholders: every hyperparameter the run has
/// (`Value`'s display), `n_epochs` (the epochs this job trains), `seed`,
/// the data files (as uploaded: absolute), `base_model` (the sweep's, always),
/// `init_from` (the parent model's directory for a continuation, else
/// empty), `output_dir`, `run_id`, `ftsweep` and `config` (with a config
/// template). Pure.
pub fn placeholder_values(request: &JobRequest, fixed: &Fixed<'_>) -> BTreeMap<String, String> {
    let hp = &request.hyperparameters;
    let mut values: BTreeMap<String, String> =
        hp.params.iter().map(|(name, value)| (name.clone(), value.to_string())).collect();
    values.insert("n_epochs".into(), hp.n_epochs.map_or("auto".into(), |n| n.to_string()));
    values.insert("seed".into(), hp.seed.to_string());
    values.insert("base_model".into(), fixed.base_model.to_string());
    values.insert("training_file".into(), request.training_file.clone());
    values.insert("validation_file".into(), request.validation_file.clone());
    let init_from = if request.base_model == fixed.base_model { String::new() } else { request.base_model.clone() };
    values.insert("init_from".into(), init_from);
    values.insert("output_dir".into(), fixed.output_dir.display().to_string());
    values.insert("run_id".into(), fixed.run_id.to_string());
    values.insert("ftsweep".into(), fixed.ftsweep.to_string());
    if let Some(config) = fixed.config {
        values.insert("config".into(), config.display().to_string());
    }
    values
}

fn engine_error(message: String) -> ProviderError {
    ProviderError::Engine { message, retryable: false }
}

/// Debug builds only: `FTSWEEP_TEST_COMMAND_STALL=STEP:MS` (`submit`, `open`
/// or `close`) pauses before that step, so that tests can kill ftsweep there.
async fn injected_stall(step: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Ok(value) = std::env::var("FTSWEEP_TEST_COMMAND_STALL") else { return };
    if let Some(ms) = value.strip_prefix(step).and_then(|v| v.strip_prefix(':')).and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

impl CommandProvider {
    /// The provider of a sweep's `[command]` settings; `key` is the inference
    /// server's, if any; `training_tokens`, the training file's (what an epoch trains).
    pub fn new(
        settings: &CommandSettings,
        sweep: &str,
        base_model: &str,
        key: Option<infer::Key>,
        training_tokens: u64,
    ) -> Result<CommandProvider, ProviderError> {
        let output_root = absolute(&settings.output_root);
        let engine = match &settings.engine {
            crate::spec::Engine::Local(local) => {
                let (root, name) = (output_root.clone(), sweep.to_string());
                let dir_of = move |id: &str| submission_dir(&root, &name, id);
                Engine::Local(local::LocalEngine::new(local, Box::new(dir_of))?)
            }
            crate::spec::Engine::Ray(ray) => Engine::Ray(ray::RayEngine::new(ray)?),
        };
        Ok(CommandProvider {
            settings: settings.clone(),
            sweep: sweep.to_string(),
            base_model: base_model.to_string(),
            output_root,
            engine,
            inference: InferenceClient::new(&settings.inference_url, key)?,
            training_tokens,
        })
    }

    /// A data file's id for the trainer: its absolute path.
    pub fn upload(&self, file: &ChatFile) -> String {
        absolute(&file.path).display().to_string()
    }

    fn attempt_of(&self, metadata: &BTreeMap<String, String>) -> Result<(String, i64), ProviderError> {
        let run = metadata.get("ftsweep_run").filter(|r| !r.is_empty());
        let attempt = metadata.get("ftsweep_attempt").and_then(|a| a.parse::<i64>().ok());
        match (run, attempt) {
            (Some(run), Some(attempt)) => Ok((run.clone(), attempt)),
            _ => Err(engine_error("a command job needs its run and attempt (`ftsweep_run`, `ftsweep_attempt`)".into())),
        }
    }

    fn dir_of(&self, id: &str) -> Result<PathBuf, ProviderError> {
        submission_dir(&self.output_root, &self.sweep, id).ok_or_else(|| ProviderError::UnknownJob(id.to_string()))
    }

    /// Renders the trainer's command (and config) into the attempt's output
    /// directory and submits it; the job id is the submission id.
    pub async fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        let (run_id, attempt) = self.attempt_of(&request.metadata)?;
        let output_dir = attempt_dir(&self.output_root, &self.sweep, &run_id, attempt);
        std::fs::create_dir_all(&output_dir)
            .map_err(|e| engine_error(format!("cannot make the output directory {}: {e}", output_dir.display())))?;
        let ftsweep = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "ftsweep".into());
        let config_path = output_dir.join("config.yml");
        let fixed = Fixed {
            base_model: &self.base_model,
            output_dir: &output_dir,
            run_id: &run_id,
            ftsweep: &ftsweep,
            config: self.settings.config_template.as_ref().map(|_| config_path.as_path()),
        };
        let values = placeholder_values(request, &fixed);
        if let Some(template) = &self.settings.config_template {
            let text = std::fs::read_to_string(template)
                .map_err(|e| engine_error(format!("cannot read the config template {}: {e}", template.display())))?;
            let rendered = crate::template::render(&text, &values)
                .map_err(|e| engine_error(format!("the config template {}: {e}", template.display())))?;
            crate::files::write_atomically(&config_path, rendered.as_bytes())
                .map_err(|e| engine_error(format!("cannot write {}: {e}", config_path.display())))?;
        }
        let argv = self
            .settings
            .train
            .iter()
            .map(|a| crate::template::render(a, &values))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| engine_error(format!("[command] train: {e}")))?;
        let id = submission_id(&self.sweep, &run_id, attempt);
        let submission =
            Submission { id: id.clone(), argv, output_dir, env: BTreeMap::new(), metadata: request.metadata.clone() };
        injected_stall("submit").await;
        self.engine.submit(&submission).await?;
        Ok(id)
    }

    /// The job of a run's attempt, if it was submitted.
    pub async fn find_job(&self, metadata: &BTreeMap<String, String>) -> Result<Option<String>, ProviderError> {
        let (run_id, attempt) = self.attempt_of(metadata)?;
        let id = submission_id(&self.sweep, &run_id, attempt);
        Ok(self.engine.find(&id).await?.map(|_| id))
    }

    /// Stops a job.
    pub async fn cancel_job(&self, job_id: &str) -> Result<(), ProviderError> {
        self.engine.stop(job_id).await
    }

    /// Follows a job to its end: its state, and what it writes in its output directory.
    pub async fn follow_job(
        &self,
        job_id: &str,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        let dir = self.dir_of(job_id)?;
        let mut reader = OutputReader::new(&dir);
        let mut failures = 0;
        let state = loop {
            let state = match self.engine.state(job_id).await {
                Ok(s) => {
                    failures = 0;
                    Some(s)
                }
                Err(e) if e.is_provider_side() && failures < STATE_FAILURES => {
                    failures += 1;
                    tracing::debug!(job_id, "the job's state is unknown for now: {e}");
                    None
                }
                Err(e) => return Err(e),
            };
            // Read after the state: a job seen ended has written all it will.
            for event in reader.poll() {
                on_event(event);
            }
            if let Some(s) = state.filter(JobState::is_terminal) {
                break s;
            }
            tokio::time::sleep(POLL).await;
        };
        // A trainer that exited 0 without its adapter: its log says why (the
        // engine's log: Ray keeps the driver's, the local engine train.log).
        let log = if state == JobState::Succeeded && !dir.join(ADAPTER_CONFIG).is_file() {
            self.engine.log_tail(job_id).await.unwrap_or_else(|e| format!("(its log cannot be read: {e})"))
        } else {
            String::new()
        };
        Ok(self.outcome(&dir, state, &reader, &log))
    }

    fn outcome(&self, dir: &Path, state: JobState, reader: &OutputReader, log: &str) -> JobOutcome {
        let final_state = output::read_state(dir);
        let epochs = final_state.as_ref().and_then(|s| s.epoch).unwrap_or(reader.last_epoch).max(0.0);
        let trained_tokens = final_state
            .as_ref()
            .and_then(|s| s.num_input_tokens_seen)
            .unwrap_or_else(|| (self.training_tokens as f64 * epochs).round() as u64);
        match state {
            JobState::Succeeded if dir.join(ADAPTER_CONFIG).is_file() => {
                JobOutcome::Succeeded { model: dir.display().to_string(), trained_tokens }
            }
            JobState::Succeeded => JobOutcome::Failed {
                code: FAILED_CODE.into(),
                message: local::with_log(
                    &format!("the trainer exited 0 but wrote no {ADAPTER_CONFIG} in {}", dir.display()),
                    log,
                ),
            },
            JobState::Failed { reason } => JobOutcome::Failed { code: FAILED_CODE.into(), message: reason },
            JobState::Stopped => JobOutcome::Cancelled { trained_tokens },
            JobState::Pending | JobState::Running => {
                JobOutcome::Failed { code: "command_lost".into(), message: "the job had not ended".into() }
            }
        }
    }

    /// Makes a model answerable: an adapter directory is loaded at the inference server.
    pub async fn open_model(&self, model: &str) -> Result<(), ProviderError> {
        if infer::is_adapter(model, &self.base_model) {
            injected_stall("open").await;
            self.inference.load(&infer::served_name(model, &self.base_model), model).await?;
        }
        Ok(())
    }

    /// Frees what `open_model` took.
    pub async fn close_model(&self, model: &str) -> Result<(), ProviderError> {
        if infer::is_adapter(model, &self.base_model) {
            injected_stall("close").await;
            self.inference.unload(&infer::served_name(model, &self.base_model)).await?;
        }
        Ok(())
    }

    /// One completion from the inference server.
    pub async fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> Result<Completion, ProviderError> {
        self.inference.complete(&infer::served_name(model, &self.base_model), prompt, decoding).await
    }

    /// The decoding parameters the replies depend on (part of the cache key).
    pub fn decoding(&self, decoding: &Decoding) -> String {
        format!("command {} {}", self.inference.base_url(), decoding.key("max_tokens"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunConfig, Value};

    #[test]
    fn submission_ids_name_the_sweep_run_and_attempt() {
        let id = submission_id("my sweep", "r-0123456789abcdef", 2);
        assert!(id.starts_with("ftsweep-") && id.ends_with("-r-0123456789abcdef-2"), "{id}");
        assert_eq!(id.len(), "ftsweep-".len() + 12 + 1 + 18 + 2);
        assert_eq!(parse_submission_id("my sweep", &id), Some(("r-0123456789abcdef".into(), 2)));
        assert_eq!(parse_submission_id("another", &id), None);
        assert_eq!(parse_submission_id("my sweep", "ftjob-abc"), None);
        // A job another sweep under the same root started is found in that sweep's folder.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("my sweep")).unwrap();
        assert_eq!(
            submission_dir(root.path(), "another", &id),
            Some(root.path().join("my sweep/r-0123456789abcdef/attempt-2"))
        );
        assert_eq!(submission_dir(root.path(), "another", "ftsweep-000000000000-r-1-1"), None);
        assert_eq!(attempt_dir(Path::new("/r"), "s", "ab", 3), PathBuf::from("/r/s/ab/attempt-3"));
    }

    #[test]
    fn placeholders_take_the_run_and_the_job() {
        let mut hp = RunConfig { n_epochs: Some(2), seed: 7, ..RunConfig::default() };
        hp.params.insert("learning_rate".into(), Value::Float(0.0002));
        hp.params.insert("lora_r".into(), Value::Int(16));
        let mut request = JobRequest {
            base_model: "Qwen/Q".into(),
            training_file: "/d/train.jsonl".into(),
            validation_file: "/d/valid.jsonl".into(),
            hyperparameters: hp,
            method: crate::space::Method::Sft,
            suffix: "r1".into(),
            metadata: BTreeMap::new(),
        };
        let out = PathBuf::from("/runs/s/r1/attempt-1");
        let fixed =
            Fixed { base_model: "Qwen/Q", output_dir: &out, run_id: "r1", ftsweep: "/bin/ftsweep", config: None };
        let v = placeholder_values(&request, &fixed);
        assert_eq!(v["learning_rate"], "0.0002");
        assert_eq!(v["lora_r"], "16");
        assert_eq!(v["n_epochs"], "2");
        assert_eq!(v["seed"], "7");
        assert_eq!(v["init_from"], "");
        assert_eq!(v["base_model"], "Qwen/Q");
        assert_eq!(v["output_dir"], "/runs/s/r1/attempt-1");
        assert_eq!(v["ftsweep"], "/bin/ftsweep");
        assert!(!v.contains_key("config"));
        // A continuation starts from its parent's directory; the base model stays the sweep's.
        request.base_model = "/runs/s/r0/attempt-1".into();
        let v = placeholder_values(&request, &fixed);
        assert_eq!(v["init_from"], "/runs/s/r0/attempt-1");
        assert_eq!(v["base_model"], "Qwen/Q");
    }
}
