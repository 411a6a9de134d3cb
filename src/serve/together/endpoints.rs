//! Together's dedicated endpoints (`/v1/endpoints`): create, retrieve, list (`type`, `mine`),
//! delete. An endpoint serves one model (a base model, a fine-tune's output or a
//! `{job_id}:{step}` checkpoint) by its `name` once STARTED: PENDING for the first half of
//! `--endpoint-delay-ms`, STARTING for the second, then STARTED (STOPPED if created so). Deleted,
//! its name stops answering. Endpoints persist in the serve store.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::super::errors::ApiError;
use super::{USER, chat, invalid, iso, new_uuid_id, not_found};
use crate::serve::{App, Params, random_hex};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An endpoint's state now.
fn state(app: &App, endpoint: &Value, created_ms: i64) -> &'static str {
    if endpoint["requested_state"] == "STOPPED" {
        return "STOPPED";
    }
    let delay = app.endpoint_delay.as_millis() as i64;
    let elapsed = now_ms() - created_ms;
    if elapsed >= delay {
        "STARTED"
    } else if elapsed * 2 >= delay {
        "STARTING"
    } else {
        "PENDING"
    }
}

/// The endpoint as Together answers it.
fn answer(app: &App, stored: &Value, created_ms: i64) -> Value {
    let mut v = stored.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("requested_state");
    }
    v["state"] = json!(state(app, stored, created_ms));
    v
}

/// The model an endpoint named `name` serves, if there is such an endpoint: `Err` while it is not
/// STARTED.
pub fn started_model(app: &App, name: &str) -> Result<Option<Result<String, String>>, ApiError> {
    let Some((e, created_ms)) = app.store.lock().endpoint::<Value>(name)? else { return Ok(None) };
    if e["name"] != name {
        return Ok(None);
    }
    let model = e["model"].as_str().unwrap_or_default().to_string();
    Ok(Some(match state(app, &e, created_ms) {
        "STARTED" => Ok(model),
        other => Err(format!("The endpoint {name} is {other}: wait until it is STARTED.")),
    }))
}

fn parse(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(raw)) => Ok(raw),
        Ok(_) => Err(ApiError::invalid("The request body must be a JSON object", None)),
        Err(e) => Err(ApiError::invalid(format!("We could not parse the JSON body of your request ({e})"), None)),
    }
}

/// `POST /v1/endpoints`.
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let raw = parse(&body)?;
    let text = |key: &str| raw.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let model = text("model").ok_or_else(|| invalid("Missing required parameter: 'model'", "model"))?;
    if let Err(why) = chat::resolve(&app, &model)? {
        let message = format!("Model {model} cannot be deployed. {why}");
        return Err(invalid(message, "model").with_code("model_not_available"));
    }
    let hardware = text("hardware").ok_or_else(|| invalid("Missing required parameter: 'hardware'", "hardware"))?;
    let autoscaling = raw.get("autoscaling").cloned().unwrap_or(json!({"min_replicas": 1, "max_replicas": 1}));
    let replicas = |key: &str| autoscaling.get(key).and_then(Value::as_u64);
    let (Some(min), Some(max)) = (replicas("min_replicas"), replicas("max_replicas")) else {
        return Err(invalid(
            "Invalid value for 'autoscaling': expected {min_replicas, max_replicas}, whole numbers",
            "autoscaling",
        ));
    };
    if max < min || max == 0 {
        return Err(invalid(
            format!(
                "Invalid value for 'autoscaling': max_replicas ({max}) must be at least min_replicas ({min}) and 1"
            ),
            "autoscaling",
        ));
    }
    let requested = text("state").unwrap_or_else(|| "STARTED".into()).to_ascii_uppercase();
    if requested != "STARTED" && requested != "STOPPED" {
        return Err(invalid(
            format!("Invalid value for 'state': '{requested}'. Expected 'STARTED' or 'STOPPED'"),
            "state",
        ));
    }
    let short = model.rsplit('/').next().unwrap_or(&model);
    let name = format!("{USER}/{short}-{}", random_hex(4));
    let id = new_uuid_id("endpoint-");
    let created_ms = now_ms();
    let stored = json!({
        "object": "endpoint",
        "id": id,
        "name": name,
        "display_name": text("display_name").unwrap_or_else(|| name.clone()),
        "model": model,
        "hardware": hardware,
        "type": "dedicated",
        "owner": USER,
        "autoscaling": {"min_replicas": min, "max_replicas": max},
        "inactive_timeout": raw.get("inactive_timeout").cloned().unwrap_or(Value::Null),
        "disable_speculative_decoding": raw.get("disable_speculative_decoding").cloned().unwrap_or(json!(false)),
        "created_at": iso(created_ms / 1000),
        "requested_state": requested,
    });
    app.store.lock().insert_endpoint(&id, &name, created_ms, &stored)?;
    let mut v = answer(&app, &stored, created_ms);
    if requested == "STARTED" {
        // Just created: it has not started.
        v["state"] = json!("PENDING");
    }
    Ok(Json(v))
}

/// `GET /v1/endpoints/{id}`.
pub async fn retrieve(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (e, created_ms) = app
        .store
        .lock()
        .endpoint::<Value>(&id)?
        .filter(|(e, _)| e["id"] == id.as_str())
        .ok_or_else(|| not_found("Endpoint", &id))?;
    Ok(Json(answer(&app, &e, created_ms)))
}

/// `GET /v1/endpoints?type=dedicated|serverless&mine=true|false`: `{object:"list", data}`; the
/// serverless ones are the base models, which are not the user's.
pub async fn list(State(app): State<Arc<App>>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let q = Params::from_uri(&uri)?;
    let kind = q.get("type");
    if let Some(k) = kind
        && k != "dedicated"
        && k != "serverless"
    {
        return Err(invalid(format!("Invalid value for 'type': '{k}'. Expected 'dedicated' or 'serverless'"), "type"));
    }
    let mine = match q.get("mine") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid(format!("Invalid value for 'mine': '{other}'. Expected true or false"), "mine"));
        }
    };
    let mut data = Vec::new();
    if kind != Some("serverless") {
        for (e, created_ms) in app.store.lock().endpoints::<Value>()? {
            data.push(answer(&app, &e, created_ms));
        }
    }
    if kind != Some("dedicated") && !mine {
        for (model, _) in super::BASE_MODELS {
            data.push(json!({"object": "endpoint", "id": format!("endpoint-serverless-{}", model.replace('/', "-")),
                "name": model, "model": model, "type": "serverless", "owner": "together", "state": "STARTED"}));
        }
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `DELETE /v1/endpoints/{id}` → 204.
pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !app.store.lock().delete_endpoint(&id)? {
        return Err(not_found("Endpoint", &id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
