//! The Ray engine against a real Ray head (`rayhead.rs`): submit, follow,
//! stop and read logs through Ray's Jobs API; one job per submission id
//! however often it is submitted; and servers that are not Ray (garbage,
//! huge bodies, 500s) are clean errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ftsweep::provider::ProviderError;
use ftsweep::provider::command::engine::{JobState, LOG_TAIL_LINES, Submission};
use ftsweep::provider::command::ray::RayEngine;
use serde_json::{Value, json};

use crate::protocol::Server;
use crate::rayhead;
use crate::util::{Workspace, example_data, query};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

fn engine(address: &str, num_cpus: f64, runtime_env: Option<Value>) -> RayEngine {
    let settings = ftsweep::spec::RayEngine { address: address.to_string(), num_gpus: 0.0, num_cpus, runtime_env };
    RayEngine::new(&settings).expect("a Ray engine")
}

/// A submission id of its own per test and process (the head is shared).
fn submission(test: &str, dir: &Path, script: &str) -> Submission {
    Submission {
        id: format!("ftsweep-test-{test}-{}", std::process::id()),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        output_dir: dir.to_path_buf(),
        env: BTreeMap::new(),
        metadata: BTreeMap::from([
            ("ftsweep_sweep".to_string(), "engine-tests".to_string()),
            ("ftsweep_run".to_string(), test.to_string()),
            ("ftsweep_attempt".to_string(), "1".to_string()),
        ]),
    }
}

/// Follows a job until `done` holds of its state; a hang guard, not a timing assertion.
async fn wait_until(engine: &RayEngine, id: &str, done: impl Fn(&JobState) -> bool) -> JobState {
    let started = Instant::now();
    loop {
        let state = engine.state(id).await.expect("the job's state");
        if done(&state) {
            return state;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "job {id} still {state:?} after 300 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The head's jobs (`GET /api/jobs/`).
pub async fn jobs(address: &str) -> Vec<Value> {
    let body = reqwest::get(format!("{address}/api/jobs/")).await.expect("GET /api/jobs/");
    body.json().await.expect("a JSON list")
}

fn count(jobs: &[Value], id: &str) -> usize {
    jobs.iter().filter(|j| j["submission_id"] == id).count()
}

#[test]
fn a_job_succeeds_and_a_second_submit_of_its_id_makes_no_second_job() {
    let head = rayhead::shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out dir");
    std::fs::create_dir(&out).unwrap();
    // Quoting: a path with a space, a `$` the shell must not expand, and an env var Ray must pass.
    let script = r#"printf '%s|%s\n' "$FTSWEEP_TEST_VAR" "$1" > "$2/done.txt""#;
    let mut s = submission("succeeds", dir.path(), script);
    s.argv.extend(["sh".into(), "$HOME {x}".into(), out.display().to_string()]);
    s.env.insert("FTSWEEP_TEST_VAR".into(), "from the submission".into());
    let env = json!({"env_vars": {"FTSWEEP_TEST_VAR": "from the sweep", "OTHER": "kept"}});
    let engine = engine(&head.address, 2.0, Some(env));
    runtime().block_on(async {
        assert_eq!(engine.find(&s.id).await.unwrap(), None, "not submitted yet");
        engine.submit(&s).await.expect("submitted");
        let state = wait_until(&engine, &s.id, JobState::is_terminal).await;
        assert_eq!(state, JobState::Succeeded, "{}", engine.log_tail(&s.id).await.unwrap_or_default());
        assert_eq!(std::fs::read_to_string(out.join("done.txt")).unwrap(), "from the submission|$HOME {x}\n");
        // A retry (a lost answer, a resume) submits nothing new.
        engine.submit(&s).await.expect("a second submit is a no-op");
        engine.submit(&s).await.expect("a third too");
        let listed = jobs(&head.address).await;
        assert_eq!(count(&listed, &s.id), 1, "one job for one submission id");
        let info: Value =
            reqwest::get(format!("{}/api/jobs/{}", head.address, s.id)).await.unwrap().json().await.unwrap();
        assert_eq!(info["metadata"], json!(s.metadata), "the metadata names the sweep, run and attempt");
        assert_eq!(info["runtime_env"]["env_vars"]["OTHER"], "kept", "the sweep's runtime_env is sent");
        assert_eq!(info["status"], "SUCCEEDED");
        assert_eq!(engine.find(&s.id).await.unwrap(), Some(JobState::Succeeded));
    });
}

#[test]
fn the_job_reserves_the_engines_cpus() {
    // Ray's job info does not echo `entrypoint_num_cpus`; its effect shows: a job asking for
    // the head's 4 CPUs waits while another holds one, then runs.
    let head = rayhead::shared();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("release");
    let holder =
        submission("cpu-holder", dir.path(), &format!("while [ ! -e '{}' ]; do sleep 0.2; done", flag.display()));
    let greedy = submission("cpu-greedy", dir.path(), "echo ran");
    let one = engine(&head.address, 1.0, None);
    let four = engine(&head.address, 4.0, None);
    runtime().block_on(async {
        one.submit(&holder).await.unwrap();
        wait_until(&one, &holder.id, |s| *s == JobState::Running).await;
        four.submit(&greedy).await.unwrap();
        // However long we look, it cannot start while the holder runs.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(four.state(&greedy.id).await.unwrap(), JobState::Pending, "4 CPUs are not free");
        }
        std::fs::write(&flag, "").unwrap();
        assert_eq!(wait_until(&one, &holder.id, JobState::is_terminal).await, JobState::Succeeded);
        assert_eq!(wait_until(&four, &greedy.id, JobState::is_terminal).await, JobState::Succeeded);
    });
}

#[test]
fn a_failing_job_is_failed_with_the_last_lines_of_its_log() {
    let head = rayhead::shared();
    let dir = tempfile::tempdir().unwrap();
    let s = submission("fails", dir.path(), "for i in $(seq 1 40); do echo \"trainer line $i\"; done; exit 3");
    let engine = engine(&head.address, 1.0, None);
    runtime().block_on(async {
        engine.submit(&s).await.unwrap();
        let JobState::Failed { reason } = wait_until(&engine, &s.id, JobState::is_terminal).await else {
            panic!("the job should have failed");
        };
        assert!(reason.starts_with("Job entrypoint command failed with exit code 3;"), "Ray's message: {reason}");
        assert!(reason.contains("trainer line 40"), "the log's last line: {reason}");
        assert!(!reason.contains("trainer line 10\n"), "only the last {LOG_TAIL_LINES} lines: {reason}");
        let tail = engine.log_tail(&s.id).await.unwrap();
        assert!(tail.lines().count() <= LOG_TAIL_LINES, "{tail}");
        assert!(tail.contains("trainer line 40"), "{tail}");
    });
}

#[test]
fn stop_stops_a_running_job_and_its_process() {
    let head = rayhead::shared();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let s = submission("stops", dir.path(), &format!("echo $$ > '{}'; exec sleep 300", pid_file.display()));
    let engine = engine(&head.address, 1.0, None);
    runtime().block_on(async {
        engine.submit(&s).await.unwrap();
        wait_until(&engine, &s.id, |st| *st == JobState::Running).await;
        let started = Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
                break pid;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the job never wrote its pid");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        engine.stop(&s.id).await.expect("stopped");
        assert_eq!(wait_until(&engine, &s.id, JobState::is_terminal).await, JobState::Stopped);
        let started = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(started.elapsed() < Duration::from_secs(60), "the stopped job's process {pid} lives on");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Stopping an ended job, or one Ray never had, is nothing to do.
        engine.stop(&s.id).await.expect("a second stop");
        engine.stop("ftsweep-test-never-submitted").await.expect("no such job");
        assert!(matches!(
            engine.state("ftsweep-test-never-submitted").await.unwrap(),
            JobState::Failed { reason } if reason.contains("has no job")
        ));
    });
}

#[test]
fn the_ray_head_listens_on_loopback_only() {
    let head = rayhead::shared();
    // A job run to its end first: the raylet, the agents and a worker are all up.
    let dir = tempfile::tempdir().unwrap();
    let s = submission("loopback", dir.path(), "echo up");
    let engine = engine(&head.address, 1.0, None);
    runtime().block_on(async {
        engine.submit(&s).await.unwrap();
        assert_eq!(wait_until(&engine, &s.id, JobState::is_terminal).await, JobState::Succeeded);
    });
    let pids = head.processes();
    let inodes = rayhead::socket_inodes(&pids);
    let ours: Vec<_> = rayhead::net_sockets().into_iter().filter(|s| inodes.contains(&s.inode)).collect();
    // TCP LISTEN is 0A; any UDP socket is bound.
    let listening: Vec<_> = ours.iter().filter(|s| s.state == "0A" || s.table.starts_with("udp")).collect();
    for (flag, port) in &head.ports {
        let hex = format!(":{port:04X}");
        assert!(listening.iter().any(|s| s.local.ends_with(&hex)), "nothing listens on {flag} {port}: {listening:?}");
    }
    let exposed: Vec<_> = listening.iter().filter(|s| !rayhead::is_loopback(&s.local)).collect();
    assert!(exposed.is_empty(), "Ray listens beyond loopback: {exposed:?}");
    eprintln!("{} Ray processes, {} listening sockets, all on loopback", pids.len(), listening.len());
}

#[test]
fn loopback_addresses_are_told_apart() {
    assert!(rayhead::is_loopback("0100007F:1F90"));
    assert!(rayhead::is_loopback("0200007F:1F90"));
    assert!(!rayhead::is_loopback("00000000:1F90"));
    assert!(!rayhead::is_loopback("0100A8C0:1F90"));
    assert!(rayhead::is_loopback("00000000000000000000000001000000:1F90"));
    assert!(rayhead::is_loopback("0000000000000000FFFF00000100007F:1F90"));
    assert!(!rayhead::is_loopback("00000000000000000000000000000000:1F90"));
    assert!(!rayhead::is_loopback("0000000000000000FFFF00000100A8C0:1F90"));
}

/// A server on 127.0.0.1 that answers every request with `answer(method, path)`
/// (raw bytes, then closes the connection); it ends with the runtime.
async fn fake_server(answer: fn(&str, &str) -> Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as much body as Content-Length says.
                let (method, path) = loop {
                    let Ok(n) = stream.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < end + 4 + length {
                            let Ok(n) = stream.read(&mut chunk).await else { return };
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let mut parts = head.split_whitespace();
                        break (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                    }
                };
                let _ = stream.write_all(&answer(&method, &path)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

fn engine_error(r: Result<impl std::fmt::Debug, ProviderError>) -> (String, bool) {
    match r {
        Err(ProviderError::Engine { message, retryable }) => (message, retryable),
        other => panic!("expected an engine error, got {other:?}"),
    }
}

#[test]
fn servers_that_are_not_ray_are_clean_errors() {
    runtime().block_on(async {
        let garbage = fake_server(|_, _| b"\x00\x01 not http at all\r\n\r\n".to_vec()).await;
        let (message, retryable) = engine_error(engine(&garbage, 1.0, None).state("x").await);
        assert!(message.contains(&garbage) && retryable, "{message}");

        let huge = fake_server(|_, _| http("200 OK", &vec![b'{'; 10 << 20])).await;
        let (message, retryable) = engine_error(engine(&huge, 1.0, None).state("x").await);
        assert!(message.contains(&huge) && message.contains("over 1024 KiB") && !retryable, "{message}");

        let error = fake_server(|_, _| http("500 Internal Server Error", b"Traceback...\nRuntimeError: boom\n")).await;
        let (message, retryable) = engine_error(engine(&error, 1.0, None).state("x").await);
        assert!(message.contains("500") && message.contains("RuntimeError: boom") && retryable, "{message}");
        let s = submission("hostile", Path::new("/tmp"), "true");
        let (message, retryable) = engine_error(engine(&error, 1.0, None).submit(&s).await);
        assert!(message.contains("500") && retryable, "{message}");

        let wrong = fake_server(|_, _| http("200 OK", b"<html>hello</html>")).await;
        let (message, retryable) = engine_error(engine(&wrong, 1.0, None).state("x").await);
        assert!(message.contains("not the JSON") && message.contains("<html>") && !retryable, "{message}");

        let odd = fake_server(|_, _| http("200 OK", br#"{"status": "EXPLODED"}"#)).await;
        let (message, _) = engine_error(engine(&odd, 1.0, None).state("x").await);
        assert!(message.contains("EXPLODED"), "{message}");

        let teapot = fake_server(|_, _| http("418 I'm a teapot", b"")).await;
        let (message, retryable) = engine_error(engine(&teapot, 1.0, None).stop("x").await);
        assert!(message.contains("418") && message.contains("POST /api/jobs/x/stop") && !retryable, "{message}");

        // Nothing listening: retryable.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (message, retryable) = engine_error(engine(&closed, 1.0, None).find("x").await);
        assert!(message.contains("cannot be reached") && retryable, "{message}");
    });
}

#[test]
fn a_long_log_is_read_to_its_last_lines_within_a_bound() {
    runtime().block_on(async {
        // 12 MiB of log (more than is read whole): the last lines still come back.
        let address = fake_server(|_, path| {
            if !path.ends_with("/logs") {
                return http("404 Not Found", b"no");
            }
            let mut logs = String::with_capacity(13 << 20);
            for i in 0..200_000 {
                logs.push_str(&format!("step {i} loss 0.{i:05} \u{e9}t\u{e9} \"quoted\" \\ backslash\n"));
            }
            http("200 OK", serde_json::to_string(&json!({"logs": logs})).unwrap().as_bytes())
        })
        .await;
        let tail = engine(&address, 1.0, None).log_tail("x").await.expect("the tail");
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), LOG_TAIL_LINES);
        assert_eq!(lines[LOG_TAIL_LINES - 1], "step 199999 loss 0.199999 \u{e9}t\u{e9} \"quoted\" \\ backslash");
    });
}

#[test]
fn a_submission_refused_as_already_existing_is_confirmed_by_a_lookup() {
    // Ray's answer to a second POST of an id is a 500 "already exists": when the first
    // lookup missed it (a race, a lost answer), the submission is confirmed by another.
    use std::sync::atomic::{AtomicUsize, Ordering};
    static GETS: AtomicUsize = AtomicUsize::new(0);
    runtime().block_on(async {
        let address = fake_server(|method, _| match method {
            "GET" if GETS.fetch_add(1, Ordering::SeqCst) == 0 => http("404 Not Found", b"Job x does not exist"),
            "GET" => http("200 OK", br#"{"status": "RUNNING", "message": "Job is currently running."}"#),
            _ => {
                http("500 Internal Server Error", b"Traceback\nValueError: Job with submission_id x already exists.\n")
            }
        })
        .await;
        let s = submission("exists", Path::new("/tmp"), "true");
        engine(&address, 1.0, None).submit(&s).await.expect("already submitted is submitted");
        assert_eq!(GETS.load(Ordering::SeqCst), 2, "looked up before and after");

        // A 500 with no job behind it stays an error, retryable.
        let lost = fake_server(|method, _| match method {
            "GET" => http("404 Not Found", b"Job x does not exist"),
            _ => http("500 Internal Server Error", b"No available agent to submit job, please try again later."),
        })
        .await;
        let (message, retryable) = engine_error(engine(&lost, 1.0, None).submit(&s).await);
        assert!(message.contains("No available agent") && retryable, "{message}");
    });
}

// ---- Sweeps through the real binary: `ftsweep train` as the trainer, `ftsweep serve` as the
// inference server, the jobs on the shared Ray head.

const SERVE_KEY: &str = "sk-ftsweep-ray-test-key";

/// A command sweep on Ray like `sweeps/command-ray.toml`, with this test's addresses and
/// folders; `train` is the `[command] train` array's TOML.
fn ray_sweep(ws: &Workspace, name: &str, head: &str, inference_url: &str, train: &str, tail: &str) -> String {
    format!(
        r#"name = "{name}"
provider = "command"
base_model = "local/ngram"
training_file = "{train_file}"
validation_file = "{valid_file}"
seed = 42

[command]
train = {train}
output_root = "{runs}"
inference_url = "{inference_url}"
inference_api_key_env = "FTSWEEP_SERVE_KEY"

[engine]
type = "ray"
address = "{head}"
num_cpus = 1

[search]
strategy = "grid"

[evaluation]
metric = "exact_match"

[limits]
max_concurrent = 2
{tail}"#,
        train_file = example_data("topics-train.jsonl"),
        valid_file = example_data("topics-valid.jsonl"),
        runs = ws.path("runs").display(),
    )
}

/// `ftsweep train` with the run's hyperparameters, and `extra` arguments.
fn train_command(extra: &str) -> String {
    format!(
        r#"["{{ftsweep}}", "train", "--model", "{{base_model}}", "--train", "{{training_file}}",
         "--valid", "{{validation_file}}", "--epochs", "{{n_epochs}}",
         "--learning-rate-multiplier", "{{learning_rate_multiplier}}", "--batch-size", "{{batch_size}}",
         "--seed", "{{seed}}", "--output-dir", "{{output_dir}}"{extra}]"#
    )
}

const GRID: &str =
    "[hyperparameters]\nn_epochs = [1, 2, 3]\nlearning_rate_multiplier = [0.5, 2.0]\nbatch_size = [4, 16]\n";

fn run_cmd(ws: &Workspace, file: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ftsweep"));
    cmd.arg("run")
        .arg(ws.path(file))
        .arg("--yes")
        .current_dir(ws.dir.path())
        .env("FTSWEEP_SERVE_KEY", SERVE_KEY)
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG");
    cmd
}

fn run_to_end(ws: &Workspace, file: &str) -> (i32, String) {
    let out = run_cmd(ws, file).output().expect("running ftsweep");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The head's jobs of a sweep, by (run, attempt), with their statuses.
fn sweep_jobs(head: &str, sweep: &str) -> BTreeMap<(String, i64), Vec<String>> {
    let listed = runtime().block_on(jobs(head));
    let mut out: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for j in listed.iter().filter(|j| j["metadata"]["ftsweep_sweep"] == sweep) {
        let run = j["metadata"]["ftsweep_run"].as_str().unwrap_or_default().to_string();
        let attempt = j["metadata"]["ftsweep_attempt"].as_str().and_then(|a| a.parse().ok()).unwrap_or(-1);
        out.entry((run, attempt)).or_default().push(j["status"].as_str().unwrap_or_default().to_string());
    }
    out
}

/// Every run attempt the store knows has exactly one Ray job, and every Ray job of the sweep is
/// one of them; returns the jobs.
fn assert_one_job_per_attempt(ws: &Workspace, head: &str, sweep: &str) -> BTreeMap<(String, i64), Vec<String>> {
    let jobs = sweep_jobs(head, sweep);
    for ((run, attempt), statuses) in &jobs {
        assert_eq!(statuses.len(), 1, "run {run} attempt {attempt} has {} Ray jobs: {statuses:?}", statuses.len());
    }
    let recorded: BTreeMap<String, i64> =
        query(&ws.db(), "SELECT run_id || ' ' || attempt FROM runs WHERE attempt > 0")
            .iter()
            .map(|l| {
                let (run, attempt) = l.split_once(' ').unwrap();
                (run.to_string(), attempt.parse().unwrap())
            })
            .collect();
    for (run, attempt) in &jobs.keys().cloned().collect::<Vec<_>>() {
        let last = recorded.get(run).unwrap_or_else(|| panic!("a Ray job for run {run}, which the store has not"));
        assert!(attempt <= last, "a Ray job for attempt {attempt} of run {run}, whose last attempt is {last}");
    }
    for (run, last) in &recorded {
        assert!(jobs.contains_key(&(run.clone(), *last)), "run {run}'s attempt {last} has no Ray job");
    }
    jobs
}

fn scored_runs(ws: &Workspace, sweep: &str) -> Vec<Value> {
    let rows = ws.json(&["leaderboard", sweep, "--json"]);
    rows.as_array().unwrap().iter().filter(|r| r["is_baseline"] != true).cloned().collect()
}

#[test]
fn a_12_run_grid_through_ray_scores_every_run_with_one_job_per_run_attempt() {
    let head = rayhead::shared();
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", SERVE_KEY);
    let sweep = format!("ray-grid-{}", std::process::id());
    ws.write("s.toml", &ray_sweep(&ws, &sweep, &head.address, &server.url, &train_command(""), GRID));
    let (code, err) = run_to_end(&ws, "s.toml");
    assert_eq!(code, 0, "{err}");
    let runs = scored_runs(&ws, &sweep);
    assert_eq!(runs.len(), 12, "{runs:?}");
    let root = ws.path("runs").canonicalize().unwrap();
    for r in &runs {
        assert!(r["score"].as_f64().is_some(), "every run scored: {r}");
        let model = r["model"].as_str().unwrap_or_else(|| panic!("a model: {r}"));
        assert!(Path::new(model).starts_with(&root) && Path::new(model).join("adapter_config.json").is_file(), "{r}");
    }
    let jobs = assert_one_job_per_attempt(&ws, &head.address, &sweep);
    assert_eq!(jobs.len(), 12, "one attempt each: {jobs:?}");
    assert!(jobs.values().all(|s| s == &["SUCCEEDED"]), "{jobs:?}");
    // Run again: the runs are done, nothing is submitted.
    let (code, err) = run_to_end(&ws, "s.toml");
    assert_eq!(code, 0, "{err}");
    assert_eq!(sweep_jobs(&head.address, &sweep), jobs);
}

#[test]
fn a_ray_job_whose_command_fails_is_a_failed_run_with_the_last_lines_of_its_log() {
    let head = rayhead::shared();
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", SERVE_KEY);
    let sweep = format!("ray-fails-{}", std::process::id());
    // The 2-epoch run's trainer fails after printing lines; the 3-epoch run's exits 0 without
    // writing an adapter; the 1-epoch run's trains.
    let train = r#"["sh", "-c", "if [ {n_epochs} = 2 ]; then for i in $(seq 1 30); do echo trainer says $i; done; exit 7; fi; if [ {n_epochs} = 3 ]; then for i in $(seq 1 30); do echo saved nothing $i; done; exit 0; fi; exec \"$0\" \"$@\"",
         "{ftsweep}", "train", "--model", "{base_model}", "--train", "{training_file}", "--valid", "{validation_file}",
         "--epochs", "{n_epochs}", "--learning-rate-multiplier", "1", "--batch-size", "8", "--seed", "{seed}",
         "--output-dir", "{output_dir}"]"#;
    let hp = "[hyperparameters]\nn_epochs = [1, 2, 3]\n";
    ws.write("s.toml", &ray_sweep(&ws, &sweep, &head.address, &server.url, train, hp));
    let (code, err) = run_to_end(&ws, "s.toml");
    assert_eq!(code, 1, "the sweep ends, its failed runs rows (exit code 1 says a run failed): {err}");
    let failed = query(&ws.db(), "SELECT error FROM runs WHERE state = 'failed' ORDER BY n_epochs");
    assert_eq!(failed.len(), 2, "{failed:?}\n{err}");
    assert!(failed[0].contains("exit code 7") && failed[0].contains("trainer says 30"), "{}", failed[0]);
    assert!(!failed[0].contains("trainer says 5\n"), "the last lines only: {}", failed[0]);
    // Ray keeps the driver's log (there is no train.log on a Ray job): the reason quotes it.
    assert!(
        failed[1].contains("wrote no adapter_config.json") && failed[1].contains("saved nothing 30"),
        "{}",
        failed[1]
    );
    let done = query(&ws.db(), "SELECT COUNT(*) FROM runs WHERE state = 'done'");
    assert_eq!(done, vec!["1"]);
    let jobs = assert_one_job_per_attempt(&ws, &head.address, &sweep);
    assert_eq!(jobs.len(), 3, "a failing command is not retried: {jobs:?}");
}

/// `ftsweep ARGS` in the background (stderr to `log`), with `env`.
fn spawn(ws: &Workspace, args: &[&str], env: &[(&str, &str)], log: &str) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .current_dir(ws.dir.path())
        .args(args)
        .env("FTSWEEP_SERVE_KEY", SERVE_KEY)
        .envs(env.iter().copied())
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(ws.path(log)).expect("a log file"))
        .spawn()
        .expect("starting ftsweep")
}

/// Waits (a bound for a stuck test, not a timing assertion) until `ready`, while ftsweep runs.
fn wait_while_running(what: &str, child: &mut std::process::Child, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("ftsweep ended ({status}) before {what}");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A count from the database; 0 while it has no such table yet.
fn count_rows(ws: &Workspace, sql: &str) -> u64 {
    let Ok(conn) = rusqlite::Connection::open(ws.db()) else { return 0 };
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map_or(0, |n| n as u64)
}

/// The attempt directories of a sweep's runs.
fn attempt_dirs(ws: &Workspace, sweep: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for run in std::fs::read_dir(ws.path("runs").join(sweep)).into_iter().flatten().flatten() {
        for attempt in std::fs::read_dir(run.path()).into_iter().flatten().flatten() {
            out.push(attempt.path());
        }
    }
    out
}

/// Stops the sweep's Ray jobs that are still running when a test ends, passed or failed.
struct StopJobs {
    head: String,
    sweep: String,
}

impl Drop for StopJobs {
    fn drop(&mut self) {
        runtime().block_on(async {
            let engine = engine(&self.head, 1.0, None);
            for j in jobs(&self.head).await.iter().filter(|j| j["metadata"]["ftsweep_sweep"] == self.sweep.as_str()) {
                if matches!(j["status"].as_str(), Some("PENDING" | "RUNNING"))
                    && let Some(id) = j["submission_id"].as_str()
                {
                    let _ = engine.stop(id).await;
                }
            }
        });
    }
}

#[test]
fn killed_at_five_moments_a_ray_sweep_resumes_with_one_ray_job_per_run_attempt() {
    let head = rayhead::shared();
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", SERVE_KEY);
    let sweep = format!("ray-crash-{}", std::process::id());
    let _stop = StopJobs { head: head.address.clone(), sweep: sweep.clone() };
    // Steps of 20 ms: a run trains for a second or more an epoch, long enough to be killed in.
    let grid =
        "[hyperparameters]\nn_epochs = [1, 2, 3]\nlearning_rate_multiplier = [0.5, 2.0]\nbatch_size = [16, 32]\n";
    let train = train_command(r#", "--step-delay-ms", "20""#);
    ws.write("s.toml", &ray_sweep(&ws, &sweep, &head.address, &server.url, &train, grid));
    let run = ["run", "s.toml", "--yes"];
    let stall = "FTSWEEP_TEST_COMMAND_STALL";
    let jobs_now = || sweep_jobs(&head.address, &sweep);

    // 1. Just after the intent is recorded: two runs `launching`, no Ray job yet.
    let mut child = spawn(&ws, &run, &[(stall, "submit:600000")], "run1.log");
    wait_while_running("two runs launching", &mut child, || {
        count_rows(&ws, "SELECT count(*) FROM runs WHERE state = 'launching'") == 2
    });
    kill9(&mut child);
    assert!(jobs_now().is_empty(), "{:?}", jobs_now());

    // 2. Just after a submission: a Ray job exists (its id may not be recorded yet).
    let mut child = spawn(&ws, &run, &[], "run2.log");
    wait_while_running("a Ray job", &mut child, || !jobs_now().is_empty());
    kill9(&mut child);

    // 3. Mid-training: a job has written metrics and is still running on Ray when ftsweep dies.
    let mut child = spawn(&ws, &run, &[], "run3.log");
    let training = || {
        attempt_dirs(&ws, &sweep).into_iter().find(|d| {
            !d.join("adapter_config.json").exists() && d.join("metrics.jsonl").metadata().is_ok_and(|m| m.len() > 0)
        })
    };
    wait_while_running("a Ray job mid-training", &mut child, || training().is_some());
    kill9(&mut child);
    let adopted = training().expect("a job still training");

    // 4. After training, before the evaluation: the adapter is not loaded yet.
    let verbose = ["run", "s.toml", "--yes", "--verbose"];
    let mut child = spawn(&ws, &verbose, &[(stall, "open:600000")], "run4.log");
    let evaluating = || std::fs::read_to_string(ws.path("run4.log")).is_ok_and(|l| l.contains(" evaluating /"));
    wait_while_running("a run evaluating", &mut child, evaluating);
    kill9(&mut child);

    // 5. Mid-evaluation: the replies are in, the adapter still loaded.
    let replies = || {
        count_rows(
            &ws,
            "SELECT count(*) FROM predictions p JOIN repliers r ON r.id = p.replier WHERE r.model LIKE '/%'",
        )
    };
    let before = replies();
    let mut child = spawn(&ws, &run, &[(stall, "close:600000")], "run5.log");
    wait_while_running("new replies of a trained model", &mut child, || replies() > before);
    kill9(&mut child);

    // Resume from the database alone, to the end.
    let mut last = spawn(&ws, &["resume", &sweep, "--yes"], &[], "resume.log");
    let status = last.wait().expect("waiting for resume");
    let log = std::fs::read_to_string(ws.path("resume.log")).unwrap_or_default();
    assert!(status.success(), "resume failed ({status}):\n{log}");

    let runs = scored_runs(&ws, &sweep);
    assert_eq!(runs.len(), 12, "{runs:?}");
    for r in &runs {
        assert!(r["score"].as_f64().is_some(), "every run scored: {r}");
        assert!(r["model"].as_str().unwrap().ends_with("/attempt-1"), "no second attempt: {r}");
    }
    let jobs = assert_one_job_per_attempt(&ws, &head.address, &sweep);
    assert_eq!(jobs.len(), 12, "one Ray job per run, each attempt 1: {jobs:?}");
    assert!(jobs.values().all(|s| s == &["SUCCEEDED"]), "{jobs:?}");
    // The job running when ftsweep died was followed to its end, not submitted again.
    assert!(adopted.join("adapter_config.json").is_file(), "{}", adopted.display());
}

#[test]
fn early_stopping_stops_the_ray_job_and_the_run_keeps_its_best_checkpoint() {
    let head = rayhead::shared();
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", SERVE_KEY);
    let sweep = format!("ray-stop-{}", std::process::id());
    let _stop = StopJobs { head: head.address.clone(), sweep: sweep.clone() };
    // No validation can improve by 100: the first stays the best, and the job is stopped after
    // `patience` more, in its second epoch (four validations an epoch), after epoch 1's checkpoint.
    let tail = "[hyperparameters]\nn_epochs = [3]\nlearning_rate_multiplier = [1.0]\nbatch_size = [32]\n\n\
                [early_stopping]\npatience = 4\nmin_delta = 100.0\n";
    let train = train_command(r#", "--step-delay-ms", "80""#);
    ws.write("s.toml", &ray_sweep(&ws, &sweep, &head.address, &server.url, &train, tail));
    let (code, err) = run_to_end(&ws, "s.toml");
    assert_eq!(code, 0, "{err}");
    let runs = scored_runs(&ws, &sweep);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert!(run["stopped_early"].is_string(), "{run}");
    let model = run["model"].as_str().unwrap();
    assert!(model.contains("/attempt-1/checkpoint-"), "the best checkpoint is the model: {model}");
    assert!(run["score"].as_f64().is_some(), "{run}");
    let dir = Path::new(model).parent().unwrap();
    assert!(!dir.join("adapter_config.json").exists(), "the trainer did not get to its final adapter");
    let jobs = assert_one_job_per_attempt(&ws, &head.address, &sweep);
    assert_eq!(jobs.values().collect::<Vec<_>>(), [&["STOPPED".to_string()]], "Ray stopped the job: {jobs:?}");
}
