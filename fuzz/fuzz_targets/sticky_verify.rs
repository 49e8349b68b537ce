//! The `rg_bucket` check on arbitrary values: never panics, accepts only the
//! exact value it signed; resolving arbitrary Cookie headers never panics.
#![no_main]

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rollgate::edge::sticky::Sticky;

fuzz_target!(|data: &[u8]| {
    let s = Sticky::new(
        "fuzz-salt",
        b"fuzz-secret-0123456789",
        Some(HeaderName::from_static("x-user-id")),
        Some("uid".into()),
    );
    if let Ok(value) = std::str::from_utf8(data) {
        if let Some(id) = s.verify(value) {
            let n = u64::from_str_radix(id, 16).expect("hex id");
            assert_eq!(s.cookie_value(n), value, "accepted an unsigned value");
        }
    }
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(data) {
        h.append(COOKIE, v);
    }
    let mut cookie = b"rg_bucket=".to_vec();
    cookie.extend_from_slice(data);
    if let Ok(v) = HeaderValue::from_bytes(&cookie) {
        h.append(COOKIE, v);
    }
    assert!(s.resolve(&h).bucket < 10_000);
});
