//! Helpers of the hardening, upstream-fault and crash-safety tests (owned by
//! those tests; `tests/common` stays untouched): a rollgate whose `[server]`
//! section a test may extend, an upstream that counts what reaches it and can
//! be stopped and started again on the same port, raw-TCP fault upstreams,
//! a client that reports failures instead of panicking, and the real binary
//! as a child process.
//!
//! Ports always come from the kernel (`127.0.0.1:0`); deadlines only turn a
//! hang into a failure, they never measure speed.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::{HttpClient, Resp};

pub const BIN: &str = env!("CARGO_BIN_EXE_rollgate");
pub const TOKEN: &str = "secret";
/// Upper bound on any wait; only turns a hang into a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

// ===== rollgate in-process =====

/// A config: `[server]` gets `server` lines on top of the loopback defaults;
/// `rest` is appended verbatim (upstreams, routing, journeys, rollout).
pub fn config_text(state_dir: &Path, server: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\nstate_dir = {dir:?}\n{server}\n\n{rest}\n",
        dir = state_dir.display().to_string()
    )
}

/// `[upstreams]` + `[routing]` + a rollout that never moves by itself.
pub fn quiet_rest(v1: &str, v2: &str, upstreams: &str) -> String {
    format!(
        "[upstreams]\nv1 = {v1:?}\nv2 = {v2:?}\n{upstreams}\n\n\
         [routing]\nsticky_header = \"x-user-id\"\n\n\
         [rollout]\nauto_start = false\ntick = \"1h\"\nwindow = \"1h\"\n"
    )
}

/// A running in-process rollgate with its state dir.
pub struct Rg {
    pub app: rollgate::App,
    pub state: tempfile::TempDir,
    pub client: HttpClient,
    pub token: String,
}

impl Rg {
    /// Starts rollgate on the config `text(state_dir)`.
    pub async fn start(text: impl FnOnce(&Path) -> String) -> Rg {
        let state = tempfile::tempdir().expect("state dir");
        let text = text(state.path());
        let cfg = rollgate::Config::parse(&text, "hardening.toml")
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));
        let app = rollgate::App::start(cfg).await.expect("rollgate starts");
        let token = std::env::var("ROLLGATE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| TOKEN.to_string());
        Rg {
            app,
            state,
            client: HttpClient::http1(),
            token,
        }
    }

    pub fn proxy(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.proxy_addr)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.admin_addr)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// An admin call with the token (and a JSON content type).
    pub async fn call(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Resp {
        let auth = self.bearer();
        self.client
            .request(
                method,
                &self.admin(path),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
    }

    pub async fn status(&self) -> serde_json::Value {
        let r = self.client.get(&self.admin("/api/v1/status"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "status: {}", r.text());
        r.json()
    }

    pub async fn metrics(&self) -> String {
        let r = self.client.get(&self.admin("/metrics"), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        r.text()
    }

    /// A normal request through the proxy on a fresh connection, and one on
    /// the admin port: proof the process still serves.
    pub async fn assert_serving(&self, what: &str) {
        let fresh = HttpClient::http1();
        let r = fresh
            .get(&self.proxy("/still-serving"), &[("x-user-id", "probe")])
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "after {what}: proxy answered {}",
            r.text()
        );
        let r = fresh.get(&self.admin("/healthz"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "after {what}: admin is down");
    }

    pub async fn shutdown(self) {
        self.app.shutdown().await;
    }
}

// ===== an upstream that counts =====

/// One request as an upstream saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub content_length: Option<String>,
    pub transfer_encoding: Option<String>,
}

/// An HTTP/1.1 upstream that records every request and answers 200 with a
/// small JSON naming itself. `stop` closes the listener and every open
/// connection (as a crashed process would); `restart` binds the same port again.
pub struct Counting {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub count: Arc<AtomicU64>,
    stop: Option<watch::Sender<bool>>,
}

impl Counting {
    pub async fn start(name: &'static str) -> Counting {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut c = Counting {
            name,
            addr,
            seen: Arc::default(),
            count: Arc::default(),
            stop: None,
        };
        c.serve(l);
        c
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, l: TcpListener) {
        let (tx, rx) = watch::channel(false);
        self.stop = Some(tx);
        let (name, seen, count) = (self.name, self.seen.clone(), self.count.clone());
        tokio::spawn(async move {
            let mut stop = rx.clone();
            loop {
                let stream = tokio::select! {
                    a = l.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                    _ = stop.wait_for(|v| *v) => return,
                };
                let (seen, count, mut stop) = (seen.clone(), count.clone(), rx.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (seen, count) = (seen.clone(), count.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let h = |n: http::header::HeaderName| {
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
                                content_length: h(http::header::CONTENT_LENGTH),
                                transfer_encoding: h(http::header::TRANSFER_ENCODING),
                                body,
                            });
                            count.fetch_add(1, Ordering::SeqCst);
                            let mut r = Response::new(Full::new(Bytes::from(format!(
                                "{{\"upstream\":\"{name}\"}}"
                            ))));
                            r.headers_mut()
                                .insert("x-upstream", name.parse().expect("ascii"));
                            Ok::<_, Infallible>(r)
                        }
                    });
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

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
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
    /// Answers with bytes that are not HTTP.
    Garbage,
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
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
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

// ===== a client that reports failures =====

/// A response, or why there was none (connect refused, reset, body cut).
pub type Outcome = Result<(StatusCode, Bytes), String>;

/// hyper-util's pooled client that never panics: every failure is a value.
#[derive(Clone)]
pub struct Lenient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Lenient {
    fn default() -> Self {
        Self::new()
    }
}

impl Lenient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Self {
            inner: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(connector),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Outcome {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e:?}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(DEADLINE, fut)
            .await
            .unwrap_or_else(|_| Err("no answer within the deadline".into()))
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Outcome {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }
}

// ===== the real binary =====

/// A free loopback port: bound by the kernel, read, released.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `rollgate <args>` to completion (bounded by [`DEADLINE`]): status, stdout + stderr.
pub fn run_bin(args: &[&str], config: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("ROLLGATE_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rollgate");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rollgate {args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    use std::io::Read as _;
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut out);
    }
    (status, out)
}

/// A `rollgate run` child, SIGKILLed when dropped so a failing test leaks nothing.
pub struct Proc {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(config: &Path, stderr: PathBuf) -> Proc {
        let err = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("ROLLGATE_ADMIN_TOKEN")
            .env("ROLLGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn rollgate run");
        Proc { child, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL and reap: no drain, no final persist.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for `GET /healthz` on `admin`; fails early with stderr if the child exits.
    pub async fn wait_ready(&mut self, admin: SocketAddr) {
        let client = Lenient::new();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!("rollgate exited early ({st}): {}", self.stderr());
            }
            if let Ok((StatusCode::OK, _)) =
                client.get(&format!("http://{admin}/healthz"), &[]).await
            {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "rollgate not ready within {DEADLINE:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
