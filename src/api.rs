//! The admin API's wire types: every answer and every request body, shared by
//! the server (`admin`, which serialises them) and the `rollgate` CLI (which
//! deserialises them), so the two cannot drift apart silently. A field renamed
//! here is renamed on both sides, and a CLI that meets an answer it does not
//! understand says so instead of printing an empty cell.
//!
//! Requests are parsed from a JSON value field by field rather than with
//! `Deserialize`, because the server's 400 answers name the offending field
//! in words an operator can act on (`field `v2`: 150 is outside 0-100`);
//! serde's own messages would change that contract.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use crate::control::report::{Report, ReportIndex};
// The status answer is the controller's own view: it is built there, where
// its parts live, so the control plane never imports this module.
pub use crate::control::{PhaseView, StatusView, Weights};

// === answers ===

/// `GET /api/v1/reports`: the gate reports, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReportList {
    pub reports: Vec<ReportIndex>,
}

/// `GET /api/v1/history`. `P` is the borrowed view when the server writes it
/// and a `Vec` of points when a client reads it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HistoryAnswer<P> {
    pub max_points: usize,
    pub points: P,
    pub tick_ms: u64,
}

/// Every refusal: `{"error": "..."}`, plus `field` when a request field was
/// rejected.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub(crate) fn new(error: impl std::fmt::Display) -> Self {
        Self {
            error: error.to_string(),
            field: None,
        }
    }
}

// === requests ===

/// A rejected request field; the server answers it as a 400 naming the field.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    pub field: String,
    pub why: String,
}

impl FieldError {
    pub(crate) fn new(field: &str, why: impl std::fmt::Display) -> Self {
        Self {
            field: field.to_string(),
            why: why.to_string(),
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: format!("field `{}`: {}", self.field, self.why),
            field: Some(self.field.clone()),
        }
    }
}

/// `PUT /api/v1/weights`: V2's weight in percent (0-100, fractional ok).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct WeightsRequest {
    pub v2: f64,
    /// Through the overnight freeze.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// The optional `{"force": true}` of a weight change: overrides the
/// overnight freeze. Anything but a boolean is refused, naming the field.
pub(crate) fn force_field(v: &Value) -> Result<bool, FieldError> {
    match v.get("force") {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(FieldError::new(
            "force",
            format!("{other} is not a boolean (expected true or false)"),
        )),
    }
}

impl WeightsRequest {
    pub(crate) fn from_json(v: &Value) -> Result<Self, FieldError> {
        let Some(p) = v.get("v2") else {
            return Err(FieldError::new("v2", "missing (expected {\"v2\": 0-100})"));
        };
        match p.as_f64() {
            Some(v2) if (0.0..=100.0).contains(&v2) => Ok(Self {
                v2,
                force: force_field(v)?,
            }),
            Some(v2) => Err(FieldError::new("v2", format!("{v2} is outside 0-100"))),
            None => Err(FieldError::new("v2", format!("{p} is not a number"))),
        }
    }
}

/// `PUT /api/v1/flags`: `{"NAME": 0 | 1, ...}`, at least one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub(crate) struct FlagsRequest(pub BTreeMap<String, i64>);

impl FlagsRequest {
    pub(crate) fn from_json(v: &Value) -> Result<Self, FieldError> {
        let map = match v {
            Value::Object(map) if !map.is_empty() => map,
            _ => {
                return Err(FieldError::new(
                    "flags",
                    "expected an object like {\"SHADOW_PASS_24H\": 1}",
                ))
            }
        };
        let mut flags = BTreeMap::new();
        for (k, v) in map {
            match v.as_i64() {
                Some(n @ (0 | 1)) => {
                    flags.insert(k.clone(), n);
                }
                _ => return Err(FieldError::new(k, format!("{v} must be 0 or 1"))),
            }
        }
        Ok(Self(flags))
    }
}

/// `POST /api/v1/approvals`: who approves the phase that needs `role`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ApprovalRequest {
    pub role: String,
    pub by: String,
}

impl ApprovalRequest {
    pub(crate) fn from_json(v: &Value) -> Result<Self, FieldError> {
        let role = str_field(v, "role");
        let by = str_field(v, "by");
        Ok(Self {
            role: role?,
            by: by?,
        })
    }
}

/// `POST /api/v1/incidents`: Sev-1 rolls back at once, two Sev-2 hold.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct IncidentRequest {
    pub severity: u8,
    pub summary: String,
}

impl IncidentRequest {
    pub(crate) fn from_json(v: &Value) -> Result<Self, FieldError> {
        let severity = match v.get("severity").and_then(Value::as_u64) {
            Some(s @ (1 | 2)) => s as u8,
            _ => return Err(FieldError::new("severity", "must be 1 or 2")),
        };
        Ok(Self {
            severity,
            summary: str_field(v, "summary")?,
        })
    }
}

/// A trimmed, non-empty string of at most 1024 bytes: operator text that ends
/// up in the audit log and in reports.
fn str_field(v: &Value, field: &str) -> Result<String, FieldError> {
    let why = match v.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 1024 => {
            return Ok(s.trim().to_string())
        }
        Some(Value::String(_)) => "must be a non-empty string of at most 1024 bytes".to_string(),
        Some(other) => format!("{other} is not a string"),
        None => "missing".to_string(),
    };
    Err(FieldError::new(field, why))
}

#[cfg(test)]
pub(crate) mod tests;
