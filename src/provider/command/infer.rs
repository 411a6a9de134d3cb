//! The inference server of a command sweep: OpenAI-compatible chat
//! completions, with vLLM's runtime LoRA endpoints. Before a model's
//! evaluation its adapter is loaded (`POST {url}/load_lora_adapter`, under a
//! name stable per adapter directory), completions name it, and it is
//! unloaded after (`POST {url}/unload_lora_adapter`), so the server's adapter
//! slots never fill up. The base model is asked for by name, never loaded.
//! The key goes into the `Authorization` header only.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::data::Prompt;
use crate::provider::{Completion, ProviderError};
use crate::spec::Decoding;
use crate::wire::openai::{ChatRequest, ChatResponse};

/// The most of a server's error body an error quotes.
const BODY_QUOTED: usize = 300;

/// Tries of a request that failed on the server's side or on the way.
const TRIES: u32 = 4;

/// The name a model goes by at the server: an adapter directory (see
/// [`is_adapter`]) is `ftsweep-` and 16 hex digits of its path's SHA-256;
/// anything else (the base model, a judge) is its own name.
pub fn served_name(model: &str, base_model: &str) -> String {
    if is_adapter(model, base_model) {
        let digest = Sha256::digest(model.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("ftsweep-{hex}")
    } else {
        model.to_string()
    }
}

/// Whether a model is an adapter to load (a directory), rather than a name
/// the server knows: an absolute path that is not the sweep's base model (a
/// server started as `vllm serve /models/llama` knows its base model by
/// that path).
pub fn is_adapter(model: &str, base_model: &str) -> bool {
    model != base_model && std::path::Path::new(model).is_absolute()
}

/// A key, shown as `***` by `Debug`, sent only in the `Authorization` header.
#[derive(Clone)]
pub struct Key(String);

impl Key {
    pub fn new(key: String) -> Key {
        Key(key)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The inference server's client.
pub struct InferenceClient {
    http: reqwest::Client,
    base_url: String,
    key: Option<Key>,
}

fn error(message: String, retryable: bool) -> ProviderError {
    ProviderError::Engine { message, retryable }
}

impl InferenceClient {
    /// A client of `base_url` (e.g. `http://127.0.0.1:8000/v1`). With a key,
    /// plain http is refused for a host that is not a loopback one.
    pub fn new(base_url: &str, key: Option<Key>) -> Result<InferenceClient, ProviderError> {
        let base_url = base_url.trim_end_matches('/').to_string();
        if key.is_some() {
            crate::spec::check_base_url(&base_url)
                .map_err(|m| error(format!("refusing to send the inference key: {m}"), false))?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("ftsweep/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error(format!("cannot build the HTTP client: {e}"), false))?;
        Ok(InferenceClient { http, base_url, key })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a JSON POST to `{base_url}/{path}`, retrying failures on the
    /// way or of the server (5xx); the status and the body's text.
    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<(StatusCode, String), ProviderError> {
        let url = format!("{}/{path}", self.base_url);
        let mut wait = Duration::from_millis(250);
        for attempt in 1..=TRIES {
            let mut request = self.http.post(&url).json(body);
            if let Some(Key(key)) = &self.key {
                request = request.bearer_auth(key);
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.text().await {
                        Ok(text) if !status.is_server_error() => return Ok((status, text)),
                        Ok(text) => http_error(&url, status, &text),
                        Err(e) => error(format!("no answer from the inference server at {url}: {e}"), true),
                    }
                }
                Err(e) => error(format!("no answer from the inference server at {url}: {}", without_url(&e)), true),
            };
            if attempt == TRIES {
                return Err(failure);
            }
            tracing::debug!(url, attempt, "retrying: {failure}");
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        unreachable!("the last try returns")
    }

    /// Loads an adapter directory under `name`; one loaded already is fine.
    pub async fn load(&self, name: &str, path: &str) -> Result<(), ProviderError> {
        let body = json!({"lora_name": name, "lora_path": path});
        let (status, text) = self.post("load_lora_adapter", &body).await?;
        if status.is_success() || (status == StatusCode::BAD_REQUEST && text.to_ascii_lowercase().contains("already")) {
            return Ok(());
        }
        Err(error(
            format!(
                "loading the adapter {path} failed: {}",
                http_error_text(&self.url("load_lora_adapter"), status, &text)
            ),
            false,
        ))
    }

    /// Unloads the adapter `name`; one not loaded (any more) is fine.
    pub async fn unload(&self, name: &str) -> Result<(), ProviderError> {
        let (status, text) = self.post("unload_lora_adapter", &json!({"lora_name": name})).await?;
        let gone = status == StatusCode::NOT_FOUND
            || (status == StatusCode::BAD_REQUEST && {
                let t = text.to_ascii_lowercase();
                t.contains("not found") || t.contains("cannot be found")
            });
        if status.is_success() || gone {
            return Ok(());
        }
        Err(error(
            format!(
                "unloading the adapter `{name}` failed: {}",
                http_error_text(&self.url("unload_lora_adapter"), status, &text)
            ),
            false,
        ))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url)
    }

    /// One chat completion of `model` (its served name) under the decoding settings, with the
    /// line's tools.
    pub async fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> Result<Completion, ProviderError> {
        let request =
            ChatRequest { max_tokens: Some(decoding.max_tokens), ..ChatRequest::asking(model, prompt, decoding) };
        let body = serde_json::to_value(&request).unwrap_or_default();
        let (status, text) = self.post("chat/completions", &body).await?;
        let url = self.url("chat/completions");
        if !status.is_success() {
            return Err(http_error(&url, status, &text));
        }
        let response: ChatResponse = serde_json::from_str(&text).map_err(|e| {
            error(
                format!(
                    "the inference server at {url} answered what is not a chat completion ({e}): {}",
                    bounded(&text)
                ),
                true,
            )
        })?;
        let choice = response.choices.into_iter().next().ok_or_else(|| {
            error(format!("the inference server at {url} answered a chat completion without choices"), true)
        })?;
        Ok(Completion::from(choice))
    }
}

/// A server's error answer as a provider error (a 5xx may pass on another try).
fn http_error(url: &str, status: StatusCode, body: &str) -> ProviderError {
    error(http_error_text(url, status, body), status.is_server_error())
}

fn http_error_text(url: &str, status: StatusCode, body: &str) -> String {
    let hint = match status.as_u16() {
        401 | 403 => " (check the key in the variable `[command] inference_api_key_env` names)",
        404 => {
            " (does the server have vLLM's runtime LoRA endpoints? vLLM needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and \
             --enable-lora)"
        }
        _ => "",
    };
    format!("the inference server at {url} answered HTTP {status}{hint}: {}", bounded(body))
}

/// At most `BODY_QUOTED` characters of a body, on one line.
fn bounded(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(BODY_QUOTED).collect();
    if one_line.chars().count() > BODY_QUOTED {
        out.push('…');
    }
    out
}

/// A transport error's description without the URL reqwest adds (the caller names it).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let source = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
    format!("{text}{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_go_by_a_stable_name_and_others_by_theirs() {
        let base = "local/ngram";
        let a = served_name("/runs/s/abc/attempt-1", base);
        assert_eq!(a, served_name("/runs/s/abc/attempt-1", base));
        assert!(a.starts_with("ftsweep-") && a.len() == "ftsweep-".len() + 16, "{a}");
        assert_ne!(a, served_name("/runs/s/abc/attempt-1/checkpoint-4", base));
        assert_eq!(served_name("local/ngram", base), "local/ngram");
        assert!(is_adapter("/x", base) && !is_adapter("Qwen/Qwen2.5-0.5B-Instruct", base));
        // A base model served by its directory is asked for by that path, never loaded.
        assert!(!is_adapter("/models/tiny", "/models/tiny"));
        assert_eq!(served_name("/models/tiny", "/models/tiny"), "/models/tiny");
    }

    #[test]
    fn error_bodies_are_bounded_and_keys_hidden() {
        let long = "x".repeat(1000);
        let text = http_error_text("http://127.0.0.1:1/v1/x", StatusCode::BAD_GATEWAY, &long);
        assert!(text.len() < 420, "{text}");
        assert!(text.contains("HTTP 502") && text.contains("http://127.0.0.1:1/v1/x"));
        assert_eq!(format!("{:?}", Key::new("sk-secret".into())), "***");
        assert!(InferenceClient::new("http://example.com/v1", Some(Key::new("k".into()))).is_err());
        assert!(InferenceClient::new("http://example.com/v1", None).is_ok());
    }
}
