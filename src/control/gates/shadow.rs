//! A shadow phase: V2 takes no live traffic, so only its answers to mirrored
//! requests are judged.

use crate::telemetry::Window;

use super::evidence::Counts;
use super::judge::{Bound, Evidence, Measure};
use super::latency;
use super::significance::binomial_exceeds;
use super::{Evaluation, Gate, GateContext};

/// The gates of a shadow phase, over V2's answers to mirrored requests:
/// `shadow_diff` (share of answers that differed from V1's, overall and per
/// journey, at most `shadow.diff_rate_max`, binomial evidence) and
/// `latency_p95` per journey on the mirrors' latency. The overall gate is
/// always there, so a shadow phase without any mirrored traffic holds
/// ("insufficient data") instead of passing on no evidence.
pub(super) fn evaluate(window: &Window, ctx: &GateContext<'_>, mut ev: Evaluation) -> Evaluation {
    let journeys = &ctx.cfg.journeys;
    let min_samples = ctx.cfg.rollout.min_samples;
    let max = ctx.cfg.shadow.diff_rate_max;
    let diff_gate = |journey: Option<&str>, (compared, diffs): (u64, u64), tick: (u64, u64)| {
        ctx.gate(Measure {
            gate: Gate::ShadowDiff,
            journey,
            bound: Bound::Max,
            what: "V2 answers differing from V1",
            value: (compared > 0).then(|| diffs as f64 / compared as f64),
            threshold: max,
            samples: compared,
            min_samples,
            control_samples: None,
            evidence: Evidence::Test(binomial_exceeds(diffs, compared, max)),
            counted: "V2 answers differing from V1",
            counts: Some(Counts::share(tick.0, tick.1, max)),
        })
    };
    let (mut compared, mut diffs, mut tick) = (0, 0, (0, 0));
    let empty = Default::default();
    let mut per_journey = Vec::new();
    for id in journeys.ids() {
        let Some(c) = window.shadow(id).filter(|c| c.requests() > 0) else {
            continue;
        };
        let t = ctx.tick.shadow(id).unwrap_or(&empty);
        compared += c.compared;
        diffs += c.diffs;
        tick = (tick.0 + t.compared, tick.1 + t.diffs);
        let name = journeys.name(id);
        per_journey.push(diff_gate(
            Some(name),
            (c.compared, c.diffs),
            (t.compared, t.diffs),
        ));
        let threshold = latency::p95_limit(ctx, &ctx.limits(id));
        let n = c.duration.count();
        per_journey.push(latency::p95_of(
            ctx,
            name,
            "V2 mirror P95 ms",
            &c.duration,
            &t.duration,
            n,
            threshold,
        ));
    }
    ev.gates.push(diff_gate(None, (compared, diffs), tick));
    ev.gates.extend(per_journey);
    ev
}
