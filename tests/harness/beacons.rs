//! Beacons posted from another loopback address: the attacker of the beacon
//! abuse tests binds 127.0.0.2 before it connects, so the per-address caps
//! can tell it from the real users on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

use super::DEADLINE;

/// The attacker's own address.
pub const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

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
        for _ in 0..2 {
            if self.conn.ready().await.is_err() {
                self.conn = open(self.local, self.proxy).await;
            }
            let mut req = Request::post("/_rollgate/beacon")
                .header("host", self.proxy.to_string())
                .header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
            let sent = tokio::time::timeout(DEADLINE, self.conn.send_request(req)).await;
            if let Ok(Ok(resp)) = sent {
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                return status;
            }
            self.conn = open(self.local, self.proxy).await;
        }
        panic!("no answer to a beacon from {}", self.local);
    }
}

async fn open(local: IpAddr, proxy: SocketAddr) -> SendRequest<Full<Bytes>> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(local, 0))
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    let stream = socket.connect(proxy).await.expect("connect to the proxy");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    send
}
