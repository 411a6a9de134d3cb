//! The Azure OpenAI provider: OpenAI's job shapes on Azure's v1 data plane
//! (`{endpoint}/openai/v1`, `api-key` or Entra bearer auth), and the step
//! OpenAI does not have: a model answers only through a deployment, made
//! through Azure Resource Manager before its evaluation and deleted after it
//! (recorded in `deployments` before each request that creates or deletes
//! one, so `resume` and `cancel` clean up after a crash).
//!
//! SCAFFOLDING: the operations below are being built; every one refuses until then.

use std::collections::BTreeMap;

use super::openai::client::{Client, ClientConfig, Secret};
use super::openai::{OpenAiProvider, PollPolicy};
use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError, Scope};
use crate::data::{ChatFile, Message};
use crate::spec::{AzureAuth, AzureSettings};
use crate::store::SharedStore;

/// The provider.
pub struct AzureProvider {
    /// The data plane: files, jobs, events, checkpoints, chat.
    pub data: OpenAiProvider,
    #[allow(dead_code)]
    settings: AzureSettings,
    #[allow(dead_code)]
    store: SharedStore,
    /// The sweep and process its deployments are recorded under.
    pub scope: Scope,
}

fn unbuilt(what: &str) -> ProviderError {
    ProviderError::Engine { message: format!("the Azure provider cannot {what} yet"), retryable: false }
}

impl AzureProvider {
    /// The provider for `settings`, authenticated on the data plane with
    /// `key` (an API key or an Entra token, as `settings.data_auth` says).
    pub fn new(
        settings: &AzureSettings,
        key: Secret,
        store: SharedStore,
        poll: PollPolicy,
    ) -> Result<AzureProvider, ProviderError> {
        let (env, auth) = match &settings.data_auth {
            AzureAuth::ApiKey { env } => (env.as_str(), crate::spec::Auth::ApiKey),
            AzureAuth::Entra { env } => (env.as_str(), crate::spec::Auth::Bearer),
        };
        let cfg = ClientConfig::new(&settings.data_plane_url(), key, env, auth);
        let data = OpenAiProvider::new(Client::new(cfg)?, store.clone(), poll);
        Ok(AzureProvider { data, settings: settings.clone(), store, scope: Scope::default() })
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

    /// Deploys `model` and waits until it is provisioned.
    pub async fn open_model(&self, _model: &str) -> Result<(), ProviderError> {
        Err(unbuilt("deploy"))
    }

    /// Deletes the deployment `open_model` made.
    pub async fn close_model(&self, _model: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Deletes the sweep's deployments a previous process left (not
    /// `deleted` in `deployments`); returns how many were deleted.
    pub async fn clean_up(&self) -> Result<usize, ProviderError> {
        Ok(0)
    }

    /// The decoding settings, for the prediction cache's key.
    pub fn decoding(&self) -> String {
        format!(
            "azure {} temperature=0 max_completion_tokens={}",
            self.settings.endpoint, self.data.max_completion_tokens
        )
    }
}
