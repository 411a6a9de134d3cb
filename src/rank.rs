//! Ranking runs: pure ordering and the best pick, no I/O.

use std::cmp::Ordering;

use crate::store::{RunRecord, RunState};

/// A run with its place: `Some(rank)` (1-based) for evaluated runs, `None`
/// for runs that have no score yet or failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked<'a> {
    pub rank: Option<usize>,
    pub run: &'a RunRecord,
}

/// Orders runs: evaluated runs by score (higher first), then validation loss
/// (lower first), then trained tokens (fewer first), then run id; after them
/// the unfinished runs, then the failed ones, in the order given.
pub fn rank(runs: &[RunRecord]) -> Vec<Ranked<'_>> {
    let mut scored: Vec<&RunRecord> = runs.iter().filter(|r| is_scored(r)).collect();
    scored.sort_by(|a, b| compare(a, b));
    let mut out: Vec<Ranked<'_>> =
        scored.into_iter().enumerate().map(|(i, run)| Ranked { rank: Some(i + 1), run }).collect();
    let unfinished = runs.iter().filter(|r| !is_scored(r) && r.state != RunState::Failed);
    let failed = runs.iter().filter(|r| r.state == RunState::Failed);
    out.extend(unfinished.chain(failed).map(|run| Ranked { rank: None, run }));
    out
}

/// The best run, if any run was evaluated.
pub fn best(runs: &[RunRecord]) -> Option<&RunRecord> {
    rank(runs).into_iter().find(|r| r.rank.is_some()).map(|r| r.run)
}

fn is_scored(r: &RunRecord) -> bool {
    r.state == RunState::Done && r.score.is_some()
}

fn compare(a: &RunRecord, b: &RunRecord) -> Ordering {
    let score = |r: &RunRecord| r.score.unwrap_or(f64::NEG_INFINITY);
    let loss = |r: &RunRecord| r.valid_loss.filter(|l| l.is_finite()).unwrap_or(f64::INFINITY);
    score(b)
        .total_cmp(&score(a))
        .then_with(|| loss(a).total_cmp(&loss(b)))
        .then_with(|| a.trained_tokens.unwrap_or(i64::MAX).cmp(&b.trained_tokens.unwrap_or(i64::MAX)))
        .then_with(|| a.run_id.cmp(&b.run_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RunConfig;

    fn run(id: &str, state: RunState, score: Option<f64>, valid_loss: Option<f64>) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            config: RunConfig { n_epochs: Some(1), batch_size: Some(1), learning_rate_multiplier: Some(1.0), seed: 0 },
            state,
            attempt: 1,
            job_id: None,
            model: Some(format!("m-{id}")),
            error: None,
            trained_tokens: Some(100),
            train_loss: None,
            train_accuracy: None,
            valid_loss,
            valid_accuracy: None,
            metric: None,
            score,
            n_eval: None,
            train_seconds: None,
            eval_seconds: None,
        }
    }

    #[test]
    fn orders_by_score_then_loss_and_puts_unscored_last() {
        let runs = vec![
            run("failed", RunState::Failed, None, None),
            run("low", RunState::Done, Some(0.5), Some(0.1)),
            run("tie-worse-loss", RunState::Done, Some(0.9), Some(0.8)),
            run("planned", RunState::Planned, None, None),
            run("tie-better-loss", RunState::Done, Some(0.9), Some(0.3)),
        ];
        let ranked: Vec<_> = rank(&runs).iter().map(|r| (r.rank, r.run.run_id.as_str())).collect();
        assert_eq!(
            ranked,
            [
                (Some(1), "tie-better-loss"),
                (Some(2), "tie-worse-loss"),
                (Some(3), "low"),
                (None, "planned"),
                (None, "failed")
            ]
        );
        assert_eq!(best(&runs).unwrap().run_id, "tie-better-loss");
    }

    #[test]
    fn no_best_without_a_finished_run() {
        let runs = vec![run("a", RunState::Failed, None, None), run("b", RunState::Trained, None, None)];
        assert!(best(&runs).is_none());
    }

    #[test]
    fn a_nan_loss_never_beats_a_real_one() {
        let runs = vec![
            run("nan", RunState::Done, Some(0.9), Some(f64::NAN)),
            run("ok", RunState::Done, Some(0.9), Some(5.0)),
        ];
        assert_eq!(best(&runs).unwrap().run_id, "ok");
    }
}
