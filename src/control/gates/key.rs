//! Which gate a result belongs to: the family as an enum, the per-journey
//! (or per-funnel, per-timing, per-region) instance as its label.
//!
//! The gates' memory between ticks (previous status, recovery, RED timers) is
//! keyed by [`GateKey`], so no decision depends on how a key is spelled. The
//! key still prints as it always did (`latency_p95/search`, `error_rate`):
//! that text is what the status JSON, the state file, replay records,
//! reports and metrics show, and what operators grep for.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A gate family: what a gate judges. A closed set: every gate the
/// evaluation can produce is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gate {
    /// 5xx share of V2 against a ceiling and against V1 plus a margin.
    ErrorRate,
    /// V2's P95 latency per journey against the phase's (or journey's) limit.
    LatencyP95,
    /// V2's median latency per journey against V1's.
    LatencyVsControl,
    /// V2's latency tail per journey against V1's P95 (sequential judge).
    TailVsControl,
    /// Success share of a payment journey.
    PaymentSuccess,
    /// Success share of a journey with its own `success_min`.
    SuccessRate,
    /// Cache hit ratio of a read-heavy journey.
    CacheHit,
    /// JS errors per page view against V1.
    JsErrors,
    /// A configured funnel ratio against V1.
    Funnel,
    /// A configured timing beacon's median against V1.
    Timing,
    /// V2's share of the SLO's monthly error budget.
    ErrorBudget,
    /// Requests shed at V2's reserved capacity.
    Concurrency,
    /// Observed V2 user share against the weights in force, per region.
    SplitSkew,
    /// Mirrored answers of a shadow phase that differ from V1's.
    ShadowDiff,
    /// Revenue per user of a `revenue` beacon name against V1.
    Revenue,
    /// V1's P95 per journey against the stored golden baseline's.
    Drift,
}

impl Gate {
    pub const ALL: [Gate; 16] = [
        Gate::ErrorRate,
        Gate::LatencyP95,
        Gate::LatencyVsControl,
        Gate::TailVsControl,
        Gate::PaymentSuccess,
        Gate::SuccessRate,
        Gate::CacheHit,
        Gate::JsErrors,
        Gate::Funnel,
        Gate::Timing,
        Gate::ErrorBudget,
        Gate::Concurrency,
        Gate::SplitSkew,
        Gate::ShadowDiff,
        Gate::Revenue,
        Gate::Drift,
    ];

    /// Whether a sustained RED of this gate may roll back, or only hold.
    /// `split_skew` only holds: a skewed split is evidence about the
    /// measurement (bots, caches, a regional outage, or a client choosing its
    /// own user keys), not about V2's health, and anyone can move it.
    /// `drift` likewise: V1 drifting from the baseline says nothing against V2.
    pub fn may_roll_back(self) -> bool {
        !matches!(self, Gate::SplitSkew | Gate::Drift)
    }

    /// The name in the status JSON, reports and the `gate` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::ErrorRate => "error_rate",
            Gate::LatencyP95 => "latency_p95",
            Gate::LatencyVsControl => "latency_vs_control",
            Gate::TailVsControl => "tail_vs_control",
            Gate::PaymentSuccess => "payment_success",
            Gate::SuccessRate => "success_rate",
            Gate::CacheHit => "cache_hit",
            Gate::JsErrors => "js_errors",
            Gate::Funnel => "funnel",
            Gate::Timing => "timing",
            Gate::ErrorBudget => "error_budget",
            Gate::Concurrency => "concurrency",
            Gate::SplitSkew => "split_skew",
            Gate::ShadowDiff => "shadow_diff",
            Gate::Revenue => "revenue",
            Gate::Drift => "drift",
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no gate of this version (in a state file or a record).
#[derive(Debug, thiserror::Error)]
#[error("unknown gate `{0}`")]
pub struct UnknownGate(String);

impl FromStr for Gate {
    type Err = UnknownGate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Gate::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| UnknownGate(s.to_string()))
    }
}

impl PartialEq<str> for Gate {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Gate {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Gate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Gate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One gate instance: its family and, for per-journey gates, the label.
///
/// Equality, order and hash are those of the printed key (`name` or
/// `name/label`). Gate names contain no `/`, so the text is unambiguous; and
/// ordering by it keeps maps keyed by gate (the state file's `gate_status`,
/// `red_since`, `gate_recovery`) in the order, and so the bytes, they always
/// had, and the oldest-RED tie-break picking the same gate.
#[derive(Clone, Debug)]
pub struct GateKey {
    gate: Gate,
    /// `name` or `name/label`, built once.
    text: Box<str>,
}

// === impl GateKey ===

impl GateKey {
    pub fn new(gate: Gate, label: Option<&str>) -> Self {
        let text = match label {
            Some(l) => format!("{gate}/{l}").into_boxed_str(),
            None => gate.as_str().into(),
        };
        GateKey { gate, text }
    }

    pub fn gate(&self) -> Gate {
        self.gate
    }

    /// The journey, funnel, timing or region this instance judges.
    pub fn label(&self) -> Option<&str> {
        self.text.split_once('/').map(|(_, l)| l)
    }

    /// The printed key, as the status JSON and reports show it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for GateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for GateKey {
    type Err = UnknownGate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, label) = match s.split_once('/') {
            Some((name, label)) => (name, Some(label)),
            None => (s, None),
        };
        let gate = name
            .parse::<Gate>()
            .map_err(|_| UnknownGate(s.to_string()))?;
        Ok(GateKey::new(gate, label))
    }
}

impl PartialEq for GateKey {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for GateKey {}

impl PartialOrd for GateKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GateKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for GateKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        self.text.hash(state)
    }
}

/// Looks a gate up by its printed key (tests, operators' keys).
impl Borrow<str> for GateKey {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for GateKey {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for GateKey {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl Serialize for GateKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
