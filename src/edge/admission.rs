//! Requests rollgate answers itself before anything else looks at them: a
//! request whose target host is missing or ambiguous, and `CONNECT`.
//!
//! The `Host` rules matter more at a proxy than at an origin: the upstream
//! (and every cache between) picks the virtual host from the `Host` rollgate
//! sends, so a request that says two different things about its host, or
//! nothing, must not be forwarded for the upstream to guess. hyper parses
//! the head but leaves these checks to the application.
//!
//! The check reads only what hyper already parsed (no allocation): one
//! look-up for `Host` and a scan of its bytes.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::body::ProxyBody;

/// Why a request was refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// An HTTP/1.1 request without `Host`.
    NoHost,
    /// More than one `Host` field.
    DuplicateHost,
    /// A `Host` value that is not `host[:port]`.
    BadHost,
    /// `CONNECT`: rollgate is not a forward proxy.
    Connect,
}

impl Refused {
    /// Exhaustive on purpose: each refusal chooses its answer.
    fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Refused::NoHost => (StatusCode::BAD_REQUEST, "rollgate: Host is required\n"),
            Refused::DuplicateHost => (StatusCode::BAD_REQUEST, "rollgate: more than one Host\n"),
            Refused::BadHost => (StatusCode::BAD_REQUEST, "rollgate: invalid Host\n"),
            Refused::Connect => (
                StatusCode::METHOD_NOT_ALLOWED,
                "rollgate: CONNECT is not served\n",
            ),
        }
    }

    pub(crate) fn response(self) -> Response<ProxyBody> {
        let (status, msg) = self.answer();
        let mut r = Response::new(ProxyBody::full(msg));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self == Refused::Connect {
            h.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        r
    }
}

/// `Err` for a request rollgate must answer itself (see [`Refused`]).
///
/// On HTTP/2 the `:authority` pseudo-header is the target and `Host` is
/// only checked for duplicates (the upstream gets `:authority`); on
/// HTTP/1.1 `Host` is required even with an absolute-form target, whose
/// authority then wins.
#[inline]
pub(crate) fn check<B>(req: &Request<B>) -> Result<(), Refused> {
    if req.method() == Method::CONNECT {
        return Err(Refused::Connect);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(Refused::DuplicateHost),
        (None, None) if req.version() == Version::HTTP_11 => Err(Refused::NoHost),
        (None, None) => Ok(()),
        (Some(v), None) if valid_host(v.as_bytes()) => Ok(()),
        (Some(_), None) => Err(Refused::BadHost),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2 / RFC 3986): a registered name of
/// unreserved, percent and sub-delims characters, or a bracketed IPv6
/// literal, then an optional all-digit port. No userinfo, no path, no
/// whitespace; an empty value is refused too, since an upstream given an
/// empty `Host` would fall back to its default site.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.first() {
        None => return false,
        Some(b'[') => match v.iter().position(|&c| c == b']') {
            Some(end) => {
                let inner = &v[1..end];
                if inner.is_empty()
                    || !inner
                        .iter()
                        .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
                {
                    return false;
                }
                match &v[end + 1..] {
                    [] => return true,
                    [b':', port @ ..] => (&v[..=end], port),
                    _ => return false,
                }
            }
            None => return false,
        },
        Some(_) => match v.iter().rposition(|&c| c == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &b""[..]),
        },
    };
    let reg_name = |c: &u8| c.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(c);
    !host.is_empty()
        && (host[0] == b'[' || host.iter().all(reg_name))
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, method: Method, hosts: &[&'static str]) -> Request<()> {
        let mut r = Request::builder().method(method).version(version).uri("/");
        for h in hosts {
            r = r.header(header::HOST, *h);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn host_rules() {
        use Version as V;
        let get = Method::GET;
        assert_eq!(
            check(&req(V::HTTP_11, get.clone(), &["example.com"])),
            Ok(())
        );
        assert_eq!(
            check(&req(V::HTTP_11, get.clone(), &["example.com:8080"])),
            Ok(())
        );
        assert_eq!(
            check(&req(V::HTTP_11, get.clone(), &["[::1]:8080"])),
            Ok(())
        );
        assert_eq!(check(&req(V::HTTP_11, get.clone(), &["[::1]"])), Ok(()));
        assert_eq!(check(&req(V::HTTP_11, get.clone(), &["127.0.0.1"])), Ok(()));
        assert_eq!(
            check(&req(V::HTTP_11, get.clone(), &[])),
            Err(Refused::NoHost)
        );
        assert_eq!(check(&req(V::HTTP_10, get.clone(), &[])), Ok(()));
        assert_eq!(check(&req(V::HTTP_2, get.clone(), &[])), Ok(()));
        assert_eq!(
            check(&req(V::HTTP_11, get.clone(), &["a", "a"])),
            Err(Refused::DuplicateHost)
        );
        assert_eq!(
            check(&req(V::HTTP_2, get.clone(), &["a", "b"])),
            Err(Refused::DuplicateHost)
        );
        for bad in [
            "",
            "a b",
            "user@host",
            "host/path",
            "host:port",
            "host:123456",
            "[::1",
            "[zz]",
            "[::1]x",
            ":80",
            "a\"b",
        ] {
            assert_eq!(
                check(&req(V::HTTP_11, get.clone(), &[bad])),
                Err(Refused::BadHost),
                "{bad:?}"
            );
        }
        assert_eq!(
            check(&req(V::HTTP_11, Method::CONNECT, &["a:443"])),
            Err(Refused::Connect)
        );
    }
}
