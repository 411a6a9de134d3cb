//! The sweep file as written: a serde mirror of the TOML, every table with
//! `deny_unknown_fields` and every value with its span, so validation
//! ([`super::parse`]) can name the line of whatever it refuses. The closed
//! sets of choices (provider, strategy, authentication, early-stopping
//! metric, engine type) are enums here: an unknown choice is refused by the
//! deserializer, at its line, with the allowed values.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::StopMetric;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    pub name: Spanned<String>,
    pub provider: Option<Spanned<Provider>>,
    pub method: Option<Spanned<TrainingMethod>>,
    pub base_model: Spanned<String>,
    pub training_file: Spanned<String>,
    pub validation_file: Spanned<String>,
    pub seed: Option<Spanned<i64>>,
    pub search: Option<RawSearch>,
    pub early_stopping: Option<RawEarlyStopping>,
    /// Any name: which ones the provider accepts is checked against its
    /// declarations ([`crate::space::accepted`]), not by serde.
    pub hyperparameters: Spanned<BTreeMap<String, Spanned<toml::Value>>>,
    pub evaluation: Option<RawEvaluation>,
    pub limits: Option<RawLimits>,
    pub openai: Option<Spanned<RawOpenAi>>,
    pub pricing: Option<Spanned<RawPricing>>,
    pub command: Option<Spanned<RawCommand>>,
    pub engine: Option<Spanned<RawEngine>>,
    pub together: Option<Spanned<RawTogether>>,
    pub azure: Option<Spanned<RawAzure>>,
}

/// `provider`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum Provider {
    Local,
    OpenAi,
    Command,
    Together,
    Azure,
}

/// `method`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum TrainingMethod {
    Sft,
    Dpo,
}

/// `[search] strategy`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Strategy {
    Grid,
    Random,
    SuccessiveHalving,
    Bayes,
    Asha,
}

/// `[openai] auth`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum AuthKind {
    Bearer,
    Azure,
}

/// `[together] training`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Training {
    Lora,
    Full,
}

/// `[together] inference`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Inference {
    Auto,
    Serverless,
    Dedicated,
}

/// `[engine] type`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum EngineType {
    Local,
    Ray,
}

/// A key whose value is one of a closed set of names.
pub(super) struct Choice {
    /// The dotted key.
    pub key: &'static str,
    /// What a value names, for messages.
    pub noun: &'static str,
    /// The names, as serde spells the enum's variants; the default first.
    pub names: &'static [&'static str],
}

/// The closed sets of the file (a unit test checks them against the enums).
pub(super) const CHOICES: &[Choice] = &[
    Choice { key: "provider", noun: "provider", names: &["local", "openai", "azure", "together", "command"] },
    Choice { key: "method", noun: "training method", names: &["sft", "dpo"] },
    Choice {
        key: "search.strategy",
        noun: "strategy",
        names: &["grid", "random", "successive_halving", "bayes", "asha"],
    },
    // `auth = "azure"` still parses, to be refused with its own hint (`provider = "azure"`).
    Choice { key: "openai.auth", noun: "authentication", names: &["bearer"] },
    Choice { key: "early_stopping.metric", noun: "metric", names: &["valid_loss", "valid_accuracy"] },
    Choice { key: "engine.type", noun: "engine", names: &["local", "ray"] },
    Choice { key: "together.training", noun: "training type", names: &["lora", "full"] },
    Choice { key: "together.inference", noun: "inference mode", names: &["auto", "serverless", "dedicated"] },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOpenAi {
    pub base_url: Option<Spanned<String>>,
    pub api_key_env: Option<Spanned<String>>,
    pub organization: Option<Spanned<String>>,
    pub project: Option<Spanned<String>>,
    pub auth: Option<Spanned<AuthKind>>,
    pub api_version: Option<Spanned<String>>,
}

/// `[together]` (`provider = "together"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTogether {
    pub base_url: Option<Spanned<String>>,
    pub api_key_env: Option<Spanned<String>>,
    pub training: Option<Spanned<Training>>,
    pub lora_trainable_modules: Option<Spanned<String>>,
    pub train_on_inputs: Option<Spanned<bool>>,
    pub inference: Option<Spanned<Inference>>,
    pub endpoint_hardware: Option<Spanned<String>>,
    pub endpoint_usd_per_hour: Option<Spanned<f64>>,
    pub endpoint_minutes: Option<Spanned<f64>>,
}

/// `[azure]` (`provider = "azure"`). The required keys are optional here so
/// that their absence gets a message with an example, not serde's "missing
/// field". The SKUs are matched case-insensitively ([`super::azure`]), so
/// they are strings here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzure {
    pub endpoint: Option<Spanned<String>>,
    pub api_key_env: Option<Spanned<String>>,
    pub entra_token_env: Option<Spanned<String>>,
    pub subscription: Option<Spanned<String>>,
    pub resource_group: Option<Spanned<String>>,
    pub account: Option<Spanned<String>>,
    pub arm_token_env: Option<Spanned<String>>,
    pub management_url: Option<Spanned<String>>,
    pub arm_api_version: Option<Spanned<String>>,
    pub deployment_sku: Option<Spanned<String>>,
    pub deployment_capacity: Option<Spanned<i64>>,
    pub deployment_usd_per_hour: Option<Spanned<f64>>,
    pub deployment_minutes: Option<Spanned<f64>>,
    pub baseline_deployment: Option<Spanned<String>>,
    pub baseline_sku: Option<Spanned<String>>,
}

/// `[command]` (`provider = "command"`). The two keys every command sweep
/// needs are optional here so that their absence gets a message with an
/// example, not serde's "missing field".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
    pub train: Option<Spanned<Vec<Spanned<String>>>>,
    pub config_template: Option<Spanned<String>>,
    pub output_root: Option<Spanned<String>>,
    pub inference_url: Option<Spanned<String>>,
    pub inference_api_key_env: Option<Spanned<String>>,
}

/// `[engine]`: the keys of both types, so that a key of the other type is
/// refused with its fix ([`super::command`]) rather than as unknown.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEngine {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<EngineType>>,
    /// Local.
    pub gpus: Option<Spanned<Vec<Spanned<i64>>>>,
    /// Ray.
    pub address: Option<Spanned<String>>,
    pub num_gpus: Option<Spanned<f64>>,
    pub num_cpus: Option<Spanned<f64>>,
    pub runtime_env: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPricing {
    pub training_per_million: f64,
    pub input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSearch {
    pub strategy: Option<Spanned<Strategy>>,
    pub runs: Option<Spanned<i64>>,
    pub startup: Option<Spanned<i64>>,
    /// ASHA's new configurations: `"bayes"` (BOHB-style) or the default.
    pub sampler: Option<Spanned<String>>,
    pub eta: Option<Spanned<i64>>,
    pub min_epochs: Option<Spanned<i64>>,
    pub max_epochs: Option<Spanned<i64>>,
    pub epochs_from_checkpoints: Option<Spanned<bool>>,
    pub replicate_top: Option<Spanned<i64>>,
    pub replicate_seeds: Option<Spanned<Vec<Spanned<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEarlyStopping {
    pub metric: Option<Spanned<StopMetric>>,
    pub patience: Option<Spanned<i64>>,
    pub min_delta: Option<Spanned<f64>>,
    pub divergence_factor: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvaluation {
    /// A grader's name or `combined`: an open set, checked against the
    /// graders declared.
    pub metric: Option<Spanned<String>>,
    pub graders: Option<Vec<Spanned<toml::Table>>>,
    pub combined: Option<Spanned<toml::Table>>,
    pub alpha: Option<Spanned<f64>>,
    pub margin: Option<Spanned<f64>>,
    pub checkpoints: Option<bool>,
    pub baseline: Option<bool>,
    pub concurrency: Option<Spanned<i64>>,
    pub temperature: Option<Spanned<f64>>,
    pub max_tokens: Option<Spanned<i64>>,
    pub top_p: Option<Spanned<f64>>,
    pub seed: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_concurrent: Option<Spanned<i64>>,
    pub confirm_above_usd: Option<Spanned<f64>>,
    pub budget_usd: Option<Spanned<f64>>,
    pub max_trained_tokens: Option<Spanned<i64>>,
    pub retries: Option<Spanned<i64>>,
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;

    /// Whether `name` deserializes as a `T`.
    fn is<T: DeserializeOwned>(name: &str) -> bool {
        #[derive(Deserialize)]
        struct One<T> {
            #[allow(dead_code)]
            v: T,
        }
        toml::from_str::<One<T>>(&format!("v = \"{name}\"")).is_ok()
    }

    #[test]
    fn the_choices_are_the_enums_names() {
        let accepts: [fn(&str) -> bool; 8] = [
            is::<Provider>,
            is::<TrainingMethod>,
            is::<Strategy>,
            is::<AuthKind>,
            is::<StopMetric>,
            is::<EngineType>,
            is::<Training>,
            is::<Inference>,
        ];
        for (choice, accepts) in CHOICES.iter().zip(accepts) {
            for name in choice.names {
                assert!(accepts(name), "{}: {name}", choice.key);
            }
            assert!(!accepts("nope"), "{}", choice.key);
        }
        // Each enum has as many variants as its choice lists names, but `auth`, whose `azure` is
        // refused with a hint of its own.
        assert_eq!(CHOICES.iter().map(|c| c.names.len()).collect::<Vec<_>>(), [5, 2, 5, 1, 2, 2, 2, 3]);
        assert!(is::<AuthKind>("azure"));
    }
}
