//! Logs of the real binary with `--log-format json`: every line is JSON; one
//! structured line per decision and per admin action; with
//! `[server] access_log = true` one line per request carrying method,
//! journey, variant, status and latency, and none of the path, query, user
//! key or headers.

mod harness;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use harness::config::short_rollout;
use harness::inproc::{demo_v1, demo_v2};
use harness::process::Proc;
use harness::{Conf, DemoApp, Ports, TOKEN};

/// Collects JSON lines until `pred` matches one, or fails after `within`.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<Value>,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(v) = seen.iter().find(|v| pred(v)) {
        return v.clone();
    }
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        seen.push(v.clone());
        if pred(&v) {
            return v;
        }
    }
    panic!("no {what} log line within {within:?}; saw: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_decisions_admin_actions_and_access_log() {
    let (v1, v2) = (
        DemoApp::start(demo_v1()).await,
        DemoApp::start(demo_v2()).await,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let cfg = dir.path().join("rollgate.toml");
    let ports = Ports::free();
    Conf::at(v1.addr, v2.addr)
        .ports(ports)
        .server("access_log = true\naccess_log_sample = 1.0")
        .demo(&short_rollout("1h"))
        .write(&cfg, &state);

    let (child, stderr) = Proc::spawn_piped(&cfg, ports, &["--log-format", "json"]);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let started = wait_for(&rx, &mut seen, Duration::from_secs(20), "start", |v| {
        v["fields"]["message"] == "rollgate started"
    });
    let proxy = started["fields"]["proxy_addr"]
        .as_str()
        .expect("proxy_addr")
        .to_string();
    let admin = started["fields"]["admin_addr"]
        .as_str()
        .expect("admin_addr")
        .to_string();

    // A request whose path, query, user key and headers must stay out of the log.
    let code = child
        .client
        .get(
            &format!("http://{proxy}/search?q=jane.doe%40example.com"),
            &[
                ("x-user-id", "user-jane-doe-42"),
                ("authorization", "Bearer hunter2"),
            ],
        )
        .await
        .status;
    assert_eq!(code, 200);
    let access = wait_for(&rx, &mut seen, Duration::from_secs(10), "access", |v| {
        v["target"] == "rollgate::access"
    });
    let f = &access["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["journey"], "search");
    assert!(f["variant"] == "v1" || f["variant"] == "v2", "{access}");
    assert_eq!(f["status"], 200);
    assert!(
        f["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{access}"
    );
    let raw = access.to_string();
    for secret in [
        "jane",
        "example.com",
        "/search",
        "user-",
        "hunter2",
        "127.0.0.1",
    ] {
        assert!(
            !raw.contains(secret),
            "the access log leaks {secret:?}: {raw}"
        );
    }

    // The controller's first decision (flags complete, auto start: GO into canary-5).
    let decision = wait_for(&rx, &mut seen, Duration::from_secs(10), "decision", |v| {
        v["fields"]["message"] == "decision"
    });
    assert_eq!(decision["fields"]["action"], "GO", "{decision}");
    assert!(decision["fields"]["weight_v2"].is_number(), "{decision}");

    // An admin action: refused without a token (no state change, no line), logged with it.
    let pause = format!("http://{admin}/api/v1/rollout/pause");
    assert_eq!(child.client.post(&pause, &[], "").await.status, 401);
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(
        child
            .client
            .post(&pause, &[("authorization", &auth)], "")
            .await
            .status,
        200
    );
    let action = wait_for(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "admin action",
        |v| v["fields"]["message"] == "admin action",
    );
    assert_eq!(action["fields"]["command"], "pause", "{action}");
    assert_eq!(action["fields"]["ok"], true, "{action}");
    assert!(
        !action.to_string().contains(TOKEN),
        "the token must never be logged: {action}"
    );

    // Admin and status-page requests are not proxied traffic: no access lines for them.
    assert!(
        seen.iter()
            .filter(|v| v["target"] == "rollgate::access")
            .all(|v| v["fields"]["journey"] != "other"),
        "{seen:#?}"
    );
    drop(child);
}
