//! Gate evaluation: a pure function of one window of counts and the config.
//!
//! Each gate is GREEN / YELLOW / RED with its value, threshold and sample
//! count. Too few samples is YELLOW "insufficient data", never GREEN. A gate
//! that was not GREEN on the previous tick only turns GREEN again once its
//! value is back inside the threshold by `RECOVER_BAND`, so a value hovering
//! at the threshold cannot alternate GREEN/RED on every tick.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{JourneyLimits, RolloutConfig};
use crate::journeys::{JourneyKind, Journeys};
use crate::routing::Variant;
use crate::stats::{CellCounts, UpstreamErrorKind, Window};

/// Share of the threshold by which a non-GREEN gate must clear it to be GREEN again.
pub const RECOVER_BAND: f64 = 0.05;

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
}

impl GateResult {
    /// Stable key for the per-gate memory (hysteresis, RED timers).
    pub fn key(&self) -> String {
        match &self.journey {
            Some(j) => format!("{}/{j}", self.name),
            None => self.name.clone(),
        }
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
#[derive(Clone, Copy)]
enum Bound {
    /// GREEN while value <= threshold.
    Max,
    /// GREEN while value >= threshold.
    Min,
}

fn judge(value: f64, threshold: f64, bound: Bound, was_green: bool) -> GateStatus {
    let inside = match bound {
        Bound::Max => value <= threshold,
        Bound::Min => value >= threshold,
    };
    let inside_band = match bound {
        Bound::Max => value <= threshold * (1.0 - RECOVER_BAND),
        // For a success rate the band applies to the allowed failure share.
        Bound::Min => 1.0 - value <= (1.0 - threshold) * (1.0 - RECOVER_BAND),
    };
    match (inside, inside_band || was_green) {
        (true, true) => GateStatus::Green,
        // Inside the threshold but not yet back inside the band: not a
        // breach (so it never counts towards a sustained-RED rollback), but
        // not a pass either (so it holds the promotion).
        (true, false) => GateStatus::Yellow,
        (false, _) => GateStatus::Red,
    }
}

/// What a gate measures, apart from the numbers.
struct Spec<'a> {
    name: &'static str,
    journey: Option<&'a str>,
    bound: Bound,
    /// Describes the value in the reason text.
    what: &'static str,
}

/// Inputs that do not change within a tick.
pub struct GateContext<'a> {
    pub journeys: &'a Journeys,
    pub limits: &'a [JourneyLimits],
    pub rollout: &'a RolloutConfig,
    /// The current phase's P95 gate in ms.
    pub phase_p95_ms: f64,
    /// Gate statuses of the previous tick, by [`GateResult::key`].
    pub previous: &'a BTreeMap<String, GateStatus>,
}

impl GateContext<'_> {
    fn was_green(&self, key: &str) -> bool {
        self.previous
            .get(key)
            .is_none_or(|s| *s == GateStatus::Green)
    }

    fn gate(&self, spec: Spec<'_>, value: Option<f64>, threshold: f64, samples: u64) -> GateResult {
        let Spec {
            name,
            journey,
            bound,
            what,
        } = spec;
        let mut g = GateResult {
            name: name.into(),
            journey: journey.map(String::from),
            status: GateStatus::Yellow,
            value,
            threshold,
            samples,
            reason: String::new(),
        };
        let min = self.rollout.min_samples;
        match value {
            Some(_) if samples < min => {
                g.reason = format!("insufficient data: {samples} of {min} samples");
            }
            None => g.reason = "insufficient data: no samples".into(),
            Some(v) => {
                g.status = judge(v, threshold, bound, self.was_green(&g.key()));
                let rel = match bound {
                    Bound::Max => "<=",
                    Bound::Min => ">=",
                };
                g.reason = match g.status {
                    GateStatus::Green => format!("{what} {} {rel} {}", fmt(v), fmt(threshold)),
                    GateStatus::Yellow => {
                        format!(
                            "{what} {} recovering: not yet inside the {:.0}% band",
                            fmt(v),
                            RECOVER_BAND * 100.0
                        )
                    }
                    _ => format!("{what} {} breaches {rel} {}", fmt(v), fmt(threshold)),
                };
            }
        }
        g
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// Evaluates every gate of this issue's scope over one window.
pub fn evaluate(window: &Window, ctx: &GateContext<'_>) -> Evaluation {
    let mut ev = Evaluation {
        window_ms: window.duration_ms,
        v1: VariantKpi::of(&window.variant_total(Variant::V1)),
        v2: VariantKpi::of(&window.variant_total(Variant::V2)),
        ..Default::default()
    };
    let cfg = ctx.rollout;
    for id in ctx.journeys.ids() {
        let name = ctx.journeys.name(id);
        let kind = ctx.journeys.kind(id);
        let v1 = VariantKpi::of(window.cell(id, Variant::V1));
        let v2 = VariantKpi::of(window.cell(id, Variant::V2));
        let limits = ctx.limits.get(id.index()).cloned().unwrap_or_default();
        // A journey nobody used in the window has nothing to judge; one with
        // some traffic but too little on V2 is YELLOW below.
        if v1.requests + v2.requests > 0 {
            let threshold = limits.p95_ms.unwrap_or(ctx.phase_p95_ms);
            let spec = Spec {
                name: "latency_p95",
                journey: Some(name),
                bound: Bound::Max,
                what: "V2 P95 ms",
            };
            ev.gates
                .push(ctx.gate(spec, v2.p95_ms, threshold, v2.requests));
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
                let value = v2.error_rate.map(|e| 1.0 - e);
                let spec = Spec {
                    name: gate,
                    journey: Some(name),
                    bound: Bound::Min,
                    what: "V2 success",
                };
                ev.gates.push(ctx.gate(spec, value, min, v2.requests));
            }
        }
        ev.journeys.push(JourneyKpi {
            journey: name.to_string(),
            kind,
            v1,
            v2,
        });
    }
    // 5xx rate: absolute ceiling, and no worse than V1 beyond the margin.
    let v1_rate = ev.v1.error_rate.unwrap_or(0.0);
    let threshold = cfg.error_rate_max.min(v1_rate + cfg.error_rate_margin);
    let spec = Spec {
        name: "error_rate",
        journey: None,
        bound: Bound::Max,
        what: "V2 5xx rate",
    };
    let mut g = ctx.gate(spec, ev.v2.error_rate, threshold, ev.v2.requests);
    if g.status != GateStatus::Green && threshold < cfg.error_rate_max {
        g.reason.push_str(&format!(
            " (V1 {} + margin {})",
            fmt(v1_rate),
            fmt(cfg.error_rate_margin)
        ));
    }
    ev.gates.insert(0, g);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::journeys::JourneyId;
    use std::time::Duration;

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

    fn eval(cfg: &Config, w: &Window, prev: &BTreeMap<String, GateStatus>) -> Evaluation {
        evaluate(
            w,
            &GateContext {
                journeys: &cfg.journeys,
                limits: &cfg.journey_limits,
                rollout: &cfg.rollout,
                phase_p95_ms: 130.0,
                previous: prev,
            },
        )
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
        assert_eq!(ev.gates.len(), 1 + 2 + 1);
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
            (1, Variant::V2) => cell(c, 1000, 20, 10),
            (0 | 1, Variant::V1) => cell(c, 1000, 20, 0),
            _ => {}
        });
        let ev = eval(&cfg, &w, &BTreeMap::new());
        assert_eq!(status(&ev, "latency_p95/search"), GateStatus::Red);
        assert_eq!(status(&ev, "latency_p95/payments"), GateStatus::Green);
        // 10 of 1000 payments failed: 99.0 % < 99.5 %.
        assert_eq!(status(&ev, "payment_success/payments"), GateStatus::Red);
        // 10 of 2000 = 0.5 % overall, but V1 had 0 %: worse than V1 + 0.1 %.
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

    #[test]
    fn recovery_needs_the_band() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        // 128 ms: inside 130 but not inside 130 * 0.95 = 123.5.
        let w = window(&cfg, |id, _, c| {
            if id.index() == 0 {
                cell(c, 500, 128, 0)
            }
        });
        let was_red = BTreeMap::from([("latency_p95/search".to_string(), GateStatus::Red)]);
        // Inside the threshold but not the band: recovering, YELLOW (not a breach).
        assert_eq!(
            status(&eval(&cfg, &w, &was_red), "latency_p95/search"),
            GateStatus::Yellow
        );
        assert_eq!(
            status(&eval(&cfg, &w, &BTreeMap::new()), "latency_p95/search"),
            GateStatus::Green
        );
        let w = window(&cfg, |id, _, c| {
            if id.index() == 0 {
                cell(c, 500, 120, 0)
            }
        });
        assert_eq!(
            status(&eval(&cfg, &w, &was_red), "latency_p95/search"),
            GateStatus::Green
        );
        let _ = Duration::ZERO;
    }
}
