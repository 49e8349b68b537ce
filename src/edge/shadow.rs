//! Shadow mirroring: during a `mode = "shadow"` phase, safe requests (GET and
//! HEAD, never payment journeys, minus `shadow.exclude_journeys`) are also
//! sent to V2, whose answer is discarded after it is compared with V1's.
//!
//! The real request never waits for the mirror and never fails because of it:
//!
//! - the request path only `try_send`s a [`MirrorJob`] (method, path, a copy
//!   of the rewritten headers; never the client's body) into a bounded queue;
//!   when the queue is full the mirror is dropped and counted
//!   (`rollgate_shadow_dropped_total`);
//! - V1's answer reaches the comparison through a [`Tee`] riding on the
//!   response body: it keeps refcounted `Bytes` of the chunks it already
//!   streams to the client (up to `shadow.max_body`) and hands them over when
//!   the body ends. Fingerprinting happens in the mirror task, not on the
//!   client's response;
//! - a dispatcher task takes jobs off the queue and runs at most
//!   `shadow.concurrency` mirrors at once, each with `shadow.timeout`.
//!
//! Comparison: status, plus a body fingerprint: media type, length bucket
//! (power of two, `compare_length`), and for JSON a hash of the key structure
//! (object keys sorted, `ignore_keys` left out, array elements as the set of
//! their shapes, scalars by type), so values may differ but the shape may not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty};
use tokio::sync::{mpsc, oneshot, Semaphore};
use xxhash_rust::xxh3::Xxh3;

use crate::config::{Config, ShadowConfig};
use crate::routing::journeys::JourneyId;
use crate::telemetry::shadow::ShadowClass;
use crate::telemetry::Telemetry;

use super::headers::{remove_hop_by_hop, X_ROLLGATE_VARIANT};
use super::upstream::pool::{Pool, PoolConfig};

/// Marks mirrored requests for V2's logs and side-effect guards.
pub static X_ROLLGATE_SHADOW: HeaderName = HeaderName::from_static("x-rollgate-shadow");

/// One request to mirror.
pub struct MirrorJob {
    journey: JourneyId,
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    v1: oneshot::Receiver<Answer>,
}

/// What the request path holds: the queue and which journeys are mirrored.
/// Cloned into every proxy worker; they share the one queue and dispatcher.
#[derive(Clone)]
pub struct Shadow {
    tx: mpsc::Sender<MirrorJob>,
    cfg: Arc<ShadowConfig>,
    telemetry: Arc<Telemetry>,
}

/// The dispatcher, run by the app as its own task.
pub struct ShadowWorker {
    rx: mpsc::Receiver<MirrorJob>,
    cfg: Arc<ShadowConfig>,
    pool: Pool<Empty<Bytes>>,
    telemetry: Arc<Telemetry>,
}

/// One side's answer, as compared.
#[derive(Debug, Default)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<HeaderValue>,
    /// Bytes seen, even beyond `max_body`.
    pub len: u64,
    /// The body if it fit in `max_body`.
    pub body: Option<Vec<Bytes>>,
}

/// Rides on V1's response body and hands its copy over when the body ends.
pub struct Tee {
    tx: Option<oneshot::Sender<Answer>>,
    answer: Answer,
    max_body: usize,
}

// === impl Shadow ===

impl Shadow {
    /// The request-path side and its dispatcher; `None` when the config has
    /// no shadow phase (nothing is ever mirrored then).
    pub fn new(cfg: &Config, telemetry: Arc<Telemetry>) -> Option<(Shadow, ShadowWorker)> {
        use crate::config::PhaseMode;
        if !cfg
            .rollout
            .phases
            .iter()
            .any(|p| p.mode == PhaseMode::Shadow)
        {
            return None;
        }
        let (tx, rx) = mpsc::channel(cfg.shadow.queue);
        let shadow_cfg = Arc::new(cfg.shadow.clone());
        let pool = Pool::new(
            &cfg.upstreams.v2.authority,
            PoolConfig {
                max_idle: cfg.shadow.concurrency,
                ..PoolConfig::from(&cfg.upstreams)
            },
        );
        Some((
            Shadow {
                tx,
                cfg: shadow_cfg.clone(),
                telemetry: telemetry.clone(),
            },
            ShadowWorker {
                rx,
                cfg: shadow_cfg,
                pool,
                telemetry,
            },
        ))
    }

    /// Whether a request of this journey and method is mirrored.
    #[inline]
    pub fn eligible(&self, journey: JourneyId, method: &Method) -> bool {
        super::proxy::is_safe(method) && self.cfg.mirrored.get(journey.index()) == Some(&true)
    }

    /// Queues a mirror of the (already rewritten) request, or drops it when
    /// the queue is full. Never waits.
    pub fn mirror(&self, journey: JourneyId, req: &Request<hyper::body::Incoming>) -> Option<Tee> {
        let (tx, rx) = oneshot::channel();
        let job = MirrorJob {
            journey,
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            headers: req.headers().clone(),
            v1: rx,
        };
        match self.tx.try_send(job) {
            Ok(()) => Some(Tee {
                tx: Some(tx),
                answer: Answer::default(),
                max_body: self.cfg.max_body,
            }),
            Err(_) => {
                self.telemetry.shadow.record_dropped();
                None
            }
        }
    }
}

// === impl Tee ===

impl Tee {
    /// V1's response headers arrived.
    pub fn head(&mut self, status: u16, headers: &HeaderMap) {
        self.answer.status = status;
        self.answer.content_type = headers.get(header::CONTENT_TYPE).cloned();
        self.answer.body = Some(Vec::new());
    }

    /// A body chunk passed through to the client.
    pub fn chunk(&mut self, b: &Bytes) {
        self.answer.len += b.len() as u64;
        if self.answer.len > self.max_body as u64 {
            self.answer.body = None;
        } else if let Some(body) = &mut self.answer.body {
            body.push(b.clone()); // a refcount, not a copy
        }
    }

    /// The body ended (or V1 failed before any: `status` is the 502/504 sent).
    pub fn finish(&mut self, status: Option<u16>) {
        if let Some(s) = status {
            self.answer.status = s;
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(std::mem::take(&mut self.answer));
        }
    }
}

// === impl ShadowWorker ===

impl ShadowWorker {
    /// Runs until the request path's side is dropped.
    pub async fn run(mut self) {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency));
        let ctx = Arc::new(MirrorCtx {
            cfg: self.cfg.clone(),
            pool: self.pool.clone(),
            telemetry: self.telemetry.clone(),
        });
        while let Some(job) = self.rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                ctx.mirror(job).await;
                drop(slot);
            });
        }
    }
}

struct MirrorCtx {
    cfg: Arc<ShadowConfig>,
    pool: Pool<Empty<Bytes>>,
    telemetry: Arc<Telemetry>,
}

impl MirrorCtx {
    async fn mirror(&self, job: MirrorJob) {
        let MirrorJob {
            journey,
            method,
            path,
            mut headers,
            v1,
        } = job;
        remove_hop_by_hop(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(X_ROLLGATE_VARIANT.clone(), HeaderValue::from_static("v2"));
        headers.insert(X_ROLLGATE_SHADOW.clone(), HeaderValue::from_static("1"));
        let mut req = Request::new(Empty::new());
        *req.method_mut() = method;
        *req.uri_mut() = Uri::from(path);
        *req.headers_mut() = headers;

        let start = Instant::now();
        let timeout = self.cfg.timeout;
        let stats = &self.telemetry.shadow;
        let (resp, conn) = match tokio::time::timeout(timeout, self.pool.send(req)).await {
            Ok(Ok(sent)) => sent,
            _ => {
                stats.record(journey, ShadowClass::Error, micros(start.elapsed()));
                return;
            }
        };
        let duration = start.elapsed();
        let status = resp.status().as_u16();
        stats.record(journey, ShadowClass::of(status), micros(duration));
        let (parts, mut body) = resp.into_parts();
        let mut v2 = Answer {
            status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            len: 0,
            body: Some(Vec::new()),
        };
        // Read V2's body (bounded by the timeout too), discarding beyond max_body.
        let read = async {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return false };
                if let Ok(data) = frame.into_data() {
                    v2.len += data.len() as u64;
                    if v2.len > self.cfg.max_body as u64 {
                        v2.body = None;
                    } else if let Some(b) = &mut v2.body {
                        b.push(data);
                    }
                }
            }
            true
        };
        if !matches!(tokio::time::timeout(timeout, read).await, Ok(true)) {
            return;
        }
        conn.release();
        // V1's answer: the client's response may still be streaming.
        let Ok(Ok(v1)) = tokio::time::timeout(timeout, v1).await else {
            return;
        };
        let differs = fingerprint(&v1, &self.cfg) != fingerprint(&v2, &self.cfg);
        stats.record_compare(journey, differs);
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// What is compared of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub status: u16,
    /// Media type, lower case, without parameters.
    pub media_type: String,
    /// `floor(log2(len)) + 1`, 0 for empty; 0 when lengths are not compared.
    pub length_bucket: u8,
    /// Hash of the JSON key structure; `None` for non-JSON or oversized bodies.
    pub json_shape: Option<u64>,
}

pub fn fingerprint(a: &Answer, cfg: &ShadowConfig) -> Fingerprint {
    let media_type = a
        .content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let length_bucket = match (cfg.compare_length, a.len) {
        (false, _) | (_, 0) => 0,
        (true, n) => (64 - n.leading_zeros()) as u8,
    };
    let json = media_type == "application/json" || media_type.ends_with("+json");
    let json_shape = match (&a.body, json) {
        (Some(chunks), true) => {
            let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .map(|v| shape(&v, &cfg.ignore_keys))
        }
        _ => None,
    };
    Fingerprint {
        status: a.status,
        media_type,
        length_bucket,
        json_shape,
    }
}

/// Hash of a JSON value's structure: keys and types, not values.
pub fn shape(v: &serde_json::Value, ignore: &[String]) -> u64 {
    use serde_json::Value;
    let mut h = Xxh3::new();
    match v {
        Value::Null => h.update(b"z"),
        Value::Bool(_) => h.update(b"b"),
        Value::Number(_) => h.update(b"n"),
        Value::String(_) => h.update(b"s"),
        Value::Array(items) => {
            let mut shapes: Vec<u64> = items.iter().map(|i| shape(i, ignore)).collect();
            shapes.sort_unstable();
            shapes.dedup();
            h.update(b"[");
            for s in shapes {
                h.update(&s.to_le_bytes());
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().filter(|k| !ignore.contains(k)).collect();
            keys.sort_unstable();
            h.update(b"{");
            for k in keys {
                h.update(k.as_bytes());
                h.update(b":");
                h.update(&shape(&map[k.as_str()], ignore).to_le_bytes());
                h.update(b",");
            }
        }
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ShadowConfig {
        ShadowConfig {
            queue: 1,
            concurrency: 1,
            timeout: Duration::from_secs(1),
            mirrored: vec![true],
            ignore_keys: vec!["ts".into()],
            compare_length: true,
            max_body: 1024,
            diff_rate_max: 0.01,
        }
    }

    fn answer(status: u16, ct: &str, body: &str) -> Answer {
        Answer {
            status,
            content_type: Some(HeaderValue::from_str(ct).unwrap()),
            len: body.len() as u64,
            body: Some(vec![Bytes::from(body.to_string())]),
        }
    }

    #[test]
    fn json_shape_ignores_values_order_and_array_lengths() {
        let ig = vec!["ts".to_string()];
        let a = json!({"id": 1, "tags": ["a", "b"], "user": {"name": "x", "ts": 5}});
        let b = json!({"user": {"name": "yy"}, "tags": ["c"], "id": 2});
        assert_eq!(shape(&a, &ig), shape(&b, &ig));
        let renamed = json!({"id": 1, "labels": ["a"], "user": {"name": "x"}});
        assert_ne!(shape(&a, &ig), shape(&renamed, &ig));
        let retyped = json!({"id": "1", "tags": ["a"], "user": {"name": "x"}});
        assert_ne!(shape(&a, &ig), shape(&retyped, &ig));
        assert_eq!(shape(&json!([]), &ig), shape(&json!([]), &ig));
    }

    #[test]
    fn fingerprints_compare_status_type_length_and_shape() {
        let c = cfg();
        let v1 = answer(
            200,
            "application/json; charset=utf-8",
            r#"{"version":"v1","n":1}"#,
        );
        let same = answer(200, "application/json", r#"{"n":2,"version":"v2"}"#);
        assert_eq!(fingerprint(&v1, &c), fingerprint(&same, &c));
        let status = answer(500, "application/json", r#"{"version":"v2","n":1}"#);
        assert_ne!(fingerprint(&v1, &c), fingerprint(&status, &c));
        let shape = answer(200, "application/json", r#"{"version":"v2","count":1}"#);
        assert_ne!(fingerprint(&v1, &c), fingerprint(&shape, &c));
        let html = answer(200, "text/html", r#"{"version":"v1","n":1}"#);
        assert_ne!(fingerprint(&v1, &c), fingerprint(&html, &c));
        let long = answer(
            200,
            "application/json",
            &format!(r#"{{"version":"{}","n":1}}"#, "v".repeat(100)),
        );
        assert_ne!(fingerprint(&v1, &c), fingerprint(&long, &c));
        let c2 = ShadowConfig {
            compare_length: false,
            ..cfg()
        };
        assert_eq!(fingerprint(&v1, &c2), fingerprint(&long, &c2));
        // Too big to fingerprint: only status, type and length count.
        let big = Answer {
            body: None,
            ..answer(200, "application/json", r#"{"other":1}"#)
        };
        assert_eq!(fingerprint(&big, &c).json_shape, None);
    }
}
