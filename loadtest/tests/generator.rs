//! The load generator's own correctness: it sends what the schedule says
//! (rate accuracy, count-based), it charges a server stall to every request
//! scheduled behind it (coordinated omission), and it sorts answers by
//! journey and by rollgate's variant header. No wall-clock thresholds: the
//! stall assertions are lower bounds that a slow machine only makes truer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rollgate_load::stallserver::{self, Stall};
use rollgate_load::target::Target;
use rollgate_load::{LoadConfig, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A stall server on a background runtime: (runtime, url, counters, stop).
fn stall_server(stall: Stall) -> (tokio::runtime::Runtime, String, oneshot::Sender<()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    rt.spawn(stallserver::serve(listener, stall, async move {
        let _ = rx.await;
    }));
    (rt, url, tx)
}

/// `PUT /api/v1/weights {"v2": pct}` over a raw connection; the answer's text.
async fn put_weight(admin: std::net::SocketAddr, pct: u32) -> String {
    // The environment variable wins over the config, as in production.
    let token = std::env::var("ROLLGATE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "t0ken".into());
    let body = format!("{{\"v2\": {pct}}}");
    let req = format!(
        "PUT /api/v1/weights HTTP/1.1\r\nhost: {admin}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[test]
fn open_loop_sends_the_scheduled_count_at_the_set_rate() {
    let stall = Stall::default();
    let received = stall.received.clone();
    let (_rt, url, _stop) = stall_server(stall);
    let rate = 1000.0;
    let mut cfg = LoadConfig::new(Target::parse(&url).unwrap(), Mode::Open { rate });
    cfg.connections = 8;
    cfg.duration = Duration::from_secs(2);
    let report = rollgate_load::run(cfg).unwrap();

    let expected = rate * 2.0;
    // Count-based rate accuracy: requests answered over the run length.
    let achieved = report.completed as f64 / report.duration_s;
    assert!(
        (achieved - rate).abs() <= 0.02 * rate,
        "achieved {achieved} req/s for a set rate of {rate}: {report:?}"
    );
    assert_eq!(report.scheduled, expected as u64);
    assert_eq!(report.sent, report.scheduled);
    assert_eq!(report.completed, report.sent, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    // The server saw exactly what the generator says it sent.
    assert_eq!(received.load(Ordering::Relaxed), report.sent);
    assert_eq!(report.status.get("2xx"), Some(&report.completed));
}

#[test]
fn a_200ms_stall_shows_in_the_tail_not_as_one_slow_request() {
    let stall = Stall {
        stall_at: Some(500),
        stall: Duration::from_millis(200),
        ..Default::default()
    };
    let (_rt, url, _stop) = stall_server(stall);
    // One connection at 1000/s: the stall holds up about 200 requests
    // scheduled behind request 500, with latencies ramping down from 200 ms.
    let mut cfg = LoadConfig::new(Target::parse(&url).unwrap(), Mode::Open { rate: 1000.0 });
    cfg.connections = 1;
    cfg.duration = Duration::from_secs(2);
    let report = rollgate_load::run(cfg).unwrap();
    let l = &report.latency;
    assert_eq!(report.completed, 2000, "{report:?}");
    assert!(l.max_us >= 200_000, "the stall itself: {l:?}");
    // ~50 of 2000 requests were due in the stall's first 50 ms, so they
    // waited >= 150 ms: the 99.9th percentile must see them.
    assert!(l.p999_us >= 150_000, "stall hidden from p99.9: {l:?}");
    // ~100 requests (5 %) waited >= 100 ms: so did the 99th percentile.
    assert!(l.p99_us >= 100_000, "stall hidden from p99: {l:?}");
}

#[test]
fn closed_loop_is_bounded_by_count_and_reports_journeys_and_variants() {
    let (v1, v2) = (Stall::default(), Stall::default());
    let (r1, c1) = (v1.received.clone(), v2.received.clone());
    let (_rt1, url1, _s1) = stall_server(v1);
    let (_rt2, url2, _s2) = stall_server(v2);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"t0ken\"\nstate_dir = {:?}\nworkers = 1\n\n\
         [upstreams]\nv1 = {url1:?}\nv2 = {url2:?}\n\n[routing]\nsticky_header = \"x-user-id\"\n\n\
         [rollout]\nauto_start = false\n\n\
         [[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n",
        state.path().display().to_string()
    );
    let cfg = rollgate::Config::parse(&toml, "loadtest.toml").unwrap();
    let app = rt.block_on(rollgate::App::start(cfg)).unwrap();
    // Through the admin API, as an operator would (the controller owns the router).
    let answer = rt.block_on(put_weight(app.admin_addr, 50));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let target = Target::parse(&format!("http://{}", app.proxy_addr)).unwrap();
    let mut cfg = LoadConfig::new(target, Mode::Closed);
    cfg.connections = 4;
    cfg.users = 200;
    cfg.duration = Duration::from_secs(60);
    cfg.max_requests = Some(1000);
    let report = rollgate_load::run(cfg).unwrap();
    rt.block_on(app.shutdown());

    assert_eq!(report.sent, 1000, "{report:?}");
    assert_eq!(report.completed, 1000, "{report:?}");
    let (n1, n2) = (r1.load(Ordering::Relaxed), c1.load(Ordering::Relaxed));
    assert_eq!(n1 + n2, 1000);
    let v = &report.variants;
    assert!(v.contains_key("v1") && v.contains_key("v2"), "{report:?}");
    assert_eq!(v["v1"].count, n1, "{v:?}");
    assert_eq!(v["v2"].count, n2, "{v:?}");
    // 200 users hashed 50/50: both variants get a fair share.
    assert!(n1 > 200 && n2 > 200, "v1 {n1}, v2 {n2}");
    // Every journey of the walk shows up, in funnel order of frequency.
    let j = &report.journeys;
    let names = [
        "search",
        "detail",
        "application_start",
        "application_submit",
        "payment",
    ];
    for n in names {
        assert!(j.contains_key(n), "{n} missing: {j:?}");
    }
    assert!(j["search"].count > j["payment"].count);
    assert_eq!(j.values().map(|s| s.count).sum::<u64>(), 1000);
}
