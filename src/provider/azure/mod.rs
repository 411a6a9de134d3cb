//! The Azure OpenAI provider: OpenAI's job shapes on Azure's v1 data plane
//! (`{endpoint}/openai/v1`, `api-key` or Entra bearer auth), and the step
//! OpenAI does not have: a model answers only through a deployment, made
//! through Azure Resource Manager before its evaluation and deleted after it
//! (recorded in `deployments` before each request that creates or deletes
//! one, so `resume` and `cancel` clean up after a crash).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::openai::client::{ApiError, Body, Client, ClientConfig, Kind, Retry, Secret};
use super::openai::{OpenAiProvider, PollPolicy};
use super::{Completion, JobEvent, JobOutcome, JobRequest, ProviderError, Scope};
use crate::data::{ChatFile, Prompt};
use crate::spec::{Auth, AzureAuth, AzureSettings, Decoding};
use crate::store::SharedStore;
use crate::store::{DeploymentRow, NewDeployment};

/// The `provider` of our rows in `deployments`.
const PROVIDER: &str = "azure";

/// The longest Azure's suffix may be.
const SUFFIX_MAX: usize = 40;

/// How long a deployment may take to provision, and a delete to be confirmed.
const PROVISION_WAIT: Duration = Duration::from_secs(60 * 60);
const DELETE_WAIT: Duration = Duration::from_secs(15 * 60);
/// How long a deployment just PUT may be unknown to a GET (ARM's reads lag).
const READ_LAG: Duration = Duration::from_secs(60);

/// The provider.
pub struct AzureProvider {
    /// The data plane: files, jobs, events, checkpoints, chat.
    pub data: Box<OpenAiProvider>,
    /// Azure Resource Manager: the account's deployments.
    pub arm: Box<Client>,
    settings: AzureSettings,
    /// The sweep's base model: its deployment is the baseline's.
    base_model: String,
    store: SharedStore,
    poll: PollPolicy,
    /// The sweep and process its deployments are recorded under.
    pub scope: Scope,
    /// How many evaluations use each deployment of this process (by name):
    /// the last to close it deletes it.
    users: Mutex<HashMap<String, Arc<tokio::sync::Mutex<usize>>>>,
    /// Whether the process behind a row's owner may still run (its rows are not cleaned up).
    owner_alive: fn(&str) -> bool,
}

/// A deployment as ARM describes it.
#[derive(Debug, Deserialize)]
struct ArmDeployment {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    properties: Option<ArmProperties>,
}

#[derive(Debug, Deserialize)]
struct ArmProperties {
    #[serde(default, rename = "provisioningState")]
    provisioning_state: Option<String>,
}

impl ArmDeployment {
    fn state(&self) -> String {
        self.properties.as_ref().and_then(|p| p.provisioning_state.clone()).unwrap_or_default()
    }
}

/// Our deployment name of a model: `ftsweep-` and 16 hex digits of its
/// SHA-256 (deterministic, so a PUT whose answer was lost is harmless).
pub fn deployment_name(model: &str) -> String {
    let digest = Sha256::digest(model.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("ftsweep-{hex}")
}

/// A dated model id's name and version: `gpt-4.1-mini-2025-04-14` →
/// (`gpt-4.1-mini`, `2025-04-14`); an id without a date is its own name, version `1`.
pub fn split_dated(model: &str) -> (String, String) {
    let b = model.as_bytes();
    if b.len() > 11 {
        let (head, date) = model.split_at(model.len() - 10);
        let d = date.as_bytes();
        let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| d[i].is_ascii_digit());
        if head.ends_with('-') && digits(0..4) && d[4] == b'-' && digits(5..7) && d[7] == b'-' && digits(8..10) {
            return (head.trim_end_matches('-').to_string(), date.to_string());
        }
    }
    (model.to_string(), "1".to_string())
}

/// A job's suffix on Azure: `{run_id}-{attempt}`, at most 40 characters of
/// `[A-Za-z0-9_-]` (the run id is shortened, never the attempt).
pub fn job_suffix(run_id: &str, attempt: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect()
    };
    let attempt: String = clean(attempt).chars().take(SUFFIX_MAX / 2).collect();
    let run: String = clean(run_id).chars().take(SUFFIX_MAX - attempt.len() - 1).collect();
    format!("{run}-{attempt}")
}

/// The suffix of the attempt the metadata tags name.
fn suffix_of(metadata: &BTreeMap<String, String>) -> Option<String> {
    Some(job_suffix(metadata.get("ftsweep_run")?, metadata.get("ftsweep_attempt")?))
}

impl AzureProvider {
    /// The provider for `settings`, authenticated on the data plane with
    /// `key` (an API key or an Entra token, as `settings.data_auth` says) and
    /// at Azure Resource Manager with `arm_token` (from `arm_token_from`,
    /// named in errors). `owner_alive` tells whether a row's owner may still
    /// run (`sweep::owner_alive`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &AzureSettings,
        base_model: &str,
        key: Secret,
        arm_token: Secret,
        arm_token_from: &str,
        store: SharedStore,
        poll: PollPolicy,
        owner_alive: fn(&str) -> bool,
    ) -> Result<AzureProvider, ProviderError> {
        let (env, auth) = match &settings.data_auth {
            AzureAuth::ApiKey { env } => (env.as_str(), Auth::ApiKey),
            AzureAuth::Entra { env } => (env.as_str(), Auth::Bearer),
        };
        let cfg = ClientConfig::new(&settings.data_plane_url(), key, env, auth);
        let mut data = OpenAiProvider::new(Client::new(cfg)?, store.clone(), poll);
        data.wait_until_processed = true;
        data.find_by_suffix = true;
        let arm = Client::new(ClientConfig::new(&settings.management_url, arm_token, arm_token_from, Auth::Bearer))?;
        Ok(AzureProvider {
            data: Box::new(data),
            arm: Box::new(arm),
            settings: settings.clone(),
            base_model: base_model.to_string(),
            store,
            poll,
            scope: Scope::default(),
            users: Mutex::default(),
            owner_alive,
        })
    }

    pub async fn upload(&self, file: &ChatFile) -> Result<String, ProviderError> {
        self.data.upload(file).await
    }

    /// Creates a job with Azure's suffix, `{run_id}-{attempt}`.
    pub async fn create_job(&self, request: &JobRequest) -> Result<String, ProviderError> {
        let suffix = suffix_of(&request.metadata)
            .unwrap_or_else(|| job_suffix(&request.suffix, "1").chars().take(SUFFIX_MAX).collect());
        self.data.create_job(&JobRequest { suffix, ..request.clone() }).await
    }

    /// The job carrying the metadata tags, else the one echoing their suffix.
    pub async fn find_job(&self, metadata: &BTreeMap<String, String>) -> Result<Option<String>, ProviderError> {
        let suffix = suffix_of(metadata);
        Ok(self.data.find_job_by(metadata, suffix.as_deref()).await?.map(|j| j.id))
    }

    pub async fn follow_job(
        &self,
        job_id: &str,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<JobOutcome, ProviderError> {
        self.data.follow_job(job_id, on_event).await
    }

    pub async fn cancel_job(&self, job_id: &str) -> Result<(), ProviderError> {
        self.data.cancel_job(job_id).await
    }

    /// Asks `model` through its deployment (`model` on the wire is the
    /// deployment's name). A fresh deployment's 404 `DeploymentNotFound` is
    /// waited out for a few minutes by the data plane's client.
    pub async fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> Result<Completion, ProviderError> {
        let name = self.existing_baseline(model).map_or_else(|| deployment_name(model), str::to_string);
        self.data.complete(&name, prompt, decoding).await
    }

    /// The deployment the sweep file names for the baseline, when `model` is the base model.
    fn existing_baseline(&self, model: &str) -> Option<&str> {
        (model == self.base_model).then_some(self.settings.baseline_deployment.as_deref()).flatten()
    }

    /// The counter of evaluations using the deployment `name`.
    fn slot(&self, name: &str) -> Arc<tokio::sync::Mutex<usize>> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.entry(name.to_string()).or_default().clone()
    }

    /// The URL segments of a deployment (or of the list, with `None`).
    fn arm_path(&self, name: Option<&str>) -> Vec<String> {
        let s = &self.settings;
        let mut p: Vec<String> = [
            "subscriptions",
            &s.subscription,
            "resourceGroups",
            &s.resource_group,
            "providers",
            "Microsoft.CognitiveServices",
            "accounts",
            &s.account,
            "deployments",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        p.extend(name.map(str::to_string));
        p
    }

    fn api_version(&self) -> Vec<(String, String)> {
        vec![("api-version".to_string(), self.settings.arm_api_version.clone())]
    }

    /// Sends an ARM request; an accepted non-2xx status comes back as an answer.
    async fn arm_send(
        &self,
        method: Method,
        name: &str,
        body: Body,
        kind: Kind,
        accept: fn(StatusCode) -> bool,
    ) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        let path = self.arm_path(Some(name));
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let answer = self
            .arm
            .exchange(method, &path, &self.api_version(), &body, kind, Retry::Always, accept)
            .await
            .map_err(arm_error)?;
        Ok((answer.status, answer.bytes))
    }

    /// The deployment `name` at ARM, `None` when it does not exist.
    async fn arm_get(&self, name: &str) -> Result<Option<ArmDeployment>, ProviderError> {
        let (status, bytes) = self.arm_send(Method::GET, name, Body::None, Kind::Poll, |s| s == 404).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ProviderError::Api(ApiError::Decode(format!("{e} in Azure Resource Manager's deployment"))))
    }

    /// Deploys `model` and waits until it is provisioned: the intent is
    /// recorded first, then the PUT (idempotent by name) goes out.
    pub async fn open_model(&self, model: &str) -> Result<(), ProviderError> {
        if self.existing_baseline(model).is_some() {
            return Ok(());
        }
        let name = deployment_name(model);
        let slot = self.slot(&name);
        let mut users = slot.lock().await;
        if *users > 0 {
            *users += 1;
            return Ok(());
        }
        let (sweep_id, owner) = self.scope.get()?;
        let server = self.settings.account_id();
        let row = self.store.lock().intend_deployment(&NewDeployment {
            sweep_id,
            provider: PROVIDER,
            server: &server,
            name: &name,
            model,
            run_id: None,
            owner,
        })?;
        match self.deploy(&row, model).await {
            Ok(()) => {
                self.store.lock().deployment_ready(row.id)?;
                *users = 1;
                tracing::info!(model, deployment = %name, "deployed");
                Ok(())
            }
            Err(e) => {
                self.store.lock().deployment_failed(row.id, &e.to_string())?;
                if let Err(d) = self.delete(&row).await {
                    tracing::warn!(deployment = %name, "{d}");
                }
                Err(e)
            }
        }
    }

    /// The PUT and the wait until ARM says `Succeeded`.
    async fn deploy(&self, row: &DeploymentRow, model: &str) -> Result<(), ProviderError> {
        let s = &self.settings;
        let (model_name, version, sku) = if model == self.base_model {
            let (n, v) = split_dated(model);
            (n, v, s.baseline_sku.clone())
        } else {
            (model.to_string(), "1".to_string(), s.deployment_sku.clone())
        };
        let body = serde_json::json!({
            "sku": {"name": sku, "capacity": s.deployment_capacity},
            "properties": {"model": {"format": "OpenAI", "name": model_name, "version": version}},
        });
        let (_, bytes) = self.arm_send(Method::PUT, &row.name, Body::Json(body), Kind::Create, |_| false).await?;
        let put: Option<ArmDeployment> = serde_json::from_slice(&bytes).ok();
        if let Some(id) = put.as_ref().and_then(|d| d.id.clone()) {
            self.store.lock().set_deployment_remote_id(row.id, &id)?;
        }
        let started = Instant::now();
        let mut interval = self.poll.min;
        let mut state = put.map(|d| d.state()).unwrap_or_default();
        loop {
            match state.to_ascii_lowercase().as_str() {
                "succeeded" => return Ok(()),
                s @ ("failed" | "canceled" | "cancelled" | "disabled") => {
                    return Err(ProviderError::Engine {
                        message: format!(
                            "Azure could not deploy `{model}` as `{}` (provisioningState {s}); check the model and the \
                             SKU `{sku}` ([azure] deployment_sku) in the Azure portal",
                            row.name
                        ),
                        retryable: false,
                    });
                }
                _ => {}
            }
            if started.elapsed() > PROVISION_WAIT {
                return Err(ProviderError::Engine {
                    message: format!(
                        "the deployment `{}` of `{model}` was not provisioned within {} minutes",
                        row.name,
                        PROVISION_WAIT.as_secs() / 60
                    ),
                    retryable: true,
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval.mul_f64(1.5)).min(self.poll.max);
            state = match self.arm_get(&row.name).await? {
                Some(d) => d.state(),
                None if started.elapsed() < READ_LAG => String::new(),
                None => {
                    return Err(ProviderError::Engine {
                        message: format!("the deployment `{}` of `{model}` disappeared while provisioning", row.name),
                        retryable: true,
                    });
                }
            };
        }
    }

    /// Deletes the deployment `open_model` made, once its last evaluation closes it.
    pub async fn close_model(&self, model: &str) -> Result<(), ProviderError> {
        if self.existing_baseline(model).is_some() {
            return Ok(());
        }
        let name = deployment_name(model);
        let slot = self.slot(&name);
        let mut users = slot.lock().await;
        match *users {
            0 => return Ok(()), // never opened (its deploy failed and was cleaned up)
            1 => {}
            _ => {
                *users -= 1;
                return Ok(());
            }
        }
        *users = 0;
        let row = self.store.lock().deployment(PROVIDER, &self.settings.account_id(), &name)?;
        match row {
            Some(row) => self.delete(&row).await,
            None => Ok(()),
        }
    }

    /// Marks the row `deleting`, DELETEs, confirms the deployment is gone (GET
    /// 404), marks it `deleted`. A failure leaves the row live with the error.
    async fn delete(&self, row: &DeploymentRow) -> Result<(), ProviderError> {
        self.store.lock().deployment_deleting(row.id)?;
        match self.delete_confirmed(&row.name).await {
            Ok(()) => {
                self.store.lock().deployment_deleted(row.id)?;
                tracing::info!(deployment = %row.name, "deployment deleted");
                Ok(())
            }
            Err(e) => {
                let message = format!("cannot delete the Azure deployment `{}` of `{}`: {e}", row.name, row.model);
                self.store.lock().deployment_error(row.id, &message)?;
                Err(ProviderError::Engine {
                    message: format!(
                        "{message}\n  hint: `ftsweep resume` or `ftsweep cancel` tries again; it is billed while it \
                         exists (delete it in the Azure portal otherwise)"
                    ),
                    retryable: true,
                })
            }
        }
    }

    async fn delete_confirmed(&self, name: &str) -> Result<(), ProviderError> {
        let (status, _) = self.arm_send(Method::DELETE, name, Body::None, Kind::Other, |s| s == 404).await?;
        if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_FOUND) {
            return Ok(());
        }
        let started = Instant::now();
        let mut interval = self.poll.min;
        loop {
            if self.arm_get(name).await?.is_none() {
                return Ok(());
            }
            if started.elapsed() > DELETE_WAIT {
                return Err(ProviderError::Engine {
                    message: format!("still there {} minutes after its delete", DELETE_WAIT.as_secs() / 60),
                    retryable: true,
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval.mul_f64(1.5)).min(self.poll.max);
        }
    }

    /// Deletes the sweep's deployments a previous process left (not
    /// `deleted` in `deployments`, owned by no live process); returns how
    /// many were deleted.
    pub async fn clean_up(&self) -> Result<usize, ProviderError> {
        let (sweep_id, owner) = self.scope.get()?;
        let rows = self.store.lock().live_deployments(sweep_id)?;
        let left: Vec<DeploymentRow> = rows
            .into_iter()
            .filter(|r| r.provider == PROVIDER && r.owner != owner && !(self.owner_alive)(&r.owner))
            .collect();
        let mut deleted = 0;
        let mut failures = Vec::new();
        for row in &left {
            match self.delete(row).await {
                Ok(()) => deleted += 1,
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(deleted)
        } else {
            Err(ProviderError::Engine {
                message: format!(
                    "{deleted} deployment(s) deleted, {} could not be: {}",
                    failures.len(),
                    failures.join("; ")
                ),
                retryable: true,
            })
        }
    }

    /// The decoding settings, for the prediction cache's key.
    pub fn decoding(&self, decoding: &Decoding) -> String {
        format!("azure {} {}", self.settings.endpoint, decoding.key("max_completion_tokens"))
    }
}

/// An ARM failure, with what to do about a refused token.
fn arm_error(e: ApiError) -> ProviderError {
    match e.status() {
        Some(401 | 403) => ProviderError::Engine {
            message: format!(
                "Azure Resource Manager refused the request: {e}\n  hint: the token must be for https://management.azure.com \
                 (`az account get-access-token --resource https://management.azure.com`), unexpired, and its identity \
                 needs a role that may write deployments on the account (Cognitive Services Contributor)"
            ),
            retryable: false,
        },
        _ => ProviderError::Api(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dated_id_splits_into_name_and_version() {
        assert_eq!(split_dated("gpt-4.1-mini-2025-04-14"), ("gpt-4.1-mini".into(), "2025-04-14".into()));
        assert_eq!(split_dated("gpt-4o-mini-2024-07-18"), ("gpt-4o-mini".into(), "2024-07-18".into()));
        assert_eq!(split_dated("gpt-4.1"), ("gpt-4.1".into(), "1".into()));
        assert_eq!(split_dated("x-2025-4-14"), ("x-2025-4-14".into(), "1".into()));
    }

    #[test]
    fn a_suffix_is_short_and_of_azure_characters() {
        assert_eq!(job_suffix("r-0123abcd", "2"), "r-0123abcd-2");
        let long = job_suffix(&format!("r-{}", "f".repeat(60)), "12");
        assert_eq!(long.len(), 40);
        assert!(long.ends_with("-12"), "{long}");
        assert_eq!(job_suffix("r.a/b", "1"), "r-a-b-1");
    }

    #[test]
    fn a_deployment_name_is_deterministic() {
        let a = deployment_name("gpt-4.1-mini-2025-04-14.ft-abc");
        assert_eq!(a, deployment_name("gpt-4.1-mini-2025-04-14.ft-abc"));
        assert_eq!(a.len(), "ftsweep-".len() + 16);
        assert_ne!(a, deployment_name("gpt-4.1-mini-2025-04-14.ft-abd"));
    }
}
