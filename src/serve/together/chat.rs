//! Together's chat completions: the OpenAI shape (with `max_tokens`), answered by the local
//! models the names stand for. Serverless, a base model answers (as the untrained baseline) and
//! so does a completed LoRA fine-tune by its `model_output_name`; a Full fine-tune's output and a
//! `{job_id}:{step}` checkpoint answer only through a started dedicated endpoint (by the
//! endpoint's `name`). Anything else is a 404 `model_not_available`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::super::errors::ApiError;
use super::fine_tunes::{by_output_name, checkpoint_models};
use super::{BASE_MODELS, endpoints, invalid, model_not_available};
use crate::provider::local::BASE_MODEL;
use crate::serve::App;
use crate::wire::openai::JobStatus;

/// A model a name stands for: the local model, and whether it answers serverless.
pub struct Resolved {
    pub local: String,
    pub serverless: bool,
}

/// What `name` (a base model, a fine-tune's output or a `{job_id}:{step}` checkpoint) stands
/// for; `Err` says why it cannot answer.
pub fn resolve(app: &App, name: &str) -> Result<Result<Resolved, String>, ApiError> {
    if BASE_MODELS.iter().any(|(m, _)| *m == name) {
        return Ok(Ok(Resolved { local: BASE_MODEL.into(), serverless: true }));
    }
    if let Some((job, ft)) = by_output_name(app, name)? {
        return Ok(match (JobStatus::parse(&job.status), job.fine_tuned_model) {
            (JobStatus::Succeeded, Some(local)) => Ok(Resolved { local, serverless: !ft.full }),
            _ => Err(format!("The fine-tune {} that makes it has not completed.", job.id)),
        });
    }
    if let Some((job_id, step)) = name.rsplit_once(':')
        && job_id.starts_with("ft-")
        && let Ok(step) = step.parse::<u64>()
    {
        let listed = match checkpoint_models(app, job_id) {
            Ok(listed) => listed,
            Err(_) => return Ok(Err(format!("There is no fine-tune {job_id}."))),
        };
        return Ok(match listed.into_iter().find(|(s, ..)| *s == step) {
            Some((_, local, ..)) => Ok(Resolved { local, serverless: false }),
            None => Err(format!("The fine-tune {job_id} lists no checkpoint at step {step}.")),
        });
    }
    Ok(Err("Please visit https://api.together.ai/models to view the list of supported models.".into()))
}

/// `POST /v1/chat/completions`.
pub async fn complete(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let mut raw: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(raw)) => raw,
        Ok(_) => return Err(ApiError::invalid("The request body must be a JSON object", None)),
        Err(e) => {
            return Err(ApiError::invalid(format!("We could not parse the JSON body of your request ({e})"), None));
        }
    };
    let Some(name) = raw.get("model").and_then(Value::as_str).map(str::to_string) else {
        return Err(invalid("Missing required parameter: 'model'", "model"));
    };
    let local = match endpoints::started_model(&app, &name)? {
        Some(Ok(model)) => match resolve(&app, &model)? {
            Ok(r) => r.local,
            Err(why) => return Err(model_not_available(&name, &why)),
        },
        Some(Err(why)) => return Err(model_not_available(&name, &why)),
        None => match resolve(&app, &name)? {
            Ok(r) if r.serverless => r.local,
            Ok(_) => {
                return Err(model_not_available(
                    &name,
                    "It is not served serverless: create a dedicated endpoint for it and use the endpoint's name.",
                ));
            }
            Err(why) => return Err(model_not_available(&name, &why)),
        },
    };
    // Together's sampling fields the local model has no use for.
    for key in [
        "top_k",
        "top_p",
        "repetition_penalty",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "context_length_exceeded_behavior",
        "safety_model",
    ] {
        raw.remove(key);
    }
    raw.insert("model".into(), Value::String(local));
    let body = Bytes::from(serde_json::to_vec(&raw).map_err(|e| ApiError::internal(&e))?);
    let Json(answer) = super::super::chat::complete(State(app), body).await?;
    let mut answer = serde_json::to_value(answer).map_err(|e| ApiError::internal(&e))?;
    answer["model"] = json!(name);
    answer["prompt"] = json!([]);
    Ok(Json(answer))
}
