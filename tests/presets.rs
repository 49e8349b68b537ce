//! The two shipped plans in `config/` against the seeds they come from,
//! phase by phase: P95 gate, hold, V2 weight, approval (and its waiver),
//! and how long a breach may last before it rolls back; the seeds' other
//! KPIs where the plan gates them; and `rollgate check` accepts each file as
//! shipped.

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::process::run_bin;
use rollgate::config::{PromotionWindow, Step};
use rollgate::Config;

/// One phase as the seed writes it.
struct Want {
    name: &'static str,
    weight_pct: f64,
    /// `None`: the last phase without a hold of its own (uses `full_sustain`).
    hold: Option<Duration>,
    p95_ms: f64,
    approval: Option<&'static str>,
    waived_if_green: bool,
}

const H: u64 = 3600;
const M: u64 = 60;

fn preset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

fn load(name: &str) -> Config {
    Config::load(&preset(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_phases(file: &str, cfg: &Config, want: &[Want]) {
    let phases = &cfg.rollout.phases;
    assert_eq!(phases.len(), want.len(), "{file}: phases");
    for (p, w) in phases.iter().zip(want) {
        let at = format!("{file}, phase {}", w.name);
        assert_eq!(p.name, w.name, "{at}: name");
        assert_eq!(p.weight.percent(), w.weight_pct, "{at}: weight");
        match w.hold {
            Some(h) => assert_eq!(p.hold, h, "{at}: hold"),
            None => assert_eq!(
                p.hold, cfg.rollout.full_sustain,
                "{at}: hold (full_sustain)"
            ),
        }
        assert_eq!(p.p95_ms, w.p95_ms, "{at}: P95 gate");
        assert_eq!(p.approval.as_deref(), w.approval, "{at}: approval");
        assert_eq!(
            p.approval_waived_if_green, w.waived_if_green,
            "{at}: approval waived if GREEN"
        );
    }
}

fn check_passes(file: &str) {
    let (status, out) = run_bin(&["check"], &preset(file));
    assert!(status.success(), "rollgate check {file}: {status}\n{out}");
}

/// Seed 000: 5 % 6 h, 25 % 12 h (CFO sign-off, Stripe live), 50 % 12 h, then
/// the full cutover with CEO approval required; P95 <= 120 ms and 5xx <=
/// 0.5 % in every phase; "SLO breach >= 30 minutes: immediate rollback";
/// "Canary duration 30h (6+12+12)", so no promotion window stretches it.
#[test]
fn the_30_hour_plan_is_seed_000_as_written() {
    let file = "plan-30h.toml";
    let cfg = load(file);
    let phase = |name, weight_pct, hold: Option<u64>, approval| Want {
        name,
        weight_pct,
        hold: hold.map(Duration::from_secs),
        p95_ms: 120.0,
        approval,
        waived_if_green: false,
    };
    assert_phases(
        file,
        &cfg,
        &[
            phase("canary-5", 5.0, Some(6 * H), None),
            phase("canary-25", 25.0, Some(12 * H), Some("cfo")),
            phase("canary-50", 50.0, Some(12 * H), None),
            phase("full", 100.0, None, Some("ceo")),
        ],
    );
    let r = &cfg.rollout;
    assert_eq!(r.red_rollback_after, Duration::from_secs(30 * M));
    assert_eq!(r.error_rate_max, 0.005);
    assert_eq!(r.promotion_window, PromotionWindow::Always);
    let holds: Duration = r.phases[..3].iter().map(|p| p.hold).sum();
    assert_eq!(holds, Duration::from_secs(30 * H), "6 + 12 + 12 h");
    // "Revenue: track B2C + B2B", a signal in every report (not a gate).
    for name in ["credits_bought", "provider_fees"] {
        assert!(cfg.beacons.index(name).is_some(), "{file}: beacon {name}");
    }
    assert_eq!(cfg.gates.revenue_per, None, "{file}: a signal, not a gate");
    check_passes(file);
}

/// Seed 003: T+0 5 %, T+90 min 25 %, T+210 min 50 %, T+450 min 100 %; P95
/// <= 130 ms at 5-25 %, <= 120 ms for 50 % -> 100 %, sustained >= 2 h at
/// 100 %; 50 % -> 100 % pre-approved when all GREEN (else the CEO);
/// rollback on 5 consecutive minutes of threshold breach, P95 > 160 ms or
/// more than 5 payment failures in a row.
#[test]
fn the_same_day_plan_is_seed_003_as_written() {
    let file = "plan-same-day.toml";
    let cfg = load(file);
    let phase = |name, weight_pct, hold_min: u64, p95_ms, approval, waived_if_green| Want {
        name,
        weight_pct,
        hold: Some(Duration::from_secs(hold_min * M)),
        p95_ms,
        approval,
        waived_if_green,
    };
    assert_phases(
        file,
        &cfg,
        &[
            phase("canary-5", 5.0, 90, 130.0, None, false),
            phase("canary-25", 25.0, 120, 130.0, Some("cfo"), false),
            phase("canary-50", 50.0, 240, 120.0, None, false),
            phase("full", 100.0, 120, 120.0, Some("ceo"), true),
        ],
    );
    let r = &cfg.rollout;
    assert_eq!(r.red_rollback_after, Duration::from_secs(5 * M));
    assert_eq!(r.p95_rollback_ms, 160.0);
    assert_eq!(r.consecutive_payment_failures, 5);
    assert_eq!(r.error_rate_max, 0.005);
    assert_eq!(r.payment_success_min, 0.995);
    let starts: Vec<u64> = r.phases[..3]
        .iter()
        .scan(0, |t, p| {
            *t += p.hold.as_secs() / M;
            Some(*t)
        })
        .collect();
    assert_eq!(starts, [90, 210, 450], "T+ minutes of each step-up");
    // The additional KPIs: journeys' success, client errors, funnels,
    // first-result time and the error budget.
    let limits = |j: &str| {
        let id = cfg
            .journeys
            .by_name(j)
            .unwrap_or_else(|| panic!("journey {j}"));
        cfg.journey_limits[id.index()].clone()
    };
    assert_eq!(limits("payout_job").success_min, Some(0.999));
    assert_eq!(limits("provider_dashboard").p95_ms, Some(120.0));
    let webhooks = limits("webhooks");
    assert_eq!(
        (webhooks.success_min, webhooks.success_vs_v1),
        (None, Some(0.002))
    );
    let g = &cfg.gates;
    assert_eq!(
        g.js_errors_per,
        cfg.beacons.index("page_view").map(usize::from)
    );
    assert_eq!(g.js_errors_max_increase, 0.10);
    assert_eq!(g.error_budget_max, 0.05);
    assert!(g.slo.is_some(), "{file}: the error budget needs an SLO");
    let funnel = |name: &str| {
        g.funnels
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{file}: funnel {name}"))
    };
    assert_eq!(funnel("registration_completion").max_drop, 0.03);
    assert_eq!(funnel("search_ctr").max_drop, 0.05);
    let conversion = funnel("application_conversion");
    assert_eq!(conversion.max_drop, 0.03);
    let journey = |j: &str| Step::Journey(cfg.journeys.by_name(j).unwrap().index());
    assert_eq!(
        (conversion.numerator, conversion.denominator),
        (journey("application_submit"), journey("application_start"))
    );
    assert_eq!(g.timings.len(), 1);
    assert_eq!(
        (g.timings[0].name.as_str(), g.timings[0].max_increase),
        ("first_result_ms", 0.05)
    );
    check_passes(file);
}
