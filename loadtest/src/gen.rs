//! The generator: `threads` OS threads, each a current-thread tokio runtime
//! driving its share of `connections` keep-alive connections (like wrk's
//! threads), each thread with one [`Recorder`], so nothing is shared on the
//! request path but three progress counters.
//!
//! **Open loop.** Request `i` (0-based, over the whole run) is due at
//! `start + i / rate` and belongs to connection `i mod connections`, like
//! wrk2. A connection sends its requests in order; when one is late because
//! the previous answer on that connection was late, its latency counts from
//! its *intended* time, so a 200 ms stall shows up as a ramp of 200, 199, ...
//! ms latencies, not as one slow request. One refinement keeps the tool
//! honest at sub-millisecond latencies: tokio's timer has 1 ms granularity,
//! so when the connection was idle at the intended time, the wake-up slop of
//! our own timer is not the server's doing and latency counts from the actual
//! send (that slop is reported separately as `dispatch_lag`). `--strict`
//! turns the refinement off.
//!
//! **Closed loop.** Each connection sends back to back until the duration or
//! the request count runs out; latency counts from the send.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::journeys::{Journey, Mix, Walkers};
use crate::stats::{ErrorKind, Recorder, Report, Variant};
use crate::target::Target;

/// Longest run the tool accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most connections the tool opens.
pub const MAX_CONNECTIONS: usize = 20_000;

static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_ROLLGATE_VARIANT: HeaderName = HeaderName::from_static("x-rollgate-variant");

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Constant arrival rate, requests per second.
    Open { rate: f64 },
    /// As fast as each connection can go.
    Closed,
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: Target,
    pub mode: Mode,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    /// Stop after this many requests (whichever of time and count comes first).
    pub max_requests: Option<u64>,
    pub users: usize,
    pub mix: Mix,
    /// `GET /` for every request instead of the journeys (as wrk does).
    pub plain: bool,
    /// Per request; a request without a complete answer by then is an error.
    pub timeout: Duration,
    /// HTTP/2 with prior knowledge (h2c), one stream at a time per connection.
    pub h2: bool,
    /// Open loop: always count from the intended time (see module doc).
    pub strict: bool,
    /// Print a progress line every second on stderr.
    pub progress: bool,
}

impl LoadConfig {
    pub fn new(target: Target, mode: Mode) -> Self {
        LoadConfig {
            target,
            mode,
            connections: 64,
            threads: 1,
            duration: Duration::from_secs(10),
            max_requests: None,
            users: 1000,
            mix: Mix::default(),
            plain: false,
            timeout: Duration::from_secs(10),
            h2: false,
            strict: false,
            progress: false,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            bail!("connections must be 1..={MAX_CONNECTIONS}");
        }
        if self.threads == 0 || self.threads > self.connections {
            bail!("threads must be 1..=connections");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!("duration must be > 0 and <= {}s", MAX_DURATION.as_secs());
        }
        if let Mode::Open { rate } = self.mode {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                bail!("rate must be > 0 and <= 1e7 requests/s");
            }
        }
        Ok(())
    }

    /// Requests the open-loop schedule holds.
    pub fn scheduled(&self) -> u64 {
        let max = self.max_requests.unwrap_or(u64::MAX);
        match self.mode {
            Mode::Open { rate } => ((rate * self.duration.as_secs_f64()).floor() as u64).min(max),
            Mode::Closed => max,
        }
    }
}

#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    /// Closed loop with a count: tickets handed out.
    tickets: AtomicU64,
}

/// What one thread hands back.
struct ThreadResult {
    rec: Recorder,
    sent: u64,
    last_done: Option<Instant>,
}

/// Runs the load and returns the report. Blocks; spawns `threads` threads.
pub fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let progress = Arc::new(Progress::default());
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let mut starts = Vec::new();
    let mut handles = Vec::new();
    for t in 0..cfg.threads {
        let (start_tx, start_rx) = mpsc::channel::<Option<Instant>>();
        starts.push(start_tx);
        let (cfg, progress, ready_tx) = (cfg.clone(), progress.clone(), ready_tx.clone());
        let conns: Vec<usize> = (t..cfg.connections).step_by(cfg.threads).collect();
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || thread_main(cfg, conns, progress, ready_tx, start_rx))?,
        );
    }
    drop(ready_tx);
    // Every connection is open before the clock starts.
    let mut setup_error = None;
    for _ in 0..cfg.threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => setup_error = Some(e),
            Err(_) => setup_error = Some(anyhow::anyhow!("a generator thread died")),
        }
    }
    let start = Instant::now() + Duration::from_millis(5);
    for s in &starts {
        let _ = s.send(setup_error.is_none().then_some(start));
    }
    if let Some(e) = setup_error {
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    let done = Arc::new(AtomicBool::new(false));
    let printer = cfg.progress.then(|| {
        let (progress, done, cfg) = (progress.clone(), done.clone(), cfg.clone());
        std::thread::spawn(move || print_progress(&cfg, &progress, &done, start))
    });
    let mut rec = Recorder::default();
    let mut sent = 0;
    let mut last_done = start;
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => {
                rec.merge(&r.rec);
                sent += r.sent;
                if let Some(t) = r.last_done {
                    last_done = last_done.max(t);
                }
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow::anyhow!("a generator thread panicked")),
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        let _ = p.join();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let (mode, rate) = match cfg.mode {
        Mode::Open { rate } => ("open", Some(rate)),
        Mode::Closed => ("closed", None),
    };
    let scheduled = match cfg.mode {
        Mode::Open { .. } => cfg.scheduled(),
        Mode::Closed => sent,
    };
    Ok(Report::build(
        &rec,
        mode,
        &cfg.target.url,
        rate,
        cfg.connections,
        cfg.threads,
        cfg.users,
        cfg.duration,
        scheduled,
        sent,
        last_done.saturating_duration_since(start),
    ))
}

fn print_progress(cfg: &LoadConfig, p: &Progress, done: &AtomicBool, start: Instant) {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let mut last = 0;
    let mut tick = start;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if tick.elapsed() < Duration::from_secs(1) {
            continue;
        }
        tick += Duration::from_secs(1);
        let completed = p.completed.load(Ordering::Relaxed);
        let line = format!(
            "[{:>5.1}s/{:.0}s] sent {} done {} errors {} | {} req/s",
            start.elapsed().as_secs_f64(),
            cfg.duration.as_secs_f64(),
            p.sent.load(Ordering::Relaxed),
            completed,
            p.errors.load(Ordering::Relaxed),
            completed - last
        );
        last = completed;
        let mut e = std::io::stderr().lock();
        let _ = if tty {
            write!(e, "\r\x1b[2K{line}")
        } else {
            writeln!(e, "{line}")
        };
    }
    if tty {
        eprintln!();
    }
}

fn thread_main(
    cfg: Arc<LoadConfig>,
    conns: Vec<usize>,
    progress: Arc<Progress>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    start_rx: mpsc::Receiver<Option<Instant>>,
) -> anyhow::Result<ThreadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("generator runtime")?;
    // Connect first (sequentially: loopback connects take microseconds and a
    // burst of 1,000 SYNs would overflow a proxy's accept backlog).
    let opened = rt.block_on(async {
        let mut v = Vec::with_capacity(conns.len());
        for _ in &conns {
            v.push(Conn::open(cfg.target.addr, cfg.h2).await?);
        }
        anyhow::Ok(v)
    });
    let opened = match opened {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let _ = ready.send(Err(
                e.context(format!("cannot connect to {}", cfg.target.url))
            ));
            return Err(anyhow::anyhow!("setup failed"));
        }
    };
    let Ok(Some(start)) = start_rx.recv() else {
        bail!("setup failed");
    };
    let rec = Rc::new(RefCell::new(Recorder::default()));
    let uris = Rc::new(uris(&cfg));
    let local = tokio::task::LocalSet::new();
    let results = local.block_on(&rt, async {
        let mut handles = Vec::new();
        for (c, conn) in conns.into_iter().zip(opened) {
            let (cfg, rec, progress, uris) =
                (cfg.clone(), rec.clone(), progress.clone(), uris.clone());
            handles.push(tokio::task::spawn_local(async move {
                conn_loop(c, conn, &cfg, start, &rec, &progress, &uris).await
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await);
        }
        out
    });
    let mut sent = 0;
    let mut last_done: Option<Instant> = None;
    for r in results {
        let (s, l) = r.context("connection task panicked")?;
        sent += s;
        last_done = last_done.max(l);
    }
    drop(local);
    let rec = Rc::try_unwrap(rec)
        .map_err(|_| anyhow::anyhow!("recorder still shared"))?
        .into_inner();
    Ok(ThreadResult {
        rec,
        sent,
        last_done,
    })
}

/// Request URI per journey: origin-form for HTTP/1.1, absolute for h2.
fn uris(cfg: &LoadConfig) -> Vec<Uri> {
    Journey::ALL
        .iter()
        .map(|j| {
            let path = j.request().1;
            if cfg.h2 {
                format!("http://{}{}", cfg.target.authority, path)
                    .parse()
                    .expect("valid URI")
            } else {
                Uri::from_static(path)
            }
        })
        .collect()
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

struct Conn {
    sender: Sender,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr, h2: bool) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(s)
        };
        Ok(Conn { sender })
    }

    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends and reads the whole answer: (status, variant).
    async fn exchange(&mut self, req: Request<Empty<Bytes>>) -> anyhow::Result<(u16, Variant)> {
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let variant = Variant::from_header(resp.headers().get(&X_ROLLGATE_VARIANT));
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok((status, variant))
    }
}

/// One connection's share of the run: (requests sent, time of the last answer).
async fn conn_loop(
    c: usize,
    conn: Conn,
    cfg: &LoadConfig,
    start: Instant,
    rec: &RefCell<Recorder>,
    progress: &Progress,
    uris: &[Uri],
) -> (u64, Option<Instant>) {
    let mut walkers = Walkers::for_connection(c, cfg.connections, cfg.users, &cfg.mix, cfg.plain);
    let mut conn = Some(conn);
    let mut sent = 0u64;
    let mut last_done = None;
    let mut prev_done = start;
    let mut i = c as u64;
    let stride = cfg.connections as u64;
    let scheduled = cfg.scheduled();
    let deadline = start + cfg.duration;
    let host = host_value(&cfg.target);
    loop {
        // When is this request due, and from when does its latency count?
        let from = match cfg.mode {
            Mode::Open { rate } => {
                if i >= scheduled {
                    break;
                }
                let intended = start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
                if intended > Instant::now() {
                    tokio::time::sleep_until(intended.into()).await;
                }
                let now = Instant::now();
                if cfg.strict || prev_done > intended {
                    // Late because the server was: count from the schedule.
                    intended
                } else {
                    rec.borrow_mut()
                        .lag(now.saturating_duration_since(intended));
                    now
                }
            }
            Mode::Closed => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                if let Some(max) = cfg.max_requests {
                    if progress.tickets.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                }
                now
            }
        };
        i += stride;
        let (journey, user) = walkers.next_request();
        // (Re)connect when the server closed the connection in between;
        // a failure to do so is this request's error.
        if conn.as_ref().is_none_or(Conn::is_closed) {
            conn = match Conn::open(cfg.target.addr, cfg.h2).await {
                Ok(c) => Some(c),
                Err(_) => {
                    rec.borrow_mut().error(ErrorKind::Connect);
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    prev_done = Instant::now();
                    // Do not spin against a dead server.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
        }
        let mut req = Request::new(Empty::new());
        let (method, _) = journey.request();
        *req.method_mut() = method;
        *req.uri_mut() = uris[journey as usize].clone();
        if !cfg.h2 {
            req.headers_mut().insert(header::HOST, host.clone());
        }
        req.headers_mut().insert(X_USER_ID.clone(), user);
        sent += 1;
        progress.sent.fetch_add(1, Ordering::Relaxed);
        let c = conn.as_mut().expect("connected above");
        let outcome = tokio::time::timeout(cfg.timeout, c.exchange(req)).await;
        let done = Instant::now();
        match outcome {
            Ok(Ok((status, variant))) => {
                rec.borrow_mut().response(
                    journey,
                    variant,
                    status,
                    done.saturating_duration_since(from),
                );
                progress.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(_)) => {
                rec.borrow_mut().error(ErrorKind::Io);
                progress.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Err(_) => {
                rec.borrow_mut().error(ErrorKind::Timeout);
                progress.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
        prev_done = done;
        last_done = Some(done);
    }
    (sent, last_done)
}

fn host_value(t: &Target) -> HeaderValue {
    HeaderValue::from_str(t.authority.as_str()).expect("authority is a valid header value")
}
