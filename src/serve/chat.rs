//! `/v1/chat/completions` with a fine-tuned model, one of its checkpoints, or the untrained base
//! model (which knows no replies and answers an empty string), or a loaded LoRA adapter, and
//! `/v1/models`. A request may carry `tools`, `tool_choice` and `parallel_tool_calls` (checked
//! as OpenAI checks them) and messages with `tool_calls` and the `tool` role; a model's reply
//! that decodes to tool calls ([`Reply::decode`]: the local model's replies are the training
//! references, encoded) is answered as `message.tool_calls` with `finish_reason: "tool_calls"`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::Value;

use super::errors::{ApiError, parse_body};
use super::{App, ORGANIZATION, adapters, new_id, unix_now};
use crate::data::{Conversation, Message, Reply, conversation_tokens};
use crate::provider::ProviderError;
use crate::provider::local::BASE_MODEL;
use crate::wire::openai::{
    ChatRequest, ChatResponse, Choice, ChoiceLogprobs, FunctionCall, JobStatus, List, ModelObject, ResponseMessage,
    TokenLogprob, ToolCall, TopLogprob, Usage,
};

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// `POST /chat/completions`. The local model is deterministic: `temperature` and `seed` are
/// accepted and change nothing.
pub async fn complete(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<ChatResponse>, ApiError> {
    let (request, raw): (ChatRequest, _) = parse_body(&body)?;
    if raw.get("stream").and_then(serde_json::Value::as_bool) == Some(true) {
        return Err(ApiError::invalid(
            "Streaming is not supported by this server: leave 'stream' unset.",
            Some("stream"),
        ));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("Invalid value for 'n': this server returns one choice (n = 1).", Some("n")));
    }
    if request.messages.is_empty() {
        return Err(ApiError::invalid(
            "Invalid 'messages': empty array. Expected at least 1 message.",
            Some("messages"),
        ));
    }
    if let Some(i) = request.messages.iter().position(|m| !ROLES.contains(&m.role.as_str())) {
        let message = format!("Invalid value for 'messages[{i}].role': '{}'.", request.messages[i].role);
        return Err(ApiError::invalid(message, Some(&format!("messages[{i}].role"))));
    }
    check_tools(&request)?;
    let logprobs = request.logprobs == Some(true);
    let top = request.top_logprobs.unwrap_or(0) as usize;
    if top > 20 {
        return Err(ApiError::invalid("Invalid 'top_logprobs': expected at most 20.", Some("top_logprobs")));
    }
    if top > 0 && !logprobs {
        return Err(ApiError::invalid("'top_logprobs' needs 'logprobs' set to true.", Some("top_logprobs")));
    }
    let messages: Vec<Message> = request.messages.iter().map(|m| Message::text(&m.role, m.text())).collect();

    // The base model has learnt no replies; the others answer with their most probable reply.
    let adapter = app.adapters().get(&request.model).map(|a| a.model.clone());
    let replies = if request.model == BASE_MODEL {
        Vec::new()
    } else if let Some(model) = adapter {
        let context: Vec<(String, String)> = messages.iter().map(|m| (m.role.clone(), m.content.clone())).collect();
        tokio::task::spawn_blocking(move || adapters::top_replies(&model, &context, top.max(1)))
            .await
            .map_err(|e| ApiError::internal(&e))?
    } else {
        let (provider, model, asked) = (app.provider.clone(), request.model.clone(), messages.clone());
        let answer = tokio::task::spawn_blocking(move || provider.top_replies(&model, &asked, top.max(1)))
            .await
            .map_err(|e| ApiError::internal(&e))?;
        match answer {
            Ok(replies) => replies,
            Err(ProviderError::ModelNotFound(_)) => return Err(ApiError::model_not_found(&request.model)),
            Err(e) => return Err(ApiError::internal(&e)),
        }
    };
    // The replies are encoded: the log probabilities name each as people read it.
    let replies: Vec<(Reply, f64)> = replies.into_iter().map(|(label, p)| (Reply::decode(&label), p)).collect();
    let reply = replies.first().map_or_else(Reply::default, |r| r.0.clone());
    let logprobs = logprobs.then(|| ChoiceLogprobs {
        content: Some(match replies.first() {
            None => Vec::new(),
            Some((reply, p)) => vec![TokenLogprob {
                token: reply.display(),
                logprob: p.ln(),
                bytes: Some(reply.display().into_bytes()),
                top_logprobs: (replies.iter().take(top))
                    .map(|(r, p)| TopLogprob {
                        token: r.display(),
                        logprob: p.ln(),
                        bytes: Some(r.display().into_bytes()),
                    })
                    .collect(),
            }],
        }),
    });
    let prompt_tokens = conversation_tokens(&Conversation { messages, ..Conversation::default() });
    let count = |s: &str| tiktoken_rs::o200k_base_singleton().encode_ordinary(s).len() as u64;
    let completion_tokens =
        count(&reply.content) + reply.tool_calls.iter().map(|c| count(&c.name) + count(&c.arguments)).sum::<u64>();
    let calls = reply.has_tool_calls();
    let message = ResponseMessage {
        role: "assistant".into(),
        // A reply of calls only has no content, as OpenAI answers it.
        content: (!calls || !reply.content.is_empty()).then_some(reply.content.clone()),
        tool_calls: calls.then(|| {
            (reply.tool_calls.iter())
                .map(|c| ToolCall {
                    id: new_id("call_"),
                    kind: "function".into(),
                    function: FunctionCall { name: c.name.clone(), arguments: c.arguments.clone() },
                })
                .collect()
        }),
        ..ResponseMessage::default()
    };
    Ok(Json(ChatResponse {
        id: new_id("chatcmpl-"),
        object: "chat.completion".into(),
        created: unix_now(),
        model: request.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(if calls { "tool_calls" } else { "stop" }.into()),
            logprobs,
        }],
        usage: Some(Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }),
    }))
}

/// The tool settings of a request and its messages' calls, checked as OpenAI checks them: a 400
/// naming the parameter at fault.
fn check_tools(request: &ChatRequest) -> Result<(), ApiError> {
    let bad = |message: String, param: &str| Err(ApiError::invalid(message, Some(param)));
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let mut names = Vec::new();
    match &request.tools {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            for (i, tool) in tools.iter().enumerate() {
                let at = |key: &str| format!("tools[{i}]{key}");
                let Value::Object(tool) = tool else {
                    return bad(
                        format!("Invalid type for '{}': expected an object, but got {} instead.", at(""), kind(tool)),
                        &at(""),
                    );
                };
                match tool.get("type") {
                    Some(Value::String(t)) if t == "function" => {}
                    Some(Value::String(t)) => {
                        return bad(format!("Invalid value: '{t}'. Supported values are: 'function'."), &at(".type"));
                    }
                    Some(other) => {
                        return bad(
                            format!(
                                "Invalid type for '{}': expected a string, but got {} instead.",
                                at(".type"),
                                kind(other)
                            ),
                            &at(".type"),
                        );
                    }
                    None => return bad(format!("Missing required parameter: '{}'.", at(".type")), &at(".type")),
                }
                let Some(Value::Object(function)) = tool.get("function") else {
                    return bad(format!("Missing required parameter: '{}'.", at(".function")), &at(".function"));
                };
                let name = match function.get("name") {
                    Some(Value::String(n)) => n,
                    Some(other) => {
                        return bad(
                            format!(
                                "Invalid type for '{}': expected a string, but got {} instead.",
                                at(".function.name"),
                                kind(other)
                            ),
                            &at(".function.name"),
                        );
                    }
                    None => {
                        return bad(
                            format!("Missing required parameter: '{}'.", at(".function.name")),
                            &at(".function.name"),
                        );
                    }
                };
                let well_formed = !name.is_empty()
                    && name.len() <= 64
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !well_formed {
                    return bad(
                        format!(
                            "Invalid '{}': string does not match pattern. Expected a string that matches the pattern \
                             '^[a-zA-Z0-9_-]+$' of at most 64 characters.",
                            at(".function.name")
                        ),
                        &at(".function.name"),
                    );
                }
                if let Some(p) = function.get("parameters").filter(|p| !p.is_object()) {
                    return bad(
                        format!(
                            "Invalid type for '{}': expected an object, but got {} instead.",
                            at(".function.parameters"),
                            kind(p)
                        ),
                        &at(".function.parameters"),
                    );
                }
                names.push(name.as_str());
            }
        }
        Some(other) => {
            return bad(
                format!("Invalid type for 'tools': expected an array, but got {} instead.", kind(other)),
                "tools",
            );
        }
    }
    match &request.tool_choice {
        None | Some(Value::Null) => {}
        Some(_) if names.is_empty() => {
            return bad(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.".into(),
                "tool_choice",
            );
        }
        Some(Value::String(c)) if ["none", "auto", "required"].contains(&c.as_str()) => {}
        Some(Value::Object(c)) => {
            let name = c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            match name {
                Some(n) if names.contains(&n) => {}
                Some(n) => {
                    return bad(
                        format!("Invalid value for 'tool_choice': no function named '{n}' was specified in 'tools'."),
                        "tool_choice",
                    );
                }
                None => {
                    return bad("Missing required parameter: 'tool_choice.function.name'.".into(), "tool_choice");
                }
            }
        }
        Some(other) => {
            return bad(
                format!(
                    "Invalid value for 'tool_choice': {other}. Supported values are: 'none', 'auto', 'required' and \
                     {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}."
                ),
                "tool_choice",
            );
        }
    }
    if request.parallel_tool_calls.is_some() && names.is_empty() {
        return bad(
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified."
                .into(),
            "parallel_tool_calls",
        );
    }
    for (i, m) in request.messages.iter().enumerate() {
        if m.tool_calls.is_some() && m.role != "assistant" {
            return bad(
                format!(
                    "Invalid parameter: 'tool_calls' is only allowed on messages with role 'assistant' (messages[{i}])."
                ),
                &format!("messages[{i}].tool_calls"),
            );
        }
        if m.role == "tool" && m.tool_call_id.is_none() {
            return bad(
                format!(
                    "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id' (messages[{i}])."
                ),
                &format!("messages[{i}].tool_call_id"),
            );
        }
    }
    Ok(())
}

/// A model as `/models` lists it: a LoRA adapter also names its directory (`root`) and the base
/// model (`parent`), as vLLM lists them.
#[derive(Debug, serde::Serialize)]
pub struct ModelCard {
    #[serde(flatten)]
    model: ModelObject,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
}

/// The base model, every succeeded job's model (newest job first), then the loaded adapters.
fn known_models(app: &App) -> Result<Vec<ModelCard>, ApiError> {
    let model = |id: &str, created: i64, owned_by: &str| ModelCard {
        model: ModelObject { id: id.to_string(), object: "model".into(), created, owned_by: owned_by.to_string() },
        root: None,
        parent: None,
    };
    let mut models = vec![model(BASE_MODEL, 0, "ftsweep")];
    for job in app.store.lock().jobs()? {
        if let (JobStatus::Succeeded, Some(id)) = (JobStatus::parse(&job.status), &job.fine_tuned_model) {
            models.push(model(id, job.finished_at.unwrap_or(job.created_at), ORGANIZATION));
        }
    }
    for a in app.adapters().iter() {
        models.push(ModelCard {
            root: Some(a.path.display().to_string()),
            parent: Some(BASE_MODEL.to_string()),
            ..model(&a.name, a.created, ORGANIZATION)
        });
    }
    Ok(models)
}

/// `GET /models`.
pub async fn models(State(app): State<Arc<App>>) -> Result<Json<List<ModelCard>>, ApiError> {
    let data = known_models(&app)?;
    Ok(Json(List { object: "list".into(), data, has_more: false, first_id: None, last_id: None }))
}

/// `GET /models/{id}`.
pub async fn model(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<ModelCard>, ApiError> {
    let found = known_models(&app)?.into_iter().find(|m| m.model.id == id);
    found.map(Json).ok_or_else(|| ApiError::model_not_found(&id))
}
