//! Request bodies that come slowly, partly or never, and response bodies
//! that stop: what each one counts as.
//!
//! - A client's slow body is the client's: a latency sample and the
//!   upstream's timeout start once the upstream has the whole request; a
//!   body not complete within `server.client_body_timeout` is a `408` of its
//!   journey, the connection closed, never an upstream error, a V2 5xx, a
//!   latency sample or a failed payment. A client leaving mid-body likewise.
//! - An upstream's broken body is the upstream's: silent past
//!   `upstreams.body_idle_timeout` after its head, it is cut and counted as
//!   a `timeout`; reset mid-body, as a `reset`; both count as server errors
//!   for the variant's error gates although their head said `200`.
//! - A beacon that declares more than it sends is let go after a deadline.

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rollgate::control::gates::VariantKpi;
use rollgate::telemetry::CellCounts;

use harness::api::state_of;
use harness::client::raw_status;
use harness::config::{FLAGS, JOURNEYS};
use harness::metrics::sum;
use harness::slow_body::{connect_as_attacker, post_head, read_until_closed, trickle};
use harness::upstream::{fault_upstream, Fault};
use harness::{eventually, keys_on, metric, Conf, Rg, Upstream};

/// The payment journey's V2 series of `name`.
fn payments_v2(m: &str, name: &str) -> f64 {
    metric(m, name, &[("journey", "payments"), ("variant", "v2")]).unwrap_or(0.0)
}

fn payments_v2_class(m: &str, class: &str) -> f64 {
    metric(
        m,
        "rollgate_requests_total",
        &[("journey", "payments"), ("variant", "v2"), ("class", class)],
    )
    .unwrap_or(0.0)
}

fn upstream_errors(m: &str) -> f64 {
    sum(m, "rollgate_upstream_errors_total", &[])
}

/// Journeys, a 1 s upstream timeout and short body deadlines.
fn conf(v1: String, v2: String, client_body_timeout: &str) -> Conf {
    Conf::new(v1, v2)
        .server(&format!("client_body_timeout = \"{client_body_timeout}\""))
        .upstreams("timeout = \"1s\"\nbody_idle_timeout = \"500ms\"")
        .section(JOURNEYS)
}

/// rollgate at 50 % V2 in front of `v2`, and a user key on V2.
async fn rig(v1: &Upstream, v2: String, client_body_timeout: &str) -> (Rg, String) {
    let rg = Rg::start(&conf(v1.url(), v2, client_body_timeout)).await;
    rg.set_weight(50.0).await;
    let (_, v2_keys) = keys_on(50.0, 1);
    (rg, v2_keys[0].clone())
}

/// Every V2 cell of the telemetry, summed: what the error gates read.
fn v2_total(rg: &Rg) -> CellCounts {
    let snap = rg.app.telemetry.snapshot();
    let mut total = CellCounts::default();
    for c in snap.cells.iter().skip(1).step_by(2) {
        total
            .classes
            .iter_mut()
            .zip(c.classes)
            .for_each(|(a, n)| *a += n);
        total.broken += c.broken;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_body_trickled_over_two_seconds_is_neither_v2_latency_nor_a_timeout() {
    let (v1, v2) = Upstream::pair().await;
    let (rg, user) = rig(&v1, v2.url(), "10s").await;

    let body = br#"{"amount": 100, "currency": "EUR", "card": "tok_visa"}"#;
    let head = post_head(
        "/api/payments/charge",
        &user,
        body.len(),
        "connection: close\r\n",
    );
    let started = Instant::now();
    let mut s = connect_as_attacker(rg.app.proxy_addr).await;
    // Twice the upstream timeout, well within the client's deadline.
    trickle(&mut s, &head, body, 10, Duration::from_secs(2)).await;
    let answer = read_until_closed(&mut s).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.contains("x-upstream: v2"), "{answer}");
    assert!(
        answer.contains(&format!("\"body_bytes\":{}", body.len())),
        "{answer}"
    );

    let m = rg.metrics().await;
    assert_eq!(payments_v2_class(&m, "2xx"), 1.0, "{m}");
    assert_eq!(
        payments_v2(&m, "rollgate_request_duration_seconds_count"),
        1.0
    );
    // The echo upstream answers at once: its own latency, not the client's 2 s.
    let latency = payments_v2(&m, "rollgate_request_duration_seconds_sum");
    assert!(
        latency < 1.0,
        "V2 payments latency {latency} s includes the trickle"
    );
    assert_eq!(upstream_errors(&m), 0.0, "{m}");
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stalled_past_client_body_timeout_are_408s_of_the_client_and_trip_nothing() {
    let (v1, v2) = Upstream::pair().await;
    // A live canary at 50 % whose request path rolls back after 2 failed payments.
    let rollout = format!(
        "auto_start = true\ntick = \"1h\"\nwindow = \"1h\"\nmin_samples = 5\nconsecutive_payment_failures = 2\n{FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-50\"\nweight = 50\nhold = \"1h\"\n\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\n"
    );
    let rg = Rg::start(&conf(v1.url(), v2.url(), "500ms").rollout(&rollout)).await;
    rg.wait_for("in canary-50", |s| state_of(s) == "canary")
        .await;
    let (_, v2_keys) = keys_on(50.0, 4);

    // Four payments on V2 keys, each declaring 100 bytes and sending 10.
    let stalled: Vec<_> = v2_keys
        .iter()
        .map(|k| {
            let (addr, head) = (
                rg.app.proxy_addr,
                post_head("/api/payments/charge", k, 100, ""),
            );
            tokio::spawn(async move {
                let mut s = connect_as_attacker(addr).await;
                trickle(&mut s, &head, b"{\"amount\":", 1, Duration::ZERO).await;
                read_until_closed(&mut s).await
            })
        })
        .collect();
    for t in stalled {
        // Answered and closed by rollgate: the client never finished its body.
        let answer = t.await.unwrap();
        assert_eq!(raw_status(&answer), 408, "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.contains("x-rollgate-variant: v2"), "{answer}");
    }

    let m = rg.metrics().await;
    assert_eq!(payments_v2_class(&m, "4xx"), 4.0, "{m}");
    assert_eq!(payments_v2_class(&m, "5xx"), 0.0, "{m}");
    assert_eq!(upstream_errors(&m), 0.0, "{m}");
    assert_eq!(
        payments_v2(&m, "rollgate_request_duration_seconds_count"),
        0.0
    );
    assert!(v2.seen().is_empty() || v2.seen().iter().all(|s| s.body_bytes < 100));
    // Four 408s in a row are not four failed payments.
    let s = rg.status().await;
    assert_eq!(state_of(&s), "canary", "{s}");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(50.0));
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_is_a_4xx_of_its_journey_and_nothing_of_v2() {
    let (v1, v2) = Upstream::pair().await;
    let (rg, user) = rig(&v1, v2.url(), "10s").await;
    let mut s = connect_as_attacker(rg.app.proxy_addr).await;
    let head = post_head("/api/payments/charge", &user, 100, "");
    trickle(&mut s, &head, b"{\"amount\":", 1, Duration::ZERO).await;
    // Let the head and the first bytes reach the upstream, then leave.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);

    let m = eventually(
        "the cut payment counted",
        Duration::from_millis(50),
        || async {
            let m = rg.metrics().await;
            if payments_v2_class(&m, "4xx") == 1.0 {
                Ok(m)
            } else {
                Err(m)
            }
        },
    )
    .await;
    assert_eq!(payments_v2_class(&m, "5xx"), 0.0, "{m}");
    assert_eq!(upstream_errors(&m), 0.0, "{m}");
    assert_eq!(
        payments_v2(&m, "rollgate_request_duration_seconds_count"),
        0.0
    );
    rg.shutdown().await;
}

/// A `GET` on V2 whose answer, head `200`, is cut mid-body; the client sees
/// the head and less than the promised 100000 bytes before the close.
async fn get_cut_answer(rg: &Rg, user: &str) {
    let mut s = tokio::net::TcpStream::connect(rg.app.proxy_addr)
        .await
        .unwrap();
    let head = format!(
        "GET /x HTTP/1.1\r\nhost: rollgate.test\r\nx-user-id: {user}\r\nconnection: close\r\n\r\n"
    );
    trickle(&mut s, &head, b"", 1, Duration::ZERO).await;
    let answer = read_until_closed(&mut s).await;
    assert_eq!(
        raw_status(&answer),
        200,
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(answer.len() < 100_000, "the whole body arrived");
}

/// Waits until V2's telemetry shows one broken body, and checks what the
/// error gates make of it: one request, one server error, although its
/// status class is 2xx.
async fn one_broken_v2_answer(rg: &Rg, kind: &str) {
    let c = eventually(
        "the cut body counted",
        Duration::from_millis(50),
        || async {
            let c = v2_total(rg);
            if c.broken >= 1 {
                Ok(c)
            } else {
                Err(format!("{c:?}"))
            }
        },
    )
    .await;
    assert_eq!((c.requests(), c.classes[1], c.broken), (1, 1, 1), "{c:?}");
    let kpi = VariantKpi::of(&c);
    assert_eq!(
        (kpi.server_errors, kpi.error_rate),
        (1, Some(1.0)),
        "{kpi:?}"
    );
    let m = rg.metrics().await;
    let counted = metric(
        &m,
        "rollgate_upstream_errors_total",
        &[("variant", "v2"), ("kind", kind)],
    );
    assert_eq!(counted, Some(1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_silent_after_its_head_is_cut_and_counted_as_a_v2_timeout_and_error() {
    let v1 = Upstream::start("v1", harness::Mode::Echo).await;
    let stall: SocketAddr = fault_upstream(Fault::StallMidBody).await;
    let (rg, user) = rig(&v1, format!("http://{stall}"), "10s").await;
    get_cut_answer(&rg, &user).await;
    one_broken_v2_answer(&rg, "timeout").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_resetting_mid_body_counts_in_v2s_error_rate() {
    let v1 = Upstream::start("v1", harness::Mode::Echo).await;
    let reset = fault_upstream(Fault::ResetMidBody).await;
    let (rg, user) = rig(&v1, format!("http://{reset}"), "10s").await;
    get_cut_answer(&rg, &user).await;
    one_broken_v2_answer(&rg, "reset").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beacon_declaring_more_than_it_sends_is_let_go_after_the_deadline() {
    let (v1, v2) = Upstream::pair().await;
    let (rg, user) = rig(&v1, v2.url(), "500ms").await;
    let mut s = connect_as_attacker(rg.app.proxy_addr).await;
    let head = post_head("/_rollgate/beacon", &user, 100, "");
    trickle(&mut s, &head, b"[", 1, Duration::ZERO).await;
    let answer = read_until_closed(&mut s).await;
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_stream_stalled_past_client_body_timeout_is_408_and_the_connection_goes_on() {
    let (v1, v2) = Upstream::pair().await;
    let (rg, user) = rig(&v1, v2.url(), "500ms").await;
    let addr = rg.app.proxy_addr;
    let tcp = connect_as_attacker(addr).await;
    let (mut h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = |path: &str| {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{path}"))
            .header("x-user-id", user.as_str())
            .header("content-length", "100")
            .body(())
            .unwrap()
    };
    // 10 of the 100 declared bytes, then silence on this stream.
    let (resp, mut body) = h2.send_request(req("/api/payments/charge"), false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"{\"amount\":"), false)
        .unwrap();
    let resp = tokio::time::timeout(harness::DEADLINE, resp)
        .await
        .expect("an answer within the deadline")
        .expect("an answer, not a reset");
    assert_eq!(resp.status(), http::StatusCode::REQUEST_TIMEOUT);
    assert!(resp.headers().get("connection").is_none());

    // The same connection still carries a prompt request.
    let mut h2 = h2.ready().await.expect("the connection is still open");
    let (resp, mut body) = h2.send_request(req("/api/payments/ok"), false).unwrap();
    body.send_data(bytes::Bytes::from(vec![b'x'; 100]), true)
        .unwrap();
    let resp = tokio::time::timeout(harness::DEADLINE, resp)
        .await
        .expect("an answer")
        .expect("an answer, not a reset");
    assert_eq!(resp.status(), http::StatusCode::OK);

    let m = rg.metrics().await;
    assert_eq!(payments_v2_class(&m, "4xx"), 1.0, "{m}");
    assert_eq!(payments_v2_class(&m, "2xx"), 1.0, "{m}");
    assert_eq!(upstream_errors(&m), 0.0, "{m}");
    assert_eq!(
        payments_v2(&m, "rollgate_request_duration_seconds_count"),
        1.0
    );
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_declaring_more_than_it_sends_is_let_go_after_ten_seconds() {
    let (v1, v2) = Upstream::pair().await;
    let (rg, _) = rig(&v1, v2.url(), "500ms").await;
    let mut s = connect_as_attacker(rg.app.admin_addr).await;
    let head = format!(
        "PUT /api/v1/weights HTTP/1.1\r\nhost: admin\r\nauthorization: {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n",
        rg.bearer()
    );
    let started = Instant::now();
    trickle(&mut s, &head, b"{", 1, Duration::ZERO).await;
    let answer = read_until_closed(&mut s).await;
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "the admin bound is 10 s"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // Nothing changed.
    assert_eq!(rg.status().await["weights"]["v2"].as_f64(), Some(50.0));
    rg.shutdown().await;
}
