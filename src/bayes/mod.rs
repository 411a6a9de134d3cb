//! Bayesian search's model, pure: from the configurations tried so far and
//! their scores, the next configuration to try over a sweep's declared space.
//!
//! A tree-structured Parzen estimator (Bergstra et al. 2011) with Optuna's
//! defaults and its multivariate kernels: the trials are split into the best
//! `gamma(n) = min(ceil(n / 10), 25)` and the rest, a Parzen estimator `l` is
//! fitted to the first and `g` to the second (each with a prior kernel), 24
//! candidates are drawn from `l`, and the one with the highest `l / g` is
//! proposed. Coordinates ([`dims`]): `Uniform` on a linear scale, `LogUniform`
//! and a `Uniform` `learning_rate*` above 0 on a log scale, integers as equal
//! cells rounded to an integer in range, `Values` as a categorical choice
//! (`auto` one category), never interpolated; floats are rounded to 3
//! significant digits as random draws are.
//!
//! Pending trials get a constant lie, the worst score seen (a tie ranks the
//! lie below the real score), so that proposals made while they train spread
//! out instead of repeating; failed ones are as bad. A candidate already tried
//! (pending included) is passed over while an untried one can be found. The
//! first `startup` proposals are seeded random draws ([`crate::space::draw`]).
//! The proposal is a function of its inputs alone (ChaCha8 seeded from the
//! seed and the index; no hash map), so a resumed sweep proposes the same points.

mod dims;
mod parzen;
#[cfg(test)]
mod tests;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::space::{Axis, Kind};
use dims::Dim;
use parzen::Parzen;

/// What became of a configuration tried before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Its score (higher is better).
    Score(f64),
    /// Still training or evaluating: the model assumes a made-up score.
    Pending,
    /// Failed or diverged: as bad as the worst score seen.
    Failed,
}

/// A configuration tried (or proposed) before, as one value per axis in the
/// order of `axes` (`None`: `auto`), and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub point: Vec<Option<f64>>,
    pub outcome: Outcome,
}

/// The candidates drawn from `l` for each proposal (Optuna's `n_ei_candidates`).
const CANDIDATES: usize = 24;

/// Rounds of candidates drawn while every candidate of a round was tried already.
const ROUNDS: usize = 8;

/// Random draws made to find an untried point before enumerating.
const DRAWS: usize = 64;

/// The most points a finite space may have to be enumerated for an untried one.
const ENUMERATE: u64 = 100_000;

/// The `index`-th configuration of a Bayesian sweep (0-based, counted over
/// the whole sweep), given every earlier trial: one value per axis of
/// `axes`, inside its domain. The first `startup` indices are drawn at random,
/// and so is any proposal before a trial has a score. Deterministic in (`axes`,
/// `history`, `startup`, `seed`, `index`).
pub fn propose(axes: &[&Axis], history: &[Trial], startup: usize, seed: u64, index: u64) -> Vec<Option<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let dims: Vec<Dim> = axes.iter().map(|a| Dim::of(a)).collect();
    let tried: Vec<&[Option<f64>]> = history.iter().map(|t| t.point.as_slice()).collect();
    let model = if index < startup as u64 { None } else { Model::fit(&dims, history) };
    match model {
        Some(model) => model.propose(&mut rng, axes, &dims, &tried),
        None => random(&mut rng, axes, &dims, &tried),
    }
}

/// Optuna's `default_gamma`: how many of `n` trials are the good ones.
fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// The two estimators of a TPE step, over the free dimensions.
struct Model {
    /// The dimensions the model has a coordinate for, as indices into the axes.
    free: Vec<usize>,
    /// Fitted to the best trials.
    below: Parzen,
    /// Fitted to the others, the lies included.
    above: Parzen,
}

impl Model {
    /// The model of `history`, or `None` when no trial has a score yet (or no
    /// axis has more than one value).
    fn fit(dims: &[Dim], history: &[Trial]) -> Option<Model> {
        let free: Vec<usize> = (0..dims.len()).filter(|&i| dims[i].free()).collect();
        if free.is_empty() {
            return None;
        }
        let mut scored: Vec<(usize, f64, Vec<f64>)> = Vec::new();
        let mut lied: Vec<(usize, Vec<f64>)> = Vec::new();
        for (order, t) in history.iter().enumerate() {
            let Some(x) = coordinates(dims, &free, &t.point) else { continue };
            match t.outcome {
                Outcome::Score(s) if s.is_finite() => scored.push((order, s, x)),
                // The lie: the worst score seen, ranked below every real one.
                _ => lied.push((order, x)),
            }
        }
        if scored.is_empty() {
            return None;
        }
        let n_below = gamma(scored.len() + lied.len()).clamp(1, scored.len());
        let mut ranked: Vec<usize> = (0..scored.len()).collect();
        ranked.sort_by(|&a, &b| scored[b].1.total_cmp(&scored[a].1).then(a.cmp(&b)));
        let mut good = vec![false; scored.len()];
        for &i in &ranked[..n_below] {
            good[i] = true;
        }
        let mut below = Vec::new();
        let mut above = lied;
        for ((order, _, x), good) in scored.into_iter().zip(good) {
            if good {
                below.push(x);
            } else {
                above.push((order, x));
            }
        }
        // Oldest first, for the weights' ramp.
        above.sort_by_key(|(order, _)| *order);
        let above: Vec<Vec<f64>> = above.into_iter().map(|(_, x)| x).collect();
        let choices: Vec<usize> = free.iter().map(|&i| dims[i].choices()).collect();
        Some(Model { below: Parzen::fit(&below, &choices), above: Parzen::fit(&above, &choices), free })
    }

    /// The untried candidate of the highest `l / g`.
    fn propose(
        &self,
        rng: &mut ChaCha8Rng,
        axes: &[&Axis],
        dims: &[Dim],
        tried: &[&[Option<f64>]],
    ) -> Vec<Option<f64>> {
        let mut best: Option<(f64, Vec<Option<f64>>)> = None;
        for _ in 0..ROUNDS {
            for _ in 0..CANDIDATES {
                let point = self.point(dims, &self.below.sample(rng));
                if is_tried(tried, &point) {
                    continue;
                }
                let score = self.acquisition(dims, &point);
                if best.as_ref().is_none_or(|(s, _)| score > *s) {
                    best = Some((score, point));
                }
            }
            if let Some((_, point)) = best {
                return point;
            }
        }
        match untried(dims, tried) {
            Some(points) => {
                let mut best: Option<(f64, Vec<Option<f64>>)> = None;
                for point in points {
                    let score = self.acquisition(dims, &point);
                    if best.as_ref().is_none_or(|(s, _)| score > *s) {
                        best = Some((score, point));
                    }
                }
                // Every point tried: the space is exhausted, repeat one.
                best.map_or_else(|| self.point(dims, &self.below.sample(rng)), |(_, p)| p)
            }
            None => random(rng, axes, dims, tried),
        }
    }

    /// The configuration at coordinates `x` of the free dimensions.
    fn point(&self, dims: &[Dim], x: &[f64]) -> Vec<Option<f64>> {
        let mut point: Vec<Option<f64>> = dims.iter().map(|d| d.decode(0.0)).collect();
        for (&i, &u) in self.free.iter().zip(x) {
            point[i] = dims[i].decode(u);
        }
        point
    }

    /// TPE's stand-in for expected improvement: `ln l(x) - ln g(x)` at the
    /// coordinates of the configuration itself (rounded, so that candidates
    /// giving the same integer or value score the same).
    fn acquisition(&self, dims: &[Dim], point: &[Option<f64>]) -> f64 {
        match coordinates(dims, &self.free, point) {
            Some(x) => self.below.log_pdf(&x) - self.above.log_pdf(&x),
            None => f64::NEG_INFINITY,
        }
    }
}

/// The coordinates of `point` in the free dimensions, if it lies in the space.
fn coordinates(dims: &[Dim], free: &[usize], point: &[Option<f64>]) -> Option<Vec<f64>> {
    if point.len() != dims.len() {
        return None;
    }
    free.iter().map(|&i| dims[i].encode(point[i])).collect()
}

fn is_tried(tried: &[&[Option<f64>]], point: &[Option<f64>]) -> bool {
    tried.contains(&point)
}

/// A seeded random draw, not tried before when another can be found: a few
/// draws, then, in a finite space, an untried point chosen at random.
fn random(rng: &mut ChaCha8Rng, axes: &[&Axis], dims: &[Dim], tried: &[&[Option<f64>]]) -> Vec<Option<f64>> {
    let mut point = Vec::new();
    for _ in 0..DRAWS {
        point = axes.iter().map(|a| crate::space::draw(rng, &a.domain, a.kind == Kind::Int)).collect();
        if !is_tried(tried, &point) {
            return point;
        }
    }
    match untried(dims, tried) {
        Some(points) if !points.is_empty() => points[rng.random_range(0..points.len())].clone(),
        _ => point,
    }
}

/// Every point of a finite space of at most [`ENUMERATE`] points not tried
/// yet, in the order of a grid; `None` for a larger or continuous space.
fn untried(dims: &[Dim], tried: &[&[Option<f64>]]) -> Option<Vec<Vec<Option<f64>>>> {
    let mut size: u64 = 1;
    for d in dims {
        size = size.checked_mul(d.count()?).filter(|&s| s <= ENUMERATE)?;
    }
    let mut points: Vec<Vec<Option<f64>>> = vec![Vec::new()];
    for d in dims {
        let values = d.values();
        points =
            points.iter().flat_map(|p| values.iter().map(move |v| p.iter().copied().chain([*v]).collect())).collect();
    }
    points.retain(|p| !is_tried(tried, p));
    Some(points)
}
