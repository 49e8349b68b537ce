//! Bad input at the edge (issue 5): each class of hostile or broken input
//! gets its documented answer, and the process still serves a normal request
//! afterwards. The input -> outcome table is `tests/README.md`.
//!
//! No timing thresholds: slowloris and the connection cap only assert that
//! something happens eventually (bounded by a generous deadline) or has not
//! happened while a condition holds.

mod common;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{raw_exchange, raw_status, HttpClient};
use support::{config_text, quiet_rest, run_bin, Counting, Rg, DEADLINE};

/// rollgate in front of two counting upstreams, with extra `[server]` lines.
async fn rig(server: &str) -> (Counting, Counting, Rg) {
    let v1 = Counting::start("v1").await;
    let v2 = Counting::start("v2").await;
    let rest = quiet_rest(&v1.url(), &v2.url(), "");
    let server = server.to_string();
    let rg = Rg::start(move |dir| config_text(dir, &server, &rest)).await;
    (v1, v2, rg)
}

fn head(answer: &str) -> &str {
    &answer[..answer.len().min(300)]
}

// ===== 1. malformed request lines and invalid header bytes =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_and_invalid_header_bytes_are_400() {
    let (v1, v2, rg) = rig("").await;
    let addr = rg.app.proxy_addr;
    let cases: &[(&str, &[u8])] = &[
        ("not a request line", b"NOT A VALID REQUEST LINE\r\n\r\n"),
        ("method only", b"GET\r\n\r\n"),
        ("no version", b"GET /\r\nHost: x\r\n\r\n"),
        ("lower-case version", b"GET / http/1.1\r\nHost: x\r\n\r\n"),
        (
            "binary garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ),
        (
            "control byte in path",
            b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        ("space in path", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "NUL in header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        ),
        (
            "DEL in header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
        ),
        (
            "space in header name",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        ),
        (
            "separator in header name",
            b"GET / HTTP/1.1\r\nHost: x\r\nX(y): 1\r\n\r\n",
        ),
        (
            "empty header name",
            b"GET / HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n",
        ),
        (
            "header without colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
        ),
        (
            "bare LF inside a header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        ),
    ];
    for (what, req) in cases {
        let answer = raw_exchange(addr, req).await;
        assert_eq!(raw_status(&answer), 400, "{what}: {}", head(&answer));
        rg.assert_serving(what).await;
    }
    // None of them reached an upstream; only the probes did.
    let probes = cases.len() as u64;
    let seen = v1.seen().into_iter().chain(v2.seen()).collect::<Vec<_>>();
    assert_eq!(seen.len() as u64, probes, "{seen:?}");
    assert!(seen.iter().all(|s| s.path == "/still-serving"), "{seen:?}");
    rg.shutdown().await;
}

// ===== 2. oversize heads =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_heads_are_431_on_http1_and_refused_on_h2() {
    let (_v1, _v2, rg) = rig("max_header_bytes = 16384").await;
    let addr = rg.app.proxy_addr;
    let one_big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let many_small = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..300)
            .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(80)))
            .collect::<String>()
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(20 * 1024));
    for (what, req) in [
        ("one 20 KiB header", &one_big),
        ("300 small headers", &many_small),
        ("20 KiB request target", &long_uri),
    ] {
        let answer = raw_exchange(addr, req.as_bytes()).await;
        let status = raw_status(&answer);
        println!("{what}: {status}");
        assert_eq!(status, 431, "{what}: {}", head(&answer));
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

// ===== 3. slowloris =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connection_is_closed_after_the_header_read_timeout() {
    let (_v1, _v2, rg) = rig("header_read_timeout = \"1s\"").await;
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

// ===== 4. request smuggling =====

/// Sends `req` (possibly with a pipelined second request behind it) and
/// returns the answer and what reached the upstreams meanwhile.
async fn smuggle(rg: &Rg, ups: [&Counting; 2], req: &[u8]) -> (String, Vec<support::Seen>) {
    let before: Vec<usize> = ups.iter().map(|u| u.seen().len()).collect();
    let answer = raw_exchange(rg.app.proxy_addr, req).await;
    // Give a smuggled request every chance to arrive before looking.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = ups
        .iter()
        .zip(before)
        .flat_map(|(u, n)| u.seen().into_iter().skip(n))
        .collect();
    (answer, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_400_or_one_well_defined_request() {
    let (v1, v2, rg) = rig("").await;
    // Every case pipelines `GET /smuggled` behind a body whose length the
    // front and a back end could disagree on.
    let tail = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String, Option<u16>)> = vec![
        (
            "CL then TE: chunked",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{tail}"),
            None,
        ),
        (
            "TE: chunked then CL",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{tail}"),
            None,
        ),
        (
            "duplicate differing Content-Length",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 41\r\n\r\nhello{tail}"),
            Some(400),
        ),
        (
            "Content-Length list with differing values",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 41\r\n\r\nhello{tail}"),
            Some(400),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n{tail}"),
            Some(400),
        ),
        (
            "Transfer-Encoding: identity",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello{tail}"),
            Some(400),
        ),
        (
            "Transfer-Encoding: xchunked",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{tail}"),
            Some(400),
        ),
        (
            "obs-fold continuation line",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello{tail}"),
            Some(400),
        ),
        (
            "obs-fold on Transfer-Encoding",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{tail}"),
            Some(400),
        ),
        (
            "space before the colon",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello{tail}"),
            Some(400),
        ),
        (
            "negative Content-Length",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello{tail}"),
            Some(400),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!("POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{tail}"),
            Some(400),
        ),
        (
            "bad chunk size",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{tail}"),
            None,
        ),
    ];
    for (what, req, want) in cases {
        let (answer, new) = smuggle(&rg, [&v1, &v2], req.as_bytes()).await;
        let status = raw_status(&answer);
        assert!(
            new.iter().all(|s| s.path != "/smuggled"),
            "{what}: the pipelined request reached an upstream: {new:?}\nanswer: {}",
            head(&answer)
        );
        match want {
            Some(code) => {
                assert_eq!(status, code, "{what}: {}", head(&answer));
                assert!(new.is_empty(), "{what}: reached an upstream: {new:?}");
            }
            None => {
                // At most one request, with a body framing the upstream cannot
                // misread: never both a length and chunked.
                assert!(new.len() <= 1, "{what}: {new:?}");
                assert!(
                    status == 200 || status == 400,
                    "{what}: a client's framing is never a gateway error: {}",
                    head(&answer)
                );
                for s in &new {
                    assert!(
                        !(s.content_length.is_some() && s.transfer_encoding.is_some()),
                        "{what}: forwarded with both framings: {s:?}"
                    );
                    assert_eq!(s.path, "/a", "{what}");
                }
                println!(
                    "{what}: answered {status}, {} request(s) upstream {:?}",
                    new.len(),
                    new.iter()
                        .map(|s| (&s.path, s.body.len()))
                        .collect::<Vec<_>>()
                );
            }
        }
        // Only one HTTP answer on the wire: the pipelined request was not served.
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: more than one answer: {}",
            head(&answer)
        );
        rg.assert_serving(what).await;
    }
    rg.shutdown().await;
}

// ===== 5. h2 rapid reset =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_burst_leaves_the_proxy_serving() {
    let (v1, v2, rg) = rig("").await;
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
        let inflight: f64 = common::parse_samples(&m)
            .into_iter()
            .filter(|s| s.name == "rollgate_inflight_requests")
            .map(|s| s.value)
            .sum();
        if inflight == 0.0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "in flight stays {inflight}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rg.shutdown().await;
}

// ===== 6. admin API bad input =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bad_json_wrong_types_ranges_paths_and_methods() {
    let (_v1, _v2, rg) = rig("").await;
    let weights = rg
        .call(Method::PUT, "/api/v1/weights", r#"{"v2": 12.5}"#)
        .await;
    assert_eq!(weights.status, StatusCode::OK, "{}", weights.text());
    let before = rg.status().await;

    // Not JSON at all, on every endpoint that reads a body.
    for path in [
        "/api/v1/weights",
        "/api/v1/flags",
        "/api/v1/approvals",
        "/api/v1/incidents",
    ] {
        let method = if path.ends_with("weights") || path.ends_with("flags") {
            Method::PUT
        } else {
            Method::POST
        };
        for body in [
            &b"{not json"[..],
            b"",
            b"[1,",
            b"v2=10",
            b"\xff\xfe\x00",
            b"{\"v2\": NaN}",
            b"{\"v2\": 1}{\"v2\": 2}",
        ] {
            let r = rg
                .call(method.clone(), path, Bytes::copy_from_slice(body))
                .await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{path} {body:?}: {}",
                r.text()
            );
            assert!(
                r.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("JSON")),
                "{path}: {}",
                r.text()
            );
        }
        // Over the 64 KiB body limit.
        let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
        let r = rg.call(method.clone(), path, huge).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            r.text()
        );
    }

    // Valid JSON, wrong types or out of range: 400 naming the field.
    let cases: &[(Method, &str, Value, &str)] = &[
        (Method::PUT, "/api/v1/weights", json!({"v2": "ten"}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": true}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": [5]}), "v2"),
        (
            Method::PUT,
            "/api/v1/weights",
            json!({"v2": {"pct": 5}}),
            "v2",
        ),
        (Method::PUT, "/api/v1/weights", json!({"v2": null}), "v2"),
        (
            Method::PUT,
            "/api/v1/weights",
            json!({"v2": 100.0001}),
            "v2",
        ),
        (Method::PUT, "/api/v1/weights", json!({"v2": -0.5}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": 1e308}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v1": 10}), "v2"),
        (Method::PUT, "/api/v1/weights", json!(42), "v2"),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"SHADOW_PASS_24H": "1"}),
            "SHADOW_PASS_24H",
        ),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"SHADOW_PASS_24H": 2}),
            "SHADOW_PASS_24H",
        ),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"SHADOW_PASS_24H": 0.5}),
            "SHADOW_PASS_24H",
        ),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"EVIDENCE_BUNDLE": -1}),
            "EVIDENCE_BUNDLE",
        ),
        (Method::PUT, "/api/v1/flags", json!({}), "flags"),
        (
            Method::PUT,
            "/api/v1/flags",
            json!(["SHADOW_PASS_24H"]),
            "flags",
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
            json!({"role": "cfo"}),
            "by",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "  ", "by": "x"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "cfo", "by": ["x"]}),
            "by",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "x".repeat(2000), "by": "x"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 3, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 0, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": "1", "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 1.5, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 2}),
            "summary",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 2, "summary": 7}),
            "summary",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = rg.call(method.clone(), path, body.to_string()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {}",
            r.text()
        );
        let err = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            err.contains(field),
            "{method} {path} {body}: does not name `{field}`: {err}"
        );
    }

    // Unknown paths are 404, known paths with another method 405 + Allow.
    for path in [
        "/api/v1/nope",
        "/api/v1/weights/extra",
        "/API/V1/STATUS",
        "/api/v2/status",
        "/api/v1/reports/",
        "/api/v1/reports/a/b",
        "/%2e%2e/etc/passwd",
    ] {
        let r = rg.client.get(&rg.admin(path), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "GET {path}: {}", r.text());
    }
    for id in ["..", "..%2Fstate", "nope", "1;rm", "%00"] {
        let r = rg
            .client
            .get(&rg.admin(&format!("/api/v1/reports/{id}")), &[])
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "report {id:?}: {}",
            r.text()
        );
    }
    for (method, path, allow) in [
        (Method::GET, "/api/v1/weights", "PUT"),
        (Method::POST, "/api/v1/weights", "PUT"),
        (Method::DELETE, "/api/v1/status", "GET"),
        (Method::POST, "/healthz", "GET"),
        (Method::GET, "/api/v1/rollout/rollback", "POST"),
        (Method::PATCH, "/api/v1/flags", "PUT"),
    ] {
        let r = rg.call(method.clone(), path, "{}").await;
        assert_eq!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            r.text()
        );
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }

    // Nothing above changed the rollout.
    let after = rg.status().await;
    for field in [
        "state",
        "weights",
        "flags",
        "approvals",
        "incidents",
        "frozen",
    ] {
        assert_eq!(
            before[field], after[field],
            "{field} changed by a refused call"
        );
    }
    rg.assert_serving("bad admin input").await;
    rg.shutdown().await;
}

// ===== 7. frozen weights =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_weights_are_423_until_unfrozen() {
    use rollgate::demo::upstream::{self, Latency, Profile};
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    for name in ["v1", "v2"] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let mut rx = stop_rx.clone();
        let profile = Profile::healthy(
            name,
            Latency {
                median_ms: 2.0,
                p95_ms: 5.0,
            },
        );
        tokio::spawn(upstream::serve(l, profile, async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
    }
    // A one-phase rollout straight to 100 % with a one-second sustain: it
    // promotes and re-freezes (FREEZE_LOCK) after a few seconds of traffic.
    let rest = format!(
        "[upstreams]\nv1 = \"http://{}\"\nv2 = \"http://{}\"\n\n[routing]\nsticky_header = \"x-user-id\"\n\n\
         [rollout]\nauto_start = true\ntick = \"100ms\"\nwindow = \"1s\"\nmin_samples = 5\nfull_sustain = \"1s\"\n\
         [rollout.flags]\nSHADOW_PASS_24H = 1\nA2_V26_COMPLIANT = 1\nEVIDENCE_BUNDLE = 1\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\n",
        addrs[0], addrs[1]
    );
    let rg = Rg::start(move |dir| config_text(dir, "", &rest)).await;
    let client = HttpClient::http1();
    let start = Instant::now();
    let mut i = 0u64;
    loop {
        let s = rg.status().await;
        if s["state"] == "promoted" && s["frozen"] == true {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not promoted and frozen: {s}");
        for _ in 0..10 {
            i += 1;
            let _ = client
                .get(&rg.proxy("/search"), &[("x-user-id", &format!("u{i}"))])
                .await;
        }
    }
    for (method, path, body) in [
        (Method::PUT, "/api/v1/weights", json!({"v2": 30})),
        (Method::PUT, "/api/v1/weights", json!({"v2": 0})),
        (Method::POST, "/api/v1/rollout/start", Value::Null),
    ] {
        let r = rg.call(method.clone(), path, body.to_string()).await;
        assert_eq!(
            r.status,
            StatusCode::LOCKED,
            "{method} {path}: {}",
            r.text()
        );
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let s = rg.status().await;
    assert_eq!(s["weights"]["v2"].as_f64(), Some(100.0), "{s}");
    assert_eq!(s["frozen"], true);
    rg.assert_serving("refused weight changes while frozen")
        .await;
    let r = rg.call(Method::POST, "/api/v1/unfreeze", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = rg
        .call(
            Method::PUT,
            "/api/v1/weights",
            json!({"v2": 30}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    rg.shutdown().await;
    let _ = stop.send(true);
}

// ===== 8. bad config files, through the real binary =====

const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9901\"\n[upstreams]\nv1 = \"http://127.0.0.1:3001\"\nv2 = \"http://127.0.0.1:3002\"\n";

#[test]
fn bad_config_files_name_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    // (file name, config text, key the message must name, words of the reason)
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "listen.toml",
            BASE.replace("127.0.0.1:8080", "localhost:http"),
            "server.listen",
            &["not an address"],
        ),
        (
            "port.toml",
            BASE.replace("127.0.0.1:8080", "127.0.0.1:99999"),
            "server.listen",
            &["not an address"],
        ),
        (
            "duration.toml",
            format!("{BASE}[rollout]\ntick = \"fortnightly\"\n"),
            "tick",
            &["invalid duration"],
        ),
        (
            "duration-type.toml",
            format!("{BASE}[rollout]\nwindow = 300\n"),
            "window",
            &["string"],
        ),
        (
            "unknown.toml",
            format!("{BASE}[routing]\nstiky_header = \"x-user-id\"\n"),
            "stiky_header",
            &["unknown field"],
        ),
        (
            "unknown-section.toml",
            format!("{BASE}[limits]\nmax = 1\n"),
            "limits",
            &["unknown field"],
        ),
        (
            "decreasing.toml",
            format!("{BASE}[[rollout.phases]]\nname = \"a\"\nweight = 50\nhold = \"1h\"\n[[rollout.phases]]\nname = \"b\"\nweight = 25\n"),
            "rollout.phases[1].weight",
            &["decrease"],
        ),
        (
            "upstream.toml",
            BASE.replace("http://127.0.0.1:3002", "ftp://127.0.0.1:3002"),
            "upstreams.v2",
            &["http://"],
        ),
        (
            "syntax.toml",
            format!("{BASE}[rollout\ntick = \"1s\"\n"),
            "line 7",
            &["TOML parse error"],
        ),
        (
            "fraction.toml",
            format!("{BASE}[rollout]\nerror_rate_max = 1.5\n"),
            "rollout.error_rate_max",
            &["fraction"],
        ),
        (
            "max-conn.toml",
            BASE.replace("[upstreams]", "max_connections = 0\n[upstreams]"),
            "server.max_connections",
            &["at least 1"],
        ),
        (
            "missing.toml",
            "[server]\nlisten = \"127.0.0.1:8080\"\n".to_string(),
            "upstreams",
            &["missing"],
        ),
    ];
    for (name, text, key, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let (st, out) = run_bin(&["check"], &path);
        assert!(!st.success(), "{name} accepted: {out}");
        assert_eq!(st.code(), Some(2), "{name}: {out}");
        assert!(
            out.contains(name),
            "{name}: message does not name the file: {out}"
        );
        assert!(
            out.contains(key),
            "{name}: message does not name `{key}`: {out}"
        );
        for w in reason {
            assert!(out.contains(w), "{name}: no reason {w:?} in: {out}");
        }
        // `run` refuses the same file with the same message, before binding anything.
        let (st, run_out) = run_bin(&["run"], &path);
        assert!(!st.success(), "{name}: run accepted it: {run_out}");
        assert!(run_out.contains(key), "{name}: run: {run_out}");
    }
    // Valid but suspicious: accepted (exit 0) with a warning naming the key.
    let path = dir.path().join("short-hold.toml");
    let text = format!(
        "{BASE}[gates]\ncooldown = \"1m\"\n[[rollout.phases]]\nname = \"canary-5\"\nweight = 5\nhold = \"10s\"\n[[rollout.phases]]\nname = \"full\"\nweight = 100\nhold = \"2m\"\n"
    );
    std::fs::write(&path, text).unwrap();
    let (st, out) = run_bin(&["check"], &path);
    assert!(st.success(), "short hold refused: {out}");
    assert!(
        out.contains("warning:")
            && out.contains("short-hold.toml")
            && out.contains("rollout.phases[0].hold")
            && out.contains("gates.cooldown"),
        "{out}"
    );
    // A file that is not there.
    let (st, out) = run_bin(&["check"], &dir.path().join("absent.toml"));
    assert!(!st.success());
    assert!(
        out.contains("absent.toml") && out.contains("cannot read"),
        "{out}"
    );
}

#[test]
fn bad_tls_files_stop_run_with_the_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = |_| support::free_port();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\nstate_dir = {:?}\n",
        port(0),
        port(1),
        state.display().to_string()
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let missing = dir.path().join("missing-cert.pem");
    let ups = "[upstreams]\nv1 = \"http://127.0.0.1:3001\"\nv2 = \"http://127.0.0.1:3002\"\n";
    for (name, cert, key, want) in [
        ("missing-cert.toml", &missing, &junk, "missing-cert.pem"),
        ("junk-cert.toml", &junk, &junk, "junk.pem"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "{base}[server.tls]\ncert = {:?}\nkey = {:?}\n{ups}",
                cert.display().to_string(),
                key.display().to_string()
            ),
        )
        .unwrap();
        // `check` validates the file's syntax and keys; the PEM files are
        // read by `run`, which must then refuse to start.
        let (st, out) = run_bin(&["run"], &path);
        assert!(!st.success(), "{name}: started: {out}");
        assert!(
            out.contains("TLS") && out.contains("server.tls.cert"),
            "{name}: {out}"
        );
        assert!(out.contains(want), "{name}: does not name {want}: {out}");
        println!("{name}: {}", out.trim());
    }
}

// ===== 9. unusable state dir =====

#[test]
fn unusable_state_dir_stops_run_with_a_precise_message() {
    let dir = tempfile::tempdir().unwrap();
    // Tests run as root, so permissions would not stop us: use a plain file
    // where the directory should be, and a path below that file.
    let file = dir.path().join("state-is-a-file");
    std::fs::write(&file, "not a directory").unwrap();
    for (name, state_dir) in [
        ("file.toml", file.clone()),
        ("below-file.toml", file.join("sub")),
    ] {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\nstate_dir = {:?}\n[upstreams]\nv1 = \"http://127.0.0.1:3001\"\nv2 = \"http://127.0.0.1:3002\"\n",
                support::free_port(),
                support::free_port(),
                state_dir.display().to_string()
            ),
        )
        .unwrap();
        let (st, out) = run_bin(&["run"], &path);
        assert!(
            !st.success(),
            "{name}: started with state_dir {state_dir:?}: {out}"
        );
        assert!(
            out.contains(&state_dir.display().to_string()),
            "{name}: does not name the state dir: {out}"
        );
        assert!(
            out.contains("state_dir"),
            "{name}: does not name the key: {out}"
        );
        println!("{name}: {}", out.trim());
    }
    // The file was not replaced by a directory.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

// ===== 10. max_connections =====

/// Sends a keep-alive request on `s` and reads its complete (small) answer.
async fn keepalive_request(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nx-user-id: u\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("an answer within the deadline")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_connection_waits_while_two_are_open_under_max_connections_2() {
    let (_v1, _v2, rg) =
        rig("max_connections = 2\nworkers = 1\nheader_read_timeout = \"60s\"").await;
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

// ===== 11. a broken request body is the client's fault =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_request_bodies_are_not_counted_against_the_upstream() {
    let (_v1, v2, rg) = rig("").await;
    // Everyone on V2, so a wrongly attributed failure would hit the canary's gates.
    let r = rg
        .call(Method::PUT, "/api/v1/weights", r#"{"v2": 100}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let cases: [(&str, &[u8]); 3] = [
        (
            "bad chunk size",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk longer than announced",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "body cut short (client closes)",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a few bytes",
        ),
    ];
    for (what, req) in cases {
        let mut s = TcpStream::connect(rg.app.proxy_addr).await.unwrap();
        s.write_all(req).await.unwrap();
        // Half-close: the proxy sees the end of the body stream.
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("closed within the deadline");
        let answer = String::from_utf8_lossy(&out).into_owned();
        println!("{what}: {:?}", head(&answer).lines().next());
        if !answer.is_empty() {
            let status = raw_status(&answer);
            assert!(
                status == 400 || status == 408,
                "{what}: a client error must not be a gateway error: {}",
                head(&answer)
            );
        }
        rg.assert_serving(what).await;
    }
    let m = rg.metrics().await;
    let upstream_errors: f64 = common::parse_samples(&m)
        .into_iter()
        .filter(|s| s.name == "rollgate_upstream_errors_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(
        upstream_errors, 0.0,
        "client faults counted as upstream errors:\n{m}"
    );
    let v2_5xx = common::metric(
        &m,
        "rollgate_requests_total",
        &[("journey", "other"), ("variant", "v2"), ("class", "5xx")],
    )
    .unwrap_or(0.0);
    assert_eq!(v2_5xx, 0.0, "client faults counted as V2 5xx:\n{m}");
    println!("upstream saw {} request(s)", v2.seen().len());
    rg.shutdown().await;
}

// ===== 12. TLS: a silent client after the handshake =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_that_goes_silent_after_the_handshake_is_closed() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("edge.crt"), dir.path().join("edge.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    let v1 = Counting::start("v1").await;
    let v2 = Counting::start("v2").await;
    let rest = quiet_rest(&v1.url(), &v2.url(), "");
    let server = format!(
        "header_read_timeout = \"1s\"\n[server.tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let rg = Rg::start(move |d| config_text(d, &server, &rest)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    // Handshake, then nothing: closed after header_read_timeout.
    let tcp = TcpStream::connect(rg.app.proxy_addr).await.unwrap();
    let mut tls = connector
        .connect(name.clone(), tcp)
        .await
        .expect("handshake");
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(DEADLINE, tls.read(&mut buf))
        .await
        .expect("a silent TLS client is closed within the deadline");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");

    // A prompt TLS client is served (its first bytes are kept, not lost).
    let tcp = TcpStream::connect(rg.app.proxy_addr).await.unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(
        b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nx-user-id: u\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut out))
        .await
        .expect("answered");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    rg.shutdown().await;
}
