//! Clients that send their request bodies slowly, partly or not at all, from
//! the attacker's address (`127.0.0.2`, so per-address limits can tell them
//! from the real users on `127.0.0.1`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::DEADLINE;

/// The attacker's loopback address.
pub const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A TCP connection to `addr` from [`ATTACKER`].
pub async fn connect_as_attacker(addr: SocketAddr) -> TcpStream {
    connect_from(ATTACKER, addr).await
}

/// A TCP connection to `addr` from the loopback address `local` (bound
/// before connecting, so per-address limits see it as its own client).
pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(local, 0))
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    socket.connect(addr).await.expect("connect")
}

/// Writes `head` at once, then `body` in `pieces` parts spread over `over`.
pub async fn trickle(s: &mut TcpStream, head: &str, body: &[u8], pieces: usize, over: Duration) {
    s.write_all(head.as_bytes()).await.expect("write head");
    let step = body.len().div_ceil(pieces.max(1)).max(1);
    let pause = over / body.chunks(step).count().max(1) as u32;
    for part in body.chunks(step) {
        tokio::time::sleep(pause).await;
        s.write_all(part).await.expect("write body part");
    }
}

/// A `POST` head declaring a body of `len` bytes, with `extra` header lines
/// (each ending in `\r\n`).
pub fn post_head(path: &str, user: &str, len: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: rollgate.test\r\nx-user-id: {user}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n{extra}\r\n"
    )
}

/// Everything the server sends until it closes the connection (a reset
/// counts as closed too); fails after [`DEADLINE`], the server having held
/// the connection open.
pub async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}
