//! Per-(journey, variant) telemetry recorded on the request path.
//!
//! The request path only does `fetch_add(Relaxed)` on counters that were all
//! allocated at start-up: no lock, no allocation, no string label. Each cell is
//! split into `STRIPES` copies and a thread writes to the copy picked by its
//! thread index, so two worker threads recording the same journey do not fight
//! over one cache line; readers add the stripes up.
//!
//! Two read views come out of the same counters: [`Telemetry::snapshot`] is the
//! cumulative state (rendered on `/metrics`), and [`IntervalRing`] keeps the
//! deltas between successive snapshots so the controller can ask for "the last
//! N seconds" (see [`IntervalRing::window`]).

pub mod beacons;
pub mod histogram;
pub mod names;
pub mod shadow;

use std::cell::Cell as StdCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use beacons::{BeaconCells, BeaconCounts, SparseBeacon};
use histogram::{bucket_index, Histogram, SparseHistogram, BUCKETS, MAX_US};
use shadow::{ShadowCells, ShadowCounts, SparseShadow};

use crate::journeys::JourneyId;
use crate::routing::Variant;

/// Copies of each cell; a thread writes to `thread_index % STRIPES`.
pub(crate) const STRIPES: usize = 4;

/// Response status class, as a label and an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Info = 0,
    Success = 1,
    Redirect = 2,
    ClientError = 3,
    ServerError = 4,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Info,
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    pub fn of(status: u16) -> Self {
        match status {
            0..=199 => StatusClass::Info,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn label(self) -> &'static str {
        ["1xx", "2xx", "3xx", "4xx", "5xx"][self as usize]
    }
}

/// Why the upstream did not give a usable answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Refused or failed TCP connect.
    Connect = 0,
    /// No response headers within the response timeout.
    Timeout = 1,
    /// Connection reset or closed before a complete response.
    Reset = 2,
    /// The upstream answered bytes that are not HTTP.
    Protocol = 3,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 4] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
    ];

    pub fn label(self) -> &'static str {
        ["connect", "timeout", "reset", "protocol"][self as usize]
    }
}

/// One stripe of one (journey, variant) cell. Aligned to 128 bytes so two
/// threads writing neighbouring stripes never share a cache line (or the
/// adjacent line Intel's prefetcher pairs with it): unaligned, the hot
/// counters of stripes k and k+1 shared a line and striping bought nothing
/// (BENCHMARKS.md, "adjacent stripes").
#[repr(align(128))]
struct Stripe {
    latency: Box<[AtomicU64]>,
    latency_sum_us: AtomicU64,
    classes: [AtomicU64; 5],
    errors: [AtomicU64; 4],
    cache_hits: AtomicU64,
    /// Signed: a request may start on one thread and end on another, so a single
    /// stripe can go negative; only the sum over stripes is meaningful.
    inflight: AtomicI64,
}

impl Stripe {
    fn new() -> Self {
        Self {
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            latency_sum_us: AtomicU64::new(0),
            classes: Default::default(),
            errors: Default::default(),
            cache_hits: AtomicU64::new(0),
            inflight: AtomicI64::new(0),
        }
    }
}

struct Cell {
    stripes: Box<[Stripe]>,
}

/// Counts of one (journey, variant) cell, summed over stripes. Cumulative when
/// it comes from [`Telemetry::snapshot`], a delta inside an [`Interval`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellCounts {
    pub latency: Histogram,
    pub classes: [u64; 5],
    pub errors: [u64; 4],
    pub cache_hits: u64,
    /// In-flight requests at the time of the snapshot (a gauge, never a delta).
    pub inflight: i64,
}

impl CellCounts {
    pub fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    pub fn server_errors(&self) -> u64 {
        self.classes[StatusClass::ServerError as usize]
    }

    fn delta(&self, earlier: &CellCounts) -> CellCounts {
        CellCounts {
            latency: self.latency.delta(&earlier.latency),
            classes: std::array::from_fn(|i| self.classes[i].saturating_sub(earlier.classes[i])),
            errors: std::array::from_fn(|i| self.errors[i].saturating_sub(earlier.errors[i])),
            cache_hits: self.cache_hits.saturating_sub(earlier.cache_hits),
            inflight: self.inflight,
        }
    }

    fn to_sparse(&self) -> SparseCounts {
        SparseCounts {
            latency: self.latency.to_sparse(),
            classes: self.classes,
            errors: self.errors,
            cache_hits: self.cache_hits,
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
    pub inflight: i64,
}

impl SparseCounts {
    /// Adds `other` into a dense accumulator.
    pub fn add_to(&self, acc: &mut CellCounts) {
        acc.latency.add_sparse(&self.latency);
        for i in 0..5 {
            acc.classes[i] += self.classes[i];
        }
        for i in 0..4 {
            acc.errors[i] += self.errors[i];
        }
        acc.cache_hits += self.cache_hits;
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
fn cell_index(journey: JourneyId, variant: Variant) -> usize {
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

/// The request path's telemetry: every counter allocated once at start-up.
pub struct Telemetry {
    journeys: usize,
    cells: Box<[Cell]>,
    /// Requests refused with 503 because V2 was over its reserved capacity.
    shed: [AtomicU64; 2],
    /// Client beacons by configured name and variant.
    pub beacons: BeaconCells,
    /// Which user buckets were seen, per region and variant (split skew).
    users: Box<[UserBits]>,
    /// Shadow-phase mirrors, per journey.
    pub shadow: ShadowCells,
    /// `false` only for the overhead comparison of the load test: recording is skipped.
    enabled: bool,
}

// === impl Telemetry ===

impl Telemetry {
    /// `journeys` counts every journey including `other`.
    pub fn new(journeys: usize, enabled: bool) -> Self {
        Self::with_beacons(journeys, 0, enabled)
    }

    /// With counters for `beacon_names` configured beacon event names.
    pub fn with_beacons(journeys: usize, beacon_names: usize, enabled: bool) -> Self {
        Self::with_layout(journeys, beacon_names, 1, enabled)
    }

    /// With beacon counters and one user sketch per region.
    pub fn with_layout(
        journeys: usize,
        beacon_names: usize,
        regions: usize,
        enabled: bool,
    ) -> Self {
        let cells = (0..journeys * 2)
            .map(|_| Cell {
                stripes: (0..STRIPES).map(|_| Stripe::new()).collect(),
            })
            .collect();
        Self {
            journeys,
            cells,
            shed: Default::default(),
            beacons: BeaconCells::new(beacon_names),
            users: (0..regions.max(1) * 2).map(|_| UserBits::new()).collect(),
            shadow: ShadowCells::new(journeys),
            enabled,
        }
    }

    /// Notes that a user bucket was routed to `variant` in `region`.
    #[inline]
    pub fn record_user(&self, region: usize, variant: Variant, bucket: u16) {
        if !self.enabled {
            return;
        }
        if let Some(bits) = self.users.get(region * 2 + variant as usize) {
            bits.set(bucket);
        }
    }

    /// Distinct buckets per region and variant since the last call, resetting
    /// the sketch. Only the controller calls this (once per tick).
    pub fn take_users(&self) -> Vec<[u64; 2]> {
        self.users
            .chunks(2)
            .map(|rv| [rv[0].take(), rv[1].take()])
            .collect()
    }

    pub fn journeys(&self) -> usize {
        self.journeys
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    #[inline]
    fn stripe(&self, journey: JourneyId, variant: Variant) -> &Stripe {
        &self.cells[cell_index(journey, variant)].stripes[stripe_index()]
    }

    /// Records a finished request: latency to response headers, status and
    /// whether the upstream said the answer came from its cache.
    #[inline]
    pub fn record(
        &self,
        journey: JourneyId,
        variant: Variant,
        latency: Duration,
        status: u16,
        cache_hit: bool,
    ) {
        if !self.enabled {
            return;
        }
        let s = self.stripe(journey, variant);
        let us = (latency.as_micros() as u64).min(MAX_US);
        s.latency[bucket_index(us)].fetch_add(1, Relaxed);
        s.latency_sum_us.fetch_add(us, Relaxed);
        s.classes[StatusClass::of(status) as usize].fetch_add(1, Relaxed);
        if cache_hit {
            s.cache_hits.fetch_add(1, Relaxed);
        }
    }

    /// Counts an upstream failure; the synthetic 502/504 is recorded by [`Self::record`].
    #[inline]
    pub fn record_upstream_error(
        &self,
        journey: JourneyId,
        variant: Variant,
        kind: UpstreamErrorKind,
    ) {
        if self.enabled {
            self.stripe(journey, variant).errors[kind as usize].fetch_add(1, Relaxed);
        }
    }

    #[inline]
    pub fn record_shed(&self, variant: Variant) {
        self.shed[variant as usize].fetch_add(1, Relaxed);
    }

    pub fn shed(&self, variant: Variant) -> u64 {
        self.shed[variant as usize].load(Relaxed)
    }

    /// Marks a request in flight until the returned guard is dropped.
    #[inline]
    pub fn inflight(self: &Arc<Self>, journey: JourneyId, variant: Variant) -> InflightGuard {
        self.stripe(journey, variant).inflight.fetch_add(1, Relaxed);
        InflightGuard {
            telemetry: Arc::clone(self),
            journey,
            variant,
        }
    }

    /// In-flight requests of one variant over every journey.
    pub fn inflight_of(&self, variant: Variant) -> i64 {
        (0..self.journeys)
            .flat_map(|j| self.cells[j * 2 + variant as usize].stripes.iter())
            .map(|s| s.inflight.load(Relaxed))
            .sum()
    }

    /// Cumulative counts of every cell. Each counter is read once; counters of
    /// one request may straddle two snapshots, which only shifts it by one interval.
    pub fn snapshot(&self) -> Snapshot {
        let cells = self
            .cells
            .iter()
            .map(|cell| {
                let mut c = CellCounts::default();
                for s in cell.stripes.iter() {
                    for (acc, b) in c.latency.counts.iter_mut().zip(s.latency.iter()) {
                        *acc += b.load(Relaxed);
                    }
                    c.latency.sum_us += s.latency_sum_us.load(Relaxed);
                    for i in 0..5 {
                        c.classes[i] += s.classes[i].load(Relaxed);
                    }
                    for i in 0..4 {
                        c.errors[i] += s.errors[i].load(Relaxed);
                    }
                    c.cache_hits += s.cache_hits.load(Relaxed);
                    c.inflight += s.inflight.load(Relaxed);
                }
                c
            })
            .collect();
        Snapshot {
            journeys: self.journeys,
            cells,
            beacons: self.beacons.snapshot(),
            shed: [self.shed(Variant::V1), self.shed(Variant::V2)],
            users: Vec::new(),
            weight_v2_bp: 0,
            shadow: self.shadow.snapshot(),
            shadow_dropped: self.shadow.dropped(),
        }
    }
}

/// One bit per user bucket (10 000): which buckets made a request. Counting
/// distinct buckets counts users without keeping any identifier; a bucket
/// shared by several users only makes V1 and V2 saturate alike, so the share
/// stays unbiased.
struct UserBits {
    words: Box<[AtomicU64]>,
}

impl UserBits {
    fn new() -> Self {
        let n = (crate::routing::BUCKETS as usize).div_ceil(64);
        Self {
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    fn set(&self, bucket: u16) {
        let (w, bit) = (bucket as usize / 64, 1u64 << (bucket % 64));
        if let Some(word) = self.words.get(w) {
            // Read first: a returning user costs no write to a shared line.
            if word.load(Relaxed) & bit == 0 {
                word.fetch_or(bit, Relaxed);
            }
        }
    }

    fn take(&self) -> u64 {
        self.words
            .iter()
            .map(|w| w.swap(0, Relaxed).count_ones() as u64)
            .sum()
    }
}

/// Decrements the in-flight gauge when the response (body included) is done.
pub struct InflightGuard {
    telemetry: Arc<Telemetry>,
    journey: JourneyId,
    variant: Variant,
}

impl InflightGuard {
    /// Counts an upstream failure against this request's cell.
    pub fn record_error(&self, kind: UpstreamErrorKind) {
        self.telemetry
            .record_upstream_error(self.journey, self.variant, kind);
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.telemetry
            .stripe(self.journey, self.variant)
            .inflight
            .fetch_sub(1, Relaxed);
    }
}

/// The counts of one interval between two snapshots.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// End of the interval, in milliseconds on the caller's clock.
    pub end_ms: u64,
    pub duration_ms: u64,
    /// Indexed by `journey * 2 + variant`.
    pub cells: Vec<SparseCounts>,
    /// Beacon deltas, indexed by `name * 2 + variant`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beacons: Vec<SparseBeacon>,
    /// Requests shed per variant in the interval.
    #[serde(default)]
    pub shed: [u64; 2],
    /// Distinct user buckets per region and variant in the interval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<[u64; 2]>,
    /// V2's weight (basis points) in force during the interval.
    #[serde(default)]
    pub weight_v2_bp: u32,
    /// Shadow mirrors per journey; empty when nothing was mirrored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<SparseShadow>,
    #[serde(default)]
    pub shadow_dropped: u64,
}

/// Counts merged over a window of intervals, ready for the gates.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub duration_ms: u64,
    pub intervals: usize,
    pub cells: Vec<CellCounts>,
    /// Indexed by `name * 2 + variant`.
    pub beacons: Vec<BeaconCounts>,
    /// Requests shed per variant.
    pub shed: [u64; 2],
    /// Per region: users seen on each variant, summed over intervals.
    pub users: Vec<UserShare>,
    /// Shadow mirrors per journey (empty outside shadow phases).
    pub shadow: Vec<ShadowCounts>,
    pub shadow_dropped: u64,
}

/// Users of one region over a window, and how many of them the weights in
/// force should have sent to V2.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserShare {
    pub v1: u64,
    pub v2: u64,
    /// Sum over intervals of (users x V2 weight of that interval).
    pub expected_v2: f64,
    /// Intervals that saw users of this region. The same user returns in many
    /// intervals, so `total() / intervals` (distinct users in an average
    /// interval) is the sample size a test may assume, not `total()`.
    pub intervals: u64,
}

impl UserShare {
    pub fn total(&self) -> u64 {
        self.v1 + self.v2
    }
}

impl Window {
    pub fn cell(&self, journey: JourneyId, variant: Variant) -> &CellCounts {
        &self.cells[cell_index(journey, variant)]
    }

    /// Beacon counts of one configured name; `None` past the configured names.
    pub fn beacon(&self, name: usize, variant: Variant) -> Option<&BeaconCounts> {
        self.beacons.get(name * 2 + variant as usize)
    }

    /// A window over no interval at all.
    pub fn empty(journeys: usize) -> Self {
        Self::empty_with(journeys, 0)
    }

    /// A window over no interval, with room for `beacon_names` beacon names.
    pub fn empty_with(journeys: usize, beacon_names: usize) -> Self {
        Window {
            duration_ms: 0,
            intervals: 0,
            cells: vec![CellCounts::default(); journeys * 2],
            beacons: vec![BeaconCounts::default(); beacon_names * 2],
            shed: [0; 2],
            users: Vec::new(),
            shadow: Vec::new(),
            shadow_dropped: 0,
        }
    }

    /// Shadow counts of one journey, if anything was mirrored in the window.
    pub fn shadow(&self, journey: JourneyId) -> Option<&ShadowCounts> {
        self.shadow.get(journey.index())
    }

    /// Sum over every journey of one variant.
    pub fn variant_total(&self, variant: Variant) -> CellCounts {
        let mut acc = CellCounts::default();
        for c in self.cells.iter().skip(variant as usize).step_by(2) {
            acc.latency.add(&c.latency);
            for i in 0..5 {
                acc.classes[i] += c.classes[i];
            }
            for i in 0..4 {
                acc.errors[i] += c.errors[i];
            }
            acc.cache_hits += c.cache_hits;
            acc.inflight += c.inflight;
        }
        acc
    }
}

/// Recent intervals, oldest first, bounded by age. Owned by the control task;
/// the request path never touches it.
pub struct IntervalRing {
    last: Option<(u64, Snapshot)>,
    intervals: VecDeque<Interval>,
    keep_ms: u64,
}

// === impl IntervalRing ===

impl IntervalRing {
    /// Keeps intervals that ended less than `keep` ago.
    pub fn new(keep: Duration) -> Self {
        Self {
            last: None,
            intervals: VecDeque::new(),
            keep_ms: keep.as_millis() as u64,
        }
    }

    /// Takes the delta since the previous call and stores it as an interval.
    /// The first call only sets the baseline and returns `None`.
    pub fn push(&mut self, now_ms: u64, snapshot: Snapshot) -> Option<&Interval> {
        let interval = self.last.as_ref().map(|(prev_ms, prev)| Interval {
            end_ms: now_ms,
            duration_ms: now_ms.saturating_sub(*prev_ms),
            cells: snapshot
                .cells
                .iter()
                .zip(prev.cells.iter())
                .map(|(now, before)| now.delta(before).to_sparse())
                .collect(),
            beacons: snapshot
                .beacons
                .iter()
                .zip(prev.beacons.iter())
                .map(|(now, before)| now.delta(before).to_sparse())
                .collect(),
            shed: std::array::from_fn(|i| snapshot.shed[i].saturating_sub(prev.shed[i])),
            users: snapshot.users.clone(),
            weight_v2_bp: snapshot.weight_v2_bp,
            shadow: {
                let d: Vec<SparseShadow> = snapshot
                    .shadow
                    .iter()
                    .zip(prev.shadow.iter())
                    .map(|(now, before)| now.delta(before).to_sparse())
                    .collect();
                // Outside shadow phases nothing is mirrored: keep intervals small.
                if d.iter().all(SparseShadow::is_empty) {
                    Vec::new()
                } else {
                    d
                }
            },
            shadow_dropped: snapshot.shadow_dropped.saturating_sub(prev.shadow_dropped),
        });
        self.last = Some((now_ms, snapshot));
        let interval = interval?;
        self.push_interval(interval);
        self.intervals.back()
    }

    /// Stores an already-computed interval (used by replay and tests).
    pub fn push_interval(&mut self, interval: Interval) {
        let horizon = interval.end_ms.saturating_sub(self.keep_ms);
        self.intervals.push_back(interval);
        while self.intervals.front().is_some_and(|i| i.end_ms <= horizon) {
            self.intervals.pop_front();
        }
    }

    pub fn intervals(&self) -> impl Iterator<Item = &Interval> {
        self.intervals.iter()
    }

    /// Merges the intervals that ended within the last `span` before `now_ms`.
    pub fn window(&self, journeys: usize, now_ms: u64, span: Duration) -> Window {
        let from = now_ms.saturating_sub(span.as_millis() as u64);
        let names = self.intervals.back().map_or(0, |i| i.beacons.len() / 2);
        let mut w = Window::empty_with(journeys, names);
        for interval in self.intervals.iter().filter(|i| i.end_ms > from) {
            w.intervals += 1;
            w.duration_ms += interval.duration_ms;
            for (acc, c) in w.cells.iter_mut().zip(interval.cells.iter()) {
                c.add_to(acc);
            }
            for (acc, b) in w.beacons.iter_mut().zip(interval.beacons.iter()) {
                b.add_to(acc);
            }
            for i in 0..2 {
                w.shed[i] += interval.shed[i];
            }
            if w.users.len() < interval.users.len() {
                w.users.resize(interval.users.len(), UserShare::default());
            }
            w.shadow_dropped += interval.shadow_dropped;
            if w.shadow.len() < interval.shadow.len() {
                w.shadow
                    .resize(interval.shadow.len(), ShadowCounts::default());
            }
            for (acc, c) in w.shadow.iter_mut().zip(interval.shadow.iter()) {
                c.add_to(acc);
            }
            let share = interval.weight_v2_bp as f64 / crate::routing::BUCKETS as f64;
            for (acc, [v1, v2]) in w.users.iter_mut().zip(interval.users.iter()) {
                acc.v1 += v1;
                acc.v2 += v2;
                acc.expected_v2 += (v1 + v2) as f64 * share;
                acc.intervals += (v1 + v2 > 0) as u64;
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(i: u16) -> JourneyId {
        JourneyId::new(i)
    }

    #[test]
    fn records_land_in_their_cell_only() {
        let t = Arc::new(Telemetry::new(3, true));
        t.record(j(1), Variant::V2, Duration::from_millis(12), 503, false);
        t.record(j(1), Variant::V2, Duration::from_millis(8), 200, true);
        t.record_upstream_error(j(1), Variant::V2, UpstreamErrorKind::Timeout);
        let s = t.snapshot();
        let c = s.cell(j(1), Variant::V2);
        assert_eq!(c.requests(), 2);
        assert_eq!(c.server_errors(), 1);
        assert_eq!(c.cache_hits, 1);
        assert_eq!(c.errors[UpstreamErrorKind::Timeout as usize], 1);
        assert_eq!(c.latency.sum_us, 20_000);
        assert_eq!(s.cell(j(1), Variant::V1).requests(), 0);
        assert_eq!(s.cell(j(0), Variant::V2).requests(), 0);
    }

    #[test]
    fn inflight_guard_counts_across_threads() {
        let t = Arc::new(Telemetry::new(1, true));
        let g = t.inflight(j(0), Variant::V2);
        assert_eq!(t.inflight_of(Variant::V2), 1);
        // Dropped on another thread, as when a task migrates between workers.
        std::thread::spawn(move || drop(g)).join().unwrap();
        assert_eq!(t.inflight_of(Variant::V2), 0);
        assert_eq!(t.inflight_of(Variant::V1), 0);
    }

    #[test]
    fn interval_snapshots_are_deltas_and_windows_merge_them() {
        let t = Arc::new(Telemetry::new(2, true));
        let mut ring = IntervalRing::new(Duration::from_secs(60));
        assert!(ring.push(0, t.snapshot()).is_none());
        for _ in 0..5 {
            t.record(j(0), Variant::V1, Duration::from_micros(100), 200, false);
        }
        let i1 = ring.push(10_000, t.snapshot()).unwrap();
        assert_eq!(i1.duration_ms, 10_000);
        assert_eq!(i1.cells[0].latency.count(), 5);
        for _ in 0..3 {
            t.record(j(0), Variant::V1, Duration::from_micros(100), 500, false);
        }
        let i2 = ring.push(20_000, t.snapshot()).unwrap();
        assert_eq!(i2.cells[0].classes[StatusClass::ServerError as usize], 3);
        assert_eq!(i2.cells[0].latency.count(), 3);

        let last10 = ring.window(2, 20_000, Duration::from_secs(10));
        assert_eq!(last10.intervals, 1);
        assert_eq!(last10.cell(j(0), Variant::V1).requests(), 3);
        let last20 = ring.window(2, 20_000, Duration::from_secs(20));
        assert_eq!(last20.cell(j(0), Variant::V1).requests(), 8);
        assert_eq!(last20.variant_total(Variant::V1).requests(), 8);
        assert_eq!(last20.variant_total(Variant::V2).requests(), 0);

        // Intervals older than the ring's horizon are dropped.
        ring.push(90_000, t.snapshot());
        assert_eq!(ring.intervals().count(), 1);
    }

    #[test]
    fn disabled_telemetry_records_nothing() {
        let t = Telemetry::new(1, false);
        t.record(j(0), Variant::V1, Duration::from_millis(1), 200, false);
        assert_eq!(t.snapshot().cell(j(0), Variant::V1).requests(), 0);
    }
}
