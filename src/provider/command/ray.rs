//! The Ray engine: a trainer command as a job of a Ray cluster, through the
//! Jobs REST API of its dashboard (`{address}/api/jobs/`).
//!
//! The job's `submission_id` is the [`Submission`]'s deterministic id, and
//! Ray refuses a second job with an id it knows (Ray 2.60: HTTP 500, "already
//! exists"), so `submit` looks the id up first and a submission whose answer
//! was lost is found, never made twice. The entrypoint is the argv quoted for
//! `/bin/sh` (Ray runs it with `shell=True`); its output is the driver log Ray
//! keeps and serves at `/logs`, which is where failure reasons come from (no
//! `train.log` is written in the output directory). Every answer is read with a
//! size limit; a broken or hostile server is an error naming the address,
//! the request and the status, never a panic.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::provider::ProviderError;

use super::engine::{JobState, LOG_TAIL_LINES, Submission};

/// The largest answer read whole (a job's info, a submission's answer).
const MAX_BODY: usize = 1 << 20;
/// The largest `/logs` answer parsed whole; past it only its last
/// [`LOG_WINDOW`] bytes are kept, which hold the last lines.
const MAX_LOG_BODY: usize = 8 << 20;
/// The tail of a long `/logs` answer that is decoded.
const LOG_WINDOW: usize = 256 << 10;
/// How long a request may take: the job lookups, stops and logs.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A submission waits for Ray to start the job's supervisor actor.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(90);
/// How much of an error answer an error message quotes.
const QUOTE: usize = 300;

/// A Ray cluster's Jobs API, at its dashboard's address.
#[derive(Debug, Clone)]
pub struct RayEngine {
    /// Without a trailing slash, e.g. `http://127.0.0.1:8265`.
    address: String,
    base: url::Url,
    http: reqwest::Client,
    num_gpus: f64,
    num_cpus: f64,
    runtime_env: Option<Map<String, Value>>,
}

/// What `GET /api/jobs/{id}` answers (Ray's `JobDetails`), the fields read.
#[derive(Debug, Deserialize)]
struct JobInfo {
    status: String,
    #[serde(default)]
    message: Option<String>,
}

/// An answer: its status and (bounded) body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl RayEngine {
    pub fn new(settings: &crate::spec::RayEngine) -> Result<RayEngine, ProviderError> {
        let address = settings.address.trim_end_matches('/').to_string();
        let refused = |why: String| ProviderError::Engine {
            message: format!("the Ray address `{address}` {why}"),
            retryable: false,
        };
        let base = url::Url::parse(&address).map_err(|e| refused(format!("is not a URL ({e})")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() || base.cannot_be_a_base() {
            return Err(refused("is not an http(s) URL with a host".into()));
        }
        let runtime_env = match &settings.runtime_env {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => return Err(refused("has a `runtime_env` that is not a table".into())),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(SUBMIT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .user_agent(concat!("ftsweep/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| refused(format!("cannot be reached: cannot build the HTTP client: {e}")))?;
        Ok(RayEngine { address, base, http, num_gpus: settings.num_gpus, num_cpus: settings.num_cpus, runtime_env })
    }

    /// Submits the job unless Ray already has one with this id (a retry after
    /// a lost answer, or a resume): never two jobs for one submission.
    pub async fn submit(&self, submission: &Submission) -> Result<(), ProviderError> {
        if self.find(&submission.id).await?.is_some() {
            return Ok(());
        }
        let body = self.request_body(submission)?;
        let what = "POST /api/jobs/";
        let answer = match self.send(Method::POST, &["api", "jobs", ""], Some(&body), SUBMIT_TIMEOUT, MAX_BODY).await {
            Ok(a) => a,
            // The request may have reached Ray: look the id up before saying it failed.
            Err(e) => return self.confirm(&submission.id, e).await,
        };
        if answer.status.is_success() {
            let v: Value = self.decode(what, &answer)?;
            return match v.get("submission_id").and_then(Value::as_str) {
                Some(id) if id == submission.id => Ok(()),
                other => Err(self.broken(
                    what,
                    &answer,
                    &format!("it names the submission {other:?}, not `{}`", submission.id),
                )),
            };
        }
        let err = self.status_error(what, &answer);
        if answer.status.is_server_error() {
            // Ray 2.60 refuses an id it knows with a 500 ("already exists").
            return self.confirm(&submission.id, err).await;
        }
        Err(err)
    }

    /// The job's state, or `None` when Ray has no job with this id.
    pub async fn find(&self, id: &str) -> Result<Option<JobState>, ProviderError> {
        let what = format!("GET /api/jobs/{id}");
        let answer = self.send(Method::GET, &["api", "jobs", id], None, TIMEOUT, MAX_BODY).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(self.status_error(&what, &answer));
        }
        let info: JobInfo = self.decode(&what, &answer)?;
        let state = match info.status.as_str() {
            "PENDING" => JobState::Pending,
            "RUNNING" => JobState::Running,
            "SUCCEEDED" => JobState::Succeeded,
            "STOPPED" => JobState::Stopped,
            "FAILED" => JobState::Failed { reason: self.failure_reason(id, info.message.as_deref()).await },
            other => return Err(self.broken(&what, &answer, &format!("its status `{other}` is none of Ray's"))),
        };
        Ok(Some(state))
    }

    /// The job's state; a job Ray does not know (its head was restarted
    /// without its jobs) is a failed job that says so.
    pub async fn state(&self, id: &str) -> Result<JobState, ProviderError> {
        Ok(self.find(id).await?.unwrap_or_else(|| JobState::Failed {
            reason: format!("the Ray cluster at {} has no job `{id}` (was its head restarted?)", self.address),
        }))
    }

    /// Asks Ray to stop the job (SIGTERM to the entrypoint, SIGKILL after
    /// Ray's grace period). A job that has ended, or that Ray does not know,
    /// has nothing to stop.
    pub async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        let what = format!("POST /api/jobs/{id}/stop");
        let answer = self.send(Method::POST, &["api", "jobs", id, "stop"], None, TIMEOUT, MAX_BODY).await?;
        if answer.status == StatusCode::NOT_FOUND {
            tracing::warn!(job = id, address = %self.address, "Ray has no such job to stop");
            return Ok(());
        }
        if !answer.status.is_success() {
            return Err(self.status_error(&what, &answer));
        }
        let v: Value = self.decode(&what, &answer)?;
        match v.get("stopped") {
            Some(Value::Bool(_)) => Ok(()),
            _ => Err(self.broken(&what, &answer, "it has no boolean `stopped`")),
        }
    }

    /// The last [`LOG_TAIL_LINES`] lines of the job's log.
    pub async fn log_tail(&self, id: &str) -> Result<String, ProviderError> {
        let what = format!("GET /api/jobs/{id}/logs");
        let answer = self.send(Method::GET, &["api", "jobs", id, "logs"], None, TIMEOUT, MAX_LOG_BODY).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(ProviderError::Engine {
                message: format!("the Ray cluster at {} has no job `{id}`", self.address),
                retryable: false,
            });
        }
        if !answer.status.is_success() {
            return Err(self.status_error(&what, &answer));
        }
        let logs =
            decode_logs(&answer.body).ok_or_else(|| self.broken(&what, &answer, "it is not `{\"logs\": \"...\"}`"))?;
        Ok(last_lines(&logs, LOG_TAIL_LINES))
    }

    /// What `POST /api/jobs/` is sent: Ray's `JobSubmitRequest`.
    fn request_body(&self, s: &Submission) -> Result<Value, ProviderError> {
        let entrypoint = shlex::try_join(s.argv.iter().map(String::as_str)).map_err(|e| ProviderError::Engine {
            message: format!("the trainer command cannot be quoted for the Ray job's shell: {e}"),
            retryable: false,
        })?;
        let mut runtime_env = self.runtime_env.clone().unwrap_or_default();
        if !s.env.is_empty() {
            let vars = runtime_env.entry("env_vars").or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(vars) = vars else {
                return Err(ProviderError::Engine {
                    message: "the engine's `runtime_env.env_vars` is not a table".into(),
                    retryable: false,
                });
            };
            for (k, v) in &s.env {
                vars.insert(k.clone(), Value::String(v.clone()));
            }
        }
        let mut body = json!({
            "submission_id": s.id,
            "entrypoint": entrypoint,
            "entrypoint_num_cpus": self.num_cpus,
            "entrypoint_num_gpus": self.num_gpus,
            "metadata": s.metadata,
        });
        if !runtime_env.is_empty() {
            body["runtime_env"] = Value::Object(runtime_env);
        }
        Ok(body)
    }

    /// After a submission that failed or whose answer was lost: whether Ray
    /// has the job after all (then it was submitted), else the error.
    async fn confirm(&self, id: &str, err: ProviderError) -> Result<(), ProviderError> {
        match self.find(id).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(err),
        }
    }

    /// A failed job's reason: Ray's message (its first line: Ray appends the
    /// log to it) and the log's last lines.
    async fn failure_reason(&self, id: &str, message: Option<&str>) -> String {
        let message = message.unwrap_or("").trim();
        let (head, rest) = message.split_once('\n').unwrap_or((message, ""));
        // Ray 2.60: "Job entrypoint command failed with exit code 3, last available logs (truncated to
        // 20,000 chars):" and the log; the log's last lines follow here, read whole.
        let head = head.split(", last available logs").next().unwrap_or(head);
        let head = clip(head.trim().trim_end_matches(':'), QUOTE);
        let head = if head.is_empty() { "the Ray job failed".to_string() } else { head };
        let tail = match self.log_tail(id).await {
            Ok(tail) => tail,
            Err(e) => {
                tracing::warn!(job = id, error = %e, "cannot read the Ray job's log");
                last_lines(rest, LOG_TAIL_LINES)
            }
        };
        if tail.trim().is_empty() { head } else { format!("{head}; the log's last lines:\n{tail}") }
    }

    /// One request; a transport failure is a retryable error. The body is
    /// read up to `limit` bytes; a longer one keeps its first `limit` bytes
    /// when `limit` is [`MAX_BODY`] (an error follows), else its last
    /// [`LOG_WINDOW`] bytes.
    async fn send(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Answer, ProviderError> {
        let mut url = self.base.clone();
        url.set_fragment(None);
        url.set_query(None);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        let what = format!("{method} {}", url.path());
        let mut req = self.http.request(method, url).timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |e: reqwest::Error| ProviderError::Engine {
            message: format!(
                "the Ray cluster at {} cannot be reached ({what}): {}",
                self.address,
                transport_reason(&e)
            ),
            retryable: true,
        };
        let mut response = req.send().await.map_err(transport)?;
        let status = response.status();
        let mut bytes = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            total += chunk.len();
            bytes.extend_from_slice(&chunk);
            if total > limit {
                if limit == MAX_BODY {
                    return Err(ProviderError::Engine {
                        message: format!(
                            "the Ray cluster at {} answered {what} with {status} and a body over {} KiB, which is not Ray's",
                            self.address,
                            limit >> 10
                        ),
                        retryable: false,
                    });
                }
                if bytes.len() > 2 * LOG_WINDOW {
                    bytes.drain(..bytes.len() - LOG_WINDOW);
                }
            }
        }
        if total > limit {
            // A long log: the decoder takes the window's complete lines.
            let start = bytes.len().saturating_sub(LOG_WINDOW);
            bytes.drain(..start);
            bytes.splice(0..0, *TRUNCATED);
        }
        Ok(Answer { status, body: bytes })
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, what: &str, answer: &Answer) -> Result<T, ProviderError> {
        serde_json::from_slice(&answer.body)
            .map_err(|e| self.broken(what, answer, &format!("it is not the JSON Ray answers ({e})")))
    }

    /// An answer with a success status that is not what Ray answers.
    fn broken(&self, what: &str, answer: &Answer, why: &str) -> ProviderError {
        ProviderError::Engine {
            message: format!(
                "the Ray cluster at {} answered {what} with {} but {why}: `{}`",
                self.address,
                answer.status,
                quote(&answer.body)
            ),
            retryable: false,
        }
    }

    /// An answer with an error status; a 5xx (or a 408, 429) may pass.
    fn status_error(&self, what: &str, answer: &Answer) -> ProviderError {
        let s = answer.status;
        ProviderError::Engine {
            message: format!("the Ray cluster at {} answered {what} with {s}: {}", self.address, quote(&answer.body)),
            retryable: s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// Marks a `/logs` body that was cut to its last bytes (not JSON's).
const TRUNCATED: &[u8; 1] = b"\x00";

/// The `logs` string of a `/logs` answer; for an answer cut to its tail
/// ([`TRUNCATED`]), the complete lines of the window: the JSON string's
/// content from just after an escaped newline to its closing quote.
fn decode_logs(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Logs {
        logs: String,
    }
    let Some(window) = body.strip_prefix(TRUNCATED) else {
        return serde_json::from_slice::<Logs>(body).ok().map(|l| l.logs);
    };
    let end = window.iter().rposition(|&b| b == b'"')?;
    let content = &window[..end];
    // The first `\n` escape whose backslash is not itself escaped: a run of
    // backslashes of odd length before `n`, the run starting inside the window.
    let mut i = 0;
    let start = loop {
        let pos = i + content[i..].windows(2).position(|w| w == b"\\n")?;
        let run = content[..=pos].iter().rev().take_while(|&&b| b == b'\\').count();
        if run % 2 == 1 && run <= pos {
            break pos + 2;
        }
        i = pos + 1;
    };
    let text = std::str::from_utf8(&content[start..]).ok()?;
    serde_json::from_str::<String>(&format!("\"{text}\"")).ok()
}

/// The last `n` lines of `text`, without its final newline.
fn last_lines(text: &str, n: usize) -> String {
    let text = text.trim_end_matches(['\n', '\r']);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last non-empty lines of an error body (Ray's are Python tracebacks,
/// whose last line says what went wrong), clipped.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if last.is_empty() { "(an empty body)".into() } else { clip(last, QUOTE) }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connect() {
        return "cannot connect".into();
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn engine(runtime_env: Option<Value>) -> RayEngine {
        let settings = crate::spec::RayEngine {
            address: "http://127.0.0.1:8265/".into(),
            num_gpus: 1.0,
            num_cpus: 2.5,
            runtime_env,
        };
        RayEngine::new(&settings).unwrap()
    }

    #[test]
    fn the_request_quotes_the_argv_and_merges_the_env_into_the_runtime_env() {
        let s = Submission {
            id: "ftsweep-0123456789ab-r1-1".into(),
            argv: vec!["/opt/my trainer".into(), "--lr".into(), "1e-4".into(), "it's".into(), "{x};$HOME".into()],
            output_dir: "/runs/a".into(),
            env: BTreeMap::from([("CUDA_VISIBLE_DEVICES".into(), "1".into())]),
            metadata: BTreeMap::from([("ftsweep_run".into(), "r1".into())]),
        };
        let env = json!({"env_vars": {"HF_HOME": "/cache", "CUDA_VISIBLE_DEVICES": "0"}, "pip": ["trl"]});
        let body = engine(Some(env)).request_body(&s).unwrap();
        let entrypoint = body["entrypoint"].as_str().unwrap();
        assert_eq!(shlex::split(entrypoint).unwrap(), s.argv);
        assert_eq!(body["submission_id"], "ftsweep-0123456789ab-r1-1");
        assert_eq!(body["entrypoint_num_cpus"], 2.5);
        assert_eq!(body["entrypoint_num_gpus"], 1.0);
        assert_eq!(body["metadata"], json!({"ftsweep_run": "r1"}));
        assert_eq!(
            body["runtime_env"],
            json!({"env_vars": {"HF_HOME": "/cache", "CUDA_VISIBLE_DEVICES": "1"}, "pip": ["trl"]})
        );
        // Without a runtime_env nor an env, none is sent.
        let bare = Submission { env: BTreeMap::new(), ..s.clone() };
        assert!(engine(None).request_body(&bare).unwrap().get("runtime_env").is_none());
        // A NUL byte cannot be quoted: an error, not a mangled command.
        let nul = Submission { argv: vec!["a\0b".into()], ..s };
        assert!(engine(None).request_body(&nul).is_err());
    }

    #[test]
    fn a_bad_address_or_runtime_env_is_refused() {
        for address in ["127.0.0.1:8265", "ftp://host", "not a url", "http://"] {
            let settings =
                crate::spec::RayEngine { address: address.into(), num_gpus: 0.0, num_cpus: 1.0, runtime_env: None };
            assert!(RayEngine::new(&settings).is_err(), "{address}");
        }
        let settings = crate::spec::RayEngine {
            address: "http://127.0.0.1:8265".into(),
            num_gpus: 0.0,
            num_cpus: 1.0,
            runtime_env: Some(json!([1])),
        };
        assert!(RayEngine::new(&settings).is_err());
    }

    #[test]
    fn a_whole_logs_answer_decodes() {
        assert_eq!(decode_logs(br#"{"logs": "a\nb\n"}"#).as_deref(), Some("a\nb\n"));
        assert_eq!(decode_logs(b"<html>").as_deref(), None);
        assert_eq!(decode_logs(br#"{"logs": 3}"#).as_deref(), None);
    }

    #[test]
    fn a_cut_logs_answer_keeps_its_complete_lines() {
        // The window starts mid-line, and mid-escape (`\\` then `n`: a backslash and an n, not a newline).
        let mut body = TRUNCATED.to_vec();
        body.extend_from_slice(br#"ial line\\n still partial\nline \"one\" \u00e9\nline two\\\nthree\n"}"#);
        assert_eq!(decode_logs(&body).as_deref(), Some("line \"one\" é\nline two\\\nthree\n"));
        // A run of backslashes cut by the window's start is skipped.
        let mut body = TRUNCATED.to_vec();
        body.extend_from_slice(br#"\n\\n\nlast\n"}"#);
        assert_eq!(decode_logs(&body).as_deref(), Some("last\n"));
        let mut body = TRUNCATED.to_vec();
        body.extend_from_slice(b"no newline at all\"}");
        assert_eq!(decode_logs(&body), None);
    }

    #[test]
    fn last_lines_and_quotes() {
        assert_eq!(last_lines("a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("", 2), "");
        let traceback = b"Traceback (most recent call last):\n  File \"x\"\nValueError: Job with submission_id t1 already exists.\n\n";
        assert_eq!(quote(traceback), "ValueError: Job with submission_id t1 already exists.");
        assert_eq!(quote(b""), "(an empty body)");
        assert_eq!(quote(&[b'x'; 1000]).chars().count(), QUOTE + 1);
    }
}
