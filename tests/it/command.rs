//! `provider = "command"` on the local engine, end to end with the real binary: `ftsweep train`
//! as the trainer command (through `{ftsweep}`, behind a script that counts its starts) and
//! `ftsweep serve` on 127.0.0.1 as the inference server, loading each run's adapter directory.
//! Every process a test starts (ftsweep, the server, the trainers) is stopped when it ends, also
//! when it fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Workspace, example_data, query};

const KEY: &str = "cmd-test-key-7a4c1e93b2";
const KEY_ENV: &str = "FTSWEEP_TEST_INFERENCE_KEY";

/// `ftsweep serve` on a free loopback port, killed when dropped.
struct Serve {
    child: Child,
    url: String,
    _stdout: BufReader<ChildStdout>,
}

impl Serve {
    fn start(ws: &Workspace, max_loras: u32) -> Serve {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
            .args(["serve", "--port", "0", "--key", KEY, "--max-loras", &max_loras.to_string(), "--state"])
            .arg(ws.path("serve.db"))
            .current_dir(ws.dir.path())
            .env_remove("FTSWEEP_SERVE_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(ws.path("serve.log")).expect("a log file"))
            .spawn()
            .expect("starting ftsweep serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading the URL line");
        let url = line.trim().to_string();
        let serve = Serve { child, url, _stdout: stdout };
        assert!(serve.url.starts_with("http://127.0.0.1:"), "no URL on stdout: {line:?}");
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes a test started: `ftsweep run`s in the background, and the trainers under the
/// workspace's `runs/` (each by the pid its wrapper recorded, as long as it recorded no exit).
/// All are killed when the test ends, passed or failed.
struct Reaper {
    runs: PathBuf,
    children: Vec<Child>,
}

impl Reaper {
    fn new(ws: &Workspace) -> Reaper {
        Reaper { runs: ws.path("runs"), children: Vec::new() }
    }

    /// The attempt directories under `runs/`.
    fn attempts(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for sweep in read_dirs(&self.runs) {
            for run in read_dirs(&sweep) {
                dirs.extend(read_dirs(&run).into_iter().filter(|d| d.join("job.lock").exists()));
            }
        }
        dirs.sort();
        dirs
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for dir in self.attempts() {
            if dir.join("exit_status").exists() {
                continue;
            }
            if let Ok(pid) = std::fs::read_to_string(dir.join("job.pid")) {
                // The trainer's process group: the trainer and anything it started.
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", pid.trim())]).status();
            }
        }
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

/// The trainer command: a script that appends its output directory, `{init_from}` and its GPU
/// to `starts.log` (one line per start), fails with exit 3 after printing a line when
/// `{batch_size}` is the content of `fail-batch` (if that file exists), and otherwise runs
/// `ftsweep train` in its place, `--init-from {init_from}` last (empty outside a continuation,
/// which `ftsweep train` takes as "from the base model").
const TRAINER: &str = r#"#!/bin/sh
here=$(dirname "$0")
echo "$1 init=$3 gpu=${CUDA_VISIBLE_DEVICES:-none}" >> "$here/starts.log"
if [ -f "$here/fail-batch" ] && [ "$2" = "$(cat "$here/fail-batch")" ]; then
  echo "loading shards: bad header in model.safetensors (batch $2)"
  exit 3
fi
init=$3
shift 3
exec "$@" --init-from "$init"
"#;

/// A grid over `hyperparameters`.
fn grid(hyperparameters: &str) -> String {
    format!("[search]\nstrategy = \"grid\"\n\n[hyperparameters]\n{hyperparameters}")
}

/// A command sweep over the example data through `serve` at `url`; `delay_ms` slows each step;
/// `space` is its `[search]` and `[hyperparameters]`, `extra` more tables.
fn command_sweep(ws: &Workspace, name: &str, url: &str, delay_ms: u64, space: &str, extra: &str) -> String {
    ws.write("trainer.sh", TRAINER);
    format!(
        r#"name = "{name}"
provider = "command"
base_model = "local/ngram"
training_file = "{train}"
validation_file = "{valid}"
seed = 42

[command]
train = ["sh", "{script}", "{{output_dir}}", "{{batch_size}}", "{{init_from}}",
         "{{ftsweep}}", "train", "--model", "{{base_model}}", "--train", "{{training_file}}",
         "--valid", "{{validation_file}}", "--epochs", "{{n_epochs}}",
         "--learning-rate-multiplier", "{{learning_rate_multiplier}}", "--batch-size", "{{batch_size}}",
         "--seed", "{{seed}}", "--output-dir", "{{output_dir}}", "--step-delay-ms", "{delay_ms}"]
output_root = "runs"
inference_url = "{url}"
inference_api_key_env = "{KEY_ENV}"

{space}

[evaluation]
metric = "exact_match"

[limits]
max_concurrent = 2

{extra}
"#,
        train = example_data("topics-train.jsonl"),
        valid = example_data("topics-valid.jsonl"),
        script = ws.path("trainer.sh").display(),
    )
}

/// `ftsweep ARGS` in the workspace with the inference key, to its end: (exit code, stdout, stderr).
fn ftsweep(ws: &Workspace, args: &[&str]) -> (i32, String, String) {
    let out = ws.cmd().args(args).env(KEY_ENV, KEY).output().expect("running ftsweep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ftsweep ARGS` in the background (stderr to `log`), with `env`.
fn spawn(ws: &Workspace, args: &[&str], env: &[(&str, &str)], log: &str) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .current_dir(ws.dir.path())
        .args(args)
        .env(KEY_ENV, KEY)
        .envs(env.iter().copied())
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.path(log)).expect("a log file"))
        .spawn()
        .expect("starting ftsweep")
}

/// How many times each output directory's trainer was started.
fn starts(ws: &Workspace) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(ws.path("starts.log")).unwrap_or_default().lines() {
        let dir = line.split(' ').next().unwrap_or_default();
        *counts.entry(dir.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Waits (at most 120 s, a bound for a stuck test, not a timing assertion) until `ready`.
fn wait_until(what: &str, child: &mut Child, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("ftsweep ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A count from the database; 0 while it has no such table yet (ftsweep is creating it).
fn count(ws: &Workspace, sql: &str) -> u64 {
    let Ok(conn) = rusqlite::Connection::open(ws.db()) else { return 0 };
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map_or(0, |n| n as u64)
}

fn runs_in(ws: &Workspace, state: &str) -> u64 {
    count(ws, &format!("SELECT count(*) FROM runs WHERE state = '{state}'"))
}

fn rows(v: &Value) -> Vec<&Value> {
    v.as_array().expect("an array").iter().filter(|r| r["kind"] == "run").collect()
}

fn baseline(v: &Value) -> &Value {
    v.as_array().expect("an array").iter().find(|r| r["is_baseline"] == true).expect("a baseline row")
}

const GRID12: &str = "n_epochs = [1, 2, 3]\nlearning_rate_multiplier = [0.5, 2.0]\nbatch_size = [16, 32]";

#[test]
fn a_grid_of_trainer_commands_is_trained_evaluated_and_ranked() {
    let ws = Workspace::new();
    // Two adapter slots for two runs evaluated at a time: an adapter left loaded would fill them.
    let serve = Serve::start(&ws, 2);
    let _reaper = Reaper::new(&ws);
    ws.write("s.toml", &command_sweep(&ws, "grid", &serve.url, 0, &grid(GRID12), ""));
    let started = Instant::now();
    // No `--yes`: a sweep on the user's own hardware has no USD to confirm, so
    // `run` without a terminal does not refuse it.
    let (code, _, err) = ftsweep(&ws, &["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("command grid: 12 runs trained and evaluated in {:.1}s", started.elapsed().as_secs_f64());

    let board = ws.json(&["leaderboard", "grid", "--json"]);
    let runs = rows(&board);
    assert_eq!(runs.len(), 12, "{board}");
    let root = std::fs::canonicalize(ws.path("runs/grid")).unwrap();
    for r in &runs {
        assert_eq!(r["status"], "done", "{r}");
        assert!(r["score"].as_f64().is_some(), "every run is scored: {r}");
        let model = r["model"].as_str().unwrap();
        assert!(Path::new(model).is_absolute() && model.ends_with("/attempt-1"), "{model}");
        assert!(Path::new(model).starts_with(&root), "{model} is under {}", root.display());
        assert!(Path::new(model).join("adapter_config.json").is_file(), "{model} is an adapter");
        assert_eq!(r["model_dir"], r["model"], "the row names its model directory");
        assert!(r["trained_tokens"].as_u64().unwrap() > 0, "{r}");
    }
    assert!(baseline(&board)["score"].as_f64().is_some(), "the baseline is scored: {board}");
    assert!(baseline(&board).get("model_dir").is_none(), "the base model is a name: {board}");
    // The trained models learnt something the untrained base model did not.
    let best = runs.iter().filter_map(|r| r["score"].as_f64()).fold(0.0, f64::max);
    assert!(best > baseline(&board)["score"].as_f64().unwrap(), "{board}");
    // One trainer start per run attempt.
    let counts = starts(&ws);
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // The step metrics and epoch checkpoints of metrics.jsonl and checkpoint-*/ are recorded.
    let checkpoints = query(&ws.db(), "SELECT count(*) FROM checkpoints");
    assert_eq!(checkpoints, ["24"], "1 + 2 + 3 epochs for each of 4 configurations");

    // The inference key went into request headers only: not into the database or the trainers' logs.
    let mut files = vec![ws.db()];
    files.extend(Reaper::new(&ws).attempts().into_iter().map(|d| d.join("train.log")));
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "the key is in {}", f.display());
    }

    // `best` names the winning adapter directory.
    let (code, out, err) = ftsweep(&ws, &["best", "grid"]);
    assert_eq!(code, 0, "{err}");
    assert!(Path::new(out.trim()).join("adapter_config.json").is_file(), "{out}");
}

#[test]
fn a_trainer_that_fails_is_a_failed_row_with_the_last_lines_of_its_log() {
    let ws = Workspace::new();
    let serve = Serve::start(&ws, 2);
    let _reaper = Reaper::new(&ws);
    ws.write("fail-batch", "32");
    let hp = "n_epochs = [1]\nbatch_size = [16, 32]\nlearning_rate_multiplier = [1.0]";
    ws.write("s.toml", &command_sweep(&ws, "fails", &serve.url, 0, &grid(hp), ""));
    let (code, _, err) = ftsweep(&ws, &["run", "s.toml", "--yes"]);
    assert_eq!(code, 1, "a failed run makes the exit code 1: {err}");
    let board = ws.json(&["leaderboard", "fails", "--json"]);
    let runs = rows(&board);
    let failed: Vec<_> = runs.iter().filter(|r| r["status"] == "failed").collect();
    let done: Vec<_> = runs.iter().filter(|r| r["status"] == "done").collect();
    assert_eq!((failed.len(), done.len()), (1, 1), "the sweep goes on past the failure: {board}");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("exited with code 3"), "{error}");
    assert!(error.contains("bad header in model.safetensors (batch 32)"), "the log's last lines: {error}");
    // A command that failed is not tried again (no second attempt of the failed run).
    let counts = starts(&ws);
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.keys().all(|d| d.ends_with("/attempt-1")) && counts.values().all(|n| *n == 1), "{counts:?}");
}

/// A sweep that trains long enough to be killed in the middle: 4 runs, 2 at a time.
const GRID4: &str = "n_epochs = [1, 2]\nlearning_rate_multiplier = [1.0]\nbatch_size = [16, 32]";

#[test]
fn killed_at_five_moments_the_sweep_still_starts_one_trainer_per_run_and_adopts_the_running_ones() {
    let ws = Workspace::new();
    let serve = Serve::start(&ws, 8);
    let mut reaper = Reaper::new(&ws);
    ws.write("s.toml", &command_sweep(&ws, "crash", &serve.url, 30, &grid(GRID4), ""));
    let run = ["run", "s.toml", "--yes"];
    let stall = "FTSWEEP_TEST_COMMAND_STALL";

    // 1. Just after the intent is recorded: the runs are `launching`, no trainer started.
    let mut child = spawn(&ws, &run, &[(stall, "submit:600000")], "run1.log");
    wait_until("two runs launching", &mut child, || runs_in(&ws, "launching") == 2);
    kill9(&mut child);
    assert!(starts(&ws).is_empty(), "{:?}", starts(&ws));

    // 2. Just after a submission: a trainer started (its job id may not be recorded yet).
    let mut child = spawn(&ws, &run, &[], "run2.log");
    wait_until("a trainer start", &mut child, || !starts(&ws).is_empty());
    kill9(&mut child);

    // 3. Mid-training: a trainer has written metrics and is still running when ftsweep dies.
    let mut child = spawn(&ws, &run, &[], "run3.log");
    let running = |reaper: &Reaper| {
        reaper
            .attempts()
            .into_iter()
            .find(|d| !d.join("exit_status").exists() && d.join("metrics.jsonl").metadata().is_ok_and(|m| m.len() > 0))
    };
    wait_until("a trainer mid-training", &mut child, || running(&reaper).is_some());
    kill9(&mut child);
    let adopted = running(&reaper).expect("a trainer still running");
    let adopted_pid = std::fs::read_to_string(adopted.join("job.pid")).unwrap();

    // 4. After training, before the evaluation: the adapter is not loaded yet.
    let verbose = ["run", "s.toml", "--yes", "--verbose"];
    let mut child = spawn(&ws, &verbose, &[(stall, "open:600000")], "run4.log");
    let evaluating = || std::fs::read_to_string(ws.path("run4.log")).is_ok_and(|l| l.contains(" evaluating /"));
    wait_until("a run evaluating", &mut child, evaluating);
    kill9(&mut child);

    // 5. Mid-evaluation: the replies are in, the adapter still loaded.
    let replies =
        || count(&ws, "SELECT count(*) FROM predictions p JOIN repliers r ON r.id = p.replier WHERE r.model LIKE '/%'");
    let before = replies();
    let mut child = spawn(&ws, &run, &[(stall, "close:600000")], "run5.log");
    wait_until("new replies of a trained model", &mut child, || replies() > before);
    kill9(&mut child);

    // Resume from the database alone, to the end.
    let mut last = spawn(&ws, &["resume", "crash", "--yes"], &[], "resume.log");
    let status = last.wait().expect("waiting for resume");
    reaper.children.push(last);
    let log = std::fs::read_to_string(ws.path("resume.log")).unwrap_or_default();
    assert!(status.success(), "resume failed ({status}):\n{log}");

    let board = ws.json(&["leaderboard", "crash", "--json"]);
    let runs = rows(&board);
    assert_eq!(runs.len(), 4, "{board}");
    for r in &runs {
        assert_eq!(r["status"], "done", "{r}");
        assert!(r["model"].as_str().unwrap().ends_with("/attempt-1"), "no second attempt: {r}");
    }
    let counts = starts(&ws);
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "one trainer start per run attempt: {counts:?}");
    // The trainer running when ftsweep died was followed to its end, not started again.
    assert_eq!(std::fs::read_to_string(adopted.join("job.pid")).unwrap(), adopted_pid);
    assert!(adopted.join("adapter_config.json").is_file());
    let exit = std::fs::read_to_string(adopted.join("exit_status")).unwrap();
    assert_eq!(exit.trim(), r#"{"code":0}"#);
}

#[test]
fn early_stopping_sends_sigterm_to_the_trainer_and_keeps_its_best_checkpoint() {
    let ws = Workspace::new();
    let serve = Serve::start(&ws, 2);
    let _reaper = Reaper::new(&ws);
    // No validation can improve by 100: the first one stays the best, and the job stops after
    // `patience` more, in its second epoch (four validations an epoch), after epoch 1's checkpoint.
    let stop = "[early_stopping]\npatience = 4\nmin_delta = 100.0";
    let hp = "n_epochs = [3]\nlearning_rate_multiplier = [1.0]\nbatch_size = [32]";
    ws.write("s.toml", &command_sweep(&ws, "stop", &serve.url, 80, &grid(hp), stop));
    let (code, _, err) = ftsweep(&ws, &["run", "s.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    let board = ws.json(&["leaderboard", "stop", "--json"]);
    let run = rows(&board)[0];
    assert_eq!(run["status"], "done", "{run}");
    assert!(run["stopped_early"].is_string(), "{run}");
    let model = run["model"].as_str().unwrap();
    assert!(model.contains("/attempt-1/checkpoint-"), "the best checkpoint is the model: {model}");
    let dir = Path::new(model).parent().unwrap();
    assert!(dir.join("stop_requested").exists());
    let exit = std::fs::read_to_string(dir.join("exit_status")).unwrap();
    assert_eq!(exit.trim(), r#"{"signal":15}"#, "ended by SIGTERM");
    assert!(!dir.join("adapter_config.json").exists(), "the trainer did not get to its final adapter");
}

#[test]
fn cancel_stops_the_running_trainers() {
    let ws = Workspace::new();
    let serve = Serve::start(&ws, 2);
    let mut reaper = Reaper::new(&ws);
    let hp = "n_epochs = [3]\nlearning_rate_multiplier = [1.0]\nbatch_size = [16, 32]";
    ws.write("s.toml", &command_sweep(&ws, "cancel", &serve.url, 200, &grid(hp), ""));
    let mut child = spawn(&ws, &["run", "s.toml", "--yes"], &[], "run.log");
    wait_until("two trainers running", &mut child, || {
        reaper.attempts().iter().filter(|d| d.join("job.pid").exists()).count() == 2
    });
    // ftsweep dies; its trainers go on, and `cancel` stops them.
    kill9(&mut child);
    reaper.children.push(child);
    let (code, _, err) = ftsweep(&ws, &["cancel", "cancel"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for dir in reaper.attempts() {
        while !dir.join("exit_status").exists() {
            assert!(Instant::now() < deadline, "the trainer in {} did not stop", dir.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        let exit = std::fs::read_to_string(dir.join("exit_status")).unwrap();
        assert_eq!(exit.trim(), r#"{"signal":15}"#, "{}", dir.display());
    }
    assert_eq!(query(&ws.db(), "SELECT state FROM runs"), ["cancelled", "cancelled"]);
}

#[test]
fn halving_continues_a_runs_model_through_init_from_and_replicates_the_leader() {
    let ws = Workspace::new();
    let serve = Serve::start(&ws, 2);
    let _reaper = Reaper::new(&ws);
    let space = "[search]\nstrategy = \"successive_halving\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3\n\
                 replicate_top = 1\nreplicate_seeds = [7]\n\n\
                 [hyperparameters]\nlearning_rate_multiplier = [0.5, 2.0, 4.0]\nbatch_size = [32]";
    ws.write("s.toml", &command_sweep(&ws, "halving", &serve.url, 0, space, ""));
    let (code, _, err) = ftsweep(&ws, &["run", "s.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    let board = ws.json(&["leaderboard", "halving", "--json"]);
    let runs = rows(&board);
    assert!(runs.iter().all(|r| r["status"] == "done"), "{board}");
    let origins: Vec<&str> = runs.iter().map(|r| r["origin"].as_str().unwrap()).collect();
    assert!(origins.contains(&"continue"), "a rung continues a model: {origins:?}");
    assert!(runs.iter().any(|r| r["role"] == "replicate"), "the leader is replicated: {board}");
    // Each continuation's trainer started from its parent run's adapter directory.
    let log = std::fs::read_to_string(ws.path("starts.log")).unwrap();
    let inits: Vec<&str> = log.lines().filter_map(|l| l.split(" init=").nth(1)?.split(' ').next()).collect();
    let continued: Vec<&&str> = inits.iter().filter(|i| !i.is_empty()).collect();
    assert!(!continued.is_empty(), "{log}");
    for dir in continued {
        assert!(Path::new(dir).join("adapter_config.json").is_file(), "{dir} is the parent's adapter");
        assert!(runs.iter().any(|r| r["model"] == **dir), "{dir} is a run's model");
    }
    assert!(starts(&ws).values().all(|n| *n == 1), "{log}");
}

#[test]
fn the_local_engine_gives_each_job_one_of_its_gpus() {
    let ws = Workspace::new();
    let serve = Serve::start(&ws, 4);
    let _reaper = Reaper::new(&ws);
    let hp = "n_epochs = [1]\nlearning_rate_multiplier = [0.5, 1.0, 2.0]\nbatch_size = [32]";
    let sweep = command_sweep(&ws, "gpus", &serve.url, 0, &grid(hp), "").replace(
        "[limits]\nmax_concurrent = 2",
        "[engine]\ntype = \"local\"\ngpus = [5, 7]\n\n[limits]\nmax_concurrent = 3",
    );
    ws.write("s.toml", &sweep);
    let (code, _, err) = ftsweep(&ws, &["run", "s.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    let log = std::fs::read_to_string(ws.path("starts.log")).unwrap();
    let gpus: Vec<&str> = log.lines().filter_map(|l| l.split(" gpu=").nth(1)).collect();
    assert_eq!(gpus.len(), 3, "{log}");
    assert!(gpus.iter().all(|g| *g == "5" || *g == "7"), "{log}");
}
