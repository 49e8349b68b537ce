//! Client-side measurements: HDR histograms (microseconds, 3 significant
//! digits, 1 µs .. 100 s) overall, per journey and per variant, status
//! classes and error kinds. One [`Recorder`] per generator thread, merged at
//! the end, so recording never takes a lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::journeys::{Journey, JOURNEYS};

/// Which upstream answered, from the `x-rollgate-variant` response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    V1 = 0,
    V2 = 1,
    /// No header (direct, or a proxy that does not set it).
    None = 2,
}

pub const VARIANTS: usize = 3;

impl Variant {
    pub fn from_header(v: Option<&http::HeaderValue>) -> Variant {
        match v.map(|v| v.as_bytes()) {
            Some(b"v1") => Variant::V1,
            Some(b"v2") => Variant::V2,
            _ => Variant::None,
        }
    }

    fn name(i: usize) -> &'static str {
        ["v1", "v2", "none"][i]
    }
}

/// Why a request produced no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection could not be (re)established.
    Connect = 0,
    /// No complete response within the request timeout.
    Timeout = 1,
    /// The connection broke mid-request.
    Io = 2,
}

const ERROR_NAMES: [&str; 3] = ["connect", "timeout", "io"];
const MAX_US: u64 = 100_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds")
}

/// One thread's measurements.
pub struct Recorder {
    pub all: Histogram<u64>,
    pub journeys: Vec<Histogram<u64>>,
    pub variants: Vec<Histogram<u64>>,
    /// How late the generator itself dispatched requests whose connection was
    /// free at the intended time (timer slop, CPU starvation). A health
    /// signal: large values mean the generator, not the server, was short of
    /// CPU.
    pub dispatch_lag: Histogram<u64>,
    /// Responses by status class 1xx..5xx (index 1..=5).
    pub status: [u64; 6],
    pub errors: [u64; 3],
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            all: histogram(),
            journeys: (0..JOURNEYS).map(|_| histogram()).collect(),
            variants: (0..VARIANTS).map(|_| histogram()).collect(),
            dispatch_lag: histogram(),
            status: [0; 6],
            errors: [0; 3],
        }
    }
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

impl Recorder {
    pub fn response(&mut self, journey: Journey, variant: Variant, status: u16, latency: Duration) {
        let v = us(latency);
        self.all.saturating_record(v);
        self.journeys[journey as usize].saturating_record(v);
        self.variants[variant as usize].saturating_record(v);
        self.status[(status / 100).min(5) as usize] += 1;
    }

    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    pub fn lag(&mut self, lag: Duration) {
        self.dispatch_lag.saturating_record(us(lag));
    }

    pub fn merge(&mut self, other: &Recorder) {
        let add = |a: &mut Histogram<u64>, b: &Histogram<u64>| a.add(b).expect("same bounds");
        add(&mut self.all, &other.all);
        for (a, b) in self.journeys.iter_mut().zip(&other.journeys) {
            add(a, b);
        }
        for (a, b) in self.variants.iter_mut().zip(&other.variants) {
            add(a, b);
        }
        add(&mut self.dispatch_lag, &other.dispatch_lag);
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
    }

    pub fn completed(&self) -> u64 {
        self.all.len()
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The JSON report of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `open` or `closed`.
    pub mode: String,
    pub target: String,
    /// Requested arrival rate (open loop).
    pub rate: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    pub users: usize,
    pub duration_s: f64,
    /// Requests the schedule asked for (open loop: rate x duration, capped by
    /// --requests).
    pub scheduled: u64,
    pub sent: u64,
    /// Responses received (any status).
    pub completed: u64,
    /// Wall time from start to the last response.
    pub elapsed_s: f64,
    /// `completed / elapsed_s`.
    pub achieved_rate: f64,
    pub status: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// All responses; open loop: from the intended send time.
    pub latency: Summary,
    pub journeys: BTreeMap<String, Summary>,
    pub variants: BTreeMap<String, Summary>,
    pub dispatch_lag: Summary,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        rec: &Recorder,
        mode: &str,
        target: &str,
        rate: Option<f64>,
        connections: usize,
        threads: usize,
        users: usize,
        duration: Duration,
        scheduled: u64,
        sent: u64,
        elapsed: Duration,
    ) -> Report {
        let completed = rec.completed();
        let named = |hs: &[Histogram<u64>], name: &dyn Fn(usize) -> &'static str| {
            hs.iter()
                .enumerate()
                .filter(|(_, h)| !h.is_empty())
                .map(|(i, h)| (name(i).to_string(), Summary::of(h)))
                .collect::<BTreeMap<_, _>>()
        };
        Report {
            mode: mode.to_string(),
            target: target.to_string(),
            rate,
            connections,
            threads,
            users,
            duration_s: duration.as_secs_f64(),
            scheduled,
            sent,
            completed,
            elapsed_s: elapsed.as_secs_f64(),
            achieved_rate: completed as f64 / elapsed.as_secs_f64().max(1e-9),
            status: rec
                .status
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (format!("{i}xx"), *n))
                .collect(),
            errors: rec
                .errors
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (ERROR_NAMES[i].to_string(), *n))
                .collect(),
            latency: Summary::of(&rec.all),
            journeys: named(&rec.journeys, &|i| Journey::ALL[i].name()),
            variants: named(&rec.variants, &Variant::name),
            dispatch_lag: Summary::of(&rec.dispatch_lag),
        }
    }

    /// The human summary printed at the end of a run.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let ms = |v: u64| v as f64 / 1000.0;
        let _ = writeln!(
            s,
            "{} loop -> {}: {} connections, {} threads, {} users{}",
            self.mode,
            self.target,
            self.connections,
            self.threads,
            self.users,
            self.rate
                .map(|r| format!(", target rate {r:.0}/s"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "scheduled {}  sent {}  completed {}  in {:.2} s  => {:.1} req/s",
            self.scheduled, self.sent, self.completed, self.elapsed_s, self.achieved_rate
        );
        let _ = writeln!(s, "status {:?}  errors {:?}", self.status, self.errors);
        let _ = writeln!(
            s,
            "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, x: &Summary| {
            let _ = writeln!(
                s,
                "{:<20} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name,
                x.count,
                ms(x.p50_us),
                ms(x.p90_us),
                ms(x.p99_us),
                ms(x.p999_us),
                ms(x.max_us)
            );
        };
        row("all", &self.latency);
        for (k, v) in &self.journeys {
            row(&format!("journey {k}"), v);
        }
        for (k, v) in &self.variants {
            row(&format!("variant {k}"), v);
        }
        if self.mode == "open" {
            row("(generator lag)", &self.dispatch_lag);
        }
        s
    }
}
