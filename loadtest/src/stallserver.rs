//! A tiny upstream that answers `200 ok` at once, except that one chosen
//! request stalls before it answers: the fixture for checking that the
//! generator charges a server stall to every request scheduled behind it.
//! Also reachable as `rollgate-load upstream --stall-once-after N`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rollgate::edge::server::{self, Limits};
use tokio::net::TcpListener;

/// Counts requests; request number `stall_at` (1-based) waits `stall` first.
#[derive(Clone, Debug, Default)]
pub struct Stall {
    pub stall_at: Option<u64>,
    pub stall: Duration,
    /// Requests received so far.
    pub received: Arc<AtomicU64>,
}

async fn handle(s: Stall, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = s.received.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = req.into_body().collect().await;
    if s.stall_at == Some(n) {
        tokio::time::sleep(s.stall).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    stall: Stall,
    shutdown: impl std::future::Future<Output = ()>,
) {
    server::serve(
        listener,
        Limits::default(),
        move |req, _: SocketAddr| handle(stall.clone(), req),
        shutdown,
    )
    .await
}
