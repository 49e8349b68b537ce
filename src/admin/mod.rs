//! Admin HTTP API on its own port: health, metrics, status page, status JSON
//! and the token-protected rollout commands.
//!
//! Handlers parse and validate, then hand a [`Command`] to the control task;
//! they never mutate rollout state themselves.
//!
//! The status page (`status.html`, compiled in) is read-only: it polls the
//! GET endpoints and draws everything itself, so it works offline and needs
//! no token. Actions stay on the token-protected API (or `rollgate` CLI).
//!
//! Adding an endpoint: one line in [`ROUTES`] (`read` or `change`, which
//! decides whether it needs the token), an `Endpoint` variant and its arm
//! in `Admin::route`, and its request and answer types in [`crate::api`],
//! where the CLI finds them too.

pub(crate) mod report_html;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::api::{
    ApprovalRequest, ErrorBody, FieldError, FlagsRequest, HistoryAnswer, IncidentRequest,
    ReportList, WeightsRequest,
};
use crate::control::history::Since;
use crate::control::report::{markdown, ReportStore};
use crate::control::{Command, CommandError, ControlHandle};
use crate::edge::Live;
use crate::telemetry::prometheus::Metrics;
use arc_swap::ArcSwap;

const MAX_BODY: usize = 64 * 1024;
const STATUS_PAGE: &str = include_str!("status.html");
/// The page's own inline script and styles, and fetches to this origin only.
const STATUS_PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
/// Rendered reports: styles only, no script at all.
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// What an endpoint does. [`Admin::route`] matches on it exhaustively, so an
/// endpoint added to [`ROUTES`] without a handler does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    StatusPage,
    Health,
    Metrics,
    Status,
    History,
    Reports,
    Report,
    Weights,
    Flags,
    Approvals,
    Incidents,
    Unfreeze,
    Start,
    Pause,
    Resume,
    Promote,
    Rollback,
}

/// One admin endpoint; `mutating` ones need the bearer token.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub mutating: bool,
    endpoint: Endpoint,
}

/// A read: no token, no change.
const fn read(path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method: "GET",
        path,
        mutating: false,
        endpoint,
    }
}

/// A change: only with the bearer token. Declaring a route through this is
/// the only way to make it change anything, so none can miss the check.
const fn change(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        mutating: true,
        endpoint,
    }
}

/// Every endpoint: the table the server dispatches from, so tests can also
/// check that each mutating one refuses without a token.
pub const ROUTES: &[Route] = &[
    read("/", Endpoint::StatusPage),
    read("/healthz", Endpoint::Health),
    read("/metrics", Endpoint::Metrics),
    read("/api/v1/status", Endpoint::Status),
    read("/api/v1/history", Endpoint::History),
    read("/api/v1/reports", Endpoint::Reports),
    read("/api/v1/reports/{id}", Endpoint::Report),
    change("PUT", "/api/v1/weights", Endpoint::Weights),
    change("PUT", "/api/v1/flags", Endpoint::Flags),
    change("POST", "/api/v1/approvals", Endpoint::Approvals),
    change("POST", "/api/v1/incidents", Endpoint::Incidents),
    change("POST", "/api/v1/unfreeze", Endpoint::Unfreeze),
    change("POST", "/api/v1/rollout/start", Endpoint::Start),
    change("POST", "/api/v1/rollout/pause", Endpoint::Pause),
    change("POST", "/api/v1/rollout/resume", Endpoint::Resume),
    change("POST", "/api/v1/rollout/promote", Endpoint::Promote),
    change("POST", "/api/v1/rollout/rollback", Endpoint::Rollback),
];

/// What the admin server serves from: one per process, shared by every connection.
pub(crate) struct Admin {
    pub control: ControlHandle,
    pub metrics: Arc<Metrics>,
    /// Current config and telemetry (swapped on reload).
    pub live: Arc<ArcSwap<Live>>,
    /// From ROLLGATE_ADMIN_TOKEN or the config at start; changes need a restart.
    pub token: Option<String>,
    pub reports: ReportStore,
    /// The controller's tick, so the page can tell how dense its chart points are.
    pub tick_ms: u64,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn with_csp(mut r: Resp, csp: &'static str) -> Resp {
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The value of `key` in a query string (no percent-decoding: our values are plain).
fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn json_resp(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).expect("serializable"),
    )
}

/// Through a JSON value, so every object's keys come out sorted: the order
/// the history and report-list answers have always had.
fn sorted_json_resp(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    json_resp(status, &serde_json::to_value(v).expect("serializable"))
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Resp {
    json_resp(status, &ErrorBody::new(msg))
}

/// A 400 naming the field.
fn bad_field(e: &FieldError) -> Resp {
    json_resp(StatusCode::BAD_REQUEST, &e.body())
}

/// Who the audit log names for commands that came through this API.
const BY: &str = "admin-api";

impl Admin {
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Resp, Infallible> {
        Ok(self.route(req).await)
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant time in the token's content; the length is not a secret worth hiding.
        bool::from(given.as_bytes().ct_eq(token.as_bytes()))
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_string();
        let route = match find_route(req.method(), &path) {
            Ok(route) => route,
            Err(no) => return no.response(req.method(), &path),
        };
        if route.mutating && !self.authorized(&req) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let query = req.uri().query().unwrap_or("").to_string();
        match route.endpoint {
            Endpoint::StatusPage => with_csp(
                respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
                STATUS_PAGE_CSP,
            ),
            Endpoint::Health => respond(StatusCode::OK, "text/plain", "ok\n"),
            Endpoint::Metrics => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                {
                    let live = self.live.load();
                    self.metrics.render(
                        &live.telemetry,
                        &live.config.journeys,
                        &live.config.beacons.names,
                    )
                },
            ),
            Endpoint::Status => json_resp(StatusCode::OK, &*self.control.status()),
            Endpoint::History => self.history(&query),
            Endpoint::Reports => sorted_json_resp(
                StatusCode::OK,
                &ReportList {
                    reports: self.reports.list(),
                },
            ),
            Endpoint::Report => self.report(path.trim_start_matches("/api/v1/reports/"), &query),
            Endpoint::Weights => match body_json(req).await {
                Err(r) => r,
                Ok(v) => match WeightsRequest::from_json(&v) {
                    Err(e) => bad_field(&e),
                    Ok(w) => self.run_forced(Command::SetWeight(w.v2), w.force).await,
                },
            },
            Endpoint::Flags => {
                self.run_parsed(req, FlagsRequest::from_json, |f| Command::SetFlags(f.0))
                    .await
            }
            Endpoint::Approvals => {
                self.run_parsed(req, ApprovalRequest::from_json, |a| Command::Approve {
                    role: a.role,
                    by: a.by,
                })
                .await
            }
            Endpoint::Incidents => {
                self.run_parsed(req, IncidentRequest::from_json, |i| Command::Incident {
                    severity: i.severity,
                    summary: i.summary,
                })
                .await
            }
            Endpoint::Unfreeze => self.run(Command::Unfreeze).await,
            Endpoint::Start => self.run(Command::Start).await,
            Endpoint::Pause => self.run(Command::Pause).await,
            Endpoint::Resume => self.run(Command::Resume).await,
            Endpoint::Promote => {
                // No body, or one that may carry {"force": true}.
                let force = body_json(req)
                    .await
                    .ok()
                    .is_some_and(|v| matches!(crate::api::force_field(&v), Ok(true)));
                self.run_forced(Command::Promote, force).await
            }
            Endpoint::Rollback => self.run(Command::Rollback).await,
        }
    }

    /// `GET /api/v1/history[?since=MS]`.
    fn history(&self, query: &str) -> Resp {
        let since_ms = match query_param(query, "since").map(str::parse::<i64>) {
            None => None,
            Some(Ok(ms)) => Some(ms),
            Some(Err(_)) => {
                return bad_field(&FieldError::new(
                    "since",
                    "must be Unix milliseconds (an integer)",
                ))
            }
        };
        let view = self.control.history();
        sorted_json_resp(
            StatusCode::OK,
            &HistoryAnswer {
                max_points: crate::control::history::MAX_POINTS,
                points: Since {
                    view: &view,
                    since_ms,
                },
                tick_ms: self.tick_ms,
            },
        )
    }

    /// `GET /api/v1/reports/{id}[?format=json|md|html]`.
    fn report(&self, id: &str, query: &str) -> Resp {
        let Some(report) = self.reports.get(id) else {
            return error(StatusCode::NOT_FOUND, format!("no report {id:?}"));
        };
        match query_param(query, "format") {
            None | Some("json") => json_resp(StatusCode::OK, &report),
            Some("md") => respond(
                StatusCode::OK,
                "text/markdown; charset=utf-8",
                markdown(&report),
            ),
            Some("html") => {
                let links = [
                    ("← status page", "/".to_string()),
                    (
                        "Markdown",
                        format!("/api/v1/reports/{}?format=md", report.id),
                    ),
                    ("JSON", format!("/api/v1/reports/{}", report.id)),
                ];
                let html = report_html::page(
                    &format!("rollgate report {}", report.id),
                    &markdown(&report),
                    &links,
                );
                with_csp(
                    respond(StatusCode::OK, "text/html; charset=utf-8", html),
                    REPORT_CSP,
                )
            }
            Some(other) => bad_field(&FieldError::new(
                "format",
                format!("{other:?} is not one of json, md, html"),
            )),
        }
    }

    /// Reads the body, checks it field by field, then runs the command it asks for.
    async fn run_parsed<T>(
        &self,
        req: Request<Incoming>,
        parse: fn(&Value) -> Result<T, FieldError>,
        command: impl FnOnce(T) -> Command,
    ) -> Resp {
        match body_json(req).await {
            Err(r) => r,
            Ok(v) => match parse(&v) {
                Err(e) => bad_field(&e),
                Ok(request) => self.run(command(request)).await,
            },
        }
    }

    async fn run(&self, cmd: Command) -> Resp {
        self.run_forced(cmd, false).await
    }

    async fn run_forced(&self, cmd: Command, force: bool) -> Resp {
        match self.control.command_forced(cmd, BY, force).await {
            Ok(status) => json_resp(StatusCode::OK, &*status),
            Err(e @ (CommandError::Frozen | CommandError::OvernightFreeze { .. })) => {
                error(StatusCode::LOCKED, e)
            }
            Err(e @ CommandError::Conflict(_)) => error(StatusCode::CONFLICT, e),
        }
    }
}

/// Why no route serves a request.
#[derive(Debug, PartialEq)]
enum NoRoute {
    /// No endpoint has this path: 404.
    Unknown,
    /// The path exists for these other methods: 405 with `Allow`.
    Method(Vec<&'static str>),
}

impl NoRoute {
    fn response(self, method: &Method, path: &str) -> Resp {
        match self {
            NoRoute::Unknown => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
            NoRoute::Method(allowed) => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {path}"),
                );
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_str(&allowed.join(", ")).expect("ascii"),
                );
                r
            }
        }
    }
}

/// The route for a request.
fn find_route(method: &Method, path: &str) -> Result<&'static Route, NoRoute> {
    let known = ROUTES
        .iter()
        .filter(|r| matches_path(r.path, path))
        .collect::<Vec<_>>();
    if let Some(route) = known.iter().find(|r| r.method == method.as_str()) {
        return Ok(route);
    }
    if known.is_empty() {
        return Err(NoRoute::Unknown);
    }
    Err(NoRoute::Method(known.iter().map(|r| r.method).collect()))
}

fn matches_path(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("{id}") {
        Some(prefix) => path
            .strip_prefix(prefix)
            .is_some_and(|id| !id.is_empty() && !id.contains('/')),
        None => pattern == path,
    }
}

/// Longest an admin command's body may take to arrive: a few hundred bytes of
/// JSON that the CLI or `curl` sends in one write. A client that declares a
/// length and sends less is answered 408 and let go (the admin listener may
/// be reachable by more than the operator).
const ADMIN_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn body_json(req: Request<Incoming>) -> Result<Value, Resp> {
    let h1 = req.version() < http::Version::HTTP_2;
    let collect = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(ADMIN_BODY_TIMEOUT, collect).await {
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not complete within {ADMIN_BODY_TIMEOUT:?}"),
            );
            // An h2 stream needs nothing: its unread body resets it.
            if h1 {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return Err(r);
        }
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {MAX_BODY} bytes"),
            ))
        }
    };
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body is not valid JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests;
