//! Client beacon counters: per (configured event name, variant), a count per
//! event type and, for `timing` events, a latency histogram with the layout of
//! [`super::histogram`]. Same discipline as the request cells: allocated once
//! at start-up, striped by thread, recorded with relaxed `fetch_add`s.
//!
//! No identifier of any kind is stored: only counts and timings by name and
//! variant, so a beacon can never carry a user's data into rollgate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::histogram::{bucket_index, Histogram, SparseHistogram, BUCKETS, MAX_US};
use super::{stripe_index, STRIPES};
use crate::routing::Variant;

pub use crate::config::MAX_BEACON_NAMES;

/// The `type` of a beacon event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeaconType {
    JsError = 0,
    Funnel = 1,
    Timing = 2,
}

impl BeaconType {
    pub const ALL: [BeaconType; 3] = [BeaconType::JsError, BeaconType::Funnel, BeaconType::Timing];

    pub fn label(self) -> &'static str {
        ["js_error", "funnel", "timing"][self as usize]
    }

    pub fn parse(s: &str) -> Option<BeaconType> {
        match s {
            "js_error" => Some(BeaconType::JsError),
            "funnel" => Some(BeaconType::Funnel),
            "timing" => Some(BeaconType::Timing),
            _ => None,
        }
    }
}

/// Why a beacon batch was refused (label of `rollgate_beacon_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeaconReject {
    NotJson = 0,
    TooLarge = 1,
    TooMany = 2,
    UnknownName = 3,
    UnknownType = 4,
    BadValue = 5,
}

impl BeaconReject {
    pub const ALL: [BeaconReject; 6] = [
        BeaconReject::NotJson,
        BeaconReject::TooLarge,
        BeaconReject::TooMany,
        BeaconReject::UnknownName,
        BeaconReject::UnknownType,
        BeaconReject::BadValue,
    ];

    pub fn label(self) -> &'static str {
        [
            "not_json",
            "too_large",
            "too_many",
            "unknown_name",
            "unknown_type",
            "bad_value",
        ][self as usize]
    }
}

struct Stripe {
    counts: [AtomicU64; 3],
    timing: Box<[AtomicU64]>,
    timing_sum_us: AtomicU64,
}

impl Stripe {
    fn new() -> Self {
        Self {
            counts: Default::default(),
            timing: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            timing_sum_us: AtomicU64::new(0),
        }
    }
}

/// The lock-free beacon counters, indexed by `name * 2 + variant`.
pub struct BeaconCells {
    names: usize,
    cells: Box<[Box<[Stripe]>]>,
    rejected: [AtomicU64; 6],
}

/// Counts of one (name, variant), summed over stripes; cumulative or a delta.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BeaconCounts {
    /// By [`BeaconType`].
    pub counts: [u64; 3],
    /// `timing` values, in microseconds.
    pub timing: Histogram,
}

impl BeaconCounts {
    /// Events of every type with this name.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn delta(&self, earlier: &BeaconCounts) -> BeaconCounts {
        BeaconCounts {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            timing: self.timing.delta(&earlier.timing),
        }
    }

    pub fn to_sparse(&self) -> SparseBeacon {
        SparseBeacon {
            counts: self.counts,
            timing: self.timing.to_sparse(),
        }
    }

    pub fn add(&mut self, other: &BeaconCounts) {
        for i in 0..3 {
            self.counts[i] += other.counts[i];
        }
        self.timing.add(&other.timing);
    }
}

/// A [`BeaconCounts`] as the interval ring (and the replay log) keeps it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseBeacon {
    pub counts: [u64; 3],
    #[serde(default, skip_serializing_if = "SparseHistogram::is_empty")]
    pub timing: SparseHistogram,
}

impl SparseBeacon {
    pub fn add_to(&self, acc: &mut BeaconCounts) {
        for i in 0..3 {
            acc.counts[i] += self.counts[i];
        }
        acc.timing.add_sparse(&self.timing);
    }
}

// === impl BeaconCells ===

impl BeaconCells {
    pub fn new(names: usize) -> Self {
        let names = names.min(MAX_BEACON_NAMES);
        Self {
            names,
            cells: (0..names * 2)
                .map(|_| (0..STRIPES).map(|_| Stripe::new()).collect())
                .collect(),
            rejected: Default::default(),
        }
    }

    pub fn names(&self) -> usize {
        self.names
    }

    /// Records one event; `value_us` is used by `timing` events only.
    #[inline]
    pub fn record(&self, name: u16, variant: Variant, kind: BeaconType, value_us: u64) {
        let Some(cell) = self.cells.get(name as usize * 2 + variant as usize) else {
            return;
        };
        let s = &cell[stripe_index()];
        s.counts[kind as usize].fetch_add(1, Relaxed);
        if kind == BeaconType::Timing {
            let us = value_us.min(MAX_US);
            s.timing[bucket_index(us)].fetch_add(1, Relaxed);
            s.timing_sum_us.fetch_add(us, Relaxed);
        }
    }

    #[inline]
    pub fn reject(&self, reason: BeaconReject) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: BeaconReject) -> u64 {
        self.rejected[reason as usize].load(Relaxed)
    }

    /// Cumulative counts, indexed by `name * 2 + variant`.
    pub fn snapshot(&self) -> Vec<BeaconCounts> {
        self.cells
            .iter()
            .map(|stripes| {
                let mut c = BeaconCounts::default();
                for s in stripes.iter() {
                    for i in 0..3 {
                        c.counts[i] += s.counts[i].load(Relaxed);
                    }
                    if s.counts[BeaconType::Timing as usize].load(Relaxed) > 0 {
                        for (acc, b) in c.timing.counts.iter_mut().zip(s.timing.iter()) {
                            *acc += b.load(Relaxed);
                        }
                        c.timing.sum_us += s.timing_sum_us.load(Relaxed);
                    }
                }
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_name_variant_and_type() {
        let b = BeaconCells::new(3);
        b.record(1, Variant::V2, BeaconType::Timing, 250_000);
        b.record(1, Variant::V2, BeaconType::Funnel, 0);
        b.record(0, Variant::V1, BeaconType::JsError, 0);
        b.record(7, Variant::V1, BeaconType::JsError, 0); // out of range: ignored
        b.reject(BeaconReject::TooMany);
        let s = b.snapshot();
        assert_eq!(s.len(), 6);
        assert_eq!(s[3].counts, [0, 1, 1]);
        assert_eq!(s[3].timing.count(), 1);
        assert_eq!(s[3].timing.sum_us, 250_000);
        assert_eq!(s[0].counts, [1, 0, 0]);
        assert_eq!(s[0].timing.count(), 0);
        assert_eq!(b.rejected(BeaconReject::TooMany), 1);
        let d = s[3].delta(&BeaconCounts::default()).to_sparse();
        let mut back = BeaconCounts::default();
        d.add_to(&mut back);
        assert_eq!(back, s[3]);
        assert_eq!(BeaconType::parse("funnel"), Some(BeaconType::Funnel));
        assert_eq!(BeaconType::parse("Funnel"), None);
    }
}
