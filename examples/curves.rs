//! Validation curves of the local trainer, and what validating within epochs costs.
//!
//! `cargo run --release --example curves [-- REPEATS]` trains the example topics data (seed 42,
//! 3 epochs) for learning-rate multipliers 0.1, 1, 10 and 30 × batch sizes 4, 16 and 64 with four
//! validations per epoch, and prints Markdown tables: the validation loss and accuracy at every
//! validation point (after the first step past each quarter of an epoch, and at each epoch's end),
//! where the rule "stop when the validation loss rises above the first evaluation's, or is not
//! finite" would stop, and the wall time of training with and without the validations within
//! epochs (the fastest of REPEATS runs each, 5 by default, alternating).

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use ftsweep::provider::local::trainer::{self, Example, TrainConfig, TrainEvent};
use ftsweep::provider::local::{VALIDATIONS_PER_EPOCH, example, resolve};
use ftsweep::run::RunConfig;

const MULTIPLIERS: [f64; 4] = [0.1, 1.0, 10.0, 30.0];
const BATCH_SIZES: [u32; 3] = [4, 16, 64];
const EPOCHS: u32 = 3;
const SEED: u64 = 42;

fn load(name: &str) -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data").join(name);
    let file = ftsweep::data::read_chat_file(&path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    file.conversations.iter().map(example).collect()
}

/// One validation point: (step, epoch, loss, accuracy).
type Point = (u64, u32, Option<f64>, Option<f64>);

/// Trains once; returns the validation points (in order) and the time `train` took.
fn run(train: &[Example], valid: &[Example], cfg: &TrainConfig) -> (Vec<Point>, Duration) {
    let mut points = Vec::new();
    let started = Instant::now();
    trainer::train(train, valid, cfg, None, &mut |e| {
        match e {
            TrainEvent::Validation { step, epoch, valid_loss, valid_accuracy }
            | TrainEvent::Epoch { step, epoch, valid_loss, valid_accuracy, .. } => {
                points.push((step, epoch, valid_loss, valid_accuracy))
            }
            TrainEvent::Step { .. } => {}
        }
        ControlFlow::Continue(())
    })
    .expect("training");
    (points, started.elapsed())
}

/// The index of the first point where the loss is above the first point's or not finite.
fn divergence(points: &[Point]) -> Option<usize> {
    let first = points.first()?.2?;
    points.iter().position(|p| p.2.is_none_or(|l| !l.is_finite() || l > first))
}

fn main() {
    let repeats: usize = std::env::args().nth(1).map_or(5, |a| a.parse().expect("REPEATS: a number"));
    let (train, valid) = (load("topics-train.jsonl"), load("topics-valid.jsonl"));
    println!("{} training and {} validation examples, seed {SEED}, {EPOCHS} epochs\n", train.len(), valid.len());

    let mut rows = Vec::new();
    for multiplier in MULTIPLIERS {
        for batch_size in BATCH_SIZES {
            let hp = RunConfig::supervised(Some(EPOCHS), Some(batch_size), Some(multiplier), SEED);
            let plain = resolve(&hp, train.len() as u64);
            let validated = TrainConfig { validations_per_epoch: VALIDATIONS_PER_EPOCH, ..plain.clone() };
            let (mut t_plain, mut t_validated) = (Duration::MAX, Duration::MAX);
            let mut points = Vec::new();
            for _ in 0..repeats.max(1) {
                t_plain = t_plain.min(run(&train, &valid, &plain).1);
                let (p, t) = run(&train, &valid, &validated);
                (points, t_validated) = (p, t_validated.min(t));
            }
            eprintln!("lr ×{multiplier} batch {batch_size}: {t_plain:?} / {t_validated:?}");
            rows.push((multiplier, batch_size, points, t_plain, t_validated));
        }
    }

    let header = |what: &str| {
        let points: Vec<String> = (1..=4 * EPOCHS).map(|q| format!("{:.2}", f64::from(q) / 4.0)).collect();
        println!("| lr × | batch | {what} at epoch {} |", points.join(" | "));
        println!("|---:|---:|{}", "---:|".repeat(points.len()));
    };
    let cell = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    header("validation loss");
    for (m, b, points, ..) in &rows {
        let cells: Vec<String> = points.iter().map(|p| cell(p.2, 3)).collect();
        println!("| {m} | {b} | {} |", cells.join(" | "));
    }
    println!();
    header("validation accuracy");
    for (m, b, points, ..) in &rows {
        let cells: Vec<String> = points.iter().map(|p| cell(p.3, 3)).collect();
        println!("| {m} | {b} | {} |", cells.join(" | "));
    }
    println!();
    println!(
        "| lr × | batch | steps validated (epoch 1) | stop rule fires at | best loss (at) | train s | with validations s | overhead |"
    );
    println!("|---:|---:|---|---|---|---:|---:|---:|");
    for (m, b, points, t_plain, t_validated) in &rows {
        let steps: Vec<String> = points.iter().filter(|p| p.1 == 1).map(|p| p.0.to_string()).collect();
        let at = |i: usize| format!("{:.2} (step {})", (i + 1) as f64 / 4.0, points[i].0);
        let fires = divergence(points).map_or("never".to_string(), |i| format!("epoch {}", at(i)));
        let best = (0..points.len())
            .filter(|&i| points[i].2.is_some_and(f64::is_finite))
            .min_by(|&i, &j| points[i].2.unwrap_or(f64::INFINITY).total_cmp(&points[j].2.unwrap_or(f64::INFINITY)));
        let best = best.map_or("-".to_string(), |i| format!("{} (epoch {})", cell(points[i].2, 3), at(i)));
        let overhead = (t_validated.as_secs_f64() / t_plain.as_secs_f64() - 1.0) * 100.0;
        println!(
            "| {m} | {b} | {} | {fires} | {best} | {:.3} | {:.3} | {overhead:+.1} % |",
            steps.join(", "),
            t_plain.as_secs_f64(),
            t_validated.as_secs_f64()
        );
    }
}
