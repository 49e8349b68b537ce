//! What a client cannot steer with the bytes of its request head, through the
//! real proxy: the headers rollgate sets upstream (a phase's
//! `x-payment-mode`, `x-rollgate-shadow`, the forwarding headers) never carry
//! the client's value, in a phase or after a rollback, and a phase's headers
//! reach the canary only; a valid `rg_bucket` beside a non-ASCII cookie keeps
//! the user where they were; HTTP/2 cookie crumbs reach the HTTP/1.1
//! upstream as one field; other spellings of the payments path are still
//! the payments journey.

mod harness;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use harness::api::state_of;
use harness::config::{FLAGS, JOURNEYS};
use harness::metrics::sum;
use harness::{keys_on, Conf, HttpClient, Rg, Upstream};

/// A 5 % canary in payment test mode, then everyone in live mode.
const PHASES: &str = "[[rollout.phases]]\nname = \"canary-5\"\nweight = 5\nhold = \"1h\"\n\
     headers = { x-payment-mode = \"test\" }\n\
     [[rollout.phases]]\nname = \"full\"\nweight = 100\nheaders = { x-payment-mode = \"live\" }\n";

/// Every control header, as a client would forge it.
const FORGED: [(&str, &str); 7] = [
    ("x-payment-mode", "live"),
    ("x-rollgate-shadow", "1"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-real-ip", "6.6.6.6"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-rollgate-variant", "v2"),
];

/// The headers the upstream saw for user `key` sending every forged header.
async fn upstream_headers(rg: &Rg, key: &str) -> (String, Value) {
    let mut headers = vec![("x-user-id", key)];
    headers.extend(FORGED);
    let r = rg.get("/pay", &headers).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    (r.variant().to_string(), r.json()["headers"].clone())
}

fn assert_only_ours(h: &Value, variant: &str, payment_mode: Option<&str>) {
    let ctx = format!("{variant}: {h}");
    assert_eq!(
        h["x-payment-mode"],
        payment_mode.map_or(Value::Null, |m| json!([m])),
        "{ctx}"
    );
    assert!(h["x-rollgate-shadow"].is_null(), "{ctx}");
    assert!(h["forwarded"].is_null(), "{ctx}");
    assert!(h["x-real-ip"].is_null(), "{ctx}");
    assert_eq!(h["x-forwarded-for"], json!(["127.0.0.1"]), "{ctx}");
    assert_eq!(h["x-forwarded-proto"], json!(["http"]), "{ctx}");
    assert_eq!(h["x-rollgate-variant"], json!([variant]), "{ctx}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn phase_headers_reach_the_canary_only_and_control_headers_never_the_client_s() {
    let (v1, v2) = Upstream::pair().await;
    let rollout = format!("auto_start = true\ntick = \"1h\"\nwindow = \"1h\"\n{FLAGS}\n{PHASES}");
    let rg = Rg::start(&Conf::new(v1.url(), v2.url()).rollout(&rollout)).await;
    rg.wait_for("in canary-5", |s| state_of(s) == "canary")
        .await;

    // In canary-5: the 5 % on V2 in test mode, the 95 % on V1 untouched, and
    // nobody's forged value anywhere.
    let (on_v1, on_v2) = keys_on(5.0, 3);
    for k in &on_v1 {
        let (variant, h) = upstream_headers(&rg, k).await;
        assert_eq!(variant, "v1");
        assert_only_ours(&h, "v1", None);
    }
    for k in &on_v2 {
        let (variant, h) = upstream_headers(&rg, k).await;
        assert_eq!(variant, "v2");
        assert_only_ours(&h, "v2", Some("test"));
    }

    // Rolled back: no phase header for anyone, and still not the client's.
    let r = rg
        .call_json(Method::POST, "/api/v1/rollout/rollback", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for k in on_v1.iter().chain(&on_v2) {
        let (variant, h) = upstream_headers(&rg, k).await;
        assert_eq!(variant, "v1");
        assert_only_ours(&h, "v1", None);
    }
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trusted_proxy_s_forwarding_headers_are_kept_and_appended_to() {
    let (_v1, _v2, rg) = Rg::echo("trusted_proxies = [\"127.0.0.0/8\"]").await;
    let r = rg
        .get(
            "/fwd",
            &[
                ("x-user-id", "behind-lb"),
                ("x-forwarded-for", "198.51.100.7"),
                ("x-forwarded-proto", "https"),
                ("x-real-ip", "6.6.6.6"),
            ],
        )
        .await;
    let h = r.json()["headers"].clone();
    assert_eq!(
        h["x-forwarded-for"],
        json!(["198.51.100.7, 127.0.0.1"]),
        "{h}"
    );
    assert_eq!(h["x-forwarded-proto"], json!(["https"]), "{h}");
    assert!(h["x-real-ip"].is_null(), "{h}");
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookies_survive_non_ascii_neighbours_and_h2_crumbs_are_joined() {
    let (_v1, _v2, rg) = Rg::echo("").await;
    rg.set_weight(50.0).await;
    // A new client gets its rg_bucket...
    let first = rg.get("/c", &[]).await;
    let set = first.set_cookies();
    let bucket = set
        .iter()
        .find_map(|c| {
            c.split(';')
                .next()
                .filter(|kv| kv.starts_with("rg_bucket="))
        })
        .expect("an rg_bucket is set")
        .to_string();
    let variant = first.variant().to_string();
    // ...and keeps it, and its variant, beside another site's non-ASCII
    // cookie and a forged rg_bucket before the real one.
    let cookie = format!("city=Zürich; rg_bucket=0000000000000001.0000000000000000; {bucket}");
    for _ in 0..10 {
        let r = rg.get("/c", &[("cookie", &cookie)]).await;
        assert_eq!(r.variant(), variant);
        assert!(
            r.set_cookies().is_empty(),
            "re-bucketed: {:?}",
            r.set_cookies()
        );
    }
    // Over HTTP/2 the same cookies as crumbs: one field upstream.
    let h2 = HttpClient::h2c();
    let r = h2
        .get(
            &rg.proxy("/c"),
            &[("cookie", "city=Zürich"), ("cookie", &bucket)],
        )
        .await;
    assert_eq!(r.variant(), variant);
    let h = r.json()["headers"].clone();
    assert_eq!(
        h["cookie"],
        json!([format!("city=Zürich; {bucket}")]),
        "{h}"
    );
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_spellings_of_the_payments_path_are_the_payments_journey() {
    let (v1, v2) = Upstream::pair().await;
    let rg = Rg::start(&Conf::new(v1.url(), v2.url()).section(JOURNEYS)).await;
    let paths = [
        "/api/payments",
        "/api//payments",
        "/api/%70ayments",
        "/api/./payments/1",
        "/x/../api/payments",
    ];
    for p in paths {
        let r = rg
            .client
            .post(&rg.proxy(p), &[("x-user-id", "payer")], "{}")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.text());
        // The upstream gets the path as the client wrote it.
        assert_eq!(r.json()["path"], p);
    }
    let page = rg.metrics().await;
    let payments = sum(&page, "rollgate_requests_total", &[("journey", "payments")]);
    assert_eq!(payments, paths.len() as f64, "{page}");
    rg.shutdown().await;
}
