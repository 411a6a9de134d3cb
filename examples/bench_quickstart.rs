//! Benchmark: runs the quickstart sweep end to end through the real command
//! line code in a fresh temporary database, and prints the wall time and the
//! per-run training and evaluation times read back from the database.
//!
//! `cargo run --release --example bench_quickstart [-- SWEEP.toml]`

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

fn main() -> ExitCode {
    let sweep = std::env::args().nth(1).unwrap_or_else(|| "sweeps/quickstart.toml".into());
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = dir.path().join("bench.db");
    let db_arg = db.display().to_string();
    let started = Instant::now();
    let cli = ftsweep::cli::Cli::parse_from(["ftsweep", "--db", &db_arg, "run", &sweep, "--json"]);
    let code = ftsweep::cli::run(cli);
    let wall = started.elapsed().as_secs_f64();

    let conn = rusqlite::Connection::open(&db).expect("the benchmark database");
    let mut stmt = conn
        .prepare("SELECT run_id, n_epochs, learning_rate_multiplier, batch_size, train_seconds, eval_seconds FROM runs")
        .expect("a query");
    let rows: Vec<(String, i64, f64, i64, f64, f64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .expect("runs")
        .map(|r| r.expect("a run"))
        .collect();
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    eprintln!();
    eprintln!("run            n_epochs  lr_mult  batch  train_s  eval_s");
    for (id, e, lr, b, t, ev) in &rows {
        eprintln!("{id}  {e:>8}  {lr:>7}  {b:>5}  {t:>7.3}  {ev:>6.3}");
    }
    let train: Vec<f64> = rows.iter().map(|r| r.4).collect();
    let sum: f64 = train.iter().sum();
    let max = train.iter().cloned().fold(0.0, f64::max);
    eprintln!();
    eprintln!("quickstart: {} runs, wall time {wall:.2} s (end to end, in process, after the build)", rows.len());
    eprintln!(
        "training: mean {:.3} s per run, max {max:.3} s, sum {sum:.2} s; database {:.1} MB",
        sum / rows.len().max(1) as f64,
        db_bytes as f64 / 1e6
    );
    code
}
