//! The data path: accept -> classify journey -> pick variant -> forward -> record.
//!
//! [`Proxy::handle`] is the whole request path and reads top to bottom. It
//! never fails: upstream problems become 502/504 responses here, malformed
//! requests were already answered 400/431 by hyper before reaching it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::Guard;
use http::uri::{PathAndQuery, Uri};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

mod beacon_endpoint;

use super::access_log::AccessLog;
use super::body::ProxyBody;
use super::capacity::{Capacity, Permit, Shed};
use super::headers::*;
use super::region::Regions;
use super::request_body::Timing;
use super::sticky::{Resolved, Source, Sticky};
use super::upstream::{SendError, Upstreams};
use super::{beacon, shadow};
use crate::config::{BeaconsConfig, Config, Upstream};
use crate::routing::journeys::{JourneyId, JourneyKind, Journeys};
use crate::routing::tripwire::{PaymentOutcome, PaymentTrip};
use crate::routing::{RouteTable, Router, Variant};
use crate::telemetry::beacons::CapLimits;
use crate::telemetry::{Telemetry, UpstreamErrorKind};

/// Everything the request path reads; built once, shared by all connections.
pub struct Proxy {
    journeys: Journeys,
    router: Arc<Router>,
    sticky: Sticky,
    pub(super) telemetry: Arc<Telemetry>,
    payment_trip: Arc<PaymentTrip>,
    pub(super) upstreams: Upstreams,
    targets: [Upstream; 2],
    expose_variant: bool,
    allow_override: bool,
    access_log: AccessLog,
    beacons: BeaconsConfig,
    /// The per-window beacon caps (`[beacons]` and `rollout.window`).
    beacon_caps: CapLimits,
    /// Region header and labels (split skew per region).
    regions: Regions,
    /// V2's reserved capacity.
    pub(crate) capacity: Arc<Capacity>,
    /// Mirroring during shadow phases (`None` without a shadow phase).
    shadow: Option<shadow::Shadow>,
    /// The upstream request's headers: what is stripped, who is trusted.
    upstream_headers: UpstreamHeaders,
    /// Whether clients reach us over TLS (`Secure` cookies).
    tls: bool,
}

static ROOT: PathAndQuery = PathAndQuery::from_static("/");

impl Proxy {
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one process-wide piece a worker's proxy shares; a struct would only rename them"
    )]
    pub fn new(
        config: &Config,
        cookie_secret: &[u8],
        router: Arc<Router>,
        telemetry: Arc<Telemetry>,
        payment_trip: Arc<PaymentTrip>,
        shadow: Option<shadow::Shadow>,
        tls: bool,
        capacity: Arc<Capacity>,
    ) -> Self {
        let r = &config.routing;
        Self {
            journeys: config.journeys.clone(),
            router,
            sticky: Sticky::new(
                &r.salt,
                cookie_secret,
                r.sticky_header.clone(),
                r.sticky_cookie.clone(),
            ),
            telemetry,
            payment_trip,
            upstreams: Upstreams::new(&config.upstreams, config.server.client_body_timeout),
            targets: [config.upstreams.v1.clone(), config.upstreams.v2.clone()],
            expose_variant: r.expose_variant_header,
            allow_override: r.allow_override_header,
            access_log: AccessLog::new(config),
            beacons: config.beacons.clone(),
            beacon_caps: CapLimits {
                per_client: config.beacons.max_events_per_client,
                per_key: config.beacons.max_events_per_key,
                users_per_client: config.beacons.max_users_per_client,
                window_ms: config.rollout.window.as_millis().max(1) as u64,
            },
            regions: Regions::new(&config.routing),
            capacity,
            shadow,
            upstream_headers: UpstreamHeaders::new(config, tls),
            tls,
        }
    }

    /// The outer handler: the one finish point where every request, relayed or
    /// refused, is recorded, logged and given its response headers.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        addr: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Err(refused) = super::admission::check(&req) {
            return Ok(refused.response());
        }
        if req.uri().path() == beacon::BEACON_PATH {
            return Ok(self.beacon(req, addr).await);
        }
        let start = Instant::now();

        // Classify and pick.
        let journey = self.journeys.classify(req.method(), req.uri().path());
        let sticky = self.sticky.resolve(req.headers());
        let route = self.router.load();
        let variant = self
            .override_variant(&req)
            .unwrap_or_else(|| route.v2.pick(sticky.bucket));
        if !beacon::opted_out(req.headers()) {
            let region = self.regions.of(req.headers());
            self.telemetry.record_user(region, variant, sticky.bucket);
        }
        let log_method = self.access_log.method(req.method());
        let h1 = req.version() < Version::HTTP_2;

        // Forward; the latency sample starts once the upstream has the whole request.
        let mut timing = Timing::new(start);
        let result = if super::upgrade::requested(&req) {
            self.forward_upgrade(req, journey, variant, route, addr, &mut timing)
                .await
        } else {
            self.forward(req, journey, variant, route, addr, &mut timing)
                .await
        };
        let latency = timing.latency();

        // Record and answer.
        let resp = match result {
            Ok(Relayed { resp, cache_hit }) => {
                self.telemetry
                    .record(journey, variant, latency, resp.status().as_u16(), cache_hit);
                resp
            }
            // Shed before V2 saw it: counted as shed, not as a request of V2.
            Err(Refusal::Shed) => {
                self.telemetry.record_shed(Variant::V2);
                return Ok(self.finish(Refusal::Shed.response(), variant, sticky));
            }
            // The client broke its body or let it time out: a 4xx of its
            // journey, never an error or a latency sample of the upstream.
            Err(refusal @ (Refusal::ClientBody | Refusal::ClientTimeout)) => {
                self.telemetry
                    .record_status(journey, variant, refusal.status().as_u16());
                let mut r = refusal.response();
                if h1 {
                    close_after(&mut r);
                }
                r
            }
            Err(refusal @ Refusal::Upstream(kind)) => {
                self.telemetry.record_upstream_error(journey, variant, kind);
                self.telemetry
                    .record(journey, variant, latency, refusal.status().as_u16(), false);
                refusal.response()
            }
        };
        let status = resp.status();
        if self.journeys.kind(journey) == JourneyKind::Payment {
            self.payment_trip
                .observe(variant, PaymentOutcome::of(status));
        }
        if let Some(m) = log_method {
            self.access_log
                .log(&m, self.journeys.name(journey), variant, status, latency);
        }
        Ok(self.finish(resp, variant, sticky))
    }

    /// The inner handler: admit, rewrite, mirror and send; any step that
    /// fails ends the request with a [`Refusal`] for the outer one to answer.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        journey: JourneyId,
        variant: Variant,
        route: Guard<Arc<RouteTable>>,
        peer: SocketAddr,
        timing: &mut Timing,
    ) -> Result<Relayed, Refusal> {
        let permit = self.admit(variant)?;
        let inflight = self.telemetry.inflight(journey, variant);

        // In a shadow phase, queue a mirror to V2 (never waits).
        self.prepare_upstream(&mut req, variant, &route, peer);
        let mut tee = match &self.shadow {
            Some(sh)
                if route.shadow && variant == Variant::V1 && sh.eligible(journey, req.method()) =>
            {
                sh.mirror(journey, &req, route.headers_for(Variant::V2))
            }
            _ => None,
        };
        drop(route);
        let limit = self.upstreams.client_body_timeout();
        let req = req.map(|body| timing.wrap(body, limit));
        let (resp, conn) = match self.upstreams.send(variant, req).await {
            Ok(sent) => sent,
            Err(e) => {
                let refusal = Refusal::from(e);
                // The mirror compares against V1's failure, not a client's.
                if let (Refusal::Upstream(_), Some(t)) = (refusal, tee.as_mut()) {
                    t.finish(Some(refusal.status().as_u16()));
                }
                return Err(refusal);
            }
        };
        let (mut parts, body) = resp.into_parts();
        let cache_hit = is_cache_hit(&parts.headers);
        upstream_response_headers(&mut parts.headers, parts.status);
        if let Some(t) = tee.as_mut() {
            t.head(parts.status.as_u16(), &parts.headers);
            if http_body::Body::is_end_stream(&body) {
                // HEAD or an empty body: nothing more will be polled.
                t.finish(None);
            }
        }
        let head_5xx = parts.status.is_server_error();
        let resp = Response::from_parts(
            parts,
            ProxyBody::upstream(body, conn, head_5xx, inflight, permit, tee),
        );
        Ok(Relayed { resp, cache_hit })
    }

    /// V2's reserved capacity: the excess is shed here, before V2 sees it.
    /// A permit (V2 under a cap) is held until the response body is done.
    pub(super) fn admit(&self, variant: Variant) -> Result<Option<Permit>, Refusal> {
        match variant {
            Variant::V1 => Ok(None),
            Variant::V2 => self.capacity.admit().map_err(|Shed| Refusal::Shed),
        }
    }

    /// Response headers every answer gets: the variant and a new `rg_bucket`.
    fn finish(
        &self,
        mut resp: Response<ProxyBody>,
        variant: Variant,
        sticky: Resolved,
    ) -> Response<ProxyBody> {
        if self.expose_variant {
            resp.headers_mut()
                .insert(X_ROLLGATE_VARIANT.clone(), variant.header_value());
        }
        if let Source::New(id) = sticky.source {
            resp.headers_mut()
                .append(header::SET_COOKIE, self.sticky.set_cookie(id, self.tls));
        }
        resp
    }

    fn override_variant(&self, req: &Request<Incoming>) -> Option<Variant> {
        if !self.allow_override {
            return None;
        }
        Variant::from_bytes(req.headers().get(&X_ROLLGATE_VARIANT)?.as_bytes())
    }

    /// Rewrites the request in place for the chosen upstream.
    pub(super) fn prepare_upstream(
        &self,
        req: &mut Request<Incoming>,
        variant: Variant,
        route: &RouteTable,
        peer: SocketAddr,
    ) {
        let target = &self.targets[variant as usize];
        let incoming_authority = req.uri().authority().cloned();
        // Origin-form: the pool's connection already goes to the upstream.
        if req.uri().scheme().is_some() || req.uri().path_and_query().is_none() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| ROOT.clone());
            *req.uri_mut() = Uri::from(path);
        }
        *req.version_mut() = Version::HTTP_11;

        let h = req.headers_mut();
        // Room for what is added below, so the map grows at most once.
        h.reserve(5 + route.headers.len());
        self.upstream_headers.rewrite(h, variant, route, peer);
        // The target's authority (h2 `:authority`, an HTTP/1.1 absolute-form
        // target) wins over any `Host` field; without one, the client's `Host`
        // stays, and only a request with neither gets the upstream's name.
        let host = incoming_authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        match host {
            Some(v) => {
                h.insert(header::HOST, v);
            }
            None if !h.contains_key(header::HOST) => {
                if let Ok(v) = HeaderValue::from_str(target.authority.as_str()) {
                    h.insert(header::HOST, v);
                }
            }
            None => {}
        }
    }
}

/// Makes an HTTP/1.1 connection close after this answer (an h2 stream needs
/// nothing: hyper resets the stream whose body is left unread, and the
/// connection's other streams carry on).
fn close_after(resp: &mut Response<ProxyBody>) {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// The upstream's answer on its way to the client.
pub(super) struct Relayed {
    pub(super) resp: Response<ProxyBody>,
    /// The upstream said it answered from its cache (read before the
    /// hop-by-hop headers are removed).
    pub(super) cache_hit: bool,
}

/// Why rollgate answers a request itself instead of relaying the upstream's
/// answer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    /// V2 is at its reserved capacity.
    Shed,
    /// The client's own request body broke while being forwarded (a bad
    /// chunk, a body cut short): never counted against the upstream.
    ClientBody,
    /// The client's body was not complete within `server.client_body_timeout`.
    ClientTimeout,
    /// The upstream failed: counted against its variant.
    Upstream(UpstreamErrorKind),
}

impl From<SendError> for Refusal {
    fn from(e: SendError) -> Self {
        match e {
            SendError::ClientBody => Refusal::ClientBody,
            SendError::ClientTimeout => Refusal::ClientTimeout,
            SendError::Upstream(kind) => Refusal::Upstream(kind),
        }
    }
}

impl Refusal {
    /// Exhaustive on purpose: a new kind of failure must choose its status.
    fn status(self) -> StatusCode {
        match self {
            Refusal::Shed => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::ClientBody => StatusCode::BAD_REQUEST,
            Refusal::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::Upstream(UpstreamErrorKind::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Upstream(
                UpstreamErrorKind::Connect | UpstreamErrorKind::Reset | UpstreamErrorKind::Protocol,
            ) => StatusCode::BAD_GATEWAY,
        }
    }

    fn response(self) -> Response<ProxyBody> {
        match self {
            Refusal::Shed => shed_response(),
            Refusal::ClientBody => {
                let mut r = Response::new(ProxyBody::full("rollgate: malformed request body\n"));
                *r.status_mut() = self.status();
                r
            }
            Refusal::ClientTimeout => text_response(
                self.status(),
                "rollgate: request body not complete in time\n",
            ),
            Refusal::Upstream(kind) => error_response(self.status(), kind),
        }
    }
}

fn shed_response() -> Response<ProxyBody> {
    let mut r = text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "rollgate: the canary is at its reserved capacity, retry shortly\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn text_response(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn error_response(status: StatusCode, kind: UpstreamErrorKind) -> Response<ProxyBody> {
    let msg: &'static str = match kind {
        UpstreamErrorKind::Connect => "rollgate: upstream connect failed\n",
        UpstreamErrorKind::Timeout => "rollgate: upstream did not answer in time\n",
        UpstreamErrorKind::Reset => "rollgate: upstream closed the connection\n",
        UpstreamErrorKind::Protocol => "rollgate: upstream sent an invalid response\n",
    };
    let mut r = Response::new(ProxyBody::full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether a method is safe to mirror or retry.
pub fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD)
}
