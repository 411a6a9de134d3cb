//! The top-level keys of a sweep file (name, base model, data paths), and
//! the `[limits]` and `[pricing]` tables, checked into their typed forms.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{Cx, SpecError};
use super::raw::{RawLimits, RawPricing};
use super::{CONFIRM_ABOVE_USD, Limits, Method, ProviderKind};

/// Whether `name` is an environment variable's name: letters, digits and
/// `_`, not starting with a digit.
pub(super) fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

impl Cx<'_> {
    /// `method`: SFT unless written. A trainer command is not told a
    /// method (its command trains what it trains), and Together's
    /// `train_on_inputs` belongs to SFT.
    pub(super) fn method(&self, raw: &super::raw::RawSweep, provider: ProviderKind) -> Result<Method, SpecError> {
        let Some(m) = &raw.method else { return Ok(Method::Sft) };
        let method = match m.get_ref() {
            super::raw::TrainingMethod::Sft => Method::Sft,
            super::raw::TrainingMethod::Dpo => Method::Dpo,
        };
        if method == Method::Dpo && provider == ProviderKind::Command {
            return Err(self.at(
                m,
                "method",
                "a trainer command is not told a method: `method = \"dpo\"` applies to the local, openai, azure \
                 and together providers"
                    .into(),
                "remove `method`, and make the trainer command train DPO itself (a hyperparameter such as \
                 `dpo_beta` becomes its `{dpo_beta}` placeholder)",
            ));
        }
        let train_on_inputs = raw.together.as_ref().and_then(|t| t.get_ref().train_on_inputs.as_ref());
        if let (Method::Dpo, Some(t)) = (method, train_on_inputs) {
            return Err(self.at(
                t,
                "together.train_on_inputs",
                "`train_on_inputs` is a setting of SFT jobs; a DPO job trains on the preferred outputs".into(),
                "remove `train_on_inputs`, or set `method = \"sft\"`",
            ));
        }
        Ok(method)
    }

    pub(super) fn name(&self, raw: &Spanned<String>) -> Result<String, SpecError> {
        let name = raw.get_ref().trim().to_string();
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(self.at(
                raw,
                "name",
                format!("`{}` is not a usable sweep name", raw.get_ref()),
                "use 1 to 64 letters, digits, `-`, `_` or `.`, e.g. `topic-router`",
            ));
        }
        Ok(name)
    }

    pub(super) fn base_model(&self, raw: &Spanned<String>, provider: ProviderKind) -> Result<String, SpecError> {
        let base_model = raw.get_ref().trim().to_string();
        if base_model.is_empty() {
            return Err(self.at(
                raw,
                "base_model",
                "the base model is empty".into(),
                "name the model to fine-tune, e.g. `local/ngram`",
            ));
        }
        if provider == ProviderKind::Local && base_model != crate::run::LOCAL_BASE_MODEL {
            return Err(self.at(
                raw,
                "base_model",
                format!("the local provider has no model `{base_model}`"),
                &format!("use `base_model = \"{}\"`", crate::run::LOCAL_BASE_MODEL),
            ));
        }
        if provider == ProviderKind::Azure && !super::azure::is_dated_snapshot(&base_model) {
            return Err(self.at(
                raw,
                "base_model",
                format!("`{base_model}` is not a dated model snapshot, which is what Azure OpenAI fine-tunes"),
                "name the snapshot with its date, e.g. `base_model = \"gpt-4.1-mini-2025-04-14\"` (also \
                 gpt-4.1-2025-04-14, gpt-4.1-nano-2025-04-14, gpt-4o-mini-2024-07-18; which ones a region offers \
                 is in the portal)",
            ));
        }
        Ok(base_model)
    }

    pub(super) fn data_path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, SpecError> {
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

    pub(super) fn int_in(&self, v: &Spanned<i64>, key: &str, (lo, hi): (f64, f64)) -> Result<u64, SpecError> {
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

    /// The `[limits]` table; missing keys take the defaults.
    pub(super) fn limits(&self, raw: Option<&RawLimits>) -> Result<Limits, SpecError> {
        let usd = |v: &Spanned<f64>, key: &str, example: &str| {
            let x = *v.get_ref();
            if x.is_finite() && x >= 0.0 {
                return Ok(x);
            }
            Err(self.at(
                v,
                &format!("limits.{key}"),
                format!("{x} is not allowed"),
                &format!("give an amount in USD, 0 or more, e.g. `{key} = {example}`"),
            ))
        };
        Ok(Limits {
            max_concurrent: match raw.and_then(|l| l.max_concurrent.as_ref()) {
                None => 2,
                Some(m) => self.int_in(m, "limits.max_concurrent", (1.0, 64.0))? as u32,
            },
            confirm_above_usd: match raw.and_then(|l| l.confirm_above_usd.as_ref()) {
                None => CONFIRM_ABOVE_USD,
                Some(v) => usd(v, "confirm_above_usd", "5.0")?,
            },
            budget_usd: match raw.and_then(|l| l.budget_usd.as_ref()) {
                None => None,
                Some(v) => Some(usd(v, "budget_usd", "25.0")?),
            },
            max_trained_tokens: match raw.and_then(|l| l.max_trained_tokens.as_ref()) {
                None => None,
                Some(v) => Some(self.int_in(v, "limits.max_trained_tokens", (0.0, 1e15))?),
            },
            retries: match raw.and_then(|l| l.retries.as_ref()) {
                None => 1,
                Some(v) => self.int_in(v, "limits.retries", (0.0, 10.0))? as u32,
            },
        })
    }

    /// The `[pricing]` table: USD per million tokens, overriding the
    /// committed table.
    pub(super) fn pricing(&self, p: &Spanned<RawPricing>) -> Result<crate::pricing::Price, SpecError> {
        let r = p.get_ref();
        let prices = [r.training_per_million, r.input_per_million, r.output_per_million];
        if prices.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(self.at(
                p,
                "pricing",
                "prices must be numbers, 0 or more".into(),
                "give USD per million tokens, e.g. `training_per_million = 5.0`",
            ));
        }
        Ok(crate::pricing::Price {
            training: r.training_per_million,
            input: r.input_per_million,
            output: r.output_per_million,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::*;

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

    #[test]
    fn an_unknown_provider_is_refused_at_its_line_with_the_choices() {
        let e = err(&GOOD.replace("\"local\"\n", "\"acme\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("provider")), "{e}");
        assert_eq!(e.message, "unknown provider `acme`");
        assert_eq!(
            e.hint.as_deref(),
            Some(
                "use `provider = \"local\"` (the default), `provider = \"openai\"`, `provider = \"azure\"`, \
                 `provider = \"together\"` or `provider = \"command\"`"
            )
        );
        let e = err(&GOOD.replace("\"local\"\n", "3\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("provider")), "{e}");
        assert_eq!(e.message, "expected a provider name, in quotes", "{e}");
        assert!(e.hint.as_deref().unwrap().contains("`provider = \"openai\"`"), "{e}");
    }
}
