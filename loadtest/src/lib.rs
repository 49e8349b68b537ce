//! rollgate-load: the load generator behind rollgate's side-by-side
//! benchmarks (`loadtest/compare.sh`).
//!
//! Two modes:
//! - **open loop** ([`Mode::Open`]): requests are scheduled at a constant
//!   arrival rate, request `i` at `start + i / rate`, whatever the server
//!   does. Latency is measured from that *intended* send time, so a server
//!   stall delays every request scheduled behind it and shows up in the
//!   percentiles instead of being hidden by a generator that politely waits
//!   (coordinated omission). See [`gen`] for the one refinement.
//! - **closed loop** ([`Mode::Closed`]): every connection sends its next
//!   request as soon as the previous answer is in; the achieved rate is the
//!   server's maximum throughput at that concurrency.
//!
//! Requests come from a population of sticky users (`x-user-id`) walking the
//! journeys search -> detail -> application start -> submit -> payment
//! ([`journeys`]); latencies go into HDR histograms per journey and per
//! variant (the `x-rollgate-variant` response header) ([`stats`]). Targets
//! must be loopback addresses ([`target`]): this is a tool for a benchmark
//! machine, never for someone else's server.

#![forbid(unsafe_code)]

pub mod gen;
pub mod journeys;
pub mod stallserver;
pub mod stats;
pub mod summarize;
pub mod target;

pub use gen::{run, LoadConfig, Mode};
pub use stats::{Report, Summary};
