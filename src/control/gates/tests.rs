use super::judge::{zone, Bound, Zone};
use super::*;
use crate::config::Config;
use crate::control::rollout::tests::BASE;
use crate::telemetry::beacons::{BeaconCounts, BeaconType, UserSet};

/// Two journeys (search, payments) and `min_samples = 50`.
fn base_config() -> Config {
    Config::parse(&format!("{BASE}[rollout]\nmin_samples = 50\n"), "t").unwrap()
}

fn window(cfg: &Config, fill: impl Fn(JourneyId, Variant, &mut CellCounts)) -> Window {
    let mut w = Window::empty(cfg.journeys.len());
    w.duration_ms = 300_000;
    for id in cfg.journeys.ids() {
        for v in Variant::ALL {
            fill(id, v, &mut w.cells[id.index() * 2 + v as usize]);
        }
    }
    w
}

fn cell(c: &mut CellCounts, n: u64, ms: u64, errors: u64) {
    c.latency.record(ms * 1000, n);
    c.classes[1] += n - errors;
    c.classes[4] += errors;
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap()
}

fn eval(cfg: &Config, w: &Window, prev: &BTreeMap<GateKey, GateStatus>) -> Evaluation {
    Memory {
        status: prev.clone(),
        ..Default::default()
    }
    .eval(cfg, w, t0())
}

/// The gates' memory between ticks, as `rollout::Core` keeps it.
#[derive(Default)]
struct Memory {
    status: BTreeMap<GateKey, GateStatus>,
    recovery: BTreeMap<GateKey, Recovery>,
}

impl Memory {
    fn eval(&self, cfg: &Config, w: &Window, now: DateTime<Utc>) -> Evaluation {
        evaluate(
            w,
            &GateContext {
                cfg,
                phase_p95_ms: 130.0,
                comparative: true,
                weight_v2: 10.0,
                v2_bad_since_start: 0,
                shadow: false,
                now,
                previous: &self.status,
                recovery: &self.recovery,
                tick: w,
                sequential: None,
            },
        )
    }

    fn remember(&mut self, ev: &Evaluation) {
        self.status = ev.gates.iter().map(|g| (g.key(), g.status)).collect();
        self.recovery = ev
            .gates
            .iter()
            .filter_map(|g| g.recovery.map(|r| (g.key(), r)))
            .collect();
    }
}

fn status(ev: &Evaluation, key: &str) -> GateStatus {
    ev.gates
        .iter()
        .find(|g| g.key() == key)
        .unwrap_or_else(|| panic!("no gate {key}"))
        .status
}

#[test]
fn healthy_window_is_all_green() {
    let cfg = base_config();
    let w = window(&cfg, |id, _, c| {
        if id.index() < 2 {
            cell(c, 200, 50, 0)
        }
    });
    let ev = eval(&cfg, &w, &BTreeMap::new());
    assert!(ev.all_green(), "{:#?}", ev.gates);
    // `other` had no traffic: no gate for it.
    assert!(ev
        .gates
        .iter()
        .all(|g| g.journey.as_deref() != Some("other")));
    // error_rate, latency_p95 and latency_vs_control per journey, payment_success.
    assert_eq!(ev.gates.len(), 1 + 2 * 2 + 1);
    let p = ev
        .gates
        .iter()
        .find(|g| g.key() == "latency_p95/search")
        .unwrap();
    assert!((p.value.unwrap() - 50.0).abs() < 0.5);
    assert_eq!(p.samples, 200);
}

#[test]
fn too_few_samples_is_yellow_never_green() {
    let cfg = base_config();
    let w = window(&cfg, |id, v, c| {
        if id.index() == 0 {
            cell(c, if v == Variant::V2 { 49 } else { 1000 }, 10, 0)
        }
    });
    let ev = eval(&cfg, &w, &BTreeMap::new());
    let g = ev
        .gates
        .iter()
        .find(|g| g.key() == "latency_p95/search")
        .unwrap();
    assert_eq!(g.status, GateStatus::Yellow);
    assert_eq!(g.reason, "insufficient data: 49 of 50 samples");
    assert_eq!(status(&ev, "error_rate"), GateStatus::Yellow);
    assert!(!ev.all_green());
    assert_eq!(ev.worst().unwrap().status, GateStatus::Yellow);
}

#[test]
fn slow_errors_and_failed_payments_are_red() {
    let cfg = base_config();
    let w = window(&cfg, |id, v, c| match (id.index(), v) {
        (0, Variant::V2) => cell(c, 1000, 140, 0),
        (1, Variant::V2) => cell(c, 1000, 20, 15),
        (0 | 1, Variant::V1) => cell(c, 1000, 20, 0),
        _ => {}
    });
    let ev = eval(&cfg, &w, &BTreeMap::new());
    assert_eq!(status(&ev, "latency_p95/search"), GateStatus::Red);
    assert_eq!(status(&ev, "latency_p95/payments"), GateStatus::Green);
    // 15 of 1000 payments failed: 98.5 % < 99.5 %, and significantly so.
    assert_eq!(status(&ev, "payment_success/payments"), GateStatus::Red);
    // 15 of 2000 = 0.75 % overall, but V1 had 0 %: worse than V1 + 0.1 %.
    let e = ev.gates.iter().find(|g| g.name == "error_rate").unwrap();
    assert_eq!(e.status, GateStatus::Red);
    assert!((e.threshold - 0.001).abs() < 1e-12);
    assert!(e.reason.contains("margin"), "{}", e.reason);
    assert_eq!(
        ev.p95_breaches(130.0, 50),
        vec![("search", ev.journeys[0].v2.p95_ms.unwrap())]
    );
    assert!(ev.p95_breaches(160.0, 50).is_empty());
}

fn search_at(cfg: &Config, ms: u64) -> Window {
    window(cfg, |id, v, c| {
        if id.index() == 0 {
            // V1 as fast as V2: only the absolute P95 gate moves.
            cell(c, 500, if v == Variant::V2 { ms } else { 60 }, 0)
        }
    })
}

#[test]
fn recovery_needs_the_promote_band_and_the_cooldown() {
    let cfg = base_config();
    let key = "latency_p95/search";
    let was_red = BTreeMap::from([(key.parse().unwrap(), GateStatus::Red)]);
    // 128 ms: inside 130 but not inside 130 * 0.95 = 123.5.
    let ev = eval(&cfg, &search_at(&cfg, 128), &was_red);
    let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
    assert_eq!(g.status, GateStatus::Yellow);
    assert!(g.reason.contains("recovering"), "{}", g.reason);
    // A gate that was GREEN stays GREEN there.
    assert_eq!(
        status(&eval(&cfg, &search_at(&cfg, 128), &BTreeMap::new()), key),
        GateStatus::Green
    );
    // 120 ms is inside the band: GREEN only after the cooldown (1m).
    let mut mem = Memory {
        status: was_red,
        ..Default::default()
    };
    let good = search_at(&cfg, 120);
    let mut seen = Vec::new();
    for tick in 0..6 {
        let ev = mem.eval(&cfg, &good, t0() + chrono::TimeDelta::seconds(15 * tick));
        seen.push(status(&ev, key));
        mem.remember(&ev);
    }
    use GateStatus::{Green, Yellow};
    assert_eq!(seen, [Yellow, Yellow, Yellow, Yellow, Green, Green]);
}

#[test]
fn at_least_bands_use_the_narrower_of_threshold_and_complement() {
    let g = base_config().gates;
    let z = |v, t| zone(v, t, Bound::Min, &g);
    // 97 %: the complement is narrower (3 % * 5 % = 0.15 pp).
    assert_eq!(z(0.9716, 0.97), Zone::Clear);
    assert_eq!(z(0.9710, 0.97), Zone::Inside);
    assert_eq!(z(0.9690, 0.97), Zone::Near);
    assert_eq!(z(0.9680, 0.97), Zone::Beyond);
    // 20 %: the threshold itself is narrower (20 % * 5 % = 1 pp).
    assert_eq!(z(0.2101, 0.20), Zone::Clear);
    assert_eq!(z(0.2050, 0.20), Zone::Inside);
    assert_eq!(z(0.1901, 0.20), Zone::Near);
    assert_eq!(z(0.1890, 0.20), Zone::Beyond);
    // Above 1 (clicks per search): plain shares of the threshold.
    assert_eq!(z(1.58, 1.5), Zone::Clear);
    assert_eq!(z(1.42, 1.5), Zone::Beyond);
}

#[test]
fn red_needs_the_rollback_band_and_stays_red_inside_it() {
    let cfg = base_config();
    let key = "latency_p95/search";
    // 134 ms: beyond 130, inside 130 * 1.05 = 136.5.
    let near = search_at(&cfg, 134);
    let ev = eval(&cfg, &near, &BTreeMap::new());
    let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
    assert_eq!(g.status, GateStatus::Yellow);
    assert!(g.reason.contains("rollback band"), "{}", g.reason);
    let was_red = BTreeMap::from([(key.parse().unwrap(), GateStatus::Red)]);
    assert_eq!(status(&eval(&cfg, &near, &was_red), key), GateStatus::Red);
    assert_eq!(
        status(&eval(&cfg, &search_at(&cfg, 140), &BTreeMap::new()), key),
        GateStatus::Red
    );
}

/// The anti-flap property: a value dancing around its threshold gives a
/// steady non-GREEN status (the controller holds), never RED, never a
/// GREEN/non-GREEN alternation, and GREEN again only after the cooldown.
#[test]
fn a_value_hovering_at_the_threshold_never_flaps() {
    let cfg = base_config();
    let key = "latency_p95/search";
    let mut mem = Memory::default();
    let mut now = t0();
    let mut seen = Vec::new();
    for ms in [129, 131, 127, 134, 128, 133, 126, 135, 129, 131, 128, 134] {
        let ev = mem.eval(&cfg, &search_at(&cfg, ms), now);
        seen.push(status(&ev, key));
        mem.remember(&ev);
        now += chrono::TimeDelta::seconds(15);
    }
    use GateStatus::{Green, Yellow};
    assert_eq!(seen[0], Green);
    assert!(seen[1..].iter().all(|s| *s == Yellow), "{seen:?}");
    // Steady in the band for the cooldown: GREEN again.
    for _ in 0..5 {
        let ev = mem.eval(&cfg, &search_at(&cfg, 110), now);
        seen.push(status(&ev, key));
        mem.remember(&ev);
        now += chrono::TimeDelta::seconds(15);
    }
    assert_eq!(seen[seen.len() - 1], Green, "{seen:?}");
    let changes = seen.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(changes, 2, "{seen:?}");
}

#[test]
fn latency_vs_control_needs_the_threshold_and_significance() {
    let cfg = base_config();
    let key = "latency_vs_control/search";
    // GREEN: V2 as fast as V1.
    let same = window(&cfg, |id, _, c| {
        if id.index() == 0 {
            cell(c, 400, 40, 0);
            cell(c, 400, 55, 0);
        }
    });
    assert_eq!(
        status(&eval(&cfg, &same, &BTreeMap::new()), key),
        GateStatus::Green
    );
    // RED: V2's median 60 ms vs V1's 40 ms (threshold 40 * 1.1 + 1 = 45), clearly shifted.
    let slower = window(&cfg, |id, v, c| match (id.index(), v) {
        (0, Variant::V1) => {
            cell(c, 500, 40, 0);
            cell(c, 500, 55, 0);
        }
        (0, Variant::V2) => cell(c, 100, 60, 0),
        _ => {}
    });
    let ev = eval(&cfg, &slower, &BTreeMap::new());
    let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert!((g.threshold - 45.0).abs() < 0.5, "{g:?}");
    assert!(g.p_value.unwrap() < 1e-6, "{g:?}");
    // GREEN: the median is beyond the threshold but the sample is split
    // (28 faster than every V1 request, 32 slower): not significant, so
    // no evidence against V2.
    let split = window(&cfg, |id, v, c| match (id.index(), v) {
        (0, Variant::V1) => {
            cell(c, 500, 40, 0);
            cell(c, 500, 55, 0);
        }
        (0, Variant::V2) => {
            cell(c, 28, 10, 0);
            cell(c, 32, 60, 0);
        }
        _ => {}
    });
    let ev = eval(&cfg, &split, &BTreeMap::new());
    let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
    assert_eq!(g.status, GateStatus::Green, "{g:?}");
    assert!(g.reason.contains("not significant"), "{}", g.reason);
    assert!(g.p_value.unwrap() > 0.1, "{g:?}");
    // YELLOW: too few V1 samples to compare with.
    let thin = window(&cfg, |id, v, c| {
        if id.index() == 0 {
            cell(c, if v == Variant::V1 { 20 } else { 500 }, 40, 0)
        }
    });
    let ev = eval(&cfg, &thin, &BTreeMap::new());
    let g = ev.gates.iter().find(|g| g.key() == key).unwrap();
    assert_eq!(g.status, GateStatus::Yellow);
    assert_eq!(g.reason, "insufficient data: V1 20 of 50 samples");
}

#[test]
fn comparative_gates_are_skipped_without_a_control() {
    let cfg = base_config();
    let w = window(&cfg, |id, v, c| {
        if id.index() == 0 && v == Variant::V2 {
            cell(c, 500, 40, 1)
        }
    });
    let mem = Memory::default();
    let ev = evaluate(
        &w,
        &GateContext {
            cfg: &cfg,
            phase_p95_ms: 130.0,
            comparative: false,
            weight_v2: 100.0,
            v2_bad_since_start: 0,
            shadow: false,
            now: t0(),
            previous: &mem.status,
            recovery: &mem.recovery,
            tick: &w,
            sequential: None,
        },
    );
    assert!(ev.gates.iter().all(|g| g.name != "latency_vs_control"));
    // Only the absolute ceiling: 1 of 500 = 0.2 % <= 0.5 %.
    let e = ev.gates.iter().find(|g| g.name == "error_rate").unwrap();
    assert_eq!(e.status, GateStatus::Green, "{e:?}");
    assert_eq!(e.threshold, cfg.rollout.error_rate_max);
}

#[test]
fn error_rate_margin_breach_needs_significance() {
    let cfg = base_config();
    // V1 0.1 %, V2 0.4 %: beyond V1 + 0.1 % but under the 0.5 % ceiling,
    // and 2 errors in 500 is no evidence.
    let w = window(&cfg, |id, v, c| {
        if id.index() == 0 {
            match v {
                Variant::V1 => cell(c, 1000, 40, 1),
                Variant::V2 => cell(c, 500, 40, 2),
            }
        }
    });
    let ev = eval(&cfg, &w, &BTreeMap::new());
    let e = ev.gates.iter().find(|g| g.name == "error_rate").unwrap();
    assert_eq!(e.status, GateStatus::Green, "{e:?}");
    assert!(e.reason.contains("not significant"), "{}", e.reason);
    // A gate recovering from RED does not get that benefit of the doubt.
    let was_red = BTreeMap::from([(GateKey::new(Gate::ErrorRate, None), GateStatus::Red)]);
    let e = eval(&cfg, &w, &was_red).gates[0].clone();
    assert_eq!(e.status, GateStatus::Yellow, "{e:?}");
    assert!(e.reason.contains("recovering"), "{}", e.reason);
    // V1 is worse still (3 %), but V2's 2.4 % is significantly above the
    // 0.5 % ceiling: RED on the ceiling's own test.
    let w = window(&cfg, |id, v, c| {
        if id.index() == 0 {
            match v {
                Variant::V1 => cell(c, 1000, 40, 30),
                Variant::V2 => cell(c, 500, 40, 12),
            }
        }
    });
    let e = eval(&cfg, &w, &BTreeMap::new()).gates[0].clone();
    assert_eq!(e.name, "error_rate");
    assert_eq!(e.status, GateStatus::Red, "{e:?}");
}

/// The designed false-positive rate through the real gates: 1,000 equal
/// canaries (V2 drawn from V1's distributions, seeded RNG), one window
/// each, judged with fresh memory. Each comparative gate is RED in fewer
/// than alpha of them (see `stats::significance` for the design).
#[test]
fn equal_canaries_through_the_real_gates_are_rarely_red() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let cfg = base_config();
    let mut rng = SmallRng::seed_from_u64(0x0dd_ba11);
    let lognormal_us = |rng: &mut SmallRng| {
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (45_000.0 * (0.5 * z).exp()) as u64
    };
    let mut red: BTreeMap<GateKey, u32> = BTreeMap::new();
    let runs = 1_000;
    for _ in 0..runs {
        let mut w = Window::empty(cfg.journeys.len());
        for j in 0..2 {
            for (v, n) in [(Variant::V1, 1_000), (Variant::V2, 100)] {
                let c = &mut w.cells[j * 2 + v as usize];
                for _ in 0..n {
                    let us = lognormal_us(&mut rng);
                    c.latency.record(us, 1);
                    // 0.3 % 5xx on both variants.
                    let class = if rng.random::<f64>() < 0.003 { 4 } else { 1 };
                    c.classes[class] += 1;
                }
            }
        }
        let ev = eval(&cfg, &w, &BTreeMap::new());
        for g in ev.gates.iter().filter(|g| g.status == GateStatus::Red) {
            *red.entry(g.key()).or_default() += 1;
        }
    }
    for (key, n) in &red {
        assert!(
            (*n as f64) < runs as f64 * cfg.gates.alpha,
            "{key} RED for {n} of {runs} equal canaries"
        );
    }
}

// ===== the edge gates: beacons, funnels, cache, budget, concurrency, skew =====

const EDGE: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        [upstreams]
        v1 = "http://127.0.0.1:1"
        v2 = "http://127.0.0.1:2"
        reserved_capacity = 10
        [routing]
        region_header = "x-region"
        regions = ["eu", "us"]
        [[journeys]]
        name = "search"
        path_prefix = "/search"
        read_heavy = true
        [[journeys]]
        name = "application_start"
        path_prefix = "/api/applications/start"
        [[journeys]]
        name = "application_submit"
        path_pattern = "/api/applications/*/submit"
        [beacons]
        names = ["page_view", "js_error", "search_result_click", "first_result_ms"]
        [rollout]
        min_samples = 50
        [gates]
        js_errors_per = "page_view"
        slo_target = 0.999
        [[gates.funnels]]
        name = "application_conversion"
        numerator = "journey:application_submit"
        denominator = "journey:application_start"
        [[gates.funnels]]
        name = "search_ctr"
        numerator = "beacon:search_result_click"
        denominator = "journey:search"
        max_drop = 0.05
        [[gates.timings]]
        name = "first_result_ms"
"#;

const PAGE_VIEW: usize = 0;
const JS_ERROR: usize = 1;
const CLICK: usize = 2;
const FIRST_RESULT: usize = 3;

fn edge() -> Config {
    Config::parse(EDGE, "edge").unwrap_or_else(|e| panic!("{e}"))
}

/// An empty 5-minute window with room for the beacons.
fn edge_window(cfg: &Config) -> Window {
    let mut w = Window::empty_with(cfg.journeys.len(), cfg.beacons.names.len());
    w.duration_ms = 300_000;
    w
}

fn beacon(w: &mut Window, name: usize, v: Variant) -> &mut BeaconCounts {
    &mut w.beacons[name * 2 + v as usize]
}

fn eval_with(cfg: &Config, w: &Window, weight_v2: f64, v2_bad: u64) -> Evaluation {
    let mem = Memory::default();
    evaluate(
        w,
        &GateContext {
            cfg,
            phase_p95_ms: 130.0,
            comparative: weight_v2 < 100.0,
            weight_v2,
            v2_bad_since_start: v2_bad,
            shadow: false,
            now: t0(),
            previous: &mem.status,
            recovery: &mem.recovery,
            tick: w,
            sequential: None,
        },
    )
}

fn gate_of<'e>(ev: &'e Evaluation, key: &str) -> &'e GateResult {
    ev.gates
        .iter()
        .find(|g| g.key() == key)
        .unwrap_or_else(|| panic!("no gate {key} in {:#?}", ev.gates))
}

/// A well-spread 64-bit key hash for user `i` of variant `v` (splitmix64).
fn user(v: Variant, i: u64) -> u64 {
    let mut z = (i + ((v as u64) << 40)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Users `range` of `v` into a set.
fn users_into(set: &mut UserSet, v: Variant, range: std::ops::Range<u64>) {
    range.for_each(|i| set.insert(user(v, i)));
}

/// Per variant: `viewers[v]` users with a page view, the first
/// `with_error[v]` of them with a JS error too.
fn js(w: &mut Window, viewers: [u64; 2], with_error: [u64; 2]) {
    for (i, v) in Variant::ALL.into_iter().enumerate() {
        users_into(w.beacon_users.of_mut(PAGE_VIEW, v), v, 0..viewers[i]);
        users_into(&mut w.beacon_users.js_error[i], v, 0..with_error[i]);
        users_into(w.beacon_users.of_mut(JS_ERROR, v), v, 0..with_error[i]);
    }
}

#[test]
fn js_errors_share_of_users() {
    let cfg = edge();
    let status = |w: &Window| {
        let g = gate_of(&eval_with(&cfg, w, 10.0, 0), "js_errors").clone();
        (g.status, g.reason)
    };
    let shares = |viewers, with_error| {
        let mut w = edge_window(&cfg);
        js(&mut w, viewers, with_error);
        w
    };
    // 1 % of users on both: GREEN.
    let (st, why) = status(&shares([10_000, 1_000], [100, 10]));
    assert_eq!(st, GateStatus::Green, "{why}");
    assert!(
        why.starts_with("V2 users with a JS error per user with a page view"),
        "{why}"
    );
    // 4 % of V2 users against 1 %: RED.
    assert_eq!(
        status(&shares([10_000, 1_000], [100, 40])).0,
        GateStatus::Red
    );
    // 1.5 % of V2 users: beyond 1.1 % but 15 users in 1,000 is no evidence.
    let (st, why) = status(&shares([10_000, 1_000], [100, 15]));
    assert_eq!(st, GateStatus::Green, "{why}");
    assert!(why.contains("not significant"), "{why}");
    // Too few V2 users with a page view.
    let (st, why) = status(&shares([10_000, 20], [100, 5]));
    assert_eq!(st, GateStatus::Yellow);
    assert_eq!(why, "insufficient data: 20 of 50 samples");
    // Users with an error but no page view in the window are not counted.
    let mut w = shares([10_000, 1_000], [100, 10]);
    users_into(&mut w.beacon_users.js_error[1], Variant::V2, 5_000..5_100);
    assert_eq!(status(&w).0, GateStatus::Green);
}

#[test]
fn one_key_is_one_user_however_many_errors_it_posts() {
    let cfg = edge();
    // A healthy canary: 2 % of users with an error on both variants.
    let mut w = edge_window(&cfg);
    js(&mut w, [2_000, 500], [40, 10]);
    // One V2 key posting 10,000 errors and page views: as counted by events
    // it would be 10,010 errors per 510 views; as users it is one more.
    let attacker = user(Variant::V2, 999_999);
    w.beacon_users
        .of_mut(PAGE_VIEW, Variant::V2)
        .insert(attacker);
    w.beacon_users.js_error[1].insert(attacker);
    beacon(&mut w, JS_ERROR, Variant::V2).counts[BeaconType::JsError as usize] = 10_000;
    let g = gate_of(&eval_with(&cfg, &w, 20.0, 0), "js_errors").clone();
    assert_eq!(g.status, GateStatus::Green, "{}", g.reason);
    // 501 users (a linear count: within a percent), 11 of them with an error.
    assert!(g.samples.abs_diff(501) <= 5, "{g:?}");
    assert!(
        (g.value.unwrap() * g.samples as f64 - 11.0).abs() < 1.0,
        "{g:?}"
    );
}

fn requests(w: &mut Window, cfg: &Config, journey: &str, v: Variant, n: u64) {
    let id = cfg.journeys.by_name(journey).unwrap();
    let c = &mut w.cells[id.index() * 2 + v as usize];
    c.latency.record(30_000, n);
    c.classes[1] += n;
}

#[test]
fn funnel_conversion_from_journeys() {
    let cfg = edge();
    let key = "funnel/application_conversion";
    let status = |start: [u64; 2], submit: [u64; 2]| {
        let mut w = edge_window(&cfg);
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            requests(&mut w, &cfg, "application_start", v, start[i]);
            requests(&mut w, &cfg, "application_submit", v, submit[i]);
        }
        gate_of(&eval_with(&cfg, &w, 10.0, 0), key).clone()
    };
    // 80 % submit on both: GREEN.
    assert_eq!(status([2_000, 200], [1_600, 160]).status, GateStatus::Green);
    // V2 drops the submit step for most users: RED.
    let g = status([2_000, 200], [1_600, 60]);
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert!((g.threshold - 0.8 * 0.97).abs() < 1e-9, "{g:?}");
    // Too few V2 starts.
    let g = status([2_000, 30], [1_600, 10]);
    assert_eq!(g.status, GateStatus::Yellow);
    assert!(g.reason.starts_with("insufficient data"), "{}", g.reason);
}

#[test]
fn funnel_from_a_beacon_over_a_journey_counts_beacon_users() {
    let cfg = edge();
    let key = "funnel/search_ctr";
    let status = |searches: [u64; 2], clickers: [u64; 2], flood: u64| {
        let mut w = edge_window(&cfg);
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            requests(&mut w, &cfg, "search", v, searches[i]);
            users_into(w.beacon_users.of_mut(CLICK, v), v, 0..clickers[i]);
            // Events beyond the users do not count: one key's flood is one user.
            beacon(&mut w, CLICK, v).counts[BeaconType::Funnel as usize] = clickers[i] + flood;
        }
        gate_of(&eval_with(&cfg, &w, 10.0, 0), key).clone()
    };
    // Half as many users clicking as searches, on both.
    assert_eq!(
        status([2_000, 400], [1_000, 200], 0).status,
        GateStatus::Green
    );
    // V2 users click half as often.
    assert_eq!(
        status([2_000, 400], [1_000, 100], 0).status,
        GateStatus::Red
    );
    // 10,000 click events from V2 keys that are already counted change nothing.
    let g = status([2_000, 400], [1_000, 100], 10_000);
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert_eq!(
        status([2_000, 10], [1_000, 5], 0).status,
        GateStatus::Yellow
    );
}

/// The edge config with a funnel whose both steps are beacons.
fn edge_with_beacon_funnel() -> Config {
    let text = format!(
        "{EDGE}[[gates.funnels]]\nname = \"view_to_click\"\nnumerator = \"beacon:search_result_click\"\ndenominator = \"beacon:page_view\"\n"
    );
    Config::parse(&text, "edge").unwrap_or_else(|e| panic!("{e}"))
}

/// Per variant: `viewers[v]` users with a page view, the first `clickers[v]`
/// of them clicking too.
fn view_to_click(w: &mut Window, viewers: [u64; 2], clickers: [u64; 2]) {
    for (i, v) in Variant::ALL.into_iter().enumerate() {
        users_into(w.beacon_users.of_mut(PAGE_VIEW, v), v, 0..viewers[i]);
        users_into(w.beacon_users.of_mut(CLICK, v), v, 0..clickers[i]);
    }
}

#[test]
fn a_beacon_funnel_is_a_share_of_users() {
    let cfg = edge_with_beacon_funnel();
    let key = "funnel/view_to_click";
    let gate = |w: &Window| gate_of(&eval_with(&cfg, w, 10.0, 0), key).clone();
    let mut w = edge_window(&cfg);
    view_to_click(&mut w, [4_000, 1_000], [2_000, 500]);
    let g = gate(&w);
    assert_eq!(g.status, GateStatus::Green, "{}", g.reason);
    assert!(
        g.reason.starts_with("V2 users reaching the step"),
        "{}",
        g.reason
    );
    assert!((g.value.unwrap() - 0.5).abs() < 0.02, "{g:?}");
    // Half as many V2 users click: RED (two-proportion test).
    let mut w = edge_window(&cfg);
    view_to_click(&mut w, [4_000, 1_000], [2_000, 250]);
    assert_eq!(gate(&w).status, GateStatus::Red);
    // Clickers without a page view in the window are not conversions.
    users_into(
        w.beacon_users.of_mut(CLICK, Variant::V2),
        Variant::V2,
        50_000..50_500,
    );
    assert_eq!(gate(&w).status, GateStatus::Red);
}

#[test]
fn timing_beacons_compare_medians_with_mann_whitney() {
    let cfg = edge();
    let key = "timing/first_result_ms";
    let status = |v1: &[(u64, u64)], v2: &[(u64, u64)]| {
        let mut w = edge_window(&cfg);
        for (v, values) in [(Variant::V1, v1), (Variant::V2, v2)] {
            let b = beacon(&mut w, FIRST_RESULT, v);
            for &(ms, n) in values {
                b.timing.record(ms * 1000, n);
                b.counts[BeaconType::Timing as usize] += n;
            }
        }
        gate_of(&eval_with(&cfg, &w, 10.0, 0), key).clone()
    };
    let v1 = [(200, 500), (300, 500)];
    assert_eq!(
        status(&v1, &[(200, 50), (300, 50)]).status,
        GateStatus::Green
    );
    let g = status(&v1, &[(300, 60), (400, 60)]);
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert!((g.threshold - 200.0 * 1.05).abs() < 2.0, "{g:?}");
    assert_eq!(status(&v1, &[(400, 20)]).status, GateStatus::Yellow);
}

#[test]
fn cache_hit_ratio_on_read_heavy_journeys() {
    let cfg = edge();
    let status = |n: u64, hits: u64| {
        let mut w = edge_window(&cfg);
        requests(&mut w, &cfg, "search", Variant::V1, 1_000);
        requests(&mut w, &cfg, "search", Variant::V2, n);
        let id = cfg.journeys.by_name("search").unwrap();
        w.cells[id.index() * 2 + 1].cache_hits = hits;
        let ev = eval_with(&cfg, &w, 10.0, 0);
        // Only read-heavy journeys have the gate.
        assert!(ev
            .gates
            .iter()
            .all(|g| g.name != "cache_hit" || g.journey.as_deref() == Some("search")));
        gate_of(&ev, "cache_hit/search").status
    };
    assert_eq!(status(1_000, 950), GateStatus::Green);
    assert_eq!(status(1_000, 500), GateStatus::Red);
    assert_eq!(status(10, 2), GateStatus::Yellow);
}

#[test]
fn error_budget_share_of_the_monthly_budget() {
    let cfg = edge();
    let mut w = edge_window(&cfg);
    // 30,000 requests in 5 minutes = 100 req/s: the 30-day budget of a
    // 99.9 % SLO is 0.001 * 100 * 2,592,000 = 259,200 bad requests.
    requests(&mut w, &cfg, "search", Variant::V1, 27_000);
    requests(&mut w, &cfg, "search", Variant::V2, 3_000);
    let g = gate_of(&eval_with(&cfg, &w, 10.0, 2_592), "error_budget").clone();
    assert_eq!(g.status, GateStatus::Green, "{g:?}");
    assert!((g.value.unwrap() - 0.01).abs() < 1e-9, "{g:?}");
    let g = gate_of(&eval_with(&cfg, &w, 10.0, 20_000), "error_budget").clone();
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    let g = gate_of(
        &eval_with(&cfg, &edge_window(&cfg), 10.0, 0),
        "error_budget",
    )
    .clone();
    assert_eq!(g.status, GateStatus::Yellow, "{g:?}");
}

#[test]
fn concurrency_is_yellow_while_shedding() {
    let cfg = edge();
    let mut w = edge_window(&cfg);
    requests(&mut w, &cfg, "search", Variant::V2, 100);
    let g = gate_of(&eval_with(&cfg, &w, 10.0, 0), "concurrency").clone();
    assert_eq!(g.status, GateStatus::Green, "{g:?}");
    assert_eq!(g.threshold, 10.0);
    w.shed = [0, 7];
    let g = gate_of(&eval_with(&cfg, &w, 10.0, 0), "concurrency").clone();
    assert_eq!(g.status, GateStatus::Yellow, "{g:?}");
    assert!(g.reason.contains("7 requests shed"), "{}", g.reason);
    // No reserved capacity configured: no gate.
    let plain = base_config();
    let ev = eval(&plain, &window(&plain, |_, _, _| {}), &BTreeMap::new());
    assert!(ev.gates.iter().all(|g| g.name != "concurrency"));
}

#[test]
fn split_skew_per_region() {
    use crate::telemetry::UserShare;
    let cfg = edge();
    let mut w = edge_window(&cfg);
    let share = |v1: u64, v2: u64| UserShare {
        v1,
        v2,
        expected_v2: (v1 + v2) as f64 * 0.10,
        intervals: 1,
    };
    // eu on target, us three times too many V2 users, other too few users.
    w.users = vec![share(905, 95), share(900, 300), share(18, 2)];
    let ev = eval_with(&cfg, &w, 10.0, 0);
    assert_eq!(gate_of(&ev, "split_skew/eu").status, GateStatus::Green);
    let us = gate_of(&ev, "split_skew/us");
    assert_eq!(us.status, GateStatus::Red, "{us:?}");
    assert!((us.value.unwrap() - 1.5).abs() < 1e-9, "{us:?}");
    assert_eq!(gate_of(&ev, "split_skew/other").status, GateStatus::Yellow);
    // Not judged at 0 % or 100 %.
    let ev = eval_with(&cfg, &w, 100.0, 0);
    assert!(ev.gates.iter().all(|g| g.name != "split_skew"));
}

#[test]
fn edge_config_errors_name_the_key() {
    let bad = |from: &str, to: &str| {
        Config::parse(&EDGE.replace(from, to), "t")
            .unwrap_err()
            .to_string()
    };
    let e = bad("js_errors_per = \"page_view\"", "js_errors_per = \"views\"");
    assert!(e.contains("`gates.js_errors_per`"), "{e}");
    let e = bad("journey:application_submit", "journey:nope");
    assert!(e.contains("`gates.funnels[0].numerator`"), "{e}");
    let e = bad("beacon:search_result_click", "click");
    assert!(e.contains("`gates.funnels[1].numerator`"), "{e}");
    let e = bad(
        "[[gates.timings]]\n        name = \"first_result_ms\"",
        "[[gates.timings]]\n        name = \"ttfb\"",
    );
    assert!(e.contains("`gates.timings[0].name`"), "{e}");
    let e = bad("slo_target = 0.999", "slo_target = 99.9");
    assert!(e.contains("`gates.slo_target`"), "{e}");
    let e = bad("regions = [\"eu\", \"us\"]", "regions = [\"eu\", \"EU\"]");
    assert!(e.contains("`routing.regions[1]`"), "{e}");
    let e = bad("region_header = \"x-region\"", "");
    assert!(e.contains("`routing.regions`"), "{e}");
}

#[test]
fn shadow_phase_judges_the_mirrors() {
    use crate::telemetry::shadow::ShadowCounts;
    let cfg = base_config();
    let eval_shadow = |w: &Window| {
        let mem = Memory::default();
        evaluate(
            w,
            &GateContext {
                cfg: &cfg,
                phase_p95_ms: 130.0,
                comparative: true,
                weight_v2: 0.0,
                v2_bad_since_start: 0,
                shadow: true,
                now: t0(),
                previous: &mem.status,
                recovery: &mem.recovery,
                tick: w,
                sequential: None,
            },
        )
    };
    let with = |compared: u64, diffs: u64| {
        let mut w = window(&cfg, |id, v, c| {
            if id.index() == 0 && v == Variant::V1 {
                cell(c, 1000, 40, 0)
            }
        });
        let mut s = ShadowCounts {
            compared,
            diffs,
            ..Default::default()
        };
        s.classes[1] = compared;
        s.duration.record(20_000, compared);
        w.shadow = vec![s, ShadowCounts::default(), ShadowCounts::default()];
        w
    };
    // No mirrored traffic: the overall gate holds, nothing passes vacuously.
    let ev = eval_shadow(&window(&cfg, |_, _, _| {}));
    assert_eq!(ev.gates.len(), 1);
    assert_eq!(status(&ev, "shadow_diff"), GateStatus::Yellow);
    let ev = eval_shadow(&with(500, 0));
    assert!(ev.all_green(), "{:#?}", ev.gates);
    // Only shadow gates: live gates would all be "insufficient data".
    assert!(ev
        .gates
        .iter()
        .all(|g| g.name == "shadow_diff" || g.name == "latency_p95"));
    let ev = eval_shadow(&with(500, 100));
    assert_eq!(status(&ev, "shadow_diff/search"), GateStatus::Red);
    assert_eq!(status(&ev, "shadow_diff"), GateStatus::Red);
    assert_eq!(
        status(&eval_shadow(&with(10, 5)), "shadow_diff"),
        GateStatus::Yellow
    );
}

// ===== gate keys: typed, but printed, ordered and serialised as before =====

#[test]
fn gate_names_round_trip_and_never_contain_a_slash() {
    let mut names: Vec<&str> = Gate::ALL.iter().map(|g| g.as_str()).collect();
    for g in Gate::ALL {
        assert_eq!(g.as_str().parse::<Gate>().unwrap(), g);
        assert!(!g.as_str().contains('/'), "{g}");
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Gate::ALL.len());
    assert!("latency".parse::<Gate>().is_err());
}

#[test]
fn gate_keys_print_and_order_as_their_old_text() {
    let keys = [
        GateKey::new(Gate::SplitSkew, Some("eu")),
        GateKey::new(Gate::ErrorRate, None),
        GateKey::new(Gate::LatencyP95, Some("search")),
        GateKey::new(Gate::LatencyP95, Some("payments/api")),
        GateKey::new(Gate::LatencyVsControl, Some("search")),
        GateKey::new(Gate::ErrorBudget, None),
        GateKey::new(Gate::ShadowDiff, None),
        GateKey::new(Gate::ShadowDiff, Some("search")),
    ];
    let mut typed: Vec<GateKey> = keys.to_vec();
    typed.sort();
    let mut text: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    text.sort();
    assert_eq!(
        typed.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        text
    );
    let k = &keys[3];
    assert_eq!(k.to_string(), "latency_p95/payments/api");
    assert_eq!(
        (k.gate(), k.label()),
        (Gate::LatencyP95, Some("payments/api"))
    );
    assert_eq!(k.as_str().parse::<GateKey>().unwrap(), *k);
    assert_eq!(keys[1].label(), None);
    assert!("nope/search".parse::<GateKey>().is_err());
}

#[test]
fn gate_keys_serialise_as_the_text_they_always_were() {
    // A state-file map keyed by gate: same JSON as when it was keyed by String.
    let typed: BTreeMap<GateKey, GateStatus> = BTreeMap::from([
        (
            GateKey::new(Gate::LatencyP95, Some("search")),
            GateStatus::Red,
        ),
        (GateKey::new(Gate::ErrorRate, None), GateStatus::Yellow),
        (
            GateKey::new(Gate::Funnel, Some("search_ctr")),
            GateStatus::Green,
        ),
    ]);
    let text: BTreeMap<String, GateStatus> =
        typed.iter().map(|(k, s)| (k.to_string(), *s)).collect();
    let json = serde_json::to_string(&typed).unwrap();
    assert_eq!(json, serde_json::to_string(&text).unwrap());
    let back: BTreeMap<GateKey, GateStatus> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, typed);
    // Looked up by its printed key.
    assert_eq!(typed.get("error_rate"), Some(&GateStatus::Yellow));

    // A result's `name` is the family's name, `journey` its label.
    let g = GateResult {
        name: Gate::CacheHit,
        journey: Some("search".into()),
        status: GateStatus::Green,
        value: Some(0.9),
        threshold: 0.85,
        samples: 100,
        reason: "ok".into(),
        p_value: None,
        recovery: None,
        evidence: None,
    };
    let json = serde_json::to_string(&g).unwrap();
    assert!(
        json.starts_with(r#"{"name":"cache_hit","journey":"search","status":"GREEN""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<GateResult>(&json).unwrap(), g);
    assert_eq!(g.key(), "cache_hit/search");
}

// ===== beacon gates under a botnet (BENCHMARKS.md) =====

/// The js_errors gate as it was before it counted users: every `js_error`
/// event per `page_view` event, Poisson rate test. Kept here, through the
/// same judge, to measure what the change bought.
fn js_errors_by_events(window: &Window, ctx: &GateContext<'_>) -> GateResult {
    use super::judge::{Evidence, Measure};
    let errors = |v| beacon_of(window, JS_ERROR, v).counts[BeaconType::JsError as usize];
    let views = |v| beacon_of(window, PAGE_VIEW, v).total();
    let (e1, n1, e2, n2) = (
        errors(Variant::V1),
        views(Variant::V1),
        errors(Variant::V2),
        views(Variant::V2),
    );
    let rate = |e: u64, n: u64| (n > 0).then(|| e as f64 / n as f64);
    ctx.gate(Measure {
        gate: Gate::JsErrors,
        journey: None,
        bound: Bound::Max,
        what: "V2 JS errors per page view",
        value: rate(e2, n2),
        threshold: rate(e1, n1).unwrap_or(0.0) * (1.0 + ctx.cfg.gates.js_errors_max_increase),
        samples: n2,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: Some(n1),
        evidence: Evidence::Test(super::significance::poisson_rate(
            e1,
            n1,
            e2,
            n2,
            super::significance::Worse::Higher,
        )),
        counted: "",
        counts: None,
    })
}

/// A beacon funnel as it was: numerator events per denominator event,
/// log-ratio test.
fn funnel_by_events(
    window: &Window,
    ctx: &GateContext<'_>,
    f: &crate::config::Funnel,
) -> GateResult {
    use super::judge::{Evidence, Measure};
    let count = |b, v| beacon_of(window, b, v).total();
    let (x1, n1, x2, n2) = (
        count(CLICK, Variant::V1),
        count(PAGE_VIEW, Variant::V1),
        count(CLICK, Variant::V2),
        count(PAGE_VIEW, Variant::V2),
    );
    let ratio = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
    ctx.gate(Measure {
        gate: Gate::Funnel,
        journey: Some(&f.name),
        bound: Bound::Min,
        what: "V2 conversion",
        value: ratio(x2, n2),
        threshold: ratio(x1, n1).unwrap_or(0.0) * (1.0 - f.max_drop),
        samples: n2,
        min_samples: f.min_samples.unwrap_or(ctx.cfg.rollout.min_samples),
        control_samples: Some(n1),
        evidence: Evidence::Test(super::significance::log_ratio(
            x1,
            n1,
            x2,
            n2,
            super::significance::Worse::Lower,
        )),
        counted: "",
        counts: None,
    })
}

fn beacon_of(w: &Window, name: usize, v: Variant) -> &BeaconCounts {
    &w.beacons[name * 2 + v as usize]
}

/// The simulated population of one window: `users` real users, a quarter
/// of them on V2 (the 25 % canary), each with 4 page views; 2 % of users
/// with one JS error, 40 % with one click on a search result. Both variants
/// equally healthy.
struct Population {
    users: u64,
}

const VIEWS_PER_USER: u64 = 4;
const ERROR_SHARE: f64 = 0.02;
const CLICK_SHARE: f64 = 0.40;
/// What one address posts when nothing limits it: the issue's 15 beacons/s
/// of 100 events, over a 5-minute window.
const UNCAPPED_EVENTS_PER_ADDRESS: u64 = 15 * 100 * 300;

impl Population {
    fn on(&self, v: Variant) -> u64 {
        match v {
            Variant::V1 => self.users - self.users / 4,
            Variant::V2 => self.users / 4,
        }
    }

    /// The real users' events and user sets.
    fn window(&self, cfg: &Config) -> Window {
        let mut w = edge_window(cfg);
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            let n = self.on(v);
            let errors = (n as f64 * ERROR_SHARE).round() as u64;
            let clicks = (n as f64 * CLICK_SHARE).round() as u64;
            users_into(w.beacon_users.of_mut(PAGE_VIEW, v), v, 0..n);
            users_into(&mut w.beacon_users.js_error[i], v, 0..errors);
            users_into(w.beacon_users.of_mut(JS_ERROR, v), v, 0..errors);
            users_into(w.beacon_users.of_mut(CLICK, v), v, 0..clicks);
            beacon(&mut w, PAGE_VIEW, v).counts[BeaconType::Funnel as usize] = n * VIEWS_PER_USER;
            beacon(&mut w, JS_ERROR, v).counts[BeaconType::JsError as usize] = errors;
            beacon(&mut w, CLICK, v).counts[BeaconType::Funnel as usize] = clicks;
        }
        w
    }
}

/// What the attacker adds with `n` units of its cheapest attack on a gate.
#[derive(Clone, Copy)]
enum Attack {
    /// Events: `js_error` on V2 (the issue's attack).
    ErrorEvents,
    /// Events: `page_view` on V2, diluting the click-through.
    ViewEvents,
    /// Users: V2 keys with a page view and a JS error (2 events each).
    ErrorUsers,
    /// Users: V2 keys with a page view only (1 event each).
    ViewUsers,
}

impl Attack {
    fn apply(self, w: &mut Window, n: u64) {
        let v = Variant::V2;
        let fake = 1 << 39; // far from the real users' numbers
        match self {
            Attack::ErrorEvents => {
                beacon(w, JS_ERROR, v).counts[BeaconType::JsError as usize] += n;
            }
            Attack::ViewEvents => {
                beacon(w, PAGE_VIEW, v).counts[BeaconType::Funnel as usize] += n;
            }
            Attack::ErrorUsers => {
                users_into(w.beacon_users.of_mut(PAGE_VIEW, v), v, fake..fake + n);
                users_into(&mut w.beacon_users.js_error[1], v, fake..fake + n);
            }
            Attack::ViewUsers => {
                users_into(w.beacon_users.of_mut(PAGE_VIEW, v), v, fake..fake + n);
            }
        }
    }
}

/// A gate judged one way.
type Judge<'a> = &'a dyn Fn(&Window) -> GateStatus;
/// One row of the table: gate, the attack and judge before, the attack and
/// judge after, events per fake user after.
type Row<'a> = (&'static str, Attack, Judge<'a>, Attack, Judge<'a>, u64);

/// The fewest units of `attack` that turn the gate RED (binary search; the
/// gate is monotone in them), or `None` up to `limit`.
fn fewest_for_red(
    cfg: &Config,
    pop: &Population,
    attack: Attack,
    judge: &dyn Fn(&Window) -> GateStatus,
    limit: u64,
) -> Option<u64> {
    let red = |n: u64| {
        let mut w = pop.window(cfg);
        attack.apply(&mut w, n);
        judge(&w) == GateStatus::Red
    };
    if red(0) {
        return Some(0);
    }
    if !red(limit) {
        return None;
    }
    let (mut lo, mut hi) = (0, limit);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if red(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Prints the BENCHMARKS.md table: attacker addresses needed to turn each
/// beacon gate from GREEN to RED, before (events, no caps) and after
/// (users, event caps and the per-address user quota). Run: `cargo test --lib botnet -- --ignored --nocapture`.
#[test]
#[ignore = "prints the botnet table of BENCHMARKS.md"]
fn botnet_addresses_to_turn_beacon_gates_red() {
    let cfg = edge_with_beacon_funnel();
    let f = cfg
        .gates
        .funnels
        .iter()
        .find(|f| f.name == "view_to_click")
        .unwrap()
        .clone();
    let mem = Memory::default();
    let empty = Window::empty_with(cfg.journeys.len(), cfg.beacons.names.len());
    let ctx = GateContext {
        cfg: &cfg,
        phase_p95_ms: 130.0,
        comparative: true,
        weight_v2: 25.0,
        v2_bad_since_start: 0,
        shadow: false,
        now: t0(),
        previous: &mem.status,
        recovery: &mem.recovery,
        tick: &empty,
        sequential: None,
    };
    let after_js = |w: &Window| gate_of(&evaluate(w, &ctx), "js_errors").status;
    let after_funnel = |w: &Window| gate_of(&evaluate(w, &ctx), "funnel/view_to_click").status;
    let before_js = |w: &Window| js_errors_by_events(w, &ctx).status;
    let before_funnel = |w: &Window| funnel_by_events(w, &ctx, &f).status;
    // Worst case for the caps: a window straddling two cap epochs. One
    // address is worth what its event cap pays for, at most its user quota,
    // in each (0: no quota, as before it existed).
    let per_address = |events_per_unit: u64, (events, users): (u64, u64)| {
        let by_events = events / events_per_unit;
        2 * if users == 0 {
            by_events
        } else {
            by_events.min(users)
        }
    };
    let b = &cfg.beacons;
    let caps = [
        (b.max_events_per_client as u64, 0),
        (
            b.max_events_per_client as u64,
            b.max_users_per_client as u64,
        ),
        (b.max_events_per_client as u64, 4),
        (b.max_events_per_client as u64, 1),
    ];
    println!(
        "| real users | gate | before: events needed | before: addresses | after: fake users needed | after: addresses, event cap {} only | after: addresses, defaults ({} events, {} users) | after: addresses, {} users | after: addresses, {} user |",
        caps[0].0, caps[1].0, caps[1].1, caps[2].1, caps[3].1
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for users in [200u64, 2_000, 20_000] {
        let pop = Population { users };
        let rows: [Row; 2] = [
            (
                "js_errors",
                Attack::ErrorEvents,
                &before_js,
                Attack::ErrorUsers,
                &after_js,
                2,
            ),
            (
                "funnel view_to_click",
                Attack::ViewEvents,
                &before_funnel,
                Attack::ViewUsers,
                &after_funnel,
                1,
            ),
        ];
        for (name, ev, before, us, after, events_per_user) in rows {
            let pw = pop.window(&cfg);
            assert_eq!(
                before(&pw),
                GateStatus::Green,
                "{users} {name}: healthy before"
            );
            assert_eq!(
                after(&pw),
                GateStatus::Green,
                "{users} {name}: healthy after"
            );
            let e = fewest_for_red(&cfg, &pop, ev, before, 100_000_000).unwrap();
            let u = fewest_for_red(&cfg, &pop, us, after, 1_000_000).unwrap();
            let addrs = |cap| u.div_ceil(per_address(events_per_user, cap));
            println!(
                "| {users} | {name} | {e} | {} | {u} | {} | {} | {} | {} |",
                e.div_ceil(UNCAPPED_EVENTS_PER_ADDRESS),
                addrs(caps[0]),
                addrs(caps[1]),
                addrs(caps[2]),
                addrs(caps[3]),
            );
        }
    }
}
