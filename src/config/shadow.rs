//! `[shadow]`: mirroring to V2 during `mode = "shadow"` phases, and how its
//! answers are compared.

use std::time::Duration;

use serde::Deserialize;

use super::values::{defaults, fraction, yes, Dur};
use super::{invalid, Invalid};
use crate::routing::journeys::{JourneyKind, Journeys};

defaults! {
    const DEFAULT_SHADOW_QUEUE: usize = 1024 => fn default_shadow_queue() -> usize;
    const DEFAULT_SHADOW_CONCURRENCY: usize = 64 => fn default_shadow_concurrency() -> usize;
    const DEFAULT_SHADOW_TIMEOUT: Duration = Duration::from_secs(10)
        => fn default_shadow_timeout() -> Dur;
    const DEFAULT_SHADOW_MAX_BODY: usize = 256 * 1024 => fn default_shadow_max_body() -> usize;
    const DEFAULT_SHADOW_DIFF_RATE_MAX: f64 = 0.01 => fn default_shadow_diff_rate_max() -> f64;
}

/// `[shadow]`: mirroring during `mode = "shadow"` phases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileShadow {
    /// Mirrors waiting for a slot; when full, a mirror is dropped (counted).
    #[serde(default = "default_shadow_queue")]
    pub queue: usize,
    /// Mirrors in flight to V2 at most.
    #[serde(default = "default_shadow_concurrency")]
    pub concurrency: usize,
    /// A mirror without V2's response headers by then counts as `error`.
    #[serde(default = "default_shadow_timeout")]
    pub timeout: Dur,
    /// Journeys never mirrored (payment journeys never are).
    #[serde(default)]
    pub exclude_journeys: Vec<String>,
    /// JSON keys left out of the body fingerprint (timestamps, ids...).
    #[serde(default)]
    pub ignore_keys: Vec<String>,
    /// Compare the body length bucket (powers of two).
    #[serde(default = "yes")]
    pub compare_length: bool,
    /// Bodies fingerprinted up to this size; beyond, only type and length count.
    #[serde(default = "default_shadow_max_body")]
    pub max_body: usize,
    /// The `shadow_diff` gate: share of compared answers that differ.
    #[serde(default = "default_shadow_diff_rate_max")]
    pub diff_rate_max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    pub queue: usize,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Per journey index (incl. `other`): mirrored in shadow phases (GET/HEAD only).
    pub mirrored: Vec<bool>,
    pub ignore_keys: Vec<String>,
    pub compare_length: bool,
    pub max_body: usize,
    pub diff_rate_max: f64,
}

pub(super) fn validate(s: FileShadow, journeys: &Journeys) -> Result<ShadowConfig, Invalid> {
    if s.queue == 0 {
        return Err(invalid("shadow.queue", "must be at least 1"));
    }
    if s.concurrency == 0 {
        return Err(invalid("shadow.concurrency", "must be at least 1"));
    }
    if s.timeout.0.is_zero() {
        return Err(invalid("shadow.timeout", "must be above zero"));
    }
    let mut mirrored: Vec<bool> = journeys
        .ids()
        .map(|id| journeys.kind(id) != JourneyKind::Payment)
        .collect();
    for (i, name) in s.exclude_journeys.iter().enumerate() {
        let id = journeys.by_name(name).ok_or_else(|| {
            invalid(
                format!("shadow.exclude_journeys[{i}]"),
                format!("no journey named {name:?}"),
            )
        })?;
        mirrored[id.index()] = false;
    }
    Ok(ShadowConfig {
        queue: s.queue,
        concurrency: s.concurrency,
        timeout: s.timeout.0,
        mirrored,
        ignore_keys: s.ignore_keys,
        compare_length: s.compare_length,
        max_body: s.max_body,
        diff_rate_max: fraction("shadow.diff_rate_max", s.diff_rate_max)?,
    })
}
