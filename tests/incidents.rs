//! Incidents and approvals through the admin API of a running rollgate: a
//! Sev-1 ends a rollout that has not begun yet (and only an operator starts
//! the next), Sev-2s posted before the first phase hold its start, and an
//! operator's promote still needs the next phase's approval.

mod harness;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use harness::api::{reason_of, state_of};
use harness::config::{seed_phases, FLAGS};
use harness::upstream::healthy;
use harness::Rg;

/// Not started by itself; a short tick, so a started rollout enters its
/// first phase at once; hour-long holds, so it stays there.
async fn rig(auto_start: bool) -> Rg {
    let rollout = format!(
        "auto_start = {auto_start}\ntick = \"100ms\"\nwindow = \"1h\"\n{FLAGS}\n{}",
        seed_phases("1h", None)
    );
    Rg::with_apps(healthy("v1", 3.0, 8.0), healthy("v2", 3.0, 8.0), |c| {
        c.with_journeys().rollout(&rollout)
    })
    .await
}

async fn post(rig: &Rg, path: &str, body: Value) -> harness::Resp {
    rig.call_json(Method::POST, path, body).await
}

async fn incident(rig: &Rg, severity: u8, summary: &str) -> Value {
    let body = json!({"severity": severity, "summary": summary});
    let r = post(rig, "/api/v1/incidents", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sev1_before_the_start_ends_the_rollout_and_only_an_operator_starts_the_next() {
    let rig = rig(false).await;
    let s = incident(&rig, 1, "checkout down").await;
    assert_eq!(state_of(&s), "rolled_back", "{s}");
    assert_eq!(s["last_decision"]["trigger"], "sev1_incident");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(0.0));
    // Ticks go by: nothing starts by itself.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(state_of(&rig.status().await), "rolled_back");
    for i in 0..20 {
        assert_eq!(rig.variant_of(&format!("u{i}"), "/search").await, "v1");
    }
    let r = post(&rig, "/api/v1/rollout/start", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert_eq!(
        (state_of(&s), s["phase"].as_str()),
        ("canary", Some("canary-5"))
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sev2s_before_the_start_hold_it_until_the_operator_decides() {
    let rig = rig(false).await;
    incident(&rig, 2, "slow search").await;
    incident(&rig, 2, "odd emails").await;
    let r = post(&rig, "/api/v1/rollout/start", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert_eq!(state_of(&s), "waiting", "{s}");
    assert_eq!(s["last_decision"]["action"], "HOLD");
    assert!(reason_of(&s).starts_with("incidents"), "{}", reason_of(&s));
    // Ticks keep holding.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let s = rig.status().await;
    assert_eq!(
        (state_of(&s), s["weights"]["v2"].as_f64()),
        ("waiting", Some(0.0))
    );
    // Resume is the operator's decision; the next tick starts.
    let r = post(&rig, "/api/v1/rollout/resume", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    rig.wait_for("in canary-5", |s| state_of(s) == "canary")
        .await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_promote_needs_the_next_phases_approval() {
    let rig = rig(true).await;
    rig.wait_for("in canary-5", |s| state_of(s) == "canary")
        .await;
    let r = post(&rig, "/api/v1/rollout/promote", Value::Null).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(
        r.text().contains("canary-25 needs approval by role cfo"),
        "{}",
        r.text()
    );
    let s = rig.status().await;
    assert_eq!(
        (s["phase"].as_str(), s["weights"]["v2"].as_f64()),
        (Some("canary-5"), Some(5.0))
    );
    let r = post(
        &rig,
        "/api/v1/approvals",
        json!({"role": "cfo", "by": "dana"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = post(&rig, "/api/v1/rollout/promote", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert_eq!(
        (s["phase"].as_str(), s["weights"]["v2"].as_f64()),
        (Some("canary-25"), Some(25.0))
    );
    rig.shutdown().await;
}
