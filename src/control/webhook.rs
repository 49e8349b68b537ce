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
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::gates::drift::{Baseline, Reference};
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

/// The golden baseline's file in `state_dir`, beside its `.sha256`.
pub(crate) const BASELINE_FILE: &str = "baseline.json";

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
    let path = state_dir.join(BASELINE_FILE);
    super::state::write_atomic(&path, &body).map_err(std::io::Error::other)?;
    std::fs::write(
        state_dir.join("baseline.json.sha256"),
        format!("{sha}  baseline.json\n"),
    )?;
    Ok((path, sha))
}

/// The stored baseline as the drift reference: `baseline.json` whose sha256
/// matches `baseline.json.sha256`. Anything else is no reference, with the
/// reason (never an error: a rollout without a reference is judged without
/// drift).
pub(crate) fn load_baseline(state_dir: &Path) -> Reference {
    let path = state_dir.join(BASELINE_FILE);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Reference::None("no golden baseline stored yet".into())
        }
        Err(e) => return Reference::None(format!("{}: {e}", path.display())),
    };
    let sha = hex::encode(Sha256::digest(&body));
    let sum_path = state_dir.join(format!("{BASELINE_FILE}.sha256"));
    let want = std::fs::read_to_string(&sum_path).unwrap_or_default();
    if want.split_whitespace().next() != Some(sha.as_str()) {
        return Reference::None(format!(
            "{} does not match {}: not used as the drift reference",
            path.display(),
            sum_path.display()
        ));
    }
    #[derive(Deserialize)]
    struct File {
        journeys: Vec<super::gates::JourneyKpi>,
    }
    match serde_json::from_slice::<File>(&body) {
        Ok(f) => Reference::Baseline(Baseline::from_journeys(sha, &f.journeys)),
        Err(e) => Reference::None(format!("{}: {e}", path.display())),
    }
}

/// The golden re-freeze's round trip: FREEZE_LOCK waits for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refreeze {
    pub state: RefreezeState,
    /// The baseline's sha256, as sent.
    pub sha256: String,
    /// Round trips tried so far.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next try is due (while retrying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreezeState {
    /// The first round trip is under way.
    Verifying,
    /// A round trip failed (an anomaly): tried again with backoff.
    Retrying,
    /// The command center gave the baseline back intact; FREEZE_LOCK is set.
    Verified,
}

impl Refreeze {
    pub(crate) fn new(sha256: String) -> Self {
        Refreeze {
            state: RefreezeState::Verifying,
            sha256,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
        }
    }

    /// A round trip is still owed.
    pub(crate) fn pending(&self) -> bool {
        self.state != RefreezeState::Verified
    }
}

/// One round trip's result, sent back to the controller.
#[derive(Debug)]
pub(crate) struct RefreezeAttempt {
    pub(crate) sha256: String,
    /// 1 for the first.
    pub(crate) attempt: u32,
    pub(crate) result: Result<(), String>,
    /// After a failure: when the next one starts.
    pub(crate) retry_in: Duration,
}

/// Backoff between failed round trips: the first retry, doubling up to the cap.
const REFREEZE_RETRY_FIRST: Duration = Duration::from_secs(5);
const REFREEZE_RETRY_MAX: Duration = Duration::from_secs(300);

fn refreeze_backoff(failures: u32) -> Duration {
    REFREEZE_RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(REFREEZE_RETRY_MAX)
}

/// Round trips the baseline until the command center gives it back intact,
/// reporting every attempt through `report` (the controller's channel, so
/// the state change is persisted like any other). Runs off the control loop;
/// the controller aborts it when a new rollout starts. `done` is how many
/// attempts an earlier run (before a restart) already made.
pub(crate) fn spawn_refreeze(
    url: Uri,
    path: PathBuf,
    sha256: String,
    done: u32,
    report: mpsc::Sender<super::shell::Msg>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let client = client();
        let mut attempt = done;
        loop {
            attempt += 1;
            let result = round_trip_baseline(&client, &url, &path, &sha256).await;
            let ok = result.is_ok();
            let retry_in = refreeze_backoff(attempt - done);
            let msg = super::shell::Msg::Refreeze(RefreezeAttempt {
                sha256: sha256.clone(),
                attempt,
                result,
                retry_in,
            });
            // A closed channel: the controller is gone, nobody to tell.
            let told = report.send(msg).await.is_ok();
            if ok || !told {
                break;
            }
            tokio::time::sleep(retry_in).await;
        }
    })
    .abort_handle()
}

/// POSTs the baseline to the command center, GETs it back and checks the
/// checksum: one try of each (the retries are the caller's, with backoff,
/// so that every failure is seen as an anomaly).
async fn round_trip_baseline(
    client: &HttpClient,
    url: &Uri,
    path: &Path,
    sha: &str,
) -> Result<(), String> {
    let body = tokio::fs::read(path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let result = async {
        let (status, _) = call(client, Method::POST, url, Bytes::from(body))
            .await
            .map_err(|e| format!("POST failed: {e}"))?;
        if !(200..300).contains(&status) {
            return Err(format!("POST answered HTTP {status}"));
        }
        let (status, got) = call(client, Method::GET, url, Bytes::new())
            .await
            .map_err(|e| format!("GET failed: {e}"))?;
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
            tracing::error!(%url, error = %e, "golden baseline round trip failed: FREEZE_LOCK stays unset, retrying")
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreeze_backoff_doubles_from_5s_to_a_5_minute_cap() {
        let secs: Vec<u64> = (1..=9).map(|n| refreeze_backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(refreeze_backoff(u32::MAX), REFREEZE_RETRY_MAX);
    }
}
