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

use rollgate::sim::report::{markdown, matrix};
use rollgate::sim::{Judge, Plan, TICK};

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} does not parse")),
        Err(_) => default,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` (CI's bench
    // smoke run) does not, and a debug build of the whole matrix would take
    // hours: the simulator's own tests (`cargo test --lib sim::`) cover it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("judgment: run with `cargo bench --bench judgment`; skipped in test mode");
        return;
    }
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
    let judges: Vec<Judge> = judges
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Judge::parse)
        .collect();
    let started = Instant::now();
    let cells = matrix(plan, &judges, runs, seed, threads, |line| {
        eprintln!("{line}")
    });
    println!(
        "Plan {}, tick {TICK}, {runs} runs per cell, seed {seed}, {threads} threads: {:.0} s wall\n",
        plan.name(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", markdown(&cells));
}
