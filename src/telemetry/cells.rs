//! The counters one (journey, variant) cell is made of, and their read views.
//!
//! A cell is split into `STRIPES` copies and a thread writes to the copy picked
//! by its thread index, so two worker threads recording the same journey do
//! not fight over one cache line; readers add the stripes up.

use std::cell::Cell as StdCell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::beacons::BeaconCounts;
use super::histogram::{Histogram, SparseHistogram, BUCKETS};
use super::shadow::ShadowCounts;
use super::StatusClass;
use crate::routing::journeys::JourneyId;
use crate::routing::Variant;

/// Copies of each cell; a thread writes to `thread_index % STRIPES`.
pub(crate) const STRIPES: usize = 4;

/// One stripe of one (journey, variant) cell. Aligned to 128 bytes so two
/// threads writing neighbouring stripes never share a cache line (or the
/// adjacent line Intel's prefetcher pairs with it): unaligned, the hot
/// counters of stripes k and k+1 shared a line and striping bought nothing
/// (BENCHMARKS.md, "adjacent stripes").
#[repr(align(128))]
pub(super) struct Stripe {
    pub(super) latency: Box<[AtomicU64]>,
    pub(super) latency_sum_us: AtomicU64,
    pub(super) classes: [AtomicU64; 5],
    pub(super) errors: [AtomicU64; 4],
    pub(super) cache_hits: AtomicU64,
    /// Responses whose body failed after a head that was not a 5xx.
    pub(super) broken: AtomicU64,
    /// Signed: a request may start on one thread and end on another, so a single
    /// stripe can go negative; only the sum over stripes is meaningful.
    pub(super) inflight: AtomicI64,
}

impl Stripe {
    pub(super) fn new() -> Self {
        Self {
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            latency_sum_us: AtomicU64::new(0),
            classes: Default::default(),
            errors: Default::default(),
            cache_hits: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            inflight: AtomicI64::new(0),
        }
    }
}

pub(super) struct Cell {
    pub(super) stripes: Box<[Stripe]>,
}

/// Counts of one (journey, variant) cell, summed over stripes. Cumulative when
/// it comes from [`Telemetry::snapshot`], a delta inside an [`Interval`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellCounts {
    pub latency: Histogram,
    pub classes: [u64; 5],
    pub errors: [u64; 4],
    pub cache_hits: u64,
    /// Responses whose body failed after a head that was not a 5xx (reset,
    /// stalled): counted in [`Self::server_errors`].
    pub broken: u64,
    /// In-flight requests at the time of the snapshot (a gauge, never a delta).
    pub inflight: i64,
}

impl CellCounts {
    /// Adds the plain counters of another cell; the histogram (dense or
    /// sparse) and the in-flight gauge are the caller's to merge.
    pub(super) fn add_counters(
        &mut self,
        classes: &[u64; 5],
        errors: &[u64; 4],
        cache_hits: u64,
        broken: u64,
    ) {
        for (acc, n) in self.classes.iter_mut().zip(classes) {
            *acc += n;
        }
        for (acc, n) in self.errors.iter_mut().zip(errors) {
            *acc += n;
        }
        self.cache_hits += cache_hits;
        self.broken += broken;
    }

    pub fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// What the error gates count as failed: every 5xx answer, and every
    /// answer whose head looked fine but whose body then failed (an upstream
    /// that sends `200` and resets, or stalls, has not served the request).
    /// Each request counts once: a 5xx whose body also failed is not
    /// counted again, so this never exceeds [`Self::requests`].
    pub fn server_errors(&self) -> u64 {
        self.classes[StatusClass::ServerError as usize] + self.broken
    }

    pub(super) fn delta(&self, earlier: &CellCounts) -> CellCounts {
        CellCounts {
            latency: self.latency.delta(&earlier.latency),
            classes: std::array::from_fn(|i| self.classes[i].saturating_sub(earlier.classes[i])),
            errors: std::array::from_fn(|i| self.errors[i].saturating_sub(earlier.errors[i])),
            cache_hits: self.cache_hits.saturating_sub(earlier.cache_hits),
            broken: self.broken.saturating_sub(earlier.broken),
            inflight: self.inflight,
        }
    }

    pub(super) fn to_sparse(&self) -> SparseCounts {
        SparseCounts {
            latency: self.latency.to_sparse(),
            classes: self.classes,
            errors: self.errors,
            cache_hits: self.cache_hits,
            broken: self.broken,
            inflight: self.inflight,
        }
    }
}

/// A [`CellCounts`] with a sparse histogram: what the interval ring stores.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseCounts {
    pub latency: SparseHistogram,
    pub classes: [u64; 5],
    pub errors: [u64; 4],
    pub cache_hits: u64,
    /// Absent from rings written before broken bodies were counted.
    #[serde(default)]
    pub broken: u64,
    pub inflight: i64,
}

impl SparseCounts {
    /// Adds `other` into a dense accumulator.
    pub fn add_to(&self, acc: &mut CellCounts) {
        acc.latency.add_sparse(&self.latency);
        acc.add_counters(&self.classes, &self.errors, self.cache_hits, self.broken);
        acc.inflight = self.inflight;
    }
}

/// Cumulative counts of every cell, indexed by `journey * 2 + variant`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub journeys: usize,
    pub cells: Vec<CellCounts>,
    /// Beacon counts, indexed by `name * 2 + variant`.
    pub beacons: Vec<BeaconCounts>,
    /// Users who sent beacons since the previous take (set by the controller).
    pub beacon_users: super::beacons::BeaconUsers,
    /// Requests shed per variant (cumulative).
    pub shed: [u64; 2],
    /// Distinct user buckets per region and variant since the previous
    /// [`Telemetry::take_users`] (not cumulative); empty when not taken.
    pub users: Vec<[u64; 2]>,
    /// V2's weight in force while these counts were recorded (set by the
    /// controller, which knows the routing table).
    pub weight_v2_bp: u32,
    /// Shadow mirrors per journey (cumulative).
    pub shadow: Vec<ShadowCounts>,
    pub shadow_dropped: u64,
}

impl Snapshot {
    pub fn cell(&self, journey: JourneyId, variant: Variant) -> &CellCounts {
        &self.cells[cell_index(journey, variant)]
    }
}

#[inline]
pub(super) fn cell_index(journey: JourneyId, variant: Variant) -> usize {
    journey.index() * 2 + variant as usize
}

thread_local! {
    static STRIPE: StdCell<usize> = const { StdCell::new(usize::MAX) };
}
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

#[inline]
pub(crate) fn stripe_index() -> usize {
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

/// One bit per user bucket (10 000): which buckets made a request. Counting
/// distinct buckets counts users without keeping any identifier; a bucket
/// shared by several users only makes V1 and V2 saturate alike, so the share
/// stays unbiased.
pub(super) struct UserBits {
    pub(super) words: Box<[AtomicU64]>,
}

impl UserBits {
    pub(super) fn new() -> Self {
        let n = (crate::routing::BUCKETS as usize).div_ceil(64);
        Self {
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub(super) fn set(&self, bucket: u16) {
        let (w, bit) = (bucket as usize / 64, 1u64 << (bucket % 64));
        if let Some(word) = self.words.get(w) {
            // Read first: a returning user costs no write to a shared line.
            if word.load(Relaxed) & bit == 0 {
                word.fetch_or(bit, Relaxed);
            }
        }
    }

    pub(super) fn take(&self) -> u64 {
        self.words
            .iter()
            .map(|w| w.swap(0, Relaxed).count_ones() as u64)
            .sum()
    }
}
