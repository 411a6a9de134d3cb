//! `/v1/chat/completions` with a fine-tuned model, one of its checkpoints, or the untrained base
//! model (which knows no replies and answers an empty string), or a loaded LoRA adapter, and
//! `/v1/models`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};

use super::errors::{ApiError, parse_body};
use super::{App, ORGANIZATION, adapters, new_id, unix_now};
use crate::data::{Conversation, Message, conversation_tokens};
use crate::provider::ProviderError;
use crate::provider::local::BASE_MODEL;
use crate::wire::openai::{
    ChatRequest, ChatResponse, Choice, ChoiceLogprobs, JobStatus, List, ModelObject, ResponseMessage, TokenLogprob,
    TopLogprob, Usage,
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
    let content = replies.first().map_or(String::new(), |r| r.0.clone());
    let logprobs = logprobs.then(|| ChoiceLogprobs {
        content: Some(match replies.first() {
            None => Vec::new(),
            Some((reply, p)) => vec![TokenLogprob {
                token: reply.clone(),
                logprob: p.ln(),
                bytes: Some(reply.as_bytes().to_vec()),
                top_logprobs: (replies.iter().take(top))
                    .map(|(t, p)| TopLogprob { token: t.clone(), logprob: p.ln(), bytes: Some(t.as_bytes().to_vec()) })
                    .collect(),
            }],
        }),
    });
    let prompt_tokens = conversation_tokens(&Conversation { messages, ..Conversation::default() });
    let completion_tokens = tiktoken_rs::o200k_base_singleton().encode_ordinary(&content).len() as u64;
    Ok(Json(ChatResponse {
        id: new_id("chatcmpl-"),
        object: "chat.completion".into(),
        created: unix_now(),
        model: request.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage { role: "assistant".into(), content: Some(content), ..ResponseMessage::default() },
            finish_reason: Some("stop".into()),
            logprobs,
        }],
        usage: Some(Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }),
    }))
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
