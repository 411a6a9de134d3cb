//! Adding the runs planned as the sweep goes: the next rung of successive
//! halving once its runs have ended (the best 1/eta of the rung continue
//! from their own models); as slots free, Bayesian proposals and
//! asynchronous halving's promotions and new configurations; after the
//! search, the leaders' seed replicates.
//! `decide::next_stage` plans them from the recorded scores, so a restarted
//! sweep plans the same runs; here they take the ids the store already knows
//! and are added to the sweep in one transaction before any is launched.

use super::decide::{self, Stage};
use super::{Progress, SweepContext};
use crate::plan;
use crate::run::{PlannedRun, SweepRole};
use crate::store::StoreError;

/// Plans and adds what comes next; `false` when there is nothing (the
/// search is over, or a run it needs has not ended, e.g. skipped by the budget).
pub(super) fn advance(cx: &SweepContext, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<bool, StoreError> {
    let sweep_id = cx.options.sweep_id;
    let runs = cx.store.lock().sweep_runs(sweep_id)?;
    match decide::next_stage(&runs, &cx.spec, &cx.identity) {
        Stage::Unfinished | Stage::Over => Ok(false),
        Stage::Proposed { next } => add_proposed(cx, next, progress),
        Stage::Rung { rung, members, next } => {
            let next = {
                let mut store = cx.store.lock();
                let next = adopt(&store, cx, next)?;
                store.add_runs(sweep_id, &next, SweepRole::Search)?;
                next
            };
            let epochs = next[0].config.n_epochs.unwrap_or(0);
            let note = format!("rung {}: the best {} of {members} continue to {epochs} epochs", rung + 1, next.len());
            progress(Progress::Planned { run_ids: next.iter().map(|r| r.run_id.clone()).collect(), note });
            Ok(true)
        }
        Stage::Replicates { leaders, seeds, chains } => {
            let mut adopted = Vec::with_capacity(chains.len());
            for chain in chains {
                adopted.push(adopt(&cx.store.lock(), cx, chain)?);
            }
            let new = decide::new_replicates(adopted, &runs);
            if new.is_empty() {
                return Ok(false);
            }
            cx.store.lock().add_runs(sweep_id, &new, SweepRole::Replicate)?;
            let note = format!(
                "replicates: the top {leaders} configuration(s) again with seeds {seeds:?} ({} runs)",
                new.len()
            );
            progress(Progress::Planned { run_ids: new.iter().map(|r| r.run_id.clone()).collect(), note });
            Ok(true)
        }
    }
}

/// Adds the runs a Bayesian or asynchronous-halving search decides now
/// (see [`decide::proposals`]), in one transaction before any is launched;
/// `false` when there are none. `Pass::drive` asks after each scan, so that
/// a slot that frees is filled without waiting for the pass to end.
pub(super) fn propose(cx: &SweepContext, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<bool, StoreError> {
    if !matches!(cx.spec.search, crate::spec::Search::Bayes { .. } | crate::spec::Search::Asha { .. }) {
        return Ok(false);
    }
    let runs = cx.store.lock().sweep_runs(cx.options.sweep_id)?;
    let next = decide::proposals(&runs, &cx.spec, &cx.identity);
    if next.is_empty() {
        return Ok(false);
    }
    add_proposed(cx, next, progress)
}

fn add_proposed(
    cx: &SweepContext,
    next: Vec<PlannedRun>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<bool, StoreError> {
    let next = {
        let mut store = cx.store.lock();
        let next = adopt(&store, cx, next)?;
        store.add_runs(cx.options.sweep_id, &next, SweepRole::Search)?;
        next
    };
    let promoted = next.iter().filter(|r| r.origin.source().is_some()).count();
    let note = match (&cx.spec.search, promoted) {
        (crate::spec::Search::Bayes { .. }, _) => {
            format!("proposed {} configuration(s) from the results so far", next.len())
        }
        (_, 0) => format!("{} new configuration(s) at rung 0", next.len()),
        (_, p) => format!("{p} promotion(s), {} new configuration(s) at rung 0", next.len() - p),
    };
    progress(Progress::Planned { run_ids: next.iter().map(|r| r.run_id.clone()).collect(), note });
    Ok(true)
}

/// The planned runs under the ids the database knows them by: a run
/// recorded by ftsweep 0.1 under its 40-bit id keeps that id (see
/// [`plan::adopt_stored`]). Record the runs this returns.
pub fn adopt_stored(
    store: &crate::store::Store,
    sweep: &crate::spec::Sweep,
    data: &plan::DataIdentity,
    runs: Vec<PlannedRun>,
) -> Result<Vec<PlannedRun>, StoreError> {
    if !store.has_legacy_ids()? {
        return Ok(runs);
    }
    plan::adopt_stored(sweep, data, runs, |id| store.run_definition(id))
}

fn adopt(store: &crate::store::Store, cx: &SweepContext, runs: Vec<PlannedRun>) -> Result<Vec<PlannedRun>, StoreError> {
    adopt_stored(store, &cx.spec, &cx.identity, runs)
}

/// `planned` (the sweep's runs planned up front) and, for a Bayesian or
/// asynchronous-halving search whose recorded file is `text` unchanged, the
/// runs it decided as it went, in their order: a restart goes on from the
/// recorded rows instead of deciding again (ASHA's decisions depend on the
/// order runs ended in). An edited file starts from `planned` alone.
pub fn with_decided(
    store: &crate::store::Store,
    sweep: &crate::spec::Sweep,
    text: &str,
    mut planned: Vec<PlannedRun>,
) -> Result<Vec<PlannedRun>, StoreError> {
    if !matches!(sweep.search, crate::spec::Search::Bayes { .. } | crate::spec::Search::Asha { .. }) {
        return Ok(planned);
    }
    let Some(recorded) = store.sweep(&sweep.name)? else { return Ok(planned) };
    if store.sweep_text(recorded.id)? != text {
        return Ok(planned);
    }
    let known: std::collections::HashSet<String> = planned.iter().map(|r| r.run_id.clone()).collect();
    let decided = store.sweep_runs(recorded.id)?.into_iter().filter(|r| r.role == SweepRole::Search);
    planned.extend(decided.filter(|r| !known.contains(&r.run_id)).map(|r| r.planned()));
    Ok(planned)
}
