//! The `[azure]` table of `provider = "azure"`: Azure OpenAI's data plane
//! (the resource's endpoint, an API key or an Entra token), the Azure
//! Resource Manager account its models are deployed in, and the deployments
//! an evaluation makes (SKU, capacity, what they cost while they exist).

use toml::Spanned;

use super::error::{Cx, SpecError};
use super::net::check_base_url;
use super::raw::{RawAzure, RawSweep};
use super::{ARM_API_VERSION, ARM_URL, AzureAuth, AzureSettings, ProviderKind};

/// The deployment SKUs a fine-tuned model can be deployed with, as ARM
/// spells them; a sweep file's SKU is matched case-insensitively.
pub const DEPLOYMENT_SKUS: &[&str] = &["DeveloperTier", "Standard", "GlobalStandard", "ProvisionedManaged"];

/// The default SKU of a fine-tuned model's deployment: no hosting fee.
pub const DEVELOPER_TIER: &str = "DeveloperTier";

/// The default SKU of the base model's deployment (the baseline).
pub const BASELINE_SKU: &str = "GlobalStandard";

/// Whether `model` is a dated snapshot id (`gpt-4.1-mini-2025-04-14`),
/// possibly fine-tuned already (`….ft-<hex>`, to continue training): what
/// Azure OpenAI fine-tunes.
pub fn is_dated_snapshot(model: &str) -> bool {
    let base = match model.split_once(".ft-") {
        Some((base, id)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => base,
        Some(_) => return false,
        None => model,
    };
    let Some((name, date)) = base.len().checked_sub(11).and_then(|at| base.split_at_checked(at)) else {
        return false;
    };
    let date = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| date[r].iter().all(u8::is_ascii_digit);
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && date[0] == b'-'
        && digits(1..5)
        && date[5] == b'-'
        && digits(6..8)
        && date[8] == b'-'
        && digits(9..11)
}

/// The endpoint as the data plane's base: trailing `/`, `/openai/v1` or
/// `/openai` trimmed (the portal shows `https://myres.openai.azure.com/`, the
/// docs' clients take `…/openai/v1/`).
fn trim_endpoint(url: &str) -> &str {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix("/openai/v1").or_else(|| url.strip_suffix("/openai")).unwrap_or(url);
    url.trim_end_matches('/')
}

/// Whether `c` may appear in a resource group's name, as ARM allows (its
/// Unicode letters aside: ftsweep takes ASCII, which goes into URLs as is).
fn resource_group_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.()".contains(c)
}

impl Cx<'_> {
    /// The `[azure]` table: required with `provider = "azure"` (refused
    /// otherwise, by [`Cx::hosted_tables`]).
    pub(super) fn azure(&self, raw: &RawSweep, provider: ProviderKind) -> Result<Option<AzureSettings>, SpecError> {
        if provider != ProviderKind::Azure {
            return Ok(None);
        }
        let Some(a) = &raw.azure else {
            return Err(self.error(
                &raw.provider.as_ref().map_or(0..0, Spanned::span),
                "azure",
                "`provider = \"azure\"` needs an [azure] table: the resource's endpoint and the account its models \
                 are deployed in"
                    .into(),
                "add `[azure]` with `endpoint = \"https://myres.openai.azure.com\"`, `subscription`, \
                 `resource_group` and `account` (the portal's Subscription ID, Resource group and resource Name); \
                 see README.md",
            ));
        };
        let t: &RawAzure = a.get_ref();
        let missing = |key: &str, what: &str, example: &str| {
            self.at(a, &format!("azure.{key}"), format!("missing: {what}"), &format!("add e.g. `{key} = {example}`"))
        };
        let Some(endpoint) = &t.endpoint else {
            return Err(missing(
                "endpoint",
                "the Azure OpenAI resource's endpoint",
                "\"https://myres.openai.azure.com\"` (the portal: the resource's Keys and Endpoint",
            ));
        };
        let endpoint = self.url(endpoint, "azure.endpoint", "https://myres.openai.azure.com")?;
        let data_auth = match (&t.api_key_env, &t.entra_token_env) {
            (Some(_), Some(e)) => {
                return Err(self.at(
                    e,
                    "azure.entra_token_env",
                    "`api_key_env` and `entra_token_env` are two ways to authenticate: give one".into(),
                    "keep `api_key_env` for the resource's key (an `api-key` header), or `entra_token_env` for an \
                     Entra token (a bearer token), not both",
                ));
            }
            (Some(k), None) => {
                AzureAuth::ApiKey { env: self.variable(k, "azure.api_key_env", "AZURE_OPENAI_API_KEY", "key")? }
            }
            (None, Some(e)) => {
                AzureAuth::Entra { env: self.variable(e, "azure.entra_token_env", "AZURE_OPENAI_TOKEN", "token")? }
            }
            (None, None) => AzureAuth::ApiKey { env: "AZURE_OPENAI_API_KEY".into() },
        };
        let Some(subscription) = &t.subscription else {
            return Err(missing(
                "subscription",
                "the subscription id the resource is in",
                "\"00000000-0000-0000-0000-000000000000\"` (the portal: the resource's Overview, Subscription ID",
            ));
        };
        let subscription = self.subscription(subscription)?;
        let Some(group) = &t.resource_group else {
            return Err(missing(
                "resource_group",
                "the resource group the resource is in",
                "\"my-rg\"` (the portal: the resource's Overview, Resource group",
            ));
        };
        let resource_group = self.resource_group(group)?;
        let Some(account) = &t.account else {
            return Err(missing(
                "account",
                "the Azure OpenAI resource's name, whose deployments the models go to",
                "\"myres\"` (the portal: the resource's Name, as in https://myres.openai.azure.com",
            ));
        };
        let account = self.account(account)?;
        let arm_token_env = match &t.arm_token_env {
            None => None,
            Some(v) => Some(self.variable(v, "azure.arm_token_env", "AZURE_ARM_TOKEN", "token")?),
        };
        let management_url = match &t.management_url {
            None => ARM_URL.to_string(),
            Some(u) => {
                let url = u.get_ref().trim().trim_end_matches('/');
                check_base_url(url).map_err(|m| {
                    self.at(
                        u,
                        "azure.management_url",
                        m,
                        "use `https://management.azure.com` (the default), or http://127.0.0.1:PORT for a local \
                         server, with no `user@` part",
                    )
                })?;
                url.to_string()
            }
        };
        let arm_api_version = match &t.arm_api_version {
            None => ARM_API_VERSION.to_string(),
            Some(v) => self.arm_api_version(v)?,
        };
        let deployment_sku = match &t.deployment_sku {
            None => DEVELOPER_TIER.to_string(),
            Some(s) => self.sku(s, "azure.deployment_sku")?,
        };
        let baseline_sku = match &t.baseline_sku {
            None => BASELINE_SKU.to_string(),
            Some(s) => self.sku(s, "azure.baseline_sku")?,
        };
        let deployment_capacity = match &t.deployment_capacity {
            None => 50,
            Some(c) => self.int_in(c, "azure.deployment_capacity", (1.0, 10_000.0))? as u32,
        };
        let deployment_usd_per_hour = match &t.deployment_usd_per_hour {
            Some(v) => {
                let x = *v.get_ref();
                if !(x.is_finite() && x >= 0.0) {
                    return Err(self.at(
                        v,
                        "azure.deployment_usd_per_hour",
                        format!("{x} is not allowed"),
                        "give the SKU's hosting fee in USD per hour, 0 or more, e.g. `deployment_usd_per_hour = 1.7`",
                    ));
                }
                Some(x)
            }
            None if deployment_sku == DEVELOPER_TIER => Some(0.0),
            None => None,
        };
        let deployment_minutes = match &t.deployment_minutes {
            None => 20.0,
            Some(v) => self.positive(v, "azure.deployment_minutes", "deployment_minutes = 20")?,
        };
        let baseline_deployment = match &t.baseline_deployment {
            None => None,
            Some(d) => Some(self.deployment_name(d)?),
        };
        Ok(Some(AzureSettings {
            endpoint,
            data_auth,
            subscription,
            resource_group,
            account,
            arm_token_env,
            management_url,
            arm_api_version,
            deployment_sku,
            deployment_capacity,
            deployment_usd_per_hour,
            deployment_minutes,
            baseline_deployment,
            baseline_sku,
        }))
    }

    /// An https URL (or loopback http) with the trailing parts trimmed.
    fn url(&self, v: &Spanned<String>, key: &str, example: &str) -> Result<String, SpecError> {
        let url = trim_endpoint(v.get_ref());
        check_base_url(url).map_err(|m| {
            self.at(
                v,
                key,
                m,
                &format!(
                    "use the resource's https:// endpoint, e.g. `{example}`, or http://127.0.0.1:PORT for a local \
                     server (`ftsweep serve --protocol azure`), with no `user@` part"
                ),
            )
        })?;
        Ok(url.to_string())
    }

    fn subscription(&self, v: &Spanned<String>) -> Result<String, SpecError> {
        let s = v.get_ref().trim();
        let groups: Vec<&str> = s.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit())) {
            return Err(self.at(
                v,
                "azure.subscription",
                format!("`{}` is not a subscription id", v.get_ref()),
                "give the subscription's id, a GUID such as `00000000-0000-0000-0000-000000000000` (the portal: the \
                 resource's Overview, Subscription ID; or `az account show --query id -o tsv`), not its name",
            ));
        }
        Ok(s.to_ascii_lowercase())
    }

    fn resource_group(&self, v: &Spanned<String>) -> Result<String, SpecError> {
        let g = v.get_ref().trim();
        if g.is_empty() || g.len() > 90 || !g.chars().all(resource_group_char) || g.ends_with('.') {
            return Err(self.at(
                v,
                "azure.resource_group",
                format!("`{}` is not a resource group name", v.get_ref()),
                "give the resource group's name as the portal shows it on the resource's Overview (Resource group): \
                 1 to 90 letters, digits, `-`, `_`, `.`, `(` or `)`, not ending in `.`",
            ));
        }
        Ok(g.to_string())
    }

    fn account(&self, v: &Spanned<String>) -> Result<String, SpecError> {
        let a = v.get_ref().trim();
        let ok = (2..=64).contains(&a.len())
            && a.starts_with(|c: char| c.is_ascii_alphanumeric())
            && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(self.at(
                v,
                "azure.account",
                format!("`{}` is not an Azure OpenAI resource name", v.get_ref()),
                "give the resource's Name as the portal shows it (`myres` of https://myres.openai.azure.com): 2 to 64 \
                 letters, digits, `-`, `_` or `.`, starting with a letter or digit",
            ));
        }
        Ok(a.to_string())
    }

    fn arm_api_version(&self, v: &Spanned<String>) -> Result<String, SpecError> {
        let s = v.get_ref().trim();
        let date = s.strip_suffix("-preview").unwrap_or(s);
        let ok = date.len() == 10
            && date.char_indices().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
        if !ok {
            return Err(self.at(
                v,
                "azure.arm_api_version",
                format!("`{}` is not an API version", v.get_ref()),
                &format!(
                    "give an Azure Resource Manager API version of Microsoft.CognitiveServices, e.g. \
                     `arm_api_version = \"{ARM_API_VERSION}\"` (the default) or `\"2025-06-01\"`"
                ),
            ));
        }
        Ok(s.to_string())
    }

    /// A SKU, matched case-insensitively and spelled as ARM spells it.
    fn sku(&self, v: &Spanned<String>, key: &str) -> Result<String, SpecError> {
        let written = v.get_ref().trim();
        match DEPLOYMENT_SKUS.iter().find(|s| s.eq_ignore_ascii_case(written)) {
            Some(sku) => Ok((*sku).to_string()),
            None => Err(self.at(
                v,
                key,
                format!("unknown deployment SKU `{}`", v.get_ref()),
                &format!(
                    "use one of {} (DeveloperTier has no hosting fee and lives 24 hours: made for evaluating)",
                    DEPLOYMENT_SKUS.iter().map(|s| format!("`\"{s}\"`")).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// `baseline_deployment`: an existing deployment's name, as it goes into
    /// a chat request's `model` and a URL.
    fn deployment_name(&self, v: &Spanned<String>) -> Result<String, SpecError> {
        let d = v.get_ref().trim();
        let ok = (2..=64).contains(&d.len())
            && d.starts_with(|c: char| c.is_ascii_alphanumeric())
            && d.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(self.at(
                v,
                "azure.baseline_deployment",
                format!("`{}` is not a deployment name", v.get_ref()),
                "give the name of an existing deployment of the base model as the portal lists it under \
                 Deployments (2 to 64 letters, digits, `-`, `_` or `.`), or remove the key to deploy the base model \
                 for the baseline",
            ));
        }
        Ok(d.to_string())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

    pub(crate) const AZURE: &str = "[azure]\nendpoint = \"https://myres.openai.azure.com/openai/v1/\"\n\
        subscription = \"0000AAAA-0000-0000-0000-000000000000\"\nresource_group = \"my-rg\"\naccount = \"myres\"\n";

    /// GOOD as an Azure sweep, with `table` appended (line 18 on).
    pub(crate) fn azure(table: &str) -> String {
        GOOD.replace("provider = \"local\"", "provider = \"azure\"").replace("local/ngram", "gpt-4.1-mini-2025-04-14")
            + table
    }

    #[test]
    fn an_azure_sweep_parses_with_the_defaults() {
        let s = parse_str(&azure(AZURE)).unwrap();
        let a = s.azure.unwrap();
        assert_eq!(a.endpoint, "https://myres.openai.azure.com");
        assert_eq!(a.data_plane_url(), "https://myres.openai.azure.com/openai/v1");
        assert_eq!(a.data_auth, AzureAuth::ApiKey { env: "AZURE_OPENAI_API_KEY".into() });
        assert_eq!(a.subscription, "0000aaaa-0000-0000-0000-000000000000");
        assert_eq!(
            a.account_id(),
            "/subscriptions/0000aaaa-0000-0000-0000-000000000000/resourceGroups/my-rg/providers/\
             Microsoft.CognitiveServices/accounts/myres"
        );
        assert_eq!((a.management_url.as_str(), a.arm_api_version.as_str()), (ARM_URL, ARM_API_VERSION));
        assert_eq!((a.deployment_sku.as_str(), a.deployment_capacity), ("DeveloperTier", 50));
        assert_eq!((a.deployment_usd_per_hour, a.deployment_minutes), (Some(0.0), 20.0));
        assert_eq!((a.baseline_deployment, a.baseline_sku.as_str()), (None, "GlobalStandard"));
        assert_eq!(a.arm_token_env, None);
        assert_eq!(s.together, None);
    }

    #[test]
    fn the_azure_table_parses_every_key() {
        let s = parse_str(&azure(&format!(
            "{AZURE}entra_token_env = \"TOK\"\narm_token_env = \"ARM\"\nmanagement_url = \"http://127.0.0.1:9/\"\n\
             arm_api_version = \"2025-07-01-preview\"\ndeployment_sku = \"standard\"\ndeployment_capacity = 10\n\
             deployment_minutes = 15\nbaseline_deployment = \"gpt-41-mini\"\nbaseline_sku = \"globalSTANDARD\"\n"
        )))
        .unwrap();
        let a = s.azure.unwrap();
        assert_eq!(a.data_auth, AzureAuth::Entra { env: "TOK".into() });
        assert_eq!(a.arm_token_env.as_deref(), Some("ARM"));
        assert_eq!(a.management_url, "http://127.0.0.1:9");
        assert_eq!(a.arm_api_version, "2025-07-01-preview");
        assert_eq!((a.deployment_sku.as_str(), a.deployment_capacity), ("Standard", 10));
        assert_eq!(a.deployment_usd_per_hour, None, "a Standard deployment's fee is unknown unless given");
        assert_eq!(a.deployment_minutes, 15.0);
        assert_eq!(
            (a.baseline_deployment.as_deref(), a.baseline_sku.as_str()),
            (Some("gpt-41-mini"), "GlobalStandard")
        );
        let s = parse_str(&azure(&format!("{AZURE}deployment_sku = \"Standard\"\ndeployment_usd_per_hour = 1.7\n")))
            .unwrap();
        assert_eq!(s.azure.unwrap().deployment_usd_per_hour, Some(1.7));
        let s = parse_str(&azure(&AZURE.replace("/openai/v1/", "/openai"))).unwrap();
        assert_eq!(s.azure.unwrap().endpoint, "https://myres.openai.azure.com");
    }

    #[test]
    fn dated_snapshots_are_what_azure_fine_tunes() {
        for ok in [
            "gpt-4.1-mini-2025-04-14",
            "gpt-4o-2024-08-06",
            "gpt-4o-mini-2024-07-18",
            "gpt-4o-mini-2024-07-18.ft-0e208cf33a6a466994aff31a08aba678",
        ] {
            assert!(is_dated_snapshot(ok), "{ok}");
        }
        for bad in
            ["gpt-4.1-mini", "gpt-4.1-mini-2025-4-14", "-2025-04-14", "GPT-4o-2024-08-06", "x.ft-", "é-2025-04-14"]
        {
            assert!(!is_dated_snapshot(bad), "{bad}");
        }
        let e = err(&azure(AZURE).replace("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"));
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("base_model")), "{e}");
        assert!(e.hint.unwrap().contains("gpt-4.1-mini-2025-04-14"));
    }

    #[test]
    fn azure_refusals_name_the_key_and_the_fix() {
        let cases = [
            (AZURE.replace("https://myres", "http://myres"), "azure.endpoint", "plain http is refused"),
            (AZURE.replace("0000AAAA", "my-subscription"), "azure.subscription", "not a subscription id"),
            (AZURE.replace("my-rg", "my/rg"), "azure.resource_group", "not a resource group name"),
            (AZURE.replace("my-rg", "rg."), "azure.resource_group", "not a resource group name"),
            (AZURE.replace("\"myres\"", "\"my res\""), "azure.account", "not an Azure OpenAI resource name"),
            (AZURE.replace("account = \"myres\"\n", ""), "azure.account", "missing"),
            (
                AZURE.replace("endpoint = \"https://myres.openai.azure.com/openai/v1/\"\n", ""),
                "azure.endpoint",
                "missing",
            ),
            (format!("{AZURE}api_key_env = \"K\"\nentra_token_env = \"T\"\n"), "azure.entra_token_env", "give one"),
            (format!("{AZURE}api_key_env = \"abc-123\"\n"), "azure.api_key_env", "not a variable name"),
            (format!("{AZURE}management_url = \"http://10.0.0.1\"\n"), "azure.management_url", "plain http"),
            (format!("{AZURE}arm_api_version = \"latest\"\n"), "azure.arm_api_version", "not an API version"),
            (format!("{AZURE}deployment_sku = \"Developer\"\n"), "azure.deployment_sku", "unknown deployment SKU"),
            (format!("{AZURE}baseline_sku = \"cheap\"\n"), "azure.baseline_sku", "unknown deployment SKU"),
            (format!("{AZURE}deployment_capacity = 0\n"), "azure.deployment_capacity", "out of range"),
            (format!("{AZURE}deployment_capacity = 10001\n"), "azure.deployment_capacity", "out of range"),
            (format!("{AZURE}deployment_minutes = -5\n"), "azure.deployment_minutes", "not allowed"),
            (format!("{AZURE}deployment_usd_per_hour = -1\n"), "azure.deployment_usd_per_hour", "not allowed"),
            (format!("{AZURE}baseline_deployment = \"a b\"\n"), "azure.baseline_deployment", "not a deployment"),
            (format!("{AZURE}sku = \"Standard\"\n"), "azure.sku", "unknown field"),
        ];
        for (table, key, says) in cases {
            let e = err(&azure(&table));
            assert_eq!(e.key.as_deref(), Some(key), "{table}: {e}");
            assert!(e.message.contains(says), "{table}: {e}");
            assert!(e.hint.is_some(), "{e}");
        }
        let e = err(&azure(""));
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("azure")), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("resource_group"), "{e}");
        let e = err(&format!("{GOOD}{AZURE}"));
        assert_eq!((e.line, e.key.as_deref()), (Some(18), Some("azure")), "{e}");
        let e = err(&azure(&format!("{AZURE}[together]\n")));
        assert_eq!(e.key.as_deref(), Some("together"), "{e}");
        let e = err(&azure(&format!("{AZURE}[openai]\n")));
        assert_eq!(e.key.as_deref(), Some("openai"), "{e}");
        // Azure takes OpenAI's names and ranges.
        let e = err(&azure(AZURE).replace("batch_size = [4, 32]", "lora_r = [8]"));
        assert_eq!(e.message, "the azure provider does not accept `lora_r`", "{e}");
        let e = err(&azure(AZURE).replace("n_epochs = [1, 3, 8]", "n_epochs = [0]"));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.n_epochs"), "{e}");
    }
}
