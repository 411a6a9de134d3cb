//! The evaluation step of a run: grade its model on the validation set and
//! record the result.

use std::time::Instant;

use super::{Progress, SweepContext};
use crate::eval;
use crate::store::{RunRecord, StoreError};

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
    let rows = match eval::evaluate(&cx.provider, model, &cx.validation, cx.metric).await {
        Ok(rows) => rows,
        Err(e) => {
            let reason = format!("evaluating `{model}` failed: {e}");
            cx.store.lock().fail_run(&run.run_id, &reason)?;
            progress(Progress::Failed { run_id: run.run_id.clone(), reason });
            return Ok(false);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let score = cx.store.lock().finish_evaluation(&run.run_id, model, cx.metric.as_str(), &rows, seconds)?;
    let valid_loss = cx.store.lock().run_checkpoints(&run.run_id)?.last().and_then(|c| c.valid_loss);
    progress(Progress::Done { run_id: run.run_id.clone(), score, valid_loss, seconds });
    Ok(true)
}
