//! Adding the runs planned as the sweep goes, once its runs have ended: the
//! next rung of successive halving (the best 1/eta of the rung continue from
//! their own models) and, after the search, the leaders' seed replicates.
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
