//! V2's reserved capacity: how many requests V2 may have in flight.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// V2's in-flight admission counter (`upstreams.reserved_capacity`): one
/// for the process, shared by every worker and kept across reloads (which
/// only change its limit), so N workers do not admit N times the limit.
pub struct Capacity {
    /// 0 = no cap.
    limit: AtomicU32,
    inflight: AtomicU32,
}

/// The request was over V2's reserved capacity.
pub struct Shed;

/// Holds one unit of V2's capacity until the response body is done.
pub struct Permit(Arc<Capacity>);

impl Capacity {
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicU32::new(limit),
            inflight: AtomicU32::new(0),
        })
    }

    /// A reload's new limit; requests in flight keep their permits.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// `Ok(None)` when there is no cap; a permit when under it.
    #[inline]
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Option<Permit>, Shed> {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return Ok(None);
        }
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= limit {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed);
        }
        Ok(Some(Permit(Arc::clone(self))))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
