//! The 5xx rate of V2, over every journey.
//!
//! "Server errors" are every 5xx answer plus every answer whose head was not
//! a 5xx but whose body then failed: the upstream reset mid-body, or sent
//! nothing for `upstreams.body_idle_timeout` (`CellCounts::server_errors`).
//! An upstream that answers `200` and dies has not served the request, and
//! counting only heads would let a canary that breaks every body look
//! healthy. A request still counts once (a 5xx whose body also broke is one
//! error), so the rate stays a share of requests. A client's own failures
//! (a stalled or abandoned request body: `408`/`400`) are 4xx and never
//! count here.

use super::evidence::Counts;
use super::judge::{fmt, Bound, Evidence, Measure};
use super::significance::{binomial_exceeds, two_proportion, Worse};
use super::{Evaluation, Gate, GateContext, GateResult, GateStatus, VariantKpi};
use crate::routing::Variant;

/// What a failure share of V2 is held to: an absolute ceiling, and while V1
/// takes traffic, V1's share in the same window plus a margin. The
/// threshold is the stricter of the two; the evidence is the stronger of
/// the binomial test against the ceiling and the two-proportion test
/// against V1 (each one's alternative implies a breach of the combined
/// threshold). The 5xx rate and the per-journey success shares share it, so
/// "no worse than V1" means the same everywhere.
pub(super) struct FailureLimit {
    /// The failure share V2 may have.
    pub threshold: f64,
    /// V1's share plus the margin is the stricter bound.
    pub by_v1: bool,
    /// V1's failure share (0 without V1 traffic).
    pub v1_rate: f64,
    /// V1's requests, when V1 is compared with.
    pub control_samples: Option<u64>,
    pub evidence: Evidence,
}

impl FailureLimit {
    /// What the sequential judge counts this tick: V2's failures (`tick`)
    /// against the combined threshold, V1's window share taken as known.
    pub fn counts(&self, tick: &VariantKpi) -> Counts {
        Counts::share(tick.requests, tick.server_errors, self.threshold)
    }
}

/// The limit on V2's failures (`server_errors` per request) from a ceiling
/// and a margin over V1; `None` when neither applies (no ceiling, and no V1
/// to compare with).
pub(super) fn failure_limit(
    ctx: &GateContext<'_>,
    v1: &VariantKpi,
    v2: &VariantKpi,
    ceiling: Option<f64>,
    margin: Option<f64>,
) -> Option<FailureLimit> {
    let margin = margin.filter(|_| ctx.comparative && v1.requests > 0);
    let v1_rate = v1.error_rate.unwrap_or(0.0);
    let vs_v1 = margin.map(|m| v1_rate + m);
    let (threshold, by_v1) = match (ceiling, vs_v1) {
        (Some(c), Some(v)) => (c.min(v), v < c),
        (Some(c), None) => (c, false),
        (None, Some(v)) => (v, true),
        (None, None) => return None,
    };
    let above_ceiling = ceiling.and_then(|c| binomial_exceeds(v2.server_errors, v2.requests, c));
    let above_v1 = margin.and_then(|_| {
        two_proportion(
            v1.server_errors,
            v1.requests,
            v2.server_errors,
            v2.requests,
            Worse::Higher,
        )
    });
    Some(FailureLimit {
        threshold,
        by_v1,
        v1_rate,
        control_samples: margin.map(|_| v1.requests),
        evidence: Evidence::either(above_ceiling, above_v1),
    })
}

/// 5xx rate: an absolute ceiling, and no worse than V1 beyond the margin.
pub(super) fn error_rate(ev: &Evaluation, ctx: &GateContext<'_>) -> GateResult {
    let cfg = &ctx.cfg.rollout;
    let (v1, v2) = (&ev.v1, &ev.v2);
    let limit = failure_limit(
        ctx,
        v1,
        v2,
        Some(cfg.error_rate_max),
        Some(cfg.error_rate_margin),
    )
    .expect("a ceiling always applies");
    let mut g = ctx.gate(Measure {
        gate: Gate::ErrorRate,
        journey: None,
        bound: Bound::Max,
        what: "V2 5xx rate",
        value: v2.error_rate,
        threshold: limit.threshold,
        samples: v2.requests,
        min_samples: cfg.min_samples,
        control_samples: limit.control_samples,
        evidence: limit.evidence,
        counted: "V2 5xx",
        counts: Some(limit.counts(&VariantKpi::of(&ctx.tick.variant_total(Variant::V2)))),
    });
    if g.status != GateStatus::Green && limit.by_v1 {
        g.reason.push_str(&format!(
            " (V1 {} + margin {})",
            fmt(limit.v1_rate),
            fmt(cfg.error_rate_margin)
        ));
    }
    g
}
