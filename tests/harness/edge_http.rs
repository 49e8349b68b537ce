//! Raw pieces for the HTTP conformance and connection tests: exchanges from
//! 127.0.0.2 (the attacker's address, so a per-client limit on it leaves the
//! harness's own 127.0.0.1 requests alone), upstreams that answer with fixed
//! bytes (keeping what they were sent) or echo a WebSocket, and a keep-alive
//! request on an open connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client::read_to_close;
use super::upstream::read_head;
use super::DEADLINE;

/// A TCP connection to `addr` from `127.0.0.2` (the slow-body harness's).
pub use super::slow_body::connect_as_attacker as attacker;

/// Writes `request` from 127.0.0.2 and reads until the server closes.
pub async fn attacker_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = attacker(addr).await;
    let _ = s.write_all(request).await;
    read_to_close(&mut s).await
}

/// An upstream that reads each request up to its end (a head, plus a
/// chunked body when it has one) and writes `answer`, keeping every byte it
/// received.
pub struct CannedUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl CannedUpstream {
    pub async fn start(answer: &'static [u8]) -> CannedUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let keep = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        if complete(&req) {
                            keep.lock().unwrap().extend_from_slice(&req);
                            req.clear();
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        CannedUpstream { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request byte received so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// Whether `req` holds one whole request: a head without a body, or a
/// chunked body through its last chunk and trailer section.
fn complete(req: &[u8]) -> bool {
    let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
    if !head.contains("transfer-encoding: chunked") {
        return true;
    }
    let body = &req[end + 4..];
    body.starts_with(b"0\r\n") && body.ends_with(b"\r\n\r\n")
        || body.windows(7).any(|w| w == b"\r\n0\r\n\r\n")
        || body
            .windows(5)
            .position(|w| w == b"\r\n0\r\n")
            .is_some_and(|i| body[i..].ends_with(b"\r\n\r\n"))
}

/// Sends a keep-alive request on `s` and reads its complete (small) answer.
pub async fn keepalive_request(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nx-user-id: u\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("an answer within the deadline")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return text.into_owned();
            }
        }
    }
}

/// A WebSocket upstream in its simplest form: reads one request head,
/// answers `101 Switching Protocols`, then echoes every byte. Returns its
/// address and the heads it received.
pub async fn ws_echo_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let keep = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                keep.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                    .await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, heads)
}
