//! The OpenAI fine-tuning protocol on the wire: serde types for files, jobs,
//! events, checkpoints, chat completions, models and errors. Shared by the
//! client and by `ftsweep serve`. Parsing is lenient: unknown fields are
//! ignored, most fields are optional, and unknown status strings are kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A page of a list endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct List<T> {
    #[serde(default = "list_object")]
    pub object: String,
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
}

fn list_object() -> String {
    "list".into()
}

/// An uploaded file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileObject {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// The answer to a delete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Deleted {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub deleted: bool,
}

/// A hyperparameter: `"auto"` or a number (integers stay integers on the
/// wire: `n_epochs` and `batch_size` are integers in the protocol).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum HyperValue {
    Int(i64),
    Float(f64),
    Text(AutoWord),
}

/// The word `auto` (any other string is kept as auto too: lenient).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    #[serde(other)]
    Auto,
}

impl HyperValue {
    /// An integer hyperparameter, `None` for auto.
    pub fn int(v: Option<u32>) -> HyperValue {
        v.map_or(HyperValue::Text(AutoWord::Auto), |x| HyperValue::Int(i64::from(x)))
    }

    /// A real hyperparameter, `None` for auto.
    pub fn float(v: Option<f64>) -> HyperValue {
        v.map_or(HyperValue::Text(AutoWord::Auto), HyperValue::Float)
    }

    /// The number, `None` for auto.
    pub fn number(self) -> Option<f64> {
        match self {
            HyperValue::Int(x) => Some(x as f64),
            HyperValue::Float(x) => Some(x),
            HyperValue::Text(_) => None,
        }
    }
}

/// Supervised (or DPO) hyperparameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Hyperparameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_epochs: Option<HyperValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<HyperValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate_multiplier: Option<HyperValue>,
    /// DPO only: `"auto"` or in (0, 2].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<HyperValue>,
}

/// The hyperparameters of one method.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MethodParams {
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
}

/// The training method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Method {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervised: Option<MethodParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<MethodParams>,
}

impl Method {
    /// `{type: "supervised", supervised: {hyperparameters}}`.
    pub fn supervised(hyperparameters: Hyperparameters) -> Method {
        Method { kind: "supervised".into(), supervised: Some(MethodParams { hyperparameters }), dpo: None }
    }

    /// `{type: "dpo", dpo: {hyperparameters}}`.
    pub fn dpo(hyperparameters: Hyperparameters) -> Method {
        Method { kind: "dpo".into(), supervised: None, dpo: Some(MethodParams { hyperparameters }) }
    }

    /// The hyperparameters of the method `type` names, if it carries them.
    pub fn hyperparameters(&self) -> Option<&Hyperparameters> {
        match self.kind.as_str() {
            "supervised" => self.supervised.as_ref(),
            "dpo" => self.dpo.as_ref(),
            _ => None,
        }
        .map(|p| &p.hyperparameters)
    }
}

/// `POST /fine_tuning/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateJob {
    pub model: String,
    pub training_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Deprecated top-level hyperparameters; read when `method` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<Hyperparameters>,
}

/// A job's error; healthy jobs carry one full of nulls.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
}

impl JobError {
    /// Whether it says anything: an object of nulls is no error.
    pub fn is_error(&self) -> bool {
        self.code.is_some() || self.message.is_some()
    }
}

/// A fine-tuning job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub fine_tuned_model: Option<String>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub estimated_finish: Option<i64>,
    #[serde(default)]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub training_file: String,
    #[serde(default)]
    pub validation_file: Option<String>,
    #[serde(default)]
    pub result_files: Vec<String>,
    #[serde(default)]
    pub trained_tokens: Option<u64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub hyperparameters: Option<Hyperparameters>,
    #[serde(default)]
    pub method: Option<Method>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub error: Option<JobError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_provided_suffix: Option<String>,
}

/// Job statuses; the protocol may add more (`paused` was seen), so any
/// other string is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    ValidatingFiles,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Other(String),
}

impl JobStatus {
    pub fn parse(s: &str) -> JobStatus {
        match s {
            "validating_files" => JobStatus::ValidatingFiles,
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            other => JobStatus::Other(other.to_string()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// A job event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobEvent {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// The data of a `metrics` event, and a checkpoint's metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_mean_token_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_mean_token_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_valid_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_valid_mean_token_accuracy: Option<f64>,
}

/// A job checkpoint: a usable model at the end of an epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub fine_tuning_job_id: String,
    #[serde(default)]
    pub step_number: u64,
    #[serde(default)]
    pub fine_tuned_model_checkpoint: String,
    #[serde(default)]
    pub metrics: Metrics,
}

/// A chat message on the wire; content is a string or a list of parts (or null on an
/// assistant message that only calls tools).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant message's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A `tool` message's answer to the call of this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// The text of the content: the string, or the text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
            }
            _ => String::new(),
        }
    }

    /// A message of a prompt as sent: an assistant message that only calls tools has `content:
    /// null`, as OpenAI writes it.
    pub fn from_message(m: &crate::data::Message) -> ChatMessage {
        let calls_only = m.role == "assistant" && !m.tool_calls.is_empty() && m.content.is_empty();
        ChatMessage {
            role: m.role.clone(),
            content: (!calls_only).then(|| Value::String(m.content.clone())),
            name: None,
            tool_calls: (!m.tool_calls.is_empty()).then(|| m.tool_calls.iter().map(ToolCall::from).collect()),
            tool_call_id: m.tool_call_id.clone(),
        }
    }
}

/// One tool call on the wire: `{id, type: "function", function: {name, arguments}}`, the
/// arguments a JSON text (an object sent instead is kept as its JSON text).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_word")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function a tool call calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default, deserialize_with = "json_text")]
    pub arguments: String,
}

fn function_word() -> String {
    "function".into()
}

/// A string as it is; other JSON (null: empty) as its text.
fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl From<&crate::data::ToolCall> for ToolCall {
    fn from(c: &crate::data::ToolCall) -> ToolCall {
        ToolCall {
            id: c.id.clone(),
            kind: function_word(),
            function: FunctionCall { name: c.name.clone(), arguments: c.arguments.clone() },
        }
    }
}

impl From<&ToolCall> for crate::data::ToolCall {
    fn from(c: &ToolCall) -> crate::data::ToolCall {
        crate::data::ToolCall {
            id: c.id.clone(),
            name: c.function.name.clone(),
            arguments: c.function.arguments.clone(),
        }
    }
}

/// `POST /chat/completions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// The functions the model may call, as the data wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

impl ChatRequest {
    /// An evaluation's request: the prompt's messages (with their tool calls) and the line's
    /// tools to `model`, under the decoding settings, with log probabilities; the caller sets
    /// the token limit its server reads (`max_completion_tokens` on OpenAI, `max_tokens` on
    /// vLLM-like servers).
    pub fn asking(model: &str, prompt: &crate::data::Prompt, decoding: &crate::spec::Decoding) -> ChatRequest {
        ChatRequest {
            model: model.to_string(),
            messages: prompt.messages.iter().map(ChatMessage::from_message).collect(),
            temperature: Some(decoding.temperature),
            top_p: decoding.top_p,
            logprobs: Some(true),
            seed: decoding.seed,
            tools: prompt.tools.clone(),
            // Only with tools: OpenAI refuses either without them.
            tool_choice: prompt.tools.as_ref().and(prompt.tool_choice.clone()),
            parallel_tool_calls: prompt.tools.as_ref().and(prompt.parallel_tool_calls),
            ..ChatRequest::default()
        }
    }
}

/// One token's log probability.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token's log probability.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

/// A choice's log probabilities.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChoiceLogprobs {
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
}

/// The assistant message of a choice.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResponseMessage {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

impl ResponseMessage {
    /// The reply: its text and its calls.
    pub fn reply(&self) -> crate::data::Reply {
        crate::data::Reply {
            content: self.content.clone().unwrap_or_default(),
            tool_calls: self.tool_calls.iter().flatten().map(crate::data::ToolCall::from).collect(),
        }
    }
}

/// One choice of a completion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// Token usage of a completion.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// The answer of `POST /chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// A model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelObject {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub owned_by: String,
}

/// An error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The error inside an error body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorObject {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_unknown_fields_null_errors_and_a_new_status_parses() {
        let job: Job = serde_json::from_str(
            r#"{"id":"ftjob-1","object":"fine_tuning.job","model":"gpt-4.1-mini-2025-04-14","created_at":1,
                "status":"paused","shared_with_openai":false,"usage_metrics":null,
                "error":{"code":null,"message":null,"param":null},
                "hyperparameters":{"n_epochs":"auto","batch_size":8,"learning_rate_multiplier":0.5},
                "training_file":"file-1","result_files":[],"trained_tokens":null}"#,
        )
        .unwrap();
        assert_eq!(JobStatus::parse(&job.status), JobStatus::Other("paused".into()));
        assert!(!job.error.unwrap().is_error());
        let hp = job.hyperparameters.unwrap();
        assert_eq!(hp.n_epochs.unwrap().number(), None);
        assert_eq!(hp.batch_size.unwrap().number(), Some(8.0));
    }

    #[test]
    fn hyperparameters_serialize_as_auto_or_numbers() {
        let hp = Hyperparameters {
            n_epochs: Some(HyperValue::int(None)),
            batch_size: Some(HyperValue::int(Some(8))),
            learning_rate_multiplier: Some(HyperValue::float(Some(0.5))),
            beta: None,
        };
        let text = serde_json::to_string(&hp).unwrap();
        assert_eq!(text, r#"{"n_epochs":"auto","batch_size":8,"learning_rate_multiplier":0.5}"#);
        assert_eq!(serde_json::from_str::<Hyperparameters>(&text).unwrap(), hp);
        let dpo = Method::dpo(Hyperparameters { beta: Some(HyperValue::float(Some(0.1))), ..hp });
        assert_eq!(
            serde_json::to_value(&dpo).unwrap(),
            serde_json::json!({"type": "dpo", "dpo": {"hyperparameters":
                {"n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": 0.5, "beta": 0.1}}})
        );
        assert_eq!(dpo.hyperparameters().and_then(|h| h.beta), Some(HyperValue::Float(0.1)));
    }

    #[test]
    fn an_evaluation_request_carries_the_tools_and_the_calls_and_an_answer_gives_its_calls() {
        use crate::data::{Message, Prompt, ToolCall as Call};
        let call = Call { id: "call_1".into(), name: "land".into(), arguments: r#"{"where":"here"}"#.into() };
        let prompt = Prompt {
            messages: vec![
                Message::text("user", "down"),
                Message { role: "assistant".into(), tool_calls: vec![call], ..Message::default() },
                Message { tool_call_id: Some("call_1".into()), ..Message::text("tool", "landed") },
            ],
            tools: Some(serde_json::json!([{"type": "function", "function": {"name": "land"}}])),
            tool_choice: Some("auto".into()),
            parallel_tool_calls: Some(false),
        };
        let decoding = crate::spec::Decoding { temperature: 0.5, max_tokens: 9, top_p: Some(0.9), seed: Some(3) };
        let v = serde_json::to_value(ChatRequest::asking("m", &prompt, &decoding)).unwrap();
        assert_eq!(v["tools"][0]["function"]["name"], "land");
        assert_eq!((v["tool_choice"].as_str(), v["parallel_tool_calls"].as_bool()), (Some("auto"), Some(false)));
        assert_eq!(
            (v["temperature"].as_f64(), v["top_p"].as_f64(), v["seed"].as_i64()),
            (Some(0.5), Some(0.9), Some(3))
        );
        assert!(v.get("max_tokens").is_none() && v.get("max_completion_tokens").is_none(), "the caller sets it");
        let calls = &v["messages"][1];
        assert!(calls["content"].is_null(), "{calls}");
        assert_eq!(
            calls["tool_calls"],
            serde_json::json!([{"id": "call_1", "type": "function", "function": {"name": "land", "arguments": "{\"where\":\"here\"}"}}])
        );
        assert_eq!(v["messages"][2]["tool_call_id"], "call_1");
        // Without tools, neither tool_choice nor parallel_tool_calls is sent (OpenAI refuses them alone).
        let bare = Prompt { tools: None, ..prompt };
        let v = serde_json::to_value(ChatRequest::asking("m", &bare, &decoding)).unwrap();
        assert!(v.get("tools").is_none() && v.get("tool_choice").is_none() && v.get("parallel_tool_calls").is_none());

        let answer: ResponseMessage = serde_json::from_str(
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_9","type":"function","function":{"name":"land","arguments":"{\"where\":\"pad\"}"}},{"type":"function","function":{"name":"go_home","arguments":{}}}]}"#,
        )
        .unwrap();
        let reply = answer.reply();
        assert_eq!(reply.content, "");
        // `display` sorts the calls, as `data stats` does: their order is not part of a reply.
        assert_eq!(reply.tool_calls[0].name, "land");
        assert_eq!(
            reply.display(),
            r#"go_home({}) land({"where":"pad"})"#,
            "an object for arguments is kept as its text"
        );
    }

    #[test]
    fn message_text_joins_parts() {
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.text(), "ab");
    }
}
