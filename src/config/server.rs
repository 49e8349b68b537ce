//! `[server]`: the listeners, connection limits, TLS files and access log.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::values::{defaults, yes, Dur};
use super::{invalid, Invalid};

defaults! {
    pub(super) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901"
        => fn default_admin_listen() -> String;
    const DEFAULT_STATE_DIR: &str = "./rollgate-state" => fn default_state_dir() -> PathBuf;
    pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024
        => fn default_max_header_bytes() -> usize;
    const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20)
        => fn default_header_read_timeout() -> Dur;
    const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30)
        => fn default_client_body_timeout() -> Dur;
    const DEFAULT_MAX_CONNECTIONS: usize = 10_000 => fn default_max_connections() -> usize;
    const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15)
        => fn default_drain_timeout() -> Dur;
    const DEFAULT_ACCESS_LOG_SAMPLE: f64 = 1.0 => fn default_access_log_sample() -> f64;
    const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60)
        => fn default_idle_timeout() -> Dur;
    const DEFAULT_H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20)
        => fn default_h2_keepalive_interval() -> Dur;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServer {
    pub listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    pub admin_token: Option<String>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where the rollout state goes when `state_dir` cannot take it (best on
    /// another disk); a newer state there is resumed at start-up.
    #[serde(default)]
    pub state_fallback_dir: Option<PathBuf>,
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
    /// Time allowed for a whole request body, from its head (so also the
    /// longest pause between two reads); later: 408 and the connection closed.
    #[serde(default = "default_client_body_timeout")]
    pub client_body_timeout: Dur,
    /// Open client connections per listener; at the cap accepting pauses.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Dur,
    /// Open connections from one client address; 0 = no limit.
    #[serde(default)]
    pub max_connections_per_client: usize,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 with a GOAWAY); HTTP/1.1 keep-alive is also bounded by
    /// `header_read_timeout`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// HTTP/2 PING every this long; a peer that does not answer within the
    /// same time is disconnected. "0s" = no pings.
    #[serde(default = "default_h2_keepalive_interval")]
    pub h2_keepalive_interval: Dur,
    /// What the cleartext listener speaks: `auto` (HTTP/1.1, or h2c by
    /// prior knowledge), `http1` or `h2c`. Under TLS, ALPN decides.
    #[serde(default)]
    pub protocol: Protocol,
    pub tls: Option<FileTls>,
    /// One log line per request (method, journey, variant, status, latency; no path or query).
    #[serde(default)]
    pub access_log: bool,
    /// Share of requests the access log keeps, in (0, 1].
    #[serde(default = "default_access_log_sample")]
    pub access_log_sample: f64,
    /// Peers (CIDR blocks or single addresses) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed; empty: every client is the edge's own.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeMode {
    #[default]
    PerCore,
    Shared,
}

/// `server.protocol`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Auto,
    Http1,
    H2c,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub state_dir: PathBuf,
    pub state_fallback_dir: Option<PathBuf>,
    pub max_header_bytes: usize,
    pub telemetry: bool,
    pub workers: usize,
    pub runtime: RuntimeMode,
    pub header_read_timeout: Duration,
    /// Whole request body, from the head; see `edge::request_body`.
    pub client_body_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    pub max_connections_per_client: usize,
    pub idle_timeout: Duration,
    /// `None` = no HTTP/2 pings.
    pub h2_keepalive_interval: Option<Duration>,
    pub protocol: Protocol,
    pub tls: Option<TlsFiles>,
    pub access_log: bool,
    pub access_log_sample: f64,
    /// Load balancers in front of rollgate; see `edge::forwarded`.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub(super) fn validate(s: FileServer) -> Result<ServerConfig, Invalid> {
    if s.max_header_bytes < 1024 {
        return Err(invalid("server.max_header_bytes", "must be at least 1024"));
    }
    if !(s.access_log_sample > 0.0 && s.access_log_sample <= 1.0) {
        return Err(invalid(
            "server.access_log_sample",
            format!("{} must be above 0 and at most 1", s.access_log_sample),
        ));
    }
    if s.state_fallback_dir
        .as_ref()
        .is_some_and(|f| f.as_os_str().is_empty() || *f == s.state_dir)
    {
        return Err(invalid(
            "server.state_fallback_dir",
            "must name a directory other than server.state_dir",
        ));
    }
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, text)| cidr(&format!("server.trusted_proxies[{i}]"), text))
        .collect::<Result<_, _>>()?;
    let server = ServerConfig {
        trusted_proxies,
        access_log: s.access_log,
        access_log_sample: s.access_log_sample,
        listen: socket_addr("server.listen", &s.listen)?,
        admin_listen: socket_addr("server.admin_listen", &s.admin_listen)?,
        admin_token: s.admin_token.filter(|t| !t.is_empty()),
        state_dir: s.state_dir,
        state_fallback_dir: s.state_fallback_dir,
        max_header_bytes: s.max_header_bytes,
        telemetry: s.telemetry,
        workers: s.workers,
        runtime: s.runtime,
        header_read_timeout: s.header_read_timeout.0,
        client_body_timeout: s.client_body_timeout.0,
        max_connections: s.max_connections,
        drain_timeout: s.drain_timeout.0,
        max_connections_per_client: s.max_connections_per_client,
        idle_timeout: s.idle_timeout.0,
        h2_keepalive_interval: Some(s.h2_keepalive_interval.0).filter(|d| !d.is_zero()),
        protocol: s.protocol,
        tls: s.tls.map(|t| TlsFiles {
            cert: t.cert,
            key: t.key,
        }),
    };
    if server.header_read_timeout.is_zero() {
        return Err(invalid("server.header_read_timeout", "must be above zero"));
    }
    if server.client_body_timeout.is_zero() {
        return Err(invalid("server.client_body_timeout", "must be above zero"));
    }
    if server.max_connections == 0 {
        return Err(invalid("server.max_connections", "must be at least 1"));
    }
    if server.idle_timeout.is_zero() {
        return Err(invalid("server.idle_timeout", "must be above zero"));
    }
    if server.tls.is_some() && server.protocol != Protocol::Auto {
        return Err(invalid(
            "server.protocol",
            "applies to the cleartext listener only; under TLS, ALPN decides (leave it \"auto\")",
        ));
    }
    Ok(server)
}

fn socket_addr(key: &str, s: &str) -> Result<SocketAddr, Invalid> {
    s.parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?} is not an address like \"127.0.0.1:8080\""),
        )
    })
}

/// A CIDR block, or one address standing for itself (`/32`, `/128`). A block
/// with host bits set (`10.0.0.1/8`) is refused rather than silently widened
/// or narrowed: it is usually a typo for a different range.
fn cidr(key: &str, s: &str) -> Result<IpNet, Invalid> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s.parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?} is not a CIDR block like \"10.0.0.0/8\" or an address"),
        )
    })?;
    if net.trunc() != net {
        return Err(invalid(
            key,
            format!("{s:?} has host bits set; the block is {}", net.trunc()),
        ));
    }
    Ok(net)
}
