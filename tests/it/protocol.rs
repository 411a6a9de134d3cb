//! The OpenAI provider over real HTTP on loopback: against `ftsweep serve`
//! it ranks like the local provider; through a fault-injecting proxy it
//! recovers and creates no duplicate job; the key never leaks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::{Workspace, example_data, query, sweep_toml};

/// A running `ftsweep serve`, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(ws: &Workspace, state: &str, key: &str) -> Server {
        Server::start_with(ws, state, key, 4)
    }

    pub fn start_with(ws: &Workspace, state: &str, key: &str, max_running: u32) -> Server {
        Server::start_args(ws, state, key, &["--max-running", &max_running.to_string()])
    }

    /// A server with more command-line flags.
    pub fn start_args(ws: &Workspace, state: &str, key: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
            .args(["serve", "--port", "0", "--key", key])
            .args(extra)
            .arg("--state")
            .arg(ws.path(state))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ftsweep serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the URL line");
        assert!(line.starts_with("http://127.0.0.1:"), "serve printed its URL: {line}");
        Server { child, url: line.trim().to_string() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const KEY: &str = "sk-ftsweep-LEAK-CANARY-7f3a9c";
const HP: &str = "n_epochs = [1, 3]\nlearning_rate_multiplier = [0.1, 1.0]\nbatch_size = [16]";

/// A sweep file on the OpenAI provider at `url`.
pub fn openai_sweep(name: &str, url: &str, hp: &str) -> String {
    sweep_toml(name, hp).replace("provider = \"local\"", "provider = \"openai\"")
        + &format!("\n[openai]\nbase_url = \"{url}\"\napi_key_env = \"FTSWEEP_TEST_KEY\"\n")
}

pub fn run_sweep(ws: &Workspace, file: &str, args: &[&str]) -> (i32, String, String) {
    let path = ws.path(file);
    let mut cmd = ws.cmd();
    cmd.arg("run").arg(&path).args(args).env("FTSWEEP_TEST_KEY", KEY).env_remove("OPENAI_BASE_URL");
    let out = cmd.output().expect("running ftsweep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (n_epochs, lr, batch) → (score, valid_loss) of a leaderboard.
pub fn by_config(rows: &Value) -> BTreeMap<String, (f64, f64)> {
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["is_baseline"] != true)
        .map(|r| {
            let key = format!("{}/{}/{}", r["n_epochs"], r["learning_rate_multiplier"], r["batch_size"]);
            (key, (r["score"].as_f64().unwrap(), (r["valid_loss"].as_f64().unwrap() * 1e6).round() / 1e6))
        })
        .collect()
}

/// The total request count `run` reports on stderr.
fn requests(stderr: &str) -> BTreeMap<String, u64> {
    let line = stderr.lines().find(|l| l.starts_with("requests to ")).expect("the request count line");
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

#[test]
fn the_openai_provider_against_serve_ranks_like_the_local_provider() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    ws.write("remote.toml", &openai_sweep("remote", &server.url, HP));
    ws.write("local.toml", &sweep_toml("local", HP));
    let (code, out, err) = run_sweep(&ws, "remote.toml", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("exact_match"), "{out}");
    let (code, _, err2) = run_sweep(&ws, "local.toml", &[]);
    assert_eq!(code, 0, "{err2}");
    let remote = ws.json(&["leaderboard", "remote", "--json"]);
    let local = ws.json(&["leaderboard", "local", "--json"]);
    assert_eq!(by_config(&remote), by_config(&local), "same scores and validation losses, run by run");
    let order = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["n_epochs"].to_string() + &r["learning_rate_multiplier"].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&remote), order(&local), "same ranking");
    let best = ws.run(&["best", "remote"]);
    assert_eq!(best.0, 0);
    assert!(best.1.trim().starts_with("ft:local/ngram:"), "{}", best.1);

    // One upload per distinct file per server, not per run; one create per run.
    let r = requests(&err);
    assert_eq!(r["uploads"], 2, "{r:?}");
    assert_eq!(r["creates"], 4, "{r:?}");
    // Running again reuses everything: no upload, no create, no completion.
    let (code, _, err) = run_sweep(&ws, "remote.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let r = requests(&err);
    assert_eq!((r["uploads"], r["creates"], r["completions"]), (0, 0, 0), "{r:?}");
    assert_eq!(query(&ws.db(), "SELECT count(*) FROM uploads"), ["2"]);
}

#[test]
fn the_key_appears_in_no_output_log_or_database() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    ws.write(
        "s.toml",
        &openai_sweep("s", &server.url, "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 32"),
    );
    let (code, out, err) = run_sweep(&ws, "s.toml", &["-v"]);
    assert_eq!(code, 0, "{err}");
    let (_, lb, _) = ws.run(&["leaderboard", "s", "--json"]);
    // A wrong key: the error explains, and names the variable, not the key.
    let wrong = Server::start(&ws, "other.db", "another-key-9f2d7c4e1b");
    ws.write("w.toml", &openai_sweep("w", &wrong.url, "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 32"));
    let (code2, out2, err2) = run_sweep(&ws, "w.toml", &["-v"]);
    assert_ne!(code2, 0);
    assert!(err2.contains("FTSWEEP_TEST_KEY") && err2.contains("401"), "{err2}");
    for (what, text) in
        [("stdout", &out), ("stderr", &err), ("leaderboard", &lb), ("stdout 2", &out2), ("stderr 2", &err2)]
    {
        assert!(!text.contains(KEY), "the key leaked into {what}");
        assert!(!text.contains("LEAK-CANARY"), "part of the key leaked into {what}");
    }
    for db in ["ftsweep.db", "ftsweep.db-wal"] {
        if let Ok(bytes) = std::fs::read(ws.path(db)) {
            assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "the key is in {db}");
        }
    }
}

/// What the proxy does to requests.
#[derive(Clone, Default)]
pub struct Faults {
    /// The share of requests that meet a fault.
    pub rate: f64,
    pub seed: u64,
    /// The first this many creates meet a daily job cap (429, retry-after 1 s).
    pub daily_cap_creates: u64,
    /// Told when a create has reached the server (the job exists), before
    /// its answer goes back; the answer is held for `hold`.
    pub on_create: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    pub hold: Duration,
    /// Jobs of a first attempt that succeed are reported failed with this code.
    pub fail_first_attempts_with: Option<&'static str>,
    /// Keeps the body of every chat completion request, in the order they came.
    pub chat_bodies: Option<Arc<std::sync::Mutex<Vec<Value>>>>,
    /// Keeps the body of every create that reaches the proxy ([`is_create`]), in the order they came.
    pub create_bodies: Option<Arc<std::sync::Mutex<Vec<Value>>>>,
}

/// A raw HTTP/1.1 proxy in front of `upstream` that injects faults: 429
/// with retry-after, 500 and 503, dropped connections, slow answers, and a
/// create that reaches the server but whose answer is lost.
pub struct Proxy {
    /// The proxy's URL with `/v1` (for OpenAI's and Together's protocols).
    pub url: String,
    /// The proxy's origin, `http://127.0.0.1:PORT` (Azure's endpoint and management URL).
    pub origin: String,
    pub forwarded: Arc<AtomicU64>,
    pub faults_injected: Arc<AtomicU64>,
    pub lost_creates: Arc<AtomicU64>,
}

pub async fn start_proxy(upstream: String, faults: Faults) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let forwarded = Arc::new(AtomicU64::new(0));
    let creates = Arc::new(AtomicU64::new(0));
    let injected = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let (f, i, l, c) = (forwarded.clone(), injected.clone(), lost.clone(), creates.clone());
    let rng = Arc::new(std::sync::Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(faults.seed)));
    // A redirect is passed back as it came (Together's upload flow answers 302), never followed.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // The server's origin: its URL without the API's `/v1` (Azure's URL is the origin already).
    let origin = upstream.trim_end_matches('/').trim_end_matches("/v1").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { break };
            let roll: (f64, u32) = {
                let mut r = rng.lock().unwrap();
                (r.random(), r.random_range(0..6))
            };
            let (http, origin, f, i, l, c) = (http.clone(), origin.clone(), f.clone(), i.clone(), l.clone(), c.clone());
            let faults = faults.clone();
            tokio::spawn(async move {
                let _ = handle(socket, &http, &origin, roll, &faults, (&f, &i, &l, &c)).await;
            });
        }
    });
    Proxy {
        url: format!("http://127.0.0.1:{port}/v1"),
        origin: format!("http://127.0.0.1:{port}"),
        forwarded,
        faults_injected: injected,
        lost_creates: lost,
    }
}

/// Reads one HTTP/1.1 request: (method, target, lower-cased headers, body).
pub async fn read_request(socket: &mut TcpStream) -> std::io::Result<(String, String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((method, target, headers, body))
}

async fn respond(socket: &mut TcpStream, status: u16, headers: &[(String, String)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = socket.write_all(out.as_bytes()).await;
    let _ = socket.write_all(body).await;
    let _ = socket.shutdown().await;
}

/// Whether a request creates something that costs money: a fine-tuning job
/// (OpenAI's and Azure's `fine_tuning/jobs`, Together's `fine-tunes`), a
/// Together dedicated endpoint, an Azure deployment (ARM's PUT).
pub fn is_create(method: &str, target: &str) -> bool {
    let path = target.split('?').next().unwrap_or(target);
    match method {
        "POST" => {
            matches!(path, "/v1/fine_tuning/jobs" | "/openai/v1/fine_tuning/jobs" | "/v1/fine-tunes" | "/v1/endpoints")
        }
        "PUT" => path.starts_with("/subscriptions/") && path.contains("/deployments/"),
        _ => false,
    }
}

async fn handle(
    mut socket: TcpStream,
    http: &reqwest::Client,
    origin: &str,
    (roll, which): (f64, u32),
    faults: &Faults,
    (forwarded, injected, lost, creates): (&AtomicU64, &AtomicU64, &AtomicU64, &AtomicU64),
) -> std::io::Result<()> {
    let rate = faults.rate;
    let (method, target, headers, body) = read_request(&mut socket).await?;
    if let Some(kept) = faults.chat_bodies.as_ref().filter(|_| target.ends_with("/chat/completions")) {
        kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    }
    let is_create = is_create(&method, &target);
    if let Some(kept) = faults.create_bodies.as_ref().filter(|_| is_create) {
        kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    }
    let create_index = if is_create { creates.fetch_add(1, Ordering::Relaxed) } else { u64::MAX };
    if create_index < faults.daily_cap_creates {
        let body = r#"{"error":{"message":"This organization has reached its daily limit of fine-tuning jobs for this model.","type":"invalid_request_error","param":null,"code":"daily_rate_limit_exceeded"}}"#;
        respond(&mut socket, 429, &[("retry-after".into(), "1".into())], body.as_bytes()).await;
        return Ok(());
    }
    // With faults on, every third create reaches the server but loses its answer.
    let lose_answer = is_create && rate > 0.0 && create_index % 3 == 1;
    let fault = roll < rate && !lose_answer;
    let error = |code: &str| {
        format!(r#"{{"error":{{"message":"injected","type":"server_error","param":null,"code":"{code}"}}}}"#)
    };
    if fault {
        injected.fetch_add(1, Ordering::Relaxed);
        match which {
            0 => {
                let h = [("retry-after-ms".into(), "40".into()), ("content-type".into(), "application/json".into())];
                respond(&mut socket, 429, &h, error("rate_limit_exceeded").as_bytes()).await;
                return Ok(());
            }
            1 => {
                respond(&mut socket, 503, &[], error("overloaded").as_bytes()).await;
                return Ok(());
            }
            2 => {
                respond(&mut socket, 500, &[], error("server_error").as_bytes()).await;
                return Ok(());
            }
            3 => return Ok(()), // The connection drops before anything is forwarded.
            _ => tokio::time::sleep(Duration::from_millis(150)).await, // A slow answer.
        }
    }
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(method, format!("{origin}{target}")).body(body);
    for (k, v) in &headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            req = req.header(k, v);
        }
    }
    forwarded.fetch_add(1, Ordering::Relaxed);
    let Ok(response) = req.send().await else { return Ok(()) };
    let status = response.status().as_u16();
    let mut out_headers = Vec::new();
    for (k, v) in response.headers() {
        if !matches!(k.as_str(), "content-length" | "connection" | "transfer-encoding") {
            out_headers.push((k.to_string(), v.to_str().unwrap_or_default().to_string()));
        }
    }
    let bytes = response.bytes().await.unwrap_or_default();
    if is_create && let Some(tx) = &faults.on_create {
        let _ = tx.send(());
        tokio::time::sleep(faults.hold).await;
    }
    // The create reached the server, which made the job; its answer is lost.
    if lose_answer {
        lost.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let is_job_poll = target.starts_with("/v1/fine_tuning/jobs/") && target.matches('/').count() == 4;
    if let (true, Some(code)) = (is_job_poll, faults.fail_first_attempts_with)
        && let Ok(mut job) = serde_json::from_slice::<Value>(&bytes)
        && job["status"] == "succeeded"
        && job["metadata"]["ftsweep_attempt"] == "1"
    {
        job["status"] = "failed".into();
        job["fine_tuned_model"] = Value::Null;
        job["error"] = serde_json::json!({"code": code, "message": "injected failure", "param": null});
        let body = serde_json::to_vec(&job).unwrap();
        respond(&mut socket, status, &out_headers, &body).await;
        return Ok(());
    }
    respond(&mut socket, status, &out_headers, &bytes).await;
    Ok(())
}

/// Every job at the server, by its `ftsweep_run` tag.
pub async fn jobs_by_run(url: &str) -> BTreeMap<String, usize> {
    let http = reqwest::Client::new();
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = vec![("limit".to_string(), "100".to_string())];
        if let Some(a) = &after {
            q.push(("after".into(), a.clone()));
        }
        let page: Value = http
            .get(format!("{url}/fine_tuning/jobs"))
            .bearer_auth(KEY)
            .query(&q)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = page["data"].as_array().unwrap();
        for j in data {
            let run = j["metadata"]["ftsweep_run"].as_str().unwrap_or("none").to_string();
            *out.entry(run).or_insert(0) += 1;
        }
        match (page["has_more"].as_bool(), data.last()) {
            (Some(true), Some(last)) => after = Some(last["id"].as_str().unwrap().to_string()),
            _ => return out,
        }
    }
}

/// A validation file of the first `n` examples, to keep the fault test short.
pub fn small_validation(ws: &Workspace, n: usize) -> String {
    let text = std::fs::read_to_string(example_data("topics-valid.jsonl")).unwrap();
    let lines: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    ws.write("valid-small.jsonl", &lines).display().to_string()
}

#[test]
fn through_injected_faults_every_run_finishes_with_exactly_one_job() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hp = "n_epochs = [1, 2]\nlearning_rate_multiplier = [0.5, 1.0, 2.0]\nbatch_size = [32]";
    let mut totals = Vec::new();
    for (label, rate) in [("fault-free", 0.0), ("20% faults", 0.2)] {
        let ws = Workspace::new();
        let server = Server::start(&ws, "serve.db", KEY);
        let daily_cap_creates = if rate > 0.0 { 2 } else { 0 };
        let proxy = runtime.block_on(start_proxy(
            server.url.clone(),
            Faults { rate, seed: 11, daily_cap_creates, ..Faults::default() },
        ));
        let valid = small_validation(&ws, 30);
        let text = openai_sweep("faults", &proxy.url, hp).replace(&example_data("topics-valid.jsonl"), &valid);
        ws.write("s.toml", &text);
        let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
        assert_eq!(code, 0, "{label}: every run finishes:\n{err}");
        let rows = ws.json(&["leaderboard", "faults", "--json"]);
        assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "done"), "{label}: {rows}");
        let jobs = runtime.block_on(jobs_by_run(&server.url));
        assert_eq!(jobs.len(), 6, "{label}: a job for each run: {jobs:?}");
        assert!(jobs.values().all(|&n| n == 1), "{label}: no duplicate job: {jobs:?}");
        let r = requests(&err);
        eprintln!(
            "{label}: client requests {} ({r:?}); proxy forwarded {}, injected {} faults, lost {} create answers",
            r["total"],
            proxy.forwarded.load(Ordering::Relaxed),
            proxy.faults_injected.load(Ordering::Relaxed),
            proxy.lost_creates.load(Ordering::Relaxed)
        );
        if rate > 0.0 {
            assert!(err.contains("queued") && err.contains("daily limit"), "capped runs waited in the queue:\n{err}");
            assert!(proxy.faults_injected.load(Ordering::Relaxed) > 10, "faults were injected");
            assert!(proxy.lost_creates.load(Ordering::Relaxed) >= 2, "creates lost their answers");
            assert!(r["lists"] >= 2, "each lost create was looked up by its metadata: {r:?}");
        }
        totals.push(r["total"]);
    }
    let ratio = totals[1] as f64 / totals[0] as f64;
    eprintln!("requests with faults / without: {} / {} = {ratio:.2}", totals[1], totals[0]);
    assert!(ratio <= 1.5, "requests stay within 1.5× of a fault-free run: {ratio:.2}");
}

#[test]
fn provider_side_failures_are_retried_as_new_attempts_and_bad_data_is_not() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (code, retried) in [("server_error", true), ("invalid_training_file", false)] {
        let ws = Workspace::new();
        let server = Server::start(&ws, "serve.db", KEY);
        let faults = Faults { fail_first_attempts_with: Some(code), ..Faults::default() };
        let proxy = runtime.block_on(start_proxy(server.url.clone(), faults));
        let valid = small_validation(&ws, 20);
        let hp = "n_epochs = 1\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = 32";
        let text = openai_sweep("retry", &proxy.url, hp)
            .replace(&example_data("topics-valid.jsonl"), &valid)
            .replace("max_concurrent = 2", "max_concurrent = 2\nretries = 2");
        ws.write("s.toml", &text);
        let (code_, _, err) = run_sweep(&ws, "s.toml", &[]);
        let jobs = runtime.block_on(jobs_by_run(&server.url));
        let attempts = query(&ws.db(), "SELECT attempt || ' ' || state FROM runs ORDER BY run_id");
        if retried {
            assert_eq!(code_, 0, "{err}");
            assert!(err.contains("retrying"), "{err}");
            assert_eq!(attempts, ["2 done", "2 done"], "each run needed a second attempt");
            assert!(jobs.values().all(|&n| n == 2), "one job per attempt: {jobs:?}");
        } else {
            assert_eq!(code_, 1, "{err}");
            assert_eq!(attempts, ["1 failed", "1 failed"], "invalid data is not retried");
            assert!(jobs.values().all(|&n| n == 1), "{jobs:?}");
        }
    }
}
