//! The proxy over HTTP/2: h2c requests and bodies, several streams on one
//! connection, and a rapid-reset burst that must leave the proxy serving.

mod harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use tokio::net::TcpStream;

use harness::metrics::sum;
use harness::{HttpClient, Rg, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2c_requests_are_proxied() {
    let (_v1, _v2, h) = Rg::echo("").await;
    h.set_weight(100.0).await;
    let h2 = HttpClient::h2c();

    let r = h2
        .get(&h.proxy("/h2/page?q=1"), &[("x-user-id", "h2-user")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.variant(), "v2");
    let echo = r.json();
    assert_eq!(echo["upstream"], "v2");
    assert_eq!(echo["path"], "/h2/page");
    // The upstream hears HTTP/1.1 with the Host the client asked for.
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"][0], h.app.proxy_addr.to_string());
    assert_eq!(echo["headers"]["x-rollgate-variant"][0], "v2");

    // A request body over h2c, several streams on one connection.
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let h2 = h2.clone();
        let url = h.proxy("/h2/upload");
        tasks.push(tokio::spawn(async move {
            let body = vec![b'a'; (1000 * i) as usize];
            let r = h2.post(&url, &[("x-user-id", "h2-user")], body).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["body_bytes"], 1000 * i);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_burst_leaves_the_proxy_serving() {
    let (v1, v2, rg) = Rg::echo("").await;
    let addr = rg.app.proxy_addr;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (h2, conn) = h2::client::Builder::new()
        .max_concurrent_reset_streams(10_000)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    let conn_task = tokio::spawn(conn);
    let mut opened = 0u32;
    let mut refused = None;
    for i in 0..5_000u32 {
        let mut h2 = match tokio::time::timeout(DEADLINE, h2.clone().ready()).await {
            Ok(Ok(h2)) => h2,
            Ok(Err(e)) => {
                refused = Some(format!("after {i} streams: {e}"));
                break;
            }
            Err(_) => panic!("h2 client stuck after {i} streams"),
        };
        let req = http::Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/reset/{i}"))
            .header("x-user-id", format!("u{i}"))
            .body(())
            .unwrap();
        match h2.send_request(req, false) {
            Ok((_resp, mut stream)) => {
                opened += 1;
                stream.send_reset(h2::Reason::CANCEL);
            }
            Err(e) => {
                refused = Some(format!("after {i} streams: {e}"));
                break;
            }
        }
    }
    // The server may end the abusive connection (GOAWAY ENHANCE_YOUR_CALM)
    // or keep it; either way it must not crash or stop serving others.
    let end = tokio::time::timeout(Duration::from_secs(2), conn_task).await;
    println!(
        "rapid reset: opened and reset {opened} streams; client side: {}; connection: {end:?}",
        refused.as_deref().unwrap_or("never refused")
    );
    assert!(opened > 0);
    let reached = v1.seen().len() + v2.seen().len();
    println!("requests that reached an upstream before their reset: {reached}");
    let r = HttpClient::h2c()
        .get(&rg.proxy("/after-reset"), &[("x-user-id", "u")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    rg.assert_serving("an h2 rapid-reset burst").await;
    // Nothing stays counted as in flight.
    let start = Instant::now();
    loop {
        let m = rg.metrics().await;
        let inflight = sum(&m, "rollgate_inflight_requests", &[]);
        if inflight == 0.0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "in flight stays {inflight}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rg.shutdown().await;
}
