//! The gates on client beacons, judged against V1 in the same window: the
//! share of users with a JS error, funnel conversions and timing medians.
//!
//! Beacons are written by the client, so the JS error and beacon-funnel
//! gates count *users* (distinct sticky keys, see
//! `telemetry::beacons::users`), never events: a key that posts a thousand
//! `js_error`s is one user with an error, and a client address can claim
//! no more users than its event cap lets it post keys. One client therefore
//! moves these gates by at most its share of users. Timing medians are
//! still judged over events (a median of per-user medians would need per
//! user state); the caps bound what one key or address adds to them.

use crate::config::{Funnel, Step, Timing};
use crate::routing::journeys::JourneyId;
use crate::routing::Variant;
use crate::telemetry::beacons::{BeaconCounts, UserSet};
use crate::telemetry::{StatusClass, Window};

use super::evidence::{Counts, Harm};
use super::judge::{Bound, Evidence, Measure};
use super::significance::{log_ratio, mann_whitney, two_proportion, Worse};
use super::{Gate, GateContext, GateResult};

/// The share of users with a JS error: V2's users with a `js_error` (of any
/// name) and a page view (an event of the `js_errors_per` name) in the
/// window, per V2 user with a page view, at most `js_errors_max_increase`
/// above V1's share. The numerator is a subset of the denominator, so the
/// evidence is the two-proportion test; users whose page view fell before
/// the window are left out of both variants alike.
pub(super) fn js_errors(window: &Window, ctx: &GateContext<'_>) -> Option<GateResult> {
    let g = &ctx.cfg.gates;
    let per = g.js_errors_per?;
    let users = |w: &Window, v: Variant| {
        let viewers = w.beacon_users(per, v);
        (
            viewers.intersection_count(w.beacon_users.js_error(v)),
            viewers.count(),
        )
    };
    let ((x1, n1), (x2, n2)) = (users(window, Variant::V1), users(window, Variant::V2));
    let ((tx1, tn1), (tx2, tn2)) = (users(ctx.tick, Variant::V1), users(ctx.tick, Variant::V2));
    let share = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
    Some(ctx.gate(Measure {
        gate: Gate::JsErrors,
        journey: None,
        bound: Bound::Max,
        what: "V2 users with a JS error per user with a page view",
        value: share(x2, n2),
        threshold: share(x1, n1).unwrap_or(0.0) * (1.0 + g.js_errors_max_increase),
        samples: n2,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: Some(n1),
        evidence: Evidence::Test(two_proportion(x1, n1, x2, n2, Worse::Higher)),
        counted: "V2 users with a JS error per user with a page view",
        counts: Some(Counts::Ratio {
            x1: tx1,
            n1: tn1 as f64,
            x2: tx2,
            n2: tn2 as f64,
            m: 1.0 + g.js_errors_max_increase,
            harm: Harm::Higher,
        }),
    }))
}

/// The requests of a journey step for one variant (2xx and 3xx).
fn journey_count(window: &Window, j: usize, v: Variant) -> u64 {
    let c = window.cell(JourneyId::new(j as u16), v);
    c.classes[StatusClass::Success as usize] + c.classes[StatusClass::Redirect as usize]
}

/// A funnel: V2's conversion at most `max_drop` below V1's.
///
/// - Both steps beacons: users who reached the numerator step (and the
///   denominator step, in the window) per user who reached the denominator
///   step. A cohort share, so the two-proportion test.
/// - A journey step: its 2xx/3xx requests, with any beacon step counted in
///   users. The numerator is then not a cohort of the denominator (a submit
///   in the window may belong to a start before it, V2's ratio can exceed 1),
///   so the evidence is the log-ratio test of two Poisson counts
///   ([`log_ratio`]), not the two-proportion test, whose binomial variance
///   near a 99 % conversion is far too small for window-edge noise.
pub(super) fn funnel(window: &Window, ctx: &GateContext<'_>, f: &Funnel) -> GateResult {
    let counts = |window: &Window, v: Variant| {
        let users = |b: usize, v| window.beacon_users(b, v);
        match (f.numerator, f.denominator) {
            (Step::Beacon(x), Step::Beacon(n)) => {
                let reached: &UserSet = users(n, v);
                (reached.intersection_count(users(x, v)), reached.count())
            }
            (x, n) => {
                let count = |step| match step {
                    Step::Journey(j) => journey_count(window, j, v),
                    Step::Beacon(b) => users(b, v).count(),
                };
                (count(x), count(n))
            }
        }
    };
    let ((x1, n1), (x2, n2)) = (counts(window, Variant::V1), counts(window, Variant::V2));
    let ((tx1, tn1), (tx2, tn2)) = (counts(ctx.tick, Variant::V1), counts(ctx.tick, Variant::V2));
    let cohort = matches!(
        (f.numerator, f.denominator),
        (Step::Beacon(_), Step::Beacon(_))
    );
    let (what, test) = if cohort {
        (
            "V2 users reaching the step per user reaching the one before",
            two_proportion(x1, n1, x2, n2, Worse::Lower),
        )
    } else {
        ("V2 conversion", log_ratio(x1, n1, x2, n2, Worse::Lower))
    };
    let ratio = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
    ctx.gate(Measure {
        gate: Gate::Funnel,
        journey: Some(&f.name),
        bound: Bound::Min,
        what,
        value: ratio(x2, n2),
        threshold: ratio(x1, n1).unwrap_or(0.0) * (1.0 - f.max_drop),
        samples: n2,
        min_samples: f.min_samples.unwrap_or(ctx.cfg.rollout.min_samples),
        control_samples: Some(n1),
        evidence: Evidence::Test(test),
        counted: what,
        counts: Some(Counts::Ratio {
            x1: tx1,
            n1: tn1 as f64,
            x2: tx2,
            n2: tn2 as f64,
            m: 1.0 - f.max_drop,
            harm: Harm::Lower,
        }),
    })
}

/// A timing beacon: V2's median at most `max_increase` above V1's, evidence
/// from Mann-Whitney U on the two timing histograms.
pub(super) fn timing(window: &Window, ctx: &GateContext<'_>, t: &Timing) -> GateResult {
    let empty = BeaconCounts::default();
    let b1 = window.beacon(t.beacon, Variant::V1).unwrap_or(&empty);
    let b2 = window.beacon(t.beacon, Variant::V2).unwrap_or(&empty);
    let tick = ctx.tick.beacon(t.beacon, Variant::V2).unwrap_or(&empty);
    let median = |b: &BeaconCounts| b.timing.quantile_us(0.5).map(|us| us / 1000.0);
    let threshold = median(b1).unwrap_or(0.0) * (1.0 + t.max_increase);
    let (bad, bad_inside) = tick.timing.count_above(threshold * 1000.0);
    ctx.gate(Measure {
        gate: Gate::Timing,
        journey: Some(&t.name),
        bound: Bound::Max,
        what: "V2 median ms",
        value: median(b2),
        threshold,
        samples: b2.timing.count(),
        min_samples: t.min_samples.unwrap_or(ctx.cfg.rollout.min_samples),
        control_samples: Some(b1.timing.count()),
        evidence: Evidence::Test(
            mann_whitney(&b1.timing.counts, &b2.timing.counts).map(|m| m.test),
        ),
        counted: "V2 timings slower than V1's median plus the margin",
        // V2's median is at most the threshold when at most half of its
        // timings are slower than it.
        counts: (threshold > 0.0).then_some(Counts::Share {
            n: tick.timing.count(),
            bad,
            bad_inside,
            p0: 0.5,
        }),
    })
}
