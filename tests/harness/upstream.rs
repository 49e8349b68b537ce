//! Upstreams for rollgate to proxy to, each on a fresh loopback port:
//! - [`Upstream`]: echoes every request as JSON, records what reached it,
//!   can be slowed, stopped and started again on the same port;
//! - [`DemoApp`]: the demo app (`rollgate::demo::upstream`) with a settable
//!   [`Profile`] (latency, errors, failed payments…), or any handler on
//!   rollgate's own server;
//! - [`fault_upstream`]: raw TCP that hangs, resets or stalls mid-body, or
//!   answers garbage.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rollgate::demo::upstream::{self, Latency, Profile};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::client::{full, Repeat, TestBody};
use super::DEADLINE;

/// Path prefix that makes an [`Upstream`] stream `N` bytes back: `/stream/N`.
pub const STREAM_PREFIX: &str = "/stream/";

/// How an [`Upstream`] answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// At once. `GET /stream/N` streams N bytes; any other request gets a
    /// JSON echo: `{"upstream", "method", "path", "version", "headers",
    /// "body_bytes"}`, `headers` mapping each lower-case name to its list of
    /// values. The request body is counted frame by frame, never kept.
    Echo,
    /// Like `Echo`, after sleeping this long before reading the request body.
    Slow(Duration),
}

/// One request as an upstream saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body_bytes: u64,
    pub content_length: Option<String>,
    pub transfer_encoding: Option<String>,
}

/// An HTTP/1.1 echo upstream whose answers name it (`x-upstream: <name>` and
/// the echo body). `stop` closes the listener and every open connection (as
/// a crashed process would); `restart` binds the same port again. Stops when
/// dropped.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<watch::Sender<bool>>,
}

impl Upstream {
    pub async fn start(name: &'static str, mode: Mode) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = l.local_addr().expect("upstream addr");
        let mut u = Upstream {
            name,
            addr,
            mode,
            seen: Arc::default(),
            stop: None,
        };
        u.serve(l);
        u
    }

    /// `v1` and `v2`, answering at once.
    pub async fn pair() -> (Upstream, Upstream) {
        (
            Upstream::start("v1", Mode::Echo).await,
            Upstream::start("v2", Mode::Echo).await,
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request that reached this upstream so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn serve(&mut self, l: TcpListener) {
        let (tx, rx) = watch::channel(false);
        self.stop = Some(tx);
        let (name, mode, seen) = (self.name, self.mode, self.seen.clone());
        tokio::spawn(async move {
            let mut stop = rx.clone();
            loop {
                let stream = tokio::select! {
                    a = l.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                    _ = stop.wait_for(|v| *v) => return,
                };
                let (seen, mut stop) = (seen.clone(), rx.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(name, mode, seen.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        // Dropping the connection closes the socket mid-whatever.
                        _ = stop.wait_for(|v| *v) => {}
                    }
                });
            }
        });
    }

    /// Closes the listener and every open connection.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        // Until the port refuses connections.
        let start = Instant::now();
        while TcpStream::connect(self.addr).await.is_ok() {
            assert!(start.elapsed() < DEADLINE, "upstream did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Binds the same port again and serves as before.
    pub async fn restart(&mut self) {
        let start = Instant::now();
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(start.elapsed() < DEADLINE, "rebind {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(l);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
    }
}

async fn answer(
    name: &'static str,
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    if let Mode::Slow(d) = mode {
        tokio::time::sleep(d).await;
    }
    let (parts, body) = req.into_parts();
    let body_bytes = drain_lenient(body).await;
    let joined = |n: http::header::HeaderName| {
        parts
            .headers
            .get_all(n)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .reduce(|a, b| format!("{a}, {b}"))
    };
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        body_bytes,
        content_length: joined(http::header::CONTENT_LENGTH),
        transfer_encoding: joined(http::header::TRANSFER_ENCODING),
    });
    let mut resp = if let Some(n) = parts.uri.path().strip_prefix(STREAM_PREFIX) {
        let n: u64 = n.parse().expect("/stream/<bytes>");
        Response::new(Repeat::new(n).boxed())
    } else {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &parts.headers {
            headers
                .entry(k.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        let echo = json!({
            "upstream": name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_bytes": body_bytes,
        });
        let mut r = Response::new(full(serde_json::to_vec(&echo).expect("json")));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        r
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().expect("ascii"));
    Ok(resp)
}

/// The length of a request body, or of what arrived before it broke (a
/// broken body is the test's point, not the upstream's failure).
async fn drain_lenient(body: Incoming) -> u64 {
    let mut body = body;
    let mut n = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            n += data.len() as u64;
        }
    }
    n
}

/// An address nothing listens on: bound once by the kernel, then released.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

// ===== demo apps and other servers =====

/// A healthy demo app profile with this latency.
pub fn healthy(name: &'static str, median_ms: f64, p95_ms: f64) -> Profile {
    Profile::healthy(name, Latency { median_ms, p95_ms })
}

/// A healthy demo app profile that answers at once.
pub fn fast(name: &'static str) -> Profile {
    Profile::healthy(name, Latency::ZERO)
}

/// Resolves when the server should stop.
pub type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server on a fresh loopback port, stopped when dropped.
pub struct DemoApp {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl DemoApp {
    /// The demo app serving `profile`.
    pub async fn start(profile: Profile) -> DemoApp {
        DemoApp::serve(|l, stopped| upstream::serve(l, profile, stopped)).await
    }

    /// `serve(listener, stopped)` on a fresh port, as a task.
    pub async fn serve<F>(serve: impl FnOnce(TcpListener, Stopped) -> F) -> DemoApp
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let addr = l.local_addr().expect("app addr");
        let (stop, mut rx) = watch::channel(false);
        let stopped: Stopped = Box::pin(async move {
            let _ = rx.wait_for(|v| *v).await;
        });
        tokio::spawn(serve(l, stopped));
        DemoApp { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

// ===== raw fault upstreams =====

/// What a raw-TCP upstream does after reading a request head.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Reads the request and never answers (the connection stays open).
    Hang,
    /// Sends a head promising `Content-Length: 100000`, 1000 bytes of body,
    /// then resets the connection.
    ResetMidBody,
    /// Sends the same head and 1000 bytes, then nothing, the connection
    /// left open until the peer leaves.
    StallMidBody,
    /// Answers with bytes that are not HTTP.
    Garbage,
}

/// Reads up to the end of a request head (and whatever came with it);
/// `None` when the peer left first.
pub async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// Serves `fault` on a fresh loopback port until the runtime ends.
pub async fn fault_upstream(fault: Fault) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // Read until the end of the request head (bodies are empty here).
                if read_head(&mut s).await.is_none() {
                    return;
                }
                let mut buf = [0u8; 4096];
                match fault {
                    Fault::Hang => {
                        // Hold the socket open without a word until the peer leaves.
                        let _ = s.read(&mut buf).await;
                        std::future::pending::<()>().await;
                    }
                    Fault::ResetMidBody => {
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n",
                            )
                            .await;
                        let _ = s.write_all(&[b'x'; 1000]).await;
                        let _ = s.flush().await;
                        // Let the head and the first bytes travel, then RST.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        #[allow(deprecated)]
                        let _ = s.set_linger(Some(Duration::ZERO));
                        drop(s);
                    }
                    Fault::StallMidBody => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                            .await;
                        let _ = s.write_all(&[b'x'; 1000]).await;
                        while let Ok(1..) = s.read(&mut buf).await {}
                    }
                    Fault::Garbage => {
                        let _ = s
                            .write_all(b"\x16\x03\x01 this is not HTTP at all \x00\xff\r\n\r\n")
                            .await;
                        let _ = s.shutdown().await;
                    }
                }
            });
        }
    });
    addr
}
