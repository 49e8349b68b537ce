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
mod persist;
pub mod replay;
pub mod report;
pub mod rollout;
mod shell;
pub mod state;
mod status;
pub(crate) mod step;
pub(crate) use crate::routing::tripwire;
pub(crate) mod webhook;

pub use rollout::{Command, CommandError};
pub use shell::ControlHandle;
pub(crate) use shell::Controller;
pub use step::gate_context;

pub use status::{PhaseView, StatusView, Weights};
