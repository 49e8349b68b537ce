//! The simulated canaries: what V1 and V2 serve, healthy and faulty.
//!
//! Three journeys carry traffic, each at the run's rate (50 or 500 req/s):
//! `search` (P95 80 ms), `scholarship_detail` (P95 70 ms) and `payments`
//! (P95 90 ms, a `payment` journey). Latencies are lognormal with the
//! scenario's sigma, the median chosen so that the P95 is the journey's,
//! well under the plans' 120-130 ms gates. Both variants answer 0.1 % of
//! requests with a 5xx. V2 takes its weight's share of every journey's
//! requests (users are not modelled: one user's requests are counted as
//! independent, which is what the gates assume too).

use std::collections::HashMap;

use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::traffic::{self, BucketMass, Latency};
use crate::config::Config;
use crate::routing::journeys::{JourneyId, JourneyKind};
use crate::telemetry::{Interval, SparseCounts};

/// Both variants' 5xx share in a healthy cell.
pub const BASE_ERROR_RATE: f64 = 0.001;

/// The journeys with traffic: name and P95 in ms.
pub const JOURNEYS: [(&str, f64); 3] = [
    ("search", 80.0),
    ("scholarship_detail", 70.0),
    ("payments", 90.0),
];

/// The journey a P95 fault hits.
const P95_FAULT_JOURNEY: usize = 0;

/// One simulated canary.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    /// A healthy V2 (judged on false rollbacks and holds) or a faulty one
    /// (judged on catching it).
    pub healthy: bool,
    /// Lognormal sigma of both variants.
    pub sigma: f64,
    /// Sigma of a per-tick factor `e^N(0, s)` on both variants' latencies
    /// (a busy host); 0 = none.
    pub host_noise: f64,
    /// V2's median as a share of V1's.
    pub v2_speed: f64,
    /// V2's 5xx share as a multiple of `rollout.error_rate_max`, every journey.
    pub v2_errors_x_gate: Option<f64>,
    /// V2's P95 on `search` as a multiple of the phase's P95 gate (a slow tail).
    pub v2_p95_x_gate: Option<f64>,
    /// Added to every V2 request, every journey.
    pub v2_shift_ms: f64,
    /// V2's failed share on payment journeys, independent per payment.
    pub v2_payment_failures: Option<f64>,
    /// V2's latency grows by this many ms per 10 minutes since the start.
    pub v2_leak_ms_per_10min: f64,
}

const HEALTHY: Scenario = Scenario {
    name: "",
    healthy: true,
    sigma: 0.3,
    host_noise: 0.0,
    v2_speed: 1.0,
    v2_errors_x_gate: None,
    v2_p95_x_gate: None,
    v2_shift_ms: 0.0,
    v2_payment_failures: None,
    v2_leak_ms_per_10min: 0.0,
};

/// Host noise of the noisy scenarios: a minute on a busy host is ~5 %
/// slower or faster for both variants.
const HOST_NOISE: f64 = 0.05;

/// Every scenario of the issue, healthy ones first.
pub fn all() -> Vec<Scenario> {
    let fault = Scenario {
        healthy: false,
        ..HEALTHY
    };
    vec![
        Scenario {
            name: "healthy: identical",
            ..HEALTHY
        },
        Scenario {
            name: "healthy: noisy σ 0.3",
            host_noise: HOST_NOISE,
            ..HEALTHY
        },
        Scenario {
            name: "healthy: noisy σ 0.5",
            sigma: 0.5,
            host_noise: HOST_NOISE,
            ..HEALTHY
        },
        Scenario {
            name: "healthy: V2 10 % faster",
            v2_speed: 0.9,
            ..HEALTHY
        },
        Scenario {
            name: "fault: 5xx 1.5x gate",
            v2_errors_x_gate: Some(1.5),
            ..fault
        },
        Scenario {
            name: "fault: 5xx 2x gate",
            v2_errors_x_gate: Some(2.0),
            ..fault
        },
        Scenario {
            name: "fault: P95 +5 % over gate",
            v2_p95_x_gate: Some(1.05),
            ..fault
        },
        Scenario {
            name: "fault: P95 +10 % over gate",
            v2_p95_x_gate: Some(1.10),
            ..fault
        },
        Scenario {
            name: "fault: +20 ms median",
            v2_shift_ms: 20.0,
            ..fault
        },
        Scenario {
            name: "fault: 3 % payment failures",
            v2_payment_failures: Some(0.03),
            ..fault
        },
        Scenario {
            name: "fault: slow leak +1 ms/10 min",
            v2_leak_ms_per_10min: 1.0,
            ..fault
        },
    ]
}

/// Looks a scenario up by name (tests).
pub fn named(name: &str) -> Scenario {
    all()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name:?}"))
}

/// The config's ids of [`JOURNEYS`], in that order.
pub fn journey_ids(cfg: &Config) -> Vec<JourneyId> {
    JOURNEYS
        .iter()
        .map(|(name, _)| {
            cfg.journeys
                .ids()
                .find(|id| cfg.journeys.name(*id) == *name)
                .unwrap_or_else(|| panic!("the plan has no journey {name:?}"))
        })
        .collect()
}

/// What one tick served.
pub struct Served {
    pub interval: Interval,
    pub v2_requests: u64,
    /// The request path's payment tripwire fired during the tick.
    pub payment_trip: bool,
}

/// One journey's part of a run.
struct Lane {
    /// Index in the config's journeys.
    cell: usize,
    payment: bool,
    v1: BucketMass,
    v2_base: Latency,
    /// V2's bucket masses by (phase gate in 0.1 ms, leak step).
    v2: HashMap<(u32, u32), BucketMass>,
    p95_fault: bool,
}

/// The traffic of one run: a scenario at a rate, under a config.
pub struct Traffic<'a> {
    scenario: &'a Scenario,
    /// Requests per journey in one tick.
    per_tick: f64,
    tick_ms: u64,
    journeys: usize,
    lanes: Vec<Lane>,
    error_rate_max: f64,
    trip_limit: u32,
}

impl<'a> Traffic<'a> {
    pub fn new(scenario: &'a Scenario, cfg: &Config, rate: f64) -> Self {
        let lanes = JOURNEYS
            .iter()
            .zip(journey_ids(cfg))
            .enumerate()
            .map(|(i, ((_, p95), id))| {
                let median = p95 / (1.644_854 * scenario.sigma).exp();
                let v1 = Latency::lognormal(median, scenario.sigma);
                Lane {
                    cell: id.index(),
                    payment: cfg.journeys.kind(id) == JourneyKind::Payment,
                    v1: v1.buckets(),
                    v2_base: Latency {
                        median_ms: median * scenario.v2_speed,
                        shift_ms: scenario.v2_shift_ms,
                        ..v1
                    },
                    v2: HashMap::new(),
                    p95_fault: i == P95_FAULT_JOURNEY && scenario.v2_p95_x_gate.is_some(),
                }
            })
            .collect();
        Traffic {
            scenario,
            per_tick: rate * cfg.rollout.tick.as_secs_f64(),
            tick_ms: cfg.rollout.tick.as_millis() as u64,
            journeys: cfg.journeys.len(),
            lanes,
            error_rate_max: cfg.rollout.error_rate_max,
            trip_limit: cfg.rollout.consecutive_payment_failures,
        }
    }

    /// Draws one tick ending at `end_ms`, served at `weight_v2` percent,
    /// `elapsed_min` minutes after the start, under a phase P95 gate of
    /// `phase_p95_ms`.
    pub fn tick<R: Rng>(
        &mut self,
        rng: &mut R,
        end_ms: u64,
        weight_v2: f64,
        phase_p95_ms: f64,
        elapsed_min: u64,
    ) -> Served {
        let sc = self.scenario;
        let shift = if sc.host_noise > 0.0 {
            let n = Normal::new(0.0, sc.host_noise).expect("a positive sigma");
            traffic::noise_buckets(n.sample(rng))
        } else {
            0
        };
        let share = weight_v2 / 100.0;
        let leak_step = if sc.v2_leak_ms_per_10min > 0.0 {
            (elapsed_min / 10) as u32
        } else {
            0
        };
        let v2_errors = sc
            .v2_errors_x_gate
            .map_or(BASE_ERROR_RATE, |x| x * self.error_rate_max);
        let mut cells = vec![SparseCounts::default(); self.journeys * 2];
        let (mut v2_requests, mut payment_trip) = (0, false);
        for lane in &mut self.lanes {
            let gate_key = if lane.p95_fault {
                (phase_p95_ms * 10.0).round() as u32
            } else {
                0
            };
            let v2_mass = lane.v2.entry((gate_key, leak_step)).or_insert_with(|| {
                let mut l = lane.v2_base;
                l.shift_ms += leak_step as f64 * sc.v2_leak_ms_per_10min;
                if lane.p95_fault {
                    l = l.with_p95(phase_p95_ms * sc.v2_p95_x_gate.unwrap_or(1.0));
                }
                l.buckets()
            });
            let v2_err = match (lane.payment, sc.v2_payment_failures) {
                (true, Some(q)) => q,
                _ => v2_errors,
            };
            let (e1, e2) = (self.per_tick * (1.0 - share), self.per_tick * share);
            cells[lane.cell * 2] = traffic::cell(rng, &lane.v1, shift, e1, BASE_ERROR_RATE);
            let c2 = traffic::cell(rng, v2_mass, shift, e2, v2_err);
            let n2 = c2.classes.iter().sum::<u64>();
            v2_requests += n2;
            if lane.payment && traffic::trips(rng, n2, v2_err, self.trip_limit) {
                payment_trip = true;
            }
            cells[lane.cell * 2 + 1] = c2;
        }
        Served {
            interval: Interval {
                end_ms,
                duration_ms: self.tick_ms,
                cells,
                beacons: vec![],
                beacon_users: Default::default(),
                shed: [0; 2],
                users: vec![],
                weight_v2_bp: (weight_v2 * 100.0).round() as u32,
                shadow: vec![],
                shadow_dropped: 0,
            },
            v2_requests,
            payment_trip,
        }
    }
}
