//! Synthetic users walking the journeys through the proxy: search -> detail
//! -> application start -> submit -> payment, each user with a sticky
//! `x-user-id`, at a steady overall rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
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

#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Runs `users` users at about `rate` requests/s in total until `stop` is set.
pub async fn run(
    base: String,
    users: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
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
            let mut step = u % WALK.len();
            while !stop.load(Ordering::Relaxed) {
                let (method, path) = &WALK[step];
                let req = Request::builder()
                    .method(method.clone())
                    .uri(format!("{base}{path}"))
                    .header("x-user-id", &user)
                    .body(Empty::new())
                    .expect("valid request");
                counters.sent.fetch_add(1, Ordering::Relaxed);
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok { &counters.ok } else { &counters.failed }
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                step = (step + 1) % WALK.len();
                // Jittered think time keeps the arrival rate steady without lockstep.
                tokio::time::sleep(think.mul_f64(0.5 + rand::random::<f64>())).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
