//! The judgment simulator: thousands of simulated rollouts through the real
//! gates and decision core, to measure how often a judge rolls back a
//! healthy canary, holds one past its schedule, and how much of a faulty
//! one it lets through before it rolls back. `benches/judgment.rs` runs the
//! full matrix and prints the table of BENCHMARKS.md; the tests below check
//! headline figures on small fixed-seed runs.
//!
//! Only the control path is used: each simulated tick builds the interval of
//! counts the request path would have recorded (`traffic`, `scenarios`),
//! pushes it into the controller's own interval ring and runs the
//! controller's own pure step (`control::step::tick`: the window, every
//! gate, `rollout::Core`), exactly as the live loop and `rollgate replay`
//! do. The request-path payment tripwire is drawn from the tick's payment
//! outcomes and handed to `step::trip`. Nothing here touches the request path.
//!
//! A simulated rollout's config is a real [`Config`] parsed from the shipped
//! plan (`config/plan-30h.toml` or `config/plan-same-day.toml`) with two
//! changes: the tick is 1 minute instead of 15 s, and step-ups may happen at
//! any hour (`promotion_window = "always"`), so that a plan's schedule is
//! its holds alone. The 1-minute tick compresses only the number of ticks: a
//! tick carries the requests of a whole simulated minute, the window stays 5
//! minutes, and holds and `red_rollback_after` stay the plan's, in simulated
//! time. It is 4x fewer evaluations than the live 15 s tick (a 32-hour plan
//! is 1,920 ticks), and it is also the Kayenta-like judge's point size. The
//! sequential judge budgets its breach threshold `ln(K G N / alpha)` by the
//! plan's number of ticks N, so under the live 15 s tick that threshold is
//! ln 4 = 1.4 higher than simulated here: detection a little slower live,
//! and the false-rollback budget spread over 4x more looks. A
//! judge is chosen by `[gates] method` (`window`, `sequential`) or is the
//! Kayenta-like judge of [`kayenta`]. Every approval the plan asks for is
//! granted up front: the simulation measures judgment, not sign-offs.
//!
//! Runs are deterministic: run `r` of a (scenario, rate) cell draws from
//! `StdRng::seed_from_u64` of a hash of (seed, scenario, rate, r), the same
//! for every judge (common random numbers), whatever the thread split.

pub mod kayenta;
pub mod report;
pub mod scenarios;
pub mod traffic;

#[cfg(test)]
mod tests;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::config::{Config, ConfigError};
use crate::control::gates::drift::Reference;
use crate::control::rollout::Core;
use crate::control::state::{Approval, RolloutState, StateName};
use crate::control::step::{self, TickTime};
use crate::control::tripwire::Trip;
use scenarios::{Scenario, Traffic};

/// A plan that ships in `config/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Seed 000: 5 % 6 h, 25 % 12 h, 50 % 12 h, 100 % 2 h.
    ThirtyHour,
    /// Seed 003: 5 % 90 min, 25 % 120 min, 50 % 240 min, 100 % 2 h.
    SameDay,
}

impl Plan {
    fn text(self) -> &'static str {
        match self {
            Plan::ThirtyHour => include_str!("../../config/plan-30h.toml"),
            Plan::SameDay => include_str!("../../config/plan-same-day.toml"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Plan::ThirtyHour => "plan-30h",
            Plan::SameDay => "plan-same-day",
        }
    }
}

/// The simulated controller tick.
pub const TICK: &str = "1m";
/// A healthy rollout is "on schedule" when promoted within the sum of its
/// holds plus this many minutes (the start tick, one tick per step-up, and
/// room for a gate that needs a few minutes of data after a step).
pub const SLACK_MIN: u64 = 15;

/// Runs go on this long past the schedule, so that the time a late
/// promotion takes is measured too, not only that it was late.
pub const OVERTIME_MIN: u64 = 120;

/// Who judges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judge {
    /// The product's gates with this `[gates] method`.
    Gates(String),
    /// [`kayenta`]'s judge.
    Kayenta,
}

impl Judge {
    pub fn parse(name: &str) -> Judge {
        match name {
            "kayenta" => Judge::Kayenta,
            m => Judge::Gates(m.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Judge::Gates(m) => m,
            Judge::Kayenta => "kayenta",
        }
    }
}

/// The config of a simulated rollout: `plan` with the simulated tick, any
/// hour for step-ups, and `[gates] method` for a gates judge.
pub fn config(plan: Plan, judge: &Judge) -> Result<Config, ConfigError> {
    let text = plan
        .text()
        .replace("tick = \"15s\"", &format!("tick = \"{TICK}\""))
        .replace(
            "promotion_window = { start = \"09:00\", end = \"18:00\" }",
            "promotion_window = \"always\"",
        );
    let mut cfg = Config::parse(&text, plan.name())?;
    // The simulation draws requests, not users or their beacons: the
    // presets' beacon gates (JS errors, funnels, timings) would hold every
    // run on "insufficient data", so they are left out here.
    cfg.gates.js_errors_per = None;
    cfg.gates.funnels.clear();
    cfg.gates.timings.clear();
    if let Judge::Gates(method) = judge {
        cfg.gates.method = method.parse().map_err(|reason| ConfigError::Invalid {
            file: plan.name().to_string(),
            key: "gates.method".into(),
            reason,
        })?;
    }
    Ok(cfg)
}

/// How one simulated rollout ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunResult {
    /// Rolled back, with the trigger (`gate_red_sustained`, `kayenta: ...`).
    pub rolled_back: Option<String>,
    pub promoted: bool,
    /// Simulated time of the end (ms since the start).
    pub end_ms: u64,
    /// V2's weight in the last tick it served.
    pub weight: f64,
    /// V2's requests over the run (the blast radius of a faulty V2).
    pub v2_requests: u64,
}

impl RunResult {
    fn served(&mut self, weight: f64, v2_requests: u64, end_ms: u64) {
        self.weight = weight;
        self.v2_requests += v2_requests;
        self.end_ms = end_ms;
    }
}

/// The sum of the plan's holds plus [`SLACK_MIN`], in ticks: the schedule a
/// healthy rollout must keep.
pub fn deadline_ticks(cfg: &Config) -> u64 {
    let holds: u64 = cfg
        .rollout
        .phases
        .iter()
        .map(|p| p.hold.as_millis() as u64)
        .sum();
    (holds + SLACK_MIN * 60_000).div_ceil(cfg.rollout.tick.as_millis() as u64)
}

/// The seed of run `run` of a (scenario, rate) cell.
pub fn run_seed(seed: u64, sc: &Scenario, rate: f64, run: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{seed}/{}/{rate}/{run}", sc.name).as_bytes())
}

/// One rollout of `sc` at `rate` req/s per journey under `judge`, until it
/// is rolled back or promoted, or [`OVERTIME_MIN`] past its schedule.
pub fn run_one(cfg: &Config, judge: &Judge, sc: &Scenario, rate: f64, seed: u64) -> RunResult {
    let ticks =
        deadline_ticks(cfg) + (OVERTIME_MIN * 60_000).div_ceil(cfg.rollout.tick.as_millis() as u64);
    match judge {
        Judge::Kayenta => kayenta::run(cfg, sc, rate, seed, ticks),
        Judge::Gates(_) => run_gates(cfg, sc, rate, seed, ticks),
    }
}

/// `runs` rollouts on at most `threads` threads, in run order.
pub fn run_many(
    cfg: &Config,
    judge: &Judge,
    sc: &Scenario,
    rate: f64,
    seed: u64,
    runs: u64,
    threads: usize,
) -> Vec<RunResult> {
    let threads = threads.clamp(1, 2) as u64;
    let mut out: Vec<(u64, RunResult)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..runs)
                        .step_by(threads as usize)
                        .map(|r| {
                            (
                                r,
                                run_one(cfg, judge, sc, rate, run_seed(seed, sc, rate, r)),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    });
    out.sort_by_key(|(r, _)| *r);
    out.into_iter().map(|(_, r)| r).collect()
}

/// One rollout through the product's step: traffic into the ring, then
/// `step::tick` (or `step::trip` when the payment tripwire fired).
fn run_gates(cfg: &Config, sc: &Scenario, rate: f64, seed: u64, ticks: u64) -> RunResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut traffic = Traffic::new(sc, cfg, rate);
    let t0 = kayenta::t0();
    let mut s = RolloutState::new(cfg.rollout.flags.clone());
    s.started = true;
    s.approvals = cfg
        .rollout
        .phases
        .iter()
        .filter_map(|p| p.approval.clone())
        .map(|role| Approval {
            role,
            by: "simulation".into(),
            at: t0,
        })
        .collect();
    let mut ring = step::ring(cfg);
    let tick_ms = cfg.rollout.tick.as_millis() as u64;
    let mut res = RunResult::default();
    for k in 1..=ticks {
        let now_ms = k * tick_ms;
        let phase = s.phase_index.unwrap_or(0);
        let weight = s.weight_v2;
        let served = traffic.tick(
            &mut rng,
            now_ms,
            weight,
            cfg.rollout.phases[phase].p95_ms,
            (k - 1) * tick_ms / 60_000,
        );
        res.served(weight, served.v2_requests, now_ms);
        step::charge(&mut s, &served.interval);
        ring.push_interval(served.interval);
        let at = t0 + chrono::TimeDelta::milliseconds(now_ms as i64);
        let t = TickTime {
            ms: now_ms,
            at,
            local: at.naive_utc(),
        };
        let none = Reference::None("simulation: no drift reference".into());
        if served.payment_trip && Core::active(&s) {
            let trip = Trip {
                failures: cfg.rollout.consecutive_payment_failures + 1,
                trigger_to_swap_ns: 0,
            };
            step::trip(cfg, &ring, &mut s, trip, &t, &none);
        } else {
            step::tick(cfg, &ring, &mut s, &t, &none);
        }
        match s.state {
            StateName::RolledBack => {
                let trigger = s.last_decision.as_ref().and_then(|d| d.trigger);
                res.rolled_back = Some(trigger.map_or("rollback", |t| t.label()).to_string());
                return res;
            }
            StateName::Promoted => {
                res.promoted = true;
                return res;
            }
            StateName::Waiting
            | StateName::Shadow
            | StateName::Canary
            | StateName::Holding
            | StateName::Paused => {}
        }
    }
    res
}
