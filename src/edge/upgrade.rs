//! WebSocket upgrades, tunnelled to the user's variant: the upgrade request
//! is routed like any request (its journey, the sticky variant, V2's
//! reserved capacity), recorded once with the upstream's status (101 when
//! the upstream agrees), and then the two upgraded connections are joined
//! byte for byte until either side closes.
//!
//! The upstream connection that carried the upgrade is never returned to
//! the pool: after a 101 it speaks the new protocol. The client connection
//! keeps its places under the connection caps for the tunnel's life
//! (`server::ConnHold`). A tunnel is one request in the telemetry, counted
//! at the upgrade; its minutes of traffic are not requests in flight.

use arc_swap::Guard;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;

use super::body::ProxyBody;
use super::headers::upstream_response_headers;
use super::proxy::{Proxy, Refusal, Relayed};
use super::request_body::Timing;
use super::server::ConnHold;
use crate::routing::journeys::JourneyId;
use crate::routing::{RouteTable, Variant};

static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// Whether `req` asks for a WebSocket upgrade: an HTTP/1.1 GET whose
/// `Connection` lists `upgrade` and whose `Upgrade` names `websocket`. Any
/// other upgrade (h2c, TLS) is not tunnelled: it is relayed as a plain
/// request, its `Upgrade` header removed as hop-by-hop.
pub(super) fn requested<B>(req: &Request<B>) -> bool {
    let lists = |name: header::HeaderName, token: &[u8]| {
        req.headers().get_all(name).iter().any(|v| {
            v.as_bytes()
                .split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req.headers().contains_key(header::UPGRADE)
        && lists(header::CONNECTION, b"upgrade")
        && lists(header::UPGRADE, b"websocket")
}

impl Proxy {
    /// [`Proxy::forward`] for an upgrade request: the same admission and
    /// rewrite, the upgrade headers put back, then the tunnel.
    pub(super) async fn forward_upgrade(
        &self,
        mut req: Request<Incoming>,
        journey: JourneyId,
        variant: Variant,
        route: Guard<Arc<RouteTable>>,
        peer: SocketAddr,
        timing: &mut Timing,
    ) -> Result<Relayed, Refusal> {
        let permit = self.admit(variant)?;
        let protocol = req.headers().get(header::UPGRADE).cloned();
        let hold = req.extensions_mut().remove::<ConnHold>();
        let client = hyper::upgrade::on(&mut req);
        self.prepare_upstream(&mut req, variant, &route, peer);
        drop(route);
        put_upgrade_back(req.headers_mut(), protocol);
        let limit = self.upstreams.client_body_timeout();
        let req = req.map(|body| timing.wrap(body, limit));
        let (mut resp, conn) = self.upstreams.send(variant, req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The upstream declined: its answer is relayed like any other.
            let inflight = self.telemetry.inflight(journey, variant);
            let (mut parts, body) = resp.into_parts();
            upstream_response_headers(&mut parts.headers, parts.status);
            let head_5xx = parts.status.is_server_error();
            let body = ProxyBody::upstream(body, conn, head_5xx, inflight, permit, None);
            return Ok(Relayed {
                resp: Response::from_parts(parts, body),
                cache_hit: false,
            });
        }
        let upstream = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        upstream_response_headers(&mut parts.headers, parts.status);
        put_upgrade_back(&mut parts.headers, protocol);
        tokio::spawn(async move {
            // Held for the tunnel's life: the upstream connection (never
            // pooled again) and the client's places under the caps. V2's
            // reserved capacity counts requests, so it is released here.
            let (_conn, _hold) = (conn, hold);
            drop(permit);
            let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
                return;
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        Ok(Relayed {
            resp: Response::from_parts(parts, ProxyBody::empty()),
            cache_hit: false,
        })
    }
}

/// `Connection: upgrade` and the `Upgrade` value, which the hop-by-hop
/// rewrite removed: on an upgrade they are the message.
fn put_upgrade_back(h: &mut http::HeaderMap, protocol: Option<HeaderValue>) {
    if let Some(p) = protocol {
        h.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        h.insert(header::UPGRADE, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_upgrades_are_tunnelled() {
        let req = |conn: &'static str, up: &'static str, m: Method| {
            Request::builder()
                .method(m)
                .header(header::CONNECTION, conn)
                .header(header::UPGRADE, up)
                .body(())
                .unwrap()
        };
        assert!(requested(&req(
            "keep-alive, Upgrade",
            "WebSocket",
            Method::GET
        )));
        assert!(!requested(&req("close", "websocket", Method::GET)));
        assert!(!requested(&req("upgrade", "h2c", Method::GET)));
        assert!(!requested(&req("upgrade", "websocket", Method::POST)));
    }
}
