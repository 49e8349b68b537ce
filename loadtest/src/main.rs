//! `rollgate-load`: load generator, test upstream, idle-connection holder and
//! the summariser behind `loadtest/compare.sh`. Loopback targets only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use rollgate::demo::upstream::{Latency, Profile};
use rollgate_load::journeys::Mix;
use rollgate_load::target::Target;
use rollgate_load::{stallserver, summarize, LoadConfig, Mode};

#[derive(Parser)]
#[command(
    name = "rollgate-load",
    version,
    about = "Open/closed-loop HTTP load generator for rollgate's benchmarks (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

fn duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 10s, 500ms, 2m)"))
}

#[derive(Subcommand)]
enum Cmd {
    /// Send load and print p50/p90/p99/p99.9/max per journey and variant.
    Run {
        /// Target, e.g. http://127.0.0.1:8080 (loopback only).
        #[arg(long)]
        target: String,
        /// Open loop: constant arrival rate, requests/s; latency from the intended send time.
        #[arg(long, conflicts_with = "closed")]
        rate: Option<f64>,
        /// Closed loop: every connection sends back to back (max throughput).
        #[arg(long)]
        closed: bool,
        /// Keep-alive connections.
        #[arg(long, short = 'c', default_value_t = 64)]
        connections: usize,
        /// Generator threads (each a single-threaded runtime).
        #[arg(long, short = 't', default_value_t = 1)]
        threads: usize,
        /// How long to send (e.g. 10s, 2m); at most 1 h.
        #[arg(long, short = 'd', default_value = "10s", value_parser = duration)]
        duration: Duration,
        /// Stop after this many requests (whichever of time and count ends first).
        #[arg(long)]
        requests: Option<u64>,
        /// Sticky users (x-user-id), split over the connections.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Journey mix: search=40,detail=30,start=15,submit=10,payment=5.
        #[arg(
            long,
            default_value = "search=40,detail=30,start=15,submit=10,payment=5"
        )]
        mix: Mix,
        /// GET / for every request instead of the journeys.
        #[arg(long)]
        plain: bool,
        /// Per-request timeout.
        #[arg(long, default_value = "10s", value_parser = duration)]
        timeout: Duration,
        /// HTTP/2 with prior knowledge (h2c), one stream per connection at a time.
        #[arg(long)]
        h2: bool,
        /// Open loop: always count latency from the intended time, even the
        /// generator's own timer slop.
        #[arg(long)]
        strict: bool,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No progress line.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Serve the demo upstream app (latency, errors, payment failures, body size).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:3001")]
        listen: SocketAddr,
        /// Name in the body and the x-app-version header.
        #[arg(long, default_value = "v1")]
        name: String,
        /// Log-normal latency: median and P95, milliseconds (0 = answer at once).
        #[arg(long, default_value_t = 0.0)]
        median_ms: f64,
        #[arg(long, default_value_t = 0.0)]
        p95_ms: f64,
        /// Share of requests answered 500.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Share of payment POSTs answered 502.
        #[arg(long, default_value_t = 0.0)]
        payment_failure_rate: f64,
        /// Response body size in bytes.
        #[arg(long, default_value_t = 0)]
        body_bytes: usize,
        /// Instead of the demo app: answer `ok` at once, but stall request number N once.
        #[arg(long)]
        stall_once_after: Option<u64>,
        #[arg(long, default_value_t = 200)]
        stall_ms: u64,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Exit after this long (bounded runs).
        #[arg(long, default_value = "1h", value_parser = duration)]
        max_time: Duration,
    },
    /// Open N keep-alive connections (one request each) and hold them idle.
    Idle {
        #[arg(long)]
        target: String,
        #[arg(long, short = 'c', default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value = "10s", value_parser = duration)]
        hold: Duration,
    },
    /// Build the comparison section of BENCHMARKS.md and the SVG from compare.sh's results.
    Summarize {
        /// JSON lines written by compare.sh.
        #[arg(long)]
        results: PathBuf,
        /// Markdown file whose comparison section is replaced (or appended).
        #[arg(long)]
        benchmarks: Option<PathBuf>,
        /// Write the chart here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// How BENCHMARKS.md links to the chart.
        #[arg(long)]
        svg_link: Option<String>,
        #[arg(long, default_value = "")]
        command: String,
        #[arg(long, default_value = "")]
        date: String,
        #[arg(long, default_value = "")]
        load: String,
        #[arg(long, default_value = "")]
        versions: String,
        #[arg(long, default_value = "")]
        notes: String,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            target,
            rate,
            closed,
            connections,
            threads,
            duration,
            requests,
            users,
            mix,
            plain,
            timeout,
            h2,
            strict,
            json,
            quiet,
        } => {
            let mode = match (rate, closed) {
                (Some(rate), false) => Mode::Open { rate },
                (None, true) => Mode::Closed,
                _ => bail!("give --rate R (open loop) or --closed"),
            };
            let mut cfg = LoadConfig::new(Target::parse(&target)?, mode);
            cfg.connections = connections;
            cfg.threads = threads;
            cfg.duration = duration;
            cfg.max_requests = requests;
            cfg.users = users;
            cfg.mix = mix;
            cfg.plain = plain;
            cfg.timeout = timeout;
            cfg.h2 = h2;
            cfg.strict = strict;
            cfg.progress = !quiet;
            let report = rollgate_load::run(cfg)?;
            print!("{}", report.render());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Cmd::Upstream {
            listen,
            name,
            median_ms,
            p95_ms,
            error_rate,
            payment_failure_rate,
            body_bytes,
            stall_once_after,
            stall_ms,
            threads,
            max_time,
        } => {
            if !listen.ip().is_loopback() {
                bail!("--listen {listen}: the test upstream binds loopback addresses only");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                eprintln!("upstream {name} listening on {}", listener.local_addr()?);
                let stop = async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = tokio::time::sleep(max_time) => {}
                    }
                };
                match stall_once_after {
                    Some(n) => {
                        let stall = stallserver::Stall {
                            stall_at: Some(n),
                            stall: Duration::from_millis(stall_ms),
                            ..Default::default()
                        };
                        stallserver::serve(listener, stall, stop).await
                    }
                    None => {
                        let profile = Profile {
                            name: Box::leak(name.into_boxed_str()),
                            latency: Latency { median_ms, p95_ms },
                            error_rate,
                            payment_failure_rate,
                            body_bytes,
                            ..Profile::healthy("", Latency::ZERO)
                        };
                        rollgate::demo::upstream::serve(listener, profile, stop).await
                    }
                }
                anyhow::Ok(())
            })
        }
        Cmd::Idle {
            target,
            connections,
            hold,
        } => idle(Target::parse(&target)?, connections, hold),
        Cmd::Summarize {
            results,
            benchmarks,
            svg,
            svg_link,
            command,
            date,
            load,
            versions,
            notes,
        } => {
            let r = summarize::load(&results)?;
            if let Some(svg) = &svg {
                summarize::chart(&r, svg)?;
            }
            let meta = summarize::Meta {
                command,
                machine: machine(),
                date,
                load,
                versions,
                notes,
            };
            let link = svg_link.or_else(|| svg.as_ref().map(|p| p.display().to_string()));
            let section = summarize::markdown(&r, &meta, link.as_deref());
            match benchmarks {
                Some(path) => {
                    let doc = std::fs::read_to_string(&path).unwrap_or_default();
                    std::fs::write(&path, summarize::splice(&doc, &section))
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote the comparison section of {}", path.display());
                }
                None => print!("{section}"),
            }
            Ok(())
        }
    }
}

/// CPU model, cores, memory and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// Holds `n` keep-alive connections open, idle, for `hold`.
fn idle(target: Target, n: usize, hold: Duration) -> anyhow::Result<()> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    if n == 0 || n > rollgate_load::gen::MAX_CONNECTIONS || hold > rollgate_load::gen::MAX_DURATION
    {
        bail!("connections 1..=20000 and hold <= 1h");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let stream = tokio::net::TcpStream::connect(target.addr).await?;
            stream.set_nodelay(true)?;
            let (mut s, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = http::Request::builder()
                .uri("/")
                .header(http::header::HOST, target.authority.as_str())
                .header("x-user-id", format!("idle-{i}"))
                .body(Empty::<Bytes>::new())?;
            let resp = s.send_request(req).await?;
            resp.into_body().collect().await?;
            senders.push(s);
        }
        let open = senders.iter().filter(|s| !s.is_closed()).count();
        println!("READY {open} idle keep-alive connections to {}", target.url);
        tokio::time::sleep(hold).await;
        let open = senders.iter().filter(|s| !s.is_closed()).count();
        println!("DONE {open} still open after {:?}", hold);
        anyhow::Ok(())
    })
}
