//! HTTP semantics at the edge: which target host a request names (and the
//! requests refused for naming none or two), `CONNECT`, and what of an
//! upstream's answer may reach the client (framing, bodiless statuses,
//! trailers). Raw bytes where a client library would tidy the input up. The
//! input -> outcome rows are in `tests/README.md`.

mod harness;

use bytes::Bytes;
use http::{Request, StatusCode};

use harness::client::start_of;
use harness::edge_http::{attacker_exchange, CannedUpstream};
use harness::{raw_status, Conf, HttpClient, Rg};

fn echo_headers(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let echo: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    echo["headers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_once_and_valid_and_connect_is_405() {
    let (v1, v2, rg) = Rg::echo("").await;
    let addr = rg.app.proxy_addr;
    let cases: [(&str, &str, u16); 7] = [
        ("no Host", "GET /a HTTP/1.1\r\nx: 1\r\n\r\n", 400),
        (
            "two Host fields",
            "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            400,
        ),
        (
            "two equal Host fields",
            "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
            400,
        ),
        (
            "userinfo in Host",
            "GET /a HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
            400,
        ),
        (
            "path in Host",
            "GET /a HTTP/1.1\r\nHost: a.example/x\r\n\r\n",
            400,
        ),
        ("empty Host", "GET /a HTTP/1.1\r\nHost:\r\n\r\n", 400),
        (
            "CONNECT",
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            405,
        ),
    ];
    for (what, req, want) in cases {
        let before = v1.seen().len() + v2.seen().len();
        let req = req.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let answer = attacker_exchange(addr, req.as_bytes()).await;
        assert_eq!(raw_status(&answer), want, "{what}: {}", start_of(&answer));
        assert_eq!(
            v1.seen().len() + v2.seen().len(),
            before,
            "{what} was forwarded"
        );
    }
    // HTTP/1.0 may leave Host out.
    let answer = attacker_exchange(addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{}",
        start_of(&answer)
    );
    rg.assert_serving("Host refusals").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_s_authority_wins_and_connection_cannot_strip_host() {
    let (_v1, _v2, rg) = Rg::echo("").await;
    let addr = rg.app.proxy_addr;
    let answer = attacker_exchange(
        addr,
        b"GET http://target.example/abs HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{}", start_of(&answer));
    assert_eq!(
        echo_headers(&answer)["host"],
        serde_json::json!(["target.example"])
    );

    let answer = attacker_exchange(
        addr,
        b"GET /c HTTP/1.1\r\nHost: shop.example\r\nConnection: close, host\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{}", start_of(&answer));
    assert_eq!(
        echo_headers(&answer)["host"],
        serde_json::json!(["shop.example"])
    );

    // h2: `:authority` wins over a `host` field.
    let tcp = harness::edge_http::attacker(addr).await;
    let (h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = Request::get("http://authority.example/h2")
        .header("host", "host.example")
        .body(())
        .unwrap();
    let (resp, _) = h2.send_request(req, true).unwrap();
    let resp = resp.await.expect("h2 answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let echo: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        echo["headers"]["host"],
        serde_json::json!(["authority.example"])
    );
    rg.shutdown().await;
}

/// rollgate in front of a [`CannedUpstream`] on both variants.
async fn in_front_of(answer: &'static [u8]) -> (CannedUpstream, Rg) {
    let up = CannedUpstream::start(answer).await;
    let rg = Rg::start(&Conf::new(up.url(), up.url())).await;
    (up, rg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_length_beside_chunked_is_never_relayed() {
    let (_up, rg) = in_front_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let answer = attacker_exchange(
        rg.app.proxy_addr,
        b"GET /te HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "length relayed beside chunked: {head}"
    );
    assert_eq!(body, "3\r\nabc\r\n0\r\n\r\n");
    let r = HttpClient::h2c().get(&rg.proxy("/te"), &[]).await;
    assert_eq!(r.body, Bytes::from_static(b"abc"));
    assert_eq!(r.header("content-length"), None);
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_statuses_carry_no_length_to_h2_clients() {
    for canned in [
        &b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"[..],
        &b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n"[..],
    ] {
        let (_up, rg) = in_front_of(canned).await;
        let r = HttpClient::h2c().get(&rg.proxy("/nb"), &[]).await;
        assert!(r.status == 204 || r.status == 304, "{r:?}");
        assert_eq!(r.header("content-length"), None, "{r:?}");
        assert!(r.body.is_empty());
        rg.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_travel_end_to_end_when_the_client_accepts_them() {
    let (up, rg) = in_front_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n3\r\nabc\r\n0\r\nx-checksum: 42\r\n\r\n",
    )
    .await;
    let addr = rg.app.proxy_addr;
    // A client that sent `TE: trailers` gets them; its own request trailers
    // go upstream with the `Trailer` field announcing them.
    let answer = attacker_exchange(
        addr,
        b"POST /tr HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nTrailer: x-sent\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\nx-sent: yes\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("\r\n0\r\nx-checksum: 42\r\n\r\n"),
        "{answer}"
    );
    assert!(lower.contains("\r\ntrailer: x-checksum\r\n"), "{answer}");
    let sent = up.received().to_ascii_lowercase();
    assert!(sent.contains("\r\nte: trailers\r\n"), "{sent}");
    assert!(sent.contains("\r\ntrailer: x-sent\r\n"), "{sent}");
    assert!(sent.contains("\r\nx-sent: yes\r\n"), "{sent}");
    // Without `TE: trailers` the body arrives whole, the trailers do not.
    let answer = attacker_exchange(
        addr,
        b"GET /tr HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.contains("3\r\nabc\r\n0\r\n\r\n"), "{answer}");
    assert!(!answer.contains("x-checksum: 42"), "{answer}");
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_to_the_user_s_variant() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ws, heads) = harness::edge_http::ws_echo_upstream().await;
    let rg = Rg::start(&Conf::at(ws, ws)).await;
    let mut s = harness::edge_http::attacker(rg.app.proxy_addr).await;
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nx-user-id: ws-user\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(harness::DEADLINE, s.read(&mut buf))
            .await
            .expect("an answer to the upgrade")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nsec-websocket-accept: "), "{head}");
    assert!(head.contains("\r\nx-rollgate-variant: v1\r\n"), "{head}");
    // The tunnel carries bytes both ways.
    for msg in [&b"frame one"[..], b"frame two"] {
        s.write_all(msg).await.unwrap();
        let mut echo = vec![0u8; msg.len()];
        tokio::time::timeout(harness::DEADLINE, s.read_exact(&mut echo))
            .await
            .expect("echo through the tunnel")
            .unwrap();
        assert_eq!(echo, msg);
    }
    let upstream_head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        upstream_head.contains("\r\nupgrade: websocket\r\n"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("\r\nconnection: upgrade\r\n"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("\r\nx-rollgate-variant: v1\r\n"),
        "{upstream_head}"
    );
    drop(s);
    rg.shutdown().await;
}
