//! Outbound notifications: the status webhook (Slack-style `{"text": ...}`)
//! and the golden baseline round trip to the command center.
//!
//! Both run in their own tasks: a slow or failing endpoint is retried with
//! backoff and never blocks the controller (the queue is bounded; when full, an
//! update is dropped with a warning, the next one carries the current status).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::gates::Evaluation;
use super::StatusView;

const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(5);

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn call(
    client: &HttpClient,
    method: Method,
    url: &Uri,
    body: Bytes,
) -> Result<(u16, Bytes), String> {
    let req = Request::builder()
        .method(method)
        .uri(url.clone())
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Calls with retries and exponential backoff (0.5 s, 1 s, 2 s).
async fn call_with_retry(
    client: &HttpClient,
    method: Method,
    url: &Uri,
    body: Bytes,
) -> Result<(u16, Bytes), String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << (attempt - 1))).await;
        }
        match call(client, method.clone(), url, body.clone()).await {
            Ok((s, b)) if s < 500 => return Ok((s, b)),
            Ok((s, _)) => last = format!("HTTP {s}"),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Handle to the webhook task.
pub(crate) struct Sender {
    tx: mpsc::Sender<String>,
}

impl Sender {
    pub(crate) fn spawn(url: Uri) -> Self {
        let (tx, mut rx) = mpsc::channel::<String>(16);
        tokio::spawn(async move {
            let client = client();
            while let Some(text) = rx.recv().await {
                let body = Bytes::from(serde_json::json!({ "text": text }).to_string());
                if let Err(e) = call_with_retry(&client, Method::POST, &url, body).await {
                    tracing::warn!(error = %e, %url, "status webhook failed after retries");
                }
            }
        });
        Self { tx }
    }

    pub(crate) fn send(&self, text: String) {
        if self.tx.try_send(text).is_err() {
            tracing::warn!("status webhook queue full: update dropped");
        }
    }
}

/// One-message status update for #ship-room.
pub(crate) fn status_text(v: &StatusView) -> String {
    let worst = v
        .gates
        .iter()
        .filter(|g| g.status != super::gates::GateStatus::Green)
        .max_by_key(|g| g.status)
        .map_or("all gates GREEN".to_string(), |g| {
            format!(
                "{} {}{}: {}",
                g.name,
                g.status.word(),
                g.journey
                    .as_deref()
                    .map_or(String::new(), |j| format!(" ({j})")),
                g.reason
            )
        });
    let decision = v.last_decision.as_ref().map_or(String::new(), |d| {
        format!(" | last decision {}: {}", d.action.report_word(), d.reason)
    });
    format!(
        "rollgate: {} {} V2 {}% | {worst}{decision}",
        v.state.as_str(),
        v.phase.as_deref().unwrap_or("-"),
        v.weights.v2
    )
}

/// Writes the golden baseline (per-journey KPIs) and returns its path and sha256.
pub(crate) fn write_baseline(
    state_dir: &Path,
    ev: &Evaluation,
) -> std::io::Result<(PathBuf, String)> {
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "journeys": ev.journeys,
        "v1": ev.v1,
        "v2": ev.v2,
    }))
    .expect("baseline serializes");
    let sha = hex::encode(Sha256::digest(&body));
    let path = state_dir.join("baseline.json");
    super::state::write_atomic(&path, &body).map_err(std::io::Error::other)?;
    std::fs::write(
        state_dir.join("baseline.json.sha256"),
        format!("{sha}  baseline.json\n"),
    )?;
    Ok((path, sha))
}

/// POSTs the baseline to the command center, GETs it back and checks the checksum.
pub(crate) async fn round_trip_baseline(
    url: Uri,
    path: PathBuf,
    sha: String,
) -> Result<(), String> {
    let body = tokio::fs::read(&path).await.map_err(|e| e.to_string())?;
    let client = client();
    let result = async {
        let (status, _) = call_with_retry(&client, Method::POST, &url, Bytes::from(body)).await?;
        if !(200..300).contains(&status) {
            return Err(format!("POST answered HTTP {status}"));
        }
        let (status, got) = call_with_retry(&client, Method::GET, &url, Bytes::new()).await?;
        if !(200..300).contains(&status) {
            return Err(format!("GET answered HTTP {status}"));
        }
        let got_sha = hex::encode(Sha256::digest(&got));
        if got_sha != sha {
            return Err(format!("checksum mismatch: sent {sha}, got back {got_sha}"));
        }
        Ok(())
    }
    .await;
    match &result {
        Ok(()) => {
            tracing::info!(%url, sha256 = %sha, "golden baseline verified by the command center")
        }
        Err(e) => {
            tracing::error!(%url, error = %e, "golden baseline round trip failed (FREEZE_LOCK is set regardless)")
        }
    }
    result
}
