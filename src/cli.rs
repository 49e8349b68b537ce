//! `rollgate status | weights N | approve | pause | resume | promote | rollback
//! | incident | report | start | flags | unfreeze`: a thin client of the admin
//! API (SPEC §7b).
//!
//! Every command is one HTTP call; the server does all validation, so the
//! CLI cannot drift from the API. What the CLI adds is presentation: a
//! compact human view by default, the server's JSON untouched with `--json`,
//! and one clear sentence (and a distinct exit code) for each way a call can
//! fail: unreachable, wrong token, frozen, conflict, bad value.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Where `rollgate status` looks when neither `--admin` nor `ROLLGATE_ADMIN_URL` is given.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9901";
/// A call that takes longer than this is reported, not waited on forever.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Exit codes, so scripts can tell the failures apart.
pub mod exit {
    /// The server refused the call: 400, 404, 409, 423 or a 5xx.
    pub const REFUSED: u8 = 1;
    /// `--admin` is not a usable URL.
    pub const USAGE: u8 = 2;
    /// Nothing answered at the admin URL (refused, unreachable or timed out).
    pub const UNREACHABLE: u8 = 3;
    /// 401: wrong or missing token.
    pub const UNAUTHORIZED: u8 = 4;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid admin URL {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("cannot reach the admin API at {url}: is rollgate running? ({cause})")]
    Unreachable { url: String, cause: String },
    #[error("the admin API at {url} did not answer within {}s", TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("wrong or missing token: set --token or ROLLGATE_ADMIN_TOKEN")]
    Unauthorized,
    #[error("frozen (HTTP 423): {0}; `rollgate unfreeze` lifts FREEZE_LOCK")]
    Frozen(String),
    #[error("refused (HTTP 409): {0}")]
    Conflict(String),
    #[error("invalid request (HTTP 400): {0}")]
    BadRequest(String),
    #[error("not found (HTTP 404): {0}")]
    NotFound(String),
    #[error("the admin API answered HTTP {status}: {message}")]
    Server { status: u16, message: String },
    #[error("unreadable answer from the admin API: {0}")]
    BadAnswer(String),
    #[error("invalid argument: {0}")]
    Usage(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadUrl { .. } | CliError::Usage(_) => exit::USAGE,
            CliError::Unreachable { .. } | CliError::Timeout { .. } => exit::UNREACHABLE,
            CliError::Unauthorized => exit::UNAUTHORIZED,
            CliError::Frozen(_)
            | CliError::Conflict(_)
            | CliError::BadRequest(_)
            | CliError::NotFound(_)
            | CliError::Server { .. }
            | CliError::BadAnswer(_) => exit::REFUSED,
        }
    }
}

// ===== command line =====

/// Where the admin API is and how to talk to it; on every admin subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(long = "admin", env = "ROLLGATE_ADMIN_URL", default_value = DEFAULT_ADMIN_URL, value_name = "URL")]
    pub admin: String,
    /// Bearer token for the mutating calls.
    #[arg(
        long,
        env = "ROLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the server's JSON answer (for scripts) instead of the human view.
    #[arg(long)]
    pub json: bool,
}

/// The admin subcommands of `rollgate` (flattened into the binary's CLI).
#[derive(clap::Subcommand, Clone, Debug)]
pub enum AdminCmd {
    /// Show the rollout: state, phase, weights, gate table, flags, approvals, incidents.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set V2's weight in percent (0-100, fractional ok); pauses the controller.
    Weights {
        #[arg(value_name = "PERCENT", allow_negative_numbers = true)]
        v2: f64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Record an approval for the phase that needs it (e.g. --role cfo).
    Approve {
        #[arg(long)]
        role: String,
        #[arg(long, value_name = "NAME")]
        by: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start a rollout (when not auto-started, or after a rollback or promotion).
    Start {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pause the controller: weights stay, no step-up; safety triggers stay armed.
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hand control back to the controller (after pause, a manual weight or a Sev-2 hold).
    Resume {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Step up to the next phase now, without waiting for the hold.
    Promote {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Roll back now: V2 weight 0 in one swap.
    Rollback {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Post an incident: Sev-1 rolls back at once, two Sev-2 hold for a decision.
    Incident {
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
        severity: u8,
        #[arg(long, value_name = "TEXT")]
        summary: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set start flags, e.g. `rollgate flags EVIDENCE_BUNDLE=1`.
    Flags {
        #[arg(required = true, value_name = "NAME=0|1")]
        flags: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift FREEZE_LOCK (set by the golden re-freeze after a promotion).
    Unfreeze {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List gate reports, or show one (`latest` for the newest).
    Report {
        /// Report id, e.g. 000006, or `latest`.
        id: Option<String>,
        /// Print the Markdown report (the newest one when no ID is given).
        #[arg(long)]
        md: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

impl AdminCmd {
    /// The action and the connection arguments.
    pub fn into_parts(self) -> Result<(Action, AdminArgs), CliError> {
        Ok(match self {
            AdminCmd::Status { admin } => (Action::Status, admin),
            AdminCmd::Weights { v2, admin } => (Action::Weights(v2), admin),
            AdminCmd::Approve { role, by, admin } => (Action::Approve { role, by }, admin),
            AdminCmd::Start { admin } => (Action::Start, admin),
            AdminCmd::Pause { admin } => (Action::Pause, admin),
            AdminCmd::Resume { admin } => (Action::Resume, admin),
            AdminCmd::Promote { admin } => (Action::Promote, admin),
            AdminCmd::Rollback { admin } => (Action::Rollback, admin),
            AdminCmd::Incident {
                severity,
                summary,
                admin,
            } => (Action::Incident { severity, summary }, admin),
            AdminCmd::Flags { flags, admin } => (
                Action::Flags(
                    flags
                        .iter()
                        .map(|f| parse_flag(f))
                        .collect::<Result<_, _>>()?,
                ),
                admin,
            ),
            AdminCmd::Unfreeze { admin } => (Action::Unfreeze, admin),
            AdminCmd::Report { id, md, admin } => (Action::Report { id, markdown: md }, admin),
        })
    }
}

/// Runs an admin subcommand to completion: prints the answer on stdout or
/// the error on stderr, and returns the process exit code.
pub fn run(cmd: AdminCmd) -> u8 {
    use std::io::IsTerminal;
    let result = cmd.into_parts().and_then(|(action, args)| {
        let out = Output {
            json: args.json,
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        };
        let client = AdminClient::new(&args.admin, args.token)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
        rt.block_on(client.execute(&action, out))
    });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// One admin API command.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Status,
    Weights(f64),
    Approve {
        role: String,
        by: String,
    },
    Start,
    Pause,
    Resume,
    Promote,
    Rollback,
    Unfreeze,
    Flags(Vec<(String, i64)>),
    Incident {
        severity: u8,
        summary: String,
    },
    /// `None` lists the reports; `Some("latest")` is the newest one.
    Report {
        id: Option<String>,
        markdown: bool,
    },
}

/// How to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct Output {
    /// The server's JSON as is (pretty-printed), for scripts.
    pub json: bool,
    /// ANSI colours for the human view (a terminal without NO_COLOR).
    pub color: bool,
}

/// Parses `NAME=0|1` for `rollgate flags`.
pub fn parse_flag(s: &str) -> Result<(String, i64), CliError> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| CliError::Usage(format!("{s:?}: expected NAME=0 or NAME=1")))?;
    match value {
        "0" | "1" if !name.is_empty() => Ok((name.to_string(), i64::from(value == "1"))),
        _ => Err(CliError::Usage(format!("{s:?}: expected NAME=0 or NAME=1"))),
    }
}

// === impl AdminClient ===

/// A client of one rollgate admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A successful answer.
struct Answer {
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Result<Value, CliError> {
        serde_json::from_slice(&self.body).map_err(|e| CliError::BadAnswer(e.to_string()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl AdminClient {
    /// `base` like `http://127.0.0.1:9901`; only plain HTTP (the admin port is
    /// meant for loopback or a private network, see the README).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = base.trim().trim_end_matches('/').to_string();
        let bad = |why| CliError::BadUrl {
            url: base.clone(),
            why,
        };
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported: use the plain-HTTP admin port (loopback or a tunnel)",
                ))
            }
            _ => return Err(bad("expected http://HOST:PORT")),
        }
        if uri.authority().is_none() {
            return Err(bad("expected http://HOST:PORT"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("expected no path: http://HOST:PORT"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            base,
            token: token.filter(|t| !t.is_empty()),
            client,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                CliError::Usage("the token contains characters a header cannot carry".into())
            })?;
            req = req.header(header::AUTHORIZATION, v);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| CliError::Usage(e.to_string()))?;
        let unreachable = |cause: String| CliError::Unreachable {
            url: self.base.clone(),
            cause,
        };
        let resp = match tokio::time::timeout(TIMEOUT, self.client.request(req)).await {
            Err(_) => {
                return Err(CliError::Timeout {
                    url: self.base.clone(),
                })
            }
            Ok(Err(e)) => return Err(unreachable(root_cause(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let body = match tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await {
            Err(_) => {
                return Err(CliError::Timeout {
                    url: self.base.clone(),
                })
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(b)) => b.to_bytes(),
        };
        if status.is_success() {
            return Ok(Answer { body });
        }
        // The server explains itself in {"error": "..."}; fall back to the raw body.
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(match status {
            StatusCode::UNAUTHORIZED => CliError::Unauthorized,
            StatusCode::LOCKED => CliError::Frozen(message),
            StatusCode::CONFLICT => CliError::Conflict(message),
            StatusCode::BAD_REQUEST => CliError::BadRequest(message),
            StatusCode::NOT_FOUND => CliError::NotFound(message),
            s => CliError::Server {
                status: s.as_u16(),
                message,
            },
        })
    }

    /// Runs one action and returns what to print.
    pub async fn execute(&self, action: &Action, out: Output) -> Result<String, CliError> {
        let post = |path: &'static str| self.call(Method::POST, path, None);
        let (answer, what) = match action {
            Action::Status => (self.call(Method::GET, "/api/v1/status", None).await?, None),
            Action::Weights(p) => (
                self.call(Method::PUT, "/api/v1/weights", Some(json!({ "v2": p })))
                    .await?,
                Some(format!(
                    "V2 weight set to {}% (the controller is paused: `rollgate resume` hands control back)",
                    fmt_pct(*p)
                )),
            ),
            Action::Approve { role, by } => (
                self.call(
                    Method::POST,
                    "/api/v1/approvals",
                    Some(json!({ "role": role, "by": by })),
                )
                .await?,
                Some(format!("approval recorded: role {role} by {by}")),
            ),
            Action::Start => (post("/api/v1/rollout/start").await?, Some("started".into())),
            Action::Pause => (post("/api/v1/rollout/pause").await?, Some("paused".into())),
            Action::Resume => (post("/api/v1/rollout/resume").await?, Some("resumed".into())),
            Action::Promote => (
                post("/api/v1/rollout/promote").await?,
                Some("promoted to the next phase".into()),
            ),
            Action::Rollback => (
                post("/api/v1/rollout/rollback").await?,
                Some("rolled back: V2 weight 0".into()),
            ),
            Action::Unfreeze => (
                post("/api/v1/unfreeze").await?,
                Some("FREEZE_LOCK cleared".into()),
            ),
            Action::Flags(flags) => {
                let body: serde_json::Map<String, Value> = flags
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                let names = flags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                (
                    self.call(Method::PUT, "/api/v1/flags", Some(Value::Object(body)))
                        .await?,
                    Some(format!("flags set: {names}")),
                )
            }
            Action::Incident { severity, summary } => (
                self.call(
                    Method::POST,
                    "/api/v1/incidents",
                    Some(json!({ "severity": severity, "summary": summary })),
                )
                .await?,
                Some(format!("Sev-{severity} incident recorded: {summary}")),
            ),
            Action::Report { id, markdown } => return self.report(id.as_deref(), *markdown, out).await,
        };
        let v = answer.json()?;
        if out.json {
            return Ok(pretty(&v));
        }
        Ok(match what {
            None => render_status(&v, out.color),
            Some(what) => render_ack(&what, &v, out.color),
        })
    }

    async fn report(
        &self,
        id: Option<&str>,
        markdown: bool,
        out: Output,
    ) -> Result<String, CliError> {
        let id = match id {
            None if !markdown => {
                let list = self
                    .call(Method::GET, "/api/v1/reports", None)
                    .await?
                    .json()?;
                return Ok(if out.json {
                    pretty(&list)
                } else {
                    render_report_list(&list)
                });
            }
            None | Some("latest") => {
                let list = self
                    .call(Method::GET, "/api/v1/reports", None)
                    .await?
                    .json()?;
                match list["reports"].as_array().and_then(|r| r.last()) {
                    Some(r) => r["id"].as_str().unwrap_or_default().to_string(),
                    None => {
                        return Err(CliError::NotFound(
                            "no gate report has been written yet".into(),
                        ))
                    }
                }
            }
            Some(id) => {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(CliError::Usage(format!(
                        "{id:?} is not a report id (e.g. 000006)"
                    )));
                }
                id.to_string()
            }
        };
        if markdown {
            let md = self
                .call(
                    Method::GET,
                    &format!("/api/v1/reports/{id}?format=md"),
                    None,
                )
                .await?;
            return Ok(md.text());
        }
        let v = self
            .call(Method::GET, &format!("/api/v1/reports/{id}"), None)
            .await?
            .json()?;
        Ok(if out.json {
            pretty(&v)
        } else {
            render_report(&v, out.color)
        })
    }
}

/// The innermost error message: "Connection refused (os error 111)" rather than "client error (Connect)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

// ===== human output =====

fn fmt_pct(p: f64) -> String {
    let r = (p * 100.0).round() / 100.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

fn fmt_value(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(0.0) => "0".into(),
        Some(x) if x.abs() < 1.0 => format!("{x:.4}"),
        Some(x) if x.abs() < 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.0}"),
    }
}

fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn status_color(status: &str) -> &'static str {
    match status {
        "GREEN" => "1;32",
        "YELLOW" => "1;33",
        "RED" => "1;31",
        _ => "0",
    }
}

/// RFC 3339 with nanoseconds -> "2026-11-23 16:07:38Z"; anything else as is.
fn short_time(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s).map_or_else(
        |_| s.to_string(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%SZ")
                .to_string()
        },
    )
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// One line: state, phase, weights.
fn headline(v: &Value, color: bool) -> String {
    let state = str_of(v, "state");
    let state_code = match state {
        "promoted" => "1;32",
        "rolled_back" => "1;31",
        "holding" | "paused" | "waiting" => "1;33",
        _ => "1;34",
    };
    let phase = match (v["phase"].as_str(), v["phase_index"].as_u64()) {
        (Some(p), Some(i)) => {
            let n = v["phases"].as_array().map_or(0, Vec::len);
            format!("{p} ({}/{n})", i + 1)
        }
        _ => "-".into(),
    };
    let mut line = format!(
        "{}  phase {phase}  V1 {}% / V2 {}%",
        paint(color, state_code, state),
        fmt_pct(v["weights"]["v1"].as_f64().unwrap_or(0.0)),
        fmt_pct(v["weights"]["v2"].as_f64().unwrap_or(0.0)),
    );
    if v["frozen"].as_bool() == Some(true) {
        line.push_str(&format!("  {}", paint(color, "1;35", "FREEZE_LOCK")));
    }
    line
}

fn last_decision(v: &Value) -> Option<String> {
    let d = v.get("last_decision").filter(|d| !d.is_null())?;
    let action = match str_of(d, "action") {
        "HOLD" => "NO-GO",
        a => a,
    };
    Some(format!(
        "{action} at {}: {}",
        short_time(str_of(d, "at")),
        str_of(d, "reason")
    ))
}

/// A table with left-aligned columns; the last column is not padded.
fn table(
    out: &mut String,
    header: &[&str],
    rows: &[Vec<(String, Option<&'static str>)>],
    color: bool,
) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, (cell, _)) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<(String, Option<&'static str>)>| {
        let n = cells.len();
        let mut s = String::from("  ");
        for (i, (cell, code)) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            s.push_str(&match code {
                Some(c) => paint(color, c, &cell),
                None => cell,
            });
            if i + 1 < n {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s
    };
    let _ = writeln!(
        out,
        "{}",
        line(header.iter().map(|h| (h.to_string(), None)).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r.clone()));
    }
}

/// `rollgate status`: the compact view.
pub fn render_status(v: &Value, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rollgate  {}", headline(v, color));
    if let Some(d) = last_decision(v) {
        let _ = writeln!(out, "last decision: {d}");
    }
    let reason = v["last_decision"]["reason"].as_str();
    if let Some(detail) = v["detail"]
        .as_str()
        .filter(|d| !d.is_empty() && Some(*d) != reason)
    {
        let _ = writeln!(out, "now: {detail}");
    }
    if let Some(phases) = v["phases"].as_array().filter(|p| !p.is_empty()) {
        let cur = v["phase_index"].as_u64().map(|i| i as usize);
        let list = phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = format!(
                    "{} {}%",
                    str_of(p, "name"),
                    fmt_pct(p["weight"].as_f64().unwrap_or(0.0))
                );
                match cur {
                    Some(c) if c == i => paint(color, "1", &format!("[{s}]")),
                    Some(c) if i < c => format!("{s} ✓"),
                    _ => s,
                }
            })
            .collect::<Vec<_>>()
            .join(" → ");
        let _ = writeln!(out, "phases: {list}");
    }
    match v["gates"].as_array() {
        Some(gates) if !gates.is_empty() => {
            let _ = writeln!(out, "gates:");
            let rows: Vec<_> = gates
                .iter()
                .map(|g| {
                    let status = str_of(g, "status").to_string();
                    let code = status_color(&status);
                    vec![
                        (status, Some(code)),
                        (str_of(g, "name").to_string(), None),
                        (g["journey"].as_str().unwrap_or("all").to_string(), None),
                        (fmt_value(&g["value"]), None),
                        (fmt_value(&g["threshold"]), None),
                        (g["samples"].as_u64().unwrap_or(0).to_string(), None),
                        (str_of(g, "reason").to_string(), None),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    "STATUS",
                    "GATE",
                    "JOURNEY",
                    "VALUE",
                    "THRESHOLD",
                    "SAMPLES",
                    "REASON",
                ],
                &rows,
                color,
            );
        }
        _ => {
            let _ = writeln!(out, "gates: none yet (no traffic in the window)");
        }
    }
    let flags = v["flags"]
        .as_object()
        .map(|f| {
            f.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(out, "flags: {flags}");
    let approvals = v["approvals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    format!(
                        "{} by {} at {}",
                        str_of(a, "role"),
                        str_of(a, "by"),
                        short_time(str_of(a, "at"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(out, "approvals: {approvals}");
    let incidents = v["incidents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    format!(
                        "#{} Sev-{} {}",
                        i["id"].as_u64().unwrap_or(0),
                        i["severity"].as_u64().unwrap_or(0),
                        str_of(i, "summary")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(out, "incidents: {incidents}");
    let frozen = if v["frozen"].as_bool() == Some(true) {
        "FREEZE_LOCK on: weight and rollout changes are refused until `rollgate unfreeze`"
    } else {
        "off"
    };
    let _ = write!(out, "freeze lock: {frozen}");
    out
}

/// After a command: what happened and where the rollout is now.
pub fn render_ack(what: &str, v: &Value, color: bool) -> String {
    let mut out = format!("ok: {what}\nnow: {}", headline(v, color));
    if let Some(d) = last_decision(v) {
        let _ = write!(out, "\nlast decision: {d}");
    }
    out
}

/// `rollgate report`: the list, oldest first.
pub fn render_report_list(v: &Value) -> String {
    let reports = v["reports"].as_array().cloned().unwrap_or_default();
    if reports.is_empty() {
        return "no gate reports yet".into();
    }
    let rows: Vec<_> = reports
        .iter()
        .map(|r| {
            vec![
                (str_of(r, "id").to_string(), None),
                (short_time(str_of(r, "at")), None),
                (str_of(r, "decision").to_string(), None),
                (r["phase"].as_str().unwrap_or("-").to_string(), None),
            ]
        })
        .collect();
    let mut out = String::new();
    table(&mut out, &["ID", "AT", "DECISION", "PHASE"], &rows, false);
    out.push_str("`rollgate report ID` shows one; `--md` prints its Markdown");
    out
}

/// `rollgate report ID`: decision, gates and triggers.
pub fn render_report(v: &Value, color: bool) -> String {
    let d = &v["decision"];
    let action = match str_of(d, "action") {
        "HOLD" => "NO-GO",
        a => a,
    };
    let mut out = format!(
        "report {}  {}  phase {}  V2 {}%  at {}\n{}\n",
        str_of(v, "id"),
        paint(color, "1", action),
        v["phase"].as_str().unwrap_or("-"),
        fmt_pct(v["weight_v2"].as_f64().unwrap_or(0.0)),
        short_time(str_of(v, "at")),
        str_of(d, "reason"),
    );
    if let Some(gates) = v["gates"].as_array().filter(|g| !g.is_empty()) {
        let rows: Vec<_> = gates
            .iter()
            .map(|g| {
                let status = str_of(g, "status").to_string();
                let code = status_color(&status);
                vec![
                    (status, Some(code)),
                    (str_of(g, "name").to_string(), None),
                    (g["journey"].as_str().unwrap_or("all").to_string(), None),
                    (fmt_value(&g["value"]), None),
                    (fmt_value(&g["threshold"]), None),
                    (g["samples"].as_u64().unwrap_or(0).to_string(), None),
                ]
            })
            .collect();
        table(
            &mut out,
            &["STATUS", "GATE", "JOURNEY", "VALUE", "THRESHOLD", "SAMPLES"],
            &rows,
            color,
        );
    }
    if let Some(triggers) = v["triggers"].as_array() {
        for t in triggers {
            let fired = t["fired"].as_bool() == Some(true);
            let _ = writeln!(
                out,
                "trigger {:<18} {}  {}",
                str_of(t, "trigger"),
                if fired {
                    paint(color, "1;31", "FIRED")
                } else {
                    "no   ".into()
                },
                str_of(t, "detail")
            );
        }
    }
    out.push_str("`--md` prints the full Markdown report");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Value {
        json!({
            "state": "canary", "phase": "canary-25", "phase_index": 1,
            "weights": {"v1": 75.0, "v2": 25.0},
            "gates": [
                {"name": "error_rate", "journey": null, "status": "GREEN", "value": 0.0, "threshold": 0.005, "samples": 110, "reason": "V2 5xx rate 0.0000 <= 0.0050"},
                {"name": "latency_p95", "journey": "search", "status": "YELLOW", "value": null, "threshold": 130.0, "samples": 3, "reason": "insufficient data"}
            ],
            "flags": {"EVIDENCE_BUNDLE": 1}, "approvals": [{"role": "cfo", "by": "dana", "at": "2025-01-01T00:00:00Z"}],
            "incidents": [], "last_decision": {"action": "HOLD", "reason": "gate latency_p95/search YELLOW", "at": "2025-01-01T00:00:00Z"},
            "frozen": false, "detail": "waiting for samples",
            "phases": [{"name": "canary-5", "weight": 5.0}, {"name": "canary-25", "weight": 25.0}, {"name": "full", "weight": 100.0}]
        })
    }

    #[test]
    fn status_view_is_compact_and_complete() {
        let s = render_status(&status(), false);
        assert!(
            s.starts_with("rollgate  canary  phase canary-25 (2/3)  V1 75% / V2 25%"),
            "{s}"
        );
        assert!(s.contains("last decision: NO-GO at"), "{s}");
        assert!(
            s.contains("phases: canary-5 5% ✓ → [canary-25 25%] → full 100%"),
            "{s}"
        );
        assert!(s.contains("GREEN   error_rate   all"), "{s}");
        assert!(s.contains("YELLOW  latency_p95  search   -"), "{s}");
        assert!(
            s.contains("approvals: cfo by dana at 2025-01-01 00:00:00Z"),
            "{s}"
        );
        assert!(
            s.contains("last decision: NO-GO at 2025-01-01 00:00:00Z: gate"),
            "{s}"
        );
        assert!(s.contains("freeze lock: off"), "{s}");
        assert!(!s.contains('\x1b'), "no colour unless asked");
        assert!(render_status(&status(), true).contains("\x1b[1;32mGREEN\x1b[0m"));
    }

    #[test]
    fn flags_parse() {
        assert_eq!(
            parse_flag("EVIDENCE_BUNDLE=1").ok(),
            Some(("EVIDENCE_BUNDLE".into(), 1))
        );
        assert_eq!(parse_flag("X=0").ok(), Some(("X".into(), 0)));
        assert!(parse_flag("X=2").is_err());
        assert!(parse_flag("X").is_err());
        assert!(parse_flag("=1").is_err());
    }

    #[test]
    fn admin_urls() {
        assert!(AdminClient::new("http://127.0.0.1:9901/", None).is_ok());
        for bad in [
            "127.0.0.1:9901",
            "https://x:1",
            "http://x:1/admin",
            "ftp://x",
            "",
        ] {
            let e = AdminClient::new(bad, None).err().map(|e| e.exit_code());
            assert_eq!(e, Some(exit::USAGE), "{bad}");
        }
    }

    #[test]
    fn percent_format() {
        assert_eq!(fmt_pct(25.0), "25");
        assert_eq!(fmt_pct(12.5), "12.5");
        assert_eq!(fmt_pct(33.333333), "33.33");
    }
}
