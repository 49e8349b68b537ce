//! The one harness of the integration tests: rollgate in this process
//! ([`Rg`]) and as the real binary ([`process`]), upstreams with settable
//! behaviour ([`upstream`]), config text over `tests/fixtures/*.toml`
//! ([`config`]), HTTP/1.1, h2c, raw-TCP and TLS clients ([`client`]), a
//! `/metrics` reader ([`metrics`]), and the routing rule to check the proxy
//! against ([`routing`]).
//!
//! Every server binds `127.0.0.1:0`; the binary, which needs addresses in
//! its file, gets ports the kernel picked ([`config::Ports`]). Deadlines only
//! turn a hang into a failure, they never measure speed.

// Each test binary compiles this module for itself and uses only its own
// part of it; the rest (and the unused re-exports below) would be reported
// as dead code once per binary.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod beacons;
pub mod client;
pub mod command_center;
pub mod config;
pub mod edge_http;
pub mod inproc;
pub mod metrics;
pub mod process;
pub mod routing;
pub mod slow_body;
pub mod upstream;

use std::future::Future;
use std::time::{Duration, Instant};

pub use api::Api;
pub use client::{raw_exchange, raw_status, HttpClient, Lenient, Resp};
pub use config::{Conf, Ports};
pub use inproc::Rg;
pub use metrics::{metric, series};
pub use routing::{expected_variant, keys_on, SALT};
pub use upstream::{DemoApp, Mode, Upstream};

/// The admin token of every test config.
pub const TOKEN: &str = "secret";
/// Upper bound on any wait; only turns a hang into a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Retries `attempt` every `every` until it is `Ok`; after [`DEADLINE`]
/// fails with `what` and the last `Err` (what was seen instead).
pub async fn eventually<T, F, Fut>(what: &str, every: Duration, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(what, DEADLINE, every, attempt).await
}

/// [`eventually`] with another bound than [`DEADLINE`].
pub async fn eventually_within<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(seen) if start.elapsed() > within => {
                panic!("not {what} within {within:?}; {seen}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Every line of `audit.jsonl` in a state dir, each required to be a
/// complete JSON object (no torn tail, even after a SIGKILL).
pub fn audit_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit.jsonl exists");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "audit.jsonl ends with a torn line"
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit.jsonl line {}: {e}: {l}", i + 1))
        })
        .collect()
}
