//! The per-window caps on beacon events: each client address and each sticky
//! key counts for at most so many events per window, and each client address
//! adds at most so many distinct users (sticky keys) per window; a batch that
//! would cross a cap is refused whole (`rate_limited`).
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
//!
//! **Users per address**: the beacon gates count users, and a fresh sticky
//! key is a fresh user, so the event cap alone lets one address invent as
//! many users as it has events; tens of fake users move a canary's gate. So
//! each address may also add at most `max_users_per_client` distinct keys
//! per epoch: a batch carrying one more key is refused. See [`UserQuota`]
//! for how, and its bound.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::MAX_BEACON_USERS_PER_CLIENT;

/// Slots per row for sticky keys (users are many).
const KEY_SLOTS: usize = 1 << 15;
/// Slots per row for client addresses.
const CLIENT_SLOTS: usize = 1 << 14;
const ROWS: usize = 2;
/// Buckets per row of the per-address user quota.
const USER_BUCKETS: usize = 1 << 14;
/// Fingerprint cells per bucket (the largest quota one address may have).
const USER_CELLS: usize = MAX_BEACON_USERS_PER_CLIENT as usize;

/// The caps in force (from `[beacons]` and `rollout.window`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapLimits {
    pub per_client: u32,
    pub per_key: u32,
    /// Distinct sticky keys one address may add per epoch; 0: no quota.
    pub users_per_client: u32,
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
    users: UserQuota,
}

impl Caps {
    pub(crate) fn new() -> Self {
        let slots = |n: usize| (0..n * ROWS).map(|_| AtomicU64::new(0)).collect();
        Self {
            origin: Instant::now(),
            seeds: [rand::random(), rand::random()],
            keys: slots(KEY_SLOTS),
            clients: slots(CLIENT_SLOTS),
            users: UserQuota::new(),
        }
    }

    fn epoch(&self, limits: &CapLimits) -> u32 {
        (self.origin.elapsed().as_millis() as u64 / limits.window_ms.max(1)) as u32
    }

    /// Charges `n` events to the sender's key and address if both stay
    /// within their caps and the key is one the address may add; `false`
    /// (no event charged) when either would not.
    ///
    /// Opted-out senders are not held to the user quota: they set no user
    /// bit, so they cannot move a user-share gate however many keys they
    /// use; the events they add to timing gates are bounded by the event
    /// caps, which hold for them as for everyone.
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
        if limits.users_per_client > 0
            && !from.opted_out
            && !self
                .users
                .admit(epoch, &client, from.user, limits.users_per_client)
        {
            return false;
        }
        for s in key_slots.into_iter().chain(client_slots) {
            charge(s, epoch, n);
        }
        true
    }
}

/// Which distinct sticky keys each client address added in the current
/// epoch, up to its quota.
///
/// An address hashes (seeded per process, so a client cannot aim) to one
/// bucket of [`USER_CELLS`] cells in each of two rows. A cell is one
/// `AtomicU64` holding `epoch (16 bits) | address tag (16 bits) | key
/// fingerprint (32 bits)`: the tag is 16 other bits of that row's address
/// hash, the fingerprint a nonzero 32-bit hash of the seeded key hash. A
/// cell of an older epoch, or with a zero fingerprint, is free: as with the
/// event slots, an epoch restarts without a sweep, so there is no reset
/// race. A key is admitted when one of the address's two buckets already
/// holds a current cell with its tag and fingerprint, or when the address
/// holds fewer current cells (over both buckets) than its quota and a free
/// cell of the emptier bucket is claimed for it by `compare_exchange`;
/// otherwise it is refused. A request reads two buckets (128 bytes each)
/// and writes at most one cell: no lock, no allocation, a fixed 4 MiB
/// whatever the traffic.
///
/// **Bound**: a new key passes only by claiming a cell under its address's
/// tags (at most the quota of them per epoch) or by matching one of those
/// at most `quota` fingerprints by chance, `quota / 2^32` per try: a spray
/// of a million random keys from one address gets about 0.001 extra users.
/// So one address adds at most `quota` users per epoch, `2 × quota` to a
/// judged window (which overlaps two epochs). That is why cells of exact
/// fingerprints and not a bitmap of hash bits or a HyperLogLog: a bitmap
/// admits a new key whose bit another key already set, so a spray passes at
/// the map's fill ratio without end, and a HyperLogLog estimates how many
/// keys there were but cannot say whether *this* key is one of them (and
/// is off by more than one at four keys).
///
/// **Sharing** only ever limits more. Two addresses with the same bucket
/// and tag in a row share their cells of that row in one quota (about 1 in
/// 2^29 per pair). Addresses in one bucket share its cells, and a new key
/// is refused when both of its address's buckets are full this epoch: two
/// choices keep that rare until the table is nearly full (measured: 100,000
/// addresses with 1 to 4 users each, 250,000 users, lose about two; 200,000
/// addresses with two users each lose none; refusals grow past about
/// 450,000 users per epoch). A botnet could fill buckets and so deny real
/// users' beacons (both variants alike, never a fake user), but not aim at
/// one address's buckets. Two requests of one address racing with
/// different new keys may each take a cell past the quota: at most one key
/// over per worker thread. Two racing with the same new key may both take a cell for it,
/// which counts it twice (limits more). The epoch tag is the low 16 bits of
/// the epoch: a cell left for exactly 65,536 epochs reads as current again,
/// which again only limits more, for one epoch.
struct UserQuota {
    seeds: [u64; ROWS],
    cells: Box<[AtomicU64]>,
}

/// A free cell to claim: the cell, what it holds, the owner word to write
/// in it, and how many cells of its bucket are free.
type Free<'a> = Option<(&'a AtomicU64, u64, u64, u32)>;

impl UserQuota {
    fn new() -> Self {
        Self {
            seeds: [rand::random(), rand::random()],
            cells: (0..ROWS * USER_BUCKETS * USER_CELLS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Whether `client` may add `user` this epoch (claiming a cell for it
    /// if it is new).
    #[inline]
    fn admit(&self, epoch: u32, client: &[u8; 9], user: u64, quota: u32) -> bool {
        let fp = u64::from(((mix(user ^ self.seeds[0]) >> 32) as u32).max(1));
        let epoch = epoch as u16;
        // Per row: the address's bucket and its owner word (epoch and
        // address tag, the upper 32 bits of each of its cells).
        let rows: [(&[AtomicU64], u64); ROWS] = std::array::from_fn(|r| {
            let h = xxh3_64_with_seed(client, self.seeds[r]);
            let start = (r * USER_BUCKETS + (h as usize & (USER_BUCKETS - 1))) * USER_CELLS;
            (
                &self.cells[start..start + USER_CELLS],
                u64::from(epoch) << 16 | h >> 48,
            )
        });
        // Every failed claim means a cell turned current meanwhile, so a
        // few bucket's worth of retries is enough; out of them, refuse.
        for _ in 0..=ROWS * USER_CELLS {
            let (mut mine, mut best): (u32, Free) = (0, None);
            for &(bucket, owner) in &rows {
                let (mut free, mut first) = (0u32, None);
                for c in bucket {
                    let v = c.load(Relaxed);
                    if v == owner << 32 | fp {
                        return true;
                    }
                    if v as u32 == 0 || (v >> 48) as u16 != epoch {
                        free += 1;
                        first = first.or(Some((c, v)));
                    } else if v >> 32 == owner {
                        mine += 1;
                    }
                }
                // A new key goes to the emptier of the two buckets.
                if let Some((c, v)) = first {
                    if best.is_none_or(|(.., f)| free > f) {
                        best = Some((c, v, owner, free));
                    }
                }
            }
            let Some((cell, v, owner, _)) = best.filter(|_| mine < quota) else {
                return false;
            };
            if cell
                .compare_exchange(v, owner << 32 | fp, Relaxed, Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        false
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
        users_per_client: 0,
        window_ms: 3_600_000,
    };
    /// The event caps lifted, a user quota of 4.
    const QUOTA: CapLimits = CapLimits {
        per_client: 10_000_000,
        per_key: 10_000_000,
        users_per_client: 4,
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
            ..QUOTA
        };
        let keys: Vec<u64> = (11..=14).collect();
        assert_eq!(users_admitted(&caps, &short, "203.0.113.5", &keys), keys);
        let short = CapLimits {
            window_ms: 1,
            ..LIMITS
        };
        let s = from("198.51.100.7", 1);
        assert!(caps.admit(&short, &s, 100));
        // Within one epoch (1 ms), the key is full; after it, it is not.
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(caps.admit(&short, &s, 100));
        // Nor is the address's user quota: four other keys fit again.
        let next: Vec<u64> = (15..=18).collect();
        let short = CapLimits {
            window_ms: 1,
            ..QUOTA
        };
        assert_eq!(users_admitted(&caps, &short, "203.0.113.5", &next), next);
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

    /// The keys of `keys` that `client` is let add, in order, under QUOTA.
    fn users_admitted(caps: &Caps, limits: &CapLimits, client: &str, keys: &[u64]) -> Vec<u64> {
        let s = |k| from(client, k);
        keys.iter()
            .copied()
            .filter(|&k| caps.admit(limits, &s(k), 1))
            .collect()
    }

    #[test]
    fn an_address_adds_its_quota_of_keys_then_only_known_ones() {
        let caps = Caps::new();
        let keys = [11, 22, 33, 44, 55, 66];
        assert_eq!(
            users_admitted(&caps, &QUOTA, "198.51.100.7", &keys),
            [11, 22, 33, 44]
        );
        // The known keys go on posting; the new ones stay refused.
        for _ in 0..10 {
            assert_eq!(
                users_admitted(&caps, &QUOTA, "198.51.100.7", &keys),
                [11, 22, 33, 44]
            );
        }
        // An opted-out sender sets no user bit and is not held to it.
        let quiet = Sender {
            opted_out: true,
            ..from("198.51.100.7", 77)
        };
        assert!(caps.admit(&QUOTA, &quiet, 1));
        // 0 turns the quota off.
        let off = CapLimits {
            users_per_client: 0,
            ..QUOTA
        };
        assert_eq!(users_admitted(&caps, &off, "198.51.100.7", &keys), keys);
    }

    #[test]
    fn addresses_have_their_own_quotas() {
        let caps = Caps::new();
        let keys: Vec<u64> = (100..110).collect();
        for client in ["192.0.2.1", "192.0.2.2", "2001:db8:7::1"] {
            assert_eq!(
                users_admitted(&caps, &QUOTA, client, &keys),
                keys[..4],
                "{client}"
            );
        }
        // An IPv6 client is one client for its whole /64.
        assert!(!caps.admit(&QUOTA, &from("2001:db8:7::2", 200), 1));
        assert!(caps.admit(&QUOTA, &from("2001:db8:7::2", 101), 1));
        assert!(caps.admit(&QUOTA, &from("2001:db8:8::1", 200), 1));
    }

    #[test]
    fn a_spray_of_random_keys_adds_no_more_than_the_quota() {
        let caps = Caps::new();
        let spray: Vec<u64> = (0..100_000).map(|_| rand::random()).collect();
        let n = users_admitted(&caps, &QUOTA, "192.0.2.66", &spray).len();
        // A fifth key gets in only when its 32-bit fingerprint matches one
        // of the four held (about once in 10,000 runs); a bitmap of hash
        // bits would let thousands through.
        assert!((4..=5).contains(&n), "{n}");
    }

    #[test]
    fn real_addresses_sharing_buckets_are_rarely_held_back() {
        // 20,000 addresses with 1 to 4 users each (50,000 users) share the
        // buckets; a user is refused only when both of its address's
        // buckets are full.
        let caps = Caps::new();
        let mut refused = 0;
        for a in 0..20_000u32 {
            let client = std::net::Ipv4Addr::from(0x0a00_0000 + a).into();
            for k in 0..=(a % 4) as u64 {
                let s = Sender {
                    client,
                    user: (u64::from(a) << 8 | k).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    opted_out: false,
                };
                refused += (!caps.admit(&QUOTA, &s, 5)) as u32;
            }
        }
        assert!(refused <= 50, "{refused} of 50,000 users refused");
    }
}
