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

#![deny(clippy::disallowed_types)]

pub mod beacons;
mod cells;
mod classes;
pub mod histogram;
mod layout;
pub(crate) mod names;
pub(crate) mod prometheus;
pub mod shadow;
mod window;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use beacons::BeaconCells;
use cells::{cell_index, stripe_index, Cell, Stripe, UserBits, STRIPES};
use histogram::{bucket_index, MAX_US};
use shadow::ShadowCells;

pub use cells::{CellCounts, Snapshot, SparseCounts};
pub use classes::{StatusClass, UpstreamErrorKind};
pub use layout::Layout;
pub use window::{Interval, IntervalRing, UserShare, Window};

use crate::routing::journeys::JourneyId;
use crate::routing::Variant;

/// The request path's telemetry: every counter allocated once at start-up.
pub struct Telemetry {
    layout: Layout,
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
        Self::with_layout(Layout::sized(journeys, beacon_names, 1), enabled)
    }

    /// Counters for every slot of `layout`.
    pub fn with_layout(layout: Layout, enabled: bool) -> Self {
        let journeys = layout.journeys();
        let cells = (0..journeys * 2)
            .map(|_| Cell {
                stripes: (0..STRIPES).map(|_| Stripe::new()).collect(),
            })
            .collect();
        Self {
            cells,
            shed: Default::default(),
            beacons: BeaconCells::new(layout.beacons()),
            users: (0..layout.regions() * 2).map(|_| UserBits::new()).collect(),
            shadow: ShadowCells::new(journeys),
            layout,
            enabled,
        }
    }

    /// The slots these counters were allocated for.
    pub fn layout(&self) -> &Layout {
        &self.layout
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
        self.layout.journeys()
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

    /// Counts a request answered without a latency sample of the upstream:
    /// one the client broke or let time out (its 4xx counts for its journey;
    /// the upstream never had the whole request, so there is nothing of the
    /// upstream's to measure).
    #[inline]
    pub fn record_status(&self, journey: JourneyId, variant: Variant, status: u16) {
        if self.enabled {
            self.stripe(journey, variant).classes[StatusClass::of(status) as usize]
                .fetch_add(1, Relaxed);
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
        (0..self.journeys())
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
                    c.broken += s.broken.load(Relaxed);
                    c.inflight += s.inflight.load(Relaxed);
                }
                c
            })
            .collect();
        Snapshot {
            journeys: self.journeys(),
            cells,
            beacons: self.beacons.snapshot(),
            beacon_users: Default::default(),
            shed: [self.shed(Variant::V1), self.shed(Variant::V2)],
            users: Vec::new(),
            weight_v2_bp: 0,
            shadow: self.shadow.snapshot(),
            shadow_dropped: self.shadow.dropped(),
        }
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

    /// Counts a response body that failed after its head: an upstream error
    /// of `kind`, and, unless the head already counted as a 5xx, a broken
    /// body the error gates count as a server error.
    pub fn record_broken_body(&self, kind: UpstreamErrorKind, head_5xx: bool) {
        self.record_error(kind);
        if self.telemetry.enabled && !head_5xx {
            self.telemetry
                .stripe(self.journey, self.variant)
                .broken
                .fetch_add(1, Relaxed);
        }
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
