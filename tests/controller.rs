//! The rollout controller end to end: demo apps on loopback, rollgate
//! in-process, HTTP through the proxy and the admin API. A slow V2 is rolled
//! back by the hard P95 trigger, failed payments on the request path before
//! any tick, and a healthy rollout is promoted, frozen and reported.
//!
//! No wall-clock thresholds: every assertion is on state and ordering. Waits
//! are bounded by a generous deadline that only turns a hang into a failure
//! with the last status attached.

mod harness;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use rollgate::demo::upstream::Profile;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use harness::api::{reason_of, state_of};
use harness::config::FLAGS;
use harness::upstream::healthy;
use harness::{audit_lines, metric, HttpClient, Rg};

fn fast(name: &'static str) -> Profile {
    healthy(name, 3.0, 8.0)
}

/// rollgate in front of two demo apps, judging searches and payments;
/// `routing` is added to `[routing]`, `rollout` is the body of `[rollout]`.
async fn rig(v1: Profile, v2: Profile, routing: &str, rollout: &str) -> Rg {
    Rg::with_apps(v1, v2, |c| {
        c.with_journeys().routing(routing).rollout(rollout)
    })
    .await
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

fn short_rollout(extra: &str) -> String {
    format!(
        "auto_start = true\ntick = \"200ms\"\nwindow = \"2s\"\nmin_samples = 10\n{extra}\n{FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-50\"\nweight = 50\nhold = \"1s\"\n\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\napproval = \"ceo\"\napproval_waived_if_green = true\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_v2_is_rolled_back_by_p95_hard_and_users_return_to_v1() {
    let slow = healthy("v2", 250.0, 400.0);
    // A RED gate may not roll back on its own here: only the hard P95 trigger can.
    let rig = rig(
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
        metric(&m, "rollgate_rollbacks_total", &[("reason", "p95_hard")]),
        Some(1.0),
        "{m}"
    );

    // Ordering: exactly one ROLLBACK was decided, and before it only holds
    // for missing data or for the latency gate itself: the sequential judge
    // may show the breach (RED on ten slow samples) a tick before the hard
    // trigger has `min_samples` in its window, and then p95_hard rolls back.
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
            e["action"] == "GO"
                || (e["action"] == "HOLD"
                    && (!reason.contains("RED") || reason.contains("gate latency_p95"))),
            "decision before the rollback: {e}"
        );
    }
    assert_eq!(decisions[rb]["detail"]["trigger"], "p95_hard");
    assert_eq!(decisions[rb]["detail"]["weight_v2"].as_f64(), Some(0.0));
}

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
    let rig = rig(fast("v1"), broken, "allow_override_header = true", &rollout).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthy_rollout_is_promoted_frozen_and_reported() {
    let rig = rig(
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
        .call_json(Method::PUT, "/api/v1/weights", json!({"v2": 30}))
        .await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text());
    let r = rig
        .call_json(Method::POST, "/api/v1/rollout/start", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text());
    assert_eq!(rig.status().await["weights"]["v2"].as_f64(), Some(100.0));
    let r = rig
        .call_json(Method::POST, "/api/v1/unfreeze", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["frozen"], false);
    let r = rig
        .call_json(Method::PUT, "/api/v1/weights", json!({"v2": 30}))
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
