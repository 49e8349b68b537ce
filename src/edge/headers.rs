//! Header rewriting between client and upstream.
//!
//! Every header rollgate sets on the upstream request is a statement the app
//! may act on: which variant it is, that a request is a shadow mirror whose
//! side effects it may skip, whether a payment is live, who the client is.
//! So none of them may come from the client: [`UpstreamHeaders::rewrite`]
//! removes every one of them from the client's request, in every rollout
//! state, before it sets its own.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::forwarded::{set_forwarding, TrustedProxies};
use super::shadow::X_ROLLGATE_SHADOW;
use crate::config::Config;
use crate::routing::{RouteTable, Variant};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ROLLGATE_VARIANT: HeaderName = HeaderName::from_static("x-rollgate-variant");
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop headers (RFC 9110 §7.6.1). `Trailer` is not one:
/// it announces end-to-end fields and must travel with the message, or
/// hyper's HTTP/1.1 encoder drops the trailers it names. `TE` is (bit 5),
/// but its one end-to-end meaning, `trailers`, is passed on (see
/// [`remove_hop_by_hop`]).
static HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];
const TE_BIT: u16 = 1 << 5;
static TE_TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection only and must
/// not be forwarded, along with any header the `Connection` header names.
///
/// Performance (loadtest/PROFILE.md): this runs twice per request. Removing
/// the nine names unconditionally cost ~1,500 instructions per call (nine
/// hashed look-ups), and the common `Connection: keep-alive` from upstreams
/// cost a `Vec` and a `HeaderName` allocation. Now one pass over the names
/// present (usually 3-10, compared without hashing) finds which fixed names
/// to remove, and the names listed in `Connection` are removed by `&str`
/// look-up (no allocation) unless there are several `Connection` fields.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    let mut present = 0u16;
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| *hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // A client that accepts trailers says so with `TE: trailers`; the
    // upstream only sends them (gRPC status, checksums) when told, so that
    // one value goes on and every other TE token stops here. Read before the
    // `Connection` list can remove the field.
    let te_trailers = present & TE_BIT != 0
        && h.get_all(header::TE).iter().any(|v| {
            v.as_bytes().split(|&c| c == b',').any(|t| {
                t.split(|&c| c == b';')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
            })
        });
    // Headers listed in `Connection` first, while it is still there (bit 0).
    if present & 1 != 0 {
        let mut values = h.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        if values.next().is_none() {
            if let Some(v) = first.as_ref().and_then(|v| v.to_str().ok()) {
                for n in v.split(',').map(str::trim) {
                    // `keep-alive` and `close` are the usual tokens: the
                    // first is removed below anyway, the second names no header.
                    if !n.is_empty()
                        && !n.eq_ignore_ascii_case("keep-alive")
                        && !n.eq_ignore_ascii_case("close")
                        && !is_end_to_end_only(n)
                    {
                        h.remove(n);
                    }
                }
            }
        } else {
            // Rare: several `Connection` fields.
            let named: Vec<HeaderName> = h
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .filter(|n| !is_end_to_end_only(n.as_str()))
                .collect();
            for n in named {
                h.remove(n);
            }
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(*n);
        }
    }
    if te_trailers {
        h.insert(header::TE, TE_TRAILERS.clone());
    }
}

/// An upstream's response head made fit for the client: framing that could
/// be read two ways is settled, then the hop-by-hop headers go.
///
/// hyper's client decodes a `Transfer-Encoding` body and ignores a
/// `Content-Length` beside it, but leaves both headers in the map: relayed
/// as they were, the length (once `Transfer-Encoding` is removed as
/// hop-by-hop) would frame a body it does not describe. A 1xx, 204 or 304
/// has no body at all, so any length on it is dropped too (an h2 client
/// treats a length on a 204 as a malformed response).
pub fn upstream_response_headers(h: &mut HeaderMap, status: http::StatusCode) {
    if h.contains_key(header::TRANSFER_ENCODING)
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
    {
        h.remove(header::CONTENT_LENGTH);
    }
    remove_hop_by_hop(h);
}

/// Headers a `Connection` list may not remove: `Host` names the site the
/// upstream must serve (without it rollgate would substitute the upstream's
/// own name), and `Trailer` announces end-to-end trailer fields.
fn is_end_to_end_only(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("trailer")
}

/// What the upstream request's headers are made of, built once per config.
pub(crate) struct UpstreamHeaders {
    /// Names the client may never send upstream (see [`ControlHeaders`]).
    control: ControlHeaders,
    /// Peers whose forwarding headers are believed.
    trusted: TrustedProxies,
    /// Whether clients reach us over TLS (`x-forwarded-proto`).
    tls: bool,
}

impl UpstreamHeaders {
    pub(crate) fn new(config: &Config, tls: bool) -> Self {
        Self {
            control: ControlHeaders::new(
                config
                    .rollout
                    .phases
                    .iter()
                    .flat_map(|p| p.headers.iter().map(|(n, _)| n)),
            ),
            trusted: TrustedProxies::new(&config.server.trusted_proxies),
            tls,
        }
    }

    /// The address per-client limits count a request from `from` against:
    /// the last untrusted hop.
    pub(crate) fn client(&self, from: std::net::SocketAddr, h: &HeaderMap) -> std::net::IpAddr {
        self.trusted.client(&self.trusted.peer(from), h)
    }

    /// Rewrites a client's request headers for `variant`'s upstream: hop-by-hop
    /// and control headers out, HTTP/2 cookie crumbs joined, then rollgate's
    /// own forwarding headers, request id, variant and the phase's headers.
    /// `x-forwarded-for`, `x-forwarded-proto` and `x-rollgate-variant` are
    /// always set with `insert`, which replaces every client field of them.
    pub(crate) fn rewrite(
        &self,
        h: &mut HeaderMap,
        variant: Variant,
        route: &RouteTable,
        from: std::net::SocketAddr,
    ) {
        remove_hop_by_hop(h);
        self.control.strip(h);
        join_cookie_crumbs(h);
        set_forwarding(h, &self.trusted.peer(from), self.tls);
        ensure_request_id(h);
        h.insert(X_ROLLGATE_VARIANT.clone(), variant.header_value());
        for (name, value) in route.headers_for(variant) {
            h.insert(name.clone(), value.clone());
        }
    }
}

/// The headers rollgate sets upstream only in some states or for some
/// requests, so a client's copy would otherwise pass through where rollgate
/// sets none: `x-rollgate-shadow` (only on mirrors), every header any phase
/// sets (a phase's `x-payment-mode` is absent on V1, after a rollback and
/// while waiting), and `Forwarded` and `X-Real-IP`, which rollgate replaces by
/// its own `X-Forwarded-For`.
pub(crate) struct ControlHeaders {
    names: Box<[HeaderName]>,
}

impl ControlHeaders {
    pub(crate) fn new<'a>(phase_headers: impl IntoIterator<Item = &'a HeaderName>) -> Self {
        let mut names = vec![
            X_ROLLGATE_SHADOW.clone(),
            header::FORWARDED,
            X_REAL_IP.clone(),
        ];
        for n in phase_headers {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        Self {
            names: names.into(),
        }
    }

    /// Removes every control header. Performance: clients almost never send
    /// one, so one pass over the names present, compared without hashing,
    /// decides; only then is each name removed by a hashed look-up.
    #[inline]
    pub(crate) fn strip(&self, h: &mut HeaderMap) {
        if !h.keys().any(|k| self.names.contains(k)) {
            return;
        }
        for n in &self.names {
            h.remove(n);
        }
    }
}

/// HTTP/2 lets a client split its cookies into several `Cookie` fields
/// ("crumbs", for better header compression); an HTTP/1.1 upstream expects
/// one, so they are joined with `"; "` (RFC 9113 section 8.2.3). One
/// allocation, only when there are several fields.
pub(crate) fn join_cookie_crumbs(h: &mut HeaderMap) {
    let joined = {
        let mut values = h.get_all(header::COOKIE).iter();
        let (Some(first), Some(_)) = (values.next(), values.next()) else {
            return;
        };
        let mut joined = Vec::with_capacity(first.len() * 4);
        for v in h.get_all(header::COOKIE) {
            let v = v.as_bytes().trim_ascii();
            if v.is_empty() {
                continue;
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(v);
        }
        joined
    };
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        Ok(v) => {
            h.insert(header::COOKIE, v);
        }
        // Only bytes of valid values were copied: unreachable, but never
        // worth a panic on the request path.
        Err(_) => {
            h.remove(header::COOKIE);
        }
    }
}

/// Keeps a sane client request id, else generates a random 128-bit one.
pub fn ensure_request_id(h: &mut HeaderMap) {
    let ok = h.get(&X_REQUEST_ID).is_some_and(|v| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
    });
    if !ok {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(random_id(), &mut buf).expect("32 hex digits");
        let v = HeaderValue::from_bytes(&buf).expect("hex is a valid header value");
        h.insert(X_REQUEST_ID.clone(), v);
    }
}

/// 128 random bits per request from a per-thread `SmallRng` seeded from the
/// OS: a request id must be unique, not unpredictable, and the
/// cryptographic `ThreadRng` cost several hundred instructions per request.
fn random_id() -> [u8; 16] {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::cell::RefCell;
    thread_local! {
        static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
    }
    RNG.with(|r| r.borrow_mut().random())
}

/// Whether the upstream says it served the answer from its cache:
/// `Cache-Status: <cache>; hit` (RFC 9211) or `X-Cache: HIT...`.
pub fn is_cache_hit(h: &HeaderMap) -> bool {
    let has_hit = |v: &HeaderValue| {
        v.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"hit"))
    };
    h.get(&X_CACHE)
        .is_some_and(|v| v.as_bytes().len() >= 3 && v.as_bytes()[..3].eq_ignore_ascii_case(b"hit"))
        || h.get_all(&CACHE_STATUS).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(';')
                    .skip(1)
                    .any(|param| param.trim().eq_ignore_ascii_case("hit"))
            }) && has_hit(v)
        })
}

#[cfg(test)]
mod tests;
