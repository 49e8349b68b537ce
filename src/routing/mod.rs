//! The live routing decision: V2's share in basis points plus the current
//! phase's extra upstream headers, behind one `ArcSwap`.
//!
//! The request path does one `load()` (no lock, no refcount traffic beyond the
//! guard); the controller and admin API build a new table off the request path
//! and `store` it, so a change is visible to the very next request and a
//! rollback is a single swap.

#![deny(clippy::disallowed_types)]

pub mod journeys;
pub(crate) mod tripwire;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

/// Which variant's requests carry a phase's `headers`.
#[derive(Debug, serde::Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeadersTo {
    /// V2's requests only: the phase describes the canary (e.g. payments in
    /// test mode for the few users on the new version), not the control.
    #[default]
    Canary,
    /// V1's and V2's requests alike.
    Both,
}

/// The two versions behind the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The current version (control).
    V1 = 0,
    /// The new version (canary).
    V2 = 1,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::V1, Variant::V2];

    pub fn label(self) -> &'static str {
        match self {
            Variant::V1 => "v1",
            Variant::V2 => "v2",
        }
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.label())
    }

    /// Parses the QA override header value.
    pub fn from_bytes(b: &[u8]) -> Option<Variant> {
        if b.eq_ignore_ascii_case(b"v1") {
            Some(Variant::V1)
        } else if b.eq_ignore_ascii_case(b"v2") {
            Some(Variant::V2)
        } else {
            None
        }
    }
}

/// Buckets per user population; weights are expressed in the same unit (basis points).
pub const BUCKETS: u32 = 10_000;

/// V2's weight in basis points (0..=10_000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WeightBp(u32);

impl WeightBp {
    pub const ZERO: WeightBp = WeightBp(0);
    pub const FULL: WeightBp = WeightBp(BUCKETS);

    /// From a percentage (fractional allowed); `None` outside 0..=100 or NaN.
    pub fn from_percent(p: f64) -> Option<WeightBp> {
        (0.0..=100.0)
            .contains(&p)
            .then(|| WeightBp((p * 100.0).round() as u32))
    }

    pub fn percent(self) -> f64 {
        self.0 as f64 / 100.0
    }

    pub fn bp(self) -> u32 {
        self.0
    }

    /// The sticky rule: a bucket goes to V2 iff it is below the weight. Raising
    /// the weight therefore only ever moves V1 buckets to V2.
    #[inline]
    pub fn pick(self, bucket: u16) -> Variant {
        if (bucket as u32) < self.0 {
            Variant::V2
        } else {
            Variant::V1
        }
    }
}

/// What the request path needs to route: immutable once published.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub v2: WeightBp,
    /// Extra headers of the current phase sent upstream (e.g. `x-payment-mode`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whose requests get `headers`: the canary's only unless the phase says both.
    pub headers_to: HeadersTo,
    /// A shadow phase: safe requests are mirrored to V2.
    pub shadow: bool,
}

impl RouteTable {
    /// The phase headers a request to `variant` carries.
    #[inline]
    pub fn headers_for(&self, variant: Variant) -> &[(HeaderName, HeaderValue)] {
        match (self.headers_to, variant) {
            (HeadersTo::Both, _) | (HeadersTo::Canary, Variant::V2) => &self.headers,
            (HeadersTo::Canary, Variant::V1) => &[],
        }
    }
}

/// The shared routing table.
pub struct Router {
    table: ArcSwap<RouteTable>,
}

impl Router {
    pub fn new(table: RouteTable) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
        }
    }

    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.table.load()
    }

    pub fn store(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    /// Sets V2 to zero and drops phase headers in one swap; returns the previous weight.
    pub fn rollback(&self) -> WeightBp {
        self.table.swap(Arc::new(RouteTable::default())).v2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_convert_and_pick_forward_only() {
        assert_eq!(WeightBp::from_percent(5.0).unwrap().bp(), 500);
        assert_eq!(WeightBp::from_percent(0.25).unwrap().bp(), 25);
        assert_eq!(WeightBp::from_percent(100.0), Some(WeightBp::FULL));
        assert_eq!(WeightBp::from_percent(100.5), None);
        assert_eq!(WeightBp::from_percent(-1.0), None);
        assert_eq!(WeightBp::from_percent(f64::NAN), None);
        let (w5, w25) = (
            WeightBp::from_percent(5.0).unwrap(),
            WeightBp::from_percent(25.0).unwrap(),
        );
        for b in 0..BUCKETS as u16 {
            if w5.pick(b) == Variant::V2 {
                assert_eq!(w25.pick(b), Variant::V2);
            }
        }
        assert_eq!(WeightBp::ZERO.pick(0), Variant::V1);
        assert_eq!(WeightBp::FULL.pick(9_999), Variant::V2);
    }

    #[test]
    fn rollback_is_one_swap_to_zero() {
        let r = Router::new(RouteTable {
            v2: WeightBp::from_percent(50.0).unwrap(),
            headers: vec![(
                HeaderName::from_static("x-payment-mode"),
                HeaderValue::from_static("live"),
            )],
            headers_to: HeadersTo::Both,
            shadow: false,
        });
        let before = r.load();
        assert_eq!(r.rollback().bp(), 5_000);
        assert_eq!(r.load().v2, WeightBp::ZERO);
        assert!(r.load().headers.is_empty());
        // A request that loaded the old table keeps a consistent view of it.
        assert_eq!(before.v2.bp(), 5_000);
    }

    #[test]
    fn phase_headers_go_to_the_canary_unless_the_phase_says_both() {
        let mut t = RouteTable {
            headers: vec![(
                HeaderName::from_static("x-payment-mode"),
                HeaderValue::from_static("test"),
            )],
            ..RouteTable::default()
        };
        assert_eq!(t.headers_to, HeadersTo::Canary);
        assert!(t.headers_for(Variant::V1).is_empty());
        assert_eq!(t.headers_for(Variant::V2).len(), 1);
        t.headers_to = HeadersTo::Both;
        assert_eq!(t.headers_for(Variant::V1).len(), 1);
        assert_eq!(t.headers_for(Variant::V2).len(), 1);
    }
}
