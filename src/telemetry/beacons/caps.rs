//! The per-window caps on beacon events: each client address and each sticky
//! key counts for at most so many events per window; a batch that would
//! cross a cap is refused whole (`rate_limited`).
//!
//! **Window**: fixed epochs of `rollout.window` from the process start, so a
//! cap resets once per gate window. The controller's window slides over the
//! same length, so any window it judges overlaps at most two epochs: one key
//! or address counts for at most twice its cap in any judged window, and
//! for exactly its cap in an epoch.
//!
//! **Accounting**: count-min style. Keys and addresses each have two rows of
//! atomic slots; an item's slot in each row comes from a hash keyed with a
//! random per-process seed (a client cannot aim at a slot it does not know).
//! A slot is one `AtomicU64` holding `epoch << 32 | count`, so a slot from an
//! older epoch reads as 0 and is restarted by the first write in the new one:
//! no reset sweep, no lock, no allocation, a fixed 768 KiB whatever the
//! traffic. An item's count is the minimum over its two slots, which is at
//! least its true count (other items only add to a slot): the sketch can
//! only overestimate, so it only ever limits *more* than the cap says, never
//! less: an attacker never gets past a cap through a collision, and a real
//! user is held back only when both of its slots are shared with heavy
//! senders. The check and the charge are separate atomic steps, so batches
//! racing on one slot may overshoot a cap by at most one batch per worker
//! thread.
//!
//! **Addresses**: an IPv6 client is counted by its /64 (one subscriber's
//! allocation: a host that picks any address of its /64 is still one
//! client); an IPv4 one by its address, and `::ffff:a.b.c.d` as `a.b.c.d`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Slots per row for sticky keys (users are many).
const KEY_SLOTS: usize = 1 << 15;
/// Slots per row for client addresses.
const CLIENT_SLOTS: usize = 1 << 14;
const ROWS: usize = 2;

/// The caps in force (from `[beacons]` and `rollout.window`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapLimits {
    pub per_client: u32,
    pub per_key: u32,
    /// Length of one epoch, in ms (at least 1).
    pub window_ms: u64,
}

/// Who sent a batch, for the caps and the user counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The client address (the last untrusted hop).
    pub client: IpAddr,
    /// The 64-bit hash of the sticky key.
    pub user: u64,
    /// `Sec-GPC` / `DNT`: counted, but no user bit is set.
    pub opted_out: bool,
}

pub(crate) struct Caps {
    origin: Instant,
    seeds: [u64; ROWS],
    keys: Box<[AtomicU64]>,
    clients: Box<[AtomicU64]>,
}

impl Caps {
    pub(crate) fn new() -> Self {
        let slots = |n: usize| (0..n * ROWS).map(|_| AtomicU64::new(0)).collect();
        Self {
            origin: Instant::now(),
            seeds: [rand::random(), rand::random()],
            keys: slots(KEY_SLOTS),
            clients: slots(CLIENT_SLOTS),
        }
    }

    fn epoch(&self, limits: &CapLimits) -> u32 {
        (self.origin.elapsed().as_millis() as u64 / limits.window_ms.max(1)) as u32
    }

    /// Charges `n` events to the sender's key and address if both stay
    /// within their caps; `false` (nothing charged) when either would not.
    #[inline]
    pub(crate) fn admit(&self, limits: &CapLimits, from: &Sender, n: u32) -> bool {
        let epoch = self.epoch(limits);
        let client = client_bytes(from.client);
        let key_slots: [&AtomicU64; ROWS] = std::array::from_fn(|r| {
            let h = mix(from.user ^ self.seeds[r]);
            &self.keys[r * KEY_SLOTS + (h as usize & (KEY_SLOTS - 1))]
        });
        let client_slots: [&AtomicU64; ROWS] = std::array::from_fn(|r| {
            let h = xxh3_64_with_seed(&client, self.seeds[r]);
            &self.clients[r * CLIENT_SLOTS + (h as usize & (CLIENT_SLOTS - 1))]
        });
        let fits = |slots: &[&AtomicU64; ROWS], cap: u32| {
            let count = slots.iter().map(|s| count_in(s.load(Relaxed), epoch)).min();
            count.unwrap_or(0).saturating_add(n) <= cap
        };
        if !fits(&key_slots, limits.per_key) || !fits(&client_slots, limits.per_client) {
            return false;
        }
        for s in key_slots.into_iter().chain(client_slots) {
            charge(s, epoch, n);
        }
        true
    }
}

/// The count a slot holds for `epoch` (0 if it was last written earlier).
#[inline]
fn count_in(v: u64, epoch: u32) -> u32 {
    if (v >> 32) as u32 == epoch {
        v as u32
    } else {
        0
    }
}

/// Adds `n` to a slot in `epoch`, restarting it if it holds an older epoch.
#[inline]
fn charge(slot: &AtomicU64, epoch: u32, n: u32) {
    let _ = slot.fetch_update(Relaxed, Relaxed, |v| {
        let count = count_in(v, epoch).saturating_add(n);
        Some((epoch as u64) << 32 | count as u64)
    });
}

/// The bytes a client is counted by: a tag byte (4 or 6), then an IPv4
/// address or the first 8 bytes (the /64) of an IPv6 one.
#[inline]
fn client_bytes(ip: IpAddr) -> [u8; 9] {
    let mut b = [0u8; 9];
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            b[0] = 6;
            b[1..9].copy_from_slice(&v6.octets()[..8]);
        }
    }
    b
}

/// splitmix64's finaliser: spreads a seeded key hash over the slots.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CapLimits = CapLimits {
        per_client: 300,
        per_key: 100,
        window_ms: 3_600_000,
    };

    fn from(client: &str, user: u64) -> Sender {
        Sender {
            client: client.parse().unwrap(),
            user,
            opted_out: false,
        }
    }

    /// How many batches of `n` events are admitted before the first refusal.
    fn admitted(caps: &Caps, s: &Sender, n: u32) -> u32 {
        (0..1_000).take_while(|_| caps.admit(&LIMITS, s, n)).count() as u32
    }

    #[test]
    fn a_key_counts_for_its_cap_then_is_refused() {
        let caps = Caps::new();
        let s = from("198.51.100.7", 42);
        assert_eq!(admitted(&caps, &s, 10), 10);
        // The key is exactly at its cap.
        assert!(!caps.admit(&LIMITS, &s, 1));
        // Another key from the same address goes on until the address cap.
        let t = from("198.51.100.7", 43);
        assert_eq!(admitted(&caps, &t, 10), 10);
        let u = from("198.51.100.7", 44);
        assert_eq!(admitted(&caps, &u, 10), 10);
        assert!(!caps.admit(&LIMITS, &from("198.51.100.7", 45), 1));
        // A batch bigger than what is left is refused whole, a smaller one fits.
        let c = Caps::new();
        let k = from("203.0.113.1", 1);
        assert!(c.admit(&LIMITS, &k, 95));
        assert!(!c.admit(&LIMITS, &k, 10));
        assert!(c.admit(&LIMITS, &k, 5));
    }

    #[test]
    fn many_keys_from_one_address_hit_the_address_cap() {
        let caps = Caps::new();
        let n = (0..10_000u64)
            .take_while(|&k| caps.admit(&LIMITS, &from("192.0.2.9", k), 1))
            .count();
        assert_eq!(n, 300);
        // Other clients are not held back by it.
        assert!(caps.admit(&LIMITS, &from("192.0.2.10", 1_000_000), 100));
        // An IPv6 client is one client for its whole /64.
        let v6 = (0..10_000u64)
            .take_while(|&k| {
                let addr = format!("2001:db8:1:2::{:x}", k % 60_000 + 1);
                caps.admit(&LIMITS, &from(&addr, k), 1)
            })
            .count();
        assert_eq!(v6, 300);
        assert!(caps.admit(&LIMITS, &from("2001:db8:1:3::1", 2_000_000), 1));
        // A v4 client seen on a dual-stack socket is the same client.
        assert!(!caps.admit(&LIMITS, &from("::ffff:192.0.2.9", 99_999), 1));
    }

    #[test]
    fn a_new_epoch_restarts_every_count() {
        let caps = Caps::new();
        let short = CapLimits {
            window_ms: 1,
            ..LIMITS
        };
        let s = from("198.51.100.7", 1);
        assert!(caps.admit(&short, &s, 100));
        // Within one epoch (1 ms), the key is full; after it, it is not.
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(caps.admit(&short, &s, 100));
        // A slot of an older epoch reads as empty and restarts at the charge.
        let slot = AtomicU64::new(7u64 << 32 | 55);
        assert_eq!(count_in(slot.load(Relaxed), 8), 0);
        charge(&slot, 8, 3);
        assert_eq!(slot.load(Relaxed), 8u64 << 32 | 3);
        charge(&slot, 8, 3);
        assert_eq!(count_in(slot.load(Relaxed), 8), 6);
    }

    #[test]
    fn real_users_among_heavy_senders_are_rarely_held_back() {
        // 20,000 keys, each sending 20 events, from 2,000 addresses: the
        // sketch overestimates, but a key is refused only when both of its
        // slots are crowded past the cap.
        let caps = Caps::new();
        let limits = CapLimits {
            per_client: 10_000,
            ..LIMITS
        };
        let mut refused = 0;
        for k in 0..20_000u64 {
            let s = Sender {
                client: std::net::Ipv4Addr::from(0x0a00_0000 + (k % 2_000) as u32).into(),
                user: k.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                opted_out: false,
            };
            refused += (!caps.admit(&limits, &s, 20)) as u32;
        }
        assert_eq!(refused, 0);
    }
}
