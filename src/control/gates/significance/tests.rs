use super::*;
use crate::config::DEFAULT_ALPHA;
use crate::telemetry::histogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn close(got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1e-300),
        "got {got:e}, want {want:e} (rel tol {tol:e})"
    );
}

/// Histogram with `counts[i]` values of `first + i` microseconds. Values
/// below 128 µs have a bucket each, so the Python side can use the raw values.
fn hist(first: u64, counts: &[u64]) -> Histogram {
    let mut h = Histogram::default();
    for (i, &n) in counts.iter().enumerate() {
        h.record(first + i as u64, n);
    }
    h
}

fn samples(values: &[u64]) -> Histogram {
    let mut h = Histogram::default();
    for &v in values {
        h.record(v, 1);
    }
    h
}

// Known answers, produced with scipy 1.17.1 / numpy 2.4 by this script:
//
// ```python
// import numpy as np
// from scipy.stats import mannwhitneyu, norm, chi2_contingency
// def mw(x, y):  # x = canary (V2), y = control (V1)
//     r = mannwhitneyu(x, y, alternative='greater', method='asymptotic', use_continuity=True)
//     return float(r.statistic), float(r.pvalue)
// print("A", mw([3,5,5,7,9,9,9,12,15,20], [1,2,3,3,5,6,7,7,8,10,11,12]))
// vals = np.arange(40, 60)
// c1 = [(v * 37) % 23 + 5 for v in vals]
// c2 = [(v * 11) % 7 + 1 for v in vals]
// print("B", mw(np.repeat(vals + 1, c2), np.repeat(vals, c1)))
// print("C", mw(np.repeat(vals, c1), np.repeat(vals, c1)))
// print("E", mw(np.repeat(vals + 3, c2), np.repeat(vals, c1)))
// d1 = [(v * 7919) % 1000 + 500 for v in vals]
// d2 = [(v * 104729) % 100 + 50 for v in vals]
// print("D", mw(np.repeat(vals - 1, d2), np.repeat(vals, d1)))
// def prop(x1, n1, x2, n2):  # Yates-corrected chi-square of the 2x2 table = z_cc^2
//     chi2 = chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=True)[0]
//     return float(np.sqrt(chi2)), float(norm.sf(np.sqrt(chi2)))  # one-sided, observed direction
// print("P1", prop(50, 10000, 15, 1000))
// print("P2", prop(4000, 5000, 370, 500))
// def pois(x1, n1, x2, n2):
//     x = x1 + x2; q = n2 / (n1 + n2)
//     z = (x2 - x * q - 0.5) / np.sqrt(x * q * (1 - q))
//     return float(z), float(norm.sf(z))
// print("R1", pois(120, 10000, 20, 1000))
// print("R2", pois(300, 1000, 40, 100))
// print("N", [float(norm.sf(z)) for z in (-3.0, -1.0, 0.0, 0.5, 1.0, 1.6448536269514722, 2.326, 3.0, 5.0, 8.0, 10.0)])
// from scipy.stats import binom
// def exceeds(k, n, p0):
//     var = n * p0 * (1 - p0)
//     if var < 25: return float(binom.sf(k - 1, n, p0))  # exact
//     return float(norm.sf((k - n * p0 - 0.5) / np.sqrt(var)))
// print("B", [exceeds(*c) for c in ((2, 200, 0.005), (10, 1000, 0.005), (15, 1000, 0.005),
//             (9, 100, 0.05), (60, 1000, 0.05), (130, 2000, 0.05), (990, 1000, 0.99))])
// def logratio(x1, n1, x2, n2, lower_is_worse=True):
//     r1 = (x1 + .5) / (n1 + .5); r2 = (x2 + .5) / (n2 + .5)
//     sd = np.sqrt(sum(1 / (c + .5) for c in (x1, n1, x2, n2)))
//     d = np.log(r1) - np.log(r2) if lower_is_worse else np.log(r2) - np.log(r1)
//     return float(d / sd), float(norm.sf(d / sd))
// print("L", logratio(990, 1000, 19, 23), logratio(990, 1000, 0, 23),
//       logratio(3000, 2000, 300, 400), logratio(1600, 2000, 150, 200, False))
// print("S", [float(2 * norm.sf((abs(x - n * p) - 0.5) / np.sqrt(n * p * (1 - p))))
//             for x, n, p in ((70, 1000, 0.05), (480, 10000, 0.05))])
// ```

#[test]
fn normal_tail_matches_scipy() {
    let z = [
        -3.0,
        -1.0,
        0.0,
        0.5,
        1.0,
        1.644_853_626_951_472_2,
        2.326,
        3.0,
        5.0,
        8.0,
        10.0,
    ];
    let want = [
        0.998_650_101_968_369_9,
        0.841_344_746_068_542_9,
        0.5,
        0.308_537_538_725_986_9,
        0.158_655_253_931_457_07,
        0.050_000_000_000_000_044,
        0.010_009_275_340_867_669,
        0.001_349_898_031_630_093_3,
        2.866_515_718_791_933e-7,
        6.220_960_574_271_74e-16,
        7.619_853_024_160_47e-24,
    ];
    for (z, w) in z.iter().zip(want) {
        // Hart/West is accurate to ~1e-14 absolute: relative 1e-9 in the
        // range a gate uses, 1e-7 in the far tail.
        close(normal_sf(*z), w, if *z < 5.0 { 1e-9 } else { 1e-7 });
    }
    assert_eq!(normal_sf(40.0), 0.0);
    assert_eq!(normal_sf(-40.0), 1.0);
    assert!(normal_sf(f64::NAN).is_nan());
}

#[test]
fn mann_whitney_small_sample_with_ties_matches_scipy() {
    let canary = samples(&[3, 5, 5, 7, 9, 9, 9, 12, 15, 20]);
    let control = samples(&[1, 2, 3, 3, 5, 6, 7, 7, 8, 10, 11, 12]);
    let r = mann_whitney(&control.counts, &canary.counts).unwrap();
    assert_eq!(r.u, 81.5);
    close(r.test.p_value, 0.082_053_119_434_450_93, 1e-10);
    close(r.effect, 81.5 / 120.0, 1e-15);
}

fn counts(f: impl Fn(u64) -> u64) -> Vec<u64> {
    (40..60).map(f).collect()
}

#[test]
fn mann_whitney_heavy_ties_match_scipy() {
    let c1 = counts(|v| (v * 37) % 23 + 5);
    let c2 = counts(|v| (v * 11) % 7 + 1);
    let control = hist(40, &c1);

    // B: canary one value slower, not significant.
    let r = mann_whitney(&control.counts, &hist(41, &c2).counts).unwrap();
    assert_eq!(r.u, 13_964.5);
    close(r.test.p_value, 0.150_855_600_788_282_8, 1e-10);
    assert!(!r.test.significant(DEFAULT_ALPHA));

    // E: three values slower, significant.
    let r = mann_whitney(&control.counts, &hist(43, &c2).counts).unwrap();
    assert_eq!(r.u, 16_263.0);
    close(r.test.p_value, 0.000_236_182_055_007_046_26, 1e-9);
    assert!(r.test.significant(DEFAULT_ALPHA));

    // C: identical samples: no evidence either way.
    let r = mann_whitney(&control.counts, &control.counts).unwrap();
    assert_eq!(r.u, 51_520.5);
    close(r.test.p_value, 0.500_085_053_679_819_1, 1e-12);
    close(r.effect, 0.5, 1e-15);
}

#[test]
fn mann_whitney_large_samples_faster_canary_match_scipy() {
    let d1 = counts(|v| (v * 7919) % 1000 + 500);
    let d2 = counts(|v| (v * 104_729) % 100 + 50);
    let r = mann_whitney(&hist(40, &d1).counts, &hist(39, &d2).counts).unwrap();
    assert_eq!(r.u, 18_176_880.0);
    close(1.0 - r.test.p_value, 1.0 - 0.999_999_999_942_813_9, 1e-4);
}

#[test]
fn mann_whitney_degenerate_inputs() {
    let empty = Histogram::default();
    let one = samples(&[5]);
    assert!(mann_whitney(&empty.counts, &one.counts).is_none());
    assert!(mann_whitney(&one.counts, &empty.counts).is_none());
    // Everything in one bucket: no spread, no evidence.
    let r = mann_whitney(&hist(7, &[30]).counts, &hist(7, &[3]).counts).unwrap();
    assert_eq!(r.test.p_value, 1.0);
    assert_eq!(r.effect, 0.5);
}

#[test]
fn two_proportion_matches_scipy() {
    // P1: 5xx 0.5 % on V1 vs 1.5 % on V2.
    let t = two_proportion(50, 10_000, 15, 1_000, Worse::Higher).unwrap();
    close(t.z, 3.717_595_031_806_560_3, 1e-12);
    close(t.p_value, 0.000_100_564_169_248_102_32, 1e-9);
    // P2: conversion 80 % on V1 vs 74 % on V2; lower is worse.
    let t = two_proportion(4_000, 5_000, 370, 500, Worse::Lower).unwrap();
    close(t.z, 3.108_040_745_530_105, 1e-12);
    close(t.p_value, 0.000_941_660_505_002_844_6, 1e-9);
    // The same data asked the other way round is no evidence at all.
    let t = two_proportion(4_000, 5_000, 370, 500, Worse::Higher).unwrap();
    assert!(t.p_value > 0.99, "{t:?}");
    // Equal rates: below the continuity correction, so not even half-way.
    let t = two_proportion(30, 3_000, 3, 300, Worse::Higher).unwrap();
    assert!(t.z < 0.0 && t.p_value > 0.5, "{t:?}");
    // Degenerate.
    assert!(two_proportion(1, 0, 1, 10, Worse::Higher).is_none());
    assert!(two_proportion(11, 10, 1, 10, Worse::Higher).is_none());
    assert_eq!(
        two_proportion(0, 100, 0, 10, Worse::Higher)
            .unwrap()
            .p_value,
        1.0
    );
}

#[test]
fn poisson_rate_matches_scipy() {
    // R1: 1.2 JS errors per 100 page views on V1, 2 on V2.
    let t = poisson_rate(120, 10_000, 20, 1_000, Worse::Higher).unwrap();
    close(t.z, 1.991_096_252_247_561_3, 1e-12);
    close(t.p_value, 0.023_235_153_205_056_727, 1e-9);
    // R2: more events than exposures (0.3 vs 0.4 clicks per search).
    let t = poisson_rate(300, 1_000, 40, 100, Worse::Higher).unwrap();
    close(t.z, 1.620_661_629_596_708_5, 1e-12);
    close(t.p_value, 0.052_545_113_491_769_664, 1e-9);
    // Fewer clicks is the bad direction of a click-through rate.
    let t = poisson_rate(300, 1_000, 40, 100, Worse::Lower).unwrap();
    assert!(t.p_value > 0.9, "{t:?}");
    assert!(poisson_rate(1, 0, 1, 1, Worse::Higher).is_none());
    assert_eq!(
        poisson_rate(0, 10, 0, 10, Worse::Lower).unwrap().p_value,
        1.0
    );
}

#[test]
fn log_ratio_matches_scipy() {
    // L1: V2 converts 19 of 23 window starts against V1's 99 %: window
    // noise, not evidence (the two-proportion test would say p < 1e-6).
    let t = log_ratio(990, 1_000, 19, 23, Worse::Lower).unwrap();
    close(t.z, 0.570_245_074_226_135_2, 1e-12);
    close(t.p_value, 0.284_255_744_223_221_4, 1e-9);
    // L2: V2 never converts.
    let t = log_ratio(990, 1_000, 0, 23, Worse::Lower).unwrap();
    close(t.p_value, 0.003_619_898_548_118_320_6, 1e-9);
    // L3: clicks per search halve.
    let t = log_ratio(3_000, 2_000, 300, 400, Worse::Lower).unwrap();
    close(t.z, 8.488_803_457_211_73, 1e-12);
    close(t.p_value, 1.043_877_306_410_306_5e-17, 1e-6);
    // L4: the other direction.
    let t = log_ratio(1_600, 2_000, 150, 200, Worse::Higher).unwrap();
    close(t.z, -0.564_608_466_545_346_7, 1e-12);
    close(t.p_value, 0.713_829_947_376_241_7, 1e-9);
    assert!(log_ratio(1, 0, 1, 1, Worse::Lower).is_none());
}

#[test]
fn binomial_exceeds_matches_scipy() {
    let cases = [
        ((2, 200, 0.005), 0.264_240_347_393_262_1),
        ((10, 1_000, 0.005), 0.031_465_238_511_291_69),
        ((15, 1_000, 0.005), 0.000_215_803_363_484_817_94),
        ((9, 100, 0.05), 0.063_089_590_627_448_76),
        ((60, 1_000, 0.05), 0.084_039_159_517_485_14),
        ((130, 2_000, 0.05), 0.001_236_457_178_458_690_4),
        ((990, 1_000, 0.99), 0.583_040_803_301_097_2),
    ];
    for ((k, n, p0), want) in cases {
        let got = binomial_exceeds(k, n, p0).unwrap().p_value;
        close(got, want, 1e-9);
    }
    assert_eq!(binomial_exceeds(0, 100, 0.01).unwrap().p_value, 1.0);
    assert_eq!(binomial_exceeds(1_000, 1_000, 0.05).unwrap().p_value, 0.0);
    assert_eq!(binomial_exceeds(1, 10, 0.0).unwrap().p_value, 0.0);
    assert!(binomial_exceeds(1, 0, 0.5).is_none());
    assert!(binomial_exceeds(2, 1, 0.5).is_none());
}

#[test]
fn share_vs_expected_matches_scipy() {
    // S: 7 % of users on V2 where 5 % was the target, at two sample sizes.
    let t = share_vs_expected(70, 1_000, 0.05).unwrap();
    close(t.p_value, 0.004_664_158_386_515_467, 1e-9);
    let t = share_vs_expected(480, 10_000, 0.05).unwrap();
    close(t.p_value, 0.370_936_056_336_751_64, 1e-9);
    assert!(share_vs_expected(1, 0, 0.5).is_none());
    assert_eq!(share_vs_expected(0, 10, 0.0).unwrap().p_value, 1.0);
    assert_eq!(share_vs_expected(1, 10, 0.0).unwrap().p_value, 0.0);
}

/// One lognormal sample in microseconds (median `median_ms`, log-sd `sigma`).
fn lognormal_us(rng: &mut SmallRng, median_ms: f64, sigma: f64) -> u64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (median_ms * 1000.0 * (sigma * z).exp()) as u64
}

/// Binomial(n, p) by inversion: O(n p) steps, exact, no extra crate.
fn binomial(rng: &mut SmallRng, n: u64, p: f64) -> u64 {
    let u: f64 = rng.random();
    let (mut k, mut pmf) = (0u64, (1.0 - p).powf(n as f64));
    let mut cdf = pmf;
    while u > cdf && k < n {
        pmf *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
        k += 1;
        cdf += pmf;
    }
    k
}

/// The designed false-positive rate, shown with 1,000 canaries whose V2
/// has exactly V1's distribution. Each canary is watched for an hour of
/// disjoint 5-minute windows (a 5 % canary: V2 sees a tenth of V1's
/// traffic). A window is RED by the gates' rule: effect beyond the
/// threshold (median +10 % for latency, 5xx rate +10 % relative for
/// errors) and the one-sided test significant at alpha. A rollback needs
/// the gate RED for `red_rollback_after` = one more window of fresh data,
/// i.e. two consecutive RED windows.
#[test]
fn equal_canaries_are_rarely_red() {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0007);
    let (canaries, windows, alpha) = (1_000, 12, DEFAULT_ALPHA);
    let mut red = [0u32; 2]; // RED windows: latency, errors
    let mut rolled_back = [0u32; 2]; // canaries with two RED windows in a row
    for _ in 0..canaries {
        let mut prev = [false; 2];
        let mut rb = [false; 2];
        for _ in 0..windows {
            let (mut v1, mut v2) = (Histogram::default(), Histogram::default());
            for _ in 0..1_000 {
                v1.record(lognormal_us(&mut rng, 40.0, 0.45), 1);
            }
            for _ in 0..100 {
                v2.record(lognormal_us(&mut rng, 40.0, 0.45), 1);
            }
            let mw = mann_whitney(&v1.counts, &v2.counts).unwrap();
            let slower = v2.quantile_us(0.5).unwrap() > v1.quantile_us(0.5).unwrap() * 1.10;
            let latency_red = slower && mw.test.significant(alpha);

            let (n1, n2) = (20_000, 2_000);
            let (e1, e2) = (binomial(&mut rng, n1, 0.01), binomial(&mut rng, n2, 0.01));
            let t = two_proportion(e1, n1, e2, n2, Worse::Higher).unwrap();
            let worse = e2 as f64 / n2 as f64 > e1 as f64 / n1 as f64 * 1.10;
            let errors_red = worse && t.significant(alpha);

            for (i, now) in [latency_red, errors_red].into_iter().enumerate() {
                red[i] += now as u32;
                rb[i] |= now && prev[i];
                prev[i] = now;
            }
        }
        for i in 0..2 {
            rolled_back[i] += rb[i] as u32;
        }
    }
    eprintln!(
        "RED windows {red:?} of {}, rolled back {rolled_back:?} of {canaries}",
        canaries * windows
    );
    let per_window = |n: u32| n as f64 / (canaries * windows) as f64;
    let per_canary = |n: u32| n as f64 / canaries as f64;
    // Per gate and window: at most about alpha (the tests are calibrated,
    // the threshold only removes more).
    assert!(
        per_window(red[0]) <= alpha,
        "latency RED windows {}",
        red[0]
    );
    assert!(
        per_window(red[1]) <= alpha * 1.2,
        "errors RED windows {}",
        red[1]
    );
    // Rollbacks of an equal canary in an hour: far below alpha.
    for (gate, n) in ["latency", "errors"].iter().zip(rolled_back) {
        assert!(
            per_canary(n) < alpha / 2.0,
            "{gate}: {n} of {canaries} rolled back"
        );
    }
}

/// The other side of the design: a real 20 % slowdown with a 5 % canary's
/// sample is caught (power), so the low false-positive rate is not bought
/// by a test that never fires.
#[test]
fn a_real_slowdown_is_detected() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut caught = 0;
    for _ in 0..200 {
        let (mut v1, mut v2) = (Histogram::default(), Histogram::default());
        for _ in 0..2_000 {
            v1.record(lognormal_us(&mut rng, 40.0, 0.45), 1);
        }
        for _ in 0..200 {
            v2.record(lognormal_us(&mut rng, 48.0, 0.45), 1);
        }
        caught += mann_whitney(&v1.counts, &v2.counts)
            .unwrap()
            .test
            .significant(DEFAULT_ALPHA) as u32;
    }
    assert!(caught >= 180, "caught {caught} of 200");
}
