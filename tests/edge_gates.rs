//! Request-path parts of the edge gates on a real rollgate: V2's reserved
//! capacity sheds with 503 and turns the concurrency gate YELLOW; users are
//! counted per region for the split-skew gate.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rollgate::control::gates::{GateResult, GateStatus};
use rollgate::control::{Command, StatusView};

use harness::client::header;
use harness::upstream::{fast, healthy};
use harness::{series, Rg};

fn gate<'a>(s: &'a StatusView, key: &str) -> Option<&'a GateResult> {
    s.gates.iter().find(|g| g.key() == key)
}

const TICKS: &str = r#"
[rollout]
tick = "100ms"
window = "2s"
min_samples = 20
auto_start = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_over_its_reserved_capacity_is_shed_and_the_gate_is_yellow() {
    let slow = healthy("v2", 300.0, 300.0);
    let rig = Arc::new(
        Rg::with_apps(fast("v1"), slow, |c| {
            c.own_rollout()
                .upstreams("reserved_capacity = 2")
                .section(TICKS)
        })
        .await,
    );
    rig.app
        .control
        .command(Command::SetWeight(100.0), "test")
        .await
        .unwrap();
    // Ten users at once on V2, which answers in 300 ms: two are admitted.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let rig = rig.clone();
            tokio::spawn(async move {
                let user = format!("u{i}");
                rig.get("/search", &[("x-user-id", &user)]).await.parts()
            })
        })
        .collect();
    let mut shed = 0;
    for t in tasks {
        let (status, h, _) = t.await.unwrap();
        assert_eq!(header(&h, "x-rollgate-variant"), Some("v2"));
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(header(&h, "retry-after"), Some("1"));
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!((1..=8).contains(&shed), "shed {shed}");
    let page = rig.metrics().await;
    assert_eq!(
        series(&page, "rollgate_shed_requests_total{variant=\"v2\"}"),
        shed as f64
    );
    // Shed requests never reached V2: only the admitted ones are recorded.
    assert_eq!(
        series(
            &page,
            "rollgate_requests_total{journey=\"other\",variant=\"v2\",class=\"2xx\"}"
        ),
        (10 - shed) as f64
    );
    let s = rig
        .until("concurrency YELLOW", |s| {
            gate(s, "concurrency").is_some_and(|g| g.status == GateStatus::Yellow)
        })
        .await;
    let g = gate(&s, "concurrency").unwrap();
    assert_eq!(g.threshold, 2.0);
    assert!(g.reason.contains("shed"), "{}", g.reason);
    // Once the window has no shedding left, the gate is GREEN again.
    rig.until("concurrency GREEN", |s| {
        gate(s, "concurrency").is_some_and(|g| g.status == GateStatus::Green)
    })
    .await;
    Arc::try_unwrap(rig).ok().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_counted_per_region_for_the_split_skew_gate() {
    let rig = Rg::with_apps(fast("v1"), fast("v2"), |c| {
        c.own_rollout()
            .routing("region_header = \"x-region\"\nregions = [\"eu\", \"us\"]")
            .section(TICKS)
    })
    .await;
    rig.app
        .control
        .command(Command::SetWeight(50.0), "test")
        .await
        .unwrap();
    let mut user = 0;
    let s = until_traffic(&rig, &mut user).await;
    for region in ["eu", "us"] {
        let g = gate(&s, &format!("split_skew/{region}")).unwrap();
        assert!(g.samples >= 1, "{g:?}");
        assert_ne!(g.status, GateStatus::Red, "{g:?}");
    }
    // Opted-out requests are routed but kept out of the user sketch: a
    // region only they use has no gate.
    for i in 0..50 {
        let u = format!("private-{i}");
        rig.get("/", &[("x-user-id", &u), ("x-region", "ap"), ("dnt", "1")])
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gate(&rig.app.control.status(), "split_skew/other").is_none());
    rig.shutdown().await;
}

/// Sends users from eu and us until the split-skew gates have samples.
async fn until_traffic(rig: &Rg, user: &mut u32) -> Arc<StatusView> {
    for _ in 0..200 {
        for region in ["eu", "us", "EU"] {
            let u = format!("user-{user}");
            *user += 1;
            rig.get("/", &[("x-user-id", &u), ("x-region", region)])
                .await;
        }
        let s = rig.app.control.status();
        let ready = ["split_skew/eu", "split_skew/us"]
            .iter()
            .all(|k| gate(&s, k).is_some_and(|g| g.samples > 0));
        if ready {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no split-skew gates: {:#?}", rig.app.control.status().gates);
}
