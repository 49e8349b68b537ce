//! V2 misbehaving at the transport level: down, slower than the timeout,
//! refusing, hanging, resetting mid-body, answering garbage. Each time the
//! client gets a 502 / 504 (or, mid-body, a cut response), the failure is
//! counted by kind in `rollgate_upstream_errors_total` and as a 5xx in the V2
//! cells the controller reads, and V1 users are served throughout. Finally
//! the pool recovers when V2 comes back on the same port.

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;

use harness::metrics::sum;
use harness::upstream::{closed_port, fault_upstream, Fault};
use harness::{keys_on, metric, Conf, HttpClient, Lenient, Mode, Rg, Upstream, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_down_is_502_counted_as_connect_and_v1_users_are_unaffected() {
    let v1 = Upstream::start("v1", Mode::Echo).await;
    let dead = closed_port().await;
    let h = Rg::start(&Conf::new(v1.url(), format!("http://{dead}"))).await;
    h.set_weight(50.0).await;
    let (v1_keys, v2_keys) = keys_on(50.0, 20);
    let connect_errors = |m: &str| {
        metric(
            m,
            "rollgate_upstream_errors_total",
            &[("variant", "v2"), ("kind", "connect")],
        )
    };
    assert_eq!(connect_errors(&h.metrics().await), Some(0.0));

    for (a, b) in v1_keys.iter().zip(&v2_keys) {
        let r = h.client.get(&h.proxy("/x"), &[("x-user-id", b)]).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "V2 user {b}: {}",
            r.text()
        );
        assert_eq!(r.variant(), "v2");
        let r = h.client.get(&h.proxy("/x"), &[("x-user-id", a)]).await;
        assert_eq!(r.status, StatusCode::OK, "V1 user {a}: {}", r.text());
        assert_eq!(r.json()["upstream"], "v1");
    }
    let m = h.metrics().await;
    assert_eq!(connect_errors(&m), Some(v2_keys.len() as f64), "{m}");
    assert_eq!(
        metric(
            &m,
            "rollgate_upstream_errors_total",
            &[("variant", "v1"), ("kind", "connect")]
        ),
        Some(0.0)
    );
    assert_eq!(requests(&m, "v2", "5xx"), Some(v2_keys.len() as f64));
    assert_eq!(requests(&m, "v1", "2xx"), Some(v1_keys.len() as f64));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_slower_than_the_timeout_is_504_counted_as_timeout_and_v1_users_are_unaffected() {
    let v1 = Upstream::start("v1", Mode::Echo).await;
    let v2 = Upstream::start("v2", Mode::Slow(Duration::from_secs(5))).await;
    let h = Rg::start(&Conf::new(v1.url(), v2.url()).upstreams("timeout = \"300ms\"")).await;
    h.set_weight(50.0).await;
    let (v1_keys, v2_keys) = keys_on(50.0, 8);

    // V2 users wait concurrently; V1 users are served meanwhile.
    let slow: Vec<_> = v2_keys
        .iter()
        .map(|k| {
            let (client, url, k) = (h.client.clone(), h.proxy("/slow"), k.clone());
            tokio::spawn(async move { client.get(&url, &[("x-user-id", &k)]).await })
        })
        .collect();
    for k in &v1_keys {
        let r = h.client.get(&h.proxy("/fast"), &[("x-user-id", k)]).await;
        assert_eq!(r.status, StatusCode::OK, "V1 user {k}: {}", r.text());
        assert_eq!(r.variant(), "v1");
    }
    for t in slow {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
        assert_eq!(r.variant(), "v2");
    }
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rollgate_upstream_errors_total",
            &[("variant", "v2"), ("kind", "timeout")]
        ),
        Some(v2_keys.len() as f64),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "rollgate_upstream_errors_total",
            &[("variant", "v1"), ("kind", "timeout")]
        ),
        Some(0.0)
    );
    // Still fine for V1 afterwards.
    assert_eq!(h.variant_of(&v1_keys[0], "/after").await, "v1");
    h.shutdown().await;
}

/// `x-user-id` keys on V1 and on V2 at the current weight, as the proxy
/// routes them (read from `x-rollgate-variant`; bodies are not read, so this
/// works whatever V2 does).
async fn split_keys(rg: &Rg, n: usize) -> (Vec<String>, Vec<String>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for i in 0.. {
        let k = format!("user-{i}");
        let req = http::Request::builder()
            .uri(rg.proxy("/whoami"))
            .header("x-user-id", &k)
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = tokio::time::timeout(DEADLINE, client.request(req))
            .await
            .expect("an answer within the deadline")
            .expect("a response head");
        let v = resp
            .headers()
            .get("x-rollgate-variant")
            .map(|v| v.to_str().unwrap().to_string());
        match v.as_deref() {
            Some("v1") if v1.len() < n => v1.push(k),
            Some("v2") if v2.len() < n => v2.push(k),
            _ => {}
        }
        if v1.len() == n && v2.len() == n {
            break;
        }
    }
    (v1, v2)
}

/// `rollgate_requests_total` of the `other` journey.
fn requests(m: &str, variant: &str, class: &str) -> Option<f64> {
    metric(
        m,
        "rollgate_requests_total",
        &[("journey", "other"), ("variant", variant), ("class", class)],
    )
}

fn errors(m: &str, variant: &str, kind: &str) -> f64 {
    metric(
        m,
        "rollgate_upstream_errors_total",
        &[("variant", variant), ("kind", kind)],
    )
    .unwrap_or(0.0)
}

fn v2_5xx(m: &str) -> f64 {
    sum(
        m,
        "rollgate_requests_total",
        &[("variant", "v2"), ("class", "5xx")],
    )
}

/// rollgate with a healthy V1 and `v2` at 50 %, a short upstream timeout.
async fn rig(v2: SocketAddr) -> (Upstream, Rg) {
    let v1 = Upstream::start("v1", Mode::Echo).await;
    let conf = Conf::new(v1.url(), format!("http://{v2}"))
        .server("workers = 1")
        .upstreams("timeout = \"500ms\"\nconnect_timeout = \"500ms\"");
    let rg = Rg::start(&conf).await;
    let r = rg
        .call(http::Method::PUT, "/api/v1/weights", r#"{"v2": 50}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    (v1, rg)
}

/// V2 users get `want` (a status, or `None` for a cut body) while V1 users
/// interleaved with them all get 200 from V1.
async fn v1_unaffected_while_v2(rg: &Rg, v1: &Upstream, want: Option<StatusCode>, what: &str) {
    let (v1_keys, v2_keys) = split_keys(rg, 5).await;
    let before = v1.seen().len();
    let client = Lenient::new();
    for (a, b) in v1_keys.iter().zip(&v2_keys) {
        let got = client.get(&rg.proxy("/work"), &[("x-user-id", b)]).await;
        match (want, &got) {
            (Some(code), Ok(r)) => assert_eq!(r.status, code, "{what}: V2 user {b}"),
            (None, Err(e)) => assert!(e.contains("body"), "{what}: V2 user {b}: {e}"),
            _ => panic!("{what}: V2 user {b}: expected {want:?}, got {got:?}"),
        }
        let got = client.get(&rg.proxy("/work"), &[("x-user-id", a)]).await;
        let r = got.unwrap_or_else(|e| panic!("{what}: V1 user {a}: {e}"));
        let (status, body) = (r.status, r.body);
        assert_eq!(status, StatusCode::OK, "{what}: V1 user {a}");
        assert!(
            String::from_utf8_lossy(&body).contains("\"v1\""),
            "{what}: {body:?}"
        );
    }
    assert!(v1.seen().len() >= before + v1_keys.len(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_refusing_is_502_connect() {
    let dead = closed_port().await;
    let (v1, rg) = rig(dead).await;
    v1_unaffected_while_v2(&rg, &v1, Some(StatusCode::BAD_GATEWAY), "refusing").await;
    let m = rg.metrics().await;
    assert!(errors(&m, "v2", "connect") >= 5.0, "{m}");
    assert_eq!(errors(&m, "v1", "connect"), 0.0);
    assert!(v2_5xx(&m) >= 5.0);
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_hanging_is_504_after_the_upstream_timeout() {
    let hang = fault_upstream(Fault::Hang).await;
    let (v1, rg) = rig(hang).await;
    let start = Instant::now();
    v1_unaffected_while_v2(&rg, &v1, Some(StatusCode::GATEWAY_TIMEOUT), "hanging").await;
    let m = rg.metrics().await;
    assert!(errors(&m, "v2", "timeout") >= 5.0, "{m}");
    assert_eq!(errors(&m, "v1", "timeout"), 0.0);
    // Bounded by the configured timeout, not by the hang (which is forever).
    assert!(start.elapsed() < DEADLINE);
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_resetting_mid_body_cuts_the_response_and_counts_a_reset() {
    let reset = fault_upstream(Fault::ResetMidBody).await;
    let (v1, rg) = rig(reset).await;
    let before = errors(&rg.metrics().await, "v2", "reset");
    v1_unaffected_while_v2(&rg, &v1, None, "resetting mid-body").await;
    // The body error is counted when the proxy's response body sees it.
    let start = Instant::now();
    loop {
        let m = rg.metrics().await;
        if errors(&m, "v2", "reset") >= before + 5.0 {
            assert_eq!(errors(&m, "v1", "reset"), 0.0);
            break;
        }
        assert!(start.elapsed() < DEADLINE, "resets not counted: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rg.assert_serving("V2 resetting mid-body").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_answering_garbage_is_502_protocol() {
    let garbage = fault_upstream(Fault::Garbage).await;
    let (v1, rg) = rig(garbage).await;
    v1_unaffected_while_v2(&rg, &v1, Some(StatusCode::BAD_GATEWAY), "garbage").await;
    let m = rg.metrics().await;
    assert!(errors(&m, "v2", "protocol") >= 5.0, "{m}");
    assert_eq!(errors(&m, "v1", "protocol"), 0.0);
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_when_v2_comes_back_on_the_same_port() {
    let mut v2 = Upstream::start("v2", Mode::Echo).await;
    let (v1, rg) = rig(v2.addr).await;
    let (v1_keys, v2_keys) = split_keys(&rg, 8).await;
    let client = HttpClient::http1();
    let lenient = Lenient::new();

    // Warm the pool: V2 keeps idle keep-alive connections from rollgate.
    for k in &v2_keys {
        let r = client.get(&rg.proxy("/warm"), &[("x-user-id", k)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-upstream"), Some("v2"));
    }
    // V2 dies: listener and every pooled connection closed.
    v2.stop().await;
    for (a, b) in v1_keys.iter().zip(&v2_keys) {
        let status = lenient
            .get(&rg.proxy("/down"), &[("x-user-id", b)])
            .await
            .expect("an answer from rollgate")
            .status;
        assert_eq!(
            status,
            StatusCode::BAD_GATEWAY,
            "V2 user {b} while V2 is down"
        );
        let r = client.get(&rg.proxy("/down"), &[("x-user-id", a)]).await;
        assert_eq!(r.status, StatusCode::OK, "V1 user {a}");
    }
    // V2 is back on the same port: every V2 request succeeds again, on new
    // pooled connections (no stale one is handed out).
    v2.restart().await;
    let served_before = v2.seen().len();
    for round in 0..3 {
        for k in &v2_keys {
            let r = client.get(&rg.proxy("/back"), &[("x-user-id", k)]).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "round {round}, V2 user {k}: {}",
                r.text()
            );
            assert_eq!(r.header("x-upstream"), Some("v2"));
        }
    }
    assert_eq!(v2.seen().len(), served_before + 3 * v2_keys.len());
    let m = rg.metrics().await;
    assert!(
        errors(&m, "v2", "connect") + errors(&m, "v2", "reset") >= 8.0,
        "{m}"
    );
    drop(v1);
    rg.shutdown().await;
}
