//! The sequential judge (`[gates] method = "sequential"`, the default): each
//! tested gate answers *inside*, *breach* or *unknown* from evidence
//! accumulated over the rollout (`evidence.rs` has the statistics):
//!
//! | answer  | status | when                                                                 |
//! |---------|--------|----------------------------------------------------------------------|
//! | breach  | RED    | the CUSUM e-detector crossed `h = ln(K G N / alpha)`                  |
//! | inside  | GREEN  | the phase's inside e-process reached `1 / alpha_inside`, no breach    |
//! | unknown | YELLOW | neither yet, or fewer than `min_samples` V2 samples in the phase      |
//!
//! `G` is an upper bound on the number of tested gates and `N` the number of
//! ticks the plan takes (its holds over the tick), so `alpha` is the
//! false-rollback rate of a whole healthy rollout, not of one look. A
//! measured breach can never be GREEN: inside evidence needs the data to sit
//! below the limit by more than its noise. Between the two the gate holds,
//! which is what a release manager wants from "we cannot tell yet".
//!
//! The breach detector runs across phases (the canary is the same code at
//! 5 % and at 25 %; evidence of harm is not forgotten by a step-up), the
//! inside evidence restarts at every phase (a step-up rests on the phase's
//! own data) and after every breach (a recovery must be shown on data after
//! the fault). Gates without a sampling question (error budget, concurrency,
//! split skew) keep the value judge of `judge.rs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::evidence::{
    breach_threshold, log_mean_exp, ratio_interval, share_interval, tick_llrs, Counts, Harm, DOWN,
    UP,
};
use super::judge::Measure;
use super::{GateContext, GateKey, GateResult, GateStatus};

/// The answer of a tested gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Inside,
    Breach,
    Unknown,
}

/// What the sequential judge remembers of one gate between ticks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateMemory {
    /// CUSUM log-wealth per breach alternative (`evidence::UP`).
    pub up: [f64; 6],
    /// Log-LR per inside alternative (`evidence::DOWN`) since the phase
    /// started or the gate last breached.
    pub down: [f64; 6],
    /// Over the same span: V2's trials (or exposure) and bad trials (or
    /// events); for ratios V1's exposure and events as well.
    pub n2: f64,
    pub x2: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub n1: f64,
    #[serde(default, skip_serializing_if = "is_zero_u")]
    pub x1: u64,
    /// A ratio with a floor: the inside evidence of "V2's rate is below
    /// the floor", over the same span as `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_down: Option<[f64; 6]>,
    /// V2's samples since the rollout started (the breach detector's span):
    /// a breach needs `min_samples` of them, like any verdict, so a handful
    /// of requests slowed together by one stall is not evidence.
    #[serde(default)]
    pub total: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_u(v: &u64) -> bool {
    *v == 0
}

impl GateMemory {
    /// Adds one tick.
    fn fold(&mut self, c: &Counts, dispersion: f64) {
        // A ratio's events are split by V2's share of the phase's exposure so
        // far, not of this tick's: a tick's share swings when one variant's
        // users arrive in a burst, and an event often comes a tick after its
        // exposure (a user pays after they were first seen).
        let judged = c.with_exposure_added(self.n1, self.n2);
        if let Some(l) = tick_llrs(&judged, &UP, dispersion) {
            for (u, l) in self.up.iter_mut().zip(l) {
                *u = (*u + l).max(0.0);
            }
        }
        if let Some(l) = tick_llrs(&judged, &DOWN, dispersion) {
            for (d, l) in self.down.iter_mut().zip(l) {
                *d += l;
            }
        }
        match *c {
            Counts::Share { n, bad, .. } => {
                self.n2 += n as f64;
                self.x2 += bad;
                self.total += n as f64;
            }
            Counts::Ratio {
                x1,
                n1,
                x2,
                n2,
                harm,
                floor,
                ..
            } => {
                self.n1 += n1;
                self.x1 += x1;
                self.n2 += n2;
                self.x2 += x2;
                self.total += n2;
                if harm == Harm::Higher && floor > 0.0 {
                    let below = Counts::share(n2 as u64, x2, floor);
                    let acc = self.floor_down.get_or_insert([0.0; 6]);
                    if let Some(l) = tick_llrs(&below, &DOWN, dispersion) {
                        acc.iter_mut().zip(l).for_each(|(d, l)| *d += l);
                    }
                }
            }
        }
    }

    /// Forgets the inside evidence and the phase's counts, keeping the
    /// breach detector.
    fn restart_phase(&mut self) {
        *self = GateMemory {
            up: self.up,
            total: self.total,
            ..GateMemory::default()
        };
    }
}

/// Every gate's memory, and which phase the inside parts belong to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvidenceMemory {
    /// The start of the phase the inside evidence was gathered in.
    pub phase_started_at: Option<DateTime<Utc>>,
    pub gates: BTreeMap<GateKey, GateMemory>,
}

impl EvidenceMemory {
    /// Starts the inside evidence afresh when the phase changed.
    pub(crate) fn enter(&mut self, phase_started_at: Option<DateTime<Utc>>) {
        if self.phase_started_at != phase_started_at {
            self.phase_started_at = phase_started_at;
            self.gates.values_mut().for_each(GateMemory::restart_phase);
        }
    }
}

/// The evidence behind a sequential verdict, for reports and the status page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceView {
    pub verdict: Verdict,
    /// What is counted ("V2 5xx", "V2 requests slower than 120 ms").
    pub measure: String,
    /// Over the phase: V2's bad share, or V2's rate over V1's.
    pub estimate: Option<f64>,
    /// The anytime-valid interval of the estimate at `alpha_inside`.
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// The share (or ratio) the gate allows.
    pub limit: f64,
    /// Ratios: V1's and V2's rates over the phase, and which side is harm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
    /// V2's samples over the phase.
    pub samples: u64,
    /// Breach detector and the level it must reach (natural logs).
    pub breach: f64,
    pub breach_needed: f64,
    /// Inside evidence and the level it must reach (natural logs).
    pub inside: f64,
    pub inside_needed: f64,
    /// 1 - the anytime p-value of the verdict (inside or breach).
    pub confidence: f64,
    /// The updated memory, moved into the rollout state by the step.
    #[serde(skip)]
    pub memory: GateMemory,
}

impl EvidenceView {
    /// One line a release manager reads.
    pub fn words(&self) -> String {
        let pct = |x: f64| format!("{:.2} %", x * 100.0);
        let times = |x: f64| format!("{x:.2}x");
        let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("n/a".into(), f);
        let ci = |f: &dyn Fn(f64) -> String| match (self.low, self.high) {
            (Some(l), Some(h)) if h.is_finite() => format!(" [{}, {}]", f(l), f(h)),
            (Some(l), Some(_)) => format!(" [{}, inf]", f(l)),
            _ => String::new(),
        };
        let head = match self.rates {
            None => format!(
                "{} {}{} over the phase vs {}",
                self.measure,
                opt(self.estimate, &pct),
                ci(&pct),
                pct(self.limit)
            ),
            Some(r) => format!(
                "{}: V2 {} vs V1 {} over the phase, ratio {}{} vs {} {}",
                self.measure,
                opt(r.v2, &pct),
                opt(r.v1, &pct),
                opt(self.estimate, &times),
                ci(&times),
                if r.harm == Harm::Higher {
                    "at most"
                } else {
                    "at least"
                },
                times(self.limit)
            ),
        };
        let conf = format!("{:.1} % confidence", self.confidence * 100.0);
        match self.verdict {
            Verdict::Breach => format!("{head}: breach, {conf}"),
            Verdict::Inside => format!("{head}: inside, {conf}"),
            Verdict::Unknown => format!(
                "{head}: not yet shown inside (evidence {:.1} of {:.0} needed; breach {:.1} of {:.1})",
                self.inside.exp(),
                self.inside_needed.exp(),
                self.breach,
                self.breach_needed
            ),
        }
    }
}

/// The two rates behind a ratio.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub v1: Option<f64>,
    pub v2: Option<f64>,
    pub harm: Harm,
}

/// The sequential inputs of a tick.
pub struct Sequential<'a> {
    /// Every gate's memory at the end of the previous tick.
    pub memory: &'a EvidenceMemory,
    /// An upper bound on the tested gates, and the ticks the plan takes
    /// (the `G` and `N` of the breach threshold).
    pub gates: usize,
    pub looks: u64,
}

impl GateContext<'_> {
    /// Judges a tested measure from its memory plus this tick's counts.
    pub(super) fn sequential(&self, seq: &Sequential<'_>, m: Measure<'_>, c: Counts) -> GateResult {
        let g = &self.cfg.gates;
        let key = GateKey::new(m.gate, m.journey);
        let mut mem = seq.memory.gates.get(&key).cloned().unwrap_or_default();
        mem.fold(&c, g.dispersion);
        let h = breach_threshold(seq.gates, seq.looks, g.alpha);
        let need_in = (1.0 / g.alpha_inside).ln();
        let breach = mem.up.iter().copied().fold(0.0, f64::max);
        let mut inside = log_mean_exp(&mem.down);
        let mut need_in = need_in;
        let mut harmless = false;
        if let Counts::Ratio { floor, .. } = c {
            if let Some(below) = &mem.floor_down {
                // Two ways to be inside, each at half the error.
                need_in = (2.0 / g.alpha_inside).ln();
                inside = inside.max(log_mean_exp(below));
            }
            // A rate under the floor is no harm, whatever its ratio.
            harmless = floor > 0.0 && mem.n2 > 0.0 && mem.x2 as f64 / mem.n2 <= floor;
        }
        let rate = |x: u64, n: f64| (n > 0.0).then(|| x as f64 / n);
        let (limit, estimate, interval, rates) = match c {
            Counts::Share { p0, .. } => (
                p0,
                rate(mem.x2, mem.n2),
                share_interval(mem.n2 as u64, mem.x2, g.alpha_inside),
                None,
            ),
            Counts::Ratio { m: lim, harm, .. } => (
                lim,
                (mem.x1 > 0)
                    .then(|| rate(mem.x2, mem.n2).zip(rate(mem.x1, mem.n1)))
                    .flatten()
                    .map(|(a, b)| a / b),
                ratio_interval(mem.x1, mem.n1, mem.x2, mem.n2, g.alpha_inside),
                Some(Rates {
                    v1: rate(mem.x1, mem.n1),
                    v2: rate(mem.x2, mem.n2),
                    harm,
                }),
            ),
        };
        let samples = mem.n2 as u64;
        let too_few = samples < m.min_samples
            || matches!(c, Counts::Ratio { .. }) && (mem.n1 as u64) < m.min_samples;
        let enough_for_breach = mem.total >= m.min_samples as f64;
        let (verdict, status, confidence) = if breach >= h && !harmless && enough_for_breach {
            let p = (h - breach).exp() * g.alpha;
            (Verdict::Breach, GateStatus::Red, 1.0 - p.min(1.0))
        } else if !too_few && inside >= need_in {
            (Verdict::Inside, GateStatus::Green, 1.0 - (-inside).exp())
        } else {
            (Verdict::Unknown, GateStatus::Yellow, 0.0)
        };
        if verdict == Verdict::Breach {
            // A recovery must be shown on data after the fault (the counts
            // stay: they describe the phase).
            mem.down = [0.0; 6];
            mem.floor_down = None;
        }
        let view = EvidenceView {
            verdict,
            measure: m.counted.to_string(),
            estimate,
            low: interval.map(|i| i.0),
            high: interval.map(|i| i.1),
            limit,
            rates,
            samples,
            breach,
            breach_needed: h,
            inside,
            inside_needed: need_in,
            confidence,
            memory: mem,
        };
        let reason = if too_few && verdict != Verdict::Breach {
            let n1 = (matches!(c, Counts::Ratio { .. }) && (view.memory.n1 as u64) < m.min_samples)
                .then_some(view.memory.n1 as u64);
            match n1 {
                Some(n1) if samples >= m.min_samples => format!(
                    "insufficient data: V1 {n1} of {} samples over the phase",
                    m.min_samples
                ),
                _ => format!(
                    "insufficient data: {samples} of {} samples over the phase",
                    m.min_samples
                ),
            }
        } else {
            view.words()
        };
        GateResult {
            name: m.gate,
            journey: m.journey.map(String::from),
            status,
            value: m.value,
            threshold: m.threshold,
            samples: m.samples,
            reason,
            p_value: None,
            recovery: None,
            evidence: Some(Box::new(view)),
        }
    }
}
