//! `POST /_rollgate/beacon`: the client beacon endpoint, answered by the
//! proxy itself and never forwarded. Body read under a deadline, parsed,
//! charged against the sender's caps, recorded.

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::{close_after, text_response, Proxy, Refusal};
use crate::edge::beacon;
use crate::edge::body::ProxyBody;
use crate::routing::Variant;
use crate::telemetry::beacons::{BeaconReject, CapLimits, Sender};

impl Proxy {
    /// `POST /_rollgate/beacon`, answered here and never forwarded. The
    /// variant is picked exactly as for a proxied request (sticky key, override
    /// header, weights), never read from the body; a client without any key
    /// gets its `rg_bucket` cookie like on any request. The sender (client
    /// address, sticky key) is charged against the per-window caps.
    pub(super) async fn beacon(
        &self,
        req: Request<Incoming>,
        addr: SocketAddr,
    ) -> Response<ProxyBody> {
        let sticky = self.sticky.resolve(req.headers());
        let variant = self
            .override_variant(&req)
            .unwrap_or_else(|| self.router.load().v2.pick(sticky.bucket));
        let resp = if req.method() != Method::POST {
            let mut r = text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "rollgate: beacons are POSTed\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            r
        } else {
            let h1 = req.version() < Version::HTTP_2;
            let from = Sender {
                client: self.upstream_headers.client(addr, req.headers()),
                user: sticky.key,
                opted_out: beacon::opted_out(req.headers()),
            };
            match self.ingest_beacon(req, variant, &from).await {
                Ok(()) => {
                    let mut r = Response::new(ProxyBody::empty());
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                Err(BeaconFailure::Reject(BeaconReject::RateLimited)) => {
                    self.telemetry.beacons.reject(BeaconReject::RateLimited);
                    let mut r = text_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        reject_body(BeaconReject::RateLimited),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, retry_after(&self.beacon_caps));
                    r
                }
                Err(BeaconFailure::Reject(why)) => {
                    self.telemetry.beacons.reject(why);
                    text_response(StatusCode::BAD_REQUEST, reject_body(why))
                }
                // Not a rejected batch: nothing whole arrived to judge.
                Err(BeaconFailure::Timeout) => {
                    let mut r = Refusal::ClientTimeout.response();
                    if h1 {
                        close_after(&mut r);
                    }
                    r
                }
            }
        };
        self.finish(resp, variant, sticky)
    }

    /// The body is read within [`BEACON_BODY_TIMEOUT`] (or the shorter
    /// `server.client_body_timeout`): a client that declares a length and
    /// sends less is answered 408 and let go instead of holding the
    /// connection open.
    async fn ingest_beacon(
        &self,
        req: Request<Incoming>,
        variant: Variant,
        from: &Sender,
    ) -> Result<(), BeaconFailure> {
        use http_body_util::{BodyExt, LengthLimitError, Limited};
        let deadline = tokio::time::Instant::now()
            + BEACON_BODY_TIMEOUT.min(self.upstreams.client_body_timeout());
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > beacon::MAX_BODY as u64) {
            let _ = tokio::time::timeout_at(deadline, drain(req.into_body())).await;
            return Err(BeaconReject::TooLarge.into());
        }
        let collect = Limited::new(req.into_body(), beacon::MAX_BODY).collect();
        let body = match tokio::time::timeout_at(deadline, collect).await {
            Err(_) => return Err(BeaconFailure::Timeout),
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(BeaconReject::TooLarge.into())
            }
            // The client went away mid-body: nothing usable arrived.
            Ok(Err(_)) => return Err(BeaconReject::NotJson.into()),
        };
        let mut batch = beacon::Batch::default();
        beacon::parse(&body, &self.beacons, &mut batch)?;
        if self.telemetry.enabled() {
            let cells = &self.telemetry.beacons;
            if !cells.admit(&self.beacon_caps, from, batch.events().len()) {
                return Err(BeaconReject::RateLimited.into());
            }
            batch.record_from(cells, variant, from);
        }
        Ok(())
    }
}

/// Longest a beacon body may take to arrive. A beacon is at most
/// `beacon::MAX_BODY` (64 KiB) that a browser sends in one go, so even a
/// slow mobile link delivers it well within this; holding a connection
/// longer only serves a client that means to hold it.
const BEACON_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a beacon was not recorded.
enum BeaconFailure {
    /// Refused for what it said (counted by reason).
    Reject(BeaconReject),
    /// The body did not arrive in time.
    Timeout,
}

impl From<BeaconReject> for BeaconFailure {
    fn from(why: BeaconReject) -> Self {
        BeaconFailure::Reject(why)
    }
}

/// The body of a refused beacon: its reason label.
fn reject_body(why: BeaconReject) -> &'static str {
    match why {
        BeaconReject::NotJson => "not_json\n",
        BeaconReject::TooLarge => "too_large\n",
        BeaconReject::TooMany => "too_many\n",
        BeaconReject::UnknownName => "unknown_name\n",
        BeaconReject::UnknownType => "unknown_type\n",
        BeaconReject::BadValue => "bad_value\n",
        BeaconReject::RateLimited => "rate_limited\n",
    }
}

/// `Retry-After` of a rate-limited beacon: the caps' window in seconds (an
/// upper bound on the wait for the next one; no clock read to refine it).
fn retry_after(caps: &CapLimits) -> HeaderValue {
    HeaderValue::from((caps.window_ms / 1000).max(1))
}

/// Reads and discards a rejected body up to `DRAIN_LIMIT`, so a client that is
/// still sending gets its 400 on a clean connection instead of a reset (closing
/// a socket with unread data makes the kernel send RST). Larger bodies are not
/// worth reading: hyper closes the connection after the answer.
async fn drain(mut body: Incoming) {
    use http_body_util::BodyExt;
    const DRAIN_LIMIT: usize = 1 << 20;
    let mut seen = 0;
    while seen <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}
