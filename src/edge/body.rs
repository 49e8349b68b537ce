//! The proxy's response body: the upstream's streamed body, or a small
//! synthetic one for errors. An enum rather than a boxed trait object so a
//! request costs no extra allocation for its body type.
//!
//! A body that fails after its head (the upstream resets, or sends nothing
//! for `upstreams.body_idle_timeout`) is cut, counted in
//! `rollgate_upstream_errors_total` by kind, and, unless its head already
//! counted as a 5xx, as a broken body of its cell: the error gates count
//! those as server errors (see `CellCounts::server_errors`), so an upstream
//! that answers 200 and then dies is not a healthy one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::request_body::RequestBody;
use super::upstream::pool::Checkout;
use crate::telemetry::{InflightGuard, UpstreamErrorKind};

/// Why a relayed response body was cut.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("upstream response body")]
    Upstream(#[source] hyper::Error),
    #[error("upstream response body: no bytes within upstreams.body_idle_timeout")]
    Stalled,
}

#[expect(
    clippy::large_enum_variant,
    reason = "moved once into hyper per response; boxing the upstream variant would cost every relayed request an allocation"
)]
pub enum ProxyBody {
    /// Streams the upstream body; the guard keeps the request counted as in
    /// flight until the body is done or dropped.
    Upstream {
        inner: Incoming,
        /// The upstream connection, back to its pool once `inner` has ended;
        /// its stall timer watches `inner` meanwhile.
        conn: Option<Checkout<RequestBody>>,
        guard: InflightGuard,
        /// The head was a 5xx, already a server error of its cell: a body
        /// failing after it is not counted a second time.
        head_5xx: bool,
        /// A unit of V2's reserved capacity, held only to be released (by its
        /// `Drop`) with the body.
        _permit: Option<super::capacity::Permit>,
        /// Shadow phase: hands V1's answer to the mirror's comparison.
        tee: Option<super::shadow::Tee>,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub fn upstream(
        inner: Incoming,
        conn: Checkout<RequestBody>,
        head_5xx: bool,
        guard: InflightGuard,
        permit: Option<super::capacity::Permit>,
        tee: Option<super::shadow::Tee>,
    ) -> Self {
        let mut conn = Some(conn);
        if inner.is_end_stream() {
            // HEAD, 204, 304, `content-length: 0`: nothing will be polled.
            release(&mut conn);
        }
        ProxyBody::Upstream {
            inner,
            conn,
            guard,
            head_5xx,
            _permit: permit,
            tee,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream {
                inner,
                conn,
                guard,
                head_5xx,
                tee,
                ..
            } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => {
                        // The upstream died mid-body: the client sees a truncated
                        // response, the controller sees a reset.
                        guard.record_broken_body(UpstreamErrorKind::Reset, *head_5xx);
                        *conn = None;
                        // No comparison against a truncated answer.
                        *tee = None;
                    }
                    Poll::Pending => {
                        if conn.as_mut().is_some_and(|c| c.stall.poll_stalled(cx)) {
                            // Head sent, then silence: cut like a response
                            // that never came, and counted as one.
                            guard.record_broken_body(UpstreamErrorKind::Timeout, *head_5xx);
                            *conn = None;
                            *tee = None;
                            return Poll::Ready(Some(Err(ResponseBodyError::Stalled)));
                        }
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(c) = conn.as_mut() {
                            c.stall.progressed();
                        }
                        if let (Some(t), Some(data)) = (tee.as_mut(), frame.data_ref()) {
                            t.chunk(data);
                        }
                        // With a known length hyper stops polling after the
                        // last chunk instead of reading the end.
                        if inner.is_end_stream() {
                            release(conn);
                            if let Some(t) = tee.as_mut() {
                                t.finish(None);
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        release(conn);
                        if let Some(t) = tee.as_mut() {
                            t.finish(None);
                        }
                    }
                }
                polled.map(|p| p.map(|r| r.map_err(ResponseBodyError::Upstream)))
            }
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

fn release(conn: &mut Option<Checkout<RequestBody>>) {
    if let Some(c) = conn.take() {
        c.release();
    }
}
