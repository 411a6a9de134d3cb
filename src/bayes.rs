//! Bayesian search's model, pure: from the configurations tried so far and
//! their scores, the next configuration to try over a sweep's declared space
//! (`Domain::Values` a choice among the values written, `Uniform`, and
//! `LogUniform` on a log scale; integer axes give integers). Runs still
//! training are pending: the model lies about them (constant liar), so that
//! proposals made while they train spread out instead of repeating. The
//! proposal is a function of its inputs and the seed alone, so a resumed
//! sweep proposes the same points.
//!
//! PLACEHOLDER on main (issue 17): draws uniformly at random. The `bayes`
//! helper replaces the body of [`propose`] with the model; the signature is
//! the interface the scheduler builds on.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::space::{Axis, Kind};

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

/// The `index`-th configuration of a Bayesian sweep (0-based, counted over
/// the whole sweep), given every earlier trial: one value per axis of
/// `axes`, inside its domain. `startup` trials are drawn at random before the
/// model is used. Deterministic in (`axes`, `history`, `startup`, `seed`, `index`).
pub fn propose(axes: &[&Axis], history: &[Trial], startup: usize, seed: u64, index: u64) -> Vec<Option<f64>> {
    let _ = (history, startup);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    axes.iter().map(|a| crate::plan::draw(&mut rng, &a.domain, a.kind == Kind::Int)).collect()
}
