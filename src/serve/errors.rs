//! The server's errors: `ApiError` is what a request fails with (an HTTP status and the protocol's
//! `{"error": {message, type, param, code}}` body); `ServeError` is what stops the server.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::store::StoreError;
use crate::wire::openai::{ErrorBody, ErrorObject};

/// What stops the server (or keeps it from starting).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// A failed request, answered with an OpenAI-shaped error body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// The body's `type`: `invalid_request_error`, `requests` or `server_error`.
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), param: None, code: None }
    }

    /// A 400 about the request, naming the parameter at fault when there is one.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError { param: param.map(str::to_string), ..ApiError::new(StatusCode::BAD_REQUEST, INVALID, message) }
    }

    /// A 404 for an unknown object id, e.g. "No such File object: file-x".
    pub fn no_such(object: &str, id: &str) -> ApiError {
        let message = format!("No such {object} object: {id}");
        ApiError { param: Some("id".into()), ..ApiError::new(StatusCode::NOT_FOUND, INVALID, message) }
    }

    /// A 404 for a model that does not exist.
    pub fn model_not_found(model: &str) -> ApiError {
        let message = format!("The model `{model}` does not exist or you do not have access to it.");
        ApiError { param: Some("model".into()), ..ApiError::new(StatusCode::NOT_FOUND, INVALID, message) }
            .with_code("model_not_found")
    }

    /// The 401 for a missing or wrong key; it never repeats the key that was sent.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, INVALID, "Incorrect API key provided.").with_code("invalid_api_key")
    }

    /// A 500 whose cause is logged but not shown to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!("request failed: {cause}");
        let message = "The server had an error while processing your request. Sorry about that!";
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn with_code(self, code: &'static str) -> ApiError {
        ApiError { code: Some(code), ..self }
    }
}

/// The `type` of most errors.
pub const INVALID: &str = "invalid_request_error";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                message: self.message,
                kind: Some(self.kind.to_string()),
                param: self.param,
                code: self.code.map(str::to_string),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON request body into `T`, and also returns the raw object for checks the typed
/// value cannot make. A bad body is a 400 naming the field at fault when one field is.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<(T, Map<String, Value>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!("We could not parse the JSON body of your request ({e}). Send a JSON object."), None)
    })?;
    let Value::Object(object) = value else {
        return Err(ApiError::invalid("The request body must be a JSON object.", None));
    };
    match serde_json::from_value::<T>(Value::Object(object.clone())) {
        Ok(parsed) => Ok((parsed, object)),
        Err(e) => Err(body_error::<T>(&object, &e.to_string())),
    }
}

/// Names the field of a body that does not parse: a missing required field, or the one field
/// without which the body parses (or only misses that field).
fn body_error<T: DeserializeOwned>(object: &Map<String, Value>, error: &str) -> ApiError {
    if let Some(field) = error.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
        return ApiError::invalid(format!("Missing required parameter: '{field}'."), Some(field));
    }
    let culprit = object.keys().find(|key| {
        let mut rest = object.clone();
        rest.remove(*key);
        match serde_json::from_value::<T>(Value::Object(rest)) {
            Ok(_) => true,
            Err(e) => e.to_string() == format!("missing field `{key}`"),
        }
    });
    match culprit {
        Some(key) => ApiError::invalid(format!("Invalid value for '{key}': {error}."), Some(key)),
        None => ApiError::invalid(format!("Invalid request body: {error}."), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::openai::ChatRequest;

    fn param(body: &str) -> (Option<String>, String) {
        let e = parse_body::<ChatRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        (e.param, e.message)
    }

    #[test]
    fn bad_bodies_name_the_field_at_fault() {
        assert_eq!(param(r#"{"messages":[]}"#).0.as_deref(), Some("model"));
        assert_eq!(param(r#"{"model":"m","messages":[],"n":"two"}"#).0.as_deref(), Some("n"));
        assert_eq!(param(r#"{"model":7,"messages":[]}"#).0.as_deref(), Some("model"));
        let (p, message) = param("{not json");
        assert!(p.is_none() && message.contains("could not parse"), "{message}");
        assert!(param("[1]").1.contains("JSON object"));
    }
}
