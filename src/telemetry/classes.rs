//! Labels of what a request came to: its status class, or why the upstream failed.

/// Response status class, as a label and an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Info = 0,
    Success = 1,
    Redirect = 2,
    ClientError = 3,
    ServerError = 4,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Info,
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    pub fn of(status: u16) -> Self {
        match status {
            0..=199 => StatusClass::Info,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn label(self) -> &'static str {
        ["1xx", "2xx", "3xx", "4xx", "5xx"][self as usize]
    }
}

/// Why the upstream did not give a usable answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Refused or failed TCP connect.
    Connect = 0,
    /// No response headers within the response timeout.
    Timeout = 1,
    /// Connection reset or closed before a complete response.
    Reset = 2,
    /// The upstream answered bytes that are not HTTP.
    Protocol = 3,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 4] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
    ];

    pub fn label(self) -> &'static str {
        ["connect", "timeout", "reset", "protocol"][self as usize]
    }
}
