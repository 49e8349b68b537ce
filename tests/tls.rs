//! TLS at the edge: ALPN picks HTTP/2 or HTTP/1.1, a new visitor's cookie
//! is `Secure`, a reloaded certificate serves new handshakes while open
//! connections keep working, a broken key on reload is refused, and a client
//! that goes silent after the handshake is closed.

mod harness;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use harness::client::{tls_connect, Cert};
use harness::{raw_exchange, Conf, Rg, Upstream, DEADLINE};

/// Echo upstreams and rollgate serving `cert`, with extra `[server]` lines.
async fn tls_rig(cert: &Cert, server: &str) -> (Upstream, Upstream, Rg) {
    let (v1, v2) = Upstream::pair().await;
    let conf = Conf::new(v1.url(), v2.url())
        .server(server)
        .server(&cert.server_tls());
    let rg = Rg::start(&conf).await;
    (v1, v2, rg)
}

fn get(path: &str, user: Option<&str>) -> Request<Empty<Bytes>> {
    let mut b = Request::builder().uri(path).header("host", "localhost");
    if let Some(u) = user {
        b = b.header("x-user-id", u);
    }
    b.body(Empty::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_terminates_with_alpn_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Cert::new(dir.path(), "a");
    let (_v1, _v2, rg) = tls_rig(&cert, "").await;
    let app = &rg.app;

    // h2 by ALPN.
    let tls = tls_connect(app.proxy_addr, &[&cert.der], b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = get("https://localhost/search", Some("alice"));
    req.headers_mut().remove("host");
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");

    // http/1.1 by ALPN; a new visitor's cookie is Secure.
    let tls = tls_connect(app.proxy_addr, &[&cert.der], b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(get("/search", None)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("rg_bucket=") && cookie.ends_with("; Secure"),
        "{cookie}"
    );

    // Plain HTTP on the TLS port is not served.
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        raw_exchange(app.proxy_addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
    )
    .await
    .unwrap();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    rg.shutdown().await;
}

/// The status of `GET /` as user `u` on an open HTTP/1.1 connection.
async fn status(send: &mut SendRequest<Empty<Bytes>>) -> http::StatusCode {
    send.send_request(get("/", Some("u")))
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_open_connections_and_serves_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Cert::new(dir.path(), "a"), Cert::new(dir.path(), "b"));
    let (v1, v2, rg) = tls_rig(&a, "").await;
    let app = &rg.app;
    let with = |c: &Cert| {
        Conf::new(v1.url(), v2.url())
            .server(&c.server_tls())
            .parse(rg.state.path())
    };

    let old = tls_connect(app.proxy_addr, &[&a.der], b"http/1.1").await;
    let (mut old_send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(status(&mut old_send).await, 200);

    app.reload(with(&b))
        .await
        .expect("reload with a new certificate");

    // The open connection was not dropped.
    assert_eq!(status(&mut old_send).await, 200);
    // A new handshake gets certificate B (trusting only B proves it).
    let fresh = tls_connect(app.proxy_addr, &[&b.der], b"http/1.1").await;
    assert_eq!(fresh.get_ref().1.peer_certificates().unwrap()[0], b.der);

    // A broken key on reload is refused and B keeps being served.
    std::fs::write(&b.key, "not a key").unwrap();
    let e = app.reload(with(&b)).await.unwrap_err().to_string();
    assert!(e.contains("TLS key") && e.contains("b.key"), "{e}");
    let again = tls_connect(app.proxy_addr, &[&b.der], b"http/1.1").await;
    assert_eq!(again.get_ref().1.peer_certificates().unwrap()[0], b.der);
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_that_goes_silent_after_the_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cert::new(dir.path(), "edge");
    let (_v1, _v2, rg) = tls_rig(&c, "header_read_timeout = \"1s\"").await;

    // Handshake, then nothing: closed after header_read_timeout.
    let mut tls = tls_connect(rg.app.proxy_addr, &[&c.der], b"").await;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(DEADLINE, tls.read(&mut buf))
        .await
        .expect("a silent TLS client is closed within the deadline");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");

    // A prompt TLS client is served (its first bytes are kept, not lost).
    let mut tls = tls_connect(rg.app.proxy_addr, &[&c.der], b"").await;
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

/// Everything the server writes on `tls` after `bytes`, until it closes.
async fn answer_to(
    mut tls: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    bytes: &[u8],
) -> Vec<u8> {
    tls.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut out))
        .await
        .expect("the connection is closed within the deadline");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_alpn_agreed_on_is_the_only_one_spoken() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Cert::new(dir.path(), "a");
    let (v1, v2, rg) = tls_rig(&cert, "").await;
    let request = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\nx-user-id: u\r\n\r\n";

    // After `h2`, an HTTP/1.1 request is a bad connection preface: the server
    // answers in HTTP/2 frames (its SETTINGS, then GOAWAY) and closes.
    let tls = tls_connect(rg.app.proxy_addr, &[&cert.der], b"h2").await;
    let out = answer_to(tls, request).await;
    assert!(
        !out.starts_with(b"HTTP/1"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        out.len() >= 9 && out[3] == 0x4,
        "an h2 SETTINGS frame first: {out:?}"
    );

    // After `http/1.1`, the h2 preface is not taken for HTTP/2.
    let tls = tls_connect(rg.app.proxy_addr, &[&cert.der], b"http/1.1").await;
    let out = answer_to(tls, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        v1.seen().is_empty() && v2.seen().is_empty(),
        "nothing forwarded"
    );
    rg.shutdown().await;
}
