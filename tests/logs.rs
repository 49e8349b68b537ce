//! Logs of the real binary with `--log-format json`: every line is JSON; one
//! structured line per decision and per admin action; with
//! `[server] access_log = true` one line per request carrying method,
//! journey, variant, status and latency, and none of the path, query, user
//! key or headers.

mod operator_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use operator_support::{config_text, request, short_rollout, Apps, TOKEN};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rollgate");

/// Kills the child on every exit path of the test.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let apps = Apps::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let cfg = dir.path().join("rollgate.toml");
    let text = config_text(
        apps.v1,
        apps.v2,
        &state.display().to_string(),
        "access_log = true\naccess_log_sample = 1.0",
        &short_rollout("1h"),
    );
    std::fs::write(&cfg, text).expect("write config");

    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--log-format", "json"])
        .env_remove("ROLLGATE_ADMIN_TOKEN")
        .env_remove("ROLLGATE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rollgate run starts");
    let mut child = Child(child);
    let stderr = child.0.stderr.take().expect("stderr");
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
    let (code, _) = request(
        "GET",
        &format!("http://{proxy}/search?q=jane.doe%40example.com"),
        &[
            ("x-user-id", "user-jane-doe-42"),
            ("authorization", "Bearer hunter2"),
        ],
    )
    .await;
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
    assert_eq!(request("POST", &pause, &[]).await.0, 401);
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(
        request("POST", &pause, &[("authorization", &auth)]).await.0,
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

#[test]
fn access_log_sample_is_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("bad.toml");
    let text = config_text(
        1,
        2,
        "/tmp/unused",
        "access_log = true\naccess_log_sample = 0",
        "",
    );
    std::fs::write(&cfg, text).expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key `server.access_log_sample`: 0 must be above 0 and at most 1"),
        "{err}"
    );
}
