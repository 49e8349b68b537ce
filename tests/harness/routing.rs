//! Where the documented routing rule puts a user key, computed without
//! rollgate's proxy, to check the proxy against.

/// The salt of the test configs (rollgate's default).
pub const SALT: &str = "rollgate";

/// The variant the routing rule gives a user key at `pct` % on V2 (V2 iff
/// xxh3(key, salt) mod 10000 < weight in basis points), as the proxy's
/// `x-rollgate-variant` names it.
pub fn expected_variant(key: &str, pct: f64) -> &'static str {
    use rollgate::routing::{Variant, WeightBp};
    let sticky = rollgate::edge::sticky::Sticky::new(SALT, b"unused-for-buckets", None, None);
    match WeightBp::from_percent(pct)
        .unwrap()
        .pick(sticky.bucket(key.as_bytes()))
    {
        Variant::V1 => "v1",
        Variant::V2 => "v2",
    }
}

/// `n` user keys the routing rule puts on V1 and `n` on V2 at `pct` %.
pub fn keys_on(pct: f64, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for i in 0.. {
        let k = format!("u-{i}");
        match expected_variant(&k, pct) {
            "v1" if v1.len() < n => v1.push(k),
            "v2" if v2.len() < n => v2.push(k),
            _ => {}
        }
        if v1.len() == n && v2.len() == n {
            break;
        }
    }
    (v1, v2)
}
