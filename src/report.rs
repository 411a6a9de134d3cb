//! Rendering: tables (comfy-table) and JSON rows, returned as strings; no I/O.

use std::collections::BTreeMap;

use comfy_table::{Cell, CellAlignment, ColumnConstraint, ContentArrangement, Table, Width, presets};
use serde::Serialize;

use crate::rank::{Candidate, Standing};
use crate::run::{EvalKind, Origin, PlannedRun, RunConfig, RunState, SweepRole, show, shown_names};

/// Serializes a hyperparameter as its number, or `"auto"`.
fn auto_or<T: Serialize, S: serde::Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) => x.serialize(s),
        None => s.serialize_str("auto"),
    }
}

/// Serializes a run's hyperparameter as its number or `"auto"`, and a row
/// that is not a run (the baseline) as `null`.
fn hyper<T: Serialize, S: serde::Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(x) => auto_or(x, s),
    }
}

/// One leaderboard row, as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaderboardRow {
    pub rank: Option<usize>,
    /// The run (for a checkpoint, its run); `null` for the baseline and evaluated models.
    pub run_id: Option<String>,
    /// `run`, `checkpoint`, `baseline` or `model`.
    pub kind: String,
    /// The base model, untrained.
    pub is_baseline: bool,
    /// A checkpoint's epoch.
    pub epoch: Option<u32>,
    pub status: String,
    #[serde(serialize_with = "hyper")]
    pub n_epochs: Option<Option<u32>>,
    /// The run's other hyperparameters by name: a number, or `"auto"` for
    /// one that another row gives a value; none for a row that is not a run.
    #[serde(flatten)]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    pub seed: Option<u64>,
    /// The run's configuration.
    #[serde(skip)]
    pub config: Option<RunConfig>,
    pub model: Option<String>,
    /// A command sweep's model: the adapter directory (an absolute path). Absent for model ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<String>,
    /// The metric ranked by.
    pub metric: String,
    /// Its mean over the examples.
    pub score: Option<f64>,
    /// The 95 % interval of the score: Wilson for pass/fail metrics, bootstrap otherwise.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub is_leader: bool,
    /// The leader, and rows whose paired test against it is not significant
    /// (no difference found, which is no evidence that they are as good).
    pub tied_with_best: bool,
    /// The one-sided `1 - alpha` upper bound on how far the score is below
    /// the leader's on the same examples.
    pub shortfall_upper: Option<f64>,
    /// The leader, and rows whose `shortfall_upper` is below `[evaluation]
    /// margin`: shown to be as good within the margin, the only rows `best`
    /// may pick instead of the leader.
    pub within_margin: bool,
    /// The row `ftsweep best` picks (by its default rule, not `--strict`).
    pub is_pick: bool,
    /// The paired test against the leader: `mcnemar_exact` or `paired_bootstrap`.
    pub test: Option<String>,
    pub p_value: Option<f64>,
    /// The score minus the leader's.
    pub diff_from_leader: Option<f64>,
    /// Every grader's mean (and `combined`'s); `null` while some grades are missing.
    pub scores: BTreeMap<String, Option<f64>>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub train_loss: Option<f64>,
    /// Validation loss minus training loss.
    pub gap: Option<f64>,
    /// The validation loss rose more than 10 % above its lowest earlier value.
    pub overfit: bool,
    pub trained_tokens: Option<i64>,
    /// Training plus evaluation, when prices are known.
    pub cost_usd: Option<f64>,
    pub train_seconds: Option<f64>,
    pub eval_seconds: Option<f64>,
    /// Examples evaluated.
    pub n_eval: Option<i64>,
    pub error: Option<String>,
    /// What else the row says: overfitting, missing grades, what the row is.
    pub note: Option<String>,
    /// Where the run's model comes from: `job`, `checkpoint` (of another
    /// run's job) or `continue` (a halving rung continuing another run's model).
    pub origin: Option<String>,
    /// The run whose job or model this one comes from.
    pub source_run: Option<String>,
    /// The rung of successive halving.
    pub rung: Option<u32>,
    /// `search`, or `replicate` (a leader trained again with another seed).
    pub role: Option<String>,
    /// Why early stopping ended the run's job.
    pub stopped_early: Option<String>,
    /// The epochs behind the row's model: `n_epochs`, or fewer when early
    /// stopping made an earlier checkpoint the model.
    pub model_epochs: Option<u32>,
    /// What the run's own job trained (0 for a checkpoint; a continuation's
    /// job only), where `trained_tokens` counts everything behind the model.
    pub job_tokens: Option<i64>,
    /// The run's configuration over the seeds it was trained with, when
    /// there are two or more (seed replicates).
    pub seed_group: Option<SeedGroup>,
}

impl LeaderboardRow {
    /// Its hyperparameters as shown, by name: the epochs first, the seed
    /// last; empty for a row that is not a run.
    pub fn hyperparameter_texts(&self) -> Vec<(String, String)> {
        if self.config.is_none() {
            return Vec::new();
        }
        let mut out = vec![(crate::space::N_EPOCHS.to_string(), hyper_text(self.n_epochs))];
        let names = crate::run::in_shown_order(self.hyperparameters.keys().map(String::as_str));
        out.extend(names.iter().map(|n| (n.clone(), hyper_cell(self, n))));
        out.push((crate::space::SEED.to_string(), self.seed.map_or_else(|| "-".into(), |s| s.to_string())));
        out
    }

    /// Its hyperparameters as JSON, by name (`null` for `auto`), the seed
    /// included; an empty object for a row that is not a run.
    pub fn hyperparameters_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if self.config.is_some() {
            map.insert(crate::space::N_EPOCHS.into(), self.n_epochs.flatten().into());
            for (n, v) in &self.hyperparameters {
                map.insert(n.clone(), if v.is_string() { serde_json::Value::Null } else { v.clone() });
            }
            map.insert(crate::space::SEED.into(), self.seed.into());
        }
        serde_json::Value::Object(map)
    }
}

/// One configuration's scores over seeds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeedGroup {
    pub seeds: Vec<u64>,
    pub mean: f64,
    /// Sample standard deviation.
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

/// Groups the finished runs that differ only in seed (same origin kind and
/// hyperparameters) and marks each member with its group, when a group has
/// two or more runs.
pub fn mark_seed_groups(rows: &mut [LeaderboardRow]) {
    type Key = (Option<String>, Option<crate::run::ConfigKey>);
    let key = |r: &LeaderboardRow| -> Key { (r.origin.clone(), r.config.as_ref().map(|c| c.key(true))) };
    let mut groups: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.kind == "run" && r.score.is_some() && r.status == "done" {
            groups.entry(key(r)).or_default().push(i);
        }
    }
    for members in groups.values().filter(|m| m.len() >= 2) {
        let scores: Vec<f64> = members.iter().filter_map(|&i| rows[i].score).collect();
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let sd = (scores.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let group = SeedGroup {
            seeds: members.iter().filter_map(|&i| rows[i].seed).collect(),
            mean,
            sd,
            min: scores.iter().copied().fold(f64::INFINITY, f64::min),
            max: scores.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        for &i in members {
            rows[i].seed_group = Some(group.clone());
        }
    }
}

/// Successive halving's rungs: per rung, its epochs, runs, how many went on
/// to the next rung, the tokens its jobs trained and its best score.
pub fn rung_table(rows: &[LeaderboardRow], metric: &str) -> Option<String> {
    rung_table_within(rows, metric, None)
}

/// [`rung_table`] within `width` columns.
fn rung_table_within(rows: &[LeaderboardRow], metric: &str, width: Option<usize>) -> Option<String> {
    let runs: Vec<&LeaderboardRow> = rows.iter().filter(|r| r.kind == "run" && r.rung.is_some()).collect();
    let last = runs.iter().filter_map(|r| r.rung).max()?;
    let best_header = format!("best {metric}");
    let mut t = new_table(&["rung", "epochs", "runs", "promoted", "stopped early", "trained tokens", &best_header]);
    for rung in 0..=last {
        let members: Vec<&&LeaderboardRow> = runs.iter().filter(|r| r.rung == Some(rung)).collect();
        let promoted = members
            .iter()
            .filter(|m| runs.iter().any(|n| n.rung == Some(rung + 1) && n.source_run == m.run_id))
            .count();
        let epochs: BTreeMap<String, ()> = members.iter().map(|m| (show(m.n_epochs.flatten()), ())).collect();
        let best = members.iter().filter_map(|m| m.score).max_by(f64::total_cmp);
        t.add_row(vec![
            rung.to_string(),
            epochs.into_keys().collect::<Vec<_>>().join(", "),
            members.len().to_string(),
            if rung == last { "-".to_string() } else { promoted.to_string() },
            members.iter().filter(|m| m.stopped_early.is_some()).count().to_string(),
            members.iter().filter_map(|m| m.job_tokens).sum::<i64>().to_string(),
            best.map_or("-".into(), |b| format!("{b:.3}")),
        ]);
    }
    right(&mut t, 0, 7);
    let heading = wrap("successive halving, by rung (trained tokens: the rung's own jobs):", width);
    Some(format!("{heading}\n{}", within(t, width)))
}

/// The seed groups, best mean first: one row per configuration.
pub fn seed_group_table(rows: &[LeaderboardRow], metric: &str) -> Option<String> {
    seed_group_table_within(rows, metric, None)
}

/// [`seed_group_table`] within `width` columns.
fn seed_group_table_within(rows: &[LeaderboardRow], metric: &str, width: Option<usize>) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut groups: Vec<(&LeaderboardRow, &SeedGroup)> = rows
        .iter()
        .filter_map(|r| r.seed_group.as_ref().map(|g| (r, g)))
        .filter(|(r, _)| seen.insert((r.origin.clone(), r.config.as_ref().map(|c| c.key(true)))))
        .collect();
    if groups.is_empty() {
        return None;
    }
    groups.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean));
    let mean_header = format!("mean {metric}");
    let mut t = new_table(&["configuration", "from", "seeds", &mean_header, "sd", "min", "max"]);
    for (r, g) in &groups {
        t.add_row(vec![
            configuration(r),
            r.origin.clone().unwrap_or_default(),
            format!("{} ({})", g.seeds.len(), g.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
            format!("{:.3}", g.mean),
            format!("{:.3}", g.sd),
            format!("{:.3}", g.min),
            format!("{:.3}", g.max),
        ]);
    }
    right(&mut t, 3, 7);
    let heading = wrap("seed replicates (a configuration over its seeds; `best` ranks these by mean):", width);
    Some(format!("{heading}\n{}", within(t, width)))
}

/// Builds the leaderboard rows, in the standings' order; `names` are the
/// scores (graders, then `combined`) to report.
pub fn leaderboard_rows(
    candidates: &[Candidate],
    standings: &[Standing],
    metric: &str,
    names: &[String],
) -> Vec<LeaderboardRow> {
    let leader_score = standings.iter().find(|s| s.is_leader).and_then(|s| s.score);
    let mut rows = standings
        .iter()
        .map(|st| {
            let c = &candidates[st.index];
            let run = c.run.as_ref();
            let scores: BTreeMap<String, Option<f64>> = names.iter().map(|n| (n.clone(), c.grades.mean(n))).collect();
            let missing: Vec<&str> = names
                .iter()
                .filter(|n| c.n_examples > 0 && c.grades.0.get(*n).is_some_and(Option::is_none))
                .map(String::as_str)
                .collect();
            let valid_loss = c.valid_loss.filter(|l| l.is_finite());
            let train_loss = c.train_loss.filter(|l| l.is_finite());
            let mut notes = Vec::new();
            match c.role {
                EvalKind::Baseline => {
                    notes.push(format!("baseline: `{}`, untrained", c.model.as_deref().unwrap_or("?")))
                }
                EvalKind::Model => notes.push(format!("`{}`, from `ftsweep eval`", c.model.as_deref().unwrap_or("?"))),
                EvalKind::Run | EvalKind::Checkpoint => {}
            }
            if let Some(r) = run.filter(|_| c.role == EvalKind::Run) {
                notes.extend(origin_notes(r));
            }
            if let Some(o) = st.overfit {
                notes.push(format!(
                    "overfit: valid loss {} vs {} at epoch {}",
                    loss(Some(o.final_loss)),
                    loss(Some(o.best_loss)),
                    o.best_epoch
                ));
            }
            if !missing.is_empty() {
                notes.push(format!("grades missing: {}", missing.join(", ")));
            }
            LeaderboardRow {
                rank: st.rank,
                run_id: run.map(|r| r.run_id.clone()),
                kind: c.role.as_str().to_string(),
                is_baseline: c.role == EvalKind::Baseline,
                epoch: c.epoch,
                status: run.map_or("done", |r| r.state.as_str()).to_string(),
                n_epochs: run.map(|r| r.config.n_epochs),
                hyperparameters: run.map(|r| json_params(&r.config)).unwrap_or_default(),
                seed: run.map(|r| r.config.seed),
                config: run.map(|r| r.config.clone()),
                model: c.model.clone(),
                model_dir: c.model.clone().filter(|m| std::path::Path::new(m).is_absolute()),
                metric: metric.to_string(),
                score: st.score,
                ci_low: st.interval.map(|i| i.0),
                ci_high: st.interval.map(|i| i.1),
                is_leader: st.is_leader,
                tied_with_best: st.tied_with_best,
                shortfall_upper: st.shortfall.map(|b| b.upper),
                within_margin: st.within_margin,
                is_pick: false,
                test: st.comparison.map(|c| c.test.to_string()),
                p_value: st.comparison.map(|c| c.p_value),
                diff_from_leader: st.score.zip(leader_score).map(|(s, l)| s - l),
                scores,
                valid_loss,
                valid_accuracy: run.and_then(|r| r.valid_accuracy).filter(|_| c.role == EvalKind::Run),
                train_loss,
                gap: valid_loss.zip(train_loss).map(|(v, t)| v - t),
                overfit: st.overfit.is_some(),
                trained_tokens: c.trained_tokens,
                cost_usd: c.cost_usd,
                train_seconds: run.and_then(|r| r.train_seconds).filter(|_| c.role == EvalKind::Run),
                eval_seconds: run.and_then(|r| r.eval_seconds).filter(|_| c.role == EvalKind::Run),
                n_eval: (c.n_examples > 0).then_some(c.n_examples as i64),
                error: run.and_then(|r| r.error.clone()).filter(|_| run.is_some_and(|r| r.state == RunState::Failed)),
                note: (!notes.is_empty()).then(|| notes.join("; ")),
                seed_group: None,
                origin: run.map(|r| r.origin.kind().to_string()),
                source_run: run.and_then(|r| r.origin.source().map(str::to_string)),
                rung: run.and_then(|r| r.rung),
                role: run.map(|r| r.role.to_string()),
                stopped_early: run.and_then(|r| r.stop_reason.clone()),
                model_epochs: run.and_then(|r| r.model_epochs.or(r.config.n_epochs)),
                job_tokens: run.filter(|_| c.role == EvalKind::Run).and_then(|r| r.trained_tokens),
            }
        })
        .collect::<Vec<_>>();
    fill_auto(&mut rows);
    rows
}

/// A run's hyperparameters besides the epochs and the seed, as JSON numbers.
fn json_params(c: &RunConfig) -> BTreeMap<String, serde_json::Value> {
    c.params.iter().map(|(name, v)| (name.clone(), (*v).into())).collect()
}

/// The hyperparameter columns of `rows` (besides the epochs and the seed).
fn row_names(rows: &[LeaderboardRow]) -> Vec<String> {
    shown_names(rows.iter().filter_map(|r| r.config.as_ref()))
}

/// A configuration without its seed, as a seed group's label.
fn configuration(r: &LeaderboardRow) -> String {
    let Some(c) = &r.config else { return "-".into() };
    let mut names = c.names();
    names.pop();
    names.iter().map(|n| format!("{}={}", crate::space::short(n), c.show(n))).collect::<Vec<_>>().join(" ")
}

/// Gives every run row each hyperparameter another row has, `"auto"` where
/// it has no value.
fn fill_auto(rows: &mut [LeaderboardRow]) {
    let names = row_names(rows);
    for r in rows.iter_mut().filter(|r| r.config.is_some()) {
        for n in &names {
            r.hyperparameters.entry(n.clone()).or_insert_with(|| "auto".into());
        }
    }
}

/// What a run's row says of where its model comes from, its rung, its role
/// and an early stop.
fn origin_notes(r: &crate::run::RunRecord) -> Vec<String> {
    let mut notes = Vec::new();
    match (&r.origin, r.rung) {
        (Origin::Checkpoint { source }, _) => notes.push(format!(
            "checkpoint: epoch {} of {source}'s job (its learning-rate schedule; tokens counted there)",
            show(r.config.n_epochs)
        )),
        (Origin::Continue { parent, parent_epochs }, rung) => notes.push(format!(
            "rung {}: continues {parent} after {parent_epochs} epochs",
            rung.map_or("?".to_string(), |x| x.to_string())
        )),
        (Origin::Job, Some(rung)) => notes.push(format!("rung {rung}")),
        (Origin::Job, None) => {}
    }
    if r.role == SweepRole::Replicate {
        notes.push(format!("replicate (seed {})", r.config.seed));
    }
    if let Some(reason) = &r.stop_reason {
        match r.model_epochs {
            Some(e) => notes.push(format!("stopped early: {reason}; the model is its epoch-{e} checkpoint")),
            None => notes.push(format!("stopped early: {reason}")),
        }
    }
    notes
}

/// How a leaderboard is shown: the metric ranked by, the other scores, and
/// what the interval and the marks against the leader mean.
#[derive(Debug, Clone, Copy)]
pub struct BoardView<'a> {
    pub metric: &'a str,
    /// The other scores, as columns.
    pub others: &'a [String],
    pub alpha: f64,
    pub margin: f64,
    pub pass_fail: bool,
    /// A local sweep's note on the validation references its classifier cannot give.
    pub local_note: Option<&'a str>,
    /// The sweep's name, for the `--wide` hint.
    pub sweep: &'a str,
    /// `best`'s reason for the row it picks (the row marked `is_pick`).
    pub pick: Option<&'a str>,
}

fn p_text(p: f64) -> String {
    if p < 0.001 { "p<0.001".into() } else { format!("p={p:.3}") }
}

/// The row's standing against the leader: `leader`, or the paired test
/// (`n.s. p=…` for not significantly different, `below p=…`, `above p=…`)
/// and the bound on its shortfall (`within margin`, or `≤0.097 below`).
pub fn vs_leader(r: &LeaderboardRow) -> String {
    let test = match (r.is_leader, r.p_value) {
        (true, _) => return "leader".into(),
        (false, Some(p)) if r.tied_with_best => format!("n.s. {}", p_text(p)),
        (false, Some(p)) if r.diff_from_leader.is_some_and(|d| d > 0.0) => format!("above {}", p_text(p)),
        (false, Some(p)) => format!("below {}", p_text(p)),
        (false, None) => return "-".into(),
    };
    match r.shortfall_upper {
        Some(_) if r.within_margin => format!("{test}; within margin"),
        Some(u) => format!("{test}; ≤{u:.3} below"),
        None => test,
    }
}

/// The row's 95 % interval, `[lo, hi]`, or `-`.
pub fn ci(r: &LeaderboardRow) -> String {
    match (r.ci_low, r.ci_high) {
        (Some(lo), Some(hi)) => format!("[{lo:.3}, {hi:.3}]"),
        _ => "-".into(),
    }
}

fn row_label(r: &LeaderboardRow) -> String {
    match (&r.run_id, r.epoch) {
        (Some(id), Some(e)) => format!("{id}@{e}"),
        (Some(id), None) => id.clone(),
        (None, _) => r.kind.clone(),
    }
}

fn hyper_text<T: Copy + std::fmt::Display>(v: Option<Option<T>>) -> String {
    v.map_or_else(|| "-".into(), show)
}

fn note(r: &LeaderboardRow) -> String {
    let mut parts: Vec<String> = r.note.iter().cloned().collect();
    if let Some(e) = &r.error {
        parts.push(e.chars().take(60).collect());
    }
    parts.join("; ")
}

/// A row's hyperparameter `name` as a cell: `-` for a row that is not a run.
fn hyper_cell(r: &LeaderboardRow, name: &str) -> String {
    r.config.as_ref().map_or_else(|| "-".into(), |c| c.show(name))
}

/// What a leaderboard column shows, which decides when it gives way to a narrow terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Rank,
    Run,
    Epochs,
    Hyper,
    Seed,
    Status,
    Metric,
    Ci,
    VsLeader,
    Grader,
    ValidLoss,
    Gap,
    Tokens,
    Cost,
    Note,
}

impl ColumnKind {
    /// A column of a run's own (its configuration or state): the baseline's and evaluated
    /// models' `-` there says nothing about the runs.
    fn of_runs(self) -> bool {
        matches!(self, ColumnKind::Epochs | ColumnKind::Hyper | ColumnKind::Seed | ColumnKind::Status)
    }

    /// Whether a column whose every cell is the same may be left out (saying its value).
    fn may_be_constant(self) -> bool {
        !matches!(self, ColumnKind::Rank | ColumnKind::Run | ColumnKind::Metric | ColumnKind::Ci | ColumnKind::VsLeader)
    }
}

/// One column of the leaderboard table: its header, its cells (a row each) and alignment.
#[derive(Debug, Clone)]
struct Column {
    kind: ColumnKind,
    header: String,
    cells: Vec<String>,
    right: bool,
}

impl Column {
    fn width(&self) -> usize {
        self.cells.iter().chain([&self.header]).map(|c| console::measure_text_width(c)).max().unwrap_or(0)
    }

    /// The value every row has, when they all have the same (for a run's column: every run).
    fn constant(&self, rows: &[LeaderboardRow]) -> Option<&str> {
        let mut cells =
            self.cells.iter().zip(rows).filter(|(_, r)| !self.kind.of_runs() || r.run_id.is_some()).map(|(c, _)| c);
        let first = cells.next()?;
        cells.all(|c| c == first).then_some(first.as_str())
    }
}

/// How the cells are written: in full, or shorter for a narrow terminal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    /// `tokens`, `epochs` for `trained_tokens`, `n_epochs`.
    short_headers: bool,
    /// Run ids cut to the shortest unique prefix (at least [`SHORT_ID`] characters).
    short_ids: bool,
    /// `vs leader` without the p-value: `n.s. ≤0.041`.
    compact_vs: bool,
}

/// The fewest characters a shortened run id keeps (`r-` and six hex digits).
const SHORT_ID: usize = 8;
/// The fewest characters of a note worth showing; with less room the note is left out.
const NOTE_MIN: usize = 12;

/// The row's standing against the leader in short: the test's verdict and the bound.
fn vs_leader_compact(r: &LeaderboardRow) -> String {
    let test = match (r.is_leader, r.p_value) {
        (true, _) => return "leader".into(),
        (false, Some(_)) if r.tied_with_best => "n.s.",
        (false, Some(_)) if r.diff_from_leader.is_some_and(|d| d > 0.0) => "above",
        (false, Some(_)) => "below",
        (false, None) => return "-".into(),
    };
    match r.shortfall_upper {
        Some(_) if r.within_margin => format!("{test} within margin"),
        Some(u) => format!("{test} ≤{u:.3}"),
        None => test.into(),
    }
}

/// Each run id's shortest prefix that no other run id of `rows` shares, of at least [`SHORT_ID`]
/// characters: what `compare` and `promote` accept for the run.
fn short_ids(rows: &[LeaderboardRow]) -> BTreeMap<String, String> {
    let ids: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r.run_id.as_deref()).collect();
    ids.iter()
        .map(|id| {
            let chars: Vec<char> = id.chars().collect();
            let n = (SHORT_ID..chars.len())
                .find(|&n| {
                    let prefix: String = chars[..n].iter().collect();
                    ids.iter().filter(|o| o.starts_with(&prefix)).count() == 1
                })
                .unwrap_or(chars.len());
            (id.to_string(), chars[..n].iter().collect())
        })
        .collect()
}

/// The leaderboard's columns in full order: rank, run, the epochs and other hyperparameters,
/// seed, status, the metric, its interval, the test against the leader, the other scores,
/// validation loss, gap, trained tokens, cost and note. The rank of `best`'s pick reads `N best`.
fn board_columns(rows: &[LeaderboardRow], view: &BoardView<'_>, style: Style) -> Vec<Column> {
    let hyper = row_names(rows);
    let ids = if style.short_ids { short_ids(rows) } else { BTreeMap::new() };
    let column = |kind, header: &str, right, cell: &dyn Fn(&LeaderboardRow) -> String| Column {
        kind,
        header: header.to_string(),
        cells: rows.iter().map(cell).collect(),
        right,
    };
    let label = |r: &LeaderboardRow| {
        let full = row_label(r);
        match r.run_id.as_ref().and_then(|id| ids.get(id).map(|s| (id, s))) {
            Some((id, short)) => full.replacen(id.as_str(), short, 1),
            None => full,
        }
    };
    let rank = |r: &LeaderboardRow| {
        let rank = r.rank.map_or_else(|| "-".into(), |x| x.to_string());
        if r.is_pick { format!("{rank} best") } else { rank }
    };
    let short = |full: &'static str, short: &'static str| if style.short_headers { short } else { full };
    let mut cols = vec![
        column(ColumnKind::Rank, "rank", false, &rank),
        column(ColumnKind::Run, "run", false, &label),
        column(ColumnKind::Epochs, short("n_epochs", "epochs"), true, &|r| hyper_text(r.n_epochs)),
    ];
    cols.extend(hyper.iter().map(|n| column(ColumnKind::Hyper, crate::space::short(n), true, &|r| hyper_cell(r, n))));
    cols.extend([
        column(ColumnKind::Seed, "seed", true, &|r| r.seed.map_or_else(|| "-".into(), |s| s.to_string())),
        column(ColumnKind::Status, "status", false, &|r| {
            if r.run_id.is_some() { r.status.clone() } else { "-".into() }
        }),
        column(ColumnKind::Metric, view.metric, true, &|r| opt(r.score, 3)),
        column(ColumnKind::Ci, "95% CI", false, &ci),
        column(ColumnKind::VsLeader, "vs leader", false, &|r| {
            if style.compact_vs { vs_leader_compact(r) } else { vs_leader(r) }
        }),
    ]);
    cols.extend(
        view.others
            .iter()
            .map(|n| column(ColumnKind::Grader, n, true, &|r| opt(r.scores.get(n).copied().flatten(), 3))),
    );
    cols.extend([
        column(ColumnKind::ValidLoss, "valid_loss", true, &|r| loss(r.valid_loss)),
        column(ColumnKind::Gap, "gap", true, &|r| r.gap.map_or_else(|| "-".into(), |g| format!("{g:+.3}"))),
        column(ColumnKind::Tokens, short("trained_tokens", "tokens"), true, &|r| {
            r.trained_tokens.map_or_else(|| "-".into(), |x| x.to_string())
        }),
        column(ColumnKind::Cost, "cost", true, &|r| usd(r.cost_usd).replace('?', "-")),
        column(ColumnKind::Note, "note", false, &note),
    ]);
    cols
}

/// The width of a table of columns this wide, as [`new_table`] draws it: a space either side of
/// each cell and a border between and around them.
fn drawn_width(widths: impl IntoIterator<Item = usize>) -> usize {
    let (sum, n) = widths.into_iter().fold((0, 0), |(s, n), w| (s + w + 2, n + 1));
    sum + n + 1
}

/// One way of giving way to a narrow terminal, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Leave out the columns with one value in every row, and shorten two headers.
    Constants,
    /// Leave out every column of this kind, the last first, one at a time.
    Drop(ColumnKind),
    ShortIds,
    CompactVs,
}

/// The steps, in order; rank, run and the metric are always shown. At each, the note takes
/// the room the other columns leave (see [`Layout::fits`]).
const STEPS: [Step; 14] = [
    Step::Constants,
    Step::Drop(ColumnKind::Gap),
    Step::Drop(ColumnKind::ValidLoss),
    Step::ShortIds,
    Step::Drop(ColumnKind::Grader),
    Step::CompactVs,
    Step::Drop(ColumnKind::Seed),
    Step::Drop(ColumnKind::Status),
    Step::Drop(ColumnKind::Cost),
    Step::Drop(ColumnKind::Ci),
    Step::Drop(ColumnKind::Tokens),
    Step::Drop(ColumnKind::Hyper),
    Step::Drop(ColumnKind::Epochs),
    Step::Drop(ColumnKind::VsLeader),
];

/// The table as it will be drawn: which columns (indices into [`board_columns`]'s), the style
/// of the cells, the note's width when cut short, and what was left out and why.
#[derive(Debug, Clone, Default)]
struct Layout {
    style: Style,
    hidden: Vec<usize>,
    /// Columns left out because every row has the same value: (header, value, of runs only).
    constants: Vec<(String, String, bool)>,
    /// Other columns left out, by header, in the order they went.
    dropped: Vec<String>,
    /// The width the notes are cut to.
    note_width: Option<usize>,
    /// The note is left out: too little room is left for it.
    note_out: bool,
}

impl Layout {
    /// Whether the columns shown fit `limit`; the note takes the room the others leave, cut
    /// short to it, or is left out when that is less than [`NOTE_MIN`].
    fn fits(&mut self, cols: &[Column], limit: usize) -> bool {
        let shown = |i: &usize| !self.hidden.contains(i);
        let note = cols.iter().position(|c| c.kind == ColumnKind::Note).filter(shown);
        let rest = drawn_width((0..cols.len()).filter(shown).filter(|i| Some(*i) != note).map(|i| cols[i].width()));
        (self.note_width, self.note_out) = (None, false);
        let Some(note) = note else { return rest <= limit };
        let room = limit.saturating_sub(rest + 3);
        if cols[note].width() <= room {
            return true;
        }
        if room >= NOTE_MIN {
            self.note_width = Some(room);
        } else {
            self.note_out = true;
        }
        rest <= limit
    }

    fn shows(&self, cols: &[Column], i: usize) -> bool {
        let note_out = self.note_out && cols[i].kind == ColumnKind::Note;
        !self.hidden.contains(&i) && !note_out
    }
}

/// How the table fits `limit` columns: each [`Step`] in turn until it does (see [`STEPS`]);
/// with the steps all taken it shows rank, run and the metric, however narrow the limit.
fn fit(rows: &[LeaderboardRow], view: &BoardView<'_>, limit: usize) -> Layout {
    let mut layout = Layout::default();
    let mut cols = board_columns(rows, view, layout.style);
    if layout.fits(&cols, limit) {
        return layout;
    }
    for step in STEPS {
        match step {
            Step::Constants => {
                for (i, c) in cols.iter().enumerate().filter(|(_, c)| c.kind.may_be_constant()) {
                    if let Some(v) = c.constant(rows) {
                        layout.hidden.push(i);
                        layout.constants.push((full_header(c), v.to_string(), c.kind.of_runs()));
                    }
                }
                layout.style.short_headers = true;
            }
            Step::ShortIds => layout.style.short_ids = true,
            Step::CompactVs => layout.style.compact_vs = true,
            Step::Drop(kind) => {
                let mut of_kind: Vec<usize> =
                    (0..cols.len()).filter(|i| cols[*i].kind == kind && !layout.hidden.contains(i)).collect();
                while let Some(i) = of_kind.pop() {
                    layout.hidden.push(i);
                    layout.dropped.push(full_header(&cols[i]));
                    if !of_kind.is_empty() && layout.fits(&cols, limit) {
                        return layout;
                    }
                }
            }
        }
        cols = board_columns(rows, view, layout.style);
        if layout.fits(&cols, limit) {
            return layout;
        }
    }
    layout
}

/// A column's header as `--wide` prints it.
fn full_header(c: &Column) -> String {
    match c.kind {
        ColumnKind::Epochs => "n_epochs".into(),
        ColumnKind::Tokens => "trained_tokens".into(),
        _ => c.header.clone(),
    }
}

/// What the table left out to fit, for the line under it.
fn left_out_line(layout: &Layout, view: &BoardView<'_>, limit: usize) -> Option<String> {
    let mut parts: Vec<String> = layout
        .constants
        .iter()
        .map(|(h, v, runs)| match (v.as_str(), runs) {
            ("", _) => format!("{h} (empty)"),
            (v, true) => format!("{h} ({v} in every run)"),
            (v, false) => format!("{h} ({v} in every row)"),
        })
        .collect();
    parts.extend(layout.dropped.iter().cloned());
    if layout.note_out {
        parts.push("note".into());
    }
    let mut also = Vec::new();
    if layout.note_width.is_some() {
        also.push("notes cut short (…)".to_string());
    }
    if layout.style.short_ids {
        also.push("run ids cut to unique prefixes".to_string());
    }
    if layout.style.compact_vs {
        also.push("vs leader without p-values".to_string());
    }
    if parts.is_empty() && also.is_empty() {
        return None;
    }
    let mut line = format!("to fit {limit} columns");
    if !parts.is_empty() {
        line.push_str(&format!(", left out: {}", parts.join(", ")));
    }
    if !also.is_empty() {
        line.push_str(&format!("; {}", also.join("; ")));
    }
    Some(format!("{line}. `ftsweep leaderboard {} --wide` shows every column.", view.sweep))
}

/// The line on `best`'s pick: its rank and row, its model, and `best`'s reason without the
/// row's figures it starts with (the table shows them); `short`: the reason's first clause.
fn pick_line(rows: &[LeaderboardRow], view: &BoardView<'_>, short: bool) -> Option<String> {
    let r = rows.iter().find(|r| r.is_pick)?;
    let mut line = format!(
        "best: rank {} ({}), model {}",
        r.rank.map_or_else(|| "-".into(), |x| x.to_string()),
        row_label(r),
        r.model.as_deref().unwrap_or("-")
    );
    if let Some(reason) = view.pick {
        let reason = match reason.split_once("): ") {
            Some((head, rest)) if head.starts_with(r.run_id.as_deref().unwrap_or(&r.kind)) => rest,
            _ => reason,
        };
        let first = [reason.find("; "), reason.find(": ")].into_iter().flatten().min();
        match first.filter(|_| short) {
            Some(end) => {
                line.push_str(&format!(": {} (`ftsweep best {}` says why in full)", &reason[..end], view.sweep))
            }
            None => line.push_str(&format!(": {reason}")),
        }
    }
    Some(line)
}

/// `text` with each line broken at spaces to at most `width` columns (a word longer than that
/// keeps its own line); unchanged without a width.
pub fn wrap(text: &str, width: Option<usize>) -> String {
    let Some(width) = width else { return text.to_string() };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut current = String::new();
        for word in line.split(' ') {
            let candidate = if current.is_empty() { word.to_string() } else { format!("{current} {word}") };
            if console::measure_text_width(&candidate) <= width || current.is_empty() {
                current = candidate;
            } else {
                out.push(std::mem::replace(&mut current, word.to_string()));
            }
        }
        out.push(current);
    }
    out.join("\n")
}

/// A secondary table (rungs, seed groups) kept within `width`: its cells wrapped when it would
/// be wider.
fn within(mut t: Table, width: Option<usize>) -> Table {
    let Some(w) = width else { return t };
    // No header word is broken when the longest of each column fit the width side by side
    // (the bound counts the padding).
    let words: Vec<usize> = t.header().map_or_else(Vec::new, |h| {
        h.cell_iter()
            .map(|c| c.content().split_whitespace().map(console::measure_text_width).max().unwrap_or(0) + 2)
            .collect()
    });
    if words.iter().map(|n| n + 1).sum::<usize>() < w {
        for (i, n) in words.into_iter().enumerate() {
            if let Some(c) = t.column_mut(i) {
                c.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(u16::try_from(n).unwrap_or(u16::MAX))));
            }
        }
    }
    t.set_content_arrangement(ContentArrangement::Dynamic).set_width(u16::try_from(w).unwrap_or(u16::MAX));
    t
}

/// What the interval and the marks against the leader mean, under the table.
pub fn board_legend(rows: &[LeaderboardRow], view: &BoardView<'_>) -> String {
    legend(rows, view, Style::default(), true)
}

fn legend(rows: &[LeaderboardRow], view: &BoardView<'_>, style: Style, gap: bool) -> String {
    let n = rows.iter().find(|r| r.is_leader).and_then(|r| r.n_eval).unwrap_or(0);
    let (interval, test) = if view.pass_fail {
        ("Wilson", "exact McNemar test")
    } else {
        ("percentile bootstrap, 2000 resamples", "paired bootstrap, 10000 resamples")
    };
    let below = if style.compact_vs { "≤x" } else { "≤x below" };
    let mut legend = format!(
        "{}: mean over {n} examples; 95% CI: {interval}. vs leader: {test} on the same examples; \
         `n.s.` = not significantly different at alpha = {alpha} (no correction for multiple comparisons), \
         which is no evidence that it is as good; `{below}` = at most x below the leader ({confidence}% one-sided \
         bound); `within margin` = that bound is below the margin {margin}, the only runs `best` may pick \
         instead of the leader.",
        view.metric,
        alpha = view.alpha,
        confidence = crate::stats::confidence_percent(view.alpha),
        margin = view.margin
    );
    if gap {
        legend.push_str(" gap = valid_loss - train_loss.");
    }
    legend.extend(view.local_note.map(|note| format!(" {note}.")));
    legend
}

/// The ranked table, with its legend, the line on `best`'s pick, and the tables of rungs and
/// seed groups when there are some; within `width` columns when given (see [`fit`]; the prose is
/// wrapped to it), else every column in full.
pub fn leaderboard_table(rows: &[LeaderboardRow], view: &BoardView<'_>, width: Option<usize>) -> String {
    let layout = width.map(|w| fit(rows, view, w)).unwrap_or_default();
    let cols = board_columns(rows, view, layout.style);
    let shown: Vec<&Column> = (0..cols.len()).filter(|&i| layout.shows(&cols, i)).map(|i| &cols[i]).collect();
    let mut t = new_table(&shown.iter().map(|c| c.header.as_str()).collect::<Vec<_>>());
    for i in 0..rows.len() {
        t.add_row(shown.iter().map(|c| match (c.kind, layout.note_width) {
            (ColumnKind::Note, Some(w)) => console::truncate_str(&c.cells[i], w, "…").into_owned(),
            _ => c.cells[i].clone(),
        }));
    }
    for (i, c) in shown.iter().enumerate() {
        if c.right {
            right(&mut t, i, i + 1);
        }
    }
    let gap = shown.iter().any(|c| c.kind == ColumnKind::Gap);
    let mut prose = vec![legend(rows, view, layout.style, gap)];
    prose.extend(pick_line(rows, view, width.is_some()));
    prose.extend(width.and_then(|w| left_out_line(&layout, view, w)));
    let mut out = t.to_string();
    for p in prose {
        out.push('\n');
        out.push_str(&wrap(&p, width));
    }
    let extras = [rung_table_within(rows, view.metric, width), seed_group_table_within(rows, view.metric, width)];
    for extra in extras.into_iter().flatten() {
        out.push('\n');
        out.push_str(&extra);
    }
    out
}

/// The ranked table in GitHub Markdown, for pull requests: every column.
pub fn leaderboard_markdown(rows: &[LeaderboardRow], view: &BoardView<'_>) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let cols = board_columns(rows, view, Style::default());
    let headers: Vec<&str> = cols.iter().map(|c| c.header.as_str()).collect();
    let mut out = format!("| {} |\n", headers.join(" | "));
    let align: Vec<&str> = cols.iter().map(|c| if c.right { "---:" } else { "---" }).collect();
    out.push_str(&format!("| {} |\n", align.join(" | ")));
    for i in 0..rows.len() {
        let cells: Vec<String> = cols.iter().map(|c| escape(&c.cells[i])).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push_str(&format!("\n{}\n", board_legend(rows, view)));
    if let Some(line) = pick_line(rows, view, false) {
        out.push_str(&format!("\n{}\n", escape(&line)));
    }
    out
}

/// The rows as CSV (RFC 4180), every score a column; empty cells are unknown.
pub fn leaderboard_csv(rows: &[LeaderboardRow], names: &[String]) -> String {
    let num = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
    let hyper_csv = |v: Option<String>| v.unwrap_or_default();
    let mut header: Vec<String> = ["rank", "run_id", "kind", "is_baseline", "epoch", "status", "n_epochs"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let hyper = row_names(rows);
    header.extend(hyper.iter().cloned());
    header.extend(
        [
            "seed",
            "model",
            "metric",
            "score",
            "ci_low",
            "ci_high",
            "tied_with_best",
            "shortfall_upper",
            "within_margin",
            "test",
            "p_value",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    header.extend(names.iter().cloned());
    header.extend(
        ["valid_loss", "train_loss", "gap", "overfit", "trained_tokens", "cost_usd", "note", "error"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut write = |cells: &[String]| out.write_record(cells).expect("writing CSV to memory cannot fail");
    write(&header);
    for r in rows {
        let mut cells = vec![
            r.rank.map_or_else(String::new, |x| x.to_string()),
            r.run_id.clone().unwrap_or_default(),
            r.kind.clone(),
            r.is_baseline.to_string(),
            r.epoch.map_or_else(String::new, |e| e.to_string()),
            r.status.clone(),
            hyper_csv(r.n_epochs.map(show)),
        ];
        cells.extend(hyper.iter().map(|n| if r.config.is_some() { hyper_cell(r, n) } else { String::new() }));
        cells.extend([
            r.seed.map_or_else(String::new, |s| s.to_string()),
            r.model.clone().unwrap_or_default(),
            r.metric.clone(),
            num(r.score),
            num(r.ci_low),
            num(r.ci_high),
            r.tied_with_best.to_string(),
            num(r.shortfall_upper),
            r.within_margin.to_string(),
            r.test.clone().unwrap_or_default(),
            num(r.p_value),
        ]);
        cells.extend(names.iter().map(|n| num(r.scores.get(n).copied().flatten())));
        cells.extend([
            num(r.valid_loss),
            num(r.train_loss),
            num(r.gap),
            r.overfit.to_string(),
            r.trained_tokens.map_or_else(String::new, |t| t.to_string()),
            num(r.cost_usd),
            r.note.clone().unwrap_or_default(),
            r.error.clone().unwrap_or_default(),
        ]);
        write(&cells);
    }
    let bytes = out.into_inner().expect("flushing CSV to memory cannot fail");
    String::from_utf8(bytes).expect("CSV of strings is UTF-8")
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn loss(x: Option<f64>) -> String {
    match x {
        Some(v) if !v.is_finite() => "inf".into(),
        Some(v) if v >= 1000.0 => format!("{v:.3e}"),
        other => opt(other, 3),
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    t
}

fn right(t: &mut Table, from: usize, to: usize) {
    for i in from..to {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// One planned run, as `plan --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanRow {
    pub run_id: String,
    #[serde(serialize_with = "auto_or")]
    pub n_epochs: Option<u32>,
    /// The other hyperparameters by name: a number, or `"auto"` for one
    /// that another run gives a value.
    #[serde(flatten)]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    pub seed: u64,
    /// The run's configuration.
    #[serde(skip)]
    pub config: RunConfig,
    /// `job`, `checkpoint` (of `source_run`'s job: trains nothing itself) or
    /// `continue` (a halving rung continuing `source_run`'s model).
    pub origin: String,
    pub source_run: Option<String>,
    pub rung: Option<u32>,
    /// The run's recorded state, or `new` when the database does not know it.
    pub status: String,
    /// Whether running the sweep would train it (it is not done).
    pub to_train: bool,
    pub epochs_estimated: bool,
    pub estimated_trained_tokens: u64,
    pub estimated_training_cost_usd: Option<f64>,
    pub estimated_eval_cost_usd: Option<f64>,
    pub estimated_cost_usd: Option<f64>,
}

/// Builds plan rows for a sweep on `provider`; `status_of` gives a run's recorded state.
pub fn plan_rows(
    runs: &[PlannedRun],
    data: &crate::pricing::DataFigures,
    price: Option<crate::pricing::Price>,
    provider: crate::run::ProviderKind,
    status_of: impl Fn(&str) -> Option<String>,
) -> Vec<PlanRow> {
    let names = shown_names(runs.iter().map(|r| &r.config));
    runs.iter()
        .map(|r| {
            let mut hyperparameters = json_params(&r.config);
            for n in &names {
                hyperparameters.entry(n.clone()).or_insert_with(|| "auto".into());
            }
            // A checkpoint trains nothing; a job's evaluations during training are billed on Together.
            let n_evals = match r.job_epochs() {
                Some(0) => 0,
                _ => r.config.get("n_evals").map_or(0, |v| v.as_f64() as u32),
            };
            let e = crate::pricing::estimate_on(provider, r.job_epochs(), n_evals, data, price);
            let status = status_of(&r.run_id).unwrap_or_else(|| "new".into());
            PlanRow {
                run_id: r.run_id.clone(),
                n_epochs: r.config.n_epochs,
                hyperparameters,
                seed: r.config.seed,
                config: r.config.clone(),
                origin: r.origin.kind().to_string(),
                source_run: r.origin.source().map(str::to_string),
                rung: r.rung,
                // As `run` sees it: a done or cancelled run is not trained again.
                to_train: !matches!(status.as_str(), "done" | "cancelled"),
                status,
                epochs_estimated: e.epochs_estimated,
                estimated_trained_tokens: e.trained_tokens,
                estimated_training_cost_usd: e.training_usd,
                estimated_eval_cost_usd: e.eval_usd,
                estimated_cost_usd: e.total_usd(),
            }
        })
        .collect()
}

fn usd(x: Option<f64>) -> String {
    match x {
        None => "?".into(),
        Some(v) if v > 0.0 && v < 0.01 => format!("${v:.4}"),
        // -0.0 (a float sum of nothing) and what rounds to it: never `$-0.00`.
        Some(v) if v <= 0.0 && v > -0.005 => "$0.00".into(),
        Some(v) => format!("${v:.2}"),
    }
}

/// The plan table.
pub fn plan_table(rows: &[PlanRow]) -> String {
    let hyper = shown_names(rows.iter().map(|r| &r.config));
    let mut header: Vec<&str> = vec!["#", "run", "n_epochs"];
    header.extend(hyper.iter().map(|n| crate::space::short(n)));
    header.extend(["seed", "from", "status", "est_trained_tokens", "est_training", "est_eval"]);
    let mut t = new_table(&header);
    for (i, r) in rows.iter().enumerate() {
        let tokens = if r.epochs_estimated {
            format!("~{}", r.estimated_trained_tokens)
        } else {
            r.estimated_trained_tokens.to_string()
        };
        let mut cells = vec![(i + 1).to_string(), r.run_id.clone(), show(r.n_epochs)];
        cells.extend(hyper.iter().map(|n| r.config.show(n)));
        cells.extend([
            r.seed.to_string(),
            match (&r.source_run, r.rung) {
                (Some(s), _) if r.origin == "checkpoint" => format!("ckpt of {s}"),
                (Some(s), _) => format!("continues {s}"),
                (None, Some(rung)) => format!("job, rung {rung}"),
                (None, None) => "job".to_string(),
            },
            r.status.clone(),
            tokens,
            usd(r.estimated_training_cost_usd),
            usd(r.estimated_eval_cost_usd),
        ]);
        t.add_row(cells);
    }
    let k = hyper.len();
    right(&mut t, 2, 4 + k);
    right(&mut t, 6 + k, 9 + k);
    t.to_string()
}

/// The hosted providers whose request fields `plan` compares.
pub const HOSTED: [crate::run::ProviderKind; 3] =
    [crate::run::ProviderKind::OpenAi, crate::run::ProviderKind::Azure, crate::run::ProviderKind::Together];

/// What each hyperparameter `names` becomes in a create request: a row per
/// name, a column for `provider` first, then the other hosted providers
/// (`-`: that provider does not take the name).
pub fn request_fields_table(
    provider: crate::run::ProviderKind,
    method: crate::space::Method,
    names: &[&str],
) -> String {
    let others: Vec<_> = HOSTED.into_iter().filter(|p| *p != provider).collect();
    let this = format!("{} (this sweep)", provider.as_str());
    let mut header: Vec<&str> = vec!["hyperparameter", &this];
    header.extend(others.iter().map(|p| p.as_str()));
    let mut t = new_table(&header);
    for name in names {
        let field = |p| crate::space::request_field_for(p, method, name).unwrap_or_else(|| "-".into());
        let mut cells = vec![(*name).to_string(), field(provider)];
        cells.extend(others.iter().map(|p| field(*p)));
        t.add_row(cells);
    }
    t.to_string()
}

/// Formats an amount in USD for messages; `?` when unknown.
pub fn format_usd(x: Option<f64>) -> String {
    usd(x)
}

/// The summary table of `data check`: one row per file.
pub fn check_table(reports: &[crate::data::check::FileReport]) -> String {
    use crate::data::check::Severity;
    let mut t = new_table(&["file", "lines", "examples", "errors", "warnings", "billed_tokens", "over_limit"]);
    for r in reports {
        t.add_row(vec![
            r.path.display().to_string(),
            r.lines.to_string(),
            r.examples.to_string(),
            r.total(Severity::Error).to_string(),
            r.total(Severity::Warning).to_string(),
            r.billing_tokens.to_string(),
            r.over_limit.to_string(),
        ]);
    }
    right(&mut t, 1, 7);
    t.to_string()
}

/// Every kept problem of a report as `file:line: severity: message [code]`, in line order (the
/// problems of the whole file last), then for each kind how many more were found but not listed.
pub fn problem_lines(report: &crate::data::check::FileReport) -> Vec<String> {
    let mut kept: Vec<_> = report.problems.iter().collect();
    kept.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    let mut out: Vec<String> = kept.iter().map(|p| report.describe(p)).collect();
    for (code, &count) in &report.counts {
        let listed = report.problems.iter().filter(|p| p.code == *code).count();
        if count > listed {
            out.push(format!("{}: ... and {} more [{}]", report.path.display(), count - listed, code));
        }
    }
    out
}

/// The text of `data stats`: a table of distributions, then the labels.
pub fn stats_text(r: &crate::data::check::FileReport, s: &crate::data::stats::DataStats) -> String {
    let mut out = format!(
        "{}: {} examples, {} distinct replies, {} billed tokens per epoch ({}, limit {} per example, {} over it); \
         \"auto\" epochs ≈ {}\n",
        r.path.display(),
        s.examples,
        s.distinct_replies,
        s.billing_tokens,
        r.encoding.name(),
        s.token_limit,
        s.over_limit,
        s.default_epochs
    );
    let mut t = new_table(&["per example", "min", "p5", "p10", "p50", "p90", "p95", "max", "mean"]);
    for (name, d) in [("messages", &s.messages), ("tokens", &s.total_tokens), ("assistant tokens", &s.assistant_tokens)]
    {
        if let Some(d) = d {
            t.add_row(vec![
                name.to_string(),
                d.min.to_string(),
                d.p5.to_string(),
                d.p10.to_string(),
                d.p50.to_string(),
                d.p90.to_string(),
                d.p95.to_string(),
                d.max.to_string(),
                format!("{:.1}", d.mean),
            ]);
        }
    }
    right(&mut t, 1, 9);
    out.push_str(&t.to_string());
    out.push_str("\npercentiles are nearest-rank: p90 is the value at rank ⌈0.9·n⌉ of the sorted values\n");
    if let Some(labels) = &s.labels {
        let mut t = new_table(&["label", "examples", "share"]);
        for l in labels {
            t.add_row(vec![l.label.clone(), l.count.to_string(), format!("{:.1}%", l.share * 100.0)]);
        }
        right(&mut t, 1, 3);
        out.push_str(&format!("\nthe replies form a label set of {}:\n{t}", labels.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rank::{Grades, Settings, standings};
    use crate::run::{RunRecord, RunState};

    fn run(id: &str, config: RunConfig, state: RunState, error: Option<&str>) -> RunRecord {
        let planned = PlannedRun { run_id: id.into(), config, origin: Origin::Job, rung: None };
        RunRecord {
            job_id: Some(format!("ftjob-{id}")),
            model: (state == RunState::Done).then(|| format!("ft:m:{id}")),
            error: error.map(str::to_string),
            trained_tokens: Some(1200),
            train_loss: Some(0.5),
            valid_loss: Some(0.75),
            ..RunRecord::new(&planned, state)
        }
    }

    fn candidate(kind: EvalKind, run: Option<RunRecord>, passes: Option<usize>) -> Candidate {
        let scores = passes.map(|p| (0..20).map(|i| if i < p { 1.0 } else { 0.0 }).collect());
        Candidate {
            role: kind,
            model: run.as_ref().map_or(Some("gpt-base".into()), |r| r.model.clone()),
            valid_loss: run.as_ref().and_then(|r| r.valid_loss),
            train_loss: run.as_ref().and_then(|r| r.train_loss),
            trained_tokens: run.as_ref().and_then(|r| r.trained_tokens),
            run,
            epoch: None,
            grades: Grades(BTreeMap::from([("exact_match".to_string(), scores)])),
            valid_curve: vec![],
            cost_usd: Some(0.25),
            inference_price: Some(1.0),
            n_examples: if passes.is_some() { 20 } else { 0 },
        }
    }

    /// Three finished runs (one with `auto` batch size, one with a
    /// hyperparameter outside OpenAI's four), a failed run whose error needs
    /// quoting in CSV, and the baseline.
    fn board() -> (Vec<LeaderboardRow>, Vec<String>) {
        let mut warm = RunConfig::supervised(Some(2), Some(8), Some(0.5), 7);
        warm.set("warmup_ratio", Some(crate::run::Value::Float(0.1)));
        let cs = vec![
            candidate(
                EvalKind::Run,
                Some(run("r-a", RunConfig::supervised(Some(3), Some(8), Some(2.0), 7), RunState::Done, None)),
                Some(16),
            ),
            candidate(
                EvalKind::Run,
                Some(run("r-b", RunConfig::supervised(Some(1), None, Some(1.0), 7), RunState::Done, None)),
                Some(12),
            ),
            candidate(EvalKind::Run, Some(run("r-c", warm, RunState::Done, None)), Some(15)),
            candidate(
                EvalKind::Run,
                Some(run(
                    "r-d",
                    RunConfig::supervised(Some(1), Some(4), Some(0.1), 7),
                    RunState::Failed,
                    Some("invalid \"batch\", too large|x"),
                )),
                None,
            ),
            candidate(EvalKind::Baseline, None, Some(2)),
        ];
        let settings = Settings { metric: "exact_match", pass_fail: true, alpha: 0.05, margin: 0.02 };
        let names = vec!["exact_match".to_string()];
        (leaderboard_rows(&cs, &standings(&cs, &settings), "exact_match", &names), names)
    }

    fn view(names: &[String]) -> BoardView<'_> {
        BoardView {
            metric: "exact_match",
            others: &names[1..],
            alpha: 0.05,
            margin: 0.02,
            pass_fail: true,
            local_note: None,
            sweep: "s",
            pick: None,
        }
    }

    #[test]
    fn the_leaderboard_table_shows_the_hyperparameters_the_runs_use() {
        let (rows, names) = board();
        insta::assert_snapshot!(leaderboard_table(&rows, &view(&names), None));
    }

    #[test]
    fn the_leaderboard_csv_quotes_what_needs_quoting() {
        let (rows, names) = board();
        let csv = leaderboard_csv(&rows, &names);
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let header = reader.headers().unwrap().clone();
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), rows.len(), "one record a row, whatever the fields hold");
        let error = header.iter().position(|h| h == "error").unwrap();
        assert!(records.iter().any(|r| &r[error] == "invalid \"batch\", too large|x"));
        insta::assert_snapshot!(csv);
    }

    #[test]
    fn the_leaderboard_markdown_escapes_pipes() {
        let (rows, names) = board();
        insta::assert_snapshot!(leaderboard_markdown(&rows, &view(&names)));
    }

    #[test]
    fn json_rows_carry_each_hyperparameter_by_name_and_auto_where_a_run_has_none() {
        let (rows, _) = board();
        let json = serde_json::to_value(&rows).unwrap();
        let by_id = |id: &str| json.as_array().unwrap().iter().find(|r| r["run_id"] == id).unwrap().clone();
        assert_eq!(by_id("r-b")["batch_size"], "auto");
        assert_eq!(by_id("r-a")["warmup_ratio"], "auto");
        assert_eq!(by_id("r-c")["warmup_ratio"], 0.1);
        let baseline = json.as_array().unwrap().iter().find(|r| r["is_baseline"] == true).unwrap();
        assert!(baseline.get("batch_size").is_none() && baseline["n_epochs"].is_null(), "{baseline}");
    }

    /// The header of a drawn table: the cells of its second line.
    fn header_of(table: &str) -> Vec<String> {
        let line = table.lines().nth(1).unwrap();
        line.trim_matches('│').split('┆').map(|c| c.trim().to_string()).collect()
    }

    /// The board with two more graders, each rank's run id long and `r-a` picked by `best`.
    fn wide_board() -> (Vec<LeaderboardRow>, Vec<String>) {
        let (mut rows, _) = board();
        let names: Vec<String> = ["exact_match", "contains", "json_valid"].iter().map(|s| s.to_string()).collect();
        for (i, r) in rows.iter_mut().enumerate() {
            if let Some(id) = &mut r.run_id {
                *id = format!("{id}-{i}c0ffee{i}0123456");
            }
            r.scores.insert("contains".into(), Some(0.5 + 0.1 * i as f64));
            r.scores.insert("json_valid".into(), Some(0.25 * i as f64));
        }
        rows[0].is_pick = true;
        (rows, names)
    }

    const REASON: &str = "r-a-0c0ffee00123456 (exact_match 0.800; n_epochs=3): the leader; no cheaper run is shown \
                          to be within the margin";

    #[test]
    fn the_table_leaves_out_columns_in_order_until_it_fits_and_says_what_it_left_out() {
        let (rows, names) = wide_board();
        let view = BoardView { pick: Some(REASON), ..view(&names) };
        let full = leaderboard_table(&rows, &view, None);
        let full_width = full.lines().next().unwrap().chars().count();
        assert_eq!(header_of(&full).len(), 18, "every column without a width:\n{full}");
        assert!(!full.contains("--wide"), "nothing is left out, so no hint:\n{full}");
        // The order: the columns with one value in every row (seed, cost), then gap, valid_loss,
        // the other graders (the last first), ...
        let expected: [&[&str]; 5] = [
            &["seed", "cost"],
            &["seed", "cost", "gap"],
            &["seed", "cost", "gap", "valid_loss"],
            &["seed", "cost", "gap", "valid_loss", "json_valid"],
            &["seed", "cost", "gap", "valid_loss", "json_valid", "contains"],
        ];
        let mut seen = Vec::new();
        for width in (30..full_width).rev() {
            let table = leaderboard_table(&rows, &view, Some(width));
            let header = header_of(&table);
            for must in ["rank", "run", "exact_match"] {
                assert!(header.iter().any(|h| h == must), "`{must}` is always shown at {width}:\n{table}");
            }
            let gone: Vec<&str> = ["seed", "cost", "gap", "valid_loss", "json_valid", "contains"]
                .into_iter()
                .filter(|h| !header.iter().any(|x| x == h))
                .collect();
            if !seen.contains(&gone) {
                seen.push(gone.clone());
            }
            let prose = table.replace('\n', " ");
            assert!(prose.contains(&format!("to fit {width} columns")), "{table}");
            assert!(prose.contains("`ftsweep leaderboard s --wide` shows every column"), "{table}");
            if width >= 60 {
                for line in table.lines() {
                    assert!(line.chars().count() <= width, "{width}: a line of {}:\n{table}", line.chars().count());
                }
            }
        }
        for (i, want) in expected.iter().enumerate() {
            assert!(seen.iter().any(|g| g == want), "step {i}: {want:?} is a stage on the way; seen {seen:?}");
        }
        let order: Vec<usize> = expected.iter().map(|want| seen.iter().position(|g| g == want).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "in this order: {seen:?}");
        let narrow = leaderboard_table(&rows, &view, Some(80)).replace('\n', " ");
        assert!(narrow.contains("seed (7 in every run)") && narrow.contains("cost ($0.25 in every row)"), "{narrow}");
    }

    #[test]
    fn the_note_takes_the_room_left_cut_short_with_an_ellipsis() {
        let (rows, names) = wide_board();
        let view = view(&names);
        let full = leaderboard_table(&rows, &view, None);
        let full_width = full.lines().next().unwrap().chars().count();
        // Ten columns fewer than it needs: the note (the widest cell is the baseline's) is cut.
        let table = leaderboard_table(&rows, &view, Some(full_width - 10));
        assert!(header_of(&table).contains(&"note".to_string()), "{table}");
        assert!(table.contains("baseline: `gpt-base`, unt…") || table.contains('…'), "{table}");
        assert!(table.replace('\n', " ").contains("notes cut short"), "{table}");
    }

    #[test]
    fn narrow_tables_cut_run_ids_to_unique_prefixes_and_drop_the_p_values() {
        let (rows, names) = wide_board();
        let view = view(&names);
        let table = leaderboard_table(&rows, &view, Some(72));
        // r-a-0c0ffee00123456 and r-b-2c0ffee2… share no 8-character prefix.
        let grid: String = table.lines().take_while(|l| !l.starts_with('└')).collect();
        assert!(grid.contains("r-a-0c0f ") && !grid.contains("r-a-0c0ffee0"), "{table}");
        assert!(table.replace('\n', " ").contains("run ids cut to unique prefixes"), "{table}");
        assert!(table.contains("n.s. ≤0.196") && !table.contains("p=1.000"), "{table}");
        let ids = short_ids(&[
            LeaderboardRow { run_id: Some("r-0123456789a".into()), ..rows[0].clone() },
            LeaderboardRow { run_id: Some("r-0123456789b".into()), ..rows[0].clone() },
            LeaderboardRow { run_id: Some("r-fedcba9876".into()), ..rows[0].clone() },
        ]);
        assert_eq!(ids["r-0123456789a"], "r-0123456789a", "no shorter prefix is unique");
        assert_eq!(ids["r-fedcba9876"], "r-fedcba");
    }

    #[test]
    fn the_pick_is_marked_in_its_rank_and_in_a_line_under_the_table() {
        let (rows, names) = wide_board();
        let view = BoardView { pick: Some(REASON), ..view(&names) };
        let wide = leaderboard_table(&rows, &view, None);
        assert!(wide.contains("│ 1 best ┆ r-a-0c0ffee00123456 ┆"), "{wide}");
        assert_eq!(wide.matches(" best ┆").count(), 1, "{wide}");
        let line = "best: rank 1 (r-a-0c0ffee00123456), model ft:m:r-a: the leader; no cheaper run is shown to be \
                    within the margin";
        assert!(wide.contains(line), "the reason without the row's figures:\n{wide}");
        let narrow = leaderboard_table(&rows, &view, Some(200));
        assert!(narrow.contains("model ft:m:r-a: the leader (`ftsweep best s` says why in full)"), "{narrow}");
        let markdown = leaderboard_markdown(&rows, &view);
        assert!(markdown.contains("| 1 best | r-a-0c0ffee00123456 |") && markdown.contains(line), "{markdown}");
        let json = serde_json::to_value(&rows).unwrap();
        let picks: Vec<&serde_json::Value> = json.as_array().unwrap().iter().filter(|r| r["is_pick"] == true).collect();
        assert_eq!(picks.len(), 1);
        assert_eq!(picks[0]["run_id"], "r-a-0c0ffee00123456");
    }

    #[test]
    fn prose_is_wrapped_at_spaces_to_the_width() {
        assert_eq!(wrap("aa bb cc dd", Some(5)), "aa bb\ncc dd");
        assert_eq!(wrap("≤x below the leader", Some(8)), "≤x below\nthe\nleader");
        assert_eq!(wrap("averyverylongword b", Some(5)), "averyverylongword\nb", "a long word keeps its line");
        assert_eq!(wrap("one\ntwo three", Some(3)), "one\ntwo\nthree");
        assert_eq!(wrap("untouched without a width", None), "untouched without a width");
    }
}
