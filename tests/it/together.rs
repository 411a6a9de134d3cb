//! The Together provider on the real binary against `ftsweep serve
//! --protocol together` over loopback HTTP: through the fault proxy every run
//! gets exactly one job (a lost create answer is found again by its suffix),
//! a diverging run is cancelled at the server, checkpoints are evaluated,
//! dedicated endpoints are deleted after their evaluation (also after kill -9,
//! by `resume`), and the key is nowhere.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{Faults, KEY, Server, run_sweep, small_validation, start_proxy};
use crate::util::{Workspace, example_data, query};

const BASE: &str = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference";

/// A Together sweep at `url` with these hyperparameter lines and extra tables.
fn together_sweep(name: &str, url: &str, hp: &str, valid: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
provider = "together"
base_model = "{BASE}"
training_file = "{train}"
validation_file = "{valid}"
seed = 42

[search]
strategy = "grid"

[hyperparameters]
{hp}

[evaluation]
metric = "exact_match"

[limits]
max_concurrent = 4

# The test server's LoRA price (Together's own is not committed: a sweep without [pricing] asks first).
[pricing]
training_per_million = 0.48
input_per_million = 0.2
output_per_million = 0.2

[together]
base_url = "{url}"
api_key_env = "FTSWEEP_TEST_KEY"
{extra}"#,
        train = example_data("topics-train.jsonl"),
    )
}

fn together_server(ws: &Workspace, extra: &[&str]) -> Server {
    let mut args = vec!["--protocol", "together", "--max-running", "4"];
    args.extend_from_slice(extra);
    Server::start_args(ws, "serve.db", KEY, &args)
}

/// A GET at the server, with the key.
async fn get(url: &str) -> Value {
    let r = reqwest::Client::new().get(url).bearer_auth(KEY).send().await.unwrap();
    r.json().await.unwrap()
}

/// Every job at the server, counted by the run its suffix (`{run_id}-{attempt}`) names.
async fn jobs_by_run(server: &str) -> BTreeMap<String, usize> {
    let list = get(&format!("{server}/fine-tunes")).await;
    let mut out = BTreeMap::new();
    for j in list["data"].as_array().unwrap() {
        let suffix = j["suffix"].as_str().unwrap_or("none");
        let run = suffix.rsplit_once('-').map_or(suffix, |(run, _attempt)| run).to_string();
        *out.entry(run).or_insert(0) += 1;
    }
    out
}

/// The server's endpoints that still exist.
async fn endpoints(server: &str) -> Vec<Value> {
    let list = get(&format!("{server}/endpoints?type=dedicated&mine=true")).await;
    list["data"].as_array().cloned().unwrap_or_default()
}

/// The request counts `run` prints on stderr.
fn requests(stderr: &str) -> BTreeMap<String, u64> {
    let line = stderr.lines().find(|l| l.starts_with("requests to ")).expect("the request count line");
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn assert_no_key(ws: &Workspace, texts: &[(&str, &str)]) {
    for (what, text) in texts {
        assert!(!text.contains(KEY) && !text.contains("LEAK-CANARY"), "the key leaked into {what}");
    }
    for db in ["ftsweep.db", "ftsweep.db-wal"] {
        if let Ok(bytes) = std::fs::read(ws.path(db)) {
            assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "the key is in {db}");
        }
    }
}

#[test]
fn twelve_runs_through_faults_and_lost_creates_make_one_job_each() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = together_server(&ws, &[]);
    let proxy = runtime.block_on(start_proxy(server.url.clone(), Faults { rate: 0.2, seed: 14, ..Faults::default() }));
    let valid = small_validation(&ws, 30);
    let hp = "n_epochs = [1, 2]\nlearning_rate = [0.00001, 0.0001, 0.001]\nbatch_size = [32]\nlora_r = [8, 16]";
    ws.write("s.toml", &together_sweep("tg", &proxy.url, hp, &valid, ""));
    let (code, out, err) = run_sweep(&ws, "s.toml", &["-v"]);
    assert_eq!(code, 0, "every run finishes:\n{err}");
    let rows = ws.json(&["leaderboard", "tg", "--json"]);
    let runs: Vec<&Value> = rows.as_array().unwrap().iter().filter(|r| r["is_baseline"] != true).collect();
    assert_eq!(runs.len(), 12, "{rows}");
    assert!(runs.iter().all(|r| r["status"] == "done" && r["score"].is_number()), "every run is scored: {rows}");
    let jobs = runtime.block_on(jobs_by_run(&server.url));
    let lost = proxy.lost_creates.load(Ordering::Relaxed);
    let r = requests(&err);
    eprintln!(
        "together, 20% faults: {} jobs for 12 runs; client requests {} ({:.1} a run) {r:?}; proxy forwarded {}, \
         injected {} faults, lost {lost} create answers",
        jobs.values().sum::<usize>(),
        r["total"],
        r["total"] as f64 / 12.0,
        proxy.forwarded.load(Ordering::Relaxed),
        proxy.faults_injected.load(Ordering::Relaxed),
    );
    assert_eq!(jobs.len(), 12, "a job for each run: {jobs:?}");
    assert!(jobs.values().all(|&n| n == 1), "no duplicate job: {jobs:?}");
    assert!(lost >= 2, "creates lost their answers: {lost}");
    assert!(r["lists"] >= 2, "each lost create was looked up by its suffix: {r:?}");
    // One upload per distinct file (two files): the POST and the presigned PUT each.
    assert_eq!(query(&ws.db(), "SELECT count(*) FROM uploads"), ["2"]);
    let (_, lb, _) = ws.run(&["leaderboard", "tg", "--json"]);
    assert_no_key(&ws, &[("stdout", &out), ("stderr", &err), ("leaderboard", &lb)]);
    // Running again reuses everything: no create, no completion, and the uploads are only checked.
    let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let r = requests(&err);
    assert_eq!((r["creates"], r["completions"], r["uploads"]), (0, 0, 0), "{r:?}");
}

#[test]
fn a_diverging_together_job_is_cancelled_at_the_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    // Jobs that last, so that the metrics stream while they train.
    let server = together_server(&ws, &["--example-delay-ms", "2"]);
    let valid = small_validation(&ws, 30);
    let hp = "n_epochs = [3]\nlearning_rate = [0.01]\nbatch_size = [64]";
    ws.write(
        "s.toml",
        &together_sweep("es", &server.url, hp, &valid, "").replace("[together]", "[early_stopping]\n\n[together]"),
    );
    let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let rows = ws.json(&["leaderboard", "es", "--json"]);
    let run = rows.as_array().unwrap().iter().find(|r| r["is_baseline"] != true).unwrap().clone();
    let reason = run["stopped_early"].as_str().unwrap_or_else(|| panic!("stopped early: {run}\n{err}"));
    assert!(reason.contains("diverged") || reason.contains("stopped improving"), "{reason}");
    let job_id = query(&ws.db(), "SELECT job_id FROM runs WHERE job_id IS NOT NULL")[0].clone();
    let job = runtime.block_on(get(&format!("{}/fine-tunes/{job_id}", server.url)));
    assert_eq!(job["status"], "cancelled", "the job was cancelled at the server: {job}");
    let n_evals = job["n_evals"].as_u64().unwrap_or(0);
    assert!(n_evals >= 6, "the job validated often enough for early stopping: {job}");
}

#[test]
fn dedicated_endpoints_serve_the_runs_and_their_checkpoints_and_are_all_deleted() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = together_server(&ws, &[]);
    let valid = small_validation(&ws, 20);
    let hp = "n_epochs = [3]\nlearning_rate = [0.0001, 0.001]\nbatch_size = [32]";
    let text = together_sweep("ded", &server.url, hp, &valid, "inference = \"dedicated\"\n")
        .replace("metric = \"exact_match\"", "metric = \"exact_match\"\ncheckpoints = true");
    ws.write("s.toml", &text);
    let (code, out, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let checkpoints = query(&ws.db(), "SELECT count(*) FROM evaluations WHERE kind = 'checkpoint'");
    assert!(checkpoints[0].parse::<u32>().unwrap() >= 2, "earlier epochs were evaluated: {checkpoints:?}\n{err}");
    // The baseline, two runs and their checkpoints each had an endpoint, now deleted.
    let states = query(&ws.db(), "SELECT state FROM deployments");
    assert!(states.len() >= 3 && states.iter().all(|s| s == "deleted"), "{states:?}");
    assert!(runtime.block_on(endpoints(&server.url)).is_empty(), "no endpoint is left at the server");
    assert_no_key(&ws, &[("stdout", &out), ("stderr", &err)]);
}

/// The `deployments` rows not deleted; 0 while the database is not there yet (or being made).
fn live_rows(ws: &Workspace) -> i64 {
    let Ok(conn) = rusqlite::Connection::open_with_flags(ws.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM deployments WHERE state != 'deleted'", [], |r| r.get(0)).unwrap_or(0)
}

/// `ftsweep run FILE` in the background, its output discarded.
fn spawn_run(ws: &Workspace, file: &str) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .current_dir(ws.dir.path())
        .args(["run", file, "--yes"])
        .env("FTSWEEP_TEST_KEY", KEY)
        .env_remove("FTSWEEP_DB")
        .env_remove("TOGETHER_BASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ftsweep run")
}

#[test]
fn an_endpoint_left_by_a_killed_run_is_deleted_by_resume() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = together_server(&ws, &[]);
    // Every create's answer is held 2 s after it reached the server: the
    // endpoint exists while its row is still `creating`, without its id.
    let (tx, _creates) = tokio::sync::mpsc::unbounded_channel();
    let faults = Faults { on_create: Some(tx), hold: Duration::from_secs(2), ..Faults::default() };
    let proxy = runtime.block_on(start_proxy(server.url.clone(), faults));
    let valid = small_validation(&ws, 10);
    let hp = "n_epochs = [1]\nlearning_rate = [0.0001]\nbatch_size = [32]";
    ws.write("s.toml", &together_sweep("kill", &proxy.url, hp, &valid, "inference = \"dedicated\"\n"));
    let mut child = spawn_run(&ws, "s.toml");
    let bound = Instant::now() + Duration::from_secs(300);
    loop {
        if live_rows(&ws) > 0 && !runtime.block_on(endpoints(&server.url)).is_empty() {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before an endpoint was made");
        assert!(Instant::now() < bound, "no endpoint was made");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-9", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let _ = child.wait();
    assert!(!runtime.block_on(endpoints(&server.url)).is_empty(), "the killed run left its endpoint");

    let out = ws.cmd().args(["resume", "kill", "--yes"]).env("FTSWEEP_TEST_KEY", KEY).output().unwrap();
    let (code, err) = (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("deployment(s) that an earlier process left behind"), "{err}");
    let states = query(&ws.db(), "SELECT state FROM deployments");
    assert!(states.iter().all(|s| s == "deleted"), "{states:?}");
    assert!(runtime.block_on(endpoints(&server.url)).is_empty(), "resume deleted every endpoint");
    let rows = ws.json(&["leaderboard", "kill", "--json"]);
    assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "done"), "{rows}");
}
