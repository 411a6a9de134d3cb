//! The `[together]` table of `provider = "together"`: how to reach Together
//! AI's API (base URL, the key's variable), what its jobs train (LoRA or a
//! full fine-tune, `train_on_inputs`) and how a fine-tuned model answers for
//! its evaluation (serverless, or a dedicated endpoint and what it costs).

use toml::Spanned;

use super::error::{Cx, SpecError};
use super::net::check_base_url;
use super::raw::{Inference, RawSweep, RawTogether, Training};
use super::validate::is_variable_name;
use super::{ProviderKind, TogetherInference, TogetherSettings, TogetherTraining};

impl Cx<'_> {
    /// Refuses `[together]` and `[azure]` for another provider: such a table
    /// says the file meant that provider.
    pub(super) fn hosted_tables(&self, raw: &RawSweep, provider: ProviderKind) -> Result<(), SpecError> {
        let tables = [
            ("together", ProviderKind::Together, raw.together.as_ref().map(Spanned::span)),
            ("azure", ProviderKind::Azure, raw.azure.as_ref().map(Spanned::span)),
        ];
        for (table, owner, span) in tables {
            if let Some(span) = span.filter(|_| provider != owner) {
                return Err(self.error(
                    &span,
                    table,
                    format!("a [{table}] table only applies to `provider = \"{table}\"`"),
                    &format!("remove the table, or set `provider = \"{table}\"`"),
                ));
            }
        }
        Ok(())
    }

    /// The `[together]` table: `Some` exactly when `provider = "together"`,
    /// with the defaults when the table is absent.
    pub(super) fn together(
        &self,
        raw: &RawSweep,
        provider: ProviderKind,
    ) -> Result<Option<TogetherSettings>, SpecError> {
        if provider != ProviderKind::Together {
            return Ok(None);
        }
        let mut settings = TogetherSettings::default();
        let Some(t) = &raw.together else {
            self.no_lora_with_full(raw, None, settings.training)?;
            return Ok(Some(settings));
        };
        let table: &RawTogether = t.get_ref();
        if let Some(url) = &table.base_url {
            let trimmed = url.get_ref().trim().trim_end_matches('/').to_string();
            check_base_url(&trimmed).map_err(|m| {
                self.at(
                    url,
                    "together.base_url",
                    m,
                    "use an https:// URL such as `https://api.together.ai/v1`, or http://127.0.0.1:PORT/v1 for a \
                     local server (`ftsweep serve --protocol together`), with no `user@` part",
                )
            })?;
            settings.base_url = trimmed;
        }
        if let Some(var) = &table.api_key_env {
            settings.api_key_env = self.variable(var, "together.api_key_env", "TOGETHER_API_KEY", "key")?;
        }
        settings.training = match table.training.as_ref().map(|t| *t.get_ref()) {
            None | Some(Training::Lora) => TogetherTraining::Lora,
            Some(Training::Full) => TogetherTraining::Full,
        };
        settings.inference = match table.inference.as_ref().map(|i| *i.get_ref()) {
            None | Some(Inference::Auto) => TogetherInference::Auto,
            Some(Inference::Serverless) => TogetherInference::Serverless,
            Some(Inference::Dedicated) => TogetherInference::Dedicated,
        };
        if let (TogetherTraining::Full, TogetherInference::Serverless, Some(i)) =
            (settings.training, settings.inference, &table.inference)
        {
            return Err(self.at(
                i,
                "together.inference",
                "a full fine-tune answers only through a dedicated endpoint, never serverless".into(),
                "use `inference = \"dedicated\"` (or `\"auto\"`), or `training = \"lora\"` for serverless LoRA \
                 adapters",
            ));
        }
        self.no_lora_with_full(raw, Some(table), settings.training)?;
        if let Some(m) = &table.lora_trainable_modules {
            let modules = m.get_ref().trim();
            if modules.is_empty()
                || !modules.split(',').all(|part| {
                    let part = part.trim();
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                })
            {
                return Err(self.at(
                    m,
                    "together.lora_trainable_modules",
                    format!("`{}` is not a list of module names", m.get_ref()),
                    "write `\"all-linear\"` or module names separated by commas, e.g. `\"q_proj,k_proj,v_proj\"`",
                ));
            }
            settings.lora_trainable_modules = Some(modules.to_string());
        }
        settings.train_on_inputs = table.train_on_inputs.as_ref().map(|b| *b.get_ref());
        if let Some(h) = &table.endpoint_hardware {
            let hardware = h.get_ref().trim();
            if hardware.is_empty() || !hardware.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                return Err(self.at(
                    h,
                    "together.endpoint_hardware",
                    format!("`{}` is not a hardware id", h.get_ref()),
                    "write an id Together lists for the model (`GET /v1/hardware?model=...`), e.g. \
                     `\"1x_nvidia_h100_80gb_sxm\"`",
                ));
            }
            settings.endpoint_hardware = hardware.to_string();
        }
        if let Some(v) = &table.endpoint_usd_per_hour {
            settings.endpoint_usd_per_hour =
                Some(self.positive(v, "together.endpoint_usd_per_hour", "endpoint_usd_per_hour = 3.36")?);
        }
        if let Some(v) = &table.endpoint_minutes {
            settings.endpoint_minutes = self.positive(v, "together.endpoint_minutes", "endpoint_minutes = 20")?;
        }
        Ok(Some(settings))
    }

    /// `lora_*` hyperparameters and `lora_trainable_modules` train a LoRA
    /// adapter: refused with `training = "full"`.
    fn no_lora_with_full(
        &self,
        raw: &RawSweep,
        table: Option<&RawTogether>,
        training: TogetherTraining,
    ) -> Result<(), SpecError> {
        if training != TogetherTraining::Full {
            return Ok(());
        }
        let hint = "remove it, or set `training = \"lora\"` under [together]";
        if let Some((name, v)) = raw.hyperparameters.get_ref().iter().find(|(name, _)| name.starts_with("lora_")) {
            return Err(self.at(
                v,
                &format!("hyperparameters.{name}"),
                format!("`{name}` is a LoRA setting, and the sweep trains full fine-tunes (`training = \"full\"`)"),
                hint,
            ));
        }
        if let Some(m) = table.and_then(|t| t.lora_trainable_modules.as_ref()) {
            return Err(self.at(
                m,
                "together.lora_trainable_modules",
                "`lora_trainable_modules` is a LoRA setting, and the sweep trains full fine-tunes (`training = \
                 \"full\"`)"
                    .into(),
                hint,
            ));
        }
        Ok(())
    }

    /// A key that names an environment variable (`example` is a good one):
    /// never a secret itself.
    pub(super) fn variable(
        &self,
        var: &Spanned<String>,
        key: &str,
        example: &str,
        what: &str,
    ) -> Result<String, SpecError> {
        let name = var.get_ref();
        if !is_variable_name(name) {
            let short = key.rsplit('.').next().unwrap_or(key);
            return Err(self.at(
                var,
                key,
                format!("this names the environment variable that holds the {what}, and is not a variable name"),
                &format!("write the variable's name, e.g. `{short} = \"{example}\"`, and never the {what} itself"),
            ));
        }
        Ok(name.clone())
    }

    /// A finite number above 0.
    pub(super) fn positive(&self, v: &Spanned<f64>, key: &str, example: &str) -> Result<f64, SpecError> {
        let x = *v.get_ref();
        if x.is_finite() && x > 0.0 {
            return Ok(x);
        }
        Err(self.at(v, key, format!("{x} is not allowed"), &format!("give a number above 0, e.g. `{example}`")))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

    /// GOOD as a Together sweep (its hyperparameters on lines 12-14), with `table` appended.
    pub(crate) fn together(table: &str) -> String {
        GOOD.replace("provider = \"local\"", "provider = \"together\"")
            .replace("local/ngram", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference")
            .replace("learning_rate_multiplier = [0.1, 1.0, 10.0]", "learning_rate = [0.00001, 0.0002]")
            .replace("batch_size = [4, 32]", "lora_r = [8, 32]")
            + table
    }

    #[test]
    fn a_together_sweep_takes_the_defaults_without_a_table() {
        let s = parse_str(&together("")).unwrap();
        assert_eq!(s.provider, ProviderKind::Together);
        assert_eq!(s.together, Some(TogetherSettings::default()));
        assert_eq!(s.together.unwrap().base_url, "https://api.together.ai/v1");
        assert_eq!(s.azure, None);
        assert_eq!(parse_str(GOOD).unwrap().together, None, "only for provider = \"together\"");
    }

    #[test]
    fn the_together_table_parses_every_key() {
        let s = parse_str(&together(
            "[together]\nbase_url = \"http://127.0.0.1:9/v1/\"\napi_key_env = \"TG\"\ntraining = \"lora\"\n\
             lora_trainable_modules = \"q_proj, v_proj\"\ntrain_on_inputs = false\ninference = \"dedicated\"\n\
             endpoint_hardware = \"2x_nvidia_h100_80gb_sxm\"\nendpoint_usd_per_hour = 6.5\nendpoint_minutes = 30\n",
        ))
        .unwrap();
        let t = s.together.unwrap();
        assert_eq!(t.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(t.api_key_env, "TG");
        assert_eq!(t.training, TogetherTraining::Lora);
        assert_eq!(t.lora_trainable_modules.as_deref(), Some("q_proj, v_proj"));
        assert_eq!(t.train_on_inputs, Some(false));
        assert_eq!(t.inference, TogetherInference::Dedicated);
        assert_eq!(t.endpoint_hardware, "2x_nvidia_h100_80gb_sxm");
        assert_eq!((t.endpoint_usd_per_hour, t.endpoint_minutes), (Some(6.5), 30.0));
        let full = parse_str(
            &together("[together]\ntraining = \"full\"\n").replace("lora_r = [8, 32]", "weight_decay = [0.0]"),
        )
        .unwrap();
        assert_eq!(full.together.unwrap().training, TogetherTraining::Full);
    }

    #[test]
    fn together_refusals_name_the_key_and_the_fix() {
        let cases = [
            ("[together]\nbase_url = \"http://example.com/v1\"\n", "together.base_url", "plain http is refused"),
            ("[together]\napi_key_env = \"sk-123 abc\"\n", "together.api_key_env", "not a variable name"),
            ("[together]\ntraining = \"qlora\"\n", "together.training", "unknown training type `qlora`"),
            ("[together]\ninference = \"maybe\"\n", "together.inference", "unknown inference mode `maybe`"),
            ("[together]\nendpoint_minutes = 0\n", "together.endpoint_minutes", "0 is not allowed"),
            ("[together]\nendpoint_usd_per_hour = -1.0\n", "together.endpoint_usd_per_hour", "not allowed"),
            ("[together]\nlora_trainable_modules = \"a;b\"\n", "together.lora_trainable_modules", "not a list"),
            ("[together]\nendpoint_hardware = \"\"\n", "together.endpoint_hardware", "not a hardware id"),
            ("[together]\nhardware = \"x\"\n", "together.hardware", "unknown field"),
            ("[together]\ntraining = \"full\"\n", "hyperparameters.lora_r", "LoRA setting"),
        ];
        for (table, key, says) in cases {
            let e = err(&together(table));
            assert_eq!(e.key.as_deref(), Some(key), "{table}: {e}");
            assert!(e.message.contains(says), "{table}: {e}");
            assert!(e.hint.is_some(), "{e}");
        }
        let full = together("[together]\ntraining = \"full\"\ninference = \"serverless\"\n")
            .replace("lora_r = [8, 32]", "weight_decay = [0.0]");
        let e = err(&full);
        assert_eq!((e.line, e.key.as_deref()), (Some(20), Some("together.inference")), "{e}");
        assert!(e.message.contains("dedicated endpoint"), "{e}");
        let e = err(&full.replace("inference = \"serverless\"", "lora_trainable_modules = \"all-linear\""));
        assert_eq!(e.key.as_deref(), Some("together.lora_trainable_modules"), "{e}");
        let e = err(&together("[openai]\n"));
        assert_eq!(e.key.as_deref(), Some("openai"), "{e}");
        let e = err(&format!("{GOOD}[together]\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(18), Some("together")), "{e}");
        assert_eq!(e.hint.as_deref(), Some("remove the table, or set `provider = \"together\"`"));
    }
}
