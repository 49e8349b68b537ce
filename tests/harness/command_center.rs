//! A command center for the golden re-freeze on a loopback port: keeps what
//! was POSTed to each path and serves it back on GET, after failing a set
//! number of GETs (503) or with a corrupted copy, so a test sees every way
//! the round trip can go wrong. Its `/hooks` path takes the status webhook.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::client::{full, TestBody};

/// How the GETs go wrong.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The first `n` GETs answer 503, the later ones the stored body.
    FailGets(u32),
    /// Every GET answers the stored body with one byte changed.
    Corrupt,
}

#[derive(Default)]
struct Seen {
    /// (path, body) of every POST.
    posts: Vec<(String, Bytes)>,
    gets: u32,
}

const BASELINE_PATH: &str = "/baselines/golden";
const HOOKS_PATH: &str = "/hooks";

pub struct CommandCenter {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl CommandCenter {
    pub async fn start(fault: Fault) -> CommandCenter {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(fault, state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CommandCenter { addr, seen, task }
    }

    /// The URL for `rollout.command_center_url`.
    pub fn url(&self) -> String {
        format!("http://{}{BASELINE_PATH}", self.addr)
    }

    /// The URL for `rollout.webhook_url`.
    pub fn hooks_url(&self) -> String {
        format!("http://{}{HOOKS_PATH}", self.addr)
    }

    fn posts_to(&self, path: &str) -> Vec<Bytes> {
        let s = self.seen.lock().unwrap();
        s.posts
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// (baseline POSTs, GETs) so far.
    pub fn calls(&self) -> (usize, u32) {
        let posts = self.posts_to(BASELINE_PATH).len();
        (posts, self.seen.lock().unwrap().gets)
    }

    /// The last baseline POSTed.
    pub fn last_post(&self) -> Option<Bytes> {
        self.posts_to(BASELINE_PATH).pop()
    }

    /// The status webhook's messages so far.
    pub fn hooks(&self) -> Vec<String> {
        self.posts_to(HOOKS_PATH)
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

impl Drop for CommandCenter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    fault: Fault,
    seen: Arc<Mutex<Seen>>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = seen.lock().unwrap();
    let (status, out) = match method {
        Method::POST => {
            s.posts.push((path, body));
            (StatusCode::CREATED, Bytes::new())
        }
        Method::GET => {
            s.gets += 1;
            let stored = s
                .posts
                .iter()
                .rev()
                .find(|(p, _)| *p == path)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            match fault {
                Fault::FailGets(n) if s.gets <= n => {
                    (StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
                }
                Fault::FailGets(_) => (StatusCode::OK, stored),
                Fault::Corrupt => {
                    let mut v = stored.to_vec();
                    if let Some(b) = v.first_mut() {
                        *b ^= 1;
                    }
                    (StatusCode::OK, Bytes::from(v))
                }
            }
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
    };
    drop(s);
    Ok(Response::builder()
        .status(status)
        .body(full(out))
        .expect("response"))
}
