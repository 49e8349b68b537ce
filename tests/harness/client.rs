//! Speaking to rollgate: hyper-util's pooled client over HTTP/1.1 or h2c
//! ([`HttpClient`], panics on failure), the same that reports failures as
//! values ([`Lenient`]), raw TCP exchanges, a TLS client config, and bodies
//! that stream without allocating.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::DEADLINE;

/// Size of one streamed chunk.
pub const CHUNK: usize = 64 * 1024;

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

    /// Status, headers and body, for a test that takes them apart.
    pub fn parts(self) -> (StatusCode, HeaderMap, Bytes) {
        (self.status, self.headers, self.body)
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect()
    }
}

/// A header's value as text (`None` when absent or not visible ASCII).
pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
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
        let what = format!("{method} {url}");
        self.try_request(method, url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// A buffered exchange, or why there was none (connect refused, reset, body cut).
    pub async fn try_request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, String> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(full(body)).map_err(|e| e.to_string())?;
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
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
    read_to_close(&mut s).await
}

/// Everything until the peer closes (or resets); fails after [`DEADLINE`].
pub async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
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

/// The first 300 bytes of a raw answer, for a failure message.
pub fn start_of(answer: &str) -> &str {
    &answer[..answer.len().min(300)]
}

/// `GET /` with one header `X-Big` of `len` bytes.
pub fn one_big_header(len: usize) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(len)
    )
}

/// `GET /` with `n` headers of `len` bytes each.
pub fn many_headers(n: usize, len: usize) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..n)
            .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(len)))
            .collect::<String>()
    )
}

/// The status code of a raw HTTP/1.1 answer (`HTTP/1.1 431 ...`).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {answer:?}"))
}

// ===== a client that reports failures =====

/// A response, or why there was none (connect refused, reset, body cut, no
/// answer within the deadline).
pub type Outcome = Result<Resp, String>;

/// hyper-util's pooled client that never panics: every failure is a value,
/// connecting gives up after 2 s and an exchange after [`DEADLINE`].
#[derive(Clone)]
pub struct Lenient {
    inner: HttpClient,
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
        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        Self {
            inner: HttpClient { inner },
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Outcome {
        let exchange = self.inner.try_request(method, url, headers, body);
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| Err("no answer within the deadline".into()))
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Outcome {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }
}

// ===== TLS =====

/// A self-signed certificate for `localhost`, written as PEM files.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Cert {
    /// `dir/<name>.crt` and `dir/<name>.key`.
    pub fn new(dir: &Path, name: &str) -> Cert {
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

    /// The `[server.tls]` table serving it.
    pub fn server_tls(&self) -> String {
        format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n",
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }
}

/// A TLS connection to `addr` as `localhost`, trusting only `roots`,
/// offering `alpn` (nothing when empty).
pub async fn tls_connect(
    addr: SocketAddr,
    roots: &[&CertificateDer<'static>],
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls_client(roots, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// A rustls client config trusting only `roots`, offering `alpn` (none when empty).
pub fn tls_client(roots: &[&CertificateDer<'static>], alpn: &[u8]) -> tokio_rustls::TlsConnector {
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
    if !alpn.is_empty() {
        cfg.alpn_protocols = vec![alpn.to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}
