//! Header rewriting between client and upstream.

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

/// The fixed hop-by-hop headers (RFC 9110 §7.6.1).
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

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
}

/// Appends the client address to `x-forwarded-for` (the proxy is the edge, so
/// earlier entries are the client's own claims and are kept only for the app
/// to judge).
///
/// Performance: an IPv4 peer without a previous header (the usual case) is
/// written into a stack buffer; `Ipv4Addr`'s `Display` through `fmt::write`
/// cost ~1,400 instructions per request in the profile.
pub fn append_forwarded_for(h: &mut HeaderMap, peer: IpAddr) {
    let prev = h
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.is_empty());
    let value = match (prev, peer) {
        (None, IpAddr::V4(v4)) => {
            let mut buf = [0u8; 15];
            let n = write_ipv4(&mut buf, v4);
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
        (Some(prev), _) => HeaderValue::try_from(format!("{prev}, {peer}")).ok(),
        (None, IpAddr::V6(_)) => HeaderValue::try_from(peer.to_string()).ok(),
    };
    if let Some(v) = value {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// Dotted-quad text of `ip` into `buf`; returns its length.
fn write_ipv4(buf: &mut [u8; 15], ip: std::net::Ipv4Addr) -> usize {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    n
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
    fn ipv4_is_written_like_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.10.100.209",
        ] {
            let a: std::net::Ipv4Addr = ip.parse().unwrap();
            let mut buf = [0u8; 15];
            let n = write_ipv4(&mut buf, a);
            assert_eq!(&buf[..n], ip.as_bytes());
        }
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "192.168.0.7".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "192.168.0.7");
    }

    #[test]
    fn connection_listed_headers_are_removed_with_one_or_several_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("x-a"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-B, close"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert("x-c", HeaderValue::from_static("3"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-c"], "3");
        let mut h = HeaderMap::new();
        h.insert("x-c", HeaderValue::from_static("3"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
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
