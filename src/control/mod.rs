//! The control path: snapshot -> evaluate gates -> decide -> swap weights -> report.
//!
//! [`Controller`] owns the rollout state and everything with side effects
//! (routing swaps, persistence, audit log, reports, metrics, webhooks). The
//! decisions themselves come from the pure [`rollout::Core`]. Admin handlers
//! never touch the state: they send a [`Command`] and get the new status back,
//! so state changes are serialized through one task without locks.

pub mod audit;
pub mod gates;
pub mod history;
pub mod replay;
pub mod report;
pub mod rollout;
pub mod state;
pub(crate) use crate::routing::tripwire;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Local, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Config, PhaseMode};
use crate::metrics::Metrics;
use crate::routing::{RouteTable, Router, WeightBp};
use crate::stats::names::*;
use crate::stats::{IntervalRing, Telemetry};
use audit::{AuditEntry, AuditLog};
use gates::{Evaluation, GateContext};
use history::{History, HistoryPoint, HistoryView};
use report::{Report, ReportStore, TriggerStatus};
pub use rollout::{Command, CommandError};
use rollout::{Core, Outcome};
use state::{Action, Decision, RolloutState, StateError, StateName, Trigger};
use tripwire::PaymentTrip;

pub use crate::api::{PhaseView, StatusView, Weights};

pub struct CommandMsg {
    cmd: Command,
    by: String,
    reply: oneshot::Sender<Result<Arc<StatusView>, CommandError>>,
}

/// New config and telemetry after a validated reload.
pub struct ReloadMsg {
    cfg: Arc<Config>,
    telemetry: Arc<Telemetry>,
    reply: oneshot::Sender<()>,
}

/// What the control task receives besides its tick.
pub enum Msg {
    Command(CommandMsg),
    Reload(ReloadMsg),
}

/// What the admin API holds: a way to send commands and the latest status.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Msg>,
    status: Arc<ArcSwap<StatusView>>,
    history: Arc<ArcSwap<HistoryView>>,
}

impl ControlHandle {
    /// Hands a reloaded config (and possibly fresh telemetry) to the controller.
    pub async fn reload(&self, cfg: Arc<Config>, telemetry: Arc<Telemetry>) -> Result<(), ()> {
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Reload(ReloadMsg {
            cfg,
            telemetry,
            reply,
        });
        self.tx.send(msg).await.map_err(|_| ())?;
        rx.await.map_err(|_| ())
    }

    pub fn status(&self) -> Arc<StatusView> {
        self.status.load_full()
    }

    /// The last hour of ticks (weights, per-journey P95), for the status page.
    pub fn history(&self) -> Arc<HistoryView> {
        self.history.load_full()
    }

    /// Runs a command through the control task; `by` is recorded in the audit log.
    pub async fn command(&self, cmd: Command, by: &str) -> Result<Arc<StatusView>, CommandError> {
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Command(CommandMsg {
            cmd,
            by: by.to_string(),
            reply,
        });
        let gone = || CommandError::Conflict("the controller is shutting down".into());
        self.tx.send(msg).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// The routing table for a state.
pub fn route_table(cfg: &Config, s: &RolloutState) -> RouteTable {
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

pub struct Controller {
    cfg: Arc<Config>,
    state: RolloutState,
    saved: RolloutState,
    ring: IntervalRing,
    telemetry: Arc<Telemetry>,
    router: Arc<Router>,
    trip: Arc<PaymentTrip>,
    reports: ReportStore,
    audit: AuditLog,
    status: Arc<ArcSwap<StatusView>>,
    history: History,
    history_view: Arc<ArcSwap<HistoryView>>,
    metrics: Arc<Metrics>,
    webhook: Option<webhook::Sender>,
    origin: Instant,
    last_eval: Evaluation,
    detail: String,
    timeline: Vec<Decision>,
    last_update: Option<Instant>,
    /// Print each report to stdout (the demo).
    pub echo_reports: bool,
    /// Evaluation records for `rollgate replay` (`None` when disabled).
    recorder: Option<replay::Recorder>,
}

impl Controller {
    /// Loads or creates the rollout state; publishes the initial routing table.
    pub fn new(
        cfg: Arc<Config>,
        telemetry: Arc<Telemetry>,
        router: Arc<Router>,
        trip: Arc<PaymentTrip>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, ControlHandle, mpsc::Receiver<Msg>), StateError> {
        let dir = &cfg.server.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        let state = match state::load(dir)? {
            Some(s) => {
                tracing::info!(state = ?s.state, phase = ?s.phase_index, weight_v2 = s.weight_v2, "resumed rollout state");
                s
            }
            None => {
                let mut s = RolloutState::new(cfg.rollout.flags.clone());
                s.started = cfg.rollout.auto_start;
                s
            }
        };
        state::save(dir, &state)?;
        let audit = AuditLog::open(dir)?;
        router.store(route_table(&cfg, &state));
        trip.arm(Core::active(&state));
        let status = Arc::new(ArcSwap::from_pointee(StatusView {
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
            detail: String::new(),
            phase_started_at: None,
            phases: vec![],
            evaluation: Evaluation::default(),
        }));
        let history_view = Arc::new(ArcSwap::from_pointee(HistoryView::default()));
        let (tx, rx) = mpsc::channel(64);
        let webhook = cfg.rollout.webhook_url.clone().map(webhook::Sender::spawn);
        let mut ctl = Controller {
            ring: IntervalRing::new(cfg.rollout.window + cfg.rollout.tick * 2),
            reports: ReportStore::new(dir),
            saved: state.clone(),
            state,
            cfg,
            telemetry,
            router,
            trip,
            audit,
            status: status.clone(),
            history: History::default(),
            history_view: history_view.clone(),
            metrics,
            webhook,
            origin: Instant::now(),
            last_eval: Evaluation::default(),
            detail: String::new(),
            timeline: Vec::new(),
            last_update: None,
            echo_reports: false,
            recorder: None,
        };
        ctl.recorder = cfg_replay_recorder(&ctl.cfg);
        ctl.publish();
        let handle = ControlHandle {
            tx,
            status,
            history: history_view,
        };
        Ok((ctl, handle, rx))
    }

    pub fn reports(&self) -> ReportStore {
        ReportStore::new(&self.cfg.server.state_dir)
    }

    /// Runs until `shutdown` flips to true.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.cfg.rollout.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let trip = self.trip.clone();
        let mut tick = self.cfg.rollout.tick;
        loop {
            if self.cfg.rollout.tick != tick {
                tick = self.cfg.rollout.tick;
                interval = tokio::time::interval(tick);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            tokio::select! {
                _ = interval.tick() => self.on_tick(),
                Some(msg) = rx.recv() => match msg {
                    Msg::Command(c) => self.on_command(c),
                    Msg::Reload(r) => self.on_reload(r),
                },
                () = trip.notify.notified() => self.on_trip(),
                _ = shutdown.changed() => break,
            }
        }
        self.persist();
    }

    /// Takes this tick's interval into the window and evaluates the gates;
    /// returns the interval too (for the evaluation record).
    fn evaluate(&mut self, now: DateTime<Utc>) -> (Evaluation, Option<crate::stats::Interval>) {
        // `Interval::end_ms` is this clock; the record keeps it for replay.
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let mut snapshot = self.telemetry.snapshot();
        snapshot.users = self.telemetry.take_users();
        // The weight in force since the last tick: the interval was routed with it.
        snapshot.weight_v2_bp = self.router.load().v2.bp();
        let interval = self.ring.push(now_ms, snapshot).cloned();
        if let Some(interval) = &interval {
            if Core::active(&self.state) {
                let bad: u64 = interval
                    .cells
                    .iter()
                    .skip(crate::routing::Variant::V2 as usize)
                    .step_by(2)
                    .map(|c| c.classes[crate::stats::StatusClass::ServerError as usize])
                    .sum();
                self.state.v2_bad_requests += bad;
            }
        }
        let window = self
            .ring
            .window(self.cfg.journeys.len(), now_ms, self.cfg.rollout.window);
        let ev = gates::evaluate(&window, &gate_context(&self.cfg, &self.state, now));
        (ev, interval)
    }

    /// Appends the evaluation record (`control::replay`).
    fn record(
        &mut self,
        kind: &str,
        now: DateTime<Utc>,
        local: chrono::NaiveTime,
        interval: Option<crate::stats::Interval>,
        before: RolloutState,
        decision: Option<Decision>,
    ) {
        let Some(rec) = &mut self.recorder else {
            return;
        };
        let r = replay::EvalRecord {
            at: now,
            now_ms: interval
                .as_ref()
                .map_or(self.origin.elapsed().as_millis() as u64, |i| i.end_ms),
            local,
            kind: kind.into(),
            interval,
            state: before,
            gates: self.last_eval.gates.clone(),
            decision,
        };
        if let Err(e) = rec.record(&r) {
            tracing::warn!(error = %e, "could not record the evaluation");
        }
    }

    fn on_tick(&mut self) {
        let started = std::time::Instant::now();
        let (now, local) = (Utc::now(), Local::now().time());
        let (ev, interval) = self.evaluate(now);
        let before = self.state.clone();
        let cfg = self.cfg.clone();
        let out = Core { cfg: &cfg.rollout }.tick(&mut self.state, &ev, now, local);
        self.last_eval = ev;
        self.record("tick", now, local, interval, before, out.decision.clone());
        self.apply(out, "controller");
        self.record_history();
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "control tick"
        );
    }

    /// One chart point per tick, after the tick's decision took effect.
    fn record_history(&mut self) {
        let s = &self.state;
        self.history.push(HistoryPoint::new(
            Utc::now(),
            s.state,
            s.phase_index,
            s.weight_v2,
            &self.last_eval,
        ));
        self.history_view.store(Arc::new(self.history.view()));
    }

    fn on_trip(&mut self) {
        let Some(trip) = self.trip.take_trip() else {
            return;
        };
        if matches!(self.state.state, StateName::RolledBack) {
            return;
        }
        let (now, local) = (Utc::now(), Local::now().time());
        let (ev, interval) = self.evaluate(now);
        let before = self.state.clone();
        self.last_eval = ev;
        let cfg = self.cfg.clone();
        let out = Core { cfg: &cfg.rollout }.payment_trip(&mut self.state, trip, now);
        self.record("trip", now, local, interval, before, out.decision.clone());
        self.apply(out, "request-path");
    }

    fn on_reload(&mut self, r: ReloadMsg) {
        if !Arc::ptr_eq(&r.telemetry, &self.telemetry) {
            // New cell layout: old interval deltas no longer line up.
            self.ring = IntervalRing::new(r.cfg.rollout.window + r.cfg.rollout.tick * 2);
            self.telemetry = r.telemetry;
        }
        self.cfg = r.cfg;
        let entry = AuditEntry {
            at: Utc::now(),
            kind: "admin".into(),
            action: "reload".into(),
            detail: serde_json::json!({"journeys": self.cfg.journeys.len() - 1}),
        };
        self.audit_append(&entry);
        self.router.store(route_table(&self.cfg, &self.state));
        self.publish();
        let _ = r.reply.send(());
    }

    fn on_command(&mut self, msg: CommandMsg) {
        let name = msg.cmd.name();
        let detail = command_detail(&msg.cmd);
        let cfg = self.cfg.clone();
        let result = Core { cfg: &cfg.rollout }.command(&mut self.state, msg.cmd, Utc::now());
        let entry = AuditEntry {
            at: Utc::now(),
            kind: "admin".into(),
            action: name.into(),
            detail: serde_json::json!({
                "by": msg.by,
                "args": detail,
                "result": match &result { Ok(_) => "ok".to_string(), Err(e) => e.to_string() },
            }),
        };
        self.audit_append(&entry);
        tracing::info!(command = name, by = %msg.by, ok = result.is_ok(), "admin action");
        let reply = result.map(|out| {
            self.apply(out, &msg.by);
            self.status.load_full()
        });
        let _ = msg.reply.send(reply);
    }

    fn audit_append(&mut self, entry: &AuditEntry) {
        if let Err(e) = self.audit.append(entry) {
            tracing::error!(error = %e, "audit log write failed");
        }
    }

    /// Carries out an outcome: swap, persist, audit, report, metrics, status.
    fn apply(&mut self, out: Outcome, by: &str) {
        if out.weights_changed || self.route_differs() {
            self.router.store(route_table(&self.cfg, &self.state));
        }
        self.trip.arm(Core::active(&self.state));
        if let Some(d) = &out.decision {
            self.detail = d.reason.clone();
            if d.action != Action::None {
                self.timeline.push(d.clone());
                let entry = AuditEntry {
                    at: d.at,
                    kind: "decision".into(),
                    action: format!("{:?}", d.action).to_uppercase(),
                    detail: serde_json::json!({
                        "reason": d.reason,
                        "by": by,
                        "phase": self.phase_name(),
                        "weight_v2": self.state.weight_v2,
                        "trigger": d.trigger.map(Trigger::label),
                    }),
                };
                self.audit_append(&entry);
                tracing::info!(action = %format!("{:?}", d.action).to_uppercase(), reason = %d.reason, phase = ?self.phase_name(), weight_v2 = self.state.weight_v2, "decision");
                self.metrics
                    .counter(
                        DECISIONS_TOTAL,
                        &[("action", format!("{:?}", d.action).to_uppercase())],
                    )
                    .increment(1);
                if let Some(t) = d.trigger {
                    self.metrics
                        .counter(ROLLBACKS_TOTAL, &[("reason", t.label().into())])
                        .increment(1);
                }
            }
            if out.report {
                self.write_report(d.clone(), out.stepped_from);
            }
        }
        if out.promoted {
            self.golden_refreeze();
        }
        self.persist();
        self.export_metrics();
        self.publish();
        self.maybe_send_update(out.report);
    }

    fn route_differs(&self) -> bool {
        let cur = self.router.load();
        cur.v2 != WeightBp::from_percent(self.state.weight_v2).unwrap_or(WeightBp::ZERO)
            || cur.shadow != (self.state.state == StateName::Shadow)
    }

    fn phase_name(&self) -> Option<String> {
        self.state
            .phase_index
            .map(|i| self.cfg.rollout.phases[i].name.clone())
    }

    fn persist(&mut self) {
        if self.state == self.saved {
            return;
        }
        match state::save(&self.cfg.server.state_dir, &self.state) {
            Ok(()) => self.saved = self.state.clone(),
            Err(e) => tracing::error!(error = %e, "could not persist rollout state"),
        }
    }

    fn trigger_status(&self, d: &Decision) -> Vec<TriggerStatus> {
        let cfg = &self.cfg.rollout;
        let ev = &self.last_eval;
        let worst_p95 = ev
            .journeys
            .iter()
            .filter(|j| j.v2.requests >= cfg.min_samples)
            .filter_map(|j| j.v2.p95_ms.map(|p| (j.journey.clone(), p)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let longest_red = self.state.red_since.iter().min_by_key(|(_, t)| **t);
        let fired = |t: Trigger| d.trigger == Some(t);
        vec![
            TriggerStatus {
                trigger: Trigger::P95Hard.label().into(),
                fired: fired(Trigger::P95Hard),
                detail: match worst_p95 {
                    Some((j, p)) => format!(
                        "worst V2 P95 {p:.1} ms ({j}), limit {} ms",
                        cfg.p95_rollback_ms
                    ),
                    None => "no journey with enough samples".into(),
                },
            },
            TriggerStatus {
                trigger: Trigger::GateRedSustained.label().into(),
                fired: fired(Trigger::GateRedSustained),
                detail: match longest_red {
                    Some((k, t)) => format!(
                        "{k} RED since {}, limit {}",
                        t.to_rfc3339(),
                        humantime::format_duration(cfg.red_rollback_after)
                    ),
                    None => "no gate RED".into(),
                },
            },
            TriggerStatus {
                trigger: Trigger::PaymentFailures.label().into(),
                fired: fired(Trigger::PaymentFailures),
                detail: format!(
                    "limit: more than {} consecutive V2 payment failures (request path)",
                    cfg.consecutive_payment_failures
                ),
            },
            TriggerStatus {
                trigger: Trigger::Sev1Incident.label().into(),
                fired: fired(Trigger::Sev1Incident),
                detail: format!(
                    "{} Sev-1, {} Sev-2 incidents",
                    self.state.sev_count(1),
                    self.state.sev_count(2)
                ),
            },
            TriggerStatus {
                trigger: Trigger::Manual.label().into(),
                fired: fired(Trigger::Manual),
                detail: "operator".into(),
            },
        ]
    }

    fn write_report(&mut self, d: Decision, stepped_from: Option<usize>) {
        let id = format!("{:06}", self.state.next_report);
        self.state.next_report += 1;
        let ev = &self.last_eval;
        let summary = stepped_from
            .map(|i| report::summary_card(&self.cfg.rollout.phases[i].name, ev, d.action));
        let r = Report {
            id,
            at: d.at,
            phase: self.phase_name(),
            weight_v2: self.state.weight_v2,
            triggers: self.trigger_status(&d),
            decision: d,
            gates: ev.gates.clone(),
            journeys: ev.journeys.clone(),
            v1: ev.v1.clone(),
            v2: ev.v2.clone(),
            window_ms: ev.window_ms,
            approvals: self.state.approvals.clone(),
            incidents: self.state.incidents.clone(),
            summary,
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
        if self.echo_reports {
            println!("{}", report::markdown(&r));
        }
    }

    fn golden_refreeze(&mut self) {
        match webhook::write_baseline(&self.cfg.server.state_dir, &self.last_eval) {
            Ok((path, sha)) => {
                tracing::info!(path = %path.display(), sha256 = %sha, "golden baseline written");
                let entry = AuditEntry {
                    at: Utc::now(),
                    kind: "decision".into(),
                    action: "FREEZE".into(),
                    detail: serde_json::json!({"baseline": path.display().to_string(), "sha256": sha}),
                };
                self.audit_append(&entry);
                if let Some(url) = self.cfg.rollout.command_center_url.clone() {
                    tokio::spawn(webhook::round_trip_baseline(url, path, sha));
                }
            }
            Err(e) => tracing::error!(error = %e, "could not write golden baseline"),
        }
        self.state.frozen = true;
    }

    fn export_metrics(&self) {
        let s = &self.state;
        self.metrics
            .gauge(ROUTE_WEIGHT_PERCENT, &[("variant", "v2".into())])
            .set(s.weight_v2);
        self.metrics
            .gauge(ROUTE_WEIGHT_PERCENT, &[("variant", "v1".into())])
            .set(100.0 - s.weight_v2);
        self.metrics
            .gauge(ROLLOUT_PHASE, &[])
            .set(s.phase_index.map_or(-1.0, |i| i as f64));
        for g in &self.last_eval.gates {
            let labels = [
                ("gate", g.name.to_string()),
                ("journey", g.journey.clone().unwrap_or_else(|| "all".into())),
            ];
            self.metrics
                .gauge(GATE_STATUS, &labels)
                .set(g.status.metric());
        }
    }

    fn publish(&self) {
        let s = &self.state;
        let cfg = &self.cfg.rollout;
        let view = StatusView {
            state: s.state,
            phase: self.phase_name(),
            phase_index: s.phase_index,
            weights: Weights {
                v1: 100.0 - s.weight_v2,
                v2: s.weight_v2,
            },
            gates: self.last_eval.gates.clone(),
            flags: s.flags.clone(),
            approvals: s.approvals.clone(),
            incidents: s.incidents.clone(),
            last_decision: s.last_decision.clone(),
            frozen: s.frozen,
            detail: self.detail.clone(),
            phase_started_at: s.phase_started_at,
            phases: cfg
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
            evaluation: self.last_eval.clone(),
        };
        self.status.store(Arc::new(view));
    }

    /// Status webhook: at the phase cadence, and at once on a HOLD or ROLLBACK.
    fn maybe_send_update(&mut self, notable: bool) {
        let Some(hook) = &self.webhook else { return };
        let cadence = self
            .state
            .phase_index
            .map_or(Duration::from_secs(900), |i| {
                self.cfg.rollout.phases[i].update_every
            });
        let due = self.last_update.is_none_or(|t| t.elapsed() >= cadence);
        let live = !matches!(
            self.state.state,
            StateName::Waiting | StateName::Promoted | StateName::RolledBack
        );
        if notable || (due && live) {
            self.last_update = Some(Instant::now());
            let view = self.status.load_full();
            hook.send(webhook::status_text(&view));
        }
    }
}

fn command_detail(cmd: &Command) -> serde_json::Value {
    match cmd {
        Command::SetWeight(p) => serde_json::json!({"v2": p}),
        Command::SetFlags(f) => serde_json::json!(f),
        Command::Approve { role, by } => serde_json::json!({"role": role, "by": by}),
        Command::Incident { severity, summary } => {
            serde_json::json!({"severity": severity, "summary": summary})
        }
        _ => serde_json::Value::Null,
    }
}

fn cfg_replay_recorder(cfg: &Config) -> Option<replay::Recorder> {
    cfg.replay
        .record
        .then(|| replay::Recorder::new(&cfg.server.state_dir, cfg.replay.max_bytes))
}

/// The gate inputs of a tick: the config, and what the rollout state says
/// about the phase (P95 threshold, control traffic, weight, error budget
/// spent, shadow mode). Shared by the controller and `rollgate replay`.
pub fn gate_context<'a>(
    cfg: &'a Config,
    s: &'a RolloutState,
    now: DateTime<Utc>,
) -> GateContext<'a> {
    let phase_p95_ms = s
        .phase_index
        .and_then(|i| cfg.rollout.phases.get(i))
        .unwrap_or(&cfg.rollout.phases[0])
        .p95_ms;
    GateContext {
        cfg,
        phase_p95_ms,
        comparative: s.weight_v2 < 100.0,
        weight_v2: s.weight_v2,
        v2_bad_since_start: s.v2_bad_requests,
        shadow: is_shadow(cfg, s),
        now,
        previous: &s.gate_status,
        recovery: &s.gate_recovery,
    }
}

/// Whether a phase mirrors rather than routes.
pub fn is_shadow(cfg: &Config, s: &RolloutState) -> bool {
    s.phase_index
        .and_then(|i| cfg.rollout.phases.get(i))
        .is_some_and(|p| p.mode == PhaseMode::Shadow)
}
