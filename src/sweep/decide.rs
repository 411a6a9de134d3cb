//! The scheduler's decisions, apart from their effects: from the recorded
//! runs and what this process has done with them (its [`State`]), the next
//! [`Action`] (claim a run to train, resume, evaluate or take a checkpoint;
//! fail a run whose source is broken), then what the pass does ([`Then`]:
//! wait, scan again, end), and after a pass,
//! the sweep's next [`Stage`] (the next rung, the replicates, or the end).
//! Pure: no tokio, no store, no I/O. `execute.rs` carries the actions out and
//! tells the state how each went. The budget is checked by the claim itself,
//! in the store's transaction that commits a launch's intent, so here it is
//! an answer to a claim ([`State::over_budget`]), never a guess.

use std::collections::{HashMap, HashSet};

use crate::plan::{self, DataIdentity};
use crate::run::{Origin, PlannedRun, RunRecord, RunState, SweepRole};
use crate::spec::{Search, Sweep};

/// What a run still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Work {
    Nothing,
    Evaluate,
    TrainAndEvaluate,
    /// A checkpoint of another run's job: take it once that job ended, then evaluate.
    FromCheckpoint,
    /// The run's job may exist at the provider (an earlier process created
    /// it, or was about to): adopt it, or create it if it does not exist.
    Resume,
}

impl Work {
    pub(super) fn of(run: &RunRecord, jobs_outlive_process: bool) -> Work {
        match run.state {
            RunState::Done | RunState::Cancelled => Work::Nothing,
            RunState::Trained | RunState::Evaluating if run.model.is_some() => Work::Evaluate,
            _ if matches!(run.origin, Origin::Checkpoint { .. }) => Work::FromCheckpoint,
            RunState::Launching | RunState::Training if jobs_outlive_process => Work::Resume,
            // A local job dies with its process: a run left `training` trains
            // again. Failed runs are retried.
            _ => Work::TrainAndEvaluate,
        }
    }

    /// A new training attempt: its claim begins it (`launching`, its
    /// estimate in the budget) before the job is created.
    pub(super) fn launches(self) -> bool {
        self == Work::TrainAndEvaluate
    }

    /// Needs a job, so the uploaded data files.
    pub(super) fn trains(self) -> bool {
        matches!(self, Work::TrainAndEvaluate | Work::Resume)
    }

    fn evaluates(self) -> bool {
        matches!(self, Work::Evaluate | Work::FromCheckpoint)
    }
}

/// Whether a job failure is the provider's (worth another attempt), rather
/// than the data's or the request's (or a trainer command's, which fails again).
pub(super) fn retryable_code(code: &str) -> bool {
    !(code.starts_with("invalid")
        || code.contains("file")
        || code == "model_not_available"
        || code == "bad_request"
        || code == crate::provider::command::FAILED_CODE)
}

/// What a pass has before it: each run's work, and the counts it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Survey {
    /// In the runs' order; `Nothing` for a run this process has dealt with.
    pub work: Vec<Work>,
    pub to_train: usize,
    pub to_evaluate: usize,
    /// The runs that need nothing, seen for the first time: counted as reused once.
    pub reused: Vec<String>,
}

pub(super) fn survey(runs: &[RunRecord], state: &State, jobs_outlive_process: bool) -> Survey {
    let work: Vec<Work> = runs
        .iter()
        .map(|r| if state.handled.contains(&r.run_id) { Work::Nothing } else { Work::of(r, jobs_outlive_process) })
        .collect();
    let reused = runs
        .iter()
        .zip(&work)
        .filter(|(r, w)| **w == Work::Nothing && !state.handled.contains(&r.run_id))
        .map(|(r, _)| r.run_id.clone())
        .collect();
    let to_train = work.iter().filter(|w| w.trains()).count();
    let to_evaluate = work.iter().filter(|w| w.evaluates()).count();
    Survey { work, to_train, to_evaluate, reused }
}

/// Whether a run that depends on another (a checkpoint of its job, a
/// continuation of its model) can go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dependency {
    Ready,
    Wait,
    Broken(String),
}

/// `ended` says whether this process has finished with a run (tried it,
/// and its task, if any, is over).
fn dependency(source_id: &str, source: Option<&RunRecord>, ended: bool) -> Dependency {
    let Some(source) = source else {
        return Dependency::Broken(format!("its source run {source_id} is not part of the sweep"));
    };
    let why = || {
        let reason = source.stop_reason.as_ref().or(source.error.as_ref());
        format!(
            "its source run {source_id} ended {}{}",
            source.state.as_str(),
            reason.map_or(String::new(), |r| format!(": {r}"))
        )
    };
    match source.state {
        RunState::Trained | RunState::Evaluating | RunState::Done if source.model.is_some() => Dependency::Ready,
        RunState::Cancelled => Dependency::Broken(why()),
        // This process tried the source already: it failed, or the budget skipped it.
        RunState::Failed | RunState::Planned if ended => Dependency::Broken(why()),
        _ => Dependency::Wait,
    }
}

/// What this process has done with a sweep's runs. The executor reports each
/// claim's answer and each task's end with the methods below.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The runs this process has dealt with (across the passes of
    /// `run_sweep`): tried, failed, skipped or found needing nothing. They are
    /// not tried again.
    handled: HashSet<String>,
    /// The runs whose task is running: a dependent waits for them.
    in_flight: HashSet<String>,
    /// The runs whose task is training (a job of theirs runs or is being
    /// created): only these hold a `max_concurrent` slot. A run being
    /// evaluated holds none (evaluations are bounded by their own session).
    training: HashSet<String>,
    /// In this scan: the owners of runs another live process holds.
    taken: Vec<String>,
    /// In this scan: a run was dealt with, so its dependents may go ahead.
    progressed: bool,
    /// In this pass: the wait for another process was reported.
    waiting_said: bool,
}

impl State {
    /// A new pass of the runs.
    pub(super) fn begin_pass(&mut self) {
        self.waiting_said = false;
    }

    /// The runs a pass found needing nothing.
    pub(super) fn reused(&mut self, run_ids: impl IntoIterator<Item = String>) {
        self.handled.extend(run_ids);
    }

    /// Runs given up for this process (no data files to train with).
    pub(super) fn give_up<'a>(&mut self, run_ids: impl IntoIterator<Item = &'a str>) {
        self.handled.extend(run_ids.into_iter().map(str::to_string));
    }

    /// The claim was granted and the run's task started, doing `work`.
    pub(super) fn claimed(&mut self, run_id: &str, work: Work) {
        self.handled.insert(run_id.to_string());
        self.in_flight.insert(run_id.to_string());
        if work.trains() {
            self.training.insert(run_id.to_string());
        }
        self.progressed = true;
    }

    /// The run's task is done training (its job ended; it evaluates now):
    /// its slot is free for another job.
    pub(super) fn training_ended(&mut self, run_id: &str) {
        self.training.remove(run_id);
    }

    /// Another live process owns the run.
    pub(super) fn taken(&mut self, owner: String) {
        self.taken.push(owner);
    }

    /// The claim refused the launch: it would exceed the budget.
    pub(super) fn over_budget(&mut self, run_id: &str) {
        self.dealt_with(run_id);
    }

    /// The run was recorded failed ([`Action::Fail`]).
    pub(super) fn failed(&mut self, run_id: &str) {
        self.dealt_with(run_id);
    }

    /// The run's task ended (or panicked).
    pub(super) fn task_ended(&mut self, run_id: &str) {
        self.in_flight.remove(run_id);
        self.training.remove(run_id);
    }

    /// The wait for another process was reported.
    pub(super) fn announced_wait(&mut self) {
        self.waiting_said = true;
    }

    fn dealt_with(&mut self, run_id: &str) {
        self.handled.insert(run_id.to_string());
        self.progressed = true;
    }

    /// Whether this process has finished with a run.
    fn ended(&self, run_id: &str) -> bool {
        self.handled.contains(run_id) && !self.in_flight.contains(run_id)
    }
}

/// What the scheduler is bound by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_concurrent: u32,
    /// A hosted provider: a job outlives the process that created it.
    pub jobs_outlive_process: bool,
}

/// What to do with a run, found by a [`Scan`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action<'a> {
    /// Claim the run and, if granted, start its task doing `work` (train,
    /// resume or adopt its job, take its checkpoint, evaluate). For a
    /// `work.launches()`, the claim checks the budget and commits the intent.
    Claim { run: &'a RunRecord, work: Work },
    /// Record the run failed: the run its model comes from cannot give one.
    Fail { run: &'a RunRecord, reason: String },
}

/// What a pass does once a scan has no more actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Then {
    /// Wait for a running task to end (for a moment at most), then scan again.
    AwaitTask,
    /// Only runs another live process owns are left: wait a moment and scan
    /// again; `announce` the wait the first time in a pass.
    WaitForOthers { runs: usize, owner: String, announce: bool },
    /// A run was dealt with and nothing runs: scan again at once.
    Rescan,
    /// The pass is over: every run has ended here or is owned by no live
    /// process, or the sweep is stopping.
    EndPass,
}

/// The order a scan looks at the runs in: longest first. A run's job lasts
/// in proportion to the tokens it trains (`tokens`: the epochs its own job
/// trains times the tokens of an epoch; a hosted provider's queue adds the
/// same wait to every job), so when slots are scarce the longest jobs start
/// first and the short ones fill the gaps at the end (the LPT rule). A run
/// that trains nothing (a checkpoint, an evaluation) comes last; ties keep
/// plan order, so the order is the same on every scan and after a restart.
pub fn launch_order<T>(runs: &[T], tokens: impl Fn(&T) -> Option<u64>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tokens(&runs[i]).unwrap_or(0)));
    order
}

/// The tokens a recorded run's job would train, by `tokens` (the sweep's
/// estimate); `None` when its work trains nothing.
fn trained_tokens(run: &RunRecord, tokens: &dyn Fn(&RunRecord) -> u64) -> Option<u64> {
    Work::of(run, true).trains().then(|| tokens(run))
}

/// One look at the recorded runs, longest job first ([`launch_order`]):
/// each call to [`Scan::next`] goes on from the run after the last one acted
/// on, as the state changes; [`Scan::then`] says what follows.
pub(super) struct Scan<'a> {
    runs: &'a [RunRecord],
    by_id: HashMap<&'a str, &'a RunRecord>,
    order: Vec<usize>,
    next: usize,
    stopping: bool,
}

impl<'a> Scan<'a> {
    /// `stopping`: the sweep was interrupted, nothing more starts. `tokens`:
    /// a run's estimated trained tokens, for the launch order.
    pub(super) fn new(
        runs: &'a [RunRecord],
        state: &mut State,
        stopping: bool,
        tokens: &dyn Fn(&RunRecord) -> u64,
    ) -> Scan<'a> {
        state.taken.clear();
        state.progressed = false;
        let by_id = runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
        let order = launch_order(runs, |r| trained_tokens(r, tokens));
        Scan { runs, by_id, order, next: if stopping { runs.len() } else { 0 }, stopping }
    }

    /// The next run to act on; `None` once the scan is through. A run whose
    /// work trains waits while every slot has a job training.
    pub(super) fn next(&mut self, state: &State, limits: &Limits) -> Option<Action<'a>> {
        while let Some(run) = self.order.get(self.next).map(|&i| &self.runs[i]) {
            self.next += 1;
            let work = Work::of(run, limits.jobs_outlive_process);
            if work == Work::Nothing || state.handled.contains(&run.run_id) {
                continue;
            }
            if work.trains() && state.training.len() >= limits.max_concurrent.max(1) as usize {
                continue;
            }
            if let Some(source) = run.origin.source() {
                match dependency(source, self.by_id.get(source).copied(), state.ended(source)) {
                    Dependency::Ready => {}
                    Dependency::Wait => continue,
                    Dependency::Broken(reason) => return Some(Action::Fail { run, reason }),
                }
            }
            return Some(Action::Claim { run, work });
        }
        None
    }

    pub(super) fn then(&self, state: &State) -> Then {
        if !state.in_flight.is_empty() {
            return Then::AwaitTask;
        }
        if state.progressed && !self.stopping {
            // A run ended its dependents' wait: look again at once.
            return Then::Rescan;
        }
        match state.taken.first() {
            Some(owner) if !self.stopping => {
                Then::WaitForOthers { runs: state.taken.len(), owner: owner.clone(), announce: !state.waiting_said }
            }
            _ => Then::EndPass,
        }
    }
}

/// Whether the sweep goes on after a pass: not once interrupted.
pub(super) fn goes_on(stopping: bool, interrupted: usize) -> bool {
    !stopping && interrupted == 0
}

/// What the sweep plans once a pass has ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stage {
    /// A search run has not ended (skipped by the budget, owned by another
    /// process): nothing more is planned.
    Unfinished,
    /// The next rung of successive halving: `next`, the best of `rung`'s `members` runs.
    Rung { rung: u32, members: usize, next: Vec<PlannedRun> },
    /// Runs a Bayesian or asynchronous-halving search decides as slots free:
    /// `next`, committed before any is launched.
    Proposed { next: Vec<PlannedRun> },
    /// The leaders' replicates with `seeds`: a chain (root job first) per leader and seed.
    Replicates { leaders: usize, seeds: Vec<u64>, chains: Vec<Vec<PlannedRun>> },
    /// The search is over.
    Over,
}

fn run_ended(r: &RunRecord) -> bool {
    matches!(r.state, RunState::Done | RunState::Failed | RunState::Cancelled)
}

fn score(r: &RunRecord) -> Option<f64> {
    r.score.filter(|_| r.state == RunState::Done)
}

/// The next stage, from the recorded scores: the same after a restart.
pub(super) fn next_stage(runs: &[RunRecord], spec: &Sweep, identity: &DataIdentity) -> Stage {
    let next = proposals(runs, spec, identity);
    if !next.is_empty() {
        return Stage::Proposed { next };
    }
    let search: Vec<&RunRecord> = runs.iter().filter(|r| r.role == SweepRole::Search).collect();
    if !search.iter().all(|r| run_ended(r)) {
        return Stage::Unfinished;
    }
    if let Search::SuccessiveHalving(h) = &spec.search
        && let Some(rung) = search.iter().filter_map(|r| r.rung).max()
    {
        let members: Vec<&&RunRecord> = search.iter().filter(|r| r.rung == Some(rung)).collect();
        let results: Vec<(PlannedRun, Option<f64>, Option<f64>)> =
            members.iter().map(|r| (r.planned(), score(r), r.valid_loss)).collect();
        let next = plan::promote(spec, identity, h, rung, &results);
        if !next.is_empty() {
            return Stage::Rung { rung, members: members.len(), next };
        }
    }
    let Some(replicates) = &spec.replicates else { return Stage::Over };
    let results: Vec<(PlannedRun, Option<f64>)> = search.iter().map(|r| (r.planned(), score(r))).collect();
    let by_id: HashMap<&str, &RunRecord> = runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
    let leaders = plan::leaders(&results, replicates.top as usize);
    let chains = leaders
        .iter()
        .flat_map(|leader| {
            let chain = chain_of(leader, &by_id);
            replicates.seeds.iter().map(move |&seed| plan::replicate(spec, identity, &chain, seed))
        })
        .collect();
    Stage::Replicates { leaders: leaders.len(), seeds: replicates.seeds.clone(), chains }
}

/// What became of a search run that has ended, for the Bayesian model.
fn outcome(r: &RunRecord) -> Option<crate::bayes::Outcome> {
    use crate::bayes::Outcome;
    run_ended(r).then(|| score(r).filter(|s| s.is_finite()).map_or(Outcome::Failed, Outcome::Score))
}

/// The runs a Bayesian or asynchronous-halving search adds now, as many as
/// there are free slots: `max_concurrent` less the search runs that have
/// not ended (running, or planned and not launched yet). Empty for the
/// other strategies, whose runs are planned up front or rung by rung.
pub(super) fn proposals(runs: &[RunRecord], spec: &Sweep, identity: &DataIdentity) -> Vec<PlannedRun> {
    let c = spec.limits.max_concurrent.max(1) as usize;
    let search: Vec<&RunRecord> = runs.iter().filter(|r| r.role == SweepRole::Search).collect();
    let slots = c.saturating_sub(search.iter().filter(|r| !run_ended(r)).count());
    if slots == 0 {
        return Vec::new();
    }
    let axes: Vec<&crate::space::Axis> = spec.hyperparameters.iter().collect();
    let tried = |rs: &[&&RunRecord]| -> Vec<plan::Tried> {
        rs.iter().map(|r| (plan::point(&axes, &r.config), outcome(r))).collect()
    };
    match &spec.search {
        Search::Bayes { runs, startup } => {
            let all: Vec<&&RunRecord> = search.iter().collect();
            plan::bayes_proposals(spec, identity, &tried(&all), Some(c), *runs, *startup, slots, None)
        }
        Search::Asha { halving, bayes_startup } => {
            let mut members: Vec<(PlannedRun, Option<f64>, Option<f64>, bool)> =
                search.iter().map(|r| (r.planned(), score(r), r.valid_loss, run_ended(r))).collect();
            let configurations = plan::asha_configurations(spec, identity);
            let mut next = Vec::new();
            while next.len() < slots {
                let new = match plan::asha_promotion(spec, identity, halving, &members) {
                    Some(promoted) => Some(promoted),
                    None => match (&configurations, bayes_startup) {
                        (Some(all), _) => {
                            all.iter().find(|c| !members.iter().any(|(m, ..)| m.run_id == c.run_id)).cloned()
                        }
                        (None, Some(startup)) => {
                            // BOHB-style: the model sees every first-rung configuration so far.
                            let first: Vec<plan::Tried> = members
                                .iter()
                                .filter(|(m, ..)| m.rung == Some(0))
                                .map(|(m, score, _, ended)| {
                                    let o = ended.then(|| {
                                        score
                                            .filter(|s| s.is_finite())
                                            .map_or(crate::bayes::Outcome::Failed, crate::bayes::Outcome::Score)
                                    });
                                    (plan::point(&axes, &m.config), o)
                                })
                                .collect();
                            let runs = halving.draws.unwrap_or(1);
                            plan::bayes_proposals(spec, identity, &first, None, runs, *startup, 1, Some(0)).pop()
                        }
                        (None, None) => None,
                    },
                };
                let Some(run) = new else { break };
                members.push((run.clone(), None, None, false));
                next.push(run);
            }
            next
        }
        _ => Vec::new(),
    }
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

/// The replicates not yet in the sweep, each once, in order: `adopted` are
/// the chains of [`Stage::Replicates`] with the ids the store already knows.
pub(super) fn new_replicates(adopted: Vec<Vec<PlannedRun>>, runs: &[RunRecord]) -> Vec<PlannedRun> {
    let active: HashSet<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    let mut planned: HashSet<String> = HashSet::new();
    adopted
        .into_iter()
        .flatten()
        .filter(|r| !active.contains(r.run_id.as_str()) && planned.insert(r.run_id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn sweep(search: &str, hyperparameters: &str) -> Sweep {
        let text = format!(
            "name = \"t\"\nbase_model = \"local/ngram\"\ntraining_file = \"a.jsonl\"\nvalidation_file = \"b.jsonl\"\nseed = 7\n{search}\n[hyperparameters]\n{hyperparameters}\n"
        );
        crate::spec::parse(Path::new("s.toml"), &text).unwrap()
    }

    fn data() -> DataIdentity {
        DataIdentity { training_sha256: "aa".into(), validation_sha256: "bb".into(), server: String::new() }
    }

    fn config() -> crate::run::RunConfig {
        plan::expand(&sweep("", "n_epochs = [2]\nlearning_rate_multiplier = [1.0]\nbatch_size = [4]"), &data())[0]
            .config
            .clone()
    }

    fn record(run_id: &str, state: RunState, origin: Origin) -> RunRecord {
        let planned = PlannedRun { run_id: run_id.into(), config: config(), origin, rung: None };
        recorded(&planned, state, None)
    }

    fn recorded(planned: &PlannedRun, state: RunState, score: Option<f64>) -> RunRecord {
        let has_model = matches!(state, RunState::Trained | RunState::Evaluating | RunState::Done);
        let model = has_model.then(|| format!("ft:{}", planned.run_id));
        RunRecord { model, score, ..RunRecord::new(planned, state) }
    }

    fn job(id: &str, state: RunState) -> RunRecord {
        record(id, state, Origin::Job)
    }

    fn checkpoint_of(id: &str, source: &str) -> RunRecord {
        record(id, RunState::Planned, Origin::Checkpoint { source: source.into() })
    }

    fn continuing(id: &str, parent: &str) -> RunRecord {
        record(id, RunState::Planned, Origin::Continue { parent: parent.into(), parent_epochs: 1 })
    }

    /// A run's estimated tokens in the cases: 100 an epoch its own job trains.
    fn epoch_tokens(run: &RunRecord) -> u64 {
        100 * u64::from(crate::run::job_epochs(&run.origin, run.config.n_epochs).unwrap_or(0))
    }

    fn epochs(mut r: RunRecord, n: u32) -> RunRecord {
        r.config.n_epochs = Some(n);
        r
    }

    fn failed(mut r: RunRecord, why: &str) -> RunRecord {
        r.error = Some(why.into());
        r
    }

    /// How the store answers a claim in a case (granted unless listed).
    #[derive(Clone, Copy)]
    enum Answer {
        Taken,
        OverBudget,
    }

    struct Case {
        name: &'static str,
        runs: Vec<RunRecord>,
        /// Dealt with by this process before the scan (tried, failed, skipped).
        handled: &'static [&'static str],
        /// Their task is running.
        in_flight: &'static [&'static str],
        max_concurrent: u32,
        durable: bool,
        stopping: bool,
        answers: &'static [(&'static str, Answer)],
        expect: &'static [&'static str],
    }

    const CASE: Case = Case {
        name: "",
        runs: Vec::new(),
        handled: &[],
        in_flight: &[],
        max_concurrent: 4,
        durable: true,
        stopping: false,
        answers: &[],
        expect: &[],
    };

    /// Answers a claim as the store would in the case.
    fn answer(case: &Case, run_id: &str, work: Work, state: &mut State) {
        match case.answers.iter().find(|(id, _)| *id == run_id).map(|(_, a)| *a) {
            None => state.claimed(run_id, work),
            Some(Answer::Taken) => state.taken("host:7:00ff".into()),
            Some(Answer::OverBudget) => state.over_budget(run_id),
        }
    }

    /// Scans as the executor does, answering claims as the case says; a
    /// rescan goes on with the same runs, every other end stops the case.
    fn play(case: &Case) -> Vec<String> {
        let mut state = State::default();
        state.begin_pass();
        state.give_up(case.handled.iter().copied());
        for id in case.in_flight {
            state.claimed(id, Work::TrainAndEvaluate);
        }
        let limits = Limits { max_concurrent: case.max_concurrent, jobs_outlive_process: case.durable };
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut scan = Scan::new(&case.runs, &mut state, case.stopping, &epoch_tokens);
            while let Some(action) = scan.next(&state, &limits) {
                match action {
                    Action::Claim { run, work } => {
                        seen.push(format!("claim {} {work:?}", run.run_id));
                        answer(case, &run.run_id, work, &mut state);
                    }
                    Action::Fail { run, reason } => {
                        seen.push(format!("fail {}: {reason}", run.run_id));
                        state.failed(&run.run_id);
                    }
                }
            }
            let then = scan.then(&state);
            seen.push(match &then {
                Then::AwaitTask => "await a task".into(),
                Then::Rescan => "rescan".into(),
                Then::EndPass => "end".into(),
                Then::WaitForOthers { runs, owner, announce } => {
                    format!("wait for {runs} run(s) of {owner} {announce}")
                }
            });
            if then != Then::Rescan {
                break;
            }
        }
        seen
    }

    /// The concurrency cap and the budget (the claim's answer).
    #[test]
    fn a_scan_claims_up_to_the_cap_and_goes_on_past_a_run_over_budget() {
        use RunState::*;
        let cases = [
            Case {
                name: "fresh runs launch in plan order up to the concurrency cap",
                runs: vec![job("a", Planned), job("b", Planned), job("c", Planned)],
                max_concurrent: 2,
                expect: &["claim a TrainAndEvaluate", "claim b TrainAndEvaluate", "await a task"],
                ..CASE
            },
            Case {
                name: "concurrency cap reached: nothing more starts, the pass waits for a task",
                runs: vec![job("a", Training), job("b", Training), job("c", Planned)],
                handled: &["a", "b"],
                in_flight: &["a", "b"],
                max_concurrent: 2,
                expect: &["await a task"],
                ..CASE
            },
            Case {
                name: "a cap of 0 runs one at a time",
                runs: vec![job("a", Planned), job("b", Planned)],
                max_concurrent: 0,
                expect: &["claim a TrainAndEvaluate", "await a task"],
                ..CASE
            },
            Case {
                name: "budget exhausted: the refused run is skipped, the next is tried, a dependent of the skipped one fails",
                runs: vec![job("a", Planned), job("b", Planned), checkpoint_of("c", "a")],
                answers: &[("a", Answer::OverBudget)],
                expect: &[
                    "claim a TrainAndEvaluate",
                    "claim b TrainAndEvaluate",
                    "fail c: its source run a ended planned",
                    "await a task",
                ],
                ..CASE
            },
            Case {
                name: "budget exhausted for every run: the pass looks once more, then ends",
                runs: vec![job("a", Planned), job("b", Planned)],
                answers: &[("a", Answer::OverBudget), ("b", Answer::OverBudget)],
                expect: &["claim a TrainAndEvaluate", "claim b TrainAndEvaluate", "rescan", "end"],
                ..CASE
            },
        ];
        for case in &cases {
            assert_eq!(play(case), case.expect, "{}", case.name);
        }
    }

    /// Longest first, and a slot is held by a training job only.
    #[test]
    fn the_longest_jobs_launch_first_and_an_evaluation_holds_no_slot() {
        use RunState::*;
        let cases = [
            Case {
                name: "the longest job first; ties in plan order; a checkpoint run (trains nothing) last",
                runs: vec![
                    epochs(job("a", Planned), 1),
                    epochs(job("b", Planned), 6),
                    epochs(job("c", Planned), 3),
                    epochs(job("d", Planned), 6),
                    epochs(job("e", Done), 9),
                ],
                max_concurrent: 3,
                expect: &[
                    "claim b TrainAndEvaluate",
                    "claim d TrainAndEvaluate",
                    "claim c TrainAndEvaluate",
                    "await a task",
                ],
                ..CASE
            },
            Case {
                name: "a halving continuation counts only the epochs its own job trains",
                runs: vec![epochs(continuing("x", "p"), 4), epochs(job("p", Done), 1), epochs(job("y", Planned), 2)],
                max_concurrent: 1,
                expect: &["claim x TrainAndEvaluate", "await a task"],
                ..CASE
            },
            Case {
                name: "every slot trains: an evaluation still starts, a launch waits",
                runs: vec![job("a", Training), job("b", Trained), job("c", Planned)],
                handled: &["a"],
                in_flight: &["a"],
                max_concurrent: 1,
                expect: &["claim b Evaluate", "await a task"],
                ..CASE
            },
        ];
        for case in &cases {
            assert_eq!(play(case), case.expect, "{}", case.name);
        }
        // A run evaluating after its job ended frees its slot for the next launch.
        let runs = vec![job("a", Planned), job("b", Planned)];
        let limits = Limits { max_concurrent: 1, jobs_outlive_process: true };
        let mut state = State::default();
        let mut scan = Scan::new(&runs, &mut state, false, &epoch_tokens);
        let Some(Action::Claim { run, work }) = scan.next(&state, &limits) else { panic!("a claims") };
        state.claimed(&run.run_id, work);
        assert_eq!(scan.next(&state, &limits), None, "b waits for the slot");
        state.training_ended("a");
        let mut scan = Scan::new(&runs, &mut state, false, &epoch_tokens);
        assert!(matches!(scan.next(&state, &limits), Some(Action::Claim { run, .. }) if run.run_id == "b"));
    }

    #[test]
    fn the_launch_order_is_longest_first_with_ties_in_plan_order() {
        let tokens = [Some(10), None, Some(60), Some(30), Some(60), Some(0)];
        assert_eq!(launch_order(&tokens, |t| *t), [2, 4, 3, 0, 1, 5]);
    }

    /// Checkpoint and continuation runs against the state of their source.
    #[test]
    fn a_dependent_waits_for_its_source_or_fails_with_its_reason() {
        use RunState::*;
        let cases = [
            Case {
                name: "a checkpoint run waits while its source trains",
                runs: vec![job("a", Training), checkpoint_of("b", "a")],
                handled: &["a"],
                in_flight: &["a"],
                expect: &["await a task"],
                ..CASE
            },
            Case {
                name: "a checkpoint run waits for a source not yet started, which starts first",
                runs: vec![checkpoint_of("b", "a"), job("a", Planned)],
                expect: &["claim a TrainAndEvaluate", "await a task"],
                ..CASE
            },
            Case {
                name: "a checkpoint run goes once its source has its model",
                runs: vec![job("a", Done), checkpoint_of("b", "a")],
                handled: &["a"],
                expect: &["claim b FromCheckpoint", "await a task"],
                ..CASE
            },
            Case {
                name: "a failed source this process tried fails its dependents with the reason, down the chain",
                runs: vec![
                    failed(job("a", Failed), "the job failed (invalid_file): bad line"),
                    continuing("b", "a"),
                    checkpoint_of("c", "b"),
                ],
                handled: &["a"],
                expect: &[
                    "fail b: its source run a ended failed: the job failed (invalid_file): bad line",
                    "fail c: its source run b ended planned",
                    "rescan",
                    "end",
                ],
                ..CASE
            },
            Case {
                name: "a failed source not yet retried here is retried first; its dependent waits",
                runs: vec![failed(job("a", Failed), "boom"), continuing("b", "a")],
                expect: &["claim a TrainAndEvaluate", "await a task"],
                ..CASE
            },
            Case {
                name: "a cancelled source breaks its dependents at once",
                runs: vec![
                    RunRecord { stop_reason: Some("diverged".into()), ..failed(job("a", Cancelled), "x") },
                    checkpoint_of("b", "a"),
                ],
                expect: &["fail b: its source run a ended cancelled: diverged", "rescan", "end"],
                ..CASE
            },
            Case {
                name: "a source outside the sweep breaks its dependent",
                runs: vec![continuing("b", "zz")],
                expect: &["fail b: its source run zz is not part of the sweep", "rescan", "end"],
                ..CASE
            },
        ];
        for case in &cases {
            assert_eq!(play(case), case.expect, "{}", case.name);
        }
    }

    /// Resumption after a crash, interruption, runs of other processes, runs dealt with.
    #[test]
    fn a_crashed_or_interrupted_pass_resumes_adopts_or_starts_nothing() {
        use RunState::*;
        let cases = [
            Case {
                name: "after a crash, a hosted run left launching or training is resumed (adopted), never launched anew",
                runs: vec![job("a", Launching), job("b", Training), job("c", Trained), job("d", Evaluating)],
                expect: &["claim a Resume", "claim b Resume", "claim c Evaluate", "claim d Evaluate", "await a task"],
                ..CASE
            },
            Case {
                name: "after a crash, a local run left launching or training trains again (its job died)",
                runs: vec![job("a", Launching), job("b", Training), job("c", Done)],
                durable: false,
                expect: &["claim a TrainAndEvaluate", "claim b TrainAndEvaluate", "await a task"],
                ..CASE
            },
            Case {
                name: "interrupted: nothing starts and the pass ends",
                runs: vec![job("a", Planned), job("b", Launching)],
                stopping: true,
                expect: &["end"],
                ..CASE
            },
            Case {
                name: "interrupted with a task running: the pass waits for it, starting nothing",
                runs: vec![job("a", Training), job("b", Planned)],
                handled: &["a"],
                in_flight: &["a"],
                stopping: true,
                expect: &["await a task"],
                ..CASE
            },
            Case {
                name: "runs another live process owns: the pass waits for them and says so",
                runs: vec![job("a", Training), job("b", Planned)],
                answers: &[("a", Answer::Taken), ("b", Answer::Taken)],
                expect: &["claim a Resume", "claim b TrainAndEvaluate", "wait for 2 run(s) of host:7:00ff true"],
                ..CASE
            },
            Case {
                name: "runs this process dealt with in an earlier pass are not tried again",
                runs: vec![failed(job("a", Failed), "boom"), job("b", Done)],
                handled: &["a"],
                expect: &["end"],
                ..CASE
            },
        ];
        for case in &cases {
            assert_eq!(play(case), case.expect, "{}", case.name);
        }
    }

    #[test]
    fn the_wait_for_another_process_is_announced_once_a_pass() {
        let runs = vec![job("a", RunState::Planned)];
        let limits = Limits { max_concurrent: 1, jobs_outlive_process: true };
        let mut state = State::default();
        let mut announced = Vec::new();
        for pass in 0..2 {
            state.begin_pass();
            for _ in 0..2 {
                let mut scan = Scan::new(&runs, &mut state, false, &epoch_tokens);
                while let Some(action) = scan.next(&state, &limits) {
                    assert!(matches!(action, Action::Claim { .. }));
                    state.taken("other".into());
                }
                let Then::WaitForOthers { announce, .. } = scan.then(&state) else { panic!("pass {pass} waits") };
                if announce {
                    state.announced_wait();
                }
                announced.push(announce);
            }
        }
        assert_eq!(announced, [true, false, true, false]);
    }

    #[test]
    fn a_survey_counts_what_each_run_needs_and_reuses_each_finished_run_once() {
        use RunState::*;
        let runs = vec![
            job("a", Planned),
            job("b", Training),
            job("c", Trained),
            checkpoint_of("d", "a"),
            job("e", Done),
            job("f", Cancelled),
        ];
        let mut state = State::default();
        let first = survey(&runs, &state, true);
        assert_eq!(
            first.work,
            [Work::TrainAndEvaluate, Work::Resume, Work::Evaluate, Work::FromCheckpoint, Work::Nothing, Work::Nothing]
        );
        assert_eq!((first.to_train, first.to_evaluate), (2, 2));
        assert_eq!(first.reused, ["e", "f"]);
        state.reused(first.reused);
        state.give_up(["a"]);
        let second = survey(&runs, &state, true);
        assert_eq!(
            (second.to_train, second.to_evaluate, second.reused.len()),
            (1, 2, 0),
            "a handled, e and f counted once"
        );
    }

    #[test]
    fn a_job_failure_is_retried_only_when_it_is_the_providers() {
        let table = [
            ("server_error", true),
            ("rate_limit_exceeded", true),
            ("invalid_training_file", false),
            ("invalid_request", false),
            ("file_too_large", false),
            ("model_not_available", false),
            ("bad_request", false),
        ];
        for (code, retryable) in table {
            assert_eq!(retryable_code(code), retryable, "{code}");
        }
    }

    #[test]
    fn the_sweep_goes_on_after_a_pass_only_when_not_interrupted() {
        for (stopping, interrupted, goes) in [(false, 0, true), (true, 0, false), (false, 2, false), (true, 1, false)] {
            assert_eq!(goes_on(stopping, interrupted), goes, "stopping {stopping}, interrupted {interrupted}");
        }
    }

    const HALVING: &str = "[search]\nstrategy = \"successive_halving\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3\n";
    const LRS: &str = "learning_rate_multiplier = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]\nbatch_size = [4]";

    /// A run's state and score.
    type Recorded = (RunState, Option<f64>);

    /// The first rung of a halving sweep, recorded with these states and scores.
    fn rung0(states: &[Recorded]) -> (Sweep, Vec<RunRecord>) {
        let spec = sweep(HALVING, LRS);
        let planned = plan::expand(&spec, &data());
        assert_eq!(planned.len(), states.len());
        let runs = planned.iter().zip(states).map(|(p, (state, score))| recorded(p, *state, *score)).collect();
        (spec, runs)
    }

    #[test]
    fn the_next_rung_is_planned_only_once_its_rung_has_ended() {
        use RunState::*;
        let done = |s: f64| (Done, Some(s));
        let cases: [(&str, Vec<Recorded>, Option<usize>); 5] = [
            (
                "a run still training",
                vec![done(0.1), done(0.2), (Training, None), done(0.4), done(0.5), done(0.6)],
                None,
            ),
            (
                "a run skipped by the budget (still planned)",
                vec![done(0.1), (Planned, None), done(0.3), done(0.4), done(0.5), done(0.6)],
                None,
            ),
            (
                "a run being evaluated",
                vec![done(0.1), done(0.2), (Evaluating, None), done(0.4), done(0.5), done(0.6)],
                None,
            ),
            ("every run done", vec![done(0.1), done(0.2), done(0.9), done(0.4), done(0.8), done(0.6)], Some(2)),
            (
                "every run ended, two failed",
                vec![(Failed, None), done(0.2), done(0.9), (Cancelled, None), done(0.8), done(0.6)],
                Some(2),
            ),
        ];
        for (name, states, promoted) in cases {
            let (spec, runs) = rung0(&states);
            match (next_stage(&runs, &spec, &data()), promoted) {
                (Stage::Unfinished, None) => {}
                (Stage::Rung { rung: 0, members: 6, next }, Some(n)) => {
                    assert_eq!(next.len(), n, "{name}");
                    // The best third by score continue their own models: runs 2 and 4.
                    let parents: Vec<&str> = next.iter().filter_map(|r| r.origin.source()).collect();
                    assert_eq!(parents, [runs[2].run_id.as_str(), runs[4].run_id.as_str()], "{name}");
                    assert!(next.iter().all(|r| r.rung == Some(1) && r.config.n_epochs == Some(3)), "{name}");
                }
                (other, _) => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn after_the_last_rung_the_search_is_over_or_replicates_its_leaders() {
        let spec = sweep(HALVING, LRS);
        let (_, mut runs) = rung0(&[(RunState::Done, Some(0.5)); 6]);
        let Stage::Rung { next, .. } = next_stage(&runs, &spec, &data()) else { panic!("rung 1") };
        runs.extend(next.iter().map(|p| recorded(p, RunState::Done, Some(0.7))));
        assert_eq!(next_stage(&runs, &spec, &data()), Stage::Over, "max_epochs reached, no replicates");

        let grid = sweep(
            "[search]\nstrategy = \"grid\"\nreplicate_top = 1\nreplicate_seeds = [1, 2]\n",
            &format!("n_epochs = [1]\n{LRS}"),
        );
        let runs: Vec<RunRecord> = plan::expand(&grid, &data())
            .iter()
            .enumerate()
            .map(|(i, p)| recorded(p, RunState::Done, Some(i as f64 / 10.0)))
            .collect();
        let Stage::Replicates { leaders, seeds, chains } = next_stage(&runs, &grid, &data()) else {
            panic!("replicates")
        };
        assert_eq!((leaders, seeds), (1, vec![1, 2]));
        assert_eq!(chains.len(), 2, "one chain per seed");
        assert!(chains.iter().all(|c| c.len() == 1 && c[0].config.learning_rate_multiplier() == Some(30.0)));
        let new = new_replicates(chains.clone(), &runs);
        assert_eq!(new.len(), 2);
        // Planned again (a restart), they are already in the sweep: nothing new.
        let with_them: Vec<RunRecord> =
            runs.iter().cloned().chain(new.iter().map(|p| recorded(p, RunState::Planned, None))).collect();
        assert!(new_replicates(chains, &with_them).is_empty());
    }

    /// Records `planned` with each state and score, in order.
    fn with_states(planned: &[PlannedRun], states: &[Recorded]) -> Vec<RunRecord> {
        planned.iter().zip(states).map(|(p, (state, score))| recorded(p, *state, *score)).collect()
    }

    const ASHA: &str =
        "[search]\nstrategy = \"asha\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3\n[limits]\nmax_concurrent = 2\n";

    #[test]
    fn asha_promotes_a_run_in_its_rungs_top_third_so_far_else_starts_a_new_configuration() {
        use RunState::*;
        let spec = sweep(ASHA, LRS);
        let all = plan::asha_configurations(&spec, &data()).unwrap();
        assert_eq!(all.len(), 6);
        // Up front: as many first-rung configurations as there are slots.
        let first = plan::expand(&spec, &data());
        assert_eq!(first, all[..2]);
        let runs = with_states(&first, &[(Training, None), (Planned, None)]);
        assert_eq!(proposals(&runs, &spec, &data()), [], "no slot is free");
        // One result: 1/3 of one is none; a slot is free: a new configuration.
        let runs = with_states(&first, &[(Done, Some(0.5)), (Training, None)]);
        assert_eq!(proposals(&runs, &spec, &data()), [all[2].clone()]);
        // Three results, two free slots: the best continues at once, then a new configuration.
        let runs = with_states(&all[..3], &[(Done, Some(0.5)), (Done, Some(0.9)), (Done, Some(0.7))]);
        let next = proposals(&runs, &spec, &data());
        assert_eq!(next.len(), 2, "{next:?}");
        assert_eq!(next[0].rung, Some(1));
        assert_eq!(next[0].config.n_epochs, Some(3));
        assert_eq!(next[0].origin, Origin::Continue { parent: all[1].run_id.clone(), parent_epochs: 1 });
        assert_eq!(next[1], all[3]);
        // Once promoted, the same run is not promoted again: the next free slot starts a new configuration.
        let mut runs = runs;
        runs.push(recorded(&next[0], Done, Some(0.95)));
        runs.push(recorded(&next[1], Training, None));
        assert_eq!(proposals(&runs, &spec, &data()), [all[4].clone()]);
        // The rung before the last: nothing above rung 1 (3 epochs is the last).
        assert_eq!(plan::rung_epochs(spec.search.halving().unwrap()), [1, 3]);
    }

    const BAYES: &str = "[search]\nstrategy = \"bayes\"\nruns = 6\nstartup = 2\n[limits]\nmax_concurrent = 2\n";
    const SPACE: &str =
        "n_epochs = [1, 2]\nlearning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = [4, 16, 64]";

    #[test]
    fn a_bayesian_proposal_sees_the_results_of_the_runs_max_concurrent_before_it_whatever_the_order_they_end_in() {
        use RunState::*;
        let spec = sweep(BAYES, SPACE);
        let first = plan::expand(&spec, &data());
        assert_eq!(first.len(), 2, "the proposals that need no result: one per slot");
        // Proposal 2 sees no outcome (0..2-2): the same whichever of runs 0 and 1 ended.
        let a = proposals(&with_states(&first, &[(Done, Some(0.5)), (Training, None)]), &spec, &data());
        let b = proposals(&with_states(&first, &[(Training, None), (Done, Some(0.9))]), &spec, &data());
        assert_eq!(a.len(), 1);
        assert_eq!(a, b);
        let three: Vec<PlannedRun> = first.iter().chain(&a).cloned().collect();
        // Proposal 3 sees run 0's outcome and runs 1 and 2 as pending, ended or not.
        let c =
            proposals(&with_states(&three, &[(Done, Some(0.5)), (Done, Some(0.9)), (Training, None)]), &spec, &data());
        let d =
            proposals(&with_states(&three, &[(Done, Some(0.5)), (Done, Some(0.2)), (Done, Some(0.1))]), &spec, &data());
        assert_eq!(c.len(), 1);
        assert_eq!(d.len(), 2, "two free slots: proposals 3 and 4");
        assert_eq!(c[0], d[0]);
        // Until run 0 has ended, proposal 3 waits, even with a free slot.
        let e =
            proposals(&with_states(&three, &[(Training, None), (Done, Some(0.9)), (Done, Some(0.7))]), &spec, &data());
        assert_eq!(e, []);
        // A failed run is an outcome: the proposal goes ahead.
        let f = proposals(&with_states(&three, &[(Failed, None), (Done, Some(0.9)), (Training, None)]), &spec, &data());
        assert_eq!(f.len(), 1);
        // Never more than `runs`.
        let mut six = three.clone();
        six.extend(d);
        six.push(proposals(&with_states(&six, &[(Done, Some(0.5)); 5]), &spec, &data()).remove(0));
        assert_eq!(six.len(), 6);
        assert_eq!(proposals(&with_states(&six, &[(Done, Some(0.5)); 6]), &spec, &data()), []);
        assert_eq!(next_stage(&with_states(&six, &[(Done, Some(0.5)); 6]), &spec, &data()), Stage::Over);
    }
}
