//! The upstream connection pools and the mapping of their failures to error
//! kinds.

pub mod pool;

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::request_body::{RequestBody, RequestBodyError};
use crate::config::UpstreamsConfig;
use crate::routing::Variant;
use crate::telemetry::UpstreamErrorKind;
use pool::{Checkout, Pool, PoolConfig, PoolError};

/// One keep-alive pool per upstream, indexed by [`Variant`].
#[derive(Clone)]
pub struct Upstreams {
    pools: [Pool<RequestBody>; 2],
    timeout: Duration,
    /// `server.client_body_timeout`, from the request head.
    client_body_timeout: Duration,
}

/// A response head and the connection it came on.
pub type Sent = (Response<Incoming>, Checkout<RequestBody>);

impl Upstreams {
    pub fn new(cfg: &UpstreamsConfig, client_body_timeout: Duration) -> Self {
        let pool = PoolConfig::from(cfg);
        Self {
            pools: [
                Pool::new(&cfg.v1.authority, pool),
                Pool::new(&cfg.v2.authority, pool),
            ],
            timeout: cfg.timeout,
            client_body_timeout,
        }
    }

    /// `server.client_body_timeout`.
    pub fn client_body_timeout(&self) -> Duration {
        self.client_body_timeout
    }

    /// Sends the request (origin-form URI, `Host` set) to `variant`'s
    /// upstream; `Err` says why no usable response came back in time. The
    /// checkout goes back to the pool once the response body has been read.
    ///
    /// `upstreams.timeout` runs from the moment the upstream has the whole
    /// request: while the client is still sending, only the client's own
    /// deadline runs. At that deadline the body is either stuck on the client
    /// (a 408, the client's) or on an upstream that stopped reading it (a
    /// timeout, the upstream's).
    pub async fn send(
        &self,
        variant: Variant,
        req: Request<RequestBody>,
    ) -> Result<Sent, SendError> {
        let pool = &self.pools[variant as usize];
        let Some(clock) = req.body().clock().cloned() else {
            // No body: the upstream has the whole request with its head.
            return settle(tokio::time::timeout(self.timeout, pool.send(req)).await);
        };
        let send = pool.send(req);
        tokio::pin!(send);
        let body_deadline = clock.head() + self.client_body_timeout;
        tokio::select! {
            biased;
            r = &mut send => {
                // Answered before (or as) the body ended.
                clock.answered();
                return settle(Ok(r));
            }
            () = clock.ended() => {}
            () = tokio::time::sleep_until(body_deadline.into()) => {
                return Err(if clock.awaiting_client() {
                    SendError::ClientTimeout
                } else {
                    SendError::Upstream(UpstreamErrorKind::Timeout)
                });
            }
        }
        let from = clock.sample_start();
        let r = tokio::time::timeout_at((from + self.timeout).into(), &mut send).await;
        clock.answered();
        settle(r)
    }
}

fn settle(
    r: Result<Result<Sent, PoolError>, tokio::time::error::Elapsed>,
) -> Result<Sent, SendError> {
    match r {
        Err(_) => Err(SendError::Upstream(UpstreamErrorKind::Timeout)),
        Ok(Ok(sent)) => Ok(sent),
        Ok(Err(e)) => Err(classify(&e)),
    }
}

impl From<&UpstreamsConfig> for PoolConfig {
    fn from(cfg: &UpstreamsConfig) -> Self {
        PoolConfig {
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.pool_idle_timeout,
            max_idle: cfg.pool_max_idle_per_host,
            body_idle_timeout: cfg.body_idle_timeout,
        }
    }
}

/// Why a forwarded request got no usable response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The upstream failed: counted against its variant, answered 502/504.
    Upstream(UpstreamErrorKind),
    /// The client's own request body broke while being forwarded (a bad
    /// chunk, a body cut short): answered 400 and never counted against the
    /// upstream, or any client could push a canary's error gates to RED.
    ClientBody,
    /// The client's body was not complete within `server.client_body_timeout`:
    /// answered 408, the client's fault like [`SendError::ClientBody`].
    ClientTimeout,
}

fn classify(e: &PoolError) -> SendError {
    match e {
        PoolError::ConnectTimeout | PoolError::Connect(_) | PoolError::Handshake(_) => {
            SendError::Upstream(UpstreamErrorKind::Connect)
        }
        PoolError::Http(h) if h.is_parse() || h.is_parse_status() => {
            SendError::Upstream(UpstreamErrorKind::Protocol)
        }
        // A "user" error of the upstream connection: the body we were
        // streaming from our own client failed.
        PoolError::Http(h) if h.is_user() => {
            match std::error::Error::source(h).and_then(|s| s.downcast_ref::<RequestBodyError>()) {
                Some(RequestBodyError::Timeout) => SendError::ClientTimeout,
                Some(RequestBodyError::Client(_)) | None => SendError::ClientBody,
            }
        }
        PoolError::Http(_) => SendError::Upstream(UpstreamErrorKind::Reset),
    }
}
