//! One hostile client against a whole rollout. From its own address
//! (`127.0.0.2`) it runs every attack a single client has, all at once, in a
//! loop: it learns which of its user keys V2 serves (from
//! `x-rollgate-variant`), then trickles payment bodies on those keys within
//! the body deadline and stalls others past it, floods `js_error` beacons on
//! them and `page_view` beacons on its V1 keys, forges control and
//! forwarding headers, and holds idle connections by the hundred. Meanwhile
//! 300 synthetic users walk the demo journeys behind a trusted balancer
//! (`127.0.0.1`, each user with its own forwarded address).
//!
//! A healthy canary is promoted and never rolled back; a canary whose
//! payments fail is still rolled back by its own trigger.

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use rollgate::demo::upstream::Profile;
use serde_json::Value;

use harness::api::{reason_of, state_of};
use harness::beacons::{From, ATTACKER};
use harness::config::FLAGS;
use harness::slow_body::{connect_as_attacker, post_head, read_until_closed, trickle};
use harness::upstream::healthy;
use harness::{eventually_within, metric, Rg, DEADLINE};

/// A rollout that moves every few seconds, judged on requests and beacons;
/// latency limits far away (a debug build on two busy cores), so only what
/// the attacker sends could move a gate.
/// `rate_floor = 0.05`: a few hundred users cannot show a JS-error share
/// below the default 0.1 % in a minute (nor any ratio, with no errors on
/// either side). The phases' P95 limit is 800 ms: a debug build on two shared cores
/// stalls for hundreds of ms at times, and the sequential judge sees real
/// latency; a trickled body wrongly counted would still take over a second
/// (`client_body_timeout`), far above it.
fn rollout() -> String {
    format!(
        "[rollout]\nauto_start = true\ntick = \"250ms\"\nwindow = \"6s\"\nmin_samples = 20\n\
         error_rate_max = 0.01\nerror_rate_margin = 0.005\np95_rollback_ms = 100000\n\
         red_rollback_after = \"4s\"\nconsecutive_payment_failures = 5\nfull_sustain = \"3s\"\n\
         {FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-25\"\nweight = 25\nhold = \"6s\"\np95_ms = 800\n\n\
         [[rollout.phases]]\nname = \"canary-50\"\nweight = 50\nhold = \"6s\"\np95_ms = 800\n\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\np95_ms = 800\n\n\
         [beacons]\nnames = [\"page_view\", \"js_error\", \"search_result_click\", \"first_result_ms\"]\n\n\
         [gates]\ncooldown = \"1s\"\njs_errors_per = \"page_view\"\njs_errors_max_increase = 0.10\n\
         rate_floor = 0.05\n"
    )
}

/// Demo apps (V2 as given), rollgate with a short body deadline and a
/// per-client connection cap, 300 synthetic users behind the trusted
/// balancer.
async fn rig(v2: Profile) -> Rg {
    let mut rg = Rg::with_apps(healthy("v1", 6.0, 15.0), v2, |c| {
        c.demo(&rollout()).server(
            "trusted_proxies = [\"127.0.0.1/32\"]\nclient_body_timeout = \"1s\"\n\
             max_connections_per_client = 32\nidle_timeout = \"10s\"",
        )
    })
    .await;
    rg.traffic(300, 250.0);
    rg
}

/// A batch of `n` events of one type and name.
fn batch(kind: &str, name: &str, n: usize) -> String {
    let one = format!(r#"{{"type":"{kind}","name":"{name}"}}"#);
    format!("[{}]", vec![one; n].join(","))
}

/// The attacker's user keys V2 serves now, learnt as any client can.
async fn v2_keys(client: &mut From, round: usize) -> (Vec<String>, Vec<String>) {
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let key = format!("mallory-{round}-{i}");
        let headers = [
            ("x-user-id", key.as_str()),
            // Forged control and forwarding headers, on every probe.
            ("x-payment-mode", "live"),
            ("x-rollgate-shadow", "1"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        let (_, h) = client
            .request(Method::GET, "/search?q=x", &headers, "")
            .await;
        match h.get("x-rollgate-variant").and_then(|v| v.to_str().ok()) {
            Some("v2") => v2.push(key),
            _ => v1.push(key),
        }
    }
    (v1, v2)
}

/// Trickles one payment body within the deadline and stalls another past it.
async fn slow_payments(proxy: SocketAddr, key: String) {
    let body = br#"{"amount":4900,"currency":"usd"}"#;
    let head = post_head(
        "/api/payments/charge",
        &key,
        body.len(),
        "x-payment-mode: live\r\nx-rollgate-shadow: 1\r\n",
    );
    let mut s = connect_as_attacker(proxy).await;
    trickle(&mut s, &head, body, 4, Duration::from_millis(800)).await;
    let mut stalled = connect_as_attacker(proxy).await;
    trickle(&mut stalled, &head, &body[..4], 1, Duration::ZERO).await;
    let _ = read_until_closed(&mut stalled).await;
}

/// Every attack at once, round after round, until `stop`.
fn attack(
    proxy: SocketAddr,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Idle connections, as many as the per-client cap leaves room for
        // the other attacks (past it they are closed at once, which
        // `tests/connections.rs` shows); the idle timeout closes them.
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(connect_as_attacker(proxy).await);
        }
        let mut client = From::connect(ATTACKER, proxy).await;
        let (errors, views) = (
            batch("js_error", "js_error", 100),
            batch("funnel", "page_view", 100),
        );
        let mut round = 0;
        while !stop.load(Ordering::Relaxed) {
            let (v1, v2) = v2_keys(&mut client, round).await;
            let slow: Vec<_> = v2
                .iter()
                .take(4)
                .map(|k| tokio::spawn(slow_payments(proxy, k.clone())))
                .collect();
            for k in &v2 {
                client.beacon(&[("x-user-id", k)], &errors).await;
            }
            for k in &v1 {
                client.beacon(&[("x-user-id", k)], &views).await;
            }
            for s in slow {
                s.await.expect("slow payments");
            }
            rounds.fetch_add(1, Ordering::Relaxed);
            round += 1;
        }
        drop(idle);
    })
}

/// Runs the attack until the rollout ends; its final status.
async fn under_attack(rg: &mut Rg) -> (Value, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let attacker = attack(rg.app.proxy_addr, stop.clone(), rounds.clone());
    let rg_ref = &*rg;
    let s = eventually_within(
        "the rollout ends",
        6 * DEADLINE,
        Duration::from_millis(200),
        move || async move {
            let s = rg_ref.status().await;
            match state_of(&s) {
                "promoted" | "rolled_back" => Ok(s),
                _ => Err(serde_json::to_string_pretty(&s).unwrap()),
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    attacker.await.expect("attacker");
    rg.stop_traffic().await;
    (s, rounds.load(Ordering::Relaxed))
}

/// The decision of every report so far, oldest first; prints why each
/// NO-GO held.
async fn actions(rg: &Rg) -> Vec<String> {
    let r = rg.client.get(&rg.admin("/api/v1/reports"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut out = Vec::new();
    for d in r.json()["reports"].as_array().cloned().unwrap_or_default() {
        let decision = d["decision"].as_str().unwrap_or("?").to_string();
        if decision == "NO-GO" {
            let id = d["id"].as_str().unwrap_or_default();
            let report = rg
                .client
                .get(&rg.admin(&format!("/api/v1/reports/{id}")), &[])
                .await;
            println!("NO-GO {id}: {}", report.json()["decision"]["reason"]);
        }
        out.push(decision);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_under_attack_is_promoted_and_never_rolled_back() {
    let mut rg = rig(healthy("v2", 5.0, 12.0)).await;
    let (s, rounds) = under_attack(&mut rg).await;
    let actions = actions(&rg).await;
    println!("{rounds} attack rounds; decisions: {actions:?}");
    assert_eq!(state_of(&s), "promoted", "{}", reason_of(&s));
    assert!(rounds > 0, "the attacker never finished a round");
    assert!(
        !actions.iter().any(|a| a == "ROLLBACK"),
        "a rollback under attack: {actions:?}"
    );
    assert_eq!(
        actions.last().map(String::as_str),
        Some("PROMOTE"),
        "{actions:?}"
    );
    // The attacks landed, and were refused where they are refused.
    let m = rg.metrics().await;
    let limited = metric(
        &m,
        "rollgate_beacon_rejected_total",
        &[("reason", "rate_limited")],
    );
    assert!(
        limited.unwrap_or(0.0) > 0.0,
        "the beacon flood was never capped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_payments_fail_is_still_rolled_back_under_attack() {
    let mut v2 = healthy("v2", 5.0, 12.0);
    v2.payment_failure_rate = 1.0;
    let mut rg = rig(v2).await;
    let (s, rounds) = under_attack(&mut rg).await;
    println!("{rounds} attack rounds: {}", reason_of(&s));
    assert_eq!(state_of(&s), "rolled_back", "{}", reason_of(&s));
    assert_eq!(s["last_decision"]["trigger"], "payment_failures", "{s}");
}
