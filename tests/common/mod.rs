//! Shared helpers of the integration tests: tiny upstream servers, a rollgate
//! started in-process on loopback ports chosen by the kernel, an HTTP client on
//! hyper-util's legacy `Client`, raw TCP exchanges and a `/metrics` parser.
//!
//! Every server binds `127.0.0.1:0`; nothing here depends on wall-clock timing
//! except the upstream's deliberate `Slow` delay.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The admin token the test configs use (unless `ROLLGATE_ADMIN_TOKEN` overrides it).
pub const TOKEN: &str = "secret";
/// Size of one streamed chunk.
pub const CHUNK: usize = 64 * 1024;
/// Path prefix that makes an upstream stream `N` bytes back: `/stream/N`.
pub const STREAM_PREFIX: &str = "/stream/";

static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

// ===== streamed bodies =====

/// A body of `len` bytes made of slices of one static buffer: producing it
/// allocates nothing per chunk, so a test can stream 50 MB with flat memory.
pub struct Repeat {
    left: u64,
}

impl Repeat {
    pub fn new(len: u64) -> Self {
        Self { left: len }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Reads a body frame by frame and returns its length, keeping none of it.
pub async fn drain<B>(mut body: B) -> u64
where
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            n += bytes::Buf::remaining(&data) as u64;
        }
    }
    n
}

pub type TestBody = BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

// ===== upstream servers =====

/// How a test upstream behaves.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Answers at once. `GET /stream/N` streams N bytes; any other request gets
    /// a JSON echo: `{"upstream", "method", "path", "version", "headers", "body_bytes"}`,
    /// `headers` mapping each lower-case name to its list of values. The request
    /// body is counted frame by frame, never kept.
    Echo,
    /// Like `Echo`, after sleeping this long before reading the request body.
    Slow(Duration),
}

/// A running test upstream; the accept loop stops when it is dropped.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream whose answers name it (`x-upstream: <name>` and the echo body).
    pub async fn start(name: &'static str, mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = service_fn(move |req| upstream_answer(name, mode, req));
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { name, addr, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn upstream_answer(
    name: &'static str,
    mode: Mode,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    if let Mode::Slow(d) = mode {
        tokio::time::sleep(d).await;
    }
    let (parts, body) = req.into_parts();
    let body_bytes = drain(body).await;
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

/// An address nothing listens on: bound once by the kernel, then released.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

// ===== rollgate =====

/// Sections of the config a test may change; everything else is fixed:
/// loopback port 0 for both listeners, a fresh state dir, token `secret`.
pub struct Setup {
    pub v1: String,
    pub v2: String,
    /// Extra lines of `[server]` (e.g. `runtime`, `workers`).
    pub server: String,
    /// Extra lines of `[upstreams]`.
    pub upstreams: String,
    /// Lines of `[routing]`.
    pub routing: String,
    /// Lines of `[rollout]`; by default no auto start and an hour-long tick, so
    /// the controller leaves manual weights alone for the whole test.
    pub rollout: String,
    /// Appended verbatim (e.g. `[[journeys]]` tables).
    pub extra: String,
}

impl Setup {
    pub fn new(v1: impl Into<String>, v2: impl Into<String>) -> Self {
        Self {
            v1: v1.into(),
            v2: v2.into(),
            server: String::new(),
            upstreams: String::new(),
            routing: String::new(),
            rollout: "auto_start = false\ntick = \"1h\"\nwindow = \"1h\"\n".into(),
            extra: String::new(),
        }
    }

    /// Both upstreams answering at once, users keyed by `x-user-id`.
    pub async fn echo_pair() -> (Upstream, Upstream, Setup) {
        let v1 = Upstream::start("v1", Mode::Echo).await;
        let v2 = Upstream::start("v2", Mode::Echo).await;
        let setup = Setup::new(v1.url(), v2.url()).routing("sticky_header = \"x-user-id\"");
        (v1, v2, setup)
    }

    pub fn server(mut self, s: &str) -> Self {
        self.server = s.into();
        self
    }

    pub fn upstreams(mut self, s: &str) -> Self {
        self.upstreams = s.into();
        self
    }

    pub fn routing(mut self, s: &str) -> Self {
        self.routing = s.into();
        self
    }

    pub fn rollout(mut self, s: &str) -> Self {
        self.rollout = s.into();
        self
    }

    pub fn extra(mut self, s: &str) -> Self {
        self.extra = s.into();
        self
    }

    pub fn toml(&self, state_dir: &std::path::Path) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\nstate_dir = {state:?}\n{server}\n\n\
             [upstreams]\nv1 = {v1:?}\nv2 = {v2:?}\n{upstreams}\n\n\
             [routing]\n{routing}\n\n\
             [rollout]\n{rollout}\n\n{extra}\n",
            state = state_dir.display().to_string(),
            v1 = self.v1,
            v2 = self.v2,
            server = self.server,
            upstreams = self.upstreams,
            routing = self.routing,
            rollout = self.rollout,
            extra = self.extra,
        )
    }

    pub async fn start(self) -> Harness {
        let state = tempfile::tempdir().expect("temp state dir");
        let text = self.toml(state.path());
        let cfg = rollgate::Config::parse(&text, "test.toml")
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));
        let app = rollgate::App::start(cfg).await.expect("rollgate starts");
        // The environment variable wins over the config, as in production.
        let token = std::env::var("ROLLGATE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| TOKEN.to_string());
        Harness {
            app,
            _state: state,
            client: HttpClient::http1(),
            token,
        }
    }
}

/// A running rollgate plus a keep-alive client.
pub struct Harness {
    pub app: rollgate::App,
    _state: tempfile::TempDir,
    pub client: HttpClient,
    pub token: String,
}

impl Harness {
    pub fn proxy(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.proxy_addr)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.admin_addr)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `PUT /api/v1/weights {"v2": pct}` with the token; panics unless 200.
    pub async fn set_weight(&self, pct: f64) {
        let auth = self.bearer();
        let r = self
            .client
            .request(
                Method::PUT,
                &self.admin("/api/v1/weights"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                json!({ "v2": pct }).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "PUT weights {pct}: {}", r.text());
        assert_eq!(
            r.json()["weights"]["v2"].as_f64(),
            Some(pct),
            "{}",
            r.text()
        );
    }

    pub async fn status(&self) -> Value {
        let r = self.client.get(&self.admin("/api/v1/status"), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()
    }

    pub async fn metrics(&self) -> String {
        let r = self.client.get(&self.admin("/metrics"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "/metrics: {}", r.text());
        r.text()
    }

    /// `GET path` on the proxy as user `key` (`x-user-id`); returns the variant
    /// from `x-rollgate-variant`, checked against the upstream that answered.
    pub async fn variant_of(&self, key: &str, path: &str) -> String {
        let r = self
            .client
            .get(&self.proxy(path), &[("x-user-id", key)])
            .await;
        assert_eq!(r.status, StatusCode::OK, "user {key}: {}", r.text());
        let v = r.variant().to_string();
        assert_eq!(
            r.header("x-upstream"),
            Some(v.as_str()),
            "variant header disagrees with the upstream"
        );
        v
    }

    pub async fn shutdown(self) {
        self.app.shutdown().await;
    }
}

// ===== client =====

/// A buffered response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// `x-rollgate-variant` of the response (panics when absent).
    pub fn variant(&self) -> &str {
        self.header("x-rollgate-variant")
            .unwrap_or_else(|| panic!("no x-rollgate-variant in {:?}", self.headers))
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect()
    }
}

/// hyper-util's pooled client, over HTTP/1.1 keep-alive or h2c prior knowledge.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, TestBody>,
}

impl HttpClient {
    pub fn http1() -> Self {
        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(128)
            .build_http();
        Self { inner }
    }

    /// HTTP/2 over cleartext with prior knowledge (no upgrade dance).
    pub fn h2c() -> Self {
        let inner = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        Self { inner }
    }

    /// Sends a request and returns the streaming response.
    pub async fn send(&self, req: Request<TestBody>) -> Response<Incoming> {
        let what = format!("{} {}", req.method(), req.uri());
        self.inner
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self.send(b.body(full(body)).expect("request")).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    pub async fn put(&self, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        self.request(Method::PUT, url, headers, body).await
    }

    pub async fn post(&self, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        self.request(Method::POST, url, headers, body).await
    }
}

/// Writes `request` on a fresh connection and reads until the server closes
/// it (or resets it after answering). Write errors are ignored: a server may
/// answer and close before reading everything (e.g. 431).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no answer within 30 s; got so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 answer (`HTTP/1.1 431 ...`).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {answer:?}"))
}

// ===== /metrics =====

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text exposition (comments skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                    let labels = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair
                                .split_once("=\"")
                                .unwrap_or_else(|| panic!("bad label in {line:?}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_samples(text)
        .into_iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

// ===== process memory =====

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
