//! Beacons posted from another loopback address: the attacker of the beacon
//! abuse tests binds 127.0.0.2 before it connects, so the per-address caps
//! can tell it from the real users on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::DEADLINE;

use super::slow_body::connect_from;
pub use super::slow_body::ATTACKER;

/// One kept-alive HTTP/1.1 connection to the proxy from `local`.
pub struct From {
    local: IpAddr,
    proxy: SocketAddr,
    conn: SendRequest<Full<Bytes>>,
}

impl From {
    pub async fn connect(local: IpAddr, proxy: SocketAddr) -> From {
        let conn = open(local, proxy).await;
        From { local, proxy, conn }
    }

    /// Posts one beacon batch; returns the status (reconnects once if the
    /// proxy closed the connection).
    pub async fn beacon(&mut self, headers: &[(&str, &str)], body: &str) -> StatusCode {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request(Method::POST, "/_rollgate/beacon", &all, body)
            .await
            .0
    }

    /// One request on the kept-alive connection (reconnects once if the
    /// proxy closed it): the status and the response headers.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap) {
        for _ in 0..2 {
            if self.conn.ready().await.is_err() {
                self.conn = open(self.local, self.proxy).await;
            }
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", self.proxy.to_string());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
            let sent = tokio::time::timeout(DEADLINE, self.conn.send_request(req)).await;
            if let Ok(Ok(resp)) = sent {
                let (parts, body) = resp.into_parts();
                let _ = body.collect().await;
                return (parts.status, parts.headers);
            }
            self.conn = open(self.local, self.proxy).await;
        }
        panic!("no answer to {method} {path} from {}", self.local);
    }
}

async fn open(local: IpAddr, proxy: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = connect_from(local, proxy).await;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    send
}
