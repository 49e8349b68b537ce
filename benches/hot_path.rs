//! Request-path costs: classify + sticky bucket + variant pick + telemetry record.
//!
//! Run: `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3`.
//! Results and the machine they came from are in `BENCHMARKS.md`.
//!
//! Every loop cycles through 256 pre-built inputs (paths, user ids, latencies,
//! statuses) so branch predictors and the histogram buckets see a realistic mix
//! rather than one value over and over. Building the inputs is not measured.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::header::{ACCEPT, COOKIE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rollgate::edge::sticky::{Sticky, COOKIE_NAME};
use rollgate::routing::journeys::{Journey, JourneyId, JourneyKind, Journeys, PathMatch};
use rollgate::routing::{RouteTable, Router, Variant, WeightBp};
use rollgate::telemetry::histogram::{bucket_index, BUCKETS};
use rollgate::telemetry::Telemetry;

/// Pre-built inputs per loop; a power of two so `i & MASK` picks one.
const N: usize = 256;
const MASK: usize = N - 1;

/// `stats` splits each cell into this many stripes, a thread writing to
/// `thread_index % STRIPES`. Only used to force two threads onto one stripe in
/// the worst-case bench; keep in sync with `STRIPES` in `src/telemetry/cells.rs`.
const STRIPES_ASSUMED: usize = 4;

fn prefix(name: &str, path: &str, methods: u16, kind: JourneyKind) -> Journey {
    Journey {
        name: name.into(),
        path: PathMatch::Prefix(path.into()),
        methods,
        kind,
    }
}

/// Eight journeys in the shape of the seed configs: method-restricted ones,
/// plain prefixes and two segment patterns.
fn journeys() -> Journeys {
    const GET: u16 = 1;
    const POST: u16 = 4;
    let pattern = |name: &str, segs: &[&str]| Journey {
        name: name.into(),
        path: PathMatch::Pattern(segs.iter().map(|s| s.to_string()).collect()),
        methods: GET,
        kind: JourneyKind::Normal,
    };
    Journeys::new(vec![
        prefix("payments", "/api/payments", POST, JourneyKind::Payment),
        prefix("checkout", "/checkout", 0, JourneyKind::Normal),
        prefix("login", "/api/auth/login", POST, JourneyKind::Normal),
        prefix("search", "/search", GET, JourneyKind::Normal),
        pattern("product", &["products", "*"]),
        pattern("reviews", &["products", "*", "reviews", "**"]),
        prefix("cart", "/api/cart", 0, JourneyKind::Normal),
        prefix("account", "/account", 0, JourneyKind::Normal),
    ])
}

/// One synthetic request as the proxy sees it after parsing.
struct Req {
    method: Method,
    path: String,
    headers: HeaderMap,
    latency: Duration,
    status: u16,
    cache_hit: bool,
}

/// A small deterministic generator so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Headers a browser typically sends, plus `extra`.
fn browser_headers(extra: &[(HeaderName, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HOST, HeaderValue::from_static("shop.example.com"));
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        ),
    );
    h.insert(
        ACCEPT,
        HeaderValue::from_static("application/json, text/plain, */*"),
    );
    h.insert(
        "accept-language",
        HeaderValue::from_static("en-GB,en;q=0.9"),
    );
    h.insert(
        "x-request-id",
        HeaderValue::from_static("3f1c9a52-6f0e-4d7b-9b1e-0c8f4a2d7e11"),
    );
    for (k, v) in extra {
        h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn requests() -> Vec<Req> {
    // Weighted towards reads, with every journey and `other` present.
    let shapes: [(Method, &str); 12] = [
        (Method::GET, "/search?q=shoes"),
        (Method::GET, "/products/8812"),
        (Method::GET, "/products/8812/reviews/page/2"),
        (Method::GET, "/search?q=red+dress&page=3"),
        (Method::POST, "/api/payments/intent"),
        (Method::GET, "/checkout/summary"),
        (Method::POST, "/api/auth/login"),
        (Method::PUT, "/api/cart/items/77"),
        (Method::GET, "/account/orders"),
        (Method::GET, "/static/app.9f2c.js"),
        (Method::GET, "/"),
        (Method::GET, "/products/991"),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..N)
        .map(|i| {
            let (method, path) = &shapes[(rng.next() % shapes.len() as u64) as usize];
            let user = format!("user-{}", rng.next() % 1_000_000);
            // 1 ms .. ~260 ms, spread over many histogram buckets.
            let latency = Duration::from_micros(1_000 + (rng.next() % 64) * (rng.next() % 64) * 64);
            let status = match i % 100 {
                0 => 503,
                1..=3 => 404,
                4 => 302,
                _ => 200,
            };
            Req {
                method: method.clone(),
                path: path.to_string(),
                headers: browser_headers(&[(HeaderName::from_static("x-user-id"), user)]),
                latency,
                status,
                cache_hit: method == Method::GET && i % 3 != 0,
            }
        })
        .collect()
}

fn sticky() -> Sticky {
    Sticky::new(
        "rollout-2024-bench",
        b"bench-cookie-secret-0123456789",
        Some(HeaderName::from_static("x-user-id")),
        None,
    )
}

/// (a) What the proxy does per request before and after forwarding.
fn bench_request_path(c: &mut Criterion) {
    let journeys = journeys();
    let sticky = sticky();
    let router = Router::new(RouteTable {
        v2: WeightBp::from_percent(25.0).unwrap(),
        headers: Vec::new(),
        ..RouteTable::default()
    });
    let telemetry = Telemetry::new(journeys.len(), true);
    let reqs = requests();
    let mut g = c.benchmark_group("request_path");

    let mut i = 0usize;
    g.bench_function("classify", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let r = black_box(&reqs[i & MASK]);
            journeys.classify(&r.method, &r.path)
        })
    });

    // The full sequence of the proxy: classify, bucket from x-user-id, one
    // ArcSwap load of the weights, pick, record.
    let mut i = 0usize;
    g.bench_function("classify_pick_record", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let r = black_box(&reqs[i & MASK]);
            let journey = journeys.classify(&r.method, &r.path);
            let bucket = sticky.resolve(&r.headers).bucket;
            let variant = router.load().v2.pick(bucket);
            telemetry.record(journey, variant, r.latency, r.status, r.cache_hit);
            variant
        })
    });
    g.finish();
    black_box(telemetry.snapshot());
}

/// (b) `Telemetry::record` alone, one thread.
fn bench_record(c: &mut Criterion) {
    let telemetry = Telemetry::new(9, true);
    let reqs = requests();
    let mut g = c.benchmark_group("record");

    let mut i = 0usize;
    g.bench_function("one_cell", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let r = black_box(&reqs[i & MASK]);
            telemetry.record(
                JourneyId::new(3),
                Variant::V2,
                r.latency,
                r.status,
                r.cache_hit,
            )
        })
    });

    // 9 journeys x 2 variants: more cache lines in play, as in production.
    let mut i = 0usize;
    g.bench_function("mixed_cells", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let r = black_box(&reqs[i & MASK]);
            let journey = JourneyId::new((i % 9) as u16);
            let variant = Variant::ALL[(i >> 3) & 1];
            telemetry.record(journey, variant, r.latency, r.status, r.cache_hit)
        })
    });

    // The floor of this design on this machine: the three `fetch_add(Relaxed)`
    // a 2xx record without cache hit does (bucket, sum, class), on counters
    // owned by this bench, without the thread-local stripe lookup, indexing
    // and bucket math.
    let floor: Vec<AtomicU64> = (0..BUCKETS + 6).map(|_| AtomicU64::new(0)).collect();
    let mut i = 0usize;
    g.bench_function("floor_3_fetch_add", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let r = black_box(&reqs[i & MASK]);
            let us = r.latency.as_micros() as u64;
            floor[bucket_index(us)].fetch_add(1, Relaxed);
            floor[BUCKETS].fetch_add(us, Relaxed);
            floor[BUCKETS + 2].fetch_add(1, Relaxed);
        })
    });

    // The switch used by the load test's overhead comparison.
    let off = Telemetry::new(9, false);
    let mut i = 0usize;
    g.bench_function("disabled", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let r = black_box(&reqs[i & MASK]);
            off.record(
                JourneyId::new(3),
                Variant::V2,
                r.latency,
                r.status,
                r.cache_hit,
            )
        })
    });
    g.finish();
}

/// Spawns one recorder thread: it records once (which fixes its stripe), says
/// so on `ready`, waits for `start`, then times `iters` records of one cell.
fn recorder(
    telemetry: &Arc<Telemetry>,
    start: &Arc<Barrier>,
    reqs: &Arc<Vec<Req>>,
    iters: u64,
    seed: usize,
) -> thread::JoinHandle<Duration> {
    let (telemetry, start, reqs) = (Arc::clone(telemetry), Arc::clone(start), Arc::clone(reqs));
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let j = JourneyId::new(3);
        telemetry.record(j, Variant::V2, Duration::from_millis(1), 200, false);
        ready_tx.send(()).unwrap();
        start.wait();
        let t0 = Instant::now();
        for n in 0..iters as usize {
            let r = black_box(&reqs[(n + seed) & MASK]);
            telemetry.record(j, Variant::V2, r.latency, r.status, r.cache_hit);
        }
        t0.elapsed()
    });
    ready_rx.recv().unwrap();
    handle
}

/// (c) Two threads recording the same (journey, variant) at once. The time
/// reported is per record on each thread (the slower thread's wall time over
/// `iters`), so it compares directly with `record/one_cell`; the throughput
/// line counts the records of both threads.
///
/// Stripes are handed out round-robin on a thread's first record, so the
/// second recorder's stripe is chosen by burning `gap - 1` stripes in between:
/// gap 1 = neighbouring stripes (what two fresh worker threads get), gap 2 =
/// stripes further apart, gap `STRIPES_ASSUMED` = the same stripe (what
/// happens once there are more worker threads than stripes).
fn bench_record_two_threads(c: &mut Criterion) {
    let reqs = Arc::new(requests());
    let mut g = c.benchmark_group("record_2_threads");
    g.throughput(Throughput::Elements(2));
    for (name, gap) in [
        ("adjacent_stripes", 1),
        ("stripes_2_apart", 2),
        ("same_stripe", STRIPES_ASSUMED),
    ] {
        let telemetry = Arc::new(Telemetry::new(9, true));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let start = Arc::new(Barrier::new(3));
                let a = recorder(&telemetry, &start, &reqs, iters, 0);
                for _ in 1..gap {
                    let t = Arc::clone(&telemetry);
                    thread::spawn(move || {
                        t.record(JourneyId::new(0), Variant::V1, Duration::ZERO, 200, false)
                    })
                    .join()
                    .unwrap();
                }
                let b = recorder(&telemetry, &start, &reqs, iters, 17);
                start.wait();
                let ta = a.join().unwrap();
                let tb = b.join().unwrap();
                ta.max(tb)
            })
        });
    }
    g.finish();
}

/// (d) Where the bucket comes from: the user header (one hash), a signed
/// `rg_bucket` cookie (cookie parse + HMAC-SHA256 verify + hash), or nothing
/// (random id + hash; the response then sets the cookie).
fn bench_sticky(c: &mut Criterion) {
    let sticky = sticky();
    let mut rng = Rng(42);
    let header_maps: Vec<HeaderMap> = (0..N)
        .map(|_| {
            browser_headers(&[
                (
                    HeaderName::from_static("x-user-id"),
                    format!("user-{}", rng.next() % 1_000_000),
                ),
                (COOKIE, "_ga=GA1.2.1234567890.1700000000; theme=dark".into()),
            ])
        })
        .collect();
    let cookie_maps: Vec<HeaderMap> = (0..N)
        .map(|_| {
            let cookie = format!(
                "_ga=GA1.2.1234567890.1700000000; {COOKIE_NAME}={}; theme=dark",
                sticky.cookie_value(rng.next())
            );
            browser_headers(&[(COOKIE, cookie)])
        })
        .collect();
    let bare = browser_headers(&[]);

    let mut g = c.benchmark_group("sticky_resolve");
    let mut i = 0usize;
    g.bench_function("user_header", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            sticky.resolve(black_box(&header_maps[i & MASK]))
        })
    });
    let mut i = 0usize;
    g.bench_function("signed_cookie", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let r = sticky.resolve(black_box(&cookie_maps[i & MASK]));
            debug_assert_eq!(r.source, rollgate::edge::sticky::Source::Cookie);
            r
        })
    });
    g.bench_function("new_client", |b| {
        b.iter(|| sticky.resolve(black_box(&bare)))
    });
    g.finish();

    // The benches above must measure the path they are named after.
    assert_eq!(
        sticky.resolve(&header_maps[0]).source,
        rollgate::edge::sticky::Source::UserKey
    );
    assert_eq!(
        sticky.resolve(&cookie_maps[0]).source,
        rollgate::edge::sticky::Source::Cookie
    );
}

criterion_group!(
    benches,
    bench_request_path,
    bench_record,
    bench_record_two_threads,
    bench_sticky
);
criterion_main!(benches);
