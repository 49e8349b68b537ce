//! Synthetic users walking the journeys through the proxy: search -> detail
//! -> application start -> submit -> payment, each user with a sticky
//! `x-user-id`, at a steady overall rate.
//!
//! They behave like browsers running the app's scripts: after each page
//! (search, detail) they post a beacon with a `page_view`, the time to the
//! first result on search, a result click, and a `js_error` when the page
//! said its scripts threw (`x-demo-js-error`). When the application page
//! offers no submit step (`x-demo-next: search`), they go back to search.
//! After a payment that went through, a user posts a `revenue` beacon
//! (`credits_bought`, an amount in cents that depends on the user), so the
//! reports show revenue per user V2 against V1.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The walk every user repeats.
pub const WALK: [(Method, &str); 5] = [
    (Method::GET, "/search?q=scholarships"),
    (Method::GET, "/scholarships/42"),
    (Method::POST, "/api/applications/start"),
    (Method::POST, "/api/applications/42/submit"),
    (Method::POST, "/api/payments/charge"),
];

/// Beacon names the population sends; the demo config lists them.
pub const BEACON_NAMES: [&str; 5] = [
    "page_view",
    "js_error",
    "search_result_click",
    "first_result_ms",
    "credits_bought",
];

/// Index of the payment in [`WALK`].
const PAYMENT_STEP: usize = 4;

/// The credits a user buys per payment, in cents: three basket sizes.
fn credits_cents(user: usize) -> u32 {
    [500, 1250, 2500][user % 3]
}

#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub beacons: AtomicU64,
}

/// The beacon a page view produces.
fn beacon_body(step: usize, js_error: bool, elapsed: Duration) -> String {
    let mut events = vec![r#"{"type":"funnel","name":"page_view"}"#.to_string()];
    if step == 0 {
        events.push(format!(
            r#"{{"type":"timing","name":"first_result_ms","value":{:.1}}}"#,
            elapsed.as_secs_f64() * 1000.0
        ));
        events.push(r#"{"type":"funnel","name":"search_result_click"}"#.into());
    }
    if js_error {
        events.push(r#"{"type":"js_error","name":"js_error"}"#.into());
    }
    format!("[{}]", events.join(","))
}

/// Runs `users` users at about `rate` requests/s in total until `stop` is set.
pub async fn run(
    base: String,
    users: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(users)
        .build_http();
    let think = Duration::from_secs_f64(users as f64 / rate.max(1.0));
    let mut tasks = Vec::with_capacity(users);
    for u in 0..users {
        let (client, base, stop, counters) =
            (client.clone(), base.clone(), stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the users' start over one think time.
            tokio::time::sleep(think.mul_f64(u as f64 / users as f64)).await;
            let user = format!("user-{u}");
            // Each user's own address, as a balancer in front would report
            // it: counted per user only where 127.0.0.1 is a trusted proxy
            // (the attack tests); anywhere else rollgate replaces it with
            // the peer's address, as for any client.
            let addr = format!("10.{}.{}.{}", (u >> 16) & 0xff, (u >> 8) & 0xff, u & 0xff);
            let mut step = u % WALK.len();
            while !stop.load(Ordering::Relaxed) {
                let (method, path) = &WALK[step];
                let req = Request::builder()
                    .method(method.clone())
                    .uri(format!("{base}{path}"))
                    .header("x-user-id", &user)
                    .header("x-forwarded-for", &addr)
                    .body(Full::default())
                    .expect("valid request");
                counters.sent.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let mut next = (step + 1) % WALK.len();
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let h = resp.headers();
                        let js_error = h.contains_key("x-demo-js-error");
                        if h.get("x-demo-next").is_some_and(|v| v == "search") {
                            next = 0;
                        }
                        let _ = resp.into_body().collect().await;
                        if ok { &counters.ok } else { &counters.failed }
                            .fetch_add(1, Ordering::Relaxed);
                        let beacon = if ok && *method == Method::GET {
                            Some(beacon_body(step, js_error, started.elapsed()))
                        } else if ok && step == PAYMENT_STEP {
                            Some(format!(
                                r#"[{{"type":"revenue","name":"credits_bought","value":{}}}]"#,
                                credits_cents(u)
                            ))
                        } else {
                            None
                        };
                        if let Some(body) = beacon {
                            let req = Request::builder()
                                .method(Method::POST)
                                .uri(format!("{base}/_rollgate/beacon"))
                                .header("x-user-id", &user)
                                .header("x-forwarded-for", &addr)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("valid beacon");
                            if let Ok(r) = client.request(req).await {
                                let _ = r.into_body().collect().await;
                                counters.beacons.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                step = next;
                // Jittered think time keeps the arrival rate steady without lockstep.
                tokio::time::sleep(think.mul_f64(0.5 + rand::random::<f64>())).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
