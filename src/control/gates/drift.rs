//! Drift: the control (V1) of this rollout against the golden baseline the
//! last promoted rollout stored. A canary is judged against V1 in the same
//! window; drift says whether V1 itself still looks like the version that
//! was promoted (a slower database, a noisy neighbour, a changed traffic
//! mix), which would make every comparison with V1 a comparison with a
//! moving target.
//!
//! ```text
//! reference  = per journey, the promoted variant's figures in the baseline
//!              (V2's at cutover; V1's for a journey V2 did not serve)
//! p95 drift  = V1 P95 / reference P95 - 1            (relative)
//! 5xx drift  = V1 5xx rate - reference 5xx rate      (absolute)
//! ```
//!
//! Always reported (`Evaluation::drift`, the reports); a gate only when
//! `[gates] drift_max` is set: per journey, V1's P95 at most `drift_max`
//! above the reference's. The reference is one stored number, not a sample,
//! so the gate is a value gate under either judge (no test, no counts), and
//! it only holds: V1 drifting is no evidence against V2, so it never rolls
//! back. Without V1 traffic (V2 at 100 %) there is nothing to compare.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::judge::{Bound, Evidence, Measure};
use super::{Evaluation, Gate, GateContext, JourneyKpi};

/// A baseline journey's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub p95_ms: Option<f64>,
    pub error_rate: Option<f64>,
}

/// The stored golden baseline, as the drift reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    pub sha256: String,
    pub journeys: BTreeMap<String, Figures>,
}

impl Baseline {
    /// From the baseline's per-journey KPIs: the promoted variant's figures.
    pub fn from_journeys(sha256: String, journeys: &[JourneyKpi]) -> Self {
        let journeys = journeys
            .iter()
            .map(|j| {
                let k = if j.v2.requests > 0 { &j.v2 } else { &j.v1 };
                let f = Figures {
                    p95_ms: k.p95_ms,
                    error_rate: k.error_rate,
                };
                (j.journey.clone(), f)
            })
            .collect();
        Baseline { sha256, journeys }
    }
}

/// What the next rollout compares V1 with.
#[derive(Clone, Debug, PartialEq)]
pub enum Reference {
    Baseline(Baseline),
    /// No usable baseline, and why (none stored yet, unreadable, checksum).
    None(String),
}

/// The drift of every journey, as reports and the status show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The baseline's sha256; `None` when there is no reference.
    pub baseline: Option<String>,
    /// Why there is no reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub journeys: Vec<JourneyDrift>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JourneyDrift {
    pub journey: String,
    pub v1_requests: u64,
    pub v1_p95_ms: Option<f64>,
    pub baseline_p95_ms: Option<f64>,
    /// V1 P95 / baseline P95 - 1.
    pub p95_drift: Option<f64>,
    pub v1_error_rate: Option<f64>,
    pub baseline_error_rate: Option<f64>,
    /// V1 5xx rate - baseline 5xx rate.
    pub error_rate_drift: Option<f64>,
}

impl Drift {
    /// The report's section: one row per journey, or why there is no reference.
    pub(crate) fn markdown(&self) -> String {
        let Some(sha) = &self.baseline else {
            let why = self.note.as_deref().unwrap_or("no reference");
            return format!("\n## Drift (V1 vs golden baseline)\n\nNo drift reference: {why}.\n");
        };
        let mut m = format!(
            "\n## Drift (V1 vs golden baseline {})\n\n| journey | V1 req | V1 P95 ms | baseline P95 ms | P95 drift | V1 5xx | baseline 5xx |\n|---|---|---|---|---|---|---|\n",
            &sha[..sha.len().min(12)]
        );
        let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
        let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:+.1}%", v * 100.0));
        let share = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.2}%", v * 100.0));
        for d in &self.journeys {
            m.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                d.journey,
                d.v1_requests,
                ms(d.v1_p95_ms),
                ms(d.baseline_p95_ms),
                pct(d.p95_drift),
                share(d.v1_error_rate),
                share(d.baseline_error_rate)
            ));
        }
        m
    }
}

/// Reports the drift of V1 in `ev` against `reference`, and judges the
/// `drift` gates when `drift_max` is configured.
pub(crate) fn judge(ctx: &GateContext<'_>, ev: &mut Evaluation, reference: &Reference) {
    let b = match reference {
        Reference::None(why) => {
            ev.drift = Some(Drift {
                baseline: None,
                note: Some(why.clone()),
                journeys: Vec::new(),
            });
            return;
        }
        Reference::Baseline(b) => b,
    };
    let journeys: Vec<JourneyDrift> = ev
        .journeys
        .iter()
        .filter_map(|j| {
            let base = b.journeys.get(&j.journey)?;
            let v1 = &j.v1;
            Some(JourneyDrift {
                journey: j.journey.clone(),
                v1_requests: v1.requests,
                v1_p95_ms: v1.p95_ms,
                baseline_p95_ms: base.p95_ms,
                p95_drift: v1
                    .p95_ms
                    .zip(base.p95_ms.filter(|p| *p > 0.0))
                    .map(|(v, r)| v / r - 1.0),
                v1_error_rate: v1.error_rate,
                baseline_error_rate: base.error_rate,
                error_rate_drift: v1.error_rate.zip(base.error_rate).map(|(v, r)| v - r),
            })
        })
        .collect();
    if let Some(max) = ctx.cfg.gates.drift_max {
        if ctx.comparative && !ctx.shadow {
            for d in &journeys {
                let Some(reference) = d.baseline_p95_ms else {
                    continue;
                };
                // Like every per-journey gate: a journey nobody used in the
                // window has nothing to judge.
                let used = ev
                    .journeys
                    .iter()
                    .any(|j| j.journey == d.journey && j.v1.requests + j.v2.requests > 0);
                if !used {
                    continue;
                }
                ev.gates.push(ctx.gate(Measure {
                    gate: Gate::Drift,
                    journey: Some(&d.journey),
                    bound: Bound::Max,
                    what: "V1 P95 ms against the baseline's",
                    value: d.v1_p95_ms,
                    threshold: reference * (1.0 + max),
                    samples: d.v1_requests,
                    min_samples: ctx.cfg.rollout.min_samples,
                    control_samples: None,
                    evidence: Evidence::Value,
                    counted: "",
                    counts: None,
                }));
            }
        }
    }
    ev.drift = Some(Drift {
        baseline: Some(b.sha256.clone()),
        note: None,
        journeys,
    });
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::config::Config;
    use crate::control::gates::{GateStatus, VariantKpi};
    use crate::control::rollout::tests::{config, ALL_FLAGS, PLAIN_PHASES};
    use crate::control::state::RolloutState;
    use crate::control::step::gate_context;
    use crate::routing::journeys::JourneyKind;
    use crate::telemetry::Window;

    fn cfg(gates: &str) -> Config {
        config(ALL_FLAGS, &format!("{PLAIN_PHASES}\n[gates]\n{gates}"))
    }

    /// The baseline: search at P95 100 ms and 0.1 % 5xx on the promoted V2.
    fn reference() -> Reference {
        let kpi = |p95, rate| VariantKpi {
            requests: 1000,
            p95_ms: Some(p95),
            error_rate: Some(rate),
            ..VariantKpi::default()
        };
        let journeys = [JourneyKpi {
            journey: "search".into(),
            kind: JourneyKind::Normal,
            v1: VariantKpi::default(),
            v2: kpi(100.0, 0.001),
        }];
        Reference::Baseline(Baseline::from_journeys("ab".repeat(32), &journeys))
    }

    /// A window in which V1's search ran `requests` at P95 `p95`.
    fn judged(cfg: &Config, weight_v2: f64, requests: u64, p95: f64, r: &Reference) -> Evaluation {
        let mut ev = Evaluation {
            journeys: vec![JourneyKpi {
                journey: "search".into(),
                kind: JourneyKind::Normal,
                v1: VariantKpi {
                    requests,
                    p95_ms: Some(p95),
                    error_rate: Some(0.003),
                    ..VariantKpi::default()
                },
                v2: VariantKpi::default(),
            }],
            ..Evaluation::default()
        };
        let mut s = RolloutState::new(Default::default());
        s.weight_v2 = weight_v2;
        let empty = Window::empty_with(cfg.journeys.len(), cfg.beacons.names.len());
        let now = Utc.with_ymd_and_hms(2025, 3, 3, 10, 0, 0).unwrap();
        let ctx = gate_context(cfg, &s, &empty, now);
        judge(&ctx, &mut ev, r);
        ev
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn drift_is_reported_and_gated_only_when_configured() {
        let r = reference();
        // Not configured: reported, no gate.
        let ev = judged(&cfg(""), 5.0, 500, 130.0, &r);
        assert!(ev.gates.is_empty(), "{:?}", ev.gates);
        let d = ev.drift.expect("always reported");
        assert_eq!(d.baseline.as_deref(), Some("ab".repeat(32).as_str()));
        let j = &d.journeys[0];
        assert!(close(j.p95_drift, 0.30), "{j:?}");
        assert!(close(j.error_rate_drift, 0.002), "{j:?}");
        assert!(d
            .markdown()
            .contains("| search | 500 | 130.0 | 100.0 | +30.0% |"));

        // Configured at 10 %: 105 ms is inside, 130 ms is RED and only holds.
        let c = cfg("drift_max = 0.10");
        let g = &judged(&c, 5.0, 500, 105.0, &r).gates[0];
        assert_eq!(
            (g.name, g.status),
            (Gate::Drift, GateStatus::Green),
            "{g:?}"
        );
        assert!(close(Some(g.threshold), 110.0));
        let g = &judged(&c, 5.0, 500, 130.0, &r).gates[0];
        assert_eq!(g.status, GateStatus::Red, "{g:?}");
        assert!(!g.name.may_roll_back());
        // Too little V1 traffic: insufficient data, never GREEN.
        let g = &judged(&c, 5.0, 10, 100.0, &r).gates[0];
        assert_eq!(g.status, GateStatus::Yellow, "{g:?}");
        // V2 at 100 %: no control to compare.
        assert!(judged(&c, 100.0, 500, 130.0, &r).gates.is_empty());
    }

    #[test]
    fn a_missing_or_corrupt_baseline_is_no_reference() {
        let dir = tempfile::tempdir().unwrap();
        let load = || crate::control::webhook::load_baseline(dir.path());
        assert!(matches!(load(), Reference::None(why) if why.contains("no golden baseline")));
        // Without a reference the gate is not judged, and the report says why.
        let ev = judged(&cfg("drift_max = 0.10"), 5.0, 500, 130.0, &load());
        assert!(ev.gates.is_empty());
        let d = ev.drift.unwrap();
        assert!(d.baseline.is_none() && d.markdown().contains("No drift reference"));

        let written = judged(&cfg(""), 100.0, 500, 90.0, &reference());
        let (path, sha) =
            crate::control::webhook::write_baseline(dir.path(), &written).expect("written");
        match load() {
            Reference::Baseline(b) => {
                assert_eq!(b.sha256, sha);
                assert!(close(b.journeys["search"].p95_ms, 90.0), "{b:?}");
            }
            Reference::None(why) => panic!("{why}"),
        }
        let mut body = std::fs::read(&path).unwrap();
        body[0] ^= 1;
        std::fs::write(&path, &body).unwrap();
        assert!(matches!(load(), Reference::None(why) if why.contains("does not match")));
        std::fs::write(&path, b"{").unwrap();
        std::fs::write(
            path.with_extension("json.sha256"),
            format!(
                "{}  baseline.json\n",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"{"))
            ),
        )
        .unwrap();
        assert!(matches!(load(), Reference::None(_)));
    }
}
