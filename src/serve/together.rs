//! `ftsweep serve --protocol together`: Together AI's fine-tuning API over the same jobs, worker
//! and local models as the OpenAI routes, shaped as Together's docs and SDKs (together 3.1.1,
//! together-python, together-typescript, the OpenAPI spec) describe it:
//! - `/v1/files` with the SDKs' presigned flow (`files`): `POST /v1/files` answers 302 to
//!   `/v1/uploads/{token}` (PUT without credentials: the token is the secret), then
//!   `POST /v1/files/{id}/preprocess`; a checksum of an earlier complete upload answers 409;
//! - `/v1/fine-tunes` with Together's fields and bounds (`fine_tunes`), its events, metrics and
//!   checkpoints, the model limits and price estimates the SDK asks for before a create;
//! - chat completions (`chat`): a LoRA fine-tune's output and the base models answer serverless,
//!   a Full fine-tune's output and `{job}:{step}` checkpoints only through a dedicated endpoint;
//! - dedicated `/v1/endpoints` (`endpoints`), which start after `--endpoint-delay-ms`.
//!
//! Not served: the v2 `/v2/projects/…` endpoints API of package 3.x, multipart uploads above
//! 5 GB (`/v1/files/multipart/…`), DPO, `from_checkpoint`, downloads (`/v1/finetune/download`).

mod chat;
mod endpoints;
mod files;
mod fine_tunes;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::errors::{ApiError, INVALID};
use super::{App, random_hex};

/// The base models a fine-tune may start from (each trains the local classifier, as
/// `local/ngram`), with their parameter counts. They answer serverless as the untrained baseline.
pub const BASE_MODELS: [(&str, u64); 4] = [
    ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", 8_030_261_248),
    ("meta-llama/Meta-Llama-3.1-70B-Instruct-Reference", 70_553_706_496),
    ("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512),
    ("mistralai/Mistral-7B-Instruct-v0.2", 7_241_732_096),
];

/// Where the presigned upload URLs live, from the root.
const UPLOADS: &str = "/v1/uploads/";

/// The user every object belongs to.
const USER: &str = "ftsweep-local";

/// The routes of the Together protocol, from the server's root.
pub(super) fn routes() -> Router<Arc<App>> {
    let v1 = Router::new()
        .route("/files", post(files::announce).get(files::list))
        .route("/files/upload", post(files::upload_unsupported))
        .route("/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/files/{id}/content", get(files::content))
        .route("/files/{id}/preprocess", post(files::preprocess))
        .route("/uploads/{token}", put(files::put))
        .route("/fine-tunes", post(fine_tunes::create).get(fine_tunes::list))
        .route("/fine-tunes/models/limits", get(fine_tunes::limits))
        .route("/fine-tunes/models/supported", get(fine_tunes::supported))
        .route("/fine-tunes/estimate-price", post(fine_tunes::estimate_price))
        .route("/fine-tunes/{id}", get(fine_tunes::retrieve))
        .route("/fine-tunes/{id}/cancel", post(fine_tunes::cancel))
        .route("/fine-tunes/{id}/events", get(fine_tunes::events))
        .route("/fine-tunes/{id}/metrics", get(fine_tunes::metrics))
        .route("/fine-tunes/{id}/checkpoints", get(fine_tunes::checkpoints))
        .route("/chat/completions", post(chat::complete))
        .route("/endpoints", post(endpoints::create).get(endpoints::list))
        .route("/endpoints/{id}", get(endpoints::retrieve).delete(endpoints::delete));
    Router::new().nest("/v1", v1)
}

/// Whether a request is the PUT of an upload's bytes to its presigned URL, which carries no
/// credential (the SDKs send none): the unguessable token in the path is the secret.
pub(super) fn is_presigned_upload(method: &Method, path: &str) -> bool {
    method == Method::PUT
        && path
            .strip_prefix(UPLOADS)
            .is_some_and(|token| token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh id in Together's form: the prefix and a random (version 4) UUID.
fn new_uuid_id(prefix: &str) -> String {
    let h = random_hex(16);
    format!("{prefix}{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// Unix seconds as ISO-8601 (`2026-12-01T17:35:45Z`), as Together writes job and event times.
fn iso(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

/// A 400 naming the parameter at fault.
fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// A 404 for an unknown object.
fn not_found(what: &str, id: &str) -> ApiError {
    let message = format!("{what} {id} not found");
    ApiError { param: None, ..ApiError::new(StatusCode::NOT_FOUND, INVALID, message) }.with_code("not_found")
}

/// The 404 for a model that cannot answer (unknown, not ready, or only through an endpoint).
fn model_not_available(model: &str, why: &str) -> ApiError {
    let message = format!("Unable to access model {model}. {why}");
    ApiError::new(StatusCode::NOT_FOUND, INVALID, message).with_code("model_not_available")
}

/// Together's error body with more top-level fields (the 409's `file_id`).
fn error_with(status: StatusCode, message: &str, code: &str, extra: Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut body = json!({"error": {"message": message, "type": INVALID, "param": null, "code": code}});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_put_to_a_token_path_is_presigned() {
        let token = "ab".repeat(32);
        assert!(is_presigned_upload(&Method::PUT, &format!("/v1/uploads/{token}")));
        assert!(!is_presigned_upload(&Method::GET, &format!("/v1/uploads/{token}")));
        assert!(!is_presigned_upload(&Method::PUT, "/v1/uploads/short"));
        assert!(!is_presigned_upload(&Method::PUT, &format!("/v1/uploads/{token}/x")));
        assert!(!is_presigned_upload(&Method::PUT, &format!("/v1/files/{token}")));
    }

    #[test]
    fn ids_and_times_look_like_togethers() {
        let id = new_uuid_id("ft-");
        assert_eq!(id.len(), 3 + 36, "{id}");
        assert_eq!(id.matches('-').count(), 5, "{id}");
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
    }
}
