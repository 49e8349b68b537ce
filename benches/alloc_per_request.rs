//! Heap allocations per proxied request, end to end: a real rollgate (accept,
//! hyper's HTTP/1.1 codec, classify, pick, rewrite headers, pooled upstream
//! client, telemetry) on loopback, in this process.
//!
//! A counting global allocator counts only on threads flagged as proxy
//! threads (`per_core`: the worker threads, flagged by
//! `Options::on_worker_start`; `shared`: the runtime's threads, where the
//! idle controller and admin server also live, tick = 1 h), so the load
//! client and the upstream app, which run on their own threads, are not
//! charged.
//!
//! `cargo bench --bench alloc_per_request` prints allocations and bytes per
//! request for `runtime = "per_core"` and `"shared"`, telemetry on and off.
//! No thresholds: it is a measurement (see loadtest/PROFILE.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

struct CountingAlloc;

fn note(size: usize) {
    // `try_with`: the allocator may run while a thread's locals are torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only
// touches a const-initialised thread-local without destructor and two
// atomics, none of which allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const WARMUP: usize = 2_000;
const REQUESTS: usize = 20_000;
/// `cargo test --benches` (no `--bench` argument): a one-pass smoke run.
const SMOKE_REQUESTS: usize = 500;
const CONNECTIONS: usize = 8;

/// The walk of the load generator: (method, path).
const WALK: [(Method, &str); 5] = [
    (Method::GET, "/search?q=scholarships"),
    (Method::GET, "/scholarships/42"),
    (Method::POST, "/api/applications/start"),
    (Method::POST, "/api/applications/42/submit"),
    (Method::POST, "/api/payments/charge"),
];

fn config(upstream: SocketAddr, state: &std::path::Path, runtime: &str, telemetry: bool) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "bench"
state_dir = {state:?}
workers = 1
runtime = "{runtime}"
telemetry = {telemetry}

[upstreams]
v1 = "http://{upstream}"
v2 = "http://{upstream}"

[routing]
sticky_header = "x-user-id"

[rollout]
auto_start = false
tick = "1h"
window = "1h"

{journeys}
"#,
        state = state.display().to_string(),
        journeys = rollgate::demo::JOURNEYS,
    )
}

/// Sends `n` requests over `CONNECTIONS` keep-alive connections.
async fn drive(proxy: SocketAddr, n: usize) {
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            for i in (c..n).step_by(CONNECTIONS) {
                let (m, p) = &WALK[i % WALK.len()];
                let req = Request::builder()
                    .method(m.clone())
                    .uri(*p)
                    .header("host", "bench")
                    .header("x-user-id", format!("user-{}", i % 1000))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                s.ready().await.unwrap();
                let resp = s.send_request(req).await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// (allocations, bytes) per request for one configuration.
fn measure(upstream: SocketAddr, runtime: &str, telemetry: bool, n: usize) -> (f64, f64) {
    let state = tempfile::tempdir().unwrap();
    let cfg = rollgate::Config::parse(
        &config(upstream, state.path(), runtime, telemetry),
        "bench.toml",
    )
    .unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shared = runtime == "shared";
    // The proxy's own thread(s): the only ones the allocator counts on.
    let proxy = std::thread::spawn(move || {
        let rt = if shared {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .on_thread_start(|| COUNTING.with(|c| c.set(true)))
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let opts = rollgate::app::Options {
            on_worker_start: Some(|_| COUNTING.with(|c| c.set(true))),
            ..Default::default()
        };
        rt.block_on(async move {
            let app = rollgate::App::start_with(cfg, opts).await.unwrap();
            addr_tx.send(app.proxy_addr).unwrap();
            let _ = stop_rx.await;
            app.shutdown().await;
        });
    });
    let proxy_addr = addr_rx.recv().unwrap();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client.block_on(drive(proxy_addr, WARMUP.min(n)));
    std::thread::sleep(Duration::from_millis(50));
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    client.block_on(drive(proxy_addr, n));
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let _ = stop_tx.send(());
    proxy.join().unwrap();
    // The measured window includes accepting CONNECTIONS new connections:
    // part of the cost of a request on a fresh keep-alive connection.
    ((a1 - a0) as f64 / n as f64, (b1 - b0) as f64 / n as f64)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // one quick pass, so the smoke run stays fast.
    let n = if std::env::args().any(|a| a == "--bench") {
        REQUESTS
    } else {
        SMOKE_REQUESTS
    };
    let up_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = up_rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let upstream = listener.local_addr().unwrap();
    up_rt.spawn(rollgate::demo::upstream::serve(
        listener,
        rollgate::demo::upstream::Profile::healthy("v1", rollgate::demo::upstream::Latency::ZERO),
        std::future::pending(),
    ));

    println!(
        "heap allocations per proxied request ({n} requests over {CONNECTIONS} keep-alive connections, \
         journeys walk, x-user-id sticky key; proxy threads only)"
    );
    println!(
        "{:<28} {:>12} {:>12}",
        "configuration", "allocs/req", "bytes/req"
    );
    for (runtime, telemetry) in [("per_core", true), ("per_core", false), ("shared", true)] {
        let (a, b) = measure(upstream, runtime, telemetry, n);
        println!(
            "{:<28} {:>12.2} {:>12.0}",
            format!(
                "{runtime}, telemetry {}",
                if telemetry { "on" } else { "off" }
            ),
            a,
            b
        );
    }
}
