//! Seed rules through the real binary: webhook deliveries held to V1's
//! failure share ("no increase above baseline"), with no absolute minimum.
//!
//! No timing thresholds: the assertions are on the decision and the gate
//! that made it; waits only turn a hang into a failure.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Method;
use rollgate::demo::upstream::Profile;

use harness::api::{reason_of, state_of};
use harness::config::FLAGS;
use harness::process::Proc;
use harness::upstream::fast;
use harness::{Conf, DemoApp, HttpClient, Ports};

/// `workers` loops POSTing webhook deliveries, each from a new user, until
/// the returned flag is set.
fn deliveries(proxy: std::net::SocketAddr, workers: usize) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for w in 0..workers {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = HttpClient::http1();
            let url = format!("http://{proxy}/webhooks/deliver");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let user = format!("hook-{w}-{i}");
                client
                    .request(Method::POST, &url, &[("x-user-id", user.as_str())], "{}")
                    .await;
                i += 1;
            }
        });
    }
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_failures_above_v1_roll_back_without_an_absolute_minimum() {
    // V1 fails 0.1 % of deliveries, V2 3 %: 97 % would pass many an absolute
    // minimum, but it is thirty times the baseline.
    let with_errors = |name, error_rate| Profile {
        error_rate,
        ..fast(name)
    };
    let v1 = DemoApp::start(with_errors("v1", 0.001)).await;
    let v2 = DemoApp::start(with_errors("v2", 0.03)).await;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    // The 5xx gate is opened wide so that only the journey's own gate can
    // hold or roll back; the phase is held far longer than the test runs.
    let rollout = format!(
        "auto_start = true\ntick = \"200ms\"\nwindow = \"3s\"\nmin_samples = 100\n\
         error_rate_max = 1.0\nerror_rate_margin = 1.0\nred_rollback_after = \"1s\"\n{FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-50\"\nweight = 50\nhold = \"1h\"\n\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\n"
    );
    let conf = Conf::new(v1.url(), v2.url())
        .ports(ports)
        .upstreams("timeout = \"10s\"")
        .rollout(&rollout)
        .section(
            "[[journeys]]\nname = \"webhooks\"\npath_prefix = \"/webhooks\"\nmethods = [\"POST\"]\n\
             success_vs_v1 = 0.002\n",
        );
    let path = dir.path().join("rollgate.toml");
    conf.write(&path, &dir.path().join("state"));
    let mut rg = Proc::spawn(&path, ports, dir.path().join("stderr"));
    rg.wait_ready().await;
    let stop = deliveries(ports.proxy, 8);

    let s = rg
        .wait_for("the webhook gate rolls V2 back", |s| {
            state_of(s) == "rolled_back"
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let reason = reason_of(&s);
    assert!(
        reason.starts_with("gate_red_sustained: gate success_rate/webhooks RED"),
        "{reason}\n{s:#}"
    );
    assert_eq!(s["weights"]["v2"], 0.0, "{s:#}");
    // The gate report of the rollback names the V1 bound the gate used.
    let reports = dir.path().join("state/reports");
    let named = std::fs::read_dir(&reports)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .any(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            text.contains("success_rate") && text.contains("bound: V1 failures")
        });
    assert!(
        named,
        "no gate report shows the V1 bound of success_rate/webhooks"
    );
    rg.assert_serving("after the rollback").await;
}
