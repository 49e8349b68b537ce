//! The cache hit ratio of read-heavy journeys: a V2 that stops answering from
//! its cache moves the load onto the backends long before latency shows it.

use super::evidence::Counts;
use super::judge::{Bound, Evidence, Measure};
use super::significance::binomial_exceeds;
use super::{Gate, GateContext, GateResult, JourneyWindow};

/// At least `gates.cache_hit_min`; the evidence: V2's misses significantly
/// above the `1 - min` share the threshold allows.
pub(super) fn hit_ratio(ctx: &GateContext<'_>, j: &JourneyWindow<'_>) -> Option<GateResult> {
    if !j.limits.read_heavy {
        return None;
    }
    let min = ctx.cfg.gates.cache_hit_min;
    let v2 = j.v2;
    let misses = v2.requests.saturating_sub(v2.cache_hits);
    Some(ctx.gate(Measure {
        gate: Gate::CacheHit,
        journey: Some(j.name),
        bound: Bound::Min,
        what: "V2 cache hit ratio",
        value: (v2.requests > 0).then(|| v2.cache_hits as f64 / v2.requests as f64),
        threshold: min,
        samples: v2.requests,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: None,
        evidence: Evidence::Test(binomial_exceeds(misses, v2.requests, 1.0 - min)),
        counted: "V2 cache misses",
        counts: Some({
            let n = j.t2.requests();
            Counts::share(n, n.saturating_sub(j.t2.cache_hits), 1.0 - min)
        }),
    }))
}
