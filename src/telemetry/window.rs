//! Intervals between successive snapshots, and the sliding window the
//! controller judges: "the last N seconds" as a sum of interval deltas.

use std::collections::VecDeque;
use std::time::Duration;

use super::beacons::{BeaconCounts, BeaconUsers, SparseBeacon, UserSet};
use super::cells::{cell_index, CellCounts, Snapshot, SparseCounts};
use super::shadow::{ShadowCounts, SparseShadow};
use crate::routing::journeys::JourneyId;
use crate::routing::Variant;

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
    /// The users who sent beacons in the interval (not cumulative).
    #[serde(default, skip_serializing_if = "BeaconUsers::is_empty")]
    pub beacon_users: BeaconUsers,
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
    /// The users who sent beacons, merged (a union) over the intervals.
    pub beacon_users: BeaconUsers,
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

    /// Users who sent beacon `name` in the window.
    pub fn beacon_users(&self, name: usize, variant: Variant) -> &UserSet {
        self.beacon_users.of(name, variant)
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
            beacon_users: BeaconUsers::default(),
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
            acc.add_counters(&c.classes, &c.errors, c.cache_hits, c.broken);
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
    /// The end of the newest interval `take_unfolded` returned.
    folded_ms: std::cell::Cell<u64>,
}

// === impl IntervalRing ===

impl IntervalRing {
    /// Keeps intervals that ended less than `keep` ago.
    pub fn new(keep: Duration) -> Self {
        Self {
            last: None,
            intervals: VecDeque::new(),
            keep_ms: keep.as_millis() as u64,
            folded_ms: Default::default(),
        }
    }

    /// Takes the delta since the previous call and stores it as an interval.
    /// The first call only sets the baseline and returns `None`.
    pub fn push(&mut self, now_ms: u64, mut snapshot: Snapshot) -> Option<&Interval> {
        // Users are per interval already (taken, not cumulative): moved, not diffed.
        let beacon_users = std::mem::take(&mut snapshot.beacon_users);
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
            beacon_users,
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
        self.window_after(journeys, now_ms.saturating_sub(span.as_millis() as u64))
    }

    /// Merges the intervals no earlier call has taken: what the sequential
    /// judge has not seen yet. A `Cell`, so the pure step can read the ring
    /// by reference; one ring feeds one judge.
    pub fn take_unfolded(&self, journeys: usize) -> Window {
        let w = self.window_after(journeys, self.folded_ms.get());
        if let Some(last) = self.intervals.back() {
            self.folded_ms.set(last.end_ms.max(self.folded_ms.get()));
        }
        w
    }

    /// Merges the intervals that ended after `from` (ms on the window clock).
    pub fn window_after(&self, journeys: usize, from: u64) -> Window {
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
            w.beacon_users.union_with(&interval.beacon_users);
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
