//! The control plane. A tick flows:
//!
//! 1. **snapshot**: the loop shell (`shell`) reads the telemetry counters and
//!    the clock, and the pure `step` takes the counts since the last tick
//!    into the sliding window;
//! 2. **evaluate**: [`gates`] judge the window (significance, zones,
//!    cooldowns);
//! 3. **decide**: the pure [`rollout::Core`] turns the evaluation and the
//!    rollout state into an outcome (GO, HOLD, ROLLBACK, PROMOTE or NONE);
//! 4. **swap**: `effects` store the new routing table and persist the state;
//! 5. **report**: `effects` write the audit line, gate report, metrics and
//!    evaluation record, and the `status` board publishes the status view.
//!
//! Steps 1 to 3 are the same code for the live loop and `rollgate replay`
//! ([`replay`]), so a replayed decision is the one the controller would have
//! taken. Admin handlers never touch the state: they send a [`Command`]
//! through the [`ControlHandle`] and get the new status back, so state
//! changes are serialized through one task without locks. Every duration
//! the controller measures runs on a monotonic clock (see `shell::Clock`).

pub mod audit;
mod effects;
pub mod gates;
pub mod history;
pub mod replay;
pub mod report;
pub mod rollout;
mod shell;
pub mod state;
mod status;
mod step;
pub(crate) use crate::routing::tripwire;
pub(crate) mod webhook;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use gates::{Evaluation, GateResult};
use state::{Approval, Decision, Incident, StateName};

pub use rollout::{Command, CommandError};
pub use shell::ControlHandle;
pub(crate) use shell::Controller;
pub use step::gate_context;

/// `GET /api/v1/status`.
#[derive(Clone, Debug, Serialize)]
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
    /// What the controller is waiting for right now.
    pub detail: String,
    pub phase_started_at: Option<DateTime<Utc>>,
    pub phases: Vec<PhaseView>,
    pub evaluation: Evaluation,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Weights {
    pub v1: f64,
    pub v2: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseView {
    pub name: String,
    pub weight: f64,
    pub hold_s: u64,
    pub p95_ms: f64,
    pub approval: Option<String>,
}
