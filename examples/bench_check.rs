//! Benchmark of the streaming checker: writes a JSONL file of about 100 MB (or the size in MB given
//! as the first argument) of perturbed topic-classification chats, checks it with token counting,
//! and prints throughput and peak memory.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use ftsweep::data::check::{CheckOptions, check_file};
use ftsweep::data::stats::stats;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The peak resident set size in MiB, from /proc/self/status (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> std::io::Result<()> {
    let target_mb: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let sources = [concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/topics-train.jsonl")];
    let seeds: Vec<serde_json::Value> = sources
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let seeds = if seeds.is_empty() {
        vec![serde_json::json!({"messages": [
            {"role": "system", "content": "Classify the topic of the user's message."},
            {"role": "user", "content": "What currency is used in South Africa?"},
            {"role": "assistant", "content": "trivia"}]})]
    } else {
        seeds
    };

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.jsonl");
    let start = Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut out = BufWriter::new(std::fs::File::create(&path)?);
    let (mut bytes, mut lines) = (0u64, 0u64);
    while bytes < target_mb * 1_000_000 {
        // Perturb the user message: shuffle its words and add a few random ones.
        let mut chat = seeds[lines as usize % seeds.len()].clone();
        if let Some(user) = chat["messages"][1]["content"].as_str() {
            let mut words: Vec<String> = user.split(' ').map(str::to_owned).collect();
            words.shuffle(&mut rng);
            words.push(format!("#{}", rng.random_range(0..1_000_000)));
            chat["messages"][1]["content"] = words.join(" ").into();
        }
        let line = serde_json::to_string(&chat)? + "\n";
        out.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
        lines += 1;
    }
    out.flush()?;
    drop(out);
    eprintln!("wrote {:.1} MB, {lines} lines in {:.1}s", bytes as f64 / 1e6, start.elapsed().as_secs_f64());
    let rss_before = peak_rss_mib().unwrap_or(f64::NAN);

    let start = Instant::now();
    let opts = CheckOptions {
        count_tokens: std::env::var_os("NO_TOKENS").is_none(),
        ..CheckOptions::for_model("gpt-4o-mini-2024-07-18")
    };
    let report = check_file(Path::new(&path), &opts)?;
    let secs = start.elapsed().as_secs_f64();
    let s = stats(&report);
    println!(
        "checked {:.1} MB, {} lines ({} examples, {} problems) in {secs:.2}s: {:.1} MB/s, {:.0} lines/s",
        bytes as f64 / 1e6,
        report.lines,
        report.examples,
        report.counts.values().sum::<usize>(),
        bytes as f64 / 1e6 / secs,
        report.lines as f64 / secs,
    );
    println!(
        "billing tokens {}, tokens p50 {:?}, labels {}, peak RSS {:.1} MiB (before checking {rss_before:.1} MiB)",
        s.billing_tokens,
        s.total_tokens.map(|d| d.p50),
        s.labels.map_or(0, |l| l.len()),
        peak_rss_mib().unwrap_or(f64::NAN),
    );
    Ok(())
}
