//! Success shares: every payment journey (`payment_success`, at least
//! `rollout.payment_success_min` unless the journey sets its own) and any
//! journey with its own `success_min` (`success_rate`).

use crate::routing::journeys::JourneyKind;

use super::evidence::Counts;
use super::judge::{Bound, Evidence, Measure};
use super::significance::binomial_exceeds;
use super::VariantKpi;
use super::{Gate, GateContext, GateResult, JourneyWindow};

/// The evidence: V2's failed share significantly above the `1 - min` the
/// threshold allows.
pub(super) fn success(ctx: &GateContext<'_>, j: &JourneyWindow<'_>) -> Option<GateResult> {
    let cfg = &ctx.cfg.rollout;
    let (gate, min) = match j.kind {
        JourneyKind::Payment => (
            Gate::PaymentSuccess,
            j.limits.success_min.unwrap_or(cfg.payment_success_min),
        ),
        JourneyKind::Normal => (Gate::SuccessRate, j.limits.success_min?),
    };
    let v2 = j.v2;
    Some(ctx.gate(Measure {
        gate,
        journey: Some(j.name),
        bound: Bound::Min,
        what: "V2 success",
        value: v2.error_rate.map(|e| 1.0 - e),
        threshold: min,
        samples: v2.requests,
        min_samples: cfg.min_samples,
        control_samples: None,
        evidence: Evidence::Test(binomial_exceeds(v2.server_errors, v2.requests, 1.0 - min)),
        counted: "V2 failed requests",
        counts: Some({
            let t2 = VariantKpi::of(j.t2);
            Counts::share(t2.requests, t2.server_errors, 1.0 - min)
        }),
    }))
}
