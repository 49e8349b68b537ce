//! The seed rules judged per journey and per user: a journey's failures
//! against V1's ("no increase above baseline"), beside or instead of an
//! absolute minimum.

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

fn judge(cfg: &Config, w: &Window, comparative: bool) -> Evaluation {
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
fn a_bad_margin_is_refused_with_its_key() {
    let text = format!(
        "{MINIMAL}[[journeys]]\nname = \"webhooks\"\npath_prefix = \"/webhooks\"\nsuccess_vs_v1 = 1.5\n"
    );
    let e = Config::parse(&text, "t").unwrap_err().to_string();
    assert!(e.contains("journeys[0].success_vs_v1"), "{e}");
}
