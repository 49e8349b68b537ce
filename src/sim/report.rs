//! The figures of a (judge, scenario, rate) cell and the Markdown tables.

use std::fmt::Write as _;

use super::{config, deadline_ticks, run_many, scenarios, Judge, Plan, RunResult};

/// The rates of the matrix, req/s per journey.
pub const RATES: [f64; 2] = [50.0, 500.0];

/// Every scenario at every rate under every judge that parses (the others
/// are reported to `progress` and skipped); `progress` also hears of each
/// cell as it finishes.
pub fn matrix(
    plan: Plan,
    judges: &[Judge],
    runs: u64,
    seed: u64,
    threads: usize,
    mut progress: impl FnMut(String),
) -> Vec<Cell> {
    let mut judged = Vec::new();
    for judge in judges {
        match config(plan, judge) {
            Ok(cfg) => judged.push((judge, cfg)),
            Err(e) => progress(format!("skipping judge {}: {e}", judge.name())),
        }
    }
    let mut cells = Vec::new();
    for sc in scenarios::all() {
        for rate in RATES {
            for (judge, cfg) in &judged {
                let t = std::time::Instant::now();
                let results = run_many(cfg, judge, &sc, rate, seed, runs, threads);
                progress(format!(
                    "{:>10} | {:<32} | {rate:>5} req/s | {runs} runs in {:.1} s",
                    judge.name(),
                    sc.name,
                    t.elapsed().as_secs_f64()
                ));
                cells.push(Cell {
                    judge: judge.name().to_string(),
                    scenario: sc.name,
                    healthy: sc.healthy,
                    rate,
                    deadline_ms: deadline_ticks(cfg) * cfg.rollout.tick.as_millis() as u64,
                    runs: results,
                });
            }
        }
    }
    cells
}

/// The runs of one judge on one scenario at one rate.
pub struct Cell {
    pub judge: String,
    pub scenario: &'static str,
    pub healthy: bool,
    pub rate: f64,
    /// A promotion later than this (ms) is a false hold.
    pub deadline_ms: u64,
    pub runs: Vec<RunResult>,
}

/// Healthy canaries: the two ways a judge fails them.
#[derive(Clone, Debug, PartialEq)]
pub struct Healthy {
    /// Share of runs rolled back.
    pub false_rollback: f64,
    /// Share of runs neither rolled back nor promoted by the deadline.
    pub false_hold: f64,
    /// Median hours to promotion, over promoted runs.
    pub median_promoted_h: Option<f64>,
}

/// Faulty canaries: how much of V2 got through.
#[derive(Clone, Debug, PartialEq)]
pub struct Faulty {
    /// Share of runs rolled back.
    pub caught: f64,
    /// Share of runs promoted to the end: the fault shipped.
    pub promoted: f64,
    /// Over caught runs: (weight %, share of caught runs rolled back at it).
    pub weights: Vec<(f64, f64)>,
    pub mean_weight: Option<f64>,
    /// Over caught runs: V2 requests served before the rollback.
    pub mean_v2_requests: Option<f64>,
    pub p90_v2_requests: Option<u64>,
    /// Over caught runs: median minutes to the rollback.
    pub median_minutes: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

impl Cell {
    pub fn healthy(&self) -> Healthy {
        let n = self.runs.len().max(1) as f64;
        let rolled = self.runs.iter().filter(|r| r.rolled_back.is_some()).count();
        let on_time = |r: &&RunResult| r.promoted && r.end_ms <= self.deadline_ms;
        let held = self.runs.iter().filter(|r| r.rolled_back.is_none()).count()
            - self.runs.iter().filter(on_time).count();
        Healthy {
            false_rollback: rolled as f64 / n,
            false_hold: held as f64 / n,
            median_promoted_h: median(
                self.runs
                    .iter()
                    .filter(|r| r.promoted)
                    .map(|r| r.end_ms as f64 / 3_600_000.0)
                    .collect(),
            ),
        }
    }

    pub fn faulty(&self) -> Faulty {
        let caught: Vec<&RunResult> = self
            .runs
            .iter()
            .filter(|r| r.rolled_back.is_some())
            .collect();
        let c = caught.len();
        let mut weights: Vec<(f64, f64)> = Vec::new();
        for r in &caught {
            match weights.iter_mut().find(|(w, _)| *w == r.weight) {
                Some((_, k)) => *k += 1.0,
                None => weights.push((r.weight, 1.0)),
            }
        }
        weights.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, k) in &mut weights {
            *k /= c as f64;
        }
        let mut served: Vec<u64> = caught.iter().map(|r| r.v2_requests).collect();
        served.sort_unstable();
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Faulty {
            caught: c as f64 / self.runs.len().max(1) as f64,
            promoted: self.runs.iter().filter(|r| r.promoted).count() as f64
                / self.runs.len().max(1) as f64,
            weights,
            mean_weight: mean(caught.iter().map(|r| r.weight).collect()),
            mean_v2_requests: mean(served.iter().map(|n| *n as f64).collect()),
            // The nearest-rank P90.
            p90_v2_requests: (c > 0).then(|| served[((c as f64 * 0.9).ceil() as usize).max(1) - 1]),
            median_minutes: median(caught.iter().map(|r| r.end_ms as f64 / 60_000.0).collect()),
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or("-".into(), f)
}

fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// The two tables (healthy, faulty), cells in the order given.
pub fn markdown(cells: &[Cell]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| healthy scenario | req/s per journey | judge | runs | false rollback | false hold | median time to promote |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---:|---:|---:|");
    for c in cells.iter().filter(|c| c.healthy) {
        let h = c.healthy();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.scenario,
            c.rate,
            c.judge,
            c.runs.len(),
            pct(h.false_rollback),
            pct(h.false_hold),
            opt(h.median_promoted_h, |x| format!("{x:.2} h")),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| faulty scenario | req/s per journey | judge | runs | caught | shipped | V2 weight at rollback | V2 requests before rollback: mean | p90 | median time to rollback |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---:|---:|---|---:|---:|---:|");
    for c in cells.iter().filter(|c| !c.healthy) {
        let f = c.faulty();
        let weights = if f.weights.is_empty() {
            "-".to_string()
        } else {
            f.weights
                .iter()
                .map(|(w, k)| format!("{w} %: {:.0} %", k * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.scenario,
            c.rate,
            c.judge,
            c.runs.len(),
            pct(f.caught),
            pct(f.promoted),
            weights,
            opt(f.mean_v2_requests, count),
            f.p90_v2_requests.map_or("-".into(), |n| count(n as f64)),
            opt(f.median_minutes, |m| format!("{m:.0} min")),
        );
    }
    out
}
