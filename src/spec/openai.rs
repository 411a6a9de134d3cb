//! The `[openai]` table: how to reach a server that speaks the OpenAI
//! protocol (base URL, the name of the key's environment variable, the
//! organization and project headers, the authentication scheme).

use toml::Spanned;

use super::error::{Cx, SpecError};
use super::net::{check_base_url, header_value_problem};
use super::raw::{AuthKind, RawOpenAi};
use super::{Auth, OpenAiSettings};

impl Cx<'_> {
    pub(super) fn openai(&self, o: &Spanned<RawOpenAi>) -> Result<OpenAiSettings, SpecError> {
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
            if !super::validate::is_variable_name(name) {
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
        settings.auth = match raw.auth.as_ref().map(|a| *a.get_ref()) {
            None | Some(AuthKind::Bearer) => Auth::Bearer,
            Some(AuthKind::Azure) => {
                let auth = raw.auth.as_ref().map_or(0..0, Spanned::span);
                return Err(self.error(
                    &auth,
                    "openai.auth",
                    "`auth = \"azure\"` only changed the headers, and a model fine-tuned on Azure OpenAI answers \
                     only once it is deployed, which this cannot do"
                        .into(),
                    "set `provider = \"azure\"` and move the settings to an [azure] table (`endpoint`, \
                     `subscription`, `resource_group`, `account`): ftsweep then deploys each model for its \
                     evaluation and deletes the deployment after; see README.md",
                ));
            }
        };
        if let Some(v) = &raw.api_version {
            return Err(self.at(
                v,
                "openai.api_version",
                "`api_version` was a setting of `auth = \"azure\"`, which is gone".into(),
                "remove it; for Azure OpenAI set `provider = \"azure\"` with an [azure] table (its v1 API needs \
                 no version)",
            ));
        }
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
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

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
    fn header_values_in_the_file_must_be_sendable() {
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
    fn an_unknown_authentication_is_refused_at_its_line_with_the_choices() {
        let openai = GOOD
            .replace("provider = \"local\"", "provider = \"openai\"")
            .replace("local/ngram", "gpt-4.1-mini-2025-04-14");
        let e = err(&format!("{openai}[openai]\nauth = \"basic\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(19), Some("openai.auth")), "{e}");
        assert_eq!(e.message, "unknown authentication `basic`");
        assert_eq!(e.hint.as_deref(), Some("use `auth = \"bearer\"` (the default)"));
        let s = parse_str(&format!("{openai}[openai]\nauth = \"bearer\"\n")).unwrap();
        assert_eq!(s.openai.auth, Auth::Bearer);
    }

    #[test]
    fn azure_authentication_is_refused_with_a_hint_to_the_azure_provider() {
        let openai = GOOD
            .replace("provider = \"local\"", "provider = \"openai\"")
            .replace("local/ngram", "gpt-4.1-mini-2025-04-14");
        let e = err(&format!("{openai}[openai]\nauth = \"azure\"\napi_version = \"2025-04-01-preview\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(19), Some("openai.auth")), "{e}");
        assert!(e.message.contains("deployed"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("`provider = \"azure\"`"), "{e}");
        let e = err(&format!("{openai}[openai]\napi_version = \"2025-04-01-preview\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(19), Some("openai.api_version")), "{e}");
    }
}
