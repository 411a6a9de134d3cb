//! The sweep file: a TOML document parsed into a validated [`Sweep`].
//!
//! Parsing does no I/O beyond what the caller hands in (the text and, for
//! resolving data paths, the sweep file's own path); every error names the
//! file, the line and the key, says what was expected and how to fix it.
//!
//! Layout: [`raw`] mirrors the file for serde; [`parse`] validates it into
//! the typed [`Sweep`] here, table by table (`validate` for the top-level
//! keys, `[limits]` and `[pricing]`; `search`, `early_stopping`,
//! `hyperparameters`, `evaluation`, `openai`, `together`, `azure`, `command`
//! with `[engine]`);
//! `error` builds the located errors, `locate` finds keys from `toml`'s
//! spans; `net` checks base URLs, Ray addresses and header values.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::DeTable;

use crate::eval::config::{COMBINED, NamedGrader};
use crate::eval::graders::Weighted;
pub use crate::run::ProviderKind;
pub use crate::space::{Domain, Hyperparameters, Method};

mod azure;
mod command;
mod early_stopping;
mod error;
mod evaluation;
mod hyperparameters;
mod locate;
mod net;
mod openai;
mod raw;
mod search;
mod together;
mod validate;

pub use azure::{BASELINE_SKU, DEPLOYMENT_SKUS, DEVELOPER_TIER, is_dated_snapshot};
pub use command::{CONFIG, INIT_FROM, OUTPUT_ROOT, halving_needs_init_from, template_problem, template_uses};
pub use error::{SpecError, key_error};
pub use net::{check_base_url, check_ray_address, header_value_problem};

use error::Cx;
use raw::RawSweep;

/// A parsed and validated sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub name: String,
    pub provider: ProviderKind,
    /// `method` (default SFT): what the jobs train, and so which lines the
    /// training file holds (chat lines, or preference pairs for DPO).
    pub method: Method,
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
    /// The `[command]` and `[engine]` tables: `Some` exactly when
    /// `provider = "command"`.
    pub command: Option<CommandSettings>,
    /// The `[together]` table: `Some` exactly when `provider = "together"`
    /// (defaults when the table is absent).
    pub together: Option<TogetherSettings>,
    /// The `[azure]` table: `Some` exactly when `provider = "azure"` (the
    /// table is required: the endpoint and the account have no default).
    pub azure: Option<AzureSettings>,
}

/// The default base URL of Together's API.
pub const TOGETHER_BASE_URL: &str = "https://api.together.ai/v1";

/// `provider = "together"`: how to reach Together's API and what its jobs
/// train. The file names the variable that holds the key, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct TogetherSettings {
    /// `base_url` (default [`TOGETHER_BASE_URL`]), without a trailing slash;
    /// plain http only on loopback. The environment's `TOGETHER_BASE_URL`
    /// overrides it (`cli` reads it; parsing reads no environment).
    pub base_url: String,
    /// `api_key_env` (default `TOGETHER_API_KEY`).
    pub api_key_env: String,
    /// `training = "lora" | "full"` (default LoRA): the create's `training_type`.
    pub training: TogetherTraining,
    /// `lora_trainable_modules` (e.g. `"all-linear"`), sent with LoRA when given.
    pub lora_trainable_modules: Option<String>,
    /// `train_on_inputs`: `true`, `false`, or absent for Together's `"auto"`.
    pub train_on_inputs: Option<bool>,
    /// `inference`: how a fine-tuned model answers for its evaluation.
    pub inference: TogetherInference,
    /// `endpoint_hardware` for dedicated endpoints (default `1x_nvidia_h100_80gb_sxm`).
    pub endpoint_hardware: String,
    /// `endpoint_usd_per_hour`: what a dedicated endpoint costs while it
    /// runs, for `plan` and the budget; `None`: unknown (plan says so).
    pub endpoint_usd_per_hour: Option<f64>,
    /// `endpoint_minutes`: the estimated minutes an endpoint lives per model
    /// evaluated (start-up and evaluation), for `plan` (default 20).
    pub endpoint_minutes: f64,
}

/// `[together] training`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TogetherTraining {
    #[default]
    Lora,
    Full,
}

/// `[together] inference`: where a fine-tuned model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TogetherInference {
    /// Ask the model serverless by its output name; a 4xx that says it is
    /// not served makes a dedicated endpoint for it (the default).
    #[default]
    Auto,
    /// Serverless only (LoRA outputs of a base model Together serves).
    Serverless,
    /// A dedicated endpoint per model, created before its evaluation and
    /// deleted after (full fine-tunes need one).
    Dedicated,
}

impl Default for TogetherSettings {
    fn default() -> TogetherSettings {
        TogetherSettings {
            base_url: TOGETHER_BASE_URL.to_string(),
            api_key_env: "TOGETHER_API_KEY".to_string(),
            training: TogetherTraining::Lora,
            lora_trainable_modules: None,
            train_on_inputs: None,
            inference: TogetherInference::Auto,
            endpoint_hardware: "1x_nvidia_h100_80gb_sxm".to_string(),
            endpoint_usd_per_hour: None,
            endpoint_minutes: 20.0,
        }
    }
}

/// The default Azure Resource Manager URL.
pub const ARM_URL: &str = "https://management.azure.com";
/// The ARM API version deployments are made with.
pub const ARM_API_VERSION: &str = "2024-10-01";

/// `provider = "azure"`: Azure OpenAI's v1 data plane and the Azure
/// Resource Manager account its models are deployed in.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureSettings {
    /// `endpoint`, e.g. `https://myres.openai.azure.com`, without a trailing
    /// slash or `/openai/v1` (the data plane is `{endpoint}/openai/v1`);
    /// plain http only on loopback.
    pub endpoint: String,
    /// `api_key_env` (an `api-key` header) or `entra_token_env` (an Entra
    /// bearer token): exactly one; default `api_key_env = "AZURE_OPENAI_API_KEY"`.
    pub data_auth: AzureAuth,
    /// `subscription`, `resource_group`, `account`: where deployments go.
    pub subscription: String,
    pub resource_group: String,
    pub account: String,
    /// `arm_token_env`: the variable with an ARM bearer token; `None`: ask
    /// `az account get-access-token` for one.
    pub arm_token_env: Option<String>,
    /// `management_url` (default [`ARM_URL`]); plain http only on loopback.
    pub management_url: String,
    /// `arm_api_version` (default [`ARM_API_VERSION`]).
    pub arm_api_version: String,
    /// `deployment_sku` (default `DeveloperTier`: no hosting fee, 24 h life).
    pub deployment_sku: String,
    /// `deployment_capacity` (default 50, thousands of tokens per minute).
    pub deployment_capacity: u32,
    /// `deployment_usd_per_hour`: the hosting fee of a deployment of that
    /// SKU while it exists (default 0 for `DeveloperTier`, unknown otherwise).
    pub deployment_usd_per_hour: Option<f64>,
    /// `deployment_minutes`: the estimated minutes a deployment lives per
    /// model evaluated, for `plan` (default 20).
    pub deployment_minutes: f64,
    /// `baseline_deployment`: an existing deployment of the base model,
    /// which the baseline is evaluated through and which ftsweep never
    /// deletes; `None`: the base model is deployed like the others (with
    /// `baseline_sku`) and deleted after.
    pub baseline_deployment: Option<String>,
    /// `baseline_sku` (default `GlobalStandard`): the SKU of the base model's
    /// deployment when ftsweep makes one.
    pub baseline_sku: String,
}

/// How Azure's data plane is authenticated: the variable that holds the secret.
#[derive(Debug, Clone, PartialEq)]
pub enum AzureAuth {
    /// `api-key: KEY`.
    ApiKey { env: String },
    /// `Authorization: Bearer TOKEN` (Entra, scope cognitiveservices).
    Entra { env: String },
}

impl AzureSettings {
    /// The data plane's base URL: `{endpoint}/openai/v1`.
    pub fn data_plane_url(&self) -> String {
        format!("{}/openai/v1", self.endpoint)
    }

    /// The account's ARM resource id (`/subscriptions/…/accounts/{account}`).
    pub fn account_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
            self.subscription, self.resource_group, self.account
        )
    }
}

/// `provider = "command"`: how the user's trainer is run, where it writes,
/// and the OpenAI-compatible server that answers with its models.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    /// `[command] train`: the trainer's argv, each element a template with
    /// `{placeholders}` ([`crate::template`]).
    pub train: Vec<String>,
    /// `[command] config_template`, resolved against the sweep file's
    /// folder: rendered with the same placeholders to
    /// `{output_dir}/config.yml`, passed as `{config}`.
    pub config_template: Option<PathBuf>,
    /// `[command] output_root`, resolved against the sweep file's folder:
    /// each run attempt trains into a fresh directory under it.
    pub output_root: PathBuf,
    /// `[command] inference_url`: OpenAI-compatible, with vLLM's runtime
    /// LoRA endpoints (`/load_lora_adapter`, `/unload_lora_adapter`).
    pub inference_url: String,
    /// `[command] inference_api_key_env`: the variable holding the inference
    /// server's key, if it wants one.
    pub inference_api_key_env: Option<String>,
    /// `[engine]`: where the trainer runs.
    pub engine: Engine,
}

/// `[engine] type`: where a trainer command runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Engine {
    /// A detached process on this machine (the default).
    Local(LocalEngine),
    /// A job on a Ray cluster, through its Jobs API.
    Ray(RayEngine),
}

/// `[engine] type = "local"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocalEngine {
    /// `gpus`: one job per listed GPU at a time (`CUDA_VISIBLE_DEVICES`);
    /// empty: the jobs are not given a GPU.
    pub gpus: Vec<u32>,
}

/// `[engine] type = "ray"`.
#[derive(Debug, Clone, PartialEq)]
pub struct RayEngine {
    /// `address`: the Ray dashboard (`http://127.0.0.1:8265`), whose Jobs
    /// API takes the submissions.
    pub address: String,
    /// `num_gpus` per job (default 0).
    pub num_gpus: f64,
    /// `num_cpus` per job (default 1).
    pub num_cpus: f64,
    /// `runtime_env`, passed to Ray as written.
    pub runtime_env: Option<serde_json::Value>,
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
    /// An `api-key: KEY` header alone (Azure OpenAI's v1 data plane).
    ApiKey,
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
    /// Bayesian search: `runs` configurations, the first `startup` drawn at
    /// random, each next one proposed by [`crate::bayes::propose`] from the
    /// results so far (see `sweep::decide::bayes_proposals` for which).
    Bayes { runs: u32, startup: u32 },
    /// Asynchronous successive halving (Li et al. 2018): a configuration of
    /// a rung continues as soon as it is in the top 1/eta of the rung's
    /// results so far; new configurations start as slots free, from the
    /// grid, from `halving.draws` seeded draws, or, with `bayes_startup`
    /// (`sampler = "bayes"`), proposed by the Bayesian model (BOHB-style).
    Asha { halving: Halving, bayes_startup: Option<u32> },
}

impl Search {
    /// The rungs of successive halving, synchronous or asynchronous.
    pub fn halving(&self) -> Option<&Halving> {
        match self {
            Search::SuccessiveHalving(h) | Search::Asha { halving: h, .. } => Some(h),
            _ => None,
        }
    }

    /// Whether the configurations are drawn from the space (distributions
    /// allowed) rather than the grid of its lists.
    pub fn draws(&self) -> bool {
        match self {
            Search::Grid => false,
            Search::Random { .. } | Search::Bayes { .. } => true,
            Search::SuccessiveHalving(h) | Search::Asha { halving: h, .. } => h.draws.is_some(),
        }
    }
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
    /// `runs`: the first rung's configurations are that many seeded draws
    /// from the space (distributions allowed) instead of the grid.
    pub draws: Option<u32>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// How the evaluated models are asked for their replies.
    pub decoding: Decoding,
}

/// The decoding settings of evaluation requests (`[evaluation] temperature`, `max_tokens`,
/// `top_p`, `seed`): sent with every chat request and part of the predictions cache key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoding {
    /// 0 to 2; 0 asks for the most probable reply.
    pub temperature: f64,
    /// The reply's token limit (`max_completion_tokens` on OpenAI and Azure, `max_tokens` on
    /// vLLM and Together).
    pub max_tokens: u32,
    /// Nucleus sampling, above 0 and at most 1; not sent when unset.
    pub top_p: Option<f64>,
    /// The sampling seed (best effort at the provider); not sent when unset.
    pub seed: Option<i64>,
}

/// The default reply token limit.
pub const MAX_TOKENS: u32 = 256;

impl Default for Decoding {
    /// Temperature 0 and 256 tokens, as every evaluation was asked before the settings existed.
    fn default() -> Decoding {
        Decoding { temperature: 0.0, max_tokens: MAX_TOKENS, top_p: None, seed: None }
    }
}

impl Decoding {
    /// The settings as a cache key's part, with the token limit under the name the provider's
    /// server reads: `temperature=0 max_tokens=256`, then `top_p` and `seed` when set (so the
    /// defaults give the key that evaluations had before the settings existed).
    pub fn key(&self, max_tokens_name: &str) -> String {
        let mut key = format!("temperature={} {max_tokens_name}={}", self.temperature, self.max_tokens);
        if let Some(p) = self.top_p {
            key.push_str(&format!(" top_p={p}"));
        }
        if let Some(s) = self.seed {
            key.push_str(&format!(" seed={s}"));
        }
        key
    }
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
            decoding: Decoding::default(),
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

/// Parses a sweep file's text. `path` names the file in errors and anchors
/// relative data paths; nothing is read from disk here.
pub fn parse(path: &Path, text: &str) -> Result<Sweep, SpecError> {
    let mut cx = Cx { path, text, doc: None };
    let doc = DeTable::parse(text).map_err(|e| cx.toml_error(&e))?;
    cx.doc = Some(doc.clone());
    let raw = RawSweep::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| cx.toml_error(&e))?;

    let name = cx.name(&raw.name)?;
    let provider = match &raw.provider {
        None => ProviderKind::Local,
        Some(p) => match p.get_ref() {
            raw::Provider::Local => ProviderKind::Local,
            raw::Provider::OpenAi => ProviderKind::OpenAi,
            raw::Provider::Command => ProviderKind::Command,
            raw::Provider::Together => ProviderKind::Together,
            raw::Provider::Azure => ProviderKind::Azure,
        },
    };
    let method = cx.method(&raw, provider)?;
    cx.command_tables(&raw, provider)?;
    cx.hosted_tables(&raw, provider)?;
    let base_model = cx.base_model(&raw.base_model, provider)?;
    let training_file = cx.data_path(&raw.training_file, "training_file")?;
    let validation_file = cx.data_path(&raw.validation_file, "validation_file")?;
    let seed = match &raw.seed {
        None => 0,
        Some(s) => cx.int_in(s, "seed", crate::space::SEED_RANGE)?,
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
    let hyperparameters = cx.hyperparameters(&raw.hyperparameters, provider, method, &search, seed)?;
    let evaluation = match &raw.evaluation {
        None => Evaluation::default(),
        Some(e) => cx.evaluation(e)?,
    };
    let limits = cx.limits(raw.limits.as_ref())?;
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
        Some(p) => Some(cx.pricing(p)?),
    };
    let command = cx.command(&raw, provider, &hyperparameters, &search)?;
    if provider == ProviderKind::Command {
        cx.no_price(&raw)?;
    }
    let together = cx.together(&raw, provider)?;
    let azure = cx.azure(&raw, provider)?;

    Ok(Sweep {
        name,
        provider,
        method,
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
        command,
        together,
        azure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const GOOD: &str = r#"
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

    pub(super) fn parse_str(text: &str) -> Result<Sweep, SpecError> {
        parse(Path::new("sweeps/x.toml"), text)
    }

    pub(super) fn err(text: &str) -> SpecError {
        parse_str(text).expect_err("the sweep should be rejected")
    }

    /// GOOD with `extra` appended (graders after `[limits]` are valid TOML).
    pub(super) fn with_graders(extra: &str) -> String {
        format!("{GOOD}{extra}")
    }

    /// GOOD as a successive-halving sweep with the `[search]` lines `keys`
    /// (line 10 on) and without `n_epochs`.
    pub(super) fn halving(keys: &str) -> String {
        GOOD.replace("strategy = \"grid\"", &format!("strategy = \"successive_halving\"\n{keys}"))
            .replace("n_epochs = [1, 3, 8]\n", "")
    }

    /// GOOD with the `[search]` lines `keys` (line 10 on).
    pub(super) fn search_keys(keys: &str) -> String {
        GOOD.replace("strategy = \"grid\"", &format!("strategy = \"grid\"\n{keys}"))
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
    fn syntax_error_has_a_line() {
        let e = err(&GOOD.replace("seed = 42", "seed = = 42"));
        assert_eq!(e.line, Some(7));
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
            + "[openai]\nbase_url = \"http://127.0.0.1:1/v1\"\nauth = \"bearer\"\n[pricing]\ntraining_per_million = 1.0\ninput_per_million = 1.0\noutput_per_million = 1.0\n";
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
        let command = format!(
            "{}[engine]\ntype = \"ray\"\naddress = \"http://127.0.0.1:8265\"\nnum_gpus = 1\nruntime_env = {{ working_dir = \".\" }}\n",
            command::tests::CMD
        );
        let local_command = format!("{}[engine]\ngpus = [0, 1]\n", command::tests::CMD);
        let together = together::tests::together(
            "[together]\nbase_url = \"http://127.0.0.1:1/v1\"\ntraining = \"lora\"\ninference = \"dedicated\"\n\
             endpoint_usd_per_hour = 3.0\nlora_trainable_modules = \"all-linear\"\n",
        );
        let azure = azure::tests::azure(&format!(
            "{}entra_token_env = \"T\"\ndeployment_sku = \"standard\"\ndeployment_capacity = 5\n\
             baseline_deployment = \"base\"\n",
            azure::tests::AZURE
        ));
        let dpo = GOOD
            .replace("provider = \"local\"", "provider = \"local\"\nmethod = \"dpo\"")
            .replace("batch_size = [4, 32]", "batch_size = [4, 32]\nbeta = [0.1, \"auto\", 2.0]");
        let seeds =
            [GOOD.to_string(), random, openai, halving, checkpoints, command, local_command, together, azure, dpo];
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
}
