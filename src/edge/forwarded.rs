//! Who sent a request, and what rollgate tells the upstream about it.
//!
//! rollgate is the edge: the socket's peer is the only address it can vouch
//! for. A client's own `X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`
//! and `X-Real-IP` are claims anyone can make, so they are dropped and the
//! upstream gets rollgate's `X-Forwarded-For: <peer>` and
//! `X-Forwarded-Proto: <scheme>`. Only a peer inside `[server]
//! trusted_proxies` (a load balancer in front of us) has its
//! `X-Forwarded-For` kept and appended to, and its `X-Forwarded-Proto` kept.
//! `Forwarded` and `X-Real-IP` are dropped from everyone: rollgate writes
//! neither, and passing a proxy's copy on beside our own `X-Forwarded-For`
//! would give the app two answers.
//!
//! The client address that per-client limits count against is the last
//! untrusted hop: walking `X-Forwarded-For` from the right, past the trusted
//! proxies, to the first address none of them is. Entries left of it were
//! written by the client itself and are never believed.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use super::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO};

/// The peers whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    nets: Box<[IpNet]>,
}

/// One request's sender, as rollgate judges it; computed once per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    /// The socket address the request came from.
    pub addr: SocketAddr,
    /// Whether `addr` is a trusted proxy, whose forwarding headers are kept.
    pub trusted: bool,
}

// === impl TrustedProxies ===

impl TrustedProxies {
    pub(crate) fn new(nets: &[IpNet]) -> Self {
        Self { nets: nets.into() }
    }

    /// Whether `ip` is one of the trusted proxies. An IPv4 peer seen on a
    /// dual-stack socket (`::ffff:10.0.0.1`) is judged as its IPv4 address.
    #[inline]
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        !self.nets.is_empty() && {
            let ip = ip.to_canonical();
            self.nets.iter().any(|n| n.contains(&ip))
        }
    }

    /// The sender of a request from `addr`: one look at the trusted set, no
    /// look at the headers.
    #[inline]
    pub(crate) fn peer(&self, addr: SocketAddr) -> Peer {
        Peer {
            addr,
            trusted: self.contains(addr.ip()),
        }
    }

    /// The address per-client limits count against: the last untrusted hop.
    /// Without trusted proxies (the usual case) this is the peer itself.
    /// Computed on demand, so a request that no limit asks about pays
    /// nothing for walking its `X-Forwarded-For`.
    pub(crate) fn client(&self, peer: &Peer, headers: &HeaderMap) -> IpAddr {
        if peer.trusted {
            self.last_untrusted_hop(peer.addr.ip(), headers)
        } else {
            peer.addr.ip()
        }
    }

    /// Walks `X-Forwarded-For` (every field, right to left) from a trusted
    /// peer to the first hop that is not trusted. An entry that is not an
    /// address (`unknown`, garbage) stops the walk at the trusted hop that
    /// passed it on; when every hop is trusted the leftmost one is the client.
    fn last_untrusted_hop(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut hop = peer;
        let entries = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|e| !e.is_empty());
        for entry in entries {
            let Some(ip) = parse_hop(entry) else {
                return hop;
            };
            if !self.contains(ip) {
                return ip;
            }
            hop = ip;
        }
        hop
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`10.0.0.1:443`, `[2001:db8::1]:443`), as some proxies write it.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
}

// === the upstream's forwarding headers ===

/// Sets `X-Forwarded-For` and `X-Forwarded-Proto` for the upstream: from an
/// untrusted peer both are replaced (every client field of them is dropped by
/// the `insert`); a trusted proxy's `X-Forwarded-For` (all its fields, in
/// order) gets the peer appended, and its `X-Forwarded-Proto` is kept.
///
/// Performance: an IPv4 untrusted peer (the usual case) is written from a
/// stack buffer; `Ipv4Addr`'s `Display` through `fmt::write` cost ~1,400
/// instructions per request in the profile.
pub(crate) fn set_forwarding(h: &mut HeaderMap, peer: &Peer, tls: bool) {
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    if !peer.trusted {
        if let Some(v) = ip_value(peer.addr.ip()) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        h.insert(X_FORWARDED_PROTO.clone(), proto);
        return;
    }
    let mut chain = Vec::new();
    for v in h.get_all(&X_FORWARDED_FOR) {
        let v = v.as_bytes().trim_ascii();
        if !v.is_empty() {
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(v);
        }
    }
    let value = if chain.is_empty() {
        ip_value(peer.addr.ip())
    } else {
        chain.extend_from_slice(b", ");
        chain.extend_from_slice(peer.addr.ip().to_string().as_bytes());
        HeaderValue::from_bytes(&chain).ok()
    };
    if let Some(v) = value {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO.clone(), proto);
    }
}

/// The text of an address as a header value.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let n = write_ipv4(&mut buf, v4);
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
        IpAddr::V6(_) => HeaderValue::try_from(ip.to_string()).ok(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&nets)
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_static(v));
        }
        h
    }

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 40_000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        let client = |peer: &str, h: &HeaderMap| t.client(&t.peer(addr(peer)), h);
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client("203.0.113.9", &xff(&["1.2.3.4"])), ip("203.0.113.9"));
        // Behind one trusted proxy: the address it appended.
        let h = xff(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(client("10.0.0.2", &h), ip("198.51.100.7"));
        // Two trusted hops, several fields, spaces and ports.
        let h = xff(&[
            "6.6.6.6",
            " 198.51.100.7:5555 ,10.1.1.1",
            "[2001:db8::5]:443",
        ]);
        assert_eq!(client("10.0.0.2", &h), ip("198.51.100.7"));
        // A trusted proxy that wrote garbage: it is the client.
        assert_eq!(
            client("10.0.0.2", &xff(&["6.6.6.6, unknown"])),
            ip("10.0.0.2")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            client("10.0.0.2", &xff(&["10.9.9.9, 10.1.1.1"])),
            ip("10.9.9.9")
        );
        // No header from a trusted peer: the peer.
        assert_eq!(client("10.0.0.2", &HeaderMap::new()), ip("10.0.0.2"));
        // Empty entries carry nothing.
        assert_eq!(
            client("10.0.0.2", &xff(&["198.51.100.7,, ,"])),
            ip("198.51.100.7")
        );
        // A v4 peer on a dual-stack socket is judged as v4.
        assert!(t.peer(addr("::ffff:10.0.0.3")).trusted);
        // Nothing trusted: never a look at the header.
        let none = TrustedProxies::default();
        let h = xff(&["1.1.1.1"]);
        let p = none.peer(addr("10.0.0.2"));
        assert_eq!((p.trusted, none.client(&p, &h)), (false, ip("10.0.0.2")));
    }

    #[test]
    fn forwarding_headers_are_replaced_unless_the_peer_is_trusted() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut h = xff(&["6.6.6.6"]);
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let p = t.peer(addr("192.168.0.7"));
        set_forwarding(&mut h, &p, false);
        assert_eq!(h[&X_FORWARDED_FOR], "192.168.0.7");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "http");

        let mut h = xff(&["6.6.6.6", "198.51.100.7"]);
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let p = t.peer(addr("10.0.0.2"));
        set_forwarding(&mut h, &p, false);
        assert_eq!(h[&X_FORWARDED_FOR], "6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");

        let mut h = HeaderMap::new();
        let p = t.peer(addr("10.0.0.2"));
        set_forwarding(&mut h, &p, true);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.2");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");

        let mut h = HeaderMap::new();
        let p = t.peer(addr("::1"));
        set_forwarding(&mut h, &p, false);
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
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
    }
}
