//! The control loop on paused time: tokio's clock only moves when every task
//! waits, so a one-minute hold passes in milliseconds of real time, and the
//! loop is driven exactly as in production (interval ticks, commands).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::control::rollout::tests::{self, ALL_FLAGS, PLAIN_PHASES};
use crate::control::state::Trigger;
use crate::routing::journeys::JourneyId;
use crate::routing::{RouteTable, Variant, WeightBp};
use crate::telemetry::Telemetry;

/// The first phase's hold in `PLAIN_PHASES`.
const HOLD: Duration = Duration::from_secs(600);
/// The default tick.
const TICK: Duration = Duration::from_secs(15);

fn config(dir: &Path) -> Config {
    let keys = format!("auto_start = true\n{ALL_FLAGS}");
    let mut cfg = tests::config(&keys, PLAIN_PHASES);
    cfg.server.state_dir = dir.to_path_buf();
    cfg
}

/// A controller running on its own task, and what its test looks at.
struct Rig {
    handle: ControlHandle,
    router: Arc<Router>,
    telemetry: Arc<Telemetry>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(dir: &Path) -> Rig {
    let b = build(dir);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(b.ctl.run(b.rx, stop_rx));
    Rig {
        handle: b.handle,
        router: b.router,
        telemetry: b.telemetry,
        stop,
        task,
    }
}

/// A controller and everything around it, not yet running.
struct Built {
    ctl: Controller,
    handle: ControlHandle,
    rx: mpsc::Receiver<Msg>,
    router: Arc<Router>,
    trip: Arc<PaymentTrip>,
    telemetry: Arc<Telemetry>,
}

fn build(dir: &Path) -> Built {
    let cfg = Arc::new(config(dir));
    let telemetry = Arc::new(Telemetry::new(cfg.journeys.len(), true));
    let router = Arc::new(Router::new(RouteTable::default()));
    let trip = Arc::new(PaymentTrip::new(
        cfg.rollout.consecutive_payment_failures,
        router.clone(),
    ));
    let (ctl, handle, rx) = Controller::new(
        cfg,
        telemetry.clone(),
        router.clone(),
        trip.clone(),
        Arc::new(Metrics::new()),
    )
    .expect("controller starts");
    Built {
        ctl,
        handle,
        rx,
        router,
        trip,
        telemetry,
    }
}

impl Rig {
    /// Traffic on both variants, five times a tick: V1 at 60 ms, V2 at `v2_ms`.
    fn traffic(&self, v2_ms: u64) -> tokio::task::JoinHandle<()> {
        let telemetry = self.telemetry.clone();
        tokio::spawn(async move {
            loop {
                for v in Variant::ALL {
                    for _ in 0..50 {
                        telemetry.record(
                            JourneyId::new(0),
                            v,
                            Duration::from_millis(if v == Variant::V2 { v2_ms } else { 60 }),
                            200,
                            false,
                        );
                    }
                }
                tokio::time::sleep(TICK / 5).await;
            }
        })
    }

    /// Waits (on paused time, bounded) until the status satisfies `done`.
    async fn until(&self, what: &str, done: impl Fn(&StatusView) -> bool) -> Arc<StatusView> {
        let deadline = Instant::now() + HOLD * 6;
        loop {
            let s = self.handle.status();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still {:?} in {:?}: {}",
                s.state,
                s.phase,
                s.detail
            );
            tokio::time::sleep(TICK / 10).await;
        }
    }

    async fn stop(self) {
        self.stop.send(true).expect("controller alive");
        self.task.await.expect("controller stops cleanly");
    }
}

#[tokio::test(start_paused = true)]
async fn a_green_hold_elapses_and_the_weight_steps_up() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::time::Instant::now();
    let rig = start(dir.path());
    let traffic = rig.traffic(60);
    rig.until("start", |s| s.phase_index == Some(0)).await;
    let entered = Instant::now();
    assert_eq!(rig.router.load().v2, WeightBp::from_percent(5.0).unwrap());
    let s = rig.until("step-up", |s| s.phase_index == Some(1)).await;
    let held = entered.elapsed();
    assert!(held >= HOLD, "stepped up after {held:?}, before the hold");
    assert!(held < HOLD * 2, "the hold took {held:?}");
    assert_eq!(s.state, StateName::Canary);
    assert_eq!(s.weights.v2, 25.0);
    assert_eq!(rig.router.load().v2, WeightBp::from_percent(25.0).unwrap());
    let last = s.last_decision.as_ref().expect("a decision");
    assert!(
        last.reason.contains("canary-5 -> canary-25"),
        "{}",
        last.reason
    );
    traffic.abort();
    rig.stop().await;
    assert!(
        real.elapsed() < Duration::from_secs(30),
        "paused time should not wait for real: {:?}",
        real.elapsed()
    );
    // The decision is persisted with the state.
    let saved = state::load(dir.path()).unwrap().expect("state file");
    assert_eq!(saved.phase_index, Some(1));
}

#[tokio::test(start_paused = true)]
async fn without_traffic_the_rollout_holds_however_long_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path());
    rig.until("start", |s| s.phase_index == Some(0)).await;
    tokio::time::sleep(HOLD * 3).await;
    let s = rig.handle.status();
    assert_eq!((s.state, s.phase_index), (StateName::Holding, Some(0)));
    assert!(s.detail.starts_with("gate "), "{}", s.detail);
    // One HOLD report for the whole hold, not one per tick.
    let reports = crate::control::report::ReportStore::new(dir.path()).list();
    let holds = reports.iter().filter(|r| r.decision == "NO-GO").count();
    assert_eq!(holds, 1, "{reports:?}");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn commands_go_through_the_loop_and_come_back_with_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path());
    rig.until("start", |s| s.phase_index == Some(0)).await;
    let s = rig.handle.command(Command::Pause, "tester").await.unwrap();
    assert_eq!(s.state, StateName::Paused);
    let s = rig
        .handle
        .command(Command::SetWeight(20.0), "tester")
        .await
        .unwrap();
    assert_eq!(s.weights.v2, 20.0);
    assert_eq!(rig.router.load().v2, WeightBp::from_percent(20.0).unwrap());
    let e = rig
        .handle
        .command(Command::Pause, "tester")
        .await
        .unwrap_err();
    assert!(matches!(e, CommandError::Conflict(_)), "{e:?}");
    rig.stop().await;
    let (entries, _) = crate::control::audit::read(dir.path()).unwrap();
    let admin: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == "admin")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(admin, ["pause", "weights", "pause"]);
}

#[tokio::test(start_paused = true)]
async fn a_gate_red_for_red_rollback_after_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path());
    let red_after = config(dir.path()).rollout.red_rollback_after;
    // Over the phase's 130 ms P95 threshold, under the 160 ms hard limit.
    let traffic = rig.traffic(145);
    rig.until("RED", |s| s.detail.contains(": RED ")).await;
    let red = Instant::now();
    let s = rig
        .until("rollback", |s| s.state == StateName::RolledBack)
        .await;
    let held = red.elapsed();
    assert!(held + TICK >= red_after, "rolled back after {held:?}");
    assert!(held <= red_after + TICK * 2, "rolled back after {held:?}");
    let last = s.last_decision.as_ref().expect("a decision");
    assert_eq!(last.trigger, Some(Trigger::GateRedSustained), "{last:?}");
    assert_eq!(rig.router.load().v2, WeightBp::ZERO);
    traffic.abort();
    rig.stop().await;
}

/// A controller driven by direct calls, not its loop: the test picks the
/// order in which a trip, a tick and a command are handled.
fn controller(dir: &Path) -> (Controller, Arc<Router>, Arc<PaymentTrip>) {
    let b = build(dir);
    (b.ctl, b.router, b.trip)
}

fn command(ctl: &mut Controller, cmd: Command) -> Result<Arc<StatusView>, CommandError> {
    let (reply, mut rx) = oneshot::channel();
    ctl.on_command(CommandMsg {
        cmd,
        by: "tester".into(),
        force: false,
        reply,
    });
    rx.try_recv().expect("a reply")
}

fn trip_now(trip: &PaymentTrip) {
    for _ in 0..=config(Path::new(".")).rollout.consecutive_payment_failures {
        trip.observe(
            Variant::V2,
            crate::routing::tripwire::PaymentOutcome::Failed,
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_tick_decided_before_the_trip_is_handled_cannot_give_v2_its_weight_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ctl, router, trip) = controller(dir.path());
    ctl.on_tick();
    assert_eq!(ctl.sit.state.phase_index, Some(0));
    assert_eq!(router.load().v2.bp(), 500);
    trip_now(&trip);
    assert_eq!(router.load().v2, WeightBp::ZERO);
    // A tick computed from the state before the trip (the select picked the
    // tick first): its table, still 5 %, is not stored, and the trip stays
    // disarmed, so no second trip can start counting.
    ctl.step(RecordKind::Tick, "controller", |cfg, ring, s, t| {
        step::tick(cfg, ring, s, t, &Reference::None("test".into()))
    });
    assert_eq!(
        ctl.sit.state.weight_v2, 5.0,
        "the state has not seen the trip"
    );
    assert_eq!(router.load().v2, WeightBp::ZERO);
    assert!(!trip.is_armed());
    // A reload in between republishes the table: still nothing for V2.
    ctl.effects.route(&ctl.sit);
    assert_eq!(router.load().v2, WeightBp::ZERO);
    // The handling ends in rolled_back and releases the latch.
    ctl.on_trip();
    assert_eq!(ctl.sit.state.state, StateName::RolledBack);
    let last = ctl.sit.state.last_decision.clone().unwrap();
    assert_eq!(last.trigger, Some(Trigger::PaymentFailures));
    assert!(!trip.is_latched());
    assert_eq!(router.load().v2, WeightBp::ZERO);
    // Ticks after it keep V2 at zero; only an operator gives it weight again.
    ctl.on_tick();
    assert_eq!(router.load().v2, WeightBp::ZERO);
    let s = command(&mut ctl, Command::SetWeight(10.0)).unwrap();
    assert_eq!(s.weights.v2, 10.0);
    assert_eq!(router.load().v2.bp(), 1_000);
}

#[tokio::test(start_paused = true)]
async fn a_command_or_tick_after_an_unhandled_trip_sees_the_rollback_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ctl, router, trip) = controller(dir.path());
    ctl.on_tick();
    trip_now(&trip);
    // The operator's promote arrives before the trip's wake-up: it is judged
    // against the rolled-back state, so it is refused and V2 stays at zero.
    let e = command(&mut ctl, Command::Promote).unwrap_err();
    assert!(matches!(e, CommandError::Conflict(_)), "{e:?}");
    assert_eq!(ctl.sit.state.state, StateName::RolledBack);
    assert_eq!(router.load().v2, WeightBp::ZERO);
    // A second rollout trips, and a plain tick handles it before deciding.
    command(&mut ctl, Command::Start).unwrap();
    assert_eq!(router.load().v2.bp(), 500);
    trip_now(&trip);
    ctl.on_tick();
    assert_eq!(ctl.sit.state.state, StateName::RolledBack);
    assert_eq!(router.load().v2, WeightBp::ZERO);
    assert!(!trip.is_latched());
    let saved = state::load(dir.path()).unwrap().expect("state file");
    assert_eq!(saved.state, StateName::RolledBack);
}
