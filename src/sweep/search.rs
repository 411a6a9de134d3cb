//! The sweep's next steps once its planned runs have ended: the next rung of
//! successive halving (the best 1/eta of the rung continue from their own
//! models) and, after the search, the leaders' seed replicates. Each is
//! planned from the recorded scores, so a restarted sweep plans the same runs;
//! the runs are added to the sweep in one transaction before any is launched.

use std::collections::{HashMap, HashSet};

use super::{Progress, SweepContext};
use crate::plan;
use crate::run::{PlannedRun, RunRecord, RunState, SweepRole};
use crate::spec::Search;
use crate::store::StoreError;

fn ended(r: &RunRecord) -> bool {
    matches!(r.state, RunState::Done | RunState::Failed | RunState::Cancelled)
}

fn score(r: &RunRecord) -> Option<f64> {
    r.score.filter(|_| r.state == RunState::Done)
}

/// Plans and adds what comes next; `false` when there is nothing (the
/// search is over, or a run it needs has not ended, e.g. skipped by the budget).
pub(super) fn advance(cx: &SweepContext, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<bool, StoreError> {
    let sweep_id = cx.options.sweep_id;
    let runs = cx.store.lock().sweep_runs(sweep_id)?;
    let search: Vec<&RunRecord> = runs.iter().filter(|r| r.role == SweepRole::Search).collect();
    if !search.iter().all(|r| ended(r)) {
        return Ok(false);
    }
    if let Search::SuccessiveHalving(h) = &cx.spec.search
        && let Some(rung) = search.iter().filter_map(|r| r.rung).max()
    {
        let members: Vec<&&RunRecord> = search.iter().filter(|r| r.rung == Some(rung)).collect();
        let results: Vec<(PlannedRun, Option<f64>, Option<f64>)> =
            members.iter().map(|r| (r.planned(), score(r), r.valid_loss)).collect();
        let next = plan::promote(&cx.spec, &cx.identity, h, rung, &results);
        if !next.is_empty() {
            let next = {
                let mut store = cx.store.lock();
                let next = adopt(&store, cx, next)?;
                store.add_runs(sweep_id, &next, SweepRole::Search)?;
                next
            };
            let epochs = next[0].config.n_epochs.unwrap_or(0);
            let note =
                format!("rung {}: the best {} of {} continue to {epochs} epochs", rung + 1, next.len(), members.len());
            progress(Progress::Planned { run_ids: next.iter().map(|r| r.run_id.clone()).collect(), note });
            return Ok(true);
        }
    }
    let Some(replicates) = &cx.spec.replicates else { return Ok(false) };
    let results: Vec<(PlannedRun, Option<f64>)> = search.iter().map(|r| (r.planned(), score(r))).collect();
    let by_id: HashMap<&str, &RunRecord> = runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
    let active: HashSet<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    let mut new: Vec<PlannedRun> = Vec::new();
    let mut planned: HashSet<String> = HashSet::new();
    let leaders = plan::leaders(&results, replicates.top as usize);
    for leader in &leaders {
        let chain = chain_of(leader, &by_id);
        for &seed in &replicates.seeds {
            let copy = plan::replicate(&cx.spec, &cx.identity, &chain, seed);
            for r in adopt(&cx.store.lock(), cx, copy)? {
                if !active.contains(r.run_id.as_str()) && planned.insert(r.run_id.clone()) {
                    new.push(r);
                }
            }
        }
    }
    if new.is_empty() {
        return Ok(false);
    }
    cx.store.lock().add_runs(sweep_id, &new, SweepRole::Replicate)?;
    let note = format!(
        "replicates: the top {} configuration(s) again with seeds {:?} ({} runs)",
        leaders.len(),
        replicates.seeds,
        new.len()
    );
    progress(Progress::Planned { run_ids: new.iter().map(|r| r.run_id.clone()).collect(), note });
    Ok(true)
}

/// A run and the runs its model comes from, root job first.
fn chain_of(run: &PlannedRun, by_id: &HashMap<&str, &RunRecord>) -> Vec<PlannedRun> {
    let mut chain = vec![run.clone()];
    while let Some(source) = chain.last().and_then(|r| r.origin.source().map(str::to_string)) {
        match by_id.get(source.as_str()) {
            Some(r) if chain.len() < 64 => chain.push(r.planned()),
            _ => break,
        }
    }
    chain.reverse();
    chain
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
