//! Benchmark: the search strategies over 10 sweep seeds, on the local
//! provider (release build), on two spaces of the example topic data:
//!
//! - `grid`: the 3×3×3 grid (n_epochs 1, 2, 3 × learning-rate multiplier
//!   0.1, 1, 10 × batch size 4, 16, 64);
//! - `continuous`: learning-rate multiplier log-uniform 0.05-20, batch size
//!   1-64, n_epochs 1-8; its reference "naive grid" spans it with lr at 5
//!   log-spaced values (0.05, 0.22, 1, 4.5, 20) × batch 1, 4, 16, 64 ×
//!   epochs 1, 2, 4, 8 (80 runs).
//!
//! Each space's naive grid runs once (its training seed is fixed, 42, so the
//! grid does not depend on the sweep seed); then, for sweep seeds 0..9,
//! successive halving, ASHA, Bayesian search and Bayesian + ASHA (BOHB-style)
//! run in the same database under their own names (a run that coincides
//! with one trained before is reused, but its trained tokens still count for
//! the strategy). Printed per strategy: the trained tokens (each run's own
//! job) as a share of the naive grid's, mean and range over the seeds, and
//! in how many seeds `ftsweep best`'s pick is inside the naive grid's tied
//! group: a grid run the leaderboard finds not different from its leader,
//! or, for a pick that is not one of the grid's runs, one the same paired
//! test (`ftsweep compare`) does not find worse than the grid's leader.
//!
//! `cargo build --release && cargo run --release --example bench_strategies [-- grid|continuous] [--seeds N]`

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

#[path = "common/binary.rs"]
mod common;
use common::binary;

/// A space: its name, the naive grid's `[hyperparameters]`, and the
/// strategies: (label, `[search]` keys, `[hyperparameters]`).
struct Space {
    name: &'static str,
    naive: &'static str,
    strategies: Vec<(&'static str, &'static str, &'static str)>,
}

fn spaces() -> Vec<Space> {
    const GRID: &str = "n_epochs = [1, 2, 3]\nlearning_rate_multiplier = [0.1, 1.0, 10.0]\nbatch_size = [4, 16, 64]\n";
    const GRID_NO_EPOCHS: &str = "learning_rate_multiplier = [0.1, 1.0, 10.0]\nbatch_size = [4, 16, 64]\n";
    const CONT: &str = "n_epochs = { uniform = [1, 8] }\nlearning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = { uniform = [1, 64] }\n";
    const CONT_NO_EPOCHS: &str =
        "learning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = { uniform = [1, 64] }\n";
    vec![
        Space {
            name: "grid",
            naive: GRID,
            strategies: vec![
                (
                    "halving",
                    "strategy = \"successive_halving\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3",
                    GRID_NO_EPOCHS,
                ),
                ("ASHA", "strategy = \"asha\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3", GRID_NO_EPOCHS),
                ("Bayesian", "strategy = \"bayes\"\nruns = 6\nstartup = 3", GRID),
                (
                    "Bayesian + ASHA",
                    "strategy = \"asha\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3\nruns = 6\nsampler = \"bayes\"\nstartup = 3",
                    GRID_NO_EPOCHS,
                ),
            ],
        },
        Space {
            name: "continuous",
            naive: "n_epochs = [1, 2, 4, 8]\nlearning_rate_multiplier = [0.05, 0.22, 1.0, 4.5, 20.0]\nbatch_size = [1, 4, 16, 64]\n",
            strategies: vec![
                (
                    "halving",
                    "strategy = \"successive_halving\"\neta = 3\nmin_epochs = 1\nmax_epochs = 8\nruns = 27",
                    CONT_NO_EPOCHS,
                ),
                ("ASHA", "strategy = \"asha\"\neta = 3\nmin_epochs = 1\nmax_epochs = 8\nruns = 24", CONT_NO_EPOCHS),
                ("Bayesian", "strategy = \"bayes\"\nruns = 12\nstartup = 5", CONT),
                (
                    "Bayesian + ASHA",
                    "strategy = \"asha\"\neta = 3\nmin_epochs = 1\nmax_epochs = 8\nruns = 24\nsampler = \"bayes\"\nstartup = 8",
                    CONT_NO_EPOCHS,
                ),
            ],
        },
    ]
}

fn sweep_text(name: &str, seed: u64, search: &str, hp: &str, data: &Path) -> String {
    format!(
        "name = \"{name}\"\nprovider = \"local\"\nbase_model = \"local/ngram\"\n\
         training_file = \"{}/topics-train.jsonl\"\nvalidation_file = \"{}/topics-valid.jsonl\"\nseed = {seed}\n\n\
         [search]\n{search}\n\n[hyperparameters]\n{hp}seed = 42\n\n\
         [evaluation]\nmetric = \"exact_match\"\n\n[limits]\nmax_concurrent = 3\n",
        data.display(),
        data.display()
    )
}

fn ftsweep(bin: &Path, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(bin).current_dir(dir).args(["--db", "bench.db"]).args(args).output().expect("running ftsweep");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs a sweep; its leaderboard's run rows, and its trained tokens (each run's own job).
fn run(bin: &Path, dir: &Path, name: &str, text: &str) -> (Vec<Value>, u64) {
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), text).expect("writing the sweep");
    let (ok, _, err) = ftsweep(bin, dir, &["run", "--yes", &file]);
    assert!(ok, "{name} failed:\n{err}");
    let (_, board, _) = ftsweep(bin, dir, &["leaderboard", name, "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&board).expect("the leaderboard");
    let runs: Vec<Value> = rows.into_iter().filter(|r| r["kind"] == "run").collect();
    let tokens = runs.iter().map(|r| r["job_tokens"].as_u64().unwrap_or(0)).sum();
    (runs, tokens)
}

/// Whether each validation example's reply of `model` (its latest evaluation) is its reference.
fn passes(dir: &Path, model: &str) -> Vec<bool> {
    let conn = rusqlite::Connection::open(dir.join("bench.db")).expect("the database");
    let id: i64 = conn
        .query_row("SELECT MAX(id) FROM evaluations WHERE model = ?1", [model], |r| r.get(0))
        .expect("the model's evaluation");
    let mut stmt = conn
        .prepare(
            "SELECT i.reference, COALESCE(x.prediction, p.content) FROM evaluations e
             JOIN eval_examples x ON x.evaluation_id = e.id JOIN eval_inputs i ON i.id = x.input
             LEFT JOIN repliers r ON r.model = e.model AND r.decoding = e.decoding
             LEFT JOIN predictions p ON p.replier = r.id AND p.conversation = i.conversation
             WHERE e.id = ?1 ORDER BY x.example",
        )
        .expect("a query");
    stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
        .expect("the examples")
        .map(|r| r.map(|(reference, reply)| reply.is_some_and(|x| x.trim() == reference.trim())).unwrap_or(false))
        .collect()
}

/// The two-sided exact McNemar p-value of `b` and `c` discordant pairs.
fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let mut pmf = 0.5f64.powi(n as i32);
    let mut tail = 0.0;
    for i in 0..=b.min(c) {
        tail += pmf;
        pmf *= (n - i) as f64 / (i + 1) as f64;
    }
    (2.0 * tail).min(1.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = args
        .iter()
        .position(|a| a == "--seeds")
        .and_then(|i| args.get(i + 1))
        .map_or(10, |n| n.parse().expect("--seeds N"));
    let bin = binary();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    for space in spaces() {
        if args.iter().any(|a| a == "grid" || a == "continuous") && !args.iter().any(|a| a == space.name) {
            continue;
        }
        let root = tempfile::tempdir().expect("a temporary folder");
        let dir = root.path();
        let started = Instant::now();
        let (naive, naive_tokens) =
            run(&bin, dir, "naive", &sweep_text("naive", 0, "strategy = \"grid\"", space.naive, &data));
        let tied: BTreeSet<String> = naive
            .iter()
            .filter(|r| r["tied_with_best"] == true)
            .map(|r| r["run_id"].as_str().unwrap_or("").to_string())
            .collect();
        let leader = naive.iter().find(|r| r["is_leader"] == true).expect("the grid's leader");
        let leader_id = leader["run_id"].as_str().unwrap_or("").to_string();
        let leader_model = leader["model"].as_str().unwrap_or("").to_string();
        let mine = passes(dir, &leader_model);
        let mean = mine.iter().filter(|p| **p).count() as f64 / mine.len().max(1) as f64;
        let board = leader["score"].as_f64().unwrap_or(f64::NAN);
        assert!((mean - board).abs() < 1e-9, "exact match from the database {mean} is the leaderboard's {board}");
        eprintln!(
            "{}: naive grid of {} runs, {naive_tokens} tokens, leader {leader_id} ({:.3}), {} in its tied group, {:.0} s",
            space.name,
            naive.len(),
            leader["score"].as_f64().unwrap_or(f64::NAN),
            tied.len(),
            started.elapsed().as_secs_f64()
        );
        println!(
            "\n{} space (naive grid: {} runs, {naive_tokens} trained tokens, {} runs in its tied group), {seeds} seeds:",
            space.name,
            naive.len(),
            tied.len()
        );
        println!(
            "| strategy | runs (mean) | trained tokens, % of naive: mean [min, max] | pick in naive tied group | wall s (mean) |"
        );
        println!("|---|---|---|---|---|");
        for (label, search, hp) in &space.strategies {
            let (mut shares, mut inside, mut runs_n, mut wall) = (Vec::new(), 0, 0usize, 0.0);
            for seed in 0..seeds {
                let name = format!("{}-{seed}", label.replace([' ', '+'], "").to_lowercase());
                let started = Instant::now();
                let (rows, tokens) = run(&bin, dir, &name, &sweep_text(&name, seed, search, hp, &data));
                wall += started.elapsed().as_secs_f64();
                runs_n += rows.len();
                shares.push(100.0 * tokens as f64 / naive_tokens.max(1) as f64);
                let (_, pick, _) = ftsweep(&bin, dir, &["best", &name, "--json"]);
                let pick: Value = serde_json::from_str(&pick).expect("the pick");
                let id = pick["run_id"].as_str().unwrap_or("").to_string();
                let ok = if naive.iter().any(|r| r["run_id"] == id.as_str()) {
                    tied.contains(&id)
                } else {
                    // The leaderboard's paired test (exact McNemar, alpha 0.05) of the pick's
                    // model against the grid's leader, on the same validation examples.
                    let (a, b) = (passes(dir, pick["model"].as_str().unwrap_or("")), passes(dir, &leader_model));
                    let (only_a, only_b) = a.iter().zip(&b).fold((0, 0), |(x, y), (p, q)| match (p, q) {
                        (true, false) => (x + 1, y),
                        (false, true) => (x, y + 1),
                        _ => (x, y),
                    });
                    only_a >= only_b || mcnemar_exact(only_a, only_b) >= 0.05
                };
                inside += usize::from(ok);
                eprintln!(
                    "{} {label} seed {seed}: {} runs, {:.1}% of the tokens, pick {id} ({:.3}) {}",
                    space.name,
                    rows.len(),
                    shares.last().unwrap_or(&0.0),
                    pick["score"].as_f64().unwrap_or(f64::NAN),
                    if ok { "inside" } else { "outside" }
                );
            }
            let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
            let (min, max) = shares.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            println!(
                "| {label} | {:.1} | {mean:.1}% [{min:.1}, {max:.1}] | {inside}/{seeds} | {:.1} |",
                runs_n as f64 / seeds.max(1) as f64,
                wall / seeds.max(1) as f64
            );
        }
    }
}
