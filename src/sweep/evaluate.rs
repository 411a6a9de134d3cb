//! The evaluation step: a trained run's model (and, when the sweep asks, its
//! earlier kept checkpoints) is evaluated with the sweep's graders and
//! recorded. Once per sweep the base model is evaluated as the baseline, and
//! finished runs are graded by the judge and command graders added since.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::{Progress, SweepContext};
use crate::eval::EvalError;
use crate::eval::runner::{self, Target};
use crate::provider::local::KEPT_CHECKPOINTS;
use crate::run::{EvalKind, RunRecord, RunState};
use crate::store::StoreError;

/// The name the baseline goes by in progress reports.
pub const BASELINE: &str = "baseline";

/// Evaluates a trained run's model; `Ok(false)` is a failed run, recorded.
pub(super) async fn evaluate_run(
    cx: &SweepContext,
    run: &RunRecord,
    model: &str,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<bool, StoreError> {
    let started = Instant::now();
    cx.store.lock().start_evaluation(&run.run_id)?;
    progress(Progress::Evaluating { run_id: run.run_id.clone(), model: model.to_string() });
    let sweep_id = cx.store.lock().sweep(&cx.sweep_name)?.map(|s| s.id);
    let target =
        Target { model, data: &cx.validation, kind: EvalKind::Run, run_id: Some(&run.run_id), epoch: None, sweep_id };
    let outcome = match runner::evaluate(&cx.store, &cx.provider, &cx.eval, &target).await {
        Ok(outcome) => outcome,
        Err(EvalError::Store(e)) => return Err(e),
        Err(e) => {
            let reason = format!("evaluating `{model}` failed: {e}");
            cx.store.lock().fail_run(&run.run_id, &reason)?;
            progress(Progress::Failed { run_id: run.run_id.clone(), reason });
            return Ok(false);
        }
    };
    if cx.eval.evaluation.checkpoints {
        evaluate_checkpoints(cx, run, model, sweep_id).await?;
    }
    // The run's score is the mean of the primary metric's per-example scores;
    // an example whose grade is missing (a judge that failed) counts 0 there,
    // and the leaderboard shows the grader as incomplete.
    let metric = cx.eval.evaluation.metric.as_str();
    let primary = outcome.grades.get(metric);
    let scores: Vec<f64> = (0..outcome.examples.len()).map(|i| primary.map_or(0.0, |s| s[i])).collect();
    let seconds = started.elapsed().as_secs_f64();
    let score = cx.store.lock().finish_evaluation(&run.run_id, model, metric, &scores, seconds)?;
    let valid_loss = cx.store.lock().run_checkpoints(&run.run_id)?.last().and_then(|c| c.valid_loss);
    progress(Progress::Done { run_id: run.run_id.clone(), score, valid_loss, seconds });
    Ok(true)
}

/// Evaluates a run's kept checkpoints before the last epoch (the last one is
/// the run's model). A checkpoint the provider no longer has is skipped.
async fn evaluate_checkpoints(
    cx: &SweepContext,
    run: &RunRecord,
    model: &str,
    sweep_id: Option<i64>,
) -> Result<(), StoreError> {
    let checkpoints = cx.store.lock().run_checkpoints(&run.run_id)?;
    let last = checkpoints.iter().map(|c| c.epoch).max();
    let kept = checkpoints.iter().rev().take(KEPT_CHECKPOINTS as usize);
    for c in kept.filter(|c| Some(c.epoch) != last && c.model != model) {
        let target = Target {
            model: &c.model,
            data: &cx.validation,
            kind: EvalKind::Checkpoint,
            run_id: Some(&run.run_id),
            epoch: Some(c.epoch),
            sweep_id,
        };
        match runner::evaluate(&cx.store, &cx.provider, &cx.eval, &target).await {
            Ok(_) => {}
            Err(EvalError::Store(e)) => return Err(e),
            Err(e) => tracing::warn!(run = %run.run_id, epoch = c.epoch, "a checkpoint was not evaluated: {e}"),
        }
    }
    Ok(())
}

/// The sweep-wide evaluation, run alongside the runs: the baseline, then
/// for the runs already done, the judge and command grades missing (graders
/// added to the sweep since) and, when asked, their checkpoints. Replies
/// come from the cache, so this asks the provider only for what is new.
pub(super) fn evaluate_references(
    cx: &Arc<SweepContext>,
    runs: &[RunRecord],
    progress: &Arc<dyn Fn(Progress) + Send + Sync>,
) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
    let (cx, progress) = (cx.clone(), progress.clone());
    let done: Vec<RunRecord> =
        runs.iter().filter(|r| r.state == RunState::Done && r.model.is_some()).cloned().collect();
    async move {
        let sweep = cx.store.lock().sweep(&cx.sweep_name)?;
        let sweep_id = sweep.as_ref().map(|s| s.id);
        if cx.eval.evaluation.baseline {
            let started = Instant::now();
            let target = Target {
                model: &cx.base_model,
                data: &cx.validation,
                kind: EvalKind::Baseline,
                run_id: None,
                epoch: None,
                sweep_id,
            };
            match runner::evaluate(&cx.store, &cx.provider, &cx.eval, &target).await {
                Ok(o) => progress(Progress::Done {
                    run_id: BASELINE.into(),
                    score: o.grades.mean(cx.eval.evaluation.metric.as_str()).unwrap_or(0.0),
                    valid_loss: None,
                    seconds: started.elapsed().as_secs_f64(),
                }),
                Err(EvalError::Store(e)) => return Err(e),
                Err(e) => progress(Progress::Failed {
                    run_id: BASELINE.into(),
                    reason: format!("the base model was not evaluated (the table will have no baseline): {e}"),
                }),
            }
        }
        let regrade = cx.eval.evaluation.graders.iter().any(|g| g.is_cached());
        for run in &done {
            let model = run.model.as_deref().unwrap_or_default();
            if regrade {
                let evaluation = cx.store.lock().latest_evaluation(model, &cx.validation.sha256)?;
                if let Some(e) = evaluation {
                    let examples = cx.store.lock().evaluation_examples(e.id)?;
                    runner::grade(&cx.store, &cx.provider, &cx.eval, &examples).await?;
                }
            }
            if cx.eval.evaluation.checkpoints {
                evaluate_checkpoints(&cx, run, model, sweep_id).await?;
            }
        }
        Ok(())
    }
}

/// Waits for [`evaluate_references`]; a panic in it is reported, not raised.
pub(super) async fn join_references(
    handle: tokio::task::JoinHandle<Result<(), StoreError>>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), StoreError> {
    match handle.await {
        Ok(result) => result,
        Err(e) => {
            progress(Progress::Failed { run_id: BASELINE.into(), reason: format!("internal error: {e}") });
            Ok(())
        }
    }
}
