//! rollgate: a canary edge proxy.
//!
//! Data path (per request): [`server`] accepts -> [`journeys`] classifies ->
//! [`sticky`] + [`routing`] pick the variant -> [`proxy`] forwards -> [`stats`]
//! records. Control path (per tick): [`stats::IntervalRing`] snapshot ->
//! [`control::gates`] evaluate -> [`control::rollout`] decides -> the
//! [`routing::Router`] swap -> [`control::report`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod edge;
pub mod routing;
pub mod telemetry;

pub use app::App;
pub use config::Config;
// Old paths, kept while the restructure lands.
pub use edge as proxy;
pub(crate) use edge::tls;
pub use edge::{server, sticky};
pub use routing::journeys;
pub use telemetry as stats;
pub(crate) use telemetry::prometheus as metrics;
