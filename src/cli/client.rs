//! The HTTP client of the admin API: one call per command, and each way a
//! call can fail turned into its own [`CliError`].

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// How the admin API's overnight-freeze refusal begins (the other 423 is FREEZE_LOCK).
const OVERNIGHT_FREEZE: &str = "overnight freeze";

use super::CliError;
use crate::api::ErrorBody;

/// A call that takes longer than this is reported, not waited on forever.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one rollgate admin API.
pub(crate) struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A successful answer.
pub(crate) struct Answer {
    body: Bytes,
}

impl Answer {
    /// The answer as the API type it should be; a field the CLI does not
    /// find is an error, never an empty cell.
    pub(crate) fn decode<T: DeserializeOwned>(&self) -> Result<T, CliError> {
        decode(&self.body)
    }

    /// The server's JSON for `--json`, pretty-printed.
    pub(crate) fn pretty_json(&self) -> Result<String, CliError> {
        let v: Value = decode(&self.body)?;
        Ok(serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CliError> {
    serde_json::from_slice(body).map_err(|e| CliError::BadAnswer(e.to_string()))
}

impl AdminClient {
    /// `base` like `http://127.0.0.1:9901`; only plain HTTP (the admin port is
    /// meant for loopback or a private network, see the README).
    pub(crate) fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = base.trim().trim_end_matches('/').to_string();
        let bad = |why| CliError::BadUrl {
            url: base.clone(),
            why,
        };
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported: use the plain-HTTP admin port (loopback or a tunnel)",
                ))
            }
            _ => return Err(bad("expected http://HOST:PORT")),
        }
        if uri.authority().is_none() {
            return Err(bad("expected http://HOST:PORT"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("expected no path: http://HOST:PORT"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            base,
            token: token.filter(|t| !t.is_empty()),
            client,
        })
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Answer, CliError> {
        self.call(Method::GET, path, None).await
    }

    /// A command without a body.
    pub(crate) async fn post(&self, path: &str) -> Result<Answer, CliError> {
        self.call(Method::POST, path, None).await
    }

    /// A command with a JSON body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Answer, CliError> {
        let body = serde_json::to_vec(body).map_err(|e| CliError::Usage(e.to_string()))?;
        self.call(method, path, Some(Bytes::from(body))).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                CliError::Usage("the token contains characters a header cannot carry".into())
            })?;
            req = req.header(header::AUTHORIZATION, v);
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(b)
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| CliError::Usage(e.to_string()))?;
        let unreachable = |cause: String| CliError::Unreachable {
            url: self.base.clone(),
            cause,
        };
        let resp = match tokio::time::timeout(TIMEOUT, self.client.request(req)).await {
            Err(_) => {
                return Err(CliError::Timeout {
                    url: self.base.clone(),
                })
            }
            Ok(Err(e)) => return Err(unreachable(root_cause(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let body = match tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await {
            Err(_) => {
                return Err(CliError::Timeout {
                    url: self.base.clone(),
                })
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(b)) => b.to_bytes(),
        };
        if status.is_success() {
            return Ok(Answer { body });
        }
        // The server explains itself in {"error": "..."}; fall back to the raw body.
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
        Err(match status {
            StatusCode::UNAUTHORIZED => CliError::Unauthorized,
            // The one 423 that is not FREEZE_LOCK: the overnight freeze.
            StatusCode::LOCKED if message.starts_with(OVERNIGHT_FREEZE) => {
                CliError::OvernightFreeze(message)
            }
            StatusCode::LOCKED => CliError::Frozen(message),
            StatusCode::CONFLICT => CliError::Conflict(message),
            StatusCode::BAD_REQUEST => CliError::BadRequest(message),
            StatusCode::NOT_FOUND => CliError::NotFound(message),
            s => CliError::Server {
                status: s.as_u16(),
                message,
            },
        })
    }
}

/// The innermost error message: "Connection refused (os error 111)" rather than "client error (Connect)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
