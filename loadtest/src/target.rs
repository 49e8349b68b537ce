//! The target URL, restricted to loopback.
//!
//! The generator refuses anything that does not resolve to 127.0.0.0/8 or
//! `::1`: load runs on this project only ever hit servers on the same machine.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context};
use http::uri::{Authority, Uri};

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// Resolved loopback address.
    pub addr: SocketAddr,
    /// `host:port` as given, for the `Host` header and h2 `:authority`.
    pub authority: Authority,
    /// The URL as given (for reports).
    pub url: String,
}

impl Target {
    /// Parses `http://host:port[/]`; the host must resolve to loopback only.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("bad target URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(s) => bail!("target {url:?}: scheme {s:?} is not supported (http only)"),
            None => bail!("target {url:?}: needs a scheme, e.g. http://127.0.0.1:8080"),
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            bail!("target {url:?}: give no path (the journeys choose the paths; see --path)");
        }
        let authority = uri
            .authority()
            .cloned()
            .with_context(|| format!("target {url:?}: no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = (authority.host().trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .with_context(|| format!("target {url:?}: cannot resolve {}", authority.host()))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            bail!("target {url:?}: {} resolves to nothing", authority.host());
        };
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "target {url:?} resolves to {}, which is not a loopback address: \
                 rollgate-load only sends to 127.0.0.0/8 or ::1",
                bad.ip()
            );
        }
        Ok(Target {
            addr,
            authority,
            url: url.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(Target::parse("http://127.0.0.1:8080").is_ok());
        assert!(Target::parse("http://127.0.0.5:8080/").is_ok());
        assert!(Target::parse("http://[::1]:8080").is_ok());
        assert!(Target::parse("http://10.0.0.1:8080").is_err());
        assert!(Target::parse("http://192.168.1.1").is_err());
        assert!(Target::parse("https://127.0.0.1:8443").is_err());
        assert!(Target::parse("127.0.0.1:8080").is_err());
        assert!(Target::parse("http://127.0.0.1:8080/search").is_err());
    }
}
