//! Accept loop shared by the proxy and admin listeners: HTTP/1.1 and HTTP/2
//! on one port (hyper-util's auto builder; h2c by prior knowledge, or h2 by
//! ALPN under TLS), keep-alive, header limits, a cap on open connections, and
//! a graceful drain when the shutdown future resolves.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    /// (the kernel backlog holds new ones meanwhile).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: crate::config::DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // One flattened write per response (see `proxy::pool`).
        .writev(false)
        // hyper rejects anything below 8 KiB; it is the whole read buffer, so
        // it bounds the request head.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .header_read_timeout(limits.header_read_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256);
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
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_tls(listener, None, limits, handler, shutdown).await
}

/// [`serve`], terminating TLS first when `tls` is set.
pub async fn serve_tls<H, Fut, B>(
    listener: TcpListener,
    tls: Option<Tls>,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = builder(&limits);
    let graceful = GracefulShutdown::new();
    let slots = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of fds or a transient error: back off, never exit the loop.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let svc = service_fn(move |req| handler(req, peer));
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
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
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
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
                    let builder = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => builder.http2_only(),
                        Some(b"http/1.1") => builder.http1_only(),
                        _ => builder,
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
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
    }
}
