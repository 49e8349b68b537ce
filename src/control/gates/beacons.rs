//! The gates on client beacons, judged against V1 in the same window: JS
//! errors per page view, funnel ratios and timing medians.

use crate::config::{Funnel, Step, Timing};
use crate::routing::journeys::JourneyId;
use crate::routing::Variant;
use crate::telemetry::beacons::{BeaconCounts, BeaconType};
use crate::telemetry::{StatusClass, Window};

use super::judge::{Bound, Evidence, Measure};
use super::significance::{log_ratio, mann_whitney, poisson_rate, Worse};
use super::{Gate, GateContext, GateResult};

/// JS errors per page view: V2 within `js_errors_max_increase` of V1. Every
/// `js_error` event counts, whatever its name; page views are the events of
/// the `js_errors_per` name. Errors per view can exceed 1, so the evidence is
/// the conditional (Poisson) rate test.
pub(super) fn js_errors(window: &Window, ctx: &GateContext<'_>) -> Option<GateResult> {
    let g = &ctx.cfg.gates;
    let per = g.js_errors_per?;
    let errors = |v: Variant| -> u64 {
        (0..window.beacons.len() / 2)
            .filter_map(|i| window.beacon(i, v))
            .map(|b| b.counts[BeaconType::JsError as usize])
            .sum()
    };
    let views = |v: Variant| window.beacon(per, v).map_or(0, |b| b.total());
    let (e1, n1, e2, n2) = (
        errors(Variant::V1),
        views(Variant::V1),
        errors(Variant::V2),
        views(Variant::V2),
    );
    let rate = |e: u64, n: u64| (n > 0).then(|| e as f64 / n as f64);
    Some(ctx.gate(Measure {
        gate: Gate::JsErrors,
        journey: None,
        bound: Bound::Max,
        what: "V2 JS errors per page view",
        value: rate(e2, n2),
        threshold: rate(e1, n1).unwrap_or(0.0) * (1.0 + g.js_errors_max_increase),
        samples: n2,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: Some(n1),
        evidence: Evidence::Test(poisson_rate(e1, n1, e2, n2, Worse::Higher)),
    }))
}

/// The count of a funnel step for one variant.
fn step_count(window: &Window, step: Step, v: Variant) -> u64 {
    match step {
        Step::Journey(j) => {
            let c = window.cell(JourneyId::new(j as u16), v);
            c.classes[StatusClass::Success as usize] + c.classes[StatusClass::Redirect as usize]
        }
        Step::Beacon(b) => window.beacon(b, v).map_or(0, |b| b.total()),
    }
}

/// A funnel ratio: V2's numerator/denominator at most `max_drop` below V1's.
/// Both steps are counted over the sliding window, so the numerator is not a
/// cohort of the denominator (a submit in the window may belong to a start
/// before it): the evidence is the log-ratio test of two Poisson counts
/// ([`log_ratio`]), not the two-proportion test, whose binomial variance
/// near a 99 % conversion is far too small for window-edge noise.
pub(super) fn funnel(window: &Window, ctx: &GateContext<'_>, f: &Funnel) -> GateResult {
    let count = |step, v| step_count(window, step, v);
    let (x1, n1) = (
        count(f.numerator, Variant::V1),
        count(f.denominator, Variant::V1),
    );
    let (x2, n2) = (
        count(f.numerator, Variant::V2),
        count(f.denominator, Variant::V2),
    );
    let ratio = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
    let test = log_ratio(x1, n1, x2, n2, Worse::Lower);
    ctx.gate(Measure {
        gate: Gate::Funnel,
        journey: Some(&f.name),
        bound: Bound::Min,
        what: "V2 conversion",
        value: ratio(x2, n2),
        threshold: ratio(x1, n1).unwrap_or(0.0) * (1.0 - f.max_drop),
        samples: n2,
        min_samples: f.min_samples.unwrap_or(ctx.cfg.rollout.min_samples),
        control_samples: Some(n1),
        evidence: Evidence::Test(test),
    })
}

/// A timing beacon: V2's median at most `max_increase` above V1's, evidence
/// from Mann-Whitney U on the two timing histograms.
pub(super) fn timing(window: &Window, ctx: &GateContext<'_>, t: &Timing) -> GateResult {
    let empty = BeaconCounts::default();
    let b1 = window.beacon(t.beacon, Variant::V1).unwrap_or(&empty);
    let b2 = window.beacon(t.beacon, Variant::V2).unwrap_or(&empty);
    let median = |b: &BeaconCounts| b.timing.quantile_us(0.5).map(|us| us / 1000.0);
    ctx.gate(Measure {
        gate: Gate::Timing,
        journey: Some(&t.name),
        bound: Bound::Max,
        what: "V2 median ms",
        value: median(b2),
        threshold: median(b1).unwrap_or(0.0) * (1.0 + t.max_increase),
        samples: b2.timing.count(),
        min_samples: t.min_samples.unwrap_or(ctx.cfg.rollout.min_samples),
        control_samples: Some(b1.timing.count()),
        evidence: Evidence::Test(
            mann_whitney(&b1.timing.counts, &b2.timing.counts).map(|m| m.test),
        ),
    })
}
