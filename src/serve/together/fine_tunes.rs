//! Together's `/v1/fine-tunes`: create with Together's fields and this server's bounds (served by
//! `GET /v1/fine-tunes/models/limits`), list, retrieve, cancel, events, metrics and checkpoints,
//! and the price estimate the SDK asks for before a create. A fine-tune is a serve job (`jobs`
//! table, trained by the worker from `local/ngram`) plus its Together parameters
//! (`together_jobs`):
//! - `learning_rate` becomes the local trainer's learning-rate multiplier `learning_rate / 1e-5`
//!   (Together's default rate trains like OpenAI's default multiplier 1);
//! - `batch_size` "max" (or omitted) is the largest batch of the training type;
//! - `n_evals` picks that many of the trainer's validations (4 an epoch), evenly spaced, as the
//!   job's `eval/loss` rows; 0 shows none and ignores the validation file;
//! - `n_checkpoints` lists the final model and the last `n_checkpoints - 1` earlier epochs (the
//!   store keeps 3 epochs, hence at most 3);
//! - `token_count` = n_epochs × training tokens + n_evals × validation tokens (o200k), and
//!   `total_price` is in nanodollars at `PRICE_LORA` / `PRICE_FULL` per token.
//!
//! Statuses: `validating_files` is `pending`, then `queued`, `running`, `uploading` (the
//! worker's last stage on this protocol), `completed`; `failed` is `error`; a cancelled job is
//! `cancel_requested` while its worker stops, then `cancelled`.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::super::errors::ApiError;
use super::super::objects::message_event;
use super::super::worker::UPLOADING_MESSAGE;
use super::{BASE_MODELS, INVALID, USER, files, invalid, iso, new_uuid_id, not_found};
use crate::data::{conversation_tokens, parse_chat_jsonl};
use crate::provider::local::{BASE_MODEL, KEPT_CHECKPOINTS, VALIDATIONS_PER_EPOCH};
use crate::serve::{App, ORGANIZATION, Params, random_hex, unix_now, worker};
use crate::wire::openai::{HyperValue, Hyperparameters, Job, JobEvent, JobStatus, Method, Metrics};

/// This server's training price: $0.48 per million tokens for LoRA, $0.54 for Full (Together's
/// 2025 list prices for models up to 16B; a stand-in, not a quote), in nanodollars per token.
pub const PRICE_LORA: u64 = 480;
pub const PRICE_FULL: u64 = 540;

/// The bounds of every accepted base model (what `/fine-tunes/models/limits` answers).
const MAX_EPOCHS: i64 = 20;
const MAX_EVALS: i64 = 100;
const MAX_CHECKPOINTS: i64 = KEPT_CHECKPOINTS as i64;
const MIN_LEARNING_RATE: f64 = 1e-6;
const MAX_LEARNING_RATE: f64 = 1e-2;
const MIN_BATCH: i64 = 8;
const MAX_BATCH_LORA: i64 = 64;
const MAX_BATCH_FULL: i64 = 32;
const MAX_RANK: i64 = 64;
const DEFAULT_RANK: i64 = 16;
const MAX_SUFFIX: usize = 40;
const TARGET_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// Together's default learning rate: the local trainer's multiplier 1.
const DEFAULT_LEARNING_RATE: f64 = 1e-5;

/// A fine-tune's Together parameters, as checked (every default filled in).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FineTune {
    pub model: String,
    pub suffix: Option<String>,
    pub model_output_name: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub n_epochs: u32,
    pub n_checkpoints: u32,
    pub n_evals: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub lr_scheduler: Value,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    pub training_type: Value,
    pub full: bool,
    pub training_method: Value,
    pub random_seed: Option<i64>,
    pub train_tokens: u64,
    pub valid_tokens: u64,
    pub train_lines: u64,
    pub train_bytes: u64,
}

impl FineTune {
    /// The billed tokens of the whole training.
    fn tokens(&self) -> u64 {
        u64::from(self.n_epochs) * self.train_tokens + u64::from(self.n_evals) * self.valid_tokens
    }

    fn price_per_token(&self) -> u64 {
        if self.full { PRICE_FULL } else { PRICE_LORA }
    }
}

/// The local base model's name for a Together base model.
fn short_name(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

/// A field's number, or a 400 naming it.
fn number(raw: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(invalid(format!("Invalid value for '{key}': expected a number, got {other}"), key)),
    }
}

/// A whole number in `min..=max` (default when absent).
fn int_in(raw: &Map<String, Value>, key: &str, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
    match number(raw, key)? {
        None => Ok(default),
        Some(x) if x.fract() == 0.0 && (min as f64..=max as f64).contains(&x) => Ok(x as i64),
        Some(x) => {
            Err(invalid(format!("Invalid value for '{key}': {x}. Expected a whole number from {min} to {max}"), key))
        }
    }
}

/// A number in `min..=max` (`max_open`: below max).
fn float_in(raw: &Map<String, Value>, key: &str, min: f64, max: f64, default: f64) -> Result<f64, ApiError> {
    match number(raw, key)? {
        None => Ok(default),
        Some(x) if x.is_finite() && (min..=max).contains(&x) => Ok(x),
        Some(x) => Err(invalid(format!("Invalid value for '{key}': {x}. Expected a number from {min} to {max}"), key)),
    }
}

/// A Together file's tokens, lines and bytes, processing it if it was not (the TypeScript SDK
/// never asks); a file whose bytes never came is refused.
async fn file_stats(app: &App, id: &str, key: &str) -> Result<(u64, u64, u64), ApiError> {
    if app.store.lock().together_upload(id)?.is_none() {
        let message = format!("Invalid value for '{key}': the file {id} does not exist");
        return Err(invalid(message, key).with_code("file_not_found"));
    }
    let (upload, file) = files::process(app, id).await.map_err(|e| ApiError {
        message: format!("The file {id} ('{key}') cannot be used: {}", e.message),
        param: Some(key.to_string()),
        ..e
    })?;
    if upload.purpose != "fine-tune" {
        let message = format!("The file {id} has purpose '{}': '{key}' needs a 'fine-tune' file", upload.purpose);
        return Err(invalid(message, key));
    }
    let content = app.store.read_content(id)?.unwrap_or_default();
    let conversations = parse_chat_jsonl(FsPath::new(&upload.filename), &content)
        .map_err(|e| invalid(format!("The file {id} cannot be read: {}", e.message), key))?;
    let tokens = conversations.iter().map(conversation_tokens).sum();
    Ok((tokens, conversations.len() as u64, file.bytes))
}

/// Checks a create request as Together does, with this server's bounds.
async fn check(app: &App, raw: &Map<String, Value>) -> Result<FineTune, ApiError> {
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            // The SDKs send an empty `validation_file` for none.
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(format!("Invalid value for '{key}': expected a string, got {other}"), key)),
        }
    };
    if raw.get("from_checkpoint").is_some_and(|v| !v.is_null())
        || raw.get("from_hf_model").is_some_and(|v| !v.is_null())
    {
        return Err(invalid(
            "This server fine-tunes base models only: leave 'from_checkpoint' and 'from_hf_model' unset",
            "from_checkpoint",
        ));
    }
    let model = text("model")?.ok_or_else(|| invalid("Missing required parameter: 'model'", "model"))?;
    if !BASE_MODELS.iter().any(|(m, _)| *m == model) {
        let names: Vec<&str> = BASE_MODELS.iter().map(|(m, _)| *m).collect();
        let message = format!("Model {model} is not supported for fine-tuning. Supported models: {}", names.join(", "));
        return Err(invalid(message, "model").with_code("model_not_supported"));
    }
    let training_file = text("training_file")?
        .ok_or_else(|| invalid("Missing required parameter: 'training_file'", "training_file"))?;
    let (train_tokens, train_lines, train_bytes) = file_stats(app, &training_file, "training_file").await?;
    let validation_file = text("validation_file")?;
    let n_epochs = int_in(raw, "n_epochs", 1, MAX_EPOCHS, 1)?;
    let n_checkpoints = int_in(raw, "n_checkpoints", 1, MAX_CHECKPOINTS, 1)?;
    let n_evals = int_in(raw, "n_evals", 0, MAX_EVALS, 0)?;
    let valid_tokens = match &validation_file {
        Some(id) => file_stats(app, id, "validation_file").await?.0,
        None if n_evals > 0 => {
            return Err(invalid("'n_evals' greater than 0 needs a 'validation_file'", "n_evals"));
        }
        None => 0,
    };
    let learning_rate = float_in(raw, "learning_rate", MIN_LEARNING_RATE, MAX_LEARNING_RATE, DEFAULT_LEARNING_RATE)?;
    let warmup_ratio = float_in(raw, "warmup_ratio", 0.0, 1.0, 0.0)?;
    let max_grad_norm = float_in(raw, "max_grad_norm", 0.0, f64::MAX, 1.0)?;
    let weight_decay = float_in(raw, "weight_decay", 0.0, f64::MAX, 0.0)?;
    let lr_scheduler = check_scheduler(raw.get("lr_scheduler"))?;
    let (training_type, full) = check_training_type(raw.get("training_type"))?;
    let max_batch = if full { MAX_BATCH_FULL } else { MAX_BATCH_LORA };
    let batch_size = match raw.get("batch_size") {
        None | Some(Value::Null) => max_batch,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("max") => max_batch,
        Some(_) => int_in(raw, "batch_size", MIN_BATCH, max_batch, max_batch).map_err(|_| {
            invalid(
                format!(
                    "Invalid value for 'batch_size': expected \"max\" or a whole number from {MIN_BATCH} to {max_batch}"
                ),
                "batch_size",
            )
        })?,
    };
    let training_method = check_training_method(raw.get("training_method"), raw.get("train_on_inputs"))?;
    let suffix = text("suffix")?;
    if let Some(s) = &suffix {
        let n = s.chars().count();
        if n > MAX_SUFFIX {
            let message = format!("Invalid value for 'suffix': {n} characters long, at most {MAX_SUFFIX} are allowed");
            return Err(invalid(message, "suffix"));
        }
    }
    let random_seed = match raw.get("random_seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(other) => {
            return Err(invalid(
                format!("Invalid value for 'random_seed': expected a whole number, got {other}"),
                "random_seed",
            ));
        }
    };
    let model_output_name = match &suffix {
        Some(s) => format!("{USER}/{}-{s}-{}", short_name(&model), random_hex(4)),
        None => format!("{USER}/{}-{}", short_name(&model), random_hex(4)),
    };
    Ok(FineTune {
        model,
        suffix,
        model_output_name,
        training_file,
        validation_file,
        n_epochs: n_epochs as u32,
        n_checkpoints: n_checkpoints as u32,
        n_evals: n_evals as u32,
        batch_size: batch_size as u32,
        learning_rate,
        lr_scheduler,
        warmup_ratio,
        max_grad_norm,
        weight_decay,
        training_type,
        full,
        training_method,
        random_seed,
        train_tokens,
        valid_tokens,
        train_lines,
        train_bytes,
    })
}

fn check_scheduler(v: Option<&Value>) -> Result<Value, ApiError> {
    let Some(Value::Object(s)) = v.filter(|v| !v.is_null()) else {
        if v.is_some_and(|v| !v.is_null()) {
            return Err(invalid("Invalid value for 'lr_scheduler': expected an object", "lr_scheduler"));
        }
        return Ok(json!({"lr_scheduler_type": "linear", "lr_scheduler_args": {"min_lr_ratio": 0.0}}));
    };
    let kind = s.get("lr_scheduler_type").and_then(Value::as_str).unwrap_or("linear").to_ascii_lowercase();
    if kind != "linear" && kind != "cosine" {
        let message =
            format!("Invalid value for 'lr_scheduler.lr_scheduler_type': '{kind}'. Expected 'linear' or 'cosine'");
        return Err(invalid(message, "lr_scheduler.lr_scheduler_type"));
    }
    let args = s.get("lr_scheduler_args").and_then(Value::as_object).cloned().unwrap_or_default();
    let min_lr_ratio = float_in(&args, "min_lr_ratio", 0.0, 1.0, 0.0)
        .map_err(|e| ApiError { param: Some("lr_scheduler.lr_scheduler_args.min_lr_ratio".into()), ..e })?;
    let mut out = json!({"lr_scheduler_type": kind, "lr_scheduler_args": {"min_lr_ratio": min_lr_ratio}});
    if kind == "cosine" {
        let cycles = float_in(&args, "num_cycles", f64::MIN_POSITIVE, f64::MAX, 0.5)
            .map_err(|e| ApiError { param: Some("lr_scheduler.lr_scheduler_args.num_cycles".into()), ..e })?;
        out["lr_scheduler_args"]["num_cycles"] = json!(cycles);
    }
    Ok(out)
}

/// `training_type`: `{type:"Lora", lora_r ≤ 64, lora_alpha, lora_dropout in [0,1),
/// lora_trainable_modules}` or `{type:"Full"}`; omitted is LoRA at the default rank. Returns the
/// echoed object and whether it is Full.
fn check_training_type(v: Option<&Value>) -> Result<(Value, bool), ApiError> {
    let t = match v {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(t)) => t.clone(),
        Some(_) => return Err(invalid("Invalid value for 'training_type': expected an object", "training_type")),
    };
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("Lora");
    if kind.eq_ignore_ascii_case("full") {
        return Ok((json!({"type": "Full"}), true));
    }
    if !kind.eq_ignore_ascii_case("lora") {
        let message = format!("Invalid value for 'training_type.type': '{kind}'. Expected 'Lora' or 'Full'");
        return Err(invalid(message, "training_type.type"));
    }
    let at = |e: ApiError, key: &str| ApiError { param: Some(format!("training_type.{key}")), ..e };
    let r = int_in(&t, "lora_r", 1, MAX_RANK, DEFAULT_RANK).map_err(|e| at(e, "lora_r"))?;
    let alpha = int_in(&t, "lora_alpha", 1, 1 << 16, 2 * r).map_err(|e| at(e, "lora_alpha"))?;
    let dropout = float_in(&t, "lora_dropout", 0.0, 1.0, 0.0).map_err(|e| at(e, "lora_dropout"))?;
    if dropout >= 1.0 {
        return Err(invalid(
            "Invalid value for 'training_type.lora_dropout': 1. Expected a number from 0 to below 1",
            "training_type.lora_dropout",
        ));
    }
    let modules = t.get("lora_trainable_modules").and_then(Value::as_str).unwrap_or("all-linear").to_string();
    if modules != "all-linear"
        && let Some(bad) = modules.split(',').map(str::trim).find(|m| !TARGET_MODULES.contains(m))
    {
        let message = format!(
            "Invalid value for 'training_type.lora_trainable_modules': '{bad}'. Expected 'all-linear' or a comma list of {}",
            TARGET_MODULES.join(", ")
        );
        return Err(invalid(message, "training_type.lora_trainable_modules"));
    }
    let echo = json!({"type": "Lora", "lora_r": r, "lora_alpha": alpha, "lora_dropout": dropout, "lora_trainable_modules": modules});
    Ok((echo, false))
}

fn check_training_method(v: Option<&Value>, top_level_inputs: Option<&Value>) -> Result<Value, ApiError> {
    let m = match v {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid("Invalid value for 'training_method': expected an object", "training_method")),
    };
    let method = m.get("method").and_then(Value::as_str).unwrap_or("sft").to_ascii_lowercase();
    if method == "dpo" {
        if m.get("train_on_inputs").or(top_level_inputs).is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                "Invalid value for 'training_method.train_on_inputs': a 'dpo' training method takes no \
                 train_on_inputs",
                "training_method.train_on_inputs",
            ));
        }
        // Together's default beta; the local trainer, with no preference objective, ignores it.
        let beta = match m.get("dpo_beta") {
            None | Some(Value::Null) => 0.1,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => x,
                _ => {
                    return Err(invalid(
                        format!("Invalid value for 'training_method.dpo_beta': {v}. Expected a number above 0"),
                        "training_method.dpo_beta",
                    ));
                }
            },
        };
        return Ok(json!({"method": "dpo", "dpo_beta": beta}));
    }
    if method != "sft" {
        let message =
            format!("Invalid value for 'training_method.method': '{method}'. This server trains 'sft' and 'dpo'");
        return Err(invalid(message, "training_method.method"));
    }
    let inputs = m.get("train_on_inputs").or(top_level_inputs).cloned().unwrap_or(json!("auto"));
    if !(inputs.is_boolean() || inputs.as_str() == Some("auto")) {
        return Err(invalid(
            "Invalid value for 'training_method.train_on_inputs': expected true, false or \"auto\"",
            "training_method.train_on_inputs",
        ));
    }
    Ok(json!({"method": "sft", "train_on_inputs": inputs}))
}

/// `POST /v1/fine-tunes`: checks the request, records the job (`pending`) and its parameters in
/// one lock, and hands it to a worker.
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let raw = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(raw)) => raw,
        Ok(_) => return Err(ApiError::invalid("The request body must be a JSON object", None)),
        Err(e) => {
            return Err(ApiError::invalid(format!("We could not parse the JSON body of your request ({e})"), None));
        }
    };
    let ft = check(&app, &raw).await?;
    let hyperparameters = Hyperparameters {
        n_epochs: Some(HyperValue::Int(i64::from(ft.n_epochs))),
        batch_size: Some(HyperValue::Int(i64::from(ft.batch_size))),
        learning_rate_multiplier: Some(HyperValue::Float(ft.learning_rate / DEFAULT_LEARNING_RATE)),
        beta: None,
    };
    // The worker trains the job's `method`: DPO when the training method says so.
    let method = match ft.training_method.get("dpo_beta").and_then(Value::as_f64) {
        Some(beta) => Method::dpo(Hyperparameters { beta: Some(HyperValue::Float(beta)), ..hyperparameters.clone() }),
        None => Method::supervised(hyperparameters.clone()),
    };
    let job = Job {
        id: new_uuid_id("ft-"),
        object: "fine_tuning.job".into(),
        created_at: unix_now(),
        model: BASE_MODEL.into(),
        status: "validating_files".into(),
        fine_tuned_model: None,
        finished_at: None,
        estimated_finish: None,
        organization_id: Some(ORGANIZATION.into()),
        training_file: ft.training_file.clone(),
        // The validation file is used only when there are evaluations, as on Together.
        validation_file: ft.validation_file.clone().filter(|_| ft.n_evals > 0),
        result_files: Vec::new(),
        trained_tokens: None,
        seed: Some(ft.random_seed.unwrap_or(42)),
        hyperparameters: Some(hyperparameters),
        method: Some(method),
        metadata: None,
        error: None,
        user_provided_suffix: ft.suffix.clone(),
    };
    {
        let mut store = app.store.lock();
        store.insert_job(&job)?;
        store.insert_together_job(&job.id, &ft)?;
        store.insert_events(&job.id, &[message_event("info", format!("{CREATED}{}", job.id))])?;
    }
    worker::spawn(&app, &job.id);
    Ok(Json(job_json(&app, &job, &ft)?))
}

/// The first event of a job (the OpenAI routes' wording).
const CREATED: &str = "Created fine-tuning job: ";

/// A fine-tune's job and parameters.
fn find(app: &App, id: &str) -> Result<(Job, FineTune), ApiError> {
    let store = app.store.lock();
    let job = store.job(id)?;
    let ft = store.together_job::<FineTune>(id)?;
    match (job, ft) {
        (Some(job), Some(ft)) => Ok((job, ft)),
        _ => Err(not_found("Fine-tune job", id)),
    }
}

/// A job's Together status.
fn status(app: &App, job: &Job) -> &'static str {
    match job.status.as_str() {
        "validating_files" => "pending",
        "queued" => "queued",
        "running" => "running",
        "uploading" => "uploading",
        "succeeded" => "completed",
        "failed" => "error",
        "cancelled" if app.controls().contains_key(&job.id) => "cancel_requested",
        "cancelled" => "cancelled",
        _ => "pending",
    }
}

/// What a job's events tell of its progress.
#[derive(Debug, Default)]
struct Progress {
    steps_completed: u64,
    total_steps: u64,
    epochs_completed: u64,
    started_at: Option<i64>,
    updated_at: i64,
    /// Steps with metrics, oldest first, and whether the step's validation is an evaluation.
    metrics: Vec<(bool, Metrics)>,
    /// The checkpoints' steps (epoch ends), oldest first.
    epoch_steps: Vec<u64>,
    /// The evaluations (of the job's `n_evals`) done.
    evals_completed: u64,
}

/// The job's events, oldest first.
fn history(app: &App, id: &str) -> Result<Vec<JobEvent>, ApiError> {
    let mut events = app.store.lock().events(id, None, usize::MAX >> 1)?;
    events.reverse();
    Ok(events)
}

fn progress(job: &Job, ft: &FineTune, events: &[JobEvent]) -> Progress {
    let mut p = Progress { updated_at: job.created_at, ..Progress::default() };
    let planned = u64::from(VALIDATIONS_PER_EPOCH) * u64::from(resolved_epochs(job));
    let mut validations = 0;
    for e in events {
        p.updated_at = p.updated_at.max(e.created_at);
        if e.kind.as_deref() == Some("metrics") {
            if let Some(m) = e.data.clone().and_then(|d| serde_json::from_value::<Metrics>(d).ok()) {
                p.steps_completed = p.steps_completed.max(m.step.unwrap_or(0));
                p.total_steps = p.total_steps.max(m.total_steps.unwrap_or(0));
                let evaluated = m.valid_loss.is_some() && {
                    validations += 1;
                    is_evaluation(validations, planned, ft.n_evals)
                };
                p.evals_completed += u64::from(evaluated);
                p.metrics.push((evaluated, m));
            }
        } else if e.message == "Fine-tuning job started" {
            p.started_at = Some(e.created_at);
        } else if let Some(step) = checkpoint_step(&e.message) {
            p.epochs_completed += 1;
            p.epoch_steps.push(step);
        }
    }
    p.updated_at = p.updated_at.max(job.finished_at.unwrap_or(0));
    p
}

/// The job's number of epochs as the worker trains it.
fn resolved_epochs(job: &Job) -> u32 {
    let n = job.hyperparameters.as_ref().and_then(|h| h.n_epochs).and_then(HyperValue::number);
    n.map_or(1, |n| n.max(1.0) as u32)
}

/// The step of the worker's "Checkpoint created at step S with Snapshot ID: M" event.
fn checkpoint_step(message: &str) -> Option<u64> {
    message.strip_prefix("Checkpoint created at step ")?.split(' ').next()?.parse().ok()
}

/// The Together job object (the same fields for create, list, retrieve and cancel).
fn job_json(app: &App, job: &Job, ft: &FineTune) -> Result<Value, ApiError> {
    let events = history(app, &job.id)?;
    Ok(job_object(app, job, ft, &progress(job, ft, &events)))
}

fn job_object(app: &App, job: &Job, ft: &FineTune, p: &Progress) -> Value {
    let status = status(app, job);
    let tokens = billed_tokens(job, ft, p);
    let param_count = BASE_MODELS.iter().find(|(m, _)| *m == ft.model).map_or(0, |(_, n)| *n);
    let eval_steps = if ft.n_evals > 0 && p.total_steps > 0 { p.total_steps / u64::from(ft.n_evals) } else { 0 };
    let train_on_inputs = ft.training_method.get("train_on_inputs").cloned().unwrap_or(Value::Null);
    let mut v = json!({
        "id": job.id,
        "job_id": job.id,
        "object": "finetune",
        "status": status,
        "created_at": iso(job.created_at),
        "updated_at": iso(p.updated_at),
        "started_at": p.started_at.map(iso),
        "user_id": USER,
        "owner_address": USER,
        "model": ft.model,
        "model_output_name": ft.model_output_name,
        "suffix": ft.suffix,
        "training_file": ft.training_file,
        "validation_file": ft.validation_file,
        "n_epochs": ft.n_epochs,
        "n_checkpoints": ft.n_checkpoints,
        "n_evals": ft.n_evals,
        "batch_size": ft.batch_size,
        "learning_rate": ft.learning_rate,
        "lr_scheduler": ft.lr_scheduler,
        "warmup_ratio": ft.warmup_ratio,
        "max_grad_norm": ft.max_grad_norm,
        "weight_decay": ft.weight_decay,
        "training_type": ft.training_type,
        "training_method": ft.training_method,
        "train_on_inputs": train_on_inputs,
        "random_seed": ft.random_seed,
    });
    let more = json!({
        "packing": true,
        "token_count": tokens,
        "param_count": param_count,
        "total_price": tokens * ft.price_per_token(),
        "epochs_completed": p.epochs_completed,
        "steps_completed": p.steps_completed,
        "total_steps": p.total_steps,
        "eval_steps": eval_steps,
        "evals_completed": p.evals_completed,
        "trainingfile_numlines": ft.train_lines,
        "trainingfile_size": ft.train_bytes,
        "TrainingFileNumLines": ft.train_lines,
        "TrainingFileSize": ft.train_bytes,
        // Package 3.x's job type requires the field; this server names no separate adapter.
        "adapter_output_name": null,
        "queue_depth": 0,
        "from_checkpoint": null,
        "wandb_project_name": null,
    });
    if let (Some(v), Value::Object(more)) = (v.as_object_mut(), more) {
        v.extend(more);
    }
    v
}

/// The billed tokens: the whole training once it completed; a cancelled or failed job pays for
/// the steps it trained.
fn billed_tokens(job: &Job, ft: &FineTune, p: &Progress) -> u64 {
    match JobStatus::parse(&job.status) {
        JobStatus::Succeeded => ft.tokens(),
        JobStatus::Cancelled | JobStatus::Failed if p.total_steps > 0 => {
            (ft.tokens() as f64 * p.steps_completed as f64 / p.total_steps as f64).round() as u64
        }
        JobStatus::Cancelled | JobStatus::Failed => 0,
        _ => ft.tokens(),
    }
}

/// `GET /v1/fine-tunes`: `{data:[…]}`, oldest first, no pagination.
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let (jobs, params) = {
        let store = app.store.lock();
        (store.jobs()?, store.together_jobs::<FineTune>()?)
    };
    let params: std::collections::HashMap<String, FineTune> = params.into_iter().collect();
    let mut data = Vec::new();
    for job in jobs.iter().rev() {
        if let Some(ft) = params.get(&job.id) {
            data.push(job_json(&app, job, ft)?);
        }
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /v1/fine-tunes/{id}`.
pub async fn retrieve(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (job, ft) = find(&app, &id)?;
    Ok(Json(job_json(&app, &job, &ft)?))
}

/// `POST /v1/fine-tunes/{id}/cancel`: an unfinished job is `cancel_requested` until its worker
/// stops, then `cancelled`; cancelling it again answers it as it is; a completed or failed job
/// cannot be cancelled (400).
pub async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (job, _) = find(&app, &id)?;
    match JobStatus::parse(&job.status) {
        JobStatus::Succeeded | JobStatus::Failed => {
            let message = format!("Fine-tune job {id} is {} and cannot be cancelled", status(&app, &job));
            return Err(invalid(message, "id").with_code("invalid_state"));
        }
        JobStatus::Cancelled => {}
        _ => {
            let _ = super::super::jobs::cancel(State(app.clone()), Path(id.clone())).await?;
        }
    }
    let (job, ft) = find(&app, &id)?;
    Ok(Json(job_json(&app, &job, &ft)?))
}

/// One Together event.
fn event(at: i64, level: &str, kind: &str, message: String) -> Value {
    json!({"object": "fine-tune-event", "created_at": iso(at), "level": level, "message": message, "type": kind})
}

/// `GET /v1/fine-tunes/{id}/events`: `{data:[…]}`, oldest first, with Together's lower-case types,
/// made from the job's own events.
pub async fn events(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (job, ft) = find(&app, &id)?;
    let events = history(&app, &id)?;
    let p = progress(&job, &ft, &events);
    let listed = listed_checkpoint_steps(&job, &ft, &p);
    let mut data = Vec::new();
    for e in &events {
        let at = e.created_at;
        let m = e.message.as_str();
        if e.kind.as_deref() == Some("metrics") {
            continue;
        }
        if m.starts_with(CREATED) {
            data.push(event(at, "info", "job_pending", "Fine tune request created".into()));
        } else if m.starts_with("Files validated") {
            data.push(event(
                at,
                "info",
                "training_data_download_complete",
                "Training data downloaded and validated".into(),
            ));
        } else if m == "Fine-tuning job started" {
            data.push(event(at, "info", "job_start", format!("Job started at {}", iso(at))));
            let mut e = event(at, "info", "training_start", format!("Training started for model {}", ft.model));
            e["total_steps"] = json!(p.total_steps);
            e["token_count"] = json!(ft.tokens());
            e["param_count"] = json!(BASE_MODELS.iter().find(|(b, _)| *b == ft.model).map_or(0, |(_, n)| *n));
            data.push(e);
        } else if let Some(step) = checkpoint_step(m) {
            let mut e = event(at, "info", "epoch_complete", format!("Epoch completed, at step {step}"));
            e["step"] = json!(step);
            data.push(e);
            if listed.contains(&step) && step < p.total_steps {
                let mut e = event(at, "info", "checkpoint_save", format!("New checkpoint saved at step {step}"));
                e["step"] = json!(step);
                e["checkpoint_path"] = json!(checkpoint_path(&job.id, step));
                data.push(e);
            }
        } else if m == UPLOADING_MESSAGE {
            data.push(event(at, "info", "training_complete", format!("Training completed for {}", ft.model)));
            data.push(event(at, "info", "model_uploading", "Uploading output model".into()));
        } else if m.starts_with("New fine-tuned model created") {
            let mut e = event(at, "info", "model_upload_complete", "Model upload complete".into());
            e["model_path"] = json!(ft.model_output_name);
            data.push(e);
        } else if m == "The job has successfully completed" {
            let mut e = event(at, "info", "job_complete", format!("Job finished at {}", iso(at)));
            e["token_count"] = json!(ft.tokens());
            data.push(e);
        } else if let Some(why) = m.strip_prefix("Fine-tuning job failed: ") {
            data.push(event(at, "error", "job_error", format!("Job failed: {why}")));
        } else if m == "Fine-tuning job cancelled" {
            data.push(event(at, "info", "cancel_requested", "Job cancellation requested".into()));
        } else if m.starts_with("The server restarted") {
            data.push(event(at, "warning", "job_restarted", m.to_string()));
        } else if e.level == "error" {
            data.push(event(at, "error", "job_error", m.to_string()));
        }
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// The learning rate at `step` of `total`: linear warmup, then the scheduler's decay to
/// `min_lr_ratio` (the figures the job's metrics report; the local trainer's own rate is the
/// multiplier's).
fn learning_rate_at(ft: &FineTune, step: u64, total: u64) -> f64 {
    let total = total.max(1) as f64;
    let warmup = (ft.warmup_ratio * total).round();
    let s = step as f64;
    if warmup > 0.0 && s <= warmup {
        return ft.learning_rate * s / warmup;
    }
    let args = &ft.lr_scheduler["lr_scheduler_args"];
    let floor = args["min_lr_ratio"].as_f64().unwrap_or(0.0);
    let done = ((s - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
    let factor = if ft.lr_scheduler["lr_scheduler_type"] == "cosine" {
        let cycles = args["num_cycles"].as_f64().unwrap_or(0.5);
        0.5 * (1.0 + (std::f64::consts::PI * 2.0 * cycles * done).cos())
    } else {
        1.0 - done
    };
    ft.learning_rate * (floor + (1.0 - floor) * factor)
}

/// Which of the trainer's validations (1-based, in order) are the job's `n_evals` evaluations:
/// evenly spaced over the planned ones, the last included.
fn is_evaluation(nth: u64, planned: u64, n_evals: u32) -> bool {
    let k = u64::from(n_evals);
    if k == 0 || planned == 0 {
        return false;
    }
    if k >= planned {
        return true;
    }
    (1..=k).any(|i| (i * planned).div_ceil(k) == nth)
}

/// `GET /v1/fine-tunes/{id}/metrics`: `{metrics:[…]}` chronological: a `train/*` row per step,
/// and an `eval/loss` row per evaluation.
pub async fn metrics(State(app): State<Arc<App>>, Path(id): Path<String>, _uri: Uri) -> Result<Json<Value>, ApiError> {
    let (job, ft) = find(&app, &id)?;
    let events = history(&app, &id)?;
    let p = progress(&job, &ft, &events);
    let per_epoch = (p.total_steps as f64 / f64::from(resolved_epochs(&job))).max(1.0);
    let mut rows = Vec::new();
    for (evaluated, m) in &p.metrics {
        let step = m.step.unwrap_or(0);
        let epoch = step as f64 / per_epoch;
        if let Some(loss) = m.train_loss {
            rows.push(json!({
                "train/loss": loss,
                "train/learning_rate": learning_rate_at(&ft, step, p.total_steps),
                "train/global_step": step,
                "train/epoch": epoch,
            }));
        }
        if let (true, Some(loss)) = (evaluated, m.valid_loss) {
            rows.push(json!({"eval/loss": loss, "train/global_step": step, "train/epoch": epoch}));
        }
    }
    Ok(Json(json!({"metrics": rows})))
}

fn checkpoint_path(job_id: &str, step: u64) -> String {
    format!("ftsweep-serve://{job_id}/checkpoint-{step}")
}

/// The steps of the intermediate checkpoints a job lists: the last `n_checkpoints - 1` epochs
/// before the final one that the store kept.
fn listed_checkpoint_steps(job: &Job, ft: &FineTune, p: &Progress) -> Vec<u64> {
    let _ = job;
    let earlier: Vec<u64> =
        p.epoch_steps.iter().copied().filter(|s| p.total_steps == 0 || *s < p.total_steps).collect();
    let keep = (ft.n_checkpoints as usize).saturating_sub(1).min(KEPT_CHECKPOINTS as usize - 1);
    earlier[earlier.len().saturating_sub(keep)..].to_vec()
}

/// A job's listed checkpoints as `(step, local model, created_at, Final?)`, newest first: the
/// final model once completed, then the intermediate ones.
pub fn checkpoint_models(app: &App, id: &str) -> Result<Vec<(u64, String, i64, bool)>, ApiError> {
    let (job, ft) = find(app, id)?;
    let events = history(app, id)?;
    let p = progress(&job, &ft, &events);
    let steps = listed_checkpoint_steps(&job, &ft, &p);
    let mut out = Vec::new();
    if let (JobStatus::Succeeded, Some(model)) = (JobStatus::parse(&job.status), &job.fine_tuned_model) {
        out.push((p.total_steps, model.clone(), job.finished_at.unwrap_or(p.updated_at), true));
    }
    for c in app.store.lock().checkpoints(id)? {
        if steps.contains(&c.step_number) {
            out.push((c.step_number, c.fine_tuned_model_checkpoint, c.created_at, false));
        }
    }
    Ok(out)
}

/// `GET /v1/fine-tunes/{id}/checkpoints`: `{data:[{step, created_at, path, checkpoint_type}]}`,
/// newest first.
pub async fn checkpoints(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (_, ft) = find(&app, &id)?;
    let kind = if ft.full { "model" } else { "adapter" };
    let data: Vec<Value> = checkpoint_models(&app, &id)?
        .into_iter()
        .map(|(step, _, at, last)| {
            let (checkpoint_type, path, name) = if last {
                ("Final", checkpoint_path(&id, step), ft.model_output_name.clone())
            } else {
                ("Intermediate", checkpoint_path(&id, step), format!("{id}:{step}"))
            };
            json!({"step": step, "created_at": iso(at), "path": path, "checkpoint_type": checkpoint_type,
                   "checkpoint": kind, "object_name": name})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// The fine-tune whose output is `name`, if any.
pub fn by_output_name(app: &App, name: &str) -> Result<Option<(Job, FineTune)>, ApiError> {
    let found = app.store.lock().together_jobs::<FineTune>()?.into_iter().find(|(_, ft)| ft.model_output_name == name);
    match found {
        Some((id, _)) => find(app, &id).map(Some),
        None => Ok(None),
    }
}

/// `GET /v1/fine-tunes/models/limits?model_name=M`: this server's bounds for a base model.
pub async fn limits(uri: Uri) -> Result<Json<Value>, ApiError> {
    let q = Params::from_uri(&uri)?;
    let model = q.get("model_name").ok_or_else(|| invalid("Missing required parameter: 'model_name'", "model_name"))?;
    if !BASE_MODELS.iter().any(|(m, _)| *m == model) {
        let message = format!("Model {model} is not supported for fine-tuning");
        return Err(ApiError::new(StatusCode::NOT_FOUND, INVALID, message).with_code("model_not_supported"));
    }
    Ok(Json(json!({
        "model_name": model,
        "max_num_epochs": MAX_EPOCHS,
        "max_num_evals": MAX_EVALS,
        "max_num_checkpoints": MAX_CHECKPOINTS,
        "min_learning_rate": MIN_LEARNING_RATE,
        "max_learning_rate": MAX_LEARNING_RATE,
        "lora_training": {
            "min_batch_size": MIN_BATCH,
            "max_batch_size": MAX_BATCH_LORA,
            "max_batch_size_dpo": MAX_BATCH_LORA / 2,
            "max_rank": MAX_RANK,
            "default_rank": DEFAULT_RANK,
            "target_modules": TARGET_MODULES,
        },
        "full_training": {"min_batch_size": MIN_BATCH, "max_batch_size": MAX_BATCH_FULL, "max_batch_size_dpo": MAX_BATCH_FULL / 2},
        "supports_full_training": true,
        "default_gradient_accumulation_steps": 1,
        "max_seq_length_sft": 8192,
        "max_seq_length_dpo": 8192,
        "min_max_seq_length": 512,
        "merge_output_lora": false,
        "supports_reasoning": false,
        "supports_tools": false,
        "supports_vision": false,
    })))
}

/// `GET /v1/fine-tunes/models/supported`.
pub async fn supported() -> Json<Value> {
    let models: Vec<&str> = BASE_MODELS.iter().map(|(m, _)| *m).collect();
    Json(json!({"models": models}))
}

/// `POST /v1/fine-tunes/estimate-price`: the price of a training at this server's rates.
pub async fn estimate_price(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let raw = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(raw)) => raw,
        _ => return Err(ApiError::invalid("The request body must be a JSON object", None)),
    };
    let Some(training_file) = raw.get("training_file").and_then(Value::as_str) else {
        return Err(invalid("Missing required parameter: 'training_file'", "training_file"));
    };
    let Ok((train, _, _)) = file_stats(&app, training_file, "training_file").await else {
        return Ok(Json(json!({"estimation_available": false, "unavailable_reason": "train_file_not_validated"})));
    };
    let valid = match raw.get("validation_file").and_then(Value::as_str) {
        None => 0,
        Some(id) => match file_stats(&app, id, "validation_file").await {
            Ok((tokens, _, _)) => tokens,
            Err(_) => {
                return Ok(Json(
                    json!({"estimation_available": false, "unavailable_reason": "eval_file_not_validated"}),
                ));
            }
        },
    };
    let n_epochs = int_in(&raw, "n_epochs", 1, MAX_EPOCHS, 1)? as u64;
    let n_evals = int_in(&raw, "n_evals", 0, MAX_EVALS, 0)? as u64;
    let full = raw
        .get("training_type")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("full"));
    let (train_tokens, eval_tokens) = (n_epochs * train, n_evals * valid);
    let rate = if full { PRICE_FULL } else { PRICE_LORA };
    let price = (train_tokens + eval_tokens) as f64 * rate as f64 / 1e9;
    Ok(Json(json!({
        "estimation_available": true,
        "estimated_total_price": price,
        "estimated_train_token_count": train_tokens,
        "estimated_eval_token_count": eval_tokens,
        "user_limit": 1_000_000.0,
        "allowed_to_proceed": true,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluations_are_evenly_spaced_and_end_at_the_last_validation() {
        let picked = |planned, k| (1..=planned).filter(|&n| is_evaluation(n, planned, k)).collect::<Vec<_>>();
        assert_eq!(picked(8, 2), [4, 8]);
        assert_eq!(picked(8, 3), [3, 6, 8]);
        assert_eq!(picked(4, 10), [1, 2, 3, 4]);
        assert!(picked(8, 0).is_empty());
    }

    #[test]
    fn training_types_are_checked_and_defaulted() {
        let (lora, full) = check_training_type(None).unwrap();
        assert!(!full);
        assert_eq!(
            (lora["lora_r"].as_i64(), lora["lora_alpha"].as_i64()),
            (Some(DEFAULT_RANK), Some(2 * DEFAULT_RANK))
        );
        assert!(check_training_type(Some(&json!({"type": "full"}))).unwrap().1);
        let bad = |v: Value| check_training_type(Some(&v)).unwrap_err().param;
        assert_eq!(bad(json!({"type": "Lora", "lora_r": 65})).as_deref(), Some("training_type.lora_r"));
        assert_eq!(bad(json!({"type": "Lora", "lora_dropout": 1.0})).as_deref(), Some("training_type.lora_dropout"));
        assert_eq!(bad(json!({"type": "Qlora"})).as_deref(), Some("training_type.type"));
        assert_eq!(
            bad(json!({"lora_trainable_modules": "q_proj,lm_head"})).as_deref(),
            Some("training_type.lora_trainable_modules")
        );
    }

    #[test]
    fn the_learning_rate_warms_up_then_decays() {
        let mut ft: FineTune = serde_json::from_value(json!({
            "model": "m", "suffix": null, "model_output_name": "o", "training_file": "f", "validation_file": null,
            "n_epochs": 1, "n_checkpoints": 1, "n_evals": 0, "batch_size": 8, "learning_rate": 1e-4,
            "lr_scheduler": {"lr_scheduler_type": "linear", "lr_scheduler_args": {"min_lr_ratio": 0.0}},
            "warmup_ratio": 0.1, "max_grad_norm": 1.0, "weight_decay": 0.0, "training_type": {}, "full": false,
            "training_method": {}, "random_seed": null, "train_tokens": 0, "valid_tokens": 0, "train_lines": 0, "train_bytes": 0
        }))
        .unwrap();
        assert!((learning_rate_at(&ft, 5, 100) - 5e-5).abs() < 1e-12);
        assert!((learning_rate_at(&ft, 10, 100) - 1e-4).abs() < 1e-12);
        assert!(learning_rate_at(&ft, 100, 100).abs() < 1e-12);
        ft.warmup_ratio = 0.0;
        assert!((learning_rate_at(&ft, 50, 100) - 5e-5).abs() < 1e-12);
    }
}
