//! What readers see: the status view and the chart history, published
//! through `ArcSwap` so the admin API reads them without asking the control
//! task (and without a lock).

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::gates::{Evaluation, GateResult};
use super::history::{History, HistoryPoint, HistoryView};
use super::shell::Situation;
use super::state::RolloutState;
use super::state::{Approval, Decision, Incident, StateName};

/// `GET /api/v1/status`, and the answer to every command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub state: StateName,
    pub phase: Option<String>,
    pub phase_index: Option<usize>,
    pub weights: Weights,
    pub gates: Vec<GateResult>,
    pub flags: BTreeMap<String, i64>,
    pub approvals: Vec<Approval>,
    pub incidents: Vec<Incident>,
    pub last_decision: Option<Decision>,
    pub frozen: bool,
    /// The state file does not hold this state yet: a failed write is being
    /// retried, and a restart now would resume an earlier state.
    #[serde(default)]
    pub state_persist_degraded: bool,
    /// What the controller is waiting for right now.
    pub detail: String,
    /// "held overnight until <local time>" while the promotion window is
    /// closed: step-ups wait, and manual weight changes need `force`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overnight_freeze: Option<String>,
    /// The golden re-freeze's round trip: `retrying` with its last error is
    /// an anomaly (FREEZE_LOCK is not set until it is `verified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreeze: Option<super::webhook::Refreeze>,
    pub phase_started_at: Option<DateTime<Utc>>,
    pub phases: Vec<PhaseView>,
    pub evaluation: Evaluation,
}

/// Both variants' weights in percent; they add up to 100.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Weights {
    pub v1: f64,
    pub v2: f64,
}

/// One configured phase, as the status page and the CLI list them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseView {
    pub name: String,
    pub weight: f64,
    pub hold_s: u64,
    pub p95_ms: f64,
    pub approval: Option<String>,
}

/// The published status and history.
pub(crate) struct Board {
    status: Arc<ArcSwap<StatusView>>,
    history: History,
    history_view: Arc<ArcSwap<HistoryView>>,
}

impl Board {
    /// Before the first publish: the loaded state's name, V1 takes everything.
    pub(crate) fn new(state: &RolloutState) -> Self {
        let status = StatusView {
            state: state.state,
            phase: None,
            phase_index: None,
            weights: Weights { v1: 100.0, v2: 0.0 },
            gates: vec![],
            flags: BTreeMap::new(),
            approvals: vec![],
            incidents: vec![],
            last_decision: None,
            frozen: false,
            state_persist_degraded: false,
            detail: String::new(),
            overnight_freeze: None,
            refreeze: None,
            phase_started_at: None,
            phases: vec![],
            evaluation: Evaluation::default(),
        };
        Board {
            status: Arc::new(ArcSwap::from_pointee(status)),
            history: History::default(),
            history_view: Arc::new(ArcSwap::from_pointee(HistoryView::default())),
        }
    }

    /// The readers' ends (the admin API's handle).
    pub(crate) fn readers(&self) -> (Arc<ArcSwap<StatusView>>, Arc<ArcSwap<HistoryView>>) {
        (self.status.clone(), self.history_view.clone())
    }

    pub(crate) fn status(&self) -> Arc<StatusView> {
        self.status.load_full()
    }

    pub(crate) fn publish(&self, sit: &Situation) {
        self.status.store(Arc::new(view(sit)));
    }

    /// One chart point per tick, after the tick's decision took effect.
    /// `at` is on the controller's clock: points age out by it.
    pub(crate) fn record_history(&mut self, at: DateTime<Utc>, sit: &Situation) {
        let s = &sit.state;
        self.history.push(HistoryPoint::new(
            at,
            s.state,
            s.phase_index,
            s.weight_v2,
            &sit.last_eval,
        ));
        self.history_view.store(Arc::new(self.history.view()));
    }
}

/// `GET /api/v1/status` for the controller's situation.
pub(crate) fn view(sit: &Situation) -> StatusView {
    let s = &sit.state;
    StatusView {
        state: s.state,
        phase: sit.phase_name(),
        phase_index: s.phase_index,
        weights: Weights {
            v1: 100.0 - s.weight_v2,
            v2: s.weight_v2,
        },
        gates: sit.last_eval.gates.clone(),
        flags: s.flags.clone(),
        approvals: s.approvals.clone(),
        incidents: s.incidents.clone(),
        last_decision: s.last_decision.clone(),
        frozen: s.frozen,
        state_persist_degraded: sit.persist_degraded,
        detail: sit.detail.clone(),
        overnight_freeze: sit.overnight.clone(),
        refreeze: s.refreeze.clone(),
        phase_started_at: s.phase_started_at,
        phases: sit
            .cfg
            .rollout
            .phases
            .iter()
            .map(|p| PhaseView {
                name: p.name.clone(),
                weight: p.weight.percent(),
                hold_s: p.hold.as_secs(),
                p95_ms: p.p95_ms,
                approval: p.approval.clone(),
            })
            .collect(),
        evaluation: sit.last_eval.clone(),
    }
}
