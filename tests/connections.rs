//! Connections at the edge: the caps every worker shares
//! (`max_connections`, `max_connections_per_client`), the idle timeout, the
//! cleartext listener's protocol choice, and a second rollgate refused on an
//! address the first one serves. The input -> outcome rows are in
//! `tests/README.md`.

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness::client::read_to_close;
use harness::client::start_of;
use harness::edge_http::{attacker, keepalive_request};
use harness::process::{run_bin, Proc};
use harness::{Conf, HttpClient, Ports, Rg, Upstream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_counts_the_process_not_each_worker() {
    // Two workers, each with its own SO_REUSEPORT listener: a cap per worker
    // would let four connections in.
    let (_v1, _v2, rg) = Rg::echo(
        "max_connections = 2\nworkers = 2\nruntime = \"per_core\"\nheader_read_timeout = \"60s\"",
    )
    .await;
    let addr = rg.app.proxy_addr;
    let mut open = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let a = keepalive_request(&mut s, &format!("/held/{i}")).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        open.push(s);
    }
    // However the kernel spreads them over the workers, no third one is
    // served while two are open.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        waiting.push(s);
    }
    let mut buf = [0u8; 4096];
    for s in &mut waiting {
        let early = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(early.is_err(), "served beyond max_connections: {early:?}");
    }
    // Each is answered and closed in turn once the held ones go.
    drop(open);
    for s in &mut waiting {
        let answer = read_to_close(s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{}", start_of(&answer));
    }
    drop(waiting);
    rg.assert_serving("max_connections across workers").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_gets_its_connections_and_no_more() {
    let (_v1, _v2, rg) =
        Rg::echo("max_connections_per_client = 2\nheader_read_timeout = \"60s\"").await;
    let addr = rg.app.proxy_addr;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = attacker(addr).await;
        let a = keepalive_request(&mut s, &format!("/mine/{i}")).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        held.push(s);
    }
    // The third from the same address is closed unanswered...
    let mut third = attacker(addr).await;
    let _ = third
        .write_all(b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_to_close(&mut third).await;
    assert!(
        answer.is_empty(),
        "over the per-client cap but answered: {answer}"
    );
    // ...while another client is served, and so is the first once it closes one.
    rg.assert_serving("a client at its cap").await;
    drop(held.pop());
    let mut again = eventually_served(addr).await;
    assert!(keepalive_request(&mut again, "/again")
        .await
        .starts_with("HTTP/1.1 200"));
    rg.shutdown().await;
}

/// A new connection from the attacker's address that the proxy keeps open
/// (a just-closed one may take a moment to give its place back).
async fn eventually_served(addr: std::net::SocketAddr) -> TcpStream {
    harness::eventually("a place freed", Duration::from_millis(50), || async {
        let mut s = attacker(addr).await;
        s.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1024];
        match s.read(&mut buf).await {
            Ok(n) if n > 0 => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_connection_that_only_says_hello_is_closed_when_idle() {
    let (_v1, _v2, rg) = Rg::echo("idle_timeout = \"1s\"\nh2_keepalive_interval = \"0s\"").await;
    let mut s = attacker(rg.app.proxy_addr).await;
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    // Closed with a GOAWAY (frame type 7) after the server's SETTINGS.
    let answer = read_to_close(&mut s).await.into_bytes();
    assert!(
        answer.windows(4).any(|w| w[3] == 7 && w[..3] == [0, 0, 8]),
        "no GOAWAY before the close: {answer:?}"
    );
    // A connection with work in flight is not idle: a streamed body slower
    // than the idle timeout arrives whole.
    let r = HttpClient::h2c()
        .get(&rg.proxy("/stream/1000000"), &[])
        .await;
    assert_eq!(r.body.len(), 1_000_000);
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_peer_that_never_answers_a_ping_is_closed() {
    // The idle timeout is far away: only the keep-alive ping can close it.
    let (_v1, _v2, rg) = Rg::echo("idle_timeout = \"1h\"\nh2_keepalive_interval = \"1s\"").await;
    let mut s = attacker(rg.app.proxy_addr).await;
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    let answer = read_to_close(&mut s).await.into_bytes();
    // A PING (type 6, no ACK flag) went out before the close.
    assert!(
        answer.windows(5).any(|w| w == [0, 0, 8, 6, 0]),
        "no PING before the close: {answer:?}"
    );
    rg.assert_serving("a silent h2 peer").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleartext_port_speaks_the_configured_protocol() {
    let (_v1, _v2, h2c) = Rg::echo("protocol = \"h2c\"").await;
    let r = HttpClient::h2c().get(&h2c.proxy("/h2c"), &[]).await;
    assert_eq!(r.status, 200);
    // An HTTP/1.1 request line is a bad preface on an h2c-only port: an h2
    // GOAWAY, not an HTTP/1.1 answer.
    let mut s = attacker(h2c.app.proxy_addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(!answer.starts_with("HTTP/1.1"), "{}", start_of(&answer));
    h2c.shutdown().await;

    let (_v1, _v2, h1) = Rg::echo("protocol = \"http1\"").await;
    let mut s = attacker(h1.app.proxy_addr).await;
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    // hyper's HTTP/1.1 parser closes on `PRI * HTTP/2.0`, answering at
    // most in HTTP/1.1: never an h2 SETTINGS frame.
    let answer = read_to_close(&mut s).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 "),
        "{}",
        start_of(&answer)
    );
    h1.assert_serving("an h2 preface on an HTTP/1.1-only port")
        .await;
    h1.shutdown().await;
}

/// The config file `dir/<name>.toml` for the real binary on `ports`.
fn write_conf(dir: &Path, name: &str, v: &(Upstream, Upstream), ports: Ports) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    Conf::new(v.0.url(), v.1.url())
        .ports(ports)
        .write(&path, &dir.join(format!("state-{name}")));
    path
}

/// `rollgate run` (the real binary) on fresh ports, ready.
async fn binary(dir: &Path, v: &(Upstream, Upstream)) -> (Proc, Ports) {
    let ports = Ports::free();
    let cfg = write_conf(dir, "first", v, ports);
    let mut rg = Proc::spawn(&cfg, ports, dir.join("first.err"));
    rg.wait_ready().await;
    (rg, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rollgate_on_a_served_address_refuses_to_start() {
    let ups = Upstream::pair().await;
    let dir = tempfile::tempdir().unwrap();
    let (first, ports) = binary(dir.path(), &ups).await;

    let second = Ports {
        proxy: ports.proxy,
        admin: Ports::free().admin,
    };
    let second_cfg = write_conf(dir.path(), "second", &ups, second);
    let (status, out) = run_bin(&["run"], &second_cfg);
    assert!(!status.success(), "the second one started: {out}");
    assert!(
        out.contains("already in use") && out.contains(&ports.proxy.to_string()),
        "{out}"
    );
    // The first one is untouched.
    first.assert_serving("a second rollgate's attempt").await;
    first.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_a_client_can_repeat_are_rate_limited_in_the_log() {
    let ups = Upstream::pair().await;
    let dir = tempfile::tempdir().unwrap();
    let (rg, ports) = binary(dir.path(), &ups).await;
    // 200 PING acks for pings the server never sent: h2 warns about each.
    let mut s = attacker(ports.proxy).await;
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    let ack: [u8; 17] = [0, 0, 8, 6, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    for _ in 0..200 {
        s.write_all(&ack).await.unwrap();
    }
    // Then a PING of our own: once its ack is back, every frame before it
    // was read.
    s.write_all(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(5).any(|w| w == [0, 0, 8, 6, 1]) {
        let n = tokio::time::timeout(harness::DEADLINE, s.read(&mut buf))
            .await
            .expect("our PING acked")
            .unwrap();
        assert!(n > 0, "closed before acking our PING");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    rg.assert_serving("200 unsolicited PING acks").await;
    let lines = rg.stderr().matches("PING ack").count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} lines about PING acks:\n{}",
        rg.stderr()
    );
    rg.kill9();
}
