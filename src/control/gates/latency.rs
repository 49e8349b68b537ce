//! Latency per journey: V2's P95 against the phase's (or the journey's own)
//! limit, and V2's median against V1's.

use crate::config::JourneyLimits;
use crate::telemetry::histogram::Histogram;

use super::evidence::Counts;
use super::judge::{Bound, Evidence, Measure};
use super::significance::{binomial_exceeds, mann_whitney};
use super::{Gate, GateContext, GateResult, JourneyWindow};

/// The P95 limit of a journey: its own `p95_ms`, else the phase's.
pub(super) fn p95_limit(ctx: &GateContext<'_>, limits: &JourneyLimits) -> f64 {
    limits.p95_ms.unwrap_or(ctx.phase_p95_ms)
}

/// V2's live P95 of one journey.
pub(super) fn p95(ctx: &GateContext<'_>, j: &JourneyWindow<'_>) -> GateResult {
    let threshold = p95_limit(ctx, j.limits);
    p95_of(
        ctx,
        j.name,
        "V2 P95 ms",
        &j.c2.latency,
        &j.t2.latency,
        j.v2.requests,
        threshold,
    )
}

/// The tick's samples of `tick` above `ms`, against the share `p0` the
/// gate allows above it.
fn slower_than(tick: &Histogram, ms: f64, p0: f64) -> Counts {
    let (bad, bad_inside) = tick.count_above(ms * 1000.0);
    Counts::Share {
        n: tick.count(),
        bad,
        bad_inside,
        p0,
    }
}

/// A P95 gate over one latency histogram (live requests or shadow mirrors).
/// The evidence: more than 5 % of the samples slower than the threshold
/// (significantly in the window, or sequentially over the tick's samples in
/// `tick`).
pub(super) fn p95_of(
    ctx: &GateContext<'_>,
    journey: &str,
    what: &str,
    latency: &Histogram,
    tick: &Histogram,
    samples: u64,
    threshold: f64,
) -> GateResult {
    let n = latency.count();
    let slower = n - latency.count_le(threshold * 1000.0);
    let counted = format!("V2 samples slower than {} ms", super::judge::fmt(threshold));
    ctx.gate(Measure {
        gate: Gate::LatencyP95,
        journey: Some(journey),
        bound: Bound::Max,
        what,
        value: latency.quantile_us(0.95).map(|us| us / 1000.0),
        threshold,
        samples,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: None,
        evidence: Evidence::Test(binomial_exceeds(slower, n, 0.05)),
        counted: &counted,
        counts: Some(slower_than(tick, threshold, 0.05)),
    })
}

/// The V1 quantile `q` (ms) that a tick's V2 samples are counted against:
/// V1's own samples of the same tick when they are enough to place it, so
/// that both variants see the same host, load and minute (a busy minute
/// slows both; against the window's V1 it would look like V2's fault), else
/// V1's over the window.
fn v1_reference(j: &JourneyWindow<'_>, q: f64, window_ms: Option<f64>) -> Option<f64> {
    // 20 samples beyond the quantile: a P95 from 400, a median from 40.
    let enough = (20.0 / (1.0 - q)).ceil() as u64;
    let tick = &j.t1.latency;
    if tick.count() >= enough {
        tick.quantile_us(q).map(|us| us / 1000.0)
    } else {
        window_ms
    }
}

/// V1's latency `ms` plus `latency_vs_control_max` and the slack; 0 (no
/// threshold, no counts) without a V1 figure.
fn with_margin(g: &crate::config::GatesConfig, ms: Option<f64>) -> f64 {
    ms.map_or(0.0, |m| {
        m * (1.0 + g.latency_vs_control_max) + g.latency_vs_control_slack_ms
    })
}

/// V2's tail against V1's: at most 5 % of V2's samples slower than V1's
/// P95 plus `latency_vs_control_max` and the slack. Only under the
/// sequential judge (the window judge keeps the gates it always had), and
/// only while V1 takes traffic. A V2 whose slowest few percent got slower
/// moves neither its median nor, while the tail is near 5 % of requests,
/// the share above an absolute limit by much; against V1's own tail it
/// stands out.
pub(super) fn tail_vs_control(ctx: &GateContext<'_>, j: &JourneyWindow<'_>) -> Option<GateResult> {
    let g = &ctx.cfg.gates;
    if !ctx.comparative || ctx.sequential.is_none() || !g.tail_vs_control {
        return None;
    }
    let threshold = with_margin(g, j.v1.p95_ms);
    let counted = format!(
        "V2 requests slower than V1's P95 + {:.0} % ({} ms)",
        g.latency_vs_control_max * 100.0,
        super::judge::fmt(threshold)
    );
    let n = j.c2.latency.count();
    let slower = n - j.c2.latency.count_le(threshold * 1000.0);
    let tick_threshold = with_margin(g, v1_reference(j, 0.95, j.v1.p95_ms));
    Some(ctx.gate(Measure {
        gate: Gate::TailVsControl,
        journey: Some(j.name),
        bound: Bound::Max,
        what: "V2 P95 ms vs V1",
        value: j.v2.p95_ms,
        threshold,
        samples: j.v2.requests,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: Some(j.v1.requests),
        evidence: Evidence::Test(binomial_exceeds(slower, n, 0.05)),
        counted: &counted,
        counts: (tick_threshold > 0.0).then(|| slower_than(&j.t2.latency, tick_threshold, 0.05)),
    }))
}

/// V2's median against V1's plus `latency_vs_control_max` and the slack;
/// evidence from Mann-Whitney U on the two latency histograms. Only while V1
/// takes traffic.
pub(super) fn vs_control(ctx: &GateContext<'_>, j: &JourneyWindow<'_>) -> Option<GateResult> {
    if !ctx.comparative {
        return None;
    }
    let g = &ctx.cfg.gates;
    let threshold = with_margin(g, j.v1.p50_ms);
    let tick_threshold = with_margin(g, v1_reference(j, 0.5, j.v1.p50_ms));
    let counted = format!(
        "V2 requests slower than V1's median + {:.0} % ({} ms)",
        g.latency_vs_control_max * 100.0,
        super::judge::fmt(threshold)
    );
    Some(ctx.gate(Measure {
        gate: Gate::LatencyVsControl,
        journey: Some(j.name),
        bound: Bound::Max,
        what: "V2 P50 ms vs V1",
        value: j.v2.p50_ms,
        threshold,
        samples: j.v2.requests,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: Some(j.v1.requests),
        evidence: Evidence::Test(
            mann_whitney(&j.c1.latency.counts, &j.c2.latency.counts).map(|m| m.test),
        ),
        counted: &counted,
        // V2's median is at most the threshold when at most half of its
        // samples are slower than it.
        counts: (tick_threshold > 0.0).then(|| slower_than(&j.t2.latency, tick_threshold, 0.5)),
    }))
}
