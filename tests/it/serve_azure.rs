//! `ftsweep serve --protocol azure` over real HTTP on loopback: the v1 data plane's shapes
//! (files uploaded then processed, jobs on Azure base models with Azure names, `ftchkpt-`
//! checkpoints, the dated surface), chat completions only through a provisioned deployment, and
//! Azure Resource Manager's deployment lifecycle (idempotent PUT, Creating then Succeeded, DELETE,
//! api-version, the bearer token).

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::protocol::Server;
use crate::util::{Workspace, example_data};

const KEY: &str = "azure-test-key-4b1d9e0c7a";
const BASE: &str = "gpt-4.1-mini-2025-04-14";
const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg/providers/Microsoft.CognitiveServices/accounts/myres";
/// The exact body of Azure's answer to a chat naming no provisioned deployment.
const NOT_DEPLOYED: &str = "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.";

fn start(ws: &Workspace, extra: &[&str]) -> Server {
    let mut args = vec!["--protocol", "azure"];
    args.extend_from_slice(extra);
    Server::start_args(ws, "serve.db", KEY, &args)
}

/// An answer: status, headers and the JSON body (null when empty).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client of the server's data plane (`api-key`) and ARM (`Authorization: Bearer`).
struct Az {
    http: reqwest::Client,
    url: String,
}

impl Az {
    fn new(server: &Server) -> Az {
        Az { http: reqwest::Client::new(), url: server.url.clone() }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("a response");
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        Answer { status, headers, body }
    }

    /// A data-plane request with `api-key`.
    async fn data(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).header("api-key", KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let a = self.data(method.clone(), path, body).await;
        assert_eq!(a.status, StatusCode::OK, "{method} {path}: {}", a.body);
        a.body
    }

    /// An ARM request on the account's deployments (`rest` after `/deployments`), with a token.
    async fn arm(&self, method: Method, rest: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = self.http.request(method, format!("{}{ACCOUNT}/deployments{rest}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn upload(&self, name: &str) -> Value {
        let form = reqwest::multipart::Form::new().text("purpose", "fine-tune").part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(example_data(name)).expect("example data"))
                .file_name(name.to_string()),
        );
        let request = self.http.post(format!("{}/openai/v1/files", self.url)).header("api-key", KEY).multipart(form);
        let a = self.send(request).await;
        assert_eq!(a.status, StatusCode::OK, "upload: {}", a.body);
        a.body
    }

    /// Uploads and waits until the file is processed; returns its id.
    async fn processed_upload(&self, name: &str) -> String {
        let id = self.upload(name).await["id"].as_str().expect("a file id").to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ok(Method::GET, &format!("/openai/v1/files/{id}"), None).await["status"] != "processed" {
            assert!(Instant::now() < deadline, "file {id} never processed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        id
    }

    async fn wait_job(&self, id: &str, statuses: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.ok(Method::GET, &format!("/openai/v1/fine_tuning/jobs/{id}"), None).await;
            if statuses.iter().any(|s| job["status"] == *s) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} never reached {statuses:?}: {job}");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// A succeeded one-epoch job on the base model; returns the job.
    async fn trained(&self, training: &str, suffix: &str) -> Value {
        let body = json!({
            "model": BASE,
            "training_file": training,
            "suffix": suffix,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        });
        let job = self.ok(Method::POST, "/openai/v1/fine_tuning/jobs", Some(body)).await;
        self.wait_job(job["id"].as_str().expect("a job id"), &["succeeded"]).await
    }

    async fn chat(&self, deployment: &str) -> Answer {
        let body = json!({"model": deployment, "messages": [{"role": "user", "content": "hello there"}]});
        self.data(Method::POST, "/openai/v1/chat/completions", Some(body)).await
    }

    /// Polls a deployment until its provisioning state is `state` (or, for `None`, it is gone).
    async fn wait_deployment(&self, name: &str, state: Option<&str>) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let a = self.arm(Method::GET, &format!("/{name}?api-version=2024-10-01"), Some(KEY), None).await;
            let now = a.body["properties"]["provisioningState"].as_str().map(str::to_string);
            if (state.is_none() && a.status == StatusCode::NOT_FOUND) || (state.is_some() && now.as_deref() == state) {
                return a;
            }
            assert!(Instant::now() < deadline, "deployment {name} never reached {state:?}: {}", a.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12] && s.replace('-', "").len() == 32
}

/// The fine-tuned model name Azure gives: `{base}.ft-{32 hex}`.
fn is_azure_model(name: &str) -> bool {
    name.strip_prefix(&format!("{BASE}.ft-")).is_some_and(is_hex32)
}

fn put_body(sku: &str, name: &str, version: &str) -> Value {
    json!({"sku": {"name": sku, "capacity": 50}, "properties": {"model": {"format": "OpenAI", "name": name, "version": version}}})
}

#[tokio::test]
async fn an_upload_is_uploaded_until_processed_and_no_job_uses_it_before() {
    let ws = Workspace::new();
    let server = start(&ws, &["--file-delay-ms", "600000"]);
    let az = Az::new(&server);
    let file = az.upload("topics-train.jsonl").await;
    assert_eq!(file["status"], "uploaded", "{file}");
    assert!(file.as_object().unwrap().contains_key("expires_at"), "{file}");
    let id = file["id"].as_str().unwrap();
    assert_eq!(az.ok(Method::GET, &format!("/openai/v1/files/{id}"), None).await["status"], "uploaded");
    let listed = az.ok(Method::GET, "/openai/v1/files?purpose=fine-tune", None).await;
    assert_eq!(listed["data"][0]["status"], "uploaded", "{listed}");
    let job = json!({"model": BASE, "training_file": id});
    let a = az.data(Method::POST, "/openai/v1/fine_tuning/jobs", Some(job)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["error"]["param"], "training_file", "{}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("not processed"), "{}", a.body);
    assert!(a.header("apim-request-id").is_some_and(is_uuid), "{:?}", a.headers);
    let jobs = az.ok(Method::GET, "/openai/v1/fine_tuning/jobs", None).await;
    assert_eq!(jobs["data"], json!([]), "no job was created");
}

#[tokio::test]
async fn jobs_take_azure_base_models_and_answer_with_azure_names() {
    let ws = Workspace::new();
    let server = start(&ws, &["--file-delay-ms", "50", "--example-delay-ms", "1"]);
    let az = Az::new(&server);
    let training = az.processed_upload("topics-train.jsonl").await;
    let validation = az.processed_upload("topics-valid.jsonl").await;

    // Azure's checks: the suffix, the model.
    let create = |extra: Value| {
        let mut body = json!({"model": BASE, "training_file": training, "validation_file": validation});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, param) in [
        (json!({"suffix": "a".repeat(41)}), "suffix"),
        (json!({"suffix": "run.1"}), "suffix"),
        (json!({"model": "local/ngram"}), "model"),
        (json!({"model": "gpt-4.1-mini"}), "model"),
    ] {
        let a = az.data(Method::POST, "/openai/v1/fine_tuning/jobs", Some(create(extra.clone()))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{extra}: {}", a.body);
        assert_eq!(a.body["error"]["param"], param, "{extra}: {}", a.body);
    }

    let body = create(json!({
        "suffix": "r7-1",
        "metadata": {"sweep": "s1", "run": "r7"},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    }));
    let job = az.ok(Method::POST, "/openai/v1/fine_tuning/jobs", Some(body)).await;
    assert_eq!((job["model"].as_str(), job["suffix"].as_str()), (Some(BASE), Some("r7-1")), "{job}");
    assert_eq!(job["metadata"], json!({"sweep": "s1", "run": "r7"}), "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = az.wait_job(&id, &["succeeded"]).await;
    let model = done["fine_tuned_model"].as_str().expect("a fine-tuned model").to_string();
    assert!(is_azure_model(&model), "{done}");
    assert_eq!(done["model"], BASE);

    // Checkpoints: ftchkpt ids, the newest is the final model, the others its steps.
    let list = az.ok(Method::GET, &format!("/openai/v1/fine_tuning/jobs/{id}/checkpoints"), None).await;
    let checkpoints = list["data"].as_array().expect("checkpoints");
    assert_eq!(checkpoints.len(), 2, "{list}");
    for (i, c) in checkpoints.iter().enumerate() {
        assert!(c["id"].as_str().unwrap().strip_prefix("ftchkpt-").is_some_and(is_hex32), "{c}");
        assert!(c["metrics"]["step"].is_f64(), "Azure's step is a float: {c}");
        let name = c["fine_tuned_model_checkpoint"].as_str().unwrap();
        if i == 0 {
            assert_eq!(name, model, "{c}");
        } else {
            assert_eq!(name, format!("{model}:ckpt-step-{}", c["step_number"]), "{c}");
        }
    }
    let after = checkpoints[0]["id"].as_str().unwrap();
    let rest = az.ok(Method::GET, &format!("/openai/v1/fine_tuning/jobs/{id}/checkpoints?after={after}"), None).await;
    assert_eq!(rest["data"][0]["id"], checkpoints[1]["id"], "paged by Azure's ids: {rest}");

    // Events name models the Azure way too.
    let events = az.ok(Method::GET, &format!("/openai/v1/fine_tuning/jobs/{id}/events?limit=10000"), None).await;
    let text = events.to_string();
    assert!(!text.contains("ft:local") && text.contains(&model), "{text}");

    // A fine-tuned model continues; its model keeps the base's name.
    let more = json!({"model": model, "training_file": training, "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}});
    let continued = az.ok(Method::POST, "/openai/v1/fine_tuning/jobs", Some(more)).await;
    assert_eq!(continued["model"], model.as_str(), "{continued}");
    let continued = az.wait_job(continued["id"].as_str().unwrap(), &["succeeded"]).await;
    let second = continued["fine_tuned_model"].as_str().unwrap();
    assert!(is_azure_model(second) && second != model, "{continued}");

    // Cancel, list, and the dated surface the AzureOpenAI client uses.
    let slow = create(json!({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 20}}}}));
    let slow = az.ok(Method::POST, "/openai/v1/fine_tuning/jobs", Some(slow)).await;
    let cancelled = az
        .ok(Method::POST, &format!("/openai/v1/fine_tuning/jobs/{}/cancel", slow["id"].as_str().unwrap()), None)
        .await;
    assert_eq!((cancelled["status"].as_str(), cancelled["model"].as_str()), (Some("cancelled"), Some(BASE)));
    let dated = az.ok(Method::GET, &format!("/openai/fine_tuning/jobs/{id}?api-version=2024-10-21"), None).await;
    assert_eq!(dated["fine_tuned_model"], model.as_str());
    let listed = az.ok(Method::GET, "/openai/fine_tuning/jobs?api-version=2025-04-01-preview&limit=10", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3, "{listed}");
    let preview = az.ok(Method::GET, "/openai/v1/fine_tuning/jobs?api-version=preview", None).await;
    assert_eq!(preview["data"].as_array().unwrap().len(), 3);
    let a = az.data(Method::GET, "/openai/fine_tuning/jobs", None).await;
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("404")), "{}", a.body);
    let a = az.data(Method::GET, "/openai/v1/fine_tuning/jobs?api-version=2024-10-21", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);

    // The data plane's 401, with Azure's words and no key.
    let wrong = az.http.get(format!("{}/openai/v1/files", az.url)).header("api-key", "not-the-key-at-all");
    let a = az.send(wrong).await;
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("401")), "{}", a.body);
    assert!(!a.body.to_string().contains("not-the-key"));
}

#[tokio::test]
async fn chat_answers_only_through_a_provisioned_deployment_and_arm_manages_it() {
    let ws = Workspace::new();
    let server = start(&ws, &["--file-delay-ms", "0", "--deployment-delay-ms", "1500"]);
    let az = Az::new(&server);
    let training = az.processed_upload("topics-train.jsonl").await;
    let job = az.trained(&training, "dep").await;
    let model = job["fine_tuned_model"].as_str().unwrap().to_string();
    let name = "ftsweep-0123456789abcdef";

    // No deployment: Azure's 404, word for word (the model's own name is no deployment either).
    for deployment in [name, model.as_str()] {
        let a = az.chat(deployment).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        assert_eq!(a.body, json!({"error": {"code": "DeploymentNotFound", "message": NOT_DEPLOYED}}));
    }

    // PUT creates (201, Creating), the same PUT again is the same deployment (200).
    let body = put_body("DeveloperTier", &model, "1");
    let created = az.arm(Method::PUT, &format!("/{name}?api-version=2024-10-01"), Some(KEY), Some(body.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["properties"]["provisioningState"], "Creating", "{}", created.body);
    assert_eq!(created.body["id"], format!("{ACCOUNT}/deployments/{name}"));
    assert_eq!(created.body["type"], "Microsoft.CognitiveServices/accounts/deployments");
    assert_eq!(created.body["sku"], json!({"name": "DeveloperTier", "capacity": 50}));
    assert_eq!(created.body["properties"]["model"], body["properties"]["model"]);
    assert!(created.header("x-ms-request-id").is_some_and(is_uuid) && created.header("x-request-id").is_none());
    let again = az.arm(Method::PUT, &format!("/{name}?api-version=2024-10-01"), Some(KEY), Some(body)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);

    // While it is Creating, a chat is refused (checked only if a GET after the chat still says Creating).
    let early = az.chat(name).await;
    let state = az.arm(Method::GET, &format!("/{name}?api-version=2024-10-01"), Some(KEY), None).await;
    if state.body["properties"]["provisioningState"] == "Creating" {
        assert_eq!(early.status, StatusCode::NOT_FOUND, "{}", early.body);
    }
    az.wait_deployment(name, Some("Succeeded")).await;
    let a = az.chat(name).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["model"], model.as_str(), "the answer names the model: {}", a.body);
    assert!(!a.body["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{}", a.body);
    assert_eq!(a.body["prompt_filter_results"][0]["prompt_index"], 0, "{}", a.body);
    assert_eq!(a.body["choices"][0]["content_filter_results"]["hate"]["filtered"], false, "{}", a.body);
    let dated = json!({"messages": [{"role": "user", "content": "hello there"}]});
    let path = format!("/openai/deployments/{name}/chat/completions?api-version=2024-10-21");
    assert_eq!(az.ok(Method::POST, &path, Some(dated)).await["model"], model.as_str());
    let list = az.arm(Method::GET, "?api-version=2024-10-01", Some(KEY), None).await;
    assert_eq!(list.body["value"][0]["name"], name, "{}", list.body);

    // The deployment outlives a restart of the server.
    drop(server);
    let server = start(&ws, &["--file-delay-ms", "0", "--deployment-delay-ms", "1500"]);
    let az = Az::new(&server);
    let a = az.arm(Method::GET, &format!("/{name}?api-version=2024-10-01"), Some(KEY), None).await;
    assert_eq!(a.body["properties"]["provisioningState"], "Succeeded", "{}", a.body);

    // DELETE: 202, Deleting, then gone (404); chats are refused; a second DELETE is 204.
    let deleted = az.arm(Method::DELETE, &format!("/{name}?api-version=2024-10-01"), Some(KEY), None).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    assert_eq!(az.chat(name).await.status, StatusCode::NOT_FOUND);
    let gone = az.wait_deployment(name, None).await;
    assert_eq!(gone.body["error"]["code"], "DeploymentNotFound", "{}", gone.body);
    let again = az.arm(Method::DELETE, &format!("/{name}?api-version=2024-10-01"), Some(KEY), None).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    let list = az.arm(Method::GET, "?api-version=2024-10-01", Some(KEY), None).await;
    assert_eq!(list.body, json!({"value": []}));

    // A checkpoint deploys by its ftchkpt id; the base model by name and version, on a paid SKU.
    let checkpoints = az
        .ok(Method::GET, &format!("/openai/v1/fine_tuning/jobs/{}/checkpoints", job["id"].as_str().unwrap()), None)
        .await;
    let older = &checkpoints["data"][1];
    let body = put_body("DeveloperTier", older["id"].as_str().unwrap(), "1");
    let a = az.arm(Method::PUT, "/ckpt?api-version=2025-06-01", Some(KEY), Some(body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let body = put_body("GlobalStandard", "gpt-4.1-mini", "2025-04-14");
    let a = az.arm(Method::PUT, "/base?api-version=2024-10-01", Some(KEY), Some(body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    az.wait_deployment("ckpt", Some("Succeeded")).await;
    az.wait_deployment("base", Some("Succeeded")).await;
    let a = az.chat("ckpt").await;
    assert_eq!(a.body["model"], older["fine_tuned_model_checkpoint"], "{}", a.body);
    let a = az.chat("base").await;
    assert_eq!((a.body["model"].as_str(), a.body["choices"][0]["message"]["content"].as_str()), (Some(BASE), Some("")));
}

#[tokio::test]
async fn arm_refuses_bad_deployments_versions_and_tokens() {
    let ws = Workspace::new();
    let server = start(&ws, &["--file-delay-ms", "0"]);
    let az = Az::new(&server);
    let client = &az;
    let put =
        |body: Value| async move { client.arm(Method::PUT, "/d1?api-version=2024-10-01", Some(KEY), Some(body)).await };
    for (body, needle) in [
        (put_body("Cheap", "gpt-4.1-mini", "2025-04-14"), "SKU 'Cheap'"),
        (put_body("Standard", "gpt-5-turbo", "1"), "not found"),
        (put_body("Standard", "gpt-4.1-mini-2025-04-14", "1"), "without its date"),
        (put_body("Standard", "gpt-4.1-mini", "2024-01-01"), "no version"),
        (put_body("DeveloperTier", "gpt-4.1-mini", "2025-04-14"), "DeveloperTier"),
        (
            json!({"sku": {"name": "Standard", "capacity": 0}, "properties": {"model": {"format": "OpenAI", "name": "gpt-4.1-mini", "version": "2025-04-14"}}}),
            "capacity",
        ),
        (
            json!({"sku": {"name": "Standard"}, "properties": {"model": {"format": "ONNX", "name": "gpt-4.1-mini"}}}),
            "format",
        ),
    ] {
        let a = put(body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "InvalidResourceProperties", "{body}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains(needle), "{needle}: {}", a.body);
    }
    let list = az.arm(Method::GET, "?api-version=2024-10-01", Some(KEY), None).await;
    assert_eq!(list.body, json!({"value": []}), "nothing was created");

    let good = put_body("Standard", "gpt-4.1-mini", "2025-04-14");
    let a = az.arm(Method::PUT, "/d1", Some(KEY), Some(good.clone())).await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("MissingApiVersionParameter"))
    );
    // A data-plane version on the management API (a mistake in several docs' examples).
    let a = az.arm(Method::PUT, "/d1?api-version=2024-10-21", Some(KEY), Some(good.clone())).await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("NoRegisteredProviderFound"))
    );
    let a = az.arm(Method::PUT, "/d1?api-version=2024-10-01", Some("not-the-key-at-all"), Some(good.clone())).await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("InvalidAuthenticationToken"))
    );
    assert!(!a.body.to_string().contains("not-the-key"));
    let a = az.arm(Method::GET, "?api-version=2024-10-01", None, None).await;
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("AuthenticationFailed")));
    // The data plane's api-key is no ARM token.
    let url = format!("{}{ACCOUNT}/deployments?api-version=2024-10-01", az.url);
    let a = az.send(az.http.get(url).header("api-key", KEY)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    // Paths match in any case, as ARM's do.
    let lower = format!("{}{}/deployments/d1?api-version=2024-10-01", az.url, ACCOUNT.to_lowercase());
    let a = az.send(az.http.put(lower).bearer_auth(KEY).json(&good)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = az.arm(Method::GET, "/D1?api-version=2024-10-01", Some(KEY), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}
