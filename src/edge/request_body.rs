//! The client's request body on its way upstream, and the moment it ended.
//!
//! A latency sample of an upstream runs from the moment the upstream has the
//! whole request to its response head: a client that trickles its body in
//! over seconds must not turn those seconds into the canary's latency (or,
//! past `upstreams.timeout`, into a 504 of the canary). [`RequestBody`] hands
//! the client's body to the upstream connection and notes in a [`BodyClock`]
//! when its last byte was handed over; the upstream's response timeout and
//! the latency sample both start there. An upstream that answers before the
//! body has ended (an early 401 or 413) is measured from the request head.
//!
//! `[server] client_body_timeout` bounds the whole body, counted from the
//! request head: a body not complete by then is cut and answered `408`, a
//! client's fault, never the upstream's. As one deadline covers the whole
//! body, it is also the longest pause allowed between two reads.
//!
//! Cost: a request without a body (every GET) gets no clock and costs nothing
//! here. A request with a body costs one small `Arc<BodyClock>`, shared
//! between the handler and the upstream connection's task (which owns the
//! body while writing it); hyper already allocates its body channel for such
//! a request, so this adds one allocation where there were several, and none
//! on the body-less path the hot-path benches measure.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

/// Why the client's request body did not reach the upstream whole.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Not complete within `server.client_body_timeout`.
    #[error("request body not complete within server.client_body_timeout")]
    Timeout,
    /// Broken framing, or the client went away mid-body.
    #[error("request body")]
    Client(#[source] hyper::Error),
}

/// The client's body, as the upstream connection reads it.
pub struct RequestBody {
    inner: Incoming,
    /// `None` for a request without a body.
    clock: Option<Arc<BodyClock>>,
    /// Request head + `client_body_timeout`; checked at each read so that a
    /// trickle is cut even after the upstream answered early (then nobody
    /// else watches the body).
    deadline: Instant,
}

impl RequestBody {
    /// `head`: when the request head was read; `limit`: `client_body_timeout`.
    pub fn new(inner: Incoming, head: Instant, limit: Duration) -> Self {
        let clock = (!inner.is_end_stream()).then(|| Arc::new(BodyClock::new(head)));
        Self {
            inner,
            clock,
            deadline: head + limit,
        }
    }

    /// The clock of a request with a body.
    pub fn clock(&self) -> Option<&Arc<BodyClock>> {
        self.clock.as_ref()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(clock) = &this.clock else {
            return polled.map_err(RequestBodyError::Client);
        };
        match polled {
            Poll::Pending => {
                clock.awaiting_client.store(true, Ordering::Relaxed);
                Poll::Pending
            }
            Poll::Ready(None) => {
                clock.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                clock.awaiting_client.store(false, Ordering::Relaxed);
                if Instant::now() > this.deadline {
                    return Poll::Ready(Some(Err(RequestBodyError::Timeout)));
                }
                // With a known length hyper stops polling after the last
                // chunk instead of reading the end.
                if this.inner.is_end_stream() {
                    clock.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// When a request's body was complete, shared by the handler (which waits
/// for it and measures from it) and the body (which sets it).
pub struct BodyClock {
    /// The request head: where the sample starts when the body never ended
    /// before the answer.
    head: Instant,
    /// [`PENDING`], [`ANSWERED_FIRST`], or microseconds from `head` to the
    /// end of the body, plus one. Set once: whichever of the body's end and
    /// the upstream's answer comes first wins.
    state: AtomicU64,
    /// The body's last read of the client found nothing: the body is waiting
    /// for the client, not for the upstream to take more.
    awaiting_client: AtomicBool,
    done: Notify,
}

const PENDING: u64 = 0;
const ANSWERED_FIRST: u64 = u64::MAX;

impl BodyClock {
    fn new(head: Instant) -> Self {
        Self {
            head,
            state: AtomicU64::new(PENDING),
            awaiting_client: AtomicBool::new(false),
            done: Notify::new(),
        }
    }

    pub fn head(&self) -> Instant {
        self.head
    }

    /// The last byte was handed to the upstream connection.
    fn finish(&self) {
        let us = (self.head.elapsed().as_micros() as u64).saturating_add(1);
        let us = us.min(ANSWERED_FIRST - 1);
        if self
            .state
            .compare_exchange(PENDING, us, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // A stored permit if nobody waits yet: `ended` cannot miss it.
            self.done.notify_one();
        }
    }

    /// The upstream's response head arrived; a body ending later no longer
    /// moves the start of the sample.
    pub fn answered(&self) {
        let _ = self.state.compare_exchange(
            PENDING,
            ANSWERED_FIRST,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Resolves once the body has ended.
    pub async fn ended(&self) {
        if self.ended_at().is_none() {
            self.done.notified().await;
        }
    }

    /// When the body ended, if it ended before the answer.
    pub fn ended_at(&self) -> Option<Instant> {
        match self.state.load(Ordering::Acquire) {
            PENDING | ANSWERED_FIRST => None,
            us => Some(self.head + Duration::from_micros(us - 1)),
        }
    }

    /// Where the latency sample starts: the end of the body, or the request
    /// head when the upstream answered before the body ended.
    pub fn sample_start(&self) -> Instant {
        self.ended_at().unwrap_or(self.head)
    }

    /// Whether the body is stuck on the client (and not on the upstream).
    pub fn awaiting_client(&self) -> bool {
        self.awaiting_client.load(Ordering::Relaxed)
    }
}

/// Where a request's latency sample starts, as the handler sees it.
pub struct Timing {
    head: Instant,
    clock: Option<Arc<BodyClock>>,
}

impl Timing {
    pub fn new(head: Instant) -> Self {
        Self { head, clock: None }
    }

    /// Wraps the client's body for the upstream, keeping its clock.
    pub fn wrap(&mut self, body: Incoming, limit: Duration) -> RequestBody {
        let body = RequestBody::new(body, self.head, limit);
        self.clock = body.clock().cloned();
        body
    }

    /// From the sample's start to now (called when the answer is in).
    pub fn latency(&self) -> Duration {
        self.clock
            .as_ref()
            .map_or(self.head, |c| c.sample_start())
            .elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_starts_at_the_end_of_the_body() {
        let head = Instant::now() - Duration::from_secs(3);
        let c = BodyClock::new(head);
        assert_eq!(c.sample_start(), head);
        c.finish();
        let ended = c.ended_at().expect("ended");
        assert!(ended >= head + Duration::from_secs(3));
        // The answer after the body does not move it.
        c.answered();
        assert_eq!(c.sample_start(), ended);
    }

    #[test]
    fn an_answer_before_the_end_of_the_body_is_measured_from_the_head() {
        let head = Instant::now() - Duration::from_secs(3);
        let c = BodyClock::new(head);
        c.answered();
        c.finish();
        assert_eq!(c.ended_at(), None);
        assert_eq!(c.sample_start(), head);
    }

    #[tokio::test]
    async fn ended_does_not_miss_an_end_that_came_first() {
        let c = BodyClock::new(Instant::now());
        c.finish();
        tokio::time::timeout(Duration::from_secs(5), c.ended())
            .await
            .expect("ended resolves");
    }
}
