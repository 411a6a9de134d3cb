//! The sweep file: a TOML document parsed into a validated [`Sweep`].
//!
//! Parsing does no I/O beyond what the caller hands in (the text and, for
//! resolving data paths, the sweep file's own path); every error names the
//! file, the line and the key, says what was expected and how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::eval::config::{self as grader_config, COMBINED, NamedGrader};
use crate::eval::graders::Weighted;
pub use crate::run::ProviderKind;
use crate::space::{Axis, BATCH_SIZE_RANGE, Domain, Hyperparameters, N_EPOCHS_RANGE, SEED_RANGE};

/// A parsed and validated sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub name: String,
    pub provider: ProviderKind,
    pub base_model: String,
    /// The training file, resolved against the sweep file's folder.
    pub training_file: PathBuf,
    /// The validation file, resolved against the sweep file's folder.
    pub validation_file: PathBuf,
    /// The default seed: of the training jobs, and of random search.
    pub seed: u64,
    pub search: Search,
    /// `[search] epochs_from_checkpoints` (default false; not with
    /// successive halving): runs that differ only in `n_epochs` share one
    /// job; the shorter ones are its epoch checkpoints.
    pub epochs_from_checkpoints: bool,
    /// `[search] replicate_top` and `replicate_seeds` (both or neither):
    /// the leaders trained again with other seeds.
    pub replicates: Option<Replicates>,
    /// `[early_stopping]`: stop jobs that stop improving or diverge. `None`
    /// when the table is absent; an empty table takes the defaults.
    pub early_stopping: Option<EarlyStopping>,
    pub hyperparameters: Hyperparameters,
    pub evaluation: Evaluation,
    pub limits: Limits,
    /// The `[openai]` settings; defaults when the table is absent.
    pub openai: OpenAiSettings,
    /// Prices from the `[pricing]` table, overriding the committed table.
    pub pricing: Option<crate::pricing::Price>,
}

/// How to reach a server that speaks the OpenAI protocol. The file names
/// the environment variable that holds the key, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiSettings {
    pub base_url: String,
    pub api_key_env: String,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub auth: Auth,
}

/// How requests are authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// `Authorization: Bearer KEY` (OpenAI, most servers).
    Bearer,
    /// Azure OpenAI: an `api-key` header and an `api-version` query parameter.
    Azure { api_version: String },
}

/// The default base URL of the OpenAI API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

impl Default for OpenAiSettings {
    fn default() -> OpenAiSettings {
        OpenAiSettings {
            base_url: OPENAI_BASE_URL.to_string(),
            api_key_env: "OPENAI_API_KEY".to_string(),
            organization: None,
            project: None,
            auth: Auth::Bearer,
        }
    }
}

/// Checks a base URL: `https://` anywhere, plain `http://` only to a
/// loopback host (the key would otherwise cross the network in clear):
/// an IP literal in 127.0.0.0/8, `::1`, or `localhost`. The URL is parsed as
/// the HTTP client parses it, so `http://127.0.0.1@host/` (user info) and
/// `http://127.0.0.1.example.com/` are what they are: other hosts. A URL
/// with user info is refused whatever its scheme.
pub fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL has a user-info part (`...@` before the host): a base URL names the server and \
                    nothing else, and the part before `@` is not its host"
            .into());
    }
    let Some(host) = parsed.host() else { return Err(format!("`{url}` has no host")) };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        "http" => Err(format!(
            "plain http is refused for `{host}`, which is not a loopback host (127.0.0.0/8, ::1, localhost): the API \
             key would cross the network unencrypted"
        )),
        other => Err(format!("unsupported scheme `{other}`")),
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// Why `value` cannot be sent as an HTTP header value, if it cannot: only
/// visible ASCII, spaces and tabs can (a CR or LF would end the header and
/// start another). The value itself is never quoted: it may be a key.
pub fn header_value_problem(value: &str) -> Option<String> {
    let (i, c) = value.chars().enumerate().find(|(_, c)| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t'))?;
    let what = match c {
        '\r' | '\n' => "a line break (CR or LF)".to_string(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        _ => "a non-ASCII character".to_string(),
    };
    Some(format!("the value has {what} at character {}, which cannot be sent in an HTTP header", i + 1))
}

/// How the hyperparameter space is searched.
#[derive(Debug, Clone, PartialEq)]
pub enum Search {
    /// Every combination of the listed values.
    Grid,
    /// `runs` points drawn with the sweep's seed.
    Random { runs: u32 },
    /// Successive halving over the grid of the other hyperparameters: every
    /// configuration trains `min_epochs`, the best 1/`eta` continue from
    /// their own model, rung after rung, up to `max_epochs`.
    SuccessiveHalving(Halving),
}

/// The settings of successive halving: `[search] eta`, `min_epochs` and
/// `max_epochs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halving {
    /// Each rung keeps the best 1/eta (rounded up) and multiplies the epochs
    /// by eta: 2 to 10, default 3.
    pub eta: u32,
    /// The first rung's epochs: 1 to 50, default 1, below `max_epochs`.
    pub min_epochs: u32,
    /// The last rung's epochs: 1 to 50, required.
    pub max_epochs: u32,
}

/// Seed replicates of the leading configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicates {
    /// How many of the best configurations are trained again.
    pub top: u32,
    /// The other seeds each is trained with: distinct, none the sweep's
    /// `seed`.
    pub seeds: Vec<u64>,
}

/// What early stopping watches: a full validation pass's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMetric {
    /// Validation loss, lower is better (the default).
    ValidLoss,
    /// Validation (mean token) accuracy, higher is better.
    ValidAccuracy,
}

impl StopMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            StopMetric::ValidLoss => "valid_loss",
            StopMetric::ValidAccuracy => "valid_accuracy",
        }
    }
}

/// The `[early_stopping]` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    pub metric: StopMetric,
    /// Evaluations in a row without an improvement of more than
    /// `min_delta` over the best so far before the job is stopped.
    pub patience: u32,
    pub min_delta: f64,
    /// Divergence: a validation loss above `divergence_factor` times the
    /// job's first evaluation's, or not finite, stops the job at once.
    pub divergence_factor: f64,
}

impl Default for EarlyStopping {
    fn default() -> EarlyStopping {
        EarlyStopping { metric: StopMetric::ValidLoss, patience: 4, min_delta: 0.0, divergence_factor: 1.0 }
    }
}

/// How runs are scored: the `[evaluation]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The primary metric: a grader's name, or `combined`.
    pub metric: Metric,
    /// The graders, in the order written; graders named only by `metric` or
    /// `combined` (built-in types with their defaults) come last.
    pub graders: Vec<NamedGrader>,
    /// The weighted combination of graders, scored as `combined`.
    pub combined: Option<Weighted>,
    /// The significance level of the paired test against the leader.
    pub alpha: f64,
    /// How far below the leader a cheaper run may be shown to be and still be
    /// picked by `best` (the non-inferiority margin, in units of the metric).
    pub margin: f64,
    /// Whether the runs' earlier kept epoch checkpoints are evaluated too.
    pub checkpoints: bool,
    /// Whether the base model is evaluated, as the baseline row.
    pub baseline: bool,
    /// Completions in flight at a time, across the sweep.
    pub concurrency: u32,
}

/// The default significance level.
pub const ALPHA: f64 = 0.05;

/// The default non-inferiority margin.
pub const MARGIN: f64 = 0.02;

/// The default number of completions in flight.
pub const EVAL_CONCURRENCY: u32 = 8;

impl Default for Evaluation {
    /// Exact match after trimming, as the primary and only grader.
    fn default() -> Evaluation {
        Evaluation {
            metric: Metric::EXACT_MATCH,
            graders: NamedGrader::builtin("exact_match").into_iter().collect(),
            combined: None,
            alpha: ALPHA,
            margin: MARGIN,
            checkpoints: false,
            baseline: true,
            concurrency: EVAL_CONCURRENCY,
        }
    }
}

impl Evaluation {
    /// The grader by name (not `combined`).
    pub fn grader(&self, name: &str) -> Option<&NamedGrader> {
        self.graders.iter().find(|g| g.name == name)
    }

    /// The names of every score, graders first, then `combined`.
    pub fn score_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.graders.iter().map(|g| g.name.clone()).collect();
        if self.combined.is_some() {
            names.push(COMBINED.to_string());
        }
        names
    }
}

/// The primary metric's name. Names are interned, so a `Metric` is `Copy`
/// and its text lives for the whole program; only the distinct names ever
/// parsed are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric(&'static str);

impl Metric {
    /// The reply equals the reference after trimming white space.
    pub const EXACT_MATCH: Metric = Metric("exact_match");

    /// The metric of this name.
    pub fn named(name: &str) -> Metric {
        static NAMES: std::sync::LazyLock<std::sync::Mutex<std::collections::BTreeSet<&'static str>>> =
            std::sync::LazyLock::new(Default::default);
        let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        match names.get(name) {
            Some(known) => Metric(known),
            None => {
                let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
                names.insert(leaked);
                Metric(leaked)
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// Limits on how the sweep runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_concurrent: u32,
    /// `run` asks for confirmation when the estimate exceeds this (USD).
    pub confirm_above_usd: f64,
    /// No run is launched whose estimated cost would take committed plus
    /// spent cost over this (USD).
    pub budget_usd: Option<f64>,
    /// The same, in trained tokens.
    pub max_trained_tokens: Option<u64>,
    /// Attempts after a provider-side failure (`server_error` and the like);
    /// invalid data is never retried.
    pub retries: u32,
}

/// The default confirmation threshold, in USD.
pub const CONFIRM_ABOVE_USD: f64 = 1.0;

/// The most runs a grid (or the first rung of successive halving) may have,
/// counted before it is expanded; random search draws at most 1,000.
pub const MAX_GRID_RUNS: u64 = 10_000;

/// A problem in a sweep file, located to a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// The dotted key, when the problem belongs to one.
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    provider: Option<Spanned<String>>,
    base_model: Spanned<String>,
    training_file: Spanned<String>,
    validation_file: Spanned<String>,
    seed: Option<Spanned<i64>>,
    search: Option<RawSearch>,
    early_stopping: Option<RawEarlyStopping>,
    hyperparameters: Spanned<RawHyperparameters>,
    evaluation: Option<RawEvaluation>,
    limits: Option<RawLimits>,
    openai: Option<Spanned<RawOpenAi>>,
    pricing: Option<Spanned<RawPricing>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenAi {
    base_url: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    organization: Option<Spanned<String>>,
    project: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    api_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    training_per_million: f64,
    input_per_million: f64,
    output_per_million: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    strategy: Option<Spanned<String>>,
    runs: Option<Spanned<i64>>,
    eta: Option<Spanned<i64>>,
    min_epochs: Option<Spanned<i64>>,
    max_epochs: Option<Spanned<i64>>,
    epochs_from_checkpoints: Option<Spanned<bool>>,
    replicate_top: Option<Spanned<i64>>,
    replicate_seeds: Option<Spanned<Vec<Spanned<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEarlyStopping {
    metric: Option<Spanned<String>>,
    patience: Option<Spanned<i64>>,
    min_delta: Option<Spanned<f64>>,
    divergence_factor: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHyperparameters {
    n_epochs: Option<Spanned<toml::Value>>,
    learning_rate_multiplier: Option<Spanned<toml::Value>>,
    batch_size: Option<Spanned<toml::Value>>,
    seed: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvaluation {
    metric: Option<Spanned<String>>,
    graders: Option<Vec<Spanned<toml::Table>>>,
    combined: Option<Spanned<toml::Table>>,
    alpha: Option<Spanned<f64>>,
    margin: Option<Spanned<f64>>,
    checkpoints: Option<bool>,
    baseline: Option<bool>,
    concurrency: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_concurrent: Option<Spanned<i64>>,
    confirm_above_usd: Option<Spanned<f64>>,
    budget_usd: Option<Spanned<f64>>,
    max_trained_tokens: Option<Spanned<i64>>,
    retries: Option<Spanned<i64>>,
}

/// An error about a top-level key's value found after parsing (the data
/// file it names is a directory, say), located at the key's line.
pub fn key_error(path: &Path, text: &str, key: &str, message: String, hint: &str) -> SpecError {
    let line = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')));
    SpecError {
        path: path.to_path_buf(),
        line: line.map(|i| i + 1),
        key: Some(key.to_string()),
        message,
        hint: Some(hint.to_string()),
    }
}

/// Parses a sweep file's text. `path` names the file in errors and anchors
/// relative data paths; nothing is read from disk here.
pub fn parse(path: &Path, text: &str) -> Result<Sweep, SpecError> {
    let cx = Cx { path, text };
    let raw: RawSweep = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;

    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(cx.at(
            &raw.name,
            "name",
            format!("`{}` is not a usable sweep name", raw.name.get_ref()),
            "use 1 to 64 letters, digits, `-`, `_` or `.`, e.g. `topic-router`",
        ));
    }

    let provider = match &raw.provider {
        None => ProviderKind::Local,
        Some(p) => match p.get_ref().as_str() {
            "local" => ProviderKind::Local,
            "openai" => ProviderKind::OpenAi,
            other => {
                return Err(cx.at(
                    p,
                    "provider",
                    format!("unknown provider `{other}`"),
                    "use `provider = \"local\"` or `provider = \"openai\"`",
                ));
            }
        },
    };

    let base_model = raw.base_model.get_ref().trim().to_string();
    if base_model.is_empty() {
        return Err(cx.at(
            &raw.base_model,
            "base_model",
            "the base model is empty".into(),
            "name the model to fine-tune, e.g. `local/ngram`",
        ));
    }
    if provider == ProviderKind::Local && base_model != crate::run::LOCAL_BASE_MODEL {
        return Err(cx.at(
            &raw.base_model,
            "base_model",
            format!("the local provider has no model `{base_model}`"),
            &format!("use `base_model = \"{}\"`", crate::run::LOCAL_BASE_MODEL),
        ));
    }

    let training_file = cx.data_path(&raw.training_file, "training_file")?;
    let validation_file = cx.data_path(&raw.validation_file, "validation_file")?;

    let seed = match &raw.seed {
        None => 0,
        Some(s) => cx.int_in(s, "seed", SEED_RANGE)?,
    };

    let search = match &raw.search {
        None => Search::Grid,
        Some(s) => cx.search(s)?,
    };
    let epochs_from_checkpoints = raw.search.as_ref().and_then(|s| s.epochs_from_checkpoints.as_ref());
    let epochs_from_checkpoints = epochs_from_checkpoints.is_some_and(|v| *v.get_ref());
    let replicates = match &raw.search {
        None => None,
        Some(s) => cx.replicates(s, seed)?,
    };
    let early_stopping = match &raw.early_stopping {
        None => None,
        Some(e) => Some(cx.early_stopping(e)?),
    };

    let hp = raw.hyperparameters.get_ref();
    let hp_span = raw.hyperparameters.span();
    let n_epochs = match (&search, &hp.n_epochs) {
        (Search::SuccessiveHalving(h), None) => Domain::Values(vec![Some(f64::from(h.min_epochs))]),
        (Search::SuccessiveHalving(_), Some(v)) => {
            return Err(cx.at(
                v,
                "hyperparameters.n_epochs",
                "successive halving sets the epochs rung by rung, from `min_epochs` to `max_epochs`".into(),
                "remove `n_epochs`; set `min_epochs` and `max_epochs` under [search]",
            ));
        }
        (_, some) => cx.domain(some, "n_epochs", Kind::Int(N_EPOCHS_RANGE), &search, &hp_span)?,
    };
    let learning_rate_multiplier =
        cx.domain(&hp.learning_rate_multiplier, "learning_rate_multiplier", Kind::Positive, &search, &hp_span)?;
    let batch_size = cx.domain(&hp.batch_size, "batch_size", Kind::Int(BATCH_SIZE_RANGE), &search, &hp_span)?;
    let seed_domain = match &hp.seed {
        None => Domain::Values(vec![Some(seed as f64)]),
        some => cx.domain(some, "seed", Kind::Int(SEED_RANGE), &search, &hp_span)?,
    };
    let axis = |name: &str, kind, domain, written: bool| Axis { name: name.to_string(), kind, domain, written };
    let hyperparameters = Hyperparameters(vec![
        axis("n_epochs", crate::space::Kind::Int, n_epochs, hp.n_epochs.is_some()),
        axis("learning_rate_multiplier", crate::space::Kind::Float, learning_rate_multiplier, true),
        axis("batch_size", crate::space::Kind::Int, batch_size, true),
        axis("seed", crate::space::Kind::Int, seed_domain, hp.seed.is_some()),
    ]);

    if !matches!(search, Search::Random { .. }) {
        cx.grid_size(&hyperparameters, &hp_span)?;
    }

    let evaluation = match &raw.evaluation {
        None => Evaluation::default(),
        Some(e) => cx.evaluation(e)?,
    };

    let limits = Limits {
        max_concurrent: match raw.limits.as_ref().and_then(|l| l.max_concurrent.as_ref()) {
            None => 2,
            Some(m) => cx.int_in(m, "limits.max_concurrent", (1.0, 64.0))? as u32,
        },
        confirm_above_usd: match raw.limits.as_ref().and_then(|l| l.confirm_above_usd.as_ref()) {
            None => CONFIRM_ABOVE_USD,
            Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 0.0 => *v.get_ref(),
            Some(v) => {
                return Err(cx.at(
                    v,
                    "limits.confirm_above_usd",
                    format!("{} is not allowed", v.get_ref()),
                    "give an amount in USD, 0 or more, e.g. `confirm_above_usd = 5.0`",
                ));
            }
        },
        budget_usd: match raw.limits.as_ref().and_then(|l| l.budget_usd.as_ref()) {
            None => None,
            Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 0.0 => Some(*v.get_ref()),
            Some(v) => {
                return Err(cx.at(
                    v,
                    "limits.budget_usd",
                    format!("{} is not allowed", v.get_ref()),
                    "give an amount in USD, 0 or more, e.g. `budget_usd = 25.0`",
                ));
            }
        },
        max_trained_tokens: match raw.limits.as_ref().and_then(|l| l.max_trained_tokens.as_ref()) {
            None => None,
            Some(v) => Some(cx.int_in(v, "limits.max_trained_tokens", (0.0, 1e15))?),
        },
        retries: match raw.limits.as_ref().and_then(|l| l.retries.as_ref()) {
            None => 1,
            Some(v) => cx.int_in(v, "limits.retries", (0.0, 10.0))? as u32,
        },
    };

    let openai = match &raw.openai {
        None => OpenAiSettings::default(),
        Some(o) => cx.openai(o)?,
    };
    if let Some(o) = raw.openai.as_ref().filter(|_| provider != ProviderKind::OpenAi) {
        return Err(cx.at(
            o,
            "openai",
            "an [openai] table only applies to `provider = \"openai\"`".into(),
            "remove the table, or set `provider = \"openai\"`",
        ));
    }
    let pricing = match &raw.pricing {
        None => None,
        Some(p) => {
            let r = p.get_ref();
            let prices = [r.training_per_million, r.input_per_million, r.output_per_million];
            if prices.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(cx.at(
                    p,
                    "pricing",
                    "prices must be numbers, 0 or more".into(),
                    "give USD per million tokens, e.g. `training_per_million = 5.0`",
                ));
            }
            Some(crate::pricing::Price {
                training: r.training_per_million,
                input: r.input_per_million,
                output: r.output_per_million,
            })
        }
    };

    Ok(Sweep {
        name,
        provider,
        base_model,
        training_file,
        validation_file,
        seed,
        search,
        epochs_from_checkpoints,
        replicates,
        early_stopping,
        hyperparameters,
        evaluation,
        limits,
        openai,
        pricing,
    })
}

/// The table a `[table]` or `[[table]]` header line opens.
fn table_header(line: &str) -> Option<&str> {
    let line = line.split('#').next().unwrap_or_default().trim();
    let inner = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"));
    let inner = inner.or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?.trim();
    let key_like = !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
    (key_like && !inner.chars().all(|c| c.is_ascii_digit())).then_some(inner)
}

fn names(graders: &[NamedGrader]) -> String {
    let names: Vec<&str> = graders.iter().map(|g| g.name.as_str()).collect();
    if names.is_empty() { "(none)".into() } else { names.join(", ") }
}

#[derive(Clone, Copy)]
enum Kind {
    /// An integer within the inclusive range.
    Int((f64, f64)),
    /// A finite number > 0.
    Positive,
}

struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn error(&self, span: &Range<usize>, key: &str, message: String, hint: &str) -> SpecError {
        SpecError {
            path: self.path.to_path_buf(),
            line: Some(self.line_of(span.start)),
            key: Some(key.to_string()),
            message,
            hint: Some(hint.to_string()),
        }
    }

    fn at<T>(&self, v: &Spanned<T>, key: &str, message: String, hint: &str) -> SpecError {
        self.error(&v.span(), key, message, hint)
    }

    fn toml_error(&self, e: &toml::de::Error) -> SpecError {
        let mut message = e.message().trim().to_string();
        let mut line = e.span().map(|s| self.line_of(s.start));
        let mut key = None;
        let hint = if message.starts_with("unknown field") {
            "remove or rename the key (the keys that table accepts are listed)"
        } else if message.starts_with("missing field") {
            "add the key; see the sweep file format in README.md"
        } else if let Some(number) =
            message.strip_prefix("invalid type: integer `").and_then(|m| m.split_once("` as i128"))
        {
            message = format!("the number `{}` is too large (whole numbers here are at most {})", number.0, i64::MAX);
            "give the key a value in the range README.md gives for it"
        } else if message.starts_with("invalid type") {
            "give the key a value of the expected type"
        } else if message == "recursion limit" || message.starts_with("cannot recurse further") {
            if line.is_none()
                && let Some((at, start, parts)) = self.deepest_key()
            {
                line = Some(at);
                message = format!("the key `{start}...` has {parts} dotted parts, more than the TOML parser allows");
            } else {
                message = "values nest deeper than the TOML parser allows".into();
            }
            "a sweep file nests a few levels at most (e.g. `[evaluation.combined]`): remove or flatten this"
        } else {
            "fix the TOML syntax at that line"
        };
        let keyed = ["unknown field", "invalid type", "invalid value", "the number", "values nest"];
        if keyed.iter().any(|p| message.starts_with(p)) {
            key = e.span().and_then(|s| self.key_at(s.start));
        }
        SpecError { path: self.path.to_path_buf(), line, key, message, hint: Some(hint.to_string()) }
    }

    /// The dotted key (with its table) whose value or name is at `offset`:
    /// the `key =` on that line, or on the closest line above it in the
    /// same table (a value that spans lines).
    fn key_at(&self, offset: usize) -> Option<String> {
        let end = offset.min(self.text.len());
        let end = self.text[end..].find('\n').map_or(self.text.len(), |i| end + i);
        let mut lines = self.text[..end].lines().rev();
        let mut key = None;
        for line in lines.by_ref() {
            if let Some(table) = table_header(line) {
                return key.map(|k| format!("{table}.{k}"));
            }
            if let Some((k, _)) = line.split_once('=')
                && let k = k.trim()
                && !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
            {
                key = Some(k.to_string());
                break;
            }
        }
        let key = key?;
        let table = lines.find_map(table_header);
        Some(table.map_or(key.clone(), |t| format!("{t}.{key}")))
    }

    /// The line, the start and the number of parts of the first key with
    /// more dotted parts than the parser takes (it reports that without a place).
    fn deepest_key(&self) -> Option<(usize, String, usize)> {
        self.text.lines().enumerate().find_map(|(i, line)| {
            let line = line.trim_start();
            let key = match line.strip_prefix('[') {
                Some(header) => header.split(']').next().unwrap_or_default(),
                None => line.split('=').next().unwrap_or_default(),
            };
            let parts = key.matches('.').count() + 1;
            (parts > 64).then(|| (i + 1, key.trim().chars().take(24).collect(), parts))
        })
    }

    /// The line of `key = ` in the table that starts at the span (up to the
    /// next table header, or within an inline table), or the span's first line.
    fn key_line_in(&self, span: &Range<usize>, key: &str) -> Range<usize> {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let mut offset = line_start;
        for (i, line) in self.text[line_start..].split_inclusive('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && t.starts_with('[') {
                break;
            }
            // A key at the start of the line, or after `{` or `,` in an inline table.
            let found =
                std::iter::once(t).chain(line.match_indices(['{', ',']).map(|(j, _)| line[j + 1..].trim_start()));
            if found
                .into_iter()
                .any(|rest| rest.strip_prefix(key).is_some_and(|after| after.trim_start().starts_with('=')))
            {
                return offset..offset;
            }
            offset += line.len();
        }
        span.clone()
    }

    fn evaluation(&self, raw: &RawEvaluation) -> Result<Evaluation, SpecError> {
        let mut graders: Vec<NamedGrader> = Vec::new();
        for (i, table) in raw.graders.iter().flatten().enumerate() {
            let key = format!("evaluation.graders[{}]", i + 1);
            let grader = grader_config::parse(table.get_ref()).map_err(|message| {
                // Point at the offending key when the message names one.
                let named = message.split('`').nth(1).filter(|k| table.get_ref().contains_key(*k));
                let named = named.or(message.contains("grader type").then_some("type"));
                let span = match named {
                    Some(k) => self.key_line_in(&table.span(), k),
                    None => table.span(),
                };
                let hint = format!(
                    "e.g. `[[evaluation.graders]]` then `type = \"token_f1\"`; the types are {}",
                    grader_config::TYPES.join(", ")
                );
                self.error(&span, &key, message, &hint)
            })?;
            if graders.iter().any(|g| g.name == grader.name) {
                return Err(self.error(
                    &table.span(),
                    &key,
                    format!("two graders are named `{}`", grader.name),
                    "give one of them another `name`",
                ));
            }
            graders.push(grader);
        }
        // A built-in grader named by `combined` or `metric` but not declared
        // is added with its defaults: the metric's first, the others last.
        let implicit = |name: &str, graders: &mut Vec<NamedGrader>, first: bool| -> bool {
            if graders.iter().any(|g| g.name == name) {
                return true;
            }
            match NamedGrader::builtin(name) {
                Some(g) if first => {
                    graders.insert(0, g);
                    true
                }
                Some(g) => {
                    graders.push(g);
                    true
                }
                None => false,
            }
        };
        let combined = match &raw.combined {
            None => None,
            Some(t) => {
                let mut parts = Vec::new();
                for (name, weight) in t.get_ref() {
                    let span = self.key_line_in(&t.span(), name);
                    let w = match weight {
                        toml::Value::Integer(i) => *i as f64,
                        toml::Value::Float(f) => *f,
                        other => {
                            return Err(self.error(
                                &span,
                                "evaluation.combined",
                                format!("the weight of `{name}` must be a number, found {}", other.type_str()),
                                "e.g. `combined = { exact_match = 1, token_f1 = 3 }`",
                            ));
                        }
                    };
                    if !implicit(name, &mut graders, false) {
                        return Err(self.error(
                            &span,
                            "evaluation.combined",
                            format!("no grader is named `{name}`"),
                            &format!("combine the graders declared: {}", names(&graders)),
                        ));
                    }
                    parts.push((name.clone(), w));
                }
                Some(Weighted::new(parts).map_err(|e| {
                    self.error(
                        &t.span(),
                        "evaluation.combined",
                        e.to_string(),
                        "give each grader a weight of 0 or more, not all 0",
                    )
                })?)
            }
        };
        let metric = match &raw.metric {
            Some(m) => {
                let name = m.get_ref().trim();
                let known = (name == COMBINED && combined.is_some()) || implicit(name, &mut graders, true);
                if !known {
                    let hint = if graders.is_empty() {
                        "use `metric = \"exact_match\"`, or a built-in grader such as `token_f1`".to_string()
                    } else {
                        format!("name one of the graders: {}", names(&graders))
                    };
                    return Err(self.at(m, "evaluation.metric", format!("unknown metric `{name}`"), &hint));
                }
                Metric::named(name)
            }
            None if combined.is_some() => Metric::named(COMBINED),
            None => match graders.first() {
                Some(g) => Metric::named(&g.name),
                None => {
                    implicit("exact_match", &mut graders, true);
                    Metric::EXACT_MATCH
                }
            },
        };
        let alpha = match &raw.alpha {
            None => ALPHA,
            Some(a) if *a.get_ref() > 0.0 && *a.get_ref() <= 0.5 => *a.get_ref(),
            Some(a) => {
                return Err(self.at(
                    a,
                    "evaluation.alpha",
                    format!("{} is not allowed", a.get_ref()),
                    "give a significance level above 0 and at most 0.5, e.g. `alpha = 0.05`",
                ));
            }
        };
        let margin = match &raw.margin {
            None => MARGIN,
            Some(m) if (0.0..1.0).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => {
                return Err(self.at(
                    m,
                    "evaluation.margin",
                    format!("{} is not allowed", m.get_ref()),
                    "give the largest shortfall from the leader that still counts as as good, at least 0 and below 1, \
                     e.g. `margin = 0.02`",
                ));
            }
        };
        let concurrency = match &raw.concurrency {
            None => EVAL_CONCURRENCY,
            Some(c) => self.int_in(c, "evaluation.concurrency", (1.0, 256.0))? as u32,
        };
        Ok(Evaluation {
            metric,
            graders,
            combined,
            alpha,
            margin,
            checkpoints: raw.checkpoints.unwrap_or(false),
            baseline: raw.baseline.unwrap_or(true),
            concurrency,
        })
    }

    fn openai(&self, o: &Spanned<RawOpenAi>) -> Result<OpenAiSettings, SpecError> {
        let raw = o.get_ref();
        let mut settings = OpenAiSettings::default();
        if let Some(url) = &raw.base_url {
            let trimmed = url.get_ref().trim_end_matches('/').to_string();
            check_base_url(&trimmed).map_err(|m| {
                self.at(
                    url,
                    "openai.base_url",
                    m,
                    "use an https:// URL, or http://127.0.0.1:PORT/v1 for a local server, with no `user@` part",
                )
            })?;
            settings.base_url = trimmed;
        }
        if let Some(var) = &raw.api_key_env {
            let name = var.get_ref();
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(self.at(
                    var,
                    "openai.api_key_env",
                    "this names the environment variable that holds the key, and is not a variable name".into(),
                    "write the variable's name, e.g. `api_key_env = \"OPENAI_API_KEY\"`, and never the key itself",
                ));
            }
            settings.api_key_env = name.clone();
        }
        settings.organization = self.header_value(raw.organization.as_ref(), "openai.organization")?;
        settings.project = self.header_value(raw.project.as_ref(), "openai.project")?;
        settings.auth = match raw.auth.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("bearer") => Auth::Bearer,
            Some("azure") => Auth::Azure {
                api_version: raw.api_version.clone().ok_or_else(|| {
                    self.at(
                        o,
                        "openai.api_version",
                        "Azure authentication needs the API version".into(),
                        "add e.g. `api_version = \"2025-04-01-preview\"` under [openai]",
                    )
                })?,
            },
            Some(other) => {
                return Err(self.at(
                    raw.auth.as_ref().expect("matched a value"),
                    "openai.auth",
                    format!("unknown authentication `{other}`"),
                    "use `auth = \"bearer\"` (the default) or `auth = \"azure\"`",
                ));
            }
        };
        Ok(settings)
    }

    /// A value sent as an HTTP header (`organization`, `project`).
    fn header_value(&self, v: Option<&Spanned<String>>, key: &str) -> Result<Option<String>, SpecError> {
        let Some(v) = v else { return Ok(None) };
        if let Some(problem) = header_value_problem(v.get_ref()) {
            return Err(self.at(
                v,
                key,
                problem,
                "write the id on one line, as the provider shows it (e.g. `org-...`, `proj_...`)",
            ));
        }
        Ok(Some(v.get_ref().clone()))
    }

    fn data_path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, SpecError> {
        let written = v.get_ref();
        if written.trim().is_empty() {
            return Err(self.at(
                v,
                key,
                "the path is empty".into(),
                "give the path of a chat JSONL file, relative to the sweep file",
            ));
        }
        let base = self.path.parent().unwrap_or(Path::new(""));
        Ok(base.join(written))
    }

    fn int_in(&self, v: &Spanned<i64>, key: &str, (lo, hi): (f64, f64)) -> Result<u64, SpecError> {
        let x = *v.get_ref();
        if (x as f64) < lo || (x as f64) > hi {
            return Err(self.at(
                v,
                key,
                format!("{x} is out of range"),
                &format!("use a whole number from {lo} to {hi}"),
            ));
        }
        Ok(x as u64)
    }

    /// Refuses a grid of more than [`MAX_GRID_RUNS`] runs, counted from the
    /// lists' lengths before anything is expanded.
    fn grid_size(&self, hp: &Hyperparameters, table_span: &Range<usize>) -> Result<(), SpecError> {
        let lists: Vec<(&str, &Domain)> = hp.iter().map(|a| (a.name.as_str(), &a.domain)).collect();
        let len = |d: &Domain| match d {
            Domain::Values(v) => v.len() as u128,
            Domain::Uniform(..) | Domain::LogUniform(..) => 1,
        };
        let count: u128 = lists.iter().map(|(_, d)| len(d)).product();
        if count <= u128::from(MAX_GRID_RUNS) {
            return Ok(());
        }
        let factors: Vec<String> =
            lists.iter().filter(|(_, d)| len(d) > 1).map(|(name, d)| format!("{} {name}", len(d))).collect();
        Err(self.error(
            table_span,
            "hyperparameters",
            format!("the grid has {count} runs ({}), more than the limit of {MAX_GRID_RUNS}", factors.join(" × ")),
            "list fewer values, or sample the space with `strategy = \"random\"` and `runs = 1000` (at most) under [search]",
        ))
    }

    /// The strategy and its settings; also refuses the keys that belong to
    /// another strategy.
    fn search(&self, s: &RawSearch) -> Result<Search, SpecError> {
        let strategy = s.strategy.as_ref().map(|v| v.get_ref().as_str()).unwrap_or("grid");
        if !matches!(strategy, "grid" | "random" | "successive_halving") {
            return Err(self.at(
                s.strategy.as_ref().expect("a strategy other than the default was written"),
                "search.strategy",
                format!("unknown strategy `{strategy}`"),
                "use `strategy = \"grid\"`, `strategy = \"random\"` or `strategy = \"successive_halving\"`",
            ));
        }
        if strategy != "random"
            && let Some(runs) = &s.runs
        {
            return Err(self.at(
                runs,
                "search.runs",
                "`runs` only applies to random search".into(),
                "remove `runs`, or set `strategy = \"random\"`",
            ));
        }
        let halving_keys = [("eta", &s.eta), ("min_epochs", &s.min_epochs), ("max_epochs", &s.max_epochs)];
        if strategy != "successive_halving"
            && let Some((name, v)) = halving_keys.iter().find_map(|(name, v)| v.as_ref().map(|v| (name, v)))
        {
            return Err(self.at(
                v,
                &format!("search.{name}"),
                format!("`{name}` only applies to successive halving"),
                &format!("remove `{name}`, or set `strategy = \"successive_halving\"`"),
            ));
        }
        match strategy {
            "grid" => Ok(Search::Grid),
            "random" => match &s.runs {
                None => Err(SpecError {
                    path: self.path.to_path_buf(),
                    line: s.strategy.as_ref().map(|v| self.line_of(v.span().start)),
                    key: Some("search.runs".into()),
                    message: "random search needs the number of runs".into(),
                    hint: Some("add `runs = 8` (any whole number from 1 to 1000) under [search]".into()),
                }),
                Some(runs) => Ok(Search::Random { runs: self.int_in(runs, "search.runs", (1.0, 1000.0))? as u32 }),
            },
            _ => self.halving(s).map(Search::SuccessiveHalving),
        }
    }

    /// The settings of `strategy = "successive_halving"`.
    fn halving(&self, s: &RawSearch) -> Result<Halving, SpecError> {
        if let Some(v) = &s.epochs_from_checkpoints {
            return Err(self.at(
                v,
                "search.epochs_from_checkpoints",
                "`epochs_from_checkpoints` does not apply to successive halving".into(),
                "remove the key: halving already continues training from each configuration's own model, rung by rung",
            ));
        }
        let eta = match &s.eta {
            None => 3,
            Some(v) => self.int_in(v, "search.eta", (2.0, 10.0))? as u32,
        };
        let min_epochs = match &s.min_epochs {
            None => 1,
            Some(v) => self.int_in(v, "search.min_epochs", N_EPOCHS_RANGE)? as u32,
        };
        let Some(max) = &s.max_epochs else {
            return Err(SpecError {
                path: self.path.to_path_buf(),
                line: s.strategy.as_ref().map(|v| self.line_of(v.span().start)),
                key: Some("search.max_epochs".into()),
                message: "successive halving needs the epochs of its last rung".into(),
                hint: Some(
                    "add `max_epochs = 3` (a whole number above `min_epochs`, at most 50) under [search]".into(),
                ),
            });
        };
        let max_epochs = self.int_in(max, "search.max_epochs", N_EPOCHS_RANGE)? as u32;
        if min_epochs >= max_epochs {
            return Err(self.at(
                max,
                "search.max_epochs",
                format!(
                    "`max_epochs` ({max_epochs}) must be greater than `min_epochs` ({min_epochs}): \
                     otherwise there is only one rung and nothing to halve"
                ),
                "raise `max_epochs` above `min_epochs`, or use `strategy = \"grid\"` with `n_epochs` under [hyperparameters]",
            ));
        }
        Ok(Halving { eta, min_epochs, max_epochs })
    }

    /// `replicate_top` and `replicate_seeds`, which need each other.
    fn replicates(&self, s: &RawSearch, seed: u64) -> Result<Option<Replicates>, SpecError> {
        let (top, list) = match (&s.replicate_top, &s.replicate_seeds) {
            (None, None) => return Ok(None),
            (Some(top), None) => {
                return Err(self.at(
                    top,
                    "search.replicate_seeds",
                    "`replicate_top` needs the seeds to train the leading configurations with again".into(),
                    "add `replicate_seeds = [1, 2]` under [search], or remove `replicate_top`",
                ));
            }
            (None, Some(list)) => {
                return Err(self.at(
                    list,
                    "search.replicate_top",
                    "`replicate_seeds` needs the number of leading configurations to train again".into(),
                    "add `replicate_top = 2` under [search], or remove `replicate_seeds`",
                ));
            }
            (Some(top), Some(list)) => (top, list),
        };
        let top = self.int_in(top, "search.replicate_top", (1.0, 100.0))? as u32;
        if list.get_ref().is_empty() {
            return Err(self.at(
                list,
                "search.replicate_seeds",
                "the list is empty".into(),
                "give at least one seed, e.g. `replicate_seeds = [1, 2]`",
            ));
        }
        let mut seeds = Vec::with_capacity(list.get_ref().len());
        let mut seen = std::collections::HashSet::with_capacity(list.get_ref().len());
        for v in list.get_ref() {
            let x = self.int_in(v, "search.replicate_seeds", SEED_RANGE)?;
            if x == seed {
                return Err(self.at(
                    v,
                    "search.replicate_seeds",
                    format!("{x} is the sweep's `seed`: the configurations were trained with it already"),
                    &format!("use seeds other than {seed} (the sweep's `seed`, 0 when not written)"),
                ));
            }
            if !seen.insert(x) {
                return Err(self.at(
                    v,
                    "search.replicate_seeds",
                    format!("{x} is listed twice"),
                    "list each seed once",
                ));
            }
            seeds.push(x);
        }
        Ok(Some(Replicates { top, seeds }))
    }

    /// The `[early_stopping]` table; missing keys take the defaults.
    fn early_stopping(&self, raw: &RawEarlyStopping) -> Result<EarlyStopping, SpecError> {
        let mut stop = EarlyStopping::default();
        if let Some(m) = &raw.metric {
            stop.metric = match m.get_ref().as_str() {
                "valid_loss" => StopMetric::ValidLoss,
                "valid_accuracy" => StopMetric::ValidAccuracy,
                other => {
                    return Err(self.at(
                        m,
                        "early_stopping.metric",
                        format!("unknown metric `{other}`"),
                        "use `metric = \"valid_loss\"` (the default) or `metric = \"valid_accuracy\"`",
                    ));
                }
            };
        }
        if let Some(p) = &raw.patience {
            stop.patience = self.int_in(p, "early_stopping.patience", (1.0, 100.0))? as u32;
        }
        if let Some(d) = &raw.min_delta {
            let x = *d.get_ref();
            if !x.is_finite() || x < 0.0 {
                return Err(self.at(
                    d,
                    "early_stopping.min_delta",
                    format!("{x} is not allowed"),
                    "give the smallest change that counts as an improvement, 0 or more, e.g. `min_delta = 0.01`",
                ));
            }
            stop.min_delta = x;
        }
        if let Some(f) = &raw.divergence_factor {
            let x = *f.get_ref();
            if !x.is_finite() || x < 1.0 {
                return Err(self.at(
                    f,
                    "early_stopping.divergence_factor",
                    format!("{x} is not allowed"),
                    "give a factor of 1.0 or more over the first evaluation's loss, e.g. `divergence_factor = 2.0`",
                ));
            }
            stop.divergence_factor = x;
        }
        Ok(stop)
    }

    fn domain(
        &self,
        v: &Option<Spanned<toml::Value>>,
        name: &str,
        kind: Kind,
        search: &Search,
        table_span: &Range<usize>,
    ) -> Result<Domain, SpecError> {
        let key = format!("hyperparameters.{name}");
        let example = match kind {
            Kind::Int(_) if name == "seed" => "[1, 2, 3]",
            Kind::Int(_) => "[1, 3, 8]",
            Kind::Positive => "[0.5, 1.0, 2.0]",
        };
        let Some(v) = v else {
            return Err(self.error(
                table_span,
                &key,
                "missing".into(),
                &format!("add `{name} = {example}` under [hyperparameters]"),
            ));
        };
        let span = v.span();
        let check = |x: f64| -> Result<f64, SpecError> {
            match kind {
                Kind::Int((lo, hi)) => {
                    if x.fract() != 0.0 || x < lo || x > hi {
                        return Err(self.error(
                            &span,
                            &key,
                            format!("{x} is not allowed"),
                            &format!("use whole numbers from {lo} to {hi}, e.g. `{name} = {example}`"),
                        ));
                    }
                }
                Kind::Positive => {
                    if !x.is_finite() || x <= 0.0 {
                        return Err(self.error(
                            &span,
                            &key,
                            format!("{x} is not allowed: the value must be a number greater than 0"),
                            &format!("e.g. `{name} = {example}`"),
                        ));
                    }
                }
            }
            Ok(x)
        };
        let number = |val: &toml::Value| -> Result<Option<f64>, SpecError> {
            match val {
                toml::Value::Integer(i) => check(*i as f64).map(Some),
                toml::Value::Float(f) if matches!(kind, Kind::Positive) => check(*f).map(Some),
                toml::Value::String(s) if s == "auto" && name != "seed" => Ok(None),
                toml::Value::String(s) if s == "auto" => Err(self.error(
                    &span,
                    &key,
                    "a seed cannot be \"auto\"".into(),
                    "give whole numbers, e.g. `seed = [1, 2, 3]`, or leave the key out to use the sweep's seed",
                )),
                other => Err(self.error(
                    &span,
                    &key,
                    format!(
                        "expected {}, found {} `{other}`",
                        match kind {
                            Kind::Int(_) => "a whole number",
                            Kind::Positive => "a number",
                        },
                        other.type_str()
                    ),
                    &format!("e.g. `{name} = {example}`"),
                )),
            }
        };
        match v.get_ref() {
            toml::Value::Array(items) => {
                if items.is_empty() {
                    return Err(self.error(
                        &span,
                        &key,
                        "the list is empty".into(),
                        &format!("give at least one value, e.g. `{name} = {example}`"),
                    ));
                }
                let mut values = Vec::with_capacity(items.len());
                // By bits: the values are finite and positive, so equal bits are equal values.
                let mut seen = std::collections::HashSet::with_capacity(items.len());
                for item in items {
                    let x = number(item)?;
                    if !seen.insert(x.map(f64::to_bits)) {
                        return Err(self.error(
                            &span,
                            &key,
                            format!("{} is listed twice", crate::run::show(x)),
                            "list each value once",
                        ));
                    }
                    values.push(x);
                }
                Ok(Domain::Values(values))
            }
            toml::Value::Table(t) => {
                let dist_hint = format!(
                    "write `{name} = {{ log_uniform = [lo, hi] }}` or `{{ uniform = [lo, hi] }}` (random search only)"
                );
                if t.len() != 1 {
                    return Err(self.error(
                        &span,
                        &key,
                        "a distribution table takes exactly one key".into(),
                        &dist_hint,
                    ));
                }
                let (dist, bounds) = t.iter().next().expect("the table has one entry");
                let pair = bounds.as_array().filter(|a| a.len() == 2);
                let Some(pair) = pair else {
                    return Err(self.error(&span, &key, format!("`{dist}` takes a list of two bounds"), &dist_hint));
                };
                let bound = |v: &toml::Value| {
                    number(v)?.ok_or_else(|| self.error(&span, &key, "a bound cannot be \"auto\"".into(), &dist_hint))
                };
                let lo = bound(&pair[0])?;
                let hi = bound(&pair[1])?;
                if lo >= hi {
                    return Err(self.error(
                        &span,
                        &key,
                        format!("the bounds [{lo}, {hi}] are empty"),
                        "write the lower bound first, and make it smaller than the upper bound",
                    ));
                }
                if !matches!(search, Search::Random { .. }) {
                    let message = match search {
                        Search::SuccessiveHalving(_) => {
                            "successive halving searches a grid: it needs a list of values, not a distribution"
                        }
                        _ => "a grid search needs a list of values, not a distribution",
                    };
                    return Err(self.error(
                        &span,
                        &key,
                        message.into(),
                        &format!("write `{name} = {example}`, or set `strategy = \"random\"` under [search]"),
                    ));
                }
                match dist.as_str() {
                    "uniform" => Ok(Domain::Uniform(lo, hi)),
                    "log_uniform" => Ok(Domain::LogUniform(lo, hi)),
                    other => Err(self.error(&span, &key, format!("unknown distribution `{other}`"), &dist_hint)),
                }
            }
            single => Ok(Domain::Values(vec![number(single)?])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "topic-router"
provider = "local"
base_model = "local/ngram"
training_file = "../examples/data/topics-train.jsonl"
validation_file = "../examples/data/topics-valid.jsonl"
seed = 42
[search]
strategy = "grid"
[hyperparameters]
n_epochs = [1, 3, 8]
learning_rate_multiplier = [0.1, 1.0, 10.0]
batch_size = [4, 32]
[evaluation]
metric = "exact_match"
[limits]
max_concurrent = 2
"#;

    fn parse_str(text: &str) -> Result<Sweep, SpecError> {
        parse(Path::new("sweeps/x.toml"), text)
    }

    fn err(text: &str) -> SpecError {
        parse_str(text).expect_err("the sweep should be rejected")
    }

    #[test]
    fn parses_the_sketch_from_the_issue() {
        let s = parse_str(GOOD).unwrap();
        assert_eq!(s.name, "topic-router");
        assert_eq!(s.training_file, Path::new("sweeps/../examples/data/topics-train.jsonl"));
        assert_eq!(s.seed, 42);
        assert_eq!(s.search, Search::Grid);
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(1.0), Some(3.0), Some(8.0)]));
        assert_eq!(*s.hyperparameters.domain("seed"), Domain::Values(vec![Some(42.0)]));
        assert_eq!(s.limits.max_concurrent, 2);
    }

    #[test]
    fn unknown_key_names_the_line_and_the_key() {
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nbatch_sise = 3"));
        assert_eq!(e.line, Some(14));
        assert!(e.message.contains("unknown field `batch_sise`"), "{e}");
        assert!(e.to_string().starts_with("sweeps/x.toml:14: "), "{e}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let e = err(&GOOD.replace("n_epochs = [1, 3, 8]", "n_epochs = [1, \"three\"]"));
        assert_eq!(e.line, Some(11));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.n_epochs"));
        assert!(e.message.contains("expected a whole number"), "{e}");
    }

    #[test]
    fn negative_multiplier_is_rejected() {
        let e = err(&GOOD.replace("[0.1, 1.0, 10.0]", "[0.1, -1.0]"));
        assert_eq!(e.line, Some(12));
        assert!(e.message.contains("greater than 0"), "{e}");
    }

    #[test]
    fn empty_list_is_rejected() {
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = []"));
        assert_eq!(e.line, Some(13));
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn out_of_range_epochs_are_rejected() {
        let e = err(&GOOD.replace("[1, 3, 8]", "[0, 3]"));
        assert!(e.to_string().contains("from 1 to 50"), "{e}");
    }

    #[test]
    fn missing_hyperparameter_is_named() {
        let e = err(&GOOD.replace("batch_size = [4, 32]\n", ""));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.batch_size"));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = err(&GOOD.replace("seed = 42", "seed = = 42"));
        assert_eq!(e.line, Some(7));
    }

    #[test]
    fn random_search_takes_distributions() {
        let s = parse_str(
            &GOOD
                .replace("strategy = \"grid\"", "strategy = \"random\"\nruns = 5")
                .replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }"),
        )
        .unwrap();
        assert_eq!(s.search, Search::Random { runs: 5 });
        assert_eq!(*s.hyperparameters.domain("learning_rate_multiplier"), Domain::LogUniform(0.05, 20.0));
    }

    #[test]
    fn grid_refuses_distributions() {
        let e = err(&GOOD.replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }"));
        assert!(e.message.contains("grid search needs a list"), "{e}");
    }

    #[test]
    fn scalar_is_a_single_value() {
        let s = parse_str(&GOOD.replace("[4, 32]", "16")).unwrap();
        assert_eq!(*s.hyperparameters.domain("batch_size"), Domain::Values(vec![Some(16.0)]));
    }

    #[test]
    fn auto_is_a_value_but_not_for_seeds() {
        let s = parse_str(&GOOD.replace("[1, 3, 8]", "[\"auto\", 3]")).unwrap();
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![None, Some(3.0)]));
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nseed = [\"auto\"]"));
        assert!(e.message.contains("cannot be \"auto\""), "{e}");
    }

    #[test]
    fn openai_settings_parse_and_plain_http_is_loopback_only() {
        let openai = GOOD.replace("provider = \"local\"", "provider = \"openai\"").replace(
            "base_model = \"local/ngram\"",
            "base_model = \"gpt-4.1-mini-2025-04-14\"\n[openai]\nbase_url = \"http://127.0.0.1:8089/v1/\"\napi_key_env = \"MY_KEY\"",
        );
        // The [openai] table must come after the top-level keys: move it to the end.
        let (head, table) = openai.split_once("[openai]").unwrap();
        let (table, rest) = table.split_once("training_file").unwrap();
        let text = format!("{head}training_file{rest}[openai]{table}");
        let s = parse_str(&text).unwrap();
        assert_eq!(s.provider, ProviderKind::OpenAi);
        assert_eq!(s.openai.base_url, "http://127.0.0.1:8089/v1");
        assert_eq!(s.openai.api_key_env, "MY_KEY");
        let e = err(&text.replace("127.0.0.1", "example.com"));
        assert!(e.message.contains("plain http is refused"), "{e}");
        let e = err(&text.replace("\"MY_KEY\"", "\"sk-abc123 secret\""));
        assert!(e.message.contains("not a variable name"), "{e}");
        assert!(check_base_url("https://example.com/v1").is_ok());
        assert!(check_base_url("http://[::1]:80/v1").is_ok());
        assert!(check_base_url("http://localhost/v1").is_ok());
    }

    #[test]
    fn plain_http_is_for_loopback_hosts_as_the_client_parses_them() {
        for ok in [
            "https://example.com/v1",
            "https://api.openai.com/v1",
            "http://127.0.0.1:8089/v1",
            "http://127.1.2.3/v1",
            "http://[::1]:80/v1",
            "http://localhost:9/v1",
            "http://LOCALHOST/v1",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        // The host is what follows `@`, and `127.0.0.1.example.com` is a name.
        for (bad, says) in [
            ("http://127.0.0.1@otherhost:8000/v1", "user-info"),
            ("http://127.0.0.1:x@otherhost/v1", "user-info"),
            ("http://user@127.0.0.1:8000/v1", "user-info"),
            ("https://user:pw@example.com/v1", "user-info"),
            ("http://127.0.0.1.example.com/v1", "`127.0.0.1.example.com`"),
            ("http://localhost.example.com/v1", "not a loopback host"),
            ("http://128.0.0.1/v1", "not a loopback host"),
            ("http://0.0.0.0:80/v1", "not a loopback host"),
            ("http://[::ffff:7f00:1]/v1", "not a loopback host"),
            ("http://evil\\@127.0.0.1/v1", "not a loopback host"),
            ("ftp://127.0.0.1/v1", "unsupported scheme"),
            ("127.0.0.1:8000/v1", "not a URL"),
        ] {
            let e = check_base_url(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn header_values_must_be_sendable() {
        assert_eq!(header_value_problem("org-AbC_123 x\tz"), None);
        let crlf = header_value_problem("org-1\r\nX-Evil: 1").unwrap();
        assert!(crlf.contains("line break") && crlf.contains("character 6"), "{crlf}");
        assert!(header_value_problem("a\u{0}b").unwrap().contains("U+0000"));
        assert!(header_value_problem("a\u{7f}").unwrap().contains("U+007F"));
        let utf8 = header_value_problem("sk-é-secret").unwrap();
        assert!(utf8.contains("non-ASCII") && !utf8.contains('é') && !utf8.contains("secret"), "{utf8}");
        let openai = GOOD
            .replace("provider = \"local\"", "provider = \"openai\"")
            .replace("local/ngram", "gpt-4.1-mini-2025-04-14");
        for key in ["organization", "project"] {
            let e = err(&format!("{openai}[openai]\n{key} = \"x\\r\\nX-Evil: 1\"\n"));
            assert_eq!(e.key.as_deref(), Some(format!("openai.{key}").as_str()), "{e}");
            assert_eq!(e.line, Some(19), "{e}");
            assert!(e.message.contains("line break"), "{e}");
        }
        let ok = parse_str(&format!("{openai}[openai]\norganization = \"org-1\"\nproject = \"proj_2\"\n")).unwrap();
        assert_eq!((ok.openai.organization.as_deref(), ok.openai.project.as_deref()), (Some("org-1"), Some("proj_2")));
    }

    #[test]
    fn toml_errors_name_the_key_and_a_deep_key_its_line() {
        let e = err(&GOOD.replace("max_concurrent = 2", "max_concurrent = 99999999999999999999"));
        assert_eq!((e.line, e.key.as_deref()), (Some(17), Some("limits.max_concurrent")), "{e}");
        assert!(e.message.contains("too large"), "{e}");
        let e = err(&GOOD.replace("seed = 42", "seed = 99999999999999999999"));
        assert_eq!((e.line, e.key.as_deref()), (Some(7), Some("seed")), "{e}");
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [\n  4,\n  99999999999999999999,\n]"));
        assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("hyperparameters.batch_size")), "{e}");
        let e = err(&GOOD.replace("max_concurrent = 2", "max_concurrent = \"two\""));
        assert_eq!(e.key.as_deref(), Some("limits.max_concurrent"), "{e}");
        let deep = vec!["a"; 20_000].join(".");
        let e = err(&format!("{GOOD}\n[{deep}]\nx = 1\n"));
        assert_eq!(e.line, Some(19), "{e}");
        assert!(e.message.contains("20000 dotted parts") && e.message.contains("`a.a.a"), "{e}");
        assert!(e.to_string().len() < 400, "the key is not printed whole: {e}");
        let e = err(&format!("{GOOD}x = {}{}\n", "[".repeat(20_000), "]".repeat(20_000)));
        assert_eq!(e.line, Some(18), "{e}");
        assert!(e.message.contains("nest deeper"), "{e}");
        // An unknown key is named with its table.
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nbatch_sise = 3"));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.batch_sise"), "{e}");
    }

    #[test]
    fn a_key_error_is_at_the_top_level_key() {
        let e = key_error(Path::new("s.toml"), GOOD, "validation_file", "gone".into(), "fix it");
        assert_eq!(e.to_string(), "s.toml:6: `validation_file`: gone\n  hint: fix it");
        let e = key_error(Path::new("s.toml"), GOOD, "metric", "x".into(), "y");
        assert_eq!(e.line, None, "only top-level keys: `metric` is in [evaluation]");
    }

    #[test]
    fn limits_take_a_budget_and_retries() {
        let s = parse_str(&GOOD.replace(
            "max_concurrent = 2",
            "max_concurrent = 2\nbudget_usd = 12.5\nmax_trained_tokens = 1000000\nretries = 3",
        ))
        .unwrap();
        assert_eq!(s.limits.budget_usd, Some(12.5));
        assert_eq!(s.limits.max_trained_tokens, Some(1_000_000));
        assert_eq!(s.limits.retries, 3);
        assert!(err(&GOOD.replace("max_concurrent = 2", "budget_usd = -1.0")).message.contains("not allowed"));
    }

    #[test]
    fn unknown_provider_and_model_are_rejected() {
        assert!(err(&GOOD.replace("\"local\"\n", "\"acme\"\n")).message.contains("unknown provider"));
        assert!(err(&GOOD.replace("local/ngram", "gpt-4o")).message.contains("no model"));
    }

    /// GOOD with `extra` appended (graders after `[limits]` are valid TOML).
    fn with_graders(extra: &str) -> String {
        format!("{GOOD}{extra}")
    }

    #[test]
    fn evaluation_defaults_to_exact_match_as_before() {
        let s = parse_str(GOOD).unwrap();
        assert_eq!(s.evaluation.metric, Metric::EXACT_MATCH);
        assert_eq!(s.evaluation.score_names(), ["exact_match"]);
        assert_eq!((s.evaluation.alpha, s.evaluation.baseline, s.evaluation.checkpoints), (0.05, true, false));
        let none = parse_str(&GOOD.replace("[evaluation]\nmetric = \"exact_match\"\n", "")).unwrap();
        assert_eq!(none.evaluation, Evaluation::default());
    }

    #[test]
    fn graders_are_added_and_the_metric_may_name_a_built_in_one() {
        let s = parse_str(&with_graders(
            "[[evaluation.graders]]\ntype = \"token_f1\"\n[[evaluation.graders]]\ntype = \"contains\"\nignore_case = true\n",
        ))
        .unwrap();
        assert_eq!(s.evaluation.metric.as_str(), "exact_match");
        assert_eq!(s.evaluation.score_names(), ["exact_match", "token_f1", "contains_i"]);
        // Without `metric`, the first grader is primary.
        let s = parse_str(
            &with_graders("[[evaluation.graders]]\ntype = \"bleu\"\n").replace("metric = \"exact_match\"\n", ""),
        )
        .unwrap();
        assert_eq!(s.evaluation.metric.as_str(), "bleu");
        assert_eq!(s.evaluation.score_names(), ["bleu"]);
        let s =
            parse_str(&GOOD.replace("metric = \"exact_match\"", "metric = \"rouge_l\"\nalpha = 0.01\nconcurrency = 4"))
                .unwrap();
        assert_eq!((s.evaluation.metric.as_str(), s.evaluation.alpha, s.evaluation.concurrency), ("rouge_l", 0.01, 4));
    }

    #[test]
    fn a_weighted_combination_can_be_the_metric() {
        let s =
            parse_str(&GOOD.replace(
                "metric = \"exact_match\"",
                "metric = \"combined\"\ncombined = { exact_match = 1, fuzzy = 3 }",
            ))
            .unwrap();
        assert_eq!(s.evaluation.metric.as_str(), "combined");
        assert_eq!(s.evaluation.score_names(), ["exact_match", "fuzzy", "combined"]);
        assert_eq!(
            s.evaluation.combined.unwrap().parts,
            [("exact_match".to_string(), 1.0), ("fuzzy".to_string(), 3.0)]
        );
        let e = err(&GOOD.replace("metric = \"exact_match\"", "combined = { exact_match = 1, nope = 3 }"));
        assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("evaluation.combined")));
        assert!(e.message.contains("no grader is named `nope`"), "{e}");
        let e = err(&GOOD.replace("metric = \"exact_match\"", "combined = { exact_match = 0 }"));
        assert!(e.message.contains("add up to zero"), "{e}");
    }

    #[test]
    fn evaluation_errors_name_the_line_and_the_key() {
        let e = err(&GOOD.replace("metric = \"exact_match\"", "metric = \"accuracy\""));
        assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("evaluation.metric")));
        assert!(e.message.contains("unknown metric `accuracy`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"contains\"\nignorecase = true\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(20), Some("evaluation.graders[1]")));
        assert!(e.message.contains("unknown field `ignorecase`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"meteor\"\n"));
        assert_eq!(e.line, Some(19));
        assert!(e.message.contains("unknown grader type `meteor`"), "{e}");
        let e =
            err(&with_graders("[[evaluation.graders]]\ntype = \"bleu\"\n[[evaluation.graders]]\ntype = \"bleu\"\n"));
        assert_eq!(e.key.as_deref(), Some("evaluation.graders[2]"));
        assert!(e.message.contains("two graders are named `bleu`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"judge\"\nrubric = \"r\"\n"));
        assert!(e.message.contains("missing field `model`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"regex\"\npattern = \"(\"\n"));
        assert!(e.message.contains("invalid regex"), "{e}");
        let e = err(&GOOD.replace("metric = \"exact_match\"", "alpha = 0.9"));
        assert_eq!(e.key.as_deref(), Some("evaluation.alpha"));
        let e = err(&GOOD.replace("metric = \"exact_match\"", "metrics = \"exact_match\""));
        assert!(e.message.contains("unknown field `metrics`"), "{e}");
    }

    #[test]
    fn the_margin_defaults_to_two_points_and_must_be_below_one() {
        assert_eq!(parse_str(GOOD).unwrap().evaluation.margin, 0.02);
        let s = parse_str(&GOOD.replace("metric = \"exact_match\"", "margin = 0.05")).unwrap();
        assert_eq!(s.evaluation.margin, 0.05);
        assert_eq!(
            parse_str(&GOOD.replace("metric = \"exact_match\"", "margin = 0.0")).unwrap().evaluation.margin,
            0.0
        );
        for bad in ["margin = 1.0", "margin = -0.01", "margin = nan"] {
            let e = err(&GOOD.replace("metric = \"exact_match\"", bad));
            assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("evaluation.margin")), "{bad}");
            assert!(
                e.message.contains("is not allowed") && e.hint.as_deref().unwrap().contains("margin = 0.02"),
                "{e}"
            );
        }
    }

    #[test]
    fn judge_and_command_graders_parse() {
        let s = parse_str(&with_graders(
            "[[evaluation.graders]]\ntype = \"judge\"\nname = \"helpful\"\nmodel = \"gpt-4.1-mini-2025-04-14\"\n\
             rubric = \"Rate {{reply}} from 1 to 5\"\nrange = [1, 5]\n\
             [[evaluation.graders]]\ntype = \"command\"\ncommand = [\"python3\", \"grade.py\"]\ntimeout_seconds = 2.5\n",
        ))
        .unwrap();
        assert_eq!(s.evaluation.score_names(), ["exact_match", "helpful", "command"]);
        assert!(s.evaluation.grader("helpful").unwrap().is_cached());
        assert!(!s.evaluation.grader("exact_match").unwrap().is_cached());
    }

    /// GOOD as a successive-halving sweep with the `[search]` lines `keys`
    /// (line 10 on) and without `n_epochs`.
    fn halving(keys: &str) -> String {
        GOOD.replace("strategy = \"grid\"", &format!("strategy = \"successive_halving\"\n{keys}"))
            .replace("n_epochs = [1, 3, 8]\n", "")
    }

    #[test]
    fn a_halving_sweep_parses_and_its_first_rung_is_min_epochs() {
        let s = parse_str(&halving("eta = 2\nmin_epochs = 2\nmax_epochs = 16")).unwrap();
        assert_eq!(s.search, Search::SuccessiveHalving(Halving { eta: 2, min_epochs: 2, max_epochs: 16 }));
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(2.0)]));
        assert_eq!(*s.hyperparameters.domain("batch_size"), Domain::Values(vec![Some(4.0), Some(32.0)]));
        assert!(!s.epochs_from_checkpoints);
        let s = parse_str(&halving("max_epochs = 9")).unwrap();
        assert_eq!(s.search, Search::SuccessiveHalving(Halving { eta: 3, min_epochs: 1, max_epochs: 9 }));
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(1.0)]));
    }

    #[test]
    fn an_unknown_strategy_lists_the_three() {
        let e = err(&GOOD.replace("\"grid\"", "\"hyperband\""));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("search.strategy")));
        assert!(e.message.contains("unknown strategy `hyperband`"), "{e}");
        let hint = e.hint.unwrap();
        for s in ["\"grid\"", "\"random\"", "\"successive_halving\""] {
            assert!(hint.contains(s), "{hint}");
        }
    }

    #[test]
    fn halving_needs_max_epochs() {
        let e = err(&halving("eta = 2"));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("search.max_epochs")));
        assert!(e.message.contains("last rung"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("add `max_epochs = 3`"), "{e}");
    }

    #[test]
    fn halving_settings_are_range_checked() {
        for (keys, key, line) in [
            ("eta = 1\nmax_epochs = 8", "search.eta", 10),
            ("eta = 11\nmax_epochs = 8", "search.eta", 10),
            ("min_epochs = 0\nmax_epochs = 8", "search.min_epochs", 10),
            ("min_epochs = 51\nmax_epochs = 8", "search.min_epochs", 10),
            ("max_epochs = 0", "search.max_epochs", 10),
            ("eta = 2\nmax_epochs = 51", "search.max_epochs", 11),
        ] {
            let e = err(&halving(keys));
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{keys}: {e}");
            assert!(e.message.contains("out of range"), "{e}");
            assert!(e.hint.as_deref().unwrap().starts_with("use a whole number from"), "{e}");
        }
        assert!(err(&halving("eta = 2.5\nmax_epochs = 8")).message.contains("invalid type"));
    }

    #[test]
    fn halving_needs_min_epochs_below_max_epochs() {
        for keys in ["min_epochs = 4\nmax_epochs = 4", "min_epochs = 5\nmax_epochs = 4", "max_epochs = 1"] {
            let e = err(&halving(keys));
            assert_eq!(e.key.as_deref(), Some("search.max_epochs"), "{e}");
            assert_eq!(e.line, Some(9 + keys.lines().count()), "{e}");
            assert!(e.message.contains("must be greater than `min_epochs`"), "{e}");
            let hint = e.hint.unwrap();
            assert!(hint.contains("raise `max_epochs`") && hint.contains("\"grid\""), "{hint}");
        }
    }

    #[test]
    fn halving_keys_only_apply_to_halving() {
        for key in ["eta = 2", "min_epochs = 1", "max_epochs = 8"] {
            let name = key.split(' ').next().unwrap();
            let e = err(&GOOD.replace("strategy = \"grid\"", &format!("strategy = \"grid\"\n{key}")));
            assert_eq!((e.line, e.key.as_deref()), (Some(10), Some(format!("search.{name}").as_str())), "{e}");
            assert!(e.message.contains("only applies to successive halving"), "{e}");
            assert!(e.hint.as_deref().unwrap().contains("strategy = \"successive_halving\""), "{e}");
            let e = err(&GOOD.replace("strategy = \"grid\"", &format!("strategy = \"random\"\nruns = 4\n{key}")));
            assert_eq!((e.line, e.key.as_deref()), (Some(11), Some(format!("search.{name}").as_str())), "{e}");
        }
        // Without a [search] strategy, the grid is meant.
        let e = err(&GOOD.replace("strategy = \"grid\"", "max_epochs = 8"));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("search.max_epochs")));
    }

    #[test]
    fn halving_refuses_n_epochs_runs_and_distributions() {
        let e = err(&GOOD.replace("strategy = \"grid\"", "strategy = \"successive_halving\"\nmax_epochs = 8"));
        assert_eq!((e.line, e.key.as_deref()), (Some(12), Some("hyperparameters.n_epochs")));
        assert!(e.message.contains("sets the epochs rung by rung"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("remove `n_epochs`; set `min_epochs` and `max_epochs` under [search]"));
        let e = err(&halving("max_epochs = 8\nruns = 4"));
        assert_eq!((e.line, e.key.as_deref()), (Some(11), Some("search.runs")));
        assert!(e.message.contains("only applies to random search"), "{e}");
        let e = err(&halving("max_epochs = 8").replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }"));
        assert_eq!((e.line, e.key.as_deref()), (Some(12), Some("hyperparameters.learning_rate_multiplier")));
        assert!(e.message.contains("successive halving searches a grid: it needs a list of values"), "{e}");
    }

    #[test]
    fn epochs_from_checkpoints_is_a_flag_but_not_with_halving() {
        assert!(!parse_str(GOOD).unwrap().epochs_from_checkpoints);
        let with = |v: &str| {
            GOOD.replace("strategy = \"grid\"", &format!("strategy = \"grid\"\nepochs_from_checkpoints = {v}"))
        };
        assert!(parse_str(&with("true")).unwrap().epochs_from_checkpoints);
        assert!(!parse_str(&with("false")).unwrap().epochs_from_checkpoints);
        let random =
            GOOD.replace("strategy = \"grid\"", "strategy = \"random\"\nruns = 3\nepochs_from_checkpoints = true");
        assert!(parse_str(&random).unwrap().epochs_from_checkpoints);
        assert!(err(&with("\"yes\"")).message.contains("invalid type"));
        for v in ["true", "false"] {
            let e = err(&halving(&format!("max_epochs = 8\nepochs_from_checkpoints = {v}")));
            assert_eq!((e.line, e.key.as_deref()), (Some(11), Some("search.epochs_from_checkpoints")));
            assert!(e.message.contains("does not apply to successive halving"), "{e}");
            let hint = e.hint.unwrap();
            assert!(hint.contains("remove the key") && hint.contains("own model"), "{hint}");
        }
    }

    /// GOOD with the `[search]` lines `keys` (line 10 on).
    fn search_keys(keys: &str) -> String {
        GOOD.replace("strategy = \"grid\"", &format!("strategy = \"grid\"\n{keys}"))
    }

    #[test]
    fn replicates_parse_with_every_strategy() {
        assert_eq!(parse_str(GOOD).unwrap().replicates, None);
        let want = Some(Replicates { top: 3, seeds: vec![1, 2, 2_147_483_647] });
        let keys = "replicate_top = 3\nreplicate_seeds = [1, 2, 2147483647]";
        assert_eq!(parse_str(&search_keys(keys)).unwrap().replicates, want);
        assert_eq!(parse_str(&halving(&format!("max_epochs = 8\n{keys}"))).unwrap().replicates, want);
        let random = GOOD.replace("strategy = \"grid\"", &format!("strategy = \"random\"\nruns = 4\n{keys}"));
        assert_eq!(parse_str(&random).unwrap().replicates, want);
        // The sweep's seed defaults to 0, and 42 is then free.
        let s =
            parse_str(&search_keys("replicate_top = 1\nreplicate_seeds = [42]").replace("seed = 42\n", "")).unwrap();
        assert_eq!(s.replicates, Some(Replicates { top: 1, seeds: vec![42] }));
    }

    #[test]
    fn replicate_keys_need_each_other() {
        let e = err(&search_keys("replicate_top = 2"));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("search.replicate_seeds")));
        assert!(e.hint.as_deref().unwrap().contains("add `replicate_seeds = [1, 2]`"), "{e}");
        let e = err(&search_keys("replicate_seeds = [1, 2]"));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("search.replicate_top")));
        assert!(e.hint.as_deref().unwrap().contains("add `replicate_top = 2`"), "{e}");
    }

    #[test]
    fn replicate_settings_are_checked() {
        for (keys, key, line, message, hint) in [
            (
                "replicate_top = 0\nreplicate_seeds = [1]",
                "search.replicate_top",
                10,
                "0 is out of range",
                "from 1 to 100",
            ),
            (
                "replicate_top = 101\nreplicate_seeds = [1]",
                "search.replicate_top",
                10,
                "101 is out of range",
                "from 1 to 100",
            ),
            ("replicate_top = 2\nreplicate_seeds = []", "search.replicate_seeds", 11, "empty", "at least one seed"),
            (
                "replicate_top = 2\nreplicate_seeds = [1, -1]",
                "search.replicate_seeds",
                11,
                "-1 is out of range",
                "from 0 to 2147483647",
            ),
            (
                "replicate_top = 2\nreplicate_seeds = [2147483648]",
                "search.replicate_seeds",
                11,
                "2147483648 is out of range",
                "from 0",
            ),
            (
                "replicate_top = 2\nreplicate_seeds = [\n  7,\n  8,\n  7,\n]",
                "search.replicate_seeds",
                14,
                "7 is listed twice",
                "each seed once",
            ),
            (
                "replicate_top = 2\nreplicate_seeds = [1, 42]",
                "search.replicate_seeds",
                11,
                "42 is the sweep's `seed`",
                "other than 42",
            ),
        ] {
            let e = err(&search_keys(keys));
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{keys}: {e}");
            assert!(e.message.contains(message), "{keys}: {e}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{keys}: {e}");
        }
        // Without `seed`, the sweep's seed is 0.
        let e = err(&search_keys("replicate_top = 2\nreplicate_seeds = [0, 1]").replace("seed = 42\n", ""));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("search.replicate_seeds")));
        assert!(e.message.contains("0 is the sweep's `seed`"), "{e}");
        assert!(err(&search_keys("replicate_top = 2\nreplicate_seeds = [\"1\"]")).message.contains("invalid type"));
    }

    #[test]
    fn early_stopping_takes_the_defaults_and_every_key() {
        assert_eq!(parse_str(GOOD).unwrap().early_stopping, None);
        let s = parse_str(&with_graders("[early_stopping]\n")).unwrap();
        assert_eq!(s.early_stopping, Some(EarlyStopping::default()));
        let s = parse_str(&with_graders("[early_stopping]\npatience = 5\n")).unwrap();
        assert_eq!(s.early_stopping, Some(EarlyStopping { patience: 5, ..EarlyStopping::default() }));
        let s = parse_str(&with_graders(
            "[early_stopping]\nmetric = \"valid_accuracy\"\npatience = 100\nmin_delta = 0.005\ndivergence_factor = 2.5\n",
        ))
        .unwrap();
        let want = EarlyStopping {
            metric: StopMetric::ValidAccuracy,
            patience: 100,
            min_delta: 0.005,
            divergence_factor: 2.5,
        };
        assert_eq!(s.early_stopping, Some(want));
        // Whole numbers are numbers too.
        let s = parse_str(&with_graders(
            "[early_stopping]\nmetric = \"valid_loss\"\npatience = 1\nmin_delta = 0\ndivergence_factor = 1\n",
        ))
        .unwrap();
        let want = EarlyStopping { patience: 1, ..EarlyStopping::default() };
        assert_eq!(s.early_stopping, Some(want));
    }

    #[test]
    fn early_stopping_errors_name_the_line_and_the_key() {
        for (keys, key, message, hint) in [
            ("metric = \"valid_f1\"", "early_stopping.metric", "unknown metric `valid_f1`", "\"valid_accuracy\""),
            ("patience = 0", "early_stopping.patience", "0 is out of range", "from 1 to 100"),
            ("patience = 101", "early_stopping.patience", "101 is out of range", "from 1 to 100"),
            ("min_delta = -0.1", "early_stopping.min_delta", "-0.1 is not allowed", "0 or more"),
            ("min_delta = nan", "early_stopping.min_delta", "NaN is not allowed", "0 or more"),
            ("divergence_factor = 0.5", "early_stopping.divergence_factor", "0.5 is not allowed", "1.0 or more"),
            ("divergence_factor = inf", "early_stopping.divergence_factor", "inf is not allowed", "1.0 or more"),
        ] {
            let e = err(&with_graders(&format!("[early_stopping]\n# the key on line 20\n{keys}\n")));
            assert_eq!((e.line, e.key.as_deref()), (Some(20), Some(key)), "{keys}: {e}");
            assert!(e.message.contains(message), "{keys}: {e}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{keys}: {e}");
        }
        let e = err(&with_graders("[early_stopping]\nmetric = \"accuracy\"\n"));
        let hint = e.hint.unwrap();
        assert!(hint.contains("\"valid_loss\"") && hint.contains("\"valid_accuracy\""), "{hint}");
        let e = err(&with_graders("[early_stopping]\npatiense = 3\n"));
        assert_eq!(e.line, Some(19));
        assert!(e.message.contains("unknown field `patiense`"), "{e}");
    }

    /// Mutates valid sweep files (cuts, insertions of TOML punctuation and
    /// values, swapped types) and checks the parser returns, never panics.
    /// `FTSWEEP_FUZZ_CASES` sets the number of cases (default 2000).
    #[test]
    fn fuzz_the_parser_never_panics() {
        use rand::{Rng, SeedableRng};
        let cases: usize = std::env::var("FTSWEEP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5EED_70AA);
        let random = GOOD
            .replace("strategy = \"grid\"", "strategy = \"random\"\nruns = 4")
            .replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }");
        let openai = GOOD.replace("\"local\"\n", "\"openai\"\n")
            + "[openai]\nbase_url = \"http://127.0.0.1:1/v1\"\nauth = \"azure\"\napi_version = \"x\"\n[pricing]\ntraining_per_million = 1.0\ninput_per_million = 1.0\noutput_per_million = 1.0\n";
        let halving = GOOD
            .replace(
                "strategy = \"grid\"",
                "strategy = \"successive_halving\"\neta = 2\nmin_epochs = 1\nmax_epochs = 8\n\
                 replicate_top = 2\nreplicate_seeds = [1, 2]",
            )
            .replace("n_epochs = [1, 3, 8]\n", "")
            + "[early_stopping]\nmetric = \"valid_accuracy\"\npatience = 3\nmin_delta = 0.01\ndivergence_factor = 2.0\n";
        let checkpoints = GOOD.replace("strategy = \"grid\"", "strategy = \"grid\"\nepochs_from_checkpoints = true")
            + "[early_stopping]\n";
        let seeds = [GOOD.to_string(), random, openai, halving, checkpoints];
        let junk = [
            "=",
            "[",
            "]",
            "{",
            "}",
            "\"",
            "'",
            ",",
            "\n",
            "#",
            ".",
            "-1",
            "0",
            "1e400",
            "nan",
            "inf",
            "\"auto\"",
            "[[x]]",
            "true",
            "{ uniform = [3, 1] }",
            "[]",
            "\u{0}",
            "é",
            "9999999999999999999999",
        ];
        let start = std::time::Instant::now();
        let (mut ok, mut rejected) = (0usize, 0usize);
        for _ in 0..cases {
            let mut text = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(1..5) {
                let mut at = rng.random_range(0..=text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                if rng.random_bool(0.3) {
                    let mut end = (at + rng.random_range(0..20)).min(text.len());
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.replace_range(at..end, "");
                } else {
                    text.insert_str(at, junk[rng.random_range(0..junk.len())]);
                }
            }
            match parse(Path::new("f.toml"), &text) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.message.is_empty());
                    rejected += 1;
                }
            }
        }
        eprintln!(
            "sweep-file fuzz: {cases} cases ({ok} parsed, {rejected} rejected) in {:.2}s, no panic",
            start.elapsed().as_secs_f64()
        );
        assert_eq!(ok + rejected, cases);
    }

    #[test]
    fn a_grid_over_the_limit_is_refused_before_it_is_expanded() {
        let list = |n: usize| format!("[{}]", (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
        // 50 × 100 × 200 × 1000 = 10^9 runs: counted, never expanded.
        let huge = GOOD
            .replace("n_epochs = [1, 3, 8]", &format!("n_epochs = {}", list(50)))
            .replace(
                "learning_rate_multiplier = [0.1, 1.0, 10.0]",
                &format!("learning_rate_multiplier = {}", list(100)),
            )
            .replace("batch_size = [4, 32]", &format!("batch_size = {}\nseed = {}", list(200), list(1000)));
        let e = err(&huge);
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("hyperparameters")), "{e}");
        assert!(
            e.message.contains(
                "the grid has 1000000000 runs (50 n_epochs × 100 learning_rate_multiplier × 200 batch_size × 1000 seed), \
                 more than the limit of 10000"
            ),
            "{e}"
        );
        assert!(e.hint.as_deref().unwrap().contains("strategy = \"random\""), "{e}");
        // Exactly at the limit is fine; one more list entry is not.
        let at = GOOD.replace("n_epochs = [1, 3, 8]", &format!("n_epochs = {}", list(50))).replace(
            "learning_rate_multiplier = [0.1, 1.0, 10.0]",
            &format!("learning_rate_multiplier = {}", list(100)),
        );
        assert!(parse_str(&at).is_ok());
        assert!(err(&at.replace("batch_size = [4, 32]", "batch_size = [4, 32, 64]")).message.contains("15000 runs"));
        // Halving counts its first rung; random search is capped by `runs`.
        let halving = at
            .replace("strategy = \"grid\"", "strategy = \"successive_halving\"\nmax_epochs = 3")
            .replace(&format!("n_epochs = {}\n", list(50)), "")
            .replace("batch_size = [4, 32]", &format!("batch_size = {}", list(101)));
        assert!(
            err(&halving).message.contains("the grid has 10100 runs (100 learning_rate_multiplier × 101 batch_size)")
        );
        let random = huge.replace("strategy = \"grid\"", "strategy = \"random\"\nruns = 10");
        assert!(parse_str(&random).is_ok());
    }

    #[test]
    fn a_value_listed_twice_is_found_in_a_long_list() {
        // 300,000 values: found by a set, not by comparing every pair.
        let values: Vec<String> = (1..=300_000).map(|i| format!("{}.5", i)).collect();
        let text = GOOD.replace(
            "learning_rate_multiplier = [0.1, 1.0, 10.0]",
            &format!("learning_rate_multiplier = [{}, 7.5]", values.join(", ")),
        );
        let start = std::time::Instant::now();
        let e = err(&text);
        eprintln!("300,001 values checked for duplicates in {:.2}s", start.elapsed().as_secs_f64());
        assert_eq!(e.key.as_deref(), Some("hyperparameters.learning_rate_multiplier"));
        assert!(e.message.contains("7.5 is listed twice"), "{e}");
        // An integer and the same float are one value.
        assert!(err(&GOOD.replace("[0.1, 1.0, 10.0]", "[0.1, 1.0, 10.0, 1]")).message.contains("1 is listed twice"));
        assert!(err(&GOOD.replace("[1, 3, 8]", "[1, \"auto\", 3, \"auto\"]")).message.contains("auto is listed twice"));
    }
}
