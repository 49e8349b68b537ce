//! The judgment simulation: every scenario of `rollgate::sim::scenarios` at
//! 50 and 500 req/s per journey, under each judge, through the product's
//! gates and decision core (the Kayenta-like judge is the simulator's own).
//! Prints the Markdown tables of BENCHMARKS.md ("Judgment simulation").
//!
//! `cargo bench --bench judgment`, with
//! - `ROLLGATE_SIM_RUNS`: rollouts per (judge, scenario, rate) cell (default 50);
//! - `ROLLGATE_SIM_SEED`: the seed (default 14); the same seed gives the same table;
//! - `ROLLGATE_SIM_JUDGES`: comma-separated, `window`, `sequential` and
//!   `kayenta` (default all three; a `[gates] method` this build does not
//!   know is skipped with a note);
//! - `ROLLGATE_SIM_PLAN`: `30h` (default) or `same-day`;
//! - `ROLLGATE_SIM_THREADS`: 1 or 2 (default 2).
//!
//! Progress goes to stderr, the tables to stdout.

use std::time::Instant;

use rollgate::sim::report::{markdown, Cell};
use rollgate::sim::{config, deadline_ticks, run_many, scenarios, Judge, Plan};

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} does not parse")),
        Err(_) => default,
    }
}

const RATES: [f64; 2] = [50.0, 500.0];

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    let runs: u64 = env("ROLLGATE_SIM_RUNS", 50);
    let seed: u64 = env("ROLLGATE_SIM_SEED", 14);
    let threads: usize = env("ROLLGATE_SIM_THREADS", 2);
    let judges: String = env(
        "ROLLGATE_SIM_JUDGES",
        "window,sequential,kayenta".to_string(),
    );
    let plan = match env("ROLLGATE_SIM_PLAN", "30h".to_string()).as_str() {
        "30h" => Plan::ThirtyHour,
        "same-day" => Plan::SameDay,
        other => panic!("ROLLGATE_SIM_PLAN={other:?}: 30h or same-day"),
    };
    let started = Instant::now();
    let mut judged = Vec::new();
    for name in judges.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let judge = Judge::parse(name);
        match config(plan, &judge) {
            Ok(cfg) => judged.push((judge, cfg)),
            Err(e) => eprintln!("skipping judge {name}: {e}"),
        }
    }
    let mut cells = Vec::new();
    for sc in scenarios::all() {
        for rate in RATES {
            for (judge, cfg) in &judged {
                let t = Instant::now();
                let results = run_many(cfg, judge, &sc, rate, seed, runs, threads);
                eprintln!(
                    "{:>8} | {:<32} | {rate:>5} req/s | {runs} runs in {:.1} s",
                    judge.name(),
                    sc.name,
                    t.elapsed().as_secs_f64()
                );
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
    println!(
        "Plan {}, tick {}, {runs} runs per cell, seed {seed}, {threads} threads: {:.0} s\n",
        plan.name(),
        rollgate::sim::TICK,
        started.elapsed().as_secs_f64()
    );
    print!("{}", markdown(&cells));
}
