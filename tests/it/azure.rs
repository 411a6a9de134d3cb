//! `provider = "azure"` on the real binary against `ftsweep serve --protocol
//! azure` (the v1 data plane and Azure Resource Manager on one origin),
//! through the fault proxy: one job per run, every deployment deleted (also
//! after kill -9, by `resume` and `cancel`), neither secret anywhere.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{Faults, KEY, Proxy, Server, small_validation, start_proxy};
use crate::util::{Workspace, example_data, query, sweep_toml};

const BASE: &str = "gpt-4.1-mini-2025-04-14";
const ACCOUNT: &str = "subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sweep/providers/\
                       Microsoft.CognitiveServices/accounts/acct";

/// A sweep on Azure at `origin` (endpoint and management URL).
fn azure_sweep(name: &str, origin: &str, hp: &str) -> String {
    sweep_toml(name, hp)
        .replace("provider = \"local\"", "provider = \"azure\"")
        .replace("base_model = \"local/ngram\"", &format!("base_model = \"{BASE}\""))
        + &format!(
            "\n[azure]\nendpoint = \"{origin}\"\napi_key_env = \"FTSWEEP_TEST_KEY\"\n\
             subscription = \"00000000-0000-0000-0000-000000000000\"\nresource_group = \"rg-sweep\"\n\
             account = \"acct\"\narm_token_env = \"FTSWEEP_TEST_ARM\"\nmanagement_url = \"{origin}\"\n"
        )
}

/// `ftsweep ARGS` with both secrets in the environment.
fn az_cmd(ws: &Workspace, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ftsweep"));
    cmd.current_dir(ws.dir.path())
        .args(args)
        .env("FTSWEEP_TEST_KEY", KEY)
        .env("FTSWEEP_TEST_ARM", KEY)
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .env_remove("OPENAI_BASE_URL");
    cmd
}

fn az_run(ws: &Workspace, args: &[&str]) -> (i32, String, String) {
    let out = az_cmd(ws, args).output().expect("running ftsweep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn get(url: &str, bearer: bool) -> Value {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let req = reqwest::Client::new().get(url);
        let req = if bearer { req.bearer_auth(KEY) } else { req.header("api-key", KEY) };
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.json().await.unwrap()
    })
}

/// The deployments the server's ARM lists for the account.
fn arm_deployments(server: &Server) -> Vec<String> {
    let v = get(&format!("{}/{ACCOUNT}/deployments?api-version=2024-10-01", server.url), true);
    v["value"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap_or_default().to_string()).collect()
}

/// Every job at the server's data plane, by its `ftsweep_run` tag.
fn jobs_by_run(server: &Server) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    loop {
        let mut url = format!("{}/openai/v1/fine_tuning/jobs?limit=100", server.url);
        if !after.is_empty() {
            url.push_str(&format!("&after={after}"));
        }
        let page = get(&url, false);
        let data = page["data"].as_array().unwrap();
        for j in data {
            *out.entry(j["metadata"]["ftsweep_run"].as_str().unwrap_or("none").to_string()).or_insert(0) += 1;
        }
        match (page["has_more"].as_bool(), data.last()) {
            (Some(true), Some(last)) => after = last["id"].as_str().unwrap().to_string(),
            _ => return out,
        }
    }
}

/// (state, count) of the `deployments` table.
fn deployment_states(ws: &Workspace) -> Vec<String> {
    query(&ws.db(), "SELECT state || ' ' || count(*) FROM deployments GROUP BY state ORDER BY state")
}

fn assert_no_secret(ws: &Workspace, texts: &[(&str, &str)]) {
    for (what, text) in texts {
        assert!(!text.contains(KEY) && !text.contains("LEAK-CANARY"), "a secret leaked into {what}");
    }
    for db in ["ftsweep.db", "ftsweep.db-wal"] {
        if let Ok(bytes) = std::fs::read(ws.path(db)) {
            assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "a secret is in {db}");
        }
    }
}

#[test]
fn a_12_run_azure_sweep_through_faults_has_one_job_per_run_and_deletes_every_deployment() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--protocol", "azure"]);
    let proxy: Proxy =
        runtime.block_on(start_proxy(server.url.clone(), Faults { rate: 0.2, seed: 14, ..Faults::default() }));
    let valid = small_validation(&ws, 20);
    let hp = "n_epochs = [1, 2]\nlearning_rate_multiplier = [0.5, 1.0, 2.0]\nbatch_size = [16, 32]";
    let text = azure_sweep("az", &proxy.origin, hp)
        .replace(&example_data("topics-valid.jsonl"), &valid)
        .replace("metric = \"exact_match\"", "metric = \"exact_match\"\ncheckpoints = true");
    ws.write("s.toml", &text);
    let started = Instant::now();
    let (code, out, err) = az_run(&ws, &["run", "s.toml", "-v", "--yes"]);
    assert_eq!(code, 0, "every run finishes:\n{err}");
    let board = ws.json(&["leaderboard", "az", "--json"]);
    let rows = board.as_array().unwrap();
    let runs: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "run").collect();
    assert_eq!(runs.len(), 12, "{board}");
    assert!(runs.iter().all(|r| r["status"] == "done" && r["score"].is_number()), "every run scored: {board}");
    assert!(rows.iter().any(|r| r["kind"] == "checkpoint"), "checkpoints evaluated: {board}");
    assert!(rows.iter().any(|r| r["is_baseline"] == true && r["score"].is_number()), "the baseline: {board}");

    let jobs = jobs_by_run(&server);
    assert_eq!(jobs.len(), 12, "a job for each run: {jobs:?}");
    assert!(jobs.values().all(|&n| n == 1), "no duplicate job: {jobs:?}");
    let lost = proxy.lost_creates.load(Ordering::Relaxed);
    assert!(lost >= 2, "creates lost their answers: {lost}");

    // Every model evaluated had its deployment, and none is left.
    assert_eq!(arm_deployments(&server), Vec::<String>::new(), "the server's ARM lists no deployment");
    let states = deployment_states(&ws);
    assert_eq!(states.len(), 1, "{states:?}");
    let deleted: usize = states[0].strip_prefix("deleted ").expect("all deleted").parse().unwrap();
    let checkpoints = rows.iter().filter(|r| r["kind"] == "checkpoint").count();
    assert!(deleted > 12 + checkpoints, "a deployment per run, per checkpoint and the baseline: {deleted}");
    let names = query(&ws.db(), "SELECT count(DISTINCT name) FROM deployments WHERE name LIKE 'ftsweep-%'");
    eprintln!(
        "azure sweep: 12 runs, {} jobs, {checkpoints} checkpoints, {deleted} deployments created and deleted ({} names), proxy forwarded {}, \
         injected {} faults, lost {lost} create answers, {:.1}s",
        jobs.values().sum::<usize>(),
        names[0],
        proxy.forwarded.load(Ordering::Relaxed),
        proxy.faults_injected.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    let (_, report, _) = ws.run(&["leaderboard", "az"]);
    assert_no_secret(&ws, &[("stdout", &out), ("stderr", &err), ("leaderboard", &report)]);
}

#[test]
fn a_diverging_azure_job_is_cancelled_early() {
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--protocol", "azure", "--example-delay-ms", "2"]);
    let hp = "n_epochs = [3]\nlearning_rate_multiplier = [30.0]\nbatch_size = [64]";
    ws.write("s.toml", &(azure_sweep("es", &server.url, hp) + "\n[early_stopping]\n"));
    let (code, _, err) = az_run(&ws, &["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    let board = ws.json(&["leaderboard", "es", "--json"]);
    let run = board.as_array().unwrap().iter().find(|r| r["kind"] == "run").unwrap().clone();
    assert!(run["stopped_early"].as_str().is_some_and(|s| s.contains("diverged")), "{run}\n{err}");
    let job_id = query(&ws.db(), "SELECT job_id FROM runs")[0].clone();
    let job = get(&format!("{}/openai/v1/fine_tuning/jobs/{job_id}", server.url), false);
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(arm_deployments(&server), Vec::<String>::new());
}

/// Starts `ftsweep run` and kills it (-9) once a deployment is live both in
/// the database and at the server's ARM (its PUT's answer held back).
fn run_until_a_deployment_is_live_then_kill(ws: &Workspace, server: &Server) {
    let mut child: Child =
        az_cmd(ws, &["run", "s.toml"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("ftsweep run");
    let started = Instant::now();
    loop {
        // Read while the run writes: a database not made yet, or busy, counts as nothing live.
        let live = rusqlite::Connection::open_with_flags(ws.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM deployments WHERE state != 'deleted'", [], |r| r.get::<_, i64>(0))
            })
            .is_ok_and(|n| n > 0);
        if live && !arm_deployments(server).is_empty() {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before a deployment was live");
        assert!(started.elapsed() < Duration::from_secs(300), "no deployment became live");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn after_kill_9_with_a_live_deployment_resume_and_cancel_delete_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for command in ["resume", "cancel"] {
        let ws = Workspace::new();
        let server = Server::start_args(&ws, "serve.db", KEY, &["--protocol", "azure"]);
        // Every create's answer (jobs and ARM PUTs) is held 3 s: the kill lands while a deployment exists.
        let (tx, _creates) = tokio::sync::mpsc::unbounded_channel();
        let faults = Faults { on_create: Some(tx), hold: Duration::from_secs(3), ..Faults::default() };
        let proxy = runtime.block_on(start_proxy(server.url.clone(), faults));
        let valid = small_validation(&ws, 10);
        let hp = "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 32";
        ws.write("s.toml", &azure_sweep("k", &proxy.origin, hp).replace(&example_data("topics-valid.jsonl"), &valid));
        run_until_a_deployment_is_live_then_kill(&ws, &server);
        let (code, _, err) = az_run(&ws, &[command, "k"]);
        assert_eq!(code, 0, "{command}:\n{err}");
        assert!(err.contains("deployment(s)") && err.contains("deleted"), "{command} says what it deleted:\n{err}");
        assert_eq!(arm_deployments(&server), Vec::<String>::new(), "{command}: nothing left at the server");
        let live = query(&ws.db(), "SELECT count(*) FROM deployments WHERE state != 'deleted'");
        assert_eq!(live, ["0"], "{command}: {:?}", deployment_states(&ws));
        if command == "resume" {
            let board = ws.json(&["leaderboard", "k", "--json"]);
            assert!(board.as_array().unwrap().iter().all(|r| r["score"].is_number()), "{board}");
        }
        assert_no_secret(&ws, &[("stderr", &err)]);
    }
}

#[test]
fn without_an_arm_token_or_az_the_run_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    let text = azure_sweep("n", "http://127.0.0.1:9", "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 32")
        .replace("arm_token_env = \"FTSWEEP_TEST_ARM\"\n", "");
    ws.write("s.toml", &text);
    let empty = ws.path("no-az");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = {
        let out = az_cmd(&ws, &["run", "s.toml"]).env("PATH", &empty).output().unwrap();
        (out.status.code().unwrap_or(-1), String::new(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot run `az`") && err.contains("arm_token_env") && err.contains("az login"), "{err}");
    assert!(!ws.db().exists(), "nothing written");
}

/// A proxy that loses the answer of every first create of a run and strips
/// `metadata` from the job list, so a lost job is found only by its suffix.
async fn suffix_only_proxy(upstream: String) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let creates = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { break };
            let (http, upstream, creates) = (http.clone(), upstream.clone(), creates.clone());
            tokio::spawn(async move {
                let Ok((method, target, headers, body)) = crate::protocol::read_request(&mut socket).await else {
                    return;
                };
                let path = target.split('?').next().unwrap_or_default().to_string();
                let is_create = method == "POST" && path == "/openai/v1/fine_tuning/jobs";
                let mut req = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), upstream + &target);
                for (k, v) in
                    headers.iter().filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length" | "connection"))
                {
                    req = req.header(k, v);
                }
                let Ok(r) = req.body(body).send().await else { return };
                let status = r.status().as_u16();
                let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let mut bytes = r.bytes().await.unwrap_or_default().to_vec();
                if is_create && creates.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    return; // the job exists; its answer is lost
                }
                if method == "GET"
                    && path == "/openai/v1/fine_tuning/jobs"
                    && let Ok(mut page) = serde_json::from_slice::<Value>(&bytes)
                {
                    for j in page["data"].as_array_mut().into_iter().flatten() {
                        j["metadata"] = Value::Null;
                    }
                    bytes = serde_json::to_vec(&page).unwrap();
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: {ctype}\r\nconnection: close\r\n\r\n",
                    bytes.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&bytes).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_job_whose_create_answer_was_lost_is_found_by_its_suffix_when_no_job_carries_its_tags() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--protocol", "azure"]);
    let origin = runtime.block_on(suffix_only_proxy(server.url.clone()));
    let valid = small_validation(&ws, 10);
    let hp = "n_epochs = 1\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = 32";
    ws.write("s.toml", &azure_sweep("sfx", &origin, hp).replace(&example_data("topics-valid.jsonl"), &valid));
    let (code, _, err) = az_run(&ws, &["run", "s.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    let jobs = jobs_by_run(&server);
    assert_eq!((jobs.len(), jobs.values().all(|&n| n == 1)), (2, true), "one job per run: {jobs:?}");
    let suffixes = query(&ws.db(), "SELECT run_id || '-' || attempt FROM runs ORDER BY run_id");
    let listed = get(&format!("{}/openai/v1/fine_tuning/jobs?limit=100", server.url), false);
    let mut echoed: Vec<String> =
        listed["data"].as_array().unwrap().iter().map(|j| j["suffix"].as_str().unwrap().to_string()).collect();
    echoed.sort();
    assert_eq!(echoed, suffixes, "the suffix is {{run_id}}-{{attempt}}");
}
