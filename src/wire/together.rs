//! Together AI's fine-tuning API on the wire: serde types for files (the
//! SDKs' presigned upload flow), fine-tune jobs, their events, metrics and
//! checkpoints, dedicated endpoints and chat completions. Shared by the
//! client and by `ftsweep serve --protocol together`. Parsing is lenient:
//! unknown fields are ignored, nearly every field is optional, numbers may
//! come as integers, floats or numeric strings, and enums are kept as strings
//! and read case-insensitively ([`JobStatus::parse`], [`EndpointState::parse`]),
//! so a value nobody documented is never a parse error.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A list answer: `{"data": [...]}` (jobs, events, checkpoints, files, endpoints).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct List<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default = "Vec::new", deserialize_with = "null_as_empty", bound(deserialize = "T: Deserialize<'de>"))]
    pub data: Vec<T>,
}

/// `POST /files`: the first step of the upload flow (JSON; the server also
/// takes the same fields form-encoded or as multipart).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadRequest {
    pub purpose: String,
    pub file_name: String,
    #[serde(default = "jsonl")]
    pub file_type: String,
    /// SHA-256 of the content, hex: an identical complete upload answers 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

fn jsonl() -> String {
    "jsonl".into()
}

/// The 409 answer of `POST /files` for content uploaded before: the earlier file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UploadConflict {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::wire::openai::ErrorObject>,
}

/// The header of the 302 answer that names the file being uploaded.
pub const FILE_ID_HEADER: &str = "x-together-file-id";

/// A file: `FileType`, `Processed` and `LineCount` are capitalised on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileObject {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Unix seconds (a string is kept as it came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(rename = "FileType", alias = "file_type", default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    #[serde(rename = "Processed", alias = "processed", default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<bool>,
    #[serde(
        rename = "LineCount",
        alias = "line_count",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub line_count: Option<u64>,
    /// `PENDING|QUEUED|RUNNING|COMPLETED|FAILED|INVALID_FORMAT` (any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_status: Option<String>,
}

/// Where a file's processing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Ready,
    Processing,
    /// Rejected (`FAILED`, `INVALID_FORMAT`, …): the status as it came.
    Rejected(String),
}

impl FileObject {
    /// What the file's `processing_status` and `Processed` say; a file that
    /// says neither is taken as ready (older servers send only the object).
    pub fn state(&self) -> FileState {
        match self.processing_status.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
            Some(s) if s == "completed" || s == "complete" || s == "processed" => FileState::Ready,
            Some(s) if matches!(s.as_str(), "pending" | "queued" | "running" | "processing" | "") => {
                FileState::Processing
            }
            Some(_) => FileState::Rejected(self.processing_status.clone().unwrap_or_default()),
            None if self.processed == Some(false) => FileState::Processing,
            None => FileState::Ready,
        }
    }
}

/// `training_type` of a create: `{type:"Lora", lora_*}` or `{type:"Full"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainingType {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_r: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_trainable_modules: Option<String>,
}

/// `training_method` of a create: `{method:"sft", train_on_inputs: bool|"auto"}`
/// or `{method:"dpo", dpo_beta?}` (left out: Together's default, 0.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainingMethod {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_on_inputs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo_beta: Option<f64>,
}

/// `POST /fine-tunes`. A field left out takes the server's default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CreateFineTune {
    /// The base model; left out when `from_checkpoint` continues a job (the SDKs never send both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_checkpoint: Option<String>,
    pub training_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_epochs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_checkpoints: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_evals: Option<i64>,
    /// A number; left out it is `"max"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_type: Option<TrainingType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_method: Option<TrainingMethod>,
    /// `{run_id}-{attempt}`: how a job whose create answer was lost is found again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_seed: Option<i64>,
}

/// A fine-tune job (`ft-<uuid>`); times are ISO-8601 strings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FineTune {
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The final model's name, set from the create on (the SDKs call it `output_name`).
    #[serde(default, alias = "output_name", skip_serializing_if = "Option::is_none")]
    pub model_output_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Value>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub n_epochs: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub n_checkpoints: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub n_evals: Option<u64>,
    /// Billed tokens: epochs × training tokens (+ evaluations × validation tokens).
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub token_count: Option<u64>,
    /// Nanodollars.
    #[serde(default, deserialize_with = "lenient_f64", skip_serializing_if = "Option::is_none")]
    pub total_price: Option<f64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub epochs_completed: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub steps_completed: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub evals_completed: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    /// The job's events, in a retrieve (not in a create's answer or a list).
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

/// A job's status, read leniently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// `pending`, `queued`.
    Queued,
    /// `running`, `compressing`, `uploading`, `cancel_requested`.
    Running,
    Completed,
    Cancelled,
    /// `error` (the provider's).
    Error,
    /// `user_error` (the request's or the data's).
    UserError,
    /// A status nobody documented, as it came (not terminal).
    Other(String),
}

impl JobStatus {
    pub fn parse(s: &str) -> JobStatus {
        match s.trim().to_ascii_lowercase().replace(['-', ' '], "_").as_str() {
            "pending" | "queued" | "validating_files" => JobStatus::Queued,
            "running" | "compressing" | "uploading" | "cancel_requested" | "cancelling" | "canceling" => {
                JobStatus::Running
            }
            "completed" | "complete" | "succeeded" => JobStatus::Completed,
            "cancelled" | "canceled" => JobStatus::Cancelled,
            "error" | "failed" => JobStatus::Error,
            "user_error" => JobStatus::UserError,
            _ => JobStatus::Other(s.to_string()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Cancelled | JobStatus::Error | JobStatus::UserError)
    }
}

/// A job event (`fine-tune-event`), oldest first in a list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    /// `info|warning|error` (the v1 SDK also has `Info`, `Error`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `job_error`, `checkpoint_save`, … (lower case in 2026, upper case in the v1 SDK).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

impl Event {
    /// Whether the event reports the job's failure: a `job_error` or
    /// `job_user_error` type, or an `error` level.
    pub fn is_error(&self) -> bool {
        let kind = self.kind.as_deref().unwrap_or_default().to_ascii_lowercase();
        let level = self.level.as_deref().unwrap_or_default().to_ascii_lowercase();
        kind == "job_error" || kind == "job_user_error" || level == "error" || level == "legacy_ierror"
    }
}

/// `GET /fine-tunes/{id}/metrics`: rows of `"name": number`, chronological.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricsAnswer {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metrics: Vec<serde_json::Map<String, Value>>,
}

/// One row of metrics, read: its step and what it measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricRow {
    pub step: u64,
    pub train_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    /// `train/epoch`, when the row has it (fractional).
    pub epoch: Option<f64>,
}

impl MetricRow {
    /// Reads a row: the step from `train/global_step` (or `global_step`,
    /// `step`), the losses from `train/loss` and `eval/loss` (or their
    /// unprefixed and `validation/` forms). A row without a step is `None`.
    pub fn read(row: &serde_json::Map<String, Value>) -> Option<MetricRow> {
        let get = |names: &[&str]| names.iter().find_map(|n| row.get(*n).and_then(number));
        let step = get(&["train/global_step", "global_step", "eval/global_step", "step"])?;
        if !(step.is_finite() && step >= 0.0) {
            return None;
        }
        Some(MetricRow {
            step: step.round() as u64,
            train_loss: get(&["train/loss", "loss", "train_loss"]),
            eval_loss: get(&["eval/loss", "eval_loss", "validation/loss", "valid/loss", "valid_loss"]),
            epoch: get(&["train/epoch", "epoch"]),
        })
    }
}

/// A number from JSON: a number, or a numeric string (`"NaN"` and `"inf"`
/// included: a diverged loss must not vanish).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A job's checkpoint; its model name is `{job_id}:{step}` (the final one's
/// is the job's `model_output_name`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `Intermediate`, `Final`, `Final Merged`, `Final Adapter`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_type: Option<String>,
}

impl Checkpoint {
    pub fn is_final(&self) -> bool {
        self.checkpoint_type.as_deref().is_some_and(|t| t.to_ascii_lowercase().contains("final"))
    }
}

/// `POST /endpoints`: a dedicated endpoint for one model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateEndpoint {
    pub model: String,
    pub hardware: String,
    pub autoscaling: Autoscaling,
    /// Ours, deterministic: how an endpoint whose create answer was lost is found again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `STARTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Minutes without requests before Together stops it (a safety net).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_timeout: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Autoscaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
}

/// A dedicated endpoint (`endpoint-<uuid>`); chat sends its `name` as the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
}

/// An endpoint's state, read leniently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointState {
    /// `PENDING`, `STARTING`, or a state nobody documented.
    Starting,
    Started,
    /// `STOPPING`, `STOPPED`.
    Stopped,
    Error,
}

impl EndpointState {
    pub fn parse(s: &str) -> EndpointState {
        match s.trim().to_ascii_uppercase().as_str() {
            "STARTED" | "RUNNING" | "READY" => EndpointState::Started,
            "STOPPING" | "STOPPED" => EndpointState::Stopped,
            "ERROR" | "FAILED" => EndpointState::Error,
            _ => EndpointState::Starting,
        }
    }
}

/// `POST /chat/completions` as Together documents it: `max_tokens`, and
/// `logprobs` as the number of top log probabilities (1: the chosen token's); tools as OpenAI's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<crate::wire::openai::ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

/// The answer of `POST /chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub choices: Vec<ChatChoice>,
}

/// One choice: its message and its log probabilities in either shape
/// (OpenAI's `{content:[{token, logprob}]}` or Together's `{tokens, token_logprobs}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatChoice {
    #[serde(default)]
    pub message: Option<crate::wire::openai::ResponseMessage>,
    /// The completion text of older answers without a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

impl ChatChoice {
    /// The reply's text.
    pub fn content(&self) -> String {
        self.message.as_ref().and_then(|m| m.content.clone()).or_else(|| self.text.clone()).unwrap_or_default()
    }

    /// The reply's tool calls.
    pub fn tool_calls(&self) -> Vec<crate::data::ToolCall> {
        let calls = self.message.as_ref().and_then(|m| m.tool_calls.as_ref());
        calls.into_iter().flatten().map(crate::data::ToolCall::from).collect()
    }

    /// The probability of the whole reply, when its tokens' log probabilities came.
    pub fn probability(&self) -> Option<f64> {
        let lp = self.logprobs.as_ref()?;
        let sum: Vec<f64> = match (lp.get("content").and_then(Value::as_array), lp.get("token_logprobs")) {
            (Some(tokens), _) => tokens.iter().filter_map(|t| t.get("logprob").and_then(number)).collect(),
            (None, Some(Value::Array(values))) => values.iter().filter_map(number).collect(),
            _ => return None,
        };
        let total: f64 = sum.iter().sum();
        (!sum.is_empty() && total.is_finite()).then(|| total.exp())
    }
}

fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A count from a number (an integral float too) or a numeric string; anything else is `None`.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(number).filter(|x| x.is_finite() && *x >= 0.0 && *x < 1.8e19).map(|x| x.round() as u64))
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_unknown_fields_odd_numbers_and_a_new_status_parses() {
        let job: FineTune = serde_json::from_str(
            r#"{"id":"ft-1","status":"COMPRESSING","model":"m","output_name":"acct/m-r-1-1-abcd",
                "created_at":"2026-01-01T00:00:00.000Z","token_count":"1200","total_price":3.0e9,
                "steps_completed":4.0,"total_steps":null,"events":null,"batch_size":"max",
                "early_stopped":false,"queue_depth":-1}"#,
        )
        .unwrap();
        assert_eq!(JobStatus::parse(&job.status), JobStatus::Running);
        assert_eq!(job.model_output_name.as_deref(), Some("acct/m-r-1-1-abcd"));
        assert_eq!((job.token_count, job.steps_completed, job.total_steps), (Some(1200), Some(4), None));
        assert_eq!(job.total_price, Some(3.0e9));
        assert!(job.events.is_empty());
        assert_eq!(JobStatus::parse("Paused"), JobStatus::Other("Paused".into()));
        assert!(!JobStatus::parse("paused").is_terminal());
        assert_eq!(JobStatus::parse("User_Error"), JobStatus::UserError);
        assert_eq!(JobStatus::parse("canceled"), JobStatus::Cancelled);
    }

    #[test]
    fn files_events_endpoints_and_metrics_read_leniently() {
        let f: FileObject = serde_json::from_str(
            r#"{"id":"file-1","object":"file","created_at":1,"filename":"t.jsonl","bytes":10,"purpose":"fine-tune",
                "FileType":"jsonl","Processed":true,"LineCount":3,"processing_status":"COMPLETED"}"#,
        )
        .unwrap();
        assert_eq!((f.state(), f.line_count), (FileState::Ready, Some(3)));
        let f: FileObject = serde_json::from_str(r#"{"id":"file-2","Processed":false,"bytes":0}"#).unwrap();
        assert_eq!(f.state(), FileState::Processing);
        let f: FileObject = serde_json::from_str(r#"{"id":"file-3","processing_status":"invalid_format"}"#).unwrap();
        assert_eq!(f.state(), FileState::Rejected("invalid_format".into()));
        let e: Event = serde_json::from_str(r#"{"type":"JOB_ERROR","message":"boom","level":"Error"}"#).unwrap();
        assert!(e.is_error());
        let e: Event = serde_json::from_str(r#"{"type":"checkpoint_save","level":null,"step":"3"}"#).unwrap();
        assert!(!e.is_error() && e.step == Some(3));
        let ep: Endpoint = serde_json::from_str(r#"{"id":"endpoint-1","name":"a/b","state":"started"}"#).unwrap();
        assert_eq!(EndpointState::parse(&ep.state), EndpointState::Started);
        assert_eq!(EndpointState::parse("SOMETHING_NEW"), EndpointState::Starting);
        let m: MetricsAnswer = serde_json::from_str(
            r#"{"metrics":[{"train/loss":1.5,"train/global_step":1,"train/learning_rate":1e-5},
                {"eval/loss":"NaN","train/global_step":2},{"train/loss":1.0}]}"#,
        )
        .unwrap();
        let rows: Vec<_> = m.metrics.iter().filter_map(MetricRow::read).collect();
        assert_eq!(rows.len(), 2, "a row without a step is skipped");
        assert_eq!((rows[0].step, rows[0].train_loss, rows[0].eval_loss), (1, Some(1.5), None));
        assert!(rows[1].eval_loss.unwrap().is_nan(), "a diverged loss is kept");
        let empty: List<Event> = serde_json::from_str(r#"{"data":null}"#).unwrap();
        assert!(empty.data.is_empty());
    }

    #[test]
    fn a_reply_probability_comes_from_either_logprobs_shape() {
        let c: ChatChoice = serde_json::from_str(
            r#"{"message":{"role":"assistant","content":"a"},"logprobs":{"tokens":["a"],"token_logprobs":[-0.5]}}"#,
        )
        .unwrap();
        assert_eq!(c.content(), "a");
        assert!((c.probability().unwrap() - (-0.5f64).exp()).abs() < 1e-12);
        let c: ChatChoice = serde_json::from_str(
            r#"{"message":{"content":"b"},"logprobs":{"content":[{"token":"b","logprob":-1.0}]}}"#,
        )
        .unwrap();
        assert!((c.probability().unwrap() - (-1.0f64).exp()).abs() < 1e-12);
        let c: ChatChoice = serde_json::from_str(r#"{"message":{"content":"c"},"logprobs":null}"#).unwrap();
        assert_eq!(c.probability(), None);
    }

    #[test]
    fn a_create_leaves_out_what_it_does_not_set() {
        let body = CreateFineTune {
            model: Some("m".into()),
            training_file: "file-1".into(),
            n_epochs: Some(2),
            training_type: Some(TrainingType {
                kind: "Lora".into(),
                lora_r: Some(8),
                lora_alpha: Some(16),
                lora_dropout: None,
                lora_trainable_modules: None,
            }),
            ..CreateFineTune::default()
        };
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(
            text,
            r#"{"model":"m","training_file":"file-1","n_epochs":2,"training_type":{"type":"Lora","lora_r":8,"lora_alpha":16}}"#
        );
    }
}
