//! The cheapest HTTP/1.1 reverse proxy hyper 1.x allows, as a yardstick for
//! rollgate's profile (`loadtest/profile.sh`, `loadtest/PROFILE.md`): what
//! any proxy built on hyper pays before it does any work of its own.
//!
//! ```sh
//! cargo run --release --example bare_proxy -- 127.0.0.1:18085 127.0.0.1:18001
//! ```
//!
//! One current-thread runtime (rollgate's `per_core` with one worker), plain
//! `hyper::server::conn::http1` (no h2c detection, no graceful-shutdown
//! wrapper, no timeouts), and one upstream connection per client connection
//! opened on its first request, so there is no pool, no routing, no header
//! rewriting, no telemetry. It is not a product: no error handling beyond a
//! 502, no limits, never use it in front of anything.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Arc<Mutex<Option<SendRequest<Incoming>>>>;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR";
    let listen: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let upstream: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let conn: Upstream = Arc::new(Mutex::new(None));
            let service = service_fn(move |req| forward(conn.clone(), upstream, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .writev(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    conn: Upstream,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    // HTTP/1 is one request at a time per client connection, so the sender
    // is always free here; the lock is never contended.
    let taken = conn.lock().expect("not poisoned").take();
    let mut tx = match taken {
        Some(tx) => tx,
        None => match connect(upstream).await {
            Some(tx) => tx,
            None => return Ok(bad_gateway()),
        },
    };
    if tx.ready().await.is_err() {
        return Ok(bad_gateway());
    }
    let sent = tx.send_request(req);
    *conn.lock().expect("not poisoned") = Some(tx);
    match sent.await {
        Ok(resp) => Ok(resp.map(BodyExt::boxed)),
        Err(_) => Ok(bad_gateway()),
    }
}

async fn connect(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(tx)
}

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
