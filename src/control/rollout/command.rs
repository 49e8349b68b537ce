//! Operator commands: what each one may do in each state. The same pure
//! [`Core`] as the tick, so a command and a tick cannot disagree on a rule.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{Core, Outcome};
use crate::control::gates::GateStatus;
use crate::control::state::{Approval, HoldCause, Incident, RolloutState, StateName, Trigger};

/// Operator commands of the admin API.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Start,
    Pause,
    Resume,
    Promote,
    Rollback,
    SetWeight(f64),
    SetFlags(BTreeMap<String, i64>),
    Approve { role: String, by: String },
    Incident { severity: u8, summary: String },
    Unfreeze,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Rollback => "rollback",
            Command::SetWeight(_) => "weights",
            Command::SetFlags(_) => "flags",
            Command::Approve { .. } => "approve",
            Command::Incident { .. } => "incident",
            Command::Unfreeze => "unfreeze",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    /// HTTP 423.
    #[error("FREEZE_LOCK is set after the golden re-freeze: POST /api/v1/unfreeze first")]
    Frozen,
    /// HTTP 423: an operator's weight change outside the promotion window.
    #[error("overnight freeze until {until}: pass force to change the weights anyway")]
    OvernightFreeze { until: String },
    /// HTTP 409.
    #[error("{0}")]
    Conflict(String),
}

/// When and how a command is given.
#[derive(Clone, Copy, Debug)]
pub struct Given {
    pub at: DateTime<Utc>,
    /// The controller's local wall-clock time (the overnight freeze).
    pub local: NaiveDateTime,
    /// The operator overrides the overnight freeze (`force`).
    pub force: bool,
}

impl Core<'_> {
    /// An operator command.
    pub(crate) fn command(
        &self,
        s: &mut RolloutState,
        cmd: Command,
        given: Given,
    ) -> Result<Outcome, CommandError> {
        let now = given.at;
        let changes_weights = matches!(
            cmd,
            Command::Start
                | Command::Resume
                | Command::Promote
                | Command::Rollback
                | Command::SetWeight(_)
        );
        if s.frozen && changes_weights {
            return Err(CommandError::Frozen);
        }
        // Overnight, only the operator's own moves of V2's weight wait for
        // the window: a start enters the plan's first phase (its hold is the
        // watching), and a rollback is never held back.
        let by_hand = matches!(cmd, Command::SetWeight(_) | Command::Promote)
            || (cmd == Command::Resume && s.state == StateName::Paused);
        let mut forced = false;
        if by_hand {
            if let Some(until) = self.freeze(given.local).until_text() {
                if !given.force {
                    return Err(CommandError::OvernightFreeze { until });
                }
                forced = true;
            }
        }
        self.run_command(s, cmd, now)
            .map(|out| Outcome { forced, ..out })
    }

    fn run_command(
        &self,
        s: &mut RolloutState,
        cmd: Command,
        now: DateTime<Utc>,
    ) -> Result<Outcome, CommandError> {
        let conflict = |what: &str, s: &RolloutState| {
            Err(CommandError::Conflict(format!(
                "cannot {what} while the rollout is {}",
                s.state.as_str()
            )))
        };
        match cmd {
            Command::Start => match s.state {
                StateName::Waiting | StateName::RolledBack | StateName::Promoted => {
                    if s.state != StateName::Waiting {
                        // A new rollout: forget the previous one's approvals and incidents.
                        let flags = std::mem::take(&mut s.flags);
                        let next_report = s.next_report;
                        *s = RolloutState::new(flags);
                        s.next_report = next_report;
                    }
                    s.started = true;
                    let mut out = self.try_start(s, now);
                    out.report = true;
                    Ok(out)
                }
                _ => conflict("start", s),
            },
            Command::Pause => match s.state {
                StateName::Waiting | StateName::Shadow | StateName::Canary | StateName::Holding => {
                    s.state = StateName::Paused;
                    Ok(self.none("paused by operator".into(), now))
                }
                _ => conflict("pause", s),
            },
            Command::Resume => match (s.state, s.phase_index) {
                (StateName::Paused, Some(idx)) => {
                    let started = s.phase_started_at;
                    self.enter_phase(s, idx, now);
                    s.phase_started_at = started;
                    s.manual_hold = None;
                    Ok(Outcome {
                        weights_changed: true,
                        ..self.none(format!("resumed in {}", self.cfg.phases[idx].name), now)
                    })
                }
                (StateName::Paused, None) => {
                    s.state = StateName::Waiting;
                    s.weight_v2 = 0.0;
                    s.manual_hold = None;
                    Ok(Outcome {
                        weights_changed: true,
                        ..self.none("resumed: waiting for start conditions".into(), now)
                    })
                }
                (StateName::Waiting | StateName::Shadow | StateName::Holding, _)
                    if s.manual_hold.is_some() =>
                {
                    s.manual_hold = None;
                    if s.state == StateName::Holding {
                        s.state = StateName::Canary;
                    }
                    Ok(self.none("manual hold cleared".into(), now))
                }
                _ => conflict("resume", s),
            },
            Command::Promote => match (s.state, s.phase_index) {
                (
                    StateName::Shadow | StateName::Canary | StateName::Holding | StateName::Paused,
                    Some(idx),
                ) => {
                    // An operator's promote skips the hold, not the sign-off:
                    // a waiver needs every gate GREEN at the last tick.
                    let all_green = !s.gate_status.is_empty()
                        && s.gate_status.values().all(|g| *g == GateStatus::Green);
                    if let Some(role) = self.missing_approval(s, idx + 1, all_green) {
                        return Err(CommandError::Conflict(format!(
                            "cannot promote: {} needs approval by role {role}",
                            self.cfg.phases[idx + 1].name
                        )));
                    }
                    s.manual_hold = None;
                    let before = s.weight_v2;
                    let mut out = self.advance(s, "manual promote by operator".into(), now);
                    // An operator's interim weight above the next phase's
                    // stands: a promote never takes users off V2.
                    if s.weight_v2 < before {
                        s.weight_v2 = before;
                        out.weights_changed = true;
                    }
                    Ok(out)
                }
                _ => conflict("promote", s),
            },
            Command::Rollback => match s.state {
                StateName::RolledBack => conflict("roll back", s),
                _ => Ok(self.rollback(s, Trigger::Manual, "rollback requested by operator", now)),
            },
            Command::SetWeight(p) => {
                s.state = StateName::Paused;
                s.weight_v2 = p;
                Ok(Outcome {
                    weights_changed: true,
                    ..self.none(format!("manual weight: V2 {p}%; controller paused"), now)
                })
            }
            Command::SetFlags(flags) => {
                s.flags.extend(flags);
                Ok(Outcome::default())
            }
            Command::Approve { role, by } => {
                s.approvals.push(Approval { role, by, at: now });
                Ok(Outcome::default())
            }
            Command::Incident { severity, summary } => {
                let id = s.incidents.len() as u64 + 1;
                s.incidents.push(Incident {
                    id,
                    severity,
                    summary: summary.clone(),
                    at: now,
                });
                // Any rollout not yet ended counts them: a Sev-1 ends one
                // that is waiting, mirroring or paused at 0 % as well (a
                // later start is an operator's), and Sev-2s posted before a
                // phase hold its step-up.
                if !Self::live(s) {
                    return Ok(Outcome::default());
                }
                if severity == 1 {
                    return Ok(self.rollback(
                        s,
                        Trigger::Sev1Incident,
                        &format!("Sev-1 incident #{id}: {summary}"),
                        now,
                    ));
                }
                let sev2 = s.sev_count(2);
                if severity == 2 && sev2 >= self.cfg.sev2_hold_count as usize {
                    let reason = HoldCause::ManualDecision.reason(format_args!("{sev2} Sev-2 incidents, holding for a manual decision (resume, promote or rollback)"));
                    s.manual_hold = Some(reason.clone());
                    // `hold` turns `canary` into `holding`; an operator's pause stands.
                    return Ok(self.hold_with(s, reason, HoldCause::ManualDecision, false, now));
                }
                Ok(Outcome::default())
            }
            Command::Unfreeze => {
                s.frozen = false;
                Ok(Outcome::default())
            }
        }
    }
}
