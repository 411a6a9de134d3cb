//! The Together AI provider: a sweep's runs as Together fine-tuning jobs
//! (`/files` with the SDKs' presigned upload flow, `/fine-tunes`, its events,
//! metrics and checkpoints), its models asked through Together's
//! OpenAI-compatible chat completions, serverless or on a dedicated endpoint
//! made for the evaluation and deleted after it (recorded in `deployments`
//! before it is created).
//!
//! SCAFFOLDING: the operations below are being built; every one refuses until then.

use std::collections::BTreeMap;

use super::openai::PollPolicy;
use super::openai::client::{Client, Secret};
use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError, Scope};
use crate::data::{ChatFile, Message};
use crate::spec::TogetherSettings;
use crate::store::SharedStore;

/// The provider.
pub struct TogetherProvider {
    pub client: Client,
    #[allow(dead_code)]
    store: SharedStore,
    #[allow(dead_code)]
    settings: TogetherSettings,
    #[allow(dead_code)]
    poll: PollPolicy,
    /// The sweep and process its deployments are recorded under.
    pub scope: Scope,
}

fn unbuilt(what: &str) -> ProviderError {
    ProviderError::Engine { message: format!("the Together provider cannot {what} yet"), retryable: false }
}

impl TogetherProvider {
    /// The provider for `settings` (its `base_url` already overridden by
    /// `TOGETHER_BASE_URL` if set), authenticated with `key`.
    pub fn new(
        settings: &TogetherSettings,
        key: Secret,
        store: SharedStore,
        poll: PollPolicy,
    ) -> Result<TogetherProvider, ProviderError> {
        let cfg = super::openai::client::ClientConfig::new(
            &settings.base_url,
            key,
            &settings.api_key_env,
            crate::spec::Auth::Bearer,
        );
        Ok(TogetherProvider {
            client: Client::new(cfg)?,
            store,
            settings: settings.clone(),
            poll,
            scope: Scope::default(),
        })
    }

    pub async fn upload(&self, _file: &ChatFile) -> Result<String, ProviderError> {
        Err(unbuilt("upload"))
    }

    pub async fn create_job(&self, _request: &JobRequest) -> Result<String, ProviderError> {
        Err(unbuilt("create jobs"))
    }

    pub async fn find_job(&self, _metadata: &BTreeMap<String, String>) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }

    pub async fn follow_job(
        &self,
        _job_id: &str,
        _on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        Err(unbuilt("follow jobs"))
    }

    pub async fn cancel_job(&self, _job_id: &str) -> Result<(), ProviderError> {
        Err(unbuilt("cancel jobs"))
    }

    pub async fn complete(&self, _model: &str, _messages: &[Message]) -> Result<Completion, ProviderError> {
        Err(unbuilt("answer"))
    }

    /// Makes `model` answerable (serverless, or a dedicated endpoint).
    pub async fn open_model(&self, _model: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Deletes the dedicated endpoint `open_model` made, if it made one.
    pub async fn close_model(&self, _model: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Deletes the sweep's endpoints a previous process left (not `deleted`
    /// in `deployments`); returns how many were deleted.
    pub async fn clean_up(&self) -> Result<usize, ProviderError> {
        Ok(0)
    }

    /// The decoding settings, for the prediction cache's key.
    pub fn decoding(&self) -> String {
        format!("together {} temperature=0 max_tokens=256", self.client.base_url())
    }
}
