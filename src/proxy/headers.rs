//! Header rewriting between client and upstream (SPEC §3).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ROLLGATE_VARIANT: HeaderName = HeaderName::from_static("x-rollgate-variant");
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection only and must
/// not be forwarded, along with any header the `Connection` header names.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    // Headers listed in `Connection` first, while it is still there. Collected
    // only when present, which is rare on keep-alive HTTP/1.1 and never on h2.
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        h.remove(n);
    }
}

/// Appends the client address to `x-forwarded-for` (the proxy is the edge, so
/// earlier entries are the client's own claims and are kept only for the app
/// to judge).
pub fn append_forwarded_for(h: &mut HeaderMap, peer: IpAddr) {
    let value = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {peer}"),
        _ => peer.to_string(),
    };
    if let Ok(v) = HeaderValue::try_from(value) {
        h.insert(X_FORWARDED_FOR.clone(), v);
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
        hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut buf).expect("32 hex digits");
        let v = HeaderValue::from_bytes(&buf).expect("hex is a valid header value");
        h.insert(X_REQUEST_ID.clone(), v);
    }
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
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn forwarded_for_appends_and_request_id_is_kept_or_made() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        append_forwarded_for(&mut h, "::1".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, ::1");
        ensure_request_id(&mut h);
        let id = h[&X_REQUEST_ID].clone();
        assert_eq!(id.len(), 32);
        ensure_request_id(&mut h);
        assert_eq!(h[&X_REQUEST_ID], id);
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-1"));
        ensure_request_id(&mut h);
        assert_eq!(h[&X_REQUEST_ID], "abc-1");
    }

    #[test]
    fn cache_hits_are_recognised() {
        let hit = |name: &'static str, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(v));
            is_cache_hit(&h)
        };
        assert!(hit("x-cache", "HIT"));
        assert!(hit("x-cache", "Hit from cloudfront"));
        assert!(!hit("x-cache", "MISS"));
        assert!(hit("cache-status", "ExampleCache; hit"));
        assert!(!hit("cache-status", "ExampleCache; fwd=uri-miss"));
        assert!(!hit("cache-status", "hitcache; fwd=miss"));
    }
}
