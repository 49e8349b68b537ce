//! Header rewriting: the fixed cases, then a property over any headers a
//! client can send.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use super::*;
use crate::config::HeadersTo;
use crate::routing::WeightBp;

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-secret-hop"),
    );
    h.insert("x-secret-hop", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(header::TE, HeaderValue::from_static("gzip"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("x-app", HeaderValue::from_static("kept"));
    remove_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["x-app"], "kept");
}

#[test]
fn te_trailers_trailer_and_host_survive_the_hop() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("shop.example"));
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("host, te, trailer"),
    );
    h.insert(header::TE, HeaderValue::from_static("gzip;q=0.5, Trailers"));
    h.insert(header::TRAILER, HeaderValue::from_static("grpc-status"));
    remove_hop_by_hop(&mut h);
    assert_eq!(h[header::HOST], "shop.example");
    assert_eq!(h[header::TE], "trailers");
    assert_eq!(h[header::TRAILER], "grpc-status");
    assert_eq!(h.len(), 3);
    let mut h = HeaderMap::new();
    h.append(header::CONNECTION, HeaderValue::from_static("Host"));
    h.append(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::HOST, HeaderValue::from_static("shop.example"));
    h.insert(header::TE, HeaderValue::from_static("deflate"));
    remove_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[header::HOST], "shop.example");
}

#[test]
fn upstream_framing_is_settled_before_relaying() {
    use http::StatusCode;
    let framed = |status: StatusCode, te: bool| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        if te {
            h.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        upstream_response_headers(&mut h, status);
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
        h.get(header::CONTENT_LENGTH).cloned()
    };
    assert_eq!(framed(StatusCode::OK, true), None);
    assert_eq!(framed(StatusCode::OK, false).unwrap(), "10");
    assert_eq!(framed(StatusCode::NO_CONTENT, false), None);
    assert_eq!(framed(StatusCode::NOT_MODIFIED, false), None);
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
fn request_id_is_kept_or_made() {
    let mut h = HeaderMap::new();
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

// === control headers ===

static X_PAYMENT_MODE: HeaderName = HeaderName::from_static("x-payment-mode");
static X_REGION_HINT: HeaderName = HeaderName::from_static("x-region-hint");

/// A config whose phases set `x-payment-mode` (every phase) and
/// `x-region-hint` (the second only), trusting `10.0.0.0/8`.
fn config() -> Config {
    Config::parse(
        r#"
        [server]
        listen = "127.0.0.1:0"
        trusted_proxies = ["10.0.0.0/8"]
        [upstreams]
        v1 = "http://127.0.0.1:1"
        v2 = "http://127.0.0.1:2"
        [[rollout.phases]]
        name = "canary-5"
        weight = 5
        hold = "1h"
        headers = { x-payment-mode = "test" }
        [[rollout.phases]]
        name = "full"
        weight = 100
        headers = { x-payment-mode = "live", x-region-hint = "eu" }
        headers_to = "both"
        "#,
        "headers.toml",
    )
    .expect("valid config")
}

/// The route tables of every state: waiting or rolled back (no phase), each
/// phase, and a shadow phase.
fn routes(cfg: &Config) -> Vec<RouteTable> {
    let mut all = vec![
        RouteTable::default(),
        RouteTable {
            shadow: true,
            ..RouteTable::default()
        },
    ];
    for p in &cfg.rollout.phases {
        all.push(RouteTable {
            v2: p.weight,
            headers: p.headers.clone(),
            headers_to: p.headers_to,
            shadow: false,
        });
    }
    all
}

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 50_000)
}

#[test]
fn phase_headers_reach_the_canary_only_unless_the_phase_says_both() {
    let cfg = config();
    let up = UpstreamHeaders::new(&cfg, false);
    let routes = routes(&cfg);
    let (canary, both) = (&routes[2], &routes[3]);
    assert_eq!(canary.headers_to, HeadersTo::Canary);
    let sent = |route: &RouteTable, variant| {
        let mut h = HeaderMap::new();
        h.insert(&X_PAYMENT_MODE, HeaderValue::from_static("live"));
        let p = peer("192.0.2.1");
        up.rewrite(&mut h, variant, route, p);
        h
    };
    // Seed-style first phase: the canary in test mode, the control untouched.
    assert_eq!(sent(canary, Variant::V2)[&X_PAYMENT_MODE], "test");
    assert!(sent(canary, Variant::V1).get(&X_PAYMENT_MODE).is_none());
    for v in Variant::ALL {
        let h = sent(both, v);
        assert_eq!(h[&X_PAYMENT_MODE], "live");
        assert_eq!(h[&X_REGION_HINT], "eu");
        // No phase (waiting, rolled back): the client's copy is gone.
        assert!(sent(&routes[0], v).get(&X_PAYMENT_MODE).is_none());
    }
}

#[test]
fn client_control_headers_are_removed_in_every_state() {
    let cfg = config();
    let up = UpstreamHeaders::new(&cfg, true);
    for route in routes(&cfg) {
        for v in Variant::ALL {
            let mut h = HeaderMap::new();
            for (n, val) in [
                ("x-rollgate-shadow", "1"),
                ("x-rollgate-variant", "v2"),
                ("Forwarded", "for=6.6.6.6;proto=https"),
                ("X-Real-IP", "6.6.6.6"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "gopher"),
                ("x-payment-mode", "client"),
                ("x-region-hint", "client"),
                ("x-app", "kept"),
            ] {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_static(val),
                );
            }
            h.append("x-rollgate-shadow", HeaderValue::from_static("again"));
            let p = peer("192.0.2.1");
            up.rewrite(&mut h, v, &route, p);
            let ctx = format!("{route:?} {v:?}: {h:?}");
            assert!(h.get(&X_ROLLGATE_SHADOW).is_none(), "{ctx}");
            assert!(h.get(header::FORWARDED).is_none(), "{ctx}");
            assert!(h.get("x-real-ip").is_none(), "{ctx}");
            assert_eq!(h[&X_ROLLGATE_VARIANT], v.label(), "{ctx}");
            assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.1", "{ctx}");
            assert_eq!(h[&X_FORWARDED_PROTO], "https", "{ctx}");
            assert_eq!(h["x-app"], "kept", "{ctx}");
            for n in [&X_PAYMENT_MODE, &X_REGION_HINT] {
                assert!(
                    h.get_all(n).iter().all(|x| x != "client"),
                    "{n} from the client: {ctx}"
                );
            }
        }
    }
}

#[test]
fn a_trusted_proxy_keeps_its_forwarding_headers_and_only_those() {
    let cfg = config();
    let up = UpstreamHeaders::new(&cfg, false);
    let mut h = HeaderMap::new();
    h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.7"));
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
    h.insert(&X_ROLLGATE_SHADOW, HeaderValue::from_static("1"));
    let p = peer("10.0.0.2");
    let judged = up.trusted.peer(p);
    assert!(judged.trusted);
    assert_eq!(
        up.trusted.client(&judged, &h),
        "198.51.100.7".parse::<IpAddr>().unwrap()
    );
    up.rewrite(&mut h, Variant::V1, &RouteTable::default(), p);
    assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.7, 10.0.0.2");
    assert_eq!(h[&X_FORWARDED_PROTO], "https");
    assert!(h.get(header::FORWARDED).is_none());
    assert!(h.get(&X_ROLLGATE_SHADOW).is_none());
}

#[test]
fn cookie_crumbs_are_joined_for_the_http1_upstream() {
    let mut h = HeaderMap::new();
    h.append(header::COOKIE, HeaderValue::from_static("a=1"));
    h.append(header::COOKIE, HeaderValue::from_static("rg_bucket=x.y"));
    h.append(header::COOKIE, HeaderValue::from_static(" "));
    h.append(
        header::COOKIE,
        HeaderValue::from_bytes(b"city=Z\xc3\xbcrich").unwrap(),
    );
    join_cookie_crumbs(&mut h);
    assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
    assert_eq!(
        h[header::COOKIE].as_bytes(),
        b"a=1; rg_bucket=x.y; city=Z\xc3\xbcrich"
    );
    // One field is left as it is.
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_static("a=1;b=2"));
    join_cookie_crumbs(&mut h);
    assert_eq!(h[header::COOKIE], "a=1;b=2");
}

/// Names a client might send: every control header in two spellings, a few
/// hop-by-hop ones, and anything else.
fn client_name() -> impl Strategy<Value = HeaderName> {
    const NAMES: [&str; 14] = [
        "x-rollgate-variant",
        "X-Rollgate-Variant",
        "x-rollgate-shadow",
        "X-ROLLGATE-SHADOW",
        "x-forwarded-for",
        "X-Forwarded-Proto",
        "forwarded",
        "X-Real-IP",
        "x-payment-mode",
        "X-Payment-Mode",
        "x-region-hint",
        "connection",
        "te",
        "cookie",
    ];
    prop_oneof![
        3 => proptest::sample::select(&NAMES[..]).prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()),
        1 => "[a-z][a-z0-9-]{0,12}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()),
    ]
}

/// Any value a header can carry: visible ASCII, spaces, tabs and obs-text.
fn client_value() -> impl Strategy<Value = HeaderValue> {
    proptest::collection::vec(
        prop_oneof![0x20u8..=0x7e, 0x80u8..=0xff, Just(b'\t')],
        0..24,
    )
    .prop_map(|b| HeaderValue::from_bytes(&b).expect("no control bytes"))
}

proptest! {
    /// For any headers a client sends, in any state, to either variant, from
    /// an untrusted peer: the upstream's control headers are exactly
    /// rollgate's own, never a client's value. From a trusted proxy, only its
    /// `X-Forwarded-For` (appended to) and `X-Forwarded-Proto` survive.
    #[test]
    fn the_upstream_never_gets_a_client_control_header(
        sent in proptest::collection::vec((client_name(), client_value()), 0..16),
        route_i in 0usize..4,
        v2 in any::<bool>(),
        tls in any::<bool>(),
        from_proxy in any::<bool>(),
    ) {
        let cfg = config();
        let up = UpstreamHeaders::new(&cfg, tls);
        let route = &routes(&cfg)[route_i];
        let variant = if v2 { Variant::V2 } else { Variant::V1 };
        let mut h = HeaderMap::new();
        for (n, v) in &sent {
            h.append(n.clone(), v.clone());
        }
        let client = h.clone();
        let p = peer(if from_proxy { "10.0.0.2" } else { "192.0.2.1" });
        up.rewrite(&mut h, variant, route, p);

        let values = |n: &str| h.get_all(n).iter().cloned().collect::<Vec<_>>();
        let ours = |v: &'static str| vec![HeaderValue::from_static(v)];
        prop_assert_eq!(values("x-rollgate-variant"), ours(variant.label()));
        prop_assert!(values("x-rollgate-shadow").is_empty());
        prop_assert!(values("forwarded").is_empty());
        prop_assert!(values("x-real-ip").is_empty());
        for n in [&X_PAYMENT_MODE, &X_REGION_HINT] {
            let want: Vec<HeaderValue> = route
                .headers_for(variant)
                .iter()
                .filter(|(name, _)| name == n)
                .map(|(_, v)| v.clone())
                .collect();
            prop_assert_eq!(values(n.as_str()), want);
        }
        let proto = if tls { "https" } else { "http" };
        let xff = values("x-forwarded-for");
        prop_assert_eq!(xff.len(), 1);
        if from_proxy {
            let xff = xff[0].as_bytes();
            prop_assert!(xff == b"10.0.0.2" || xff.ends_with(b", 10.0.0.2"));
            let xfp = values("x-forwarded-proto");
            prop_assert!(!xfp.is_empty());
            if xfp != ours(proto) {
                let from_client: Vec<_> = client.get_all("x-forwarded-proto").iter().cloned().collect();
                prop_assert_eq!(xfp, from_client);
            }
        } else {
            prop_assert_eq!(xff, ours("192.0.2.1"));
            prop_assert_eq!(values("x-forwarded-proto"), ours(proto));
        }
    }
}

#[test]
fn the_config_has_the_phases_the_tests_assume() {
    let cfg = config();
    assert_eq!(
        cfg.rollout.phases[0].weight,
        WeightBp::from_percent(5.0).unwrap()
    );
    assert_eq!(cfg.rollout.phases[1].headers_to, HeadersTo::Both);
}
