//! How long a client may take, so that a slow or stalled one (a "slow loris") cannot hold a
//! connection, or a stopping server, for ever: a request's headers must arrive within
//! `HEADER_TIMEOUT` (an idle keep-alive connection is closed after as long), a body at
//! `BODY_MIN_RATE` on average after an allowance of `BODY_ALLOWANCE`, and a server told to stop
//! waits `SHUTDOWN_GRACE` for the requests in progress.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How long a client may take to send a request's headers, and to start its next request on a
/// kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a body may take beyond what `BODY_MIN_RATE` allows.
pub const BODY_ALLOWANCE: Duration = Duration::from_secs(10);

/// The slowest average rate, in bytes per second, at which a body may arrive.
pub const BODY_MIN_RATE: u64 = 16 * 1024;

/// How long a server told to stop waits for the requests in progress before it cuts them off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// When a body that started at `start` must have brought more than its `received` bytes.
pub fn body_deadline(start: Instant, received: u64) -> Instant {
    start + BODY_ALLOWANCE + Duration::from_secs_f64(received as f64 / BODY_MIN_RATE as f64)
}

/// A request body that fails once it falls behind `body_deadline`, and says so in `timed_out`.
pub struct TimedBody {
    inner: Body,
    start: Instant,
    received: u64,
    sleep: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl TimedBody {
    pub fn new(inner: Body, timed_out: Arc<AtomicBool>) -> TimedBody {
        let start = Instant::now();
        TimedBody {
            inner,
            start,
            received: 0,
            sleep: Box::pin(tokio::time::sleep_until(body_deadline(start, 0))),
            timed_out,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        // What has arrived counts even if the handler was slow to ask for it.
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.sleep.as_mut().reset(body_deadline(this.start, this.received));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending if this.sleep.as_mut().poll(cx).is_ready() => {
                this.timed_out.store(true, Ordering::Relaxed);
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body arrived too slowly");
                Poll::Ready(Some(Err(axum::Error::new(e))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that sends what a producer puts in a bounded channel; an `Err` aborts it.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|piece| piece.map(|r| r.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_s_deadline_grows_with_what_it_brought() {
        let start = Instant::now();
        assert_eq!(body_deadline(start, 0), start + BODY_ALLOWANCE);
        // A client trickling a byte every 0.5 s buys 2 bytes' worth of time per second: it is
        // cut off a little after the allowance.
        assert!(body_deadline(start, 2 * 20) < start + BODY_ALLOWANCE + Duration::from_millis(10));
        // 512 MB at the minimum rate.
        let big = 512 * 1024 * 1024;
        assert_eq!(body_deadline(start, big), start + BODY_ALLOWANCE + Duration::from_secs(big / BODY_MIN_RATE));
    }
}
