//! Simulated traffic: one tick's counts per (journey, variant) cell, drawn
//! per histogram bucket rather than per request.
//!
//! A cell's requests in a tick are a Poisson process, so the count in each
//! latency bucket is an independent Poisson draw with mean
//! `rate x tick x share x P(bucket)`, where `P(bucket)` is the latency
//! distribution's mass between the bucket's bounds (the request path's own
//! bucket layout, `telemetry::histogram`). A 500 req/s journey costs a few
//! hundred draws per tick instead of 30,000, and the counts are distributed
//! exactly as if each request had been drawn and recorded. The 5xx answers
//! of a cell are a binomial draw over its requests.
//!
//! A latency distribution is a lognormal (median, sigma), optionally shifted
//! by a constant (a V2 that adds work to every request) and optionally mixed
//! with a slow tail component (a V2 whose P95, not its median, regresses).
//! Host noise (a busy machine slowing both variants alike for a minute)
//! scales every latency of the tick by a common factor; above 128 µs the
//! layout has 64 buckets per power of two, so a factor of `2^(k/64)` is an
//! exact shift by `k` buckets, and the noise is drawn in those steps (1.1 %).

use rand::Rng;
use rand_distr::{Binomial, Distribution, StandardNormal};

use crate::control::gates::significance::normal_sf;
use crate::telemetry::histogram::{
    bucket_lower, bucket_value, bucket_width, SparseHistogram, BUCKETS,
};
use crate::telemetry::{SparseCounts, StatusClass};

/// Buckets whose probability is below this are left out: at 30,000 requests
/// a tick they would hold a request once in 30,000 ticks.
const MIN_MASS: f64 = 1e-9;

/// A latency distribution in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub median_ms: f64,
    pub sigma: f64,
    /// Added to every request.
    pub shift_ms: f64,
    /// A share of requests drawn from a slower lognormal instead.
    pub tail: Option<Tail>,
}

/// The slow component of a mixture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tail {
    pub share: f64,
    pub median_ms: f64,
    pub sigma: f64,
}

fn lognormal_sf(ms: f64, median: f64, sigma: f64) -> f64 {
    if ms <= 0.0 {
        return 1.0;
    }
    normal_sf((ms / median).ln() / sigma)
}

impl Latency {
    pub fn lognormal(median_ms: f64, sigma: f64) -> Self {
        Latency {
            median_ms,
            sigma,
            shift_ms: 0.0,
            tail: None,
        }
    }

    /// P(latency > ms).
    pub fn sf(&self, ms: f64) -> f64 {
        let x = ms - self.shift_ms;
        let base = lognormal_sf(x, self.median_ms, self.sigma);
        match self.tail {
            None => base,
            Some(t) => (1.0 - t.share) * base + t.share * lognormal_sf(x, t.median_ms, t.sigma),
        }
    }

    /// The P95 in ms (bisection on the survival function).
    pub fn p95_ms(&self) -> f64 {
        let (mut lo, mut hi) = (0.0, 60_000.0);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if self.sf(mid) > 0.05 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (lo + hi) / 2.0
    }

    /// This distribution with a slow tail mixed in so that its P95 is
    /// `target_ms`; the median barely moves (the tail holds ~5 % of requests).
    /// The tail sits 15 % above the target with sigma 0.1, so ~92 % of it is
    /// beyond the target.
    pub fn with_p95(self, target_ms: f64) -> Self {
        let tail = Tail {
            share: 0.0,
            median_ms: (target_ms - self.shift_ms) * 1.15,
            sigma: 0.1,
        };
        let base = Latency { tail: None, ..self };
        let (s_base, s_tail) = (
            base.sf(target_ms),
            lognormal_sf(target_ms - self.shift_ms, tail.median_ms, tail.sigma),
        );
        let share = ((0.05 - s_base) / (s_tail - s_base)).clamp(0.0, 1.0);
        Latency {
            tail: Some(Tail { share, ..tail }),
            ..self
        }
    }

    /// The probability of each bucket of the histogram layout.
    pub fn buckets(&self) -> BucketMass {
        let mut first = None;
        let mut mass = Vec::new();
        for idx in 0..BUCKETS {
            let lo = bucket_lower(idx) as f64 / 1000.0;
            let hi = (bucket_lower(idx) + bucket_width(idx)) as f64 / 1000.0;
            let p = self.sf(lo) - self.sf(hi);
            if p >= MIN_MASS {
                let f = *first.get_or_insert(idx);
                mass.resize(idx - f, 0.0);
                mass.push(p);
            }
        }
        BucketMass {
            first: first.unwrap_or(0),
            mass,
        }
    }
}

/// The non-negligible bucket probabilities of a latency distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketMass {
    first: usize,
    mass: Vec<f64>,
}

/// Above this mean a bucket's Poisson count is drawn from its normal
/// approximation (skewness `1/sqrt(mean)` < 0.2); below, exactly.
const NORMAL_ABOVE: f64 = 30.0;

/// One Poisson draw. Exact by inversion for small means (most buckets: one
/// uniform and a few multiplications, where building a `rand_distr::Poisson`
/// per bucket and tick cost most of a simulated tick); the normal
/// approximation with continuity correction for large ones, where the
/// buckets near the median of a 500 req/s journey sit and the gates only
/// ever see sums of them.
pub(crate) fn poisson<R: Rng>(rng: &mut R, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean >= NORMAL_ABOVE {
        let z: f64 = rng.sample(StandardNormal);
        return (mean + mean.sqrt() * z + 0.5).floor().max(0.0) as u64;
    }
    let u: f64 = rng.random();
    let (mut k, mut p) = (0u64, (-mean).exp());
    let mut cdf = p;
    // The cap only guards against rounding: at a mean below 30, a count of
    // 200 has probability below 1e-90.
    while u > cdf && k < 200 {
        k += 1;
        p *= mean / k as f64;
        cdf += p;
    }
    k
}

pub(crate) fn binomial<R: Rng>(rng: &mut R, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    Binomial::new(n, p.min(1.0)).map_or(0, |d| d.sample(rng))
}

/// How many buckets a host-noise factor of `e^x` shifts latencies by.
pub(crate) fn noise_buckets(x: f64) -> i32 {
    (x * std::f64::consts::LOG2_E * 64.0).round() as i32
}

/// Draws one cell's counts: `expected` requests on average, latencies from
/// `mass` shifted by `shift` buckets (host noise), `error_p` of them 5xx.
pub(crate) fn cell<R: Rng>(
    rng: &mut R,
    mass: &BucketMass,
    shift: i32,
    expected: f64,
    error_p: f64,
) -> SparseCounts {
    let mut buckets = Vec::with_capacity(mass.mass.len());
    let mut sum_us = 0.0;
    let mut n = 0;
    for (i, p) in mass.mass.iter().enumerate() {
        let k = poisson(rng, expected * p);
        if k == 0 {
            continue;
        }
        let idx = (mass.first as i64 + i as i64 + shift as i64).clamp(0, BUCKETS as i64 - 1);
        buckets.push((idx as u16, k));
        sum_us += bucket_value(idx as usize) * k as f64;
        n += k;
    }
    let bad = binomial(rng, n, error_p);
    let mut classes = [0; 5];
    classes[StatusClass::Success as usize] = n - bad;
    classes[StatusClass::ServerError as usize] = bad;
    SparseCounts {
        latency: SparseHistogram {
            buckets,
            sum_us: sum_us as u64,
        },
        classes,
        ..Default::default()
    }
}

/// Whether `n` payments with failure probability `q` hold more than `limit`
/// failures in a row somewhere: the request-path tripwire. A run of
/// `limit + 1` starts at a given payment with probability about
/// `(1 - q) q^(limit + 1)`, and such starts are rare and nearly independent,
/// so their count is Poisson.
pub(crate) fn trips<R: Rng>(rng: &mut R, n: u64, q: f64, limit: u32) -> bool {
    let starts = n as f64 * (1.0 - q) * q.powi(limit as i32 + 1);
    starts > 0.0 && rng.random::<f64>() < 1.0 - (-starts).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn poisson_draws_have_the_mean_and_variance_of_their_mean() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for mean in [0.01, 0.7, 5.0, 29.0, 31.0, 400.0] {
            let n = 20_000;
            let draws: Vec<f64> = (0..n).map(|_| poisson(&mut rng, mean) as f64).collect();
            let m = draws.iter().sum::<f64>() / n as f64;
            let v = draws.iter().map(|d| (d - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            // Five standard errors of the mean; 10 % on the variance.
            assert!(
                (m - mean).abs() < 5.0 * (mean / n as f64).sqrt(),
                "{mean}: mean {m}"
            );
            assert!((v / mean - 1.0).abs() < 0.1, "{mean}: variance {v}");
        }
    }

    #[test]
    fn a_cell_draws_the_distribution_it_was_given() {
        let lat = Latency::lognormal(50.0, 0.3);
        // P95 of a lognormal: median x e^(1.645 sigma).
        assert!((lat.p95_ms() - 50.0 * (1.644_854 * 0.3f64).exp()).abs() < 0.01);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let c = cell(&mut rng, &lat.buckets(), 0, 100_000.0, 0.01);
        let h = c.latency.to_dense();
        let n = h.count() as f64;
        assert!((n - 100_000.0).abs() < 2_000.0, "{n}");
        let p95 = h.quantile_us(0.95).unwrap() / 1000.0;
        assert!((p95 / lat.p95_ms() - 1.0).abs() < 0.02, "{p95}");
        let bad = c.classes[StatusClass::ServerError as usize] as f64;
        assert!((bad / n - 0.01).abs() < 0.002, "{bad}");
        // A shift of 64 buckets doubles every latency.
        let c = cell(&mut rng, &lat.buckets(), 64, 100_000.0, 0.0);
        let p50 = c.latency.to_dense().quantile_us(0.5).unwrap() / 1000.0;
        assert!((p50 / 100.0 - 1.0).abs() < 0.02, "{p50}");
    }

    #[test]
    fn a_tail_moves_the_p95_and_not_the_median() {
        let base = Latency::lognormal(50.0, 0.3);
        let slow = base.with_p95(136.5);
        assert!((slow.p95_ms() - 136.5).abs() < 0.1, "{}", slow.p95_ms());
        assert!(slow.sf(50.0) < 0.53, "{}", slow.sf(50.0));
    }
}
