//! Benchmark of Bayesian search's model (`ftsweep::bayes`): for synthetic
//! objectives over spaces like a sweep's and 10 seeds, the best score found
//! after 10, 20 and 30 trials by random search and by the model (10 random
//! trials first), trials one at a time; then the same with 4 slots (each
//! proposal made while 3 others are pending); then the time per proposal with
//! 10, 50 and 200 trials in the history.
//!
//! `cargo run --example bench_bayes` (debug) or `cargo run --release --example bench_bayes`

use std::time::Instant;

use ftsweep::bayes::{Outcome, Trial, propose};
use ftsweep::space::{Axis, Domain, Kind};

const SEEDS: u64 = 10;
const STARTUP: usize = 10;
const CHECKPOINTS: [usize; 3] = [10, 20, 30];

fn axis(name: &str, kind: Kind, domain: Domain) -> Axis {
    Axis { name: name.into(), kind, domain, written: true }
}

type Objective = fn(&[Option<f64>]) -> f64;

/// `n_epochs` 1-8 × `learning_rate_multiplier` log-uniform 0.05-20 ×
/// `batch_size` 1-64: a peak at 5 epochs, batch 16, and a learning rate of
/// 0.2·√batch (interacting with the batch). Best 0.
fn peak_space() -> Vec<Axis> {
    vec![
        axis("n_epochs", Kind::Int, Domain::Uniform(1.0, 8.0)),
        axis("learning_rate_multiplier", Kind::Float, Domain::LogUniform(0.05, 20.0)),
        axis("batch_size", Kind::Int, Domain::Uniform(1.0, 64.0)),
    ]
}

fn peak(p: &[Option<f64>]) -> f64 {
    let (e, lr, b) = (p[0].unwrap(), p[1].unwrap(), p[2].unwrap());
    -(lr / (0.2 * b.sqrt())).ln().powi(2) / 0.5 - (b / 16.0).ln().powi(2) / 2.0 - (e - 5.0).powi(2) / 8.0
}

/// `n_epochs` 1-10 × a listed `learning_rate_multiplier` (5 values) × a
/// listed `batch_size` with `auto` (4 values): 200 points. Best 2.
fn choice_space() -> Vec<Axis> {
    vec![
        axis("n_epochs", Kind::Int, Domain::Uniform(1.0, 10.0)),
        axis(
            "learning_rate_multiplier",
            Kind::Float,
            Domain::Values(vec![Some(0.1), Some(0.3), Some(1.0), Some(3.0), Some(10.0)]),
        ),
        axis("batch_size", Kind::Int, Domain::Values(vec![None, Some(4.0), Some(16.0), Some(64.0)])),
    ]
}

fn choice(p: &[Option<f64>]) -> f64 {
    let lr = [(0.1, 0.0), (0.3, 0.3), (1.0, 1.0), (3.0, 0.6), (10.0, 0.1)];
    let lr = lr.iter().find(|(x, _)| Some(*x) == p[1]).map_or(0.0, |(_, s)| *s);
    let batch = match p[2] {
        None => 0.8,
        Some(4.0) => 0.2,
        Some(16.0) => 1.0,
        _ => 0.4,
    };
    lr + batch - (p[0].unwrap() - 7.0).powi(2) / 10.0
}

/// Together's knobs: `learning_rate` uniform 1e-5-1e-2 (modelled on a log
/// scale by its name), `lora_r` 4-64, `warmup_ratio` 0-0.2, `lora_dropout`
/// listed. A peak at 2e-4, r 16, warmup 0.05, dropout 0.05. Best 0.
fn together_space() -> Vec<Axis> {
    vec![
        axis("n_epochs", Kind::Int, Domain::Values(vec![Some(3.0)])),
        axis("learning_rate", Kind::Float, Domain::Uniform(0.00001, 0.01)),
        axis("lora_r", Kind::Int, Domain::Uniform(4.0, 64.0)),
        axis("warmup_ratio", Kind::Float, Domain::Uniform(0.0, 0.2)),
        axis("lora_dropout", Kind::Float, Domain::Values(vec![Some(0.0), Some(0.05), Some(0.1)])),
    ]
}

fn together(p: &[Option<f64>]) -> f64 {
    let (lr, r, w, d) = (p[1].unwrap(), p[2].unwrap(), p[3].unwrap(), p[4].unwrap());
    -(lr / 0.0002).ln().powi(2) / 2.0
        - (r / 16.0).ln().powi(2)
        - ((w - 0.05) / 0.1).powi(2)
        - ((d - 0.05) / 0.1).powi(2)
}

/// The best score after each of [`CHECKPOINTS`] trials, `slots` proposed at
/// a time (each while the `slots - 1` before it are pending).
fn search(space: &[Axis], f: Objective, startup: usize, seed: u64, slots: usize) -> Vec<f64> {
    let axes: Vec<&Axis> = space.iter().collect();
    let n = CHECKPOINTS[CHECKPOINTS.len() - 1];
    let mut history: Vec<Trial> = Vec::new();
    while history.len() < n {
        let first = history.len();
        for _ in 0..slots.min(n - first) {
            let point = propose(&axes, &history, startup, seed, history.len() as u64);
            history.push(Trial { point, outcome: Outcome::Pending });
        }
        for t in &mut history[first..] {
            t.outcome = Outcome::Score(f(&t.point));
        }
    }
    let score = |t: &Trial| if let Outcome::Score(s) = t.outcome { s } else { f64::NEG_INFINITY };
    CHECKPOINTS.iter().map(|&k| history[..k].iter().map(score).fold(f64::NEG_INFINITY, f64::max)).collect()
}

fn compare(name: &str, space: &[Axis], f: Objective, slots: usize) {
    let (mut random, mut model) = (vec![0.0; 3], vec![0.0; 3]);
    let (mut wins, mut ties) = (0, 0);
    for seed in 0..SEEDS {
        let r = search(space, f, usize::MAX, seed, slots);
        let m = search(space, f, STARTUP, seed, slots);
        for i in 0..3 {
            random[i] += r[i] / SEEDS as f64;
            model[i] += m[i] / SEEDS as f64;
        }
        wins += usize::from(m[2] > r[2]);
        ties += usize::from(m[2] == r[2]);
    }
    let show = |v: &[f64]| v.iter().map(|x| format!("{x:>8.3}")).collect::<String>();
    println!(
        "{name:<10} {slots:>5} | random {} | model {} | model better {wins}/10, tied {ties}",
        show(&random),
        show(&model)
    );
}

fn time_per_proposal(space: &[Axis], f: Objective, n: usize) -> f64 {
    let axes: Vec<&Axis> = space.iter().collect();
    let mut history = Vec::new();
    for index in 0..n as u64 {
        let point = propose(&axes, &history, usize::MAX, 1, index);
        let outcome = Outcome::Score(f(&point));
        history.push(Trial { point, outcome });
    }
    let reps = 20;
    let start = Instant::now();
    for i in 0..reps {
        std::hint::black_box(propose(&axes, &history, 0, 1, n as u64 + i));
    }
    start.elapsed().as_secs_f64() * 1000.0 / reps as f64
}

fn main() {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "mean best score over {SEEDS} seeds after 10 / 20 / 30 trials ({STARTUP} random before the model); {profile}"
    );
    println!(
        "{:<10} {:>5} | random {:>8}{:>8}{:>8} | model {:>8}{:>8}{:>8} |",
        "objective", "slots", 10, 20, 30, 10, 20, 30
    );
    let objectives: [(&str, Vec<Axis>, Objective, &str); 3] = [
        ("peak", peak_space(), peak, "best 0"),
        ("choice", choice_space(), choice, "best 2"),
        ("together", together_space(), together, "best 0"),
    ];
    for slots in [1, 4] {
        for (name, space, f, _) in &objectives {
            compare(name, space, *f, slots);
        }
    }
    for (name, _, _, best) in &objectives {
        println!("  {name}: {best}");
    }
    println!("time per proposal (ms, mean of 20) with 10 / 50 / 200 trials in the history; {profile}");
    for (name, space, f, _) in &objectives {
        let t: Vec<String> =
            [10, 50, 200].iter().map(|&n| format!("{:>8.3}", time_per_proposal(space, *f, n))).collect();
        println!("{name:<10} {}", t.concat());
    }
}
