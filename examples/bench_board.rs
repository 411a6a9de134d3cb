//! Benchmark of the leaderboard at scale: builds sweep databases of 400, 2,000 and 10,000 finished
//! runs (or the counts given as arguments) through the library's store API, then times
//! `ftsweep leaderboard`, `ftsweep best` and `ftsweep compare` on each (the release binary, stdout to a
//! pipe, the median of 5 runs) and prints the figures.
//!
//! The shape is a local sweep's: the example topic data (its 184 validation examples), graded by
//! `exact_match` (the metric), `token_f1` (graded), `contains` and their `combined`; a baseline (the
//! base model, evaluated); each run trained for 1-10 epochs with a validation loss per epoch, then
//! evaluated: its replies are the reference with a probability drawn per run (0.3-0.9), else
//! another topic, sometimes followed by a word (so that `token_f1` gives partial credit). Recorded
//! as `ftsweep run` records it: the sweep and its planned runs, the training metrics, the trained
//! run, its evaluation with its examples, its score.
//!
//! The first command after the build (`status`) migrates the file; "first read" is one
//! `ftsweep leaderboard` after it (a database whose scores were not stored as its runs were graded,
//! as here, where the runs are recorded through the store without graders, or one an older ftsweep
//! wrote, gets them stored then); the three columns after it are the medians of 5 runs each.
//!
//! `cargo run --release --example bench_board [--keep DIR] [RUNS...]` (`--keep`: the databases
//! are left in DIR).

#[path = "common/binary.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use ftsweep::data::read_chat_file;
use ftsweep::eval::scores::prompt_sha256;
use ftsweep::run::{EvalKind, Origin, PlannedRun, RunConfig};
use ftsweep::store::{EvalExample, EvaluationRecord, MetricRow, NewSweep, Store, TrainingResult};
use rand::{Rng, SeedableRng};

const SWEEP: &str = "board";

fn sweep_toml(train: &Path, valid: &Path) -> String {
    format!(
        "name = \"{SWEEP}\"\nprovider = \"local\"\nbase_model = \"local/ngram\"\ntraining_file = {:?}\n\
         validation_file = {:?}\nseed = 7\n\n[search]\nstrategy = \"random\"\nruns = 400\n\n[hyperparameters]\n\
         n_epochs = {{ uniform = [1, 10] }}\nlearning_rate_multiplier = {{ log_uniform = [0.05, 20] }}\n\
         batch_size = [4, 8, 16, 32]\n\n[evaluation]\nmetric = \"exact_match\"\n\
         combined = {{ exact_match = 1, token_f1 = 1 }}\n\n[[evaluation.graders]]\ntype = \"token_f1\"\n\n\
         [[evaluation.graders]]\ntype = \"contains\"\nignore_case = true\n",
        train.display().to_string(),
        valid.display().to_string()
    )
}

/// A run id of the shape ftsweep gives (16 hex digits), distinct for each `i`.
fn run_id(i: u64) -> String {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("{:016x}", x ^ (x >> 31))
}

/// Builds a database of `runs` finished runs at `db`; returns the ids of the two runs compared.
fn build(db: &Path, runs: usize) -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let (train_path, valid_path) = (root.join("topics-train.jsonl"), root.join("topics-valid.jsonl"));
    let train = read_chat_file(&train_path).expect("the example training data");
    let valid = read_chat_file(&valid_path).expect("the example validation data");
    let toml = sweep_toml(&train_path, &valid_path);
    let spec_path = db.with_extension("toml");
    std::fs::write(&spec_path, &toml).expect("writing the sweep file");
    let mut store = Store::open(db).expect("a new database");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let planned: Vec<PlannedRun> = (0..runs as u64)
        .map(|i| {
            let config = RunConfig::supervised(
                Some(rng.random_range(1..=10)),
                Some([4, 8, 16, 32][rng.random_range(0..4)]),
                Some((rng.random_range(0.05f64.ln()..20f64.ln())).exp()),
                i,
            );
            PlannedRun { run_id: run_id(i), config, origin: Origin::Job, rung: None }
        })
        .collect();
    let sweep = store
        .record_sweep(
            &NewSweep {
                name: SWEEP,
                spec_path: &spec_path.display().to_string(),
                spec_toml: &toml,
                provider: "local",
                base_model: "local/ngram",
                training_file: &train_path.display().to_string(),
                training_sha256: &train.sha256,
                validation_file: &valid_path.display().to_string(),
                validation_sha256: &valid.sha256,
                metric: "exact_match",
            },
            &planned,
        )
        .expect("recording the sweep");
    let prompts: Vec<_> = valid.conversations.iter().map(|c| c.prompt_request()).collect();
    let references: Vec<String> = valid.conversations.iter().map(|c| c.reference().unwrap_or_default()).collect();
    let mut labels = references.clone();
    labels.sort();
    labels.dedup();
    let mut evaluate = |store: &mut Store, model: &str, kind: EvalKind, run: Option<&str>, accuracy: f64| {
        let examples: Vec<EvalExample> = (valid.conversations.iter().zip(&prompts).zip(&references))
            .enumerate()
            .map(|(i, ((c, prompt), reference))| {
                let prediction = if rng.random_bool(accuracy) {
                    reference.clone()
                } else {
                    let other = labels[rng.random_range(0..labels.len())].clone();
                    if rng.random_bool(0.3) { format!("{other} {reference}") } else { other }
                };
                EvalExample {
                    example: i,
                    line: c.line,
                    conversation_sha256: prompt_sha256(prompt),
                    prompt: prompt.messages.clone(),
                    reference: reference.clone(),
                    prediction,
                    probability: Some(rng.random_range(0.2..1.0)),
                }
            })
            .collect();
        let record = EvaluationRecord {
            id: 0,
            model: model.to_string(),
            data_sha256: valid.sha256.clone(),
            data_file: valid_path.display().to_string(),
            decoding: "local (most probable reply)".into(),
            kind,
            run_id: run.map(str::to_string),
            epoch: None,
            sweep_id: Some(sweep.id),
            n_examples: examples.len(),
            calls: examples.len() as u64,
            cached: 0,
            input_tokens: 40 * examples.len() as u64,
            output_tokens: 2 * examples.len() as u64,
            seconds: 0.5,
            created_at: 0.0,
        };
        store.record_evaluation(&record, &examples).expect("recording an evaluation");
        examples.iter().map(|x| if x.prediction == x.reference { 1.0 } else { 0.0 }).collect::<Vec<f64>>()
    };
    evaluate(&mut store, "local/ngram", EvalKind::Baseline, None, 0.05);
    for (i, run) in planned.iter().enumerate() {
        let epochs = run.config.n_epochs.unwrap_or(1);
        let metrics: Vec<MetricRow> = (1..=epochs)
            .map(|e| MetricRow {
                step: u64::from(e) * 10,
                epoch: e,
                epoch_end: true,
                train_loss: Some(2.0 / f64::from(e)),
                train_accuracy: None,
                valid_loss: Some(2.2 / f64::from(e) + 0.02 * f64::from(e)),
                valid_accuracy: None,
            })
            .collect();
        store.record_progress(&run.run_id, 0, &metrics, None).expect("recording metrics");
        let model = format!("local/ngram:ft-{}", run.run_id);
        let result = TrainingResult {
            model: model.clone(),
            trained_tokens: 1_000 * i64::from(epochs),
            train_loss: metrics.last().and_then(|m| m.train_loss),
            train_accuracy: None,
            valid_loss: metrics.last().and_then(|m| m.valid_loss),
            valid_accuracy: None,
            seconds: 1.0,
        };
        store.finish_training(&run.run_id, &result).expect("recording a trained run");
        store.start_evaluation(&run.run_id).expect("starting an evaluation");
        let accuracy = 0.3 + 0.6 * (i as f64 * 0.618_034).fract();
        let scores = evaluate(&mut store, &model, EvalKind::Run, Some(&run.run_id), accuracy);
        store.finish_evaluation(&run.run_id, &model, "exact_match", &scores, 0.5).expect("recording a score");
    }
    // The leader (the highest accuracy drawn) against the run in the middle of the board.
    let by_accuracy = |i: usize| 0.3 + 0.6 * (i as f64 * 0.618_034).fract();
    let leader = (0..runs).max_by(|&a, &b| by_accuracy(a).total_cmp(&by_accuracy(b))).unwrap_or(0);
    (run_id(leader as u64), run_id((runs / 2) as u64))
}

/// The median of 5 runs of `ftsweep ARGS` on `db`, stdout to a pipe, in milliseconds.
fn time(bin: &Path, db: &Path, args: &[&str]) -> f64 {
    time_n(bin, db, args, 5)
}

/// The median of `n` runs of `ftsweep ARGS` on `db`, in milliseconds.
fn time_n(bin: &Path, db: &Path, args: &[&str], n: usize) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new(bin)
                .arg("--db")
                .arg(db)
                .args(args)
                .env_remove("COLUMNS")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .expect("running ftsweep");
            let ms = started.elapsed().as_secs_f64() * 1e3;
            assert!(out.status.success(), "ftsweep {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args.iter().position(|a| a == "--keep").and_then(|i| args.get(i + 1)).map(std::path::PathBuf::from);
    let counts: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![400, 2_000, 10_000] } else { counts };
    let bin = common::binary();
    let temporary = tempfile::tempdir().expect("a temporary folder");
    let dir = keep.unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("the folder for the databases");
    println!("| runs | build (s) | db (MB) | first read (ms) | leaderboard (ms) | best (ms) | compare (ms) |");
    println!("|---|---|---|---|---|---|---|");
    for runs in counts {
        let db = dir.join(format!("board-{runs}.db"));
        let _ = std::fs::remove_file(&db);
        let started = Instant::now();
        let (a, b) = build(&db, runs);
        let built = started.elapsed().as_secs_f64();
        // The first command after the build checkpoints the WAL into the file.
        time(&bin, &db, &["status", SWEEP]);
        let first = time_n(&bin, &db, &["leaderboard", SWEEP], 1);
        let mb = std::fs::metadata(&db).map_or(0.0, |m| m.len() as f64 / 1e6);
        let board = time(&bin, &db, &["leaderboard", SWEEP]);
        let best = time(&bin, &db, &["best", SWEEP]);
        let compare = time(&bin, &db, &["compare", &a, &b]);
        println!("| {runs} | {built:.1} | {mb:.1} | {first:.0} | {board:.0} | {best:.0} | {compare:.0} |");
    }
}
