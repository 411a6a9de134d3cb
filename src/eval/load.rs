//! A sweep's evaluated models read back from the store for ranking: its
//! runs, their checkpoints when the sweep evaluates them, its baseline and
//! the models evaluated with `ftsweep eval`, each graded from its stored
//! replies and the grade cache. Reading never calls a provider.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::runner::{cache_key, grade_cache};
use super::scores::{self, GradeCache, Grades};
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

/// A candidate, graded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub candidate: Candidate,
    /// Its evaluation, whose examples [`examples`] reads.
    pub evaluation_id: Option<i64>,
    /// The graded rows of a run recorded before evaluations were; empty otherwise (see [`examples`]).
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

/// Where a row's per-example scores come from.
enum Source {
    /// An evaluation: its stored scores, or its examples graded (and those scores stored).
    Evaluation(EvaluationRecord),
    /// Graded rows recorded before evaluations were, with the examples they hold.
    Rows(Vec<EvalExample>),
    /// Nothing graded yet.
    None,
}

/// A row before it is graded.
struct Pending {
    candidate: Candidate,
    source: Source,
}

/// Each grader's key: its grade-cache key, which its stored scores are kept under.
fn grader_keys(setup: &SweepSetup) -> Vec<String> {
    setup.evaluation.graders.iter().map(|g| cache_key(&g.kind, g, &setup.dir)).collect()
}

/// Every row of the sweep's leaderboard, graded with its evaluation settings. An evaluation's
/// scores are read from those stored with it; those missing (an evaluation recorded before they
/// were stored, a grader added since, a judge's grades cached since) are graded from its stored
/// replies and, when the database can be written, stored, in one write transaction.
pub fn board(store: &mut Store, setup: &SweepSetup) -> Result<Vec<Loaded>, StoreError> {
    let price = setup.price;
    let inference = |p: Option<Price>| p.map(|p| p.input + p.output);
    let sha = &setup.sweep.validation_sha256;
    // The latest evaluation of each model on the sweep's validation data.
    let mut latest: HashMap<String, EvaluationRecord> = HashMap::new();
    for e in store.evaluations_on(sha)? {
        latest.entry(e.model.clone()).or_insert(e);
    }
    let mut pending: Vec<Pending> = Vec::new();
    let runs = store.sweep_runs(setup.sweep.id)?;
    let mut metrics = store.sweep_epoch_metrics(setup.sweep.id)?;
    for run in runs.iter().cloned() {
        let curve: Vec<(u32, f64)> = {
            let mut by_epoch = std::collections::BTreeMap::new();
            for m in metrics.remove(&run.run_id).unwrap_or_default().iter().filter(|m| m.epoch_end) {
                if let Some(l) = m.valid_loss {
                    by_epoch.insert(m.epoch, l);
                }
            }
            by_epoch.into_iter().collect()
        };
        let source = match (&run.model, run.state) {
            (Some(model), RunState::Done) => match latest.get(model) {
                Some(e) => Source::Evaluation(e.clone()),
                None => {
                    let rows = legacy_examples(store, &run.run_id, model)?;
                    if rows.is_empty() { Source::None } else { Source::Rows(rows) }
                }
            },
            _ => Source::None,
        };
        let evaluation = match &source {
            Source::Evaluation(e) => Some(e),
            _ => None,
        };
        let training_cost = price.map(|p| pricing::cost(run.trained_tokens.unwrap_or(0).max(0) as u64, p.training));
        let candidate = Candidate {
            role: EvalKind::Run,
            epoch: None,
            model: run.model.clone(),
            grades: Default::default(),
            valid_loss: run.valid_loss,
            train_loss: run.train_loss,
            valid_curve: curve.clone(),
            trained_tokens: tokens_behind(&run, &runs),
            cost_usd: match (training_cost, eval_cost(evaluation, price)) {
                (Some(t), Some(e)) => Some(t + e),
                (t, None) => t,
                (None, e) => e,
            },
            inference_price: inference(price),
            n_examples: 0,
            run: Some(run.clone()),
        };
        pending.push(Pending { candidate, source });
        if !(setup.evaluation.checkpoints && run.state == RunState::Done) {
            continue;
        }
        let checkpoints = store.run_checkpoints(&run.run_id)?;
        let last = checkpoints.iter().map(|c| c.epoch).max();
        let epochs = run.config.n_epochs.or(last).unwrap_or(1).max(1);
        for c in checkpoints.iter().filter(|c| Some(c.epoch) != last && Some(&c.model) != run.model.as_ref()) {
            let Some(evaluation) = latest.get(&c.model) else { continue };
            let tokens = run.trained_tokens.map(|t| t * i64::from(c.epoch) / i64::from(epochs));
            pending.push(Pending {
                candidate: Candidate {
                    role: EvalKind::Checkpoint,
                    epoch: Some(c.epoch),
                    model: Some(c.model.clone()),
                    grades: Default::default(),
                    valid_loss: c.valid_loss,
                    train_loss: c.train_loss,
                    valid_curve: curve.iter().copied().filter(|(e, _)| *e <= c.epoch).collect(),
                    trained_tokens: tokens,
                    cost_usd: eval_cost(Some(evaluation), price),
                    inference_price: inference(price),
                    n_examples: 0,
                    run: Some(run.clone()),
                },
                source: Source::Evaluation(evaluation.clone()),
            });
        }
    }
    let reference = |role: EvalKind, evaluation: EvaluationRecord| {
        let p = pricing::lookup(&evaluation.model).or(price);
        Pending {
            candidate: Candidate {
                role,
                run: None,
                epoch: None,
                model: Some(evaluation.model.clone()),
                grades: Default::default(),
                valid_loss: None,
                train_loss: None,
                valid_curve: Vec::new(),
                trained_tokens: None,
                cost_usd: eval_cost(Some(&evaluation), p),
                inference_price: inference(p),
                n_examples: 0,
            },
            source: Source::Evaluation(evaluation),
        }
    };
    if let Some(e) = latest.get(&setup.sweep.base_model) {
        pending.push(reference(EvalKind::Baseline, e.clone()));
    }
    for e in store.sweep_model_evaluations(setup.sweep.id, sha)? {
        if e.model == setup.sweep.base_model {
            continue;
        }
        pending.push(reference(EvalKind::Model, e));
    }
    grade_rows(store, setup, pending)
}

/// The rows graded: from their evaluations' scores, or their graded rows of before evaluations.
fn grade_rows(store: &mut Store, setup: &SweepSetup, pending: Vec<Pending>) -> Result<Vec<Loaded>, StoreError> {
    let scores = evaluation_scores(store, setup, &pending)?;
    let mut cache: Option<GradeCache> = None;
    let mut out = Vec::with_capacity(pending.len());
    for Pending { mut candidate, source } in pending {
        let (evaluation_id, decoding, examples) = match source {
            Source::Evaluation(e) => {
                let (grades, n) = scores.get(&e.id).cloned().unwrap_or_default();
                candidate.n_examples = n;
                // A run is graded once it is done with examples; a checkpoint or a reference always.
                if candidate.role != EvalKind::Run || n > 0 {
                    candidate.grades = grades;
                }
                (Some(e.id), Some(e.decoding), Vec::new())
            }
            Source::Rows(examples) => {
                if cache.is_none() {
                    cache = Some(grade_cache(store, &setup.evaluation, &setup.dir)?);
                }
                candidate.n_examples = examples.len();
                candidate.grades =
                    scores::grade(&setup.evaluation, &examples, cache.as_ref().unwrap_or(&GradeCache::new()));
                (None, None, examples)
            }
            Source::None => (None, None, Vec::new()),
        };
        out.push(Loaded { candidate, examples, evaluation_id, decoding });
    }
    Ok(out)
}

/// The graded rows of a run recorded before evaluations were (without prompts).
fn legacy_examples(store: &Store, run_id: &str, model: &str) -> Result<Vec<EvalExample>, StoreError> {
    Ok(store
        .eval_rows(run_id, model)?
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
        .collect())
}

/// The grades of every evaluation the rows read, with their examples' count, by evaluation id:
/// stored scores where every grader has them, else graded from the stored replies (and stored,
/// when the database can be written, in a write transaction that holds the examples still).
fn evaluation_scores(
    store: &mut Store,
    setup: &SweepSetup,
    pending: &[Pending],
) -> Result<HashMap<i64, (Grades, usize)>, StoreError> {
    let keys = grader_keys(setup);
    let sha = &setup.sweep.validation_sha256;
    let mut stored = keys.iter().map(|k| store.stored_scores(k, sha)).collect::<Result<Vec<_>, _>>()?;
    let evaluations: Vec<&EvaluationRecord> = pending
        .iter()
        .filter_map(|p| match &p.source {
            Source::Evaluation(e) => Some(e),
            _ => None,
        })
        .collect();
    let missing: Vec<i64> =
        evaluations.iter().map(|e| e.id).filter(|id| stored.iter().any(|s| !s.contains_key(id))).collect();
    // Graded without a stored score: a grader incomplete on an evaluation, by evaluation id.
    let mut incomplete: HashMap<i64, Vec<bool>> = HashMap::new();
    if !missing.is_empty() {
        let writable = store.writable()?;
        let mut fill = |s: &Store| -> Result<(), StoreError> {
            let cache = grade_cache(s, &setup.evaluation, &setup.dir)?;
            for &id in &missing {
                let examples = s.evaluation_examples(id)?;
                let grades = scores::grade(&setup.evaluation, &examples, &cache);
                let mut complete = Vec::new();
                let mut none = vec![false; keys.len()];
                for (k, g) in setup.evaluation.graders.iter().enumerate() {
                    match grades.get(&g.name) {
                        Some(x) => {
                            complete.push((keys[k].clone(), x.to_vec()));
                            stored[k].insert(id, x.to_vec());
                        }
                        None => none[k] = true,
                    }
                }
                if writable {
                    s.put_scores(id, &complete)?;
                }
                incomplete.insert(id, none);
            }
            Ok(())
        };
        if writable { store.write_transaction(fill)? } else { fill(store)? }
    }
    let mut out = HashMap::with_capacity(evaluations.len());
    for e in evaluations {
        let none = incomplete.get(&e.id);
        let by_grader: Vec<Option<Vec<f64>>> = (0..keys.len())
            .map(|k| match none.is_some_and(|n| n[k]) {
                true => None,
                false => stored[k].get(&e.id).cloned(),
            })
            .collect();
        let n = by_grader.iter().flatten().map(Vec::len).next().unwrap_or(e.n_examples);
        out.insert(e.id, (scores::assemble(&setup.evaluation, by_grader, n), n));
    }
    Ok(out)
}

/// The examples of a loaded row: its evaluation's, read from the store, else those it was loaded
/// with (graded rows recorded before evaluations were).
pub fn examples(store: &Store, loaded: &Loaded) -> Result<Vec<EvalExample>, StoreError> {
    match loaded.evaluation_id {
        Some(id) => store.evaluation_examples(id),
        None => Ok(loaded.examples.clone()),
    }
}
