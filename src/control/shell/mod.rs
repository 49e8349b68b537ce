//! The control task: one select loop over the tick, admin commands, reloads
//! and request-path trips. Each arm reads the clock and the counts, hands
//! them to the pure [`step`](super::step), and passes the outcome to the
//! [`Effects`]; then the [`Board`] publishes what readers see. State changes
//! are serialized through this one task, so nothing here needs a lock.

use std::sync::Arc;

use chrono::{DateTime, Local, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::effects::Effects;
use super::gates::drift::Reference;
use super::gates::Evaluation;
use super::history::HistoryView;
use super::replay::RecordKind;
use super::rollout::{Command, CommandError, Core, Given, Outcome};
use super::state::{self, RolloutState, StateError, StateName};
use super::status::Board;
use super::step::{self, TickTime};
use super::tripwire::PaymentTrip;
use super::StatusView;
use crate::config::Config;
use crate::routing::Router;
use crate::telemetry::prometheus::Metrics;
use crate::telemetry::{Interval, IntervalRing, Telemetry};
use arc_swap::ArcSwap;

// === messages ===

pub(crate) struct CommandMsg {
    cmd: Command,
    by: String,
    /// Through the overnight freeze.
    force: bool,
    reply: oneshot::Sender<Result<Arc<StatusView>, CommandError>>,
}

/// New config and telemetry after a validated reload.
pub(crate) struct ReloadMsg {
    cfg: Arc<Config>,
    telemetry: Arc<Telemetry>,
    reply: oneshot::Sender<()>,
}

/// What the control task receives besides its tick.
pub(crate) enum Msg {
    Command(CommandMsg),
    Reload(ReloadMsg),
    /// A golden re-freeze round trip's result.
    Refreeze(super::webhook::RefreezeAttempt),
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
        self.command_forced(cmd, by, false).await
    }

    /// [`Self::command`], overriding the overnight freeze when `force`.
    pub async fn command_forced(
        &self,
        cmd: Command,
        by: &str,
        force: bool,
    ) -> Result<Arc<StatusView>, CommandError> {
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Command(CommandMsg {
            cmd,
            by: by.to_string(),
            force,
            reply,
        });
        let gone = || CommandError::Conflict("the controller is shutting down".into());
        self.tx.send(msg).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

// === clock ===

/// The controller's clock. Every duration (holds, RED timers, cooldowns, the
/// window, the webhook cadence, the chart's hour) is measured on tokio's
/// monotonic `Instant`, so a wall-clock step cannot shorten a hold or
/// stretch a RED timer, and tests pause time instead of sleeping.
///
/// Decision times are the wall clock at start-up plus the monotonic time
/// since: they read, and are persisted, as wall time. A time persisted
/// before a restart (phase start, GREEN since, RED since) is wall time too;
/// placed on this axis it lies at its true distance in the past, which is
/// the monotonic instant it stands for. The wall clock itself is read only
/// for display (admin audit lines) and the promotion window's time of day.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
    wall_origin: DateTime<Utc>,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Clock {
            origin: Instant::now(),
            wall_origin: Utc::now(),
        }
    }

    fn on_axis(&self, since_start: std::time::Duration) -> DateTime<Utc> {
        TimeDelta::from_std(since_start)
            .ok()
            .and_then(|d| self.wall_origin.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The readings of one step, from one look at the clock.
    pub(crate) fn read(&self) -> TickTime {
        let since_start = self.origin.elapsed();
        TickTime {
            ms: since_start.as_millis() as u64,
            at: self.on_axis(since_start),
            local: Local::now().naive_local(),
        }
    }
}

/// Sleeps until `t`; never wakes without one.
async fn sleep_until_some(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How often, and how far apart, shutdown tries a failing state write again.
const SHUTDOWN_TRIES: usize = 3;
const SHUTDOWN_RETRY: std::time::Duration = std::time::Duration::from_millis(300);

// === controller ===

/// What the controller knows between ticks.
pub(crate) struct Situation {
    pub(crate) cfg: Arc<Config>,
    pub(crate) state: RolloutState,
    /// The last evaluation (status view, reports, metrics, baseline).
    pub(crate) last_eval: Evaluation,
    /// What the controller is waiting for right now (the last reason).
    pub(crate) detail: String,
    /// The state file does not hold `state` yet (a failed write is retried).
    pub(crate) persist_degraded: bool,
    /// "held overnight until ..." while the overnight freeze holds a live rollout.
    pub(crate) overnight: Option<String>,
    /// The drift reference (the last golden baseline), loaded at start and
    /// on reload, replaced by each re-freeze; never read per tick from disk.
    pub(crate) drift: Arc<Reference>,
}

impl Situation {
    /// Notes the overnight freeze at local time `local`.
    fn note_freeze(&mut self, local: chrono::NaiveDateTime) {
        let core = Core {
            cfg: &self.cfg.rollout,
        };
        self.overnight = core
            .freeze(local)
            .until_text()
            .filter(|_| Core::live(&self.state))
            .map(|until| format!("held overnight until {until}"));
    }

    pub(crate) fn phase_name(&self) -> Option<String> {
        self.state
            .phase_index
            .map(|i| self.cfg.rollout.phases[i].name.clone())
    }
}

/// What comes in: the request path's counts and trips, and the window the
/// counts go in.
struct Intake {
    telemetry: Arc<Telemetry>,
    ring: IntervalRing,
    /// The weight in force, recorded with each interval.
    router: Arc<Router>,
    /// Request-path trips (consecutive V2 payment failures).
    trip: Arc<PaymentTrip>,
}

impl Intake {
    /// Takes the counts since the last look into the window.
    fn take(&mut self, s: &mut RolloutState, t: &TickTime) -> Option<Interval> {
        let mut snapshot = self.telemetry.snapshot();
        snapshot.users = self.telemetry.take_users();
        snapshot.beacon_users = self.telemetry.beacons.take_users();
        // The weight in force since the last tick: the interval was routed with it.
        snapshot.weight_v2_bp = self.router.load().v2.bp();
        step::intake(&mut self.ring, s, t.ms, snapshot)
    }
}

pub(crate) struct Controller {
    sit: Situation,
    intake: Intake,
    clock: Clock,
    effects: Effects,
    board: Board,
    /// Print each report to stdout (the demo).
    pub(crate) echo_reports: bool,
}

impl Controller {
    /// Loads or creates the rollout state; publishes the initial routing table.
    pub(crate) fn new(
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
        let fallback = cfg.server.state_fallback_dir.as_deref();
        let state = match state::load_resumable(dir, fallback)? {
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
        if let Some(fallback) = fallback {
            // The state file holds it now: a copy left there would be stale.
            state::remove_fallback(fallback)?;
        }
        let (tx, rx) = mpsc::channel(64);
        let drift = Arc::new(super::webhook::load_baseline(dir));
        let effects = Effects::open(
            &cfg,
            &state,
            router.clone(),
            trip.clone(),
            metrics,
            tx.clone(),
        )?;
        let board = Board::new(&state);
        let (status, history) = board.readers();
        let ctl = Controller {
            intake: Intake {
                telemetry,
                ring: step::ring(&cfg),
                router,
                trip,
            },
            sit: Situation {
                cfg,
                state,
                last_eval: Evaluation::default(),
                detail: String::new(),
                persist_degraded: false,
                overnight: None,
                drift,
            },
            clock: Clock::start(),
            effects,
            board,
            echo_reports: false,
        };
        ctl.board.publish(&ctl.sit);
        let handle = ControlHandle {
            tx,
            status,
            history,
        };
        Ok((ctl, handle, rx))
    }

    /// Runs until `shutdown` flips to true.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let every = |tick| {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        };
        // A re-freeze round trip owed before a restart is taken up again.
        self.effects.start_refreeze(&self.sit);
        let mut tick = self.sit.cfg.rollout.tick;
        let mut interval = every(tick);
        let trip = self.intake.trip.clone();
        loop {
            if self.sit.cfg.rollout.tick != tick {
                tick = self.sit.cfg.rollout.tick;
                interval = every(tick);
            }
            tokio::select! {
                _ = interval.tick() => self.on_tick(),
                Some(msg) = rx.recv() => match msg {
                    Msg::Command(c) => self.on_command(c),
                    Msg::Reload(r) => self.on_reload(r),
                    Msg::Refreeze(a) => self.on_refreeze(a),
                },
                () = trip.notify.notified() => self.on_trip(),
                () = sleep_until_some(self.effects.persist_retry_at()) => self.on_persist_retry(),
                _ = shutdown.changed() => break,
            }
        }
        self.effects.persist(&mut self.sit);
        // A last few tries, whatever the backoff, before exiting with the
        // state file behind.
        for _ in 0..SHUTDOWN_TRIES {
            if !self.sit.persist_degraded {
                return;
            }
            tokio::time::sleep(SHUTDOWN_RETRY).await;
            self.effects.persist_now(&mut self.sit);
        }
        if self.sit.persist_degraded {
            tracing::error!(
                state = self.sit.state.state.as_str(),
                weight_v2 = self.sit.state.weight_v2,
                "exiting with the rollout state not on disk: the state file still holds an earlier state; check it before the next start"
            );
        }
    }

    /// A failed state write is due again.
    fn on_persist_retry(&mut self) {
        let was = self.sit.persist_degraded;
        self.effects.persist(&mut self.sit);
        if self.sit.persist_degraded != was {
            self.board.publish(&self.sit);
        }
    }

    fn on_tick(&mut self) {
        // A trip the select has not delivered yet is handled first: this
        // tick must decide on the rolled-back state, not the one before.
        self.on_trip();
        // The cost of a tick in real time, whatever the controller's clock says.
        let started = std::time::Instant::now();
        let drift = self.sit.drift.clone();
        let t = self.step(RecordKind::Tick, "controller", |cfg, ring, s, t| {
            step::tick(cfg, ring, s, t, &drift)
        });
        self.board.record_history(t.at, &self.sit);
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "control tick"
        );
    }

    fn on_trip(&mut self) {
        let Some(trip) = self.intake.trip.take_trip() else {
            return;
        };
        if !matches!(self.sit.state.state, StateName::RolledBack) {
            let drift = self.sit.drift.clone();
            self.step(RecordKind::Trip, "request-path", |cfg, ring, s, t| {
                step::trip(cfg, ring, s, trip, t, &drift)
            });
        }
        // Handled: the state says rolled back (and is being persisted), so
        // only an operator's later action can give V2 weight again.
        self.intake.trip.release();
    }

    /// Reads the clock and the counts, runs the pure `decide` step, records
    /// the evaluation and carries out the outcome on behalf of `by`.
    fn step(
        &mut self,
        kind: RecordKind,
        by: &str,
        decide: impl FnOnce(
            &Config,
            &IntervalRing,
            &mut RolloutState,
            &TickTime,
        ) -> (Evaluation, Outcome),
    ) -> TickTime {
        let t = self.clock.read();
        let interval = self.intake.take(&mut self.sit.state, &t);
        let before = self.sit.state.clone();
        let (ev, out) = decide(&self.sit.cfg, &self.intake.ring, &mut self.sit.state, &t);
        self.sit.last_eval = ev;
        self.sit.note_freeze(t.local);
        let decision = out.decision.clone();
        self.effects
            .record(kind, &t, interval, before, &self.sit, decision);
        self.apply(out, by);
        t
    }

    fn on_refreeze(&mut self, a: super::webhook::RefreezeAttempt) {
        let t = self.clock.read();
        self.effects.refreeze_attempt(&mut self.sit, a, t.at);
        self.board.publish(&self.sit);
    }

    fn on_reload(&mut self, r: ReloadMsg) {
        self.on_trip();
        if !Arc::ptr_eq(&r.telemetry, &self.intake.telemetry) {
            // New cell layout: old interval deltas no longer line up.
            self.intake.ring = step::ring(&r.cfg);
            self.intake.telemetry = r.telemetry;
        }
        self.sit.cfg = r.cfg;
        self.sit.drift = Arc::new(super::webhook::load_baseline(
            &self.sit.cfg.server.state_dir,
        ));
        let detail = serde_json::json!({"journeys": self.sit.cfg.journeys.len() - 1});
        self.effects.audit(Utc::now(), "admin", "reload", detail);
        self.effects.route(&self.sit);
        self.board.publish(&self.sit);
        let _ = r.reply.send(());
    }

    fn on_command(&mut self, msg: CommandMsg) {
        // A command is judged against the state after any trip that came first.
        self.on_trip();
        let name = msg.cmd.name();
        let args = command_detail(&msg.cmd);
        let core = Core {
            cfg: &self.sit.cfg.rollout,
        };
        let t = self.clock.read();
        let given = Given {
            at: t.at,
            local: t.local,
            force: msg.force,
        };
        let result = core.command(&mut self.sit.state, msg.cmd, given);
        self.sit.note_freeze(t.local);
        let mut detail = serde_json::json!({
            "by": msg.by,
            "args": args,
            "result": match &result { Ok(_) => "ok".to_string(), Err(e) => e.to_string() },
        });
        if result.as_ref().is_ok_and(|o| o.forced) {
            // On record: this change went through the overnight freeze.
            detail["forced"] = serde_json::Value::Bool(true);
        }
        self.effects.audit(Utc::now(), "admin", name, detail);
        tracing::info!(command = name, by = %msg.by, ok = result.is_ok(), "admin action");
        let reply = result.map(|out| {
            self.apply(out, &msg.by);
            self.board.status()
        });
        let _ = msg.reply.send(reply);
    }

    /// Carries out an outcome, publishes the status, and tells the webhook.
    fn apply(&mut self, out: Outcome, by: &str) {
        let notable = out.report;
        self.effects
            .apply(&mut self.sit, out, by, self.echo_reports);
        self.board.publish(&self.sit);
        self.effects
            .maybe_send_update(&self.sit, &self.board, notable);
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
        Command::Start
        | Command::Pause
        | Command::Resume
        | Command::Promote
        | Command::Rollback
        | Command::Unfreeze => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests;
