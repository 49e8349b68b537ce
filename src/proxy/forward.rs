//! The pooled upstream client and the mapping of its failures to error kinds.

use std::error::Error as _;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamsConfig;
use crate::stats::UpstreamErrorKind;

/// One keep-alive pool for both upstreams (the pool is keyed by authority).
#[derive(Clone)]
pub struct Upstreams {
    client: Client<HttpConnector, Incoming>,
    timeout: Duration,
}

impl Upstreams {
    pub fn new(cfg: &UpstreamsConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self {
            client,
            timeout: cfg.timeout,
        }
    }

    /// Sends the request; `Err` says why no usable response came back in time.
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(SendError::Upstream(UpstreamErrorKind::Timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
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

fn classify(e: &hyper_util::client::legacy::Error) -> SendError {
    if e.is_connect() {
        return SendError::Upstream(UpstreamErrorKind::Connect);
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return SendError::Upstream(UpstreamErrorKind::Protocol);
            }
            // A "user" error of the client connection: the body we were
            // streaming from our own client failed.
            if h.is_user() {
                return SendError::ClientBody;
            }
        }
        source = s.source();
    }
    SendError::Upstream(UpstreamErrorKind::Reset)
}
