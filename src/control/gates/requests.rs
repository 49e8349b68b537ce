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

/// 5xx rate: an absolute ceiling, and no worse than V1 beyond the margin.
/// Evidence is the stronger of the binomial test against the ceiling and
/// the two-proportion test against V1 (each one's alternative implies a
/// breach of the combined threshold).
pub(super) fn error_rate(ev: &Evaluation, ctx: &GateContext<'_>) -> GateResult {
    let cfg = &ctx.cfg.rollout;
    let comparative = ctx.comparative && ev.v1.requests > 0;
    let v1_rate = ev.v1.error_rate.unwrap_or(0.0);
    let threshold = if comparative {
        cfg.error_rate_max.min(v1_rate + cfg.error_rate_margin)
    } else {
        cfg.error_rate_max
    };
    let (v1, v2) = (&ev.v1, &ev.v2);
    let ceiling = binomial_exceeds(v2.server_errors, v2.requests, cfg.error_rate_max);
    let vs_v1 = comparative
        .then(|| {
            two_proportion(
                v1.server_errors,
                v1.requests,
                v2.server_errors,
                v2.requests,
                Worse::Higher,
            )
        })
        .flatten();
    let mut g = ctx.gate(Measure {
        gate: Gate::ErrorRate,
        journey: None,
        bound: Bound::Max,
        what: "V2 5xx rate",
        value: v2.error_rate,
        threshold,
        samples: v2.requests,
        min_samples: cfg.min_samples,
        control_samples: comparative.then_some(v1.requests),
        evidence: Evidence::either(ceiling, vs_v1),
        counted: "V2 5xx",
        counts: Some({
            let t2 = VariantKpi::of(&ctx.tick.variant_total(Variant::V2));
            Counts::share(t2.requests, t2.server_errors, threshold)
        }),
    });
    if g.status != GateStatus::Green && threshold < cfg.error_rate_max {
        g.reason.push_str(&format!(
            " (V1 {} + margin {})",
            fmt(v1_rate),
            fmt(cfg.error_rate_margin)
        ));
    }
    g
}
