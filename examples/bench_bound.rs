//! Benchmark: how close a sweep comes to the bound, and how many requests it sends. A 12-run
//! grid (`n_epochs` 1, 3, 6 × `learning_rate_multiplier` 0.3, 1.5 × `batch_size` 4, 32; 60
//! training and 30 validation examples) against `ftsweep serve --max-running 4
//! --example-delay-ms D` on 127.0.0.1, with `max_concurrent = 4`, for jobs of about 1 s and
//! about 5 s per 3 epochs. The bound is the best packing of the 12 jobs' measured durations
//! (the server's log: each job's start and end) into the 4 slots, by an exact search, plus one
//! validation (the time of one model's evaluation: its 30 chat completions, 8 at a time, as
//! the sweep sends them).
//!
//! Rows: this build (`after`); `FTSWEEP_BEFORE_BIN=path` adds another binary's (`before`);
//! with the venv `target/peer-venv` (`python3 -m venv target/peer-venv &&
//! target/peer-venv/bin/pip install optuna openai`), the peer script `scripts/peer-optuna.py`
//! (Optuna's GridSampler + the openai SDK, 4 trials at a time, 2 s polling). The server is
//! always this build's.
//!
//! `cargo build --release && cargo run --release --example bench_bound`

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "common/binary.rs"]
mod common;
use common::own_binary;

const KEY: &str = "bench-key-7d1c0e55ab";
const SLOTS: usize = 4;
const RUNS: f64 = 12.0;

/// The smallest makespan of `jobs` on `slots` identical slots: an exact branch and bound
/// (longest first, a job never tried on two slots of equal load, pruned by the best so far).
fn best_packing(jobs: &[f64], slots: usize) -> f64 {
    let mut jobs = jobs.to_vec();
    jobs.sort_by(|a, b| b.total_cmp(a));
    let mut loads = vec![0.0f64; slots.max(1)];
    // Longest-first as the first answer to beat.
    let mut best = {
        let mut l = loads.clone();
        for j in &jobs {
            let i = (0..l.len()).min_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap_or(0);
            l[i] += j;
        }
        l.iter().copied().fold(0.0, f64::max)
    };
    fn place(i: usize, jobs: &[f64], loads: &mut [f64], best: &mut f64) {
        if i == jobs.len() {
            *best = best.min(loads.iter().copied().fold(0.0, f64::max));
            return;
        }
        for s in 0..loads.len() {
            if (0..s).any(|t| loads[t] == loads[s]) || loads[s] + jobs[i] >= *best {
                continue;
            }
            loads[s] += jobs[i];
            place(i + 1, jobs, loads, best);
            loads[s] -= jobs[i];
        }
    }
    place(0, &jobs, &mut loads, &mut best);
    best
}

/// What one tool did on one setting.
struct Row {
    tool: &'static str,
    wall: f64,
    non_chat: u64,
    total: u64,
    durations: Vec<f64>,
    validation: f64,
}

/// A log line without its ANSI colour codes.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The seconds since midnight of a log line's RFC 3339 timestamp.
fn clock(line: &str) -> Option<f64> {
    // The stamp comes first, perhaps wrapped in ANSI colour codes.
    let start = line.find(|c: char| c.is_ascii_digit())?;
    let stamp: String = line[start..].chars().take_while(|c| c.is_ascii_digit() || "-:.T".contains(*c)).collect();
    let t = stamp.split('T').nth(1)?;
    let mut parts = t.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Each job's training time from the server's log (`job running` to `job ended`).
fn durations(log: &str) -> Vec<f64> {
    let mut started = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in log.lines().map(plain) {
        let line = line.as_str();
        let Some(job) =
            line.split("job=").nth(1).and_then(|r| r.split(|c: char| c.is_whitespace() || c == '\x1b').next())
        else {
            continue;
        };
        let Some(at) = clock(line) else { continue };
        if line.contains("job running") {
            started.insert(job.to_string(), at);
        } else if line.contains("job ended")
            && let Some(s) = started.remove(job)
        {
            out.push(at - s);
        }
    }
    out
}

fn take_lines(path: &Path, n: usize, to: &Path) {
    let text = std::fs::read_to_string(path).expect("the example data");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).take(n).collect();
    std::fs::write(to, lines.join("\n") + "\n").expect("writing the data");
}

struct Server {
    child: std::process::Child,
    url: String,
    log: PathBuf,
}

fn serve(dir: &Path, delay_ms: &str) -> Server {
    let log = dir.join("serve.log");
    let mut child = Command::new(own_binary())
        .args(["serve", "--port", "0", "--key", KEY, "--max-running", "4", "--example-delay-ms", delay_ms])
        .arg("--state")
        .arg(dir.join("serve.db"))
        .env("RUST_LOG", "ftsweep::serve::worker=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("the server's log"))
        .spawn()
        .expect("starting ftsweep serve");
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut url).expect("the URL");
    Server { child, url: url.trim().to_string(), log }
}

/// The time of one model's evaluation: the 30 validation prompts, 8 at a time.
fn one_validation(url: &str, valid: &Path) -> f64 {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let jobs: serde_json::Value = http
            .get(format!("{url}/fine_tuning/jobs?limit=100"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("the job list")
            .json()
            .await
            .expect("a list");
        let model = jobs["data"]
            .as_array()
            .and_then(|d| d.iter().find_map(|j| j["fine_tuned_model"].as_str().map(str::to_string)))
            .expect("a fine-tuned model");
        let prompts: Vec<serde_json::Value> = std::fs::read_to_string(valid)
            .expect("the validation file")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                let mut messages = v["messages"].as_array().cloned().unwrap_or_default();
                messages.pop();
                serde_json::Value::Array(messages)
            })
            .collect();
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for messages in prompts {
            let (http, url, model, permits) = (http.clone(), url.to_string(), model.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire().await;
                let body = serde_json::json!({"model": model, "messages": messages, "temperature": 0, "max_completion_tokens": 64});
                let _ = http.post(format!("{url}/chat/completions")).bearer_auth(KEY).json(&body).send().await;
            });
        }
        while tasks.join_next().await.is_some() {}
        started.elapsed().as_secs_f64()
    })
}

/// Runs one tool on a fresh server and folder.
fn measure(tool: &'static str, delay_ms: &str, root: &Path, command: &dyn Fn(&Path, &str) -> Command) -> Row {
    let dir = tempfile::tempdir().expect("a temporary folder");
    take_lines(&root.join("examples/data/topics-train.jsonl"), 60, &dir.path().join("train.jsonl"));
    take_lines(&root.join("examples/data/topics-valid.jsonl"), 30, &dir.path().join("valid.jsonl"));
    let mut server = serve(dir.path(), delay_ms);
    let started = Instant::now();
    let out = command(dir.path(), &server.url).current_dir(dir.path()).output().expect("running the tool");
    let wall = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tool} failed:\n{err}\n{}", String::from_utf8_lossy(&out.stdout));
    let line = err.lines().find(|l| l.starts_with("requests to ")).expect("the request line");
    let count = |k: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u64>().ok())
    };
    let total = count("total").unwrap_or(0);
    let non_chat = total - count("completions").unwrap_or(0);
    let validation = one_validation(&server.url, &dir.path().join("valid.jsonl"));
    let _ = server.child.kill();
    let _ = server.child.wait();
    let durations = durations(&std::fs::read_to_string(&server.log).unwrap_or_default());
    assert_eq!(durations.len(), 12, "12 jobs in the server's log of {tool}");
    Row { tool, wall, non_chat, total, durations, validation }
}

fn sweep_toml(url: &str) -> String {
    format!(
        "name = \"bound\"\nprovider = \"openai\"\nbase_model = \"local/ngram\"\ntraining_file = \"train.jsonl\"\n\
         validation_file = \"valid.jsonl\"\nseed = 42\n\n[search]\nstrategy = \"grid\"\n\n[hyperparameters]\n\
         n_epochs = [1, 3, 6]\nlearning_rate_multiplier = [0.3, 1.5]\nbatch_size = [4, 32]\n\n[evaluation]\n\
         metric = \"exact_match\"\n\n[limits]\nmax_concurrent = 4\n\n[openai]\nbase_url = \"{url}\"\n\
         api_key_env = \"FTSWEEP_BENCH_KEY\"\n"
    )
}

fn ftsweep(bin: PathBuf) -> impl Fn(&Path, &str) -> Command {
    move |dir: &Path, url: &str| {
        std::fs::write(dir.join("bound.toml"), sweep_toml(url)).expect("writing the sweep");
        let mut c = Command::new(&bin);
        c.args(["run", "--yes", "bound.toml"]).env("FTSWEEP_BENCH_KEY", KEY).env_remove("OPENAI_BASE_URL");
        c
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv_python = root.join("target/peer-venv/bin/python");
    let before = std::env::var_os("FTSWEEP_BEFORE_BIN").map(PathBuf::from);
    println!("| jobs of | tool | wall | × bound | non-chat requests | per run | requests per run (all) |");
    println!("|---|---|---|---|---|---|---|");
    // 3 epochs of 60 examples pause 180 × D: D = 5.5 ms for about 1 s, 28 ms for about 5 s.
    for (label, delay) in [("1 s per 3 epochs", "5.5"), ("5 s per 3 epochs", "28")] {
        let mut rows = Vec::new();
        if venv_python.exists() {
            let script = root.join("scripts/peer-optuna.py");
            let python = venv_python.clone();
            rows.push(measure("Optuna + SDK", delay, &root, &move |_dir: &Path, url: &str| {
                let mut c = Command::new(&python);
                c.arg(&script).args([
                    "--base-url",
                    url,
                    "--key",
                    KEY,
                    "--train",
                    "train.jsonl",
                    "--valid",
                    "valid.jsonl",
                ]);
                c
            }));
        }
        if let Some(bin) = &before {
            rows.push(measure("ftsweep before", delay, &root, &ftsweep(bin.clone())));
        }
        rows.push(measure("ftsweep after", delay, &root, &ftsweep(own_binary())));
        for (i, r) in rows.iter().enumerate() {
            let bound = best_packing(&r.durations, SLOTS) + r.validation;
            println!(
                "| {} | {} | {:.2} s (bound {:.2} s) | {:.2} | {} | {:.2} | {:.1} |",
                if i == 0 { label } else { "" },
                r.tool,
                r.wall,
                bound,
                r.wall / bound,
                r.non_chat,
                r.non_chat as f64 / RUNS,
                r.total as f64 / RUNS,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::best_packing;

    #[test]
    fn the_best_packing_beats_longest_first_where_it_can() {
        // On 2 slots, longest first gives 7 (3+2+2, 3+2); the best is 6 (3+3, 2+2+2).
        assert_eq!(best_packing(&[3.0, 3.0, 2.0, 2.0, 2.0], 2), 6.0);
        assert_eq!(best_packing(&[2.0, 1.0, 1.0 / 3.0, 2.0, 1.0, 1.0 / 3.0], 2), 2.0 + 1.0 + 1.0 / 3.0);
        assert_eq!(best_packing(&[5.0], 4), 5.0);
        assert_eq!(best_packing(&[], 4), 0.0);
    }
}
