//! `ftsweep prune NAME`: drops the weights of a sweep's local runs that are no longer needed, and
//! compacts the database file. Scores, replies, metrics and checkpoints' records stay, so every
//! table (`leaderboard`, `compare`, `best`, `status`) still works; asking for a dropped model's
//! completions (`ftsweep eval --model`) fails with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::leaderboard::Board;
use super::out::{errln, outln};
use super::{Cli, ExitStatus, UsageError, open_sweep};
use crate::rank::{self, Strategy};
use crate::run::{RunRecord, RunState};
use crate::spec;
use crate::store::{Store, SweepRecord};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name (the `name` in its file).
    pub sweep: String,
    /// Keep the weights of the N best-ranked runs; the run `ftsweep best` picks, runs an alias
    /// points to, the best of other sweeps that share a run, and unfinished runs are kept too.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub keep_best: usize,
    /// Drop the weights of these runs only (a unique prefix will do), even if `best` picks one
    /// or an alias points to it.
    #[arg(long, value_name = "RUN", num_args = 1.., conflicts_with = "keep_best")]
    pub runs: Vec<String>,
    /// Drop without asking.
    #[arg(long)]
    pub yes: bool,
}

/// What `ftsweep eval` and completions say of a model whose weights prune dropped.
fn dropped_reason(sweep: &str) -> String {
    format!(
        "its weights were dropped by `ftsweep prune {sweep}`; its scores and replies are still in the database (see \
         `ftsweep leaderboard {sweep}`)"
    )
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = open_sweep(&cli.db, &args.sweep)?;
    let board = Board::load(&store, &sweep, None)?;
    let runs = store.lock().sweep_runs(sweep.id)?;
    // The runs whose weights stay, with why.
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    for r in &runs {
        if !matches!(r.state, RunState::Done | RunState::Failed | RunState::Cancelled) {
            keep(&mut kept, &r.run_id, format!("not finished ({})", r.state.as_str()));
            // A run still to train or evaluate may need the model it comes from.
            if let Some(source) = r.origin.source() {
                keep(&mut kept, source, format!("unfinished run {} needs it", r.run_id));
            }
        }
    }
    // Successive halving continues the models of its last rung in the next one, once planned.
    if let Some(last) = next_rung_sources(&store.lock(), &sweep, &runs)? {
        for id in last {
            keep(&mut kept, &id, "successive halving may continue it in its next rung".into());
        }
    }
    let named = resolve(&runs, &args.runs, &sweep.name)?;
    if let Some(n) = named.iter().find(|id| kept.contains_key(*id)) {
        return Err(UsageError {
            message: format!("run {n} of sweep `{}` is not done: {}", sweep.name, kept[n]),
            hint: format!("let `ftsweep run` or `ftsweep resume {}` finish it first", sweep.name),
        }
        .into());
    }
    // Protected unless named: the best runs, `best`'s pick, aliases' runs.
    let mut protected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, why) in best_runs(&board, if named.is_empty() { args.keep_best } else { 0 }) {
        protected.entry(id).or_default().push(why);
    }
    for a in store.lock().aliases()? {
        if let Some(id) = a.run_id.filter(|id| runs.iter().any(|r| r.run_id == *id)) {
            protected.entry(id).or_default().push(format!("alias `{}` points to it", a.name));
        }
    }
    if named.is_empty() {
        // A run shared with another sweep stays while that sweep's `best` picks it.
        let mut others: BTreeSet<String> = BTreeSet::new();
        for r in &runs {
            others.extend(store.lock().sweeps_of_run(&r.run_id)?.into_iter().filter(|s| *s != sweep.name));
        }
        for other in others {
            if let Some(record) = store.lock().sweep(&other)? {
                for (id, _) in best_runs(&Board::load(&store, &record, None)?, 0) {
                    protected.entry(id).or_default().push(format!("the best of sweep `{other}`"));
                }
            }
        }
        for (id, why) in protected {
            keep(&mut kept, &id, why.join("; "));
        }
    } else {
        for id in &named {
            if let Some(why) = protected.get(id) {
                errln!("note: {id}: {}; its weights are dropped as asked", why.join("; "))?;
            }
        }
        for r in runs.iter().filter(|r| !named.contains(&r.run_id)) {
            keep(&mut kept, &r.run_id, "not named".into());
        }
    }
    let dropping: Vec<&RunRecord> = runs.iter().filter(|r| !kept.contains_key(&r.run_id)).collect();
    let plan = {
        let s = store.lock();
        plan_drop(&s, &runs, &dropping)?
    };
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    for (id, why) in kept.iter().filter(|(_, why)| *why != "not named") {
        outln!("keeping {id}: {why}")?;
    }
    if plan.models.is_empty() {
        outln!("nothing to drop: no run of sweep `{}` left weights in `{}` to drop", sweep.name, cli.db.display())?;
        return Ok(ExitStatus::Success);
    }
    let question = format!(
        "dropping the weights of {} run{} of sweep `{}` ({} models, {})",
        plan.runs,
        if plan.runs == 1 { "" } else { "s" },
        sweep.name,
        plan.models.len(),
        mb(plan.bytes)
    );
    outln!("{question}")?;
    confirm(args.yes, &question)?;
    let before = file_size(&cli.db);
    let freed = store.lock().drop_weights(&plan.models, &dropped_reason(&sweep.name))?;
    let started = Instant::now();
    store.lock().vacuum()?;
    outln!(
        "dropped {} of weights; `{}` went from {} to {} (VACUUM {:.1}s); scores, replies and metrics are kept",
        mb(freed),
        cli.db.display(),
        mb(before),
        mb(file_size(&cli.db)),
        started.elapsed().as_secs_f64()
    )?;
    Ok(ExitStatus::Success)
}

/// For a successive-halving sweep whose last rung so far is below `max_epochs`, that rung's runs
/// (the next rung, not planned yet, continues some of their models); `None` otherwise.
fn next_rung_sources(store: &Store, sweep: &SweepRecord, runs: &[RunRecord]) -> Result<Option<Vec<String>>> {
    let Some(last) = runs.iter().filter_map(|r| r.rung).max() else { return Ok(None) };
    let text = store.sweep_text(sweep.id)?;
    let max_epochs = match spec::parse(Path::new(&sweep.spec_path), &text) {
        Ok(s) => match s.search.halving() {
            Some(h) => Some(h.max_epochs),
            None => return Ok(None),
        },
        // The recorded file no longer parses: keep the rung, to be safe.
        Err(_) => None,
    };
    let rung: Vec<&RunRecord> = runs.iter().filter(|r| r.rung == Some(last)).collect();
    let more = rung.iter().any(|r| max_epochs.is_none_or(|m| r.config.n_epochs.is_some_and(|n| n < m)));
    Ok(more.then(|| rung.iter().map(|r| r.run_id.clone()).collect()))
}

/// Keeps a run's weights, for the first reason given.
fn keep(kept: &mut BTreeMap<String, String>, id: &str, why: String) {
    kept.entry(id.to_string()).or_insert(why);
}

/// The ids of the runs `texts` name (unique prefixes) among the sweep's runs.
fn resolve(runs: &[RunRecord], texts: &[String], sweep: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for text in texts {
        let matches: Vec<&RunRecord> = runs.iter().filter(|r| r.run_id.starts_with(text.trim())).collect();
        match matches.as_slice() {
            [one] => out.push(one.run_id.clone()),
            [] => {
                return Err(UsageError {
                    message: format!("sweep `{sweep}` has no run `{text}`"),
                    hint: format!("give run ids from `ftsweep leaderboard {sweep}` (a unique prefix will do)"),
                }
                .into());
            }
            many => {
                return Err(UsageError {
                    message: format!("`{text}` names {} runs of sweep `{sweep}`", many.len()),
                    hint: "give more of the run id".into(),
                }
                .into());
            }
        }
    }
    Ok(out)
}

/// The runs of the `n` best rows (a checkpoint row counts as its run), and the runs `ftsweep
/// best` picks (by default, and with `--strict`).
fn best_runs(board: &Board, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut ranked: Vec<(usize, String)> = (board.standings.iter())
        .filter_map(|s| Some((s.rank?, board.candidates[s.index].run.as_ref()?.run_id.clone())))
        .collect();
    ranked.sort();
    let mut top: Vec<String> = Vec::new();
    for (rank, id) in ranked {
        if top.len() < n && !top.contains(&id) {
            out.push((id.clone(), format!("rank {rank}, among the {n} best (--keep-best)")));
            top.push(id);
        }
    }
    let rows = board.rows();
    let mut picks: Vec<String> = Vec::new();
    for strategy in [Strategy::Cheapest, Strategy::Strict] {
        let Some(pick) = rank::pick(&board.candidates, &board.standings, strategy) else { continue };
        let by_seeds = (strategy == Strategy::Cheapest).then(|| super::best::seed_pick(&rows)).flatten();
        if let Some(id) = rows[by_seeds.unwrap_or(pick.chosen)].run_id.clone().filter(|id| !picks.contains(id)) {
            let how = if strategy == Strategy::Strict { "`ftsweep best --strict`" } else { "`ftsweep best`" };
            out.push((id.clone(), format!("{how} picks it")));
            picks.push(id);
        }
    }
    out
}

/// What prune drops: the weights of the dropped runs' jobs, except those a kept run needs.
struct Plan {
    models: Vec<String>,
    bytes: u64,
    runs: usize,
}

fn plan_drop(store: &Store, runs: &[RunRecord], dropping: &[&RunRecord]) -> Result<Plan> {
    let jobs = |rs: &mut dyn Iterator<Item = &RunRecord>| -> Vec<String> {
        let set: BTreeSet<String> = rs.filter_map(|r| r.job_id.clone()).collect();
        set.into_iter().collect()
    };
    let dropped: BTreeSet<&str> = dropping.iter().map(|r| r.run_id.as_str()).collect();
    let kept: Vec<&RunRecord> = runs.iter().filter(|r| !dropped.contains(r.run_id.as_str())).collect();
    let candidates = store.job_weights(&jobs(&mut dropping.iter().copied()))?;
    // A kept run keeps every row of its job, its model, and what that model refers to.
    let mut needed: BTreeSet<String> =
        store.job_weights(&jobs(&mut kept.iter().copied()))?.into_iter().map(|w| w.model).collect();
    let same_as: BTreeMap<&str, &str> =
        candidates.iter().filter_map(|w| Some((w.model.as_str(), w.same_as.as_deref()?))).collect();
    for r in &kept {
        let mut model = r.model.as_deref();
        // A reference names a model with weights of its own: a few steps at most.
        for _ in 0..4 {
            let Some(m) = model else { break };
            needed.insert(m.to_string());
            model = same_as.get(m).copied();
        }
    }
    let drop: Vec<_> = candidates.iter().filter(|w| w.dropped.is_none() && !needed.contains(&w.model)).collect();
    let with_weights: BTreeSet<&str> = drop.iter().map(|w| w.job_id.as_str()).collect();
    Ok(Plan {
        models: drop.iter().map(|w| w.model.clone()).collect(),
        bytes: drop.iter().map(|w| w.bytes).sum(),
        runs: dropping.iter().filter(|r| r.job_id.as_deref().is_some_and(|j| with_weights.contains(j))).count(),
    })
}

/// Asks before dropping; without a terminal, refuses unless `--yes`.
fn confirm(yes: bool, question: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    super::confirm_on_terminal(
        "Drop them? Their scores and replies stay; the weights cannot be recovered.",
        UsageError {
            message: format!("refusing to drop weights without confirmation: {question}"),
            hint: "pass --yes to drop them".into(),
        },
        "not confirmed: nothing was dropped",
    )
}

/// The database's size on disk, with its WAL.
fn file_size(db: &Path) -> u64 {
    let wal = db.with_file_name(format!("{}-wal", db.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    [db.to_path_buf(), wal].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}
