//! The human view of the admin API's answers: a compact status, a one-line
//! acknowledgement after each command, and the gate reports. Everything is
//! drawn from the typed answers in [`crate::api`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::api::{Report, ReportList, StatusView};
use crate::control::gates::{GateResult, GateStatus};
use crate::control::state::{Decision, StateName};

/// A percentage with at most two decimals and no trailing `.0`.
pub(crate) fn fmt_pct(p: f64) -> String {
    let r = (p * 100.0).round() / 100.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

/// A gate's value or threshold, with as many digits as its size needs.
fn fmt_value(v: Option<f64>) -> String {
    match v {
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

fn status_color(status: GateStatus) -> &'static str {
    match status {
        GateStatus::Green => "1;32",
        GateStatus::Yellow => "1;33",
        GateStatus::Red => "1;31",
    }
}

fn state_color(state: StateName) -> &'static str {
    match state {
        StateName::Promoted => "1;32",
        StateName::RolledBack => "1;31",
        StateName::Holding | StateName::Paused | StateName::Waiting => "1;33",
        StateName::Shadow | StateName::Canary => "1;34",
    }
}

/// "2026-11-23 16:07:38Z".
fn short_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// One line: state, phase, weights.
fn headline(v: &StatusView, color: bool) -> String {
    let phase = match (&v.phase, v.phase_index) {
        (Some(p), Some(i)) => format!("{p} ({}/{})", i + 1, v.phases.len()),
        _ => "-".into(),
    };
    let mut line = format!(
        "{}  phase {phase}  V1 {}% / V2 {}%",
        paint(color, state_color(v.state), v.state.as_str()),
        fmt_pct(v.weights.v1),
        fmt_pct(v.weights.v2),
    );
    if v.frozen {
        line.push_str(&format!("  {}", paint(color, "1;35", "FREEZE_LOCK")));
    }
    // The routing in force is not on disk yet: a restart would lose it.
    if v.state_persist_degraded {
        line.push_str(&format!("  {}", paint(color, "1;31", "STATE_NOT_SAVED")));
    }
    line
}

fn last_decision(d: &Decision) -> String {
    format!(
        "{} at {}: {}",
        d.action.report_word(),
        short_time(&d.at),
        d.reason
    )
}

/// A table cell and its colour, if any.
type Cell = (String, Option<&'static str>);

/// A table with left-aligned columns; the last column is not padded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<Cell>], color: bool) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, (cell, _)) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<Cell>| {
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

const GATE_COLUMNS: [&str; 6] = ["STATUS", "GATE", "JOURNEY", "VALUE", "THRESHOLD", "SAMPLES"];

/// A gate table row: status, name, journey, value, threshold, samples.
fn gate_row(g: &GateResult) -> Vec<Cell> {
    vec![
        (g.status.word().to_string(), Some(status_color(g.status))),
        (g.name.to_string(), None),
        (g.journey.as_deref().unwrap_or("all").to_string(), None),
        (fmt_value(g.value), None),
        (fmt_value(Some(g.threshold)), None),
        (g.samples.to_string(), None),
    ]
}

/// `items` through `f`, joined by `sep`; "none" when there are none.
fn list_or_none<T>(items: &[T], sep: &str, f: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items.iter().map(f).collect::<Vec<_>>().join(sep)
}

/// `rollgate status`: the compact view.
pub(crate) fn render_status(v: &StatusView, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rollgate  {}", headline(v, color));
    if let Some(d) = &v.last_decision {
        let _ = writeln!(out, "last decision: {}", last_decision(d));
    }
    let reason = v.last_decision.as_ref().map(|d| d.reason.as_str());
    if !v.detail.is_empty() && Some(v.detail.as_str()) != reason {
        let _ = writeln!(out, "now: {}", v.detail);
    }
    if !v.phases.is_empty() {
        let list = v
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = format!("{} {}%", p.name, fmt_pct(p.weight));
                match v.phase_index {
                    Some(c) if c == i => paint(color, "1", &format!("[{s}]")),
                    Some(c) if i < c => format!("{s} ✓"),
                    _ => s,
                }
            })
            .collect::<Vec<_>>()
            .join(" → ");
        let _ = writeln!(out, "phases: {list}");
    }
    if v.gates.is_empty() {
        let _ = writeln!(out, "gates: none yet (no traffic in the window)");
    } else {
        let _ = writeln!(out, "gates:");
        let rows: Vec<_> = v
            .gates
            .iter()
            .map(|g| {
                let mut row = gate_row(g);
                row.push((g.reason.clone(), None));
                row
            })
            .collect();
        let mut header = GATE_COLUMNS.to_vec();
        header.push("REASON");
        table(&mut out, &header, &rows, color);
    }
    let flags: Vec<_> = v.flags.iter().collect();
    let flags = list_or_none(&flags, " ", |(k, v)| format!("{k}={v}"));
    let _ = writeln!(out, "flags: {flags}");
    let approvals = list_or_none(&v.approvals, ", ", |a| {
        format!("{} by {} at {}", a.role, a.by, short_time(&a.at))
    });
    let _ = writeln!(out, "approvals: {approvals}");
    let incidents = list_or_none(&v.incidents, "; ", |i| {
        format!("#{} Sev-{} {}", i.id, i.severity, i.summary)
    });
    let _ = writeln!(out, "incidents: {incidents}");
    let frozen = match &v.refreeze {
        _ if v.frozen => {
            "FREEZE_LOCK on: weight and rollout changes are refused until `rollgate unfreeze`".into()
        }
        Some(r) if r.pending() => format!(
            "off: golden re-freeze {:?} after {} round trips ({}); set once the command center verifies",
            r.state,
            r.attempts,
            r.last_error.as_deref().unwrap_or("first try under way")
        ),
        _ => "off".to_string(),
    };
    if let Some(o) = &v.overnight_freeze {
        let _ = writeln!(out, "overnight: {o} (weight changes need --force)");
    }
    let _ = write!(out, "freeze lock: {frozen}");
    out
}

/// After a command: what happened and where the rollout is now.
pub(crate) fn render_ack(what: &str, v: &StatusView, color: bool) -> String {
    let mut out = format!("ok: {what}\nnow: {}", headline(v, color));
    if let Some(d) = &v.last_decision {
        let _ = write!(out, "\nlast decision: {}", last_decision(d));
    }
    out
}

/// `rollgate report`: the list, oldest first.
pub(crate) fn render_report_list(v: &ReportList) -> String {
    if v.reports.is_empty() {
        return "no gate reports yet".into();
    }
    let rows: Vec<_> = v
        .reports
        .iter()
        .map(|r| {
            vec![
                (r.id.clone(), None),
                (short_time(&r.at), None),
                (r.decision.clone(), None),
                (r.phase.as_deref().unwrap_or("-").to_string(), None),
            ]
        })
        .collect();
    let mut out = String::new();
    table(&mut out, &["ID", "AT", "DECISION", "PHASE"], &rows, false);
    out.push_str("`rollgate report ID` shows one; `--md` prints its Markdown");
    out
}

/// `rollgate report ID`: decision, gates and triggers.
pub(crate) fn render_report(v: &Report, color: bool) -> String {
    let d = &v.decision;
    let mut out = format!(
        "report {}  {}  phase {}  V2 {}%  at {}\n{}\n",
        v.id,
        paint(color, "1", d.action.report_word()),
        v.phase.as_deref().unwrap_or("-"),
        fmt_pct(v.weight_v2),
        short_time(&v.at),
        d.reason,
    );
    if !v.gates.is_empty() {
        let rows: Vec<_> = v.gates.iter().map(gate_row).collect();
        table(&mut out, &GATE_COLUMNS, &rows, color);
    }
    for t in &v.triggers {
        let _ = writeln!(
            out,
            "trigger {:<18} {}  {}",
            t.trigger,
            if t.fired {
                paint(color, "1;31", "FIRED")
            } else {
                "no   ".into()
            },
            t.detail
        );
    }
    out.push_str("`--md` prints the full Markdown report");
    out
}
