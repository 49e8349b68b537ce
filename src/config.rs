//! Configuration: the TOML file format (`File*` types, serde) and the checked
//! runtime [`Config`] it becomes through [`FileConfig::validate`].
//!
//! Unknown keys are errors (`deny_unknown_fields`): a typo in a threshold must
//! not silently fall back to a default on the edge of production. Every error
//! names the file, the key and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use crate::journeys::{method_bit, Journey, JourneyKind, Journeys, PathMatch};
use crate::routing::WeightBp;

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_STATE_DIR: &str = "./rollgate-state";
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Bounds metric label cardinality regardless of config mistakes.
pub const MAX_JOURNEYS: usize = 256;
/// Flags that must all be 1 before the first live phase, unless configured otherwise.
pub const DEFAULT_REQUIRED_FLAGS: [&str; 3] =
    ["SHADOW_PASS_24H", "A2_V26_COMPLIANT", "EVIDENCE_BUNDLE"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Parse {
        file: String,
        source: Box<toml::de::Error>,
    },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// A validation failure before the file name is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A duration written as a string: "250ms", "15s", "6h", "1h 30m".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (use e.g. \"15s\", \"6h\")"
            ))
        })
    }
}

// ===== file format =====

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: FileServer,
    pub upstreams: FileUpstreams,
    #[serde(default)]
    pub routing: FileRouting,
    #[serde(default)]
    pub journeys: Vec<FileJourney>,
    #[serde(default)]
    pub rollout: FileRollout,
    #[serde(default)]
    pub gates: FileGates,
    #[serde(default)]
    pub beacons: FileBeacons,
    #[serde(default)]
    pub shadow: FileShadow,
    #[serde(default)]
    pub replay: FileReplay,
}

/// `[replay]`: the evaluation records `rollgate replay` reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReplay {
    /// Append every evaluation to `state_dir/evaluations.jsonl`.
    #[serde(default = "yes")]
    pub record: bool,
    /// Rotate past this size (one previous file is kept).
    #[serde(default = "default_replay_max_bytes")]
    pub max_bytes: u64,
}

impl Default for FileReplay {
    fn default() -> Self {
        toml::from_str("").expect("every replay key has a default")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    pub record: bool,
    pub max_bytes: u64,
}

/// `[shadow]`: mirroring during `mode = "shadow"` phases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileShadow {
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

impl Default for FileShadow {
    fn default() -> Self {
        toml::from_str("").expect("every shadow key has a default")
    }
}

/// `[beacons]`: the client beacon endpoint `POST /_rollgate/beacon`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBeacons {
    /// Accepted event names; any other name rejects the batch (bounded labels).
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    pub admin_token: Option<String>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Only for the load test's overhead comparison: `false` skips recording.
    #[serde(default = "yes")]
    pub telemetry: bool,
    /// Proxy workers; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// `per_core`: each worker is a thread with its own single-threaded
    /// runtime, listener (SO_REUSEPORT) and upstream pool, like nginx's worker
    /// processes, and the admin API and controller run on one more thread
    /// (so a control tick never delays a request). `shared`: one
    /// multi-threaded runtime with `workers` threads and one listener, which
    /// also runs the admin API and the controller.
    #[serde(default)]
    pub runtime: RuntimeMode,
    /// Time allowed for a complete request head (slowloris guard). For
    /// HTTP/1.1 it also bounds how long a keep-alive connection may sit idle
    /// waiting for its next request: hyper runs one timer for both.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Dur,
    /// Open client connections per listener; at the cap accepting pauses.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Dur,
    pub tls: Option<FileTls>,
    /// One log line per request (method, journey, variant, status, latency; no path or query).
    #[serde(default)]
    pub access_log: bool,
    /// Share of requests the access log keeps, in (0, 1].
    #[serde(default = "default_access_log_sample")]
    pub access_log_sample: f64,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeMode {
    #[default]
    PerCore,
    Shared,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreams {
    pub v1: String,
    pub v2: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time to the upstream's response headers; the body may take longer.
    #[serde(default = "default_response_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout: Dur,
    /// Idle keep-alive connections kept per worker and upstream.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    /// V2's in-flight cap; requests beyond it are shed with 503. 0 = no cap.
    #[serde(default)]
    pub reserved_capacity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouting {
    pub sticky_header: Option<String>,
    pub sticky_cookie: Option<String>,
    #[serde(default = "yes")]
    pub expose_variant_header: bool,
    #[serde(default)]
    pub allow_override_header: bool,
    #[serde(default = "default_salt")]
    pub salt: String,
    /// HMAC key of `rg_bucket`; generated and kept in `state_dir` when absent.
    pub cookie_secret: Option<String>,
    /// Request header naming the client's region (split skew per region).
    pub region_header: Option<String>,
    /// The region values counted separately; any other value is `other`.
    #[serde(default)]
    pub regions: Vec<String>,
}

impl Default for FileRouting {
    fn default() -> Self {
        Self {
            sticky_header: None,
            sticky_cookie: None,
            expose_variant_header: true,
            allow_override_header: false,
            salt: default_salt(),
            cookie_secret: None,
            region_header: None,
            regions: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJourney {
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
    /// Mostly cacheable reads: gets the cache hit ratio gate (`gates.cache_hit_min`).
    #[serde(default)]
    pub read_heavy: bool,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum FilePromotionWindow {
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
pub struct FilePhase {
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
    pub mode: PhaseMode,
    /// Status webhook cadence during this phase.
    pub update_every: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRollout {
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

/// `[gates]`: how the gates judge, beyond the thresholds of `[rollout]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGates {
    /// Significance level of the comparative gates (per gate and evaluation).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// A gate that is not GREEN turns GREEN only inside its threshold by this share...
    #[serde(default = "default_band")]
    pub promote_band: f64,
    /// ...and turns RED only beyond its threshold by this share.
    #[serde(default = "default_band")]
    pub rollback_band: f64,
    /// How long a non-GREEN gate must stay inside the promote band before it is GREEN again.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    /// `latency_vs_control`: V2's median may exceed V1's by this share (plus the slack).
    #[serde(default = "default_latency_vs_control_max")]
    pub latency_vs_control_max: f64,
    #[serde(default = "default_latency_vs_control_slack_ms")]
    pub latency_vs_control_slack_ms: f64,
    /// Beacon name counting page views: enables the `js_errors` gate.
    pub js_errors_per: Option<String>,
    /// `js_errors`: V2's JS errors per page view at most this share above V1's.
    #[serde(default = "default_js_errors_max_increase")]
    pub js_errors_max_increase: f64,
    /// `cache_hit`: minimum V2 cache hit ratio on `read_heavy` journeys.
    #[serde(default = "default_cache_hit_min")]
    pub cache_hit_min: f64,
    /// `error_budget`: the SLO (share of good requests) whose budget V2 spends...
    pub slo_target: Option<f64>,
    /// ...over this period...
    #[serde(default = "default_slo_period")]
    pub slo_period: Dur,
    /// ...of which V2 may consume at most this share during the rollout.
    #[serde(default = "default_error_budget_max")]
    pub error_budget_max: f64,
    /// `split_skew`: observed V2 share of users within this share of the target.
    #[serde(default = "default_split_skew_tolerance")]
    pub split_skew_tolerance: f64,
    #[serde(default)]
    pub funnels: Vec<FileFunnel>,
    #[serde(default)]
    pub timings: Vec<FileTiming>,
}

/// `[[gates.funnels]]`: a conversion ratio V2 vs V1.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFunnel {
    pub name: String,
    /// `"journey:NAME"` (its 2xx/3xx requests) or `"beacon:NAME"` (its events).
    pub numerator: String,
    pub denominator: String,
    /// V2's ratio may be at most this share below V1's.
    #[serde(default = "default_funnel_max_drop")]
    pub max_drop: f64,
    pub min_samples: Option<u64>,
}

/// `[[gates.timings]]`: a timing beacon V2 vs V1 (median, Mann-Whitney).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTiming {
    /// A configured beacon name whose events are `timing`.
    pub name: String,
    #[serde(default = "default_timing_max_increase")]
    pub max_increase: f64,
    pub min_samples: Option<u64>,
}

impl Default for FileGates {
    fn default() -> Self {
        toml::from_str("").expect("every gates key has a default")
    }
}

impl Default for FileRollout {
    fn default() -> Self {
        toml::from_str("").expect("every rollout key has a default")
    }
}

fn yes() -> bool {
    true
}
fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.into()
}
fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}
fn default_max_header_bytes() -> usize {
    DEFAULT_MAX_HEADER_BYTES
}
fn default_header_read_timeout() -> Dur {
    Dur(Duration::from_secs(20))
}
fn default_max_connections() -> usize {
    10_000
}
fn default_drain_timeout() -> Dur {
    Dur(Duration::from_secs(15))
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_response_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_pool_idle() -> Dur {
    Dur(Duration::from_secs(90))
}
/// Per worker and upstream. Above the in-flight concurrency a worker sees,
/// so a burst does not close connections it will need again a moment later:
/// at 1,024 client connections on one worker a cap of 256 cost ~20 % of
/// req/s in connect churn (BENCHMARKS.md). Idle ones still expire after
/// `pool_idle_timeout`.
fn default_pool_max_idle() -> usize {
    1024
}
fn default_access_log_sample() -> f64 {
    1.0
}
fn default_salt() -> String {
    "rollgate".into()
}
fn default_tick() -> Dur {
    Dur(Duration::from_secs(15))
}
fn default_window() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_min_samples() -> u64 {
    50
}
fn default_error_rate_max() -> f64 {
    0.005
}
fn default_error_rate_margin() -> f64 {
    0.001
}
fn default_payment_success_min() -> f64 {
    0.995
}
fn default_p95_rollback_ms() -> f64 {
    160.0
}
fn default_red_rollback_after() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_consecutive_payment_failures() -> u32 {
    5
}
fn default_full_sustain() -> Dur {
    Dur(Duration::from_secs(2 * 3600))
}
fn default_promotion_window() -> FilePromotionWindow {
    FilePromotionWindow::Keyword("always".into())
}
fn default_sev2_hold() -> u32 {
    2
}
fn default_required_flags() -> Vec<String> {
    DEFAULT_REQUIRED_FLAGS
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_p95_ms() -> f64 {
    130.0
}
fn default_alpha() -> f64 {
    crate::control::gates::significance::DEFAULT_ALPHA
}
fn default_band() -> f64 {
    0.05
}
fn default_cooldown() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_latency_vs_control_max() -> f64 {
    0.10
}
fn default_latency_vs_control_slack_ms() -> f64 {
    1.0
}
fn default_js_errors_max_increase() -> f64 {
    0.10
}
fn default_cache_hit_min() -> f64 {
    0.85
}
fn default_slo_period() -> Dur {
    Dur(Duration::from_secs(30 * 24 * 3600))
}
fn default_error_budget_max() -> f64 {
    0.05
}
fn default_split_skew_tolerance() -> f64 {
    0.20
}
fn default_funnel_max_drop() -> f64 {
    0.03
}
fn default_timing_max_increase() -> f64 {
    0.05
}
fn default_shadow_queue() -> usize {
    1024
}
fn default_shadow_concurrency() -> usize {
    64
}
fn default_shadow_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_shadow_max_body() -> usize {
    256 * 1024
}
fn default_shadow_diff_rate_max() -> f64 {
    0.01
}
fn default_replay_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_update_every() -> Dur {
    Dur(Duration::from_secs(15 * 60))
}

// ===== runtime config =====

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstreams: UpstreamsConfig,
    pub routing: RoutingConfig,
    pub journeys: Journeys,
    /// Per journey index (incl. `other`): threshold overrides.
    pub journey_limits: Vec<JourneyLimits>,
    pub rollout: RolloutConfig,
    pub gates: GatesConfig,
    pub beacons: BeaconsConfig,
    pub shadow: ShadowConfig,
    pub replay: ReplayConfig,
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

/// The configured beacon event names; an event's name is its index here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BeaconsConfig {
    pub names: Vec<String>,
}

impl BeaconsConfig {
    /// Index of a configured name (a handful of names: a scan beats hashing).
    #[inline]
    pub fn index(&self, name: &str) -> Option<u16> {
        self.names
            .iter()
            .position(|n| n.as_str() == name)
            .map(|i| i as u16)
    }
}

/// How gates judge (see `control::gates` for the bands and the cooldown).
#[derive(Debug, Clone, PartialEq)]
pub struct GatesConfig {
    pub alpha: f64,
    pub promote_band: f64,
    pub rollback_band: f64,
    pub cooldown: Duration,
    pub latency_vs_control_max: f64,
    pub latency_vs_control_slack_ms: f64,
    /// Index of the page-view beacon name; `None` = no `js_errors` gate.
    pub js_errors_per: Option<usize>,
    pub js_errors_max_increase: f64,
    pub cache_hit_min: f64,
    pub slo: Option<Slo>,
    pub error_budget_max: f64,
    pub split_skew_tolerance: f64,
    pub funnels: Vec<Funnel>,
    pub timings: Vec<Timing>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Share of requests that must be good (non-5xx), e.g. 0.999.
    pub target: f64,
    pub period: Duration,
}

/// Where a funnel count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// 2xx and 3xx requests of a journey (index).
    Journey(usize),
    /// Events of a beacon name (index), any type.
    Beacon(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    pub name: String,
    pub numerator: Step,
    pub denominator: Step,
    pub max_drop: f64,
    pub min_samples: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub name: String,
    /// Index of the beacon name.
    pub beacon: usize,
    pub max_increase: f64,
    pub min_samples: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub state_dir: PathBuf,
    pub max_header_bytes: usize,
    pub telemetry: bool,
    pub workers: usize,
    pub runtime: RuntimeMode,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    pub tls: Option<TlsFiles>,
    pub access_log: bool,
    pub access_log_sample: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub uri: Uri,
    pub scheme: Scheme,
    pub authority: Authority,
}

#[derive(Debug, Clone)]
pub struct UpstreamsConfig {
    pub v1: Upstream,
    pub v2: Upstream,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// V2's in-flight cap (0 = none).
    pub reserved_capacity: u32,
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub sticky_header: Option<HeaderName>,
    pub sticky_cookie: Option<String>,
    pub expose_variant_header: bool,
    pub allow_override_header: bool,
    pub salt: String,
    pub cookie_secret: Option<Vec<u8>>,
    pub region_header: Option<HeaderName>,
    /// Region labels: the configured regions then `other`, or just `all`
    /// without a region header. A request's region is an index into this.
    pub region_labels: Vec<String>,
}

/// Bounds the region label set.
pub const MAX_REGIONS: usize = 32;

impl RoutingConfig {
    /// Region index of a request (allocation-free: a case-insensitive scan).
    #[inline]
    pub fn region_of(&self, headers: &http::HeaderMap) -> usize {
        let Some(h) = &self.region_header else {
            return 0;
        };
        let other = self.region_labels.len() - 1;
        let Some(v) = headers.get(h) else {
            return other;
        };
        let v = v.as_bytes().trim_ascii();
        self.region_labels[..other]
            .iter()
            .position(|r| r.as_bytes().eq_ignore_ascii_case(v))
            .unwrap_or(other)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyLimits {
    pub p95_ms: Option<f64>,
    pub success_min: Option<f64>,
    pub read_heavy: bool,
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

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub weight: WeightBp,
    pub hold: Duration,
    pub p95_ms: f64,
    pub approval: Option<String>,
    pub approval_waived_if_green: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
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
    pub sev2_hold_count: u32,
    pub flags: BTreeMap<String, i64>,
    pub required_flags: Vec<String>,
    pub phases: Vec<Phase>,
    pub webhook_url: Option<Uri>,
    pub command_center_url: Option<Uri>,
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Valid but probably not what was meant: `rollgate check` prints these
    /// and `rollgate run` logs them, and both go on.
    ///
    /// A phase whose hold is shorter than `gates.cooldown`: a gate that turns
    /// RED in it must then stay inside the promote band for the whole
    /// cooldown before the phase can step up, so the phase lasts longer than
    /// its hold says (a compressed test or demo schedule with the default
    /// 1-minute cooldown sits "cooling down").
    pub fn warnings(&self) -> Vec<String> {
        let cooldown = self.gates.cooldown;
        self.rollout
            .phases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.hold < cooldown)
            .map(|(i, p)| {
                format!(
                    "`rollout.phases[{i}].hold` ({}, phase {:?}) is shorter than `gates.cooldown` ({}): \
                     after a RED gate the phase waits out the cooldown before it can step up",
                    humantime::format_duration(p.hold),
                    p.name,
                    humantime::format_duration(cooldown),
                )
            })
            .collect()
    }

    /// Parses and validates config text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            file: file.into(),
            source: Box::new(source),
        })?;
        raw.validate().map_err(|e| ConfigError::Invalid {
            file: file.into(),
            key: e.key,
            reason: e.reason,
        })
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.server.admin_token.as_deref()
    }
}

fn socket_addr(key: &str, s: &str) -> Result<SocketAddr, Invalid> {
    s.parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?} is not an address like \"127.0.0.1:8080\""),
        )
    })
}

fn upstream(key: &str, s: &str) -> Result<Upstream, Invalid> {
    let uri: Uri = s
        .parse()
        .map_err(|e| invalid(key, format!("{s:?} is not a URL: {e}")))?;
    let scheme = uri.scheme().cloned();
    if scheme.as_ref() != Some(&Scheme::HTTP) {
        return Err(invalid(
            key,
            format!("{s:?}: only http:// upstreams are supported"),
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| invalid(key, format!("{s:?} has no host")))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            key,
            format!("{s:?}: an upstream is scheme://host:port, without a path"),
        ));
    }
    Ok(Upstream {
        uri,
        scheme: Scheme::HTTP,
        authority,
    })
}

fn fraction(key: &str, v: f64) -> Result<f64, Invalid> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            key,
            format!("{v} must be a fraction between 0 and 1"),
        ))
    }
}

fn positive_ms(key: &str, v: f64) -> Result<f64, Invalid> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(invalid(
            key,
            format!("{v} must be a positive number of milliseconds"),
        ))
    }
}

fn time_of_day(key: &str, s: &str) -> Result<NaiveTime, Invalid> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| invalid(key, format!("{s:?} is not a time like \"09:00\"")))
}

fn label_name(key: &str, s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{s:?} must be 1-64 characters of a-z, 0-9, '_' or '-'"),
        ))
    }
}

impl FileConfig {
    /// Checks every key and builds the runtime config.
    pub fn validate(self) -> Result<Config, Invalid> {
        let s = self.server;
        if s.max_header_bytes < 1024 {
            return Err(invalid("server.max_header_bytes", "must be at least 1024"));
        }
        if !(s.access_log_sample > 0.0 && s.access_log_sample <= 1.0) {
            return Err(invalid(
                "server.access_log_sample",
                format!("{} must be above 0 and at most 1", s.access_log_sample),
            ));
        }
        let server = ServerConfig {
            access_log: s.access_log,
            access_log_sample: s.access_log_sample,
            listen: socket_addr("server.listen", &s.listen)?,
            admin_listen: socket_addr("server.admin_listen", &s.admin_listen)?,
            admin_token: s.admin_token.filter(|t| !t.is_empty()),
            state_dir: s.state_dir,
            max_header_bytes: s.max_header_bytes,
            telemetry: s.telemetry,
            workers: s.workers,
            runtime: s.runtime,
            header_read_timeout: s.header_read_timeout.0,
            max_connections: s.max_connections,
            drain_timeout: s.drain_timeout.0,
            tls: s.tls.map(|t| TlsFiles {
                cert: t.cert,
                key: t.key,
            }),
        };
        if server.header_read_timeout.is_zero() {
            return Err(invalid("server.header_read_timeout", "must be above zero"));
        }
        if server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }

        let u = self.upstreams;
        if u.connect_timeout.0.is_zero() {
            return Err(invalid("upstreams.connect_timeout", "must be above zero"));
        }
        if u.timeout.0.is_zero() {
            return Err(invalid("upstreams.timeout", "must be above zero"));
        }
        let upstreams = UpstreamsConfig {
            v1: upstream("upstreams.v1", &u.v1)?,
            v2: upstream("upstreams.v2", &u.v2)?,
            connect_timeout: u.connect_timeout.0,
            timeout: u.timeout.0,
            pool_idle_timeout: u.pool_idle_timeout.0,
            pool_max_idle_per_host: u.pool_max_idle_per_host,
            reserved_capacity: u.reserved_capacity,
        };

        let r = self.routing;
        let sticky_header = r
            .sticky_header
            .filter(|h| !h.is_empty())
            .map(|h| {
                HeaderName::try_from(h.to_ascii_lowercase()).map_err(|_| {
                    invalid(
                        "routing.sticky_header",
                        format!("{h:?} is not a header name"),
                    )
                })
            })
            .transpose()?;
        if r.salt.is_empty() {
            return Err(invalid("routing.salt", "must not be empty"));
        }
        let cookie_secret = match r.cookie_secret {
            Some(s) if s.len() < 16 => {
                return Err(invalid(
                    "routing.cookie_secret",
                    "must be at least 16 characters",
                ))
            }
            other => other.map(String::into_bytes),
        };
        let region_header = r
            .region_header
            .filter(|h| !h.is_empty())
            .map(|h| {
                HeaderName::try_from(h.to_ascii_lowercase()).map_err(|_| {
                    invalid(
                        "routing.region_header",
                        format!("{h:?} is not a header name"),
                    )
                })
            })
            .transpose()?;
        if r.regions.len() > MAX_REGIONS {
            return Err(invalid(
                "routing.regions",
                format!("at most {MAX_REGIONS} regions (they are labels)"),
            ));
        }
        let mut region_labels = Vec::new();
        for (i, reg) in r.regions.iter().enumerate() {
            let key = format!("routing.regions[{i}]");
            label_name(&key, &reg.to_ascii_lowercase())?;
            let reg = reg.to_ascii_lowercase();
            if reg == "other" || region_labels.contains(&reg) {
                return Err(invalid(key, format!("{reg:?} is reserved or used twice")));
            }
            region_labels.push(reg);
        }
        match (&region_header, region_labels.is_empty()) {
            (Some(_), _) => region_labels.push("other".into()),
            (None, true) => region_labels.push("all".into()),
            (None, false) => {
                return Err(invalid(
                    "routing.regions",
                    "regions need `routing.region_header` to be read from",
                ))
            }
        }
        let routing = RoutingConfig {
            sticky_header,
            sticky_cookie: r.sticky_cookie.filter(|c| !c.is_empty()),
            expose_variant_header: r.expose_variant_header,
            allow_override_header: r.allow_override_header,
            salt: r.salt,
            cookie_secret,
            region_header,
            region_labels,
        };

        if self.journeys.len() >= MAX_JOURNEYS {
            return Err(invalid(
                "journeys",
                format!("at most {} journeys", MAX_JOURNEYS - 1),
            ));
        }
        let mut list = Vec::with_capacity(self.journeys.len());
        let mut journey_limits = Vec::with_capacity(self.journeys.len() + 1);
        for (i, j) in self.journeys.into_iter().enumerate() {
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
            journey_limits.push(JourneyLimits {
                p95_ms: j.p95_ms,
                success_min: j.success_min,
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
        let journeys = Journeys::new(list);

        let rollout = validate_rollout(self.rollout)?;
        let beacons = validate_beacons(self.beacons)?;
        let gates = validate_gates(self.gates, &journeys, &beacons)?;
        let shadow = validate_shadow(self.shadow, &journeys)?;
        if self.replay.max_bytes < 4096 {
            return Err(invalid("replay.max_bytes", "must be at least 4096"));
        }
        let replay = ReplayConfig {
            record: self.replay.record,
            max_bytes: self.replay.max_bytes,
        };
        Ok(Config {
            server,
            upstreams,
            routing,
            journeys,
            journey_limits,
            rollout,
            gates,
            beacons,
            shadow,
            replay,
        })
    }
}

fn validate_shadow(s: FileShadow, journeys: &Journeys) -> Result<ShadowConfig, Invalid> {
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

fn validate_beacons(b: FileBeacons) -> Result<BeaconsConfig, Invalid> {
    use crate::stats::beacons::MAX_BEACON_NAMES;
    if b.names.len() > MAX_BEACON_NAMES {
        return Err(invalid(
            "beacons.names",
            format!("at most {MAX_BEACON_NAMES} names (they are metric labels)"),
        ));
    }
    for (i, n) in b.names.iter().enumerate() {
        let key = format!("beacons.names[{i}]");
        label_name(&key, n)?;
        if b.names[..i].contains(n) {
            return Err(invalid(key, format!("{n:?} is listed twice")));
        }
    }
    Ok(BeaconsConfig { names: b.names })
}

fn validate_gates(
    g: FileGates,
    journeys: &Journeys,
    beacons: &BeaconsConfig,
) -> Result<GatesConfig, Invalid> {
    if !(g.alpha > 0.0 && g.alpha <= 0.5) {
        return Err(invalid(
            "gates.alpha",
            format!("{} must be above 0 and at most 0.5", g.alpha),
        ));
    }
    let band = |key: &str, v: f64| {
        if (0.0..=0.5).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                key,
                format!("{v} must be a share between 0 and 0.5"),
            ))
        }
    };
    let non_negative = |key: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(invalid(key, format!("{v} must be a number >= 0")))
        }
    };
    Ok(GatesConfig {
        alpha: g.alpha,
        promote_band: band("gates.promote_band", g.promote_band)?,
        rollback_band: band("gates.rollback_band", g.rollback_band)?,
        cooldown: g.cooldown.0,
        latency_vs_control_max: non_negative(
            "gates.latency_vs_control_max",
            g.latency_vs_control_max,
        )?,
        latency_vs_control_slack_ms: non_negative(
            "gates.latency_vs_control_slack_ms",
            g.latency_vs_control_slack_ms,
        )?,
        js_errors_per: g
            .js_errors_per
            .as_deref()
            .map(|n| beacon_index(beacons, "gates.js_errors_per", n))
            .transpose()?,
        js_errors_max_increase: non_negative(
            "gates.js_errors_max_increase",
            g.js_errors_max_increase,
        )?,
        cache_hit_min: fraction("gates.cache_hit_min", g.cache_hit_min)?,
        slo: match g.slo_target {
            None => None,
            Some(t) if t > 0.0 && t < 1.0 && !g.slo_period.0.is_zero() => Some(Slo {
                target: t,
                period: g.slo_period.0,
            }),
            Some(t) => {
                return Err(invalid(
                    "gates.slo_target",
                    format!("{t} must be a share strictly between 0 and 1 (e.g. 0.999), with a non-zero slo_period"),
                ))
            }
        },
        error_budget_max: fraction("gates.error_budget_max", g.error_budget_max)?,
        split_skew_tolerance: non_negative(
            "gates.split_skew_tolerance",
            g.split_skew_tolerance,
        )?,
        funnels: funnels(g.funnels, journeys, beacons)?,
        timings: timings(g.timings, beacons)?,
    })
}

fn beacon_index(beacons: &BeaconsConfig, key: &str, name: &str) -> Result<usize, Invalid> {
    beacons
        .index(name)
        .map(usize::from)
        .ok_or_else(|| invalid(key, format!("{name:?} is not listed in `beacons.names`")))
}

fn step(key: &str, s: &str, journeys: &Journeys, beacons: &BeaconsConfig) -> Result<Step, Invalid> {
    match s.split_once(':') {
        Some(("journey", j)) => journeys
            .by_name(j)
            .filter(|id| *id != journeys.other())
            .map(|id| Step::Journey(id.index()))
            .ok_or_else(|| invalid(key, format!("no journey named {j:?}"))),
        Some(("beacon", b)) => beacon_index(beacons, key, b).map(Step::Beacon),
        _ => Err(invalid(
            key,
            format!("{s:?}: use \"journey:NAME\" or \"beacon:NAME\""),
        )),
    }
}

fn funnels(
    list: Vec<FileFunnel>,
    journeys: &Journeys,
    beacons: &BeaconsConfig,
) -> Result<Vec<Funnel>, Invalid> {
    let mut out: Vec<Funnel> = Vec::with_capacity(list.len());
    for (i, f) in list.into_iter().enumerate() {
        let key = |k: &str| format!("gates.funnels[{i}].{k}");
        label_name(&key("name"), &f.name)?;
        if out.iter().any(|x| x.name == f.name) {
            return Err(invalid(key("name"), format!("{:?} is used twice", f.name)));
        }
        if !(0.0..1.0).contains(&f.max_drop) {
            return Err(invalid(
                key("max_drop"),
                format!("{} must be a share in 0..1", f.max_drop),
            ));
        }
        out.push(Funnel {
            numerator: step(&key("numerator"), &f.numerator, journeys, beacons)?,
            denominator: step(&key("denominator"), &f.denominator, journeys, beacons)?,
            name: f.name,
            max_drop: f.max_drop,
            min_samples: f.min_samples,
        });
    }
    Ok(out)
}

fn timings(list: Vec<FileTiming>, beacons: &BeaconsConfig) -> Result<Vec<Timing>, Invalid> {
    let mut out: Vec<Timing> = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        let key = |k: &str| format!("gates.timings[{i}].{k}");
        let beacon = beacon_index(beacons, &key("name"), &t.name)?;
        if out.iter().any(|x| x.beacon == beacon) {
            return Err(invalid(key("name"), format!("{:?} is used twice", t.name)));
        }
        if !(t.max_increase.is_finite() && t.max_increase >= 0.0) {
            return Err(invalid(
                key("max_increase"),
                format!("{} must be a number >= 0", t.max_increase),
            ));
        }
        out.push(Timing {
            name: t.name,
            beacon,
            max_increase: t.max_increase,
            min_samples: t.min_samples,
        });
    }
    Ok(out)
}

fn validate_rollout(r: FileRollout) -> Result<RolloutConfig, Invalid> {
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
        label_name(&key("name"), &p.name)?;
        if phases.iter().any(|x| x.name == p.name) {
            return Err(invalid(key("name"), format!("{:?} is used twice", p.name)));
        }
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
            let n = HeaderName::try_from(name.to_ascii_lowercase())
                .map_err(|_| invalid(key("headers"), format!("{name:?} is not a header name")))?;
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
        sev2_hold_count: r.sev2_hold_count.max(1),
        flags: r.flags,
        required_flags: r.required_flags,
        phases,
        webhook_url: url("rollout.webhook_url", &r.webhook_url)?,
        command_center_url: url("rollout.command_center_url", &r.command_center_url)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:8080"
        [upstreams]
        v1 = "http://127.0.0.1:3001"
        v2 = "http://127.0.0.1:3002"
    "#;

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn phases_held_shorter_than_the_cooldown_are_warned_about() {
        let seed = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(seed.warnings(), Vec::<String>::new());
        let short = format!(
            "{MINIMAL}
            [gates]
            cooldown = \"1m\"
            [[rollout.phases]]
            name = \"canary-5\"
            weight = 5
            hold = \"10s\"
            [[rollout.phases]]
            name = \"full\"
            weight = 100
            hold = \"1m\"
            "
        );
        let w = Config::parse(&short, "t.toml").unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("rollout.phases[0].hold"), "{}", w[0]);
        assert!(w[0].contains("\"canary-5\""), "{}", w[0]);
        assert!(w[0].contains("10s") && w[0].contains("1m"), "{}", w[0]);
        assert!(w[0].contains("gates.cooldown"), "{}", w[0]);
    }

    #[test]
    fn minimal_config_gets_seed_defaults() {
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.server.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.rollout.tick, Duration::from_secs(15));
        assert_eq!(c.rollout.phases.len(), 4);
        assert_eq!(c.rollout.phases[3].hold, Duration::from_secs(7200));
        assert_eq!(c.rollout.phases[0].headers[0].1, "test");
        assert!(c.rollout.phases.iter().all(|p| p.approval.is_none()));
        assert_eq!(c.journeys.len(), 1);
        assert_eq!(c.upstreams.v2.authority.as_str(), "127.0.0.1:3002");
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = err(&MINIMAL.replace("127.0.0.1:8080", "nope"));
        assert!(e.starts_with("t.toml: key `server.listen`:"), "{e}");
        let e = err(&format!("{MINIMAL}\n[rollout]\ntick = \"soon\""));
        assert!(
            e.contains("t.toml") && e.contains("tick") && e.contains("invalid duration"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}\n[rollout]\nerror_rate_max = 5.0"));
        assert!(e.contains("`rollout.error_rate_max`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[journeys]]\nname = \"x\"\npath_prefix = \"nope\""
        ));
        assert!(e.contains("`journeys[0].path_prefix`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[journeys]]\nname = \"x\"\npath_prefix = \"/x\"\nmethods = [\"FETCH\"]"
        ));
        assert!(e.contains("`journeys[0].methods[0]`"), "{e}");
        let e = err(&MINIMAL.replace("http://127.0.0.1:3002", "https://x"));
        assert!(e.contains("`upstreams.v2`"), "{e}");
        let e = err(&format!("{MINIMAL}\n[routing]\nstiky_header = \"x\""));
        assert!(e.contains("unknown field `stiky_header`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[rollout.phases]]\nname = \"a\"\nweight = 50\nhold = \"1h\"\n[[rollout.phases]]\nname = \"b\"\nweight = 10"
        ));
        assert!(
            e.contains("`rollout.phases[1].weight`") && e.contains("decrease"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}\n[rollout.flags]\nEVIDENCE_BUNDLE = 3"));
        assert!(e.contains("`rollout.flags.EVIDENCE_BUNDLE`"), "{e}");
        assert!(matches!(
            Config::load(Path::new("/nonexistent/rollgate.toml")),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn promotion_window_hours() {
        let c = Config::parse(
            &format!(
                "{MINIMAL}\n[rollout]\npromotion_window = {{ start = \"09:00\", end = \"18:00\" }}"
            ),
            "t",
        )
        .unwrap();
        let w = c.rollout.promotion_window;
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert!(w.contains(t(9, 0)) && w.contains(t(17, 59)));
        assert!(!w.contains(t(18, 0)) && !w.contains(t(8, 59)));
        let night = PromotionWindow::Hours {
            start: t(22, 0),
            end: t(6, 0),
        };
        assert!(night.contains(t(23, 0)) && night.contains(t(1, 0)) && !night.contains(t(12, 0)));
    }

    #[test]
    fn shadow_keys_are_checked() {
        let base = format!(
            "{MINIMAL}\n[[journeys]]\nname = \"pay\"\npath_prefix = \"/pay\"\nkind = \"payment\"\n[[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n"
        );
        let c = Config::parse(&base, "t").unwrap();
        assert_eq!(c.shadow.mirrored, vec![false, true, true]);
        let c = Config::parse(
            &format!("{base}[shadow]\nexclude_journeys = [\"other\"]"),
            "t",
        )
        .unwrap();
        assert_eq!(c.shadow.mirrored, vec![false, true, false]);
        let e = err(&format!("{base}[shadow]\nexclude_journeys = [\"nope\"]"));
        assert!(e.contains("`shadow.exclude_journeys[0]`"), "{e}");
        let e = err(&format!("{base}[shadow]\nqueue = 0"));
        assert!(e.contains("`shadow.queue`"), "{e}");
        let e = err(&format!("{base}[shadow]\ndiff_rate_max = 2"));
        assert!(e.contains("`shadow.diff_rate_max`"), "{e}");
    }
}
