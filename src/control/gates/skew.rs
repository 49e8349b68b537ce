//! Split skew: whether users reach V2 in the share the weights promise.

use crate::telemetry::Window;

use super::judge::{Bound, Evidence, Measure};
use super::significance::share_vs_expected;
use super::{Gate, GateContext, GateResult};

/// Split skew: the observed V2 share of users against the share the weights
/// in force should give, per region when a region header is configured. The
/// value is the relative deviation |observed - expected| / expected; evidence
/// is a two-sided binomial test of the share with the distinct users of an
/// average interval as sample size (summing intervals would count returning
/// users again and again, and a small population's own split, e.g. 47 of 800
/// users in the first 5 % of buckets, would look significant).
pub(super) fn split_skew(window: &Window, ctx: &GateContext<'_>, out: &mut Vec<GateResult>) {
    if !(ctx.weight_v2 > 0.0 && ctx.weight_v2 < 100.0) {
        return;
    }
    let labels = &ctx.cfg.routing.region_labels;
    let per_region = ctx.cfg.routing.region_header.is_some();
    for (i, share) in window.users.iter().enumerate() {
        let n = share.total();
        if n == 0 {
            continue;
        }
        let expected = share.expected_v2 / n as f64;
        if expected <= 0.0 {
            continue;
        }
        let observed = share.v2 as f64 / n as f64;
        let what = format!("V2 user share {observed:.4} vs {expected:.4}, relative deviation");
        let label = labels.get(i).map(String::as_str);
        let per_interval = n / share.intervals.max(1);
        let x = (observed * per_interval as f64).round() as u64;
        out.push(ctx.gate(Measure {
            gate: Gate::SplitSkew,
            journey: if per_region { label } else { None },
            bound: Bound::Max,
            what: &what,
            value: Some((observed - expected).abs() / expected),
            threshold: ctx.cfg.gates.split_skew_tolerance,
            samples: per_interval,
            min_samples: ctx.cfg.rollout.min_samples,
            control_samples: None,
            evidence: Evidence::Test(share_vs_expected(x, per_interval, expected)),
            counted: "",
            counts: None,
        }));
    }
}
