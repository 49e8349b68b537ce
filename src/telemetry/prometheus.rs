//! `/metrics`: the Prometheus text exposition.
//!
//! Two sources, one page. Control-plane series (weights, phase, gates,
//! rollbacks, decisions) change a few times per tick and go through the
//! `metrics` crate into a `metrics-exporter-prometheus` recorder owned by this
//! struct (not the global one, so several instances can live in one test
//! process). The request-path families are rendered here straight from the
//! lock-free [`Telemetry`] cells at scrape time, because the request path must
//! not pay for label lookups, and a latency histogram with fixed `le` buckets
//! is derived from the fine-grained cells (exact to the cells' 1/64 width).

use std::fmt::Write as _;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::routing::journeys::Journeys;
use crate::routing::Variant;
use crate::telemetry::beacons::{BeaconCounts, BeaconReject, BeaconType};
use crate::telemetry::names::*;
use crate::telemetry::shadow::ShadowClass;
use crate::telemetry::{StatusClass, Telemetry, UpstreamErrorKind};

/// `le` bounds of the exported latency histogram, in seconds; they include the
/// default gate thresholds (120/130/160 ms) so dashboards can read them exactly.
const LE_SECONDS: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.12, 0.13, 0.16, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

static META: Metadata<'static> = Metadata::new("rollgate", Level::INFO, None);

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = Self { recorder, handle };
        m.describe_gauge(
            ROUTE_WEIGHT_PERCENT,
            "Share of users routed to each variant, in percent.",
        );
        m.describe_gauge(
            ROLLOUT_PHASE,
            "Index of the current rollout phase (0-based); -1 before the first phase.",
        );
        m.describe_gauge(GATE_STATUS, "Gate status: 0 green, 1 yellow, 2 red.");
        m.describe_gauge(
            STATE_PERSIST_DEGRADED,
            "1 while the rollout state file does not hold the current state (a failed write is being retried), else 0.",
        );
        m.recorder
            .describe_counter(ROLLBACKS_TOTAL.into(), None, "Rollbacks by trigger.".into());
        m.recorder.describe_counter(
            DECISIONS_TOTAL.into(),
            None,
            "Controller decisions by action.".into(),
        );
        m
    }

    fn describe_gauge(&self, name: &'static str, help: &'static str) {
        self.recorder
            .describe_gauge(name.into(), Some(Unit::Count), help.into());
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect();
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &META)
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    /// The whole page: control-plane series, then the request-path families.
    pub fn render(
        &self,
        telemetry: &Telemetry,
        journeys: &Journeys,
        beacon_names: &[String],
    ) -> String {
        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        render_telemetry(&mut out, telemetry, journeys);
        render_beacons(&mut out, telemetry, beacon_names);
        render_shadow(&mut out, telemetry, journeys);
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the request-path families from one snapshot of the cells.
pub fn render_telemetry(out: &mut String, telemetry: &Telemetry, journeys: &Journeys) {
    let snap = telemetry.snapshot();
    let cells = || {
        journeys
            .ids()
            .flat_map(|j| Variant::ALL.into_iter().map(move |v| (j, v)))
    };

    family(
        out,
        REQUESTS_TOTAL,
        "counter",
        "Proxied requests by journey, variant and status class.",
    );
    for (j, v) in cells() {
        let c = snap.cell(j, v);
        for class in StatusClass::ALL {
            let _ = writeln!(
                out,
                "{REQUESTS_TOTAL}{{journey=\"{}\",variant=\"{}\",class=\"{}\"}} {}",
                journeys.name(j),
                v.label(),
                class.label(),
                c.classes[class as usize]
            );
        }
    }

    family(
        out,
        REQUEST_DURATION_SECONDS,
        "histogram",
        "Time from the whole request at the upstream to its response headers, by journey and variant.",
    );
    for (j, v) in cells() {
        let c = snap.cell(j, v);
        let labels = format!("journey=\"{}\",variant=\"{}\"", journeys.name(j), v.label());
        for le in LE_SECONDS {
            let n = c.latency.count_le(le * 1e6);
            let _ = writeln!(
                out,
                "{REQUEST_DURATION_SECONDS}_bucket{{{labels},le=\"{le}\"}} {n}"
            );
        }
        let count = c.latency.count();
        let _ = writeln!(
            out,
            "{REQUEST_DURATION_SECONDS}_bucket{{{labels},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{REQUEST_DURATION_SECONDS}_sum{{{labels}}} {}",
            c.latency.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{REQUEST_DURATION_SECONDS}_count{{{labels}}} {count}");
    }

    family(
        out,
        UPSTREAM_ERRORS_TOTAL,
        "counter",
        "Upstream failures by variant and kind (connect, timeout, reset, protocol).",
    );
    for v in Variant::ALL {
        for kind in UpstreamErrorKind::ALL {
            let n: u64 = journeys
                .ids()
                .map(|j| snap.cell(j, v).errors[kind as usize])
                .sum();
            let _ = writeln!(
                out,
                "{UPSTREAM_ERRORS_TOTAL}{{variant=\"{}\",kind=\"{}\"}} {n}",
                v.label(),
                kind.label()
            );
        }
    }

    family(
        out,
        INFLIGHT_REQUESTS,
        "gauge",
        "Requests in flight (until the response body ends), by variant.",
    );
    for v in Variant::ALL {
        let n: i64 = journeys.ids().map(|j| snap.cell(j, v).inflight).sum();
        let _ = writeln!(
            out,
            "{INFLIGHT_REQUESTS}{{variant=\"{}\"}} {}",
            v.label(),
            n.max(0)
        );
    }

    family(
        out,
        CACHE_HITS_TOTAL,
        "counter",
        "Responses the upstream marked as cache hits, by journey and variant.",
    );
    for (j, v) in cells() {
        let _ = writeln!(
            out,
            "{CACHE_HITS_TOTAL}{{journey=\"{}\",variant=\"{}\"}} {}",
            journeys.name(j),
            v.label(),
            snap.cell(j, v).cache_hits
        );
    }

    family(
        out,
        SHED_REQUESTS_TOTAL,
        "counter",
        "Requests refused with 503 because the variant was over its reserved capacity.",
    );
    for v in Variant::ALL {
        let _ = writeln!(
            out,
            "{SHED_REQUESTS_TOTAL}{{variant=\"{}\"}} {}",
            v.label(),
            telemetry.shed(v)
        );
    }
}

/// Beacon families: accepted events by type, name and variant; refusals by reason.
pub fn render_beacons(out: &mut String, telemetry: &Telemetry, names: &[String]) {
    let counts = telemetry.beacons.snapshot();
    // With no beacon names configured the family can have no series; a
    // header without samples would only confuse scrapers and dashboards.
    if !names.is_empty() {
        family(
            out,
            BEACON_EVENTS_TOTAL,
            "counter",
            "Client beacon events accepted, by type, configured name and variant.",
        );
    }
    for (i, name) in names.iter().enumerate() {
        for v in Variant::ALL {
            let Some(c) = counts.get(i * 2 + v as usize) else {
                continue;
            };
            for t in BeaconType::ALL {
                let _ = writeln!(
                    out,
                    "{BEACON_EVENTS_TOTAL}{{type=\"{}\",name=\"{name}\",variant=\"{}\"}} {}",
                    t.label(),
                    v.label(),
                    c.counts[t as usize]
                );
            }
        }
    }
    render_revenue(out, &counts, names);
    family(
        out,
        BEACON_REJECTED_TOTAL,
        "counter",
        "Client beacon batches refused, by reason (400 bad input; 429 rate_limited: the client address or sticky key is at its per-window cap).",
    );
    for r in BeaconReject::ALL {
        let _ = writeln!(
            out,
            "{BEACON_REJECTED_TOTAL}{{reason=\"{}\"}} {}",
            r.label(),
            telemetry.beacons.rejected(r)
        );
    }
}

/// Revenue of the names that had `revenue` events, by name and variant (a
/// name whose clients never sent one has no series, as an unused type has
/// none in a dashboard's eyes).
fn render_revenue(out: &mut String, counts: &[BeaconCounts], names: &[String]) {
    let paid = |i: usize| {
        Variant::ALL.iter().any(|&v| {
            counts
                .get(i * 2 + v as usize)
                .is_some_and(|c| c.counts[BeaconType::Revenue as usize] > 0)
        })
    };
    let used: Vec<usize> = (0..names.len()).filter(|&i| paid(i)).collect();
    if used.is_empty() {
        return;
    }
    family(
        out,
        REVENUE_TOTAL,
        "counter",
        "Revenue reported by client beacons of type revenue, in the currency's minor unit (e.g. cents), by configured name and variant.",
    );
    for i in used {
        for v in Variant::ALL {
            let revenue = counts.get(i * 2 + v as usize).map_or(0, |c| c.revenue);
            let _ = writeln!(
                out,
                "{REVENUE_TOTAL}{{name=\"{}\",variant=\"{}\"}} {revenue}",
                names[i],
                v.label()
            );
        }
    }
}

/// Shadow families: mirrored requests by V2's answer class, the mirrors'
/// latency, answers that differed from V1's, mirrors dropped on a full queue.
pub fn render_shadow(out: &mut String, telemetry: &Telemetry, journeys: &Journeys) {
    let snap = telemetry.shadow.snapshot();
    family(
        out,
        SHADOW_REQUESTS_TOTAL,
        "counter",
        "Requests mirrored to V2 in shadow phases, by journey and V2's answer class (error = no answer).",
    );
    for j in journeys.ids() {
        let Some(c) = snap.get(j.index()) else {
            continue;
        };
        for class in ShadowClass::ALL {
            let _ = writeln!(
                out,
                "{SHADOW_REQUESTS_TOTAL}{{journey=\"{}\",class=\"{}\"}} {}",
                journeys.name(j),
                class.label(),
                c.classes[class as usize]
            );
        }
    }
    family(
        out,
        SHADOW_DURATION_SECONDS,
        "histogram",
        "Time from mirror to V2's response headers, by journey.",
    );
    for j in journeys.ids() {
        let Some(c) = snap.get(j.index()) else {
            continue;
        };
        let labels = format!("journey=\"{}\"", journeys.name(j));
        for le in LE_SECONDS {
            let n = c.duration.count_le(le * 1e6);
            let _ = writeln!(
                out,
                "{SHADOW_DURATION_SECONDS}_bucket{{{labels},le=\"{le}\"}} {n}"
            );
        }
        let count = c.duration.count();
        let _ = writeln!(
            out,
            "{SHADOW_DURATION_SECONDS}_bucket{{{labels},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{SHADOW_DURATION_SECONDS}_sum{{{labels}}} {}",
            c.duration.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{SHADOW_DURATION_SECONDS}_count{{{labels}}} {count}");
    }
    family(
        out,
        SHADOW_DIFFS_TOTAL,
        "counter",
        "Mirrored answers whose status or body fingerprint differed from V1's, by journey.",
    );
    for j in journeys.ids() {
        let Some(c) = snap.get(j.index()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{SHADOW_DIFFS_TOTAL}{{journey=\"{}\"}} {}",
            journeys.name(j),
            c.diffs
        );
    }
    family(
        out,
        SHADOW_DROPPED_TOTAL,
        "counter",
        "Mirrors dropped because the shadow queue was full (the real request is unaffected).",
    );
    let _ = writeln!(out, "{SHADOW_DROPPED_TOTAL} {}", telemetry.shadow.dropped());
}
