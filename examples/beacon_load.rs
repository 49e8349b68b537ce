//! Load run for beacon ingestion over HTTP, and the proxy's req/s with and
//! without a beacon load beside it.
//!
//! ```sh
//! cargo run --release --example beacon_load -- [seconds per run, default 10]
//! ```
//!
//! rollgate runs on its own single-threaded runtime (one core); the clients
//! and the demo upstreams run on a second runtime. Every client keeps one
//! keep-alive connection and sends back to back (closed loop).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate::demo::upstream::{self, Latency, Profile};
use rollgate::{App, Config};
use tokio::net::TcpListener;

const BATCH: &str = r#"[{"type":"funnel","name":"page_view","url":"/search?q=x"},{"type":"funnel","name":"search_result_click"},{"type":"timing","name":"first_result_ms","value":184.7},{"type":"funnel","name":"page_view"},{"type":"timing","name":"first_result_ms","value":92.1},{"type":"funnel","name":"search_result_click"},{"type":"funnel","name":"page_view"},{"type":"js_error","name":"js_error","message":"TypeError"},{"type":"timing","name":"first_result_ms","value":120.0},{"type":"funnel","name":"page_view"}]"#;
const EVENTS_PER_BATCH: u64 = 10;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Runs `clients` closed loops of `make` for `secs`; returns completed requests.
async fn closed_loop(
    client: &HttpClient,
    clients: usize,
    secs: u64,
    make: impl Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync + Clone + 'static,
    stop: Arc<AtomicBool>,
) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, done, stop, make) =
                (client.clone(), done.clone(), stop.clone(), make.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = client.request(make(c, i)).await {
                        let ok = r.status().is_success();
                        let _ = r.into_body().collect().await;
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed)
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Upstreams on the load runtime.
    let (v1, v2) = load.block_on(async {
        let mut addrs = Vec::new();
        for name in ["v1", "v2"] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap());
            tokio::spawn(upstream::serve(
                l,
                Profile::healthy(name, Latency::ZERO),
                std::future::pending(),
            ));
        }
        (addrs[0], addrs[1])
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
state_dir = "{}"
[upstreams]
v1 = "http://{v1}"
v2 = "http://{v2}"
[routing]
sticky_header = "x-user-id"
[[journeys]]
name = "search"
path_prefix = "/search"
[beacons]
names = ["page_view", "js_error", "search_result_click", "first_result_ms"]
[replay]
record = false
"#,
        dir.path().display()
    );
    let cfg = Config::parse(&text, "load").unwrap();
    // rollgate alone on its single-threaded runtime (one core), driven by a thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let server_thread = std::thread::spawn(move || {
        server.block_on(async {
            let app = App::start(cfg).await.unwrap();
            tx.send(app.proxy_addr).unwrap();
            std::future::pending::<()>().await;
        })
    });
    let proxy = rx.recv().unwrap();
    let base = format!("http://{proxy}");

    load.block_on(async move {
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build_http();
        let beacon = {
            let base = base.clone();
            move |c: usize, i: u64| {
                Request::builder()
                    .method(Method::POST)
                    .uri(format!("{base}/_rollgate/beacon"))
                    .header("x-user-id", format!("u{c}-{}", i % 1000))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BATCH.as_bytes())))
                    .unwrap()
            }
        };
        let page = {
            let base = base.clone();
            move |c: usize, i: u64| {
                Request::builder()
                    .uri(format!("{base}/search?q=x"))
                    .header("x-user-id", format!("u{c}-{}", i % 1000))
                    .body(Full::default())
                    .unwrap()
            }
        };
        // Warm-up.
        closed_loop(&client, 16, 1, page.clone(), Arc::new(AtomicBool::new(false))).await;

        let batches = closed_loop(&client, 32, secs, beacon.clone(), Arc::new(AtomicBool::new(false))).await;
        let ev_s = (batches * EVENTS_PER_BATCH) as f64 / secs as f64;
        println!(
            "beacons alone: {:.0} batches/s = {:.0} events/s (batches of {EVENTS_PER_BATCH})",
            batches as f64 / secs as f64,
            ev_s
        );

        let alone = closed_loop(&client, 32, secs, page.clone(), Arc::new(AtomicBool::new(false))).await;
        let alone_rps = alone as f64 / secs as f64;
        println!("proxy alone: {alone_rps:.0} req/s");

        // Beside: a steady 1,000 batches/s (10,000 events/s) from 4 paced
        // clients next to the 32 page clients.
        let paced = {
            let client = client.clone();
            let beacon = beacon.clone();
            async move {
                let sent = Arc::new(AtomicU64::new(0));
                let tasks: Vec<_> = (0..4)
                    .map(|c| {
                        let (client, beacon, sent) = (client.clone(), beacon.clone(), sent.clone());
                        tokio::spawn(async move {
                            let mut tick = tokio::time::interval(Duration::from_micros(4_000));
                            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                            for i in 0..secs * 250 {
                                tick.tick().await;
                                if let Ok(r) = client.request(beacon(c, i)).await {
                                    let _ = r.into_body().collect().await;
                                    sent.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
                sent.load(Ordering::Relaxed)
            }
        };
        let (pages, beacons) = tokio::join!(
            closed_loop(&client, 32, secs, page.clone(), Arc::new(AtomicBool::new(false))),
            paced,
        );
        let beside_rps = pages as f64 / secs as f64;
        println!(
            "proxy with beacons beside: {beside_rps:.0} req/s while {:.0} events/s were ingested; ratio {:.3}",
            (beacons * EVENTS_PER_BATCH) as f64 / secs as f64,
            beside_rps / alone_rps
        );
    });
    drop(server_thread);
    std::process::exit(0);
}
