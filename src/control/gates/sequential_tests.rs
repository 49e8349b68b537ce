//! The sequential judge through the real step (ring -> evaluate -> decide):
//! what turns a gate GREEN, what turns it RED, and what a phase change keeps.

use chrono::{TimeDelta, TimeZone, Utc};

use crate::config::{Config, Method};
use crate::control::rollout::tests::{ALL_FLAGS, BASE};
use crate::control::state::{Action, RolloutState};
use crate::control::step::{self, TickTime};
use crate::telemetry::histogram::{bucket_index, SparseHistogram};
use crate::telemetry::{Interval, IntervalRing, SparseCounts};

use super::{Evaluation, GateResult, GateStatus, Verdict};

fn config(extra_gates: &str) -> Config {
    let text = format!(
        "{BASE}\n[rollout]\ntick = \"15s\"\nwindow = \"1m\"\nmin_samples = 50\n\
         error_rate_max = 0.005\nerror_rate_margin = 0.5\n{ALL_FLAGS}\n\
         [[rollout.phases]]\nname = \"canary-5\"\nweight = 5\nhold = \"10m\"\np95_ms = 120\n\
         [[rollout.phases]]\nname = \"canary-50\"\nweight = 50\nhold = \"10m\"\np95_ms = 120\n\
         [[rollout.phases]]\nname = \"full\"\nweight = 100\nhold = \"10m\"\np95_ms = 120\n\
         [gates]\n{extra_gates}\n"
    );
    Config::parse(&text, "t").unwrap()
}

/// One variant's requests on `search`: `n` of them, `errors` 5xx, and
/// `slow` at 125 ms while the rest take 80 ms.
fn cell(n: u64, errors: u64, slow: u64) -> SparseCounts {
    cell_at(n, errors, slow, 125)
}

/// Like [`cell`], the slow requests taking `slow_ms`.
fn cell_at(n: u64, errors: u64, slow: u64, slow_ms: u64) -> SparseCounts {
    let (fast_us, slow_us) = (80_000u64, slow_ms * 1000);
    let mut buckets = vec![];
    if n > slow {
        buckets.push((bucket_index(fast_us) as u16, n - slow));
    }
    if slow > 0 {
        buckets.push((bucket_index(slow_us) as u16, slow));
    }
    SparseCounts {
        latency: SparseHistogram {
            buckets,
            sum_us: fast_us * (n - slow) + slow_us * slow,
        },
        classes: [0, n - errors, 0, 0, errors],
        ..Default::default()
    }
}

/// Drives the step with one interval per tick: `v2(tick)` gives V2's
/// (requests, errors, slow) on search; V1 takes 10x V2's traffic, clean.
struct Run {
    cfg: Config,
    s: RolloutState,
    ring: IntervalRing,
    tick: u64,
}

impl Run {
    fn new(cfg: Config) -> Self {
        let mut s = RolloutState::new(cfg.rollout.flags.clone());
        s.started = true;
        let ring = step::ring(&cfg);
        Run {
            cfg,
            s,
            ring,
            tick: 0,
        }
    }

    fn step(&mut self, v2: (u64, u64, u64)) -> Evaluation {
        self.step_at(v2, 125)
    }

    fn step_at(&mut self, (n, errors, slow): (u64, u64, u64), slow_ms: u64) -> Evaluation {
        self.tick += 1;
        let now_ms = self.tick * 15_000;
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
            + TimeDelta::milliseconds(now_ms as i64);
        let v2_live = self.s.weight_v2 > 0.0;
        let v2 = if v2_live {
            cell_at(n, errors, slow, slow_ms)
        } else {
            cell(0, 0, 0)
        };
        let cells = (0..self.cfg.journeys.len())
            .flat_map(|j| match j {
                0 => [cell(10 * n, 0, 0), v2.clone()],
                _ => [cell(0, 0, 0), cell(0, 0, 0)],
            })
            .collect();
        self.ring.push_interval(Interval {
            end_ms: now_ms,
            duration_ms: 15_000,
            cells,
            beacons: vec![],
            beacon_users: Default::default(),
            shed: [0; 2],
            users: vec![],
            weight_v2_bp: (self.s.weight_v2 * 100.0) as u32,
            shadow: vec![],
            shadow_dropped: 0,
        });
        let t = TickTime {
            ms: now_ms,
            at,
            local: at.naive_utc(),
        };
        let no_drift = super::drift::Reference::None("test".into());
        let (ev, out) = step::tick(&self.cfg, &self.ring, &mut self.s, &t, &no_drift);
        if let Some(d) = out.decision {
            assert_ne!(d.action, Action::Promote, "nothing here is promoted");
        }
        ev
    }
}

fn gate<'a>(ev: &'a Evaluation, key: &str) -> &'a GateResult {
    ev.gates
        .iter()
        .find(|g| g.key().as_str() == key)
        .unwrap_or_else(|| panic!("no gate {key}"))
}

#[test]
fn a_canary_measured_over_its_limit_is_never_green_and_ends_red() {
    // 0.7 % 5xx against 0.5 %, and 6.5 % of requests slower than 120 ms
    // (P95 125 ms against 120 ms), in every single tick: no noise for a
    // window judge to hide behind, and no amount of it makes them inside.
    let mut run = Run::new(config(""));
    let mut red = (None, None);
    for k in 0..400 {
        let ev = run.step((2000, 14, 130));
        let (e, p) = (gate(&ev, "error_rate"), gate(&ev, "latency_p95/search"));
        assert_ne!(e.status, GateStatus::Green, "tick {k}: {}", e.reason);
        assert_ne!(p.status, GateStatus::Green, "tick {k}: {}", p.reason);
        if e.status == GateStatus::Red {
            red.0.get_or_insert(k);
        }
        if p.status == GateStatus::Red {
            red.1.get_or_insert(k);
        }
        if run.s.weight_v2 == 0.0 {
            break;
        }
    }
    let (Some(_), Some(_)) = red else {
        panic!("not both RED: {red:?}");
    };
}

#[test]
fn a_clean_canary_is_yellow_until_shown_inside_then_green() {
    let mut run = Run::new(config(""));
    let mut first_green = None;
    for k in 0..40 {
        let ev = run.step((100, 0, 0));
        let g = gate(&ev, "error_rate");
        let e = g.evidence.as_ref().expect("sequential evidence");
        match g.status {
            GateStatus::Green => {
                assert_eq!(e.verdict, Verdict::Inside);
                assert!(e.high.unwrap() < 0.005, "{}", g.reason);
                assert!(g.reason.contains(": inside,"), "{}", g.reason);
                first_green.get_or_insert(k);
            }
            GateStatus::Yellow => assert!(first_green.is_none(), "{}", g.reason),
            GateStatus::Red => panic!("{}", g.reason),
        }
    }
    // 0 errors in n V2 requests shows "below 0.5 %" once n is ~1,000
    // (e^(0.98 n 0.005) / 6 >= 20): the 10th tick at 100 a tick.
    let k = first_green.expect("turned GREEN");
    assert!((7..=12).contains(&k), "GREEN at tick {k}");
}

#[test]
fn a_step_up_restarts_the_inside_evidence_and_keeps_the_breach_detector() {
    let mut run = Run::new(config(""));
    // Enough ticks for the 10-minute hold at 5 %: clean, so it steps up.
    let mut stepped = false;
    let mut before = None;
    for _ in 0..80 {
        let phase = run.s.phase_index;
        // 300 clean requests a tick: "below 0.5 %" takes ~4 ticks to show.
        run.step((300, 0, 0));
        let mem = run
            .s
            .gate_evidence
            .gates
            .get(&"error_rate".parse::<super::GateKey>().unwrap())
            .cloned();
        if phase == Some(0) && run.s.phase_index == Some(1) {
            stepped = true;
            before = mem;
            break;
        }
    }
    assert!(stepped, "no step-up from 5 %");
    // The hold clock ran while the evidence was gathered: the step-up came
    // at the end of the 10-minute hold (40 ticks after the start tick), not
    // a hold after the gates first turned GREEN.
    assert!(run.tick <= 42, "stepped up at tick {}", run.tick);
    let before = before.unwrap();
    // The step that moved to 50 % still folded into the 5 % evidence; the
    // next tick belongs to the new phase.
    run.step((1000, 1, 0));
    let after = &run.s.gate_evidence.gates[&"error_rate".parse::<super::GateKey>().unwrap()];
    assert!(after.n2 < before.n2, "{} -> {}", before.n2, after.n2);
    assert!(after.n2 > 0.0);
    assert!(
        after.up.iter().zip(before.up).all(|(a, b)| *a <= b + 10.0),
        "the CUSUM carried over"
    );
}

#[test]
fn the_window_method_is_still_there() {
    let mut run = Run::new(config("method = \"window\""));
    assert_eq!(run.cfg.gates.method, Method::Window);
    run.step((100, 0, 0));
    let ev = run.step((100, 0, 0));
    let g = gate(&ev, "error_rate");
    assert!(g.evidence.is_none());
    assert_eq!(g.status, GateStatus::Green, "{}", g.reason);
}

#[test]
fn a_tail_slower_than_v1_but_under_the_limit_is_red_on_the_tail_gate_only() {
    // 10 % of V2's requests at 115 ms, under the 120 ms limit; V1 all at
    // 80 ms. The P95 limit has nothing to say, the median neither; against
    // V1's P95 (+ 10 % + 1 ms = 89 ms) the tail is a breach.
    let mut run = Run::new(config(""));
    let mut red = None;
    for k in 0..200 {
        let ev = run.step_at((1000, 0, 100), 115);
        let p95 = gate(&ev, "latency_p95/search");
        assert_ne!(p95.status, GateStatus::Red, "{}", p95.reason);
        let median = gate(&ev, "latency_vs_control/search");
        assert_ne!(median.status, GateStatus::Red, "{}", median.reason);
        let tail = gate(&ev, "tail_vs_control/search");
        if tail.status == GateStatus::Red {
            assert!(tail.reason.contains(": breach,"), "{}", tail.reason);
            red = Some(k);
            break;
        }
        assert_ne!(tail.status, GateStatus::Green, "{}", tail.reason);
    }
    assert!(red.is_some(), "the tail was never RED");
}
