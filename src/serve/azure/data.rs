//! The data plane: `/openai/v1/...` (`api-version` absent, `v1` or `preview`) and the dated
//! surface (`/openai/...?api-version=YYYY-MM-DD[-preview]`) the `AzureOpenAI` SDK client uses.
//! Files, jobs and chat completions are the OpenAI handlers' (`files`, `jobs`, `chat`), wrapped:
//! an upload is `uploaded` until the server has processed it (`--file-delay-ms`) and no job may
//! use it before; jobs take the Azure base models and names; checkpoints are `ftchkpt-…`; a chat
//! names a deployment, and its answer carries Azure's content-filter results.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::super::errors::{ApiError, parse_body};
use super::super::{App, MAX_UPLOAD_BYTES, Params, chat, files, jobs, page};
use super::names::{self, Found, azure_name, checkpoint_id, checkpoint_name, model_name};
use super::{azure_error, now_ms};
use crate::provider::local::BASE_MODEL;
use crate::store::serve::azure::AzureDeployment;
use crate::wire::openai::{CreateJob, FileObject, Job, JobStatus, List};

/// The data plane's routes: the v1 surface and the dated one.
pub fn routes() -> Router<Arc<App>> {
    let v1 = surface("/openai/v1").route_layer(from_fn(v1_version));
    let dated = surface("/openai")
        .route("/openai/deployments/{deployment}/chat/completions", post(chat_deployment))
        .route_layer(from_fn(dated_version));
    v1.merge(dated)
}

/// Files, jobs and chat completions under `prefix`.
fn surface(prefix: &str) -> Router<Arc<App>> {
    let jobs = format!("{prefix}/fine_tuning/jobs");
    Router::new()
        .route(&format!("{prefix}/files"), post(upload).get(list_files).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)))
        .route(&format!("{prefix}/files/{{id}}"), get(retrieve_file).delete(files::delete))
        .route(&format!("{prefix}/files/{{id}}/content"), get(files::content))
        .route(&jobs, post(create_job).get(list_jobs))
        .route(&format!("{jobs}/{{id}}"), get(retrieve_job))
        .route(&format!("{jobs}/{{id}}/cancel"), post(cancel_job))
        .route(&format!("{jobs}/{{id}}/events"), get(events))
        .route(&format!("{jobs}/{{id}}/checkpoints"), get(checkpoints))
        .route(&format!("{prefix}/chat/completions"), post(chat_v1))
}

fn api_version(request: &Request) -> Result<Option<String>, ApiError> {
    Ok(Params::from_uri(request.uri())?.get("api-version").map(str::to_string))
}

/// The v1 surface takes no `api-version`, or `v1`, or `preview` (`latest`, an early name of v1,
/// too).
async fn v1_version(request: Request, next: Next) -> Response {
    match api_version(&request) {
        Err(e) => e.into_response(),
        Ok(None) => next.run(request).await,
        Ok(Some(v)) if matches!(v.as_str(), "v1" | "preview" | "latest") => next.run(request).await,
        Ok(Some(v)) => azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "API version not supported: '{v}' on the v1 API (/openai/v1). Leave api-version out, or use 'v1' or \
                 'preview'; dated versions belong to the /openai/... paths without v1"
            ),
        ),
    }
}

/// The dated surface needs an `api-version` (`2024-10-21`, `2025-04-01-preview`): without one
/// Azure answers 404.
async fn dated_version(request: Request, next: Next) -> Response {
    match api_version(&request) {
        Err(e) => e.into_response(),
        Ok(None) => azure_error(StatusCode::NOT_FOUND, "404", "Resource not found"),
        Ok(Some(v)) if is_dated_version(&v) => next.run(request).await,
        Ok(Some(v)) => azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "API version not supported: '{v}'. The /openai/... paths take a dated version (e.g. 2024-10-21 or \
                 2025-04-01-preview); use /openai/v1/... for 'v1' or 'preview'"
            ),
        ),
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DD-preview`.
fn is_dated_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

/// A file as Azure shows it: `uploaded` until processed (then `processed`), and `expires_at`
/// (null: uploads here do not expire).
fn present_file(app: &App, file: FileObject) -> Result<Value, ApiError> {
    let processed_at = app.store.lock().azure_file_processed_at(&file.id)?;
    let status = match processed_at {
        Some(at) if now_ms() < at => "uploaded".to_string(),
        _ => file.status.clone().unwrap_or_else(|| "processed".into()),
    };
    let expires_at = file.expires_at;
    let mut v = to_value(&file)?;
    v["status"] = json!(status);
    v["expires_at"] = json!(expires_at);
    Ok(v)
}

fn to_value<T: serde::Serialize>(x: &T) -> Result<Value, ApiError> {
    serde_json::to_value(x).map_err(|e| ApiError::internal(&e))
}

/// A list answer with other items.
fn list_of<T>(list: List<T>, data: Vec<Value>) -> Result<Json<Value>, ApiError> {
    let list =
        List { object: list.object, data, has_more: list.has_more, first_id: list.first_id, last_id: list.last_id };
    Ok(Json(to_value(&list)?))
}

/// `POST /files`: the upload, then its processing takes `--file-delay-ms`.
async fn upload(
    State(app): State<Arc<App>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(file) = files::upload(State(app.clone()), multipart).await?;
    let at = now_ms() + app.file_delay.as_millis() as i64;
    app.store.lock().set_azure_file_processed_at(&file.id, at)?;
    Ok(Json(present_file(&app, file)?))
}

async fn list_files(State(app): State<Arc<App>>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let Json(mut list) = files::list(State(app.clone()), uri).await?;
    let data = std::mem::take(&mut list.data).into_iter().map(|f| present_file(&app, f)).collect::<Result<_, _>>()?;
    list_of(list, data)
}

async fn retrieve_file(State(app): State<Arc<App>>, id: Path<String>) -> Result<Json<Value>, ApiError> {
    let Json(file) = files::retrieve(State(app.clone()), id).await?;
    Ok(Json(present_file(&app, file)?))
}

/// A job's file must be processed before the job is created.
fn check_processed(app: &App, id: &str, param: &str) -> Result<(), ApiError> {
    match app.store.lock().azure_file_processed_at(id)? {
        Some(at) if now_ms() < at => Err(ApiError::invalid(
            format!(
                "The file {id} given as '{param}' is not processed yet (its status is 'uploaded'): wait until \
                 GET /files/{id} shows status 'processed', then create the job"
            ),
            Some(param),
        )
        .with_code("invalidPayload")),
        _ => Ok(()),
    }
}

/// Azure's `suffix`: at most 40 characters of letters, digits, `-` and `_`.
fn check_suffix(suffix: &str) -> Result<(), ApiError> {
    let n = suffix.chars().count();
    let fault = if n > 40 {
        Some(format!("it has {n} characters, at most 40 are allowed"))
    } else {
        (suffix.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')))
            .map(|c| format!("'{c}' is not allowed: use letters, digits, '-' and '_'"))
    };
    match fault {
        Some(why) => Err(ApiError::invalid(format!("Invalid 'suffix' '{suffix}': {why}"), Some("suffix"))),
        None => Ok(()),
    }
}

/// `POST /fine_tuning/jobs`: an Azure base model trains the local classifier from scratch, a
/// model an earlier job made continues; the OpenAI handler does the rest.
async fn create_job(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let (request, mut raw): (CreateJob, Map<String, Value>) = parse_body(&body)?;
    if let Some(suffix) = &request.suffix {
        check_suffix(suffix)?;
    }
    let (local, base) = match names::base_model(&request.model) {
        Some(b) => (BASE_MODEL.to_string(), b.id.to_string()),
        None => {
            let found = {
                let store = app.store.lock();
                match names::find_tuned(&store, &request.model)? {
                    Some(Found::Tuned { local, base, .. }) if store.is_fine_tuned_model(&local)? => Some((local, base)),
                    _ => None,
                }
            };
            found.ok_or_else(|| {
                let message = format!(
                    "Model {} is not available for fine-tuning or does not exist. This server fine-tunes {} and \
                     the models its succeeded jobs made (and their checkpoints)",
                    request.model,
                    names::base_model_ids()
                );
                ApiError::invalid(message, Some("model")).with_code("model_not_available")
            })?
        }
    };
    check_processed(&app, &request.training_file, "training_file")?;
    if let Some(id) = &request.validation_file {
        check_processed(&app, id, "validation_file")?;
    }
    raw.insert("model".into(), Value::String(local));
    let body = serde_json::to_vec(&raw).map_err(|e| ApiError::internal(&e))?;
    let Json(job) = jobs::create(State(app.clone()), Bytes::from(body)).await?;
    app.store.lock().insert_azure_job(&job.id, &request.model, &base)?;
    Ok(Json(present_job(&app, job)?))
}

/// A job as Azure shows it: the model it was asked to fine-tune, its `{base}.ft-…` model, and
/// its `suffix`.
fn present_job(app: &App, job: Job) -> Result<Value, ApiError> {
    let azure = app.store.lock().azure_job(&job.id)?;
    let mut v = to_value(&job)?;
    if let Some((model, base)) = azure {
        v["model"] = json!(model);
        if let Some(local) = &job.fine_tuned_model {
            v["fine_tuned_model"] = json!(model_name(&base, local));
        }
    }
    v["suffix"] = json!(job.user_provided_suffix);
    Ok(v)
}

async fn list_jobs(State(app): State<Arc<App>>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let Json(mut list) = jobs::list(State(app.clone()), uri).await?;
    let data = std::mem::take(&mut list.data).into_iter().map(|j| present_job(&app, j)).collect::<Result<_, _>>()?;
    list_of(list, data)
}

async fn retrieve_job(State(app): State<Arc<App>>, id: Path<String>) -> Result<Json<Value>, ApiError> {
    let Json(job) = jobs::retrieve(State(app.clone()), id).await?;
    Ok(Json(present_job(&app, job)?))
}

async fn cancel_job(State(app): State<Arc<App>>, id: Path<String>) -> Result<Json<Value>, ApiError> {
    let Json(job) = jobs::cancel(State(app.clone()), id).await?;
    Ok(Json(present_job(&app, job)?))
}

/// A job's Azure base model and its final local model (once it succeeded).
fn job_names(app: &App, id: &str) -> Result<Option<(String, Option<String>)>, ApiError> {
    let store = app.store.lock();
    let Some(job) = store.job(id)? else { return Err(ApiError::no_such("FineTuningJob", id)) };
    let final_local = job.fine_tuned_model.filter(|_| JobStatus::parse(&job.status) == JobStatus::Succeeded);
    Ok(store.azure_job(id)?.map(|(_, base)| (base, final_local)))
}

/// `GET /fine_tuning/jobs/{id}/events`: the local model names in messages become Azure's.
async fn events(State(app): State<Arc<App>>, Path(id): Path<String>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let names = job_names(&app, &id)?;
    let Json(mut list) = jobs::events(State(app.clone()), Path(id), uri).await?;
    let mut data = Vec::new();
    for mut e in std::mem::take(&mut list.data) {
        if let Some((base, final_local)) = &names {
            e.message = (e.message.split(' '))
                .map(|w| if w.starts_with("ft:") { azure_name(base, w, final_local.as_deref()) } else { w.into() })
                .collect::<Vec<_>>()
                .join(" ");
        }
        data.push(to_value(&e)?);
    }
    list_of(list, data)
}

/// `GET /fine_tuning/jobs/{id}/checkpoints?after=&limit=`: newest first, Azure's ids and names,
/// `metrics.step` a number with a fraction as Azure shows it.
async fn checkpoints(State(app): State<Arc<App>>, Path(id): Path<String>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let Some((base, final_local)) = job_names(&app, &id)? else {
        let Json(list) = jobs::checkpoints(State(app.clone()), Path(id), uri).await?;
        return Ok(Json(to_value(&list)?));
    };
    let q = Params::from_uri(&uri)?;
    let limit = q.limit(10, 10_000)?;
    let all = app.store.lock().checkpoints(&id)?;
    let mut shown = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let mut v = to_value(c)?;
        v["id"] = json!(checkpoint_id(&c.fine_tuned_model_checkpoint));
        v["fine_tuned_model_checkpoint"] = json!(checkpoint_name(&base, c, i == 0, final_local.as_deref()));
        if let Some(step) = c.metrics.step {
            v["metrics"]["step"] = json!(step as f64);
        }
        shown.push(v);
    }
    let (data, has_more) = page(shown, |v| v["id"].as_str().unwrap_or(""), q.get("after"), limit);
    let id_of = |v: Option<&Value>| v.and_then(|v| v["id"].as_str()).map(str::to_string);
    let (first_id, last_id) = (id_of(data.first()), id_of(data.last()));
    Ok(Json(json!({"object": "list", "data": data, "has_more": has_more, "first_id": first_id, "last_id": last_id})))
}

/// The answer to a chat naming no provisioned deployment, word for word as Azure gives it.
fn deployment_not_found() -> Response {
    azure_error(
        StatusCode::NOT_FOUND,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the last 5 \
         minutes, please wait a moment and try again.",
    )
}

/// The provisioned deployment of that name (of any account: the server is one resource).
fn ready_deployment(app: &App, name: &str) -> Result<Option<AzureDeployment>, ApiError> {
    let now = now_ms();
    let named = app.store.lock().azure_deployments_named(&name.to_lowercase())?;
    Ok(named.into_iter().find(|d| d.gone_at_ms.is_none() && d.ready_at_ms <= now))
}

/// The content filter's verdict on a text: nothing filtered.
fn filter_results() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe})
}

/// `POST /chat/completions` with `model` = a deployment's name.
async fn chat_v1(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    complete(app, None, body).await
}

/// `POST /openai/deployments/{deployment}/chat/completions?api-version=…`.
async fn chat_deployment(
    State(app): State<Arc<App>>,
    Path(deployment): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    complete(app, Some(deployment), body).await
}

async fn complete(app: Arc<App>, deployment: Option<String>, body: Bytes) -> Result<Response, ApiError> {
    let (_, mut raw): (Value, Map<String, Value>) = parse_body(&body)?;
    let name = match (deployment, raw.get("model")) {
        (Some(d), _) => d,
        (None, Some(Value::String(m))) => m.clone(),
        (None, _) => {
            return Err(ApiError::invalid(
                "Missing required parameter: 'model' (the name of a deployment).",
                Some("model"),
            ));
        }
    };
    let Some(d) = ready_deployment(&app, &name)? else { return Ok(deployment_not_found()) };
    raw.insert("model".into(), Value::String(d.serves.clone()));
    let body = serde_json::to_vec(&raw).map_err(|e| ApiError::internal(&e))?;
    let Json(mut answer) = chat::complete(State(app.clone()), Bytes::from(body)).await?;
    answer.model = d.model_id;
    let mut v = to_value(&answer)?;
    v["prompt_filter_results"] = json!([{"prompt_index": 0, "content_filter_results": filter_results()}]);
    if let Some(choices) = v["choices"].as_array_mut() {
        for c in choices {
            c["content_filter_results"] = filter_results();
        }
    }
    Ok(Json(v).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_azure_s() {
        assert!(check_suffix("r12-1_a").is_ok());
        assert!(check_suffix(&"a".repeat(40)).is_ok());
        assert_eq!(check_suffix(&"a".repeat(41)).unwrap_err().param.as_deref(), Some("suffix"));
        assert!(check_suffix("a.b").unwrap_err().message.contains("'.'"));
    }

    #[test]
    fn dated_versions_are_dates() {
        assert!(is_dated_version("2024-10-21") && is_dated_version("2025-04-01-preview"));
        assert!(!is_dated_version("v1") && !is_dated_version("2024-1-21") && !is_dated_version("preview"));
    }
}
