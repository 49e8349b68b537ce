//! The rollout state that survives restarts, and its atomic persistence.
//!
//! Written as JSON through temp file + fsync + rename + fsync of the directory,
//! so a crash at any point leaves either the old or the new file, never a torn
//! one. A state file that exists but does not parse is an error at start-up:
//! silently starting over could route users to a version an operator had
//! rolled back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::gates::{GateKey, GateStatus};

/// The `state` field of `/api/v1/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Waiting,
    Shadow,
    Canary,
    Holding,
    Paused,
    Promoted,
    RolledBack,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Waiting => "waiting",
            StateName::Shadow => "shadow",
            StateName::Canary => "canary",
            StateName::Holding => "holding",
            StateName::Paused => "paused",
            StateName::Promoted => "promoted",
            StateName::RolledBack => "rolled_back",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Go,
    Hold,
    Rollback,
    Promote,
    None,
}

impl Action {
    /// The label of audit lines, logs and `rollgate_decisions_total` (the
    /// same words as the JSON form).
    pub fn label(self) -> &'static str {
        match self {
            Action::Go => "GO",
            Action::Hold => "HOLD",
            Action::Rollback => "ROLLBACK",
            Action::Promote => "PROMOTE",
            Action::None => "NONE",
        }
    }

    /// The seeds' vocabulary for reports.
    pub fn report_word(self) -> &'static str {
        match self {
            Action::Go => "GO",
            Action::Hold => "NO-GO",
            Action::Rollback => "ROLLBACK",
            Action::Promote => "PROMOTE",
            Action::None => "NONE",
        }
    }
}

/// Why a rollback happened (label of `rollgate_rollbacks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    P95Hard,
    GateRedSustained,
    PaymentFailures,
    Sev1Incident,
    Manual,
}

impl Trigger {
    pub const ALL: [Trigger; 5] = [
        Trigger::P95Hard,
        Trigger::GateRedSustained,
        Trigger::PaymentFailures,
        Trigger::Sev1Incident,
        Trigger::Manual,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Trigger::P95Hard => "p95_hard",
            Trigger::GateRedSustained => "gate_red_sustained",
            Trigger::PaymentFailures => "payment_failures",
            Trigger::Sev1Incident => "sev1_incident",
            Trigger::Manual => "manual",
        }
    }
}

/// What a HOLD waits on: its identity, so that one hold is reported once
/// while the words around it (a gate's colour, a count) change tick by tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldCause {
    /// A required flag is not 1 (at the start, or leaving the shadow phase).
    StartConditions,
    /// Sev-2 incidents asked for a manual decision.
    ManualDecision,
    /// A gate that is not GREEN: which gate, never its colour.
    Gate(GateKey),
    /// The next phase needs an approval.
    Approval,
    /// Outside the promotion window.
    PromotionWindow,
}

impl HoldCause {
    /// How a hold's reason begins: `LEAD: detail`.
    pub(crate) fn lead(&self) -> String {
        match self {
            HoldCause::StartConditions => "start conditions".into(),
            HoldCause::ManualDecision => "incidents".into(),
            HoldCause::Gate(key) => match key.label() {
                None => format!("gate {}", key.gate()),
                Some(j) => format!("gate {} ({j})", key.gate()),
            },
            HoldCause::Approval => "approval".into(),
            HoldCause::PromotionWindow => "promotion window".into(),
        }
    }

    /// The reason an operator reads: the lead, then what is seen now.
    pub(crate) fn reason(&self, detail: impl std::fmt::Display) -> String {
        format!("{}: {detail}", self.lead())
    }

    /// Reads the cause back from a reason written by [`Self::reason`]. The
    /// state file and the evaluation records keep a decision as operators
    /// read it (their bytes stay as they were), so a hold resumed after a
    /// restart gets its cause from the lead of its reason.
    fn of_reason(reason: &str) -> Option<Self> {
        let lead = reason.split(':').next()?;
        let cause = match lead {
            "start conditions" => HoldCause::StartConditions,
            "incidents" => HoldCause::ManualDecision,
            "approval" => HoldCause::Approval,
            "promotion window" => HoldCause::PromotionWindow,
            _ => {
                let gate = lead.strip_prefix("gate ")?;
                let (name, journey) = match gate.strip_suffix(')').and_then(|g| g.split_once(" ("))
                {
                    Some((name, j)) => (name, Some(j)),
                    None => (gate, None),
                };
                HoldCause::Gate(GateKey::new(name.parse().ok()?, journey))
            }
        };
        Some(cause)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "DecisionFile")]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// A HOLD's identity (`None` for other actions). Not written out: every
    /// serialised form of a decision stays as it was.
    #[serde(skip)]
    pub cause: Option<HoldCause>,
}

/// A decision as written to disk and the API.
#[derive(Deserialize)]
struct DecisionFile {
    action: Action,
    reason: String,
    at: DateTime<Utc>,
    #[serde(default)]
    trigger: Option<Trigger>,
}

impl From<DecisionFile> for Decision {
    fn from(d: DecisionFile) -> Self {
        let cause = match d.action {
            Action::Hold => HoldCause::of_reason(&d.reason),
            Action::Go | Action::Rollback | Action::Promote | Action::None => None,
        };
        Decision {
            action: d.action,
            reason: d.reason,
            at: d.at,
            trigger: d.trigger,
            cause,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub role: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub severity: u8,
    pub summary: String,
    pub at: DateTime<Utc>,
}

/// Everything the controller must remember across restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub state: StateName,
    pub phase_index: Option<usize>,
    /// Current V2 weight in percent.
    pub weight_v2: f64,
    /// A rollout was started (by `auto_start` or an operator).
    pub started: bool,
    pub phase_started_at: Option<DateTime<Utc>>,
    /// Since when every gate has been GREEN without interruption in this phase.
    pub green_since: Option<DateTime<Utc>>,
    /// Previous tick's gate statuses (hysteresis memory).
    pub gate_status: BTreeMap<GateKey, GateStatus>,
    /// Since when each currently RED gate has been RED.
    pub red_since: BTreeMap<GateKey, DateTime<Utc>>,
    /// Gates recovering from a breach, with their cooldown clocks.
    #[serde(default)]
    pub gate_recovery: BTreeMap<GateKey, super::gates::Recovery>,
    /// The sequential judge's evidence per gate.
    #[serde(default)]
    pub gate_evidence: super::gates::EvidenceMemory,
    /// V2's 5xx responses since this rollout started (the error budget gate).
    #[serde(default)]
    pub v2_bad_requests: u64,
    pub flags: BTreeMap<String, i64>,
    pub approvals: Vec<Approval>,
    pub incidents: Vec<Incident>,
    /// Set when two Sev-2 incidents ask for a manual decision; cleared by resume/promote.
    pub manual_hold: Option<String>,
    pub frozen: bool,
    pub last_decision: Option<Decision>,
    pub next_report: u64,
    /// The current hold already reported its escalation to RED.
    #[serde(default)]
    pub hold_red_reported: bool,
}

impl RolloutState {
    pub fn new(flags: BTreeMap<String, i64>) -> Self {
        Self {
            state: StateName::Waiting,
            phase_index: None,
            weight_v2: 0.0,
            started: false,
            phase_started_at: None,
            green_since: None,
            gate_status: BTreeMap::new(),
            red_since: BTreeMap::new(),
            gate_recovery: BTreeMap::new(),
            gate_evidence: Default::default(),
            v2_bad_requests: 0,
            flags,
            approvals: Vec::new(),
            incidents: Vec::new(),
            manual_hold: None,
            frozen: false,
            last_decision: None,
            next_report: 1,
            hold_red_reported: false,
        }
    }

    pub fn has_approval(&self, role: &str) -> bool {
        self.approvals.iter().any(|a| a.role == role)
    }

    pub fn sev_count(&self, severity: u8) -> usize {
        self.incidents
            .iter()
            .filter(|i| i.severity == severity)
            .count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt ({source}); fix or move it away, rollgate will not guess the rollout state")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub(crate) const STATE_FILE: &str = "state.json";

/// Loads the state, `None` when there is no state file yet.
pub fn load(dir: &Path) -> Result<Option<RolloutState>, StateError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { path, source }),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source }),
    }
}

/// Loads the state to resume: the state file, or the fallback dir's copy
/// when that one is newer. The fallback is written only while the state
/// file cannot be (and removed once it can), so a copy there that is newer
/// is a decision the state file never got, a rollback say: resuming the
/// state file instead would undo it. A fallback that cannot be read is an
/// error, as a state file that cannot be read is: it may hold that decision.
pub fn load_resumable(
    dir: &Path,
    fallback: Option<&Path>,
) -> Result<Option<RolloutState>, StateError> {
    let primary = load(dir)?;
    let Some(fallback) = fallback else {
        return Ok(primary);
    };
    let Some(copy) = load(fallback)? else {
        return Ok(primary);
    };
    let modified = |d: &Path| {
        std::fs::metadata(d.join(STATE_FILE))
            .and_then(|m| m.modified())
            .ok()
    };
    let newer = match (&primary, modified(fallback), modified(dir)) {
        (None, _, _) => true,
        (Some(_), Some(copy_at), Some(file_at)) => copy_at >= file_at,
        (Some(_), _, _) => false,
    };
    if newer {
        tracing::warn!(
            fallback = %fallback.display(),
            state = copy.state.as_str(),
            weight_v2 = copy.weight_v2,
            "resuming the rollout state from the fallback dir: the state file missed its last writes"
        );
        Ok(Some(copy))
    } else {
        tracing::warn!(fallback = %fallback.display(), "ignoring an older state copy in the fallback dir");
        Ok(primary)
    }
}

/// Removes the fallback copy once the state file holds the state.
pub(crate) fn remove_fallback(fallback: &Path) -> Result<(), StateError> {
    let path = fallback.join(STATE_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StateError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}

/// Atomically replaces the state file.
pub fn save(dir: &Path, state: &RolloutState) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    write_atomic(&dir.join(STATE_FILE), &bytes)
}

/// temp + fsync + rename + fsync(dir).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut s = RolloutState::new(BTreeMap::from([("EVIDENCE_BUNDLE".into(), 1)]));
        s.phase_index = Some(2);
        s.weight_v2 = 50.0;
        s.approvals.push(Approval {
            role: "cfo".into(),
            by: "dana".into(),
            at: Utc::now(),
        });
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s));
        std::fs::write(
            dir.path().join(STATE_FILE),
            b"{\"state\": \"canary\", \"pha",
        )
        .unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("state.json"), "{e}");
    }

    #[test]
    fn a_hold_cause_is_not_written_and_comes_back_from_its_reason() {
        let causes = [
            HoldCause::StartConditions,
            HoldCause::ManualDecision,
            HoldCause::Gate("latency_p95/search".parse().unwrap()),
            HoldCause::Gate("error_budget".parse().unwrap()),
            HoldCause::Approval,
            HoldCause::PromotionWindow,
        ];
        for cause in causes {
            let d = Decision {
                action: Action::Hold,
                reason: cause.reason("RED V2 P95 140 ms: more"),
                at: Utc::now(),
                trigger: None,
                cause: Some(cause.clone()),
            };
            let text = serde_json::to_string(&d).unwrap();
            assert!(!text.contains("cause"), "{text}");
            let back: Decision = serde_json::from_str(&text).unwrap();
            assert_eq!(back, d, "{text}");
        }
    }
}
