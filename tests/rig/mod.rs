//! Shared helpers of the integration tests: demo upstreams, a rollgate on
//! 127.0.0.1 port 0 with a config text, and a small HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::watch;

use rollgate::demo::upstream::{self, Latency, Profile};
use rollgate::{App, Config};

/// A running rollgate with its two demo upstreams.
pub struct Rig {
    pub app: App,
    pub state_dir: tempfile::TempDir,
    pub v1: SocketAddr,
    pub v2: SocketAddr,
    stop: watch::Sender<bool>,
    pub client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

pub fn fast(name: &'static str) -> Profile {
    Profile::healthy(name, Latency::ZERO)
}

/// Serves `profile` on a fresh loopback port until `stop` flips.
pub async fn spawn_upstream(profile: Profile, stop: &watch::Sender<bool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut rx = stop.subscribe();
    tokio::spawn(upstream::serve(l, profile, async move {
        let _ = rx.wait_for(|v| *v).await;
    }));
    addr
}

/// Extra config: keys for `[upstreams]` and `[routing]`, then whole sections.
#[derive(Clone, Copy, Default)]
pub struct Extra<'a> {
    pub upstreams: &'a str,
    pub routing: &'a str,
    pub rest: &'a str,
}

/// The config text around `extra`.
pub fn config_text(v1: SocketAddr, v2: SocketAddr, state_dir: &str, extra: Extra<'_>) -> String {
    let Extra {
        upstreams,
        routing,
        rest,
    } = extra;
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "t"
state_dir = "{state_dir}"
[upstreams]
v1 = "http://{v1}"
v2 = "http://{v2}"
timeout = "10s"
{upstreams}
[routing]
sticky_header = "x-user-id"
salt = "tests"
{routing}
{rest}
"#
    )
}

impl Rig {
    /// Starts upstreams with the given profiles and rollgate with `extra`
    /// sections appended to the config.
    pub async fn start(v1: Profile, v2: Profile, extra: &str) -> Rig {
        Self::start_with(
            v1,
            v2,
            Extra {
                rest: extra,
                ..Extra::default()
            },
        )
        .await
    }

    pub async fn start_with(v1: Profile, v2: Profile, extra: Extra<'_>) -> Rig {
        let (stop, _) = watch::channel(false);
        let a1 = spawn_upstream(v1, &stop).await;
        let a2 = spawn_upstream(v2, &stop).await;
        Self::start_at(a1, a2, stop, extra).await
    }

    pub async fn start_at(
        v1: SocketAddr,
        v2: SocketAddr,
        stop: watch::Sender<bool>,
        extra: Extra<'_>,
    ) -> Rig {
        let state_dir = tempfile::tempdir().unwrap();
        let text = config_text(v1, v2, &state_dir.path().display().to_string(), extra);
        let cfg = Config::parse(&text, "test config").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let app = App::start(cfg).await.unwrap();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Rig {
            app,
            state_dir,
            v1,
            v2,
            stop,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.proxy_addr)
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    /// Posts a beacon batch through the proxy port.
    pub async fn beacon(
        &self,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.request(Method::POST, &self.url("/_rollgate/beacon"), headers, body)
            .await
    }

    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.request(Method::GET, &self.url(path), headers, Bytes::new())
            .await
    }

    /// The admin `/metrics` page.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.app.admin_addr);
        let (s, _, body) = self.request(Method::GET, &url, &[], Bytes::new()).await;
        assert_eq!(s, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }

    pub async fn shutdown(self) {
        self.app.shutdown().await;
        let _ = self.stop.send(true);
    }
}

/// The value of one series line of a metrics page (`name{labels}`), 0 when absent.
pub fn series(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `promtool check metrics` on a page, when promtool is installed
/// (`scripts/test.sh` installs it); `None` when it is not.
pub fn promtool_check(page: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(page.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
