//! The seed rules judged per journey and per user: a journey's failures
//! against V1's ("no increase above baseline"), beside or instead of an
//! absolute minimum; and revenue per user V2 against V1 ("positive
//! signal"), reported always and a gate when configured.

use super::*;
use crate::config::Config;

const MINIMAL: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams]\nv1 = \"http://127.0.0.1:1\"\nv2 = \"http://127.0.0.1:2\"\n[rollout]\nmin_samples = 50\n";

/// One `webhooks` journey with these extra keys.
fn webhooks(keys: &str) -> Config {
    let text = format!(
        "{MINIMAL}[[journeys]]\nname = \"webhooks\"\npath_prefix = \"/webhooks\"\n{keys}\n"
    );
    Config::parse(&text, "t").unwrap()
}

/// `webhooks` with `(requests, failures)` per variant (V1, V2).
fn deliveries(cfg: &Config, v1: (u64, u64), v2: (u64, u64)) -> Window {
    let mut w = Window::empty(cfg.journeys.len());
    w.duration_ms = 300_000;
    for (v, (n, bad)) in [(Variant::V1, v1), (Variant::V2, v2)] {
        let c = &mut w.cells[v as usize];
        c.latency.record(5_000, n);
        c.classes[1] += n - bad;
        c.classes[4] += bad;
    }
    w
}

/// The window judge over `w` (also the tick's counts).
fn judge(cfg: &Config, w: &Window, comparative: bool) -> Evaluation {
    judge_with(cfg, w, comparative, None)
}

/// The sequential judge with no memory yet, `w` as the one tick it folds.
fn judge_sequentially(cfg: &Config, w: &Window) -> Evaluation {
    let memory = EvidenceMemory::default();
    let seq = Sequential {
        memory: &memory,
        gates: 10,
        looks: 1_000,
    };
    judge_with(cfg, w, true, Some(seq))
}

fn judge_with(
    cfg: &Config,
    w: &Window,
    comparative: bool,
    sequential: Option<Sequential<'_>>,
) -> Evaluation {
    let none = BTreeMap::new();
    evaluate(
        w,
        &GateContext {
            cfg,
            phase_p95_ms: 130.0,
            comparative,
            weight_v2: if comparative { 50.0 } else { 100.0 },
            v2_bad_since_start: 0,
            shadow: false,
            now: DateTime::from_timestamp(1_750_000_000, 0).unwrap(),
            previous: &none,
            recovery: &BTreeMap::new(),
            tick: w,
            seen: &Window::empty_with(cfg.journeys.len(), cfg.beacons.names.len()),
            sequential,
        },
    )
}

fn success_gate(ev: &Evaluation) -> Option<&GateResult> {
    ev.gates.iter().find(|g| g.key() == "success_rate/webhooks")
}

#[test]
fn webhook_failures_above_v1_are_red_without_any_minimum() {
    let cfg = webhooks("success_vs_v1 = 0.002");
    // 0.1 % on V1, 3 % on V2: far above V1 + 0.2 %, though 97 % would pass
    // many an absolute minimum.
    let w = deliveries(&cfg, (10_000, 10), (10_000, 300));
    let ev = judge(&cfg, &w, true);
    let g = success_gate(&ev).expect("a success_rate gate from the V1 margin alone");
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert!((g.threshold - (1.0 - 0.001 - 0.002)).abs() < 1e-9, "{g:?}");
    assert!(
        g.reason
            .contains("bound: V1 failures 0.0010 + margin 0.0020"),
        "{}",
        g.reason
    );
    assert!(g.p_value.is_some_and(|p| p < 1e-6), "{g:?}");
    // The same V2 beside a V1 that fails as much: no increase, GREEN.
    let w = deliveries(&cfg, (10_000, 300), (10_000, 300));
    let g = judge(&cfg, &w, true);
    assert_eq!(success_gate(&g).unwrap().status, GateStatus::Green);
    // At 100 % there is no V1 to compare with, and no minimum: no gate.
    let w = deliveries(&cfg, (0, 0), (10_000, 300));
    assert!(success_gate(&judge(&cfg, &w, false)).is_none());
    // V1 too small to compare with: insufficient data, never GREEN.
    let w = deliveries(&cfg, (20, 0), (10_000, 300));
    let ev = judge(&cfg, &w, true);
    let g = success_gate(&ev).unwrap();
    assert_eq!(g.status, GateStatus::Yellow);
    assert!(
        g.reason.starts_with("insufficient data: V1 20"),
        "{}",
        g.reason
    );
}

#[test]
fn the_stricter_bound_is_the_gate_and_the_reason_names_it() {
    let cfg = webhooks("success_min = 0.99\nsuccess_vs_v1 = 0.002");
    // V1 fails 0.1 %: V1 + margin (99.7 %) is stricter than 99 %.
    let w = deliveries(&cfg, (10_000, 10), (10_000, 80));
    let ev = judge(&cfg, &w, true);
    let g = success_gate(&ev).unwrap();
    assert!((g.threshold - 0.997).abs() < 1e-9, "{g:?}");
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert!(
        g.reason.contains(
            "(bound: V1 failures 0.0010 + margin 0.0020, stricter than success_min 0.9900)"
        ),
        "{}",
        g.reason
    );
    // V1 fails 2 %: the absolute 99 % is stricter, and V2's 3 % breaks it.
    let w = deliveries(&cfg, (10_000, 200), (10_000, 300));
    let ev = judge(&cfg, &w, true);
    let g = success_gate(&ev).unwrap();
    assert!((g.threshold - 0.99).abs() < 1e-9, "{g:?}");
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert!(
        g.reason.contains(
            "(bound: success_min 0.9900, stricter than V1 failures 0.0200 + margin 0.0020)"
        ),
        "{}",
        g.reason
    );
    // At 100 % the minimum alone judges, and says there was no V1.
    let w = deliveries(&cfg, (0, 0), (10_000, 50));
    let ev = judge(&cfg, &w, false);
    let g = success_gate(&ev).unwrap();
    assert_eq!(g.status, GateStatus::Green, "{g:?}");
    assert!(
        g.reason
            .ends_with("(bound: success_min 0.9900; no V1 traffic to compare with)"),
        "{}",
        g.reason
    );
    // Without success_vs_v1 the gate is what it always was: absolute.
    let cfg = webhooks("success_min = 0.99");
    let w = deliveries(&cfg, (10_000, 10), (10_000, 80));
    let g = judge(&cfg, &w, true);
    let g = success_gate(&g).unwrap();
    assert_eq!((g.status, g.threshold), (GateStatus::Green, 0.99));
    assert!(!g.reason.contains("bound"), "{}", g.reason);
}

#[test]
fn the_sequential_judge_counts_the_journey_against_the_v1_bound() {
    let cfg = webhooks("success_vs_v1 = 0.002");
    let w = deliveries(&cfg, (10_000, 10), (10_000, 300));
    let ev = judge_sequentially(&cfg, &w);
    let g = success_gate(&ev).unwrap();
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    let e = g.evidence.as_ref().expect("sequential evidence");
    assert_eq!(e.verdict, Verdict::Breach);
    // The share it counts against: V1's 0.1 % + 0.2 %.
    assert!((e.limit - 0.003).abs() < 1e-9, "{e:?}");
    assert!(
        g.reason
            .contains("bound: V1 failures 0.0010 + margin 0.0020"),
        "{}",
        g.reason
    );
    // As V1 fails: no breach.
    let w = deliveries(&cfg, (10_000, 300), (10_000, 300));
    let ev = judge_sequentially(&cfg, &w);
    assert_ne!(success_gate(&ev).unwrap().status, GateStatus::Red);
}

#[test]
fn a_bad_margin_is_refused_with_its_key() {
    for bad in ["1.5", "0", "-0.01"] {
        let text = format!(
            "{MINIMAL}[[journeys]]\nname = \"webhooks\"\npath_prefix = \"/webhooks\"\nsuccess_vs_v1 = {bad}\n"
        );
        let e = Config::parse(&text, "t").unwrap_err().to_string();
        assert!(e.contains("journeys[0].success_vs_v1"), "{bad}: {e}");
        assert!(e.contains("above 0 and at most 1"), "{bad}: {e}");
    }
}

// ===== revenue per user =====

const PAGE_VIEW: usize = 0;
const CREDITS: usize = 1;

fn shop(gates: &str) -> Config {
    let text = format!(
        "{MINIMAL}[beacons]\nnames = [\"page_view\", \"credits_bought\"]\n[gates]\n{gates}\n"
    );
    Config::parse(&text, "t").unwrap()
}

/// Per variant `(users, payers, cents per payer)`: every user sends a page
/// view, the first `payers` of them one purchase each.
fn purchases(cfg: &Config, v1: (u64, u64, u64), v2: (u64, u64, u64)) -> Window {
    let mut w = Window::empty_with(cfg.journeys.len(), cfg.beacons.names.len());
    w.duration_ms = 300_000;
    for (v, (users, payers, cents)) in [(Variant::V1, v1), (Variant::V2, v2)] {
        // Distinct keys per variant: the index, its variant in the high bits.
        let key = |i: u64| xxhash_rust::xxh3::xxh3_64(&(i | (v as u64) << 48).to_le_bytes());
        for i in 0..users {
            w.beacon_users.of_mut(PAGE_VIEW, v).insert(key(i));
        }
        for i in 0..payers {
            w.beacon_users.of_mut(CREDITS, v).insert(key(i));
        }
        let b = &mut w.beacons[CREDITS * 2 + v as usize];
        b.counts[crate::telemetry::beacons::BeaconType::Revenue as usize] = payers;
        b.revenue = payers * cents;
    }
    w
}

fn revenue_gate(ev: &Evaluation) -> Option<&GateResult> {
    ev.gates
        .iter()
        .find(|g| g.key() == "revenue/credits_bought")
}

#[test]
fn revenue_figures_are_per_user_and_the_gate_tests_the_paying_share() {
    let cfg = shop("revenue_per = \"credits_bought\"\nrevenue_max_drop = 0.05");
    // Same shop on both sides: 30 % of 2,000 users pay 12.50.
    let same = purchases(&cfg, (2_000, 600, 1_250), (2_000, 600, 1_250));
    let ev = judge(&cfg, &same, true);
    let r2 = &ev.v2.revenue[0];
    assert_eq!(
        (r2.name.as_str(), r2.purchases, r2.revenue),
        ("credits_bought", 600, 750_000)
    );
    // The user counts are linear-counting estimates, within a few users.
    assert!(
        r2.users.abs_diff(2_000) < 40 && r2.payers.abs_diff(600) < 15,
        "{r2:?}"
    );
    let g = revenue_gate(&ev).expect("a revenue gate");
    assert_eq!(g.status, GateStatus::Green, "{g:?}");
    let per_user = 750_000.0 / r2.users as f64;
    assert!((g.value.unwrap() - per_user).abs() < 1e-9, "{g:?}");

    // Half as many users pay on V2: revenue per user halves, and the paying
    // share is significantly lower. RED.
    let fewer = purchases(&cfg, (2_000, 600, 1_250), (2_000, 300, 1_250));
    let ev = judge(&cfg, &fewer, true);
    let g = revenue_gate(&ev).unwrap();
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    assert!(g.p_value.is_some_and(|p| p < 1e-6), "{g:?}");

    // As many pay, but less each: the value shows it, the test (a share of
    // users) does not, so the window judge does not call it a breach.
    let cheaper = purchases(&cfg, (2_000, 600, 1_250), (2_000, 600, 600));
    let ev = judge(&cfg, &cheaper, true);
    let g = revenue_gate(&ev).unwrap();
    assert!(g.value.unwrap() < g.threshold * 0.6, "{g:?}");
    assert_eq!(g.status, GateStatus::Green, "{g:?}");
    assert!(g.reason.contains("not significant"), "{}", g.reason);

    // Too few users on V2: insufficient data.
    let few = purchases(&cfg, (2_000, 600, 1_250), (30, 9, 1_250));
    let g = judge(&cfg, &few, true);
    assert_eq!(revenue_gate(&g).unwrap().status, GateStatus::Yellow);
}

#[test]
fn revenue_is_reported_without_a_gate_and_at_full_weight() {
    let cfg = shop("");
    let w = purchases(&cfg, (1_000, 100, 1_000), (1_000, 120, 1_000));
    let ev = judge(&cfg, &w, true);
    assert!(revenue_gate(&ev).is_none());
    assert_eq!(ev.v1.revenue.len(), 1);
    let lines = crate::control::report::revenue_lines(&ev.v1, &ev.v2);
    let (r1, r2) = (&ev.v1.revenue[0], &ev.v2.revenue[0]);
    let (a, b) = (r1.per_user().unwrap(), r2.per_user().unwrap());
    assert_eq!(
        lines,
        [format!(
            "Revenue per user (credits_bought): V1 {a:.2}, V2 {b:.2} (V2/V1 {:.1} %); \
             users who paid: V1 {} of {}, V2 {} of {}",
            b / a * 100.0,
            r1.payers,
            r1.users,
            r2.payers,
            r2.users
        )]
    );
    assert!((b / a - 1.2).abs() < 0.05, "{a} {b}");
    // At 100 % the figures are still there (V2's), the gate is not.
    let cfg = shop("revenue_per = \"credits_bought\"");
    let w = purchases(&cfg, (0, 0, 0), (1_000, 120, 1_000));
    let ev = judge(&cfg, &w, false);
    assert!(revenue_gate(&ev).is_none());
    assert_eq!(ev.v2.revenue[0].revenue, 120_000);
    let line = &crate::control::report::revenue_lines(&ev.v1, &ev.v2)[0];
    assert!(line.contains("V1 –, V2 1"), "{line}");
    // No revenue event and no gate: no figures, no line.
    let quiet = shop("");
    let ev = judge(&quiet, &purchases(&quiet, (100, 0, 0), (100, 0, 0)), true);
    assert!(ev.v2.revenue.is_empty());
}

#[test]
fn revenue_keys_are_checked() {
    for (gates, key) in [
        ("revenue_per = \"tips\"", "gates.revenue_per"),
        (
            "revenue_per = \"credits_bought\"\nrevenue_max_drop = 1.0",
            "gates.revenue_max_drop",
        ),
        ("revenue_max_drop = -0.1", "gates.revenue_max_drop"),
    ] {
        let text = format!(
            "{MINIMAL}[beacons]\nnames = [\"page_view\", \"credits_bought\"]\n[gates]\n{gates}\n"
        );
        let e = Config::parse(&text, "t").unwrap_err().to_string();
        assert!(e.contains(key), "{gates}: {e}");
    }
}

#[test]
fn the_sequential_judge_counts_payers_per_user_seen() {
    let cfg = shop("revenue_per = \"credits_bought\"");
    let fewer = purchases(&cfg, (2_000, 600, 1_250), (2_000, 300, 1_250));
    let ev = judge_sequentially(&cfg, &fewer);
    let g = revenue_gate(&ev).unwrap();
    assert_eq!(g.status, GateStatus::Red, "{g:?}");
    let e = g.evidence.as_ref().expect("sequential evidence");
    assert_eq!((e.verdict, e.limit), (Verdict::Breach, 0.95));
    assert!(
        g.reason.starts_with("users who paid per user seen: V2 "),
        "{}",
        g.reason
    );
    // The value stays revenue per user, reported beside the verdict.
    assert!((g.value.unwrap() - ev.v2.revenue[0].per_user().unwrap()).abs() < 1e-9);
    // The same shop on both sides is no breach (one tick cannot show inside
    // a 5 % margin yet: YELLOW until the phase has the evidence).
    let same = purchases(&cfg, (2_000, 600, 1_250), (2_000, 600, 1_250));
    let ev = judge_sequentially(&cfg, &same);
    let e = revenue_gate(&ev).unwrap().evidence.clone().unwrap();
    assert_ne!(e.verdict, Verdict::Breach, "{e:?}");
}
