//! Early stopping: watches a job's validation evaluations and says when to
//! stop it, because it diverges or because it stopped improving. Pure: the
//! scheduler feeds it the metrics events and cancels the job.

use crate::spec::{EarlyStopping, StopMetric};

/// Why a job should stop.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// The loss is not finite, or above `factor` × the first evaluation's.
    Diverged { at: f64, value: f64, first: f64 },
    /// `patience` evaluations without an improvement of more than `min_delta`.
    NoImprovement { at: f64, best: f64, best_at: f64, evaluations: u32 },
}

impl StopReason {
    /// A short kind: `diverged` or `plateau`.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::Diverged { .. } => "diverged",
            StopReason::NoImprovement { .. } => "plateau",
        }
    }

    /// The reason in words, with the metric's name.
    pub fn describe(&self, metric: StopMetric) -> String {
        let name = metric.as_str();
        match self {
            StopReason::Diverged { at, value, first } if !value.is_finite() => {
                format!("diverged at epoch {at:.2}: {name} is {value} (first evaluation {first:.4})")
            }
            StopReason::Diverged { at, value, first } => {
                format!("diverged at epoch {at:.2}: {name} {value:.4} is above the first evaluation's {first:.4}")
            }
            StopReason::NoImprovement { at, best, best_at, evaluations } => format!(
                "stopped improving: at epoch {at:.2}, {evaluations} evaluations without beating the best {name} \
                 {best:.4} (epoch {best_at:.2})"
            ),
        }
    }
}

/// The state of one job's early stopping.
#[derive(Debug, Clone)]
pub struct Stopper {
    cfg: EarlyStopping,
    /// Whether the job trains from the base model: only then is its first
    /// evaluation a reference for divergence (a continuation starts from a
    /// trained model, so rising above its first loss is overfitting, which
    /// patience handles).
    from_base: bool,
    first: Option<f64>,
    /// The best value so far and where it was seen.
    best: Option<(f64, f64)>,
    since_best: u32,
    /// The last evaluation's position, to ignore repeats of the same one.
    last_at: Option<f64>,
}

impl Stopper {
    pub fn new(cfg: EarlyStopping) -> Stopper {
        Stopper { cfg, from_base: true, first: None, best: None, since_best: 0, last_at: None }
    }

    /// For a job that continues a trained model: no divergence against its
    /// first evaluation (a loss that is not finite still stops it).
    pub fn continuing(cfg: EarlyStopping) -> Stopper {
        Stopper { from_base: false, ..Stopper::new(cfg) }
    }

    /// Takes a validation evaluation at `at` (in epochs, fractional within
    /// an epoch) and says whether the job should stop. The same position seen
    /// twice (an epoch end reported as a validation and as a checkpoint)
    /// counts once.
    pub fn observe(&mut self, at: f64, value: f64) -> Option<StopReason> {
        if self.last_at.is_some_and(|l| (l - at).abs() < 1e-9) {
            return None;
        }
        self.last_at = Some(at);
        let lower_is_better = self.cfg.metric == StopMetric::ValidLoss;
        let first = *self.first.get_or_insert(value);
        if !value.is_finite() {
            return Some(StopReason::Diverged { at, value, first });
        }
        // Divergence is a loss rule: accuracy has no "above the first".
        if self.from_base && lower_is_better && first.is_finite() && value > first * self.cfg.divergence_factor {
            return Some(StopReason::Diverged { at, value, first });
        }
        let improved = match self.best {
            None => true,
            Some((best, _)) if lower_is_better => value < best - self.cfg.min_delta,
            Some((best, _)) => value > best + self.cfg.min_delta,
        };
        if improved {
            self.best = Some((value, at));
            self.since_best = 0;
            return None;
        }
        self.since_best += 1;
        match self.best {
            Some((best, best_at)) if self.since_best >= self.cfg.patience => {
                Some(StopReason::NoImprovement { at, best, best_at, evaluations: self.since_best })
            }
            _ => None,
        }
    }

    /// A training loss that is not finite: the job diverged.
    pub fn observe_train_loss(&mut self, at: f64, loss: f64) -> Option<StopReason> {
        (!loss.is_finite()).then(|| StopReason::Diverged { at, value: loss, first: self.first.unwrap_or(f64::NAN) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(patience: u32, min_delta: f64, factor: f64) -> EarlyStopping {
        EarlyStopping { metric: StopMetric::ValidLoss, patience, min_delta, divergence_factor: factor }
    }

    fn run(s: &mut Stopper, values: &[f64]) -> Option<(usize, StopReason)> {
        values.iter().enumerate().find_map(|(i, v)| s.observe(i as f64 + 1.0, *v).map(|r| (i, r)))
    }

    #[test]
    fn an_improving_job_runs_to_its_end() {
        let mut s = Stopper::new(cfg(2, 0.0, 1.0));
        assert_eq!(run(&mut s, &[3.0, 2.0, 1.5, 1.2, 1.1]), None);
    }

    #[test]
    fn patience_counts_evaluations_without_improvement() {
        let mut s = Stopper::new(cfg(2, 0.0, 10.0));
        let (i, r) = run(&mut s, &[3.0, 2.0, 2.1, 2.05, 1.0]).unwrap();
        assert_eq!(i, 3, "stops at the second evaluation after the best");
        assert_eq!(r, StopReason::NoImprovement { at: 4.0, best: 2.0, best_at: 2.0, evaluations: 2 });
        assert_eq!(r.kind(), "plateau");
        // An improvement resets the count.
        let mut s = Stopper::new(cfg(2, 0.0, 10.0));
        assert_eq!(run(&mut s, &[3.0, 2.0, 2.1, 1.9, 2.0]), None);
    }

    #[test]
    fn min_delta_makes_tiny_gains_count_as_none() {
        let mut s = Stopper::new(cfg(1, 0.1, 10.0));
        let (i, _) = run(&mut s, &[3.0, 2.95]).unwrap();
        assert_eq!(i, 1);
        let mut s = Stopper::new(cfg(1, 0.01, 10.0));
        assert_eq!(run(&mut s, &[3.0, 2.95]), None);
    }

    #[test]
    fn a_loss_above_the_first_or_not_finite_is_divergence() {
        let mut s = Stopper::new(cfg(5, 0.0, 1.0));
        let (i, r) = run(&mut s, &[3.0, 2.5, 3.2]).unwrap();
        assert_eq!((i, r.kind()), (2, "diverged"));
        assert!(r.describe(StopMetric::ValidLoss).contains("above the first evaluation's 3.0000"), "{r:?}");
        let mut s = Stopper::new(cfg(5, 0.0, 1.5));
        assert_eq!(run(&mut s, &[3.0, 2.5, 4.4]), None, "within the factor");
        let mut s = Stopper::new(cfg(5, 0.0, 1.0));
        let (i, r) = run(&mut s, &[3.0, f64::INFINITY]).unwrap();
        assert_eq!((i, r.kind()), (1, "diverged"));
        let mut s = Stopper::new(cfg(5, 0.0, 1.0));
        let (i, _) = run(&mut s, &[f64::NAN]).unwrap();
        assert_eq!(i, 0, "a first evaluation that is not finite stops at once");
        assert!(s.observe_train_loss(0.5, f64::NAN).is_some());
        assert!(s.observe_train_loss(0.5, 2.0).is_none());
    }

    #[test]
    fn a_continuation_is_stopped_by_patience_not_by_its_first_loss() {
        let mut s = Stopper::continuing(cfg(2, 0.0, 1.0));
        assert_eq!(run(&mut s, &[1.2, 1.1, 1.25]), None, "above the first, but within patience");
        let (i, r) = run(&mut Stopper::continuing(cfg(2, 0.0, 1.0)), &[1.2, 1.1, 1.25, 1.3]).unwrap();
        assert_eq!((i, r.kind()), (3, "plateau"));
        let (i, r) = run(&mut Stopper::continuing(cfg(2, 0.0, 1.0)), &[1.2, f64::INFINITY]).unwrap();
        assert_eq!((i, r.kind()), (1, "diverged"));
    }

    #[test]
    fn accuracy_is_maximised_and_repeats_count_once() {
        let mut s = Stopper::new(EarlyStopping { metric: StopMetric::ValidAccuracy, ..cfg(1, 0.0, 1.0) });
        assert_eq!(s.observe(1.0, 0.5), None);
        assert_eq!(s.observe(1.0, 0.4), None, "the same evaluation again");
        assert_eq!(s.observe(2.0, 0.6), None);
        assert_eq!(s.observe(3.0, 0.6).map(|r| r.kind()), Some("plateau"));
    }
}
