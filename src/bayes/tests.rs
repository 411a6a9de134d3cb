//! The model's tests: determinism, domains, the lie, no repeats, and that it learns
//! (against random search on synthetic objectives over spaces like a sweep's).

use super::*;
use crate::space::Domain;

fn axis(name: &str, kind: Kind, domain: Domain) -> Axis {
    Axis { name: name.into(), kind, domain, written: true }
}

/// The continuous space: `n_epochs` 1-8, `learning_rate_multiplier`
/// log-uniform 0.05-20, `batch_size` 1-64, and two axes the file does not
/// write (one value each).
fn continuous() -> Vec<Axis> {
    vec![
        axis("n_epochs", Kind::Int, Domain::Uniform(1.0, 8.0)),
        axis("learning_rate_multiplier", Kind::Float, Domain::LogUniform(0.05, 20.0)),
        axis("batch_size", Kind::Int, Domain::Uniform(1.0, 64.0)),
        axis("beta", Kind::Float, Domain::Values(vec![None])),
        axis("seed", Kind::Int, Domain::Values(vec![Some(7.0)])),
    ]
}

/// A peak at 5 epochs, batch 16 and a learning rate that grows with the
/// batch (0.2·√batch: 0.8 at 16), in log learning rate × log batch.
fn peak(p: &[Option<f64>]) -> f64 {
    let (e, lr, b) = (p[0].unwrap(), p[1].unwrap(), p[2].unwrap());
    let lr_best = 0.2 * b.sqrt();
    -(lr / lr_best).ln().powi(2) / 0.5 - (b / 16.0).ln().powi(2) / 2.0 - (e - 5.0).powi(2) / 8.0
}

/// Choices (`auto` among them) and an integer range: 5 × 4 × 10 points.
fn mixed() -> Vec<Axis> {
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

fn choice_score(p: &[Option<f64>]) -> f64 {
    let lr = match p[1].unwrap() {
        0.1 => 0.0,
        0.3 => 0.3,
        1.0 => 1.0,
        3.0 => 0.6,
        _ => 0.1,
    };
    let batch = match p[2] {
        None => 0.8,
        Some(4.0) => 0.2,
        Some(16.0) => 1.0,
        _ => 0.4,
    };
    lr + batch - (p[0].unwrap() - 7.0).powi(2) / 10.0
}

/// The best score after `n` sequential trials (`startup` of them random).
fn best_after(axes: &[Axis], f: fn(&[Option<f64>]) -> f64, n: usize, startup: usize, seed: u64) -> f64 {
    let axes: Vec<&Axis> = axes.iter().collect();
    let mut history = Vec::new();
    for index in 0..n as u64 {
        let point = propose(&axes, &history, startup, seed, index);
        let outcome = Outcome::Score(f(&point));
        history.push(Trial { point, outcome });
    }
    history
        .iter()
        .map(|t| if let Outcome::Score(s) = t.outcome { s } else { f64::NEG_INFINITY })
        .fold(f64::MIN, f64::max)
}

fn history(axes: &[&Axis], f: fn(&[Option<f64>]) -> f64, n: u64, seed: u64) -> Vec<Trial> {
    let mut history = Vec::new();
    for index in 0..n {
        let point = propose(axes, &history, 5, seed, index);
        let outcome = Outcome::Score(f(&point));
        history.push(Trial { point, outcome });
    }
    history
}

#[test]
fn the_same_inputs_give_the_same_point_and_another_index_another() {
    let space = continuous();
    let axes: Vec<&Axis> = space.iter().collect();
    let h = history(&axes, peak, 12, 3);
    // Replaying the same sweep gives the same trials, model proposals included.
    assert_eq!(h, history(&axes, peak, 12, 3));
    let a = propose(&axes, &h, 5, 3, 12);
    assert_eq!(a, propose(&axes, &h, 5, 3, 12));
    assert_ne!(a, propose(&axes, &h, 5, 3, 13));
    assert_ne!(a, propose(&axes, &h, 5, 4, 12));
    // During startup too.
    assert_eq!(propose(&axes, &h[..2], 5, 3, 2), propose(&axes, &h[..2], 5, 3, 2));
    assert_ne!(propose(&axes, &h[..2], 5, 3, 2), propose(&axes, &h[..2], 5, 3, 3));
}

/// Every proposal of sweeps over every kind of axis, random and modelled.
#[test]
fn proposals_lie_in_their_domains() {
    let space = [
        axis("n_epochs", Kind::Int, Domain::Uniform(1.0, 8.0)),
        axis("learning_rate_multiplier", Kind::Float, Domain::Uniform(0.01, 0.3)),
        axis("batch_size", Kind::Int, Domain::LogUniform(1.0, 256.0)),
        axis("warmup_ratio", Kind::Float, Domain::Uniform(0.0, 0.123456)),
        axis("lora_dropout", Kind::Float, Domain::LogUniform(0.001, 0.5)),
        axis("beta", Kind::Float, Domain::Values(vec![None, Some(0.1), Some(0.5)])),
        axis("lora_r", Kind::Int, Domain::Values(vec![Some(8.0), Some(32.0)])),
        axis("seed", Kind::Int, Domain::Values(vec![Some(7.0)])),
    ];
    let axes: Vec<&Axis> = space.iter().collect();
    let f = |p: &[Option<f64>]| -(p[1].unwrap().ln() + 3.0).powi(2) - p[3].unwrap() + p[0].unwrap();
    for seed in 0..4 {
        let mut history = Vec::new();
        for index in 0..40 {
            let point = propose(&axes, &history, 8, seed, index);
            assert_eq!(point.len(), axes.len());
            for (a, x) in axes.iter().zip(&point) {
                match &a.domain {
                    Domain::Values(v) => assert!(v.contains(x), "{}: {x:?}", a.name),
                    Domain::Uniform(lo, hi) | Domain::LogUniform(lo, hi) => {
                        let x = x.unwrap();
                        assert!((*lo..=*hi).contains(&x), "{}: {x}", a.name);
                        if a.kind == Kind::Int {
                            assert_eq!(x.fract(), 0.0, "{}: {x}", a.name);
                        } else {
                            assert_eq!(x, crate::space::round_significant(x, 3).clamp(*lo, *hi), "{}: {x}", a.name);
                        }
                    }
                }
            }
            let outcome = if index % 7 == 3 { Outcome::Failed } else { Outcome::Score(f(&point)) };
            history.push(Trial { point, outcome });
        }
    }
}

/// The coordinates: a log scale where it belongs, integers in equal cells.
#[test]
fn log_scales_and_integer_cells() {
    let lr = Dim::of(&axis("learning_rate", Kind::Float, Domain::Uniform(0.0001, 0.01)));
    assert!((lr.encode(Some(0.001)).unwrap() - 0.5).abs() < 1e-12);
    let linear = Dim::of(&axis("warmup_ratio", Kind::Float, Domain::Uniform(0.0, 0.2)));
    assert!((linear.encode(Some(0.1)).unwrap() - 0.5).abs() < 1e-12);
    let from_zero = Dim::of(&axis("learning_rate", Kind::Float, Domain::Uniform(0.0, 1.0)));
    assert!((from_zero.encode(Some(0.5)).unwrap() - 0.5).abs() < 1e-12);
    let log = Dim::of(&axis("lora_dropout", Kind::Float, Domain::LogUniform(0.01, 1.0)));
    assert!((log.encode(Some(0.1)).unwrap() - 0.5).abs() < 1e-12);
    // Integers 1..=4: four cells of a quarter each.
    let int = Dim::of(&axis("n_epochs", Kind::Int, Domain::Uniform(1.0, 4.0)));
    let counts = (0..400).fold([0; 4], |mut c, i| {
        c[int.decode((i as f64 + 0.5) / 400.0).unwrap() as usize - 1] += 1;
        c
    });
    assert_eq!(counts, [100; 4]);
    let choice = Dim::of(&axis("beta", Kind::Float, Domain::Values(vec![None, Some(0.5)])));
    assert_eq!((choice.encode(None), choice.encode(Some(0.5)), choice.encode(Some(0.4))), (Some(0.0), Some(1.0), None));
}

/// A small finite space is searched without repeats until it is exhausted,
/// by the random start and by the model.
#[test]
fn no_point_is_tried_twice_while_an_untried_one_remains() {
    let space = [
        axis("n_epochs", Kind::Int, Domain::Uniform(1.0, 3.0)),
        axis("batch_size", Kind::Int, Domain::Values(vec![None, Some(4.0)])),
    ];
    let axes: Vec<&Axis> = space.iter().collect();
    for (startup, seed) in [(0, 1), (3, 2), (6, 3)] {
        let mut history: Vec<Trial> = Vec::new();
        for index in 0..6 {
            let point = propose(&axes, &history, startup, seed, index);
            assert!(history.iter().all(|t| t.point != point), "{point:?} twice (startup {startup})");
            // A peak at 3 epochs and auto, so the model wants to stay there.
            let score = point[0].unwrap() + if point[1].is_none() { 1.0 } else { 0.0 };
            history.push(Trial { point, outcome: Outcome::Score(score) });
        }
    }
}

/// The smallest distance between two of `points` in the unit cube of the
/// peak space's three free axes.
fn spread(points: &[Vec<Option<f64>>]) -> f64 {
    let space = continuous();
    let dims: Vec<Dim> = space.iter().map(Dim::of).collect();
    let x: Vec<Vec<f64>> = points.iter().map(|p| coordinates(&dims, &[0, 1, 2], p).unwrap()).collect();
    let mut min = f64::INFINITY;
    for i in 0..x.len() {
        for j in 0..i {
            min = min.min(x[i].iter().zip(&x[j]).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt());
        }
    }
    min
}

/// Four proposals made while the earlier ones train (as four free slots
/// get them) differ, and spread further than four made without the lie.
#[test]
fn the_liar_spreads_the_proposals_of_free_slots() {
    let space = continuous();
    let axes: Vec<&Axis> = space.iter().collect();
    let (mut lied, mut ignored) = (0.0, 0.0);
    for seed in 0..10 {
        let h = history(&axes, peak, 15, seed);
        let mut with_lie = h.clone();
        let mut points = Vec::new();
        for index in 15..19 {
            let point = propose(&axes, &with_lie, 5, seed, index);
            assert!(!points.contains(&point), "seed {seed}: {point:?} twice");
            points.push(point.clone());
            with_lie.push(Trial { point, outcome: Outcome::Pending });
        }
        lied += spread(&points);
        // Without the lie: the same history with the pending trials left out.
        let alone: Vec<Vec<Option<f64>>> = (15..19).map(|index| propose(&axes, &h, 5, seed, index)).collect();
        ignored += spread(&alone);
    }
    assert!(lied > 1.5 * ignored, "mean smallest distance with the lie {lied:.3}/10, without {ignored:.3}/10");
}

/// The model beats random search: the best score after 40 trials (10 of
/// them random) against 40 random draws, on 10 fixed seeds of each of the two
/// objectives. Measured: better on 9 and 8 seeds of 10 (the other 2 of
/// `choice` tie at its maximum), 17 of 20; asserted: at least 15 of 20, and
/// the mean best higher on each objective. Random search in the model's place
/// draws the same points as the baseline (the same seeds and indices), so it
/// wins none.
#[test]
fn it_learns_on_mixed_spaces() {
    let mut wins = 0;
    for (name, space, f) in
        [("peak", continuous(), peak as fn(&[Option<f64>]) -> f64), ("choice", mixed(), choice_score)]
    {
        let (mut model_sum, mut random_sum) = (0.0, 0.0);
        for seed in 0..10 {
            let model = best_after(&space, f, 40, 10, seed);
            let random = best_after(&space, f, 40, 40, seed);
            wins += usize::from(model > random);
            model_sum += model;
            random_sum += random;
        }
        assert!(
            model_sum > random_sum,
            "{name}: mean best {:.3} against random's {:.3}",
            model_sum / 10.0,
            random_sum / 10.0
        );
    }
    assert!(wins >= 15, "the model beat random search on {wins} of 20 (objective, seed) pairs");
}
