//! Explainable, replayable decisions.
//!
//! Every controller tick appends one JSON line to
//! `state_dir/evaluations.jsonl`: the interval of counts that tick added to
//! the sliding window (sparse histograms and counters, [`Interval`]), the
//! rollout state the decision started from, the verdict of every gate (value,
//! threshold, samples, p-value) and the decision. The file is bounded: past
//! `[replay] max_bytes` it is rotated to `evaluations.jsonl.1` (one previous
//! file kept), so at most twice that is on disk.
//!
//! `rollgate replay --config NEW.toml [--from TIME]` rebuilds the windows from
//! the recorded intervals under NEW's `rollout.window`, re-evaluates every
//! gate under NEW's thresholds and bands, and runs NEW's decision core from
//! each recorded state. Gate memory (hysteresis, recovery, RED timers, the
//! GREEN hold clock) evolves under NEW as long as the recorded rollout stays
//! in the same phase; the rest of the state (phase, weight, flags, approvals)
//! is the recorded one at every tick, so each difference reads as "at this
//! moment, NEW would have decided X instead of Y". The window, the gates and
//! the decision are the live controller's own `step`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::gates::{Evaluation, GateResult, GateStatus};
use super::state::{Action, Decision, RolloutState};
use super::step::{self, TickTime};
use crate::config::Config;
use crate::telemetry::Interval;

pub const EVALUATIONS_FILE: &str = "evaluations.jsonl";

/// Why an evaluation was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A tick: a decision was taken.
    Tick,
    /// A request-path trip: its interval still belongs to the window.
    Trip,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Tick => "tick",
            RecordKind::Trip => "trip",
        }
    }
}

/// Compares with the written form (`"tick"`, `"trip"`).
impl PartialEq<&str> for RecordKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One recorded evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub at: DateTime<Utc>,
    /// The controller's window clock (ms since it started): intervals are
    /// placed on it, so replayed windows hold exactly the recorded intervals.
    pub now_ms: u64,
    /// Local wall-clock time of the tick (promotion window).
    pub local: NaiveTime,
    pub kind: RecordKind,
    /// The counts this evaluation added to the window; `None` on the first.
    pub interval: Option<Interval>,
    /// The state the decision started from.
    pub state: RolloutState,
    /// The verdict: every gate with its value, threshold, samples and p-value.
    pub gates: Vec<GateResult>,
    pub decision: Option<Decision>,
}

/// Appends records, rotating past `max_bytes`.
pub(crate) struct Recorder {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    size: u64,
}

impl Recorder {
    pub(crate) fn new(dir: &Path, max_bytes: u64) -> Self {
        let path = dir.join(EVALUATIONS_FILE);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            path,
            max_bytes,
            file: None,
            size,
        }
    }

    pub(crate) fn record(&mut self, r: &EvalRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.file = None;
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.size = 0;
        }
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Reads the records (rotated file first), oldest first. A torn or foreign
/// line is skipped with a warning, like the audit log.
pub fn load(dir: &Path) -> std::io::Result<Vec<EvalRecord>> {
    let path = dir.join(EVALUATIONS_FILE);
    let mut out = Vec::new();
    for p in [rotated(&path), path] {
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line?;
            match serde_json::from_str::<EvalRecord>(&line) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(file = %p.display(), line = n + 1, error = %e, "skipping an unreadable evaluation record")
                }
            }
        }
    }
    Ok(out)
}

/// One tick where the new config decides differently.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub at: DateTime<Utc>,
    pub phase: Option<String>,
    pub recorded: Action,
    pub recorded_reason: String,
    pub replayed: Action,
    pub replayed_reason: String,
    /// Gates whose status changed, `key: OLD -> NEW`.
    pub gates: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    pub ticks: usize,
    pub differences: Vec<Difference>,
}

/// Re-evaluates `records` (oldest first, from `from` on) under `cfg`.
pub fn replay(cfg: &Config, records: &[EvalRecord], from: Option<DateTime<Utc>>) -> ReplayReport {
    // Keep enough intervals for the new window, whatever the old one was.
    let mut ring = step::ring(cfg);
    let mut report = ReplayReport::default();
    // The gate memory evolved under the new config, and the phase it belongs to.
    let mut memory: Option<(Option<usize>, RolloutState)> = None;
    // The window clock restarts with the controller: continue it across
    // restarts with the wall-clock gap.
    let (mut offset, mut last): (u64, Option<(u64, DateTime<Utc>)>) = (0, None);
    for r in records {
        if let Some((prev_clock, prev_at)) = last {
            if r.now_ms + offset < prev_clock {
                let gap = (r.at - prev_at).num_milliseconds().max(1) as u64;
                offset = prev_clock + gap - r.now_ms;
            }
        }
        let now_ms = r.now_ms + offset;
        last = Some((now_ms, r.at));
        if let Some(i) = &r.interval {
            let mut i = i.clone();
            i.end_ms = now_ms;
            ring.push_interval(i);
        }
        if r.kind != RecordKind::Tick || from.is_some_and(|f| r.at < f) {
            continue;
        }
        let mut s = r.state.clone();
        if let Some((phase, m)) = &memory {
            if *phase == s.phase_index {
                s.gate_status = m.gate_status.clone();
                s.gate_recovery = m.gate_recovery.clone();
                s.gate_evidence = m.gate_evidence.clone();
                s.red_since = m.red_since.clone();
                s.green_since = m.green_since;
            }
        }
        let phase = s.phase_index;
        let t = TickTime {
            ms: now_ms,
            at: r.at,
            local: r.local,
        };
        let (ev, out) = step::tick(cfg, &ring, &mut s, &t);
        report.ticks += 1;
        let none = || Decision {
            action: Action::None,
            reason: String::new(),
            at: r.at,
            trigger: None,
            cause: None,
        };
        let replayed = out.decision.unwrap_or_else(none);
        let recorded = r.decision.clone().unwrap_or_else(none);
        if replayed.action != recorded.action {
            report.differences.push(Difference {
                at: r.at,
                phase: phase.map(|i| {
                    cfg.rollout
                        .phases
                        .get(i)
                        .map_or(format!("#{i}"), |p| p.name.clone())
                }),
                recorded: recorded.action,
                recorded_reason: recorded.reason,
                replayed: replayed.action,
                replayed_reason: replayed.reason,
                gates: gate_changes(&r.gates, &ev),
            });
        }
        memory = Some((phase, s));
    }
    report
}

fn gate_changes(recorded: &[GateResult], ev: &Evaluation) -> Vec<String> {
    let old: BTreeMap<_, GateStatus> = recorded.iter().map(|g| (g.key(), g.status)).collect();
    ev.gates
        .iter()
        .filter_map(|g| {
            let was = old.get(&g.key()).map_or("-", |s| s.word());
            (was != g.status.word()).then(|| format!("{}: {was} -> {}", g.key(), g.status.word()))
        })
        .collect()
}

impl ReplayReport {
    /// Human summary: consecutive ticks with the same change are one line.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replayed {} ticks: {} where the decision would differ",
            self.ticks,
            self.differences.len()
        );
        let mut i = 0;
        while i < self.differences.len() {
            let d = &self.differences[i];
            let mut j = i + 1;
            while j < self.differences.len()
                && self.differences[j].recorded == d.recorded
                && self.differences[j].replayed == d.replayed
                && self.differences[j].phase == d.phase
            {
                j += 1;
            }
            let last = &self.differences[j - 1];
            let span = if j - i > 1 {
                format!(
                    "{} .. {} ({} ticks)",
                    d.at.to_rfc3339(),
                    last.at.to_rfc3339(),
                    j - i
                )
            } else {
                d.at.to_rfc3339()
            };
            let _ = writeln!(
                out,
                "{span} [{}]: recorded {} ({}) -> would be {} ({})",
                d.phase.as_deref().unwrap_or("-"),
                d.recorded.report_word(),
                d.recorded_reason,
                d.replayed.report_word(),
                d.replayed_reason
            );
            for g in &d.gates {
                let _ = writeln!(out, "    {g}");
            }
            i = j;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::rollout::tests::{ALL_FLAGS, BASE};
    use crate::telemetry::histogram::{bucket_index, SparseHistogram};
    use crate::telemetry::SparseCounts;
    use chrono::TimeZone;

    /// The rollout tests' journeys (search and payments); only search sees traffic.
    fn config(p95_ms: u32) -> Config {
        let phase = |name: &str, weight: u32| {
            format!("[[rollout.phases]]\nname = \"{name}\"\nweight = {weight}\nhold = \"2m\"\np95_ms = {p95_ms}\n")
        };
        let text = format!(
            "{BASE}\n[rollout]\ntick = \"15s\"\nwindow = \"1m\"\nmin_samples = 20\n{ALL_FLAGS}\n{}{}{}",
            phase("canary-5", 5),
            phase("canary-50", 50),
            phase("full", 100),
        );
        Config::parse(&text, "t").unwrap()
    }

    fn cell(n: u64, ms: u64) -> SparseCounts {
        let us = ms * 1000;
        SparseCounts {
            latency: SparseHistogram {
                buckets: if n > 0 {
                    vec![(bucket_index(us) as u16, n)]
                } else {
                    vec![]
                },
                sum_us: us * n,
            },
            classes: [0, n, 0, 0, 0],
            ..Default::default()
        }
    }

    /// Drives the pure core the way the controller does (one interval per
    /// tick, 4000 search requests at 100 ms split by the weight in force:
    /// enough for the sequential judge to show a clean 5 % canary inside
    /// within a few ticks) and returns the records it would write.
    fn record_run(cfg: &Config, ticks: u64) -> Vec<EvalRecord> {
        let mut s = RolloutState::new(cfg.rollout.flags.clone());
        s.started = true;
        let mut ring = step::ring(cfg);
        let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let mut out = Vec::new();
        for k in 1..=ticks {
            let now_ms = k * 15_000;
            let at = t0 + chrono::TimeDelta::milliseconds(now_ms as i64);
            let n2 = (4000.0 * s.weight_v2 / 100.0) as u64;
            let interval = Interval {
                end_ms: now_ms,
                duration_ms: 15_000,
                cells: (0..cfg.journeys.len())
                    .flat_map(|j| match j {
                        0 => [cell(4000 - n2, 100), cell(n2, 100)],
                        _ => [cell(0, 0), cell(0, 0)],
                    })
                    .collect(),
                beacons: vec![],
                beacon_users: Default::default(),
                shed: [0; 2],
                users: vec![],
                weight_v2_bp: (s.weight_v2 * 100.0) as u32,
                shadow: vec![],
                shadow_dropped: 0,
            };
            ring.push_interval(interval.clone());
            let t = TickTime {
                ms: now_ms,
                at,
                local: at.time(),
            };
            let before = s.clone();
            let (ev, o) = step::tick(cfg, &ring, &mut s, &t);
            out.push(EvalRecord {
                at,
                now_ms,
                local: at.time(),
                kind: RecordKind::Tick,
                interval: Some(interval),
                state: before,
                gates: ev.gates,
                decision: o.decision,
            });
        }
        out
    }

    #[test]
    fn replaying_under_the_recording_config_changes_nothing() {
        let cfg = config(130);
        let records = record_run(&cfg, 60);
        let gos = records
            .iter()
            .filter(|r| r.decision.as_ref().is_some_and(|d| d.action == Action::Go))
            .count();
        assert_eq!(gos, 3, "start, 5 -> 50, 50 -> 100");
        let report = replay(&cfg, &records, None);
        assert_eq!(report.ticks, 60);
        assert!(report.differences.is_empty(), "{}", report.text());
    }

    #[test]
    fn a_stricter_p95_flips_the_step_ups_into_holds() {
        let records = record_run(&config(130), 60);
        let report = replay(&config(90), &records, None);
        let first_go = records
            .iter()
            .skip(1)
            .find(|r| r.decision.as_ref().is_some_and(|d| d.action == Action::Go))
            .unwrap();
        let d = report
            .differences
            .iter()
            .find(|d| d.at == first_go.at)
            .unwrap_or_else(|| panic!("{}", report.text()));
        assert_eq!(d.recorded, Action::Go);
        assert!(
            matches!(d.replayed, Action::Hold | Action::Rollback),
            "{d:?}"
        );
        assert!(
            d.gates
                .iter()
                .any(|g| g == "latency_p95/search: GREEN -> RED"),
            "{d:?}"
        );
        // No step-up survives: every recorded GO after the start is a HOLD.
        for r in records.iter().skip(1) {
            if r.decision.as_ref().is_some_and(|d| d.action == Action::Go) {
                assert!(
                    report.differences.iter().any(|d| d.at == r.at),
                    "{}",
                    report.text()
                );
            }
        }
        let text = report.text();
        assert!(text.contains("recorded GO"), "{text}");
        // --from skips what came before.
        let late = replay(&config(90), &records, Some(records[50].at));
        assert_eq!(late.ticks, 10);
    }

    #[test]
    fn records_round_trip_through_bounded_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let records = record_run(&config(130), 30);
        let mut rec = Recorder::new(dir.path(), 64 * 1024);
        for r in &records {
            rec.record(r).unwrap();
        }
        let back = load(dir.path()).unwrap();
        assert!(!back.is_empty() && back.len() <= records.len());
        // Newest last, and only whole records survive rotation.
        assert_eq!(back.last(), records.last());
        let tail = &records[records.len() - back.len()..];
        // (Gate thresholds are display values; serde_json's float parsing
        // may round their last bit, everything replay uses is exact.)
        for (a, b) in back.iter().zip(tail) {
            assert_eq!((a.at, a.now_ms, &a.kind), (b.at, b.now_ms, &b.kind));
            assert_eq!(
                (&a.interval, &a.state, &a.decision),
                (&b.interval, &b.state, &b.decision)
            );
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 2 * 64 * 1024, "{total}");
        // A torn last line is skipped.
        let path = dir.path().join(EVALUATIONS_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at\": \"2026-").unwrap();
        assert_eq!(load(dir.path()).unwrap().len(), back.len());
    }
}
