//! Success shares: every payment journey (`payment_success`, at least
//! `rollout.payment_success_min` unless the journey sets its own) and any
//! journey with its own `success_min` or `success_vs_v1` (`success_rate`).
//!
//! `success_min` is absolute; `success_vs_v1` holds V2's failed share to
//! V1's in the same window plus that margin ("no increase above
//! baseline": webhook deliveries fail for reasons outside V2 too, and only
//! what V2 adds is its fault). With both, the stricter bound is the gate,
//! and the reason says which. The comparison is the 5xx rate's
//! ([`super::requests::failure_limit`]), on the journey's requests.

use crate::routing::journeys::JourneyKind;

use super::judge::{fmt, Bound, Measure};
use super::requests::failure_limit;
use super::{Gate, GateContext, GateResult, JourneyWindow, VariantKpi};

/// The evidence: V2's failed share significantly above the `1 - min` the
/// absolute bound allows, or significantly above V1's.
pub(super) fn success(ctx: &GateContext<'_>, j: &JourneyWindow<'_>) -> Option<GateResult> {
    let cfg = &ctx.cfg.rollout;
    let (gate, min) = match j.kind {
        JourneyKind::Payment => (
            Gate::PaymentSuccess,
            Some(j.limits.success_min.unwrap_or(cfg.payment_success_min)),
        ),
        JourneyKind::Normal => (Gate::SuccessRate, j.limits.success_min),
    };
    let margin = j.limits.success_vs_v1;
    // A journey with only a V1 margin has nothing to judge at 100 %.
    let limit = failure_limit(ctx, j.v1, j.v2, min.map(|m| 1.0 - m), margin)?;
    let v2 = j.v2;
    let mut g = ctx.gate(Measure {
        gate,
        journey: Some(j.name),
        bound: Bound::Min,
        what: "V2 success",
        value: v2.error_rate.map(|e| 1.0 - e),
        threshold: 1.0 - limit.threshold,
        samples: v2.requests,
        min_samples: cfg.min_samples,
        control_samples: limit.control_samples,
        evidence: limit.evidence,
        counted: "V2 failed requests",
        counts: Some(limit.counts(&VariantKpi::of(j.t2))),
    });
    if let Some(m) = margin {
        let vs_v1 = format!("V1 failures {} + margin {}", fmt(limit.v1_rate), fmt(m));
        let absolute = min.map(|m| format!("success_min {}", fmt(m)));
        g.reason.push_str(&match (limit.by_v1, absolute) {
            (true, Some(a)) => format!(" (bound: {vs_v1}, stricter than {a})"),
            (true, None) => format!(" (bound: {vs_v1})"),
            (false, Some(a)) if limit.control_samples.is_some() => {
                format!(" (bound: {a}, stricter than {vs_v1})")
            }
            (false, Some(a)) => format!(" (bound: {a}; no V1 traffic to compare with)"),
            // Without a minimum the bound is V1's whenever there is one.
            (false, None) => String::new(),
        });
    }
    Some(g)
}
