//! The data plane: everything a request touches between accept and the last
//! byte of its response.
//!
//! accept ([`server`], [`tls`]) -> classify journey ([`crate::routing::journeys`])
//! -> pick variant ([`sticky`] + [`crate::routing::Router`]) -> forward
//! ([`proxy`], [`headers`] and [`forwarded`], [`upstream`], [`body`]) -> record
//! ([`crate::telemetry`]). Beacons ([`beacon`]) are answered here and never
//! forwarded; shadow mirrors ([`shadow`]) are queued off the request path.
//!
//! Nothing here imports the control plane: the two meet only in
//! [`crate::routing`] (weights, the request-path tripwire) and in the telemetry
//! cells.

#![deny(clippy::disallowed_types)]

pub(crate) mod access_log;
pub(crate) mod admission;
pub mod beacon;
pub(crate) mod body;
pub(crate) mod capacity;
pub(crate) mod conn_limits;
pub(crate) mod forwarded;
pub(crate) mod headers;
pub mod log_limit;
pub(crate) mod proxy;
pub(crate) mod region;
pub(crate) mod request_body;
pub mod server;
pub(crate) mod shadow;
pub mod sticky;
pub(crate) mod tls;
pub(crate) mod upgrade;
pub(crate) mod upstream;

pub(crate) use proxy::Proxy;

use std::sync::Arc;

use crate::config::Config;
use crate::telemetry::Telemetry;

/// What the request path and the admin API read, swapped whole on reload.
pub struct Live {
    pub config: Arc<Config>,
    pub telemetry: Arc<Telemetry>,
    /// One per proxy worker, so each worker keeps its own upstream pool.
    pub(crate) proxies: Vec<Arc<Proxy>>,
}
