//! The optional access log: one `tracing` line per proxied request, target
//! `rollgate::access`, with method, journey, variant, status and latency.
//!
//! Deliberately no path, query, headers, client address or user key: the
//! journey already says what the request was, and anything more could carry
//! personal data into log storage. Off by default; when off the request path
//! pays one bool check (the method is not even cloned). When on, `sample`
//! keeps a share of the lines so a busy edge does not drown its log shipper.
//! It runs after the response is known and outside the lock- and
//! allocation-free telemetry recording, which stays the source of metrics.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::config::Config;
use crate::routing::Variant;

#[derive(Clone, Copy, Debug)]
pub struct AccessLog {
    enabled: bool,
    /// Share of requests logged, in (0, 1].
    sample: f64,
}

impl AccessLog {
    pub fn new(config: &Config) -> Self {
        Self {
            enabled: config.server.access_log,
            sample: config.server.access_log_sample,
        }
    }

    /// The method to keep for the log line, or `None` (and no work) when off.
    #[inline]
    pub fn method(&self, m: &Method) -> Option<Method> {
        self.enabled.then(|| m.clone())
    }

    /// Logs one request, if this one is sampled.
    pub fn log(
        &self,
        method: &Method,
        journey: &str,
        variant: Variant,
        status: StatusCode,
        latency: Duration,
    ) {
        if self.sample < 1.0 && rand::random::<f64>() >= self.sample {
            return;
        }
        tracing::info!(
            target: "rollgate::access",
            method = method.as_str(),
            journey,
            variant = variant.label(),
            status = status.as_u16(),
            latency_ms = (latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "request"
        );
    }
}
