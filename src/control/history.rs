//! A bounded, in-memory history of the rollout for the status page's charts:
//! one point per tick with the weights and each journey's V1/V2 P95.
//!
//! Why in memory and not in `state_dir`: the charts are a view of the last
//! hour, and the real record of what happened is the audit log and the gate
//! reports. A restart simply starts the charts afresh.
//!
//! Bounded twice, by age (`MAX_AGE`) and by count (`MAX_POINTS`), so a
//! fast tick (the demo's 250 ms) cannot grow it without limit and a slow one
//! still shows a whole hour. The published copy is a vector of `Arc`s, so
//! publishing after a tick costs pointer copies, not a deep clone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

use super::gates::Evaluation;
use super::state::StateName;
use super::Weights;

/// Oldest point kept.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(3600);
/// Most points kept (one hour at a 5 s tick).
pub(crate) const MAX_POINTS: usize = 720;

/// The rollout at one tick.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryPoint {
    pub at: DateTime<Utc>,
    /// `at` in Unix milliseconds: what `?since=` compares against.
    pub at_ms: i64,
    pub state: StateName,
    pub phase_index: Option<usize>,
    pub weights: Weights,
    pub journeys: Vec<JourneyP95>,
}

/// One journey's P95 per variant over the tick's window; `None` without requests.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JourneyP95 {
    pub journey: String,
    pub v1_p95_ms: Option<f64>,
    pub v2_p95_ms: Option<f64>,
    pub v1_requests: u64,
    pub v2_requests: u64,
}

impl HistoryPoint {
    pub(crate) fn new(
        at: DateTime<Utc>,
        state: StateName,
        phase_index: Option<usize>,
        weight_v2: f64,
        ev: &Evaluation,
    ) -> Self {
        Self {
            at,
            at_ms: at.timestamp_millis(),
            state,
            phase_index,
            weights: Weights {
                v1: 100.0 - weight_v2,
                v2: weight_v2,
            },
            journeys: ev
                .journeys
                .iter()
                .map(|j| JourneyP95 {
                    journey: j.journey.clone(),
                    v1_p95_ms: j.v1.p95_ms,
                    v2_p95_ms: j.v2.p95_ms,
                    v1_requests: j.v1.requests,
                    v2_requests: j.v2.requests,
                })
                .collect(),
        }
    }
}

/// The published, immutable copy the admin API serves.
#[derive(Clone, Debug, Default)]
pub struct HistoryView {
    pub points: Vec<Arc<HistoryPoint>>,
}

impl HistoryView {
    /// Points strictly after `since_ms` (Unix ms), oldest first.
    pub fn since(&self, since_ms: Option<i64>) -> impl Iterator<Item = &HistoryPoint> {
        let from = since_ms.map_or(0, |t| self.points.partition_point(|p| p.at_ms <= t));
        self.points[from..].iter().map(|p| &**p)
    }
}

/// Serializes the points after `since_ms` without cloning them.
pub struct Since<'a> {
    pub view: &'a HistoryView,
    pub since_ms: Option<i64>,
}

impl Serialize for Since<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.view.since(self.since_ms))
    }
}

/// The controller's ring.
#[derive(Debug, Default)]
pub(crate) struct History {
    points: VecDeque<Arc<HistoryPoint>>,
}

impl History {
    pub(crate) fn push(&mut self, p: HistoryPoint) {
        let oldest = p.at_ms - MAX_AGE.as_millis() as i64;
        self.points.push_back(Arc::new(p));
        while self.points.len() > MAX_POINTS
            || self.points.front().is_some_and(|f| f.at_ms < oldest)
        {
            self.points.pop_front();
        }
    }

    pub(crate) fn view(&self) -> HistoryView {
        HistoryView {
            points: self.points.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at_ms: i64) -> HistoryPoint {
        let at = DateTime::from_timestamp_millis(at_ms).expect("valid time");
        HistoryPoint::new(at, StateName::Canary, Some(0), 5.0, &Evaluation::default())
    }

    #[test]
    fn bounded_by_count() {
        let mut h = History::default();
        for i in 0..(MAX_POINTS as i64 + 50) {
            h.push(point(1_000_000 + i * 10));
        }
        let v = h.view();
        assert_eq!(v.points.len(), MAX_POINTS);
        assert_eq!(v.points[0].at_ms, 1_000_000 + 50 * 10);
    }

    #[test]
    fn bounded_by_age() {
        let mut h = History::default();
        h.push(point(0));
        h.push(point(1_000));
        h.push(point(MAX_AGE.as_millis() as i64 + 500));
        let v = h.view();
        assert_eq!(
            v.points.iter().map(|p| p.at_ms).collect::<Vec<_>>(),
            [1_000, 3_600_500]
        );
    }

    #[test]
    fn since_returns_newer_points_only() {
        let mut h = History::default();
        for t in [10, 20, 30] {
            h.push(point(t));
        }
        let v = h.view();
        let at = |s| v.since(s).map(|p| p.at_ms).collect::<Vec<_>>();
        assert_eq!(at(None), [10, 20, 30]);
        assert_eq!(at(Some(20)), [30]);
        assert_eq!(at(Some(15)), [20, 30]);
        assert_eq!(at(Some(30)), Vec::<i64>::new());
        let json = serde_json::to_value(Since {
            view: &v,
            since_ms: Some(10),
        })
        .expect("serializable");
        assert_eq!(json.as_array().map(Vec::len), Some(2));
        assert_eq!(json[0]["weights"]["v2"], 5.0);
    }
}
