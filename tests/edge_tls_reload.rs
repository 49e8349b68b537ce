//! TLS at the edge and live config reload, against the real server.
//!
//! | input | expected |
//! |---|---|
//! | TLS client offering ALPN h2 | HTTP/2 over TLS, 200, upstream sees `x-forwarded-proto: https` |
//! | TLS client offering ALPN http/1.1, no user key | HTTP/1.1, new `rg_bucket` cookie carries `Secure` |
//! | certificate reloaded | open connections keep working; new handshakes get the new certificate |
//! | reload adding a journey | next request is counted under the new journey |
//! | reload changing the phase list | refused, old config keeps running |
//! | SIGHUP with an invalid file (binary) | logged, old config keeps serving |

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::{Mode, Upstream};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

struct Cert {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

fn make_cert(dir: &Path, name: &str) -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    Cert {
        cert,
        key,
        der: c.cert.der().clone(),
    }
}

fn config_text(
    state: &Path,
    v1: &Upstream,
    v2: &Upstream,
    tls: Option<&Cert>,
    journeys: &str,
    phases: &str,
) -> String {
    let tls = tls.map_or(String::new(), |c| {
        format!("[server.tls]\ncert = {:?}\nkey = {:?}\n", c.cert, c.key)
    });
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"secret\"\nstate_dir = {state:?}\n{tls}\n\
         [upstreams]\nv1 = \"{}\"\nv2 = \"{}\"\n\n[routing]\nsticky_header = \"x-user-id\"\n\n\
         [rollout]\nauto_start = false\ntick = \"1h\"\nwindow = \"1h\"\n{phases}\n{journeys}\n",
        v1.url(),
        v2.url()
    )
}

/// A TLS connection trusting only `roots`, offering `alpn`.
async fn connect(
    addr: std::net::SocketAddr,
    roots: &[&CertificateDer<'static>],
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
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
    let cert = make_cert(dir.path(), "a");
    let (v1, v2) = (
        Upstream::start("v1", Mode::Echo).await,
        Upstream::start("v2", Mode::Echo).await,
    );
    let cfg = rollgate::Config::parse(
        &config_text(&dir.path().join("state"), &v1, &v2, Some(&cert), "", ""),
        "t",
    )
    .unwrap();
    let app = rollgate::App::start(cfg).await.unwrap();

    // h2 by ALPN.
    let tls = connect(app.proxy_addr, &[&cert.der], b"h2").await;
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
    let tls = connect(app.proxy_addr, &[&cert.der], b"http/1.1").await;
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
        common::raw_exchange(app.proxy_addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
    )
    .await
    .unwrap();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_open_connections_and_serves_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (make_cert(dir.path(), "a"), make_cert(dir.path(), "b"));
    let (v1, v2) = (
        Upstream::start("v1", Mode::Echo).await,
        Upstream::start("v2", Mode::Echo).await,
    );
    let state = dir.path().join("state");
    let cfg =
        rollgate::Config::parse(&config_text(&state, &v1, &v2, Some(&a), "", ""), "t").unwrap();
    let app = rollgate::App::start(cfg).await.unwrap();

    let old = connect(app.proxy_addr, &[&a.der], b"http/1.1").await;
    let (mut old_send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        old_send
            .send_request(get("/", Some("u")))
            .await
            .unwrap()
            .status(),
        200
    );

    let cfg =
        rollgate::Config::parse(&config_text(&state, &v1, &v2, Some(&b), "", ""), "t").unwrap();
    app.reload(cfg)
        .await
        .expect("reload with a new certificate");

    // The open connection was not dropped.
    assert_eq!(
        old_send
            .send_request(get("/", Some("u")))
            .await
            .unwrap()
            .status(),
        200
    );
    // A new handshake gets certificate B (trusting only B proves it).
    let fresh = connect(app.proxy_addr, &[&b.der], b"http/1.1").await;
    assert_eq!(fresh.get_ref().1.peer_certificates().unwrap()[0], b.der);

    // A broken key on reload is refused and B keeps being served.
    std::fs::write(&b.key, "not a key").unwrap();
    let cfg =
        rollgate::Config::parse(&config_text(&state, &v1, &v2, Some(&b), "", ""), "t").unwrap();
    let e = app.reload(cfg).await.unwrap_err().to_string();
    assert!(e.contains("TLS key") && e.contains("b.key"), "{e}");
    let again = connect(app.proxy_addr, &[&b.der], b"http/1.1").await;
    assert_eq!(again.get_ref().1.peer_certificates().unwrap()[0], b.der);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_journeys_and_refuses_a_changed_phase_list() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (
        Upstream::start("v1", Mode::Echo).await,
        Upstream::start("v2", Mode::Echo).await,
    );
    let state = dir.path().join("state");
    let search = "[[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n";
    let checkout = "[[journeys]]\nname = \"checkout\"\npath_prefix = \"/checkout\"\n";
    let cfg =
        rollgate::Config::parse(&config_text(&state, &v1, &v2, None, search, ""), "t").unwrap();
    let app = rollgate::App::start(cfg).await.unwrap();
    let h = common::HttpClient::http1();
    let url = |p: &str| format!("http://{}{p}", app.proxy_addr);
    let metrics = || async {
        h.get(&format!("http://{}/metrics", app.admin_addr), &[])
            .await
            .text()
    };
    let count = |text: &str, journey: &str| {
        common::metric(
            text,
            "rollgate_requests_total",
            &[("journey", journey), ("variant", "v1"), ("class", "2xx")],
        )
    };

    assert_eq!(
        h.get(&url("/checkout"), &[("x-user-id", "a")]).await.status,
        200
    );
    assert_eq!(count(&metrics().await, "other"), Some(1.0));

    let both = format!("{search}{checkout}");
    let cfg =
        rollgate::Config::parse(&config_text(&state, &v1, &v2, None, &both, ""), "t").unwrap();
    app.reload(cfg).await.expect("journey reload");
    assert_eq!(
        h.get(&url("/checkout"), &[("x-user-id", "a")]).await.status,
        200
    );
    assert_eq!(count(&metrics().await, "checkout"), Some(1.0));

    let phases = "[[rollout.phases]]\nname = \"only\"\nweight = 50\n";
    let cfg =
        rollgate::Config::parse(&config_text(&state, &v1, &v2, None, &both, phases), "t").unwrap();
    let e = app.reload(cfg).await.unwrap_err().to_string();
    assert!(e.contains("rollout.phases"), "{e}");
    // Still serving with the previous journeys.
    assert_eq!(
        h.get(&url("/checkout"), &[("x-user-id", "a")]).await.status,
        200
    );
    assert_eq!(count(&metrics().await, "checkout"), Some(2.0));
    app.shutdown().await;
}

#[test]
fn sighup_with_an_invalid_file_keeps_the_old_config_serving() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = rt.block_on(async {
        (
            Upstream::start("v1", Mode::Echo).await,
            Upstream::start("v2", Mode::Echo).await,
        )
    });
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (proxy, admin) = (port(), port());
    let text = config_text(&dir.path().join("state"), &v1, &v2, None, "", "")
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{proxy}"), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{admin}"), 1);
    let path = dir.path().join("rollgate.toml");
    std::fs::write(&path, &text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", proxy)).is_ok()
    });
    assert!(up, "rollgate did not come up");
    let client = common::HttpClient::http1();
    std::fs::write(
        &path,
        text.replace("[upstreams]", "[upstreams]\nbogus_key = 1"),
    )
    .unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = rt.block_on(client.get(&format!("http://127.0.0.1:{proxy}/"), &[("x-user-id", "z")]));
    assert_eq!(r.status, 200, "proxy stopped serving after a bad reload");
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM should drain and exit 0: {status:?}"
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("reload refused") && err.contains("bogus_key"),
        "{err}"
    );
}
