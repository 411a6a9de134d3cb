//! Prices: a committed, dated table of fine-tuning prices by base model, the
//! lookup from a model id to its row, and cost arithmetic. Pure.

use serde::Serialize;

use crate::run::ProviderKind;

/// When the table was read, and from where.
pub const PRICES_AS_OF: &str = "OpenAI pricing page, standard tier, as of 2026-10";

/// Where an Azure sweep's committed price comes from: the table holds no
/// Azure rates (Azure's price list was not read), so a dated snapshot gets
/// OpenAI's rates for the same model id, labelled as such.
pub const AZURE_PRICES_AS_OF: &str =
    "OpenAI's rates for the same model, from OpenAI's pricing page as of 2026-10; Azure's own price list not checked";

/// Where the price of a sweep on `provider` comes from, when it has one:
/// the sweep file's `[pricing]` (`from_file`), else the committed table
/// ([`PRICES_AS_OF`]; for Azure [`AZURE_PRICES_AS_OF`]). `None`: no price
/// applies (a trainer command), or none is committed (Together: its rates
/// were not read, see [`committed`]).
pub fn source(provider: ProviderKind, from_file: bool) -> Option<&'static str> {
    match provider {
        ProviderKind::Command => None,
        _ if from_file => Some("the sweep file's [pricing]"),
        ProviderKind::Azure => Some(AZURE_PRICES_AS_OF),
        ProviderKind::Together => None,
        ProviderKind::Local | ProviderKind::OpenAi => Some(PRICES_AS_OF),
    }
}

/// The committed price of `model` on `provider`: OpenAI's table for the
/// providers that train OpenAI's models (Azure labelled, [`source`]); none
/// for Together (together.ai/pricing was not read: a Together sweep needs
/// `[pricing]` for a USD estimate) nor for a trainer command.
pub fn committed(provider: ProviderKind, model: &str) -> Option<Price> {
    match provider {
        ProviderKind::Together | ProviderKind::Command => None,
        ProviderKind::Local | ProviderKind::OpenAi | ProviderKind::Azure => lookup(model),
    }
}

/// The tokens a job on `provider` is billed for: `epochs` × one epoch's
/// training tokens, and on Together also `n_evals` × the validation set's
/// tokens (its pricing page: total tokens = n_epochs × training tokens +
/// n_evals × validation tokens).
pub fn billed_tokens(provider: ProviderKind, epochs: u32, n_evals: u32, data: &DataFigures) -> u64 {
    let training = data.billing_tokens * u64::from(epochs);
    match provider {
        ProviderKind::Together => training + u64::from(n_evals) * (data.eval_input_tokens + data.eval_output_tokens),
        _ => training,
    }
}

/// What models deployed for their evaluation cost: `count` deployments
/// (Azure) or dedicated endpoints (Together), each living `minutes`, at
/// `usd_per_hour`; `None` when the hourly price is unknown.
pub fn deployment_cost(count: u64, minutes: f64, usd_per_hour: Option<f64>) -> Option<f64> {
    usd_per_hour.map(|rate| count as f64 * minutes / 60.0 * rate)
}

/// What a model costs, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Price {
    /// Training, per trained token (n_epochs × the file's billed tokens).
    pub training: f64,
    /// Inference input of the fine-tuned model.
    pub input: f64,
    /// Inference output of the fine-tuned model.
    pub output: f64,
}

/// One row of the table: a model family and its snapshot, if it has one.
struct Row {
    family: &'static str,
    price: Price,
}

const fn row(family: &'static str, training: f64, input: f64, output: f64) -> Row {
    Row { family, price: Price { training, input, output } }
}

/// The table. A family matches its exact name and its dated snapshots
/// (`gpt-4.1-mini` matches `gpt-4.1-mini-2025-04-14`).
const TABLE: &[Row] = &[
    row("gpt-4.1", 25.00, 3.00, 12.00),
    row("gpt-4.1-mini", 5.00, 0.80, 3.20),
    row("gpt-4.1-nano", 1.50, 0.20, 0.80),
    row("gpt-4o", 25.00, 3.75, 15.00),
    row("gpt-4o-mini", 3.00, 0.30, 1.20),
    row("gpt-3.5-turbo", 8.00, 3.00, 6.00),
    row("davinci-002", 6.00, 12.00, 12.00),
    row("babbage-002", 0.40, 1.60, 1.60),
    row("local/ngram", 0.0, 0.0, 0.0),
];

/// The base model of a model id: `ft:gpt-4.1-mini-2025-04-14:org:sfx:id`
/// gives `gpt-4.1-mini-2025-04-14`.
pub fn base_of(model: &str) -> &str {
    match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest),
        None => model,
    }
}

/// The committed price of a model (a base model or a fine-tune of one).
pub fn lookup(model: &str) -> Option<Price> {
    let base = base_of(model);
    TABLE
        .iter()
        .filter(|r| {
            base == r.family
                || base
                    .strip_prefix(r.family)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .max_by_key(|r| r.family.len())
        .map(|r| r.price)
}

/// USD for `tokens` at `per_million` USD per million tokens.
pub fn cost(tokens: u64, per_million: f64) -> f64 {
    tokens as f64 * per_million / 1e6
}

/// Σ of costs, `None` when one is unknown. The sum starts from +0.0: Rust's
/// float sum starts from -0.0 (the sum of nothing is -0.0), which printed
/// as `$-0.00` for a sweep with nothing left to train.
pub fn total(costs: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    costs.into_iter().try_fold(0.0, |sum, c| c.map(|c| sum + c))
}

/// The figures of a sweep's data that its cost depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFigures {
    /// Training examples.
    pub examples: u64,
    /// Σ min(limit, tokens) over the training examples: one epoch's bill.
    pub billing_tokens: u64,
    /// Validation examples: one completion each per evaluated model.
    pub eval_examples: u64,
    /// Tokens sent to the model when evaluating (prompts of the validation set).
    pub eval_input_tokens: u64,
    /// Tokens the model answers with, taken as the references' length.
    pub eval_output_tokens: u64,
}

/// What one run is expected to cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The epochs: as set, or the cookbook's estimate of `"auto"`.
    pub epochs: u32,
    pub epochs_estimated: bool,
    pub trained_tokens: u64,
    /// `None` when no price is known for the model.
    pub training_usd: Option<f64>,
    pub eval_usd: Option<f64>,
}

impl Estimate {
    pub fn total_usd(&self) -> Option<f64> {
        Some(self.training_usd? + self.eval_usd?)
    }
}

/// Estimates a run: trained tokens = epochs × billed tokens per epoch,
/// priced at the training rate; evaluation = one completion per validation
/// example, priced at the fine-tuned model's inference rates.
pub fn estimate(n_epochs: Option<u32>, data: &DataFigures, price: Option<Price>) -> Estimate {
    estimate_on(ProviderKind::OpenAi, n_epochs, 0, data, price)
}

/// [`estimate`] for a job on `provider` with `n_evals` evaluations during
/// training (billed on Together: [`billed_tokens`]).
pub fn estimate_on(
    provider: ProviderKind,
    n_epochs: Option<u32>,
    n_evals: u32,
    data: &DataFigures,
    price: Option<Price>,
) -> Estimate {
    let epochs = n_epochs.unwrap_or_else(|| crate::data::stats::default_epochs(data.examples));
    let trained_tokens = billed_tokens(provider, epochs, n_evals, data);
    Estimate {
        epochs,
        epochs_estimated: n_epochs.is_none(),
        trained_tokens,
        training_usd: price.map(|p| cost(trained_tokens, p.training)),
        eval_usd: price.map(|p| eval_cost(data, p)),
    }
}

/// What evaluating one model on the validation set costs.
pub fn eval_cost(data: &DataFigures, price: Price) -> f64 {
    cost(data.eval_input_tokens, price.input) + cost(data.eval_output_tokens, price.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_and_fine_tunes_find_their_family() {
        assert_eq!(lookup("gpt-4.1-mini-2025-04-14").unwrap().training, 5.00);
        assert_eq!(lookup("gpt-4.1-2025-04-14").unwrap().training, 25.00);
        assert_eq!(lookup("ft:gpt-4.1-nano-2025-04-14:acme:s1:abc123").unwrap().training, 1.50);
        assert_eq!(lookup("gpt-4o-mini-2024-07-18").unwrap().output, 1.20);
        assert_eq!(lookup("gpt-4o-2024-08-06").unwrap().input, 3.75);
        assert_eq!(lookup("local/ngram").unwrap().training, 0.0);
        assert_eq!(lookup("ft:local/ngram:local:r-1:x:ckpt-step-9").unwrap().training, 0.0);
    }

    #[test]
    fn unknown_models_and_near_misses_have_no_price() {
        assert_eq!(lookup("gpt-4.1-turbo"), None, "not a dated snapshot of gpt-4.1");
        assert_eq!(lookup("my-model"), None);
    }

    #[test]
    fn estimates_resolve_auto_epochs_and_price_both_phases() {
        let data = DataFigures {
            examples: 723,
            billing_tokens: 59_054,
            eval_examples: 184,
            eval_input_tokens: 14_000,
            eval_output_tokens: 300,
        };
        let price = lookup("gpt-4.1-mini-2025-04-14");
        let e = estimate(Some(8), &data, price);
        assert_eq!(e.trained_tokens, 472_432);
        assert!((e.training_usd.unwrap() - 2.36216).abs() < 1e-9);
        assert!((e.eval_usd.unwrap() - (0.0112 + 0.00096)).abs() < 1e-9);
        let auto = estimate(None, &data, price);
        assert!(auto.epochs_estimated);
        assert_eq!(auto.epochs, 3, "723 examples: the cookbook keeps 3 epochs");
        assert_eq!(estimate(Some(1), &data, None).total_usd(), None, "no price, no cost");
    }

    #[test]
    fn a_total_of_nothing_is_positive_zero() {
        let nothing: [Option<f64>; 0] = [];
        let empty: Option<f64> = nothing.iter().copied().sum();
        assert!(empty.unwrap().is_sign_negative(), "the std sum of nothing is -0.0");
        assert!(total(nothing).unwrap().is_sign_positive());
        assert!(total([Some(-0.0)]).unwrap().is_sign_positive());
        assert_eq!(total([Some(1.5), Some(2.0)]), Some(3.5));
        assert_eq!(total([Some(1.5), None]), None, "an unknown price makes the total unknown");
    }

    #[test]
    fn together_bills_its_evaluations_and_has_no_committed_rates() {
        let data = DataFigures {
            examples: 10,
            billing_tokens: 1_000,
            eval_examples: 5,
            eval_input_tokens: 300,
            eval_output_tokens: 20,
        };
        assert_eq!(billed_tokens(ProviderKind::Together, 3, 4, &data), 3 * 1_000 + 4 * 320);
        assert_eq!(billed_tokens(ProviderKind::Together, 2, 0, &data), 2_000);
        assert_eq!(billed_tokens(ProviderKind::Azure, 3, 4, &data), 3_000, "Azure bills training tokens only");
        let price = Price { training: 2.0, input: 0.0, output: 0.0 };
        let e = estimate_on(ProviderKind::Together, Some(3), 4, &data, Some(price));
        assert_eq!(e.trained_tokens, 4_280);
        assert!((e.training_usd.unwrap() - 0.00856).abs() < 1e-12);
        assert_eq!(committed(ProviderKind::Together, "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"), None);
        assert_eq!(committed(ProviderKind::Together, "local/ngram"), None, "no rate of another provider's");
        assert_eq!(source(ProviderKind::Together, false), None);
        assert_eq!(source(ProviderKind::Together, true), Some("the sweep file's [pricing]"));
        assert_eq!(source(ProviderKind::Command, true), None);
    }

    #[test]
    fn azure_takes_openais_rates_labelled_as_openais() {
        assert_eq!(committed(ProviderKind::Azure, "gpt-4.1-mini-2025-04-14"), lookup("gpt-4.1-mini-2025-04-14"));
        assert!(committed(ProviderKind::Azure, "gpt-4.1-mini-2025-04-14").is_some());
        let label = source(ProviderKind::Azure, false).unwrap();
        assert!(label.contains("OpenAI's rates") && label.contains("not checked"), "{label}");
        assert_eq!(source(ProviderKind::OpenAi, false), Some(PRICES_AS_OF));
    }

    #[test]
    fn deployments_cost_their_minutes_at_the_hourly_rate() {
        assert_eq!(deployment_cost(6, 20.0, Some(3.0)), Some(6.0));
        assert_eq!(deployment_cost(6, 20.0, Some(0.0)), Some(0.0));
        assert_eq!(deployment_cost(6, 20.0, None), None, "an unknown rate is unknown, not free");
    }

    #[test]
    fn cost_is_tokens_times_the_rate() {
        assert!((cost(1_000_000, 5.0) - 5.0).abs() < 1e-12);
        assert!((cost(177_162, 25.0) - 4.42905).abs() < 1e-9);
    }
}
