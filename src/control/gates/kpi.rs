//! Latency and error figures of each variant over a window: what the
//! status page and reports show next to the gates.

use serde::{Deserialize, Serialize};

use crate::routing::journeys::JourneyKind;
use crate::telemetry::{CellCounts, UpstreamErrorKind};

/// Latency and error figures of one variant over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantKpi {
    pub requests: u64,
    pub server_errors: u64,
    pub upstream_errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cache_hits: u64,
    /// Revenue per `revenue` beacon name seen in the window (overall
    /// figures only; journeys have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revenue: Vec<super::revenue::Revenue>,
}

impl VariantKpi {
    pub fn of(c: &CellCounts) -> Self {
        let requests = c.requests();
        let q = |p| c.latency.quantile_us(p).map(|us| us / 1000.0);
        VariantKpi {
            requests,
            server_errors: c.server_errors(),
            upstream_errors: UpstreamErrorKind::ALL
                .iter()
                .map(|k| c.errors[*k as usize])
                .sum(),
            error_rate: (requests > 0).then(|| c.server_errors() as f64 / requests as f64),
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            cache_hits: c.cache_hits,
            revenue: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JourneyKpi {
    pub journey: String,
    pub kind: JourneyKind,
    pub v1: VariantKpi,
    pub v2: VariantKpi,
}
