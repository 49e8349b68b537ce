//! Keep-alive HTTP/1.1 connections to one upstream, written on plain
//! `hyper::client::conn::http1` rather than hyper-util's legacy `Client`.
//!
//! Why by hand: the legacy client costs ~8.6 k instructions per request
//! (callgrind, `loadtest/PROFILE.md`): a pool map keyed by authority behind a
//! lock, boxed futures, a oneshot per checkout and a spawned task per response
//! to wait for the connection to become idle again. A proxy worker talks to
//! exactly one authority per upstream, so a stack of idle senders is all the
//! pool needs, and the connection goes back onto it when the response body
//! has been read to its end — no extra task.
//!
//! Behaviour kept from the legacy client:
//! - a request that could not be written on a pooled connection (the upstream
//!   closed it while it sat idle) is retried on the next one, then on a fresh
//!   connection; a request that was written is never sent twice;
//! - idle connections expire after `pool_idle_timeout` and at most
//!   `pool_max_idle_per_host` are kept;
//! - `TCP_NODELAY`, TCP keep-alive, a connect timeout.
//!
//! Idle connections are reused last-in first-out: the warmest socket serves
//! the next request and the surplus ages out.
//!
//! Each connection carries its own response-body stall timer ([`Stall`]),
//! allocated once with the connection and re-armed per wait, so cutting an
//! upstream that stops sending mid-body costs no allocation per request.

// The idle stack is the one lock of the data plane: it is held for one push or
// pop (no await, no I/O under it), where a lock-free stack of connections would
// need hazard pointers or epochs for the same effect.
#![expect(clippy::disallowed_types, reason = "the idle stack's mutex, see above")]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Pool settings, from `[upstreams]`.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// Longest wait for the next response-body bytes (`upstreams.body_idle_timeout`).
    pub body_idle_timeout: Duration,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect: timed out")]
    ConnectTimeout,
    #[error("connect")]
    Connect(#[source] std::io::Error),
    #[error("connect: HTTP/1 handshake")]
    Handshake(#[source] hyper::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The idle connections to one upstream. Cheap to clone.
pub struct Pool<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B> {
    /// `host:port` for the connect (a name is resolved per connect, like the
    /// legacy client's `HttpConnector`).
    addr: String,
    cfg: PoolConfig,
    /// Oldest at the front, newest at the back.
    idle: Mutex<VecDeque<Idle<B>>>,
    reaper: std::sync::Once,
}

struct Idle<B> {
    tx: SendRequest<B>,
    stall: Stall,
    since: Instant,
}

/// A connection lent to one request; [`Checkout::release`] puts it back.
/// Dropping it instead closes the connection (a body not read to its end
/// leaves the connection mid-message).
pub struct Checkout<B> {
    tx: SendRequest<B>,
    pool: Weak<Inner<B>>,
    /// This connection's response-body stall timer.
    pub stall: Stall,
}

/// Notices a response body that has had no bytes for `body_idle_timeout`.
/// A wait starts at the first read that finds nothing after the last bytes,
/// so a client slow to read pauses the body without the pause counting
/// against the upstream.
///
/// The timer is moved lazily: bytes only clear `waiting_since` (no timer
/// call per chunk), and a timer that fires for an older, earlier wait is
/// pushed to the current one's deadline. A wait never ends before an older
/// one would, so the timer is never late; it is reset at most once per
/// `limit` of streaming.
pub struct Stall {
    timer: Pin<Box<Sleep>>,
    limit: Duration,
    waiting_since: Option<tokio::time::Instant>,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(limit)),
            limit,
            waiting_since: None,
        }
    }

    /// Called when a read of the body found nothing: `true` once nothing has
    /// come for the whole limit since the first such read.
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self
            .waiting_since
            .get_or_insert_with(tokio::time::Instant::now);
        let deadline = since + self.limit;
        while self.timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
        false
    }

    /// Bytes came: the next empty read starts a new wait.
    pub fn progressed(&mut self) {
        self.waiting_since = None;
    }
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(authority: &Authority, cfg: PoolConfig) -> Self {
        let port = authority.port_u16().unwrap_or(80);
        Self {
            inner: Arc::new(Inner {
                addr: format!("{}:{port}", authority.host()),
                cfg,
                idle: Mutex::new(VecDeque::new()),
                reaper: std::sync::Once::new(),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a
    /// new one. The caller bounds the whole exchange with its own timeout;
    /// dropping this future closes the connection it was using.
    pub async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Checkout<B>), PoolError> {
        while let Some((mut tx, stall)) = self.inner.take_idle() {
            if tx.ready().await.is_err() {
                continue; // closed while idle
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.checkout(tx, stall))),
                Err(mut e) => match e.take_message() {
                    // Never written: safe to try the next connection.
                    Some(r) => req = r,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut tx = self.connect().await?;
        let stall = Stall::new(self.inner.cfg.body_idle_timeout);
        tx.ready().await?;
        let resp = tx.send_request(req).await?;
        Ok((resp, self.checkout(tx, stall)))
    }

    fn checkout(&self, tx: SendRequest<B>, mut stall: Stall) -> Checkout<B> {
        stall.progressed();
        Checkout {
            tx,
            pool: Arc::downgrade(&self.inner),
            stall,
        }
    }

    async fn connect(&self) -> Result<SendRequest<B>, PoolError> {
        let cfg = &self.inner.cfg;
        let stream =
            match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&self.inner.addr))
                .await
            {
                Err(_) => return Err(PoolError::ConnectTimeout),
                Ok(Err(e)) => return Err(PoolError::Connect(e)),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        // Heads and small bodies copied into one buffer and sent with one
        // `write`: 2 % fewer instructions per request than vectored writes
        // (callgrind, loadtest/PROFILE.md); large bodies pay a copy either way.
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Handshake)?;
        // The connection's I/O runs on the current runtime (in per-core mode,
        // this worker's own); it ends when the last sender is dropped.
        // With upgrades, a 101 hands the connection to the tunnel (which
        // keeps its `Checkout` out of the pool) instead of ending it.
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        self.start_reaper();
        Ok(tx)
    }

    /// Closes connections idle past the timeout even when no request comes
    /// to notice them (started with the first connection, when a runtime is
    /// certain to be there; stops when the pool is dropped).
    fn start_reaper(&self) {
        self.inner.reaper.call_once(|| {
            let weak = Arc::downgrade(&self.inner);
            let period = (self.inner.cfg.idle_timeout / 2).max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    inner.expire(Instant::now());
                }
            });
        });
    }

    /// Idle connections held (the tests read it).
    #[cfg(test)]
    pub fn idle_len(&self) -> usize {
        self.inner.idle.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl<B> Inner<B> {
    fn take_idle(&self) -> Option<(SendRequest<B>, Stall)> {
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        while let Some(c) = idle.pop_back() {
            if now.duration_since(c.since) < self.cfg.idle_timeout && !c.tx.is_closed() {
                return Some((c.tx, c.stall));
            }
            // Everything older than an expired entry has expired too.
            if now.duration_since(c.since) >= self.cfg.idle_timeout {
                idle.clear();
                return None;
            }
        }
        None
    }

    fn put_idle(&self, tx: SendRequest<B>, stall: Stall) {
        if tx.is_closed() || self.cfg.max_idle == 0 {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() >= self.cfg.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle {
            tx,
            stall,
            since: Instant::now(),
        });
    }

    fn expire(&self, now: Instant) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|c| {
                now.duration_since(c.since) < self.cfg.idle_timeout && !c.tx.is_closed()
            });
        }
    }
}

impl<B> Checkout<B> {
    /// The response was read to its end: the connection can carry another.
    pub fn release(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put_idle(self.tx, self.stall);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A raw HTTP/1.1 upstream on a loopback port that counts accepted
    /// connections and closed ones (EOF seen from our side).
    struct Upstream {
        authority: Authority,
        accepted: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    #[derive(Clone, Copy)]
    enum Mode {
        KeepAlive,
        /// Answers, then closes without `connection: close`: what an
        /// upstream's keep-alive timeout looks like to a pooled connection.
        CloseAfterEach,
        /// Answers after a pause (to hold several connections at once).
        Slow,
    }

    async fn upstream(mode: Mode) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = l.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            c.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if let Mode::Slow = mode {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                            if let Mode::CloseAfterEach = mode {
                                c.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            authority,
            accepted,
            closed,
        }
    }

    fn cfg(idle_timeout: Duration, max_idle: usize) -> PoolConfig {
        PoolConfig {
            connect_timeout: Duration::from_secs(2),
            idle_timeout,
            max_idle,
            body_idle_timeout: Duration::from_secs(30),
        }
    }

    fn get(authority: &Authority) -> Request<Empty<Bytes>> {
        Request::builder()
            .uri("/x")
            .header(http::header::HOST, authority.as_str())
            .body(Empty::new())
            .unwrap()
    }

    /// One request, body read to its end, connection released.
    async fn roundtrip(pool: &Pool<Empty<Bytes>>, u: &Upstream) -> Bytes {
        let (resp, conn) = pool.send(get(&u.authority)).await.expect("response");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        conn.release();
        body
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let u = upstream(Mode::KeepAlive).await;
        let pool = Pool::new(&u.authority, cfg(Duration::from_secs(30), 4));
        for _ in 0..50 {
            assert_eq!(roundtrip(&pool, &u).await, "ok");
        }
        assert_eq!(u.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_len(), 1);
    }

    #[tokio::test]
    async fn an_upstream_closing_idle_connections_fails_no_request() {
        let u = upstream(Mode::CloseAfterEach).await;
        let pool = Pool::new(&u.authority, cfg(Duration::from_secs(30), 4));
        for _ in 0..100 {
            assert_eq!(roundtrip(&pool, &u).await, "ok");
        }
        assert_eq!(u.accepted.load(Ordering::SeqCst), 100);
    }

    #[tokio::test]
    async fn a_body_not_read_to_its_end_is_not_reused() {
        let u = upstream(Mode::KeepAlive).await;
        let pool = Pool::new(&u.authority, cfg(Duration::from_secs(30), 4));
        let (resp, conn) = pool.send(get(&u.authority)).await.unwrap();
        drop((resp, conn));
        assert_eq!(roundtrip(&pool, &u).await, "ok");
        assert_eq!(u.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let u = upstream(Mode::KeepAlive).await;
        let pool = Pool::new(&u.authority, cfg(Duration::from_millis(200), 4));
        roundtrip(&pool, &u).await;
        assert_eq!(pool.idle_len(), 1);
        // No request comes to notice: the reaper closes it.
        for _ in 0..100 {
            if u.closed.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(u.closed.load(Ordering::SeqCst), 1, "upstream saw EOF");
        assert_eq!(pool.idle_len(), 0);
        // And the pool connects again afterwards.
        assert_eq!(roundtrip(&pool, &u).await, "ok");
        assert_eq!(u.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let u = upstream(Mode::Slow).await;
        let pool = Pool::new(&u.authority, cfg(Duration::from_secs(30), 2));
        let r = || roundtrip(&pool, &u);
        let bodies = tokio::join!(r(), r(), r(), r(), r());
        assert_eq!(
            bodies,
            (
                "ok".into(),
                "ok".into(),
                "ok".into(),
                "ok".into(),
                "ok".into()
            )
        );
        assert_eq!(u.accepted.load(Ordering::SeqCst), 5);
        assert_eq!(pool.idle_len(), 2);
        // The surplus three were closed.
        for _ in 0..100 {
            if u.closed.load(Ordering::SeqCst) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(u.closed.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_only_noticed_after_the_limit_without_bytes() {
        let mut stall = Stall::new(Duration::from_secs(1));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(!stall.poll_stalled(&mut cx), "armed, not yet stalled");
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(!stall.poll_stalled(&mut cx));
        // Bytes came: the next empty read waits a whole limit again.
        stall.progressed();
        assert!(!stall.poll_stalled(&mut cx));
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(!stall.poll_stalled(&mut cx), "900 ms since the last bytes");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(stall.poll_stalled(&mut cx), "1.1 s without bytes");
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = l.local_addr().unwrap().to_string().parse().unwrap();
        drop(l);
        let pool = Pool::new(&authority, cfg(Duration::from_secs(30), 2));
        let err = pool.send(get(&authority)).await.err().expect("refused");
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
    }
}
