//! One controller tick with 50 journeys x 2 variants (100 cells): snapshot the
//! telemetry, push the interval into the ring, merge the 5-minute window, run
//! the gates and the pure rollout core. Also each step on its own.
//!
//! Run: `cargo bench --bench control_tick -- --warm-up-time 1 --measurement-time 3`.
//! Results and the machine they came from are in `BENCHMARKS.md`.
//!
//! Traffic model (the same for every interval): 49 configured journeys plus
//! `other`, 40..1,200 requests per journey per 15 s tick (~27,000 per tick,
//! ~1,800 req/s), 25 % of them on V2; log-normal latencies with per-journey
//! medians of 8..60 ms (so each cell fills a few dozen histogram buckets);
//! 0.1 % 5xx, 2 % 4xx, cache hits on reads. Every gate is GREEN, so the core
//! takes the "in phase, all green, holding for the hold time" path: the
//! common tick.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rollgate::config::Config;
use rollgate::control::gate_context;
use rollgate::control::gates::{evaluate, Evaluation};
use rollgate::control::rollout::Core;
use rollgate::control::state::{RolloutState, StateName};
use rollgate::routing::journeys::JourneyId;
use rollgate::routing::Variant;
use rollgate::telemetry::{IntervalRing, Telemetry, Window};

/// Configured journeys; with `other` that makes 50.
const CONFIGURED: usize = 49;
const TICK_MS: u64 = 15_000;
const WINDOW: Duration = Duration::from_secs(300);
/// 2024-06-03T10:00:00Z: every tick's wall clock is this plus the fake clock.
const EPOCH_MS: i64 = 1_717_408_800_000;

fn config() -> Config {
    let mut toml = String::from(
        r#"
[server]
listen = "127.0.0.1:0"
[upstreams]
v1 = "http://127.0.0.1:3001"
v2 = "http://127.0.0.1:3002"
[rollout]
tick = "15s"
window = "5m"
min_samples = 50
[rollout.flags]
SHADOW_PASS_24H = 1
A2_V26_COMPLIANT = 1
EVIDENCE_BUNDLE = 1
[[rollout.phases]]
name = "canary-25"
weight = 25
hold = "1000h"
p95_ms = 130
[[rollout.phases]]
name = "full"
weight = 100
p95_ms = 120
"#,
    );
    for i in 0..CONFIGURED {
        let kind = if i % 10 == 0 { "payment" } else { "normal" };
        let methods = if i % 10 == 0 {
            "methods = [\"POST\"]\n"
        } else {
            ""
        };
        let limit = if i % 7 == 3 { "p95_ms = 150\n" } else { "" };
        toml.push_str(&format!(
            "[[journeys]]\nname = \"j{i:02}\"\npath_prefix = \"/api/j{i:02}\"\nkind = \"{kind}\"\n{methods}{limit}"
        ));
    }
    let cfg = Config::parse(&toml, "bench.toml").expect("bench config is valid");
    assert_eq!(cfg.journeys.len(), CONFIGURED + 1);
    cfg
}

/// Deterministic traffic: the same stream on every run.
struct Traffic {
    state: u64,
    n: u64,
}

impl Traffic {
    fn new() -> Self {
        Self {
            state: 0x2545_f491_4f6c_dd1d,
            n: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Records one tick's worth of requests.
    fn interval(&mut self, t: &Telemetry) {
        for j in 0..=CONFIGURED {
            let requests = 40 + (j as u64 * 7_919) % 1_160;
            let median_us = 8_000.0 + (j as f64 * 1_327.0) % 52_000.0;
            let journey = JourneyId::new(j as u16);
            for _ in 0..requests {
                self.n += 1;
                let variant = if self.next_u64() % 4 == 0 {
                    Variant::V2
                } else {
                    Variant::V1
                };
                let slower = if variant == Variant::V2 { 1.05 } else { 1.0 };
                let us = median_us * slower * (0.35 * self.normal()).exp();
                let status = match self.n % 1_000 {
                    0 => 503,
                    1..=20 => 404,
                    21..=25 => 304,
                    _ => 200,
                };
                t.record(
                    journey,
                    variant,
                    Duration::from_micros(us as u64),
                    status,
                    self.n % 3 != 0,
                );
            }
        }
    }
}

/// Everything a tick touches, warmed up with a full window of history.
struct Bench {
    cfg: Config,
    telemetry: Arc<Telemetry>,
    ring: IntervalRing,
    state: RolloutState,
    now_ms: u64,
}

impl Bench {
    /// The bench state and the traffic source that keeps feeding it.
    fn new() -> (Self, Traffic) {
        let cfg = config();
        let telemetry = Arc::new(Telemetry::new(cfg.journeys.len(), true));
        let mut ring = IntervalRing::new(WINDOW + Duration::from_millis(TICK_MS));
        let mut traffic = Traffic::new();
        let mut state = RolloutState::new(cfg.rollout.flags.clone());
        state.started = true;
        let mut b = Bench {
            cfg,
            telemetry,
            ring: IntervalRing::new(WINDOW),
            state: RolloutState::new(Default::default()),
            now_ms: 0,
        };
        // A first tick with no data enters the first phase.
        ring.push(0, b.telemetry.snapshot());
        for _ in 0..(WINDOW.as_millis() as u64 / TICK_MS + 1) {
            traffic.interval(&b.telemetry);
            b.now_ms += TICK_MS;
            ring.push(b.now_ms, b.telemetry.snapshot());
        }
        b.ring = ring;
        let ev = b.evaluate(&b.window());
        Core {
            cfg: &b.cfg.rollout,
        }
        .tick(&mut state, &ev, b.clock(), local());
        assert_eq!(state.state, StateName::Canary, "{:?}", state.last_decision);
        b.state = state;
        // A second tick so `previous` gate statuses exist, as in steady state.
        b.core_tick(&ev);
        assert!(
            ev.all_green(),
            "the traffic model should keep every gate GREEN: {:#?}",
            ev.worst()
        );
        // Every journey has traffic, so each gets its per-journey gates.
        let p95_gates = ev.gates.iter().filter(|g| g.name == "latency_p95").count();
        assert_eq!(p95_gates, CONFIGURED + 1, "a latency gate per journey");
        (b, traffic)
    }

    fn clock(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(EPOCH_MS + self.now_ms as i64).unwrap()
    }

    fn window(&self) -> Window {
        self.ring
            .window(self.cfg.journeys.len(), self.now_ms, WINDOW)
    }

    fn evaluate(&self, w: &Window) -> Evaluation {
        evaluate(w, &gate_context(&self.cfg, &self.state, w, self.clock()))
    }

    fn core_tick(&mut self, ev: &Evaluation) {
        let now = self.clock();
        let out = Core {
            cfg: &self.cfg.rollout,
        }
        .tick(&mut self.state, ev, now, local());
        black_box(out);
    }

    /// The whole tick, as the controller runs it.
    fn tick(&mut self) {
        self.now_ms += TICK_MS;
        let snapshot = self.telemetry.snapshot();
        self.ring.push(self.now_ms, snapshot);
        let w = self.window();
        let ev = self.evaluate(&w);
        self.core_tick(&ev);
        assert!(matches!(
            self.state.state,
            StateName::Canary | StateName::Holding
        ));
    }
}

fn local() -> NaiveTime {
    NaiveTime::from_hms_opt(12, 0, 0).unwrap()
}

fn bench_tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("control_tick");

    // One tick's worth of new traffic is recorded before each measured tick
    // (not timed), so every interval pushed is a realistic delta.
    let (mut b, mut traffic) = Bench::new();
    let ev = b.evaluate(&b.window());
    eprintln!(
        "control_tick: {} journeys x 2 variants, {} gates per evaluation",
        b.cfg.journeys.len(),
        ev.gates.len()
    );
    let telemetry = Arc::clone(&b.telemetry);
    g.bench_function("full_tick", |bench| {
        bench.iter_batched(
            || traffic.interval(&telemetry),
            |()| b.tick(),
            BatchSize::PerIteration,
        )
    });

    let (b, _) = Bench::new();
    g.bench_function("snapshot", |bench| bench.iter(|| b.telemetry.snapshot()));

    let (mut b, mut traffic) = Bench::new();
    let telemetry = Arc::clone(&b.telemetry);
    g.bench_function("ring_push", |bench| {
        bench.iter_batched(
            || {
                traffic.interval(&telemetry);
                telemetry.snapshot()
            },
            |snapshot| {
                b.now_ms += TICK_MS;
                b.ring.push(b.now_ms, snapshot).is_some()
            },
            BatchSize::PerIteration,
        )
    });

    let (b, _) = Bench::new();
    g.bench_function("window_merge_20_intervals", |bench| {
        bench.iter(|| b.window())
    });

    let (b, _) = Bench::new();
    let w = b.window();
    assert_eq!(w.intervals, 20);
    g.bench_function("gates_evaluate", |bench| bench.iter(|| b.evaluate(&w)));

    let (mut b, _) = Bench::new();
    let ev = b.evaluate(&b.window());
    g.bench_function("core_tick", |bench| {
        bench.iter(|| {
            b.now_ms += TICK_MS;
            b.core_tick(&ev)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_tick);
criterion_main!(benches);
