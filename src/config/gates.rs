//! `[gates]`: how the gates judge, and the funnel and timing gates built from
//! journeys and beacons.

use std::time::Duration;

use serde::Deserialize;

use super::values::{defaults, fraction, must_be, unique_label, Dur};
use super::{invalid, BeaconsConfig, Invalid};
use crate::routing::journeys::Journeys;

defaults! {
    /// The significance tests' documented error rates assume it
    /// (`control/gates/significance.rs`).
    pub(crate) const DEFAULT_ALPHA: f64 = 0.01 => fn default_alpha() -> f64;
    /// The sequential judge's error in calling one gate inside for a phase.
    const DEFAULT_ALPHA_INSIDE: f64 = 0.05 => fn default_alpha_inside() -> f64;
    const DEFAULT_DISPERSION: f64 = 1.0 => fn default_dispersion() -> f64;
    const DEFAULT_RATE_FLOOR: f64 = 0.001 => fn default_rate_floor() -> f64;
    /// Both the promote and the rollback band.
    const DEFAULT_BAND: f64 = 0.05 => fn default_band() -> f64;
    const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60) => fn default_cooldown() -> Dur;
    const DEFAULT_LATENCY_VS_CONTROL_MAX: f64 = 0.10 => fn default_latency_vs_control_max() -> f64;
    const DEFAULT_LATENCY_VS_CONTROL_SLACK_MS: f64 = 1.0
        => fn default_latency_vs_control_slack_ms() -> f64;
    const DEFAULT_JS_ERRORS_MAX_INCREASE: f64 = 0.10 => fn default_js_errors_max_increase() -> f64;
    const DEFAULT_CACHE_HIT_MIN: f64 = 0.85 => fn default_cache_hit_min() -> f64;
    const DEFAULT_SLO_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600)
        => fn default_slo_period() -> Dur;
    const DEFAULT_ERROR_BUDGET_MAX: f64 = 0.05 => fn default_error_budget_max() -> f64;
    const DEFAULT_SPLIT_SKEW_TOLERANCE: f64 = 0.20 => fn default_split_skew_tolerance() -> f64;
    const DEFAULT_FUNNEL_MAX_DROP: f64 = 0.03 => fn default_funnel_max_drop() -> f64;
    const DEFAULT_TIMING_MAX_INCREASE: f64 = 0.05 => fn default_timing_max_increase() -> f64;
    /// "Revenue: positive signal": V2 may earn at most 5 % less per user.
    const DEFAULT_REVENUE_MAX_DROP: f64 = 0.05 => fn default_revenue_max_drop() -> f64;
}

/// `[gates]`: how the gates judge, beyond the thresholds of `[rollout]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileGates {
    /// `sequential` (evidence accumulated over the rollout) or `window`
    /// (a fixed-window test repeated each tick).
    #[serde(default)]
    pub method: Method,
    /// `sequential`: the false-rollback rate of a whole healthy rollout;
    /// `window`: the significance level of each test at each tick.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// `sequential`: the error in calling a gate inside over a phase.
    #[serde(default = "default_alpha_inside")]
    pub alpha_inside: f64,
    /// `sequential`: how many requests count as one independent trial
    /// (>= 1; raise it when errors cluster by user).
    #[serde(default = "default_dispersion")]
    pub dispersion: f64,
    /// `sequential`: a V2 rate of bad users below this share is never
    /// harm on a comparative gate (JS errors), whatever V1's rate.
    #[serde(default = "default_rate_floor")]
    pub rate_floor: f64,
    /// `sequential`: judge each journey's tail against V1's P95
    /// (`tail_vs_control`); it needs a few hundred V2 samples per journey
    /// and phase to show inside.
    #[serde(default = "super::values::yes")]
    pub tail_vs_control: bool,
    /// A gate that is not GREEN turns GREEN only inside its threshold by this share...
    #[serde(default = "default_band")]
    pub promote_band: f64,
    /// ...and turns RED only beyond its threshold by this share.
    #[serde(default = "default_band")]
    pub rollback_band: f64,
    /// How long a non-GREEN gate must stay inside the promote band before it is GREEN again.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    /// `latency_vs_control`: V2's median may exceed V1's by this share (plus the slack).
    #[serde(default = "default_latency_vs_control_max")]
    pub latency_vs_control_max: f64,
    #[serde(default = "default_latency_vs_control_slack_ms")]
    pub latency_vs_control_slack_ms: f64,
    /// Beacon name counting page views: enables the `js_errors` gate.
    pub js_errors_per: Option<String>,
    /// `js_errors`: V2's JS errors per page view at most this share above V1's.
    #[serde(default = "default_js_errors_max_increase")]
    pub js_errors_max_increase: f64,
    /// `cache_hit`: minimum V2 cache hit ratio on `read_heavy` journeys.
    #[serde(default = "default_cache_hit_min")]
    pub cache_hit_min: f64,
    /// `error_budget`: the SLO (share of good requests) whose budget V2 spends...
    pub slo_target: Option<f64>,
    /// ...over this period...
    #[serde(default = "default_slo_period")]
    pub slo_period: Dur,
    /// ...of which V2 may consume at most this share during the rollout.
    #[serde(default = "default_error_budget_max")]
    pub error_budget_max: f64,
    /// `split_skew`: observed V2 share of users within this share of the target.
    #[serde(default = "default_split_skew_tolerance")]
    pub split_skew_tolerance: f64,
    /// Beacon name of `revenue` events: enables the `revenue` gate.
    pub revenue_per: Option<String>,
    /// `revenue`: V2's revenue per user at most this share below V1's.
    #[serde(default = "default_revenue_max_drop")]
    pub revenue_max_drop: f64,
    /// `drift`: V1's P95 per journey at most this share above the last golden
    /// baseline's; unset = drift is reported, not gated.
    pub drift_max: Option<f64>,
    #[serde(default)]
    pub funnels: Vec<FileFunnel>,
    #[serde(default)]
    pub timings: Vec<FileTiming>,
}

/// `[[gates.funnels]]`: a conversion ratio V2 vs V1.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileFunnel {
    pub name: String,
    /// `"journey:NAME"` (its 2xx/3xx requests) or `"beacon:NAME"` (its events).
    pub numerator: String,
    pub denominator: String,
    /// V2's ratio may be at most this share below V1's.
    #[serde(default = "default_funnel_max_drop")]
    pub max_drop: f64,
    pub min_samples: Option<u64>,
}

/// `[[gates.timings]]`: a timing beacon V2 vs V1 (median, Mann-Whitney).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTiming {
    /// A configured beacon name whose events are `timing`.
    pub name: String,
    #[serde(default = "default_timing_max_increase")]
    pub max_increase: f64,
    pub min_samples: Option<u64>,
}

/// How gates reach a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Anytime-valid evidence over the rollout (`control::gates::sequential`).
    #[default]
    Sequential,
    /// A fixed-window test at `alpha`, repeated each tick, with bands and a
    /// cooldown (`control::gates::judge`).
    Window,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Sequential => "sequential",
            Method::Window => "window",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sequential" => Ok(Method::Sequential),
            "window" => Ok(Method::Window),
            _ => Err(format!("{s:?}: use \"sequential\" or \"window\"")),
        }
    }
}

/// How gates judge (see `control::gates` for the bands and the cooldown).
#[derive(Debug, Clone, PartialEq)]
pub struct GatesConfig {
    pub method: Method,
    pub alpha: f64,
    pub alpha_inside: f64,
    pub dispersion: f64,
    pub rate_floor: f64,
    pub tail_vs_control: bool,
    pub promote_band: f64,
    pub rollback_band: f64,
    pub cooldown: Duration,
    pub latency_vs_control_max: f64,
    pub latency_vs_control_slack_ms: f64,
    /// Index of the page-view beacon name; `None` = no `js_errors` gate.
    pub js_errors_per: Option<usize>,
    pub js_errors_max_increase: f64,
    pub cache_hit_min: f64,
    pub slo: Option<Slo>,
    pub error_budget_max: f64,
    pub split_skew_tolerance: f64,
    /// Index of the revenue beacon name; `None` = no `revenue` gate.
    pub revenue_per: Option<usize>,
    pub revenue_max_drop: f64,
    /// `None`: no `drift` gate (the drift is still reported).
    pub drift_max: Option<f64>,
    pub funnels: Vec<Funnel>,
    pub timings: Vec<Timing>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Share of requests that must be good (non-5xx), e.g. 0.999.
    pub target: f64,
    pub period: Duration,
}

/// Where a funnel count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// 2xx and 3xx requests of a journey (index).
    Journey(usize),
    /// Events of a beacon name (index), any type.
    Beacon(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    pub name: String,
    pub numerator: Step,
    pub denominator: Step,
    pub max_drop: f64,
    pub min_samples: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub name: String,
    /// Index of the beacon name.
    pub beacon: usize,
    pub max_increase: f64,
    pub min_samples: Option<u64>,
}

pub(super) fn validate(
    g: FileGates,
    journeys: &Journeys,
    beacons: &BeaconsConfig,
) -> Result<GatesConfig, Invalid> {
    if !(g.alpha > 0.0 && g.alpha <= 0.5) {
        return Err(invalid(
            "gates.alpha",
            format!("{} must be above 0 and at most 0.5", g.alpha),
        ));
    }
    let band = |key: &str, v: f64| {
        let ok = (0.0..=0.5).contains(&v);
        must_be(key, v, ok, "a share between 0 and 0.5")
    };
    let non_negative = |key: &str, v: f64| {
        let ok = v.is_finite() && v >= 0.0;
        must_be(key, v, ok, "a number >= 0")
    };
    if !(g.alpha_inside > 0.0 && g.alpha_inside <= 0.5) {
        return Err(invalid(
            "gates.alpha_inside",
            format!("{} must be above 0 and at most 0.5", g.alpha_inside),
        ));
    }
    if !(g.dispersion.is_finite() && g.dispersion >= 1.0) {
        return Err(invalid(
            "gates.dispersion",
            format!("{} must be a number >= 1", g.dispersion),
        ));
    }
    Ok(GatesConfig {
        method: g.method,
        alpha: g.alpha,
        alpha_inside: g.alpha_inside,
        dispersion: g.dispersion,
        rate_floor: fraction("gates.rate_floor", g.rate_floor)?,
        tail_vs_control: g.tail_vs_control,
        promote_band: band("gates.promote_band", g.promote_band)?,
        rollback_band: band("gates.rollback_band", g.rollback_band)?,
        cooldown: g.cooldown.0,
        latency_vs_control_max: non_negative(
            "gates.latency_vs_control_max",
            g.latency_vs_control_max,
        )?,
        latency_vs_control_slack_ms: non_negative(
            "gates.latency_vs_control_slack_ms",
            g.latency_vs_control_slack_ms,
        )?,
        js_errors_per: g
            .js_errors_per
            .as_deref()
            .map(|n| beacon_index(beacons, "gates.js_errors_per", n))
            .transpose()?,
        js_errors_max_increase: non_negative(
            "gates.js_errors_max_increase",
            g.js_errors_max_increase,
        )?,
        cache_hit_min: fraction("gates.cache_hit_min", g.cache_hit_min)?,
        slo: match g.slo_target {
            None => None,
            Some(t) if t > 0.0 && t < 1.0 && !g.slo_period.0.is_zero() => Some(Slo {
                target: t,
                period: g.slo_period.0,
            }),
            Some(t) => {
                return Err(invalid(
                    "gates.slo_target",
                    format!("{t} must be a share strictly between 0 and 1 (e.g. 0.999), with a non-zero slo_period"),
                ))
            }
        },
        error_budget_max: fraction("gates.error_budget_max", g.error_budget_max)?,
        split_skew_tolerance: non_negative(
            "gates.split_skew_tolerance",
            g.split_skew_tolerance,
        )?,
        revenue_per: g
            .revenue_per
            .as_deref()
            .map(|n| beacon_index(beacons, "gates.revenue_per", n))
            .transpose()?,
        revenue_max_drop: must_be(
            "gates.revenue_max_drop",
            g.revenue_max_drop,
            (0.0..1.0).contains(&g.revenue_max_drop),
            "a share in 0..1",
        )?,
        drift_max: g
            .drift_max
            .map(|d| {
                let ok = d.is_finite() && d > 0.0;
                must_be("gates.drift_max", d, ok, "a positive share (0.10 = 10 %)")
            })
            .transpose()?,
        funnels: funnels(g.funnels, journeys, beacons)?,
        timings: timings(g.timings, beacons)?,
    })
}

fn beacon_index(beacons: &BeaconsConfig, key: &str, name: &str) -> Result<usize, Invalid> {
    beacons
        .index(name)
        .map(usize::from)
        .ok_or_else(|| invalid(key, format!("{name:?} is not listed in `beacons.names`")))
}

fn step(key: &str, s: &str, journeys: &Journeys, beacons: &BeaconsConfig) -> Result<Step, Invalid> {
    match s.split_once(':') {
        Some(("journey", j)) => journeys
            .by_name(j)
            .filter(|id| *id != journeys.other())
            .map(|id| Step::Journey(id.index()))
            .ok_or_else(|| invalid(key, format!("no journey named {j:?}"))),
        Some(("beacon", b)) => beacon_index(beacons, key, b).map(Step::Beacon),
        _ => Err(invalid(
            key,
            format!("{s:?}: use \"journey:NAME\" or \"beacon:NAME\""),
        )),
    }
}

fn funnels(
    list: Vec<FileFunnel>,
    journeys: &Journeys,
    beacons: &BeaconsConfig,
) -> Result<Vec<Funnel>, Invalid> {
    let mut out: Vec<Funnel> = Vec::with_capacity(list.len());
    for (i, f) in list.into_iter().enumerate() {
        let key = |k: &str| format!("gates.funnels[{i}].{k}");
        unique_label(&key("name"), &f.name, out.iter().map(|x| x.name.as_str()))?;
        if !(0.0..1.0).contains(&f.max_drop) {
            return Err(invalid(
                key("max_drop"),
                format!("{} must be a share in 0..1", f.max_drop),
            ));
        }
        out.push(Funnel {
            numerator: step(&key("numerator"), &f.numerator, journeys, beacons)?,
            denominator: step(&key("denominator"), &f.denominator, journeys, beacons)?,
            name: f.name,
            max_drop: f.max_drop,
            min_samples: f.min_samples,
        });
    }
    Ok(out)
}

fn timings(list: Vec<FileTiming>, beacons: &BeaconsConfig) -> Result<Vec<Timing>, Invalid> {
    let mut out: Vec<Timing> = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        let key = |k: &str| format!("gates.timings[{i}].{k}");
        let beacon = beacon_index(beacons, &key("name"), &t.name)?;
        if out.iter().any(|x| x.beacon == beacon) {
            return Err(invalid(key("name"), format!("{:?} is used twice", t.name)));
        }
        if !(t.max_increase.is_finite() && t.max_increase >= 0.0) {
            return Err(invalid(
                key("max_increase"),
                format!("{} must be a number >= 0", t.max_increase),
            ));
        }
        out.push(Timing {
            name: t.name,
            beacon,
            max_increase: t.max_increase,
            min_samples: t.min_samples,
        });
    }
    Ok(out)
}
