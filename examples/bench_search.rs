//! Benchmark: what finding the best model costs with each search strategy.
//! One 3×3×3 grid on the example topic data (n_epochs 1–3 × learning-rate
//! multiplier 0.1, 1, 10 × batch size 4, 16, 64), searched four ways:
//! (a) the naive grid, a job per run; (b) epochs from checkpoints; (c)
//! successive halving (eta 3, 1 → 3 epochs); (d) halving plus early stopping.
//! For each: the trained tokens, the jobs, the wall time, the model `best`
//! picks, and whether that pick's configuration is in the naive grid's tied
//! group (the runs statistically tied with its leader). Runs against a real
//! `ftsweep serve` over loopback (the OpenAI protocol; `--example-delay-ms 5`, an epoch
//! of the 723 examples lasting about 3.6 s
//! so that jobs stream their events while they train, as hosted jobs do),
//! then with the local provider.
//!
//! `cargo build --release && cargo run --release --example bench_search [-- serve|local]`

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

#[path = "common/binary.rs"]
mod common;
use common::binary;

const STRATEGIES: [(&str, &str); 4] = [
    ("(a) naive grid", "[search]\nstrategy = \"grid\"\n"),
    ("(b) epochs from checkpoints", "[search]\nstrategy = \"grid\"\nepochs_from_checkpoints = true\n"),
    (
        "(c) successive halving",
        "[search]\nstrategy = \"successive_halving\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3\n",
    ),
    (
        "(d) halving + early stopping",
        "[search]\nstrategy = \"successive_halving\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3\n\n[early_stopping]\n",
    ),
];

fn sweep_text(name: &str, search: &str, data: &Path, server: Option<&str>) -> String {
    let epochs = if search.contains("successive_halving") { "" } else { "n_epochs = [1, 2, 3]\n" };
    let mut text = format!(
        "name = \"{name}\"\nprovider = \"{}\"\nbase_model = \"local/ngram\"\n\
         training_file = \"{}/topics-train.jsonl\"\nvalidation_file = \"{}/topics-valid.jsonl\"\nseed = 42\n\n\
         {search}\n[hyperparameters]\n{epochs}learning_rate_multiplier = [0.1, 1.0, 10.0]\nbatch_size = [4, 16, 64]\n\n\
         [evaluation]\nmetric = \"exact_match\"\n\n[limits]\nmax_concurrent = 3\n",
        if server.is_some() { "openai" } else { "local" },
        data.display(),
        data.display()
    );
    if let Some(url) = server {
        text.push_str(&format!("\n[openai]\nbase_url = \"{url}\"\napi_key_env = \"FTSWEEP_BENCH_KEY\"\n"));
    }
    text
}

fn ftsweep(bin: &Path, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .current_dir(dir)
        .args(["--db", "bench.db"])
        .args(args)
        .env("FTSWEEP_BENCH_KEY", "bench-key-3b8e1f0a9c")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("running ftsweep");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

type Config = (Value, Value, Value);

/// The configuration behind a row's model: the epochs it saw (fewer than
/// `n_epochs` when early stopping kept an earlier checkpoint), lr and batch.
fn config(row: &Value) -> Config {
    let epochs = if row["model_epochs"].is_null() { &row["n_epochs"] } else { &row["model_epochs"] };
    (epochs.clone(), row["learning_rate_multiplier"].clone(), row["batch_size"].clone())
}

struct Outcome {
    label: &'static str,
    tokens: u64,
    jobs: usize,
    stopped: usize,
    seconds: f64,
    pick: Value,
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let bin = binary();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    for provider in ["serve", "local"] {
        if !which.is_empty() && !which.iter().any(|w| w == provider) {
            continue;
        }
        let root = tempfile::tempdir().expect("a temporary folder");
        let server = (provider == "serve").then(|| {
            let mut child = Command::new(&bin)
                .args([
                    "serve",
                    "--port",
                    "0",
                    "--key",
                    "bench-key-3b8e1f0a9c",
                    "--max-running",
                    "3",
                    "--example-delay-ms",
                    "5",
                    "--state",
                ])
                .arg(root.path().join("serve.db"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting ftsweep serve");
            let mut url = String::new();
            BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut url).expect("the URL");
            (child, url.trim().to_string())
        });
        let mut outcomes = Vec::new();
        let mut naive_tied: BTreeSet<String> = BTreeSet::new();
        for (i, (label, search)) in STRATEGIES.iter().enumerate() {
            let dir = root.path().join(format!("s{i}"));
            std::fs::create_dir_all(&dir).expect("a folder");
            let name = format!("bench-{i}");
            let text = sweep_text(&name, search, &data, server.as_ref().map(|s| s.1.as_str()));
            std::fs::write(dir.join("s.toml"), text).expect("writing the sweep");
            let started = Instant::now();
            let (ok, _, err) = ftsweep(&bin, &dir, &["run", "--yes", "--json", "s.toml"]);
            let seconds = started.elapsed().as_secs_f64();
            assert!(ok, "{label} failed:\n{err}");
            let (_, board, _) = ftsweep(&bin, &dir, &["leaderboard", &name, "--json"]);
            let rows: Vec<Value> = serde_json::from_str(&board).expect("the leaderboard");
            let runs: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "run").collect();
            let tokens: u64 = runs
                .iter()
                .filter(|r| r["origin"] != "checkpoint")
                .map(|r| {
                    // Own jobs only: a continuation's row counts its parents' tokens too.
                    let own = r["trained_tokens"].as_u64().unwrap_or(0);
                    let parent = r["source_run"].as_str().and_then(|p| {
                        runs.iter().find(|x| x["run_id"] == p).and_then(|x| x["trained_tokens"].as_u64())
                    });
                    own - if r["origin"] == "continue" { parent.unwrap_or(0) } else { 0 }
                })
                .sum();
            let jobs = runs.iter().filter(|r| r["origin"] != "checkpoint").count();
            let stopped = runs.iter().filter(|r| !r["stopped_early"].is_null()).count();
            if i == 0 {
                naive_tied =
                    runs.iter().filter(|r| r["tied_with_best"] == true).map(|r| format!("{:?}", config(r))).collect();
            }
            let (_, pick, _) = ftsweep(&bin, &dir, &["best", &name, "--json"]);
            let pick: Value = serde_json::from_str(&pick).expect("the pick");
            eprintln!("{provider} {label}: {seconds:.1} s");
            outcomes.push(Outcome { label, tokens, jobs, stopped, seconds, pick });
        }
        if let Some((mut child, _)) = server {
            let _ = child.kill();
            let _ = child.wait();
        }
        let naive = outcomes[0].tokens.max(1) as f64;
        println!(
            "\n{} ({} configurations in the naive grid's tied group):",
            if provider == "serve" {
                "against `ftsweep serve` (OpenAI protocol over loopback)"
            } else {
                "local provider"
            },
            naive_tied.len()
        );
        println!(
            "| strategy | jobs | trained tokens | % of naive | stopped early | wall s | pick (epochs, lr, batch) | score | in naive tied group |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for o in &outcomes {
            let (e, lr, b) = config(&o.pick);
            println!(
                "| {} | {} | {} | {:.0}% | {} | {:.1} | {e}, {lr}, {b} | {:.3} | {} |",
                o.label,
                o.jobs,
                o.tokens,
                100.0 * o.tokens as f64 / naive,
                o.stopped,
                o.seconds,
                o.pick["score"].as_f64().unwrap_or(f64::NAN),
                if naive_tied.contains(&format!("{:?}", config(&o.pick))) { "yes" } else { "no" }
            );
        }
    }
}
