//! Log lines a client can cause at will (a failed accept under a flood, a
//! refused connection, a bad handshake) are rate-limited per call site: at
//! most one line per [`INTERVAL`], carrying how many were left out since
//! the last one (`suppressed`). Otherwise anyone could fill the disk, or
//! drown the one line an operator needs, by repeating a cheap mistake.
//!
//! Each site is a `static` pair of atomics: no lock, no allocation, and a
//! suppressed line costs one clock read and one atomic add.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The least time between two lines of one site.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One call site's budget.
pub struct LogLimit {
    /// Milliseconds after the process's first rate-limited line when this
    /// site may log again.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl LogLimit {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when this site may log now.
    pub fn allow(&self) -> Option<u64> {
        let now = now_ms();
        let next = self.next_ms.load(Relaxed);
        if now < next
            || self
                .next_ms
                .compare_exchange(next, now + INTERVAL.as_millis() as u64, Relaxed, Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

/// `rate_limited!(warn, "message", field = %value, ...)`: a `tracing` event
/// at that level, at most once per [`INTERVAL`] for this call site, with a
/// `suppressed` field counting the lines left out before it.
macro_rules! rate_limited {
    ($level:ident, $msg:literal $(, $($field:tt)+)?) => {{
        static SITE: $crate::edge::log_limit::LogLimit = $crate::edge::log_limit::LogLimit::new();
        if let Some(suppressed) = SITE.allow() {
            tracing::$level!($($($field)+ ,)? suppressed, $msg);
        }
    }};
}
pub(crate) use rate_limited;

/// The same budget for the warnings of the libraries under the edge (h2,
/// hyper, rustls), which a client triggers as easily (a PING ack nobody
/// asked for, a burst of resets) but whose call sites are not ours: a
/// `tracing` layer that lets one WARN-or-worse event per call site through
/// per [`INTERVAL`] and drops the rest (their count cannot be added to a
/// line that is not ours; the rate-limited sites of rollgate carry it).
/// Call sites share [`LIBRARY_SITES`] slots by address.
pub struct LibraryWarnings;

const LIBRARY_SITES: usize = 64;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LibraryWarnings {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        static SITES: [LogLimit; LIBRARY_SITES] = [const { LogLimit::new() }; LIBRARY_SITES];
        let meta = event.metadata();
        let library = ["h2", "hyper", "rustls", "tokio_rustls"]
            .iter()
            .any(|t| meta.target().split("::").next() == Some(t));
        if !library || *meta.level() > tracing::Level::WARN {
            return true;
        }
        let site = meta as *const _ as usize;
        SITES[(site >> 4) % LIBRARY_SITES].allow().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let site = LogLimit::new();
        assert_eq!(site.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(site.allow(), None);
        }
        // The next window opens with the count of what was left out.
        site.next_ms.store(0, Relaxed);
        assert_eq!(site.allow(), Some(1000));
    }
}
