//! Admin HTTP API on its own port (SPEC §7): health, metrics, status page,
//! status JSON and the token-protected rollout commands.
//!
//! Handlers parse and validate, then hand a [`Command`] to the control task;
//! they never mutate rollout state themselves.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::control::report::{markdown, ReportStore};
use crate::control::{Command, CommandError, ControlHandle};
use crate::journeys::Journeys;
use crate::metrics::Metrics;
use crate::stats::Telemetry;

const MAX_BODY: usize = 64 * 1024;
const STATUS_PAGE: &str = include_str!("status.html");

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
    pub telemetry: Arc<Telemetry>,
    pub journeys: Journeys,
    pub beacon_names: Vec<String>,
    pub token: Option<String>,
    pub reports: ReportStore,
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
            (Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
            (Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok\n"),
            (Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics
                    .render(&self.telemetry, &self.journeys, &self.beacon_names),
            ),
            (Method::GET, "/api/v1/status") => json_resp(StatusCode::OK, &*self.control.status()),
            (Method::GET, "/api/v1/reports") => {
                json_resp(StatusCode::OK, &json!({ "reports": self.reports.list() }))
            }
            (Method::GET, "/api/v1/reports/{id}") => {
                let id = path.trim_start_matches("/api/v1/reports/");
                match self.reports.get(id) {
                    None => error(StatusCode::NOT_FOUND, format!("no report {id:?}")),
                    Some(r) if query.split('&').any(|p| p == "format=md") => {
                        respond(StatusCode::OK, "text/markdown; charset=utf-8", markdown(&r))
                    }
                    Some(r) => json_resp(StatusCode::OK, &r),
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
