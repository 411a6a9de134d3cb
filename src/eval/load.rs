//! A sweep's evaluated models read back from the store for ranking: its
//! runs, their checkpoints when the sweep evaluates them, its baseline and
//! the models evaluated with `ftsweep eval`, each graded from its stored
//! replies and the grade cache. Reading never calls a provider.

use std::path::{Path, PathBuf};

use super::runner::grade_cache;
use super::scores::{self, GradeCache};
use crate::pricing::{self, Price};
use crate::rank::Candidate;
use crate::run::EvalKind;
use crate::run::{Origin, RunRecord, RunState};
use crate::spec::{self, Evaluation, Metric};
use crate::store::{EvalExample, EvaluationRecord, Store, StoreError, SweepRecord};

/// A recorded sweep with the settings its evaluation needs.
#[derive(Debug, Clone)]
pub struct SweepSetup {
    pub sweep: SweepRecord,
    pub evaluation: Evaluation,
    /// The sweep file's folder: command graders run there.
    pub dir: PathBuf,
    /// The sweep's `[pricing]`, else the committed price of its base model.
    pub price: Option<Price>,
    /// Why the recorded sweep file could not be read again, if it could not.
    pub warning: Option<String>,
}

/// A candidate with its graded examples.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub candidate: Candidate,
    pub examples: Vec<EvalExample>,
    /// The decoding settings its replies were asked under (`None` before they were recorded).
    pub decoding: Option<String>,
}

/// The evaluation settings of a recorded sweep, from the sweep file it was
/// last recorded with.
pub fn setup(store: &Store, sweep: &SweepRecord) -> Result<SweepSetup, StoreError> {
    let spec = store.sweep_spec(sweep.id)?;
    let dir = spec
        .as_ref()
        .and_then(|(path, _)| Path::new(path).parent().map(Path::to_path_buf))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let parsed = spec.as_ref().map(|(path, text)| spec::parse(Path::new(path), text));
    let (evaluation, pricing, warning) = match parsed {
        Some(Ok(s)) => (s.evaluation, s.pricing, None),
        other => {
            // Fall back on the recorded metric with its default grader.
            let mut e = Evaluation::default();
            if let Some(g) = super::config::NamedGrader::builtin(&sweep.metric) {
                e.metric = Metric::named(&g.name);
                e.graders = vec![g];
            }
            let why = match other {
                Some(Err(err)) => {
                    format!("the recorded sweep file no longer parses ({err}); grading by `{}`", e.metric.as_str())
                }
                _ => "the sweep has no recorded sweep file".to_string(),
            };
            (e, None, Some(why))
        }
    };
    let price = pricing.or_else(|| pricing::lookup(&sweep.base_model));
    Ok(SweepSetup { sweep: sweep.clone(), evaluation, dir, price, warning })
}

/// An evaluation (none for rows recorded before evaluations were) and its examples.
type Evaluated = (Option<EvaluationRecord>, Vec<EvalExample>);

/// The examples of a model's latest evaluation on the sweep's validation
/// data; for a run evaluated before evaluations were recorded, its graded
/// rows (without prompts).
fn examples_of(
    store: &Store,
    setup: &SweepSetup,
    model: &str,
    run: Option<&RunRecord>,
) -> Result<Option<Evaluated>, StoreError> {
    if let Some(e) = store.latest_evaluation(model, &setup.sweep.validation_sha256)? {
        let examples = store.evaluation_examples(e.id)?;
        return Ok(Some((Some(e), examples)));
    }
    let Some(run) = run else { return Ok(None) };
    let rows = store.eval_rows(&run.run_id, model)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let examples = rows
        .into_iter()
        .map(|r| EvalExample {
            example: r.example,
            line: r.line,
            conversation_sha256: String::new(),
            prompt: Vec::new(),
            reference: r.reference,
            prediction: r.prediction,
            probability: r.probability,
        })
        .collect();
    Ok(Some((None, examples)))
}

fn eval_cost(e: Option<&EvaluationRecord>, price: Option<Price>) -> Option<f64> {
    let (e, p) = (e?, price?);
    Some(pricing::cost(e.input_tokens, p.input) + pricing::cost(e.output_tokens, p.output))
}

/// The trained tokens behind a run's model: its own job's, plus, for a
/// continuation, its parent chain's; for a checkpoint, its share of the
/// source job's (epochs / the job's epochs). What reproducing it would cost.
pub fn tokens_behind(run: &RunRecord, runs: &[RunRecord]) -> Option<i64> {
    let find = |id: &str| runs.iter().find(|r| r.run_id == id);
    let mut run = run;
    let mut total = 0i64;
    for _ in 0..64 {
        match &run.origin {
            Origin::Job => return Some(total + run.trained_tokens?),
            Origin::Checkpoint { source } => {
                let s = find(source)?;
                let (e, n) = (i64::from(run.config.n_epochs?), i64::from(s.config.n_epochs?.max(1)));
                return Some(total + s.trained_tokens? * e / n);
            }
            Origin::Continue { parent, .. } => {
                total += run.trained_tokens?;
                run = find(parent)?;
            }
        }
    }
    None
}

/// Every row of the sweep's leaderboard, graded with its evaluation settings.
pub fn board(store: &Store, setup: &SweepSetup) -> Result<Vec<Loaded>, StoreError> {
    let cache = grade_cache(store, &setup.evaluation, &setup.dir)?;
    let grade = |examples: &[EvalExample], cache: &GradeCache| scores::grade(&setup.evaluation, examples, cache);
    let price = setup.price;
    let inference = |p: Option<Price>| p.map(|p| p.input + p.output);
    let mut out = Vec::new();
    let runs = store.sweep_runs(setup.sweep.id)?;
    for run in runs.iter().cloned() {
        let curve: Vec<(u32, f64)> = {
            let mut by_epoch = std::collections::BTreeMap::new();
            for m in store.run_metrics(&run.run_id)?.iter().filter(|m| m.epoch_end) {
                if let Some(l) = m.valid_loss {
                    by_epoch.insert(m.epoch, l);
                }
            }
            by_epoch.into_iter().collect()
        };
        let found = match (&run.model, run.state) {
            (Some(model), RunState::Done) => examples_of(store, setup, model, Some(&run))?,
            _ => None,
        };
        let (evaluation, examples) = found.unwrap_or((None, Vec::new()));
        let training_cost = price.map(|p| pricing::cost(run.trained_tokens.unwrap_or(0).max(0) as u64, p.training));
        let done = run.state == RunState::Done && !examples.is_empty();
        let candidate = Candidate {
            role: EvalKind::Run,
            epoch: None,
            model: run.model.clone(),
            grades: if done { grade(&examples, &cache) } else { Default::default() },
            valid_loss: run.valid_loss,
            train_loss: run.train_loss,
            valid_curve: curve.clone(),
            trained_tokens: tokens_behind(&run, &runs),
            cost_usd: match (training_cost, eval_cost(evaluation.as_ref(), price)) {
                (Some(t), Some(e)) => Some(t + e),
                (t, None) => t,
                (None, e) => e,
            },
            inference_price: inference(price),
            n_examples: examples.len(),
            run: Some(run.clone()),
        };
        let decoding = evaluation.as_ref().map(|e| e.decoding.clone());
        out.push(Loaded { candidate, examples, decoding });
        if !(setup.evaluation.checkpoints && run.state == RunState::Done) {
            continue;
        }
        let checkpoints = store.run_checkpoints(&run.run_id)?;
        let last = checkpoints.iter().map(|c| c.epoch).max();
        let epochs = run.config.n_epochs.or(last).unwrap_or(1).max(1);
        for c in checkpoints.iter().filter(|c| Some(c.epoch) != last && Some(&c.model) != run.model.as_ref()) {
            let Some((Some(evaluation), examples)) = examples_of(store, setup, &c.model, None)? else { continue };
            let tokens = run.trained_tokens.map(|t| t * i64::from(c.epoch) / i64::from(epochs));
            out.push(Loaded {
                candidate: Candidate {
                    role: EvalKind::Checkpoint,
                    epoch: Some(c.epoch),
                    model: Some(c.model.clone()),
                    grades: grade(&examples, &cache),
                    valid_loss: c.valid_loss,
                    train_loss: c.train_loss,
                    valid_curve: curve.iter().copied().filter(|(e, _)| *e <= c.epoch).collect(),
                    trained_tokens: tokens,
                    cost_usd: eval_cost(Some(&evaluation), price),
                    inference_price: inference(price),
                    n_examples: examples.len(),
                    run: Some(run.clone()),
                },
                examples,
                decoding: Some(evaluation.decoding.clone()),
            });
        }
    }
    let reference = |role: EvalKind, evaluation: EvaluationRecord, examples: Vec<EvalExample>| {
        let p = pricing::lookup(&evaluation.model).or(price);
        Loaded {
            candidate: Candidate {
                role,
                run: None,
                epoch: None,
                model: Some(evaluation.model.clone()),
                grades: grade(&examples, &cache),
                valid_loss: None,
                train_loss: None,
                valid_curve: Vec::new(),
                trained_tokens: None,
                cost_usd: eval_cost(Some(&evaluation), p),
                inference_price: inference(p),
                n_examples: examples.len(),
            },
            examples,
            decoding: Some(evaluation.decoding.clone()),
        }
    };
    if let Some((Some(e), examples)) = examples_of(store, setup, &setup.sweep.base_model, None)? {
        out.push(reference(EvalKind::Baseline, e, examples));
    }
    for e in store.sweep_model_evaluations(setup.sweep.id, &setup.sweep.validation_sha256)? {
        if e.model == setup.sweep.base_model {
            continue;
        }
        let examples = store.evaluation_examples(e.id)?;
        out.push(reference(EvalKind::Model, e, examples));
    }
    Ok(out)
}
