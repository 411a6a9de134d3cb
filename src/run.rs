//! The run's vocabulary: which provider trains it, what defines it (its
//! hyperparameters and where its model comes from), the states it goes
//! through, its record, and what an evaluation is of. Pure: no I/O; `store/`
//! binds these types to SQL, the pure modules read them.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::space::ProviderKind;

/// The one base model the local provider fine-tunes.
pub const LOCAL_BASE_MODEL: &str = "local/ngram";

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum RunState {
    Planned,
    /// The intent to create a job is committed; the provider's answer is not
    /// (yet) recorded.
    Launching,
    Training,
    Trained,
    Evaluating,
    Done,
    Failed,
    /// Stopped on request (`cancel`, or Ctrl-C with `--cancel-on-interrupt`).
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why a sweep lists a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum SweepRole {
    /// A point of the search (a rung of successive halving included).
    Search,
    /// A leader trained again with another seed.
    Replicate,
}

impl SweepRole {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What an evaluation (a row of a leaderboard) is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum EvalKind {
    /// A run's final model.
    Run,
    /// One of a run's earlier epoch checkpoints.
    Checkpoint,
    /// The base model, untrained: the sweep's baseline.
    Baseline,
    /// A model evaluated with `ftsweep eval`.
    Model,
}

impl EvalKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether it takes a rank (a run or a checkpoint), rather than being
    /// shown for reference (the baseline, a model evaluated on its own).
    pub fn is_ranked(self) -> bool {
        matches!(self, EvalKind::Run | EvalKind::Checkpoint)
    }
}

/// The kind of a run's origin, as the database spells it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::EnumString, strum::IntoStaticStr, strum::Display,
)]
#[strum(serialize_all = "lowercase")]
pub enum OriginKind {
    Job,
    Checkpoint,
    Continue,
}

/// Where a run's model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Its own job, trained from the base model for `n_epochs`.
    Job,
    /// The epoch-`n_epochs` checkpoint of `source`'s job: a run that differs
    /// only in having more epochs (`[search] epochs_from_checkpoints`). It
    /// trains nothing itself, and its learning-rate schedule is the longer job's.
    Checkpoint { source: String },
    /// A job that continues training `parent`'s model (successive halving)
    /// up to `n_epochs` in all, `parent_epochs` of them done by the parent chain.
    Continue { parent: String, parent_epochs: u32 },
}

impl Origin {
    pub fn kind(&self) -> OriginKind {
        match self {
            Origin::Job => OriginKind::Job,
            Origin::Checkpoint { .. } => OriginKind::Checkpoint,
            Origin::Continue { .. } => OriginKind::Continue,
        }
    }

    /// The origin as recorded: its kind, the run it comes from, the epochs
    /// of a continuation's parent chain. `None` when the parts do not fit
    /// (a checkpoint or continuation without its source).
    pub fn from_parts(kind: OriginKind, source: Option<String>, parent_epochs: Option<u32>) -> Option<Origin> {
        match (kind, source) {
            (OriginKind::Job, _) => Some(Origin::Job),
            (OriginKind::Checkpoint, Some(source)) => Some(Origin::Checkpoint { source }),
            (OriginKind::Continue, Some(parent)) => {
                Some(Origin::Continue { parent, parent_epochs: parent_epochs.unwrap_or(0) })
            }
            (_, None) => None,
        }
    }

    /// For a continuation, the epochs its parent chain trained.
    pub fn parent_epochs(&self) -> Option<u32> {
        match self {
            Origin::Continue { parent_epochs, .. } => Some(*parent_epochs),
            _ => None,
        }
    }

    /// The run this one depends on, if any.
    pub fn source(&self) -> Option<&str> {
        match self {
            Origin::Job => None,
            Origin::Checkpoint { source } => Some(source),
            Origin::Continue { parent, .. } => Some(parent),
        }
    }

    /// The same origin with the run it comes from renamed by `rename`.
    pub fn renamed(&self, rename: impl FnOnce(&str) -> Option<String>) -> Origin {
        match self {
            Origin::Job => Origin::Job,
            Origin::Checkpoint { source } => Origin::Checkpoint { source: rename(source).unwrap_or(source.clone()) },
            Origin::Continue { parent, parent_epochs } => {
                Origin::Continue { parent: rename(parent).unwrap_or(parent.clone()), parent_epochs: *parent_epochs }
            }
        }
    }
}

/// The value of one hyperparameter in one run (`"auto"` is its absence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Float(x) => x,
        }
    }

    /// The value's bits, to group runs by configuration.
    fn key(self) -> (bool, u64) {
        match self {
            Value::Int(i) => (true, i as u64),
            Value::Float(x) => (false, x.to_bits()),
        }
    }
}

impl From<Value> for serde_json::Value {
    fn from(v: Value) -> serde_json::Value {
        match v {
            Value::Int(i) => i.into(),
            Value::Float(x) => x.into(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

/// OpenAI's learning-rate multiplier, a column of its own in the database.
pub const LEARNING_RATE_MULTIPLIER: &str = "learning_rate_multiplier";
/// OpenAI's batch size, a column of its own in the database.
pub const BATCH_SIZE: &str = "batch_size";

/// Whether `name` is one of ftsweep 0.1's hyperparameters besides the epochs
/// and the seed: those have columns of their own in the database and fixed
/// lines in the text a run id hashes.
pub fn is_legacy_name(name: &str) -> bool {
    name == BATCH_SIZE || name == LEARNING_RATE_MULTIPLIER
}

/// The hyperparameters of one run. `n_epochs` and `seed` every provider
/// has; the others are by name, as the provider declares them
/// ([`crate::space::accepted`]), and a name without a value is `"auto"` (the
/// provider chooses).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunConfig {
    /// The epochs the run's model saw in all; `None` is `auto`.
    pub n_epochs: Option<u32>,
    pub seed: u64,
    /// The other hyperparameters that have a value, by name.
    pub params: BTreeMap<String, Value>,
}

impl RunConfig {
    /// A configuration in OpenAI's four names (the local provider's too).
    pub fn supervised(
        n_epochs: Option<u32>,
        batch_size: Option<u32>,
        learning_rate_multiplier: Option<f64>,
        seed: u64,
    ) -> RunConfig {
        let mut c = RunConfig { n_epochs, seed, ..RunConfig::default() };
        c.set(BATCH_SIZE, batch_size.map(|b| Value::Int(i64::from(b))));
        c.set(LEARNING_RATE_MULTIPLIER, learning_rate_multiplier.map(Value::Float));
        c
    }

    /// The value of `name`; `None` is `auto` (or a name the run lacks).
    pub fn get(&self, name: &str) -> Option<Value> {
        self.params.get(name).copied()
    }

    /// The value of `name` as a number.
    pub fn float(&self, name: &str) -> Option<f64> {
        self.get(name).map(Value::as_f64)
    }

    /// The value of `name` as a whole number (a float is rounded).
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|v| match v {
            Value::Int(i) => i,
            Value::Float(x) => x.round() as i64,
        })
    }

    /// Sets `name` to `value`; `None` (auto) removes it.
    pub fn set(&mut self, name: &str, value: Option<Value>) {
        match value {
            Some(v) => self.params.insert(name.to_string(), v),
            None => self.params.remove(name),
        };
    }

    /// The learning-rate multiplier (OpenAI's name; the local provider's too).
    pub fn learning_rate_multiplier(&self) -> Option<f64> {
        self.float(LEARNING_RATE_MULTIPLIER)
    }

    /// The batch size (OpenAI's name; the local provider's too).
    pub fn batch_size(&self) -> Option<u32> {
        self.int(BATCH_SIZE).and_then(|b| u32::try_from(b).ok())
    }

    /// Everything but the seed and, when `with_epochs` is false, the
    /// epochs, as a key for grouping runs: replicates, or runs that differ
    /// only in epochs, share it.
    pub fn key(&self, with_epochs: bool) -> ConfigKey {
        ConfigKey {
            n_epochs: if with_epochs { self.n_epochs } else { None },
            params: self.params.iter().map(|(k, v)| (k.clone(), v.key())).collect(),
        }
    }

    /// The names of its hyperparameters: the epochs, those with a value, the seed.
    /// In [`shown_names`]'s order.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![crate::space::N_EPOCHS.to_string()];
        names.extend(shown_names([self]));
        names.push(crate::space::SEED.to_string());
        names
    }

    /// `short=value` for each of its hyperparameters ([`RunConfig::names`]),
    /// space-separated, e.g. `n_epochs=3 lr_mult=0.5 batch=8 seed=42`.
    pub fn summary(&self) -> String {
        self.names()
            .iter()
            .map(|n| format!("{}={}", crate::space::short(n), self.show(n)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The value of `name` as shown: `auto` without one.
    pub fn show(&self, name: &str) -> String {
        match name {
            crate::space::N_EPOCHS => show(self.n_epochs),
            crate::space::SEED => self.seed.to_string(),
            other => show(self.get(other)),
        }
    }
}

/// A configuration without its seed (see [`RunConfig::key`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigKey {
    n_epochs: Option<u32>,
    params: Vec<(String, (bool, u64))>,
}

/// Shows a hyperparameter value, `auto` for `None`.
pub fn show<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "auto".to_string(), |x| x.to_string())
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub run_id: String,
    /// The hyperparameters; `n_epochs` counts every epoch the model saw.
    pub config: RunConfig,
    pub origin: Origin,
    /// The rung of successive halving, 0 for the first.
    pub rung: Option<u32>,
}

impl PlannedRun {
    /// The epochs the run's own job trains (`None`: auto): 0 for a
    /// checkpoint, the increment for a continuation.
    pub fn job_epochs(&self) -> Option<u32> {
        job_epochs(&self.origin, self.config.n_epochs)
    }
}

/// The epochs a run's own job trains, from its origin and total epochs.
pub fn job_epochs(origin: &Origin, n_epochs: Option<u32>) -> Option<u32> {
    match origin {
        Origin::Job => n_epochs,
        Origin::Checkpoint { .. } => Some(0),
        Origin::Continue { parent_epochs, .. } => n_epochs.map(|n| n.saturating_sub(*parent_epochs)),
    }
}

/// What defines a run, as the database records it: everything its id hashes
/// but the server (a hosted sweep's, not kept per run).
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub provider: String,
    pub base_model: String,
    pub training_sha256: String,
    pub validation_sha256: String,
    pub config: RunConfig,
    pub origin: Origin,
}

impl fmt::Display for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(
            f,
            "{} {} training {:.12} validation {:.12} n_epochs={}",
            self.provider,
            self.base_model,
            self.training_sha256,
            self.validation_sha256,
            show(c.n_epochs)
        )?;
        for (name, value) in &c.params {
            write!(f, " {name}={value}")?;
        }
        write!(f, " seed={}", c.seed)?;
        match &self.origin {
            Origin::Job => Ok(()),
            Origin::Checkpoint { source } => write!(f, " checkpoint of {source}"),
            Origin::Continue { parent, parent_epochs } => write!(f, " continues {parent} after {parent_epochs} epochs"),
        }
    }
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub config: RunConfig,
    pub state: RunState,
    pub attempt: i64,
    pub job_id: Option<String>,
    pub model: Option<String>,
    pub error: Option<String>,
    pub trained_tokens: Option<i64>,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub metric: Option<String>,
    pub score: Option<f64>,
    pub n_eval: Option<i64>,
    pub train_seconds: Option<f64>,
    pub eval_seconds: Option<f64>,
    /// Where the run's model comes from.
    pub origin: Origin,
    /// The rung of successive halving, in this sweep.
    pub rung: Option<u32>,
    /// Why the sweep lists it.
    pub role: SweepRole,
    /// Why early stopping ended the run's job, if it did.
    pub stop_reason: Option<String>,
    /// The epochs behind the run's model when early stopping made an
    /// earlier checkpoint its model; `None`: `n_epochs`.
    pub model_epochs: Option<u32>,
}

impl RunRecord {
    /// A record of `planned` in `state`, at its first attempt, with nothing
    /// else known yet (no job, model, figures or notes), listed by the search.
    pub fn new(planned: &PlannedRun, state: RunState) -> RunRecord {
        RunRecord {
            run_id: planned.run_id.clone(),
            config: planned.config.clone(),
            state,
            attempt: 1,
            job_id: None,
            model: None,
            error: None,
            trained_tokens: None,
            train_loss: None,
            train_accuracy: None,
            valid_loss: None,
            valid_accuracy: None,
            metric: None,
            score: None,
            n_eval: None,
            train_seconds: None,
            eval_seconds: None,
            origin: planned.origin.clone(),
            rung: planned.rung,
            role: SweepRole::Search,
            stop_reason: None,
            model_epochs: None,
        }
    }

    /// The run as planned.
    pub fn planned(&self) -> PlannedRun {
        PlannedRun {
            run_id: self.run_id.clone(),
            config: self.config.clone(),
            origin: self.origin.clone(),
            rung: self.rung,
        }
    }
}

/// The hyperparameter names besides `n_epochs` and `seed` that any of
/// `configs` gives a value: the columns tables show. Ordered as the
/// providers declare them (OpenAI's `learning_rate_multiplier`,
/// `batch_size`, ...), then by name.
pub fn shown_names<'a>(configs: impl IntoIterator<Item = &'a RunConfig>) -> Vec<String> {
    in_shown_order(configs.into_iter().flat_map(|c| c.params.keys().map(String::as_str)))
}

/// `names` once each, in [`shown_names`]'s order.
pub fn in_shown_order<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut used: std::collections::BTreeSet<&str> = names.into_iter().collect();
    let mut names: Vec<String> = Vec::new();
    for p in [ProviderKind::Local, ProviderKind::OpenAi].into_iter().flat_map(crate::space::accepted) {
        if used.remove(p.name) {
            names.push(p.name.to_string());
        }
    }
    names.extend(used.into_iter().map(str::to_string));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_kinds_round_trip_and_refuse_unknown_names() {
        for s in [RunState::Planned, RunState::Launching, RunState::Cancelled, RunState::Done] {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
        assert!("finished".parse::<RunState>().is_err());
        assert_eq!("openai".parse::<ProviderKind>().unwrap(), ProviderKind::OpenAi);
        assert!("replicate".parse::<SweepRole>().is_ok() && "other".parse::<SweepRole>().is_err());
        assert!(EvalKind::Checkpoint.is_ranked() && !EvalKind::Baseline.is_ranked());
    }

    #[test]
    fn a_config_shows_auto_for_a_name_without_value_and_keys_ignore_the_seed() {
        let mut a = RunConfig { n_epochs: Some(3), seed: 1, ..RunConfig::default() };
        a.set(LEARNING_RATE_MULTIPLIER, Some(Value::Float(2.0)));
        let shown: Vec<String> = ["n_epochs", "learning_rate_multiplier", "batch_size", "seed"]
            .iter()
            .map(|n| format!("{n}={}", a.show(n)))
            .collect();
        assert_eq!(shown.join(" "), "n_epochs=3 learning_rate_multiplier=2 batch_size=auto seed=1");
        assert_eq!(a.summary(), "n_epochs=3 lr_mult=2 seed=1");
        let b = RunConfig { seed: 9, ..a.clone() };
        assert_eq!(a.key(true), b.key(true));
        let c = RunConfig { n_epochs: Some(4), ..a.clone() };
        assert_ne!(a.key(true), c.key(true));
        assert_eq!(a.key(false), c.key(false));
        assert_eq!(a.batch_size(), None);
    }

    #[test]
    fn shown_names_follow_the_declarations_then_the_alphabet() {
        let mut c = RunConfig::supervised(Some(1), Some(8), Some(0.5), 1);
        c.set("lora_r", Some(Value::Int(8)));
        c.set("alpha", Some(Value::Float(0.5)));
        let auto = RunConfig::default();
        assert_eq!(shown_names([&auto, &c]), ["learning_rate_multiplier", "batch_size", "alpha", "lora_r"]);
        assert!(shown_names([&auto]).is_empty());
    }
}
