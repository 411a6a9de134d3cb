//! The executor of one pass over a sweep's runs: it uploads the data files,
//! keeps the leases alive, and carries out `decide`'s actions with the store
//! and tokio (claims, each granted run's task on a `JoinSet`, failures, waits),
//! telling the decisions' [`State`] how each went.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::decide::{self, Action, Limits, Scan, State, Then, Work};
use super::task::{self, RunEnd};
use super::{Progress, Summary, SweepContext, evaluate, owner_alive};
use crate::run::RunRecord;
use crate::store::{Claim, StoreError};

/// How often a pass looks at the runs again while nothing ends.
const RESCAN: Duration = Duration::from_millis(500);

/// Runs every run that is not done, claiming each first; returns when every
/// run has ended here or is owned by no live process, or on shutdown. The
/// runs `state` says this process has dealt with (across the passes of
/// `run_sweep`) are not tried again.
pub(super) async fn run(
    cx: Arc<SweepContext>,
    runs: Vec<RunRecord>,
    state: &mut State,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    let limits = Limits { max_concurrent: cx.max_concurrent, jobs_outlive_process: cx.provider.jobs_outlive_process() };
    state.begin_pass();
    // Early stopping reads a running job's validations as they come.
    cx.provider.set_live_events(cx.spec.early_stopping.is_some());
    let survey = decide::survey(&runs, state, limits.jobs_outlive_process);
    summary.reused = survey.reused.len();
    state.reused(survey.reused.iter().cloned());
    let (total, to_train, to_evaluate) = (runs.len(), survey.to_train, survey.to_evaluate);
    progress(Progress::Started { total, to_train, to_evaluate, done: total - to_train - to_evaluate });
    // The baseline, and grading of finished runs by graders added since, go alongside the runs.
    let references = tokio::spawn(evaluate::evaluate_references(&cx, &runs, &progress));
    if to_train + to_evaluate == 0 {
        return evaluate::join_references(references, progress.as_ref()).await.map(|()| summary);
    }
    let files =
        if to_train > 0 { upload(&cx, &runs, &survey.work, &mut summary, progress.as_ref()).await? } else { None };
    let heartbeat = heartbeat(&cx);
    if files.is_none() {
        // Without uploads only evaluations can proceed.
        let trains = runs.iter().zip(&survey.work).filter(|(_, w)| w.trains());
        state.give_up(trains.map(|(r, _)| r.run_id.as_str()));
    }
    let (trained_tx, trained) = tokio::sync::mpsc::unbounded_channel();
    let mut pass = Pass {
        cx,
        files,
        progress,
        limits,
        summary,
        tasks: JoinSet::new(),
        task_runs: HashMap::new(),
        trained_tx,
        trained,
    };
    let result = pass.drive(state).await;
    heartbeat.abort();
    result?;
    let Pass { progress, summary, .. } = pass;
    evaluate::join_references(references, progress.as_ref()).await.map(|()| summary)
}

/// Uploads the data files; `None` when that failed: nothing was launched,
/// the runs that would launch are failed with the reason.
async fn upload(
    cx: &SweepContext,
    runs: &[RunRecord],
    work: &[Work],
    summary: &mut Summary,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Option<Arc<(String, String)>>, StoreError> {
    let training_file = cx.provider.upload(&cx.training).await;
    let validation_file = cx.provider.upload(&cx.validation).await;
    match (training_file, validation_file) {
        (Ok(t), Ok(v)) => Ok(Some(Arc::new((t, v)))),
        (Err(e), _) | (_, Err(e)) => {
            // Nothing was launched: the runs stay as they are, and the
            // sweep reports the reason.
            let reason = format!("uploading the data failed: {e}");
            for (run, _) in runs.iter().zip(work).filter(|(_, w)| w.launches()) {
                cx.store.lock().fail_run(&run.run_id, &reason)?;
                progress(Progress::Failed { run_id: run.run_id.clone(), reason: reason.clone() });
                summary.failed += 1;
            }
            Ok(None)
        }
    }
}

/// Renews this process's leases every third of their length.
fn heartbeat(cx: &SweepContext) -> tokio::task::JoinHandle<()> {
    let (store, owner, lease) = (cx.store.clone(), cx.options.owner.clone(), cx.options.lease);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            let _ = store.lock().renew_leases(&owner, lease.as_secs_f64());
        }
    })
}

/// A pass under way: its runs' tasks and what they ended with.
struct Pass {
    cx: Arc<SweepContext>,
    files: Option<Arc<(String, String)>>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
    limits: Limits,
    summary: Summary,
    tasks: JoinSet<(String, RunEnd)>,
    /// Each task's run, to record the run failed if its task panics.
    task_runs: HashMap<tokio::task::Id, String>,
    /// A task says here that its run is done training (it evaluates now):
    /// its slot is free for the next launch.
    trained_tx: tokio::sync::mpsc::UnboundedSender<String>,
    trained: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Pass {
    /// Scans the runs and acts until the pass is over.
    async fn drive(&mut self, state: &mut State) -> Result<(), StoreError> {
        loop {
            let stopping = *self.cx.options.shutdown.borrow();
            let current = self.cx.store.lock().sweep_runs(self.cx.options.sweep_id)?;
            let tokens = |r: &RunRecord| self.cx.options.estimate(r).0;
            let mut scan = Scan::new(&current, state, stopping, &tokens);
            while let Some(action) = scan.next(state, &self.limits) {
                match action {
                    Action::Claim { run, work } => self.claim(run, work, state)?,
                    Action::Fail { run, reason } => self.fail(run, reason, state)?,
                }
            }
            // Bayesian and asynchronous-halving searches decide as slots free (the `search` helper's hook).
            if !stopping && super::search::propose(&self.cx, self.progress.as_ref())? {
                continue;
            }
            match scan.then(state) {
                Then::EndPass => return Ok(()),
                Then::Rescan => {}
                Then::WaitForOthers { runs, owner, announce } => {
                    if announce {
                        (self.progress)(Progress::Waiting { runs, owner });
                        state.announced_wait();
                    }
                    tokio::time::sleep(RESCAN).await;
                }
                Then::AwaitTask => self.await_task(state).await?,
            }
        }
    }

    /// Records a run failed: its source cannot give it a model.
    fn fail(&mut self, run: &RunRecord, reason: String, state: &mut State) -> Result<(), StoreError> {
        state.failed(&run.run_id);
        self.cx.store.lock().fail_run(&run.run_id, &reason)?;
        (self.progress)(Progress::Failed { run_id: run.run_id.clone(), reason });
        self.summary.failed += 1;
        Ok(())
    }

    /// Claims a run and, if granted, starts its task.
    fn claim(&mut self, run: &RunRecord, work: Work, state: &mut State) -> Result<(), StoreError> {
        let cx = &self.cx;
        let launch = work.launches().then(|| {
            let (tokens, usd) = cx.options.estimate(run);
            (cx.options.budget, tokens, usd, cx.options.sweep_id)
        });
        let claim = cx.store.lock().claim(
            &run.run_id,
            &cx.options.owner,
            cx.options.lease.as_secs_f64(),
            &owner_alive,
            launch,
        )?;
        match claim {
            Claim::Taken { owner } => state.taken(owner),
            Claim::OverBudget { reason } => {
                state.over_budget(&run.run_id);
                self.summary.skipped += 1;
                (self.progress)(Progress::Skipped { run_id: run.run_id.clone(), reason });
            }
            Claim::Claimed { attempt } => {
                state.claimed(&run.run_id, work);
                let mut run = run.clone();
                if let Some(a) = attempt {
                    run.attempt = a;
                }
                let (cx, files, progress) = (cx.clone(), self.files.clone(), self.progress.clone());
                let run_id = run.run_id.clone();
                let trained = self.trained_tx.clone();
                let task = self.tasks.spawn(async move {
                    injected_panic(&run.run_id);
                    let id = run.run_id.clone();
                    let trained = move || drop(trained.send(id));
                    let end = task::run_one(&cx, &run, work, files.as_deref(), progress.as_ref(), trained).await;
                    let _ = cx.store.lock().release(&run.run_id, &cx.options.owner);
                    (run.run_id.clone(), end.unwrap_or(RunEnd::Failed))
                });
                self.task_runs.insert(task.id(), run_id);
            }
        }
        Ok(())
    }

    /// Waits for a run's task to end, or a moment (the others are re-checked
    /// now and then), and counts how it ended.
    async fn await_task(&mut self, state: &mut State) -> Result<(), StoreError> {
        let joined = tokio::select! {
            joined = tokio::time::timeout(RESCAN, self.tasks.join_next()) => joined,
            Some(run_id) = self.trained.recv() => {
                // A job ended: its run evaluates, and the next job can start.
                state.training_ended(&run_id);
                return Ok(());
            }
        };
        let Ok(Some(joined)) = joined else {
            return Ok(());
        };
        let task = match &joined {
            Ok((id, _)) => Some(id.clone()),
            Err(e) => self.task_runs.remove(&e.id()),
        };
        if let Some(id) = &task {
            state.task_ended(id);
        }
        match joined {
            Ok((_, end)) => self.summary.record(end),
            Err(e) => {
                // A bug, not the sweep's end: the run is a failed row
                // with the reason, and the other runs go on.
                self.summary.failed += 1;
                let reason = format!("internal error: {}", panic_message(e));
                let run_id = task.unwrap_or_else(|| "?".into());
                if run_id != "?" {
                    self.cx.store.lock().fail_run(&run_id, &reason)?;
                    let _ = self.cx.store.lock().release(&run_id, &self.cx.options.owner);
                }
                (self.progress)(Progress::Failed { run_id, reason });
            }
        }
        Ok(())
    }
}

/// What a run's task ended with when it did not return: its panic's message.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    let text =
        payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
    format!("the run's task panicked: {}", text.unwrap_or_else(|| "(no message)".into()))
}

/// Debug builds only: `FTSWEEP_TEST_PANIC_RUN=1` makes every run's task
/// panic, so that tests can check that a panic becomes a failed row.
fn injected_panic(run_id: &str) {
    if cfg!(debug_assertions) && std::env::var_os("FTSWEEP_TEST_PANIC_RUN").is_some_and(|v| v == "1") {
        panic!("injected by FTSWEEP_TEST_PANIC_RUN in run {run_id}");
    }
}
