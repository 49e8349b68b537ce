//! Shadow-phase counters: per journey, mirrored requests by V2's answer
//! class, the mirror's latency (histogram layout of [`super::histogram`]),
//! how many answers were compared with V1's and how many differed, plus the
//! mirrors dropped because the queue was full. Recorded by the mirror tasks,
//! off the client's request path; plain relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::histogram::{bucket_index, Histogram, SparseHistogram, BUCKETS, MAX_US};
use crate::routing::journeys::JourneyId;

/// What V2 answered a mirrored request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowClass {
    Info = 0,
    Success = 1,
    Redirect = 2,
    ClientError = 3,
    ServerError = 4,
    /// No usable answer: connect failure, reset, garbage or timeout.
    Error = 5,
}

impl ShadowClass {
    pub const ALL: [ShadowClass; 6] = [
        ShadowClass::Info,
        ShadowClass::Success,
        ShadowClass::Redirect,
        ShadowClass::ClientError,
        ShadowClass::ServerError,
        ShadowClass::Error,
    ];

    pub fn of(status: u16) -> Self {
        match status {
            0..=199 => ShadowClass::Info,
            200..=299 => ShadowClass::Success,
            300..=399 => ShadowClass::Redirect,
            400..=499 => ShadowClass::ClientError,
            _ => ShadowClass::ServerError,
        }
    }

    pub fn label(self) -> &'static str {
        ["1xx", "2xx", "3xx", "4xx", "5xx", "error"][self as usize]
    }
}

struct Cell {
    classes: [AtomicU64; 6],
    compared: AtomicU64,
    diffs: AtomicU64,
    duration: Box<[AtomicU64]>,
    duration_sum_us: AtomicU64,
}

pub struct ShadowCells {
    cells: Box<[Cell]>,
    dropped: AtomicU64,
}

/// Counts of one journey; cumulative or a delta.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShadowCounts {
    pub classes: [u64; 6],
    /// Answers compared with V1's...
    pub compared: u64,
    /// ...and those that differed.
    pub diffs: u64,
    /// V2's time to response headers, microseconds.
    pub duration: Histogram,
}

impl ShadowCounts {
    pub fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    pub fn delta(&self, earlier: &ShadowCounts) -> ShadowCounts {
        ShadowCounts {
            classes: std::array::from_fn(|i| self.classes[i].saturating_sub(earlier.classes[i])),
            compared: self.compared.saturating_sub(earlier.compared),
            diffs: self.diffs.saturating_sub(earlier.diffs),
            duration: self.duration.delta(&earlier.duration),
        }
    }

    pub fn to_sparse(&self) -> SparseShadow {
        SparseShadow {
            classes: self.classes,
            compared: self.compared,
            diffs: self.diffs,
            duration: self.duration.to_sparse(),
        }
    }

    pub fn add(&mut self, other: &ShadowCounts) {
        for i in 0..6 {
            self.classes[i] += other.classes[i];
        }
        self.compared += other.compared;
        self.diffs += other.diffs;
        self.duration.add(&other.duration);
    }
}

/// A [`ShadowCounts`] as intervals (and the replay log) keep it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseShadow {
    pub classes: [u64; 6],
    pub compared: u64,
    pub diffs: u64,
    #[serde(default, skip_serializing_if = "SparseHistogram::is_empty")]
    pub duration: SparseHistogram,
}

impl SparseShadow {
    pub fn is_empty(&self) -> bool {
        self.classes.iter().all(|c| *c == 0) && self.compared == 0
    }

    pub fn add_to(&self, acc: &mut ShadowCounts) {
        for i in 0..6 {
            acc.classes[i] += self.classes[i];
        }
        acc.compared += self.compared;
        acc.diffs += self.diffs;
        acc.duration.add_sparse(&self.duration);
    }
}

// === impl ShadowCells ===

impl ShadowCells {
    pub fn new(journeys: usize) -> Self {
        Self {
            cells: (0..journeys)
                .map(|_| Cell {
                    classes: Default::default(),
                    compared: AtomicU64::new(0),
                    diffs: AtomicU64::new(0),
                    duration: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                    duration_sum_us: AtomicU64::new(0),
                })
                .collect(),
            dropped: AtomicU64::new(0),
        }
    }

    /// A mirrored request's answer from V2 (`duration_us` to its headers).
    pub fn record(&self, journey: JourneyId, class: ShadowClass, duration_us: u64) {
        let Some(c) = self.cells.get(journey.index()) else {
            return;
        };
        c.classes[class as usize].fetch_add(1, Relaxed);
        let us = duration_us.min(MAX_US);
        c.duration[bucket_index(us)].fetch_add(1, Relaxed);
        c.duration_sum_us.fetch_add(us, Relaxed);
    }

    /// A comparison of V2's answer with V1's.
    pub fn record_compare(&self, journey: JourneyId, differs: bool) {
        let Some(c) = self.cells.get(journey.index()) else {
            return;
        };
        c.compared.fetch_add(1, Relaxed);
        if differs {
            c.diffs.fetch_add(1, Relaxed);
        }
    }

    pub fn record_dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Cumulative counts per journey.
    pub fn snapshot(&self) -> Vec<ShadowCounts> {
        self.cells
            .iter()
            .map(|c| {
                let mut s = ShadowCounts {
                    classes: std::array::from_fn(|i| c.classes[i].load(Relaxed)),
                    compared: c.compared.load(Relaxed),
                    diffs: c.diffs.load(Relaxed),
                    duration: Histogram::default(),
                };
                if s.requests() > 0 {
                    for (acc, b) in s.duration.counts.iter_mut().zip(c.duration.iter()) {
                        *acc = b.load(Relaxed);
                    }
                    s.duration.sum_us = c.duration_sum_us.load(Relaxed);
                }
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_round_trips() {
        let s = ShadowCells::new(2);
        s.record(JourneyId::new(1), ShadowClass::of(200), 12_000);
        s.record(JourneyId::new(1), ShadowClass::Error, 5_000_000);
        s.record_compare(JourneyId::new(1), true);
        s.record_compare(JourneyId::new(1), false);
        s.record_dropped();
        let snap = s.snapshot();
        assert_eq!(snap[0], ShadowCounts::default());
        assert_eq!(snap[1].requests(), 2);
        assert_eq!((snap[1].compared, snap[1].diffs), (2, 1));
        assert_eq!(snap[1].duration.count(), 2);
        assert_eq!(s.dropped(), 1);
        let mut back = ShadowCounts::default();
        snap[1]
            .delta(&ShadowCounts::default())
            .to_sparse()
            .add_to(&mut back);
        assert_eq!(back, snap[1]);
        assert_eq!(ShadowClass::of(503).label(), "5xx");
    }
}
