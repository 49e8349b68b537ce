//! `[rollout]` and `[[rollout.phases]]`: the schedule, its thresholds, the
//! flags that guard the first live phase, and where status goes.

pub use crate::routing::HeadersTo;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveTime, Weekday};
use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use super::values::{defaults, fraction, header_name, positive_ms, unique_label, yes, Dur};
use super::{invalid, Invalid};
use crate::routing::WeightBp;

defaults! {
    const DEFAULT_TICK: Duration = Duration::from_secs(15) => fn default_tick() -> Dur;
    const DEFAULT_WINDOW: Duration = Duration::from_secs(300) => fn default_window() -> Dur;
    const DEFAULT_MIN_SAMPLES: u64 = 50 => fn default_min_samples() -> u64;
    const DEFAULT_ERROR_RATE_MAX: f64 = 0.005 => fn default_error_rate_max() -> f64;
    const DEFAULT_ERROR_RATE_MARGIN: f64 = 0.001 => fn default_error_rate_margin() -> f64;
    const DEFAULT_PAYMENT_SUCCESS_MIN: f64 = 0.995 => fn default_payment_success_min() -> f64;
    const DEFAULT_P95_ROLLBACK_MS: f64 = 160.0 => fn default_p95_rollback_ms() -> f64;
    const DEFAULT_RED_ROLLBACK_AFTER: Duration = Duration::from_secs(300)
        => fn default_red_rollback_after() -> Dur;
    const DEFAULT_CONSECUTIVE_PAYMENT_FAILURES: u32 = 5
        => fn default_consecutive_payment_failures() -> u32;
    const DEFAULT_FULL_SUSTAIN: Duration = Duration::from_secs(2 * 3600)
        => fn default_full_sustain() -> Dur;
    const DEFAULT_SEV2_HOLD_COUNT: u32 = 2 => fn default_sev2_hold() -> u32;
    const DEFAULT_UPDATE_EVERY: Duration = Duration::from_secs(15 * 60)
        => fn default_update_every() -> Dur;
    /// A phase's P95 gate.
    const DEFAULT_P95_MS: f64 = 130.0 => fn default_p95_ms() -> f64;
}
// Not values of their field's type: their functions build those by hand.
const DEFAULT_PROMOTION_WINDOW: &str = "always";
/// The seeds' "next business day": Monday to Friday.
const DEFAULT_BUSINESS_DAYS: [&str; 5] = ["mon", "tue", "wed", "thu", "fri"];
/// Flags that must all be 1 before the first live phase, unless configured otherwise.
const DEFAULT_REQUIRED_FLAGS: [&str; 3] =
    ["SHADOW_PASS_24H", "A2_V26_COMPLIANT", "EVIDENCE_BUNDLE"];

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub(crate) enum FilePromotionWindow {
    Keyword(String),
    Hours { start: String, end: String },
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PhaseMode {
    #[default]
    Live,
    Shadow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePhase {
    pub name: String,
    pub weight: f64,
    /// Required except on the last phase, which holds for `full_sustain`.
    pub hold: Option<Dur>,
    #[serde(default = "default_p95_ms")]
    pub p95_ms: f64,
    pub approval: Option<String>,
    #[serde(default)]
    pub approval_waived_if_green: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub headers_to: HeadersTo,
    #[serde(default)]
    pub mode: PhaseMode,
    /// Status webhook cadence during this phase.
    pub update_every: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRollout {
    #[serde(default = "default_tick")]
    pub tick: Dur,
    #[serde(default = "yes")]
    pub auto_start: bool,
    #[serde(default = "default_window")]
    pub window: Dur,
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    #[serde(default = "default_error_rate_max")]
    pub error_rate_max: f64,
    /// V2's 5xx rate may exceed V1's by at most this (absolute) before the gate is RED.
    #[serde(default = "default_error_rate_margin")]
    pub error_rate_margin: f64,
    #[serde(default = "default_payment_success_min")]
    pub payment_success_min: f64,
    #[serde(default = "default_p95_rollback_ms")]
    pub p95_rollback_ms: f64,
    #[serde(default = "default_red_rollback_after")]
    pub red_rollback_after: Dur,
    #[serde(default = "default_consecutive_payment_failures")]
    pub consecutive_payment_failures: u32,
    #[serde(default = "default_full_sustain")]
    pub full_sustain: Dur,
    #[serde(default = "default_promotion_window")]
    pub promotion_window: FilePromotionWindow,
    /// Weekdays on which the promotion window opens.
    #[serde(default = "default_business_days")]
    pub business_days: Vec<String>,
    /// Local dates on which it does not open (ISO, "2026-12-24").
    #[serde(default)]
    pub holidays: Vec<String>,
    #[serde(default = "default_sev2_hold")]
    pub sev2_hold_count: u32,
    #[serde(default)]
    pub flags: BTreeMap<String, i64>,
    #[serde(default = "default_required_flags")]
    pub required_flags: Vec<String>,
    #[serde(default)]
    pub phases: Vec<FilePhase>,
    pub webhook_url: Option<String>,
    pub command_center_url: Option<String>,
    #[serde(default = "default_update_every")]
    pub update_every: Dur,
}

fn default_promotion_window() -> FilePromotionWindow {
    FilePromotionWindow::Keyword(DEFAULT_PROMOTION_WINDOW.into())
}
fn default_business_days() -> Vec<String> {
    DEFAULT_BUSINESS_DAYS
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_required_flags() -> Vec<String> {
    DEFAULT_REQUIRED_FLAGS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromotionWindow {
    Always,
    /// Local wall-clock hours; `end` before `start` spans midnight.
    Hours {
        start: NaiveTime,
        end: NaiveTime,
    },
}

impl PromotionWindow {
    pub fn contains(&self, t: NaiveTime) -> bool {
        match *self {
            PromotionWindow::Always => true,
            PromotionWindow::Hours { start, end } if start <= end => t >= start && t < end,
            PromotionWindow::Hours { start, end } => t >= start || t < end,
        }
    }
}

/// The days the promotion window opens on: configured weekdays minus
/// holidays, all in the controller's local time (the process time zone, `TZ`).
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessCalendar {
    /// Indexed by days from Monday.
    weekdays: [bool; 7],
    holidays: std::collections::BTreeSet<NaiveDate>,
}

impl Default for BusinessCalendar {
    fn default() -> Self {
        let mut weekdays = [false; 7];
        weekdays[..5].fill(true);
        BusinessCalendar {
            weekdays,
            holidays: Default::default(),
        }
    }
}

impl BusinessCalendar {
    pub fn is_business_day(&self, d: NaiveDate) -> bool {
        self.weekdays[d.weekday().num_days_from_monday() as usize] && !self.holidays.contains(&d)
    }
}

fn calendar(days: &[String], holidays: &[String]) -> Result<BusinessCalendar, Invalid> {
    let mut weekdays = [false; 7];
    for (i, d) in days.iter().enumerate() {
        let key = format!("rollout.business_days[{i}]");
        let day: Weekday = d.parse().ok().ok_or_else(|| {
            invalid(
                &key,
                format!("{d:?} is not a weekday: use mon, tue, wed, thu, fri, sat or sun"),
            )
        })?;
        let slot = &mut weekdays[day.num_days_from_monday() as usize];
        if *slot {
            return Err(invalid(key, format!("{d:?} is listed twice")));
        }
        *slot = true;
    }
    if !weekdays.contains(&true) {
        return Err(invalid(
            "rollout.business_days",
            "needs at least one day, or the promotion window never opens",
        ));
    }
    let mut set = std::collections::BTreeSet::new();
    for (i, h) in holidays.iter().enumerate() {
        let date = NaiveDate::parse_from_str(h, "%Y-%m-%d")
            .ok()
            .filter(|_| h.len() == 10)
            .ok_or_else(|| {
                invalid(
                    format!("rollout.holidays[{i}]"),
                    format!("{h:?} is not an ISO date like \"2026-12-24\""),
                )
            })?;
        set.insert(date);
    }
    Ok(BusinessCalendar {
        weekdays,
        holidays: set,
    })
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub weight: WeightBp,
    pub hold: Duration,
    pub p95_ms: f64,
    pub approval: Option<String>,
    pub approval_waived_if_green: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub headers_to: HeadersTo,
    pub mode: PhaseMode,
    pub update_every: Duration,
}

#[derive(Debug, Clone)]
pub struct RolloutConfig {
    pub tick: Duration,
    pub auto_start: bool,
    pub window: Duration,
    pub min_samples: u64,
    pub error_rate_max: f64,
    pub error_rate_margin: f64,
    pub payment_success_min: f64,
    pub p95_rollback_ms: f64,
    pub red_rollback_after: Duration,
    pub consecutive_payment_failures: u32,
    pub full_sustain: Duration,
    pub promotion_window: PromotionWindow,
    /// When an `Hours` window opens (an `always` window ignores it).
    pub business_days: BusinessCalendar,
    pub sev2_hold_count: u32,
    pub flags: BTreeMap<String, i64>,
    pub required_flags: Vec<String>,
    pub phases: Vec<Phase>,
    pub webhook_url: Option<Uri>,
    pub command_center_url: Option<Uri>,
}

pub(super) fn validate(r: FileRollout) -> Result<RolloutConfig, Invalid> {
    if r.tick.0 < Duration::from_millis(10) {
        return Err(invalid("rollout.tick", "must be at least 10ms"));
    }
    if r.window.0 < r.tick.0 {
        return Err(invalid("rollout.window", "must be at least one tick"));
    }
    let promotion_window = match &r.promotion_window {
        FilePromotionWindow::Keyword(k) if k == "always" => PromotionWindow::Always,
        FilePromotionWindow::Keyword(k) => {
            return Err(invalid(
                "rollout.promotion_window",
                format!("{k:?}: use \"always\" or {{ start = \"09:00\", end = \"18:00\" }}"),
            ))
        }
        FilePromotionWindow::Hours { start, end } => PromotionWindow::Hours {
            start: time_of_day("rollout.promotion_window.start", start)?,
            end: time_of_day("rollout.promotion_window.end", end)?,
        },
    };
    for (k, v) in &r.flags {
        if !matches!(v, 0 | 1) {
            return Err(invalid(
                format!("rollout.flags.{k}"),
                format!("{v} must be 0 or 1"),
            ));
        }
    }
    let url = |key: &str, s: &Option<String>| -> Result<Option<Uri>, Invalid> {
        s.as_deref()
            .map(|s| {
                let u: Uri = s
                    .parse()
                    .map_err(|e| invalid(key, format!("{s:?} is not a URL: {e}")))?;
                if u.scheme() != Some(&Scheme::HTTP) || u.authority().is_none() {
                    return Err(invalid(
                        key,
                        format!("{s:?}: only http://host[:port]/path URLs are supported"),
                    ));
                }
                Ok(u)
            })
            .transpose()
    };
    let phase_files = if r.phases.is_empty() {
        seed_phases()
    } else {
        r.phases
    };
    let last = phase_files.len() - 1;
    let mut phases: Vec<Phase> = Vec::with_capacity(phase_files.len());
    for (i, p) in phase_files.into_iter().enumerate() {
        let key = |k: &str| format!("rollout.phases[{i}].{k}");
        unique_label(
            &key("name"),
            &p.name,
            phases.iter().map(|x| x.name.as_str()),
        )?;
        let weight = WeightBp::from_percent(p.weight).ok_or_else(|| {
            invalid(
                key("weight"),
                format!("{} must be a percentage 0-100", p.weight),
            )
        })?;
        match p.mode {
            PhaseMode::Shadow if weight != WeightBp::ZERO => {
                return Err(invalid(key("weight"), "a shadow phase has weight 0"))
            }
            PhaseMode::Live if weight == WeightBp::ZERO => {
                return Err(invalid(
                    key("weight"),
                    "a live phase needs a weight above 0",
                ))
            }
            _ => {}
        }
        if let Some(prev) = phases.last() {
            if weight < prev.weight {
                return Err(invalid(key("weight"), "phase weights must not decrease"));
            }
        }
        let hold = match (p.hold, i == last) {
            (Some(h), _) => h.0,
            (None, true) => r.full_sustain.0,
            (None, false) => {
                return Err(invalid(
                    key("hold"),
                    "every phase but the last needs a hold",
                ))
            }
        };
        positive_ms(&key("p95_ms"), p.p95_ms)?;
        let mut headers = Vec::new();
        for (name, value) in &p.headers {
            let n = header_name(&key("headers"), name)?;
            let v = HeaderValue::try_from(value.as_str()).map_err(|_| {
                invalid(
                    format!("rollout.phases[{i}].headers.{name}"),
                    "not a valid header value",
                )
            })?;
            headers.push((n, v));
        }
        phases.push(Phase {
            name: p.name,
            weight,
            hold,
            p95_ms: p.p95_ms,
            approval: p.approval.filter(|a| !a.is_empty()),
            approval_waived_if_green: p.approval_waived_if_green,
            headers,
            headers_to: p.headers_to,
            mode: p.mode,
            update_every: p.update_every.map_or(r.update_every.0, |d| d.0),
        });
    }
    Ok(RolloutConfig {
        tick: r.tick.0,
        auto_start: r.auto_start,
        window: r.window.0,
        min_samples: r.min_samples,
        error_rate_max: fraction("rollout.error_rate_max", r.error_rate_max)?,
        error_rate_margin: fraction("rollout.error_rate_margin", r.error_rate_margin)?,
        payment_success_min: fraction("rollout.payment_success_min", r.payment_success_min)?,
        p95_rollback_ms: positive_ms("rollout.p95_rollback_ms", r.p95_rollback_ms)?,
        red_rollback_after: r.red_rollback_after.0,
        consecutive_payment_failures: r.consecutive_payment_failures,
        full_sustain: r.full_sustain.0,
        promotion_window,
        business_days: calendar(&r.business_days, &r.holidays)?,
        sev2_hold_count: r.sev2_hold_count.max(1),
        flags: r.flags,
        required_flags: r.required_flags,
        phases,
        webhook_url: url("rollout.webhook_url", &r.webhook_url)?,
        command_center_url: url("rollout.command_center_url", &r.command_center_url)?,
    })
}

fn time_of_day(key: &str, s: &str) -> Result<NaiveTime, Invalid> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| invalid(key, format!("{s:?} is not a time like \"09:00\"")))
}

/// The seed schedule (seed 000), used when a config lists no phases. Approvals
/// are not implied here: they live in the shipped presets under `config/`.
fn seed_phases() -> Vec<FilePhase> {
    let phase = |name: &str, weight: f64, hold: Option<u64>, p95: f64, mode: &str| FilePhase {
        name: name.into(),
        weight,
        hold: hold.map(|h| Dur(Duration::from_secs(h * 3600))),
        p95_ms: p95,
        approval: None,
        approval_waived_if_green: false,
        headers: BTreeMap::from([("x-payment-mode".to_string(), mode.to_string())]),
        headers_to: HeadersTo::Canary,
        mode: PhaseMode::Live,
        update_every: None,
    };
    vec![
        phase("canary-5", 5.0, Some(6), 130.0, "test"),
        phase("canary-25", 25.0, Some(12), 130.0, "live"),
        phase("canary-50", 50.0, Some(12), 120.0, "live"),
        phase("full", 100.0, None, 120.0, "live"),
    ]
}
