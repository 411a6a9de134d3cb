//! `ftsweep serve --protocol together` over real HTTP on loopback: the presigned upload flow
//! (302, PUT without a key, preprocess, 409 for a known checksum), fine-tune creates checked like
//! Together's, a job followed to `completed` with its events, metrics and checkpoints, cancel,
//! chat serverless versus through a dedicated endpoint, and endpoints' lifecycle and persistence.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::protocol::Server;
use crate::util::{Workspace, example_data};

const KEY: &str = "sk-together-test-5b1f0c9e";
const BASE: &str = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference";

fn start(ws: &Workspace, state: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--protocol", "together", "--max-running", "4"];
    args.extend_from_slice(extra);
    let server = Server::start_args(ws, state, KEY, &args);
    assert!(server.url.ends_with("/v1"), "{}", server.url);
    server
}

/// A client with the key that never follows redirects (the 302 is the answer).
struct Api {
    http: reqwest::Client,
    url: String,
}

fn client(server: &Server) -> Api {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client");
    Api { http, url: server.url.clone() }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("a response");
        let status = response.status();
        let text = response.text().await.expect("a body");
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.ok(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.ok(Method::POST, path, Some(body)).await
    }

    /// A 400 (or other `status`) in Together's error shape; returns the error object.
    async fn refused(&self, method: Method, path: &str, body: Value, status: StatusCode) -> Value {
        let (got, v) = self.call(method.clone(), path, Some(body.clone())).await;
        assert_eq!(got, status, "{method} {path} {body}: {v}");
        let error = v["error"].clone();
        assert!(error["message"].is_string() && error["type"].is_string(), "Together's error shape: {v}");
        error
    }

    /// Announces an upload (JSON): the 302's Location and file id.
    async fn announce(&self, name: &str, checksum: &str) -> (String, String) {
        let body = json!({"purpose": "fine-tune", "file_name": name, "file_type": "jsonl", "checksum": checksum});
        let response = (self.http.post(format!("{}/files", self.url)).bearer_auth(KEY).json(&body).send().await)
            .expect("a response");
        assert_eq!(response.status(), StatusCode::FOUND, "{:?}", response.text().await);
        let location = response.headers()[LOCATION].to_str().expect("ASCII").to_string();
        let id = response.headers()["x-together-file-id"].to_str().expect("ASCII").to_string();
        (location, id)
    }

    /// The whole flow for an example file: announce, PUT without a key, preprocess.
    async fn upload_example(&self, name: &str) -> String {
        let bytes = std::fs::read(example_data(name)).expect("example data");
        let (location, id) = self.announce(name, &sha256_hex(&bytes)).await;
        let put = self.http.put(location).body(bytes).send().await.expect("the PUT");
        assert_eq!(put.status(), StatusCode::OK);
        let file = self.post(&format!("/files/{id}/preprocess"), json!({})).await;
        assert_eq!(file["Processed"], true, "{file}");
        id
    }

    async fn create(&self, body: Value) -> Value {
        let job = self.post("/fine-tunes", body).await;
        assert_eq!(job["status"], "pending", "{job}");
        job
    }

    /// Polls a job until its status is one of `statuses` (120 s at most); returns it and every
    /// status seen.
    async fn wait_for(&self, id: &str, statuses: &[&str]) -> (Value, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen: Vec<String> = Vec::new();
        loop {
            let job = self.get(&format!("/fine-tunes/{id}")).await;
            let status = job["status"].as_str().expect("a status").to_string();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if statuses.contains(&status.as_str()) {
                return (job, seen);
            }
            assert!(Instant::now() < deadline, "job {id} never reached {statuses:?}: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn chat(&self, model: &str, text: &str) -> (StatusCode, Value) {
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8, "temperature": 0});
        self.call(Method::POST, "/chat/completions", Some(body)).await
    }
}

fn topic_labels() -> BTreeSet<String> {
    let text = std::fs::read_to_string(example_data("topics-train.jsonl")).expect("example data");
    (text.lines().filter(|l| !l.trim().is_empty()))
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON")["messages"][2]["content"]
                .as_str()
                .expect("a reply")
                .to_string()
        })
        .collect()
}

const SPORTS: &str = "The striker scored twice in the final minutes of the match.";

#[tokio::test]
async fn uploads_take_the_presigned_flow_and_known_content_is_uploaded_once() {
    let ws = Workspace::new();
    let server = start(&ws, "serve.db", &[]);
    let api = client(&server);
    let bytes = std::fs::read(example_data("topics-train.jsonl")).expect("example data");
    let checksum = sha256_hex(&bytes);

    let (location, id) = api.announce("topics-train.jsonl", &checksum).await;
    assert!(location.starts_with(&server.url) && location.contains("/v1/uploads/"), "{location}");
    assert!(id.starts_with("file-") && id.len() == 41, "{id}");
    let pending = api.get(&format!("/files/{id}")).await;
    assert_eq!((pending["bytes"].as_u64(), &pending["Processed"]), (Some(0), &json!(false)), "{pending}");
    let (status, _) = api.call(Method::POST, &format!("/files/{id}/preprocess"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "preprocess before the bytes came");
    // The same checksum while the first upload is incomplete is a new announcement, not a 409.
    let (_, other) = api.announce("topics-train.jsonl", &checksum).await;
    assert_ne!(other, id);

    // The PUT carries no key; the token is the secret. A wrong token is refused.
    let wrong = format!("{}/uploads/{}", server.url, "0".repeat(64));
    assert_eq!(api.http.put(wrong).body("x").send().await.expect("a PUT").status(), StatusCode::NOT_FOUND);
    let short = format!("{}/uploads/abc", server.url);
    assert_eq!(api.http.put(short).body("x").send().await.expect("a PUT").status(), StatusCode::UNAUTHORIZED);
    let put = api.http.put(&location).body(bytes.clone()).send().await.expect("the PUT");
    assert_eq!(put.status(), StatusCode::OK);
    let again = api.http.put(&location).body(bytes.clone()).send().await.expect("the PUT");
    assert_eq!(again.status(), StatusCode::CONFLICT, "a presigned URL takes one upload");

    let file = api.post(&format!("/files/{id}/preprocess"), json!({})).await;
    assert_eq!(file["id"], id.as_str());
    assert_eq!((file["object"].as_str(), file["FileType"].as_str()), (Some("file"), Some("jsonl")));
    assert_eq!((file["bytes"].as_u64(), file["LineCount"].as_u64()), (Some(bytes.len() as u64), Some(723)));
    assert_eq!((&file["Processed"], file["processing_status"].as_str()), (&json!(true), Some("COMPLETED")));
    assert!(file["created_at"].is_i64(), "Unix seconds: {file}");

    // Known content: 409 with the file's id at the top level, in a JSON, form or multipart body.
    let known = json!({"purpose": "fine-tune", "file_name": "copy.jsonl", "file_type": "jsonl", "checksum": checksum});
    let (status, body) = api.call(Method::POST, "/files", Some(known)).await;
    assert_eq!((status, body["file_id"].as_str()), (StatusCode::CONFLICT, Some(id.as_str())), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let form = [("purpose", "fine-tune"), ("file_name", "copy.jsonl"), ("file_type", "jsonl"), ("checksum", &checksum)];
    let r =
        api.http.post(format!("{}/files", server.url)).bearer_auth(KEY).form(&form).send().await.expect("a response");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let multipart = reqwest::multipart::Form::new()
        .text("purpose", "fine-tune")
        .text("file_name", "new.jsonl")
        .text("file_type", "jsonl")
        .text("checksum", "ab".repeat(32));
    let r = api
        .http
        .post(format!("{}/files", server.url))
        .bearer_auth(KEY)
        .multipart(multipart)
        .send()
        .await
        .expect("a response");
    assert_eq!(r.status(), StatusCode::FOUND, "a new checksum in a multipart body");

    // Bad announcements name the field.
    for (body, param) in [
        (json!({"file_name": "a.jsonl"}), "purpose"),
        (json!({"purpose": "fine-tune"}), "file_name"),
        (json!({"purpose": "training", "file_name": "a.jsonl"}), "purpose"),
        (json!({"purpose": "fine-tune", "file_name": "a.txt", "file_type": "txt"}), "file_type"),
        (json!({"purpose": "fine-tune", "file_name": "a.jsonl", "checksum": "xyz"}), "checksum"),
    ] {
        let error = api.refused(Method::POST, "/files", body, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["param"], param, "{error}");
    }

    let listed = api.get("/files").await;
    assert!(listed["data"].as_array().expect("data").iter().any(|f| f["id"] == id.as_str()), "{listed}");
    let content =
        api.http.get(format!("{}/files/{id}/content", server.url)).bearer_auth(KEY).send().await.expect("content");
    assert_eq!(content.bytes().await.expect("bytes").as_ref(), bytes.as_slice());
    let deleted = api.ok(Method::DELETE, &format!("/files/{id}"), None).await;
    assert_eq!((deleted["id"].as_str(), &deleted["deleted"]), (Some(id.as_str()), &json!(true)));
    let (status, _) = api.call(Method::GET, &format!("/files/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Deleted content can be uploaded again.
    api.announce("topics-train.jsonl", &checksum).await;
}

#[tokio::test]
async fn fine_tune_creates_are_checked_like_together() {
    let ws = Workspace::new();
    let server = start(&ws, "serve.db", &[]);
    let api = client(&server);
    let train = api.upload_example("topics-train.jsonl").await;
    let (_, unprocessed) = api.announce("late.jsonl", &"cd".repeat(32)).await;

    let limits = api.get(&format!("/fine-tunes/models/limits?model_name={BASE}")).await;
    assert_eq!((limits["max_num_epochs"].as_i64(), limits["lora_training"]["max_rank"].as_i64()), (Some(20), Some(64)));
    assert!(limits["min_learning_rate"].as_f64() < limits["max_learning_rate"].as_f64(), "{limits}");
    let (status, _) = api.call(Method::GET, "/fine-tunes/models/limits?model_name=gpt-4o", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let base = json!({"model": BASE, "training_file": train});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        body
    };
    for (extra, param) in [
        (json!({"model": "gpt-4o-mini"}), "model"),
        (json!({"training_file": "file-nope"}), "training_file"),
        (json!({"training_file": unprocessed}), "training_file"),
        (json!({"validation_file": "file-nope", "n_evals": 1}), "validation_file"),
        (json!({"n_evals": 2}), "n_evals"),
        (json!({"n_epochs": 0}), "n_epochs"),
        (json!({"n_epochs": 21}), "n_epochs"),
        (json!({"n_epochs": 2.5}), "n_epochs"),
        (json!({"n_checkpoints": 0}), "n_checkpoints"),
        (json!({"learning_rate": 1.0}), "learning_rate"),
        (json!({"learning_rate": "fast"}), "learning_rate"),
        (json!({"batch_size": 4}), "batch_size"),
        (json!({"batch_size": "many"}), "batch_size"),
        (json!({"training_type": {"type": "Lora", "lora_r": 65}}), "training_type.lora_r"),
        (json!({"training_type": {"type": "Lora", "lora_dropout": 1.0}}), "training_type.lora_dropout"),
        (json!({"training_type": {"type": "QLoRA"}}), "training_type.type"),
        (json!({"training_method": {"method": "rlhf"}}), "training_method.method"),
        (json!({"training_method": {"method": "dpo", "dpo_beta": 0}}), "training_method.dpo_beta"),
        (json!({"training_method": {"method": "dpo", "train_on_inputs": true}}), "training_method.train_on_inputs"),
        (json!({"warmup_ratio": 1.5}), "warmup_ratio"),
        (json!({"suffix": "x".repeat(41)}), "suffix"),
        (json!({"random_seed": "seven"}), "random_seed"),
    ] {
        let error = api.refused(Method::POST, "/fine-tunes", with(extra.clone()), StatusCode::BAD_REQUEST).await;
        assert_eq!(error["param"], param, "{extra}: {error}");
    }
    let (status, _) = api.call(Method::GET, "/fine-tunes/ft-00000000-0000-4000-a000-000000000000", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/fine-tunes").await["data"], json!([]), "no refused create made a job");
    // Case does not matter in the training type; "max" is the largest batch.
    let job = api
        .create(with(json!({"training_type": {"type": "full"}, "batch_size": "max", "suffix": "x".repeat(40)})))
        .await;
    assert_eq!((job["training_type"]["type"].as_str(), job["batch_size"].as_i64()), (Some("Full"), Some(32)), "{job}");
}

#[tokio::test]
async fn a_fine_tune_runs_to_completed_with_together_events_metrics_and_checkpoints() {
    let ws = Workspace::new();
    let server = start(&ws, "serve.db", &[]);
    let api = client(&server);
    let train = api.upload_example("topics-train.jsonl").await;
    let valid = api.upload_example("topics-valid.jsonl").await;
    let job = api
        .create(json!({
            "model": BASE, "training_file": train, "validation_file": valid, "n_epochs": 2, "n_evals": 3,
            "n_checkpoints": 2, "batch_size": 16, "learning_rate": 2e-5, "warmup_ratio": 0.1,
            "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05},
            "training_method": {"method": "sft", "train_on_inputs": "auto"}, "suffix": "run-7-1", "random_seed": 3,
        }))
        .await;
    let id = job["id"].as_str().expect("an id").to_string();
    assert!(id.starts_with("ft-") && id.len() == 39, "{id}");
    let output = job["model_output_name"].as_str().expect("an output name").to_string();
    let prefix = "ftsweep-local/Meta-Llama-3.1-8B-Instruct-Reference-run-7-1-";
    assert!(output.starts_with(prefix) && output.len() == prefix.len() + 8, "{output}");
    assert!(job["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "ISO time: {job}");

    let (done, seen) = api.wait_for(&id, &["completed", "error", "cancelled"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        seen.iter().all(|s| ["pending", "queued", "running", "uploading", "completed"].contains(&s.as_str())),
        "{seen:?}"
    );
    for (key, value) in [
        ("n_epochs", json!(2)),
        ("n_evals", json!(3)),
        ("n_checkpoints", json!(2)),
        ("batch_size", json!(16)),
        ("learning_rate", json!(2e-5)),
        ("warmup_ratio", json!(0.1)),
        ("suffix", json!("run-7-1")),
        ("random_seed", json!(3)),
        ("model", json!(BASE)),
        ("training_file", json!(train)),
        ("validation_file", json!(valid)),
        ("model_output_name", json!(output)),
    ] {
        assert_eq!(done[key], value, "{key}: {done}");
    }
    assert_eq!(
        done["training_type"],
        json!({"type": "Lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_trainable_modules": "all-linear"})
    );
    let tokens = done["token_count"].as_u64().expect("token_count");
    assert!(tokens > 0 && done["total_price"].as_u64() == Some(tokens * 480), "{done}");
    let total = done["total_steps"].as_u64().expect("total_steps");
    assert_eq!((done["steps_completed"].as_u64(), done["epochs_completed"].as_u64()), (Some(total), Some(2)), "{done}");
    assert_eq!(total, 2 * 723_u64.div_ceil(16), "{done}");
    let listed = api.get("/fine-tunes").await;
    let found: Vec<&Value> =
        listed["data"].as_array().expect("data").iter().filter(|j| j["suffix"] == "run-7-1").collect();
    assert_eq!(found.len(), 1, "found again by its suffix: {listed}");

    let events = api.get(&format!("/fine-tunes/{id}/events")).await;
    let events = events["data"].as_array().expect("data");
    assert!(
        events.iter().all(|e| e["object"] == "fine-tune-event" && e["created_at"].is_string() && e["level"] == "info"),
        "{events:?}"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().expect("a type")).collect();
    assert_eq!(
        kinds,
        [
            "job_pending",
            "training_data_download_complete",
            "job_start",
            "training_start",
            "epoch_complete",
            "checkpoint_save",
            "epoch_complete",
            "training_complete",
            "model_uploading",
            "model_upload_complete",
            "job_complete",
        ],
        "oldest first"
    );
    let saved = events.iter().find(|e| e["type"] == "checkpoint_save").expect("a checkpoint event");
    assert_eq!(saved["step"].as_u64(), Some(total / 2), "{saved}");

    let metrics = api.get(&format!("/fine-tunes/{id}/metrics")).await;
    let rows = metrics["metrics"].as_array().expect("metrics");
    let train_rows: Vec<&Value> = rows.iter().filter(|r| r.get("train/loss").is_some()).collect();
    let eval_rows: Vec<&Value> = rows.iter().filter(|r| r.get("eval/loss").is_some()).collect();
    assert_eq!(train_rows.len() as u64, total, "a row per step");
    assert_eq!(eval_rows.len(), 3, "n_evals rows: {eval_rows:?}");
    assert!(rows.iter().all(|r| r["train/global_step"].is_u64()), "{rows:?}");
    let steps: Vec<u64> = rows.iter().map(|r| r["train/global_step"].as_u64().unwrap_or(0)).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "chronological: {steps:?}");
    assert_eq!(
        eval_rows.last().and_then(|r| r["train/global_step"].as_u64()),
        Some(total),
        "the last evaluation ends the training"
    );
    let last = train_rows.last().expect("rows");
    assert!((last["train/epoch"].as_f64().unwrap_or(0.0) - 2.0).abs() < 1e-9, "{last}");
    assert!(train_rows[1]["train/learning_rate"].as_f64() < train_rows[10]["train/learning_rate"].as_f64(), "warmup");

    let checkpoints = api.get(&format!("/fine-tunes/{id}/checkpoints")).await;
    let checkpoints = checkpoints["data"].as_array().expect("data");
    let shape: Vec<(u64, &str)> = checkpoints
        .iter()
        .map(|c| (c["step"].as_u64().unwrap_or(0), c["checkpoint_type"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(shape, [(total, "Final"), (total / 2, "Intermediate")], "{checkpoints:?}");
    assert!(checkpoints.iter().all(|c| c["created_at"].is_string() && c["path"].is_string()), "{checkpoints:?}");

    // Serverless: the LoRA output and the base model answer; a checkpoint does not.
    let (status, answer) = api.chat(&output, SPORTS).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["object"].as_str(), answer["model"].as_str()), (Some("chat.completion"), Some(output.as_str())));
    assert!(topic_labels().contains(answer["choices"][0]["message"]["content"].as_str().unwrap_or("")), "{answer}");
    assert!(answer["usage"]["total_tokens"].as_u64() > Some(0), "{answer}");
    let (status, baseline) = api.chat(BASE, SPORTS).await;
    assert_eq!(
        (status, baseline["choices"][0]["message"]["content"].as_str()),
        (StatusCode::OK, Some("")),
        "{baseline}"
    );
    let (status, refused) = api.chat(&format!("{id}:{}", total / 2), SPORTS).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_available")),
        "{refused}"
    );

    // A completed job cannot be cancelled.
    let error =
        api.refused(Method::POST, &format!("/fine-tunes/{id}/cancel"), json!({}), StatusCode::BAD_REQUEST).await;
    assert!(error["message"].as_str().unwrap_or("").contains("completed"), "{error}");
}

#[tokio::test]
async fn a_cancelled_fine_tune_is_cancel_requested_then_cancelled() {
    let ws = Workspace::new();
    let server = start(&ws, "serve.db", &["--example-delay-ms", "2"]);
    let api = client(&server);
    let train = api.upload_example("topics-train.jsonl").await;
    let job = api.create(json!({"model": BASE, "training_file": train, "n_epochs": 5, "batch_size": 8})).await;
    let id = job["id"].as_str().expect("an id");
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get(&format!("/fine-tunes/{id}")).await["steps_completed"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the job never trained a step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = api.post(&format!("/fine-tunes/{id}/cancel"), json!({})).await;
    assert!(["cancel_requested", "cancelled"].contains(&cancelled["status"].as_str().unwrap_or("")), "{cancelled}");
    let (done, _) = api.wait_for(id, &["cancelled"]).await;
    let again = api.post(&format!("/fine-tunes/{id}/cancel"), json!({})).await;
    assert_eq!(again["status"], "cancelled", "a second cancel answers the job as it is");
    let kinds: Vec<String> =
        (api.get(&format!("/fine-tunes/{id}/events")).await["data"].as_array().expect("data").iter())
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect();
    assert_eq!(kinds.last().map(String::as_str), Some("cancel_requested"), "{kinds:?}");
    // It pays for the steps it trained, fewer than all.
    let full = 5 * 723_u64.div_ceil(8);
    let steps = done["steps_completed"].as_u64().expect("steps_completed");
    assert!(steps < full && done["token_count"].as_u64() > Some(0), "{done}");
    let (status, _) = api.chat(done["model_output_name"].as_str().expect("a name"), SPORTS).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a cancelled job made no model");
}

#[tokio::test]
async fn a_full_fine_tune_and_checkpoints_answer_only_through_a_started_endpoint() {
    let ws = Workspace::new();
    let server = start(&ws, "serve.db", &["--endpoint-delay-ms", "400"]);
    let api = client(&server);
    let train = api.upload_example("topics-train.jsonl").await;
    let job = api
        .create(json!({"model": BASE, "training_file": train, "n_epochs": 2, "n_checkpoints": 2, "training_type": {"type": "Full"}}))
        .await;
    let id = job["id"].as_str().expect("an id").to_string();
    let output = job["model_output_name"].as_str().expect("a name").to_string();
    let (status, refused) = api.chat(&output, SPORTS).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_available")),
        "not ready"
    );
    let (done, _) = api.wait_for(&id, &["completed", "error"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (status, refused) = api.chat(&output, SPORTS).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_available")),
        "{refused}"
    );
    assert!(refused["error"]["message"].as_str().unwrap_or("").starts_with("Unable to access model"), "{refused}");
    let (status, _) = api.chat("nobody/unknown-model", SPORTS).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let endpoint_for = |model: &str| {
        json!({"model": model, "hardware": "1x_nvidia_h100_80gb_sxm", "autoscaling": {"min_replicas": 1, "max_replicas": 1},
               "display_name": "ftsweep-0123456789abcdef", "state": "STARTED", "inactive_timeout": 10})
    };
    let error = api.refused(Method::POST, "/endpoints", endpoint_for("nobody/unknown"), StatusCode::BAD_REQUEST).await;
    assert_eq!(error["param"], "model");
    let mut no_hardware = endpoint_for(&output);
    no_hardware.as_object_mut().expect("an object").remove("hardware");
    assert_eq!(
        api.refused(Method::POST, "/endpoints", no_hardware, StatusCode::BAD_REQUEST).await["param"],
        "hardware"
    );

    let endpoint = api.post("/endpoints", endpoint_for(&output)).await;
    assert_eq!((endpoint["object"].as_str(), endpoint["type"].as_str()), (Some("endpoint"), Some("dedicated")));
    assert_eq!((endpoint["state"].as_str(), endpoint["model"].as_str()), (Some("PENDING"), Some(output.as_str())));
    assert_eq!(endpoint["display_name"], "ftsweep-0123456789abcdef");
    let (eid, name) =
        (endpoint["id"].as_str().expect("an id").to_string(), endpoint["name"].as_str().expect("a name").to_string());
    assert!(eid.starts_with("endpoint-"), "{eid}");
    let (status, _) = api.chat(&name, SPORTS).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not started yet");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut states = Vec::new();
    loop {
        let state = api.get(&format!("/endpoints/{eid}")).await["state"].as_str().expect("a state").to_string();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "STARTED" {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(states.iter().all(|s| ["PENDING", "STARTING", "STARTED"].contains(&s.as_str())), "{states:?}");
    let (status, answer) = api.chat(&name, SPORTS).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(topic_labels().contains(answer["choices"][0]["message"]["content"].as_str().unwrap_or("")), "{answer}");
    assert_eq!(answer["model"], name.as_str());

    // A checkpoint through its own endpoint.
    let step = done["total_steps"].as_u64().expect("total_steps") / 2;
    let checkpoint = api.post("/endpoints", endpoint_for(&format!("{id}:{step}"))).await;
    let mine = api.get("/endpoints?type=dedicated&mine=true").await;
    let ids: Vec<&str> = mine["data"].as_array().expect("data").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, [eid.as_str(), checkpoint["id"].as_str().expect("an id")], "{mine}");
    assert_eq!(
        api.refused(Method::GET, "/endpoints?type=shared", json!({}), StatusCode::BAD_REQUEST).await["param"],
        "type"
    );

    let (status, _) = api.call(Method::DELETE, &format!("/endpoints/{eid}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::GET, &format!("/endpoints/{eid}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(Method::DELETE, &format!("/endpoints/{eid}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, refused) = api.chat(&name, SPORTS).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_available")),
        "deleted"
    );

    // Endpoints persist: a restarted server still has the checkpoint's.
    drop(server);
    let server = start(&ws, "serve.db", &["--endpoint-delay-ms", "0"]);
    let api = client(&server);
    let kept = api.get(&format!("/endpoints/{}", checkpoint["id"].as_str().expect("an id"))).await;
    assert_eq!(
        (kept["state"].as_str(), kept["model"].as_str()),
        (Some("STARTED"), Some(format!("{id}:{step}").as_str()))
    );
    let (status, answer) = api.chat(kept["name"].as_str().expect("a name"), SPORTS).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn a_file_uploaded_as_the_typescript_sdk_does_trains_without_preprocess() {
    let ws = Workspace::new();
    let server = start(&ws, "serve.db", &[]);
    let api = client(&server);
    // The fields in the query string and a form body, no file type nor checksum; then the PUT, and
    // no preprocess.
    let announce = |name: &str| {
        let url = format!("{}/files?file_name={name}&purpose=fine-tune", server.url);
        api.http.post(url).bearer_auth(KEY).form(&[("file_name", name), ("purpose", "fine-tune")]).send()
    };
    let r = announce("data/topics-train.jsonl").await.expect("a response");
    assert_eq!(r.status(), StatusCode::FOUND);
    let (location, id) = (
        r.headers()[LOCATION].to_str().expect("ASCII").to_string(),
        r.headers()["x-together-file-id"].to_str().expect("ASCII").to_string(),
    );
    let bytes = std::fs::read(example_data("topics-train.jsonl")).expect("example data");
    assert_eq!(api.http.put(location).body(bytes).send().await.expect("the PUT").status(), StatusCode::OK);
    let job = api.create(json!({"model": BASE, "training_file": id, "n_epochs": 1})).await;
    let file = api.get(&format!("/files/{id}")).await;
    assert_eq!((&file["Processed"], file["LineCount"].as_u64()), (&json!(true), Some(723)), "{file}");
    let (done, _) = api.wait_for(job["id"].as_str().expect("an id"), &["completed", "error"]).await;
    assert_eq!(done["status"], "completed", "{done}");

    // A file that is not conversations is refused at the create, naming it.
    let r = announce("bad.jsonl").await.expect("a response");
    let (location, bad) = (
        r.headers()[LOCATION].to_str().expect("ASCII").to_string(),
        r.headers()["x-together-file-id"].to_str().expect("ASCII").to_string(),
    );
    assert_eq!(
        api.http.put(location).body("{\"text\": \"hello\"}\n").send().await.expect("the PUT").status(),
        StatusCode::OK
    );
    let error = api
        .refused(Method::POST, "/fine-tunes", json!({"model": BASE, "training_file": bad}), StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(error["param"], "training_file", "{error}");
    assert!(error["message"].as_str().unwrap_or("").contains("bad.jsonl"), "{error}");
}
