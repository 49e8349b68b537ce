//! Gate evaluation: a pure function of one window of counts, the config and
//! the gates' memory of the previous tick (their statuses and cooldown clocks).
//!
//! Each gate is GREEN / YELLOW / RED with its value, threshold and sample
//! count. Too few samples is YELLOW "insufficient data", never GREEN.
//!
//! ## Evidence: only a significant breach counts
//!
//! Absolute gates compare V2 with a fixed threshold (`latency_p95`,
//! `payment_success`, `success_rate`, `cache_hit`, the `error_rate`
//! ceiling). Comparative gates compare V2 with V1 in the same window
//! (`latency_vs_control`, the `error_rate` margin over V1, `js_errors`,
//! `funnel`, `timing`): their threshold is derived from V1's value, and both
//! variants need `min_samples`.
//!
//! A breach counts only when a one-sided test of "V2 is worse than allowed"
//! is significant at `gates.alpha` ([`crate::stats::significance`]):
//! Mann-Whitney U on latency/timing buckets against V1, two-proportion z on
//! the 5xx rate against V1, rate tests for JS errors and funnels, and for
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

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Funnel, GatesConfig, Step, Timing};
use crate::journeys::{JourneyId, JourneyKind};
use crate::routing::Variant;
use crate::stats::beacons::{BeaconCounts, BeaconType};
use crate::stats::significance::{
    binomial_exceeds, log_ratio, mann_whitney, poisson_rate, share_vs_expected, two_proportion,
    Worse, ZTest,
};
use crate::stats::{CellCounts, StatusClass, UpstreamErrorKind, Window};

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
    pub name: String,
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
    pub fn key(&self) -> String {
        gate_key(&self.name, self.journey.as_deref())
    }
}

fn gate_key(name: &str, journey: Option<&str>) -> String {
    match journey {
        Some(j) => format!("{name}/{j}"),
        None => name.to_string(),
    }
}

/// Latency and error figures of one variant over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantKpi {
    pub requests: u64,
    pub server_errors: u64,
    pub upstream_errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cache_hits: u64,
}

impl VariantKpi {
    pub fn of(c: &CellCounts) -> Self {
        let requests = c.requests();
        let q = |p| c.latency.quantile_us(p).map(|us| us / 1000.0);
        VariantKpi {
            requests,
            server_errors: c.server_errors(),
            upstream_errors: UpstreamErrorKind::ALL
                .iter()
                .map(|k| c.errors[*k as usize])
                .sum(),
            error_rate: (requests > 0).then(|| c.server_errors() as f64 / requests as f64),
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            cache_hits: c.cache_hits,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JourneyKpi {
    pub journey: String,
    pub kind: JourneyKind,
    pub v1: VariantKpi,
    pub v2: VariantKpi,
}

/// Everything one tick learned from its window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub window_ms: u64,
    pub gates: Vec<GateResult>,
    pub journeys: Vec<JourneyKpi>,
    pub v1: VariantKpi,
    pub v2: VariantKpi,
}

impl Evaluation {
    pub fn all_green(&self) -> bool {
        self.gates.iter().all(|g| g.status == GateStatus::Green)
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

/// Direction of a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// GREEN while value <= threshold; the bands scale the threshold.
    Max,
    /// GREEN while value >= threshold; the bands are the narrower of a share
    /// of the threshold and a share of its complement `1 - threshold` (for
    /// thresholds below 1), so 99.5 % recovers at 99.525 % (not at an
    /// impossible 104.5 %) and a 20 % conversion at 21 %.
    Min,
}

impl Bound {
    fn rel(self) -> &'static str {
        match self {
            Bound::Max => "<=",
            Bound::Min => ">=",
        }
    }
}

/// Where a value lies relative to its threshold and bands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// Inside the threshold by at least the promote band.
    Clear,
    /// Inside the threshold, not by the promote band.
    Inside,
    /// Beyond the threshold, within the rollback band.
    Near,
    /// Beyond the threshold by more than the rollback band.
    Beyond,
}

/// Classifies `value` against `threshold` with the configured bands.
pub fn zone(value: f64, threshold: f64, bound: Bound, g: &GatesConfig) -> Zone {
    let (pb, rb, t, v) = (g.promote_band, g.rollback_band, threshold, value);
    match bound {
        Bound::Max => {
            if v <= t * (1.0 - pb) {
                Zone::Clear
            } else if v <= t {
                Zone::Inside
            } else if v <= t * (1.0 + rb) {
                Zone::Near
            } else {
                Zone::Beyond
            }
        }
        Bound::Min => {
            let (clear, red) = if t < 1.0 {
                (
                    (t * (1.0 + pb)).min(1.0 - (1.0 - t) * (1.0 - pb)),
                    (t * (1.0 - rb)).max(1.0 - (1.0 - t) * (1.0 + rb)),
                )
            } else {
                (t * (1.0 + pb), t * (1.0 - rb))
            };
            if v >= clear {
                Zone::Clear
            } else if v >= t {
                Zone::Inside
            } else if v >= red {
                Zone::Near
            } else {
                Zone::Beyond
            }
        }
    }
}

/// What one gate measured, before judging it.
pub struct Measure<'a> {
    pub name: &'a str,
    pub journey: Option<&'a str>,
    pub bound: Bound,
    /// Describes the value in the reason text ("V2 P95 ms").
    pub what: &'a str,
    pub value: Option<f64>,
    pub threshold: f64,
    /// V2's samples.
    pub samples: u64,
    pub min_samples: u64,
    /// Comparative gates: V1's samples (fewer than `min_samples` is
    /// "insufficient data" as well).
    pub control_samples: Option<u64>,
    pub evidence: Evidence,
}

/// What it takes for a breach to count as RED.
#[derive(Clone, Copy, Debug)]
pub enum Evidence {
    /// The value alone (no test applies: budget, concurrency).
    Value,
    /// A one-sided test of "V2 is worse than allowed" (than V1, or than the
    /// threshold itself) must be significant; `None` counts as not significant.
    Test(Option<ZTest>),
}

impl Evidence {
    /// The stronger of two tests of the same gate (the smaller p-value).
    pub fn either(a: Option<ZTest>, b: Option<ZTest>) -> Evidence {
        Evidence::Test(match (a, b) {
            (Some(a), Some(b)) if b.p_value < a.p_value => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        })
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
    pub previous: &'a BTreeMap<String, GateStatus>,
    /// Gates recovering from a breach at the previous tick, by [`GateResult::key`].
    pub recovery: &'a BTreeMap<String, Recovery>,
}

impl GateContext<'_> {
    /// Judges one measure: insufficient data, zone, significance, memory.
    pub fn gate(&self, m: Measure<'_>) -> GateResult {
        let key = gate_key(m.name, m.journey);
        let mut g = GateResult {
            name: m.name.into(),
            journey: m.journey.map(String::from),
            status: GateStatus::Yellow,
            value: m.value,
            threshold: m.threshold,
            samples: m.samples,
            reason: String::new(),
            p_value: match m.evidence {
                Evidence::Test(t) => t.map(|t| t.p_value),
                Evidence::Value => None,
            },
            recovery: None,
        };
        let prev = self.previous.get(&key).copied();
        // A gate that was RED (state saved by an older version has no
        // recovery entry) or is recovering stays in recovery.
        let rec = self
            .recovery
            .get(&key)
            .copied()
            .or((prev == Some(GateStatus::Red)).then(Recovery::default));
        // Insufficient data keeps the recovery: no data is no recovery.
        g.recovery = rec;
        let min = m.min_samples;
        let v = match m.value {
            None => {
                g.reason = "insufficient data: no samples".into();
                return g;
            }
            Some(_) if m.samples < min => {
                g.reason = format!("insufficient data: {} of {min} samples", m.samples);
                return g;
            }
            Some(_) if m.control_samples.is_some_and(|n| n < min) => {
                let n = m.control_samples.unwrap_or(0);
                g.reason = format!("insufficient data: V1 {n} of {min} samples");
                return g;
            }
            Some(v) => v,
        };
        let z = zone(v, m.threshold, m.bound, &self.cfg.gates);
        let significant = match m.evidence {
            Evidence::Value => true,
            Evidence::Test(t) => t.is_some_and(|t| t.significant(self.cfg.gates.alpha)),
        };
        let (what, rel, t) = (m.what, m.bound.rel(), fmt(m.threshold));
        let p = g
            .p_value
            .map_or(String::new(), |p| format!(" (p = {})", fmt_p(p)));
        let alpha = self.cfg.gates.alpha;
        let breach = || format!("{what} {} breaches {rel} {t}{p}", fmt(v));
        let breaching = Some(Recovery::default());
        let was_red = prev == Some(GateStatus::Red);
        let (status, reason, recovery) = match (rec, z, significant) {
            (_, Zone::Beyond, true) => (GateStatus::Red, breach(), breaching),
            // RED stays RED inside the rollback band.
            (_, Zone::Near, true) if was_red => (GateStatus::Red, breach(), breaching),
            (_, Zone::Near, true) => (
                GateStatus::Yellow,
                format!(
                    "{what} {} beyond {rel} {t}{p}, inside the {:.0}% rollback band",
                    fmt(v),
                    self.cfg.gates.rollback_band * 100.0
                ),
                breaching,
            ),
            (None, Zone::Beyond | Zone::Near, false) => (
                GateStatus::Green,
                format!(
                    "{what} {} beyond {rel} {t} but not significant{p} at alpha {alpha}: no evidence V2 is worse",
                    fmt(v)
                ),
                None,
            ),
            (None, Zone::Clear | Zone::Inside, _) => {
                (GateStatus::Green, format!("{what} {} {rel} {t}", fmt(v)), None)
            }
            (Some(_), Zone::Beyond | Zone::Near, false) => (
                GateStatus::Yellow,
                format!(
                    "{what} {} beyond {rel} {t}, no longer significant{p}: recovering",
                    fmt(v)
                ),
                breaching,
            ),
            (Some(_), Zone::Inside, _) => (
                GateStatus::Yellow,
                format!(
                    "{what} {} recovering: not yet inside the {:.0}% promote band",
                    fmt(v),
                    self.cfg.gates.promote_band * 100.0
                ),
                breaching,
            ),
            (Some(r), Zone::Clear, _) => {
                let since = r.clear_since.unwrap_or(self.now);
                let cooled = self.now - since;
                let need = chrono::TimeDelta::from_std(self.cfg.gates.cooldown)
                    .unwrap_or(chrono::TimeDelta::MAX);
                if cooled >= need {
                    (GateStatus::Green, format!("{what} {} {rel} {t}", fmt(v)), None)
                } else {
                    (
                        GateStatus::Yellow,
                        format!(
                            "{what} {} back inside the promote band, cooling down ({}s of {}s)",
                            fmt(v),
                            cooled.num_seconds(),
                            need.num_seconds()
                        ),
                        Some(Recovery {
                            clear_since: Some(since),
                        }),
                    )
                }
            }
        };
        g.recovery = recovery;
        g.status = status;
        g.reason = reason;
        g
    }
}

pub(crate) fn fmt(v: f64) -> String {
    if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_p(p: f64) -> String {
    if p < 0.0001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
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
        return evaluate_shadow(window, ctx, ev);
    }
    let cfg = &ctx.cfg.rollout;
    let min_samples = cfg.min_samples;
    let journeys = &ctx.cfg.journeys;
    for id in journeys.ids() {
        let name = journeys.name(id);
        let kind = journeys.kind(id);
        let (c1, c2) = (window.cell(id, Variant::V1), window.cell(id, Variant::V2));
        let v1 = VariantKpi::of(c1);
        let v2 = VariantKpi::of(c2);
        let limits = ctx
            .cfg
            .journey_limits
            .get(id.index())
            .cloned()
            .unwrap_or_default();
        // A journey nobody used in the window has nothing to judge; one with
        // some traffic but too little on V2 is YELLOW below.
        if v1.requests + v2.requests > 0 {
            let threshold = limits.p95_ms.unwrap_or(ctx.phase_p95_ms);
            // More than 5 % of V2's requests slower than the threshold, significantly.
            let n = c2.latency.count();
            let slower = n - c2.latency.count_le(threshold * 1000.0);
            ev.gates.push(ctx.gate(Measure {
                name: "latency_p95",
                journey: Some(name),
                bound: Bound::Max,
                what: "V2 P95 ms",
                value: v2.p95_ms,
                threshold,
                samples: v2.requests,
                min_samples,
                control_samples: None,
                evidence: Evidence::Test(binomial_exceeds(slower, n, 0.05)),
            }));
            if ctx.comparative {
                let g = &ctx.cfg.gates;
                let threshold = v1.p50_ms.map_or(0.0, |m| {
                    m * (1.0 + g.latency_vs_control_max) + g.latency_vs_control_slack_ms
                });
                ev.gates.push(ctx.gate(Measure {
                    name: "latency_vs_control",
                    journey: Some(name),
                    bound: Bound::Max,
                    what: "V2 P50 ms vs V1",
                    value: v2.p50_ms,
                    threshold,
                    samples: v2.requests,
                    min_samples,
                    control_samples: Some(v1.requests),
                    evidence: Evidence::Test(
                        mann_whitney(&c1.latency.counts, &c2.latency.counts).map(|m| m.test),
                    ),
                }));
            }
            let success_min = match kind {
                JourneyKind::Payment => Some(limits.success_min.unwrap_or(cfg.payment_success_min)),
                JourneyKind::Normal => limits.success_min,
            };
            if let Some(min) = success_min {
                let gate = if kind == JourneyKind::Payment {
                    "payment_success"
                } else {
                    "success_rate"
                };
                ev.gates.push(ctx.gate(Measure {
                    name: gate,
                    journey: Some(name),
                    bound: Bound::Min,
                    what: "V2 success",
                    value: v2.error_rate.map(|e| 1.0 - e),
                    threshold: min,
                    samples: v2.requests,
                    min_samples,
                    control_samples: None,
                    evidence: Evidence::Test(binomial_exceeds(
                        v2.server_errors,
                        v2.requests,
                        1.0 - min,
                    )),
                }));
            }
        }
        if limits.read_heavy && v1.requests + v2.requests > 0 {
            let min = ctx.cfg.gates.cache_hit_min;
            let misses = v2.requests.saturating_sub(v2.cache_hits);
            ev.gates.push(ctx.gate(Measure {
                name: "cache_hit",
                journey: Some(name),
                bound: Bound::Min,
                what: "V2 cache hit ratio",
                value: (v2.requests > 0).then(|| v2.cache_hits as f64 / v2.requests as f64),
                threshold: min,
                samples: v2.requests,
                min_samples,
                control_samples: None,
                evidence: Evidence::Test(binomial_exceeds(misses, v2.requests, 1.0 - min)),
            }));
        }
        ev.journeys.push(JourneyKpi {
            journey: name.to_string(),
            kind,
            v1,
            v2,
        });
    }
    ev.gates.insert(0, error_rate_gate(&ev, ctx));
    if ctx.comparative {
        if let Some(g) = js_errors_gate(window, ctx) {
            ev.gates.push(g);
        }
        for f in &ctx.cfg.gates.funnels {
            ev.gates.push(funnel_gate(window, ctx, f));
        }
        for t in &ctx.cfg.gates.timings {
            ev.gates.push(timing_gate(window, ctx, t));
        }
    }
    if let Some(g) = error_budget_gate(window, &ev, ctx) {
        ev.gates.push(g);
    }
    if let Some(g) = concurrency_gate(window, &ev, ctx) {
        ev.gates.push(g);
    }
    split_skew_gates(window, ctx, &mut ev.gates);
    ev
}

/// JS errors per page view: V2 within `js_errors_max_increase` of V1. Every
/// `js_error` event counts, whatever its name; page views are the events of
/// the `js_errors_per` name. Errors per view can exceed 1, so the evidence is
/// the conditional (Poisson) rate test.
fn js_errors_gate(window: &Window, ctx: &GateContext<'_>) -> Option<GateResult> {
    let g = &ctx.cfg.gates;
    let per = g.js_errors_per?;
    let errors = |v: Variant| -> u64 {
        (0..window.beacons.len() / 2)
            .filter_map(|i| window.beacon(i, v))
            .map(|b| b.counts[BeaconType::JsError as usize])
            .sum()
    };
    let views = |v: Variant| window.beacon(per, v).map_or(0, |b| b.total());
    let (e1, n1, e2, n2) = (
        errors(Variant::V1),
        views(Variant::V1),
        errors(Variant::V2),
        views(Variant::V2),
    );
    let rate = |e: u64, n: u64| (n > 0).then(|| e as f64 / n as f64);
    Some(ctx.gate(Measure {
        name: "js_errors",
        journey: None,
        bound: Bound::Max,
        what: "V2 JS errors per page view",
        value: rate(e2, n2),
        threshold: rate(e1, n1).unwrap_or(0.0) * (1.0 + g.js_errors_max_increase),
        samples: n2,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: Some(n1),
        evidence: Evidence::Test(poisson_rate(e1, n1, e2, n2, Worse::Higher)),
    }))
}

/// The count of a funnel step for one variant.
fn step_count(window: &Window, step: Step, v: Variant) -> u64 {
    match step {
        Step::Journey(j) => {
            let c = window.cell(JourneyId::new(j as u16), v);
            c.classes[StatusClass::Success as usize] + c.classes[StatusClass::Redirect as usize]
        }
        Step::Beacon(b) => window.beacon(b, v).map_or(0, |b| b.total()),
    }
}

/// A funnel ratio: V2's numerator/denominator at most `max_drop` below V1's.
/// Both steps are counted over the sliding window, so the numerator is not a
/// cohort of the denominator (a submit in the window may belong to a start
/// before it): the evidence is the log-ratio test of two Poisson counts
/// ([`log_ratio`]), not the two-proportion test, whose binomial variance
/// near a 99 % conversion is far too small for window-edge noise.
fn funnel_gate(window: &Window, ctx: &GateContext<'_>, f: &Funnel) -> GateResult {
    let count = |step, v| step_count(window, step, v);
    let (x1, n1) = (
        count(f.numerator, Variant::V1),
        count(f.denominator, Variant::V1),
    );
    let (x2, n2) = (
        count(f.numerator, Variant::V2),
        count(f.denominator, Variant::V2),
    );
    let ratio = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
    let test = log_ratio(x1, n1, x2, n2, Worse::Lower);
    ctx.gate(Measure {
        name: "funnel",
        journey: Some(&f.name),
        bound: Bound::Min,
        what: "V2 conversion",
        value: ratio(x2, n2),
        threshold: ratio(x1, n1).unwrap_or(0.0) * (1.0 - f.max_drop),
        samples: n2,
        min_samples: f.min_samples.unwrap_or(ctx.cfg.rollout.min_samples),
        control_samples: Some(n1),
        evidence: Evidence::Test(test),
    })
}

/// A timing beacon: V2's median at most `max_increase` above V1's, evidence
/// from Mann-Whitney U on the two timing histograms.
fn timing_gate(window: &Window, ctx: &GateContext<'_>, t: &Timing) -> GateResult {
    let empty = BeaconCounts::default();
    let b1 = window.beacon(t.beacon, Variant::V1).unwrap_or(&empty);
    let b2 = window.beacon(t.beacon, Variant::V2).unwrap_or(&empty);
    let median = |b: &BeaconCounts| b.timing.quantile_us(0.5).map(|us| us / 1000.0);
    ctx.gate(Measure {
        name: "timing",
        journey: Some(&t.name),
        bound: Bound::Max,
        what: "V2 median ms",
        value: median(b2),
        threshold: median(b1).unwrap_or(0.0) * (1.0 + t.max_increase),
        samples: b2.timing.count(),
        min_samples: t.min_samples.unwrap_or(ctx.cfg.rollout.min_samples),
        control_samples: Some(b1.timing.count()),
        evidence: Evidence::Test(
            mann_whitney(&b1.timing.counts, &b2.timing.counts).map(|m| m.test),
        ),
    })
}

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
fn error_budget_gate(
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
        name: "error_budget",
        journey: None,
        bound: Bound::Max,
        what: "V2 share of the monthly error budget",
        value,
        threshold: ctx.cfg.gates.error_budget_max,
        samples: total,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: None,
        evidence: Evidence::Value,
    }))
}

/// Concurrency: V2's in-flight requests are capped at the reserved capacity
/// on the request path; the gate is YELLOW while that shed requests in the
/// window (the canary is at its limit: hold, do not grow it). Never RED:
/// shedding protects V2, it is not a failure of V2.
fn concurrency_gate(window: &Window, ev: &Evaluation, ctx: &GateContext<'_>) -> Option<GateResult> {
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
        name: "concurrency".into(),
        journey: None,
        status,
        value: Some(inflight as f64),
        threshold: cap as f64,
        samples: ev.v2.requests + shed,
        reason,
        p_value: None,
        recovery: None,
    })
}

/// Split skew: the observed V2 share of users against the share the weights
/// in force should give, per region when a region header is configured. The
/// value is the relative deviation |observed - expected| / expected; evidence
/// is a two-sided binomial test of the share with the distinct users of an
/// average interval as sample size (summing intervals would count returning
/// users again and again, and a small population's own split, e.g. 47 of 800
/// users in the first 5 % of buckets, would look significant).
fn split_skew_gates(window: &Window, ctx: &GateContext<'_>, out: &mut Vec<GateResult>) {
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
            name: "split_skew",
            journey: if per_region { label } else { None },
            bound: Bound::Max,
            what: &what,
            value: Some((observed - expected).abs() / expected),
            threshold: ctx.cfg.gates.split_skew_tolerance,
            samples: per_interval,
            min_samples: ctx.cfg.rollout.min_samples,
            control_samples: None,
            evidence: Evidence::Test(share_vs_expected(x, per_interval, expected)),
        }));
    }
}

/// The gates of a shadow phase, over V2's answers to mirrored requests:
/// `shadow_diff` (share of answers that differed from V1's, overall and per
/// journey, at most `shadow.diff_rate_max`, binomial evidence) and
/// `latency_p95` per journey on the mirrors' latency. The overall gate is
/// always there, so a shadow phase without any mirrored traffic holds
/// ("insufficient data") instead of passing on no evidence.
fn evaluate_shadow(window: &Window, ctx: &GateContext<'_>, mut ev: Evaluation) -> Evaluation {
    let journeys = &ctx.cfg.journeys;
    let min_samples = ctx.cfg.rollout.min_samples;
    let max = ctx.cfg.shadow.diff_rate_max;
    let diff_gate = |journey: Option<&str>, compared: u64, diffs: u64| {
        ctx.gate(Measure {
            name: "shadow_diff",
            journey,
            bound: Bound::Max,
            what: "V2 answers differing from V1",
            value: (compared > 0).then(|| diffs as f64 / compared as f64),
            threshold: max,
            samples: compared,
            min_samples,
            control_samples: None,
            evidence: Evidence::Test(binomial_exceeds(diffs, compared, max)),
        })
    };
    let (mut compared, mut diffs) = (0, 0);
    let mut per_journey = Vec::new();
    for id in journeys.ids() {
        let Some(c) = window.shadow(id).filter(|c| c.requests() > 0) else {
            continue;
        };
        compared += c.compared;
        diffs += c.diffs;
        let name = journeys.name(id);
        per_journey.push(diff_gate(Some(name), c.compared, c.diffs));
        let limits = ctx
            .cfg
            .journey_limits
            .get(id.index())
            .cloned()
            .unwrap_or_default();
        let threshold = limits.p95_ms.unwrap_or(ctx.phase_p95_ms);
        let n = c.duration.count();
        let slower = n - c.duration.count_le(threshold * 1000.0);
        per_journey.push(ctx.gate(Measure {
            name: "latency_p95",
            journey: Some(name),
            bound: Bound::Max,
            what: "V2 mirror P95 ms",
            value: c.duration.quantile_us(0.95).map(|us| us / 1000.0),
            threshold,
            samples: n,
            min_samples,
            control_samples: None,
            evidence: Evidence::Test(binomial_exceeds(slower, n, 0.05)),
        }));
    }
    ev.gates.push(diff_gate(None, compared, diffs));
    ev.gates.extend(per_journey);
    ev
}

/// 5xx rate: an absolute ceiling, and no worse than V1 beyond the margin.
/// Evidence is the stronger of the binomial test against the ceiling and
/// the two-proportion test against V1 (each one's alternative implies a
/// breach of the combined threshold).
fn error_rate_gate(ev: &Evaluation, ctx: &GateContext<'_>) -> GateResult {
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
        name: "error_rate",
        journey: None,
        bound: Bound::Max,
        what: "V2 5xx rate",
        value: v2.error_rate,
        threshold,
        samples: v2.requests,
        min_samples: cfg.min_samples,
        control_samples: comparative.then_some(v1.requests),
        evidence: Evidence::either(ceiling, vs_v1),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    pub(crate) const CONFIG: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        [upstreams]
        v1 = "http://127.0.0.1:1"
        v2 = "http://127.0.0.1:2"
        [[journeys]]
        name = "search"
        path_prefix = "/search"
        [[journeys]]
        name = "payments"
        path_prefix = "/api/payments"
        kind = "payment"
        [rollout]
        min_samples = 50
    "#;

    fn window(cfg: &Config, fill: impl Fn(JourneyId, Variant, &mut CellCounts)) -> Window {
        let mut w = Window::empty(cfg.journeys.len());
        w.duration_ms = 300_000;
        for id in cfg.journeys.ids() {
            for v in Variant::ALL {
                fill(id, v, &mut w.cells[id.index() * 2 + v as usize]);
            }
        }
        w
    }

    fn cell(c: &mut CellCounts, n: u64, ms: u64, errors: u64) {
        c.latency.record(ms * 1000, n);
        c.classes[1] += n - errors;
        c.classes[4] += errors;
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn eval(cfg: &Config, w: &Window, prev: &BTreeMap<String, GateStatus>) -> Evaluation {
        Memory {
            status: prev.clone(),
            ..Default::default()
        }
        .eval(cfg, w, t0())
    }

    /// The gates' memory between ticks, as `rollout::Core` keeps it.
    #[derive(Default)]
    struct Memory {
        status: BTreeMap<String, GateStatus>,
        recovery: BTreeMap<String, Recovery>,
    }

    impl Memory {
        fn eval(&self, cfg: &Config, w: &Window, now: DateTime<Utc>) -> Evaluation {
            evaluate(
                w,
                &GateContext {
                    cfg,
                    phase_p95_ms: 130.0,
                    comparative: true,
                    weight_v2: 10.0,
                    v2_bad_since_start: 0,
                    shadow: false,
                    now,
                    previous: &self.status,
                    recovery: &self.recovery,
                },
            )
        }

        fn remember(&mut self, ev: &Evaluation) {
            self.status = ev.gates.iter().map(|g| (g.key(), g.status)).collect();
            self.recovery = ev
                .gates
                .iter()
                .filter_map(|g| g.recovery.map(|r| (g.key(), r)))
                .collect();
        }
    }

    fn status(ev: &Evaluation, key: &str) -> GateStatus {
        ev.gates
            .iter()
            .find(|g| g.key() == key)
            .unwrap_or_else(|| panic!("no gate {key}"))
            .status
    }

    #[test]
    fn healthy_window_is_all_green() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let w = window(&cfg, |id, _, c| {
            if id.index() < 2 {
                cell(c, 200, 50, 0)
            }
        });
        let ev = eval(&cfg, &w, &BTreeMap::new());
        assert!(ev.all_green(), "{:#?}", ev.gates);
        // `other` had no traffic: no gate for it.
        assert!(ev
            .gates
            .iter()
            .all(|g| g.journey.as_deref() != Some("other")));
        // error_rate, latency_p95 and latency_vs_control per journey, payment_success.
        assert_eq!(ev.gates.len(), 1 + 2 * 2 + 1);
        let p = ev
            .gates
            .iter()
            .find(|g| g.key() == "latency_p95/search")
            .unwrap();
        assert!((p.value.unwrap() - 50.0).abs() < 0.5);
        assert_eq!(p.samples, 200);
    }

    #[test]
    fn too_few_samples_is_yellow_never_green() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let w = window(&cfg, |id, v, c| {
            if id.index() == 0 {
                cell(c, if v == Variant::V2 { 49 } else { 1000 }, 10, 0)
            }
        });
        let ev = eval(&cfg, &w, &BTreeMap::new());
        let g = ev
            .gates
            .iter()
            .find(|g| g.key() == "latency_p95/search")
            .unwrap();
        assert_eq!(g.status, GateStatus::Yellow);
        assert_eq!(g.reason, "insufficient data: 49 of 50 samples");
        assert_eq!(status(&ev, "error_rate"), GateStatus::Yellow);
        assert!(!ev.all_green());
        assert_eq!(ev.worst().unwrap().status, GateStatus::Yellow);
    }

    #[test]
    fn slow_errors_and_failed_payments_are_red() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let w = window(&cfg, |id, v, c| match (id.index(), v) {
            (0, Variant::V2) => cell(c, 1000, 140, 0),
            (1, Variant::V2) => cell(c, 1000, 20, 15),
            (0 | 1, Variant::V1) => cell(c, 1000, 20, 0),
            _ => {}
        });
        let ev = eval(&cfg, &w, &BTreeMap::new());
        assert_eq!(status(&ev, "latency_p95/search"), GateStatus::Red);
        assert_eq!(status(&ev, "latency_p95/payments"), GateStatus::Green);
        // 15 of 1000 payments failed: 98.5 % < 99.5 %, and significantly so.
        assert_eq!(status(&ev, "payment_success/payments"), GateStatus::Red);
        // 15 of 2000 = 0.75 % overall, but V1 had 0 %: worse than V1 + 0.1 %.
        let e = ev.gates.iter().find(|g| g.name == "error_rate").unwrap();
        assert_eq!(e.status, GateStatus::Red);
        assert!((e.threshold - 0.001).abs() < 1e-12);
        assert!(e.reason.contains("margin"), "{}", e.reason);
        assert_eq!(
            ev.p95_breaches(130.0, 50),
            vec![("search", ev.journeys[0].v2.p95_ms.unwrap())]
        );
        assert!(ev.p95_breaches(160.0, 50).is_empty());
    }

    fn search_at(cfg: &Config, ms: u64) -> Window {
        window(cfg, |id, v, c| {
            if id.index() == 0 {
                // V1 as fast as V2: only the absolute P95 gate moves.
                cell(c, 500, if v == Variant::V2 { ms } else { 60 }, 0)
            }
        })
    }

    #[test]
    fn recovery_needs_the_promote_band_and_the_cooldown() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let key = "latency_p95/search";
        let was_red = BTreeMap::from([(key.to_string(), GateStatus::Red)]);
        // 128 ms: inside 130 but not inside 130 * 0.95 = 123.5.
        let ev = eval(&cfg, &search_at(&cfg, 128), &was_red);
        let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
        assert_eq!(g.status, GateStatus::Yellow);
        assert!(g.reason.contains("recovering"), "{}", g.reason);
        // A gate that was GREEN stays GREEN there.
        assert_eq!(
            status(&eval(&cfg, &search_at(&cfg, 128), &BTreeMap::new()), key),
            GateStatus::Green
        );
        // 120 ms is inside the band: GREEN only after the cooldown (1m).
        let mut mem = Memory {
            status: was_red,
            ..Default::default()
        };
        let good = search_at(&cfg, 120);
        let mut seen = Vec::new();
        for tick in 0..6 {
            let ev = mem.eval(&cfg, &good, t0() + chrono::TimeDelta::seconds(15 * tick));
            seen.push(status(&ev, key));
            mem.remember(&ev);
        }
        use GateStatus::{Green, Yellow};
        assert_eq!(seen, [Yellow, Yellow, Yellow, Yellow, Green, Green]);
    }

    #[test]
    fn at_least_bands_use_the_narrower_of_threshold_and_complement() {
        let g = Config::parse(CONFIG, "t").unwrap().gates;
        let z = |v, t| zone(v, t, Bound::Min, &g);
        // 97 %: the complement is narrower (3 % * 5 % = 0.15 pp).
        assert_eq!(z(0.9716, 0.97), Zone::Clear);
        assert_eq!(z(0.9710, 0.97), Zone::Inside);
        assert_eq!(z(0.9690, 0.97), Zone::Near);
        assert_eq!(z(0.9680, 0.97), Zone::Beyond);
        // 20 %: the threshold itself is narrower (20 % * 5 % = 1 pp).
        assert_eq!(z(0.2101, 0.20), Zone::Clear);
        assert_eq!(z(0.2050, 0.20), Zone::Inside);
        assert_eq!(z(0.1901, 0.20), Zone::Near);
        assert_eq!(z(0.1890, 0.20), Zone::Beyond);
        // Above 1 (clicks per search): plain shares of the threshold.
        assert_eq!(z(1.58, 1.5), Zone::Clear);
        assert_eq!(z(1.42, 1.5), Zone::Beyond);
    }

    #[test]
    fn red_needs_the_rollback_band_and_stays_red_inside_it() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let key = "latency_p95/search";
        // 134 ms: beyond 130, inside 130 * 1.05 = 136.5.
        let near = search_at(&cfg, 134);
        let ev = eval(&cfg, &near, &BTreeMap::new());
        let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
        assert_eq!(g.status, GateStatus::Yellow);
        assert!(g.reason.contains("rollback band"), "{}", g.reason);
        let was_red = BTreeMap::from([(key.to_string(), GateStatus::Red)]);
        assert_eq!(status(&eval(&cfg, &near, &was_red), key), GateStatus::Red);
        assert_eq!(
            status(&eval(&cfg, &search_at(&cfg, 140), &BTreeMap::new()), key),
            GateStatus::Red
        );
    }

    /// The anti-flap property: a value dancing around its threshold gives a
    /// steady non-GREEN status (the controller holds), never RED, never a
    /// GREEN/non-GREEN alternation, and GREEN again only after the cooldown.
    #[test]
    fn a_value_hovering_at_the_threshold_never_flaps() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let key = "latency_p95/search";
        let mut mem = Memory::default();
        let mut now = t0();
        let mut seen = Vec::new();
        for ms in [129, 131, 127, 134, 128, 133, 126, 135, 129, 131, 128, 134] {
            let ev = mem.eval(&cfg, &search_at(&cfg, ms), now);
            seen.push(status(&ev, key));
            mem.remember(&ev);
            now += chrono::TimeDelta::seconds(15);
        }
        use GateStatus::{Green, Yellow};
        assert_eq!(seen[0], Green);
        assert!(seen[1..].iter().all(|s| *s == Yellow), "{seen:?}");
        // Steady in the band for the cooldown: GREEN again.
        for _ in 0..5 {
            let ev = mem.eval(&cfg, &search_at(&cfg, 110), now);
            seen.push(status(&ev, key));
            mem.remember(&ev);
            now += chrono::TimeDelta::seconds(15);
        }
        assert_eq!(seen[seen.len() - 1], Green, "{seen:?}");
        let changes = seen.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 2, "{seen:?}");
    }

    #[test]
    fn latency_vs_control_needs_the_threshold_and_significance() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let key = "latency_vs_control/search";
        // GREEN: V2 as fast as V1.
        let same = window(&cfg, |id, _, c| {
            if id.index() == 0 {
                cell(c, 400, 40, 0);
                cell(c, 400, 55, 0);
            }
        });
        assert_eq!(
            status(&eval(&cfg, &same, &BTreeMap::new()), key),
            GateStatus::Green
        );
        // RED: V2's median 60 ms vs V1's 40 ms (threshold 40 * 1.1 + 1 = 45), clearly shifted.
        let slower = window(&cfg, |id, v, c| match (id.index(), v) {
            (0, Variant::V1) => {
                cell(c, 500, 40, 0);
                cell(c, 500, 55, 0);
            }
            (0, Variant::V2) => cell(c, 100, 60, 0),
            _ => {}
        });
        let ev = eval(&cfg, &slower, &BTreeMap::new());
        let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
        assert_eq!(g.status, GateStatus::Red, "{g:?}");
        assert!((g.threshold - 45.0).abs() < 0.5, "{g:?}");
        assert!(g.p_value.unwrap() < 1e-6, "{g:?}");
        // GREEN: the median is beyond the threshold but the sample is split
        // (28 faster than every V1 request, 32 slower): not significant, so
        // no evidence against V2.
        let split = window(&cfg, |id, v, c| match (id.index(), v) {
            (0, Variant::V1) => {
                cell(c, 500, 40, 0);
                cell(c, 500, 55, 0);
            }
            (0, Variant::V2) => {
                cell(c, 28, 10, 0);
                cell(c, 32, 60, 0);
            }
            _ => {}
        });
        let ev = eval(&cfg, &split, &BTreeMap::new());
        let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
        assert_eq!(g.status, GateStatus::Green, "{g:?}");
        assert!(g.reason.contains("not significant"), "{}", g.reason);
        assert!(g.p_value.unwrap() > 0.1, "{g:?}");
        // YELLOW: too few V1 samples to compare with.
        let thin = window(&cfg, |id, v, c| {
            if id.index() == 0 {
                cell(c, if v == Variant::V1 { 20 } else { 500 }, 40, 0)
            }
        });
        let ev = eval(&cfg, &thin, &BTreeMap::new());
        let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
        assert_eq!(g.status, GateStatus::Yellow);
        assert_eq!(g.reason, "insufficient data: V1 20 of 50 samples");
    }

    #[test]
    fn comparative_gates_are_skipped_without_a_control() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let w = window(&cfg, |id, v, c| {
            if id.index() == 0 && v == Variant::V2 {
                cell(c, 500, 40, 1)
            }
        });
        let mem = Memory::default();
        let ev = evaluate(
            &w,
            &GateContext {
                cfg: &cfg,
                phase_p95_ms: 130.0,
                comparative: false,
                weight_v2: 100.0,
                v2_bad_since_start: 0,
                shadow: false,
                now: t0(),
                previous: &mem.status,
                recovery: &mem.recovery,
            },
        );
        assert!(ev.gates.iter().all(|g| g.name != "latency_vs_control"));
        // Only the absolute ceiling: 1 of 500 = 0.2 % <= 0.5 %.
        let e = ev.gates.iter().find(|g| g.name == "error_rate").unwrap();
        assert_eq!(e.status, GateStatus::Green, "{e:?}");
        assert_eq!(e.threshold, cfg.rollout.error_rate_max);
    }

    #[test]
    fn error_rate_margin_breach_needs_significance() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        // V1 0.1 %, V2 0.4 %: beyond V1 + 0.1 % but under the 0.5 % ceiling,
        // and 2 errors in 500 is no evidence.
        let w = window(&cfg, |id, v, c| {
            if id.index() == 0 {
                match v {
                    Variant::V1 => cell(c, 1000, 40, 1),
                    Variant::V2 => cell(c, 500, 40, 2),
                }
            }
        });
        let ev = eval(&cfg, &w, &BTreeMap::new());
        let e = ev.gates.iter().find(|g| g.name == "error_rate").unwrap();
        assert_eq!(e.status, GateStatus::Green, "{e:?}");
        assert!(e.reason.contains("not significant"), "{}", e.reason);
        // A gate recovering from RED does not get that benefit of the doubt.
        let was_red = BTreeMap::from([("error_rate".to_string(), GateStatus::Red)]);
        let e = eval(&cfg, &w, &was_red).gates[0].clone();
        assert_eq!(e.status, GateStatus::Yellow, "{e:?}");
        assert!(e.reason.contains("recovering"), "{}", e.reason);
        // V1 is worse still (3 %), but V2's 2.4 % is significantly above the
        // 0.5 % ceiling: RED on the ceiling's own test.
        let w = window(&cfg, |id, v, c| {
            if id.index() == 0 {
                match v {
                    Variant::V1 => cell(c, 1000, 40, 30),
                    Variant::V2 => cell(c, 500, 40, 12),
                }
            }
        });
        let e = eval(&cfg, &w, &BTreeMap::new()).gates[0].clone();
        assert_eq!(e.name, "error_rate");
        assert_eq!(e.status, GateStatus::Red, "{e:?}");
    }

    /// The designed false-positive rate through the real gates: 1,000 equal
    /// canaries (V2 drawn from V1's distributions, seeded RNG), one window
    /// each, judged with fresh memory. Each comparative gate is RED in fewer
    /// than alpha of them (see `stats::significance` for the design).
    #[test]
    fn equal_canaries_through_the_real_gates_are_rarely_red() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let mut rng = SmallRng::seed_from_u64(0x0dd_ba11);
        let lognormal_us = |rng: &mut SmallRng| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (45_000.0 * (0.5 * z).exp()) as u64
        };
        let mut red: BTreeMap<String, u32> = BTreeMap::new();
        let runs = 1_000;
        for _ in 0..runs {
            let mut w = Window::empty(cfg.journeys.len());
            for j in 0..2 {
                for (v, n) in [(Variant::V1, 1_000), (Variant::V2, 100)] {
                    let c = &mut w.cells[j * 2 + v as usize];
                    for _ in 0..n {
                        let us = lognormal_us(&mut rng);
                        c.latency.record(us, 1);
                        // 0.3 % 5xx on both variants.
                        let class = if rng.random::<f64>() < 0.003 { 4 } else { 1 };
                        c.classes[class] += 1;
                    }
                }
            }
            let ev = eval(&cfg, &w, &BTreeMap::new());
            for g in ev.gates.iter().filter(|g| g.status == GateStatus::Red) {
                *red.entry(g.key()).or_default() += 1;
            }
        }
        for (key, n) in &red {
            assert!(
                (*n as f64) < runs as f64 * cfg.gates.alpha,
                "{key} RED for {n} of {runs} equal canaries"
            );
        }
    }

    // ===== the edge gates: beacons, funnels, cache, budget, concurrency, skew =====

    const EDGE: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        [upstreams]
        v1 = "http://127.0.0.1:1"
        v2 = "http://127.0.0.1:2"
        reserved_capacity = 10
        [routing]
        region_header = "x-region"
        regions = ["eu", "us"]
        [[journeys]]
        name = "search"
        path_prefix = "/search"
        read_heavy = true
        [[journeys]]
        name = "application_start"
        path_prefix = "/api/applications/start"
        [[journeys]]
        name = "application_submit"
        path_pattern = "/api/applications/*/submit"
        [beacons]
        names = ["page_view", "js_error", "search_result_click", "first_result_ms"]
        [rollout]
        min_samples = 50
        [gates]
        js_errors_per = "page_view"
        slo_target = 0.999
        [[gates.funnels]]
        name = "application_conversion"
        numerator = "journey:application_submit"
        denominator = "journey:application_start"
        [[gates.funnels]]
        name = "search_ctr"
        numerator = "beacon:search_result_click"
        denominator = "journey:search"
        max_drop = 0.05
        [[gates.timings]]
        name = "first_result_ms"
    "#;

    const PAGE_VIEW: usize = 0;
    const JS_ERROR: usize = 1;
    const CLICK: usize = 2;
    const FIRST_RESULT: usize = 3;

    fn edge() -> Config {
        Config::parse(EDGE, "edge").unwrap_or_else(|e| panic!("{e}"))
    }

    /// An empty 5-minute window with room for the beacons.
    fn edge_window(cfg: &Config) -> Window {
        let mut w = Window::empty_with(cfg.journeys.len(), cfg.beacons.names.len());
        w.duration_ms = 300_000;
        w
    }

    fn beacon(w: &mut Window, name: usize, v: Variant) -> &mut BeaconCounts {
        &mut w.beacons[name * 2 + v as usize]
    }

    fn eval_with(cfg: &Config, w: &Window, weight_v2: f64, v2_bad: u64) -> Evaluation {
        let mem = Memory::default();
        evaluate(
            w,
            &GateContext {
                cfg,
                phase_p95_ms: 130.0,
                comparative: weight_v2 < 100.0,
                weight_v2,
                v2_bad_since_start: v2_bad,
                shadow: false,
                now: t0(),
                previous: &mem.status,
                recovery: &mem.recovery,
            },
        )
    }

    fn gate_of<'e>(ev: &'e Evaluation, key: &str) -> &'e GateResult {
        ev.gates
            .iter()
            .find(|g| g.key() == key)
            .unwrap_or_else(|| panic!("no gate {key} in {:#?}", ev.gates))
    }

    fn js(w: &mut Window, views: [u64; 2], errors: [u64; 2]) {
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            beacon(w, PAGE_VIEW, v).counts[BeaconType::Funnel as usize] = views[i];
            beacon(w, JS_ERROR, v).counts[BeaconType::JsError as usize] = errors[i];
        }
    }

    #[test]
    fn js_errors_per_page_view() {
        let cfg = edge();
        let status = |views, errors| {
            let mut w = edge_window(&cfg);
            js(&mut w, views, errors);
            let ev = eval_with(&cfg, &w, 10.0, 0);
            let g = gate_of(&ev, "js_errors").clone();
            (g.status, g.reason)
        };
        // 1 % on both: GREEN.
        assert_eq!(status([10_000, 1_000], [100, 10]).0, GateStatus::Green);
        // 4 % on V2 against 1 %: RED.
        assert_eq!(status([10_000, 1_000], [100, 40]).0, GateStatus::Red);
        // 1.5 % on V2: beyond 1.1 % but 15 errors in 1,000 views is no evidence.
        let (st, why) = status([10_000, 1_000], [100, 15]);
        assert_eq!(st, GateStatus::Green, "{why}");
        assert!(why.contains("not significant"), "{why}");
        // Too few V2 page views.
        let (st, why) = status([10_000, 20], [100, 5]);
        assert_eq!(st, GateStatus::Yellow);
        assert_eq!(why, "insufficient data: 20 of 50 samples");
    }

    fn requests(w: &mut Window, cfg: &Config, journey: &str, v: Variant, n: u64) {
        let id = cfg.journeys.by_name(journey).unwrap();
        let c = &mut w.cells[id.index() * 2 + v as usize];
        c.latency.record(30_000, n);
        c.classes[1] += n;
    }

    #[test]
    fn funnel_conversion_from_journeys() {
        let cfg = edge();
        let key = "funnel/application_conversion";
        let status = |start: [u64; 2], submit: [u64; 2]| {
            let mut w = edge_window(&cfg);
            for (i, v) in Variant::ALL.into_iter().enumerate() {
                requests(&mut w, &cfg, "application_start", v, start[i]);
                requests(&mut w, &cfg, "application_submit", v, submit[i]);
            }
            gate_of(&eval_with(&cfg, &w, 10.0, 0), key).clone()
        };
        // 80 % submit on both: GREEN.
        assert_eq!(status([2_000, 200], [1_600, 160]).status, GateStatus::Green);
        // V2 drops the submit step for most users: RED.
        let g = status([2_000, 200], [1_600, 60]);
        assert_eq!(g.status, GateStatus::Red, "{g:?}");
        assert!((g.threshold - 0.8 * 0.97).abs() < 1e-9, "{g:?}");
        // Too few V2 starts.
        let g = status([2_000, 30], [1_600, 10]);
        assert_eq!(g.status, GateStatus::Yellow);
        assert!(g.reason.starts_with("insufficient data"), "{}", g.reason);
    }

    #[test]
    fn funnel_ratio_from_a_beacon_over_a_journey_can_exceed_one() {
        let cfg = edge();
        let key = "funnel/search_ctr";
        let status = |searches: [u64; 2], clicks: [u64; 2]| {
            let mut w = edge_window(&cfg);
            for (i, v) in Variant::ALL.into_iter().enumerate() {
                requests(&mut w, &cfg, "search", v, searches[i]);
                beacon(&mut w, CLICK, v).counts[BeaconType::Funnel as usize] = clicks[i];
            }
            gate_of(&eval_with(&cfg, &w, 10.0, 0), key).status
        };
        // 1.5 clicks per search on both.
        assert_eq!(status([2_000, 400], [3_000, 600]), GateStatus::Green);
        // V2 users click half as often.
        assert_eq!(status([2_000, 400], [3_000, 300]), GateStatus::Red);
        assert_eq!(status([2_000, 10], [3_000, 15]), GateStatus::Yellow);
    }

    #[test]
    fn timing_beacons_compare_medians_with_mann_whitney() {
        let cfg = edge();
        let key = "timing/first_result_ms";
        let status = |v1: &[(u64, u64)], v2: &[(u64, u64)]| {
            let mut w = edge_window(&cfg);
            for (v, values) in [(Variant::V1, v1), (Variant::V2, v2)] {
                let b = beacon(&mut w, FIRST_RESULT, v);
                for &(ms, n) in values {
                    b.timing.record(ms * 1000, n);
                    b.counts[BeaconType::Timing as usize] += n;
                }
            }
            gate_of(&eval_with(&cfg, &w, 10.0, 0), key).clone()
        };
        let v1 = [(200, 500), (300, 500)];
        assert_eq!(
            status(&v1, &[(200, 50), (300, 50)]).status,
            GateStatus::Green
        );
        let g = status(&v1, &[(300, 60), (400, 60)]);
        assert_eq!(g.status, GateStatus::Red, "{g:?}");
        assert!((g.threshold - 200.0 * 1.05).abs() < 2.0, "{g:?}");
        assert_eq!(status(&v1, &[(400, 20)]).status, GateStatus::Yellow);
    }

    #[test]
    fn cache_hit_ratio_on_read_heavy_journeys() {
        let cfg = edge();
        let status = |n: u64, hits: u64| {
            let mut w = edge_window(&cfg);
            requests(&mut w, &cfg, "search", Variant::V1, 1_000);
            requests(&mut w, &cfg, "search", Variant::V2, n);
            let id = cfg.journeys.by_name("search").unwrap();
            w.cells[id.index() * 2 + 1].cache_hits = hits;
            let ev = eval_with(&cfg, &w, 10.0, 0);
            // Only read-heavy journeys have the gate.
            assert!(ev
                .gates
                .iter()
                .all(|g| g.name != "cache_hit" || g.journey.as_deref() == Some("search")));
            gate_of(&ev, "cache_hit/search").status
        };
        assert_eq!(status(1_000, 950), GateStatus::Green);
        assert_eq!(status(1_000, 500), GateStatus::Red);
        assert_eq!(status(10, 2), GateStatus::Yellow);
    }

    #[test]
    fn error_budget_share_of_the_monthly_budget() {
        let cfg = edge();
        let mut w = edge_window(&cfg);
        // 30,000 requests in 5 minutes = 100 req/s: the 30-day budget of a
        // 99.9 % SLO is 0.001 * 100 * 2,592,000 = 259,200 bad requests.
        requests(&mut w, &cfg, "search", Variant::V1, 27_000);
        requests(&mut w, &cfg, "search", Variant::V2, 3_000);
        let g = gate_of(&eval_with(&cfg, &w, 10.0, 2_592), "error_budget").clone();
        assert_eq!(g.status, GateStatus::Green, "{g:?}");
        assert!((g.value.unwrap() - 0.01).abs() < 1e-9, "{g:?}");
        let g = gate_of(&eval_with(&cfg, &w, 10.0, 20_000), "error_budget").clone();
        assert_eq!(g.status, GateStatus::Red, "{g:?}");
        let g = gate_of(
            &eval_with(&cfg, &edge_window(&cfg), 10.0, 0),
            "error_budget",
        )
        .clone();
        assert_eq!(g.status, GateStatus::Yellow, "{g:?}");
    }

    #[test]
    fn concurrency_is_yellow_while_shedding() {
        let cfg = edge();
        let mut w = edge_window(&cfg);
        requests(&mut w, &cfg, "search", Variant::V2, 100);
        let g = gate_of(&eval_with(&cfg, &w, 10.0, 0), "concurrency").clone();
        assert_eq!(g.status, GateStatus::Green, "{g:?}");
        assert_eq!(g.threshold, 10.0);
        w.shed = [0, 7];
        let g = gate_of(&eval_with(&cfg, &w, 10.0, 0), "concurrency").clone();
        assert_eq!(g.status, GateStatus::Yellow, "{g:?}");
        assert!(g.reason.contains("7 requests shed"), "{}", g.reason);
        // No reserved capacity configured: no gate.
        let plain = Config::parse(CONFIG, "t").unwrap();
        let ev = eval(&plain, &window(&plain, |_, _, _| {}), &BTreeMap::new());
        assert!(ev.gates.iter().all(|g| g.name != "concurrency"));
    }

    #[test]
    fn split_skew_per_region() {
        use crate::stats::UserShare;
        let cfg = edge();
        let mut w = edge_window(&cfg);
        let share = |v1: u64, v2: u64| UserShare {
            v1,
            v2,
            expected_v2: (v1 + v2) as f64 * 0.10,
            intervals: 1,
        };
        // eu on target, us three times too many V2 users, other too few users.
        w.users = vec![share(905, 95), share(900, 300), share(18, 2)];
        let ev = eval_with(&cfg, &w, 10.0, 0);
        assert_eq!(gate_of(&ev, "split_skew/eu").status, GateStatus::Green);
        let us = gate_of(&ev, "split_skew/us");
        assert_eq!(us.status, GateStatus::Red, "{us:?}");
        assert!((us.value.unwrap() - 1.5).abs() < 1e-9, "{us:?}");
        assert_eq!(gate_of(&ev, "split_skew/other").status, GateStatus::Yellow);
        // Not judged at 0 % or 100 %.
        let ev = eval_with(&cfg, &w, 100.0, 0);
        assert!(ev.gates.iter().all(|g| g.name != "split_skew"));
    }

    #[test]
    fn edge_config_errors_name_the_key() {
        let bad = |from: &str, to: &str| {
            Config::parse(&EDGE.replace(from, to), "t")
                .unwrap_err()
                .to_string()
        };
        let e = bad("js_errors_per = \"page_view\"", "js_errors_per = \"views\"");
        assert!(e.contains("`gates.js_errors_per`"), "{e}");
        let e = bad("journey:application_submit", "journey:nope");
        assert!(e.contains("`gates.funnels[0].numerator`"), "{e}");
        let e = bad("beacon:search_result_click", "click");
        assert!(e.contains("`gates.funnels[1].numerator`"), "{e}");
        let e = bad(
            "[[gates.timings]]\n        name = \"first_result_ms\"",
            "[[gates.timings]]\n        name = \"ttfb\"",
        );
        assert!(e.contains("`gates.timings[0].name`"), "{e}");
        let e = bad("slo_target = 0.999", "slo_target = 99.9");
        assert!(e.contains("`gates.slo_target`"), "{e}");
        let e = bad("regions = [\"eu\", \"us\"]", "regions = [\"eu\", \"EU\"]");
        assert!(e.contains("`routing.regions[1]`"), "{e}");
        let e = bad("region_header = \"x-region\"", "");
        assert!(e.contains("`routing.regions`"), "{e}");
    }

    #[test]
    fn shadow_phase_judges_the_mirrors() {
        use crate::stats::shadow::ShadowCounts;
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let eval_shadow = |w: &Window| {
            let mem = Memory::default();
            evaluate(
                w,
                &GateContext {
                    cfg: &cfg,
                    phase_p95_ms: 130.0,
                    comparative: true,
                    weight_v2: 0.0,
                    v2_bad_since_start: 0,
                    shadow: true,
                    now: t0(),
                    previous: &mem.status,
                    recovery: &mem.recovery,
                },
            )
        };
        let with = |compared: u64, diffs: u64| {
            let mut w = window(&cfg, |id, v, c| {
                if id.index() == 0 && v == Variant::V1 {
                    cell(c, 1000, 40, 0)
                }
            });
            let mut s = ShadowCounts {
                compared,
                diffs,
                ..Default::default()
            };
            s.classes[1] = compared;
            s.duration.record(20_000, compared);
            w.shadow = vec![s, ShadowCounts::default(), ShadowCounts::default()];
            w
        };
        // No mirrored traffic: the overall gate holds, nothing passes vacuously.
        let ev = eval_shadow(&window(&cfg, |_, _, _| {}));
        assert_eq!(ev.gates.len(), 1);
        assert_eq!(status(&ev, "shadow_diff"), GateStatus::Yellow);
        let ev = eval_shadow(&with(500, 0));
        assert!(ev.all_green(), "{:#?}", ev.gates);
        // Only shadow gates: live gates would all be "insufficient data".
        assert!(ev
            .gates
            .iter()
            .all(|g| g.name == "shadow_diff" || g.name == "latency_p95"));
        let ev = eval_shadow(&with(500, 100));
        assert_eq!(status(&ev, "shadow_diff/search"), GateStatus::Red);
        assert_eq!(status(&ev, "shadow_diff"), GateStatus::Red);
        assert_eq!(
            status(&eval_shadow(&with(10, 5)), "shadow_diff"),
            GateStatus::Yellow
        );
    }
}
