//! `[[journeys]]`: how requests are classified, and per-journey thresholds.

use serde::Deserialize;

use super::values::{fraction, label_name, must_be, positive_ms};
use super::{invalid, Invalid};
use crate::routing::journeys::{method_bit, Journey, JourneyKind, Journeys, PathMatch};

/// Bounds metric label cardinality regardless of config mistakes.
const MAX_JOURNEYS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileJourney {
    pub name: String,
    pub path_prefix: Option<String>,
    pub path_pattern: Option<String>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub kind: JourneyKind,
    /// Overrides the phase's P95 gate for this journey.
    pub p95_ms: Option<f64>,
    /// Minimum success rate (non-5xx share); payment journeys default to `payment_success_min`.
    pub success_min: Option<f64>,
    /// V2's failed share at most V1's plus this (an absolute share, like
    /// `rollout.error_rate_margin`): "no increase above baseline".
    pub success_vs_v1: Option<f64>,
    /// Mostly cacheable reads: gets the cache hit ratio gate (`gates.cache_hit_min`).
    #[serde(default)]
    pub read_heavy: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyLimits {
    pub p95_ms: Option<f64>,
    pub success_min: Option<f64>,
    /// Margin of V2's failed share over V1's; `None`: not compared with V1.
    pub success_vs_v1: Option<f64>,
    pub read_heavy: bool,
}

/// The journey table and, per journey index (incl. `other`), its limits.
pub(super) fn validate(files: Vec<FileJourney>) -> Result<(Journeys, Vec<JourneyLimits>), Invalid> {
    if files.len() >= MAX_JOURNEYS {
        return Err(invalid(
            "journeys",
            format!("at most {} journeys", MAX_JOURNEYS - 1),
        ));
    }
    let mut list = Vec::with_capacity(files.len());
    let mut journey_limits = Vec::with_capacity(files.len() + 1);
    for (i, j) in files.into_iter().enumerate() {
        let key = |k: &str| format!("journeys[{i}].{k}");
        label_name(&key("name"), &j.name)?;
        if j.name == Journeys::OTHER || list.iter().any(|x: &Journey| x.name == j.name) {
            return Err(invalid(
                key("name"),
                format!("{:?} is reserved or used twice", j.name),
            ));
        }
        let path = match (j.path_prefix, j.path_pattern) {
            (Some(p), None) if p.starts_with('/') => PathMatch::Prefix(p),
            (None, Some(p)) if p.starts_with('/') => {
                let segs: Vec<String> = p
                    .trim_start_matches('/')
                    .split('/')
                    .map(String::from)
                    .collect();
                if segs.iter().rev().skip(1).any(|s| s == "**") {
                    return Err(invalid(
                        key("path_pattern"),
                        "`**` may only be the last segment",
                    ));
                }
                PathMatch::Pattern(segs)
            }
            (Some(p), None) => {
                return Err(invalid(
                    key("path_prefix"),
                    format!("{p:?} must start with '/'"),
                ))
            }
            (None, Some(p)) => {
                return Err(invalid(
                    key("path_pattern"),
                    format!("{p:?} must start with '/'"),
                ))
            }
            _ => {
                return Err(invalid(
                    key("path_prefix"),
                    "give exactly one of path_prefix or path_pattern",
                ))
            }
        };
        let mut methods = 0u16;
        for (m_i, m) in j.methods.iter().flatten().enumerate() {
            let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .ok()
                .filter(|m| method_bit(m) != 512)
                .ok_or_else(|| {
                    invalid(
                        format!("journeys[{i}].methods[{m_i}]"),
                        format!("{m:?} is not an HTTP method"),
                    )
                })?;
            methods |= method_bit(&method);
        }
        if let Some(p) = j.p95_ms {
            positive_ms(&key("p95_ms"), p)?;
        }
        if let Some(s) = j.success_min {
            fraction(&key("success_min"), s)?;
        }
        if let Some(m) = j.success_vs_v1 {
            // A margin of 0 puts a V2 as good as V1 on the bound itself,
            // where no amount of data shows it inside.
            let ok = m > 0.0 && m <= 1.0;
            must_be(
                &key("success_vs_v1"),
                m,
                ok,
                "a share above 0 and at most 1",
            )?;
        }
        journey_limits.push(JourneyLimits {
            p95_ms: j.p95_ms,
            success_min: j.success_min,
            success_vs_v1: j.success_vs_v1,
            read_heavy: j.read_heavy,
        });
        list.push(Journey {
            name: j.name,
            path,
            methods,
            kind: j.kind,
        });
    }
    journey_limits.push(JourneyLimits::default());
    Ok((Journeys::new(list), journey_limits))
}
