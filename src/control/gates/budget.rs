//! The error budget: a running total of V2's 5xx responses against the
//! SLO's monthly budget.

use crate::telemetry::Window;

use super::judge::{Bound, Evidence, Measure};
use super::{Evaluation, Gate, GateContext, GateResult};

/// Error budget: the share of the SLO's monthly error budget that V2 has
/// consumed since the rollout started.
///
/// ```text
/// budget  = (1 - slo_target) * R * slo_period   bad requests the SLO allows per period,
///           R = (V1 + V2 requests in the window) / window length (current total rate)
/// spent   = V2 5xx responses since the rollout started (counted every tick)
/// value   = spent / budget                      GREEN while <= error_budget_max (5 %)
/// ```
///
/// Example: SLO 99.9 %, 100 req/s in total, 30 days: budget = 0.001 * 100 *
/// 2,592,000 = 259,200 bad requests; 5 % of it is 12,960 V2 errors. The value
/// is a running total, not a sample estimate, so no test applies.
pub(super) fn error_budget(
    window: &Window,
    ev: &Evaluation,
    ctx: &GateContext<'_>,
) -> Option<GateResult> {
    let slo = ctx.cfg.gates.slo?;
    let total = ev.v1.requests + ev.v2.requests;
    let secs = window.duration_ms as f64 / 1000.0;
    let budget = (1.0 - slo.target) * (total as f64 / secs) * slo.period.as_secs_f64();
    let value = (secs > 0.0 && budget > 0.0).then(|| ctx.v2_bad_since_start as f64 / budget);
    Some(ctx.gate(Measure {
        gate: Gate::ErrorBudget,
        journey: None,
        bound: Bound::Max,
        what: "V2 share of the monthly error budget",
        value,
        threshold: ctx.cfg.gates.error_budget_max,
        samples: total,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: None,
        evidence: Evidence::Value,
        counted: "",
        counts: None,
    }))
}
