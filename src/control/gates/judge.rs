//! Judging one measure: insufficient data, the zone of its value, the
//! significance of a breach and the gate's memory, into GREEN / YELLOW / RED
//! with a reason. Every family goes through [`GateContext::gate`], so the
//! zones, bands and cooldown of the module doc apply to all of them alike,
//! and the verdict is one exhaustive match over (recovering, zone,
//! significant).

use crate::config::GatesConfig;

use super::evidence::Counts;
use super::significance::ZTest;
use super::{Gate, GateContext, GateKey, GateResult, GateStatus, Recovery};

/// Direction of a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bound {
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
pub(super) enum Zone {
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
pub(super) fn zone(value: f64, threshold: f64, bound: Bound, g: &GatesConfig) -> Zone {
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
pub(super) struct Measure<'a> {
    pub gate: Gate,
    /// The journey, funnel, timing or region; `None` for an overall gate.
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
    /// What the sequential judge counts ("V2 5xx"), and this tick's counts
    /// of it; `None` for a gate without a sampling question, which the value
    /// judge keeps under either method.
    pub counted: &'a str,
    pub counts: Option<Counts>,
}

/// What it takes for a breach to count as RED.
#[derive(Clone, Copy, Debug)]
pub(super) enum Evidence {
    /// The value alone (no test applies: budget, concurrency).
    Value,
    /// A one-sided test of "V2 is worse than allowed" (than V1, or than the
    /// threshold itself) must be significant; `None` counts as not significant.
    Test(Option<ZTest>),
}

impl Evidence {
    /// The stronger of two tests of the same gate (the smaller p-value).
    pub(super) fn either(a: Option<ZTest>, b: Option<ZTest>) -> Evidence {
        Evidence::Test(match (a, b) {
            (Some(a), Some(b)) if b.p_value < a.p_value => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        })
    }
}

impl GateContext<'_> {
    /// Judges one measure: sequentially when it is tested and the method is
    /// `sequential`, else by the window judge below.
    pub(super) fn gate(&self, m: Measure<'_>) -> GateResult {
        match (&self.sequential, m.counts) {
            (Some(seq), Some(c)) => self.sequential(seq, m, c),
            _ => self.window_gate(m),
        }
    }

    /// The window judge: insufficient data, zone, significance, memory.
    fn window_gate(&self, m: Measure<'_>) -> GateResult {
        let key = GateKey::new(m.gate, m.journey);
        let mut g = GateResult {
            name: m.gate,
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
            evidence: None,
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

pub(super) fn fmt(v: f64) -> String {
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
