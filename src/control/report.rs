//! Gate reports (JSON + Markdown), phase summary cards and post-mortem
//! placeholders, written beside each other in `state_dir/reports/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::gates::{revenue, Evaluation, GateResult, GateStatus, JourneyKpi, Revenue, VariantKpi};
use super::state::{Action, Approval, Decision, Incident, StateError, Trigger};

/// Status of one rollback trigger at the time of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerStatus {
    pub trigger: String,
    pub fired: bool,
    pub detail: String,
}

/// The phase summary card posted at each step-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryCard {
    pub phase: String,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub error_rate_5xx: Option<f64>,
    pub payment_success: Option<f64>,
    pub top_anomalies: Vec<String>,
    pub recommended_action: String,
    /// [`revenue_lines`] of the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revenue: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub at: DateTime<Utc>,
    pub phase: Option<String>,
    pub weight_v2: f64,
    pub decision: Decision,
    pub gates: Vec<GateResult>,
    pub journeys: Vec<JourneyKpi>,
    pub v1: VariantKpi,
    pub v2: VariantKpi,
    pub window_ms: u64,
    pub triggers: Vec<TriggerStatus>,
    pub approvals: Vec<Approval>,
    pub incidents: Vec<Incident>,
    pub summary: Option<SummaryCard>,
    /// V1 against the last golden baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<super::gates::drift::Drift>,
}

/// Entry of `GET /api/v1/reports`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportIndex {
    pub id: String,
    pub at: DateTime<Utc>,
    pub phase: Option<String>,
    pub decision: String,
}

impl Report {
    pub fn index(&self) -> ReportIndex {
        ReportIndex {
            id: self.id.clone(),
            at: self.at,
            phase: self.phase.clone(),
            decision: self.decision.action.report_word().to_string(),
        }
    }
}

/// Payment success over every payment journey of V2.
pub(crate) fn payment_success(ev: &Evaluation) -> Option<f64> {
    let (n, bad) = ev
        .journeys
        .iter()
        .filter(|j| j.kind == crate::routing::journeys::JourneyKind::Payment)
        .fold((0, 0), |(n, bad), j| {
            (n + j.v2.requests, bad + j.v2.server_errors)
        });
    (n > 0).then(|| 1.0 - bad as f64 / n as f64)
}

/// The largest canary-vs-control degradations, worst first.
pub(crate) fn top_anomalies(ev: &Evaluation, n: usize) -> Vec<String> {
    let mut found: Vec<(f64, String)> = Vec::new();
    for j in &ev.journeys {
        if let (Some(a), Some(b)) = (j.v1.p95_ms, j.v2.p95_ms) {
            if b > a * 1.05 {
                found.push((
                    (b - a) / a,
                    format!(
                        "{}: V2 P95 {b:.1} ms vs V1 {a:.1} ms (+{:.0}%)",
                        j.journey,
                        (b / a - 1.0) * 100.0
                    ),
                ));
            }
        }
        if let (Some(a), Some(b)) = (j.v1.error_rate, j.v2.error_rate) {
            if b > a {
                found.push((
                    (b - a) * 100.0,
                    format!(
                        "{}: V2 5xx {:.2}% vs V1 {:.2}%",
                        j.journey,
                        b * 100.0,
                        a * 100.0
                    ),
                ));
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().take(n).map(|(_, s)| s).collect()
}

pub(crate) fn summary_card(phase: &str, ev: &Evaluation, action: Action) -> SummaryCard {
    SummaryCard {
        phase: phase.into(),
        p50_ms: ev.v2.p50_ms,
        p95_ms: ev.v2.p95_ms,
        p99_ms: ev.v2.p99_ms,
        error_rate_5xx: ev.v2.error_rate,
        payment_success: payment_success(ev),
        top_anomalies: top_anomalies(ev, 3),
        recommended_action: action.report_word().into(),
        revenue: revenue_lines(&ev.v1, &ev.v2),
    }
}

/// "Revenue per user (NAME): V1 x, V2 y (V2/V1 z %)" for each revenue
/// beacon name of the window (amounts in its minor currency unit), with the
/// users who paid among the users seen: the share the `revenue` gate tests.
pub(crate) fn revenue_lines(v1: &VariantKpi, v2: &VariantKpi) -> Vec<String> {
    let per_user = |r: Option<&Revenue>| {
        r.and_then(Revenue::per_user)
            .map_or("–".into(), |v| format!("{v:.2}"))
    };
    let paying =
        |r: Option<&Revenue>| r.map_or("–".into(), |r| format!("{} of {}", r.payers, r.users));
    v2.revenue
        .iter()
        .map(|r2| {
            let r1 = revenue::of(v1, &r2.name);
            let ratio = match (r1.and_then(Revenue::per_user), r2.per_user()) {
                (Some(a), Some(b)) if a > 0.0 => format!(" (V2/V1 {:.1} %)", b / a * 100.0),
                _ => String::new(),
            };
            format!(
                "Revenue per user ({}): V1 {}, V2 {}{ratio}; users who paid: V1 {}, V2 {}",
                r2.name,
                per_user(r1),
                per_user(Some(r2)),
                paying(r1),
                paying(Some(r2)),
            )
        })
        .collect()
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}{unit}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.2}%", v * 100.0))
}

fn badge(s: GateStatus) -> &'static str {
    match s {
        GateStatus::Green => "🟢 GREEN",
        GateStatus::Yellow => "🟡 YELLOW",
        GateStatus::Red => "🔴 RED",
    }
}

/// The Markdown gate report.
pub(crate) fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let phase = r.phase.as_deref().unwrap_or("(none)");
    let _ = writeln!(
        m,
        "# Gate report {} — {}",
        r.id,
        r.decision.action.report_word()
    );
    let _ = writeln!(m);
    let _ = writeln!(m, "- **When:** {}", r.at.to_rfc3339());
    let _ = writeln!(m, "- **Phase:** {phase} (V2 weight {}%)", r.weight_v2);
    let _ = writeln!(
        m,
        "- **Decision:** {} — {}",
        r.decision.action.report_word(),
        r.decision.reason
    );
    let _ = writeln!(m, "- **Window:** {:.0} s", r.window_ms as f64 / 1000.0);
    let _ = writeln!(m, "\n## KPI gates\n\n| gate | journey | status | value | threshold | samples | reason |\n|---|---|---|---|---|---|---|");
    for g in &r.gates {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} |",
            g.name,
            g.journey.as_deref().unwrap_or("all"),
            badge(g.status),
            g.value.map_or("–".into(), |v| format!("{v:.4}")),
            g.threshold,
            g.samples,
            g.reason
        );
    }
    let _ = writeln!(m, "\n## Control (V1) vs canary (V2)\n\n| journey | V1 req | V2 req | V1 P50/P95/P99 ms | V2 P50/P95/P99 ms | V1 5xx | V2 5xx |\n|---|---|---|---|---|---|---|");
    let row = |m: &mut String, name: &str, a: &VariantKpi, b: &VariantKpi| {
        let q = |k: &VariantKpi| {
            format!(
                "{} / {} / {}",
                opt(k.p50_ms, ""),
                opt(k.p95_ms, ""),
                opt(k.p99_ms, "")
            )
        };
        let _ = writeln!(
            m,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            a.requests,
            b.requests,
            q(a),
            q(b),
            pct(a.error_rate),
            pct(b.error_rate)
        );
    };
    for j in &r.journeys {
        row(&mut m, &j.journey, &j.v1, &j.v2);
    }
    row(&mut m, "**all**", &r.v1, &r.v2);
    for line in revenue_lines(&r.v1, &r.v2) {
        let _ = writeln!(m, "\n{line}");
    }
    if let Some(d) = &r.drift {
        m.push_str(&d.markdown());
    }
    let _ = writeln!(
        m,
        "\n## Rollback triggers\n\n| trigger | fired | status |\n|---|---|---|"
    );
    for t in &r.triggers {
        let _ = writeln!(
            m,
            "| {} | {} | {} |",
            t.trigger,
            if t.fired { "**YES**" } else { "no" },
            t.detail
        );
    }
    let _ = writeln!(m, "\n## Approvals\n");
    if r.approvals.is_empty() {
        let _ = writeln!(m, "none recorded");
    }
    for a in &r.approvals {
        let _ = writeln!(
            m,
            "- {} approved by {} at {}",
            a.role,
            a.by,
            a.at.to_rfc3339()
        );
    }
    if !r.incidents.is_empty() {
        let _ = writeln!(m, "\n## Incidents\n");
        for i in &r.incidents {
            let _ = writeln!(
                m,
                "- #{} Sev-{} at {}: {}",
                i.id,
                i.severity,
                i.at.to_rfc3339(),
                i.summary
            );
        }
    }
    if let Some(c) = &r.summary {
        let _ = writeln!(m, "\n## Phase summary card: {}\n", c.phase);
        let _ = writeln!(
            m,
            "- P50 / P95 / P99: {} / {} / {} ms",
            opt(c.p50_ms, ""),
            opt(c.p95_ms, ""),
            opt(c.p99_ms, "")
        );
        let _ = writeln!(m, "- 5xx rate: {}", pct(c.error_rate_5xx));
        let _ = writeln!(m, "- Payment success: {}", pct(c.payment_success));
        for line in &c.revenue {
            let _ = writeln!(m, "- {line}");
        }
        let _ = writeln!(m, "- Top anomalies:");
        if c.top_anomalies.is_empty() {
            let _ = writeln!(m, "  - none");
        }
        for a in &c.top_anomalies {
            let _ = writeln!(m, "  - {a}");
        }
        let _ = writeln!(m, "- Recommended action: **{}**", c.recommended_action);
    }
    m
}

/// The post-mortem placeholder written at once on every rollback.
pub(crate) fn postmortem(r: &Report, timeline: &[Decision]) -> String {
    let mut m = String::new();
    let trigger = r.decision.trigger.map_or("unknown", Trigger::label);
    let _ = writeln!(
        m,
        "# Post-mortem (placeholder): rollback at {}\n",
        r.at.to_rfc3339()
    );
    let _ = writeln!(m, "Status: DRAFT — complete within 48 hours.\n");
    let _ = writeln!(m, "## Trigger\n\n- **{trigger}**: {}\n- Phase: {} (V2 weight before rollback: see timeline)\n", r.decision.reason, r.phase.as_deref().unwrap_or("(none)"));
    let _ = writeln!(m, "## Timeline of decisions\n");
    for d in timeline {
        let _ = writeln!(
            m,
            "- {} **{}** {}",
            d.at.to_rfc3339(),
            d.action.report_word(),
            d.reason
        );
    }
    let _ = writeln!(m, "\n## Last gate report\n\nSee `{}.md`.\n\n## Impact\n\nTODO\n\n## Root cause\n\nTODO\n\n## Action items\n\nTODO", r.id);
    m
}

/// Where reports live.
pub struct ReportStore {
    dir: PathBuf,
}

impl ReportStore {
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("reports"),
        }
    }

    pub(crate) fn write(&self, r: &Report) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let json = serde_json::to_vec_pretty(r).expect("report serializes");
        super::state::write_atomic(&self.dir.join(format!("{}.json", r.id)), &json)?;
        super::state::write_atomic(
            &self.dir.join(format!("{}.md", r.id)),
            markdown(r).as_bytes(),
        )
    }

    pub(crate) fn write_postmortem(
        &self,
        r: &Report,
        timeline: &[Decision],
    ) -> Result<PathBuf, StateError> {
        let path = self.dir.join(format!("{}-postmortem.md", r.id));
        super::state::write_atomic(&path, postmortem(r, timeline).as_bytes())?;
        Ok(path)
    }

    /// All reports, oldest first (ids sort by time).
    pub(crate) fn list(&self) -> Vec<ReportIndex> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(String::from)
            })
            .collect();
        ids.sort();
        ids.iter()
            .filter_map(|id| self.get(id))
            .map(|r| r.index())
            .collect()
    }

    /// A report by id; ids are validated so a request cannot walk the file system.
    pub(crate) fn get(&self, id: &str) -> Option<Report> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        let bytes = std::fs::read(self.dir.join(format!("{id}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
