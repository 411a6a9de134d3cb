//! The HTTP client of the OpenAI protocol (reqwest, rustls): authentication,
//! retries with capped exponential backoff and jitter, `retry-after`
//! headers, pacing by the `x-ratelimit-*` headers, request counting, and
//! readable errors with the request id. The key never appears in any output.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::spec::Auth;
use crate::wire::openai::ErrorBody;

/// A credential: shown as `***` by `Debug`, never written anywhere.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The key itself, for another client's authentication header (the inference server's).
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to reach and talk to a server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.openai.com/v1`, without a trailing slash.
    pub base_url: String,
    pub api_key: Secret,
    /// The environment variable the key came from, named in 401 errors.
    pub api_key_env: String,
    pub auth: Auth,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of a retryable failure (the first try is not counted).
    pub max_retries: u32,
    /// The longest backoff between retries.
    pub max_backoff: Duration,
    /// The shortest backoff (doubles per retry).
    pub min_backoff: Duration,
}

impl ClientConfig {
    pub fn new(base_url: &str, api_key: Secret, api_key_env: &str, auth: Auth) -> ClientConfig {
        ClientConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            api_key_env: api_key_env.to_string(),
            auth,
            organization: None,
            project: None,
            timeout: Duration::from_secs(600),
            max_retries: 6,
            max_backoff: Duration::from_secs(8),
            min_backoff: Duration::from_millis(500),
        }
    }
}

/// What went wrong with a request, after retries.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ApiError {
    /// The server answered with an error status.
    #[error("{}", describe_http(*status, code.as_deref(), message, request_id.as_deref(), key_env))]
    Http {
        status: u16,
        code: Option<String>,
        message: String,
        request_id: Option<String>,
        key_env: String,
        /// The server's `retry-after`, if it gave one.
        retry_after: Option<Duration>,
    },
    /// No answer: the connection failed or timed out. `sent` says whether
    /// the request may have reached the server.
    #[error("no answer from the server ({reason})")]
    Transport { reason: String, sent: bool },
    /// The answer was not what the protocol says.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// Nothing was sent: the settings would send the key in clear, or a
    /// value that cannot be an HTTP header.
    #[error("refusing to send any request: {0}")]
    Refused(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether a request that creates something may have taken effect
    /// although it failed: then it must be reconciled, never blindly sent again.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            ApiError::Transport { sent, .. } => *sent,
            ApiError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 409,
            ApiError::Decode(_) => true,
            ApiError::Refused(_) => false,
        }
    }

    /// How long a launch refused for now should wait in the queue: a daily
    /// cap or a full concurrent-job limit (a 429 about jobs), by the server's
    /// `retry-after` or `default`. `None` for other errors.
    pub fn queue_for(&self, default: Duration) -> Option<Duration> {
        let ApiError::Http { status: 429, code, message, retry_after, .. } = self else { return None };
        let jobs_limit =
            code.as_deref() == Some("daily_rate_limit_exceeded") || message.to_ascii_lowercase().contains("concurrent");
        jobs_limit.then(|| retry_after.unwrap_or(default))
    }

    /// Whether the failure is the provider's (another attempt may succeed).
    pub fn is_provider_side(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::Decode(_) => true,
            ApiError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 409,
            ApiError::Refused(_) => false,
        }
    }
}

fn describe_http(status: u16, code: Option<&str>, message: &str, request_id: Option<&str>, key_env: &str) -> String {
    let rid = request_id.map(|r| format!(", request {r}")).unwrap_or_default();
    let head = format!("HTTP {status}{}{rid}", code.map(|c| format!(" {c}")).unwrap_or_default());
    let advice = match (status, code) {
        (401, _) => format!(
            "authentication failed: check the key in the environment variable `{key_env}` (and the organization and project)"
        ),
        (403, Some("training_not_available")) => "this organization can no longer create fine-tuning jobs: OpenAI is \
             closing self-serve fine-tuning (all remaining customers lose job creation on 2027-01-06); point \
             [openai] base_url at another server that speaks the protocol (e.g. `ftsweep serve`)"
            .to_string(),
        (429, Some("insufficient_quota")) => {
            "the account's quota is exhausted: add credit or raise the limit; ftsweep does not retry this".to_string()
        }
        (429, Some("daily_rate_limit_exceeded")) => {
            "the daily limit of fine-tuning jobs for this model is reached: the run waits for the next day".to_string()
        }
        (404, _) => "not found (a fine-tuned model can take a few minutes to load after its job succeeds)".to_string(),
        _ => String::new(),
    };
    let message = if message.is_empty() { "" } else { message };
    match (advice.is_empty(), message.is_empty()) {
        (true, _) => format!("{head}: {message}"),
        (false, true) => format!("{head}: {advice}"),
        (false, false) => format!("{head}: {advice} (server said: {message})"),
    }
}

/// Requests sent, by kind, for benchmarks and tests.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub uploads: AtomicU64,
    pub creates: AtomicU64,
    pub lists: AtomicU64,
    pub polls: AtomicU64,
    pub events: AtomicU64,
    pub checkpoints: AtomicU64,
    pub completions: AtomicU64,
    pub other: AtomicU64,
    /// Retries after a failure, of any kind.
    pub retries: AtomicU64,
    /// 429 answers received.
    pub rate_limited: AtomicU64,
}

impl RequestCounts {
    /// The counts as name → number.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BTreeMap::from([
            ("uploads", get(&self.uploads)),
            ("creates", get(&self.creates)),
            ("lists", get(&self.lists)),
            ("polls", get(&self.polls)),
            ("events", get(&self.events)),
            ("checkpoints", get(&self.checkpoints)),
            ("completions", get(&self.completions)),
            ("other", get(&self.other)),
            ("retries", get(&self.retries)),
            ("rate_limited", get(&self.rate_limited)),
        ])
    }

    pub fn total(&self) -> u64 {
        let s = self.snapshot();
        s.iter().filter(|(k, _)| !matches!(**k, "retries" | "rate_limited")).map(|(_, v)| v).sum()
    }
}

/// What kind of request, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Upload,
    Create,
    List,
    Poll,
    Events,
    Checkpoints,
    Completion,
    Other,
}

/// The longest wait taken from an `x-ratelimit-reset-requests` header. A
/// window said to reset later than this (or at a time that does not parse)
/// is not paced by: requests go out, and if the server means it, its 429s
/// (with `retry-after`, itself capped at 120 s) and the backoff pace instead.
/// OpenAI's request windows reset within a minute.
pub const MAX_RATELIMIT_WAIT: Duration = Duration::from_secs(60);

/// The longest any pacing wait can be: a `retry-after` (120 s at most).
const MAX_PACE_WAIT: Duration = Duration::from_secs(120);

/// Pacing from the `x-ratelimit-*` headers: how many requests remain in the
/// window and when it resets, decremented locally as requests go out.
#[derive(Debug, Default)]
struct Pace {
    remaining: Option<u64>,
    reset_at: Option<Instant>,
    /// No request before this (after a 429 with retry-after, say).
    not_before: Option<Instant>,
}

/// The client. Cheap to share behind an `Arc`.
pub struct Client {
    http: reqwest::Client,
    cfg: ClientConfig,
    pace: Mutex<Pace>,
    pub counts: RequestCounts,
}

/// A request body.
pub enum Body {
    None,
    Json(serde_json::Value),
    /// A multipart upload: (field, file name, bytes), and text fields.
    Multipart {
        file_name: String,
        bytes: Vec<u8>,
        fields: Vec<(String, String)>,
    },
}

/// An answer with its status and headers ([`Client::exchange`]).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

/// Whether a failed request may be sent again without asking first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads and idempotent writes: retry every retryable failure.
    Always,
    /// Creates: retry only failures that prove nothing happened (a 429, or
    /// a connection that never reached the server).
    OnlyIfNotSent,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, ApiError> {
        // The callers check these with a better error; this is the last line
        // before the key goes out.
        crate::spec::check_base_url(&cfg.base_url).map_err(|m| ApiError::Refused(format!("base URL: {m}")))?;
        let headers = [
            ("the organization", cfg.organization.as_deref()),
            ("the project", cfg.project.as_deref()),
            ("the API key", Some(cfg.api_key.0.as_str())),
        ];
        for (what, value) in headers {
            if let Some(problem) = value.and_then(crate::spec::header_value_problem) {
                return Err(ApiError::Refused(format!("{what} cannot be sent: {problem}")));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("ftsweep/", env!("CARGO_PKG_VERSION")))
            // A redirect is an answer to read (Together's upload flow answers
            // 302), never a place to send the key.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Transport { reason: format!("cannot build the HTTP client: {e}"), sent: false })?;
        Ok(Client { http, cfg, pace: Mutex::default(), counts: RequestCounts::default() })
    }

    pub fn base_url(&self) -> &str {
        &self.cfg.base_url
    }

    /// The URL of an endpoint: the base URL (its query kept, its fragment dropped) with `path`'s
    /// segments appended, each percent-encoded (an id with `/`, `?` or `#` stays one segment).
    fn endpoint(&self, path: &[&str]) -> Result<url::Url, ApiError> {
        let mut url = url::Url::parse(&self.cfg.base_url).map_err(|e| ApiError::Refused(format!("base URL: {e}")))?;
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| ApiError::Refused(format!("base URL `{}` cannot have a path", self.cfg.base_url)))?
            .pop_if_empty()
            .extend(path);
        Ok(url)
    }

    /// Sends a request and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(String, String)],
        body: Body,
        kind: Kind,
        retry: Retry,
    ) -> Result<T, ApiError> {
        let bytes = self.send(method, path, query, &body, kind, retry).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let text = String::from_utf8_lossy(&bytes);
            ApiError::Decode(format!("{e} in `{}`", text.chars().take(200).collect::<String>()))
        })
    }

    /// A JSON body from a serializable value.
    pub fn body<T: Serialize>(value: &T) -> Body {
        Body::Json(serde_json::to_value(value).unwrap_or(serde_json::Value::Null))
    }

    /// `PUT`s `bytes` to a presigned URL a server handed out (Together's
    /// upload flow): without any credential (the URL is its own), only to
    /// https or a loopback http address, retried like an idempotent write.
    pub async fn put_presigned(&self, location: &str, bytes: Vec<u8>) -> Result<(), ApiError> {
        crate::spec::check_base_url(location)
            .map_err(|m| ApiError::Refused(format!("the upload URL the server gave: {m}")))?;
        let url = url::Url::parse(location)
            .map_err(|e| ApiError::Refused(format!("the upload URL the server gave does not parse: {e}")))?;
        let mut attempt = 0u32;
        loop {
            self.count(Kind::Upload);
            let sent = self.http.put(url.clone()).body(bytes.clone()).send().await.map_err(transport_error);
            let err = match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    let headers = r.headers().clone();
                    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    http_error(status, &headers, &body, &self.cfg.api_key_env)
                }
                Err(e) => e,
            };
            if !is_retryable(&err) || attempt >= self.cfg.max_retries {
                return Err(err);
            }
            attempt += 1;
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// Sends a request like [`Client::send`], but an answer whose status
    /// `accept` takes (a 302 of an upload flow, a 409 naming an identical
    /// file) is returned with its headers instead of being an error.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        &self,
        method: Method,
        path: &[&str],
        query: &[(String, String)],
        body: &Body,
        kind: Kind,
        retry: Retry,
        accept: fn(StatusCode) -> bool,
    ) -> Result<Answer, ApiError> {
        let url = self.endpoint(path)?;
        self.send_url(method, &url, query, body, kind, retry, accept).await
    }

    /// Sends a request to the endpoint `path` (its segments, e.g. `["files", id]`) with retries
    /// and returns the answer's bytes.
    pub async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(String, String)],
        body: &Body,
        kind: Kind,
        retry: Retry,
    ) -> Result<Vec<u8>, ApiError> {
        let url = self.endpoint(path)?;
        let answer = self.send_url(method, &url, query, body, kind, retry, |_| false).await?;
        Ok(answer.bytes)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_url(
        &self,
        method: Method,
        url: &url::Url,
        query: &[(String, String)],
        body: &Body,
        kind: Kind,
        retry: Retry,
        accept: fn(StatusCode) -> bool,
    ) -> Result<Answer, ApiError> {
        let url = url.clone();
        let mut attempt = 0u32;
        loop {
            self.wait_for_pace().await;
            self.count(kind);
            let result = self.send_once(method.clone(), &url, query, body).await;
            let (err, wait) = match result {
                Ok((status, headers, bytes)) if status.is_success() || accept(status) => {
                    self.update_pace(&headers, None);
                    return Ok(Answer { status, headers, bytes });
                }
                Ok((status, headers, bytes)) => {
                    let err = http_error(status, &headers, &bytes, &self.cfg.api_key_env);
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.counts.rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    let wait = retry_after(&headers);
                    self.update_pace(&headers, if status == StatusCode::TOO_MANY_REQUESTS { wait } else { None });
                    (err, wait)
                }
                Err(err) => (err, None),
            };
            let retryable = is_retryable(&err)
                && match retry {
                    Retry::Always => true,
                    Retry::OnlyIfNotSent => !err.may_have_taken_effect(),
                };
            if !retryable || attempt >= self.cfg.max_retries {
                return Err(err);
            }
            attempt += 1;
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
            let delay = wait.unwrap_or_else(|| self.backoff(attempt));
            tracing::debug!(path = url.path(), attempt, ?delay, error = %err, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn count(&self, kind: Kind) {
        let c = &self.counts;
        let counter = match kind {
            Kind::Upload => &c.uploads,
            Kind::Create => &c.creates,
            Kind::List => &c.lists,
            Kind::Poll => &c.polls,
            Kind::Events => &c.events,
            Kind::Checkpoints => &c.checkpoints,
            Kind::Completion => &c.completions,
            Kind::Other => &c.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Capped exponential backoff with up to 25 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.min_backoff.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1) as i32);
        let capped = base.min(self.cfg.max_backoff.as_secs_f64());
        let jitter = 1.0 - 0.25 * rand::rng().random::<f64>();
        Duration::from_secs_f64(capped * jitter)
    }

    async fn wait_for_pace(&self) {
        let until = {
            let mut p = self.pace.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if p.reset_at.is_some_and(|r| r <= now) {
                p.remaining = None;
                p.reset_at = None;
            }
            let mut until = p.not_before.filter(|t| *t > now);
            match p.remaining {
                Some(0) => until = until.max(p.reset_at),
                Some(n) => p.remaining = Some(n - 1),
                None => {}
            }
            until
        };
        if let Some(t) = until {
            let wait = t.saturating_duration_since(Instant::now()).min(MAX_PACE_WAIT);
            tokio::time::sleep(wait).await;
        }
    }

    fn update_pace(&self, headers: &HeaderMap, not_before: Option<Duration>) {
        let mut p = self.pace.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // A window without a usable reset (absurd, unparseable, or beyond
        // the cap) is not paced by: its count says nothing about when to go.
        let reset = headers.get("x-ratelimit-reset-requests").map(|v| {
            v.to_str()
                .ok()
                .and_then(parse_go_duration)
                .filter(|d| *d <= MAX_RATELIMIT_WAIT)
                .and_then(|d| now.checked_add(d))
        });
        if let Some(remaining) = header_u64(headers, "x-ratelimit-remaining-requests")
            && reset != Some(None)
        {
            // Keep the smaller of what the server says and what we have
            // already spent since: answers arrive out of order. A count from
            // a window that has reset since is stale: take the server's.
            if p.reset_at.is_some_and(|r| r <= now) {
                p.remaining = None;
            }
            p.remaining = Some(p.remaining.map_or(remaining, |r| r.min(remaining)));
            if let Some(Some(at)) = reset {
                p.reset_at = Some(at);
            }
        }
        if let Some(d) = not_before {
            p.not_before = now.checked_add(d.min(MAX_PACE_WAIT));
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &url::Url,
        query: &[(String, String)],
        body: &Body,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        let response = self.request(method, url, query, body)?.send().await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport_error)?;
        Ok((status, headers, bytes.to_vec()))
    }

    /// A request with its authentication, headers, query and body.
    fn request(
        &self,
        method: Method,
        url: &url::Url,
        query: &[(String, String)],
        body: &Body,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let mut req = self.http.request(method, url.clone()).query(query);
        req = match &self.cfg.auth {
            Auth::Bearer => req.bearer_auth(&self.cfg.api_key.0),
            Auth::Azure { api_version } => {
                req.header("api-key", &self.cfg.api_key.0).query(&[("api-version", api_version.as_str())])
            }
            Auth::ApiKey => req.header("api-key", &self.cfg.api_key.0),
        };
        if let Some(org) = &self.cfg.organization {
            req = req.header("OpenAI-Organization", org);
        }
        if let Some(project) = &self.cfg.project {
            req = req.header("OpenAI-Project", project);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Multipart { file_name, bytes, fields } => {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(file_name.clone())
                    .mime_str("application/jsonl")
                    .map_err(|e| ApiError::Transport { reason: e.to_string(), sent: false })?;
                let mut form = reqwest::multipart::Form::new().part("file", part);
                for (k, v) in fields {
                    form = form.text(k.clone(), v.clone());
                }
                req.multipart(form)
            }
        };
        Ok(req)
    }
}

/// A reqwest failure, stripped of the URL (it may carry an Azure query)
/// and classified by whether the request may have reached the server.
fn transport_error(e: reqwest::Error) -> ApiError {
    let sent = !e.is_connect() && !e.is_builder();
    let reason = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        let mut msg = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = if msg.is_empty() { s.to_string() } else { format!("{msg}: {s}") };
            source = s.source();
        }
        let head = e.without_url().to_string();
        if msg.is_empty() { head } else { format!("{head}: {msg}") }
    };
    ApiError::Transport { reason, sent }
}

fn http_error(status: StatusCode, headers: &HeaderMap, bytes: &[u8], key_env: &str) -> ApiError {
    let body: Option<ErrorBody> = serde_json::from_slice(bytes).ok();
    let (code, message) = match body {
        Some(b) => (b.error.code, b.error.message),
        None => (None, String::from_utf8_lossy(bytes).chars().take(300).collect()),
    };
    ApiError::Http {
        status: status.as_u16(),
        code,
        message,
        request_id: request_id(headers),
        key_env: key_env.to_string(),
        retry_after: retry_after(headers),
    }
}

/// The request id a server put on its answer: OpenAI's and Together's
/// `x-request-id`, Azure OpenAI's `apim-request-id`, Azure Resource Manager's
/// `x-ms-request-id`. Only a short printable value is kept (it goes into error
/// messages).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-request-id", "apim-request-id", "x-ms-request-id"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .find(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
}

/// The SDK's policy: connection errors, timeouts, 408, 409, 429 and 5xx,
/// but never an exhausted quota or a daily cap (waiting minutes will not help).
fn is_retryable(e: &ApiError) -> bool {
    match e {
        ApiError::Transport { .. } => true,
        ApiError::Decode(_) | ApiError::Refused(_) => false,
        ApiError::Http { status, code, .. } => {
            let hopeless = matches!(code.as_deref(), Some("insufficient_quota" | "daily_rate_limit_exceeded"));
            !hopeless && (*status == 408 || *status == 409 || *status == 429 || *status >= 500)
        }
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `retry-after-ms`, else `retry-after` (seconds), if between 0 and 120 s.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let ms = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    let secs = || headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    let d = ms.map(|m| m / 1000.0).or_else(secs)?;
    (d.is_finite() && (0.0..=120.0).contains(&d)).then(|| Duration::from_secs_f64(d))
}

/// Parses a Go-style duration as the rate-limit headers give it: `1s`,
/// `6m0s`, `12ms`, `1h2m3.5s`. `None` for anything else, including a
/// duration too long to represent.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn absurd_go_durations_are_none_not_a_panic() {
        assert_eq!(parse_go_duration("99999999999999999999h"), None);
        assert_eq!(parse_go_duration(&format!("{}s", "9".repeat(400))), None);
        assert_eq!(parse_go_duration("10000000000000000000s"), Some(Duration::from_secs(10_000_000_000_000_000_000)));
        assert_eq!(parse_go_duration("."), None);
        assert_eq!(parse_go_duration("-1s"), None);
    }

    fn client(base_url: &str) -> Result<Client, ApiError> {
        Client::new(ClientConfig::new(base_url, Secret::new("sk-x".into()), "K", Auth::Bearer))
    }

    #[test]
    fn a_request_url_is_the_base_url_with_encoded_segments_and_its_query_kept() {
        let url = |base: &str, auth: Auth, path: &[&str], query: &[(&str, &str)]| {
            let mut cfg = ClientConfig::new(base, Secret::new("sk-x".into()), "K", auth);
            cfg.base_url = base.to_string(); // with the trailing slash `new` trims
            let c = Client::new(cfg).unwrap();
            let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let req = c.request(Method::GET, &c.endpoint(path).unwrap(), &query, &Body::None).unwrap();
            req.build().unwrap().url().to_string()
        };
        let bearer = || Auth::Bearer;
        let jobs = ["fine_tuning", "jobs"];
        assert_eq!(url("http://127.0.0.1:1/v1", bearer(), &jobs, &[]), "http://127.0.0.1:1/v1/fine_tuning/jobs");
        assert_eq!(url("http://127.0.0.1:1/v1/", bearer(), &jobs, &[]), "http://127.0.0.1:1/v1/fine_tuning/jobs");
        assert_eq!(url("http://127.0.0.1:1", bearer(), &["files"], &[]), "http://127.0.0.1:1/files");
        // A gateway's base URL with a query: the path goes before it, the request's query after.
        assert_eq!(
            url("https://gw.example.com/openai/v1?tenant=a#x", bearer(), &jobs, &[("limit", "10")]),
            "https://gw.example.com/openai/v1/fine_tuning/jobs?tenant=a&limit=10"
        );
        let azure = Auth::Azure { api_version: "2025-04-01-preview".into() };
        assert_eq!(
            url("https://r.openai.azure.com/openai", azure, &jobs, &[]),
            "https://r.openai.azure.com/openai/fine_tuning/jobs?api-version=2025-04-01-preview"
        );
        // A server's id is one segment, whatever it holds.
        assert_eq!(
            url("http://127.0.0.1:1/v1", bearer(), &["files", "a/../b?c=1#d", "content"], &[]),
            "http://127.0.0.1:1/v1/files/a%2F..%2Fb%3Fc=1%23d/content"
        );
    }

    /// The pacing state after one answer with these headers.
    fn paced_by(headers: &[(&'static str, &str)]) -> Pace {
        let c = client("http://127.0.0.1:1/v1").unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        c.update_pace(&h, None);
        c.pace.into_inner().unwrap()
    }

    #[test]
    fn hostile_rate_limit_headers_neither_panic_nor_stall() {
        for reset in ["99999999999999999999h", "10000000000000000000s", "1000000h", "61s", "soon"] {
            let p = paced_by(&[("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", reset)]);
            assert_eq!((p.remaining, p.reset_at), (None, None), "{reset}: not paced by");
        }
        let p = paced_by(&[("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "2s")]);
        assert_eq!(p.remaining, Some(0));
        let wait = p.reset_at.unwrap().saturating_duration_since(Instant::now());
        assert!(wait <= Duration::from_secs(2) && wait > Duration::ZERO, "{wait:?}");
        let p = paced_by(&[("x-ratelimit-remaining-requests", "99999999999999999999999")]);
        assert_eq!(p.remaining, None);
    }

    #[test]
    fn a_pace_wait_is_capped() {
        let c = client("http://127.0.0.1:1/v1").unwrap();
        c.update_pace(&HeaderMap::new(), Some(Duration::from_secs(u64::MAX)));
        let until = c.pace.lock().unwrap().not_before.unwrap();
        assert!(until <= Instant::now() + MAX_PACE_WAIT);
    }

    #[test]
    fn the_client_refuses_what_it_must_not_send() {
        let e = client("http://127.0.0.1@192.0.2.2:8000/v1").err().unwrap();
        assert!(e.to_string().contains("user-info"), "{e}");
        let mut cfg = ClientConfig::new("http://127.0.0.1:1/v1", Secret::new("sk-x\n".into()), "K", Auth::Bearer);
        let e = Client::new(cfg.clone()).err().unwrap();
        assert!(e.to_string().contains("the API key cannot be sent"), "{e}");
        cfg.api_key = Secret::new("sk-x".into());
        cfg.project = Some("p\r\nX: y".into());
        let e = Client::new(cfg).err().unwrap();
        assert!(e.to_string().contains("the project cannot be sent"), "{e}");
    }

    #[test]
    fn retry_policy_follows_the_sdk_but_never_retries_hopeless_429s() {
        let http = |status, code: Option<&str>| ApiError::Http {
            status,
            code: code.map(str::to_string),
            message: String::new(),
            request_id: None,
            key_env: "K".into(),
            retry_after: None,
        };
        assert!(is_retryable(&http(429, Some("rate_limit_exceeded"))));
        assert!(is_retryable(&http(503, None)));
        assert!(is_retryable(&http(409, None)));
        assert!(!is_retryable(&http(429, Some("insufficient_quota"))));
        assert!(!is_retryable(&http(429, Some("daily_rate_limit_exceeded"))));
        assert!(!is_retryable(&http(400, None)));
        assert!(!is_retryable(&http(401, None)));
        // A create that got a 500 may exist: it is reconciled, not resent.
        assert!(http(500, None).may_have_taken_effect());
        assert!(!http(429, None).may_have_taken_effect());
        assert!(!ApiError::Transport { reason: "x".into(), sent: false }.may_have_taken_effect());
        assert!(ApiError::Transport { reason: "x".into(), sent: true }.may_have_taken_effect());
    }

    #[test]
    fn errors_explain_themselves_with_the_request_id() {
        let e = ApiError::Http {
            status: 401,
            code: Some("invalid_api_key".into()),
            message: "Incorrect API key provided".into(),
            request_id: Some("req_123".into()),
            key_env: "MY_KEY".into(),
            retry_after: None,
        };
        let text = e.to_string();
        assert!(text.contains("req_123") && text.contains("`MY_KEY`"), "{text}");
        let e = ApiError::Http {
            status: 403,
            code: Some("training_not_available".into()),
            message: String::new(),
            request_id: None,
            key_env: "K".into(),
            retry_after: None,
        };
        assert!(e.to_string().contains("2027-01-06"));
    }

    #[test]
    fn the_secret_does_not_print() {
        let cfg = ClientConfig::new("http://127.0.0.1:1/v1", Secret::new("sk-very-secret".into()), "K", Auth::Bearer);
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
    }

    #[test]
    fn retry_after_prefers_milliseconds_and_ignores_nonsense() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", "9999".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
