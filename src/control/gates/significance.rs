//! Sample-size-aware comparisons of canary (V2) against control (V1), computed
//! straight from the counters the request path already keeps.
//!
//! - [`mann_whitney`]: Mann-Whitney U on two histograms with the layout of
//!   [`crate::telemetry::histogram`]. Values in one bucket are ties: each gets the mid-rank
//!   of its bucket, and the variance carries the usual tie correction. With a
//!   bucket at most 1/64 of its value wide, the only information lost is the
//!   order *inside* a bucket, which is below the histogram's 0.78 % resolution.
//!   The test is O(buckets), whatever the number of samples.
//! - [`two_proportion`]: pooled two-proportion z-test for shares (5xx rate,
//!   funnel conversion).
//! - [`poisson_rate`]: conditional (binomial) test for event rates per
//!   exposure where a unit may have several events (JS errors per page view),
//!   i.e. where the count may exceed the exposure.
//! - [`log_ratio`]: two ratios of windowed counts (funnel steps, clicks per
//!   search), where the numerator is not a cohort of the denominator.
//! - [`binomial_exceeds`]: a bad share against the share an absolute
//!   threshold allows (exact binomial tail for small counts).
//! - [`share_vs_expected`]: two-sided test of a share against its target.
//!
//! Every test is one-sided in the direction "V2 is worse" and uses the normal
//! approximation (with continuity correction for Mann-Whitney, as scipy's
//! `mannwhitneyu(method="asymptotic")`). The approximation is fine for the
//! sample sizes the gates require anyway (`min_samples`); below them a gate is
//! YELLOW "insufficient data" before any test runs.
//!
//! ## The false-positive rate we design for
//!
//! A comparative gate is RED only when the observed degradation is beyond its
//! threshold **and** the one-sided test rejects "V2 is not worse" at
//! `DEFAULT_ALPHA` (in `config/gates.rs`) = 0.01 (`[gates] alpha`). So for an equal canary:
//!
//! - **per gate and window: about alpha = 1 %** false RED. The tests are
//!   calibrated to about alpha (the continuity correction keeps the normal
//!   approximation within ~10 % of alpha even with a few dozen errors), and
//!   the threshold only removes more.
//! - **a rollback needs the gate RED for `red_rollback_after`** (default 5
//!   minutes = one window of fresh data), i.e. two consecutive RED windows:
//!   about alpha^2 = 0.01 % per pair of windows, so over a 6-hour phase (72
//!   windows) at most ~72 * alpha^2 = 0.7 % per gate: the designed false
//!   rollback rate is below alpha per gate and phase.
//!
//! `tests::equal_canaries_are_rarely_red` shows both with 1,000 simulated
//! equal canaries watched for an hour each (12,000 windows): about 0.8 %
//! (latency) and 1.06 % (errors) RED windows, and 1 and 2 of 1,000 canaries
//! with two RED windows in a row. Power is the other half of the design:
//! `tests::a_real_slowdown_is_detected` catches a 20 % slowdown with a 5 %
//! canary's sample at least 90 % of the time.

/// Upper tail of the standard normal distribution, P(Z > z).
///
/// Hart's rational approximation (1968) as given by G. West, "Better
/// approximations to cumulative normal functions" (2005): double precision
/// over the whole range, no `erf` needed.
pub(crate) fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let x = z.abs();
    let tail = if x > 37.0 {
        0.0
    } else {
        let e = (-x * x / 2.0).exp();
        if x < 7.071_067_811_865_47 {
            let num = (((((0.035_262_496_599_891_1 * x + 0.700_383_064_443_688) * x
                + 6.373_962_203_531_65)
                * x
                + 33.912_866_078_383)
                * x
                + 112.079_291_497_871)
                * x
                + 221.213_596_169_931)
                * x
                + 220.206_867_912_376;
            let den = ((((((0.088_388_347_648_318_4 * x + 1.755_667_163_182_64) * x
                + 16.064_177_579_207)
                * x
                + 86.780_732_202_946_1)
                * x
                + 296.564_248_779_674)
                * x
                + 637.333_633_378_831)
                * x
                + 793.826_512_519_948)
                * x
                + 440.413_735_824_752;
            e * num / den
        } else {
            let mut b = x + 0.65;
            b = x + 4.0 / b;
            b = x + 3.0 / b;
            b = x + 2.0 / b;
            b = x + 1.0 / b;
            e / b / 2.506_628_274_631
        }
    };
    if z > 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// A one-sided z-test result: `p_value` is the probability of a statistic at
/// least this extreme in the "V2 worse" direction if V2 were not worse.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ZTest {
    pub z: f64,
    pub p_value: f64,
}

impl ZTest {
    /// A test whose statistic has no spread (every value tied, both rates 0):
    /// no evidence of anything.
    const NO_EVIDENCE: ZTest = ZTest {
        z: 0.0,
        p_value: 1.0,
    };

    pub fn significant(&self, alpha: f64) -> bool {
        self.p_value < alpha
    }
}

/// Mann-Whitney U of the canary against the control.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MannWhitney {
    /// U of the canary: pairs (canary, control) with the canary larger, ties counting 1/2.
    pub u: f64,
    /// `u / (n_control * n_canary)`: P(V2 > V1) + P(tie)/2; 0.5 means no shift.
    pub effect: f64,
    /// One-sided "V2 slower than V1".
    pub test: ZTest,
}

/// Mann-Whitney U from the bucket counts of two histograms with the same
/// layout; `None` when either side is empty. One-sided: small `p_value` means
/// the canary's values tend to be larger (slower).
pub(crate) fn mann_whitney(control: &[u64], canary: &[u64]) -> Option<MannWhitney> {
    debug_assert_eq!(control.len(), canary.len());
    let (mut n1, mut n2, mut below, mut rank_sum, mut ties) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in control.iter().zip(canary.iter()) {
        let t = (a + b) as f64;
        if t == 0.0 {
            continue;
        }
        // Ranks below + 1 ..= below + t share the mid-rank below + (t + 1) / 2.
        rank_sum += b as f64 * (below + (t + 1.0) / 2.0);
        ties += t * t * t - t;
        below += t;
        n1 += a as f64;
        n2 += b as f64;
    }
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let n = n1 + n2;
    let u = rank_sum - n2 * (n2 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let test = if var > 0.0 {
        let z = (u - mean - 0.5) / var.sqrt();
        ZTest {
            z,
            p_value: normal_sf(z),
        }
    } else {
        ZTest::NO_EVIDENCE
    };
    Some(MannWhitney {
        u,
        effect: u / (n1 * n2),
        test,
    })
}

/// Which direction of a rate is the bad one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Worse {
    /// Error rates: V2 higher is worse.
    Higher,
    /// Conversion rates: V2 lower is worse.
    Lower,
}

/// Pooled two-proportion z-test of `x2/n2` (canary) against `x1/n1`
/// (control), one-sided in the `worse` direction. `None` when a side has no
/// trials or more successes than trials.
pub(crate) fn two_proportion(x1: u64, n1: u64, x2: u64, n2: u64, worse: Worse) -> Option<ZTest> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let (x1, n1, x2, n2) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return Some(ZTest::NO_EVIDENCE);
    }
    // Continuity correction (Yates): the counts are integers, and without it
    // the normal tail is too thin for small counts (about 1.5-1.9 % false
    // alarms at alpha = 1 % with a few dozen errors).
    let d = signed(x2 / n2 - x1 / n1, worse) - 0.5 * (1.0 / n1 + 1.0 / n2);
    let z = d / se;
    Some(ZTest {
        z,
        p_value: normal_sf(z),
    })
}

/// Test of two event rates `x1` events per `n1` exposure (control) and `x2`
/// per `n2` (canary), one-sided in the `worse` direction. Conditional on the
/// total `x1 + x2`, the canary's count is binomial with share `n2 / (n1 + n2)`
/// when the rates are equal; the normal approximation of that binomial gives
/// the z. `None` when an exposure is 0. The JS error gate counted events
/// with it before it counted users; kept for the before/after comparison.
#[cfg(test)]
pub(crate) fn poisson_rate(x1: u64, n1: u64, x2: u64, n2: u64, worse: Worse) -> Option<ZTest> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let x = (x1 + x2) as f64;
    let q = n2 as f64 / (n1 + n2) as f64;
    let sd = (x * q * (1.0 - q)).sqrt();
    if sd == 0.0 {
        return Some(ZTest::NO_EVIDENCE);
    }
    // With continuity correction, as for the proportions.
    let z = (signed(x2 as f64 - x * q, worse) - 0.5) / sd;
    Some(ZTest {
        z,
        p_value: normal_sf(z),
    })
}

/// A difference "V2 minus V1", signed so that positive means worse.
fn signed(d: f64, worse: Worse) -> f64 {
    match worse {
        Worse::Higher => d,
        Worse::Lower => -d,
    }
}

/// Test of two ratios of counts taken over the same window, `x1/n1` (control)
/// and `x2/n2` (canary), where numerator and denominator are separate event
/// counts rather than a cohort followed to its outcome: a funnel step over a
/// sliding window counts submits whose start fell before the window and
/// starts whose submit will fall after it, so `x` is not binomial in `n`
/// (V2's ratio can even exceed 1). Each count is treated as Poisson and the
/// log ratio compared by the delta method:
/// `z = (ln r1 - ln r2) / sqrt(1/x1 + 1/n1 + 1/x2 + 1/n2)`, every count + 0.5
/// (which also keeps a V2 with no conversion at all finite). The positive
/// correlation of numerator and denominator (same users) makes this
/// conservative. `None` when a denominator is 0.
pub(crate) fn log_ratio(x1: u64, n1: u64, x2: u64, n2: u64, worse: Worse) -> Option<ZTest> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let c = |v: u64| v as f64 + 0.5;
    let (r1, r2) = (c(x1) / c(n1), c(x2) / c(n2));
    let sd = (1.0 / c(x1) + 1.0 / c(n1) + 1.0 / c(x2) + 1.0 / c(n2)).sqrt();
    let z = signed(r2.ln() - r1.ln(), worse) / sd;
    Some(ZTest {
        z,
        p_value: normal_sf(z),
    })
}

/// One-sided test that the true share of bad outcomes exceeds `p0`, having
/// seen `k` bad of `n` (absolute gates: 5xx share above the ceiling, failed
/// payments above 1 - 99.5 %, requests slower than the P95 threshold above
/// 5 %). Exact binomial tail when the variance is small (n p0 (1 - p0) < 25,
/// where the normal approximation is poor), else normal with continuity
/// correction. `None` when `n` is 0 or `k > n`.
pub(crate) fn binomial_exceeds(k: u64, n: u64, p0: f64) -> Option<ZTest> {
    if n == 0 || k > n || !(0.0..=1.0).contains(&p0) {
        return None;
    }
    let (kf, nf) = (k as f64, n as f64);
    let var = nf * p0 * (1.0 - p0);
    if var == 0.0 {
        // p0 is 0 or 1: any bad outcome above a 0 share is certain evidence.
        let beyond = kf > nf * p0;
        return Some(if beyond {
            ZTest {
                z: f64::INFINITY,
                p_value: 0.0,
            }
        } else {
            ZTest::NO_EVIDENCE
        });
    }
    let z = (kf - nf * p0 - 0.5) / var.sqrt();
    if k == 0 {
        return Some(ZTest { z, p_value: 1.0 });
    }
    let p_value = if var >= 25.0 {
        normal_sf(z)
    } else if p0 <= 0.5 {
        // P(X >= k) = 1 - P(X <= k - 1).
        (1.0 - binomial_cdf(k - 1, n, p0)).max(0.0)
    } else {
        // Mirror so the recursion starts from a pmf that does not underflow:
        // P(X >= k) = P(Y <= n - k) with Y ~ Bin(n, 1 - p0).
        binomial_cdf(n - k, n, 1.0 - p0).min(1.0)
    };
    Some(ZTest { z, p_value })
}

/// P(Y <= m) for Y ~ Binomial(n, q), by the pmf recursion from (1 - q)^n.
/// Only used where n q (1 - q) < 25 and q <= 0.5, so (1 - q)^n >= e^-50ish.
fn binomial_cdf(m: u64, n: u64, q: f64) -> f64 {
    let mut pmf = (1.0 - q).powf(n as f64);
    let mut cdf = pmf;
    let ratio = q / (1.0 - q);
    for j in 0..m.min(n) {
        pmf *= (n - j) as f64 / (j + 1) as f64 * ratio;
        cdf += pmf;
        if cdf >= 1.0 {
            return 1.0;
        }
    }
    cdf
}

/// Two-sided test of an observed share `x / n` against an expected share `p`
/// (the split-skew gate: the V2 share of users against the target weight).
pub(crate) fn share_vs_expected(x: u64, n: u64, p: f64) -> Option<ZTest> {
    if n == 0 || x > n || !(0.0..=1.0).contains(&p) {
        return None;
    }
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    if sd == 0.0 {
        let off = (x as f64 - n as f64 * p).abs() > 0.0;
        return Some(if off {
            ZTest {
                z: f64::INFINITY,
                p_value: 0.0,
            }
        } else {
            ZTest::NO_EVIDENCE
        });
    }
    // |z| with continuity correction, never below 0.
    let z = (((x as f64 - n as f64 * p).abs() - 0.5) / sd).max(0.0);
    Some(ZTest {
        z,
        p_value: (2.0 * normal_sf(z)).min(1.0),
    })
}

#[cfg(test)]
mod tests;
