//! The golden re-freeze against a real command center on loopback: FREEZE_LOCK
//! is set only once the baseline came back intact. A failing GET is an
//! anomaly in the status, the audit log and the webhook, and is retried with
//! backoff (also across a SIGKILL and restart of the real binary); a
//! corrupted copy never sets the lock.

mod harness;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use harness::command_center::{CommandCenter, Fault};
use harness::config::{FLAGS, QUIET_ROLLOUT};
use harness::process::Proc;
use harness::{audit_lines, eventually_within, Conf, Ports, Rg, Upstream};

/// Two round trips fail before the third: 5 s + 10 s of backoff, well inside.
const WITHIN: Duration = Duration::from_secs(90);

/// rollgate with a one-phase plan at 100 % and the command center's URL:
/// started and promoted by hand, so the re-freeze begins at once.
async fn promoted(cc: &CommandCenter) -> (Upstream, Upstream, Rg) {
    let (v1, v2) = Upstream::pair().await;
    let rollout = format!(
        "{QUIET_ROLLOUT}command_center_url = \"{}\"\nwebhook_url = \"{}\"\n{FLAGS}[[rollout.phases]]\nname = \"full\"\nweight = 100\n",
        cc.url(),
        cc.hooks_url()
    );
    let rg = Rg::start(&Conf::new(v1.url(), v2.url()).rollout(&rollout)).await;
    for path in ["/api/v1/rollout/start", "/api/v1/rollout/promote"] {
        let r = rg.call(Method::POST, path, "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    (v1, v2, rg)
}

async fn status_until(rg: &Rg, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    eventually_within(what, WITHIN, Duration::from_millis(100), || async move {
        let s = rg.status().await;
        if pred(&s) {
            Ok(s)
        } else {
            Err(format!("last status: {s}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_round_trip_is_an_anomaly_retried_until_verified() {
    let cc = CommandCenter::start(Fault::FailGets(2)).await;
    let (_v1, _v2, rg) = promoted(&cc).await;
    // A first rollout has no drift reference, and says so.
    status_until(&rg, "no drift reference yet", |s| {
        s["evaluation"]["drift"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("no golden baseline"))
    })
    .await;
    let s = status_until(&rg, "retrying after a failed GET", |s| {
        s["refreeze"]["state"] == "retrying"
    })
    .await;
    assert_eq!(s["state"], "promoted");
    assert_eq!(s["frozen"], false, "no lock on an unverified baseline: {s}");
    assert!(
        s["refreeze"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("GET answered HTTP 503")),
        "{s}"
    );
    let s = status_until(&rg, "verified and frozen", |s| s["frozen"] == true).await;
    assert_eq!(s["refreeze"]["state"], "verified", "{s}");
    assert_eq!(s["refreeze"]["attempts"], 3, "{s}");
    assert!(s["refreeze"].get("last_error").is_none(), "cleared: {s}");
    let (posts, gets) = cc.calls();
    assert_eq!((posts, gets), (3, 3), "one POST and one GET per round trip");
    // The webhook heard of each anomaly at once.
    let hooks = cc.hooks();
    let anomalies = hooks.iter().filter(|h| h.contains("ANOMALY")).count();
    assert_eq!(anomalies, 2, "{hooks:?}");
    let r = rg
        .call(Method::PUT, "/api/v1/weights", r#"{"v2": 30}"#)
        .await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text());

    let dir = rg.shutdown().await;
    let baseline = std::fs::read(dir.path().join("baseline.json")).expect("baseline.json");
    assert_eq!(cc.last_post().as_deref(), Some(&baseline[..]));
    let audit = audit_lines(dir.path());
    let anomalies: Vec<&Value> = audit
        .iter()
        .filter(|e| e["kind"] == "anomaly" && e["action"] == "refreeze")
        .collect();
    assert_eq!(anomalies.len(), 2, "{audit:?}");
    let sha = hex::encode(Sha256::digest(&baseline));
    assert_eq!(anomalies[0]["detail"]["sha256"], sha.as_str());
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "FREEZE" && e["detail"]["verified"] == true),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_never_sets_freeze_lock() {
    let cc = CommandCenter::start(Fault::Corrupt).await;
    let (_v1, _v2, rg) = promoted(&cc).await;
    let s = status_until(&rg, "a second failed round trip", |s| {
        s["refreeze"]["attempts"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(s["frozen"], false, "{s}");
    assert_eq!(s["refreeze"]["state"], "retrying", "{s}");
    assert!(
        s["refreeze"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("checksum mismatch")),
        "{s}"
    );
    // A new rollout ends the owed round trip: no more anomaly, no late lock.
    let r = rg.call(Method::POST, "/api/v1/rollout/start", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert!(s.get("refreeze").is_none(), "{s}");
    assert_eq!(s["frozen"], false);
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_the_owed_round_trip() {
    let cc = CommandCenter::start(Fault::FailGets(1)).await;
    let (v1, v2) = Upstream::pair().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (state, config) = (dir.path().join("state"), dir.path().join("rollgate.toml"));
    let ports = Ports::free();
    let rollout = format!(
        "{QUIET_ROLLOUT}command_center_url = \"{}\"\n{FLAGS}[[rollout.phases]]\nname = \"full\"\nweight = 100\n",
        cc.url()
    );
    Conf::new(v1.url(), v2.url())
        .ports(ports)
        .rollout(&rollout)
        .write(&config, &state);
    let spawn = || Proc::spawn(&config, ports, dir.path().join("stderr.log"));
    let mut rg = spawn();
    rg.wait_ready().await;
    for path in ["/api/v1/rollout/start", "/api/v1/rollout/promote"] {
        let r = rg.call(Method::POST, path, "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    let s = rg
        .wait_for("the first round trip failed", |s| {
            s["refreeze"]["state"] == "retrying"
        })
        .await;
    assert_eq!(s["refreeze"]["attempts"], 1, "{s}");
    rg.kill9();

    // The state file owes the round trip: the next run takes it up at once.
    let mut rg = spawn();
    rg.wait_ready().await;
    let s = rg
        .wait_for("verified after the restart", |s| s["frozen"] == true)
        .await;
    assert_eq!(s["state"], "promoted");
    assert_eq!(s["refreeze"]["state"], "verified", "{s}");
    assert_eq!(s["refreeze"]["attempts"], 2, "{s}");
    assert_eq!(cc.calls(), (2, 2));
}
