//! Pure-core tests: every decision path driven with synthetic evaluations and a fake clock.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::config::Config;
use crate::control::gates::{self, GateContext, GateResult, JourneyKpi, VariantKpi};
use crate::control::state::{Action, RolloutState, StateName, Trigger};
use crate::control::tripwire::Trip;
use crate::routing::journeys::JourneyKind;
use crate::routing::Variant;
use crate::telemetry::{CellCounts, Window};

// ===== configs =====

pub(crate) const BASE: &str = r#"
[server]
listen = "127.0.0.1:0"
[upstreams]
v1 = "http://127.0.0.1:1"
v2 = "http://127.0.0.1:2"
[[journeys]]
name = "search"
path_prefix = "/search"
[[journeys]]
name = "payments"
path_prefix = "/api/payments"
kind = "payment"
"#;

pub(crate) const ALL_FLAGS: &str =
    "flags = { SHADOW_PASS_24H = 1, A2_V26_COMPLIANT = 1, EVIDENCE_BUNDLE = 1 }";

/// Three live phases, no approvals, short holds.
pub(crate) const PLAIN_PHASES: &str = r#"
[[rollout.phases]]
name = "canary-5"
weight = 5
hold = "10m"
headers = { x-payment-mode = "test" }
[[rollout.phases]]
name = "canary-25"
weight = 25
hold = "10m"
headers = { x-payment-mode = "live" }
[[rollout.phases]]
name = "full"
weight = 100
hold = "20m"
p95_ms = 120
headers = { x-payment-mode = "live" }
"#;

/// The seed schedule with its approvals: `cfo` to enter 25 %, `ceo` for 100 % unless all GREEN.
const SEED_PHASES: &str = r#"
[[rollout.phases]]
name = "canary-5"
weight = 5
hold = "10m"
headers = { x-payment-mode = "test" }
[[rollout.phases]]
name = "canary-25"
weight = 25
hold = "10m"
approval = "cfo"
headers = { x-payment-mode = "live" }
[[rollout.phases]]
name = "canary-50"
weight = 50
hold = "10m"
p95_ms = 120
[[rollout.phases]]
name = "full"
weight = 100
hold = "20m"
p95_ms = 120
approval = "ceo"
approval_waived_if_green = true
"#;

/// A shadow phase, then two live ones.
const SHADOW_FIRST: &str = r#"
[[rollout.phases]]
name = "shadow"
weight = 0
mode = "shadow"
hold = "10m"
[[rollout.phases]]
name = "canary-5"
weight = 5
hold = "10m"
[[rollout.phases]]
name = "full"
weight = 100
"#;

/// `rollout_keys` go under `[rollout]`, then the phases.
pub(crate) fn config(rollout_keys: &str, phases: &str) -> Config {
    let text = format!("{BASE}\n[rollout]\nmin_samples = 50\n{rollout_keys}\n{phases}");
    Config::parse(&text, "t").unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

fn plain() -> Config {
    config(ALL_FLAGS, PLAIN_PHASES)
}

// ===== synthetic evaluations =====

const TICK: TimeDelta = TimeDelta::seconds(15);

fn gate(name: &str, journey: Option<&str>, status: GateStatus) -> GateResult {
    let reason = match status {
        GateStatus::Green => "ok".to_string(),
        GateStatus::Yellow => "insufficient data: 10 of 50 samples".to_string(),
        GateStatus::Red => "breaches threshold".to_string(),
    };
    GateResult {
        name: name.parse().expect("a gate name"),
        journey: journey.map(String::from),
        status,
        value: Some(1.0),
        threshold: 1.0,
        samples: if status == GateStatus::Yellow {
            10
        } else {
            1000
        },
        reason,
        p_value: None,
        recovery: None,
        evidence: None,
    }
}

fn kpi(name: &str, kind: JourneyKind, v2_p95: f64, v2_requests: u64) -> JourneyKpi {
    JourneyKpi {
        journey: name.into(),
        kind,
        v1: VariantKpi {
            requests: 10_000,
            p95_ms: Some(60.0),
            ..Default::default()
        },
        v2: VariantKpi {
            requests: v2_requests,
            p95_ms: Some(v2_p95),
            ..Default::default()
        },
    }
}

/// Every gate GREEN, P95 well below every limit.
fn green() -> Evaluation {
    Evaluation {
        window_ms: 300_000,
        gates: vec![
            gate("error_rate", None, GateStatus::Green),
            gate("latency_p95", Some("search"), GateStatus::Green),
            gate("payment_success", Some("payments"), GateStatus::Green),
        ],
        journeys: vec![
            kpi("search", JourneyKind::Normal, 60.0, 1000),
            kpi("payments", JourneyKind::Payment, 60.0, 1000),
        ],
        ..Default::default()
    }
}

/// `green()` with one gate (by key) set to `status`.
fn with(key: &str, status: GateStatus) -> Evaluation {
    let mut ev = green();
    let g = ev
        .gates
        .iter_mut()
        .find(|g| g.key() == key)
        .unwrap_or_else(|| panic!("no gate {key}"));
    *g = gate(g.name.as_str(), g.journey.clone().as_deref(), status);
    ev
}

fn yellow() -> Evaluation {
    with("latency_p95/search", GateStatus::Yellow)
}

fn red() -> Evaluation {
    with("latency_p95/search", GateStatus::Red)
}

/// `green()` with the V2 P95 of `search` at `ms` over `requests` samples.
fn slow(ms: f64, requests: u64) -> Evaluation {
    let mut ev = green();
    ev.journeys[0].v2.p95_ms = Some(ms);
    ev.journeys[0].v2.requests = requests;
    ev
}

// ===== fake clock driver =====

/// Monday 2025-03-03 10:00:00 UTC; the tests use UTC as local time.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 3, 10, 0, 0).unwrap()
}

struct Run<'a> {
    core: Core<'a>,
    s: RolloutState,
    now: DateTime<Utc>,
}

impl<'a> Run<'a> {
    fn new(cfg: &'a Config) -> Self {
        Self::at(cfg, t0())
    }

    fn at(cfg: &'a Config, now: DateTime<Utc>) -> Self {
        Run {
            core: Core { cfg: &cfg.rollout },
            s: RolloutState::new(cfg.rollout.flags.clone()),
            now,
        }
    }

    /// Started and in phase 0.
    fn started(cfg: &'a Config) -> Self {
        let mut r = Self::new(cfg);
        let out = r.cmd(Command::Start).unwrap();
        assert_eq!(action(&out), Action::Go, "{out:?}");
        r
    }

    fn local(&self) -> NaiveTime {
        self.now.time()
    }

    /// One tick at `now`, then the clock moves on by one tick.
    fn tick(&mut self, ev: &Evaluation) -> Outcome {
        let local = self.local();
        let out = self.core.tick(&mut self.s, ev, self.now, local);
        self.now += TICK;
        out
    }

    /// `n` ticks with the same evaluation.
    fn ticks(&mut self, ev: &Evaluation, n: usize) -> Vec<Outcome> {
        (0..n).map(|_| self.tick(ev)).collect()
    }

    fn cmd(&mut self, c: Command) -> Result<Outcome, CommandError> {
        self.core.command(&mut self.s, c, self.now)
    }

    fn phase(&self) -> Option<&str> {
        self.s
            .phase_index
            .map(|i| self.core.cfg.phases[i].name.as_str())
    }

    /// Runs phase `idx` GREEN for its whole hold and checks the step-up.
    fn pass_phase(&mut self) -> Outcome {
        let idx = self.s.phase_index.unwrap();
        let n = ticks_in(self.core.cfg.phases[idx].hold);
        for out in self.ticks(&green(), n) {
            assert_eq!(action(&out), Action::None, "{out:?}");
        }
        self.tick(&green())
    }
}

fn ticks_in(d: std::time::Duration) -> usize {
    (d.as_secs() / TICK.num_seconds() as u64) as usize
}

fn action(out: &Outcome) -> Action {
    out.decision.as_ref().expect("every step decides").action
}

fn reason(out: &Outcome) -> &str {
    &out.decision.as_ref().expect("every step decides").reason
}

fn reports(outs: &[Outcome]) -> usize {
    outs.iter().filter(|o| o.report).count()
}

fn header(cfg: &Config, idx: usize, name: &str) -> Option<String> {
    cfg.rollout.phases[idx]
        .headers
        .iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, v)| v.to_str().unwrap().to_string())
}

fn approve(role: &str, by: &str) -> Command {
    Command::Approve {
        role: role.into(),
        by: by.into(),
    }
}

fn incident(severity: u8, summary: &str) -> Command {
    Command::Incident {
        severity,
        summary: summary.into(),
    }
}

// ===== waiting =====

#[test]
fn not_started_is_none() {
    let cfg = plain();
    let mut r = Run::new(&cfg);
    for out in r.ticks(&green(), 10) {
        assert_eq!(action(&out), Action::None);
        assert!(reason(&out).contains("waiting"), "{}", reason(&out));
        assert!(!out.report && !out.weights_changed && !out.promoted);
    }
    assert_eq!(r.s.state, StateName::Waiting);
    assert_eq!(r.s.weight_v2, 0.0);
    assert_eq!(r.s.phase_index, None);
    assert_eq!(r.s.last_decision, None);
}

#[test]
fn started_with_a_flag_at_zero_holds_naming_it() {
    let cfg = config(
        "flags = { SHADOW_PASS_24H = 1, A2_V26_COMPLIANT = 1, EVIDENCE_BUNDLE = 0 }",
        PLAIN_PHASES,
    );
    let mut r = Run::new(&cfg);
    let out = r.cmd(Command::Start).unwrap();
    assert_eq!(action(&out), Action::Hold);
    assert_eq!(reason(&out), "start conditions: EVIDENCE_BUNDLE = 0");
    assert!(out.report && !out.weights_changed);
    assert!(r.s.started);
    let outs = r.ticks(&green(), 20);
    assert!(outs.iter().all(|o| action(o) == Action::Hold
        && reason(o).starts_with("start conditions: EVIDENCE_BUNDLE = 0")));
    assert_eq!(reports(&outs), 0, "the hold was reported when it started");
    assert_eq!(r.s.state, StateName::Waiting);
    assert_eq!(r.s.weight_v2, 0.0);
    assert_eq!(r.s.phase_index, None);

    // A flag that is absent counts as 0 and is named too.
    let cfg = config("flags = { SHADOW_PASS_24H = 1 }", PLAIN_PHASES);
    let mut r = Run::new(&cfg);
    let out = r.cmd(Command::Start).unwrap();
    assert_eq!(
        reason(&out),
        "start conditions: A2_V26_COMPLIANT = 0, EVIDENCE_BUNDLE = 0"
    );

    // Setting the flags lets the next tick start.
    r.cmd(Command::SetFlags(BTreeMap::from([
        ("A2_V26_COMPLIANT".into(), 1),
        ("EVIDENCE_BUNDLE".into(), 1),
    ])))
    .unwrap();
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Go, "{out:?}");
    assert_eq!(r.phase(), Some("canary-5"));
}

#[test]
fn all_flags_set_go_into_phase_zero_with_its_weight_and_headers() {
    let cfg = plain();
    let mut r = Run::new(&cfg);
    let out = r.cmd(Command::Start).unwrap();
    assert_eq!(action(&out), Action::Go);
    assert_eq!(reason(&out), "start conditions met: entering canary-5");
    assert!(out.report && out.weights_changed);
    assert_eq!(out.stepped_from, None);
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.phase_index, Some(0));
    assert_eq!(r.s.weight_v2, 5.0);
    assert_eq!(r.s.phase_started_at, Some(t0()));
    assert_eq!(header(&cfg, 0, "x-payment-mode").as_deref(), Some("test"));
    assert_eq!(header(&cfg, 1, "x-payment-mode").as_deref(), Some("live"));

    // auto_start: `started` set by the task, the first tick starts.
    let mut r = Run::new(&cfg);
    r.s.started = true;
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Go);
    assert!(out.report && out.weights_changed);
    assert_eq!(r.s.weight_v2, 5.0);
}

#[test]
fn a_shadow_phase_needs_no_flags_and_sets_shadow_pass_when_it_passes() {
    let cfg = config("flags = { A2_V26_COMPLIANT = 1 }", SHADOW_FIRST);
    let mut r = Run::new(&cfg);
    let out = r.cmd(Command::Start).unwrap();
    assert_eq!(action(&out), Action::Go);
    assert_eq!(r.s.state, StateName::Shadow);
    assert_eq!(r.s.weight_v2, 0.0);
    // Not armed while nothing goes to V2: a slow V2 in shadow does not roll back.
    let out = r.tick(&slow(500.0, 1000));
    assert_eq!(action(&out), Action::None, "{out:?}");
    // A non-GREEN shadow holds, but the state stays `shadow`.
    assert_eq!(action(&r.tick(&yellow())), Action::Hold);
    assert_eq!(r.s.state, StateName::Shadow);
    r.ticks(&green(), ticks_in(cfg.rollout.phases[0].hold));
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Hold);
    assert_eq!(reason(&out), "start conditions: EVIDENCE_BUNDLE = 0");
    assert_eq!(r.s.flags.get("SHADOW_PASS_24H"), Some(&1));
    assert_eq!(r.s.weight_v2, 0.0);
    r.cmd(Command::SetFlags(BTreeMap::from([(
        "EVIDENCE_BUNDLE".into(),
        1,
    )])))
    .unwrap();
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Go);
    assert_eq!(out.stepped_from, Some(0));
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.weight_v2, 5.0);
}

// ===== in a phase =====

#[test]
fn yellow_insufficient_data_holds_and_never_promotes() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let outs = r.ticks(&yellow(), 3 * ticks_in(cfg.rollout.phases[0].hold));
    for out in &outs {
        assert_eq!(action(out), Action::Hold);
        assert_eq!(
            reason(out),
            "gate latency_p95 (search): YELLOW insufficient data: 10 of 50 samples"
        );
        assert!(!out.weights_changed && out.stepped_from.is_none());
    }
    assert_eq!(reports(&outs), 1);
    assert_eq!(r.s.state, StateName::Holding);
    assert_eq!(r.s.phase_index, Some(0));
    assert_eq!(r.s.weight_v2, 5.0);
    assert_eq!(r.s.green_since, None);
    // YELLOW is not RED: no sustained-RED rollback however long it lasts.
    assert!(r.s.red_since.is_empty());
}

#[test]
fn insufficient_data_from_real_gates_holds() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    // 20 V2 requests per journey, 50 needed.
    let w = window(&cfg, |_, v| {
        if v == Variant::V2 {
            (20, 50)
        } else {
            (1000, 50)
        }
    });
    for _ in 0..ticks_in(cfg.rollout.phases[0].hold) + 5 {
        let ev = real_eval(&cfg, &r.s, r.now, &w);
        let out = r.tick(&ev);
        assert_eq!(action(&out), Action::Hold, "{out:?}");
        assert!(
            reason(&out).contains("insufficient data: 20 of 50 samples"),
            "{}",
            reason(&out)
        );
    }
    assert_eq!(r.s.phase_index, Some(0));
}

#[test]
fn green_before_the_hold_is_none_then_go_to_the_next_phase() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let n = ticks_in(cfg.rollout.phases[0].hold);
    assert_eq!(n, 40);
    let first = r.now;
    for (i, out) in r.ticks(&green(), n).iter().enumerate() {
        assert_eq!(action(out), Action::None, "tick {i}: {out:?}");
        assert!(
            reason(out).starts_with("all gates GREEN for"),
            "{}",
            reason(out)
        );
        assert!(!out.report && !out.weights_changed);
    }
    assert_eq!(r.s.green_since, Some(first));
    assert_eq!(r.s.weight_v2, 5.0);
    // Exactly one hold after the first GREEN tick.
    assert_eq!(r.now - first, TimeDelta::minutes(10));
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Go, "{out:?}");
    assert_eq!(
        reason(&out),
        "all gates GREEN for 10m: canary-5 -> canary-25 (25%)"
    );
    assert_eq!(out.stepped_from, Some(0));
    assert!(out.report && out.weights_changed && !out.promoted);
    assert_eq!(r.s.phase_index, Some(1));
    assert_eq!(r.s.weight_v2, 25.0);
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.phase_started_at, Some(r.now - TICK));
    assert_eq!(r.s.green_since, None, "the new phase starts its own hold");
    assert_eq!(r.s.last_decision.as_ref().unwrap().action, Action::Go);
}

#[test]
fn a_single_non_green_tick_resets_the_hold_clock() {
    let cfg = plain();
    for interruption in [
        yellow(),
        red(),
        with("payment_success/payments", GateStatus::Red),
    ] {
        let mut r = Run::started(&cfg);
        let n = ticks_in(cfg.rollout.phases[0].hold);
        r.ticks(&green(), n); // one tick short of the hold
        assert!(r.s.green_since.is_some());
        assert_eq!(action(&r.tick(&interruption)), Action::Hold);
        assert_eq!(r.s.green_since, None);
        let restart = r.now;
        for out in r.ticks(&green(), n) {
            assert_eq!(action(&out), Action::None, "{out:?}");
        }
        assert_eq!(r.s.green_since, Some(restart));
        assert_eq!(r.s.phase_index, Some(0));
        assert_eq!(r.s.state, StateName::Canary, "GREEN again leaves `holding`");
        assert_eq!(action(&r.tick(&green())), Action::Go);
        assert_eq!(r.s.phase_index, Some(1));
    }
}

#[test]
fn a_gate_flickering_green_red_every_tick_never_promotes_and_does_not_flap() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let hold = ticks_in(cfg.rollout.phases[0].hold);
    let mut outs = Vec::new();
    // Three hold periods, well past red_rollback_after (5m) as well.
    for i in 0..3 * hold {
        let ev = if i % 2 == 0 { green() } else { red() };
        outs.push(r.tick(&ev));
    }
    for out in &outs {
        assert!(
            matches!(action(out), Action::None | Action::Hold),
            "{out:?}"
        );
        assert!(!out.weights_changed && out.stepped_from.is_none() && !out.promoted);
    }
    assert_eq!(
        reports(&outs),
        1,
        "one report for the hold, not one per flicker"
    );
    assert_eq!(r.s.phase_index, Some(0));
    assert_eq!(r.s.weight_v2, 5.0);
    // A RED interrupted every other tick is not "RED for 5 consecutive minutes".
    assert_ne!(r.s.state, StateName::RolledBack);
}

#[test]
fn a_p95_hovering_at_its_threshold_holds_steadily_and_never_goes_red() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    // 134 ms is beyond 130 but inside the 5 % rollback band; 127 ms is inside
    // 130 but not inside the 5 % promote band.
    let above = window(&cfg, |j, _| (1000, if j == 0 { 134 } else { 50 }));
    let below = window(&cfg, |j, _| (1000, if j == 0 { 127 } else { 50 }));
    let mut outs = Vec::new();
    let mut statuses = Vec::new();
    // Well past red_rollback_after (5m): a hovering value is not a breach.
    for i in 0..2 * ticks_in(cfg.rollout.phases[0].hold) {
        let ev = real_eval(&cfg, &r.s, r.now, if i % 2 == 0 { &above } else { &below });
        statuses.push(
            ev.gates
                .iter()
                .find(|g| g.key() == "latency_p95/search")
                .unwrap()
                .status,
        );
        outs.push(r.tick(&ev));
    }
    assert!(
        statuses.iter().all(|s| *s == GateStatus::Yellow),
        "{statuses:?}"
    );
    assert!(outs.iter().all(|o| action(o) == Action::Hold));
    assert_eq!(reports(&outs), 1);
    assert!(r.s.red_since.is_empty());
    assert!(
        reason(outs.last().unwrap()).contains("recovering"),
        "{}",
        reason(outs.last().unwrap())
    );
    assert_eq!(r.s.phase_index, Some(0));
    // Back inside the band: GREEN after the cooldown, and a full hold later the step-up.
    let good = window(&cfg, |_, _| (1000, 50));
    let cooldown = ticks_in(cfg.gates.cooldown);
    let mut steps = 0;
    loop {
        let ev = real_eval(&cfg, &r.s, r.now, &good);
        let out = r.tick(&ev);
        steps += 1;
        if action(&out) == Action::Go {
            break;
        }
        if steps <= cooldown {
            assert_eq!(action(&out), Action::Hold, "{out:?}");
            assert!(reason(&out).contains("cooling down"), "{}", reason(&out));
        } else {
            assert_eq!(action(&out), Action::None, "{out:?}");
        }
    }
    assert_eq!(steps, cooldown + ticks_in(cfg.rollout.phases[0].hold) + 1);
}

// ===== approvals =====

#[test]
fn a_phase_needing_cfo_holds_until_approved() {
    let cfg = config(ALL_FLAGS, SEED_PHASES);
    let mut r = Run::started(&cfg);
    let out = r.pass_phase();
    assert_eq!(action(&out), Action::Hold, "{out:?}");
    assert_eq!(
        reason(&out),
        "approval: canary-25 needs approval by role cfo"
    );
    assert!(out.report);
    assert_eq!(r.s.state, StateName::Holding);
    // Still holding, reported once; another role's approval does not count.
    r.cmd(approve("ceo", "erin")).unwrap();
    let outs = r.ticks(&green(), 100);
    assert!(outs.iter().all(|o| action(o) == Action::Hold));
    assert_eq!(reports(&outs), 0);
    assert_eq!(r.s.weight_v2, 5.0);
    let out = r.cmd(approve("cfo", "dana")).unwrap();
    assert_eq!(out, Outcome::default(), "an approval alone changes nothing");
    assert_eq!(r.s.approvals.last().unwrap().by, "dana");
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Go, "{out:?}");
    assert!(
        reason(&out).ends_with("canary-5 -> canary-25 (25%), approved by dana (cfo)"),
        "{}",
        reason(&out)
    );
    assert_eq!(r.s.weight_v2, 25.0);
    assert_eq!(r.s.state, StateName::Canary);
}

#[test]
fn an_approval_given_in_advance_does_not_hold() {
    let cfg = config(ALL_FLAGS, SEED_PHASES);
    let mut r = Run::started(&cfg);
    r.cmd(approve("cfo", "dana")).unwrap();
    let out = r.pass_phase();
    assert_eq!(action(&out), Action::Go, "{out:?}");
}

#[test]
fn an_approval_waived_if_green_goes_without_it() {
    let cfg = config(ALL_FLAGS, SEED_PHASES);
    let mut r = Run::started(&cfg);
    r.cmd(approve("cfo", "dana")).unwrap();
    assert_eq!(action(&r.pass_phase()), Action::Go);
    assert_eq!(action(&r.pass_phase()), Action::Go);
    assert_eq!(r.phase(), Some("canary-50"));
    let out = r.pass_phase();
    assert_eq!(action(&out), Action::Go, "{out:?}");
    assert!(
        reason(&out).ends_with("canary-50 -> full (100%), ceo approval waived: all GREEN"),
        "{}",
        reason(&out)
    );
    assert!(!r.s.has_approval("ceo"));
    assert_eq!(r.s.weight_v2, 100.0);
}

// ===== promotion window and the final phase =====

#[test]
fn outside_the_promotion_window_holds_until_it_reopens() {
    let cfg = config(
        &format!("{ALL_FLAGS}\npromotion_window = {{ start = \"09:00\", end = \"18:00\" }}"),
        PLAIN_PHASES,
    );
    // Started at 17:55: the 10m hold ends at 18:05, after hours.
    let mut r = Run::at(&cfg, Utc.with_ymd_and_hms(2025, 3, 3, 17, 55, 0).unwrap());
    r.cmd(Command::Start).unwrap();
    let out = r.pass_phase();
    assert_eq!(action(&out), Action::Hold, "{out:?}");
    assert_eq!(
        reason(&out),
        "promotion window: outside it, step-ups resume at 09:00 local"
    );
    assert!(out.report);
    let mut outs = Vec::new();
    while r.local() < NaiveTime::from_hms_opt(9, 0, 0).unwrap()
        || r.now.date_naive() == t0().date_naive()
    {
        outs.push(r.tick(&green()));
    }
    assert!(outs.len() > 1000);
    assert!(outs.iter().all(|o| action(o) == Action::Hold));
    assert_eq!(reports(&outs), 0, "one overnight hold, one report");
    assert_eq!(r.s.weight_v2, 5.0);
    assert_eq!(r.local(), NaiveTime::from_hms_opt(9, 0, 0).unwrap());
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Go, "{out:?}");
    assert_eq!(r.s.weight_v2, 25.0);
}

#[test]
fn inside_the_promotion_window_goes() {
    let cfg = config(
        &format!("{ALL_FLAGS}\npromotion_window = {{ start = \"09:00\", end = \"18:00\" }}"),
        PLAIN_PHASES,
    );
    let mut r = Run::at(&cfg, Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0).unwrap());
    r.cmd(Command::Start).unwrap();
    assert_eq!(action(&r.pass_phase()), Action::Go);
    // A window spanning midnight.
    let cfg = config(
        &format!("{ALL_FLAGS}\npromotion_window = {{ start = \"22:00\", end = \"06:00\" }}"),
        PLAIN_PHASES,
    );
    let mut r = Run::at(&cfg, Utc.with_ymd_and_hms(2025, 3, 3, 23, 30, 0).unwrap());
    r.cmd(Command::Start).unwrap();
    assert_eq!(action(&r.pass_phase()), Action::Go);
    let mut r = Run::at(&cfg, Utc.with_ymd_and_hms(2025, 3, 3, 12, 0, 0).unwrap());
    r.cmd(Command::Start).unwrap();
    let out = r.pass_phase();
    assert_eq!(
        reason(&out),
        "promotion window: outside it, step-ups resume at 22:00 local"
    );
}

#[test]
fn the_final_phase_promotes_after_its_hold() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    assert_eq!(action(&r.pass_phase()), Action::Go);
    let out = r.pass_phase();
    assert_eq!(action(&out), Action::Go);
    assert_eq!(out.stepped_from, Some(1));
    assert_eq!(r.phase(), Some("full"));
    assert_eq!(r.s.weight_v2, 100.0);
    assert_eq!(r.s.state, StateName::Canary);
    let n = ticks_in(cfg.rollout.phases[2].hold);
    assert_eq!(n, 80);
    for out in r.ticks(&green(), n) {
        assert_eq!(action(&out), Action::None);
        assert!(!out.promoted);
    }
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::Promote, "{out:?}");
    assert_eq!(
        reason(&out),
        "all gates GREEN for 20m at 100%: rollout promoted"
    );
    assert!(out.promoted && out.report);
    assert_eq!(out.stepped_from, None);
    assert_eq!(r.s.state, StateName::Promoted);
    assert_eq!(r.s.weight_v2, 100.0);
    // Promoted is terminal for the controller: nothing more happens, even on bad data.
    for ev in [green(), red(), slow(900.0, 5000)] {
        let out = r.tick(&ev);
        assert_eq!(action(&out), Action::None);
        assert!(!out.report && !out.weights_changed && !out.promoted);
    }
    assert_eq!(r.s.state, StateName::Promoted);
    // A Sev-1 after the promotion is recorded, nothing is rolled back.
    assert_eq!(r.cmd(incident(1, "late")).unwrap(), Outcome::default());
    assert_eq!(r.s.weight_v2, 100.0);
}

#[test]
fn a_non_green_tick_in_the_final_phase_restarts_the_sustain() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.pass_phase();
    r.pass_phase();
    r.ticks(&green(), 79);
    assert_eq!(action(&r.tick(&yellow())), Action::Hold);
    let outs = r.ticks(&green(), 80);
    assert!(outs.iter().all(|o| action(o) == Action::None));
    assert_eq!(action(&r.tick(&green())), Action::Promote);
}

// ===== rollback triggers =====

#[test]
fn p95_above_the_hard_limit_rolls_back_within_the_tick() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.ticks(&green(), 5);
    // Exactly at the limit is not above it.
    assert_eq!(action(&r.tick(&slow(160.0, 1000))), Action::None);
    let out = r.tick(&slow(161.5, 1000));
    assert_eq!(action(&out), Action::Rollback, "{out:?}");
    assert!(reason(&out).starts_with("p95_hard"), "{}", reason(&out));
    assert_eq!(
        reason(&out),
        "p95_hard: journey search V2 P95 161.5 ms > 160 ms"
    );
    assert_eq!(
        out.decision.as_ref().unwrap().trigger,
        Some(Trigger::P95Hard)
    );
    assert!(out.report && out.weights_changed);
    assert_eq!(r.s.state, StateName::RolledBack);
    assert_eq!(r.s.weight_v2, 0.0);
    assert_eq!(
        r.s.last_decision.as_ref().unwrap().trigger,
        Some(Trigger::P95Hard)
    );
    // Rolled back stays rolled back.
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::None);
    assert!(reason(&out).contains("rolled back"));
    assert_eq!(r.s.weight_v2, 0.0);
}

#[test]
fn p95_hard_names_the_worst_journey_even_when_gates_are_green() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let mut ev = green();
    ev.journeys[0].v2.p95_ms = Some(170.0);
    ev.journeys[1].v2.p95_ms = Some(250.0);
    let out = r.tick(&ev);
    assert_eq!(
        reason(&out),
        "p95_hard: journey payments V2 P95 250.0 ms > 160 ms"
    );
}

#[test]
fn p95_above_the_limit_below_min_samples_does_not_roll_back() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    // Fewer ticks than the hold: the gates are GREEN, this is only about the trigger.
    let outs = r.ticks(&slow(900.0, 49), 30);
    assert!(outs.iter().all(|o| action(o) != Action::Rollback));
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.weight_v2, 5.0);
    // At min_samples it counts.
    assert_eq!(action(&r.tick(&slow(900.0, 50))), Action::Rollback);
}

#[test]
fn p95_limit_is_configurable() {
    let cfg = config(&format!("{ALL_FLAGS}\np95_rollback_ms = 140"), PLAIN_PHASES);
    let mut r = Run::started(&cfg);
    let out = r.tick(&slow(145.0, 1000));
    assert_eq!(
        reason(&out),
        "p95_hard: journey search V2 P95 145.0 ms > 140 ms"
    );
}

#[test]
fn a_gate_red_for_red_rollback_after_rolls_back() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let first_red = r.now;
    // 5 minutes = 20 ticks of 15 s after the first RED tick.
    for out in r.ticks(&red(), 20) {
        assert_eq!(action(&out), Action::Hold, "{out:?}");
    }
    assert_eq!(r.s.red_since.get("latency_p95/search"), Some(&first_red));
    assert_eq!(r.now - first_red, TimeDelta::minutes(5));
    let out = r.tick(&red());
    assert_eq!(action(&out), Action::Rollback, "{out:?}");
    assert!(
        reason(&out).starts_with("gate_red_sustained"),
        "{}",
        reason(&out)
    );
    assert_eq!(
        reason(&out),
        "gate_red_sustained: gate latency_p95/search RED for 5m (limit 5m)"
    );
    assert_eq!(
        out.decision.as_ref().unwrap().trigger,
        Some(Trigger::GateRedSustained)
    );
    assert!(out.weights_changed && out.report);
    assert_eq!(r.s.weight_v2, 0.0);
    assert_eq!(r.s.state, StateName::RolledBack);
}

#[test]
fn a_split_skew_red_for_red_rollback_after_only_holds() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let mut skewed = green();
    skewed
        .gates
        .push(gate("split_skew", Some("all"), GateStatus::Red));
    // Twice the time a RED latency gate takes to roll back.
    for out in r.ticks(&skewed, 41) {
        assert_ne!(action(&out), Action::Rollback, "{out:?}");
    }
    assert!(r.s.red_since.contains_key("split_skew/all"));
    assert_ne!(r.s.state, StateName::RolledBack);
    assert!(r.s.weight_v2 > 0.0);
    // The same RED on a gate of V2's health does roll back.
    let mut r = Run::started(&cfg);
    let outs = r.ticks(&red(), 21);
    assert_eq!(action(outs.last().unwrap()), Action::Rollback);
}

#[test]
fn red_for_less_or_interrupted_does_not_roll_back() {
    let cfg = plain();
    // RED for 4m45s, then GREEN.
    let mut r = Run::started(&cfg);
    r.ticks(&red(), 20);
    assert_eq!(action(&r.tick(&green())), Action::None);
    assert!(r.s.red_since.is_empty());
    // RED again: the timer starts over.
    let outs = r.ticks(&red(), 20);
    assert!(outs.iter().all(|o| action(o) == Action::Hold));
    // Interrupted by YELLOW (insufficient data), by another gate being the RED one, or by GREEN.
    let mut r = Run::started(&cfg);
    for interruption in [yellow(), with("error_rate", GateStatus::Red), green()] {
        r.ticks(&red(), 19);
        let expected = if interruption.all_green() {
            Action::None
        } else {
            Action::Hold
        };
        assert_eq!(action(&r.tick(&interruption)), expected);
    }
    r.ticks(&red(), 20);
    assert_eq!(
        r.s.state,
        StateName::Holding,
        "never 5 consecutive minutes RED"
    );
    assert_eq!(r.s.weight_v2, 5.0);
    // A different gate RED does not inherit the other's timer.
    let mut r = Run::started(&cfg);
    let payments_red = with("payment_success/payments", GateStatus::Red);
    r.ticks(&red(), 19);
    r.ticks(&payments_red, 20);
    assert_eq!(r.s.state, StateName::Holding);
    let out = r.tick(&payments_red);
    assert_eq!(action(&out), Action::Rollback);
    assert!(
        reason(&out).contains("payment_success/payments"),
        "{}",
        reason(&out)
    );
}

#[test]
fn red_rollback_after_is_configurable() {
    let cfg = config(
        &format!("{ALL_FLAGS}\nred_rollback_after = \"1m\""),
        PLAIN_PHASES,
    );
    let mut r = Run::started(&cfg);
    let outs = r.ticks(&red(), 5);
    assert_eq!(action(&outs[3]), Action::Hold);
    assert_eq!(action(&outs[4]), Action::Rollback);
}

#[test]
fn sev1_rolls_back_at_once() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.ticks(&green(), 3);
    let out = r.cmd(incident(1, "checkout down")).unwrap();
    assert_eq!(action(&out), Action::Rollback);
    assert_eq!(
        reason(&out),
        "sev1_incident: Sev-1 incident #1: checkout down"
    );
    assert_eq!(
        out.decision.as_ref().unwrap().trigger,
        Some(Trigger::Sev1Incident)
    );
    assert!(out.weights_changed && out.report);
    assert_eq!(r.s.weight_v2, 0.0);
    assert_eq!(r.s.state, StateName::RolledBack);
    assert_eq!(r.s.incidents.len(), 1);
    assert_eq!(r.s.incidents[0].severity, 1);
}

#[test]
fn sev1_in_any_state_not_yet_ended_rolls_back_and_a_new_start_is_the_operators() {
    let cfg = plain();
    let sev1 = |r: &mut Run| {
        let out = r.cmd(incident(1, "checkout down")).unwrap();
        assert_eq!(action(&out), Action::Rollback, "{out:?}");
        assert_eq!(out.decision.unwrap().trigger, Some(Trigger::Sev1Incident));
        assert_eq!((r.s.state, r.s.weight_v2), (StateName::RolledBack, 0.0));
    };
    // Waiting, not started yet.
    let mut r = Run::new(&cfg);
    sev1(&mut r);
    // Waiting, started (auto_start) but holding on the start flags.
    let needs_flags = config("", PLAIN_PHASES);
    let mut w = Run::new(&needs_flags);
    w.s.started = true;
    assert_eq!(action(&w.tick(&green())), Action::Hold);
    sev1(&mut w);
    // Nothing restarts it by itself, however long the ticks go on.
    let outs = r.ticks(&green(), 100);
    assert!(outs.iter().all(|o| action(o) == Action::None));
    assert_eq!(r.s.state, StateName::RolledBack);
    // The operator's start begins a new rollout.
    assert_eq!(action(&r.cmd(Command::Start).unwrap()), Action::Go);
    assert_eq!(r.s.phase_index, Some(0));
    // Mirroring in a shadow phase.
    let shadow = config("flags = { A2_V26_COMPLIANT = 1 }", SHADOW_FIRST);
    let mut r = Run::started(&shadow);
    assert_eq!(r.s.state, StateName::Shadow);
    sev1(&mut r);
    // Paused at 0 %, inside a phase and before any.
    let mut r = Run::started(&cfg);
    r.cmd(Command::SetWeight(0.0)).unwrap();
    sev1(&mut r);
    let mut r = Run::new(&cfg);
    r.cmd(Command::Pause).unwrap();
    sev1(&mut r);
    // Paused with V2 taking traffic.
    let mut r = Run::started(&cfg);
    r.cmd(Command::Pause).unwrap();
    sev1(&mut r);
    // After the end it is only recorded: rolled back stays as it was.
    let before = r.s.last_decision.clone();
    assert_eq!(r.cmd(incident(1, "again")).unwrap(), Outcome::default());
    assert_eq!(r.s.incidents.len(), 2);
    assert_eq!(r.s.last_decision, before);
}

#[test]
fn sev2s_posted_before_a_phase_hold_its_step_up() {
    let cfg = plain();
    // Two Sev-2s while waiting: the start holds for a manual decision.
    let mut r = Run::new(&cfg);
    r.cmd(incident(2, "a")).unwrap();
    let out = r.cmd(incident(2, "b")).unwrap();
    assert_eq!(action(&out), Action::Hold);
    assert_eq!(r.s.state, StateName::Waiting);
    let out = r.cmd(Command::Start).unwrap();
    assert_eq!(action(&out), Action::Hold, "{out:?}");
    assert!(reason(&out).starts_with("incidents: "), "{}", reason(&out));
    assert_eq!((r.s.state, r.s.weight_v2), (StateName::Waiting, 0.0));
    let outs = r.ticks(&green(), 100);
    assert!(outs.iter().all(|o| action(o) == Action::Hold));
    assert_eq!(reports(&outs), 0, "one hold, reported once");
    // The operator's resume is the decision; then the start goes ahead.
    assert_eq!(
        reason(&r.cmd(Command::Resume).unwrap()),
        "manual hold cleared"
    );
    assert_eq!(action(&r.tick(&green())), Action::Go);
    assert_eq!(r.s.weight_v2, 5.0);
    // One Sev-2 before the start and one after it make two.
    let mut r = Run::new(&cfg);
    r.cmd(incident(2, "a")).unwrap();
    r.cmd(Command::Start).unwrap();
    assert_eq!(action(&r.cmd(incident(2, "b")).unwrap()), Action::Hold);
    // Two Sev-2s in the shadow phase: the step-up to the first live phase holds.
    let shadow = config(ALL_FLAGS, SHADOW_FIRST);
    let mut r = Run::started(&shadow);
    r.cmd(incident(2, "a")).unwrap();
    r.cmd(incident(2, "b")).unwrap();
    let outs = r.ticks(&green(), 3 * ticks_in(shadow.rollout.phases[0].hold));
    assert!(outs.iter().all(|o| action(o) == Action::Hold));
    assert_eq!((r.s.state, r.s.weight_v2), (StateName::Shadow, 0.0));
    r.cmd(Command::Resume).unwrap();
    assert_eq!(r.s.state, StateName::Shadow);
    assert_eq!(action(&r.tick(&green())), Action::Go);
    assert_eq!(r.phase(), Some("canary-5"));
}

#[test]
fn two_sev2_hold_for_a_manual_decision_and_resume_clears_it() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    assert_eq!(
        r.cmd(incident(2, "slow search")).unwrap(),
        Outcome::default()
    );
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.manual_hold, None);
    let out = r.cmd(incident(2, "odd emails")).unwrap();
    assert_eq!(action(&out), Action::Hold);
    assert!(
        reason(&out).starts_with("incidents: 2 Sev-2 incidents, holding for a manual decision"),
        "{}",
        reason(&out)
    );
    assert!(out.report && !out.weights_changed);
    assert_eq!(r.s.state, StateName::Holding);
    assert!(r.s.manual_hold.is_some());
    assert_eq!(r.s.weight_v2, 5.0, "a hold, not a rollback");
    // GREEN for far longer than the hold: still holding, reported once.
    let outs = r.ticks(&green(), 3 * ticks_in(cfg.rollout.phases[0].hold));
    assert!(outs
        .iter()
        .all(|o| action(o) == Action::Hold && reason(o).starts_with("incidents:")));
    assert_eq!(reports(&outs), 0);
    assert_eq!(r.s.phase_index, Some(0));
    // Triggers stay armed during the manual hold.
    let mut armed = Run::started(&cfg);
    armed.cmd(incident(2, "a")).unwrap();
    armed.cmd(incident(2, "b")).unwrap();
    assert_eq!(action(&armed.tick(&slow(200.0, 1000))), Action::Rollback);
    // Resume is the manual decision.
    let out = r.cmd(Command::Resume).unwrap();
    assert_eq!(action(&out), Action::None);
    assert_eq!(reason(&out), "manual hold cleared");
    assert_eq!(r.s.manual_hold, None);
    assert_eq!(r.s.state, StateName::Canary);
    // The gates were GREEN all along: the step-up may follow at once.
    assert_eq!(action(&r.tick(&green())), Action::Go);
}

#[test]
fn a_non_green_gate_during_a_manual_hold_still_restarts_the_hold_clock() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.ticks(&green(), 10);
    r.cmd(incident(2, "a")).unwrap();
    r.cmd(incident(2, "b")).unwrap();
    r.ticks(&green(), 10);
    r.tick(&yellow());
    r.ticks(&green(), 60);
    r.cmd(Command::Resume).unwrap();
    // 60 GREEN ticks since the YELLOW one, more than the hold (40): the step-up follows the resume.
    assert_eq!(action(&r.tick(&green())), Action::Go);
    // But with the YELLOW tick just before the resume, a whole hold is needed.
    let mut r = Run::started(&cfg);
    r.ticks(&green(), 39);
    r.cmd(incident(2, "a")).unwrap();
    r.cmd(incident(2, "b")).unwrap();
    r.ticks(&green(), 10);
    r.tick(&yellow());
    r.cmd(Command::Resume).unwrap();
    let outs = r.ticks(&green(), 40);
    assert!(
        outs.iter().all(|o| action(o) == Action::None),
        "{:?}",
        outs.last()
    );
    assert_eq!(action(&r.tick(&green())), Action::Go);
}

#[test]
fn promote_or_rollback_also_settle_a_manual_hold() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.cmd(incident(2, "a")).unwrap();
    r.cmd(incident(2, "b")).unwrap();
    let out = r.cmd(Command::Promote).unwrap();
    assert_eq!(action(&out), Action::Go);
    assert_eq!(r.s.manual_hold, None);
    assert_eq!(r.s.weight_v2, 25.0);
    let mut r = Run::started(&cfg);
    r.cmd(incident(2, "a")).unwrap();
    r.cmd(incident(2, "b")).unwrap();
    assert_eq!(
        r.cmd(Command::Rollback).unwrap().decision.unwrap().trigger,
        Some(Trigger::Manual)
    );
}

#[test]
fn sev2_while_paused_keeps_the_pause_and_does_not_break_the_next_tick() {
    let cfg = plain();
    // Manual weight before any rollout: paused, no phase.
    let mut r = Run::new(&cfg);
    r.cmd(Command::SetWeight(10.0)).unwrap();
    r.cmd(incident(2, "a")).unwrap();
    let out = r.cmd(incident(2, "b")).unwrap();
    assert_eq!(action(&out), Action::Hold);
    assert_eq!(r.s.state, StateName::Paused, "the operator's pause stands");
    let out = r.tick(&green());
    assert_eq!(action(&out), Action::None);
    assert_eq!(r.s.weight_v2, 10.0);
    // Resume is the manual decision: back to waiting, hold cleared.
    r.cmd(Command::Resume).unwrap();
    assert_eq!(r.s.state, StateName::Waiting);
    assert_eq!(r.s.manual_hold, None);
    // Paused inside a phase.
    let mut r = Run::started(&cfg);
    r.cmd(Command::Pause).unwrap();
    r.cmd(incident(2, "a")).unwrap();
    r.cmd(incident(2, "b")).unwrap();
    assert_eq!(r.s.state, StateName::Paused);
    r.ticks(&green(), 100);
    assert_eq!(r.s.phase_index, Some(0));
    r.cmd(Command::Resume).unwrap();
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.manual_hold, None);
}

#[test]
fn sev2_hold_count_is_configurable() {
    let cfg = config(&format!("{ALL_FLAGS}\nsev2_hold_count = 3"), PLAIN_PHASES);
    let mut r = Run::started(&cfg);
    r.cmd(incident(2, "a")).unwrap();
    assert_eq!(r.cmd(incident(2, "b")).unwrap(), Outcome::default());
    assert_eq!(action(&r.cmd(incident(2, "c")).unwrap()), Action::Hold);
}

#[test]
fn a_payment_trip_rolls_back() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let out = r.core.payment_trip(
        &mut r.s,
        Trip {
            failures: 6,
            trigger_to_swap_ns: 42_000,
        },
        r.now,
    );
    assert_eq!(action(&out), Action::Rollback);
    assert_eq!(
        reason(&out),
        "payment_failures: 6 consecutive failed payments on V2 (limit 5); weights swapped 42 µs after the last failure"
    );
    assert_eq!(
        out.decision.as_ref().unwrap().trigger,
        Some(Trigger::PaymentFailures)
    );
    assert!(out.weights_changed && out.report);
    assert_eq!(r.s.weight_v2, 0.0);
    assert_eq!(r.s.state, StateName::RolledBack);
    assert!(!Core::active(&r.s));
}

#[test]
fn triggers_stay_armed_while_paused_with_traffic_on_v2() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.cmd(Command::SetWeight(30.0)).unwrap();
    assert_eq!(action(&r.tick(&slow(200.0, 1000))), Action::Rollback);
    assert_eq!(r.s.weight_v2, 0.0);
    // At 0 % there is nothing to roll back.
    let mut r = Run::started(&cfg);
    r.cmd(Command::SetWeight(0.0)).unwrap();
    assert_eq!(action(&r.tick(&slow(200.0, 1000))), Action::None);
    assert_eq!(r.s.state, StateName::Paused);
}

// ===== commands =====

#[test]
fn set_weight_pauses_and_resume_restores_the_phase_weight() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let started_at = r.s.phase_started_at;
    r.ticks(&green(), 30);
    let out = r.cmd(Command::SetWeight(12.5)).unwrap();
    assert_eq!(action(&out), Action::None);
    assert_eq!(reason(&out), "manual weight: V2 12.5%; controller paused");
    assert!(out.weights_changed);
    assert_eq!(r.s.state, StateName::Paused);
    assert_eq!(r.s.weight_v2, 12.5);
    // Paused: GREEN for ever does not promote.
    for out in r.ticks(&green(), 200) {
        assert_eq!(action(&out), Action::None);
        assert_eq!(reason(&out), "paused by operator");
    }
    assert_eq!(r.s.phase_index, Some(0));
    assert_eq!(r.s.weight_v2, 12.5);
    let out = r.cmd(Command::Resume).unwrap();
    assert_eq!(reason(&out), "resumed in canary-5");
    assert!(out.weights_changed);
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.weight_v2, 5.0);
    assert_eq!(
        r.s.phase_started_at, started_at,
        "the phase clock survives a pause"
    );
    assert_eq!(r.s.green_since, None, "the hold starts over after a pause");
    let outs = r.ticks(&green(), 40);
    assert!(outs.iter().all(|o| action(o) == Action::None));
    assert_eq!(action(&r.tick(&green())), Action::Go);
}

#[test]
fn pause_and_resume() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let out = r.cmd(Command::Pause).unwrap();
    assert_eq!(reason(&out), "paused by operator");
    assert!(!out.weights_changed);
    assert_eq!(r.s.state, StateName::Paused);
    assert_eq!(r.s.weight_v2, 5.0, "pause keeps the weight");
    r.cmd(Command::Resume).unwrap();
    assert_eq!(r.s.state, StateName::Canary);
    // A manual weight before any rollout gives `paused`; resume goes back to waiting at 0 %.
    let mut r = Run::new(&cfg);
    r.cmd(Command::SetWeight(20.0)).unwrap();
    assert_eq!(r.s.state, StateName::Paused);
    assert_eq!(r.s.phase_index, None);
    let out = r.cmd(Command::Resume).unwrap();
    assert!(out.weights_changed);
    assert_eq!(r.s.state, StateName::Waiting);
    assert_eq!(r.s.weight_v2, 0.0);
    // Pause while waiting and resume.
    let mut r = Run::new(&cfg);
    r.cmd(Command::Pause).unwrap();
    assert_eq!(r.s.state, StateName::Paused);
    r.cmd(Command::Resume).unwrap();
    assert_eq!(r.s.state, StateName::Waiting);
}

#[test]
fn conflicting_commands_are_refused_without_changing_anything() {
    let cfg = plain();
    let conflict = |r: &mut Run, c: Command| {
        let before = r.s.clone();
        match r.cmd(c.clone()) {
            Err(CommandError::Conflict(msg)) => assert!(msg.starts_with("cannot "), "{msg}"),
            other => panic!("{c:?} in {:?}: {other:?}", before.state),
        }
        assert_eq!(r.s, before, "{c:?} changed the state");
    };
    // Waiting.
    let mut r = Run::new(&cfg);
    conflict(&mut r, Command::Promote);
    conflict(&mut r, Command::Resume);
    // In a phase.
    let mut r = Run::started(&cfg);
    conflict(&mut r, Command::Start);
    conflict(&mut r, Command::Resume);
    r.tick(&yellow());
    assert_eq!(r.s.state, StateName::Holding);
    conflict(&mut r, Command::Resume);
    conflict(&mut r, Command::Start);
    // Paused.
    r.cmd(Command::Pause).unwrap();
    conflict(&mut r, Command::Pause);
    conflict(&mut r, Command::Start);
    // Rolled back.
    assert_eq!(
        r.cmd(Command::Rollback).unwrap().decision.unwrap().trigger,
        Some(Trigger::Manual)
    );
    conflict(&mut r, Command::Rollback);
    conflict(&mut r, Command::Promote);
    conflict(&mut r, Command::Pause);
    conflict(&mut r, Command::Resume);
    // Promoted.
    let mut r = Run::started(&cfg);
    r.cmd(Command::Promote).unwrap();
    r.cmd(Command::Promote).unwrap();
    assert_eq!(action(&r.cmd(Command::Promote).unwrap()), Action::Promote);
    conflict(&mut r, Command::Promote);
    conflict(&mut r, Command::Pause);
    conflict(&mut r, Command::Resume);
    // The message names the state.
    let mut r = Run::new(&cfg);
    assert_eq!(
        r.cmd(Command::Promote),
        Err(CommandError::Conflict(
            "cannot promote while the rollout is waiting".into()
        ))
    );
}

#[test]
fn manual_promote_steps_up_and_promotes_at_the_end() {
    let cfg = config(ALL_FLAGS, SEED_PHASES);
    let mut r = Run::started(&cfg);
    r.cmd(approve("cfo", "dana")).unwrap();
    r.cmd(approve("ceo", "erin")).unwrap();
    // Holding on a gate does not stop a manual promote.
    r.tick(&red());
    let out = r.cmd(Command::Promote).unwrap();
    assert_eq!(action(&out), Action::Go);
    assert_eq!(reason(&out), "manual promote by operator");
    assert_eq!(out.stepped_from, Some(0));
    assert!(out.weights_changed && out.report);
    assert_eq!(r.s.weight_v2, 25.0);
    assert_eq!(r.s.state, StateName::Canary);
    // From paused too.
    r.cmd(Command::Pause).unwrap();
    assert_eq!(action(&r.cmd(Command::Promote).unwrap()), Action::Go);
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.s.weight_v2, 50.0);
    r.cmd(Command::Promote).unwrap();
    assert_eq!(r.phase(), Some("full"));
    // A manual weight at the last phase, then promote: promoted at 100 %,
    // not at the operator's interim weight.
    r.cmd(Command::SetWeight(49.0)).unwrap();
    let out = r.cmd(Command::Promote).unwrap();
    assert_eq!(action(&out), Action::Promote);
    assert!(out.promoted && out.weights_changed);
    assert_eq!(r.s.state, StateName::Promoted);
    assert_eq!(r.s.weight_v2, 100.0);
}

#[test]
fn manual_promote_needs_the_next_phases_approval_unless_waived_and_all_green() {
    let cfg = config(ALL_FLAGS, SEED_PHASES);
    let mut r = Run::started(&cfg);
    let refused = |r: &mut Run, role: &str, next: &str| {
        let before = r.s.clone();
        assert_eq!(
            r.cmd(Command::Promote),
            Err(CommandError::Conflict(format!(
                "cannot promote: {next} needs approval by role {role}"
            )))
        );
        assert_eq!(r.s, before);
    };
    // cfo has no waiver: refused even with every gate GREEN.
    r.tick(&green());
    refused(&mut r, "cfo", "canary-25");
    r.cmd(approve("cfo", "dana")).unwrap();
    r.cmd(Command::Promote).unwrap();
    r.cmd(Command::Promote).unwrap();
    assert_eq!(r.phase(), Some("canary-50"));
    // ceo is waived only when every gate is GREEN: not before any tick, not
    // with one gate YELLOW.
    refused(&mut r, "ceo", "full");
    r.tick(&yellow());
    refused(&mut r, "ceo", "full");
    r.tick(&green());
    let out = r.cmd(Command::Promote).unwrap();
    assert_eq!(action(&out), Action::Go, "{out:?}");
    assert_eq!(r.phase(), Some("full"));
    // With the approval, any colour.
    let mut r = Run::started(&cfg);
    r.cmd(approve("cfo", "dana")).unwrap();
    r.cmd(Command::Promote).unwrap();
    r.cmd(Command::Promote).unwrap();
    r.tick(&red());
    r.cmd(approve("ceo", "erin")).unwrap();
    assert_eq!(action(&r.cmd(Command::Promote).unwrap()), Action::Go);
}

#[test]
fn a_phase_needing_an_approval_without_the_waiver_waits_for_it_all_green_or_not() {
    let phases = SEED_PHASES.replace("approval_waived_if_green = true\n", "");
    assert_ne!(phases, SEED_PHASES);
    let cfg = config(ALL_FLAGS, &phases);
    let mut r = Run::started(&cfg);
    r.cmd(approve("cfo", "dana")).unwrap();
    assert_eq!(action(&r.pass_phase()), Action::Go);
    assert_eq!(action(&r.pass_phase()), Action::Go);
    let out = r.pass_phase();
    assert_eq!(action(&out), Action::Hold, "{out:?}");
    assert_eq!(reason(&out), "approval: full needs approval by role ceo");
    let outs = r.ticks(&green(), 100);
    assert!(outs.iter().all(|o| action(o) == Action::Hold));
    assert_eq!(r.s.weight_v2, 50.0);
    r.cmd(approve("ceo", "erin")).unwrap();
    let out = r.tick(&green());
    assert!(
        reason(&out).ends_with("canary-50 -> full (100%), approved by erin (ceo)"),
        "{}",
        reason(&out)
    );
}

#[test]
fn manual_promote_never_lowers_the_weight() {
    let cfg = config(ALL_FLAGS, SEED_PHASES);
    let mut r = Run::started(&cfg);
    r.cmd(approve("cfo", "dana")).unwrap();
    // An operator's 30 % at canary-5: promote goes to canary-25 but keeps 30 %.
    r.cmd(Command::SetWeight(30.0)).unwrap();
    let out = r.cmd(Command::Promote).unwrap();
    assert!(out.weights_changed);
    assert_eq!(r.phase(), Some("canary-25"));
    assert_eq!(r.s.weight_v2, 30.0);
    // Below the next phase's weight, the phase's weight applies.
    r.cmd(Command::SetWeight(40.0)).unwrap();
    r.cmd(Command::Promote).unwrap();
    assert_eq!((r.phase(), r.s.weight_v2), (Some("canary-50"), 50.0));
}

#[test]
fn manual_rollback() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.pass_phase();
    let out = r.cmd(Command::Rollback).unwrap();
    assert_eq!(action(&out), Action::Rollback);
    assert_eq!(reason(&out), "manual: rollback requested by operator");
    assert_eq!(
        out.decision.as_ref().unwrap().trigger,
        Some(Trigger::Manual)
    );
    assert!(out.weights_changed && out.report);
    assert_eq!(r.s.weight_v2, 0.0);
    assert_eq!(r.s.state, StateName::RolledBack);
    assert_eq!(
        r.s.phase_index,
        Some(1),
        "the report still names the phase rolled back from"
    );
}

#[test]
fn frozen_refuses_weight_changes_until_unfrozen() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.pass_phase();
    r.pass_phase();
    let out = r.pass_phase();
    assert!(out.promoted);
    // The control task runs the golden re-freeze on `promoted`.
    r.s.frozen = true;
    let before = r.s.clone();
    for c in [
        Command::SetWeight(50.0),
        Command::Start,
        Command::Promote,
        Command::Rollback,
        Command::Resume,
    ] {
        assert_eq!(r.cmd(c.clone()), Err(CommandError::Frozen), "{c:?}");
        assert_eq!(r.s, before, "{c:?}");
    }
    assert!(CommandError::Frozen.to_string().contains("unfreeze"));
    // What does not change weights still works.
    r.cmd(Command::SetFlags(BTreeMap::from([(
        "EVIDENCE_BUNDLE".into(),
        1,
    )])))
    .unwrap();
    r.cmd(approve("cfo", "dana")).unwrap();
    r.cmd(incident(2, "noted")).unwrap();
    assert_eq!(r.s.weight_v2, 100.0);
    assert_eq!(r.cmd(Command::Unfreeze).unwrap(), Outcome::default());
    assert!(!r.s.frozen);
    let out = r.cmd(Command::SetWeight(50.0)).unwrap();
    assert!(out.weights_changed);
    assert_eq!(r.s.weight_v2, 50.0);
    assert_eq!(r.s.state, StateName::Paused);
}

#[test]
fn start_after_a_rollback_begins_a_new_rollout() {
    let cfg = config(ALL_FLAGS, SEED_PHASES);
    let mut r = Run::started(&cfg);
    r.cmd(approve("cfo", "dana")).unwrap();
    r.cmd(incident(2, "a")).unwrap();
    r.pass_phase();
    assert_eq!(r.phase(), Some("canary-25"));
    r.cmd(incident(1, "outage")).unwrap();
    assert_eq!(r.s.state, StateName::RolledBack);
    r.s.next_report = 17;
    r.now += TimeDelta::hours(3);
    let out = r.cmd(Command::Start).unwrap();
    assert_eq!(action(&out), Action::Go);
    assert!(out.report && out.weights_changed);
    assert_eq!(r.s.state, StateName::Canary);
    assert_eq!(r.phase(), Some("canary-5"));
    assert_eq!(r.s.weight_v2, 5.0);
    assert!(
        r.s.approvals.is_empty(),
        "approvals belong to the old rollout"
    );
    assert!(
        r.s.incidents.is_empty(),
        "incidents belong to the old rollout"
    );
    assert_eq!(r.s.manual_hold, None);
    assert_eq!(r.s.phase_started_at, Some(r.now));
    assert_eq!(r.s.next_report, 17, "report ids keep counting");
    assert_eq!(r.s.flags.get("EVIDENCE_BUNDLE"), Some(&1), "flags are kept");
    // The cfo approval must be given again.
    let out = r.pass_phase();
    assert_eq!(
        reason(&out),
        "approval: canary-25 needs approval by role cfo"
    );
    // Starting over after a promotion (once unfrozen) works the same way.
    let cfg = plain();
    let mut r = Run::started(&cfg);
    r.cmd(Command::Promote).unwrap();
    r.cmd(Command::Promote).unwrap();
    r.cmd(Command::Promote).unwrap();
    assert_eq!(r.s.state, StateName::Promoted);
    assert_eq!(action(&r.cmd(Command::Start).unwrap()), Action::Go);
    assert_eq!(r.s.weight_v2, 5.0);
    // Start after a rollback with a flag now 0 holds in waiting.
    let mut r = Run::started(&cfg);
    r.cmd(Command::Rollback).unwrap();
    r.cmd(Command::SetFlags(BTreeMap::from([(
        "A2_V26_COMPLIANT".into(),
        0,
    )])))
    .unwrap();
    let out = r.cmd(Command::Start).unwrap();
    assert_eq!(reason(&out), "start conditions: A2_V26_COMPLIANT = 0");
    assert!(out.report);
    assert_eq!(r.s.state, StateName::Waiting);
    assert_eq!(r.s.weight_v2, 0.0);
}

// ===== reports =====

#[test]
fn a_hold_reports_when_it_starts_or_its_cause_changes_not_every_tick() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let step = |r: &mut Run, ev: &Evaluation, n: usize| reports(&r.ticks(ev, n));
    assert_eq!(step(&mut r, &yellow(), 1), 1, "hold starts");
    assert_eq!(step(&mut r, &yellow(), 10), 0, "same hold");
    assert_eq!(step(&mut r, &red(), 1), 1, "YELLOW -> RED is a new cause");
    assert_eq!(step(&mut r, &red(), 5), 0);
    assert_eq!(
        step(
            &mut r,
            &with("payment_success/payments", GateStatus::Red),
            1
        ),
        1,
        "another gate"
    );
    assert_eq!(
        step(
            &mut r,
            &with("payment_success/payments", GateStatus::Red),
            5
        ),
        0
    );
    assert_eq!(step(&mut r, &green(), 5), 0, "NONE ticks write no report");
    // The same cause again after a GREEN stretch longer than the window is a new hold.
    assert_eq!(step(&mut r, &green(), 20), 0);
    assert_eq!(
        step(
            &mut r,
            &with("payment_success/payments", GateStatus::Red),
            1
        ),
        1,
        "hold starts again"
    );
    assert_eq!(
        step(
            &mut r,
            &with("payment_success/payments", GateStatus::Red),
            3
        ),
        0
    );
    // Every non-HOLD decision reports.
    let mut r = Run::started(&cfg);
    let outs = r.ticks(&green(), 41);
    assert_eq!(reports(&outs), 1);
    assert!(outs.last().unwrap().report);
}

// ===== gates::evaluate on synthetic windows =====

/// A window where each (journey index, variant) gets `(requests, latency ms)`; no errors.
fn window(cfg: &Config, fill: impl Fn(usize, Variant) -> (u64, u64)) -> Window {
    let mut w = Window::empty(cfg.journeys.len());
    w.duration_ms = 300_000;
    for id in cfg.journeys.ids() {
        if id.index() >= 2 {
            continue; // the catch-all journey sees no traffic
        }
        for v in Variant::ALL {
            let (n, ms) = fill(id.index(), v);
            let c: &mut CellCounts = &mut w.cells[id.index() * 2 + v as usize];
            c.latency.record(ms * 1000, n);
            c.classes[1] += n;
        }
    }
    w
}

fn real_eval(cfg: &Config, s: &RolloutState, now: DateTime<Utc>, w: &Window) -> Evaluation {
    let p95 = s.phase_index.map_or(cfg.rollout.phases[0].p95_ms, |i| {
        cfg.rollout.phases[i].p95_ms
    });
    gates::evaluate(
        w,
        &GateContext {
            cfg,
            phase_p95_ms: p95,
            comparative: s.weight_v2 < 100.0,
            weight_v2: s.weight_v2,
            v2_bad_since_start: s.v2_bad_requests,
            shadow: crate::control::step::is_shadow(cfg, s),
            now,
            previous: &s.gate_status,
            recovery: &s.gate_recovery,
            tick: w,
            sequential: None,
        },
    )
}

#[test]
fn real_gates_drive_a_whole_rollout_to_promotion() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let good = window(&cfg, |_, _| (1000, 60));
    let mut outs = Vec::new();
    while r.s.state != StateName::Promoted {
        let ev = real_eval(&cfg, &r.s, r.now, &good);
        outs.push(r.tick(&ev));
        assert!(outs.len() < 1000, "never promoted: {:?}", outs.last());
    }
    let actions: Vec<Action> = outs
        .iter()
        .map(action)
        .filter(|a| *a != Action::None)
        .collect();
    assert_eq!(actions, vec![Action::Go, Action::Go, Action::Promote]);
    assert_eq!(outs.len(), 41 + 41 + 81);
}

#[test]
fn real_gates_slow_v2_rolls_back_on_p95_hard() {
    let cfg = plain();
    let mut r = Run::started(&cfg);
    let slow = window(&cfg, |j, v| {
        (1000, if j == 0 && v == Variant::V2 { 200 } else { 60 })
    });
    let ev = real_eval(&cfg, &r.s, r.now, &slow);
    let out = r.tick(&ev);
    assert_eq!(action(&out), Action::Rollback, "{out:?}");
    assert!(
        reason(&out).starts_with("p95_hard: journey search V2 P95"),
        "{}",
        reason(&out)
    );
}
