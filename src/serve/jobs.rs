//! `/v1/fine_tuning/jobs`: creating (with OpenAI's checks on the model, files, hyperparameters,
//! suffix, seed and metadata), listing with metadata filters, retrieving, cancelling, and a job's
//! events and checkpoints. Training itself is the worker's. A job fine-tunes `local/ngram`, or
//! continues a model this server fine-tuned: a succeeded job's `fine_tuned_model` or one of its
//! checkpoints' `fine_tuned_model_checkpoint`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Uri;
use rand::Rng;
use serde_json::Value;

use super::errors::{ApiError, parse_body};
use super::objects::message_event;
use super::{App, ORGANIZATION, Params, new_id, page, unix_now, worker};
use crate::provider::local::BASE_MODEL;
use crate::wire::openai::{Checkpoint, CreateJob, HyperValue, Hyperparameters, Job, JobEvent, JobStatus, List, Method};

/// `POST /fine_tuning/jobs`: checks the request, records the job as `validating_files` and hands
/// it to a worker.
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Job>, ApiError> {
    let (request, raw): (CreateJob, _) = parse_body(&body)?;
    let job = new_job(&app, request, &Value::Object(raw))?;
    {
        let mut store = app.store.lock();
        store.insert_job(&job)?;
        store.insert_events(&job.id, &[message_event("info", format!("Created fine-tuning job: {}", job.id))])?;
    }
    worker::spawn(&app, &job.id);
    Ok(Json(job))
}

fn new_job(app: &App, request: CreateJob, raw: &Value) -> Result<Job, ApiError> {
    if request.model != BASE_MODEL && !app.store.lock().is_fine_tuned_model(&request.model)? {
        let message = format!(
            "Model {} is not available for fine-tuning or does not exist. This server fine-tunes `{BASE_MODEL}` \
             and the models its succeeded jobs made (and their checkpoints).",
            request.model
        );
        return Err(ApiError::invalid(message, Some("model")).with_code("model_not_available"));
    }
    check_file(app, &request.training_file, "training_file")?;
    if let Some(id) = &request.validation_file {
        check_file(app, id, "validation_file")?;
    }
    if let Some(suffix) = &request.suffix {
        let n = suffix.chars().count();
        if n > 64 {
            let message = format!(
                "Invalid 'suffix': string too long. Expected a string with maximum length 64, but got a string with length {n} instead."
            );
            return Err(ApiError::invalid(message, Some("suffix")));
        }
    }
    let seed = match request.seed {
        Some(s) if !(0..=i64::from(i32::MAX)).contains(&s) => {
            let message = format!("Invalid 'seed': {s}. Expected a whole number from 0 to 2147483647.");
            return Err(ApiError::invalid(message, Some("seed")));
        }
        Some(s) => s,
        None => rand::rng().random_range(0..=i64::from(i32::MAX)),
    };
    if let Some(metadata) = &request.metadata {
        check_metadata(metadata)?;
    }
    let method = check_method(&request, raw)?;
    Ok(Job {
        id: new_id("ftjob-"),
        object: "fine_tuning.job".into(),
        created_at: unix_now(),
        model: request.model,
        status: "validating_files".into(),
        fine_tuned_model: None,
        finished_at: None,
        estimated_finish: None,
        organization_id: Some(ORGANIZATION.into()),
        training_file: request.training_file,
        validation_file: request.validation_file,
        result_files: Vec::new(),
        trained_tokens: None,
        seed: Some(seed),
        // As OpenAI's: a DPO job's hyperparameters are only in its `method`.
        hyperparameters: (method.kind == "supervised").then(|| method.hyperparameters().cloned()).flatten(),
        method: Some(method),
        metadata: request.metadata,
        error: None,
        user_provided_suffix: request.suffix.filter(|s| !s.is_empty()),
    })
}

/// The job's `method`, checked like OpenAI's: `type` is `supervised` or `dpo`, the
/// hyperparameters sit under the object of that name (not the other's), `beta` only under `dpo`;
/// without `method` the job is supervised, with the deprecated top-level `hyperparameters`.
/// Returned with every hyperparameter present.
fn check_method(request: &CreateJob, raw: &Value) -> Result<Method, ApiError> {
    let Some(m) = &request.method else {
        let hp = check_hyperparameters(&request.hyperparameters.clone().unwrap_or_default(), raw, "hyperparameters")?;
        if hp.beta.is_some() {
            return Err(only_dpo("hyperparameters.beta"));
        }
        return Ok(Method::supervised(hp));
    };
    let (dpo, other) = match m.kind.as_str() {
        "supervised" => (false, "dpo"),
        "dpo" => (true, "supervised"),
        kind => {
            let message = format!("Invalid 'method.type': '{kind}'. This server supports 'supervised' and 'dpo'.");
            return Err(ApiError::invalid(message, Some("method.type")));
        }
    };
    if raw.pointer(&format!("/method/{other}")).is_some_and(|v| !v.is_null()) {
        let message = format!(
            "Invalid 'method.{other}': a job of type '{}' takes its hyperparameters under 'method.{}'.",
            m.kind, m.kind
        );
        return Err(ApiError::invalid(message, Some(&format!("method.{other}"))));
    }
    let path = format!("method.{}.hyperparameters", m.kind);
    let hp = check_hyperparameters(&m.hyperparameters().cloned().unwrap_or_default(), raw, &path)?;
    if dpo {
        let beta = check_beta(hp.beta, raw, &path)?;
        Ok(Method::dpo(Hyperparameters { beta: Some(beta), ..hp }))
    } else if hp.beta.is_some() {
        Err(only_dpo(&format!("{path}.beta")))
    } else {
        Ok(Method::supervised(hp))
    }
}

/// `beta` outside a DPO method.
fn only_dpo(param: &str) -> ApiError {
    let message = format!("Invalid '{param}': 'beta' is a hyperparameter of 'dpo' jobs only.");
    ApiError::invalid(message, Some(param))
}

/// DPO's `beta`: `"auto"` or a number in (0, 2].
fn check_beta(beta: Option<HyperValue>, raw: &Value, path: &str) -> Result<HyperValue, ApiError> {
    let written = raw.pointer(&format!("/{}/beta", path.replace('.', "/")));
    let (lo, hi) = crate::space::BETA_RANGE;
    match (beta, written) {
        (None, _) | (_, None) => Ok(HyperValue::float(None)),
        (Some(_), Some(v)) if v.is_null() || v.as_str() == Some("auto") => Ok(HyperValue::float(None)),
        (Some(b), _) => match b.number() {
            Some(x) if x.is_finite() && x > lo && x <= hi => Ok(HyperValue::Float(x)),
            _ => {
                let message = format!(
                    "Invalid value for '{path}.beta': expected \"auto\" or a number greater than {lo} and at most {hi}."
                );
                Err(ApiError::invalid(message, Some(&format!("{path}.beta"))))
            }
        },
    }
}

/// A job's file must exist and have been uploaded for fine-tuning.
fn check_file(app: &App, id: &str, param: &str) -> Result<(), ApiError> {
    let file = app.store.lock().file(id)?;
    match file {
        None => Err(ApiError::invalid(format!("Invalid file ID for '{param}': {id} does not exist."), Some(param))),
        Some(f) if f.purpose != "fine-tune" => Err(ApiError::invalid(
            format!("File {id} has purpose '{}': '{param}' needs a file uploaded with purpose 'fine-tune'.", f.purpose),
            Some(param),
        )),
        Some(_) => Ok(()),
    }
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let fault = if metadata.len() > 16 {
        Some(format!("at most 16 pairs are allowed, got {}", metadata.len()))
    } else if let Some(k) = metadata.keys().find(|k| k.chars().count() > 64) {
        Some(format!("the key '{k}' is longer than 64 characters"))
    } else {
        (metadata.iter().find(|(_, v)| v.chars().count() > 512))
            .map(|(k, _)| format!("the value of '{k}' is longer than 512 characters"))
    };
    match fault {
        Some(why) => Err(ApiError::invalid(format!("Invalid 'metadata': {why}."), Some("metadata"))),
        None => Ok(()),
    }
}

/// Checks `n_epochs` (1-50), `batch_size` (1-256) and `learning_rate_multiplier` (> 0), each
/// "auto" or a number, and returns them with every key present. `raw` is the request body, where
/// strings other than "auto" (which the lenient wire type reads as auto) are caught.
fn check_hyperparameters(hp: &Hyperparameters, raw: &Value, path: &str) -> Result<Hyperparameters, ApiError> {
    let bad = |name: &str, why: &str| {
        let message = format!("Invalid value for '{path}.{name}': expected \"auto\" or {why}.");
        ApiError::invalid(message, Some(&format!("{path}.{name}")))
    };
    let is_auto = |name: &str| {
        let pointer = format!("/{}/{name}", path.replace('.', "/"));
        raw.pointer(&pointer).is_none_or(|v| v.is_null() || v.as_str() == Some("auto"))
    };
    let int = |name: &str, value: Option<HyperValue>, max: i64| -> Result<HyperValue, ApiError> {
        let why = format!("a whole number from 1 to {max}");
        match value {
            Some(HyperValue::Text(_)) | None if is_auto(name) => Ok(HyperValue::int(None)),
            Some(HyperValue::Int(n)) if (1..=max).contains(&n) => Ok(HyperValue::Int(n)),
            Some(HyperValue::Float(x)) if x.fract() == 0.0 && (1.0..=max as f64).contains(&x) => {
                Ok(HyperValue::Int(x as i64))
            }
            _ => Err(bad(name, &why)),
        }
    };
    let lr = match hp.learning_rate_multiplier {
        Some(HyperValue::Text(_)) | None if is_auto("learning_rate_multiplier") => HyperValue::float(None),
        Some(v) => match v.number() {
            Some(x) if x.is_finite() && x > 0.0 => HyperValue::Float(x),
            _ => return Err(bad("learning_rate_multiplier", "a number greater than 0")),
        },
        None => return Err(bad("learning_rate_multiplier", "a number greater than 0")),
    };
    Ok(Hyperparameters {
        n_epochs: Some(int("n_epochs", hp.n_epochs, 50)?),
        batch_size: Some(int("batch_size", hp.batch_size, 256)?),
        learning_rate_multiplier: Some(lr),
        // Checked by the method (`check_method`): kept as written.
        beta: hp.beta,
    })
}

/// What `metadata` query parameters ask for.
struct MetadataFilter {
    /// `metadata=null`: jobs without metadata.
    none: bool,
    /// `metadata[k]=v`: jobs whose metadata has every pair.
    pairs: Vec<(String, String)>,
}

impl MetadataFilter {
    fn from(q: &Params) -> MetadataFilter {
        let pairs = (q.0.iter())
            .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(), v.clone())))
            .collect();
        MetadataFilter { none: q.get("metadata") == Some("null"), pairs }
    }

    fn matches(&self, job: &Job) -> bool {
        let metadata = job.metadata.clone().unwrap_or_default();
        (!self.none || metadata.is_empty()) && self.pairs.iter().all(|(k, v)| metadata.get(k) == Some(v))
    }
}

/// `GET /fine_tuning/jobs?after=&limit=&metadata[k]=v`: newest first.
pub async fn list(State(app): State<Arc<App>>, uri: Uri) -> Result<Json<List<Job>>, ApiError> {
    let q = Params::from_uri(&uri)?;
    let limit = q.limit(20, 10_000)?;
    let filter = MetadataFilter::from(&q);
    let jobs: Vec<Job> = app.store.lock().jobs()?.into_iter().filter(|j| filter.matches(j)).collect();
    let (data, has_more) = page(jobs, |j| &j.id, q.get("after"), limit);
    Ok(Json(List { object: "list".into(), data, has_more, first_id: None, last_id: None }))
}

fn find(app: &App, id: &str) -> Result<Job, ApiError> {
    app.store.lock().job(id)?.ok_or_else(|| ApiError::no_such("FineTuningJob", id))
}

/// `GET /fine_tuning/jobs/{id}`.
pub async fn retrieve(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Job>, ApiError> {
    Ok(Json(find(&app, &id)?))
}

/// `POST /fine_tuning/jobs/{id}/cancel`: an unfinished job is `cancelled` at once (a training
/// one stops after its current step); a cancelled one is returned as it is; a succeeded or
/// failed one cannot be cancelled.
pub async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Job>, ApiError> {
    let job = {
        let mut store = app.store.lock();
        let mut job = store.job(&id)?.ok_or_else(|| ApiError::no_such("FineTuningJob", &id))?;
        match JobStatus::parse(&job.status) {
            JobStatus::Cancelled => return Ok(Json(job)),
            s if s.is_terminal() => {
                let message = format!("Job {id} has already {} and cannot be cancelled.", job.status);
                return Err(ApiError::invalid(message, Some("id")));
            }
            _ => {}
        }
        job.status = "cancelled".into();
        job.finished_at = Some(unix_now());
        job.estimated_finish = None;
        store.update_job(&job)?;
        store.insert_events(&id, &[message_event("info", "Fine-tuning job cancelled")])?;
        job
    };
    worker::cancel(&app, &id);
    Ok(Json(job))
}

/// `GET /fine_tuning/jobs/{id}/events?after=&limit=`: newest first.
pub async fn events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<List<JobEvent>>, ApiError> {
    let q = Params::from_uri(&uri)?;
    let limit = q.limit(20, 10_000)?;
    find(&app, &id)?;
    let mut data = app.store.lock().events(&id, q.get("after"), limit + 1)?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(Json(List { object: "list".into(), data, has_more, first_id: None, last_id: None }))
}

/// `GET /fine_tuning/jobs/{id}/checkpoints?after=&limit=`: newest first, the last three epochs.
pub async fn checkpoints(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<List<Checkpoint>>, ApiError> {
    let q = Params::from_uri(&uri)?;
    let limit = q.limit(10, 10_000)?;
    find(&app, &id)?;
    let all = app.store.lock().checkpoints(&id)?;
    let (data, has_more) = page(all, |c| &c.id, q.get("after"), limit);
    let (first_id, last_id) = (data.first().map(|c| c.id.clone()), data.last().map(|c| c.id.clone()));
    Ok(Json(List { object: "list".into(), data, has_more, first_id, last_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<Hyperparameters, Option<String>> {
        let raw: Value = serde_json::from_str(body).unwrap();
        let request: CreateJob = serde_json::from_value(raw.clone()).unwrap();
        let method = request.method.and_then(|m| m.supervised).map(|s| s.hyperparameters);
        let (hp, path) = match method {
            Some(hp) => (hp, "method.supervised.hyperparameters"),
            None => (request.hyperparameters.unwrap_or_default(), "hyperparameters"),
        };
        check_hyperparameters(&hp, &raw, path).map_err(|e| e.param)
    }

    const BASE: &str = r#""model":"local/ngram","training_file":"f""#;

    #[test]
    fn hyperparameters_are_auto_or_in_range() {
        let ok = check(&format!(
            r#"{{{BASE},"method":{{"type":"supervised","supervised":{{"hyperparameters":{{"n_epochs":3,"batch_size":"auto","learning_rate_multiplier":0.5}}}}}}}}"#
        ))
        .unwrap();
        assert_eq!(ok.n_epochs, Some(HyperValue::Int(3)));
        assert_eq!(ok.batch_size.and_then(HyperValue::number), None);
        let bad = |hp: &str| check(&format!(r#"{{{BASE},"hyperparameters":{hp}}}"#)).unwrap_err();
        assert_eq!(bad(r#"{"n_epochs":0}"#).as_deref(), Some("hyperparameters.n_epochs"));
        assert_eq!(bad(r#"{"n_epochs":2.5}"#).as_deref(), Some("hyperparameters.n_epochs"));
        assert_eq!(bad(r#"{"batch_size":257}"#).as_deref(), Some("hyperparameters.batch_size"));
        assert_eq!(bad(r#"{"batch_size":"many"}"#).as_deref(), Some("hyperparameters.batch_size"));
        assert_eq!(
            bad(r#"{"learning_rate_multiplier":0}"#).as_deref(),
            Some("hyperparameters.learning_rate_multiplier")
        );
    }

    #[test]
    fn a_dpo_method_is_checked_like_openais() {
        let method = |m: &str| {
            let raw: Value = serde_json::from_str(&format!(r#"{{{BASE},"method":{m}}}"#)).unwrap();
            let request: CreateJob = serde_json::from_value(raw.clone()).unwrap();
            check_method(&request, &raw).map_err(|e| e.param)
        };
        let ok = method(r#"{"type":"dpo","dpo":{"hyperparameters":{"beta":0.1,"n_epochs":2}}}"#).unwrap();
        assert_eq!(ok.kind, "dpo");
        assert_eq!(ok.hyperparameters().and_then(|h| h.beta), Some(HyperValue::Float(0.1)));
        assert_eq!(ok.hyperparameters().and_then(|h| h.n_epochs), Some(HyperValue::Int(2)));
        let auto = method(r#"{"type":"dpo","dpo":{"hyperparameters":{"beta":"auto"}}}"#).unwrap();
        assert_eq!(auto.hyperparameters().and_then(|h| h.beta).and_then(HyperValue::number), None);
        assert!(method(r#"{"type":"dpo"}"#).is_ok(), "every hyperparameter auto");
        let bad = |m: &str| method(m).unwrap_err();
        for beta in ["0", "2.5", "-1", "\"high\""] {
            let m = format!(r#"{{"type":"dpo","dpo":{{"hyperparameters":{{"beta":{beta}}}}}}}"#);
            assert_eq!(bad(&m).as_deref(), Some("method.dpo.hyperparameters.beta"), "{beta}");
        }
        assert!(method(r#"{"type":"dpo","dpo":{"hyperparameters":{"beta":2}}}"#).is_ok(), "2 is in (0, 2]");
        assert_eq!(
            bad(r#"{"type":"dpo","supervised":{"hyperparameters":{"n_epochs":2}}}"#).as_deref(),
            Some("method.supervised")
        );
        assert_eq!(
            bad(r#"{"type":"supervised","supervised":{"hyperparameters":{"beta":0.5}}}"#).as_deref(),
            Some("method.supervised.hyperparameters.beta")
        );
        assert_eq!(bad(r#"{"type":"reinforcement"}"#).as_deref(), Some("method.type"));
        assert_eq!(
            bad(r#"{"type":"dpo","dpo":{"hyperparameters":{"n_epochs":0}}}"#).as_deref(),
            Some("method.dpo.hyperparameters.n_epochs")
        );
    }

    #[test]
    fn metadata_filters_need_every_pair() {
        let q = |s: &str| Params::from_uri(&format!("/x?{s}").parse().unwrap()).unwrap();
        let job = |m: Option<&[(&str, &str)]>| Job {
            metadata: m.map(|m| m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..serde_json::from_str(r#"{"id":"j"}"#).unwrap()
        };
        let tagged = job(Some(&[("sweep", "s1"), ("cell", "7")]));
        assert!(MetadataFilter::from(&q("metadata[sweep]=s1&metadata[cell]=7")).matches(&tagged));
        assert!(!MetadataFilter::from(&q("metadata[sweep]=s1&metadata[cell]=8")).matches(&tagged));
        assert!(!MetadataFilter::from(&q("metadata=null")).matches(&tagged));
        assert!(MetadataFilter::from(&q("metadata=null")).matches(&job(None)));
    }
}
