//! Benchmark: the quickstart sweep on the OpenAI provider against a real
//! `ftsweep serve` over loopback. Prints the wall time and the requests per
//! run by kind (uploads, creates, polls, event and checkpoint pages,
//! completions), then runs a second sweep on the same data to show that
//! uploads are per distinct file and server, not per run.
//!
//! `cargo build --release && cargo run --release --example bench_protocol`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "common/binary.rs"]
mod common;
use common::binary;

/// Runs a sweep and returns (seconds, request counts).
fn run(bin: &Path, dir: &Path, sweep: &Path) -> (f64, BTreeMap<String, u64>) {
    let started = Instant::now();
    let out = Command::new(bin)
        .current_dir(dir)
        .args(["run", "--yes"])
        .arg(sweep)
        .env("FTSWEEP_BENCH_KEY", "bench-key-3b8e1f0a9c")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("running ftsweep");
    let seconds = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the sweep failed:\n{err}");
    let line = err.lines().find(|l| l.starts_with("requests to ")).expect("the request line");
    let counts = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect();
    (seconds, counts)
}

fn main() {
    let bin = binary();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut server = Command::new(&bin)
        .args(["serve", "--port", "0", "--key", "bench-key-3b8e1f0a9c", "--state"])
        .arg(dir.path().join("serve.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ftsweep serve");
    let mut url = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut url).expect("the URL");
    let url = url.trim().to_string();

    let quickstart = std::fs::read_to_string(root.join("sweeps/quickstart.toml")).expect("the quickstart sweep");
    let data = root.join("examples/data");
    let sweep_text = |name: &str, hp_extra: &str| {
        quickstart
            .replace("name = \"quickstart\"", &format!("name = \"{name}\""))
            .replace("provider = \"local\"", "provider = \"openai\"")
            .replace("../examples/data", &data.display().to_string())
            .replace("batch_size = [4, 32]", &format!("batch_size = [4, 32{hp_extra}]"))
            + &format!("\n[openai]\nbase_url = \"{url}\"\napi_key_env = \"FTSWEEP_BENCH_KEY\"\n")
    };
    let first = dir.path().join("first.toml");
    std::fs::write(&first, sweep_text("bench", "")).expect("writing the sweep");
    let (seconds, counts) = run(&bin, dir.path(), &first);
    let runs = 18.0;
    println!("quickstart on the OpenAI provider against ftsweep serve ({url}), 18 runs:");
    println!("  wall time {seconds:.1} s");
    println!("  requests: total {} = {:.1} per run", counts["total"], counts["total"] as f64 / runs);
    for kind in ["uploads", "creates", "lists", "polls", "events", "checkpoints", "completions", "other", "retries"] {
        let n = counts.get(kind).copied().unwrap_or(0);
        println!("    {kind:<12} {n:>6}  ({:.2} per run)", n as f64 / runs);
    }
    // A second sweep on the same data and server: uploads are reused.
    let second = dir.path().join("second.toml");
    std::fs::write(&second, sweep_text("bench-2", ", 16")).expect("writing the sweep");
    let (seconds2, counts2) = run(&bin, dir.path(), &second);
    println!(
        "a second sweep on the same files (27 runs, 18 of them shared and reused): {:.1} s, uploads {}, creates {}",
        seconds2, counts2["uploads"], counts2["creates"]
    );
    let _ = server.kill();
    let _ = server.wait();
}
