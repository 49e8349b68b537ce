//! One rollgate as a test talks to it, wherever it runs (in this process or
//! as a child): its two addresses, a keep-alive client and the admin token.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use super::client::{HttpClient, Resp};
use super::{eventually, TOKEN};

/// The proxy and admin ports of a running rollgate.
pub struct Api {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub client: HttpClient,
    /// What the admin API accepts: [`TOKEN`], unless `ROLLGATE_ADMIN_TOKEN`
    /// overrides the config (as in production) for an in-process rollgate.
    pub token: String,
}

impl Api {
    pub fn new(proxy_addr: SocketAddr, admin_addr: SocketAddr, token: String) -> Api {
        Api {
            proxy_addr,
            admin_addr,
            client: HttpClient::http1(),
            token,
        }
    }

    pub fn proxy(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET path` on the proxy.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.client.get(&self.proxy(path), headers).await
    }

    /// A beacon batch posted through the proxy port.
    pub async fn beacon(&self, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        self.client
            .post(&self.proxy("/_rollgate/beacon"), headers, body)
            .await
    }

    /// An admin call with the token and a JSON content type.
    pub async fn call(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Resp {
        let auth = self.bearer();
        self.client
            .request(
                method,
                &self.admin(path),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
    }

    /// [`Api::call`] with a JSON body (`Value::Null`: an empty body).
    pub async fn call_json(&self, method: Method, path: &str, body: Value) -> Resp {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.call(method, path, body).await
    }

    /// An admin call with the JSON `body` that must be refused with a 400
    /// whose error names `field`.
    pub async fn assert_bad_field(&self, method: Method, path: &str, body: &Value, field: &str) {
        let r = self.call(method.clone(), path, body.to_string()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {}",
            r.text()
        );
        let err = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            err.contains(field),
            "{method} {path} {body}: error does not name `{field}`: {err}"
        );
    }

    /// `GET /api/v1/status`; panics unless 200.
    pub async fn status(&self) -> Value {
        let r = self.client.get(&self.admin("/api/v1/status"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "status: {}", r.text());
        r.json()
    }

    /// `GET /metrics`; panics unless 200.
    pub async fn metrics(&self) -> String {
        let r = self.client.get(&self.admin("/metrics"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "/metrics: {}", r.text());
        r.text()
    }

    /// Polls the status until `pred` holds; fails with the last status after
    /// the deadline.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let pred = &pred;
        eventually(what, Duration::from_millis(50), move || async move {
            let s = self.status().await;
            if pred(&s) {
                Ok(s)
            } else {
                Err(format!(
                    "last status: {}",
                    serde_json::to_string_pretty(&s).unwrap()
                ))
            }
        })
        .await
    }

    /// `PUT /api/v1/weights {"v2": pct}`; panics unless 200 with that weight.
    pub async fn set_weight(&self, pct: f64) {
        let r = self
            .call(
                Method::PUT,
                "/api/v1/weights",
                serde_json::json!({ "v2": pct }).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "PUT weights {pct}: {}", r.text());
        assert_eq!(
            r.json()["weights"]["v2"].as_f64(),
            Some(pct),
            "{}",
            r.text()
        );
    }

    /// `GET path` on the proxy as user `key` (`x-user-id`); returns the
    /// variant from `x-rollgate-variant`, checked against the upstream that
    /// answered (`x-upstream` of an echo upstream, `x-app-version` of a demo app).
    pub async fn variant_of(&self, key: &str, path: &str) -> String {
        let r = self
            .client
            .get(&self.proxy(path), &[("x-user-id", key)])
            .await;
        assert_eq!(r.status, StatusCode::OK, "user {key} {path}: {}", r.text());
        let v = r.variant().to_string();
        let upstream = r.header("x-upstream").or(r.header("x-app-version"));
        assert_eq!(
            upstream,
            Some(v.as_str()),
            "variant header disagrees with the upstream"
        );
        v
    }

    /// A normal request through the proxy on a fresh connection, and one on
    /// the admin port: proof the process still serves.
    pub async fn assert_serving(&self, what: &str) {
        let fresh = HttpClient::http1();
        let r = fresh
            .get(&self.proxy("/still-serving"), &[("x-user-id", "probe")])
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "after {what}: proxy answered {}",
            r.text()
        );
        let r = fresh.get(&self.admin("/healthz"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "after {what}: admin is down");
    }
}

/// `state` of a status.
pub fn state_of(s: &Value) -> &str {
    s["state"].as_str().unwrap_or("?")
}

/// The reason of the status's last decision.
pub fn reason_of(s: &Value) -> &str {
    s["last_decision"]["reason"].as_str().unwrap_or("")
}

/// The token of an in-process rollgate: `ROLLGATE_ADMIN_TOKEN` wins over the
/// config, as in production.
pub fn effective_token() -> String {
    std::env::var("ROLLGATE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| TOKEN.to_string())
}
