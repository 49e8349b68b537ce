//! `POST /_rollgate/beacon` end to end: a real rollgate on loopback.

mod harness;

use std::sync::Arc;

use http::StatusCode;
use rollgate::control::Command;

use harness::client::header;
use harness::metrics::promtool_check_if_installed;
use harness::upstream::fast;
use harness::{series, Rg};

/// Every user of these tests posts from 127.0.0.1: the address cap and
/// the per-address user quota are lifted (`tests/beacon_abuse.rs` tests
/// the caps).
const BEACONS: &str = r#"
[beacons]
names = ["page_view", "js_error", "first_result_ms", "search_result_click"]
max_events_per_client = 100000
max_users_per_client = 0
"#;

async fn start() -> Rg {
    Rg::with_apps(fast("v1"), fast("v2"), |c| c.own_rollout().section(BEACONS)).await
}

/// Started with half the users on V2.
async fn at_half() -> Rg {
    let rig = start().await;
    rig.app
        .control
        .command(Command::SetWeight(50.0), "test")
        .await
        .unwrap();
    rig
}

fn events(page: &str, t: &str, name: &str, variant: &str) -> f64 {
    series(
        page,
        &format!(
            "rollgate_beacon_events_total{{type=\"{t}\",name=\"{name}\",variant=\"{variant}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_batch_is_counted_for_the_routed_variant() {
    let rig = at_half().await;
    // The body claims V2 for everyone: it must not matter.
    let batch = r#"[{"type":"funnel","name":"page_view","variant":"v2"},
                    {"type":"js_error","name":"js_error"},
                    {"type":"timing","name":"first_result_ms","value":180}]"#;
    let mut per_variant = [0u32; 2];
    for u in 0..40 {
        let user = format!("user-{u}");
        let (status, h, body) = rig.beacon(&[("x-user-id", &user)], batch).await.parts();
        assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");
        assert!(body.is_empty());
        assert!(h.get("set-cookie").is_none(), "a user key needs no cookie");
        let v = header(&h, "x-rollgate-variant").unwrap().to_string();
        // Routing would pick the same variant for this user.
        let (_, h2, _) = rig.get("/search", &[("x-user-id", &user)]).await.parts();
        assert_eq!(header(&h2, "x-rollgate-variant"), Some(v.as_str()));
        per_variant[(v == "v2") as usize] += 1;
    }
    assert!(per_variant[0] > 0 && per_variant[1] > 0, "{per_variant:?}");
    let page = rig.metrics().await;
    for (i, v) in ["v1", "v2"].iter().enumerate() {
        let n = per_variant[i] as f64;
        assert_eq!(events(&page, "funnel", "page_view", v), n);
        assert_eq!(events(&page, "js_error", "js_error", v), n);
        assert_eq!(events(&page, "timing", "first_result_ms", v), n);
        assert_eq!(events(&page, "funnel", "search_result_click", v), 0.0);
    }
    // Beacons are answered by rollgate, not proxied: no request was recorded for them.
    assert_eq!(
        series(
            &page,
            "rollgate_requests_total{journey=\"other\",variant=\"v1\",class=\"2xx\"}"
        ) + series(
            &page,
            "rollgate_requests_total{journey=\"other\",variant=\"v2\",class=\"2xx\"}"
        ),
        40.0
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_is_a_400_with_its_reason_and_counted() {
    let rig = start().await;
    let ok = r#"{"type":"funnel","name":"page_view"}"#;
    let too_many = format!("[{}]", vec![ok; 101].join(","));
    let too_large = format!("[{ok}{}]", " ".repeat(70 * 1024));
    let cases: Vec<(&str, String)> = vec![
        ("not_json", "{nope".into()),
        ("too_large", too_large),
        ("too_many", too_many),
        (
            "unknown_name",
            r#"[{"type":"funnel","name":"email@example.com"}]"#.into(),
        ),
        (
            "unknown_type",
            r#"[{"type":"pageview","name":"page_view"}]"#.into(),
        ),
        (
            "bad_value",
            r#"[{"type":"timing","name":"first_result_ms","value":"fast"}]"#.into(),
        ),
    ];
    for (reason, body) in &cases {
        let (status, _, answer) = rig
            .beacon(&[("x-user-id", "u1")], body.clone())
            .await
            .parts();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
        assert_eq!(answer, format!("{reason}\n"), "{reason}");
    }
    let page = rig.metrics().await;
    for (reason, _) in &cases {
        let n = series(
            &page,
            &format!("rollgate_beacon_rejected_total{{reason=\"{reason}\"}}"),
        );
        assert_eq!(n, 1.0, "{reason}");
    }
    promtool_check_if_installed(&page);
    // Nothing of a rejected batch was counted, and the unknown name is no label.
    assert!(!page.contains("email@example.com"));
    for v in ["v1", "v2"] {
        assert_eq!(events(&page, "funnel", "page_view", v), 0.0);
    }
    // Other methods on the beacon path are not forwarded either.
    let (status, h, _) = rig.get("/_rollgate/beacon", &[]).await.parts();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&h, "allow"), Some("POST"));
    rig.assert_serving("rejected beacons").await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beacon_without_a_key_gets_a_bucket_and_opt_outs_are_counted_without_one() {
    let rig = at_half().await;
    let batch = r#"[{"type":"funnel","name":"page_view"}]"#;
    let (status, h, _) = rig.beacon(&[], batch).await.parts();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cookie = header(&h, "set-cookie").unwrap().to_string();
    assert!(cookie.starts_with("rg_bucket="), "{cookie}");
    let variant = header(&h, "x-rollgate-variant").unwrap().to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    // With the cookie: same variant on beacons and pages, no new cookie.
    for _ in 0..3 {
        let (_, h, _) = rig.beacon(&[("cookie", &pair)], batch).await.parts();
        assert!(h.get("set-cookie").is_none());
        assert_eq!(header(&h, "x-rollgate-variant"), Some(variant.as_str()));
        let (_, h, _) = rig.get("/search", &[("cookie", &pair)]).await.parts();
        assert_eq!(header(&h, "x-rollgate-variant"), Some(variant.as_str()));
    }
    // Sec-GPC / DNT: counted, and the functional routing cookie is still set.
    for opt_out in [("sec-gpc", "1"), ("dnt", "1")] {
        let (status, h, _) = rig.beacon(&[opt_out], batch).await.parts();
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(header(&h, "set-cookie").unwrap().starts_with("rg_bucket="));
    }
    let page = rig.metrics().await;
    let total =
        events(&page, "funnel", "page_view", "v1") + events(&page, "funnel", "page_view", "v2");
    assert_eq!(total, 6.0);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_beacons_lose_no_count() {
    let rig = Arc::new(at_half().await);
    let batch = r#"[{"type":"funnel","name":"page_view"},
                    {"type":"funnel","name":"search_result_click"},
                    {"type":"timing","name":"first_result_ms","value":42.5}]"#;
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let rig = rig.clone();
            tokio::spawn(async move {
                let user = format!("user-{i}");
                let (status, _, _) = rig.beacon(&[("x-user-id", &user)], batch).await.parts();
                assert_eq!(status, StatusCode::NO_CONTENT);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let page = rig.metrics().await;
    let both = |t: &str, n: &str| events(&page, t, n, "v1") + events(&page, t, n, "v2");
    assert_eq!(both("funnel", "page_view"), 1_000.0);
    assert_eq!(both("funnel", "search_result_click"), 1_000.0);
    assert_eq!(both("timing", "first_result_ms"), 1_000.0);
    assert!(events(&page, "funnel", "page_view", "v2") > 0.0);
    Arc::try_unwrap(rig).ok().unwrap().shutdown().await;
}
