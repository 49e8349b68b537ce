//! V2 at its reserved capacity: requests shed on the request path.

use crate::routing::Variant;
use crate::telemetry::Window;

use super::{Evaluation, Gate, GateContext, GateResult, GateStatus};

/// Concurrency: V2's in-flight requests are capped at the reserved capacity
/// on the request path; the gate is YELLOW while that shed requests in the
/// window (the canary is at its limit: hold, do not grow it). Never RED:
/// shedding protects V2, it is not a failure of V2.
pub(super) fn shed(window: &Window, ev: &Evaluation, ctx: &GateContext<'_>) -> Option<GateResult> {
    let cap = ctx.cfg.upstreams.reserved_capacity;
    if cap == 0 {
        return None;
    }
    let shed = window.shed[Variant::V2 as usize];
    let inflight = window.variant_total(Variant::V2).inflight.max(0);
    let (status, reason) = if shed > 0 {
        (
            GateStatus::Yellow,
            format!(
                "V2 at its reserved capacity of {cap}: {shed} requests shed with 503 in the window"
            ),
        )
    } else {
        (
            GateStatus::Green,
            format!("V2 in flight {inflight} <= reserved capacity {cap}, nothing shed"),
        )
    };
    Some(GateResult {
        name: Gate::Concurrency,
        journey: None,
        status,
        value: Some(inflight as f64),
        threshold: cap as f64,
        samples: ev.v2.requests + shed,
        reason,
        p_value: None,
        recovery: None,
        evidence: None,
    })
}
