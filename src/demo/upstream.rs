//! A stand-in application for the demo, tests and load runs: answers every
//! path after a sampled latency, with configurable error rate, payment
//! failures and response size.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::edge::server::{self, Limits};

/// Log-normal latency given by its median and P95.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub median_ms: f64,
    pub p95_ms: f64,
}

impl Latency {
    pub const ZERO: Latency = Latency {
        median_ms: 0.0,
        p95_ms: 0.0,
    };

    /// One sample (Box-Muller; sigma from the P95/median ratio).
    pub fn sample(&self) -> Duration {
        if self.median_ms <= 0.0 {
            return Duration::ZERO;
        }
        let sigma = (self.p95_ms / self.median_ms).max(1.0).ln() / 1.645;
        let (u1, u2): (f64, f64) = (rand::random::<f64>().max(1e-12), rand::random());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let ms = self.median_ms * (sigma * z).exp();
        Duration::from_secs_f64(ms.clamp(0.0, 10_000.0) / 1000.0)
    }
}

/// How the app behaves.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Reported in the body and the `x-app-version` header.
    pub name: &'static str,
    pub latency: Latency,
    /// Share of requests answered 500.
    pub error_rate: f64,
    /// Share of payment POSTs (`/api/payments...`) answered 502.
    pub payment_failure_rate: f64,
    /// Response body size in bytes (at least the small JSON).
    pub body_bytes: usize,
    /// Share of pages (GET search/detail) whose scripts throw in the browser:
    /// the page says so in `x-demo-js-error: 1` and the synthetic user
    /// reports a `js_error` beacon.
    pub js_error_rate: f64,
    /// The application page lost its submit button: `x-demo-next: search`
    /// on application start, and the synthetic user never submits.
    pub drop_submit: bool,
}

impl Profile {
    pub fn healthy(name: &'static str, latency: Latency) -> Self {
        Self {
            name,
            latency,
            error_rate: 0.0,
            payment_failure_rate: 0.0,
            body_bytes: 0,
            js_error_rate: 0.0,
            drop_submit: false,
        }
    }
}

async fn handle(
    p: Arc<Profile>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let is_payment = req.method() == Method::POST && path.starts_with("/api/payments");
    let is_page = req.method() == Method::GET
        && (path.starts_with("/search") || path.starts_with("/scholarships"));
    let is_start = path.starts_with("/api/applications/start");
    // Drain the request body so keep-alive connections can be reused.
    let _ = req.into_body().collect().await;
    let delay = p.latency.sample();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = if is_payment && rand::random::<f64>() < p.payment_failure_rate {
        StatusCode::BAD_GATEWAY
    } else if rand::random::<f64>() < p.error_rate {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let mut body = format!(
        "{{\"version\":\"{}\",\"status\":{}}}",
        p.name,
        status.as_u16()
    )
    .into_bytes();
    if body.len() < p.body_bytes {
        body.resize(p.body_bytes, b' ');
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("x-app-version", HeaderValue::from_static(p.name));
    if is_page && rand::random::<f64>() < p.js_error_rate {
        r.headers_mut()
            .insert("x-demo-js-error", HeaderValue::from_static("1"));
    }
    if is_start && p.drop_submit {
        r.headers_mut()
            .insert("x-demo-next", HeaderValue::from_static("search"));
    }
    Ok(r)
}

/// Serves the profile on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    profile: Profile,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let p = Arc::new(profile);
    server::serve(
        listener,
        Limits::default(),
        move |req, _: SocketAddr| handle(p.clone(), req),
        shutdown,
    )
    .await
}
