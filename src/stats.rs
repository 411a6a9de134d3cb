//! Statistics for ranking runs: confidence intervals for a run's mean score and paired significance tests
//! between two runs graded on the same examples. Everything is pure, and the bootstraps are seeded so that a
//! report is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The normal quantile for a two-sided 95% interval.
pub const Z95: f64 = 1.959963984540054;

/// The number of resamples that [`compare_to_leader`] draws for the paired bootstrap.
pub const COMPARE_RESAMPLES: u32 = 10_000;

/// The Wilson score interval for a binomial proportion; `n = 0` gives (0, 1).
///
/// `successes` greater than `n` is treated as `n`. The bounds are clamped into [0, 1], and they are exactly 0 and 1
/// when there are no successes or no failures.
pub fn wilson_interval(successes: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let s = successes.min(n);
    let (nf, p, z2) = (n as f64, s as f64 / n as f64, z * z);
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    let lo = if s == 0 { 0.0 } else { (center - half).clamp(0.0, 1.0) };
    let hi = if s == n { 1.0 } else { (center + half).clamp(0.0, 1.0) };
    (lo, hi)
}

/// The arithmetic mean; an empty slice gives 0.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// Draws `resamples` means of `xs` resampled with replacement, using a ChaCha8 generator seeded with `seed`.
/// This costs O(resamples · len) time.
fn resampled_means(xs: &[f64], resamples: u32, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = xs.len();
    (0..resamples).map(|_| (0..n).map(|_| xs[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect()
}

/// The `q` quantile of sorted values by linear interpolation between closest ranks (NumPy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    match sorted.get(i + 1) {
        Some(next) if frac > 0.0 => sorted[i] + (next - sorted[i]) * frac,
        _ => sorted[i],
    }
}

/// The central `confidence` percentile interval of resampled means.
fn percentile_interval(mut means: Vec<f64>, confidence: f64) -> (f64, f64) {
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    (quantile(&means, tail), quantile(&means, 1.0 - tail))
}

/// The percentile bootstrap interval of the mean of `scores`, deterministic for a given `seed`.
///
/// An empty slice gives (0, 1), the whole score range, like [`wilson_interval`] with `n = 0`; zero resamples give
/// the degenerate interval at the mean. `confidence` is clamped into [0, 1].
pub fn bootstrap_interval(scores: &[f64], resamples: u32, confidence: f64, seed: u64) -> (f64, f64) {
    if scores.is_empty() {
        return (0.0, 1.0);
    }
    if resamples == 0 {
        let m = mean(scores);
        return (m, m);
    }
    percentile_interval(resampled_means(scores, resamples, seed), confidence)
}

/// The result of McNemar's exact test between runs A and B on the same examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    /// The number of examples that A got right and B got wrong.
    pub b: u64,
    /// The number of examples that A got wrong and B got right.
    pub c: u64,
    /// The two-sided p-value.
    pub p_value: f64,
}

/// McNemar's exact test on paired pass/fail results.
///
/// # Panics
/// Panics if `a` and `b` differ in length; [`compare_to_leader`] checks this and returns an error instead.
pub fn mcnemar_exact(a: &[bool], b: &[bool]) -> McNemar {
    assert_eq!(a.len(), b.len(), "McNemar's test needs paired results");
    let only_a = a.iter().zip(b).filter(|&(&x, &y)| x && !y).count() as u64;
    let only_b = a.iter().zip(b).filter(|&(&x, &y)| !x && y).count() as u64;
    mcnemar_from_counts(only_a, only_b)
}

/// McNemar's exact test from the discordant counts: `p = min(1, 2 · Σ_{i=0}^{min(b,c)} C(b+c, i) / 2^(b+c))`,
/// and 1 when `b + c = 0`.
///
/// The binomial terms are summed in log space (each `ln C(n, i)` follows from the previous one), so the result is
/// finite and accurate for any counts, in O(min(b, c)) time.
pub fn mcnemar_from_counts(b: u64, c: u64) -> McNemar {
    let (n, k) = (b + c, b.min(c));
    if n == 0 {
        return McNemar { b, c, p_value: 1.0 };
    }
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let (mut ln_choose, mut ln_sum) = (0.0_f64, f64::NEG_INFINITY);
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        ln_sum = log_add_exp(ln_sum, ln_choose + ln_half_n);
    }
    McNemar { b, c, p_value: (std::f64::consts::LN_2 + ln_sum).exp().min(1.0) }
}

/// Returns `ln(e^x + e^y)` without overflow or needless underflow.
fn log_add_exp(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY { hi } else { hi + (lo - hi).exp().ln_1p() }
}

/// The result of a paired bootstrap between runs A and B on the same examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedBootstrap {
    /// `mean(a) - mean(b)`.
    pub mean_diff: f64,
    /// The 95% percentile interval of the resampled mean differences.
    pub interval: (f64, f64),
    /// The two-sided p-value for "no difference".
    pub p_value: f64,
}

/// The paired percentile bootstrap of `mean(a) - mean(b)`: examples are resampled with replacement, keeping pairs.
///
/// The p-value is `min(1, 2 · (k + 1) / (resamples + 1))`, where `k` is the smaller of the counts of resampled
/// differences `<= 0` and `>= 0`, i.e. twice the share on the far side of zero from the observed difference.
/// The `+ 1` (Davison & Hinkley) keeps a p-value from being 0, which `resamples` draws cannot support; it is at
/// least `2 / (resamples + 1)`. Identical inputs give p = 1. Empty inputs or zero resamples give p = 1 and the
/// degenerate interval at the mean difference.
///
/// # Panics
/// Panics if `a` and `b` differ in length; [`compare_to_leader`] checks this and returns an error instead.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: u32, seed: u64) -> PairedBootstrap {
    assert_eq!(a.len(), b.len(), "the paired bootstrap needs paired scores");
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean_diff = mean(&diffs);
    if diffs.is_empty() || resamples == 0 {
        return PairedBootstrap { mean_diff, interval: (mean_diff, mean_diff), p_value: 1.0 };
    }
    let means = resampled_means(&diffs, resamples, seed);
    let p_value = bootstrap_p_value(&means);
    PairedBootstrap { mean_diff, interval: percentile_interval(means, 0.95), p_value }
}

/// The two-sided p-value of [`paired_bootstrap`] from its resampled mean differences.
fn bootstrap_p_value(means: &[f64]) -> f64 {
    let at_most_zero = means.iter().filter(|&&d| d <= 0.0).count();
    let at_least_zero = means.iter().filter(|&&d| d >= 0.0).count();
    let tail = (at_most_zero.min(at_least_zero) + 1) as f64 / (means.len() as f64 + 1.0);
    (2.0 * tail).min(1.0)
}

/// Tells whether every score is exactly 0 or 1 (true for an empty slice).
pub fn is_pass_fail(scores: &[f64]) -> bool {
    scores.iter().all(|&s| s == 0.0 || s == 1.0)
}

/// The outcome of comparing a run with the leader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The two-sided p-value for "no difference".
    pub p_value: f64,
    /// The test used: `"mcnemar_exact"` or `"paired_bootstrap"`.
    pub test: &'static str,
    /// True when the difference is not significant at the chosen alpha (`p_value >= alpha`).
    pub tied: bool,
}

/// An error in the input of a statistical comparison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    #[error("the runs were graded on different numbers of examples ({leader} and {other})")]
    LengthMismatch { leader: usize, other: usize },
}

/// Compares a run's per-example scores with the leader's, which must be for the same examples in the same order.
///
/// When both runs only scored 0 or 1 this is McNemar's exact test; otherwise it is a paired bootstrap with
/// [`COMPARE_RESAMPLES`] resamples seeded with `seed`. The test is two-sided and there is no correction for
/// comparing many runs with the same leader. Different lengths are an error, not a silent tie.
pub fn compare_to_leader(leader: &[f64], other: &[f64], alpha: f64, seed: u64) -> Result<Comparison, StatsError> {
    if leader.len() != other.len() {
        return Err(StatsError::LengthMismatch { leader: leader.len(), other: other.len() });
    }
    let (p_value, test) = if is_pass_fail(leader) && is_pass_fail(other) {
        let pass = |xs: &[f64]| xs.iter().map(|&s| s == 1.0).collect::<Vec<_>>();
        (mcnemar_exact(&pass(leader), &pass(other)).p_value, "mcnemar_exact")
    } else {
        (paired_bootstrap(leader, other, COMPARE_RESAMPLES, seed).p_value, "paired_bootstrap")
    };
    Ok(Comparison { p_value, test, tied: p_value >= alpha })
}

/// The standard normal quantile `Φ⁻¹(p)` for `0 < p < 1` (±∞ at 0 and 1), by Acklam's rational approximation
/// (relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        let r = (-2.0 * q.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if p < 0.02425 {
        tail(p)
    } else if p > 1.0 - 0.02425 {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The one-sided upper confidence bound of Tango's score interval for the difference of paired proportions
/// `δ = (b - c) / n`, where `b` counts the examples that A got right and B wrong, `c` the reverse, and `n` all
/// examples; `z` is the normal quantile of the confidence level (1.645 for 95 %). Counts may be fractional
/// (to ask what a larger sample in the same proportions would give).
///
/// The bound is the `δ₀ > δ̂` where Tango's score statistic
/// `T(δ₀) = (b - c - n·δ₀) / sqrt(n·(2·q̂ + δ₀·(1 - δ₀)))` reaches `-z`, with `q̂` the maximum-likelihood estimate
/// of the share of examples that only B got right under `δ = δ₀`:
/// `q̂ = (sqrt(β² - 4·α·γ) - β) / (2·α)`, `α = 2n`, `β = -b - c + (2n - b + c)·δ₀`, `γ = -c·δ₀·(1 - δ₀)`
/// (Tango 1998, Statistics in Medicine 17:891-908). It is found by bisection to 1e-12. When the runs agree on
/// every example (`b = c = 0`) it is `z² / (n + z²)`. `n = 0` gives 1, the whole range.
pub fn tango_upper_bound(b: f64, c: f64, n: f64, z: f64) -> f64 {
    if n <= 0.0 || b >= n {
        return 1.0;
    }
    let estimate = (b - c) / n;
    let score = |d: f64| {
        let (alpha, beta, gamma) = (2.0 * n, -b - c + (2.0 * n - b + c) * d, -c * d * (1.0 - d));
        let q = ((beta * beta - 4.0 * alpha * gamma).max(0.0).sqrt() - beta) / (2.0 * alpha);
        (b - c - n * d) / (n * (2.0 * q + d * (1.0 - d))).max(f64::MIN_POSITIVE).sqrt()
    };
    let (mut lo, mut hi) = (estimate, 1.0);
    while hi - lo > 1e-12 {
        let mid = 0.5 * (lo + hi);
        if score(mid) > -z { lo = mid } else { hi = mid }
    }
    hi
}

/// `1 - alpha` as a percentage for messages: 95 for alpha 0.05, 97.5 for 0.025.
pub fn confidence_percent(alpha: f64) -> f64 {
    (1e6 * 100.0 * (1.0 - alpha)).round() / 1e6
}

/// The fewest examples on which two runs that agree on every one are shown to be within `margin` of each other:
/// the least `n` with `z² / (n + z²) < margin`; `None` for a margin of 0 or less, which no sample resolves.
pub fn examples_to_resolve(margin: f64, z: f64) -> Option<u64> {
    (margin > 0.0).then(|| (z * z * (1.0 - margin) / margin).floor() as u64 + 1)
}

/// The one-sided upper confidence bound on how much worse a run is than the leader, on the same examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shortfall {
    /// `mean(leader) - mean(other)`.
    pub diff: f64,
    /// The one-sided `1 - alpha` upper confidence bound on the true difference.
    pub upper: f64,
    /// `"tango_score"` (both pass/fail) or `"paired_bootstrap"`.
    pub method: &'static str,
    /// The bound when the two runs agree on every example, `z² / (n + z²)`: the smallest shortfall that these
    /// examples can rule out.
    pub resolution: f64,
    /// The sample standard deviation of the per-example differences.
    pub sd: f64,
    /// Examples compared.
    pub n: usize,
    /// The normal quantile of `1 - alpha`.
    pub z: f64,
}

impl Shortfall {
    /// Whether the run is shown to be at most `margin` below the leader: its upper bound is below the margin.
    pub fn within(&self, margin: f64) -> bool {
        self.upper < margin
    }

    /// Roughly how many examples would put the bound below `margin` if the runs kept differing as they do
    /// here (the same mean and spread of differences): the normal approximation `(z·sd / (margin - diff))²`,
    /// and at least the `n` where `z² / (n + z²) < margin`. `None` when the observed shortfall is already at
    /// or above the margin, which more examples of the same kind would not change.
    pub fn examples_needed(&self, margin: f64) -> Option<u64> {
        if self.diff >= margin {
            return None;
        }
        let spread = (self.z * self.sd / (margin - self.diff)).powi(2);
        Some(examples_to_resolve(margin, self.z)?.max(spread.floor() as u64 + 1))
    }
}

/// The one-sided `1 - alpha` upper confidence bound on `mean(leader) - mean(other)`, for examples in the same
/// order: the non-inferiority test of `best` (a run is as good as the leader within `margin` when the bound is
/// below `margin`).
///
/// Why these methods: a test that fails to find a difference is no evidence of equivalence, so the bound must
/// stay honest where a failed test is most misleading, on few examples and few disagreements.
/// - Both pass/fail: Tango's score bound ([`tango_upper_bound`]) on the paired difference of proportions. It
///   keeps close to its nominal coverage on small samples and with zero or few discordant examples (Fagerland,
///   Lydersen & Laake 2013 recommend it), and, unlike the Wald interval or a bootstrap, it does not collapse to
///   zero width when the runs agree on every example: 30 identical answers bound the difference at 0.083
///   (alpha 0.05), not at 0.
/// - Otherwise (graded scores in [0, 1]): the `1 - alpha` percentile of the seeded paired bootstrap of the mean
///   difference ([`COMPARE_RESAMPLES`] resamples), which needs no distributional assumption, raised to at least
///   `z² / (n + z²)`. The bootstrap cannot see a difference the sample never showed; with `|d_i| <= 1`, the
///   mean difference is at most the share of examples where the runs differ, and that share's score bound when
///   none of `n` differ is `z² / (n + z²)`, the same floor the pass/fail bound has.
///
/// Different lengths are an error.
pub fn shortfall_bound(leader: &[f64], other: &[f64], alpha: f64, seed: u64) -> Result<Shortfall, StatsError> {
    shortfall_with(leader, other, alpha, |diffs| resampled_means(diffs, COMPARE_RESAMPLES, seed))
}

/// [`compare_to_leader`] and [`shortfall_bound`] at once, the same results for the cost of one bootstrap: for
/// graded scores both come from the same resampled mean differences.
pub fn compare_and_bound(
    leader: &[f64],
    other: &[f64],
    alpha: f64,
    seed: u64,
) -> Result<(Comparison, Shortfall), StatsError> {
    if is_pass_fail(leader) && is_pass_fail(other) {
        return Ok((compare_to_leader(leader, other, alpha, seed)?, shortfall_bound(leader, other, alpha, seed)?));
    }
    let mut p_value = 1.0;
    let shortfall = shortfall_with(leader, other, alpha, |diffs| {
        let means = resampled_means(diffs, COMPARE_RESAMPLES, seed);
        p_value = bootstrap_p_value(&means);
        means
    })?;
    Ok((Comparison { p_value, test: "paired_bootstrap", tied: p_value >= alpha }, shortfall))
}

/// [`shortfall_bound`], with `resample` drawing the bootstrap's mean differences for graded scores.
fn shortfall_with(
    leader: &[f64],
    other: &[f64],
    alpha: f64,
    resample: impl FnOnce(&[f64]) -> Vec<f64>,
) -> Result<Shortfall, StatsError> {
    if leader.len() != other.len() {
        return Err(StatsError::LengthMismatch { leader: leader.len(), other: other.len() });
    }
    let n = leader.len();
    let z = normal_quantile(1.0 - alpha);
    if n == 0 {
        return Ok(Shortfall { diff: 0.0, upper: 1.0, method: "none", resolution: 1.0, sd: 0.0, n, z });
    }
    let diffs: Vec<f64> = leader.iter().zip(other).map(|(l, o)| l - o).collect();
    let diff = mean(&diffs);
    let sd = if n > 1 { (diffs.iter().map(|d| (d - diff).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
    let resolution = z * z / (n as f64 + z * z);
    let (upper, method) = if is_pass_fail(leader) && is_pass_fail(other) {
        let only_leader = diffs.iter().filter(|&&d| d > 0.0).count() as f64;
        let only_other = diffs.iter().filter(|&&d| d < 0.0).count() as f64;
        (tango_upper_bound(only_leader, only_other, n as f64, z), "tango_score")
    } else {
        let mut means = resample(&diffs);
        means.sort_by(f64::total_cmp);
        (quantile(&means, 1.0 - alpha).max(resolution).min(1.0), "paired_bootstrap")
    };
    Ok(Shortfall { diff, upper, method, resolution, sd, n, z })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, tol: f64) {
        assert!((got - want).abs() < tol, "got {got}, want {want}");
    }

    fn repeat(pattern: &[f64], times: usize) -> Vec<f64> {
        pattern.iter().copied().cycle().take(pattern.len() * times).collect()
    }

    #[test]
    fn wilson_matches_hand_computed_bounds() {
        // p = 0.8, z² = 3.8416: centre 0.99208 / 1.38416, half-width 1.96 · sqrt(0.016 + 0.009604) / 1.38416.
        let (lo, hi) = wilson_interval(8, 10, 1.96);
        close(lo, 0.490_157, 1e-5);
        close(hi, 0.943_319, 1e-5);
        let (lo, hi) = wilson_interval(8, 10, Z95);
        close(lo, 0.490_162, 1e-5);
        close(hi, 0.943_318, 1e-5);
        assert_eq!(wilson_interval(0, 10, 1.96).0, 0.0);
        close(wilson_interval(0, 10, 1.96).1, 0.277_540, 1e-5);
        close(wilson_interval(10, 10, 1.96).0, 0.722_460, 1e-5);
        assert_eq!(wilson_interval(10, 10, 1.96).1, 1.0);
        assert_eq!(wilson_interval(0, 0, Z95), (0.0, 1.0));
        assert_eq!(wilson_interval(12, 10, Z95), wilson_interval(10, 10, Z95));
    }

    #[test]
    fn mean_of_nothing_is_zero() {
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(mean(&[1.0, 0.0, 0.5, 0.5]), 0.5);
    }

    #[test]
    fn quantile_interpolates_linearly() {
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&xs, 0.0), 0.0);
        assert_eq!(quantile(&xs, 0.625), 2.5);
        assert_eq!(quantile(&xs, 1.0), 4.0);
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn bootstrap_is_seeded_and_contains_the_mean() {
        let xs = repeat(&[1.0, 0.0, 1.0, 0.5, 0.25], 20);
        let a = bootstrap_interval(&xs, 2000, 0.95, 7);
        assert_eq!(a, bootstrap_interval(&xs, 2000, 0.95, 7));
        assert_ne!(a, bootstrap_interval(&xs, 2000, 0.95, 8));
        let m = mean(&xs);
        assert!(a.0 < m && m < a.1, "{a:?} should contain {m}");
        // The standard error is about 0.4 / sqrt(100) = 0.04, so the 95% interval is about 0.16 wide.
        close(a.1 - a.0, 0.16, 0.03);
        let narrow = bootstrap_interval(&repeat(&[1.0, 0.0, 1.0, 0.5, 0.25], 800), 500, 0.95, 7);
        assert!(narrow.1 - narrow.0 < (a.1 - a.0) / 5.0, "{narrow:?} against {a:?}");
        let wide = bootstrap_interval(&xs, 2000, 0.99, 7);
        assert!(wide.0 < a.0 && a.1 < wide.1);
    }

    #[test]
    fn bootstrap_edge_cases() {
        let c = vec![0.7; 50];
        let m = mean(&c);
        close(m, 0.7, 1e-12);
        assert_eq!(bootstrap_interval(&c, 500, 0.95, 1), (m, m));
        assert_eq!(bootstrap_interval(&[], 500, 0.95, 1), (0.0, 1.0));
        assert_eq!(bootstrap_interval(&[0.0, 1.0], 0, 0.95, 1), (0.5, 0.5));
    }

    #[test]
    fn mcnemar_matches_hand_computed_p_values() {
        // 2 · (C(7,0) + C(7,1)) / 2^7 = 16 / 128.
        close(mcnemar_from_counts(1, 6).p_value, 0.125, 1e-12);
        close(mcnemar_from_counts(6, 1).p_value, 0.125, 1e-12);
        close(mcnemar_from_counts(0, 5).p_value, 0.0625, 1e-12);
        // 2 · (1 + 10 + 45) / 1024.
        close(mcnemar_from_counts(2, 8).p_value, 112.0 / 1024.0, 1e-12);
        assert_eq!(mcnemar_from_counts(4, 4).p_value, 1.0);
        assert_eq!(mcnemar_from_counts(0, 0).p_value, 1.0);
        close(mcnemar_from_counts(0, 1).p_value, 1.0, 1e-12);
    }

    #[test]
    fn mcnemar_is_finite_for_large_counts() {
        // The exact value from big-integer arithmetic; the continuity-corrected normal approximation gives 0.0488.
        let p = mcnemar_from_counts(5000, 5200).p_value;
        assert!(p > 0.0 && p < 1.0);
        close(p, 0.048_787_963, 1e-7);
        close(mcnemar_from_counts(400, 600).p_value, 2.728_464_156e-10, 1e-16);
        assert_eq!(mcnemar_from_counts(50_000, 50_000).p_value, 1.0);
        let tiny = mcnemar_from_counts(0, 100_000).p_value;
        assert!(tiny.is_finite() && tiny >= 0.0);
    }

    #[test]
    fn mcnemar_counts_discordant_pairs() {
        let a = [true, true, false, false, true, false];
        let b = [true, false, true, true, false, false];
        let r = mcnemar_exact(&a, &b);
        assert_eq!((r.b, r.c), (2, 2));
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn paired_bootstrap_of_identical_runs_finds_no_difference() {
        let a = repeat(&[0.2, 0.9, 0.4], 30);
        let r = paired_bootstrap(&a, &a, 1000, 3);
        assert_eq!((r.mean_diff, r.interval, r.p_value), (0.0, (0.0, 0.0), 1.0));
    }

    #[test]
    fn paired_bootstrap_detects_a_strongly_better_run() {
        let a = repeat(&[0.9, 0.8, 0.95, 0.7], 25);
        let b: Vec<f64> = a.iter().zip(repeat(&[0.3, -0.1, 0.2, 0.1], 25)).map(|(x, d)| x - d).collect();
        let r = paired_bootstrap(&a, &b, 2000, 11);
        close(r.mean_diff, 0.125, 1e-12);
        assert!(r.interval.0 > 0.0 && r.interval.0 < r.mean_diff && r.mean_diff < r.interval.1);
        assert!(r.p_value < 0.01, "{r:?}");
        close(r.p_value, 2.0 / 2001.0, 1e-12);
        assert_eq!(r, paired_bootstrap(&a, &b, 2000, 11));
        let flipped = paired_bootstrap(&b, &a, 2000, 11);
        close(flipped.mean_diff, -0.125, 1e-12);
        assert!(flipped.p_value < 0.01);
    }

    #[test]
    fn paired_bootstrap_of_a_noisy_small_difference_is_not_significant() {
        let a = repeat(&[1.0, 0.0, 0.6, 0.3], 10);
        let b = repeat(&[0.0, 1.0, 0.5, 0.3], 10);
        let r = paired_bootstrap(&a, &b, 2000, 5);
        assert!(r.p_value > 0.5, "{r:?}");
        assert!(r.interval.0 < 0.0 && 0.0 < r.interval.1);
    }

    #[test]
    fn pass_fail_detection_is_exact() {
        assert!(is_pass_fail(&[0.0, 1.0, 1.0]));
        assert!(is_pass_fail(&[]));
        assert!(!is_pass_fail(&[0.0, 0.5]));
        assert!(!is_pass_fail(&[1.0 - 1e-12]));
    }

    #[test]
    fn compare_to_leader_picks_the_test_by_score_kind() {
        // The leader alone is right on 6 examples and the other alone on 1: McNemar gives p = 0.125.
        let leader = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let other = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let c = compare_to_leader(&leader, &other, 0.05, 1).unwrap();
        assert_eq!(c.test, "mcnemar_exact");
        close(c.p_value, 0.125, 1e-12);
        assert!(c.tied);
        assert!(!compare_to_leader(&leader, &other, 0.2, 1).unwrap().tied);

        let graded = repeat(&[0.9, 0.8, 0.95, 0.7], 25);
        let worse: Vec<f64> = graded.iter().map(|x| x - 0.3).collect();
        let c = compare_to_leader(&graded, &worse, 0.05, 1).unwrap();
        assert_eq!(c.test, "paired_bootstrap");
        close(c.p_value, 2.0 / f64::from(COMPARE_RESAMPLES + 1), 1e-12);
        assert!(!c.tied);
        let c = compare_to_leader(&graded, &graded, 0.05, 1).unwrap();
        assert_eq!((c.test, c.p_value, c.tied), ("paired_bootstrap", 1.0, true));
        // One run pass/fail and the other graded also takes the bootstrap.
        assert_eq!(compare_to_leader(&leader, &[0.5; 10], 0.05, 1).unwrap().test, "paired_bootstrap");
    }

    #[test]
    fn confidence_is_a_clean_percentage() {
        assert_eq!((confidence_percent(0.05), confidence_percent(0.025), confidence_percent(0.1)), (95.0, 97.5, 90.0));
    }

    #[test]
    fn normal_quantiles_match_tables() {
        close(normal_quantile(0.95), 1.644_853_626_951_472, 1e-8);
        close(normal_quantile(0.975), Z95, 1e-8);
        close(normal_quantile(0.99), 2.326_347_874_040_841, 1e-8);
        close(normal_quantile(0.001), -3.090_232_306_167_813, 1e-8);
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_eq!((normal_quantile(0.0), normal_quantile(1.0)), (f64::NEG_INFINITY, f64::INFINITY));
    }

    /// Tango's statistic at `d`, written out again from the formula, to check the bound against its definition.
    fn tango_statistic(b: f64, c: f64, n: f64, d: f64) -> f64 {
        let (a2, beta, gamma) = (2.0 * n, -b - c + (2.0 * n - b + c) * d, -c * d * (1.0 - d));
        let q = ((beta * beta - 4.0 * a2 * gamma).sqrt() - beta) / (2.0 * a2);
        (b - c - n * d) / (n * (2.0 * q + d * (1.0 - d))).sqrt()
    }

    #[test]
    fn tango_bound_matches_hand_computed_values() {
        let z = normal_quantile(0.95);
        // No disagreement: T(d) = -sqrt(n·d / (1 - d)) = -z gives d = z² / (n + z²); z² = 2.705543.
        close(tango_upper_bound(0.0, 0.0, 30.0, z), 2.705_543 / 32.705_543, 1e-6);
        close(tango_upper_bound(0.0, 0.0, 30.0, z), 0.082_724_308, 1e-8);
        close(tango_upper_bound(0.0, 0.0, 2000.0, z), 0.001_350_944, 1e-8);
        // The quickstart-sized case of the issue: the leader alone right on 11 of 30, the other alone on 4
        // (0.767 against 0.533, McNemar p = 0.118). At the bound the statistic is exactly -z.
        let u = tango_upper_bound(11.0, 4.0, 30.0, z);
        close(u, 0.424_122_240, 1e-8);
        close(tango_statistic(11.0, 4.0, 30.0, u), -z, 1e-6);
        for (b, c, n, want) in
            [(3.0, 1.0, 2000.0, 0.003_303_254), (40.0, 20.0, 160.0, 0.203_034_803), (5.0, 5.0, 184.0, 0.031_402_677)]
        {
            let u = tango_upper_bound(b, c, n, z);
            close(u, want, 1e-8);
            close(tango_statistic(b, c, n, u), -z, 1e-6);
        }
        assert_eq!(tango_upper_bound(30.0, 0.0, 30.0, z), 1.0, "the leader alone right everywhere");
        assert_eq!(tango_upper_bound(0.0, 0.0, 0.0, z), 1.0);
    }

    #[test]
    fn a_failed_test_is_not_a_small_shortfall() {
        // The leader 23/30, the other 16/30: McNemar cannot reject at 0.05, yet the bound is far above 0.02.
        let leader: Vec<f64> = (0..30).map(|i| if i < 23 { 1.0 } else { 0.0 }).collect();
        let mut other = leader.clone();
        for x in other.iter_mut().take(11) {
            *x = 0.0;
        }
        for x in other.iter_mut().skip(23).take(4) {
            *x = 1.0;
        }
        assert!(compare_to_leader(&leader, &other, 0.05, 1).unwrap().tied);
        let s = shortfall_bound(&leader, &other, 0.05, 1).unwrap();
        assert_eq!((s.method, s.n), ("tango_score", 30));
        close(s.diff, 7.0 / 30.0, 1e-12);
        close(s.upper, 0.424_122_240, 1e-8);
        close(s.resolution, 0.082_724_308, 1e-8);
        assert!(!s.within(0.02));
        assert_eq!(s.examples_needed(0.02), None, "0.233 below the leader: no sample of this kind is within 0.02");
        // Agreeing on all 30 is not enough either: 30 examples cannot resolve 0.02.
        let same = shortfall_bound(&leader, &leader, 0.05, 1).unwrap();
        close(same.upper, 0.082_724_308, 1e-8);
        assert!(!same.within(0.02));
        // z² (1 - m) / m = 2.705543 · 0.98 / 0.02 = 132.57.
        assert_eq!(same.examples_needed(0.02), Some(133));
    }

    #[test]
    fn a_run_that_agrees_on_nearly_all_of_many_examples_is_within_the_margin() {
        // 2,000 examples: the leader alone right on 3, the other alone on 1.
        let leader: Vec<f64> = (0..2000).map(|i| if i % 4 == 0 { 0.0 } else { 1.0 }).collect();
        let mut other = leader.clone();
        for i in [1, 2, 3] {
            other[i] = 0.0;
        }
        other[4] = 1.0;
        let s = shortfall_bound(&leader, &other, 0.05, 1).unwrap();
        close(s.upper, 0.003_303_254, 1e-8);
        assert!(s.within(0.02) && !s.within(0.003));
        // Graded scores take the bootstrap, floored at the resolution.
        let graded: Vec<f64> = leader.iter().map(|x| 0.25 + 0.5 * x).collect();
        let near: Vec<f64> = other.iter().map(|x| 0.25 + 0.5 * x).collect();
        let g = shortfall_bound(&graded, &near, 0.05, 1).unwrap();
        assert_eq!(g.method, "paired_bootstrap");
        close(g.diff, 0.0005, 1e-12);
        assert!(g.upper > g.diff && g.within(0.02), "{g:?}");
        assert_eq!(g, shortfall_bound(&graded, &near, 0.05, 1).unwrap(), "seeded");
        let same = shortfall_bound(&graded[..30], &graded[..30], 0.05, 1).unwrap();
        assert_eq!(same.upper, same.resolution, "identical graded runs get the floor, not 0");
        assert!(shortfall_bound(&[1.0], &[], 0.05, 1).is_err());
        assert_eq!(shortfall_bound(&[], &[], 0.05, 1).unwrap().upper, 1.0);
    }

    #[test]
    fn compare_and_bound_is_both_at_once() {
        let graded = repeat(&[0.9, 0.8, 0.95, 0.7], 25);
        let near: Vec<f64> = graded.iter().enumerate().map(|(i, x)| if i % 7 == 0 { x - 0.2 } else { *x }).collect();
        let pass = repeat(&[1.0, 0.0, 1.0], 30);
        let other = repeat(&[1.0, 1.0, 0.0], 30);
        for (l, o) in [(&graded, &near), (&pass, &other), (&graded, &graded)] {
            let both = compare_and_bound(l, o, 0.05, 9).unwrap();
            assert_eq!(both, (compare_to_leader(l, o, 0.05, 9).unwrap(), shortfall_bound(l, o, 0.05, 9).unwrap()));
        }
        assert!(compare_and_bound(&[0.5], &[], 0.05, 1).is_err());
    }

    #[test]
    fn compare_to_leader_rejects_unpaired_runs() {
        assert_eq!(
            compare_to_leader(&[1.0, 0.0], &[1.0], 0.05, 1),
            Err(StatsError::LengthMismatch { leader: 2, other: 1 })
        );
    }
}
