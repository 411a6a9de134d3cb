//! `ftsweep serve --protocol azure`: Azure OpenAI's v1 data plane
//! (`/openai/v1/...`, `api-key` or bearer auth, `api-version` optional: `v1` or `preview`), the
//! dated surface the `AzureOpenAI` SDK client uses (`/openai/files?api-version=…`,
//! `/openai/deployments/{name}/chat/completions?api-version=…`), over the same jobs and models as
//! the OpenAI routes, and Azure Resource Manager's deployments
//! (`/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{a}/deployments/{name}`,
//! the server's key as the ARM token): a model answers chat completions only by the name of a
//! deployment that has finished provisioning.
//!
//! Jobs fine-tune the Azure base models of `names::BASE_MODELS` (each trains the local
//! classifier, `local/ngram`) or a model an earlier job made; the answers name models the Azure
//! way (`{base}.ft-{32 hex}`, checkpoints `ftchkpt-{32 hex}`), derived from the local names.

mod arm;
mod data;
mod names;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;

use super::App;

/// The routes of the Azure protocol, from the server's root.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().merge(data::routes()).route("/subscriptions/{*rest}", any(arm::dispatch))
}

/// An Azure error answer: `{"error": {"code", "message"}}`, the shape both the data plane's
/// Azure-specific errors and ARM use.
fn azure_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What the guard needs to label an Azure answer, taken from the request before it is handled.
pub(super) struct Labels {
    /// An ARM request (under `/subscriptions/`), not the data plane.
    arm: bool,
    /// Whether an `Authorization` header was sent.
    bearer_sent: bool,
}

impl Labels {
    pub(super) fn of(request: &Request) -> Labels {
        Labels {
            arm: request.uri().path().starts_with("/subscriptions/"),
            bearer_sent: request.headers().contains_key(AUTHORIZATION),
        }
    }

    /// Gives the answer Azure's request-id headers (the data plane's `apim-request-id`, ARM's
    /// `x-ms-request-id` instead of `x-request-id`) and Azure's 401 bodies.
    pub(super) fn apply(self, response: Response, request_id: &str) -> Response {
        let mut response = if response.status() == StatusCode::UNAUTHORIZED { self.unauthorized() } else { response };
        let id = uuid_of(request_id);
        let h = response.headers_mut();
        let value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"));
        if self.arm {
            h.remove("x-request-id");
            h.remove("openai-processing-ms");
            h.insert("x-ms-request-id", value.clone());
            h.insert("x-ms-correlation-request-id", value);
        } else {
            h.insert("apim-request-id", value);
        }
        response
    }

    /// The 401 as Azure words it; it never repeats what was sent.
    fn unauthorized(&self) -> Response {
        let mut response = match (self.arm, self.bearer_sent) {
            (true, false) => azure_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            ),
            (true, true) => {
                azure_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "The access token is invalid.")
            }
            (false, _) => azure_error(
                StatusCode::UNAUTHORIZED,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid \
                 key for an active subscription and use a correct regional API endpoint for your resource.",
            ),
        };
        if self.arm {
            let why = if self.bearer_sent { "invalid_token" } else { "missing 'Authorization' header" };
            let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{why}\"");
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
        }
        response.headers_mut().remove(CONTENT_LENGTH);
        let (parts, body) = response.into_parts();
        let mut response = Response::from_parts(parts, Body::new(body));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// The request id (`req_` and 32 hex digits) as a UUID, the form Azure's request ids take.
fn uuid_of(request_id: &str) -> String {
    let hex: String = request_id
        .strip_prefix("req_")
        .unwrap_or(request_id)
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(32)
        .collect();
    let hex = format!("{hex:0<32}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_become_uuids() {
        assert_eq!(uuid_of("req_0123456789abcdef0123456789abcdef"), "01234567-89ab-cdef-0123-456789abcdef");
    }
}
