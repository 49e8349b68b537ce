//! End-to-end tests of the rollout controller (SPEC §6, §7): real demo
//! upstreams on loopback, rollgate started in-process, HTTP through the proxy
//! and the admin API.
//!
//! No wall-clock thresholds: every assertion is on state and ordering. Waits
//! are bounded by a generous deadline that only turns a hang into a failure
//! with the last status attached.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rollgate::demo::upstream::{self, Latency, Profile};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use common::{HttpClient, Resp};

const DEADLINE: Duration = Duration::from_secs(30);
const FLAGS: &str =
    "[rollout.flags]\nSHADOW_PASS_24H = 1\nA2_V26_COMPLIANT = 1\nEVIDENCE_BUNDLE = 1\n";
const JOURNEYS: &str = r#"
[[journeys]]
name = "search"
path_prefix = "/search"
[[journeys]]
name = "payments"
path_prefix = "/api/payments"
methods = ["POST"]
kind = "payment"
"#;

// ===== rig =====

/// A demo upstream app serving `profile` until the rig is dropped.
async fn demo_app(profile: Profile, stop: &watch::Receiver<bool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind demo app");
    let addr = l.local_addr().expect("addr");
    let mut rx = stop.clone();
    tokio::spawn(upstream::serve(l, profile, async move {
        let _ = rx.wait_for(|v| *v).await;
    }));
    addr
}

fn fast(name: &'static str) -> Profile {
    Profile::healthy(
        name,
        Latency {
            median_ms: 3.0,
            p95_ms: 8.0,
        },
    )
}

/// rollgate in front of two demo apps, with its own state dir.
struct Rig {
    app: rollgate::App,
    state: tempfile::TempDir,
    client: HttpClient,
    token: String,
    stop_apps: watch::Sender<bool>,
}

impl Rig {
    /// `rollout` is the body of `[rollout]` (it may end with sub-tables);
    /// `routing` the body of `[routing]`.
    async fn start(v1: Profile, v2: Profile, routing: &str, rollout: &str) -> Rig {
        let (stop_apps, stop_rx) = watch::channel(false);
        let a1 = demo_app(v1, &stop_rx).await;
        let a2 = demo_app(v2, &stop_rx).await;
        let state = tempfile::tempdir().expect("state dir");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"secret\"\nstate_dir = {dir:?}\n\n\
             [upstreams]\nv1 = \"http://{a1}\"\nv2 = \"http://{a2}\"\ntimeout = \"10s\"\n\n\
             [routing]\nsticky_header = \"x-user-id\"\n{routing}\n\n{JOURNEYS}\n[rollout]\n{rollout}\n",
            dir = state.path().display().to_string(),
        );
        let cfg = rollgate::Config::parse(&text, "controller_e2e.toml")
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));
        let app = rollgate::App::start(cfg).await.expect("rollgate starts");
        let token = std::env::var("ROLLGATE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "secret".into());
        Rig {
            app,
            state,
            client: HttpClient::http1(),
            token,
            stop_apps,
        }
    }

    fn proxy(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.proxy_addr)
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.admin_addr)
    }

    async fn status(&self) -> Value {
        let r = self.client.get(&self.admin("/api/v1/status"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "status: {}", r.text());
        r.json()
    }

    /// A mutating admin call with the bearer token.
    async fn call(&self, method: Method, path: &str, body: Value) -> Resp {
        let auth = format!("Bearer {}", self.token);
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.client
            .request(
                method,
                &self.admin(path),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
    }

    /// Polls the status until `pred` holds; fails with the last status after [`DEADLINE`].
    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "not {what} within {DEADLINE:?}; last status: {}",
                    serde_json::to_string_pretty(&s).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` as `user`; returns the variant, checked against the app that answered.
    async fn variant_of(&self, user: &str, path: &str) -> String {
        let r = self
            .client
            .get(&self.proxy(path), &[("x-user-id", user)])
            .await;
        assert_eq!(r.status, StatusCode::OK, "user {user} {path}: {}", r.text());
        let v = r.variant().to_string();
        assert_eq!(
            r.header("x-app-version"),
            Some(v.as_str()),
            "variant header disagrees with the app"
        );
        v
    }

    async fn shutdown(self) -> tempfile::TempDir {
        self.app.shutdown().await;
        let _ = self.stop_apps.send(true);
        self.state
    }
}

fn state_of(s: &Value) -> &str {
    s["state"].as_str().unwrap_or("?")
}

fn reason_of(s: &Value) -> &str {
    s["last_decision"]["reason"].as_str().unwrap_or("")
}

/// Synthetic users: `workers` loops, each request from a new `x-user-id`,
/// alternating searches and (when `payments`) payment POSTs. Remembers the
/// users V2 served.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    v2_users: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(proxy: SocketAddr, workers: usize, payments: bool) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let v2_users = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|w| {
                let (stop, sent, v2_users) = (stop.clone(), sent.clone(), v2_users.clone());
                tokio::spawn(async move {
                    let client = HttpClient::http1();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let user = format!("user-{w}-{i}");
                        let (method, path) = if payments && i % 2 == 1 {
                            (Method::POST, "/api/payments/checkout")
                        } else {
                            (Method::GET, "/search?q=scholarship")
                        };
                        let url = format!("http://{proxy}{path}");
                        let r = client
                            .request(method, &url, &[("x-user-id", user.as_str())], "{}")
                            .await;
                        if r.header("x-rollgate-variant") == Some("v2") {
                            v2_users.lock().unwrap().push(user);
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            sent,
            v2_users,
            tasks,
        }
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("traffic worker");
        }
        let users = self.v2_users.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), users)
    }
}

/// Every line of `audit.jsonl`, each required to be a complete JSON object.
fn audit_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit.jsonl exists");
    assert!(text.ends_with('\n'), "audit.jsonl ends with a torn line");
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("audit.jsonl line {}: {e}: {l}", i + 1))
        })
        .collect()
}

fn short_rollout(extra: &str) -> String {
    format!(
        "auto_start = true\ntick = \"200ms\"\nwindow = \"2s\"\nmin_samples = 10\n{extra}\n{FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-50\"\nweight = 50\nhold = \"1s\"\n\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\napproval = \"ceo\"\napproval_waived_if_green = true\n"
    )
}

// ===== 1. tick trigger: V2 slow -> p95_hard =====

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_v2_is_rolled_back_by_p95_hard_and_users_return_to_v1() {
    let slow = Profile::healthy(
        "v2",
        Latency {
            median_ms: 250.0,
            p95_ms: 400.0,
        },
    );
    // A RED gate may not roll back on its own here: only the hard P95 trigger can.
    let rig = Rig::start(
        fast("v1"),
        slow,
        "",
        &short_rollout("red_rollback_after = \"1h\"\nfull_sustain = \"1h\""),
    )
    .await;
    let traffic = Traffic::start(rig.app.proxy_addr, 16, false);

    let s = rig
        .wait_for("rolled back", |s| state_of(s) == "rolled_back")
        .await;
    let (sent, v2_users) = traffic.stop().await;
    let d = &s["last_decision"];
    assert_eq!(d["action"], "ROLLBACK", "{d}");
    assert!(
        reason_of(&s).starts_with("p95_hard"),
        "reason: {}",
        reason_of(&s)
    );
    assert_eq!(d["trigger"], "p95_hard", "{d}");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(0.0));
    assert_eq!(s["weights"]["v1"].as_f64(), Some(100.0));
    assert!(
        !v2_users.is_empty(),
        "V2 never served anyone before the rollback"
    );
    println!(
        "p95_hard after {sent} requests ({} served by V2): {}",
        v2_users.len(),
        reason_of(&s)
    );

    // Everyone is on V1 now: the users V2 served, and new ones.
    for u in v2_users.iter().take(40) {
        assert_eq!(
            rig.variant_of(u, "/search?q=again").await,
            "v1",
            "user {u} still on V2"
        );
    }
    for i in 0..40 {
        assert_eq!(rig.variant_of(&format!("after-{i}"), "/search").await, "v1");
    }

    let m = rig.client.get(&rig.admin("/metrics"), &[]).await.text();
    assert_eq!(
        common::metric(&m, "rollgate_rollbacks_total", &[("reason", "p95_hard")]),
        Some(1.0),
        "{m}"
    );

    // Ordering: the controller never saw a latency breach without rolling back
    // on that very tick: every HOLD before the rollback was for missing data,
    // and exactly one ROLLBACK was decided.
    let dir = rig.shutdown().await;
    let audit = audit_lines(dir.path());
    let decisions: Vec<&Value> = audit.iter().filter(|e| e["kind"] == "decision").collect();
    let rb = decisions
        .iter()
        .position(|e| e["action"] == "ROLLBACK")
        .expect("a ROLLBACK decision in the audit log");
    assert_eq!(
        decisions
            .iter()
            .filter(|e| e["action"] == "ROLLBACK")
            .count(),
        1
    );
    for e in &decisions[..rb] {
        let reason = e["detail"]["reason"].as_str().unwrap_or("");
        assert!(
            e["action"] == "GO" || (e["action"] == "HOLD" && !reason.contains("RED")),
            "decision before the rollback: {e}"
        );
    }
    assert_eq!(decisions[rb]["detail"]["trigger"], "p95_hard");
    assert_eq!(decisions[rb]["detail"]["weight_v2"].as_f64(), Some(0.0));
}

// ===== 2. request-path trigger: consecutive failed payments =====

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_failed_v2_payments_roll_back_on_the_request_path_before_any_tick() {
    let mut broken = fast("v2");
    broken.payment_failure_rate = 1.0;
    // One tick only (the first, at start, enters phase 0); the next is an hour away.
    let rollout = format!(
        "auto_start = true\ntick = \"1h\"\nwindow = \"1h\"\nmin_samples = 5\nconsecutive_payment_failures = 5\n{FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-50\"\nweight = 50\nhold = \"1h\"\n\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\n"
    );
    let rig = Rig::start(fast("v1"), broken, "allow_override_header = true", &rollout).await;
    let s = rig
        .wait_for("in canary-50", |s| state_of(s) == "canary")
        .await;
    assert_eq!(s["phase"], "canary-50");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(50.0));
    let entered_at = s["last_decision"]["at"].as_str().unwrap().to_string();

    // A user the sticky hash puts on V2 (a GET is not a payment: it does not touch the run).
    let mut user = None;
    for i in 0..200 {
        let u = format!("payer-{i}");
        if rig.variant_of(&u, "/search").await == "v2" {
            user = Some(u);
            break;
        }
    }
    let user = user.expect("some user among 200 is on V2 at 50%");
    let pay = || async {
        rig.client
            .post(
                &rig.proxy("/api/payments/charge"),
                &[("x-user-id", user.as_str())],
                "{\"amount\": 100}",
            )
            .await
    };

    // Five consecutive failures: at the limit, not past it.
    for n in 1..=5 {
        let r = pay().await;
        assert_eq!(
            (r.status, r.variant()),
            (StatusCode::BAD_GATEWAY, "v2"),
            "payment {n}"
        );
    }
    let s = rig.status().await;
    assert_eq!(
        state_of(&s),
        "canary",
        "rolled back after only 5 failures: {s}"
    );
    assert_eq!(s["weights"]["v2"].as_f64(), Some(50.0));
    assert_eq!(rig.variant_of(&user, "/search").await, "v2");
    // QA override forces V2 too; a failure through it counts like any other V2 payment.
    let r = rig
        .client
        .post(
            &rig.proxy("/api/payments/charge"),
            &[("x-user-id", "qa-1"), ("x-rollgate-variant", "v2")],
            "{}",
        )
        .await;
    assert_eq!(
        (r.status, r.variant()),
        (StatusCode::BAD_GATEWAY, "v2"),
        "6th failure"
    );

    // The very next request, with no tick in between, goes to V1.
    assert_eq!(
        rig.variant_of(&user, "/search").await,
        "v1",
        "no swap right after the 6th failure"
    );
    let r = pay().await;
    assert_eq!((r.status, r.variant()), (StatusCode::OK, "v1"));

    // The controller records it (woken by the request path, not by a tick).
    let s = rig
        .wait_for("rolled back", |s| state_of(s) == "rolled_back")
        .await;
    let reason = reason_of(&s).to_string();
    assert!(reason.starts_with("payment_failures"), "reason: {reason}");
    assert!(reason.contains("6 consecutive"), "reason: {reason}");
    assert_eq!(s["last_decision"]["trigger"], "payment_failures");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(0.0));
    assert_eq!(s["phase"], "canary-50");
    // Still the first tick's phase entry before it, and nothing in between.
    assert!(s["last_decision"]["at"].as_str().unwrap() >= entered_at.as_str());
    let swap_us: Option<u64> = reason
        .split("swapped ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok());
    println!("payment trip: {reason} (trigger-to-swap {swap_us:?} µs)");
    assert!(
        swap_us.is_some(),
        "reason does not report the trigger-to-swap time: {reason}"
    );

    let dir = rig.shutdown().await;
    let audit = audit_lines(dir.path());
    let decisions: Vec<&Value> = audit.iter().filter(|e| e["kind"] == "decision").collect();
    let actions: Vec<&str> = decisions
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["GO", "ROLLBACK"],
        "exactly one tick (the start) and the trip: {decisions:?}"
    );
    assert_eq!(decisions[1]["detail"]["by"], "request-path");
    assert_eq!(decisions[1]["detail"]["trigger"], "payment_failures");
}

// ===== 3. healthy -> promoted, golden re-freeze, FREEZE_LOCK =====

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthy_rollout_is_promoted_frozen_and_reported() {
    let rig = Rig::start(
        fast("v1"),
        fast("v2"),
        "",
        &short_rollout("full_sustain = \"1s\""),
    )
    .await;
    let traffic = Traffic::start(rig.app.proxy_addr, 8, true);
    let s = rig
        .wait_for("promoted and frozen", |s| {
            state_of(s) == "promoted" && s["frozen"] == true
        })
        .await;
    let (sent, _) = traffic.stop().await;
    println!("promoted after {sent} requests: {}", reason_of(&s));
    assert_eq!(s["phase"], "full");
    assert_eq!(s["phase_index"], 1);
    assert_eq!(s["weights"]["v2"].as_f64(), Some(100.0));
    assert_eq!(s["last_decision"]["action"], "PROMOTE");

    // Reports: one per decision, newest last, each also as Markdown.
    let r = rig.client.get(&rig.admin("/api/v1/reports"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json()["reports"]
        .as_array()
        .cloned()
        .expect("reports array");
    assert!(!list.is_empty());
    let decisions: Vec<&str> = list
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert!(decisions.contains(&"GO"), "{decisions:?}");
    assert_eq!(decisions.last(), Some(&"PROMOTE"), "{decisions:?}");
    let last = list.last().unwrap()["id"].as_str().unwrap().to_string();
    let md = rig
        .client
        .get(
            &rig.admin(&format!("/api/v1/reports/{last}?format=md")),
            &[],
        )
        .await;
    assert_eq!(md.status, StatusCode::OK);
    assert!(md.text().contains("Gate report"), "{}", md.text());
    let js = rig
        .client
        .get(&rig.admin(&format!("/api/v1/reports/{last}")), &[])
        .await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(js.json()["id"], last.as_str());

    // FREEZE_LOCK: weight and rollout changes are refused until unfrozen.
    let r = rig
        .call(Method::PUT, "/api/v1/weights", json!({"v2": 30}))
        .await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text());
    let r = rig
        .call(Method::POST, "/api/v1/rollout/start", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text());
    assert_eq!(rig.status().await["weights"]["v2"].as_f64(), Some(100.0));
    let r = rig
        .call(Method::POST, "/api/v1/unfreeze", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["frozen"], false);
    let r = rig
        .call(Method::PUT, "/api/v1/weights", json!({"v2": 30}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert_eq!(state_of(&s), "paused");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(30.0));
    assert_eq!(s["weights"]["v1"].as_f64(), Some(70.0));

    let dir = rig.shutdown().await;
    // Audit log: every line JSON; the decisions and the admin actions are there.
    let audit = audit_lines(dir.path());
    let kinds: BTreeSet<(String, String)> = audit
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (kind, action) in [
        ("decision", "GO"),
        ("decision", "PROMOTE"),
        ("decision", "FREEZE"),
        ("admin", "weights"),
        ("admin", "unfreeze"),
        ("admin", "start"),
    ] {
        assert!(
            kinds.contains(&(kind.into(), action.into())),
            "no {kind} {action} in the audit log: {kinds:?}"
        );
    }
    let refused = audit
        .iter()
        .find(|e| e["kind"] == "admin" && e["action"] == "weights")
        .expect("first weights call");
    assert!(
        refused["detail"]["result"]
            .as_str()
            .unwrap()
            .contains("FREEZE_LOCK"),
        "{refused}"
    );

    // Golden baseline + its checksum.
    let baseline = std::fs::read(dir.path().join("baseline.json")).expect("baseline.json");
    let sha_file = std::fs::read_to_string(dir.path().join("baseline.json.sha256"))
        .expect("baseline.json.sha256");
    let want = sha_file.split_whitespace().next().expect("a checksum");
    assert_eq!(hex_sha256(&baseline), want);
    let b: Value = serde_json::from_slice(&baseline).expect("baseline is JSON");
    assert!(
        b["journeys"].as_array().is_some_and(|j| !j.is_empty()),
        "{b}"
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ===== 4. admin API semantics =====

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_approvals_incidents_validation_and_conflicts() {
    let rollout = format!(
        "auto_start = true\ntick = \"1h\"\nwindow = \"1h\"\n{FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-5\"\nweight = 5\nhold = \"1h\"\n\n\
         [[rollout.phases]]\nname = \"canary-25\"\nweight = 25\nhold = \"1h\"\napproval = \"cfo\"\n\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\n"
    );
    let rig = Rig::start(fast("v1"), fast("v2"), "", &rollout).await;
    rig.wait_for("in canary-5", |s| state_of(s) == "canary")
        .await;

    // Approvals are recorded with role and who.
    let no_token = rig
        .client
        .post(
            &rig.admin("/api/v1/approvals"),
            &[],
            json!({"role": "cfo", "by": "x"}).to_string(),
        )
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    let r = rig
        .call(
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "cfo", "by": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let approvals = rig.status().await["approvals"].clone();
    assert_eq!(approvals.as_array().map(Vec::len), Some(1), "{approvals}");
    assert_eq!(approvals[0]["role"], "cfo");
    assert_eq!(approvals[0]["by"], "x");
    assert!(approvals[0]["at"].is_string());

    // Invalid bodies: 400 naming the field, and nothing changes.
    for (method, path, body, field) in [
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 3, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": 5, "by": "x"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "ceo"}),
            "by",
        ),
        (Method::PUT, "/api/v1/flags", json!({"X": 2}), "X"),
        (Method::PUT, "/api/v1/weights", json!({"v2": 101}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": "ten"}), "v2"),
    ] {
        let r = rig.call(method.clone(), path, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {}",
            r.text()
        );
        let msg = r.json()["error"].as_str().unwrap_or("").to_string();
        assert!(
            msg.contains(field),
            "{method} {path} {body}: error does not name `{field}`: {msg}"
        );
    }
    let auth = format!("Bearer {}", rig.token);
    let r = rig
        .client
        .put(
            &rig.admin("/api/v1/flags"),
            &[("authorization", auth.as_str())],
            "{not json",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let s = rig.status().await;
    assert_eq!(state_of(&s), "canary");
    assert_eq!(s["approvals"].as_array().map(Vec::len), Some(1));
    assert!(s["flags"].get("X").is_none(), "{}", s["flags"]);

    // Starting a rollout that is running is a conflict.
    let r = rig
        .call(Method::POST, "/api/v1/rollout/start", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    // One Sev-2 is noted; the second holds for a manual decision.
    let r = rig
        .call(
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 2, "summary": "slow search"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(state_of(&r.json()), "canary");
    let r = rig
        .call(
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 2, "summary": "slow detail"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert_eq!(state_of(&s), "holding", "{s}");
    assert_eq!(s["last_decision"]["action"], "HOLD");
    assert!(reason_of(&s).starts_with("incidents"), "{}", reason_of(&s));
    assert_eq!(s["weights"]["v2"].as_f64(), Some(5.0));

    // A Sev-1 rolls back at once: the answer to the POST already shows it.
    let r = rig
        .call(
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 1, "summary": "payments down"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    assert_eq!(state_of(&s), "rolled_back", "{s}");
    assert_eq!(s["last_decision"]["action"], "ROLLBACK");
    assert_eq!(s["last_decision"]["trigger"], "sev1_incident");
    assert!(
        reason_of(&s).starts_with("sev1_incident"),
        "{}",
        reason_of(&s)
    );
    assert_eq!(s["weights"]["v2"].as_f64(), Some(0.0));
    let incidents = s["incidents"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        incidents
            .iter()
            .map(|i| i["severity"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 2, 1]
    );
    for i in 0..30 {
        assert_eq!(rig.variant_of(&format!("u{i}"), "/search").await, "v1");
    }
    // A rolled-back rollout cannot be rolled back again.
    let r = rig
        .call(Method::POST, "/api/v1/rollout/rollback", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    rig.shutdown().await;
}
