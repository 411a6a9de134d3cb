//! Azure Resource Manager's deployments of a Cognitive Services account:
//! `{PUT,GET,DELETE} /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{a}/deployments/{name}?api-version=…`
//! and `GET …/deployments`. `Authorization: Bearer TOKEN` with the server's key as the token; the
//! fixed path segments match in any case, as ARM's do. A PUT is create-or-update, idempotent by
//! name (201 new, 200 existing); the deployment is `Creating` for `--deployment-delay-ms`, then
//! `Succeeded`. A DELETE answers 202 and the deployment is `Deleting` for the same delay, then
//! gone (GET 404); 204 if there is none. Errors are ARM's `{"error": {"code", "message"}}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::guard::same_key;
use super::super::{App, Params, random_hex};
use super::names::{self, BaseModel, DEVELOPER_TIER_FAMILY, Found};
use super::{azure_error, now_ms};
use crate::provider::local::BASE_MODEL;
use crate::store::serve::azure::AzureDeployment;

/// The ARM api-versions of `Microsoft.CognitiveServices` that deploy models with a `sku`.
const API_VERSIONS: &[&str] = &[
    "2023-05-01",
    "2023-10-01-preview",
    "2024-04-01-preview",
    "2024-06-01-preview",
    "2024-10-01",
    "2025-04-01-preview",
    "2025-06-01",
    "2025-07-01-preview",
    "2025-10-01-preview",
];

/// The deployment SKUs, as ARM spells them (a request may use any case).
const SKUS: &[&str] = &[
    "Standard",
    "GlobalStandard",
    "DataZoneStandard",
    "ProvisionedManaged",
    "GlobalProvisionedManaged",
    "DataZoneProvisionedManaged",
    "GlobalBatch",
    "DataZoneBatch",
    "DeveloperTier",
];

const TYPE: &str = "Microsoft.CognitiveServices/accounts/deployments";

/// An ARM failure.
struct ArmError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> ArmError {
    ArmError { status, code, message: message.into() }
}

fn invalid(message: impl Into<String>) -> ArmError {
    fail(StatusCode::BAD_REQUEST, "InvalidResourceProperties", message)
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        azure_error(self.status, self.code, self.message)
    }
}

impl From<crate::store::StoreError> for ArmError {
    fn from(e: crate::store::StoreError) -> ArmError {
        tracing::error!("request failed: {e}");
        fail(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "The server had an error processing the request")
    }
}

/// Where a request points: an account's deployments, or one of them.
struct Target {
    /// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{a}`.
    account_id: String,
    /// The deployment's name as sent.
    name: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let rest = path.strip_prefix("/subscriptions/")?.trim_end_matches('/');
        let s: Vec<&str> = rest.split('/').collect();
        let fixed = |i: usize, word: &str| s.get(i).is_some_and(|x| x.eq_ignore_ascii_case(word));
        let ok = (s.len() == 8 || s.len() == 9)
            && fixed(1, "resourceGroups")
            && fixed(3, "providers")
            && fixed(4, "Microsoft.CognitiveServices")
            && fixed(5, "accounts")
            && fixed(7, "deployments")
            && [0, 2, 6].iter().all(|i| !s[*i].is_empty());
        ok.then(|| Target {
            account_id: format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
                s[0], s[2], s[6]
            ),
            name: s.get(8).map(|n| n.to_string()),
        })
    }

    fn account_key(&self) -> String {
        self.account_id.to_lowercase()
    }
}

/// Every request under `/subscriptions/`.
pub async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&app, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn handle(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Response, ArmError> {
    // ARM takes a bearer token only (the guard also let `api-key` in): the answer's body is
    // ARM's 401, written by `Labels`.
    let bearer = (headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()))
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    if !bearer.is_some_and(|t| same_key(t.trim(), &app.key)) {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    }
    let Some(target) = Target::parse(uri.path()) else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type could not be found for '{}': this server manages \
                 Microsoft.CognitiveServices/accounts/{{account}}/deployments only",
                uri.path()
            ),
        ));
    };
    check_api_version(uri)?;
    let name = target.name.clone();
    match (method, name) {
        (&Method::GET, None) => list(app, &target),
        (&Method::GET, Some(name)) => get(app, &target, &name),
        (&Method::PUT, Some(name)) => put(app, &target, &name, body),
        (&Method::DELETE, Some(name)) => delete(app, &target, &name),
        _ => Err(fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "HttpMethodNotAllowed",
            format!(
                "The HTTP method '{method}' is not supported here: deployments take PUT, GET and DELETE, their list GET"
            ),
        )),
    }
}

fn check_api_version(uri: &Uri) -> Result<(), ArmError> {
    let q = Params::from_uri(uri).map_err(|e| fail(StatusCode::BAD_REQUEST, "InvalidRequestUri", e.message))?;
    match q.get("api-version") {
        None => Err(fail(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if API_VERSIONS.contains(&v) => Ok(()),
        Some(v) => Err(fail(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for API version '{v}' and type 'accounts/deployments'. The \
                 supported api-versions are '{}'.",
                API_VERSIONS.join(", ")
            ),
        )),
    }
}

/// A deployment's `provisioningState` now, or `None` once it is gone.
fn state(d: &AzureDeployment, now: i64) -> Option<&'static str> {
    match d.gone_at_ms {
        Some(gone) if gone <= now => None,
        Some(_) => Some("Deleting"),
        None if now < d.ready_at_ms => Some("Creating"),
        None => Some("Succeeded"),
    }
}

/// The deployment as ARM shows it, with its state.
fn shown(d: &AzureDeployment, state: &str) -> Value {
    let mut v = d.object.clone();
    v["properties"]["provisioningState"] = json!(state);
    v
}

/// The deployment, or `None` if there is none or it is gone (then it is forgotten).
fn find(app: &App, target: &Target, name: &str) -> Result<Option<(AzureDeployment, &'static str)>, ArmError> {
    let (account, key) = (target.account_key(), name.to_lowercase());
    let mut store = app.store.lock();
    let Some(d) = store.azure_deployment(&account, &key)? else { return Ok(None) };
    match state(&d, now_ms()) {
        Some(s) => Ok(Some((d, s))),
        None => {
            store.delete_azure_deployment(&account, &key)?;
            Ok(None)
        }
    }
}

fn not_found(target: &Target, name: &str) -> ArmError {
    fail(
        StatusCode::NOT_FOUND,
        "DeploymentNotFound",
        format!(
            "Deployment '{name}' was not found under account '{}'.",
            target.account_id.rsplit('/').next().unwrap_or("")
        ),
    )
}

fn json_answer(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn get(app: &App, target: &Target, name: &str) -> Result<Response, ArmError> {
    let (d, s) = find(app, target, name)?.ok_or_else(|| not_found(target, name))?;
    Ok(json_answer(StatusCode::OK, shown(&d, s)))
}

fn list(app: &App, target: &Target) -> Result<Response, ArmError> {
    let now = now_ms();
    let all = app.store.lock().azure_deployments(&target.account_key())?;
    let value: Vec<Value> = all.iter().filter_map(|d| state(d, now).map(|s| shown(d, s))).collect();
    Ok(json_answer(StatusCode::OK, json!({"value": value})))
}

fn delete(app: &App, target: &Target, name: &str) -> Result<Response, ArmError> {
    let Some((mut d, s)) = find(app, target, name)? else { return Ok(StatusCode::NO_CONTENT.into_response()) };
    if s != "Deleting" {
        d.gone_at_ms = Some(now_ms() + app.deployment_delay.as_millis() as i64);
        app.store.lock().put_azure_deployment(&d)?;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// What a PUT asks for, checked.
struct Wanted {
    sku: &'static str,
    capacity: i64,
    model_name: String,
    version: String,
    /// The local model it answers with, and the model's Azure id.
    serves: String,
    model_id: String,
}

/// A deployment name: 2 to 64 letters, digits, `-`, `_` and `.`, starting with a letter or digit.
fn check_name(name: &str) -> Result<(), ArmError> {
    let ok = (2..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err(fail(
        StatusCode::BAD_REQUEST,
        "InvalidResourceName",
        format!(
            "The deployment name '{name}' is invalid: use 2 to 64 letters, digits, '-', '_' and '.', starting with a \
             letter or digit"
        ),
    ))
}

fn wanted(app: &App, body: &[u8]) -> Result<Wanted, ArmError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content must be a JSON object",
        ));
    }
    let sku = &v["sku"];
    let sku_name = sku["name"]
        .as_str()
        .ok_or_else(|| invalid("The deployment needs 'sku.name' (e.g. DeveloperTier, Standard, GlobalStandard)"))?;
    let sku = SKUS
        .iter()
        .find(|s| s.eq_ignore_ascii_case(sku_name))
        .ok_or_else(|| invalid(format!("The SKU '{sku_name}' is not supported: use one of {}", SKUS.join(", "))))?;
    let capacity = match &v["sku"]["capacity"] {
        Value::Null => 1,
        c => match c.as_i64() {
            Some(n) if (1..=100_000).contains(&n) => n,
            _ => return Err(invalid(format!("Invalid 'sku.capacity' {c}: expected a whole number from 1 to 100000"))),
        },
    };
    let model = &v["properties"]["model"];
    match model["format"].as_str() {
        Some(f) if f.eq_ignore_ascii_case("OpenAI") => {}
        Some(f) => return Err(invalid(format!("The model format '{f}' is not supported: use 'OpenAI'"))),
        None => return Err(invalid("The deployment needs 'properties.model.format' ('OpenAI')")),
    }
    let model_name = model["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("The deployment needs 'properties.model.name'"))?;
    let version = match &model["version"] {
        Value::Null => None,
        Value::String(s) => Some(s.as_str()),
        other => return Err(invalid(format!("Invalid 'properties.model.version' {other}: expected a string"))),
    };
    let base = names::BASE_MODELS.iter().copied().filter(|m| m.name == model_name);
    let base: Vec<BaseModel> = base.collect();
    let found = if let Some(b) = base.iter().find(|b| version.is_none_or(|v| v == b.version)) {
        Found::Base(*b)
    } else if !base.is_empty() {
        let versions: Vec<&str> = base.iter().map(|b| b.version).collect();
        return Err(invalid(format!(
            "The model '{model_name}' has no version '{}' here: use version {}",
            version.unwrap_or(""),
            versions.join(" or ")
        )));
    } else {
        let found = names::find_tuned(&app.store.lock(), model_name)?;
        match found {
            Some(f) if version.is_none_or(|v| v == "1") => f,
            Some(_) => {
                return Err(invalid(format!(
                    "A fine-tuned model is deployed as version '1', not '{}'",
                    version.unwrap_or("")
                )));
            }
            None => {
                let hint = if names::base_model(model_name).is_some() {
                    " (a base model is named without its date, which is the version: e.g. name 'gpt-4.1-mini', version '2025-04-14')"
                } else {
                    ""
                };
                return Err(invalid(format!(
                    "The model '{model_name}' was not found: deploy a base model ({}), a fine-tuned model a \
                     succeeded job made (its fine_tuned_model), or one of its checkpoints (its \
                     fine_tuned_model_checkpoint or ftchkpt-… id){hint}",
                    names::BASE_MODELS
                        .iter()
                        .map(|m| format!("{} {}", m.name, m.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    };
    let (serves, model_id, version) = match &found {
        Found::Base(b) => (BASE_MODEL.to_string(), b.id.to_string(), b.version.to_string()),
        Found::Tuned { local, azure, .. } => (local.clone(), azure.clone(), "1".to_string()),
    };
    if *sku == "DeveloperTier" {
        let family = match &found {
            Found::Tuned { base, .. } => names::base_model(base).map(|b| b.name),
            Found::Base(_) => None,
        };
        if !family.is_some_and(|f| DEVELOPER_TIER_FAMILY.contains(&f)) {
            return Err(invalid(format!(
                "The SKU 'DeveloperTier' deploys fine-tuned {} models only, not '{model_name}': use Standard or \
                 GlobalStandard",
                DEVELOPER_TIER_FAMILY.join(", ")
            )));
        }
    }
    Ok(Wanted { sku, capacity, model_name: model_name.to_string(), version, serves, model_id })
}

fn iso(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| String::new(), |t| t.to_string())
}

fn put(app: &App, target: &Target, name: &str, body: &[u8]) -> Result<Response, ArmError> {
    check_name(name)?;
    let w = wanted(app, body)?;
    let existing = find(app, target, name)?;
    if let Some((_, "Deleting")) = existing {
        return Err(fail(
            StatusCode::CONFLICT,
            "Conflict",
            format!("The deployment '{name}' is being deleted: create it again once GET answers 404"),
        ));
    }
    let now = now_ms();
    let delay = app.deployment_delay.as_millis() as i64;
    let sku = json!({"name": w.sku, "capacity": w.capacity});
    let model = json!({"format": "OpenAI", "name": w.model_name, "version": w.version});
    let (status, created_at, ready_at_ms) = match &existing {
        // The same model and SKU: nothing to provision again.
        Some((d, _)) if d.serves == w.serves && d.object["sku"] == sku => {
            (StatusCode::OK, d.object["systemData"]["createdAt"].clone(), d.ready_at_ms)
        }
        Some((d, _)) => (StatusCode::OK, d.object["systemData"]["createdAt"].clone(), now + delay),
        None => (StatusCode::CREATED, json!(iso(now)), now + delay),
    };
    let object = json!({
        "id": format!("{}/deployments/{name}", target.account_id),
        "name": name,
        "type": TYPE,
        "sku": sku,
        "properties": {
            "model": model,
            "capabilities": {"chatCompletion": "true"},
            "versionUpgradeOption": "NoAutoUpgrade",
        },
        "systemData": {
            "createdBy": "ftsweep-serve",
            "createdByType": "Application",
            "createdAt": created_at,
            "lastModifiedBy": "ftsweep-serve",
            "lastModifiedByType": "Application",
            "lastModifiedAt": iso(now),
        },
        "etag": format!("\"{}\"", random_hex(16)),
    });
    let d = AzureDeployment {
        account: target.account_key(),
        name: name.to_lowercase(),
        object,
        serves: w.serves,
        model_id: w.model_id,
        ready_at_ms,
        gone_at_ms: None,
    };
    app.store.lock().put_azure_deployment(&d)?;
    let s = state(&d, now).unwrap_or("Creating");
    Ok(json_answer(status, shown(&d, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_paths_match_in_any_case() {
        let t = Target::parse(
            "/subscriptions/s/resourcegroups/g/providers/microsoft.cognitiveservices/accounts/a/deployments/d",
        )
        .unwrap();
        assert_eq!(t.name.as_deref(), Some("d"));
        assert_eq!(t.account_id, "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a");
        let list = Target::parse(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a/deployments/",
        );
        assert!(list.unwrap().name.is_none());
        assert!(
            Target::parse("/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/accounts/a/deployments")
                .is_none()
        );
        assert!(Target::parse("/subscriptions/s/resourceGroups/g").is_none());
    }

    #[test]
    fn deployment_names_are_checked() {
        assert!(check_name("ftsweep-0123456789abcdef").is_ok());
        assert!(check_name("a").is_err() && check_name("-a").is_err() && check_name("a/b").is_err());
    }
}
