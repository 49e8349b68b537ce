//! rollgate: a canary edge proxy.
//!
//! Data path (per request): [`server`] accepts -> [`journeys`] classifies ->
//! [`sticky`] + [`routing`] pick the variant -> [`proxy`] forwards -> [`stats`]
//! records. Control path (per tick): [`stats::IntervalRing`] snapshot ->
//! [`control::gates`] evaluate -> [`control::rollout`] decides -> the
//! [`routing::Router`] swap -> [`control::report`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod journeys;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod stats;
pub mod sticky;

pub use app::App;
pub use config::Config;
pub mod tls;
