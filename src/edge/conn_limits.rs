//! The connection caps every proxy worker shares: `server.max_connections`
//! for the whole process and `server.max_connections_per_client` per peer
//! address. Built once at start and kept across reloads, so N workers do
//! not mean N times the cap and a reload does not reset the counts of
//! connections that are still open.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::forwarded::TrustedProxies;

/// Slots of the per-client table. Each is one counter (4 bytes): 64 Ki of
/// them is 256 KiB for the process, whatever the number of clients.
const CLIENT_SLOTS: usize = 1 << 16;

/// The shared caps.
pub struct ConnLimits {
    /// One permit per open connection, across every worker.
    slots: Arc<Semaphore>,
    per_client: Option<PerClient>,
}

/// Open connections per client address, counted in a fixed table of
/// atomics indexed by a keyed hash of the address: lock-free, no allocation
/// at accept, and bounded memory however many addresses an attacker uses.
/// Two addresses in one slot share its count, so a client may be refused a
/// little early, never admitted past the limit; the key is random per
/// process, so nobody can aim their addresses at another client's slot.
struct PerClient {
    limit: u32,
    key: u64,
    counts: Box<[AtomicU32]>,
    /// Load balancers in front of rollgate: every connection from one of
    /// them carries many clients, so the per-client cap does not apply to
    /// them (their own clients are theirs to limit).
    exempt: TrustedProxies,
}

/// Holds one connection's places until it closes.
pub struct ConnPermit {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientPermit>,
}

struct ClientPermit {
    limits: Arc<ConnLimits>,
    slot: usize,
}

impl ConnLimits {
    /// `per_client` = 0: no per-client cap.
    pub(crate) fn new(max: usize, per_client: usize, exempt: TrustedProxies) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            per_client: (per_client > 0).then(|| PerClient {
                limit: u32::try_from(per_client).unwrap_or(u32::MAX),
                key: rand::random(),
                counts: (0..CLIENT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
                exempt,
            }),
        })
    }

    /// Waits for a place under the process-wide cap (accepting pauses at
    /// the cap; the kernel backlog holds new connections meanwhile).
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed")
    }

    /// The connection's places, or `None` when `ip` already has its
    /// per-client number of connections open.
    pub fn admit(self: &Arc<Self>, slot: OwnedSemaphorePermit, ip: IpAddr) -> Option<ConnPermit> {
        let client = match &self.per_client {
            Some(pc) if !pc.exempt.contains(ip) => {
                let i = pc.slot_of(ip);
                if pc.counts[i].fetch_add(1, Ordering::AcqRel) >= pc.limit {
                    pc.counts[i].fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                Some(ClientPermit {
                    limits: Arc::clone(self),
                    slot: i,
                })
            }
            _ => None,
        };
        Some(ConnPermit {
            _slot: slot,
            _client: client,
        })
    }
}

impl PerClient {
    fn slot_of(&self, ip: IpAddr) -> usize {
        let h = match ip.to_canonical() {
            IpAddr::V4(v4) => xxh3_64_with_seed(&v4.octets(), self.key),
            // An IPv6 client usually holds a whole /64: counting the full
            // address would let it open its limit once per address.
            IpAddr::V6(v6) => xxh3_64_with_seed(&v6.octets()[..8], self.key),
        };
        (h as usize) & (CLIENT_SLOTS - 1)
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        if let Some(pc) = &self.limits.per_client {
            pc.counts[self.slot].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl ConnPermit {
    /// Whether a per-client place is held (for tests).
    #[cfg(test)]
    fn counted(&self) -> bool {
        self._client.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_client_places_are_held_until_the_connection_closes() {
        let trusted = TrustedProxies::new(&["10.0.0.1/32".parse().unwrap()]);
        let limits = ConnLimits::new(100, 2, trusted);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        let first = limits.admit(limits.slot().await, a).unwrap();
        let second = limits.admit(limits.slot().await, a).unwrap();
        assert!(first.counted() && second.counted());
        assert!(limits.admit(limits.slot().await, a).is_none());
        // The refused one gave its process-wide place back.
        assert_eq!(limits.slots.available_permits(), 98);
        drop(first);
        assert!(limits.admit(limits.slot().await, a).is_some());
        let lbs: Vec<_> = (0..5)
            .map(|_| limits.admit(limits.slots.clone().try_acquire_owned().unwrap(), lb))
            .collect();
        assert!(lbs.iter().all(|p| p.as_ref().is_some_and(|p| !p.counted())));
    }

    #[tokio::test]
    async fn no_per_client_cap_counts_nothing() {
        let limits = ConnLimits::new(1, 0, TrustedProxies::default());
        let p = limits.admit(limits.slot().await, "192.0.2.1".parse().unwrap());
        assert!(p.is_some_and(|p| !p.counted()));
    }
}
