//! Latency histogram: a fixed log-linear bucket layout shared by the lock-free
//! recorder on the request path and the plain-`u64` snapshots the controller reads.
//!
//! Why our own and not `hdrhistogram` on the hot path: a `Recorder` there is a
//! `&mut` handle that must live in a thread-local `RefCell`, allocates a fresh
//! histogram at every phase shift, and `refresh()` stalls on idle writers. An
//! array of `AtomicU64` with a fixed layout gives a record of one `fetch_add`
//! with `Relaxed` ordering, no allocation ever, and readers that never block
//! writers: a snapshot is just a pass over the counters. The cumulative counters
//! are never reset; an interval is the difference of two snapshots, so one set
//! of counters serves both `/metrics` (cumulative) and the controller (deltas).
//!
//! Layout: values are microseconds. Below `2 * SUB` every value has its own
//! bucket; above, each power of two is split into `SUB` (64) equal buckets, so a
//! bucket is at most 1/64 of its lower bound wide and its midpoint is within
//! 1/128 (0.78 %) of any value in it. Values are clamped to `MAX_US` (~67 s),
//! which covers the 1 µs .. 60 s range the spec asks for in 1344 buckets.

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Largest recordable value in microseconds; larger values land in the last bucket.
pub const MAX_US: u64 = (1 << 26) - 1;
/// Number of buckets needed to cover `0..=MAX_US`.
pub const BUCKETS: usize = bucket_index(MAX_US) + 1;

/// Bucket index of a value in microseconds (values above `MAX_US` are clamped).
#[inline]
pub const fn bucket_index(us: u64) -> usize {
    let v = if us > MAX_US { MAX_US } else { us };
    let log2 = 63 - (v | 1).leading_zeros();
    let shift = log2.saturating_sub(SUB_BITS);
    (shift as usize) * SUB + (v >> shift) as usize
}

/// Inclusive lower bound of a bucket, in microseconds.
#[inline]
pub const fn bucket_lower(idx: usize) -> u64 {
    let shift = (idx / SUB).saturating_sub(1);
    ((idx - shift * SUB) as u64) << shift
}

/// Width of a bucket in microseconds.
#[inline]
pub const fn bucket_width(idx: usize) -> u64 {
    1 << (idx / SUB).saturating_sub(1)
}

/// The value reported for a bucket: its midpoint (exact for the 1-wide buckets).
#[inline]
pub fn bucket_value(idx: usize) -> f64 {
    let w = bucket_width(idx);
    if w == 1 {
        bucket_lower(idx) as f64
    } else {
        bucket_lower(idx) as f64 + (w as f64 - 1.0) / 2.0
    }
}

/// Dense bucket counts plus the exact sum, as read from the recorders or merged
/// from intervals. Plain integers: this is control-path data.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub counts: Box<[u64]>,
    pub sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            sum_us: 0,
        }
    }
}

// === impl Histogram ===

impl Histogram {
    pub fn record(&mut self, us: u64, n: u64) {
        self.counts[bucket_index(us)] += n;
        self.sum_us += us.min(MAX_US) * n;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += *b;
        }
        self.sum_us += other.sum_us;
    }

    pub fn add_sparse(&mut self, other: &SparseHistogram) {
        for &(idx, n) in &other.buckets {
            self.counts[idx as usize] += n;
        }
        self.sum_us += other.sum_us;
    }

    /// `self - earlier`, for counters that only grow.
    pub fn delta(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter())
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// Quantile `q` in 0..=1, in microseconds; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (idx, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_value(idx));
            }
        }
        None
    }

    /// Number of recorded values whose bucket midpoint is at most `us`.
    /// Samples above `us`: surely (their bucket starts above it) and
    /// possibly (their bucket ends above it). A judge that must not be
    /// helped by bucket rounding uses the one that is against it.
    pub fn count_above(&self, us: f64) -> (u64, u64) {
        let (mut sure, mut maybe) = (0, 0);
        for (idx, n) in self.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let lower = bucket_lower(idx) as f64;
            if lower > us {
                sure += n;
            }
            if lower + (bucket_width(idx) - 1) as f64 > us {
                maybe += n;
            }
        }
        (sure, maybe)
    }

    pub fn count_le(&self, us: f64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .take_while(|(idx, _)| bucket_value(*idx) <= us)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn to_sparse(&self) -> SparseHistogram {
        SparseHistogram {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i as u16, *n))
                .collect(),
            sum_us: self.sum_us,
        }
    }
}

/// Only the non-empty buckets: what the interval ring keeps, since latencies
/// cluster in a few dozen buckets and a dense copy per interval per cell would
/// cost 10 KiB.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseHistogram {
    pub buckets: Vec<(u16, u64)>,
    pub sum_us: u64,
}

impl SparseHistogram {
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    pub fn to_dense(&self) -> Histogram {
        let mut h = Histogram::default();
        h.add_sparse(self);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_contiguous_and_monotonic() {
        assert_eq!(BUCKETS, 1344);
        for idx in 1..BUCKETS {
            assert_eq!(
                bucket_lower(idx),
                bucket_lower(idx - 1) + bucket_width(idx - 1),
                "gap before bucket {idx}"
            );
        }
        for v in [
            0u64, 1, 63, 64, 127, 128, 129, 1000, 99_999, 60_000_000, MAX_US,
        ] {
            let idx = bucket_index(v);
            assert!(bucket_lower(idx) <= v && v < bucket_lower(idx) + bucket_width(idx));
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn every_value_is_reported_within_one_percent() {
        let mut v = 1u64;
        while v <= 60_000_000 {
            let rep = bucket_value(bucket_index(v));
            let err = (rep - v as f64).abs() / v as f64;
            assert!(err <= 0.01, "value {v} reported as {rep} ({err})");
            v = v + 1 + v / 997;
        }
    }

    #[test]
    fn quantiles_match_exact_quantiles_of_a_known_sample() {
        // A deterministic skewed sample: a lognormal-ish spread from 200 µs to 2 s.
        let mut values: Vec<u64> = (0..10_000u64)
            .map(|i| {
                let x = (i * 7919 % 10_000) as f64 / 10_000.0;
                (200.0 * (x * 9.2).exp()) as u64
            })
            .collect();
        let mut h = Histogram::default();
        for &v in &values {
            h.record(v, 1);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1] as f64;
            let got = h.quantile_us(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.01,
                "q{q}: exact {exact}, histogram {got}"
            );
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.sum_us, values.iter().sum::<u64>());
    }

    #[test]
    fn delta_and_sparse_round_trip() {
        let mut a = Histogram::default();
        a.record(100, 3);
        let mut b = a.clone();
        b.record(5_000, 2);
        b.record(100, 1);
        let d = b.delta(&a);
        assert_eq!(d.count(), 3);
        assert_eq!(d.counts[bucket_index(100)], 1);
        assert_eq!(d.sum_us, 10_100);
        assert_eq!(d.to_sparse().to_dense(), d);
        assert_eq!(Histogram::default().quantile_us(0.5), None);
    }
}
