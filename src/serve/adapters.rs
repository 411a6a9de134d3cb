//! vLLM's runtime LoRA endpoints for the local model family: `POST /load_lora_adapter`
//! `{"lora_name", "lora_path"}` and `POST /unload_lora_adapter` `{"lora_name"}`, answered as vLLM
//! answers them (`vllm/entrypoints/openai/serving_models.py`): a plain-text `Success: …` on 200,
//! else `{"error": {"message", "type", "param", "code"}}` with the HTTP status as `code`.
//! Loaded adapters live in memory (a restarted server has none); chat completions with
//! `"model": lora_name` answer with the adapter, and `/models` lists them with the base model as
//! `parent`. `lora_path` must be an absolute directory that `ftsweep train` wrote
//! (`provider::local::hf`). At most `--max-loras` are loaded at a time: vLLM swaps adapters in
//! and out of its `--max-loras` slots; this server refuses the load instead, so that a client
//! that never unloads is caught.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{App, unix_now};
use crate::provider::local::BASE_MODEL;
use crate::provider::local::hf::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_adapter};
use crate::provider::local::trainer::ReplyModel;

/// The largest body these endpoints read (a name and a path).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A loaded adapter.
pub struct Adapter {
    pub name: String,
    pub path: PathBuf,
    pub model: Arc<ReplyModel>,
    pub created: i64,
}

/// The adapters loaded, in load order, and how many may be.
pub struct Adapters {
    loaded: Vec<Adapter>,
    max: usize,
}

impl Adapters {
    pub fn new(max: usize) -> Adapters {
        Adapters { loaded: Vec::new(), max: max.max(1) }
    }

    /// The adapter named `name`, if loaded.
    pub fn get(&self, name: &str) -> Option<&Adapter> {
        self.loaded.iter().find(|a| a.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Adapter> {
        self.loaded.iter()
    }
}

/// An error answered as vLLM answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct VllmError {
    pub status: StatusCode,
    /// vLLM's error types: `InvalidUserInput`, `NotFoundError`, `BadRequestError`.
    pub kind: &'static str,
    pub message: String,
}

impl VllmError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> VllmError {
        VllmError { status, kind, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> VllmError {
        VllmError::new(StatusCode::BAD_REQUEST, "InvalidUserInput", message)
    }

    fn bad_request(message: impl Into<String>) -> VllmError {
        VllmError::new(StatusCode::BAD_REQUEST, "BadRequestError", message)
    }
}

impl IntoResponse for VllmError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": null,
            "code": self.status.as_u16(),
        }});
        (self.status, Json(body)).into_response()
    }
}

fn success(text: String) -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// A request body: a JSON object.
fn object(body: &Bytes) -> Result<Map<String, Value>, VllmError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| VllmError::bad_request(format!("the body is not valid JSON ({e}): send a JSON object")))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(VllmError::bad_request("the body must be a JSON object")),
    }
}

/// The string field `key`: absent, null or empty is `None`; another type is an error.
fn text(object: &Map<String, Value>, key: &str) -> Result<Option<String>, VllmError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(VllmError::bad_request(format!("'{key}' must be a string"))),
    }
}

/// The boolean field `key`, false when absent or null.
fn flag(object: &Map<String, Value>, key: &str) -> Result<bool, VllmError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(VllmError::bad_request(format!("'{key}' must be true or false"))),
    }
}

/// `POST /load_lora_adapter`.
pub async fn load(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, VllmError> {
    let body = object(&body)?;
    let (name, path, in_place) = (text(&body, "lora_name")?, text(&body, "lora_path")?, flag(&body, "load_inplace")?);
    let (Some(name), Some(path)) = (name, path) else {
        return Err(VllmError::invalid("Both 'lora_name' and 'lora_path' must be provided."));
    };
    app.adapters().admits(&name, in_place)?;
    let dir = PathBuf::from(&path);
    if !dir.is_absolute() {
        return Err(VllmError::bad_request(format!(
            "lora_path '{path}' is not an absolute path: give the adapter directory's absolute path"
        )));
    }
    let read = dir.clone();
    let model = tokio::task::spawn_blocking(move || read_adapter(&read))
        .await
        .map_err(|e| VllmError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", e.to_string()))?
        .map_err(|e| {
            VllmError::bad_request(format!(
                "Loading lora {name} failed: {e} (an adapter of the local model family is a directory with \
                 {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}, as `ftsweep train` writes)"
            ))
        })?;
    let mut adapters = app.adapters();
    // Checked again: another load may have come in while this one read the files.
    adapters.admits(&name, in_place)?;
    tracing::info!("loaded LoRA adapter '{name}' from {}", dir.display());
    let adapter = Adapter { name: name.clone(), path: dir, model: Arc::new(model), created: unix_now() };
    match adapters.loaded.iter_mut().find(|a| a.name == name) {
        // `load_inplace`: the same name now answers with the new weights.
        Some(loaded) => *loaded = adapter,
        None => adapters.loaded.push(adapter),
    }
    Ok(success(format!("Success: LoRA adapter '{name}' added successfully.")))
}

impl Adapters {
    /// Whether an adapter named `name` may be loaded now (`in_place`: replacing one so named).
    fn admits(&self, name: &str, in_place: bool) -> Result<(), VllmError> {
        if self.get(name).is_some() {
            if in_place {
                return Ok(());
            }
            return Err(VllmError::invalid(format!(
                "The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, \
                 set 'load_inplace' to True."
            )));
        }
        if name == BASE_MODEL {
            return Err(VllmError::invalid(format!(
                "The lora adapter name '{name}' conflicts with a served base model."
            )));
        }
        if self.loaded.len() >= self.max {
            let names: Vec<&str> = self.loaded.iter().map(|a| a.name.as_str()).collect();
            return Err(VllmError::invalid(format!(
                "{} LoRA adapter(s) are loaded, the most this server holds (--max-loras {}): unload one first \
                 (POST /v1/unload_lora_adapter); loaded: {}",
                self.loaded.len(),
                self.max,
                names.join(", ")
            )));
        }
        Ok(())
    }
}

/// `POST /unload_lora_adapter`.
pub async fn unload(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, VllmError> {
    let Some(name) = text(&object(&body)?, "lora_name")? else {
        return Err(VllmError::invalid("either 'lora_name' and 'lora_int_id' needs to be provided."));
    };
    let mut adapters = app.adapters();
    let before = adapters.loaded.len();
    adapters.loaded.retain(|a| a.name != name);
    if adapters.loaded.len() == before {
        return Err(VllmError::new(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!("The lora adapter '{name}' cannot be found."),
        ));
    }
    tracing::info!("unloaded LoRA adapter '{name}'");
    Ok(success(format!("Success: LoRA adapter '{name}' removed successfully.")))
}

/// The `k` most probable replies of an adapter's model (at least one), most probable first.
pub fn top_replies(model: &ReplyModel, context: &[(String, String)], k: usize) -> Vec<(String, f64)> {
    model.predict(context).into_iter().take(k.max(1)).map(|(c, p)| (model.classes()[c].clone(), p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_strictly() {
        let f = |body: &str| -> Result<(Option<String>, Option<String>, bool), VllmError> {
            let o = object(&Bytes::from(body.to_string()))?;
            Ok((text(&o, "lora_name")?, text(&o, "lora_path")?, flag(&o, "load_inplace")?))
        };
        assert_eq!(f(r#"{"lora_name": "a", "lora_path": "", "x": 1}"#).unwrap(), (Some("a".into()), None, false));
        assert_eq!(f(r#"{"lora_name": null, "load_inplace": true}"#).unwrap(), (None, None, true));
        let e = f(r#"{"lora_name": ["a"], "lora_path": "/x"}"#).unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (StatusCode::BAD_REQUEST, "'lora_name' must be a string"));
        assert!(f(r#"{"load_inplace": "yes"}"#).unwrap_err().message.contains("true or false"));
        assert!(f("[1]").unwrap_err().message.contains("JSON object"));
        assert!(f("{").unwrap_err().message.contains("not valid JSON"));
    }
}
