//! How a Together model answers for its evaluation: serverless by its name,
//! or through a dedicated endpoint made for it and deleted after. An
//! endpoint is billed while it exists, so its life is in `deployments`
//! before each request that changes it: the intent before `POST /endpoints`,
//! its id once known, `ready` once started, `deleting` before the delete and
//! `deleted` only once Together no longer has it. Its `display_name` is
//! ours and deterministic (`ftsweep-` and 16 hex digits of the model's
//! SHA-256), so an endpoint whose create answer was lost is found again by
//! listing the endpoints, never created twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use sha2::{Digest, Sha256};

use super::TogetherProvider;
use crate::data::Prompt;
use crate::provider::openai::client::{ApiError, Body, Client, Kind, Retry};
use crate::provider::{Completion, ProviderError};
use crate::spec::{Decoding, TogetherInference};
use crate::store::{DeploymentState, NewDeployment};
use crate::wire::openai::ChatMessage;
use crate::wire::together::{Autoscaling, ChatRequest, ChatResponse, CreateEndpoint, Endpoint, EndpointState, List};

/// The `provider` of Together's rows in `deployments`.
const PROVIDER: &str = "together";
/// How long an endpoint may take to start before its evaluation fails.
const START_WAIT: Duration = Duration::from_secs(45 * 60);
/// How long a deleted endpoint may still be listed before the delete counts as unconfirmed.
const DELETE_WAIT: Duration = Duration::from_secs(10 * 60);
/// Together stops an endpoint this many minutes without a request: a
/// safety net should every delete fail.
const INACTIVE_TIMEOUT_MINUTES: u32 = 30;

/// A model open for evaluation.
#[derive(Debug)]
pub(super) struct Opened {
    /// What chat sends as `model`: the model itself, or the endpoint's name.
    target: String,
    endpoint: Option<Live>,
    /// Evaluations that opened it and have not closed it yet.
    users: u32,
}

/// A dedicated endpoint: its row in `deployments` and Together's id.
#[derive(Debug)]
struct Live {
    row_id: i64,
    id: String,
}

/// Our name for `model`'s endpoint.
pub fn endpoint_name(model: &str) -> String {
    let digest = Sha256::digest(model.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("ftsweep-{hex}")
}

type Slot = Arc<tokio::sync::Mutex<Option<Opened>>>;

fn slot(p: &TogetherProvider, model: &str) -> Slot {
    p.open.lock().unwrap_or_else(|e| e.into_inner()).entry(model.to_string()).or_default().clone()
}

fn existing_slot(p: &TogetherProvider, model: &str) -> Option<Slot> {
    p.open.lock().unwrap_or_else(|e| e.into_inner()).get(model).cloned()
}

pub(super) async fn open_model(p: &TogetherProvider, model: &str) -> Result<(), ProviderError> {
    let slot = slot(p, model);
    let mut open = slot.lock().await;
    if let Some(o) = open.as_mut() {
        o.users += 1;
        return Ok(());
    }
    let serverless = || Opened { target: model.to_string(), endpoint: None, users: 1 };
    let opened = match p.settings.inference {
        TogetherInference::Serverless => serverless(),
        TogetherInference::Dedicated => dedicated(p, model).await?,
        TogetherInference::Auto => match probe(p, model).await? {
            true => serverless(),
            false => {
                tracing::info!(model, "the model is not served serverless: making a dedicated endpoint for it");
                dedicated(p, model).await?
            }
        },
    };
    *open = Some(opened);
    Ok(())
}

pub(super) async fn close_model(p: &TogetherProvider, model: &str) -> Result<(), ProviderError> {
    let Some(slot) = existing_slot(p, model) else { return Ok(()) };
    // Held through the delete: an evaluation opening the model again waits for it.
    let mut open = slot.lock().await;
    let Some(o) = open.as_mut() else { return Ok(()) };
    o.users = o.users.saturating_sub(1);
    if o.users > 0 {
        return Ok(());
    }
    let Some(Opened { endpoint, .. }) = open.take() else { return Ok(()) };
    match endpoint {
        Some(live) => delete_row(p, live.row_id, Some(&live.id), &endpoint_name(model)).await,
        None => Ok(()),
    }
}

/// Asks for one reply under the decoding settings, with the line's tools. A fresh model (or
/// endpoint) may answer 404 for a while: that is retried, as the OpenAI provider does.
pub(super) async fn complete(
    p: &TogetherProvider,
    model: &str,
    prompt: &Prompt,
    decoding: &Decoding,
) -> Result<Completion, ProviderError> {
    let target = match existing_slot(p, model) {
        Some(slot) => slot.lock().await.as_ref().map(|o| o.target.clone()),
        None => None,
    };
    let request = ChatRequest {
        model: target.unwrap_or_else(|| model.to_string()),
        messages: prompt.messages.iter().map(ChatMessage::from_message).collect(),
        max_tokens: Some(decoding.max_tokens),
        temperature: Some(decoding.temperature),
        top_p: decoding.top_p,
        seed: decoding.seed,
        // Left out: Together documents `logprobs` as a count, OpenAI's shape as a
        // boolean; a reply's probability is read when the answer carries one.
        logprobs: None,
        tools: prompt.tools.clone(),
        // Only with tools, as OpenAI's shape asks.
        tool_choice: prompt.tools.as_ref().and(prompt.tool_choice.clone()),
        parallel_tool_calls: prompt.tools.as_ref().and(prompt.parallel_tool_calls),
    };
    let started = Instant::now();
    let mut wait = Duration::from_secs(2);
    loop {
        match chat(p, &request).await {
            Ok(r) => {
                let choice =
                    r.choices.into_iter().next().ok_or_else(|| {
                        ProviderError::Api(ApiError::Decode("a chat completion without choices".into()))
                    })?;
                return Ok(Completion {
                    content: choice.content(),
                    tool_calls: choice.tool_calls(),
                    probability: choice.probability(),
                });
            }
            Err(e) if e.status() == Some(404) && started.elapsed() + wait < p.poll.model_load_wait => {
                tracing::info!(model, "the model is not available yet; waiting for it to load");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn chat(p: &TogetherProvider, request: &ChatRequest) -> Result<ChatResponse, ApiError> {
    let body = Client::body(request);
    p.client.json(Method::POST, &["chat", "completions"], &[], body, Kind::Completion, Retry::Always).await
}

/// Whether `model` answers serverless: one tiny chat. An answer that says
/// the model is not available (404 or 400, `model_not_available`) is `false`;
/// another 404 is a model still loading, asked again for a while.
async fn probe(p: &TogetherProvider, model: &str) -> Result<bool, ProviderError> {
    let request = ChatRequest {
        model: model.to_string(),
        messages: vec![ChatMessage { role: "user".into(), content: Some("Hi".into()), ..ChatMessage::default() }],
        max_tokens: Some(1),
        temperature: Some(0.0),
        ..ChatRequest::default()
    };
    let started = Instant::now();
    let mut wait = Duration::from_secs(2);
    loop {
        match chat(p, &request).await {
            Ok(_) => return Ok(true),
            Err(e) if not_served(&e) => return Ok(false),
            Err(e) if e.status() == Some(404) && started.elapsed() + wait < p.poll.model_load_wait => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) if e.status() == Some(404) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether an error says the model is not served serverless (it needs a dedicated endpoint).
fn not_served(e: &ApiError) -> bool {
    let ApiError::Http { status: 400 | 404, code, message, .. } = e else { return false };
    let message = message.to_ascii_lowercase();
    code.as_deref() == Some("model_not_available")
        || ["unable to access model", "non-serverless", "dedicated endpoint"].iter().any(|m| message.contains(m))
}

/// Makes (or finds again) the model's dedicated endpoint and waits until it has started.
async fn dedicated(p: &TogetherProvider, model: &str) -> Result<Opened, ProviderError> {
    let (sweep_id, owner) = p.scope.get()?;
    let name = endpoint_name(model);
    let server = p.server().to_string();
    let prior = p.store.lock().deployment(PROVIDER, &server, &name)?;
    let new = NewDeployment { sweep_id, provider: PROVIDER, server: &server, name: &name, model, run_id: None, owner };
    let row = p.store.lock().intend_deployment(&new)?;
    // A row that was live already: its create may have reached Together.
    let mut endpoint = None;
    if prior.is_some_and(|r| r.state != DeploymentState::Deleted) {
        endpoint = match &row.remote_id {
            Some(id) => get_endpoint(p, id).await?,
            None => find_endpoints(p, &name).await?.into_iter().next(),
        };
        if let Some(e) = endpoint
            .take_if(|e| matches!(EndpointState::parse(&e.state), EndpointState::Stopped | EndpointState::Error))
        {
            // A stopped or failed one is deleted and made anew.
            delete_remote(p, &e.id).await?;
        }
    }
    let endpoint = match endpoint {
        Some(e) => e,
        None => match create_endpoint(p, model, &name).await {
            Ok(e) => e,
            Err(e) => {
                let mut store = p.store.lock();
                store.deployment_error(row.id, &e.to_string())?;
                if !e.may_have_taken_effect() {
                    // Refused: nothing exists at Together.
                    store.deployment_deleted(row.id)?;
                }
                return Err(e.into());
            }
        },
    };
    p.store.lock().set_deployment_remote_id(row.id, &endpoint.id)?;
    match until_started(p, model, endpoint).await {
        Ok(e) => {
            p.store.lock().deployment_ready(row.id)?;
            let target = if e.name.is_empty() { e.id.clone() } else { e.name.clone() };
            Ok(Opened { target, endpoint: Some(Live { row_id: row.id, id: e.id }), users: 1 })
        }
        Err((id, err)) => {
            p.store.lock().deployment_failed(row.id, &err.to_string())?;
            // Billed while it exists: deleted now, or by the next clean-up.
            if let Err(d) = delete_row(p, row.id, Some(&id), &name).await {
                tracing::warn!(endpoint = %id, "the endpoint that did not start could not be deleted: {d}");
            }
            Err(err)
        }
    }
}

/// `POST /endpoints`, sent at most once unless the endpoint is known not to
/// exist: a lost answer is looked up by the display name first.
async fn create_endpoint(p: &TogetherProvider, model: &str, name: &str) -> Result<Endpoint, ApiError> {
    let body = CreateEndpoint {
        model: model.to_string(),
        hardware: p.settings.endpoint_hardware.clone(),
        autoscaling: Autoscaling { min_replicas: 1, max_replicas: 1 },
        display_name: Some(name.to_string()),
        state: Some("STARTED".into()),
        inactive_timeout: Some(INACTIVE_TIMEOUT_MINUTES),
    };
    let mut last = None;
    for _ in 0..3 {
        let sent = p
            .client
            .json::<Endpoint>(
                Method::POST,
                &["endpoints"],
                &[],
                Client::body(&body),
                Kind::Create,
                Retry::OnlyIfNotSent,
            )
            .await;
        match sent {
            Ok(e) => return Ok(e),
            Err(e) if e.may_have_taken_effect() => {
                tracing::warn!(error = %e, "an endpoint create's answer was lost: looking for it by its name");
                if let Some(found) = find_endpoints(p, name).await?.into_iter().next() {
                    return Ok(found);
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::Decode("the endpoint could not be created".into())))
}

/// Polls the endpoint until it has started; an error gives its id and why.
async fn until_started(
    p: &TogetherProvider,
    model: &str,
    mut e: Endpoint,
) -> Result<Endpoint, (String, ProviderError)> {
    let started = Instant::now();
    let mut interval = p.poll.min;
    let fail = |e: &Endpoint, what: String| {
        let message = format!("the dedicated endpoint `{}` for `{model}` {what}", e.id);
        (e.id.clone(), ProviderError::Engine { message, retryable: true })
    };
    loop {
        match EndpointState::parse(&e.state) {
            EndpointState::Started => return Ok(e),
            EndpointState::Error => return Err(fail(&e, format!("failed to start (state `{}`)", e.state))),
            EndpointState::Stopped => return Err(fail(&e, format!("stopped before it started (state `{}`)", e.state))),
            EndpointState::Starting if started.elapsed() > START_WAIT => {
                return Err(fail(&e, format!("had not started after {} minutes", START_WAIT.as_secs() / 60)));
            }
            EndpointState::Starting => {}
        }
        tokio::time::sleep(interval).await;
        interval = interval.mul_f64(1.5).min(p.poll.max);
        let id = e.id.clone();
        e = match get_endpoint(p, &id).await {
            Ok(Some(next)) => next,
            Ok(None) => return Err(fail(&e, "disappeared while it started".into())),
            Err(err) => return Err((id, err.into())),
        };
    }
}

/// `GET /endpoints/{id}`; `None` when Together no longer has it.
async fn get_endpoint(p: &TogetherProvider, id: &str) -> Result<Option<Endpoint>, ApiError> {
    match p.client.json(Method::GET, &["endpoints", id], &[], Body::None, Kind::Poll, Retry::Always).await {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Our dedicated endpoints whose display name is `name`.
async fn find_endpoints(p: &TogetherProvider, name: &str) -> Result<Vec<Endpoint>, ApiError> {
    let q = [("type".to_string(), "dedicated".to_string()), ("mine".to_string(), "true".to_string())];
    let list: List<Endpoint> =
        p.client.json(Method::GET, &["endpoints"], &q, Body::None, Kind::List, Retry::Always).await?;
    Ok(list.data.into_iter().filter(|e| e.display_name.as_deref() == Some(name)).collect())
}

/// Deletes a row's endpoint (by its id, else every one of its name) and
/// records it deleted once Together confirms; a failure stays on the row.
async fn delete_row(
    p: &TogetherProvider,
    row_id: i64,
    remote_id: Option<&str>,
    name: &str,
) -> Result<(), ProviderError> {
    p.store.lock().deployment_deleting(row_id)?;
    let deleted = async {
        let ids = match remote_id {
            Some(id) => vec![id.to_string()],
            None => find_endpoints(p, name).await?.into_iter().map(|e| e.id).collect(),
        };
        for id in ids {
            delete_remote(p, &id).await?;
        }
        Ok::<(), ProviderError>(())
    }
    .await;
    match deleted {
        Ok(()) => Ok(p.store.lock().deployment_deleted(row_id)?),
        Err(e) => {
            p.store.lock().deployment_error(row_id, &e.to_string())?;
            Err(e)
        }
    }
}

/// `DELETE /endpoints/{id}`, confirmed by a `GET` that no longer finds it.
async fn delete_remote(p: &TogetherProvider, id: &str) -> Result<(), ProviderError> {
    match p.client.send(Method::DELETE, &["endpoints", id], &[], &Body::None, Kind::Other, Retry::Always).await {
        Ok(_) => {}
        Err(e) if e.status() == Some(404) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let started = Instant::now();
    let mut interval = p.poll.min;
    loop {
        let Some(e) = get_endpoint(p, id).await? else { return Ok(()) };
        if started.elapsed() > DELETE_WAIT {
            return Err(ProviderError::Engine {
                message: format!(
                    "the dedicated endpoint `{id}` was still there (state `{}`) {} minutes after its delete",
                    e.state,
                    DELETE_WAIT.as_secs() / 60
                ),
                retryable: true,
            });
        }
        tokio::time::sleep(interval).await;
        interval = interval.mul_f64(1.5).min(p.poll.max);
    }
}

/// Deletes the endpoints of the bound sweep that another process left and
/// that process no longer runs; returns how many rows were deleted.
pub(super) async fn clean_up(p: &TogetherProvider) -> Result<usize, ProviderError> {
    let (sweep_id, owner) = p.scope.get()?;
    let rows = p.store.lock().live_deployments(sweep_id)?;
    let (mut deleted, mut failed) = (0, Vec::new());
    for r in rows.iter().filter(|r| r.provider == PROVIDER && r.owner != owner && !(p.owner_alive)(&r.owner)) {
        if r.server != p.server() {
            failed.push(format!("`{}` is at {}, not at {}", r.name, r.server, p.server()));
            continue;
        }
        match delete_row(p, r.id, r.remote_id.as_deref(), &r.name).await {
            Ok(()) => deleted += 1,
            Err(e) => failed.push(format!("`{}` ({}): {e}", r.name, r.model)),
        }
    }
    match failed.is_empty() {
        true => Ok(deleted),
        false => Err(ProviderError::Engine {
            message: format!(
                "{deleted} endpoint(s) deleted, {} could not be (they stay recorded): {}",
                failed.len(),
                failed.join("; ")
            ),
            retryable: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_name_is_deterministic_and_short() {
        let a = endpoint_name("acct/Meta-Llama-3.1-8B-Instruct-Reference-r-0a-1-deadbeef");
        assert_eq!(a, endpoint_name("acct/Meta-Llama-3.1-8B-Instruct-Reference-r-0a-1-deadbeef"));
        assert_ne!(a, endpoint_name("ft-1:10"));
        assert!(a.starts_with("ftsweep-") && a.len() == 24, "{a}");
    }

    #[test]
    fn only_a_not_available_answer_means_dedicated() {
        let http = |status, code: Option<&str>, message: &str| ApiError::Http {
            status,
            code: code.map(str::to_string),
            message: message.into(),
            request_id: None,
            key_env: "K".into(),
            retry_after: None,
        };
        assert!(not_served(&http(404, Some("model_not_available"), "Unable to access model ft-1:3")));
        assert!(not_served(&http(400, None, "Unable to access non-serverless model x")));
        assert!(!not_served(&http(404, None, "not found")));
        assert!(!not_served(&http(401, Some("model_not_available"), "")));
        assert!(!not_served(&http(500, None, "unable to access model")));
    }
}
