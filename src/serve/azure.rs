//! `ftsweep serve --protocol azure`: Azure OpenAI's v1 data plane
//! (`/openai/v1/...`, `api-key` or bearer auth) over the same jobs and models
//! as the OpenAI routes, and Azure Resource Manager's deployments
//! (`/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{a}/deployments/{name}`):
//! a fine-tuned model answers chat completions only by the name of a
//! deployment that has finished provisioning.
//!
//! SCAFFOLDING: no route yet.

use std::sync::Arc;

use axum::Router;

use super::App;

/// The routes of the Azure protocol, from the server's root.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
}
