//! The overnight freeze through the real binary: a promotion window that is
//! closed now (its hours are set hours away from the machine's local time,
//! which is the clock rollgate's window reads) holds the rollout "overnight"
//! until the next business day's opening. Meanwhile a manual weight change
//! or promote answers 423 unless forced (the API's `force`, the CLI's
//! `--force`), the forced one is audited `forced: true`, and a rollback is
//! never refused.

mod harness;

use std::process::Command;

use chrono::{Local, Timelike};
use http::{Method, StatusCode};
use serde_json::json;

use harness::config::{seed_phases, FLAGS, QUIET_ROLLOUT};
use harness::process::{finish, Proc, BIN};
use harness::{audit_lines, Conf, Ports, Upstream, DEADLINE, TOKEN};

/// Half an hour starting three hours from now, local time: closed now,
/// whatever the hour (never wrapping past midnight).
fn closed_window() -> String {
    let h = (Local::now().hour() + 3) % 24;
    format!("promotion_window = {{ start = \"{h:02}:00\", end = \"{h:02}:30\" }}\n")
}

fn cli(admin: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--admin", admin, "--token", TOKEN])
        .env_remove("ROLLGATE_ADMIN_URL")
        .env_remove("ROLLGATE_ADMIN_TOKEN");
    let f = finish(cmd, DEADLINE);
    (f.status.code().unwrap_or(-1), f.stdout + &f.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overnight_weight_changes_need_force_and_rollback_never_does() {
    let (v1, v2) = Upstream::pair().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let config = dir.path().join("rollgate.toml");
    let ports = Ports::free();
    let rollout = format!(
        "{QUIET_ROLLOUT}{}holidays = [\"2026-12-24\", \"2026-12-25\"]\n{FLAGS}{}",
        closed_window(),
        seed_phases("1h", None)
    );
    Conf::new(v1.url(), v2.url())
        .ports(ports)
        .rollout(&rollout)
        .write(&config, &state);
    let mut rg = Proc::spawn(&config, ports, dir.path().join("stderr.log"));
    rg.wait_ready().await;

    // A start is not a manual weight change: it enters the first phase.
    let r = rg.call(Method::POST, "/api/v1/rollout/start", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert_eq!(s["weights"]["v2"].as_f64(), Some(5.0), "{s}");
    let held = s["overnight_freeze"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        held.starts_with("held overnight until ") && held.ends_with(":00 local"),
        "{s}"
    );

    let r = rg
        .call_json(Method::PUT, "/api/v1/weights", json!({"v2": 30}))
        .await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.starts_with("overnight freeze until ") && error.contains("pass force"),
        "{error}"
    );
    let r = rg.call(Method::POST, "/api/v1/rollout/promote", "").await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text());
    let r = rg
        .call_json(
            Method::PUT,
            "/api/v1/weights",
            json!({"v2": 30, "force": "yes"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("force"), "{}", r.text());
    assert_eq!(rg.status().await["weights"]["v2"].as_f64(), Some(5.0));

    // The CLI says how to override, and overrides with --force.
    let admin = rg.admin("");
    let admin = admin.trim_end_matches('/');
    let (code, out) = cli(admin, &["weights", "30"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("overnight freeze until") && out.contains("--force"),
        "{out}"
    );
    let (code, out) = cli(admin, &["weights", "30", "--force"]);
    assert_eq!(code, 0, "{out}");
    let s = rg.status().await;
    assert_eq!(s["weights"]["v2"].as_f64(), Some(30.0), "{s}");
    let (code, out) = cli(admin, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("held overnight until"), "{out}");

    // A rollback needs no force.
    let r = rg.call(Method::POST, "/api/v1/rollout/rollback", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["weights"]["v2"].as_f64(), Some(0.0));
    assert!(
        r.json().get("overnight_freeze").is_none(),
        "a rollout that ended holds nothing"
    );
    rg.assert_serving("after the overnight refusals").await;

    let audit = audit_lines(&state);
    let weights: Vec<_> = audit
        .iter()
        .filter(|e| e["kind"] == "admin" && e["action"] == "weights")
        .collect();
    assert_eq!(weights.len(), 3, "{weights:?}");
    assert!(weights[0]["detail"]["result"]
        .as_str()
        .is_some_and(|r| r.starts_with("overnight freeze until")));
    assert!(weights[0]["detail"].get("forced").is_none());
    assert_eq!(weights[2]["detail"]["result"], "ok");
    assert_eq!(weights[2]["detail"]["forced"], true, "{:?}", weights[2]);
}
