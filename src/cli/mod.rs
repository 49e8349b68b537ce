//! `rollgate status | weights N | approve | pause | resume | promote | rollback
//! | incident | report | start | flags | unfreeze`: a thin client of the admin
//! API.
//!
//! Every command is one HTTP call; the server does all validation, so the
//! CLI cannot drift from the API. What the CLI adds is presentation: a
//! compact human view by default, drawn from the typed answers of
//! [`crate::api`] (so an answer it does not understand is an error, never a
//! blank cell); the server's JSON, pretty-printed, with `--json`; and one
//! clear sentence (and a distinct exit code) for each way a call can fail:
//! unreachable, wrong token, frozen, conflict, bad value.
//!
//! `args` is the command line, `client` the HTTP calls, `render` the human
//! view; this module ties them together, one arm per command.

mod args;
mod client;
mod render;
#[cfg(test)]
mod tests;

use http::Method;

pub use args::{AdminArgs, AdminCmd};
use client::{AdminClient, Answer, TIMEOUT};
use render::{fmt_pct, render_ack, render_report, render_report_list, render_status};

use crate::api::{
    ApprovalRequest, FlagsRequest, IncidentRequest, Report, ReportList, StatusView, WeightsRequest,
};

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
pub(crate) enum CliError {
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
    #[error("refused (HTTP 423): {0}; --force overrides it")]
    OvernightFreeze(String),
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
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::BadUrl { .. } | CliError::Usage(_) => exit::USAGE,
            CliError::Unreachable { .. } | CliError::Timeout { .. } => exit::UNREACHABLE,
            CliError::Unauthorized => exit::UNAUTHORIZED,
            CliError::Frozen(_)
            | CliError::OvernightFreeze(_)
            | CliError::Conflict(_)
            | CliError::BadRequest(_)
            | CliError::NotFound(_)
            | CliError::Server { .. }
            | CliError::BadAnswer(_) => exit::REFUSED,
        }
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
        rt.block_on(execute(&client, &action, out))
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
pub(crate) enum Action {
    Status,
    Weights {
        v2: f64,
        force: bool,
    },
    Approve {
        role: String,
        by: String,
    },
    Start,
    Pause,
    Resume,
    Promote {
        force: bool,
    },
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
pub(crate) struct Output {
    /// The server's JSON as is (pretty-printed), for scripts.
    pub(crate) json: bool,
    /// ANSI colours for the human view (a terminal without NO_COLOR).
    pub(crate) color: bool,
}

/// Runs one action and returns what to print.
async fn execute(client: &AdminClient, action: &Action, out: Output) -> Result<String, CliError> {
    let (answer, what) = match action {
        Action::Status => (client.get("/api/v1/status").await?, None),
        Action::Weights { v2, force } => (
            client
                .send(
                    Method::PUT,
                    "/api/v1/weights",
                    &WeightsRequest {
                        v2: *v2,
                        force: *force,
                    },
                )
                .await?,
            Some(format!(
                "V2 weight set to {}% (the controller is paused: `rollgate resume` hands control back)",
                fmt_pct(*v2)
            )),
        ),
        Action::Approve { role, by } => (
            client
                .send(
                    Method::POST,
                    "/api/v1/approvals",
                    &ApprovalRequest {
                        role: role.clone(),
                        by: by.clone(),
                    },
                )
                .await?,
            Some(format!("approval recorded: role {role} by {by}")),
        ),
        Action::Start => bare(client, "/api/v1/rollout/start", "started").await?,
        Action::Pause => bare(client, "/api/v1/rollout/pause", "paused").await?,
        Action::Resume => bare(client, "/api/v1/rollout/resume", "resumed").await?,
        Action::Promote { force: false } => {
            bare(client, "/api/v1/rollout/promote", "promoted to the next phase").await?
        }
        Action::Promote { force: true } => (
            client
                .send(
                    Method::POST,
                    "/api/v1/rollout/promote",
                    &serde_json::json!({"force": true}),
                )
                .await?,
            Some("promoted to the next phase (forced through the overnight freeze)".into()),
        ),
        Action::Rollback => {
            bare(client, "/api/v1/rollout/rollback", "rolled back: V2 weight 0").await?
        }
        Action::Unfreeze => bare(client, "/api/v1/unfreeze", "FREEZE_LOCK cleared").await?,
        Action::Flags(flags) => {
            let names = flags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let body = FlagsRequest(flags.iter().cloned().collect());
            (
                client.send(Method::PUT, "/api/v1/flags", &body).await?,
                Some(format!("flags set: {names}")),
            )
        }
        Action::Incident { severity, summary } => (
            client
                .send(
                    Method::POST,
                    "/api/v1/incidents",
                    &IncidentRequest {
                        severity: *severity,
                        summary: summary.clone(),
                    },
                )
                .await?,
            Some(format!("Sev-{severity} incident recorded: {summary}")),
        ),
        Action::Report { id, markdown } => {
            return report(client, id.as_deref(), *markdown, out).await
        }
    };
    shown(&answer, out, |s: &StatusView| match what {
        None => render_status(s, out.color),
        Some(what) => render_ack(&what, s, out.color),
    })
}

/// A command without a body, and what to say when it went through.
async fn bare(
    client: &AdminClient,
    path: &str,
    what: &str,
) -> Result<(Answer, Option<String>), CliError> {
    Ok((client.post(path).await?, Some(what.to_string())))
}

/// `rollgate report [ID|latest] [--md]`.
async fn report(
    client: &AdminClient,
    id: Option<&str>,
    markdown: bool,
    out: Output,
) -> Result<String, CliError> {
    let id = match id {
        None if !markdown => {
            let list = client.get("/api/v1/reports").await?;
            return shown(&list, out, render_report_list);
        }
        None | Some("latest") => {
            let list: ReportList = client.get("/api/v1/reports").await?.decode()?;
            match list.reports.last() {
                Some(r) => r.id.clone(),
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
        let md = client
            .get(&format!("/api/v1/reports/{id}?format=md"))
            .await?;
        return Ok(md.text());
    }
    let report = client.get(&format!("/api/v1/reports/{id}")).await?;
    shown(&report, out, |r: &Report| render_report(r, out.color))
}

/// The server's JSON with `--json`, else the human view of the typed answer.
fn shown<T: serde::de::DeserializeOwned>(
    answer: &Answer,
    out: Output,
    render: impl FnOnce(&T) -> String,
) -> Result<String, CliError> {
    if out.json {
        return answer.pretty_json();
    }
    Ok(render(&answer.decode()?))
}
