//! `ftsweep serve --protocol together`: Together AI's fine-tuning API over the
//! same jobs and models as the OpenAI routes: `/v1/files` with the SDKs'
//! presigned upload flow (302 to a PUT URL, then `preprocess`),
//! `/v1/fine-tunes` with its events, metrics and checkpoints, dedicated
//! `/v1/endpoints`, and chat completions.
//!
//! SCAFFOLDING: no route yet.

use std::sync::Arc;

use axum::Router;

use super::App;

/// The routes of the Together protocol, from the server's root.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
}
