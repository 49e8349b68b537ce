//! Carrying out a decision: the routing swap, the state file, the audit log,
//! gate reports and post-mortems, metrics, the golden re-freeze, the status
//! webhook's timing and the evaluation records. Nothing here decides; it
//! writes down and passes on what the pure step decided.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::audit::{AuditEntry, AuditLog};
use super::gates::drift::{Baseline, Reference};
use super::persist::Persister;
use super::replay::{self, EvalRecord, RecordKind};
use super::report::{self, Report, ReportStore, TriggerStatus};
use super::rollout::{Core, Outcome};
use super::shell::{Msg, Situation};
use super::state::{self, Action, Decision, RolloutState, StateName, Trigger};
use super::status::Board;
use super::step::TickTime;
use super::tripwire::PaymentTrip;
use super::webhook::{self, Refreeze, RefreezeAttempt, RefreezeState};
use crate::config::Config;
use crate::routing::{RouteTable, Router, WeightBp};
use crate::telemetry::names::*;
use crate::telemetry::prometheus::Metrics;
use crate::telemetry::Interval;

/// The routing table for a state.
pub(crate) fn route_table(cfg: &Config, s: &RolloutState) -> RouteTable {
    let headers = match (s.state, s.phase_index) {
        (StateName::RolledBack, _) | (_, None) => Vec::new(),
        (_, Some(i)) => cfg.rollout.phases[i].headers.clone(),
    };
    RouteTable {
        v2: WeightBp::from_percent(s.weight_v2).unwrap_or(WeightBp::ZERO),
        headers,
        headers_to: s
            .phase_index
            .map_or(Default::default(), |i| cfg.rollout.phases[i].headers_to),
        shadow: s.state == StateName::Shadow,
    }
}

/// The status webhook and when it last spoke.
struct StatusHook {
    sender: webhook::Sender,
    last: Option<Instant>,
}

/// Everything with side effects.
pub(crate) struct Effects {
    router: Arc<Router>,
    trip: Arc<PaymentTrip>,
    audit: AuditLog,
    reports: ReportStore,
    metrics: Arc<Metrics>,
    hook: Option<StatusHook>,
    /// The state file's writer (retries a failed write; degraded until done).
    persister: Persister,
    /// This run's decisions, the post-mortem's timeline.
    timeline: Vec<Decision>,
    /// Evaluation records for `rollgate replay` (`None` when disabled).
    recorder: Option<replay::Recorder>,
    /// The controller's own channel: the re-freeze round trip reports back on it.
    control: mpsc::Sender<Msg>,
    /// The re-freeze round trip in flight, if any.
    refreeze_task: Option<AbortHandle>,
}

impl Effects {
    /// Opens the audit log and publishes the routing table of `state`.
    pub(crate) fn open(
        cfg: &Config,
        state: &RolloutState,
        router: Arc<Router>,
        trip: Arc<PaymentTrip>,
        metrics: Arc<Metrics>,
        control: mpsc::Sender<Msg>,
    ) -> Result<Self, state::StateError> {
        let dir = &cfg.server.state_dir;
        let audit = AuditLog::open(dir)?;
        metrics.gauge(STATE_PERSIST_DEGRADED, &[]).set(0.0);
        trip.publish(route_table(cfg, state));
        trip.arm(Core::active(state));
        Ok(Effects {
            router,
            trip,
            audit,
            reports: ReportStore::new(dir),
            metrics,
            hook: cfg.rollout.webhook_url.clone().map(|url| StatusHook {
                sender: webhook::Sender::spawn(url),
                last: None,
            }),
            persister: Persister::new(state.clone()),
            timeline: Vec::new(),
            recorder: cfg
                .replay
                .record
                .then(|| replay::Recorder::new(dir, cfg.replay.max_bytes)),
            control,
            refreeze_task: None,
        })
    }

    pub(crate) fn audit(
        &mut self,
        at: DateTime<Utc>,
        kind: &str,
        action: &str,
        detail: serde_json::Value,
    ) {
        let entry = AuditEntry {
            at,
            kind: kind.into(),
            action: action.into(),
            detail,
        };
        if let Err(e) = self.audit.append(&entry) {
            tracing::error!(error = %e, "audit log write failed");
        }
    }

    /// Publishes the routing table of the situation; a latched payment trip
    /// keeps V2 at zero until the controller has handled it.
    pub(crate) fn route(&self, sit: &Situation) {
        if !self.trip.publish(route_table(&sit.cfg, &sit.state)) {
            tracing::debug!("payment trip latched: routing table kept at V2 = 0");
        }
    }

    /// Appends the evaluation record (`control::replay`).
    pub(crate) fn record(
        &mut self,
        kind: RecordKind,
        t: &TickTime,
        interval: Option<Interval>,
        before: RolloutState,
        sit: &Situation,
        decision: Option<Decision>,
    ) {
        let Some(rec) = &mut self.recorder else {
            return;
        };
        let r = EvalRecord {
            at: t.at,
            now_ms: interval.as_ref().map_or(t.ms, |i| i.end_ms),
            local: t.local.time(),
            local_date: Some(t.local.date()),
            kind,
            interval,
            state: before,
            gates: sit.last_eval.gates.clone(),
            decision,
        };
        if let Err(e) = rec.record(&r) {
            tracing::warn!(error = %e, "could not record the evaluation");
        }
    }

    /// Carries out an outcome: swap, audit, report, re-freeze, persist,
    /// metrics. `echo` prints the report to stdout (the demo).
    pub(crate) fn apply(&mut self, sit: &mut Situation, out: Outcome, by: &str, echo: bool) {
        if out.weights_changed || self.route_differs(&sit.state) {
            self.route(sit);
        }
        self.trip.arm(Core::active(&sit.state));
        if let Some(d) = &out.decision {
            sit.detail = d.reason.clone();
            if d.action != Action::None {
                self.decided(sit, d, by);
            }
            if out.report {
                self.write_report(sit, d.clone(), out.stepped_from, echo);
            }
        }
        if out.promoted {
            self.golden_refreeze(sit);
        }
        if !sit.state.refreeze.as_ref().is_some_and(Refreeze::pending) {
            // A new rollout began (or it is verified): no round trip is owed.
            if let Some(task) = self.refreeze_task.take() {
                task.abort();
            }
        }
        self.persist(sit);
        self.export_metrics(sit);
    }

    /// A decision other than NONE: timeline, audit line, log, counters.
    fn decided(&mut self, sit: &Situation, d: &Decision, by: &str) {
        self.timeline.push(d.clone());
        let detail = serde_json::json!({
            "reason": d.reason,
            "by": by,
            "phase": sit.phase_name(),
            "weight_v2": sit.state.weight_v2,
            "trigger": d.trigger.map(Trigger::label),
        });
        self.audit(d.at, "decision", d.action.label(), detail);
        tracing::info!(action = d.action.label(), reason = %d.reason, phase = ?sit.phase_name(), weight_v2 = sit.state.weight_v2, "decision");
        self.metrics
            .counter(DECISIONS_TOTAL, &[("action", d.action.label().into())])
            .increment(1);
        if let Some(t) = d.trigger {
            self.metrics
                .counter(ROLLBACKS_TOTAL, &[("reason", t.label().into())])
                .increment(1);
        }
    }

    fn route_differs(&self, s: &RolloutState) -> bool {
        let cur = self.router.load();
        cur.v2 != WeightBp::from_percent(s.weight_v2).unwrap_or(WeightBp::ZERO)
            || cur.shadow != (s.state == StateName::Shadow)
    }

    /// Writes the state file when the state changed; a failed write is
    /// retried (`retry_at`) and marks the situation degraded until it lands.
    pub(crate) fn persist(&mut self, sit: &mut Situation) {
        let server = &sit.cfg.server;
        self.persister.persist(
            &server.state_dir,
            server.state_fallback_dir.as_deref(),
            &sit.state,
        );
        let degraded = self.persister.degraded();
        if degraded != sit.persist_degraded {
            sit.persist_degraded = degraded;
            self.metrics
                .gauge(STATE_PERSIST_DEGRADED, &[])
                .set(if degraded { 1.0 } else { 0.0 });
        }
    }

    /// Tries a failing write again now, whatever its backoff says.
    pub(crate) fn persist_now(&mut self, sit: &mut Situation) {
        self.persister.due_now();
        self.persist(sit);
    }

    /// When a failed state write is due to be tried again.
    pub(crate) fn persist_retry_at(&self) -> Option<Instant> {
        self.persister.retry_at()
    }

    fn write_report(
        &mut self,
        sit: &mut Situation,
        d: Decision,
        stepped_from: Option<usize>,
        echo: bool,
    ) {
        let id = format!("{:06}", sit.state.next_report);
        sit.state.next_report += 1;
        let ev = &sit.last_eval;
        let summary = stepped_from
            .map(|i| report::summary_card(&sit.cfg.rollout.phases[i].name, ev, d.action));
        let r = Report {
            id,
            at: d.at,
            phase: sit.phase_name(),
            weight_v2: sit.state.weight_v2,
            triggers: trigger_status(sit, &d),
            decision: d,
            gates: ev.gates.clone(),
            journeys: ev.journeys.clone(),
            v1: ev.v1.clone(),
            v2: ev.v2.clone(),
            window_ms: ev.window_ms,
            approvals: sit.state.approvals.clone(),
            incidents: sit.state.incidents.clone(),
            summary,
            drift: ev.drift.clone(),
        };
        if let Err(e) = self.reports.write(&r) {
            tracing::error!(error = %e, "could not write gate report");
        }
        if r.decision.action == Action::Rollback {
            match self.reports.write_postmortem(&r, &self.timeline) {
                Ok(p) => tracing::warn!(path = %p.display(), "post-mortem placeholder written"),
                Err(e) => tracing::error!(error = %e, "could not write post-mortem placeholder"),
            }
        }
        if echo {
            println!("{}", report::markdown(&r));
        }
    }

    /// Writes the golden baseline. Without a command center FREEZE_LOCK is
    /// set at once; with one, only when the round trip gave the baseline back
    /// intact (`refreeze_attempt`), so a lock never rests on an unverified
    /// baseline. A baseline that cannot even be written locks at once, as
    /// before: there is nothing to verify, and the error is logged.
    fn golden_refreeze(&mut self, sit: &mut Situation) {
        let url = sit.cfg.rollout.command_center_url.clone();
        match webhook::write_baseline(&sit.cfg.server.state_dir, &sit.last_eval) {
            Ok((path, sha)) => {
                tracing::info!(path = %path.display(), sha256 = %sha, "golden baseline written");
                // The next rollout's drift reference, without reading it back.
                let baseline = Baseline::from_journeys(sha.clone(), &sit.last_eval.journeys);
                sit.drift = Arc::new(Reference::Baseline(baseline));
                let detail = serde_json::json!({
                    "baseline": path.display().to_string(),
                    "sha256": sha,
                    "verify": url.as_ref().map(|u| u.to_string()),
                });
                self.audit(Utc::now(), "decision", "FREEZE", detail);
                if url.is_some() {
                    sit.state.refreeze = Some(Refreeze::new(sha));
                    self.start_refreeze(sit);
                    return;
                }
            }
            Err(e) => tracing::error!(error = %e, "could not write golden baseline"),
        }
        sit.state.frozen = true;
    }

    /// Starts (or, after a restart, resumes) the round trip the state owes.
    pub(crate) fn start_refreeze(&mut self, sit: &Situation) {
        let (Some(r), Some(url)) = (&sit.state.refreeze, &sit.cfg.rollout.command_center_url)
        else {
            return;
        };
        if !r.pending() {
            return;
        }
        if let Some(task) = self.refreeze_task.take() {
            task.abort();
        }
        let path = sit.cfg.server.state_dir.join(webhook::BASELINE_FILE);
        self.refreeze_task = Some(webhook::spawn_refreeze(
            url.clone(),
            path,
            r.sha256.clone(),
            r.attempts,
            self.control.clone(),
        ));
    }

    /// A round trip's result: success sets FREEZE_LOCK and clears the
    /// anomaly; a failure is an anomaly (audit line, webhook, status) and
    /// the task tries again after its backoff. A result for another
    /// baseline (a new rollout started since) changes nothing.
    pub(crate) fn refreeze_attempt(
        &mut self,
        sit: &mut Situation,
        a: RefreezeAttempt,
        at: DateTime<Utc>,
    ) {
        let Some(r) = sit.state.refreeze.as_mut().filter(|r| r.sha256 == a.sha256) else {
            return;
        };
        if !r.pending() {
            return;
        }
        r.attempts = a.attempt;
        match a.result {
            Ok(()) => {
                r.state = RefreezeState::Verified;
                r.last_error = None;
                r.next_attempt_at = None;
                sit.state.frozen = true;
                self.refreeze_task = None;
                let detail = serde_json::json!({"sha256": a.sha256, "attempts": a.attempt, "verified": true});
                self.audit(at, "decision", "FREEZE", detail);
            }
            Err(e) => {
                r.state = RefreezeState::Retrying;
                r.next_attempt_at = chrono::TimeDelta::from_std(a.retry_in).ok().map(|d| at + d);
                r.last_error = Some(e.clone());
                let text = format!(
                    "rollgate ANOMALY: golden re-freeze round trip {} failed: {e}; FREEZE_LOCK not set, retrying in {}",
                    a.attempt,
                    humantime::format_duration(a.retry_in)
                );
                tracing::warn!(attempt = a.attempt, error = %e, "golden re-freeze anomaly");
                let detail =
                    serde_json::json!({"sha256": a.sha256, "attempts": a.attempt, "error": e});
                self.audit(at, "anomaly", "refreeze", detail);
                if let Some(hook) = &mut self.hook {
                    hook.last = Some(Instant::now());
                    hook.sender.send(text);
                }
            }
        }
        self.persist(sit);
    }

    fn export_metrics(&self, sit: &Situation) {
        let s = &sit.state;
        self.metrics
            .gauge(ROUTE_WEIGHT_PERCENT, &[("variant", "v2".into())])
            .set(s.weight_v2);
        self.metrics
            .gauge(ROUTE_WEIGHT_PERCENT, &[("variant", "v1".into())])
            .set(100.0 - s.weight_v2);
        self.metrics
            .gauge(ROLLOUT_PHASE, &[])
            .set(s.phase_index.map_or(-1.0, |i| i as f64));
        for g in &sit.last_eval.gates {
            let labels = [
                ("gate", g.name.to_string()),
                ("journey", g.journey.clone().unwrap_or_else(|| "all".into())),
            ];
            self.metrics
                .gauge(GATE_STATUS, &labels)
                .set(g.status.metric());
        }
    }

    /// Status webhook: at the phase cadence, and at once on a HOLD or
    /// ROLLBACK (`notable`). The cadence runs on the monotonic clock.
    pub(crate) fn maybe_send_update(&mut self, sit: &Situation, board: &Board, notable: bool) {
        let Some(hook) = &mut self.hook else { return };
        let cadence = sit.state.phase_index.map_or(Duration::from_secs(900), |i| {
            sit.cfg.rollout.phases[i].update_every
        });
        let due = hook.last.is_none_or(|t| t.elapsed() >= cadence);
        let live = !matches!(
            sit.state.state,
            StateName::Waiting | StateName::Promoted | StateName::RolledBack
        );
        if notable || (due && live) {
            hook.last = Some(Instant::now());
            hook.sender.send(webhook::status_text(&board.status()));
        }
    }
}

/// The state of every rollback trigger at a decision (the report's table).
fn trigger_status(sit: &Situation, d: &Decision) -> Vec<TriggerStatus> {
    let cfg = &sit.cfg.rollout;
    let ev = &sit.last_eval;
    let worst_p95 = ev
        .journeys
        .iter()
        .filter(|j| j.v2.requests >= cfg.min_samples)
        .filter_map(|j| j.v2.p95_ms.map(|p| (j.journey.clone(), p)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let longest_red = sit.state.red_since.iter().min_by_key(|(_, t)| **t);
    let status = |t: Trigger, detail: String| TriggerStatus {
        trigger: t.label().into(),
        fired: d.trigger == Some(t),
        detail,
    };
    vec![
        status(
            Trigger::P95Hard,
            match worst_p95 {
                Some((j, p)) => format!(
                    "worst V2 P95 {p:.1} ms ({j}), limit {} ms",
                    cfg.p95_rollback_ms
                ),
                None => "no journey with enough samples".into(),
            },
        ),
        status(
            Trigger::GateRedSustained,
            match longest_red {
                Some((k, t)) => format!(
                    "{k} RED since {}, limit {}",
                    t.to_rfc3339(),
                    humantime::format_duration(cfg.red_rollback_after)
                ),
                None => "no gate RED".into(),
            },
        ),
        status(
            Trigger::PaymentFailures,
            format!(
                "limit: more than {} consecutive V2 payment failures (request path)",
                cfg.consecutive_payment_failures
            ),
        ),
        status(
            Trigger::Sev1Incident,
            format!(
                "{} Sev-1, {} Sev-2 incidents",
                sit.state.sev_count(1),
                sit.state.sev_count(2)
            ),
        ),
        status(Trigger::Manual, "operator".into()),
    ]
}
