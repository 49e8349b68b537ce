//! The proxy's limits on a client: head size (`max_header_bytes`, on
//! HTTP/1.1 and HTTP/2), the time to send a head (`header_read_timeout`,
//! slowloris and silent connections) and the number of connections
//! (`max_connections`). Each is enforced, and the process still serves a
//! normal request afterwards.
//!
//! No timing thresholds: these only assert that something happens
//! eventually (bounded by a generous deadline) or has not happened while a
//! condition holds.

mod harness;

use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness::client::{many_headers, one_big_header, start_of};
use harness::edge_http::keepalive_request;
use harness::{raw_exchange, raw_status, HttpClient, Rg, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_heads_are_431_on_http1_and_refused_on_h2() {
    let (_v1, _v2, rg) = Rg::echo("max_header_bytes = 16384").await;
    let addr = rg.app.proxy_addr;
    let one_big = one_big_header(20 * 1024);
    let many_small = many_headers(300, 80);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(20 * 1024));
    for (what, req) in [
        ("one 20 KiB header", &one_big),
        ("300 small headers", &many_small),
        ("20 KiB request target", &long_uri),
    ] {
        let answer = raw_exchange(addr, req.as_bytes()).await;
        let status = raw_status(&answer);
        println!("{what}: {status}");
        assert_eq!(status, 431, "{what}: {}", start_of(&answer));
        rg.assert_serving(what).await;
    }

    // HTTP/2: a header list over the limit is refused (431 or a stream reset);
    // the connection's other streams and new connections keep working.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .uri(format!("http://{addr}/big"))
        .header("x-big", "z".repeat(20 * 1024))
        .body(())
        .unwrap();
    let outcome = match h2.send_request(req, true) {
        Err(e) => format!("refused locally: {e}"),
        Ok((resp, _)) => match tokio::time::timeout(DEADLINE, resp)
            .await
            .expect("h2 answer")
        {
            Ok(r) => {
                assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                "431".into()
            }
            Err(e) => format!("stream error: {e}"),
        },
    };
    println!("h2 oversize header list: {outcome}");
    let r = HttpClient::h2c()
        .get(&rg.proxy("/h2-after"), &[("x-user-id", "u")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    rg.assert_serving("an oversize h2 header list").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connection_is_closed_after_the_header_read_timeout() {
    let (_v1, _v2, rg) = Rg::echo("header_read_timeout = \"1s\"").await;
    let addr = rg.app.proxy_addr;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Trickle one header byte every 100 ms; the server must give up on us.
    let start = Instant::now();
    let mut trickle = b"X-Slow: ".iter().chain(b"a".iter().cycle());
    let mut answer = Vec::new();
    let closed = loop {
        assert!(
            start.elapsed() < DEADLINE,
            "the slow connection is still open after {DEADLINE:?}"
        );
        let byte = *trickle.next().unwrap();
        if s.write_all(&[byte]).await.is_err() {
            break "write failed";
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => break "closed",
            Ok(Err(_)) => break "reset",
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    };
    let answer = String::from_utf8_lossy(&answer).into_owned();
    // Either a bare close or a 408 before it; never a forwarded request.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{closed}: {answer:?}"
    );
    println!("slowloris: {closed} after {:?}", start.elapsed());

    // A second slow client that sends nothing at all after connecting.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
        .await
        .expect("an idle connection is closed within the deadline");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    rg.assert_serving("slowloris").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_connection_waits_while_two_are_open_under_max_connections_2() {
    let (_v1, _v2, rg) =
        Rg::echo("max_connections = 2\nworkers = 1\nheader_read_timeout = \"60s\"").await;
    let addr = rg.app.proxy_addr;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(keepalive_request(&mut a, "/a")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(keepalive_request(&mut b, "/b")
        .await
        .starts_with("HTTP/1.1 200"));

    // The third connects (the kernel backlog holds it) but is not served.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\nx-user-id: u\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(700), c.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "served while two connections were open: {early:?}"
    );
    // The two open ones still work.
    assert!(keepalive_request(&mut a, "/a2")
        .await
        .starts_with("HTTP/1.1 200"));

    // Closing one lets the third in.
    drop(b);
    let n = tokio::time::timeout(DEADLINE, c.read(&mut buf))
        .await
        .expect("the third connection is served once one closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A burst of further connections queues instead of crashing anything.
    drop(a);
    drop(c);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let req = format!("GET /burst/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-user-id: u\r\n\r\n");
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = String::new();
                tokio::time::timeout(DEADLINE, s.read_to_string(&mut out))
                    .await
                    .expect("served within the deadline")
                    .unwrap();
                out
            })
        })
        .collect();
    for t in tasks {
        let out = t.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    rg.assert_serving("a queue at max_connections").await;
    rg.shutdown().await;
}
