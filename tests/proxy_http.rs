//! The proxy over HTTP/1.1: what reaches the upstream (forwarded, hop-by-hop
//! and variant headers), bodies streamed both ways, and hostile or broken
//! input on the wire (malformed heads, smuggling, broken bodies), each with
//! its documented answer while the process keeps serving. The input ->
//! outcome table is `tests/README.md`.

mod harness;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::RwLock;

use harness::client::{drain, empty, many_headers, one_big_header, start_of, Repeat};
use harness::metrics::sum;
use harness::upstream::{Seen, STREAM_PREFIX};
use harness::{
    expected_variant, metric, raw_exchange, raw_status, Conf, HttpClient, Rg, Upstream, DEADLINE,
};

/// The memory test measures the whole process, so it runs alone: every other
/// test holds this lock shared, the memory test holds it exclusively.
static SERIAL: RwLock<()> = RwLock::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_headers_are_added_and_request_ids_kept_or_made() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, h) = Rg::echo("").await;
    h.set_weight(50.0).await;

    let r = h
        .client
        .get(
            &h.proxy("/fwd"),
            &[
                ("x-user-id", "fwd-user"),
                ("x-request-id", "req-abc-123"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-app", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let variant = r.variant().to_string();
    assert_eq!(variant, expected_variant("fwd-user", 50.0));
    let echo = r.json();
    let hdr = |n: &str| echo["headers"][n].clone();
    assert_eq!(echo["upstream"], variant.as_str());
    // The client is not a trusted proxy: its own claim is replaced.
    assert_eq!(hdr("x-forwarded-for"), serde_json::json!(["127.0.0.1"]));
    assert_eq!(hdr("x-forwarded-proto"), serde_json::json!(["http"]));
    assert_eq!(hdr("x-request-id"), serde_json::json!(["req-abc-123"]));
    assert_eq!(hdr("x-rollgate-variant"), serde_json::json!([variant]));
    assert_eq!(hdr("x-app"), serde_json::json!(["kept"]));
    assert_eq!(hdr("x-user-id"), serde_json::json!(["fwd-user"]));

    // Without a client id: a generated one, different per request.
    let mut ids = BTreeSet::new();
    for _ in 0..20 {
        let r = h
            .client
            .get(&h.proxy("/fwd"), &[("x-user-id", "fwd-user")])
            .await;
        let echo = r.json();
        assert_eq!(
            echo["headers"]["x-forwarded-for"],
            serde_json::json!(["127.0.0.1"])
        );
        let ids_here = echo["headers"]["x-request-id"]
            .as_array()
            .expect("x-request-id generated")
            .clone();
        assert_eq!(ids_here.len(), 1);
        let id = ids_here[0].as_str().unwrap().to_string();
        assert!(
            id.len() >= 16 && id.bytes().all(|b| b.is_ascii_graphic()),
            "request id {id:?}"
        );
        assert!(ids.insert(id.clone()), "request id {id} generated twice");
    }

    // A client-chosen variant header is not honoured (override is off by default)
    // and is replaced by the real one upstream.
    let other = if variant == "v1" { "v2" } else { "v1" };
    let r = h
        .client
        .get(
            &h.proxy("/fwd"),
            &[("x-user-id", "fwd-user"), ("x-rollgate-variant", other)],
        )
        .await;
    assert_eq!(r.variant(), variant);
    assert_eq!(
        r.json()["headers"]["x-rollgate-variant"],
        serde_json::json!([variant])
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, h) = Rg::echo("").await;

    // Raw bytes, so no client library adds or drops anything.
    let req = "GET /hop HTTP/1.1\r\n\
               Host: example.test\r\n\
               x-user-id: hop-user\r\n\
               Connection: close, x-hop-secret, X-Other-Hop\r\n\
               x-hop-secret: 1\r\n\
               x-other-hop: 2\r\n\
               Keep-Alive: timeout=5\r\n\
               TE: gzip, trailers\r\n\
               Upgrade: websocket\r\n\
               Proxy-Authorization: Basic c2VjcmV0\r\n\
               Proxy-Connection: keep-alive\r\n\
               x-end-to-end: stays\r\n\
               \r\n";
    let answer = raw_exchange(h.app.proxy_addr, req.as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nx-rollgate-variant: v1"),
        "response lacks x-rollgate-variant: {head}"
    );
    let echo: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    let headers = echo["headers"].as_object().expect("echoed headers");
    for gone in [
        "x-hop-secret",
        "x-other-hop",
        "keep-alive",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {headers:?}"
        );
    }
    // `connection` may be set by the proxy's own client, but never to the client's list.
    if let Some(c) = headers.get("connection") {
        assert!(
            !c.to_string().contains("x-hop-secret"),
            "client Connection forwarded: {c}"
        );
    }
    assert_eq!(
        echo["headers"]["x-end-to-end"],
        serde_json::json!(["stays"])
    );
    assert_eq!(echo["headers"]["host"], serde_json::json!(["example.test"]));
    // TE's one end-to-end value goes on, the rest stops here.
    assert_eq!(echo["headers"]["te"], serde_json::json!(["trailers"]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_carry_the_variant_header_unless_disabled() {
    let _serial = SERIAL.read().await;
    let (v1, v2) = Upstream::pair().await;
    let h =
        Rg::start(&Conf::new(v1.url(), v2.url()).routing("expose_variant_header = false")).await;
    let r = h
        .client
        .get(&h.proxy("/"), &[("x-user-id", "hidden")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-rollgate-variant"), None);
    // The upstream still learns its variant.
    assert_eq!(
        r.json()["headers"]["x-rollgate-variant"],
        serde_json::json!(["v1"])
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_megabyte_bodies_stream_both_ways_with_flat_memory() {
    // Alone in the process, so RSS is ours to read.
    let _serial = SERIAL.write().await;
    let (_v1, _v2, h) = Rg::echo("").await;
    const SIZE: u64 = 50 * 1024 * 1024;
    const MB: f64 = 1024.0 * 1024.0;

    let upload = |len: u64| {
        Request::builder()
            .method(Method::POST)
            .uri(h.proxy("/upload"))
            .header("x-user-id", "big-user")
            .body(http_body_util::BodyExt::boxed(Repeat::new(len)))
            .unwrap()
    };
    let download = |len: u64| {
        Request::builder()
            .uri(h.proxy(&format!("{STREAM_PREFIX}{len}")))
            .header("x-user-id", "big-user")
            .body(empty())
            .unwrap()
    };
    // Warm up pools, buffers and allocator arenas with 1 MB each way.
    let r = h.client.send(upload(1 << 20)).await;
    assert_eq!(r.status(), StatusCode::OK);
    drain(r.into_body()).await;
    let r = h.client.send(download(1 << 20)).await;
    assert_eq!(drain(r.into_body()).await, 1 << 20);

    let base = proc_status_bytes("VmRSS");
    // Reset the peak-RSS counter when the kernel lets us (Linux >= 4.0).
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(proc_status_bytes("VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // 50 MB up: the upstream counts what arrives, frame by frame.
    let r = h.client.send(upload(SIZE)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let variant = r.headers()["x-rollgate-variant"]
        .to_str()
        .unwrap()
        .to_string();
    let echo: serde_json::Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(echo["body_bytes"], SIZE, "request body truncated");
    assert_eq!(echo["upstream"], variant.as_str());

    // 50 MB down, read frame by frame.
    let r = h.client.send(download(SIZE)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(drain(r.into_body()).await, SIZE, "response body truncated");

    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mut top = peak.load(Ordering::Relaxed);
    if hwm_reset {
        top = top.max(proc_status_bytes("VmHWM"));
    }
    let growth = top.saturating_sub(base);
    println!(
        "streaming: RSS before {:.1} MB, peak during 2 x 50 MB {:.1} MB, growth {:.1} MB (VmHWM reset: {hwm_reset})",
        base as f64 / MB,
        top as f64 / MB,
        growth as f64 / MB
    );
    assert!(
        growth < 25 * 1024 * 1024,
        "RSS grew by {:.1} MB while streaming 50 MB bodies: the proxy buffers them",
        growth as f64 / MB
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_and_invalid_header_bytes_are_400() {
    let _serial = SERIAL.read().await;
    let (v1, v2, rg) = Rg::echo("").await;
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
        assert_eq!(raw_status(&answer), 400, "{what}: {}", start_of(&answer));
        rg.assert_serving(what).await;
    }
    // None of them reached an upstream; only the probes did.
    let probes = cases.len() as u64;
    let seen = v1.seen().into_iter().chain(v2.seen()).collect::<Vec<_>>();
    assert_eq!(seen.len() as u64, probes, "{seen:?}");
    assert!(seen.iter().all(|s| s.path == "/still-serving"), "{seen:?}");
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_headers_are_431_malformed_requests_400_and_service_continues() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, h) = Rg::echo("").await;
    let addr = h.app.proxy_addr;

    // One header of 40 KiB, then many small ones adding up to 40 KiB.
    let big = one_big_header(40 * 1024);
    let many = many_headers(400, 100);
    for req in [&big, &many] {
        let answer = raw_exchange(addr, req.as_bytes()).await;
        assert_eq!(
            raw_status(&answer),
            431,
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    // Just under the limit is fine.
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Fits: {}\r\n\r\n",
        "c".repeat(16 * 1024)
    );
    assert_eq!(raw_status(&raw_exchange(addr, fits.as_bytes()).await), 200);

    for bad in [
        "NOT A VALID REQUEST LINE\r\n\r\n",
        "GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    ] {
        let answer = raw_exchange(addr, bad.as_bytes()).await;
        assert_eq!(raw_status(&answer), 400, "{bad:?} -> {answer:?}");
    }

    // The proxy is still serving.
    let r = h
        .client
        .get(&h.proxy("/still-up"), &[("x-user-id", "ok")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/still-up");
    let r = HttpClient::h2c().get(&h.proxy("/still-up"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    h.shutdown().await;
}

/// Sends `req` (possibly with a pipelined second request behind it) and
/// returns the answer and what reached the upstreams meanwhile.
async fn smuggle(rg: &Rg, ups: [&Upstream; 2], req: &[u8]) -> (String, Vec<Seen>) {
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
    let _serial = SERIAL.read().await;
    let (v1, v2, rg) = Rg::echo("").await;
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
            start_of(&answer)
        );
        match want {
            Some(code) => {
                assert_eq!(status, code, "{what}: {}", start_of(&answer));
                assert!(new.is_empty(), "{what}: reached an upstream: {new:?}");
            }
            None => {
                // At most one request, with a body framing the upstream cannot
                // misread: never both a length and chunked.
                assert!(new.len() <= 1, "{what}: {new:?}");
                assert!(
                    status == 200 || status == 400,
                    "{what}: a client's framing is never a gateway error: {}",
                    start_of(&answer)
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
                        .map(|s| (&s.path, s.body_bytes))
                        .collect::<Vec<_>>()
                );
            }
        }
        // Only one HTTP answer on the wire: the pipelined request was not served.
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: more than one answer: {}",
            start_of(&answer)
        );
        rg.assert_serving(what).await;
    }
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_request_bodies_are_not_counted_against_the_upstream() {
    let _serial = SERIAL.read().await;
    let (_v1, v2, rg) = Rg::echo("").await;
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
        println!("{what}: {:?}", start_of(&answer).lines().next());
        if !answer.is_empty() {
            let status = raw_status(&answer);
            assert!(
                status == 400 || status == 408,
                "{what}: a client error must not be a gateway error: {}",
                start_of(&answer)
            );
        }
        rg.assert_serving(what).await;
    }
    let m = rg.metrics().await;
    let upstream_errors = sum(&m, "rollgate_upstream_errors_total", &[]);
    assert_eq!(
        upstream_errors, 0.0,
        "client faults counted as upstream errors:\n{m}"
    );
    let v2_5xx = metric(
        &m,
        "rollgate_requests_total",
        &[("journey", "other"), ("variant", "v2"), ("class", "5xx")],
    )
    .unwrap_or(0.0);
    assert_eq!(v2_5xx, 0.0, "client faults counted as V2 5xx:\n{m}");
    println!("upstream saw {} request(s)", v2.seen().len());
    rg.shutdown().await;
}

/// A field of `/proc/self/status` in bytes (e.g. `VmRSS`, `VmHWM`).
pub fn proc_status_bytes(field: &str) -> u64 {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}
