//! Gate evaluation: a pure function of one window of counts, the config and
//! the gates' memory of the previous tick (their statuses and cooldown clocks).
//!
//! Each gate is GREEN / YELLOW / RED with its value, threshold and sample
//! count. Too few samples is YELLOW "insufficient data", never GREEN.
//!
//! ## Two judges
//!
//! Every family measures its gate once per tick into a `judge::Measure`:
//! the window's value and threshold (what the status page shows), the
//! window test, and `counts`, what this tick adds (`ctx.tick`). Under
//! `[gates] method = "sequential"` (the default) tested gates are judged by
//! `sequential.rs` on evidence accumulated over the rollout: inside (GREEN),
//! breach (RED) or unknown (YELLOW), anytime-valid, so judging every tick
//! does not inflate the false-rollback rate. Under `method = "window"`,
//! and for gates with no sampling question under either, the window judge
//! below decides. The window judge is kept so both can be compared (replay,
//! the judgment simulation).
//!
//! ## The window judge: only a significant breach counts
//!
//! Absolute gates compare V2 with a fixed threshold (`latency_p95`,
//! `payment_success`, `success_rate`, `cache_hit`, the `error_rate`
//! ceiling). Comparative gates compare V2 with V1 in the same window
//! (`latency_vs_control`, the `error_rate` margin over V1, `js_errors`,
//! `funnel`, `timing`): their threshold is derived from V1's value, and both
//! variants need `min_samples`.
//!
//! A breach counts only when a one-sided test of "V2 is worse than allowed"
//! is significant at `gates.alpha` (`significance.rs`):
//! Mann-Whitney U on latency/timing buckets against V1, two-proportion z on
//! the 5xx rate and on the shares of users (JS errors, beacon funnels)
//! against V1, the log-ratio test for funnels with a journey step, and for
//! absolute thresholds a binomial test of the bad share against the share the
//! threshold allows (5xx above the ceiling, failed payments above 1 - 99.5 %,
//! requests slower than the P95 threshold above 5 %). So a gate is:
//!
//! - YELLOW "insufficient data" below `min_samples` (V2, and V1 for
//!   comparative gates), never GREEN;
//! - RED only when the value is beyond the threshold **and** significant;
//! - GREEN when the point estimate is beyond the threshold but the test finds
//!   no evidence (small samples): with a 5 % canary, a dozen gates and
//!   thresholds within 3-10 % of V1, the noise of a point estimate crosses
//!   some threshold almost every tick, and holding on noise would hold
//!   forever. Without a test, 2 errors in 200 requests of a canary whose
//!   true rate is 0.3 % would turn a 0.5 % ceiling RED in about 12 % of
//!   windows.
//!
//! Gates without a sampling question (`error_budget`: a running total;
//! `concurrency`) judge the value alone. The request-path and tick triggers
//! (`p95_hard`, `payment_failures`) stay absolute on purpose: they are the
//! emergency brake. At 100 % there is no control to compare with, so
//! comparative gates are not evaluated (`GateContext::comparative`).
//!
//! ## Zones, bands and cooldown: why a gate near its threshold cannot flap
//!
//! With threshold T, promote band `pb` and rollback band `rb` (both 5 % by
//! default), a value falls in one of four zones (for "at most" gates; "at
//! least" gates mirror them with the narrower of a share of T and a share of
//! 1 - T, so that 99.5 % does not need an impossible 104.5 % to recover):
//!
//! ```text
//!   Clear   v <= T(1-pb)        Inside  T(1-pb) < v <= T
//!   Near    T < v <= T(1+rb)    Beyond  v > T(1+rb)
//! ```
//!
//! "sig" = the breach is significant. A gate enters *recovery* when it turns
//! RED or YELLOW on a breach, and leaves it only through the cooldown:
//!
//! | state \ zone     | Clear                    | Inside     | Near                  | Beyond     |
//! |------------------|--------------------------|------------|-----------------------|------------|
//! | not recovering   | GREEN                    | GREEN      | sig: YELLOW, else GREEN | sig: RED, else GREEN |
//! | recovering       | GREEN after the cooldown | YELLOW     | was RED and sig: RED, else YELLOW | sig: RED, else YELLOW |
//!
//! So a GREEN gate needs a significant breach beyond the rollback band to
//! turn RED (inside the band it only holds), a RED gate stays RED until it is
//! back inside its threshold or its breach is no longer significant (the RED
//! timer that leads to `gate_red_sustained` is not reset by a value dancing
//! on the edge of the band), and a gate that breached must come back inside
//! the promote band and *stay* there for `gates.cooldown` before it is GREEN
//! again. A value oscillating around T therefore gives a steady YELLOW
//! (HOLD), never GREEN/RED alternation; on top of that the controller needs
//! every gate GREEN for the whole phase hold before any step-up.

//!
//! ## Where things are
//!
//! This file holds the public types and [`evaluate`], which calls the
//! families in a fixed order (the order of `Evaluation::gates`). `judge.rs`
//! turns what a family measured into a verdict (the zones and the table
//! above, in one match); each family measures in its own file: `requests.rs`
//! (5xx rate), `latency.rs`, `payments.rs` (success shares), `cache.rs`,
//! `beacons.rs` (JS errors, funnels, timings), `budget.rs` (error budget),
//! `concurrency.rs`, `skew.rs` (split skew), `shadow.rs` (the mirrors of
//! a shadow phase) and `revenue.rs` (revenue per user). `key.rs` names a
//! gate, `kpi.rs` holds the per-variant figures, `significance.rs` the tests.

mod beacons;
mod budget;
mod cache;
mod concurrency;
pub(crate) mod drift;
mod evidence;
#[cfg(test)]
mod evidence_tests;
mod judge;
mod key;
mod kpi;
mod latency;
mod payments;
mod requests;
pub(crate) mod revenue;
mod sequential;
#[cfg(test)]
mod sequential_tests;
mod shadow;
pub(crate) mod significance;
mod skew;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_seed;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, JourneyLimits};
use crate::routing::journeys::{JourneyId, JourneyKind};
use crate::routing::Variant;
use crate::telemetry::{CellCounts, Window};

pub use evidence::Harm;
pub use key::{Gate, GateKey, UnknownGate};
pub use kpi::{JourneyKpi, VariantKpi};
pub use revenue::Revenue;
pub use sequential::{EvidenceMemory, EvidenceView, GateMemory, Rates, Sequential, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GateStatus {
    Green,
    Yellow,
    Red,
}

impl GateStatus {
    pub fn word(self) -> &'static str {
        match self {
            GateStatus::Green => "GREEN",
            GateStatus::Yellow => "YELLOW",
            GateStatus::Red => "RED",
        }
    }

    /// Value of the `rollgate_gate_status` gauge.
    pub fn metric(self) -> f64 {
        self as u8 as f64
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// The gate family; serialised as its name (`latency_p95`).
    pub name: Gate,
    pub journey: Option<String>,
    pub status: GateStatus,
    pub value: Option<f64>,
    pub threshold: f64,
    pub samples: u64,
    pub reason: String,
    /// Comparative gates: one-sided p-value of "V2 is worse than V1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Set while the gate recovers from a breach (RED, or a significant
    /// breach inside the rollback band): it is GREEN again only after its
    /// value stayed inside the promote band for the cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// The sequential judge's evidence (`method = "sequential"`, tested gates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<EvidenceView>>,
}

/// The memory of a gate that recovers from a breach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Since when the value is back inside the promote band (cooldown clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_since: Option<DateTime<Utc>>,
}

impl GateResult {
    /// Stable key for the per-gate memory (hysteresis, RED timers).
    pub fn key(&self) -> GateKey {
        GateKey::new(self.name, self.journey.as_deref())
    }
}

/// Everything one tick learned from its window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub window_ms: u64,
    pub gates: Vec<GateResult>,
    pub journeys: Vec<JourneyKpi>,
    pub v1: VariantKpi,
    pub v2: VariantKpi,
    /// V1 against the last golden baseline (`drift.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<drift::Drift>,
}

impl Evaluation {
    pub fn all_green(&self) -> bool {
        self.gates.iter().all(|g| g.status == GateStatus::Green)
    }

    /// Every gate is GREEN or a sequential gate still gathering evidence
    /// (YELLOW, verdict unknown): nothing breached, nothing off its mark.
    pub fn gathering(&self) -> bool {
        self.gates.iter().all(|g| {
            g.status == GateStatus::Green
                || g.status == GateStatus::Yellow
                    && g.evidence
                        .as_ref()
                        .is_some_and(|e| e.verdict == Verdict::Unknown)
        })
    }

    /// The worst gate, RED before YELLOW; `None` when all are GREEN.
    pub fn worst(&self) -> Option<&GateResult> {
        self.gates
            .iter()
            .filter(|g| g.status != GateStatus::Green)
            .max_by_key(|g| g.status)
    }

    /// Journeys whose V2 P95 is above `limit_ms` with enough samples.
    pub fn p95_breaches(&self, limit_ms: f64, min_samples: u64) -> Vec<(&str, f64)> {
        self.journeys
            .iter()
            .filter(|j| j.v2.requests >= min_samples)
            .filter_map(|j| {
                j.v2.p95_ms
                    .filter(|p| *p > limit_ms)
                    .map(|p| (j.journey.as_str(), p))
            })
            .collect()
    }
}

/// Inputs that do not change within a tick.
pub struct GateContext<'a> {
    pub cfg: &'a Config,
    /// The current phase's P95 gate in ms.
    pub phase_p95_ms: f64,
    /// V1 takes traffic (V2 below 100 %): comparative gates are evaluated.
    pub comparative: bool,
    /// V2's current weight in percent (split skew is judged while 0 < w < 100).
    pub weight_v2: f64,
    /// V2's 5xx responses since the rollout started (error budget).
    pub v2_bad_since_start: u64,
    /// A shadow phase: V2 takes no live traffic, its mirrors are judged.
    pub shadow: bool,
    /// Time of this evaluation (cooldown clocks).
    pub now: DateTime<Utc>,
    /// Gate statuses of the previous tick, by [`GateResult::key`].
    pub previous: &'a BTreeMap<GateKey, GateStatus>,
    /// Gates recovering from a breach at the previous tick, by [`GateResult::key`].
    pub recovery: &'a BTreeMap<GateKey, Recovery>,
    /// The counts not yet folded into the sequential evidence (empty on a
    /// second look within a tick): what tested gates count.
    pub tick: &'a Window,
    /// The part of the window the sequential evidence has already seen:
    /// gates that count distinct users (which do not add up over intervals)
    /// count what the window gained since, `window - seen`.
    pub seen: &'a Window,
    /// `Some` under `method = "sequential"`.
    pub sequential: Option<Sequential<'a>>,
}

impl GateContext<'_> {
    /// The per-journey limits of `id` (none configured: the defaults).
    fn limits(&self, id: JourneyId) -> JourneyLimits {
        self.cfg
            .journey_limits
            .get(id.index())
            .cloned()
            .unwrap_or_default()
    }
}

/// One journey over the window, as the per-journey families read it.
struct JourneyWindow<'a> {
    name: &'a str,
    kind: JourneyKind,
    /// V1's and V2's counts.
    c1: &'a CellCounts,
    c2: &'a CellCounts,
    /// V2's counts of the tick (sequential evidence).
    t2: &'a CellCounts,
    /// V1's counts of the tick (V1's own latency in the same tick).
    t1: &'a CellCounts,
    v1: &'a VariantKpi,
    v2: &'a VariantKpi,
    limits: &'a JourneyLimits,
}

/// Evaluates every gate over one window.
pub fn evaluate(window: &Window, ctx: &GateContext<'_>) -> Evaluation {
    let mut ev = Evaluation {
        window_ms: window.duration_ms,
        v1: VariantKpi::of(&window.variant_total(Variant::V1)),
        v2: VariantKpi::of(&window.variant_total(Variant::V2)),
        ..Default::default()
    };
    if ctx.shadow {
        return shadow::evaluate(window, ctx, ev);
    }
    revenue::figures(window, ctx.cfg, &mut ev);
    let journeys = &ctx.cfg.journeys;
    for id in journeys.ids() {
        let (c1, c2) = (window.cell(id, Variant::V1), window.cell(id, Variant::V2));
        let (t1, t2) = (
            ctx.tick.cell(id, Variant::V1),
            ctx.tick.cell(id, Variant::V2),
        );
        let (v1, v2) = (VariantKpi::of(c1), VariantKpi::of(c2));
        let limits = ctx.limits(id);
        let j = JourneyWindow {
            name: journeys.name(id),
            kind: journeys.kind(id),
            c1,
            c2,
            t2,
            t1,
            v1: &v1,
            v2: &v2,
            limits: &limits,
        };
        // A journey nobody used in the window has nothing to judge; one with
        // some traffic but too little on V2 is YELLOW (insufficient data).
        if v1.requests + v2.requests > 0 {
            ev.gates.push(latency::p95(ctx, &j));
            ev.gates.extend(latency::vs_control(ctx, &j));
            ev.gates.extend(latency::tail_vs_control(ctx, &j));
            ev.gates.extend(payments::success(ctx, &j));
            ev.gates.extend(cache::hit_ratio(ctx, &j));
        }
        ev.journeys.push(JourneyKpi {
            journey: j.name.to_string(),
            kind: j.kind,
            v1,
            v2,
        });
    }
    ev.gates.insert(0, requests::error_rate(&ev, ctx));
    if ctx.comparative {
        ev.gates.extend(beacons::js_errors(window, ctx));
        for f in &ctx.cfg.gates.funnels {
            ev.gates.push(beacons::funnel(window, ctx, f));
        }
        for t in &ctx.cfg.gates.timings {
            ev.gates.push(beacons::timing(window, ctx, t));
        }
        ev.gates.extend(revenue::gate(window, &ev, ctx));
    }
    ev.gates.extend(budget::error_budget(window, &ev, ctx));
    ev.gates.extend(concurrency::shed(window, &ev, ctx));
    skew::split_skew(window, ctx, &mut ev.gates);
    ev
}
