//! The hosted providers besides OpenAI, built from a sweep's settings and the
//! environment: Together AI (`TOGETHER_BASE_URL` overrides its base URL) and
//! Azure OpenAI. Keys are read from the variables the sweep names; errors name
//! the variable, never the value.

use anyhow::Result;

use super::UsageError;
use super::run::read_api_key;
use crate::provider::azure::AzureProvider;
use crate::provider::openai::PollPolicy;
use crate::provider::openai::client::Secret;
use crate::provider::together::{JobDefaults, TogetherProvider};
use crate::spec::{AzureAuth, AzureSettings, Sweep, TogetherSettings, check_base_url};
use crate::store::SharedStore;

/// The key in the variable `var`, which the sweep's `table` names with `key`.
pub fn required_key(var: &str, table: &str, key: &str, what: &str) -> Result<Secret> {
    read_api_key(var)?.ok_or_else(|| {
        UsageError {
            message: format!("the environment variable `{var}` is not set"),
            hint: format!("export {var}=... with {what} (the sweep's [{table}] {key} names the variable)"),
        }
        .into()
    })
}

/// The sweep's `[together]` settings, with `TOGETHER_BASE_URL` applied.
pub fn together_settings(sweep: &Sweep) -> Result<TogetherSettings> {
    let mut settings = sweep.together.clone().ok_or_else(|| UsageError {
        message: format!("sweep `{}` has `provider = \"together\"` but no Together settings", sweep.name),
        hint: "add a [together] table (or none, for the defaults)".into(),
    })?;
    if let Ok(url) = std::env::var("TOGETHER_BASE_URL")
        && !url.trim().is_empty()
    {
        let url = url.trim().trim_end_matches('/').to_string();
        check_base_url(&url).map_err(|m| UsageError {
            message: format!("TOGETHER_BASE_URL: {m}"),
            hint: "use an https:// URL such as https://api.together.ai/v1, or http://127.0.0.1:PORT/v1 for a local \
                   server"
                .into(),
        })?;
        settings.base_url = url;
    }
    Ok(settings)
}

/// The Together provider of a sweep: its jobs get the checkpoints and
/// validations the sweep's evaluation and early stopping need, and its
/// clean-up leaves the endpoints of a process still running alone.
pub fn together_provider(sweep: &Sweep, store: SharedStore) -> Result<TogetherProvider> {
    let settings = together_settings(sweep)?;
    let key = required_key(&settings.api_key_env, "together", "api_key_env", "your Together API key")?;
    Ok(TogetherProvider::new(&settings, key, store, PollPolicy::default())?
        .with_defaults(JobDefaults::of(sweep))
        .with_owner_check(crate::sweep::owner_alive))
}

/// What `run` checks before it asks or writes anything: the settings, the key and the client.
pub fn check_together(sweep: &Sweep) -> Result<()> {
    let settings = together_settings(sweep)?;
    required_key(&settings.api_key_env, "together", "api_key_env", "your Together API key")?;
    Ok(())
}

/// What `run` checks before it asks or writes anything: the data plane's
/// key and the ARM token (from its variable, or `az`).
pub fn check_azure(sweep: &Sweep) -> Result<()> {
    let settings = azure_settings(sweep)?;
    data_key(settings)?;
    arm_token(settings)?;
    Ok(())
}

/// The sweep's `[azure]` settings.
pub fn azure_settings(sweep: &Sweep) -> Result<&AzureSettings> {
    sweep.azure.as_ref().ok_or_else(|| {
        UsageError {
            message: format!("sweep `{}` has `provider = \"azure\"` but no [azure] table", sweep.name),
            hint: "add an [azure] table with `endpoint`, `subscription`, `resource_group` and `account`".into(),
        }
        .into()
    })
}

/// The Azure provider of a sweep.
pub fn azure_provider(sweep: &Sweep, store: SharedStore) -> Result<AzureProvider> {
    let settings = azure_settings(sweep)?;
    let key = data_key(settings)?;
    let (token, from) = arm_token(settings)?;
    let alive = crate::sweep::owner_alive;
    Ok(AzureProvider::new(settings, &sweep.base_model, key, token, &from, store, PollPolicy::default(), alive)?)
}

/// The command that prints an ARM token for the signed-in Azure CLI user.
const AZ_TOKEN_COMMAND: &str = "az account get-access-token --resource https://management.azure.com --query \
                                accessToken -o tsv";

/// The token for Azure Resource Manager and where it came from (named in
/// errors): the variable `[azure] arm_token_env` names, or else `az account
/// get-access-token` (asked once per process).
pub fn arm_token(settings: &AzureSettings) -> Result<(Secret, String)> {
    if let Some(var) = &settings.arm_token_env {
        let what = format!("an Azure Resource Manager token (`{AZ_TOKEN_COMMAND}`)");
        return Ok((required_key(var, "azure", "arm_token_env", &what)?, var.clone()));
    }
    static FROM_AZ: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
    let from = "the token of `az account get-access-token`".to_string();
    if let Some(token) = FROM_AZ.get() {
        return Ok((token.clone(), from));
    }
    let token = az_token()?;
    Ok((FROM_AZ.get_or_init(|| token).clone(), from))
}

/// Asks the Azure CLI for an ARM token. Its output is the token: it is never printed.
fn az_token() -> Result<Secret> {
    let hint = "run `az login` (the Azure CLI), or set [azure] arm_token_env to a variable that holds a token: \
                export AZURE_ARM_TOKEN=\"$(az account get-access-token --resource https://management.azure.com \
                --query accessToken -o tsv)\""
        .to_string();
    let out = std::process::Command::new("az")
        .args(["account", "get-access-token", "--resource", "https://management.azure.com"])
        .args(["--query", "accessToken", "-o", "tsv"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| UsageError {
            message: format!("cannot get an Azure Resource Manager token: cannot run `az` ({e})"),
            hint: hint.clone(),
        })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
        let said: String = said.chars().take(300).collect();
        return Err(UsageError {
            message: format!("cannot get an Azure Resource Manager token: `{AZ_TOKEN_COMMAND}` failed ({said})"),
            hint,
        }
        .into());
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(UsageError {
            message: format!(
                "cannot get an Azure Resource Manager token: `{AZ_TOKEN_COMMAND}` printed no usable token"
            ),
            hint,
        }
        .into());
    }
    Ok(Secret::new(token))
}

/// The data plane's secret: the API key or the Entra token.
fn data_key(settings: &AzureSettings) -> Result<Secret> {
    Ok(match &settings.data_auth {
        AzureAuth::ApiKey { env } => required_key(env, "azure", "api_key_env", "the Azure OpenAI resource's key")?,
        AzureAuth::Entra { env } => required_key(
            env,
            "azure",
            "entra_token_env",
            "an Entra token for https://cognitiveservices.azure.com (`az account get-access-token --resource \
             https://cognitiveservices.azure.com --query accessToken -o tsv`)",
        )?,
    })
}

/// The variable holding the data plane's secret, for `plan`'s note.
pub fn key_variable(sweep: &Sweep) -> Option<&str> {
    match (&sweep.together, &sweep.azure) {
        (Some(t), _) => Some(&t.api_key_env),
        (_, Some(a)) => Some(match &a.data_auth {
            AzureAuth::ApiKey { env } | AzureAuth::Entra { env } => env,
        }),
        _ => None,
    }
}
