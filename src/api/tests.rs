use chrono::{DateTime, Utc};
use serde_json::json;

use super::*;
use crate::control::gates::{Evaluation, GateResult, GateStatus, JourneyKpi, Recovery, VariantKpi};
use crate::control::history::{HistoryPoint, HistoryView, Since};
use crate::control::report::{SummaryCard, TriggerStatus};
use crate::control::state::{Action, Approval, Decision, Incident, StateName};
use crate::routing::journeys::JourneyKind;

fn at() -> DateTime<Utc> {
    "2025-01-01T00:00:00Z".parse().expect("a time")
}

/// A status with every optional part filled in; the CLI's tests render it too.
pub(crate) fn sample_status() -> StatusView {
    let gate =
        |name: &str, journey: Option<&str>, status, value, threshold, samples, reason: &str| {
            GateResult {
                name: name.parse().expect("a gate name"),
                journey: journey.map(String::from),
                status,
                value,
                threshold,
                samples,
                reason: reason.into(),
                p_value: None,
                recovery: None,
                evidence: None,
            }
        };
    let mut latency = gate(
        "latency_p95",
        Some("search"),
        GateStatus::Yellow,
        None,
        130.0,
        3,
        "insufficient data",
    );
    latency.p_value = Some(0.25);
    latency.recovery = Some(Recovery {
        clear_since: Some(at()),
    });
    let gates = vec![
        gate(
            "error_rate",
            None,
            GateStatus::Green,
            Some(0.0),
            0.005,
            110,
            "V2 5xx rate 0.0000 <= 0.0050",
        ),
        latency,
    ];
    let phase = |name: &str, weight, approval: Option<&str>| PhaseView {
        name: name.into(),
        weight,
        hold_s: 60,
        p95_ms: 130.0,
        approval: approval.map(String::from),
    };
    StatusView {
        state: StateName::Canary,
        phase: Some("canary-25".into()),
        phase_index: Some(1),
        weights: Weights { v1: 75.0, v2: 25.0 },
        gates: gates.clone(),
        flags: BTreeMap::from([("EVIDENCE_BUNDLE".to_string(), 1)]),
        approvals: vec![Approval {
            role: "cfo".into(),
            by: "dana".into(),
            at: at(),
        }],
        incidents: vec![Incident {
            id: 1,
            severity: 2,
            summary: "checkout slow".into(),
            at: at(),
        }],
        last_decision: Some(Decision {
            action: Action::Hold,
            reason: "gate latency_p95/search YELLOW".into(),
            at: at(),
            trigger: None,
            cause: None,
        }),
        frozen: false,
        state_persist_degraded: false,
        detail: "waiting for samples".into(),
        phase_started_at: Some(at()),
        phases: vec![
            phase("canary-5", 5.0, None),
            phase("canary-25", 25.0, Some("cfo")),
            phase("full", 100.0, None),
        ],
        evaluation: Evaluation {
            window_ms: 60_000,
            gates,
            journeys: vec![JourneyKpi {
                journey: "checkout".into(),
                kind: JourneyKind::Payment,
                v1: VariantKpi::default(),
                v2: VariantKpi {
                    requests: 10,
                    p95_ms: Some(12.5),
                    ..VariantKpi::default()
                },
            }],
            v1: VariantKpi::default(),
            v2: VariantKpi::default(),
        },
    }
}

/// A report with a rollback, a fired trigger and a summary card.
pub(crate) fn sample_report() -> Report {
    let status = sample_status();
    Report {
        id: "000006".into(),
        at: at(),
        phase: Some("canary-25".into()),
        weight_v2: 25.0,
        decision: Decision {
            action: Action::Rollback,
            reason: "operator rollback".into(),
            at: at(),
            trigger: Some(crate::control::state::Trigger::Manual),
            cause: None,
        },
        gates: status.gates,
        journeys: status.evaluation.journeys,
        v1: VariantKpi::default(),
        v2: VariantKpi::default(),
        window_ms: 60_000,
        triggers: vec![
            TriggerStatus {
                trigger: "manual".into(),
                fired: true,
                detail: "operator".into(),
            },
            TriggerStatus {
                trigger: "p95_hard".into(),
                fired: false,
                detail: "".into(),
            },
        ],
        approvals: status.approvals,
        incidents: status.incidents,
        summary: Some(SummaryCard {
            phase: "canary-25".into(),
            p50_ms: Some(1.0),
            p95_ms: None,
            p99_ms: Some(3.0),
            error_rate_5xx: Some(0.0),
            payment_success: None,
            top_anomalies: vec!["none".into()],
            recommended_action: "hold".into(),
        }),
    }
}

/// What the server writes, the client reads back and would write again unchanged.
fn round_trips<T: Serialize + serde::de::DeserializeOwned>(v: &T) {
    let first = serde_json::to_string(v).expect("serialises");
    let back: T = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(serde_json::to_string(&back).expect("serialises"), first);
}

#[test]
fn api_answers_round_trip() {
    round_trips(&sample_status());
    round_trips(&sample_report());
    round_trips(&ReportList {
        reports: vec![sample_report().index()],
    });
    round_trips(&ErrorBody::new("no such endpoint: /x"));
    round_trips(&FieldError::new("v2", "missing").body());
    let ev = sample_status().evaluation;
    let view = HistoryView {
        points: vec![std::sync::Arc::new(HistoryPoint::new(
            at(),
            StateName::Canary,
            Some(1),
            25.0,
            &ev,
        ))],
    };
    let served = serde_json::to_string(&HistoryAnswer {
        max_points: 720,
        points: Since {
            view: &view,
            since_ms: None,
        },
        tick_ms: 100,
    })
    .expect("serialises");
    let read: HistoryAnswer<Vec<HistoryPoint>> = serde_json::from_str(&served).expect("reads");
    assert_eq!(read.points, vec![(*view.points[0]).clone()]);
    assert_eq!((read.max_points, read.tick_ms), (720, 100));
}

#[test]
fn api_requests_round_trip() {
    round_trips(&WeightsRequest { v2: 12.5 });
    round_trips(&FlagsRequest(BTreeMap::from([("X".to_string(), 1)])));
    round_trips(&ApprovalRequest {
        role: "cfo".into(),
        by: "dana".into(),
    });
    round_trips(&IncidentRequest {
        severity: 1,
        summary: "down".into(),
    });
    // What the CLI sends is what the server accepts.
    let sent = serde_json::to_value(IncidentRequest {
        severity: 2,
        summary: "slow".into(),
    })
    .expect("serialises");
    assert_eq!(IncidentRequest::from_json(&sent).map(|r| r.severity), Ok(2));
}

#[test]
fn api_errors_keep_their_shape() {
    assert_eq!(
        serde_json::to_string(&ErrorBody::new("nope")).expect("serialises"),
        r#"{"error":"nope"}"#
    );
    assert_eq!(
        serde_json::to_value(FieldError::new("v2", "missing").body()).expect("serialises"),
        json!({"error": "field `v2`: missing", "field": "v2"})
    );
}

fn why<T: std::fmt::Debug>(r: Result<T, FieldError>) -> String {
    r.expect_err("refused").body().error
}

#[test]
fn api_request_400s_name_the_field() {
    let w = |v| why(WeightsRequest::from_json(&v));
    assert_eq!(
        w(json!({})),
        "field `v2`: missing (expected {\"v2\": 0-100})"
    );
    assert_eq!(
        w(json!([1])),
        "field `v2`: missing (expected {\"v2\": 0-100})"
    );
    assert_eq!(w(json!({"v2": 150})), "field `v2`: 150 is outside 0-100");
    assert_eq!(w(json!({"v2": -0.5})), "field `v2`: -0.5 is outside 0-100");
    assert_eq!(w(json!({"v2": "x"})), "field `v2`: \"x\" is not a number");
    assert_eq!(
        WeightsRequest::from_json(&json!({"v2": 100})),
        Ok(WeightsRequest { v2: 100.0 })
    );

    let f = |v| why(FlagsRequest::from_json(&v));
    let shape = "field `flags`: expected an object like {\"SHADOW_PASS_24H\": 1}";
    assert_eq!(f(json!({})), shape);
    assert_eq!(f(json!([])), shape);
    assert_eq!(f(json!({"A": 1, "B": 2})), "field `B`: 2 must be 0 or 1");
    assert_eq!(f(json!({"A": true})), "field `A`: true must be 0 or 1");

    let a = |v| why(ApprovalRequest::from_json(&v));
    assert_eq!(a(json!({})), "field `role`: missing");
    assert_eq!(a(json!({"role": "cfo"})), "field `by`: missing");
    assert_eq!(
        a(json!({"role": " ", "by": "x"})),
        "field `role`: must be a non-empty string of at most 1024 bytes"
    );
    assert_eq!(
        a(json!({"role": "cfo", "by": 5})),
        "field `by`: 5 is not a string"
    );
    assert_eq!(
        a(json!({"role": "x".repeat(1025), "by": "d"})),
        "field `role`: must be a non-empty string of at most 1024 bytes"
    );
    assert_eq!(
        ApprovalRequest::from_json(&json!({"role": " cfo ", "by": "dana"})),
        Ok(ApprovalRequest {
            role: "cfo".into(),
            by: "dana".into()
        })
    );

    let i = |v| why(IncidentRequest::from_json(&v));
    assert_eq!(
        i(json!({"summary": "x"})),
        "field `severity`: must be 1 or 2"
    );
    assert_eq!(
        i(json!({"severity": 3})),
        "field `severity`: must be 1 or 2"
    );
    assert_eq!(i(json!({"severity": 1})), "field `summary`: missing");
}
