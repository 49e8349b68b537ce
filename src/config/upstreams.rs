//! `[upstreams]`: V1 and V2, and how connections to them are made and kept.

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::Deserialize;

use super::values::{defaults, Dur};
use super::{invalid, Invalid};

defaults! {
    const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2)
        => fn default_connect_timeout() -> Dur;
    const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30)
        => fn default_response_timeout() -> Dur;
    const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90)
        => fn default_pool_idle() -> Dur;
    /// As long as the default `timeout`: an answer that pauses mid-body for
    /// as long as a whole answer may take has stopped.
    const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30)
        => fn default_body_idle() -> Dur;
    /// Per worker and upstream. Above the in-flight concurrency a worker sees,
    /// so a burst does not close connections it will need again a moment later:
    /// at 1,024 client connections on one worker a cap of 256 cost ~20 % of
    /// req/s in connect churn (BENCHMARKS.md). Idle ones still expire after
    /// `pool_idle_timeout`.
    const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 1024 => fn default_pool_max_idle() -> usize;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileUpstreams {
    pub v1: String,
    pub v2: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time from the end of the request body (the upstream has the whole
    /// request) to the response headers; the response body may take longer.
    #[serde(default = "default_response_timeout")]
    pub timeout: Dur,
    /// Longest pause in a response body once its head is in.
    #[serde(default = "default_body_idle")]
    pub body_idle_timeout: Dur,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout: Dur,
    /// Idle keep-alive connections kept per worker and upstream.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    /// V2's in-flight cap; requests beyond it are shed with 503. 0 = no cap.
    #[serde(default)]
    pub reserved_capacity: u32,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub uri: Uri,
    pub scheme: Scheme,
    pub authority: Authority,
}

#[derive(Debug, Clone)]
pub struct UpstreamsConfig {
    pub v1: Upstream,
    pub v2: Upstream,
    pub connect_timeout: Duration,
    /// From the end of the request body to the response head.
    pub timeout: Duration,
    /// Longest wait for the next response-body bytes; past it the body is
    /// cut and counted as the variant's `timeout`.
    pub body_idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// V2's in-flight cap (0 = none).
    pub reserved_capacity: u32,
}

pub(super) fn validate(u: FileUpstreams) -> Result<UpstreamsConfig, Invalid> {
    if u.connect_timeout.0.is_zero() {
        return Err(invalid("upstreams.connect_timeout", "must be above zero"));
    }
    if u.timeout.0.is_zero() {
        return Err(invalid("upstreams.timeout", "must be above zero"));
    }
    if u.body_idle_timeout.0.is_zero() {
        return Err(invalid("upstreams.body_idle_timeout", "must be above zero"));
    }
    Ok(UpstreamsConfig {
        v1: upstream("upstreams.v1", &u.v1)?,
        v2: upstream("upstreams.v2", &u.v2)?,
        connect_timeout: u.connect_timeout.0,
        timeout: u.timeout.0,
        body_idle_timeout: u.body_idle_timeout.0,
        pool_idle_timeout: u.pool_idle_timeout.0,
        pool_max_idle_per_host: u.pool_max_idle_per_host,
        reserved_capacity: u.reserved_capacity,
    })
}

fn upstream(key: &str, s: &str) -> Result<Upstream, Invalid> {
    let uri: Uri = s
        .parse()
        .map_err(|e| invalid(key, format!("{s:?} is not a URL: {e}")))?;
    let scheme = uri.scheme().cloned();
    if scheme.as_ref() != Some(&Scheme::HTTP) {
        return Err(invalid(
            key,
            format!("{s:?}: only http:// upstreams are supported"),
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| invalid(key, format!("{s:?} has no host")))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            key,
            format!("{s:?}: an upstream is scheme://host:port, without a path"),
        ));
    }
    Ok(Upstream {
        uri,
        scheme: Scheme::HTTP,
        authority,
    })
}
