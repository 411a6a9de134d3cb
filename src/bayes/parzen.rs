//! A multivariate Parzen estimator over the model's coordinates, as Optuna's
//! TPE builds it (`multivariate=True`, `consider_prior`, `prior_weight = 1`,
//! `consider_magic_clip`): a kernel per observation plus a prior kernel, each
//! a product of a truncated normal on [0, 1] per number and a categorical
//! distribution per choice.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The prior kernel's weight, relative to an observation's.
const PRIOR_WEIGHT: f64 = 1.0;

/// The kernels' widths at one observation, in the unit of the range
/// (Optuna's `SIGMA0_MAGNITUDE`).
const SIGMA0: f64 = 0.2;

/// How many newest observations weigh fully; older ones ramp down (Optuna's
/// `default_weights`).
const FULL_WEIGHT: usize = 25;

/// A mixture of kernels fitted to a group of observations.
#[derive(Debug, Clone)]
pub(super) struct Parzen {
    /// Each kernel's centre: a number's coordinate, or a choice's index;
    /// the prior kernel (the last) is centred at 0.5 and uniform over choices.
    centres: Vec<Vec<f64>>,
    /// Each kernel's weight, normalised, as logarithms.
    log_weights: Vec<f64>,
    /// Per dimension: the number of categories (0: a number).
    choices: Vec<usize>,
    /// The observation kernels' width in every number (the prior's is 1):
    /// Scott's rule as Optuna's multivariate TPE scales it, clipped.
    sigma: f64,
    /// The weight an observation kernel gives its own category, and each
    /// other one (before normalisation).
    hit: f64,
    miss: f64,
}

impl Parzen {
    /// The estimator of `observations` (oldest first), each a coordinate per
    /// dimension of `choices`.
    pub(super) fn fit(observations: &[Vec<f64>], choices: &[usize]) -> Parzen {
        let n = observations.len();
        let kernels = n as f64 + 1.0;
        let mut weights = ramp(n);
        weights.push(PRIOR_WEIGHT);
        let total: f64 = weights.iter().sum();
        let log_weights = weights.iter().map(|w| (w / total).ln()).collect();
        let mut centres = observations.to_vec();
        centres.push(choices.iter().map(|_| f64::NAN).collect());
        let d = choices.len() as f64;
        let sigma = SIGMA0 * (n.max(1) as f64).powf(-1.0 / (d + 4.0));
        let sigma = sigma.clamp(1.0 / (1.0 + kernels).min(100.0), 1.0);
        // Optuna's categorical kernels: `prior_weight / kernels` on every
        // category, 1 more on the observed one, normalised per kernel.
        let share = PRIOR_WEIGHT / kernels;
        let (hit, miss) = (1.0 + share, share);
        Parzen { centres, log_weights, choices: choices.to_vec(), sigma, hit, miss }
    }

    /// A draw from the mixture.
    pub(super) fn sample(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let r: f64 = rng.random();
        let mut k = self.centres.len() - 1;
        let mut acc = 0.0;
        for (i, lw) in self.log_weights.iter().enumerate() {
            acc += lw.exp();
            if r < acc {
                k = i;
                break;
            }
        }
        let centre = &self.centres[k];
        let prior = k == self.centres.len() - 1;
        self.choices
            .iter()
            .zip(centre)
            .map(|(&c, &mu)| match (c, prior) {
                (0, true) => truncated_normal(rng, 0.5, 1.0),
                (0, false) => truncated_normal(rng, mu, self.sigma),
                (c, true) => rng.random_range(0..c) as f64,
                (c, false) => {
                    let total = self.hit + (c - 1) as f64 * self.miss;
                    let mut r = rng.random::<f64>() * total;
                    for i in 0..c {
                        r -= if i as f64 == mu { self.hit } else { self.miss };
                        if r < 0.0 {
                            return i as f64;
                        }
                    }
                    mu
                }
            })
            .collect()
    }

    /// The logarithm of the mixture's density at `x`.
    pub(super) fn log_pdf(&self, x: &[f64]) -> f64 {
        let last = self.centres.len() - 1;
        let terms: Vec<f64> = self
            .centres
            .iter()
            .zip(&self.log_weights)
            .enumerate()
            .map(|(k, (centre, lw))| {
                let prior = k == last;
                let mut lp = *lw;
                for ((&c, &mu), &xd) in self.choices.iter().zip(centre).zip(x) {
                    lp += match (c, prior) {
                        (0, true) => truncated_log_pdf(xd, 0.5, 1.0),
                        (0, false) => truncated_log_pdf(xd, mu, self.sigma),
                        (c, true) => -(c as f64).ln(),
                        (c, false) => {
                            let total = self.hit + (c - 1) as f64 * self.miss;
                            (if xd == mu { self.hit } else { self.miss } / total).ln()
                        }
                    };
                }
                lp
            })
            .collect();
        log_sum_exp(&terms)
    }
}

/// Optuna's `default_weights`: 1 for each of the newest 25 observations,
/// a ramp from 1/n up to 1 for the older ones.
fn ramp(n: usize) -> Vec<f64> {
    if n <= FULL_WEIGHT {
        return vec![1.0; n];
    }
    let older = n - FULL_WEIGHT;
    let start = 1.0 / n as f64;
    let step = if older > 1 { (1.0 - start) / (older - 1) as f64 } else { 0.0 };
    (0..older).map(|i| start + step * i as f64).chain(std::iter::repeat_n(1.0, FULL_WEIGHT)).collect()
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// A normal draw (`mu`, `sigma`) kept within [0, 1] by rejection; after 64
/// rejections, a uniform draw (an acceptance rate that low cannot happen with
/// `mu` in [0, 1] and `sigma` up to 1, but the loop must end).
fn truncated_normal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    for _ in 0..64 {
        // Box-Muller.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let x = mu + sigma * z;
        if (0.0..=1.0).contains(&x) {
            return x;
        }
    }
    rng.random()
}

/// The log density at `x` of the normal (`mu`, `sigma`) truncated to [0, 1].
fn truncated_log_pdf(x: f64, mu: f64, sigma: f64) -> f64 {
    let z = (x - mu) / sigma;
    let mass = normal_cdf((1.0 - mu) / sigma) - normal_cdf(-mu / sigma);
    -0.5 * z * z - (sigma * (std::f64::consts::TAU).sqrt()).ln() - mass.max(f64::MIN_POSITIVE).ln()
}

/// The standard normal's distribution function.
pub(super) fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The complementary error function, to a relative error below 1.2e-7
/// (Numerical Recipes' `erfcc`, a Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}
