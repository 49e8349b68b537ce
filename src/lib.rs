//! rollgate: a canary edge proxy.
//!
//! The map (ARCHITECTURE.md has the picture):
//! - [`config`]: the TOML file, one module per section, checked once at load.
//! - [`routing`]: what both planes share: variants, weights, the [`routing::Router`]
//!   swap, the journey table and the request-path payment tripwire.
//! - [`edge`]: the data plane. A request flows accept ([`edge::server`]) ->
//!   classify journey ([`routing::journeys`]) -> pick variant ([`edge::sticky`] +
//!   the router) -> forward -> record ([`telemetry`]); it imports nothing from
//!   [`control`].
//! - [`telemetry`]: lock-free counters written by the request path, and the
//!   snapshots and windows the controller reads.
//! - [`control`]: the control plane. A tick flows snapshot -> evaluate gates ->
//!   decide -> swap weights -> report.
//! - [`admin`], [`api`], [`cli`]: the operator's HTTP API, its wire types, and
//!   the command line that speaks them.
//! - [`app`] wires it all together; [`demo`] is the self-contained showcase.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod edge;
pub mod routing;
#[doc(hidden)]
pub mod sim;
pub mod telemetry;

pub use app::App;
pub use config::Config;
