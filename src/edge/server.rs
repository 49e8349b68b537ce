//! Accept loop shared by the proxy and admin listeners: HTTP/1.1 and HTTP/2
//! on one port (hyper-util's auto builder; h2c by prior knowledge, or h2 by
//! ALPN under TLS), keep-alive, header limits, a cap on open connections, and
//! an idle timeout, and a graceful drain when the shutdown future resolves.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::config::Protocol;
pub use crate::edge::conn_limits::ConnLimits;
use crate::edge::log_limit::rate_limited;
use crate::edge::tls::Tls;

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request head size; larger heads get 431 (HTTP/1.1) or a stream reset (h2).
    pub max_header_bytes: usize,
    /// Time allowed to send a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Open connections; at the cap, accepting pauses until one closes
    /// (the kernel backlog holds new ones meanwhile). Enforced by the
    /// [`ConnLimits`] handed to [`serve_tls`], shared by every worker.
    pub max_connections: usize,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval (and the time allowed for its answer).
    pub h2_keepalive_interval: Option<Duration>,
    /// What the cleartext listener speaks.
    pub protocol: Protocol,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: crate::config::DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(60),
            h2_keepalive_interval: Some(Duration::from_secs(20)),
            protocol: Protocol::Auto,
        }
    }
}

/// The HTTP/1.1 settings, for the auto builder's HTTP/1.1 half and the
/// HTTP/1.1-only builder alike (their types differ, their methods do not).
macro_rules! http1_settings {
    ($b:expr, $limits:expr) => {
        $b.timer(TokioTimer::new())
            .keep_alive(true)
            // One flattened write per response (see `proxy::pool`).
            .writev(false)
            // hyper rejects anything below 8 KiB; it is the whole read buffer, so
            // it bounds the request head.
            .max_buf_size($limits.max_header_bytes.max(8192))
            .header_read_timeout($limits.header_read_timeout)
    };
}

/// The connection builders: `auto` sniffs HTTP/1.1 or h2 (and is forced to
/// h2 where that is the only protocol); `http1` serves HTTP/1.1 only, with
/// upgrades. hyper-util's auto builder ignores a forced version once
/// upgrades are on, so the HTTP/1.1-only case has a builder of its own.
#[derive(Clone)]
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
}

fn builders(limits: &Limits) -> Builders {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1_settings!(http1, limits);
    Builders {
        auto: builder(limits),
        http1,
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    http1_settings!(b.http1(), limits);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        // A peer that vanished without a FIN (a NAT dropping the mapping)
        // would otherwise hold its connection until the idle timeout.
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(
            limits
                .h2_keepalive_interval
                .unwrap_or(Duration::from_secs(20)),
        );
    b
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves,
/// then drains open connections for at most `limits.drain_timeout`.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conns = ConnLimits::new(limits.max_connections, 0, Default::default());
    serve_tls(listener, None, limits, conns, handler, shutdown).await
}

/// [`serve`], terminating TLS first when `tls` is set, under the connection
/// caps `conns` (shared with the other workers of the same listener).
pub async fn serve_tls<H, Fut, B>(
    listener: TcpListener,
    tls: Option<Tls>,
    limits: Limits,
    conns: Arc<ConnLimits>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builders = builders(&limits);
    // Every connection task holds a receiver: `true` asks it to wind down,
    // and the sender sees all of them gone once the last one has.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Accept first, then wait for a place: with one listener per worker
        // and places shared by all, a worker that took a place before
        // accepting could sit on it with an empty queue while another
        // worker's queue starves. This way each worker holds at most one
        // accepted connection beyond the cap, and the semaphore's queue
        // hands freed places out in order.
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of fds or a transient error: back off, never exit the loop.
                    rate_limited!(warn, "accept failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = tokio::select! {
            p = conns.slot() => p,
            () = &mut shutdown => break,
        };
        let Some(permit) = conns.admit(slot, peer.ip()) else {
            // Closed at once: the client learns as early as possible, and
            // its connection costs nothing more than the accept.
            rate_limited!(warn, "over server.max_connections_per_client: connection closed", %peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let svc = {
            let (handler, activity) = (handler.clone(), activity.clone());
            service_fn(move |mut req: Request<Incoming>| {
                let guard = Active::begin(&activity);
                if req.headers().contains_key(http::header::UPGRADE) {
                    // Only upgrade requests (rare) pay for the extension.
                    req.extensions_mut().insert(ConnHold::new(&activity));
                }
                let fut = handler(req, peer);
                async move {
                    let resp = fut.await?;
                    Ok::<_, Infallible>(resp.map(|body| Tracked {
                        body,
                        _guard: guard,
                    }))
                }
            })
        };
        let stop = stop_rx.clone();
        let builders = builders.clone();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        let idle = limits.idle_timeout;
        // Serves `io` in `speak` (h2c here means h2 only, cleartext or not).
        macro_rules! serve_as {
            ($speak:expr, $io:expr) => {{
                let io = TokioIo::new($io);
                let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = match $speak {
                    Protocol::Auto => {
                        let conn = builders.auto.serve_connection_with_upgrades(io, svc);
                        drive(conn, |c| c.graceful_shutdown(), &activity, idle, stop).await
                    }
                    Protocol::Http1 => {
                        let conn = builders.http1.serve_connection(io, svc).with_upgrades();
                        drive(conn, |c| c.graceful_shutdown(), &activity, idle, stop)
                            .await
                            .map_err(Into::into)
                    }
                    Protocol::H2c => {
                        let auto = builders.auto.http2_only();
                        let conn = auto.serve_connection(io, svc);
                        drive(conn, |c| c.graceful_shutdown(), &activity, idle, stop).await
                    }
                };
                result
            }};
        }
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    // hyper's header timer starts only once the auto builder
                    // has seen the first bytes: a client that connects and
                    // sends nothing would hold its slot forever.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(handshake_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => {
                            tracing::debug!(%peer, "no request bytes in time: closed");
                            return;
                        }
                    }
                    // The operator's choice for the cleartext port: an
                    // h2c-only port answers an HTTP/1.1 request line (or any
                    // bad preface) with an h2 GOAWAY instead of sniffing.
                    serve_as!(limits.protocol, stream)
                }
                Some(tls) => {
                    let accepted =
                        tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream))
                            .await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // The protocol ALPN agreed on is the only one spoken: an
                    // HTTP/1.1 request line after `h2` (or an h2 preface after
                    // `http/1.1`) is a protocol error, not something to sniff.
                    let speak = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Protocol::H2c,
                        Some(b"http/1.1") => Protocol::Http1,
                        _ => Protocol::Auto,
                    };
                    // As above, after the handshake: wait for the first
                    // plaintext bytes (kept in the buffer) within the limit.
                    let mut stream = tokio::io::BufReader::new(stream);
                    match tokio::time::timeout(handshake_timeout, stream.fill_buf()).await {
                        Ok(Ok(b)) if !b.is_empty() => {}
                        _ => {
                            tracing::debug!(%peer, "no request bytes in time after TLS: closed");
                            return;
                        }
                    }
                    serve_as!(speak, stream)
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(limits.drain_timeout, stop_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
    }
}

/// Runs one connection to its end, asking it to wind down (GOAWAY on h2,
/// close after the current exchange on HTTP/1.1) when the listener stops or
/// when it has had no request in flight for `idle`. An idle peer that does
/// not take part in the h2 shutdown (it never answers the closing PING) is
/// dropped after `idle` more.
async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    let mut closing = false;
    let mut idle_closed = false;
    let ended = loop {
        let check_at = activity.idle_deadline(idle);
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stop.wait_for(|v| *v), if !closing => {
                graceful(conn.as_mut());
                closing = true;
            }
            () = tokio::time::sleep_until(check_at), if !closing || idle_closed => {
                if activity.idle_deadline(idle) > tokio::time::Instant::now() {
                    continue;
                }
                if idle_closed {
                    tracing::debug!("idle connection ignored the shutdown: dropped");
                    break Ok(());
                }
                tracing::debug!("idle timeout: closing the connection");
                graceful(conn.as_mut());
                closing = true;
                idle_closed = true;
                activity.restart_idle();
            }
        }
    };
    // An upgraded connection left hyper but is still open: it keeps its
    // places under the caps until the tunnel closes.
    activity.tunnels_closed().await;
    ended
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    inflight: AtomicU32,
    /// Upgrade requests and the tunnels they became.
    tunnels: AtomicU32,
    tunnel_closed: tokio::sync::Notify,
    /// Milliseconds after `born` at which `inflight` last dropped to zero.
    idle_since_ms: AtomicU64,
    born: tokio::time::Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            inflight: AtomicU32::new(0),
            tunnels: AtomicU32::new(0),
            tunnel_closed: tokio::sync::Notify::new(),
            idle_since_ms: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
        }
    }

    async fn tunnels_closed(&self) {
        loop {
            // Created before the check, so a close in between still wakes it.
            let closed = self.tunnel_closed.notified();
            if self.tunnels.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Starts the idle clock afresh (the grace after an idle close).
    fn restart_idle(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms, Ordering::Release);
    }

    /// When the connection will have been idle for `idle` if nothing
    /// happens; a busy connection is looked at again `idle` from now.
    fn idle_deadline(&self, idle: Duration) -> tokio::time::Instant {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return tokio::time::Instant::now() + idle;
        }
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)) + idle
    }
}

/// One request in flight: from the handler's call until hyper drops the
/// response body (sent, or the stream reset). One refcount per request, no
/// allocation.
struct Active(Arc<Activity>);

impl Active {
    fn begin(a: &Arc<Activity>) -> Self {
        a.inflight.fetch_add(1, Ordering::AcqRel);
        Active(Arc::clone(a))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.restart_idle();
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps an upgrade request's connection under the caps: carried in the
/// request's extensions and moved into the tunnel when the upgrade
/// succeeds, dropped with the request otherwise.
pub(crate) struct ConnHold(Arc<Activity>);

impl ConnHold {
    fn new(a: &Arc<Activity>) -> Self {
        a.tunnels.fetch_add(1, Ordering::AcqRel);
        ConnHold(Arc::clone(a))
    }
}

/// `Extensions` wants `Clone`; a copy is one more hold.
impl Clone for ConnHold {
    fn clone(&self) -> Self {
        ConnHold::new(&self.0)
    }
}

impl Drop for ConnHold {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::AcqRel);
        self.0.tunnel_closed.notify_waiters();
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked<B> {
    body: B,
    _guard: Active,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
