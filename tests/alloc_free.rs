//! The request path's own work allocates nothing: recording telemetry,
//! classifying the journey, hashing the sticky key and picking the variant.
//!
//! A counting global allocator wraps `System`; it counts only on threads that
//! switched counting on (thread-local flag and counter), so tests running in
//! parallel do not see each other's allocations. Each test warms up once, then
//! counts over 10,000 calls and expects exactly zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use rollgate::edge::sticky::Sticky;
use rollgate::routing::journeys::{JourneyId, Journeys};
use rollgate::routing::{RouteTable, Router, Variant, WeightBp};
use rollgate::telemetry::{Telemetry, UpstreamErrorKind};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAlloc;

fn note_alloc() {
    // `try_with`: the allocator may run while a thread's locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only
// touches const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const CALLS: usize = 10_000;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCS.with(|n| n.get())
}

/// Warms up with one call, then asserts `CALLS` calls allocate nothing.
fn assert_alloc_free(what: &str, mut f: impl FnMut(usize)) {
    f(0);
    let n = allocations(|| {
        for i in 0..CALLS {
            f(i);
        }
    });
    assert_eq!(n, 0, "{what}: {n} allocations over {CALLS} calls");
}

fn config() -> rollgate::Config {
    rollgate::Config::parse(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [upstreams]
        v1 = "http://127.0.0.1:1"
        v2 = "http://127.0.0.1:2"
        [routing]
        sticky_header = "x-user-id"
        [[journeys]]
        name = "payments"
        path_prefix = "/api/payments"
        methods = ["POST"]
        kind = "payment"
        [[journeys]]
        name = "application_submit"
        path_pattern = "/api/applications/*/submit"
        [[journeys]]
        name = "static"
        path_pattern = "/assets/**"
        [[journeys]]
        name = "search"
        path_prefix = "/search"
        "#,
        "alloc_free.toml",
    )
    .expect("valid config")
}

fn journeys() -> Journeys {
    config().journeys
}

fn sticky() -> Sticky {
    Sticky::new(
        "rollgate",
        b"0123456789abcdef0123456789abcdef",
        Some("x-user-id".parse().unwrap()),
        None,
    )
}

#[test]
fn the_counter_sees_allocations() {
    // Without this the zero results below would prove nothing.
    let n = allocations(|| {
        black_box(vec![1u8; 100]);
        black_box(String::from("x").repeat(10));
    });
    assert!(n >= 2, "the counting allocator missed allocations ({n})");
}

#[test]
fn telemetry_record_allocates_nothing() {
    let t = Telemetry::new(journeys().len(), true);
    let statuses = [200u16, 201, 304, 404, 500, 503, 101];
    assert_alloc_free("Telemetry::record", |i| {
        let journey = JourneyId::new((i % 5) as u16);
        let variant = Variant::ALL[i % 2];
        let latency = Duration::from_micros((i as u64 * 7919) % 90_000_000);
        t.record(
            black_box(journey),
            variant,
            black_box(latency),
            statuses[i % statuses.len()],
            i % 3 == 0,
        );
    });
    // The calls were not optimised away: they all landed.
    let snap = t.snapshot();
    let total: u64 = journeys()
        .ids()
        .flat_map(|j| Variant::ALL.map(|v| snap.cell(j, v).requests()))
        .sum();
    assert_eq!(total, CALLS as u64 + 1);
}

#[test]
fn telemetry_record_upstream_error_allocates_nothing() {
    let t = Telemetry::new(journeys().len(), true);
    assert_alloc_free("Telemetry::record_upstream_error", |i| {
        let kind = UpstreamErrorKind::ALL[i % UpstreamErrorKind::ALL.len()];
        t.record_upstream_error(
            JourneyId::new((i % 5) as u16),
            Variant::ALL[i % 2],
            black_box(kind),
        );
    });
    let snap = t.snapshot();
    let total: u64 = journeys()
        .ids()
        .flat_map(|j| Variant::ALL.map(|v| snap.cell(j, v).errors.iter().sum::<u64>()))
        .sum();
    assert_eq!(total, CALLS as u64 + 1);
}

#[test]
fn journey_classification_allocates_nothing() {
    let js = journeys();
    let requests: Vec<(Method, String)> = [
        (Method::POST, "/api/payments"),
        (Method::POST, "/api/payments/42/capture"),
        (Method::GET, "/api/payments"),
        (Method::POST, "/api/applications/7/submit"),
        (Method::POST, "/api/applications//submit"),
        (Method::GET, "/assets/js/app.js"),
        (Method::GET, "/search/scholarships?q=x"),
        (Method::GET, "/"),
        (Method::from_bytes(b"PURGE").unwrap(), "/search"),
    ]
    .into_iter()
    .map(|(m, p)| (m, p.to_string()))
    .collect();
    let mut hits = vec![0u64; js.len()];
    assert_alloc_free("Journeys::classify", |i| {
        let (m, p) = &requests[i % requests.len()];
        let id = js.classify(black_box(m), black_box(p));
        hits[id.index()] += 1;
    });
    assert_eq!(
        js.name(js.classify(&Method::POST, "/api/payments/1")),
        "payments"
    );
    assert!(
        hits.iter().all(|&h| h > 0),
        "every journey incl. `other` was hit: {hits:?}"
    );
}

#[test]
fn sticky_bucket_and_weight_pick_allocate_nothing() {
    let s = sticky();
    let keys: Vec<String> = (0..CALLS).map(|i| format!("user-{i}")).collect();
    let w = WeightBp::from_percent(10.0).unwrap();
    let mut v2 = 0usize;
    assert_alloc_free("Sticky::bucket + WeightBp::pick", |i| {
        let bucket = s.bucket(black_box(keys[i].as_bytes()));
        if black_box(w).pick(bucket) == Variant::V2 {
            v2 += 1;
        }
    });
    assert!(v2 > 0, "some users land on V2 at 10%");
    let mut buckets = 0u64;
    assert_alloc_free("Sticky::bucket", |i| {
        buckets += s.bucket(black_box(keys[i].as_bytes())) as u64;
    });
    assert!(buckets > 0);
    assert_alloc_free("WeightBp::pick", |i| {
        black_box(black_box(w).pick(black_box((i % 10_000) as u16)));
    });
}

#[test]
fn resolving_a_user_key_and_loading_the_route_allocate_nothing() {
    let s = sticky();
    let headers: Vec<HeaderMap> = (0..100)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert(
                "x-user-id",
                HeaderValue::from_str(&format!("user-{i}")).unwrap(),
            );
            h.insert("accept", HeaderValue::from_static("text/html"));
            h
        })
        .collect();
    let router = Router::new(RouteTable {
        v2: WeightBp::from_percent(25.0).unwrap(),
        headers: vec![(
            "x-payment-mode".parse().unwrap(),
            HeaderValue::from_static("test"),
        )],
        ..RouteTable::default()
    });
    let t = Arc::new(Telemetry::new(journeys().len(), true));
    let js = journeys();
    // The request path of `Proxy::handle`, minus the network.
    assert_alloc_free("classify + resolve + route + record", |i| {
        let journey = js.classify(&Method::GET, "/search/x");
        let resolved = s.resolve(black_box(&headers[i % headers.len()]));
        let route = router.load();
        let variant = route.v2.pick(resolved.bucket);
        drop(route);
        let guard = t.inflight(journey, variant);
        t.record(journey, variant, Duration::from_micros(1500), 200, false);
        drop(guard);
    });
    assert_eq!(t.inflight_of(Variant::V1) + t.inflight_of(Variant::V2), 0);
}

#[test]
fn beacon_parse_and_record_allocate_nothing() {
    use rollgate::config::BeaconsConfig;
    use rollgate::edge::beacon::{parse, Batch};
    let names = BeaconsConfig {
        names: ["page_view", "js_error", "first_result_ms", "credits_bought"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let t = Telemetry::with_beacons(3, names.names.len(), true);
    let event = r#"{"type":"timing","name":"first_result_ms","value":123.4,"url":"/x"},{"type":"funnel","name":"page_view"},{"type":"js_error","name":"js_error","message":"TypeError: x is undefined"},{"type":"revenue","name":"credits_bought","value":1250}"#;
    let body = format!("[{}]", vec![event; 25].join(","));
    let mut batch = Batch::default();
    // Warm up thread-locals (stripe index) outside the measurement.
    parse(body.as_bytes(), &names, &mut batch).unwrap();
    batch.record(&t.beacons, Variant::V1);
    // The per-window caps and the user bits, as the beacon path runs them.
    let limits = rollgate::telemetry::beacons::CapLimits {
        per_client: u32::MAX,
        per_key: u32::MAX,
        users_per_client: 4,
        window_ms: 300_000,
    };
    let from = |i: u64| rollgate::telemetry::beacons::Sender {
        client: std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into(),
        user: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        opted_out: false,
    };
    let n = allocations(|| {
        for i in 0..100 {
            parse(body.as_bytes(), &names, &mut batch).unwrap();
            assert!(t.beacons.admit(&limits, &from(i), batch.events().len()));
            batch.record_from(&t.beacons, Variant::V2, &from(i));
        }
    });
    assert_eq!(n, 0, "allocations while ingesting 10,000 events");
    assert_eq!(batch.events().len(), 100);
    let snap = t.beacons.snapshot();
    assert_eq!(snap[2 * 2 + 1].counts[2], 2_500); // first_result_ms timings on V2
    assert_eq!(snap[3 * 2 + 1].revenue, 2_500 * 1250); // credits_bought on V2
}
