//! Shared by the operator-facing tests (status page, CLI, Prometheus files,
//! logs): a rollgate started in-process on kernel-chosen loopback ports in
//! front of the demo V1/V2 apps, with optional synthetic users.
//!
//! The config is the demo's compressed rollout idea (`src/demo/mod.rs`):
//! ticks of 250 ms, a 3 s window and holds of a few seconds, so a phase
//! change happens within seconds.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rollgate::demo::population::{self, Counters};
use rollgate::demo::upstream::{self, Latency, Profile};
use rollgate::{App, Config};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "ops-test-token";

/// Phases of a short rollout that moves on every `hold`. The latency limits
/// are loose on purpose: these tests share two cores with a debug build and a
/// browser, and they are about the operator's view, not about latency gates.
pub fn short_rollout(hold: &str) -> String {
    format!(
        r#"
[rollout]
tick = "250ms"
window = "4s"
min_samples = 5
error_rate_max = 0.01
error_rate_margin = 0.005
p95_rollback_ms = 1500
red_rollback_after = "30s"
full_sustain = "60s"

[rollout.flags]
SHADOW_PASS_24H = 1
A2_V26_COMPLIANT = 1
EVIDENCE_BUNDLE = 1

[[rollout.phases]]
name = "canary-5"
weight = 5
hold = "{hold}"
p95_ms = 250
headers = {{ x-payment-mode = "test" }}

[[rollout.phases]]
name = "canary-25"
weight = 25
hold = "{hold}"
p95_ms = 250

[[rollout.phases]]
name = "canary-50"
weight = 50
hold = "{hold}"
p95_ms = 200

[[rollout.phases]]
name = "full"
weight = 100
p95_ms = 200

# Holds of seconds need a cooldown of seconds (the default is a minute).
[gates]
cooldown = "1s"
"#
    )
}

/// A rollout that only moves when told to: not auto-started, holds of an
/// hour, and automatic triggers out of reach of a loaded test machine.
pub fn manual_rollout() -> String {
    r#"
[rollout]
tick = "250ms"
window = "3s"
min_samples = 5
auto_start = false
p95_rollback_ms = 5000
red_rollback_after = "1h"

[rollout.flags]
SHADOW_PASS_24H = 1
A2_V26_COMPLIANT = 1
EVIDENCE_BUNDLE = 1

[[rollout.phases]]
name = "canary-5"
weight = 5
hold = "1h"
p95_ms = 1000

[[rollout.phases]]
name = "canary-25"
weight = 25
hold = "1h"
p95_ms = 1000
approval = "cfo"

[[rollout.phases]]
name = "full"
weight = 100
p95_ms = 1000
"#
    .to_string()
}

/// The whole config: server, the two demo apps, the demo's journeys, `rollout`.
pub fn config_text(v1: u16, v2: u16, state_dir: &str, server_extra: &str, rollout: &str) -> String {
    let journeys = rollgate::demo::JOURNEYS;
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
state_dir = "{state_dir}"
{server_extra}

[upstreams]
v1 = "http://127.0.0.1:{v1}"
v2 = "http://127.0.0.1:{v2}"
timeout = "2s"

[routing]
sticky_header = "x-user-id"
salt = "ops-test"

{journeys}{rollout}
"#
    )
}

/// The two demo apps, healthy, V2 a little faster than V1.
pub struct Apps {
    pub v1: u16,
    pub v2: u16,
    stop: watch::Sender<bool>,
}

impl Apps {
    pub async fn start() -> Apps {
        let (stop, rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let l1 = TcpListener::bind("127.0.0.1:0").await.expect("bind v1");
        let l2 = TcpListener::bind("127.0.0.1:0").await.expect("bind v2");
        let (v1, v2) = (
            l1.local_addr().expect("addr").port(),
            l2.local_addr().expect("addr").port(),
        );
        let p1 = Profile::healthy(
            "v1",
            Latency {
                median_ms: 30.0,
                p95_ms: 70.0,
            },
        );
        let p2 = Profile::healthy(
            "v2",
            Latency {
                median_ms: 25.0,
                p95_ms: 60.0,
            },
        );
        tokio::spawn(upstream::serve(l1, p1, stopped(rx.clone())));
        tokio::spawn(upstream::serve(l2, p2, stopped(rx)));
        Apps { v1, v2, stop }
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A running rollgate with its apps and (optionally) users.
pub struct Running {
    pub app: Option<App>,
    pub admin: String,
    pub proxy: String,
    pub state_dir: PathBuf,
    users: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    _apps: Apps,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts rollgate with `rollout` (see [`short_rollout`], [`manual_rollout`]).
    pub async fn start(rollout: &str) -> Running {
        Self::start_with("", rollout).await
    }

    pub async fn start_with(server_extra: &str, rollout: &str) -> Running {
        let apps = Apps::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let state_dir = dir.path().join("state");
        let text = config_text(
            apps.v1,
            apps.v2,
            &state_dir.display().to_string(),
            server_extra,
            rollout,
        );
        let cfg = Config::parse(&text, "test config").expect("valid test config");
        let app = App::start(cfg).await.expect("rollgate starts");
        Running {
            admin: format!("http://{}", app.admin_addr),
            proxy: format!("http://{}", app.proxy_addr),
            app: Some(app),
            state_dir,
            users: None,
            _apps: apps,
            _dir: dir,
        }
    }

    /// Synthetic users walking the demo journeys through the proxy.
    pub fn traffic(&mut self, users: usize, rate: f64) {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(population::run(
            self.proxy.clone(),
            users,
            rate,
            stop.clone(),
            Arc::new(Counters::default()),
        ));
        self.users = Some((stop, task));
    }

    pub async fn stop_traffic(&mut self) {
        if let Some((stop, task)) = self.users.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = task.await;
        }
    }

    pub async fn shutdown(mut self) {
        self.stop_traffic().await;
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

/// Sends `method url` with `headers` and an empty body; returns (status, body).
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).expect("valid request"))
        .await
        .expect("the server answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// GET `url` and return (status, body).
pub async fn get(url: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = client
        .get(url.parse().expect("valid url"))
        .await
        .expect("GET answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
