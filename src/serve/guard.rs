//! What every request goes through: the API key check, the optional requests-per-minute limit
//! with OpenAI's rate-limit headers, the body's deadline (a 408 when it arrives too slowly), an
//! `x-request-id`, and error bodies in the protocol's shape even for errors the framework makes
//! (unknown method, body too large).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::{ApiError, INVALID};
use super::limits::{BODY_ALLOWANCE, BODY_MIN_RATE, TimedBody};
use super::{App, random_hex};

const WINDOW: Duration = Duration::from_secs(60);

/// A sliding one-minute window of admitted requests.
pub struct RateLimiter {
    limit: u32,
    admitted: Mutex<VecDeque<Instant>>,
}

/// The limiter's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Admission {
    allowed: bool,
    remaining: u32,
    /// Until the window is empty again.
    reset: Duration,
    /// Until one more request is allowed.
    retry_after: Duration,
}

impl RateLimiter {
    pub fn new(limit: u32) -> RateLimiter {
        RateLimiter { limit, admitted: Mutex::default() }
    }

    /// Counts a request if the window has room (`take`), and tells the window's state.
    fn check(&self, now: Instant, take: bool) -> Admission {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        while admitted.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            admitted.pop_front();
        }
        let allowed = admitted.len() < self.limit as usize;
        if allowed && take {
            admitted.push_back(now);
        }
        let left = |t: Option<&Instant>| t.map_or(Duration::ZERO, |t| WINDOW.saturating_sub(now.duration_since(*t)));
        Admission {
            allowed,
            remaining: self.limit.saturating_sub(admitted.len() as u32),
            reset: left(admitted.back()),
            retry_after: left(admitted.front()),
        }
    }
}

/// Formats a duration like Go's `time.Duration` (`1s`, `6m0s`, `12ms`), to the millisecond.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let seconds =
        if frac == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0')) };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// The key a request presents: `Authorization: Bearer KEY` or Azure's `api-key: KEY`.
fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let azure = headers.get("api-key").and_then(|v| v.to_str().ok());
    bearer.into_iter().chain(azure).map(str::trim)
}

/// Compares in time independent of where the first difference is.
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: authenticate, rate-limit, run the handler, then label the response.
pub async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = format!("req_{}", random_hex(16));
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    // Together's presigned upload URL is called without credentials: its token is the secret.
    let presigned = app.protocol == super::Protocol::Together && super::together::is_presigned_upload(&method, &path);
    let authorized = presigned || presented_keys(request.headers()).any(|k| same_key(k, &app.key));
    let admission = match (&app.limiter, authorized) {
        (Some(limiter), true) => Some(limiter.check(started, true)),
        _ => None,
    };
    let response = match admission {
        _ if !authorized => ApiError::unauthorized().into_response(),
        Some(a) if !a.allowed => too_many_requests(a, app.limiter.as_ref().map_or(0, |l| l.limit)),
        _ => {
            let timed_out = Arc::new(AtomicBool::new(false));
            let request = request.map(|body| Body::new(TimedBody::new(body, timed_out.clone())));
            let response = next.run(request).await;
            if timed_out.load(Ordering::Relaxed) { too_slow() } else { response }
        }
    };
    let mut response = error_body(response).await;
    let h = response.headers_mut();
    insert(h, "x-request-id", request_id.clone());
    insert(h, "openai-processing-ms", started.elapsed().as_millis().to_string());
    if let Some(limiter) = &app.limiter {
        // A request that was not authenticated is not counted: show the window as it is.
        let a = admission.unwrap_or_else(|| limiter.check(started, false));
        insert(h, "x-ratelimit-limit-requests", limiter.limit.to_string());
        insert(h, "x-ratelimit-remaining-requests", a.remaining.to_string());
        insert(h, "x-ratelimit-reset-requests", go_duration(a.reset));
    }
    tracing::info!(%method, path, status = response.status().as_u16(), request_id, "request");
    response
}

/// The 429 answer, with the SDK's retry headers.
fn too_many_requests(a: Admission, limit: u32) -> Response {
    let message = format!(
        "Rate limit reached for requests per min (RPM): Limit {limit}, Used {limit}, Requested 1. \
         Please try again in {}.",
        go_duration(a.retry_after)
    );
    let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", message)
        .with_code("rate_limit_exceeded")
        .into_response();
    let h = response.headers_mut();
    insert(h, "retry-after-ms", a.retry_after.as_millis().to_string());
    insert(h, "retry-after", a.retry_after.as_secs_f64().ceil().to_string());
    response
}

/// The 408 answer to a body that arrived too slowly; the connection is closed after it.
fn too_slow() -> Response {
    let message = format!(
        "The request body arrived too slowly: send it at {} KiB/s at least, after an allowance of {} s.",
        BODY_MIN_RATE / 1024,
        BODY_ALLOWANCE.as_secs()
    );
    let mut response = ApiError::new(StatusCode::REQUEST_TIMEOUT, INVALID, message).into_response();
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

/// Rewrites an error response that is not JSON (made by the framework: unknown method, bad path,
/// body too large) into the protocol's error body, keeping its status and other headers.
async fn error_body(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let message = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("Error").to_string(),
    };
    let kind = if status.is_server_error() { "server_error" } else { INVALID };
    let (new_parts, new_body) = ApiError::new(status, kind, message).into_response().into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.extend(new_parts.headers);
    Response::from_parts(parts, Body::new(new_body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(ms(12)), "12ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_723_250)), "1h2m3.25s");
    }

    #[test]
    fn the_window_admits_the_limit_then_refuses_until_the_oldest_leaves() {
        let l = RateLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(l.check(t0, true).remaining, 1);
        let second = l.check(t0 + Duration::from_secs(10), true);
        assert!(second.allowed && second.remaining == 0);
        let third = l.check(t0 + Duration::from_secs(20), true);
        assert!(!third.allowed);
        assert_eq!(third.retry_after, Duration::from_secs(40));
        assert_eq!(third.reset, Duration::from_secs(50));
        assert!(l.check(t0 + Duration::from_secs(60), true).allowed);
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(same_key("abc", "abc"));
        assert!(!same_key("abc", "abd") && !same_key("abc", "ab"));
    }
}
