//! The upstream connection pools and the mapping of their failures to error
//! kinds.

pub mod pool;

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::config::UpstreamsConfig;
use crate::routing::Variant;
use crate::telemetry::UpstreamErrorKind;
use pool::{Checkout, Pool, PoolConfig, PoolError};

/// One keep-alive pool per upstream, indexed by [`Variant`].
#[derive(Clone)]
pub struct Upstreams {
    pools: [Pool<Incoming>; 2],
    timeout: Duration,
}

impl Upstreams {
    pub fn new(cfg: &UpstreamsConfig) -> Self {
        let pool = PoolConfig::from(cfg);
        Self {
            pools: [
                Pool::new(&cfg.v1.authority, pool),
                Pool::new(&cfg.v2.authority, pool),
            ],
            timeout: cfg.timeout,
        }
    }

    /// Sends the request (origin-form URI, `Host` set) to `variant`'s
    /// upstream; `Err` says why no usable response came back in time. The
    /// checkout goes back to the pool once the response body has been read.
    pub async fn send(
        &self,
        variant: Variant,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Checkout<Incoming>), SendError> {
        let pool = &self.pools[variant as usize];
        match tokio::time::timeout(self.timeout, pool.send(req)).await {
            Err(_) => Err(SendError::Upstream(UpstreamErrorKind::Timeout)),
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

impl From<&UpstreamsConfig> for PoolConfig {
    fn from(cfg: &UpstreamsConfig) -> Self {
        PoolConfig {
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.pool_idle_timeout,
            max_idle: cfg.pool_max_idle_per_host,
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
        PoolError::Http(h) if h.is_user() => SendError::ClientBody,
        PoolError::Http(_) => SendError::Upstream(UpstreamErrorKind::Reset),
    }
}
