//! Admin HTTP API on its own port (SPEC §7): health, metrics, status page,
//! status JSON and the token-protected rollout commands.
//!
//! Handlers parse and validate, then hand a [`Command`] to the control task;
//! they never mutate rollout state themselves.
//!
//! The status page (`status.html`, compiled in) is read-only: it polls the
//! GET endpoints and draws everything itself, so it works offline and needs
//! no token. Actions stay on the token-protected API (or `rollgate` CLI).

pub mod report_html;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::app::Live;
use crate::control::history::Since;
use crate::control::report::{markdown, ReportStore};
use crate::control::{Command, CommandError, ControlHandle};
use crate::metrics::Metrics;
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

/// One admin endpoint; `mutating` ones need the bearer token.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub mutating: bool,
}

/// Every endpoint, so tests can check each mutating one refuses without a token.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/",
        mutating: false,
    },
    Route {
        method: "GET",
        path: "/healthz",
        mutating: false,
    },
    Route {
        method: "GET",
        path: "/metrics",
        mutating: false,
    },
    Route {
        method: "GET",
        path: "/api/v1/status",
        mutating: false,
    },
    Route {
        method: "GET",
        path: "/api/v1/history",
        mutating: false,
    },
    Route {
        method: "GET",
        path: "/api/v1/reports",
        mutating: false,
    },
    Route {
        method: "GET",
        path: "/api/v1/reports/{id}",
        mutating: false,
    },
    Route {
        method: "PUT",
        path: "/api/v1/weights",
        mutating: true,
    },
    Route {
        method: "PUT",
        path: "/api/v1/flags",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/approvals",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/incidents",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/unfreeze",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/rollout/start",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/rollout/pause",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/rollout/resume",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/rollout/promote",
        mutating: true,
    },
    Route {
        method: "POST",
        path: "/api/v1/rollout/rollback",
        mutating: true,
    },
];

pub struct Admin {
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

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Resp {
    json_resp(status, &json!({ "error": msg.to_string() }))
}

/// A 400 naming the field.
fn bad_field(field: &str, why: impl std::fmt::Display) -> Resp {
    json_resp(
        StatusCode::BAD_REQUEST,
        &json!({ "error": format!("field `{field}`: {why}"), "field": field }),
    )
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
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
        let known = ROUTES
            .iter()
            .filter(|r| matches_path(r.path, &path))
            .collect::<Vec<_>>();
        let Some(route) = known.iter().find(|r| r.method == req.method().as_str()) else {
            return if known.is_empty() {
                error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
            } else {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{} is not allowed on {path}", req.method()),
                );
                let allow = known
                    .iter()
                    .map(|r| r.method)
                    .collect::<Vec<_>>()
                    .join(", ");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_str(&allow).expect("ascii"));
                r
            };
        };
        if route.mutating && !self.authorized(&req) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let by = "admin-api";
        let query = req.uri().query().unwrap_or("").to_string();
        match (req.method().clone(), route.path) {
            (Method::GET, "/") => with_csp(
                respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
                STATUS_PAGE_CSP,
            ),
            (Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok\n"),
            (Method::GET, "/metrics") => respond(
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
            (Method::GET, "/api/v1/status") => json_resp(StatusCode::OK, &*self.control.status()),
            (Method::GET, "/api/v1/history") => {
                let since_ms = match query_param(&query, "since").map(str::parse::<i64>) {
                    None => None,
                    Some(Ok(ms)) => Some(ms),
                    Some(Err(_)) => {
                        return bad_field("since", "must be Unix milliseconds (an integer)")
                    }
                };
                let view = self.control.history();
                json_resp(
                    StatusCode::OK,
                    &json!({
                        "tick_ms": self.tick_ms,
                        "max_points": crate::control::history::MAX_POINTS,
                        "points": Since { view: &view, since_ms },
                    }),
                )
            }
            (Method::GET, "/api/v1/reports") => {
                json_resp(StatusCode::OK, &json!({ "reports": self.reports.list() }))
            }
            (Method::GET, "/api/v1/reports/{id}") => {
                let id = path.trim_start_matches("/api/v1/reports/");
                let report = match self.reports.get(id) {
                    None => return error(StatusCode::NOT_FOUND, format!("no report {id:?}")),
                    Some(r) => r,
                };
                match query_param(&query, "format") {
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
                    Some(other) => {
                        bad_field("format", format!("{other:?} is not one of json, md, html"))
                    }
                }
            }
            (_, "/api/v1/weights") => match body_json(req).await {
                Err(r) => r,
                Ok(v) => match v.get("v2") {
                    None => bad_field("v2", "missing (expected {\"v2\": 0-100})"),
                    Some(p) => match p.as_f64() {
                        Some(p) if (0.0..=100.0).contains(&p) => {
                            self.run(Command::SetWeight(p), by).await
                        }
                        Some(p) => bad_field("v2", format!("{p} is outside 0-100")),
                        None => bad_field("v2", format!("{p} is not a number")),
                    },
                },
            },
            (_, "/api/v1/flags") => match body_json(req).await {
                Err(r) => r,
                Ok(Value::Object(map)) if !map.is_empty() => {
                    let mut flags = BTreeMap::new();
                    for (k, v) in map {
                        match v.as_i64() {
                            Some(n @ (0 | 1)) => {
                                flags.insert(k, n);
                            }
                            _ => return bad_field(&k, format!("{v} must be 0 or 1")),
                        }
                    }
                    self.run(Command::SetFlags(flags), by).await
                }
                Ok(_) => bad_field("flags", "expected an object like {\"SHADOW_PASS_24H\": 1}"),
            },
            (_, "/api/v1/approvals") => match body_json(req).await {
                Err(r) => r,
                Ok(v) => match (str_field(&v, "role"), str_field(&v, "by")) {
                    (Err(e), _) | (_, Err(e)) => e.response(),
                    (Ok(role), Ok(by_who)) => {
                        self.run(Command::Approve { role, by: by_who }, by).await
                    }
                },
            },
            (_, "/api/v1/incidents") => match body_json(req).await {
                Err(r) => r,
                Ok(v) => {
                    let severity = match v.get("severity").and_then(Value::as_u64) {
                        Some(s @ (1 | 2)) => s as u8,
                        _ => return bad_field("severity", "must be 1 or 2"),
                    };
                    match str_field(&v, "summary") {
                        Err(e) => e.response(),
                        Ok(summary) => self.run(Command::Incident { severity, summary }, by).await,
                    }
                }
            },
            (_, "/api/v1/unfreeze") => self.run(Command::Unfreeze, by).await,
            (_, "/api/v1/rollout/start") => self.run(Command::Start, by).await,
            (_, "/api/v1/rollout/pause") => self.run(Command::Pause, by).await,
            (_, "/api/v1/rollout/resume") => self.run(Command::Resume, by).await,
            (_, "/api/v1/rollout/promote") => self.run(Command::Promote, by).await,
            (_, "/api/v1/rollout/rollback") => self.run(Command::Rollback, by).await,
            _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        }
    }

    async fn run(&self, cmd: Command, by: &str) -> Resp {
        match self.control.command(cmd, by).await {
            Ok(status) => json_resp(StatusCode::OK, &*status),
            Err(e @ CommandError::Frozen) => error(StatusCode::LOCKED, e),
            Err(e @ CommandError::Conflict(_)) => error(StatusCode::CONFLICT, e),
        }
    }
}

fn matches_path(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("{id}") {
        Some(prefix) => path
            .strip_prefix(prefix)
            .is_some_and(|id| !id.is_empty() && !id.contains('/')),
        None => pattern == path,
    }
}

/// A rejected field: rendered as a 400 naming it.
struct FieldError {
    field: String,
    why: String,
}

impl FieldError {
    fn response(self) -> Resp {
        bad_field(&self.field, self.why)
    }
}

fn str_field(v: &Value, field: &str) -> Result<String, FieldError> {
    let why = match v.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 1024 => {
            return Ok(s.trim().to_string())
        }
        Some(Value::String(_)) => "must be a non-empty string of at most 1024 bytes".to_string(),
        Some(other) => format!("{other} is not a string"),
        None => "missing".to_string(),
    };
    Err(FieldError {
        field: field.to_string(),
        why,
    })
}

async fn body_json(req: Request<Incoming>) -> Result<Value, Resp> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
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
