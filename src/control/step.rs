//! The pure step of a tick: counts in the window -> gate evaluation ->
//! decision. No clock reads, no I/O: the live loop hands it a snapshot's
//! interval and its clock readings, `rollgate replay` hands it recorded ones,
//! and both get the same evaluation and decision for the same inputs. That
//! is what makes a replayed difference mean "the new config decides
//! otherwise" rather than "the replay computes otherwise".

use chrono::{DateTime, NaiveDateTime, Utc};

use super::gates::drift::Reference;
use super::gates::{self, Evaluation, GateContext, Sequential};
use super::rollout::{Core, Outcome};
use super::state::{RolloutState, StateName};
use super::tripwire::Trip;
use crate::config::{Config, Method, PhaseMode};
use crate::routing::Variant;
use crate::telemetry::{Interval, IntervalRing, Snapshot, StatusClass, Window};

/// The clock readings a step uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TickTime {
    /// The window clock (ms): intervals are placed on it.
    pub(crate) ms: u64,
    /// Decision time: every hold, RED timer and cooldown is a difference of these.
    pub(crate) at: DateTime<Utc>,
    /// Local wall-clock date and time (the promotion window, the overnight
    /// freeze): the controller's process time zone.
    pub(crate) local: NaiveDateTime,
}

/// The window's intervals: enough for the configured window, whatever the
/// tick, with two ticks of slack.
pub(crate) fn ring(cfg: &Config) -> IntervalRing {
    IntervalRing::new(cfg.rollout.window + cfg.rollout.tick * 2)
}

/// Takes a snapshot into the window. While V2 takes traffic under watch, its
/// 5xx responses are charged to the error budget. Returns the interval the
/// snapshot added (`None` on the first), which the evaluation record keeps.
pub(crate) fn intake(
    ring: &mut IntervalRing,
    s: &mut RolloutState,
    now_ms: u64,
    snapshot: Snapshot,
) -> Option<Interval> {
    let interval = ring.push(now_ms, snapshot).cloned();
    if let Some(interval) = &interval {
        charge(s, interval);
    }
    interval
}

/// Charges V2's 5xx responses of an interval to the error budget while V2
/// takes traffic under watch (the simulator's intervals come this way too).
pub(crate) fn charge(s: &mut RolloutState, interval: &Interval) {
    if Core::active(s) {
        let bad: u64 = interval
            .cells
            .iter()
            .skip(Variant::V2 as usize)
            .step_by(2)
            .map(|c| c.classes[StatusClass::ServerError as usize])
            .sum();
        s.v2_bad_requests += bad;
    }
}

/// Every gate over the window that ends at `t`. Under the sequential
/// method the intervals not yet folded into the evidence are folded in, and
/// the gates' updated memory is stored in `s`.
pub(crate) fn evaluate(
    cfg: &Config,
    ring: &IntervalRing,
    s: &mut RolloutState,
    t: &TickTime,
    drift: &Reference,
) -> Evaluation {
    let journeys = cfg.journeys.len();
    let window = ring.window(journeys, t.ms, cfg.rollout.window);
    if matches!(s.state, StateName::RolledBack | StateName::Promoted) {
        // The rollout is over: the next one starts with no evidence.
        s.gate_evidence = Default::default();
    }
    s.gate_evidence.enter(s.phase_started_at);
    let from = t.ms.saturating_sub(cfg.rollout.window.as_millis() as u64);
    let (seen, tick) = ring.take_unfolded(journeys, from);
    let mut ev = {
        let mut ctx = gate_context(cfg, s, &tick, t.at);
        ctx.seen = &seen;
        if cfg.gates.method == Method::Sequential {
            ctx.sequential = Some(Sequential {
                memory: &s.gate_evidence,
                gates: tested_gates(cfg),
                looks: plan_ticks(cfg),
            });
        }
        let mut ev = gates::evaluate(&window, &ctx);
        gates::drift::judge(&ctx, &mut ev, drift);
        ev
    };
    for g in &mut ev.gates {
        if let Some(e) = &mut g.evidence {
            let memory = std::mem::take(&mut e.memory);
            s.gate_evidence.gates.insert(g.key(), memory);
        }
    }
    ev
}

/// An upper bound on the gates the sequential judge tests in one tick: the
/// 5xx rate, five per journey (P95, median and tail against V1, success, cache), the
/// JS errors, funnels and timings, the revenue gate, the shadow diffs.
fn tested_gates(cfg: &Config) -> usize {
    let g = &cfg.gates;
    3 + 5 * cfg.journeys.len()
        + g.funnels.len()
        + g.timings.len()
        + usize::from(g.revenue_per.is_some())
}

/// The ticks the plan takes: its holds (and the full phase's sustain) over
/// the tick. A rollout that runs longer spends more looks than the breach
/// threshold budgeted, which the doc of `gates::sequential` states.
fn plan_ticks(cfg: &Config) -> u64 {
    let r = &cfg.rollout;
    let total: std::time::Duration = r.phases.iter().map(|p| p.hold).sum();
    (total.as_secs_f64() / r.tick.as_secs_f64().max(1e-3)).ceil() as u64 + 1
}

/// One tick against the drift reference `drift`: evaluate, then decide.
pub(crate) fn tick(
    cfg: &Config,
    ring: &IntervalRing,
    s: &mut RolloutState,
    t: &TickTime,
    drift: &Reference,
) -> (Evaluation, Outcome) {
    let ev = evaluate(cfg, ring, s, t, drift);
    let out = Core { cfg: &cfg.rollout }.tick(s, &ev, t.at, t.local);
    (ev, out)
}

/// A request-path trip: the evaluation at that moment (for the report), and
/// the rollback the request path already carried out.
pub(crate) fn trip(
    cfg: &Config,
    ring: &IntervalRing,
    s: &mut RolloutState,
    trip: Trip,
    t: &TickTime,
    drift: &Reference,
) -> (Evaluation, Outcome) {
    let ev = evaluate(cfg, ring, s, t, drift);
    let out = Core { cfg: &cfg.rollout }.payment_trip(s, trip, t.at);
    (ev, out)
}

/// The gate inputs of a tick: the config, and what the rollout state says
/// about the phase (P95 threshold, control traffic, weight, error budget
/// spent, shadow mode); `tick` holds the counts the sequential judge has not
/// seen yet, and the sequential inputs are left for the caller to set.
pub fn gate_context<'a>(
    cfg: &'a Config,
    s: &'a RolloutState,
    tick: &'a Window,
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
        tick,
        seen: tick,
        sequential: None,
    }
}

/// Whether a phase mirrors rather than routes.
pub(crate) fn is_shadow(cfg: &Config, s: &RolloutState) -> bool {
    s.phase_index
        .and_then(|i| cfg.rollout.phases.get(i))
        .is_some_and(|p| p.mode == PhaseMode::Shadow)
}
