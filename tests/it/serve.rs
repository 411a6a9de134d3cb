//! `ftsweep serve` over real HTTP on loopback: the real binary on a free port with a temporary
//! state file, the example data, and reqwest as the client.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::util::{Workspace, example_data};

const KEY: &str = "test-key-5d2e9a41c7";

/// A running `ftsweep serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
    // Kept open so the server's stdout stays writable.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts the server on `ws`'s `serve.db` and reads the URL it prints.
    fn start(ws: &Workspace, log: &str, extra: &[&str]) -> Server {
        let log = ws.path(log);
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
            .args(["serve", "--port", "0", "--key", KEY, "--state"])
            .arg(ws.path("serve.db"))
            .args(extra)
            .current_dir(ws.dir.path())
            .env_remove("FTSWEEP_SERVE_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("a log file"))
            .spawn()
            .expect("starting ftsweep serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading the URL line");
        let server = Server { child, url: line.trim().to_string(), log, _stdout: stdout };
        assert!(
            server.url.starts_with("http://127.0.0.1:") && server.url.ends_with("/v1"),
            "no URL on stdout ({line:?}); stderr:\n{}",
            server.stderr()
        );
        server
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn api(&self) -> Api {
        Api { http: reqwest::Client::new(), url: self.url.clone() }
    }

    fn addr(&self) -> SocketAddr {
        self.url.trim_start_matches("http://").trim_end_matches("/v1").parse().expect("host:port")
    }

    /// The server's peak resident memory so far, in KiB (Linux).
    #[cfg(target_os = "linux")]
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("a VmHWM line");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM in kB")
    }

    /// Sends SIGTERM and waits up to `bound` for the server to exit; returns its exit status and
    /// how long it took, or `None` if it was still running.
    #[cfg(unix)]
    fn terminate_within(&mut self, bound: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM");
        let start = Instant::now();
        while start.elapsed() < bound {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and returns whether the server exited successfully within 10 s.
    #[cfg(unix)]
    fn terminate(&mut self) -> bool {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that sends the right key.
struct Api {
    http: reqwest::Client,
    url: String,
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
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// A request that must answer 200.
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

    async fn upload(&self, filename: &str, content: Vec<u8>, purpose: &str) -> String {
        let form = reqwest::multipart::Form::new()
            .text("purpose", purpose.to_string())
            .part("file", reqwest::multipart::Part::bytes(content).file_name(filename.to_string()));
        let response = self
            .http
            .post(format!("{}/files", self.url))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), StatusCode::OK);
        let file: Value = response.json().await.expect("a file object");
        assert_eq!((file["object"].as_str(), file["purpose"].as_str()), (Some("file"), Some(purpose)));
        file["id"].as_str().expect("a file id").to_string()
    }

    async fn upload_example(&self, name: &str) -> String {
        self.upload(name, std::fs::read(example_data(name)).expect("example data"), "fine-tune").await
    }

    /// Creates a supervised job on `training` with the given extra fields.
    async fn create_job(&self, training: &str, hyperparameters: Value, extra: Value) -> Value {
        let body = json!({
            "model": "local/ngram",
            "training_file": training,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        });
        let job = self.post("/fine_tuning/jobs", merged(body, extra)).await;
        assert_eq!(job["status"], "validating_files", "{job}");
        job
    }

    /// Polls a job until its status is one of `statuses` (60 s at most).
    async fn wait_for(&self, id: &str, statuses: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.get(&format!("/fine_tuning/jobs/{id}")).await;
            if statuses.iter().any(|s| job["status"] == *s) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} never reached {statuses:?}: {job}");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        let list = self.get(&format!("/fine_tuning/jobs/{id}/events?limit=10000")).await;
        list["data"].as_array().expect("events").clone()
    }

    async fn chat(&self, model: &str, text: &str, extra: Value) -> Value {
        // The local model is deterministic: a temperature is accepted and changes nothing.
        let body = json!({"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0.7});
        self.post("/chat/completions", merged(body, extra)).await
    }
}

/// The multipart boundary of raw uploads.
const BOUNDARY: &str = "ftsweep-test-boundary";

/// A raw upload's body: `purpose`, then `file` with `content`.
fn multipart_body(content: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Opens a connection and sends the head of a `POST /v1/files` of `length` bytes.
fn raw_upload(addr: SocketAddr, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("sending the head");
    stream
}

/// Sends `bytes` one byte every 0.5 s until the server stops reading or closes the connection (or
/// 60 s pass), then returns what it answered and whether it closed the connection.
fn trickle(mut stream: TcpStream, bytes: &[u8]) -> (String, bool) {
    stream.set_read_timeout(Some(Duration::from_millis(500))).expect("a read timeout");
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    for byte in bytes.iter().cycle() {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        if stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    if !closed {
        // Whatever the server answered before the client gave up.
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let _ = stream.read_to_end(&mut answer);
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

/// `body` with the fields of `extra` added.
fn merged(mut body: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().expect("a list").iter().map(|x| x["id"].as_str().expect("an id").to_string()).collect()
}

fn messages(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["message"].as_str()).collect()
}

/// The example set's labels: every training reply.
fn topic_labels() -> BTreeSet<String> {
    let text = std::fs::read_to_string(example_data("topics-train.jsonl")).expect("example data");
    let labels: BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["messages"].as_array()?.last()?["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(labels.len(), 21);
    labels
}

#[tokio::test]
async fn requests_need_the_key_and_errors_have_openai_shapes() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &[]);
    let http = reqwest::Client::new();
    let models = format!("{}/models", server.url);

    let unauthorized = json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                        "param": null, "code": "invalid_api_key"}});
    for request in [
        http.get(&models),
        http.get(&models).bearer_auth("wrong-key-8c1f"),
        http.get(&models).header("api-key", "sk-nope"),
    ] {
        let response = request.send().await.expect("a response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let request_id = response.headers()["x-request-id"].to_str().expect("ASCII").to_string();
        assert!(request_id.starts_with("req_") && request_id.len() > 20, "{request_id}");
        let text = response.text().await.expect("a body");
        assert!(!text.contains("wrong-key") && !text.contains("sk-nope"), "the key is echoed: {text}");
        assert_eq!(serde_json::from_str::<Value>(&text).expect("JSON"), unauthorized);
    }
    // Azure style: an `api-key` header and an `api-version` parameter.
    let azure = http.get(format!("{models}?api-version=2024-10-21")).header("api-key", KEY).send().await.expect("ok");
    assert_eq!(azure.status(), StatusCode::OK);
    assert!(azure.headers().contains_key("x-request-id"));
    assert!(!server.stderr().contains(KEY), "the key is logged");

    let api = server.api();
    let (status, body) = api.call(Method::GET, "/files/file-x", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let no_file = json!({"error": {"message": "No such File object: file-x", "type": "invalid_request_error",
                                   "param": "id", "code": null}});
    assert_eq!(body, no_file);
    let (status, body) = api.call(Method::GET, "/fine_tuning/jobs/ftjob-x/events", None).await;
    assert_eq!((status, body["error"]["param"].as_str()), (StatusCode::NOT_FOUND, Some("id")));
    let (status, body) = api.call(Method::GET, "/no/such/route", None).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Invalid URL (GET /v1/no/such/route)"))
    );
    let (status, body) = api.call(Method::PUT, "/models", None).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("invalid_request_error"))
    );

    // Bad bodies are 400s that name the field.
    let response = http
        .post(format!("{}/fine_tuning/jobs", server.url))
        .bearer_auth(KEY)
        .body("{\"model\": ")
        .send()
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let multipart =
        http.post(format!("{}/files", server.url)).bearer_auth(KEY).body("x").send().await.expect("a response");
    assert_eq!(multipart.status(), StatusCode::BAD_REQUEST);
    let train = api.upload_example("topics-train.jsonl").await;
    let batch = api.upload("batch.jsonl", b"{}".to_vec(), "batch").await;
    let hp = |n_epochs: Value, batch_size: Value, lr: Value| {
        json!({"model": "local/ngram", "training_file": train,
               "hyperparameters": {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": lr}})
    };
    let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (json!({"training_file": train}), "model", None),
        (json!({"model": "gpt-4o", "training_file": train}), "model", Some("model_not_available")),
        (json!({"model": "local/ngram", "training_file": "file-nope"}), "training_file", None),
        (json!({"model": "local/ngram", "training_file": batch}), "training_file", None),
        (
            json!({"model": "local/ngram", "training_file": train, "validation_file": "file-nope"}),
            "validation_file",
            None,
        ),
        (hp(json!(0), json!("auto"), json!("auto")), "hyperparameters.n_epochs", None),
        (hp(json!(51), json!("auto"), json!("auto")), "hyperparameters.n_epochs", None),
        (hp(json!(2), json!(257), json!("auto")), "hyperparameters.batch_size", None),
        (hp(json!(2), json!("big"), json!("auto")), "hyperparameters.batch_size", None),
        (hp(json!(2), json!(8), json!(-1.0)), "hyperparameters.learning_rate_multiplier", None),
        (json!({"model": "local/ngram", "training_file": train, "suffix": "s".repeat(65)}), "suffix", None),
        (json!({"model": "local/ngram", "training_file": train, "metadata": many}), "metadata", None),
        (json!({"model": "local/ngram", "training_file": train, "metadata": {"k": "v".repeat(513)}}), "metadata", None),
        (json!({"model": "local/ngram", "training_file": train, "seed": -1}), "seed", None),
    ];
    for (body, param, code) in cases {
        let (status, error) = api.call(Method::POST, "/fine_tuning/jobs", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["param"].as_str(), Some(param), "{body}: {error}");
        assert_eq!(error["error"]["code"].as_str(), code, "{body}: {error}");
    }
    let jobs = api.get("/fine_tuning/jobs").await;
    assert_eq!(jobs["data"], json!([]), "a refused request creates no job");

    let chat = |model: &str, extra: Value| {
        merged(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}), extra)
    };
    let (status, error) =
        api.call(Method::POST, "/chat/completions", Some(chat("ft:local/ngram:local::nope", json!({})))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "model_not_found");
    for (extra, param) in
        [(json!({"n": 2}), "n"), (json!({"messages": []}), "messages"), (json!({"top_logprobs": 3}), "top_logprobs")]
    {
        let (status, error) = api.call(Method::POST, "/chat/completions", Some(chat("local/ngram", extra))).await;
        assert_eq!((status, error["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some(param)), "{error}");
    }
}

#[test]
fn serve_needs_a_key_and_a_free_port() {
    let ws = Workspace::new();
    let out = ws.cmd().env_remove("FTSWEEP_SERVE_KEY").args(["serve", "--port", "0"]).output().expect("running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs an API key") && stderr.contains("hint: set FTSWEEP_SERVE_KEY"), "{stderr}");
    assert!(out.stdout.is_empty());

    let server = Server::start(&ws, "serve.log", &[]);
    let port = server.url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/v1").to_string();
    let out = ws.cmd().env("FTSWEEP_SERVE_KEY", KEY).args(["serve", "--port", &port]).output().expect("running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot listen on 127.0.0.1:") && stderr.contains("--port"), "{stderr}");
    assert!(!stderr.contains(KEY), "the key is echoed: {stderr}");
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_headers() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &["--rpm", "3"]);
    let http = reqwest::Client::new();
    let models = format!("{}/models", server.url);
    let header = |r: &reqwest::Response, name: &str| r.headers()[name].to_str().expect("ASCII").to_string();

    // A request without the key is refused and not counted.
    let refused = http.get(&models).send().await.expect("a response");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "3");
    for remaining in ["2", "1", "0"] {
        let r = http.get(&models).bearer_auth(KEY).send().await.expect("a response");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), remaining);
        let reset = header(&r, "x-ratelimit-reset-requests");
        assert!(reset.ends_with('s') && reset.len() >= 2, "a Go duration: {reset}");
    }
    let limited = http.get(&models).bearer_auth(KEY).send().await.expect("a response");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait_ms: u64 = header(&limited, "retry-after-ms").parse().expect("milliseconds");
    assert!((1..=60_000).contains(&wait_ms), "{wait_ms}");
    assert!(header(&limited, "retry-after").parse::<u64>().is_ok_and(|s| (1..=60).contains(&s)));
    assert!(header(&limited, "x-request-id").starts_with("req_"));
    let body: Value = limited.json().await.expect("JSON");
    assert_eq!(
        (body["error"]["type"].as_str(), body["error"]["code"].as_str()),
        (Some("requests"), Some("rate_limit_exceeded"))
    );
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.starts_with("Rate limit reached for requests")));
}

#[tokio::test]
async fn a_job_trains_and_reports_like_openai() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &[]);
    let api = server.api();
    let train = api.upload_example("topics-train.jsonl").await;
    let valid = api.upload_example("topics-valid.jsonl").await;
    assert_ne!(train, api.upload_example("topics-train.jsonl").await, "two uploads are two files");

    let metadata = json!({"suite": "serve", "case": "main"});
    let extra = json!({"validation_file": valid, "metadata": metadata, "suffix": "topics", "seed": 7});
    let hp = json!({"n_epochs": 3, "batch_size": 32});
    let a = api.create_job(&train, hp.clone(), extra).await;
    assert_eq!((a["object"].as_str(), a["metadata"].clone()), (Some("fine_tuning.job"), metadata));
    assert_eq!(a["method"]["supervised"]["hyperparameters"]["n_epochs"], 3);
    // No validation file and no metadata; the deprecated top-level hyperparameters.
    let body =
        json!({"model": "local/ngram", "training_file": train, "hyperparameters": {"n_epochs": 1, "batch_size": 64}});
    let b = api.post("/fine_tuning/jobs", body).await;
    let (a_id, b_id) = (a["id"].as_str().expect("an id"), b["id"].as_str().expect("an id"));

    let a = api.wait_for(a_id, &["succeeded", "failed", "cancelled"]).await;
    let b = api.wait_for(b_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("succeeded"), Some("succeeded")), "{a}\n{b}");
    let model = a["fine_tuned_model"].as_str().expect("a model").to_string();
    assert!(model.starts_with("ft:local/ngram:local:topics:"), "{model}");
    assert!(a["trained_tokens"].as_u64().is_some_and(|t| t > 0) && a["finished_at"].as_i64().is_some(), "{a}");
    assert!(a["hyperparameters"]["learning_rate_multiplier"].is_number(), "resolved: {a}");
    assert!(a["error"].is_null());

    // Listing: newest first, metadata filters, pagination without last_id.
    let list = async |q: &str| api.get(&format!("/fine_tuning/jobs{q}")).await;
    assert_eq!(ids(&list("").await), [b_id, a_id]);
    assert_eq!(ids(&list("?metadata[suite]=serve&metadata[case]=main").await), [a_id]);
    assert!(ids(&list("?metadata[suite]=serve&metadata[case]=other").await).is_empty());
    assert_eq!(ids(&list("?metadata=null").await), [b_id]);
    let first = list("?limit=1").await;
    assert_eq!((ids(&first), first["has_more"].as_bool()), (vec![b_id.to_string()], Some(true)));
    assert!(first.get("last_id").is_none(), "{first}");
    let second = list(&format!("?limit=1&after={b_id}")).await;
    assert_eq!((ids(&second), second["has_more"].as_bool()), (vec![a_id.to_string()], Some(false)));

    // Events: newest first, metrics events with data, the milestones in order.
    let events = api.events(a_id).await;
    let texts = messages(&events);
    assert_eq!(texts.first(), Some(&"The job has successfully completed"));
    assert_eq!(texts.last().copied(), Some(format!("Created fine-tuning job: {a_id}").as_str()));
    let position = |prefix: &str| {
        texts.iter().position(|m| m.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {texts:?}"))
    };
    assert!(position("New fine-tuned model created: ft:") < position("Step 69/69"));
    assert!(position("Fine-tuning job started") < position("Validating training file"));
    let metrics: Vec<&Value> = events.iter().filter(|e| e["type"] == "metrics").collect();
    assert_eq!(metrics.len(), 69, "23 steps per epoch for 723 examples in batches of 32");
    assert!(metrics.iter().all(|e| e["data"]["train_loss"].is_number() && e["data"]["total_steps"] == 69));
    assert!(metrics.windows(2).all(|w| w[0]["data"]["step"].as_u64() > w[1]["data"]["step"].as_u64()));
    // Full validation passes at the first step past each quarter of an epoch, and at its end.
    let validated: Vec<&&Value> = metrics.iter().filter(|e| e["data"]["full_valid_loss"].is_number()).collect();
    let steps: Vec<u64> = validated.iter().filter_map(|e| e["data"]["step"].as_u64()).collect();
    assert_eq!(steps, [69, 64, 58, 52, 46, 41, 35, 29, 23, 18, 12, 6]);
    assert!(validated.iter().all(|e| e["data"]["train_loss"].is_number() && e["data"]["valid_loss"].is_number()));
    assert!(validated[0]["message"].as_str().is_some_and(|m| m.starts_with("Step 69/69: training loss=")));
    assert!(validated[1]["message"].as_str().is_some_and(|m| m.contains(", full validation loss=")));
    let page = api.get(&format!("/fine_tuning/jobs/{a_id}/events?limit=2")).await;
    assert_eq!(
        (ids(&page), page["has_more"].as_bool()),
        (
            vec![
                events[0]["id"].as_str().unwrap_or_default().to_string(),
                events[1]["id"].as_str().unwrap_or_default().to_string()
            ],
            Some(true)
        )
    );
    let after = api
        .get(&format!("/fine_tuning/jobs/{a_id}/events?limit=1&after={}", events[1]["id"].as_str().unwrap_or_default()))
        .await;
    assert_eq!(after["data"][0], events[2]);
    assert!(messages(&api.events(b_id).await).iter().any(|m| m.starts_with("No validation file was given")));

    // Checkpoints: the last three epochs, newest first.
    let checkpoints = api.get(&format!("/fine_tuning/jobs/{a_id}/checkpoints")).await;
    let steps: Vec<u64> =
        checkpoints["data"].as_array().expect("a list").iter().filter_map(|c| c["step_number"].as_u64()).collect();
    assert_eq!(steps, [69, 46, 23]);
    let newest = &checkpoints["data"][0];
    assert_eq!(
        (checkpoints["first_id"].clone(), checkpoints["has_more"].as_bool()),
        (newest["id"].clone(), Some(false))
    );
    assert!(newest["id"].as_str().is_some_and(|id| id.starts_with("ftckpt_")));
    assert_eq!(newest["fine_tuned_model_checkpoint"], format!("{model}:ckpt-step-69"));
    assert_eq!(
        (newest["object"].as_str(), newest["fine_tuning_job_id"].as_str()),
        (Some("fine_tuning.job.checkpoint"), Some(a_id))
    );
    assert!(newest["metrics"]["full_valid_mean_token_accuracy"].is_number(), "{newest}");
    let oldest_checkpoint =
        checkpoints["data"][2]["fine_tuned_model_checkpoint"].as_str().expect("a model").to_string();

    // The result file: one CSV row per step, validation cells where the validation set was scored.
    let results = a["result_files"][0].as_str().expect("a result file");
    assert_eq!(api.get(&format!("/files/{results}")).await["purpose"], "fine-tune-results");
    let csv = server
        .api()
        .http
        .get(format!("{}/files/{results}/content", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("content");
    let csv = csv.text().await.expect("text");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy");
    assert_eq!(lines.len(), 1 + 69);
    assert!(lines[1].starts_with("1,") && lines[1].ends_with(",,"), "{}", lines[1]);
    assert_eq!(lines.iter().skip(1).filter(|l| !l.ends_with(",,")).count(), 12);

    // Chat completions with the model, a checkpoint and the base model.
    let labels = topic_labels();
    let answer = api.chat(&model, "Who wrote Pride and Prejudice?", json!({"logprobs": true, "top_logprobs": 3})).await;
    let content = answer["choices"][0]["message"]["content"].as_str().expect("content").to_string();
    assert!(labels.contains(&content), "{answer}");
    assert_eq!((answer["object"].as_str(), answer["model"].as_str()), (Some("chat.completion"), Some(model.as_str())));
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let token = &answer["choices"][0]["logprobs"]["content"][0];
    assert_eq!(token["token"].as_str(), Some(content.as_str()));
    assert!(token["logprob"].as_f64().is_some_and(|l| l <= 0.0));
    let top: Vec<f64> =
        token["top_logprobs"].as_array().expect("top").iter().filter_map(|t| t["logprob"].as_f64()).collect();
    assert!(top.len() == 3 && top.windows(2).all(|w| w[0] >= w[1]), "{token}");
    assert_eq!(token["top_logprobs"][0]["token"], token["token"]);
    assert!(answer["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0));
    assert!(answer["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0));
    let plain = api.chat(&model, "Who wrote Pride and Prejudice?", json!({})).await;
    assert!(plain["choices"][0]["logprobs"].is_null());
    let from_checkpoint = api.chat(&oldest_checkpoint, "What is your favourite food?", json!({})).await;
    assert!(labels.contains(from_checkpoint["choices"][0]["message"]["content"].as_str().unwrap_or_default()));
    let base = api.chat("local/ngram", "hello", json!({})).await;
    assert_eq!(base["choices"][0]["message"]["content"], "");

    // Models: the base model and both jobs' models.
    let models = ids(&api.get("/models").await);
    assert!(models.contains(&"local/ngram".to_string()) && models.contains(&model), "{models:?}");
    assert!(models.contains(&b["fine_tuned_model"].as_str().unwrap_or_default().to_string()));
    assert_eq!(api.get(&format!("/models/{model}")).await["owned_by"], "org-local");
    assert_eq!(api.get("/models/local/ngram").await["id"], "local/ngram");

    // A succeeded job cannot be cancelled; files can be listed and deleted.
    let (status, _) = api.call(Method::POST, &format!("/fine_tuning/jobs/{a_id}/cancel"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let files = api.get("/files?purpose=fine-tune&order=asc").await;
    assert_eq!(ids(&files)[..2], [train.clone(), valid.clone()]);
    assert_eq!(api.ok(Method::DELETE, &format!("/files/{valid}"), None).await["deleted"], true);
    assert_eq!(api.call(Method::GET, &format!("/files/{valid}"), None).await.0, StatusCode::NOT_FOUND);
}

/// The full validation loss of a job's first epoch, from its checkpoint.
async fn first_epoch_valid_loss(api: &Api, job_id: &str) -> f64 {
    let checkpoints = api.get(&format!("/fine_tuning/jobs/{job_id}/checkpoints")).await;
    let first = checkpoints["data"].as_array().and_then(|c| c.last()).expect("a checkpoint").clone();
    first["metrics"]["full_valid_loss"].as_f64().unwrap_or_else(|| panic!("no full validation loss: {first}"))
}

#[tokio::test]
async fn a_job_continues_a_model_the_server_fine_tuned() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &[]);
    let api = server.api();
    let train = api.upload_example("topics-train.jsonl").await;
    let valid = api.upload_example("topics-valid.jsonl").await;
    let hp = json!({"n_epochs": 1, "batch_size": 32, "learning_rate_multiplier": 1.0});
    let extra = |suffix: &str| json!({"validation_file": valid, "seed": 11, "suffix": suffix});
    let a = api.create_job(&train, hp.clone(), extra("first")).await;
    let a = api.wait_for(a["id"].as_str().expect("an id"), &["succeeded", "failed"]).await;
    assert_eq!(a["status"], "succeeded", "{a}");
    let a_id = a["id"].as_str().expect("an id");
    let a_model = a["fine_tuned_model"].as_str().expect("a model");

    // One more epoch from A's model: the job names the model it continues, the new model the root.
    let b = api.create_job(&train, hp.clone(), merged(extra("more"), json!({"model": a_model}))).await;
    assert_eq!(b["model"], a_model, "{b}");
    let b = api.wait_for(b["id"].as_str().expect("an id"), &["succeeded", "failed"]).await;
    assert_eq!((b["status"].as_str(), b["model"].as_str()), (Some("succeeded"), Some(a_model)), "{b}");
    let b_id = b["id"].as_str().expect("an id");
    let b_model = b["fine_tuned_model"].as_str().expect("a model");
    assert!(b_model.starts_with("ft:local/ngram:local:more:") && b_model != a_model, "{b_model}");
    assert_eq!(b["trained_tokens"], a["trained_tokens"], "one epoch each");
    let (a_loss, b_loss) = (first_epoch_valid_loss(&api, a_id).await, first_epoch_valid_loss(&api, b_id).await);
    assert!(b_loss < a_loss, "B continued A: its first epoch ends at {b_loss}, A's at {a_loss}");
    // B's validations within its epoch reach the client as metrics events.
    let validated: Vec<u64> = (api.events(b_id).await.iter())
        .filter(|e| e["type"] == "metrics" && e["data"]["full_valid_loss"].is_number())
        .filter_map(|e| e["data"]["step"].as_u64())
        .collect();
    assert_eq!(validated, [23, 18, 12, 6]);
    let labels = topic_labels();
    let answer = api.chat(b_model, "Who wrote Pride and Prejudice?", json!({})).await;
    assert!(labels.contains(answer["choices"][0]["message"]["content"].as_str().unwrap_or_default()), "{answer}");

    // A checkpoint can be continued too.
    let checkpoint = format!("{b_model}:ckpt-step-23");
    let c = api.create_job(&train, hp.clone(), merged(extra("again"), json!({"model": checkpoint}))).await;
    let c = api.wait_for(c["id"].as_str().expect("an id"), &["succeeded", "failed"]).await;
    assert_eq!((c["status"].as_str(), c["model"].as_str()), (Some("succeeded"), Some(checkpoint.as_str())), "{c}");
    assert!(c["fine_tuned_model"].as_str().is_some_and(|m| m.starts_with("ft:local/ngram:local:again:")), "{c}");

    // Models the server does not have are refused, as before.
    for model in ["ft:local/ngram:local::nope", "ft:gpt-4o-mini-2024-07-18:org::x", &format!("{a_model}:ckpt-step-1")] {
        let body = json!({"model": model, "training_file": train});
        let (status, error) = api.call(Method::POST, "/fine_tuning/jobs", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{model}: {error}");
        assert_eq!(
            (error["error"]["code"].as_str(), error["error"]["param"].as_str()),
            (Some("model_not_available"), Some("model")),
            "{model}: {error}"
        );
    }
    assert_eq!(api.get("/fine_tuning/jobs").await["data"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn a_bad_training_file_fails_the_job_with_its_line() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &[]);
    let api = server.api();
    let bad = api.upload_example("bad-line.jsonl").await;
    let job = api.create_job(&bad, json!({"n_epochs": 1}), json!({})).await;
    let job = api.wait_for(job["id"].as_str().expect("an id"), &["succeeded", "failed"]).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(
        (job["error"]["code"].as_str(), job["error"]["param"].as_str()),
        (Some("invalid_training_file"), Some("training_file"))
    );
    let message = job["error"]["message"].as_str().expect("a message");
    assert!(message.starts_with("bad-line.jsonl:7: not valid JSON"), "{message}");
    assert!(job["fine_tuned_model"].is_null() && job["finished_at"].is_i64());
    let events = api.events(job["id"].as_str().expect("an id")).await;
    assert_eq!(events[0]["level"], "error");
}

#[tokio::test]
async fn running_and_queued_jobs_can_be_cancelled() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &["--max-running", "1"]);
    let api = server.api();
    let train = api.upload_example("topics-train.jsonl").await;
    // One epoch's tokens, for the cancelled job's count.
    let one = api.create_job(&train, json!({"n_epochs": 1, "batch_size": 64}), json!({})).await;
    let one = api.wait_for(one["id"].as_str().expect("an id"), &["succeeded"]).await;
    let epoch_tokens = one["trained_tokens"].as_u64().expect("trained tokens");
    // Fifty epochs of single examples: tens of thousands of steps, still running when cancelled.
    let long = json!({"n_epochs": 50, "batch_size": 1});
    let running = api.create_job(&train, long.clone(), json!({})).await;
    let running = running["id"].as_str().expect("an id").to_string();
    api.wait_for(&running, &["running"]).await;
    while !messages(&api.events(&running).await).iter().any(|m| m.starts_with("Step ")) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = api.create_job(&train, long, json!({})).await;
    let queued = queued["id"].as_str().expect("an id").to_string();
    api.wait_for(&queued, &["queued"]).await;

    let cancelled = api.post(&format!("/fine_tuning/jobs/{queued}/cancel"), json!({})).await;
    assert_eq!(cancelled["status"], "cancelled");
    let cancelled = api.post(&format!("/fine_tuning/jobs/{running}/cancel"), json!({})).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_i64());
    // Cancelling again returns the job as it is.
    assert_eq!(api.post(&format!("/fine_tuning/jobs/{running}/cancel"), json!({})).await["status"], "cancelled");

    // The training stops: nothing is recorded after the cancellation, and no model is made.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in [&running, &queued] {
        let job = api.get(&format!("/fine_tuning/jobs/{id}")).await;
        assert_eq!((job["status"].as_str(), job["fine_tuned_model"].as_str()), (Some("cancelled"), None));
        let events = api.events(id).await;
        assert_eq!(events[0]["message"], "Fine-tuning job cancelled", "{}", events[0]);
    }
    assert!(!messages(&api.events(&queued).await).contains(&"Fine-tuning job started"));

    // The running job trained some steps of its first epochs (723 steps each): its tokens are
    // an epoch's tokens × steps / 723, counted once its training has stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let trained = loop {
        let job = api.get(&format!("/fine_tuning/jobs/{running}")).await;
        if let Some(t) = job["trained_tokens"].as_u64() {
            break t;
        }
        assert!(Instant::now() < deadline, "no trained tokens: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let recorded = api.events(&running).await.iter().filter_map(|e| e["data"]["step"].as_u64()).max().unwrap_or(0);
    let steps = (trained * 723 + epoch_tokens / 2) / epoch_tokens;
    assert!(steps > recorded && steps < 50 * 723, "{steps} steps trained, {recorded} recorded");
    assert_eq!(trained, (epoch_tokens * steps + 723 / 2) / 723, "{trained} tokens is a whole number of steps");
    assert!(api.get(&format!("/fine_tuning/jobs/{queued}")).await["trained_tokens"].is_null(), "never trained");
}

#[cfg(unix)]
#[tokio::test]
async fn a_restarted_server_keeps_its_state_and_requeues_unfinished_jobs() {
    let ws = Workspace::new();
    let mut first = Server::start(&ws, "first.log", &["--max-running", "1"]);
    let api = first.api();
    let train = api.upload_example("topics-train.jsonl").await;
    let valid = api.upload_example("topics-valid.jsonl").await;
    let done =
        api.create_job(&train, json!({"n_epochs": 2, "batch_size": 32}), json!({"validation_file": valid})).await;
    let done = api.wait_for(done["id"].as_str().expect("an id"), &["succeeded"]).await;
    let done_id = done["id"].as_str().expect("an id");
    let model = done["fine_tuned_model"].as_str().expect("a model");
    let question = "Tell me a joke about computers";
    let before = api.chat(model, question, json!({})).await["choices"][0]["message"]["content"].clone();
    let unfinished = api.create_job(&train, json!({"n_epochs": 50, "batch_size": 1}), json!({})).await;
    let unfinished = unfinished["id"].as_str().expect("an id").to_string();
    api.wait_for(&unfinished, &["running"]).await;
    // A job that continues the done job's model waits for the one training slot.
    let continued = api
        .create_job(&train, json!({"n_epochs": 1, "batch_size": 32}), json!({"validation_file": valid, "model": model}))
        .await;
    let continued = continued["id"].as_str().expect("an id").to_string();
    api.wait_for(&continued, &["queued"]).await;
    let events_before = api.events(done_id).await;
    assert!(first.terminate(), "SIGTERM stops the server cleanly:\n{}", first.stderr());

    let second = Server::start(&ws, "second.log", &[]);
    let api = second.api();
    let files = ids(&api.get("/files?order=asc").await);
    // Two uploads and a result file (and the continued job's, once it is done).
    let results = done["result_files"][0].as_str().expect("a result file").to_string();
    assert_eq!(files[..3], [train, valid, results]);
    assert_eq!(api.get(&format!("/fine_tuning/jobs/{done_id}")).await, done);
    assert_eq!(api.events(done_id).await, events_before);
    assert_eq!(
        api.get(&format!("/fine_tuning/jobs/{done_id}/checkpoints")).await["data"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(ids(&api.get("/models").await).contains(&model.to_string()));
    let after = api.chat(model, question, json!({})).await["choices"][0]["message"]["content"].clone();
    assert_eq!(before, after, "the restored model answers the same");

    // The interrupted job trains again from the start.
    let events = api.events(&unfinished).await;
    assert!(
        messages(&events).iter().any(|m| m.starts_with("The server restarted while the job was running")),
        "{:?}",
        messages(&events)
    );
    api.wait_for(&unfinished, &["running"]).await;
    assert_eq!(api.post(&format!("/fine_tuning/jobs/{unfinished}/cancel"), json!({})).await["status"], "cancelled");

    // The queued job that continues a model is queued again and trains from that model.
    let continued = api.wait_for(&continued, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(
        (continued["status"].as_str(), continued["model"].as_str()),
        (Some("succeeded"), Some(model)),
        "{continued}"
    );
    let new_model = continued["fine_tuned_model"].as_str().expect("a model");
    assert!(new_model.starts_with("ft:local/ngram:local:") && new_model != model, "{new_model}");
    assert!(api.chat(new_model, question, json!({})).await["choices"][0]["message"]["content"].is_string());
}

#[tokio::test]
async fn an_upload_goes_to_the_store_in_chunks_while_other_requests_answer() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &[]);
    let api = server.api();
    api.get("/models").await;
    #[cfg(target_os = "linux")]
    let idle = server.peak_rss_kib();
    let mb = 48;
    let content: Vec<u8> = (0..)
        .flat_map(|i| format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"line {i}\"}}]}}\n").into_bytes())
        .take(mb << 20)
        .collect();
    let body = multipart_body(&content);
    let (half_tx, half_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let addr = server.addr();
    let upload = std::thread::spawn(move || {
        let mut stream = raw_upload(addr, body.len());
        let (first, rest) = body.split_at(body.len() / 2);
        stream.write_all(first).expect("sending the first half");
        half_tx.send(()).expect("the test waits");
        go_rx.recv().expect("the test goes on");
        stream.write_all(rest).expect("sending the rest");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("the answer");
        answer
    });
    tokio::task::spawn_blocking(move || half_rx.recv()).await.expect("joined").expect("half sent");
    // Half-way through the upload, the server answers and has no file yet.
    assert!(ids(&api.get("/models").await).contains(&"local/ngram".to_string()));
    assert_eq!(ids(&api.get("/files").await), Vec::<String>::new(), "a file exists once all of it is stored");
    go_tx.send(()).expect("the upload waits");
    let answer = tokio::task::spawn_blocking(move || upload.join().expect("the upload thread")).await.expect("joined");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let file: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON");
    assert_eq!(file["bytes"].as_u64(), Some(content.len() as u64), "{file}");
    let id = file["id"].as_str().expect("an id");
    assert_eq!(ids(&api.get("/files").await), [id]);
    let response =
        api.http.get(format!("{}/files/{id}/content", server.url)).bearer_auth(KEY).send().await.expect("content");
    assert_eq!(response.content_length(), Some(content.len() as u64));
    let downloaded = response.bytes().await.expect("the content");
    assert!(downloaded == content, "the content comes back as it was sent ({} bytes)", downloaded.len());
    // Memory: a chunk at a time, not the whole upload (before, it grew by about twice the upload).
    #[cfg(target_os = "linux")]
    {
        let grown = server.peak_rss_kib().saturating_sub(idle);
        eprintln!("serve's peak RSS grew by {} MiB for a {mb} MiB upload and download", grown / 1024);
        assert!(grown < ((mb as u64) << 10) / 2, "peak RSS grew by {grown} KiB for a {mb} MiB upload");
    }
    assert_eq!(api.ok(Method::DELETE, &format!("/files/{id}"), None).await["deleted"], true);
    let (status, _) = api.call(Method::GET, &format!("/files/{id}/content"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_is_answered_408() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &[]);
    let addr = server.addr();
    // A byte every 0.5 s, far below the minimum rate: cut off after the allowance (10 s).
    let (answer, closed) = tokio::task::spawn_blocking(move || trickle(raw_upload(addr, 100_000), b"-"))
        .await
        .expect("the trickling client");
    assert!(closed && answer.starts_with("HTTP/1.1 408"), "closed: {closed}, answer: {answer:?}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default()).expect("JSON");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("too slowly")), "{body}");
    // Nothing was stored, and the server goes on.
    assert_eq!(ids(&server.api().get("/files").await), Vec::<String>::new());
}

#[tokio::test]
async fn headers_that_never_end_are_cut_off() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.log", &[]);
    let addr = server.addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connecting");
        stream.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n").expect("a first line");
        trickle(stream, b"X-Slow: loris\r\n")
    })
    .await
    .expect("the trickling client");
    // The header deadline (20 s) closes the connection before 60 s of trickling; the answer, if
    // any, is an error.
    let (answer, closed) = answer;
    assert!(closed, "the connection is still open after 60 s of headers");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(server.api().get("/models").await["data"].is_array());
}

#[cfg(unix)]
#[tokio::test]
async fn slow_clients_do_not_keep_a_stopped_server_alive() {
    let ws = Workspace::new();
    let mut server = Server::start(&ws, "serve.log", &[]);
    let addr = server.addr();
    // A byte every 0.5 s, and an upload at 40 KiB/s (fast enough for the body deadline, but
    // four minutes long).
    let loris = std::thread::spawn(move || trickle(raw_upload(addr, 100_000), b"-"));
    let slow = std::thread::spawn(move || {
        let body = multipart_body(&vec![b'x'; 10 << 20]);
        let mut stream = raw_upload(addr, body.len());
        for piece in body.chunks(20 << 10) {
            if stream.write_all(piece).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = server.terminate_within(Duration::from_secs(15));
    let (status, took) = stopped.unwrap_or_else(|| panic!("still running 15 s after SIGTERM:\n{}", server.stderr()));
    eprintln!("serve exited {took:?} after SIGTERM, with two slow clients");
    assert!(status.success(), "{status}:\n{}", server.stderr());
    assert!(
        server.stderr().contains("connection(s) still busy 5 s after the stop signal were closed"),
        "{}",
        server.stderr()
    );
    loris.join().expect("the trickling client");
    slow.join().expect("the slow client");
}

#[test]
fn serve_refuses_a_short_key() {
    // A server that starts instead is stopped after this long.
    const LONG: Duration = Duration::from_secs(30);
    let ws = Workspace::new();
    let short = "short-key-15chr";
    for out in [
        ws.cmd().env_remove("FTSWEEP_SERVE_KEY").args(["serve", "--port", "0", "--key", short]).timeout(LONG).output(),
        ws.cmd().env("FTSWEEP_SERVE_KEY", short).args(["serve", "--port", "0"]).timeout(LONG).output(),
    ] {
        let out = out.expect("running");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("the API key is 15 characters long: `serve` needs at least 16"), "{stderr}");
        assert!(stderr.contains("hint: set FTSWEEP_SERVE_KEY to a longer random key"), "{stderr}");
        assert!(!stderr.contains(short), "the key is echoed: {stderr}");
        assert!(out.stdout.is_empty());
    }
    assert!(!ws.path("ftsweep-serve.db").exists(), "nothing is created");
}
