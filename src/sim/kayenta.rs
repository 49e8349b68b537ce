//! A Kayenta-like judge, for comparison only: it never runs in the product.
//!
//! "Kayenta-like" because it follows the judge of Spinnaker's Kayenta as it
//! is usually configured, not its code: every metric is a time series of
//! per-minute points for V1 and for V2 (here: the P95 of each journey with
//! traffic, and the 5xx rate over all journeys), and a check compares all
//! the points of the phase so far with Mann-Whitney U, two-sided at 98 %
//! confidence; only the "V2 worse" side fails a metric (V2 faster or with
//! fewer errors passes). A metric with fewer than 50 points has no verdict,
//! and neither has the canary then (HOLD). Any failed metric at a check
//! rolls back. Checks run every 5 minutes; the phases' weights and holds are
//! the plan's, and a check that passes at the end of a hold steps up. At
//! 100 % there is no control to compare with, so the last phase only waits
//! out its hold.
//!
//! Its known weakness comes from the per-minute points: a minute with 0
//! errors and one with 1 error are two points, not 450 requests each, so a
//! canary with 2 errors against 0 over 50 minutes is a pass (p = 0.16, see
//! the test), whatever the request counts were. There is no absolute
//! threshold either: a V2 slower than its P95 gate but like V1 passes.

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::scenarios::{journey_ids, Scenario, Traffic, JOURNEYS};
use super::RunResult;
use crate::config::Config;
use crate::control::gates::significance::normal_sf;
use crate::telemetry::{Interval, SparseCounts, StatusClass};

/// Points a metric needs before it is judged.
pub const MIN_POINTS: usize = 50;
/// Two-sided significance level (98 % confidence).
pub const ALPHA: f64 = 0.02;
/// Minutes between checks.
pub const CHECK_EVERY_MIN: u64 = 5;

/// Mann-Whitney U of `canary` against `control`: V2's U and the two-sided
/// p-value (normal approximation with tie and continuity correction, as
/// scipy's `mannwhitneyu(method="asymptotic")`).
pub fn mann_whitney(canary: &[f64], control: &[f64]) -> Option<(f64, f64)> {
    let (n2, n1) = (canary.len() as f64, control.len() as f64);
    if canary.is_empty() || control.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = canary
        .iter()
        .map(|v| (*v, true))
        .chain(control.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut ties, mut i) = (0.0, 0.0, 0);
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i) as f64;
        // Ranks i + 1 ..= j share the mid-rank.
        let mid = (i + 1 + j) as f64 / 2.0;
        rank_sum += mid * all[i..j].iter().filter(|(_, c)| *c).count() as f64;
        ties += t * t * t - t;
        i = j;
    }
    let n = n1 + n2;
    let u = rank_sum - n2 * (n2 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return Some((u, 1.0));
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
    Some((u, (2.0 * normal_sf(z)).min(1.0)))
}

/// A check's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Some metric has fewer than [`MIN_POINTS`] points.
    NoVerdict,
    Pass,
    /// The first failed metric.
    Fail(String),
}

/// One metric's points in the current phase.
#[derive(Default)]
struct Series {
    name: String,
    v1: Vec<f64>,
    v2: Vec<f64>,
}

/// The judge's memory: the phase's points per metric.
pub struct Judge {
    series: Vec<Series>,
    /// The config cells of the journeys with traffic.
    cells: Vec<usize>,
}

fn p95_ms(c: &SparseCounts) -> Option<f64> {
    c.latency.to_dense().quantile_us(0.95).map(|us| us / 1000.0)
}

impl Judge {
    pub fn new(cells: Vec<usize>) -> Self {
        let mut series: Vec<Series> = JOURNEYS
            .iter()
            .map(|(name, _)| Series {
                name: format!("P95 {name}"),
                ..Default::default()
            })
            .collect();
        series.push(Series {
            name: "5xx rate".into(),
            ..Default::default()
        });
        Judge { series, cells }
    }

    /// A new phase starts with no points.
    pub fn reset(&mut self) {
        for s in &mut self.series {
            s.v1.clear();
            s.v2.clear();
        }
    }

    /// Adds one minute's points; a variant without requests in that minute
    /// gives no point.
    pub fn add(&mut self, minute: &Interval) {
        let (mut req, mut bad) = ([0u64; 2], [0u64; 2]);
        for (series, &cell) in self.series.iter_mut().zip(&self.cells) {
            let (c1, c2) = (&minute.cells[cell * 2], &minute.cells[cell * 2 + 1]);
            if let (Some(a), Some(b)) = (p95_ms(c1), p95_ms(c2)) {
                series.v1.push(a);
                series.v2.push(b);
            }
            for (v, c) in [c1, c2].into_iter().enumerate() {
                req[v] += c.classes.iter().sum::<u64>();
                bad[v] += c.classes[StatusClass::ServerError as usize];
            }
        }
        if req[0] > 0 && req[1] > 0 {
            let errors = self.series.last_mut().expect("the 5xx series");
            errors.v1.push(bad[0] as f64 / req[0] as f64);
            errors.v2.push(bad[1] as f64 / req[1] as f64);
        }
    }

    pub fn judge(&self) -> Verdict {
        if self.series.iter().any(|s| s.v2.len() < MIN_POINTS) {
            return Verdict::NoVerdict;
        }
        for s in &self.series {
            let Some((u, p)) = mann_whitney(&s.v2, &s.v1) else {
                return Verdict::NoVerdict;
            };
            let worse = u > s.v1.len() as f64 * s.v2.len() as f64 / 2.0;
            if p < ALPHA && worse {
                return Verdict::Fail(format!("{} (p = {p:.4})", s.name));
            }
        }
        Verdict::Pass
    }
}

/// One rollout under the Kayenta-like judge: the plan's weights and holds,
/// judged by [`Judge`] every [`CHECK_EVERY_MIN`] minutes.
pub(super) fn run(cfg: &Config, sc: &Scenario, rate: f64, seed: u64, ticks: u64) -> RunResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut traffic = Traffic::new(sc, cfg, rate);
    let cells = journey_ids(cfg).iter().map(|id| id.index()).collect();
    let mut judge = Judge::new(cells);
    let tick_ms = cfg.rollout.tick.as_millis() as u64;
    let phases = &cfg.rollout.phases;
    let mut res = RunResult::default();
    // (phase, tick it was entered at): entered at the end of the first tick,
    // like the controller's start.
    let mut phase: Option<(usize, u64)> = None;
    for k in 1..=ticks {
        let weight = phase.map_or(0.0, |(i, _)| phases[i].weight.percent());
        let p95 = phases[phase.map_or(0, |(i, _)| i)].p95_ms;
        let served = traffic.tick(
            &mut rng,
            k * tick_ms,
            weight,
            p95,
            (k - 1) * tick_ms / 60_000,
        );
        res.served(weight, served.v2_requests, k * tick_ms);
        let Some((i, since)) = phase else {
            phase = Some((0, k));
            continue;
        };
        judge.add(&served.interval);
        let in_phase_ms = (k - since) * tick_ms;
        let hold_ms = phases[i].hold.as_millis() as u64;
        if weight >= 100.0 {
            if in_phase_ms >= hold_ms {
                res.promoted = true;
                return res;
            }
            continue;
        }
        if in_phase_ms % (CHECK_EVERY_MIN * 60_000) != 0 {
            continue;
        }
        match judge.judge() {
            Verdict::Fail(what) => {
                res.rolled_back = Some(format!("kayenta: {what}"));
                return res;
            }
            Verdict::Pass if in_phase_ms >= hold_ms => {
                judge.reset();
                phase = Some((i + 1, k));
            }
            Verdict::Pass | Verdict::NoVerdict => {}
        }
    }
    res
}

/// The start of every simulated rollout (a Monday morning; the simulated
/// plans promote at any hour).
pub(super) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_420_800, 0).expect("a valid time")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers from scipy 1.17:
    /// ```python
    /// from scipy.stats import mannwhitneyu
    /// v1 = [0.0] * 50
    /// mannwhitneyu([0.0] * 48 + [1 / 450] * 2, v1, alternative="two-sided",
    ///              method="asymptotic", use_continuity=True)  # U 1300, p 0.15936912381379265
    /// mannwhitneyu([0.0] * 40 + [1 / 450] * 10, v1, ...)    # U 1500, p 0.0009329879083673862
    /// mannwhitneyu([1.2, 3.4, 2.2, 5.0, 4.4, 3.3, 2.9, 6.1],
    ///              [1.0, 2.0, 2.5, 1.7, 3.0, 2.2, 0.9], ...)  # U 47.5, p 0.02775099267197085
    /// ```
    #[test]
    fn mann_whitney_matches_scipy_and_calls_0_vs_2_errors_a_pass() {
        let v1 = [0.0; 50];
        let two: Vec<f64> = [0.0; 48].into_iter().chain([1.0 / 450.0; 2]).collect();
        let (u, p) = mann_whitney(&two, &v1).unwrap();
        assert_eq!(u, 1300.0);
        assert!((p - 0.159_369_123_813_792_65).abs() < 1e-9, "{p}");
        // The judge agrees: 2 errors against 0 over 50 minutes passes.
        assert!(p >= ALPHA);
        let ten: Vec<f64> = [0.0; 40].into_iter().chain([1.0 / 450.0; 10]).collect();
        let (u, p) = mann_whitney(&ten, &v1).unwrap();
        assert_eq!(u, 1500.0);
        assert!((p - 0.000_932_987_908_367_386_2).abs() < 1e-9, "{p}");
        let x = [1.2, 3.4, 2.2, 5.0, 4.4, 3.3, 2.9, 6.1];
        let y = [1.0, 2.0, 2.5, 1.7, 3.0, 2.2, 0.9];
        let (u, p) = mann_whitney(&x, &y).unwrap();
        assert_eq!(u, 47.5);
        assert!((p - 0.027_750_992_671_970_85).abs() < 1e-9, "{p}");
    }
}
