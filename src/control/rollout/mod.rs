//! The rollout state machine: a pure function of (state, config, evaluation,
//! now). No clock reads, no I/O: the control task supplies `now` and the
//! evaluation, then persists, swaps weights and writes reports from the
//! returned [`Outcome`]. That is what lets the tests drive every path with a
//! fake clock.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::gates::{Evaluation, GateStatus};
use super::state::{Action, Decision, HoldCause, RolloutState, StateName, Trigger};
use super::tripwire::Trip;
use crate::config::{PhaseMode, RolloutConfig};

mod command;
mod overnight;
pub use command::{Command, CommandError, Given};
pub use overnight::Freeze;

/// What the control task must do after a step.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Outcome {
    /// The decision taken, if any (NONE ticks have one too, for the live view).
    pub decision: Option<Decision>,
    /// Write a gate report for this decision.
    pub report: bool,
    /// A step-up happened from this phase index (phase summary card).
    pub stepped_from: Option<usize>,
    /// The rollout just finished successfully: run the golden re-freeze.
    pub promoted: bool,
    /// The weights changed: publish a new routing table.
    pub weights_changed: bool,
    /// An operator's command went through the overnight freeze by force.
    pub forced: bool,
}

fn decision(action: Action, reason: impl Into<String>, at: DateTime<Utc>) -> Decision {
    Decision {
        action,
        reason: reason.into(),
        at,
        trigger: None,
        cause: None,
    }
}

/// A decision that is reported and moves the weights; it becomes the last one.
fn reported(s: &mut RolloutState, d: Decision) -> Outcome {
    s.last_decision = Some(d.clone());
    Outcome {
        decision: Some(d),
        report: true,
        weights_changed: true,
        ..Default::default()
    }
}

fn human(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// The pure controller.
pub struct Core<'a> {
    pub cfg: &'a RolloutConfig,
}

impl Core<'_> {
    /// The overnight freeze at local time `local`.
    pub fn freeze(&self, local: NaiveDateTime) -> Freeze {
        overnight::Opening {
            window: &self.cfg.promotion_window,
            days: &self.cfg.business_days,
        }
        .freeze(local)
    }

    fn enter_phase(&self, s: &mut RolloutState, idx: usize, now: DateTime<Utc>) {
        let phase = &self.cfg.phases[idx];
        s.phase_index = Some(idx);
        s.weight_v2 = phase.weight.percent();
        s.phase_started_at = Some(now);
        s.green_since = None;
        s.red_since.clear();
        s.gate_status.clear();
        s.gate_recovery.clear();
        s.state = match phase.mode {
            PhaseMode::Shadow => StateName::Shadow,
            PhaseMode::Live => StateName::Canary,
        };
    }

    fn missing_flags(&self, s: &RolloutState) -> Vec<String> {
        self.cfg
            .required_flags
            .iter()
            .filter(|f| s.flags.get(*f).copied().unwrap_or(0) != 1)
            .map(|f| format!("{f} = {}", s.flags.get(f).copied().unwrap_or(0)))
            .collect()
    }

    fn rollback(
        &self,
        s: &mut RolloutState,
        trigger: Trigger,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Outcome {
        s.state = StateName::RolledBack;
        s.weight_v2 = 0.0;
        s.green_since = None;
        let mut d = decision(
            Action::Rollback,
            format!("{}: {detail}", trigger.label()),
            now,
        );
        d.trigger = Some(trigger);
        reported(s, d)
    }

    /// Holds on `cause`; `red` when the cause is a RED gate.
    fn hold(
        &self,
        s: &mut RolloutState,
        cause: HoldCause,
        detail: impl std::fmt::Display,
        red: bool,
        now: DateTime<Utc>,
    ) -> Outcome {
        self.hold_with(s, cause.reason(detail), cause, red, now)
    }

    fn hold_with(
        &self,
        s: &mut RolloutState,
        reason: String,
        cause: HoldCause,
        red: bool,
        now: DateTime<Utc>,
    ) -> Outcome {
        if s.state == StateName::Canary {
            s.state = StateName::Holding;
        }
        // One report when a hold starts or its cause changes, not every tick.
        // The cause is the gate's identity, not its colour. The same cause
        // again after more than a window without a HOLD (e.g. GREEN ticks in
        // between) is a new hold; a flicker within one is not. Within one
        // hold, the first escalation to RED is reported too, so YELLOW
        // "insufficient data" turning into a breach is on record, while a gate
        // flickering RED/YELLOW is not spammed.
        let window = chrono::TimeDelta::from_std(self.cfg.window).unwrap_or(chrono::TimeDelta::MAX);
        let same_hold = s.last_decision.as_ref().is_some_and(|d| {
            d.action == Action::Hold && d.cause.as_ref() == Some(&cause) && now - d.at <= window
        });
        let report = !same_hold || (red && !s.hold_red_reported);
        s.hold_red_reported = if same_hold {
            s.hold_red_reported || red
        } else {
            red
        };
        let mut d = decision(Action::Hold, reason, now);
        d.cause = Some(cause);
        s.last_decision = Some(d.clone());
        Outcome {
            decision: Some(d),
            report,
            ..Default::default()
        }
    }

    fn none(&self, reason: String, now: DateTime<Utc>) -> Outcome {
        Outcome {
            decision: Some(decision(Action::None, reason, now)),
            ..Default::default()
        }
    }

    /// Moves to the next phase, or declares success after the last one.
    fn advance(&self, s: &mut RolloutState, reason: String, now: DateTime<Utc>) -> Outcome {
        let idx = s.phase_index.expect("advance needs a phase");
        if idx + 1 == self.cfg.phases.len() {
            s.state = StateName::Promoted;
            // Promoting out of a manual pause must not freeze the operator's
            // interim weight as the promoted one: the last phase's weight holds.
            let full = self.cfg.phases[idx].weight.percent();
            let weights_changed = s.weight_v2 != full;
            s.weight_v2 = full;
            return Outcome {
                promoted: true,
                weights_changed,
                ..reported(s, decision(Action::Promote, reason, now))
            };
        }
        if self.cfg.phases[idx].mode == PhaseMode::Shadow {
            s.flags.insert("SHADOW_PASS_24H".into(), 1);
        }
        self.enter_phase(s, idx + 1, now);
        Outcome {
            stepped_from: Some(idx),
            ..reported(s, decision(Action::Go, reason, now))
        }
    }

    /// Remembers gate statuses and how long each has been RED.
    fn remember_gates(&self, s: &mut RolloutState, ev: &Evaluation, now: DateTime<Utc>) {
        let mut red_since = BTreeMap::new();
        let mut status = BTreeMap::new();
        let mut recovery = BTreeMap::new();
        for g in &ev.gates {
            let key = g.key();
            if let Some(r) = g.recovery {
                recovery.insert(key.clone(), r);
            }
            if g.status == GateStatus::Red {
                let since = s.red_since.get(&key).copied().unwrap_or(now);
                red_since.insert(key.clone(), since);
            }
            status.insert(key, g.status);
        }
        s.red_since = red_since;
        s.gate_status = status;
        s.gate_recovery = recovery;
    }

    /// Automatic rollback triggers evaluated on the tick.
    fn tick_triggers(
        &self,
        s: &RolloutState,
        ev: &Evaluation,
        now: DateTime<Utc>,
    ) -> Option<(Trigger, String)> {
        if let Some((journey, p95)) = ev
            .p95_breaches(self.cfg.p95_rollback_ms, self.cfg.min_samples)
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
        {
            return Some((
                Trigger::P95Hard,
                format!(
                    "journey {journey} V2 P95 {p95:.1} ms > {} ms",
                    self.cfg.p95_rollback_ms
                ),
            ));
        }
        let limit = chrono::TimeDelta::from_std(self.cfg.red_rollback_after)
            .unwrap_or(chrono::TimeDelta::MAX);
        s.red_since
            .iter()
            .filter(|(key, since)| key.gate().may_roll_back() && now - **since >= limit)
            .min_by_key(|(_, since)| **since)
            .map(|(key, since)| {
                (
                    Trigger::GateRedSustained,
                    format!(
                        "gate {key} RED for {} (limit {})",
                        human(now - *since),
                        human(limit)
                    ),
                )
            })
    }

    /// One controller tick.
    pub fn tick(
        &self,
        s: &mut RolloutState,
        ev: &Evaluation,
        now: DateTime<Utc>,
        local: NaiveDateTime,
    ) -> Outcome {
        self.remember_gates(s, ev, now);
        match s.state {
            StateName::Promoted => self.none("rollout promoted".into(), now),
            StateName::RolledBack => self.none(
                "rolled back; POST /api/v1/rollout/start begins a new rollout".into(),
                now,
            ),
            StateName::Paused => {
                // Safety triggers stay armed while V2 takes traffic.
                if s.weight_v2 > 0.0 {
                    if let Some((t, detail)) = self.tick_triggers(s, ev, now) {
                        return self.rollback(s, t, &detail, now);
                    }
                }
                self.none("paused by operator".into(), now)
            }
            StateName::Waiting if !s.started => {
                self.none("waiting for POST /api/v1/rollout/start".into(), now)
            }
            StateName::Waiting => self.try_start(s, now),
            StateName::Shadow | StateName::Canary | StateName::Holding => {
                self.in_phase(s, ev, now, local)
            }
        }
    }

    fn try_start(&self, s: &mut RolloutState, now: DateTime<Utc>) -> Outcome {
        if let Some(reason) = s.manual_hold.clone() {
            // Sev-2s posted before the first phase count at its start too.
            return self.hold_with(s, reason, HoldCause::ManualDecision, false, now);
        }
        let first = &self.cfg.phases[0];
        let missing = self.missing_flags(s);
        if first.mode == PhaseMode::Live && !missing.is_empty() {
            return self.hold(
                s,
                HoldCause::StartConditions,
                missing.join(", "),
                false,
                now,
            );
        }
        self.enter_phase(s, 0, now);
        // A rollout starts: its error budget account starts empty.
        s.v2_bad_requests = 0;
        let reason = format!("start conditions met: entering {}", first.name);
        reported(s, decision(Action::Go, reason, now))
    }

    fn in_phase(
        &self,
        s: &mut RolloutState,
        ev: &Evaluation,
        now: DateTime<Utc>,
        local: NaiveDateTime,
    ) -> Outcome {
        let idx = s.phase_index.expect("in a phase");
        let phase = &self.cfg.phases[idx];
        if phase.mode == PhaseMode::Live {
            if let Some((t, detail)) = self.tick_triggers(s, ev, now) {
                return self.rollback(s, t, &detail, now);
            }
        }
        if let Some(reason) = s.manual_hold.clone() {
            // The gates still count towards the hold while waiting for the decision.
            if ev.all_green() || ev.gathering() {
                s.green_since.get_or_insert(now);
            } else {
                s.green_since = None;
            }
            return self.hold_with(s, reason, HoldCause::ManualDecision, false, now);
        }
        if let Some(g) = ev.worst() {
            // A sequential gate still gathering its evidence does not stop
            // the hold clock: GREEN at the end of the hold is "inside over
            // the phase's data", which covers the whole hold. A breach, or
            // a value gate off its mark, starts it again.
            if ev.gathering() {
                s.green_since.get_or_insert(now);
            } else {
                s.green_since = None;
            }
            // The hold's cause is the gate's identity, not its colour, so a
            // gate flickering RED/YELLOW is one hold, reported once.
            let cause = HoldCause::Gate(g.key());
            let red = g.status == GateStatus::Red;
            let detail = format_args!("{} {}", g.status.word(), g.reason);
            return self.hold(s, cause, detail, red, now);
        }
        let since = *s.green_since.get_or_insert(now);
        let green_for = now - since;
        let hold = chrono::TimeDelta::from_std(phase.hold).unwrap_or(chrono::TimeDelta::MAX);
        if green_for < hold {
            if s.state == StateName::Holding {
                s.state = StateName::Canary;
            }
            return self.none(
                format!(
                    "all gates GREEN for {} of the {} hold",
                    human(green_for),
                    human(hold)
                ),
                now,
            );
        }
        if idx + 1 == self.cfg.phases.len() {
            return self.advance(
                s,
                format!(
                    "all gates GREEN for {} at {}%: rollout promoted",
                    human(green_for),
                    phase.weight.percent()
                ),
                now,
            );
        }
        let next = &self.cfg.phases[idx + 1];
        if next.mode == PhaseMode::Live && phase.mode == PhaseMode::Shadow {
            s.flags.insert("SHADOW_PASS_24H".into(), 1);
            let missing = self.missing_flags(s);
            if !missing.is_empty() {
                return self.hold(
                    s,
                    HoldCause::StartConditions,
                    missing.join(", "),
                    false,
                    now,
                );
            }
        }
        if let Some(role) = self.missing_approval(s, idx + 1, ev.all_green()) {
            return self.hold(
                s,
                HoldCause::Approval,
                format_args!("{} needs approval by role {role}", next.name),
                false,
                now,
            );
        }
        if let Some(until) = self.freeze(local).until_text() {
            // One hold for the whole night (or weekend): its cause stays the
            // window, so it is reported once, when it starts.
            return self.hold(
                s,
                HoldCause::PromotionWindow,
                format_args!("held overnight until {until}"),
                false,
                now,
            );
        }
        let approved = next.approval.as_ref().map_or(String::new(), |r| {
            match s.approvals.iter().rev().find(|a| &a.role == r) {
                Some(a) => format!(", approved by {} ({r})", a.by),
                None => format!(", {r} approval waived: all GREEN"),
            }
        });
        self.advance(
            s,
            format!(
                "all gates GREEN for {}: {} -> {} ({}%){approved}",
                human(green_for),
                phase.name,
                next.name,
                next.weight.percent()
            ),
            now,
        )
    }

    /// The role whose approval phase `next` still needs, if any. The one rule
    /// for a tick's step-up and an operator's promote. A waiver counts only
    /// when every gate is GREEN right now: a tick reaches this only with all
    /// GREEN, so there the waiver always applies; a manual promote can come
    /// at any colour, and that is where a waived approval still matters.
    pub(crate) fn missing_approval<'c>(
        &'c self,
        s: &RolloutState,
        next: usize,
        all_green: bool,
    ) -> Option<&'c str> {
        let phase = self.cfg.phases.get(next)?;
        let role = phase.approval.as_deref()?;
        let waived = phase.approval_waived_if_green && all_green;
        (!waived && !s.has_approval(role)).then_some(role)
    }

    /// The request path tripped on consecutive payment failures (it already swapped the weights).
    pub(crate) fn payment_trip(
        &self,
        s: &mut RolloutState,
        trip: Trip,
        now: DateTime<Utc>,
    ) -> Outcome {
        let detail = format!(
            "{} consecutive failed payments on V2 (limit {}); weights swapped {} µs after the last failure",
            trip.failures,
            self.cfg.consecutive_payment_failures,
            trip.trigger_to_swap_ns / 1000
        );
        self.rollback(s, Trigger::PaymentFailures, &detail, now)
    }

    /// Whether the rollout has not ended yet (a Sev-1 then ends it).
    pub(crate) fn live(s: &RolloutState) -> bool {
        !matches!(s.state, StateName::RolledBack | StateName::Promoted)
    }

    /// Whether V2 is taking traffic under the controller's watch.
    pub(crate) fn active(s: &RolloutState) -> bool {
        s.weight_v2 > 0.0 && Self::live(s)
    }
}

#[cfg(test)]
pub(crate) mod tests;
