//! Every exported metric family name, in one place. Dashboards and alerts
//! outside the project rely on them: never rename one.
//!
//! To add a metric: 1. add its name here, 2. give it HELP text where it is
//! registered or rendered (`crate::telemetry::prometheus`), 3. make sure a test scrapes it.

pub const REQUESTS_TOTAL: &str = "rollgate_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "rollgate_request_duration_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "rollgate_upstream_errors_total";
pub const INFLIGHT_REQUESTS: &str = "rollgate_inflight_requests";
pub const CACHE_HITS_TOTAL: &str = "rollgate_cache_hits_total";
pub const SHED_REQUESTS_TOTAL: &str = "rollgate_shed_requests_total";
pub const ROUTE_WEIGHT_PERCENT: &str = "rollgate_route_weight_percent";
pub const ROLLOUT_PHASE: &str = "rollgate_rollout_phase";
pub const GATE_STATUS: &str = "rollgate_gate_status";
pub const ROLLBACKS_TOTAL: &str = "rollgate_rollbacks_total";
pub const DECISIONS_TOTAL: &str = "rollgate_decisions_total";
pub const STATE_PERSIST_DEGRADED: &str = "rollgate_state_persist_degraded";
pub const BEACON_EVENTS_TOTAL: &str = "rollgate_beacon_events_total";
pub const BEACON_REJECTED_TOTAL: &str = "rollgate_beacon_rejected_total";
pub const REVENUE_TOTAL: &str = "rollgate_revenue_total";
pub const SHADOW_REQUESTS_TOTAL: &str = "rollgate_shadow_requests_total";
pub const SHADOW_DURATION_SECONDS: &str = "rollgate_shadow_duration_seconds";
pub const SHADOW_DIFFS_TOTAL: &str = "rollgate_shadow_diffs_total";
pub const SHADOW_DROPPED_TOTAL: &str = "rollgate_shadow_dropped_total";
