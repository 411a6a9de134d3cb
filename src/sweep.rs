//! The scheduler: runs a sweep's runs concurrently up to `max_concurrent`,
//! each a state machine persisted in the store (planned → training → trained
//! → evaluating → done, or failed with the reason). A failed run is a row,
//! never an abort of the sweep.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::data::ChatFile;
use crate::eval;
use crate::plan::RunConfig;
use crate::provider::{JobEvent, JobOutcome, JobRequest, Provider};
use crate::spec::Metric;
use crate::store::{CheckpointRow, MetricRow, RunRecord, RunState, SharedStore, StoreError, TrainingResult};

/// Everything a sweep's runs share.
pub struct SweepContext {
    pub store: SharedStore,
    pub provider: Arc<Provider>,
    pub base_model: String,
    pub training: Arc<ChatFile>,
    pub validation: Arc<ChatFile>,
    pub metric: Metric,
    pub max_concurrent: u32,
}

/// What the scheduler reports as it goes; the CLI renders it on stderr.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Before any work: how many runs need what.
    Started {
        total: usize,
        to_train: usize,
        to_evaluate: usize,
        done: usize,
    },
    Training {
        run_id: String,
        config: RunConfig,
        job_id: String,
    },
    Epoch {
        run_id: String,
        epoch: u32,
        n_epochs: Option<u32>,
        valid_loss: Option<f64>,
    },
    Evaluating {
        run_id: String,
        model: String,
    },
    Done {
        run_id: String,
        score: f64,
        valid_loss: Option<f64>,
        seconds: f64,
    },
    Failed {
        run_id: String,
        reason: String,
    },
}

/// How a sweep went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub reused: usize,
    pub trained: usize,
    pub evaluated: usize,
    pub failed: usize,
}

/// What a run still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Nothing,
    Evaluate,
    TrainAndEvaluate,
}

fn work_for(run: &RunRecord) -> Work {
    match run.state {
        RunState::Done => Work::Nothing,
        RunState::Trained | RunState::Evaluating if run.model.is_some() => Work::Evaluate,
        // A run left `training` by a process that died has no live local
        // job behind it: it trains again. Failed runs are retried.
        _ => Work::TrainAndEvaluate,
    }
}

/// Runs every run that is not done; returns when all have ended.
pub async fn run(
    cx: Arc<SweepContext>,
    runs: Vec<RunRecord>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    let work: Vec<(RunRecord, Work)> = runs.into_iter().map(|r| (r.clone(), work_for(&r))).collect();
    let to_train = work.iter().filter(|(_, w)| *w == Work::TrainAndEvaluate).count();
    let to_evaluate = work.iter().filter(|(_, w)| *w == Work::Evaluate).count();
    summary.reused = work.len() - to_train - to_evaluate;
    progress(Progress::Started { total: work.len(), to_train, to_evaluate, done: summary.reused });

    let training_file = match cx.provider.upload(&cx.training).await {
        Ok(id) => id,
        Err(e) => return fail_all(&cx, work, &format!("uploading the training file failed: {e}"), &progress, summary),
    };
    let validation_file = match cx.provider.upload(&cx.validation).await {
        Ok(id) => id,
        Err(e) => {
            return fail_all(&cx, work, &format!("uploading the validation file failed: {e}"), &progress, summary);
        }
    };
    let files = Arc::new((training_file, validation_file));

    let permits = Arc::new(Semaphore::new(cx.max_concurrent.max(1) as usize));
    let mut tasks = JoinSet::new();
    for (run, w) in work {
        if w == Work::Nothing {
            continue;
        }
        let cx = cx.clone();
        let permits = permits.clone();
        let files = files.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
            let outcome = run_one(&cx, &run, w, &files, progress.as_ref()).await;
            (run.run_id, w, outcome)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (run_id, w, outcome) = match joined {
            Ok(x) => x,
            Err(e) => {
                // A panic in a run task: the run stays as recorded and is retried next time.
                summary.failed += 1;
                progress(Progress::Failed { run_id: "?".into(), reason: format!("internal error: {e}") });
                continue;
            }
        };
        match outcome {
            Ok(true) => {
                if w == Work::TrainAndEvaluate {
                    summary.trained += 1;
                }
                summary.evaluated += 1;
            }
            Ok(false) => summary.failed += 1,
            Err(e) => {
                summary.failed += 1;
                progress(Progress::Failed { run_id, reason: e.to_string() });
            }
        }
    }
    Ok(summary)
}

fn fail_all(
    cx: &SweepContext,
    work: Vec<(RunRecord, Work)>,
    reason: &str,
    progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    mut summary: Summary,
) -> Result<Summary, StoreError> {
    for (run, w) in work {
        if w != Work::Nothing {
            cx.store.lock().fail_run(&run.run_id, reason)?;
            progress(Progress::Failed { run_id: run.run_id, reason: reason.to_string() });
            summary.failed += 1;
        }
    }
    Ok(summary)
}

/// Trains (if needed) and evaluates one run. `Ok(false)` is a failed run,
/// recorded as such; `Err` is a store failure.
async fn run_one(
    cx: &SweepContext,
    run: &RunRecord,
    work: Work,
    files: &(String, String),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<bool, StoreError> {
    let model = match (work, &run.model) {
        (Work::Evaluate, Some(model)) => model.clone(),
        _ => match train(cx, run, files, progress).await? {
            Some(model) => model,
            None => return Ok(false),
        },
    };
    evaluate(cx, run, &model, progress).await
}

async fn train(
    cx: &SweepContext,
    run: &RunRecord,
    (training_file, validation_file): &(String, String),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Option<String>, StoreError> {
    let started = Instant::now();
    let request = JobRequest {
        base_model: cx.base_model.clone(),
        training_file: training_file.clone(),
        validation_file: validation_file.clone(),
        hyperparameters: run.config,
        suffix: run.run_id.clone(),
    };
    let job_id = match cx.provider.create_job(&request).await {
        Ok(id) => id,
        Err(e) => {
            let reason = format!("creating the job failed: {e}");
            cx.store.lock().fail_run(&run.run_id, &reason)?;
            progress(Progress::Failed { run_id: run.run_id.clone(), reason });
            return Ok(None);
        }
    };
    let attempt = cx.store.lock().start_training(&run.run_id, &job_id)?;
    progress(Progress::Training { run_id: run.run_id.clone(), config: run.config, job_id: job_id.clone() });

    let mut pending: Vec<MetricRow> = Vec::new();
    let mut last_checkpoint: Option<CheckpointRow> = None;
    let mut last_train_accuracy = None;
    let mut store_error: Option<StoreError> = None;
    let mut on_event = |event: JobEvent| match event {
        JobEvent::Step { step, epoch, train_loss, train_accuracy, .. } => pending.push(MetricRow {
            step,
            epoch,
            epoch_end: false,
            train_loss: Some(train_loss),
            train_accuracy: Some(train_accuracy),
            valid_loss: None,
            valid_accuracy: None,
        }),
        JobEvent::Checkpoint { epoch, step, model, train_loss, train_accuracy, valid_loss, valid_accuracy } => {
            pending.push(MetricRow {
                step,
                epoch,
                epoch_end: true,
                train_loss: Some(train_loss),
                train_accuracy: Some(train_accuracy),
                valid_loss,
                valid_accuracy,
            });
            let checkpoint =
                CheckpointRow { epoch, step, model, train_loss: Some(train_loss), valid_loss, valid_accuracy };
            if let Err(e) = cx.store.lock().record_progress(&run.run_id, attempt, &pending, Some(&checkpoint)) {
                store_error.get_or_insert(e);
            }
            pending.clear();
            last_train_accuracy = Some(train_accuracy);
            last_checkpoint = Some(checkpoint);
            progress(Progress::Epoch { run_id: run.run_id.clone(), epoch, n_epochs: run.config.n_epochs, valid_loss });
        }
    };
    let outcome = cx.provider.follow_job(&job_id, &mut on_event).await;
    if !pending.is_empty() {
        cx.store.lock().record_progress(&run.run_id, attempt, &pending, None)?;
    }
    if let Some(e) = store_error {
        return Err(e);
    }
    let reason = match outcome {
        Ok(JobOutcome::Succeeded { model, trained_tokens }) => {
            let last = last_checkpoint.as_ref();
            cx.store.lock().finish_training(
                &run.run_id,
                &TrainingResult {
                    model: model.clone(),
                    trained_tokens: trained_tokens as i64,
                    train_loss: last.and_then(|c| c.train_loss),
                    train_accuracy: last_train_accuracy,
                    valid_loss: last.and_then(|c| c.valid_loss),
                    valid_accuracy: last.and_then(|c| c.valid_accuracy),
                    seconds: started.elapsed().as_secs_f64(),
                },
            )?;
            return Ok(Some(model));
        }
        Ok(JobOutcome::Failed { code, message }) => format!("the job failed ({code}): {message}"),
        Ok(JobOutcome::Cancelled { .. }) => "the job was cancelled".to_string(),
        Err(e) => format!("following the job failed: {e}"),
    };
    cx.store.lock().fail_run(&run.run_id, &reason)?;
    progress(Progress::Failed { run_id: run.run_id.clone(), reason });
    Ok(None)
}

async fn evaluate(
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
