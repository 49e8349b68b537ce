//! Client beacon counters: per (configured event name, variant), a count per
//! event type and, for `timing` events, a latency histogram with the layout of
//! [`super::histogram`]. Same discipline as the request cells: allocated once
//! at start-up, striped by thread, recorded with relaxed `fetch_add`s.
//!
//! Beside the event counts (the `rollgate_beacon_events_total` series) every
//! (name, variant) has a set of the *users* who sent that name, and every
//! variant a set of the users who sent any `js_error`. The beacon gates
//! compare shares of users, not event counts: a client writes its own
//! beacons, so an event count is whatever the noisiest client makes it,
//! while a share of users moves by one user per sticky key, however much
//! that key sends. [`users`] says how the sets are counted, merged over a
//! window and intersected; [`caps`] bounds what one address or one key may
//! send at all per window.
//!
//! `revenue` events carry a value (in the currency's minor unit, say
//! cents), summed per (name, variant) beside the count: with the users of
//! the name (who paid) and the users of any name (who were seen), that is
//! revenue per user and the share of users who paid, V2 against V1.
//!
//! No identifier of any kind is stored: counts and timings by name and
//! variant, one bit per hashed key in maps cleared every tick, and count
//! slots shared by every key or address that hashes there.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

mod caps;
pub mod users;

pub use caps::{CapLimits, Sender};
pub use users::UserSet;

use caps::Caps;
use users::AtomicUsers;

use super::histogram::{bucket_index, Histogram, SparseHistogram, BUCKETS, MAX_US};
use super::{stripe_index, STRIPES};
use crate::routing::Variant;

pub use crate::config::MAX_BEACON_NAMES;

/// The `type` of a beacon event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeaconType {
    JsError = 0,
    Funnel = 1,
    Timing = 2,
    /// A purchase; its value is summed (minor currency units).
    Revenue = 3,
}

/// Event types, the length of every per-type count array.
pub const TYPES: usize = 4;

impl BeaconType {
    pub const ALL: [BeaconType; TYPES] = [
        BeaconType::JsError,
        BeaconType::Funnel,
        BeaconType::Timing,
        BeaconType::Revenue,
    ];

    pub fn label(self) -> &'static str {
        ["js_error", "funnel", "timing", "revenue"][self as usize]
    }

    pub fn parse(s: &str) -> Option<BeaconType> {
        match s {
            "js_error" => Some(BeaconType::JsError),
            "funnel" => Some(BeaconType::Funnel),
            "timing" => Some(BeaconType::Timing),
            "revenue" => Some(BeaconType::Revenue),
            _ => None,
        }
    }
}

/// Why a beacon batch was refused (label of `rollgate_beacon_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeaconReject {
    NotJson = 0,
    TooLarge = 1,
    TooMany = 2,
    UnknownName = 3,
    UnknownType = 4,
    BadValue = 5,
    /// The sender's client address or sticky key is at its per-window cap.
    RateLimited = 6,
}

impl BeaconReject {
    pub const ALL: [BeaconReject; 7] = [
        BeaconReject::NotJson,
        BeaconReject::TooLarge,
        BeaconReject::TooMany,
        BeaconReject::UnknownName,
        BeaconReject::UnknownType,
        BeaconReject::BadValue,
        BeaconReject::RateLimited,
    ];

    pub fn label(self) -> &'static str {
        [
            "not_json",
            "too_large",
            "too_many",
            "unknown_name",
            "unknown_type",
            "bad_value",
            "rate_limited",
        ][self as usize]
    }
}

struct Stripe {
    counts: [AtomicU64; TYPES],
    timing: Box<[AtomicU64]>,
    timing_sum_us: AtomicU64,
    /// Sum of `revenue` values: a counter like the others (one relaxed add
    /// per event, no lock, nothing allocated), so revenue costs the request
    /// path what a count does.
    revenue: AtomicU64,
}

impl Stripe {
    fn new() -> Self {
        Self {
            counts: Default::default(),
            timing: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            timing_sum_us: AtomicU64::new(0),
            revenue: AtomicU64::new(0),
        }
    }
}

/// The lock-free beacon counters, indexed by `name * 2 + variant`.
pub struct BeaconCells {
    names: usize,
    cells: Box<[Box<[Stripe]>]>,
    rejected: [AtomicU64; 7],
    /// Users per `name * 2 + variant`, then the two "any `js_error`" sets.
    users: Box<[AtomicUsers]>,
    caps: Caps,
}

static NO_USERS: UserSet = UserSet::EMPTY;

/// The users of one interval (or, merged, of a window).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BeaconUsers {
    /// Indexed by `name * 2 + variant`: users who sent an event of that name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_name: Vec<UserSet>,
    /// Per variant: users who sent a `js_error` event of any name.
    #[serde(default)]
    pub js_error: [UserSet; 2],
}

impl BeaconUsers {
    pub fn is_empty(&self) -> bool {
        self.by_name
            .iter()
            .chain(&self.js_error)
            .all(UserSet::is_empty)
    }

    /// Users who sent `name`; empty past the configured names.
    pub fn of(&self, name: usize, variant: Variant) -> &UserSet {
        self.by_name
            .get(name * 2 + variant as usize)
            .unwrap_or(&NO_USERS)
    }

    /// Users who sent a `js_error` of any name.
    pub fn js_error(&self, variant: Variant) -> &UserSet {
        &self.js_error[variant as usize]
    }

    /// Adds every user of `other` (a window over its intervals).
    pub fn union_with(&mut self, other: &BeaconUsers) {
        if self.by_name.len() < other.by_name.len() {
            self.by_name.resize(other.by_name.len(), UserSet::EMPTY);
        }
        for (a, b) in self.by_name.iter_mut().zip(&other.by_name) {
            a.union_with(b);
        }
        for (a, b) in self.js_error.iter_mut().zip(&other.js_error) {
            a.union_with(b);
        }
    }

    /// Users who sent an event of any name: the union of every name's set
    /// (each event sets its name's bit, so nobody who sent one is missed).
    pub fn seen(&self, variant: Variant) -> UserSet {
        let mut all = UserSet::EMPTY;
        for s in self.by_name.iter().skip(variant as usize).step_by(2) {
            all.union_with(s);
        }
        all
    }

    /// Mutable set of `name` (tests and simulations fill windows with it).
    pub fn of_mut(&mut self, name: usize, variant: Variant) -> &mut UserSet {
        let i = name * 2 + variant as usize;
        if self.by_name.len() <= i {
            self.by_name.resize(i + 1, UserSet::EMPTY);
        }
        &mut self.by_name[i]
    }
}

/// Counts of one (name, variant), summed over stripes; cumulative or a delta.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BeaconCounts {
    /// By [`BeaconType`].
    pub counts: [u64; TYPES],
    /// `timing` values, in microseconds.
    pub timing: Histogram,
    /// Sum of `revenue` values, in minor currency units.
    pub revenue: u64,
}

impl BeaconCounts {
    /// Events of every type with this name.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn delta(&self, earlier: &BeaconCounts) -> BeaconCounts {
        BeaconCounts {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            timing: self.timing.delta(&earlier.timing),
            revenue: self.revenue.saturating_sub(earlier.revenue),
        }
    }

    pub fn to_sparse(&self) -> SparseBeacon {
        SparseBeacon {
            counts: self.counts,
            timing: self.timing.to_sparse(),
            revenue: self.revenue,
        }
    }

    pub fn add(&mut self, other: &BeaconCounts) {
        for i in 0..TYPES {
            self.counts[i] += other.counts[i];
        }
        self.timing.add(&other.timing);
        self.revenue += other.revenue;
    }
}

/// A [`BeaconCounts`] as the interval ring (and the replay log) keeps it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseBeacon {
    #[serde(with = "type_counts")]
    pub counts: [u64; TYPES],
    #[serde(default, skip_serializing_if = "SparseHistogram::is_empty")]
    pub timing: SparseHistogram,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revenue: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The per-type counts of an interval record: as many as there are types,
/// trailing zeros left out, so a record without revenue reads as it did
/// before the type existed and an older record (three counts) still reads.
mod type_counts {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use super::TYPES;

    pub fn serialize<S: Serializer>(c: &[u64; TYPES], s: S) -> Result<S::Ok, S::Error> {
        let used = TYPES - c.iter().rev().take_while(|n| **n == 0).count();
        s.collect_seq(&c[..used.max(3)])
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; TYPES], D::Error> {
        let v = Vec::<u64>::deserialize(d)?;
        if v.len() > TYPES {
            return Err(D::Error::invalid_length(
                v.len(),
                &"at most one count per event type",
            ));
        }
        let mut c = [0; TYPES];
        c[..v.len()].copy_from_slice(&v);
        Ok(c)
    }
}

impl SparseBeacon {
    pub fn add_to(&self, acc: &mut BeaconCounts) {
        for i in 0..TYPES {
            acc.counts[i] += self.counts[i];
        }
        acc.timing.add_sparse(&self.timing);
        acc.revenue += self.revenue;
    }
}

// === impl BeaconCells ===

impl BeaconCells {
    pub fn new(names: usize) -> Self {
        let names = names.min(MAX_BEACON_NAMES);
        Self {
            names,
            cells: (0..names * 2)
                .map(|_| (0..STRIPES).map(|_| Stripe::new()).collect())
                .collect(),
            rejected: Default::default(),
            users: (0..names * 2 + 2).map(|_| AtomicUsers::new()).collect(),
            caps: Caps::new(),
        }
    }

    pub fn names(&self) -> usize {
        self.names
    }

    /// Records one event; `value` is a `timing` event's microseconds or a
    /// `revenue` event's amount, unused by other types.
    #[inline]
    pub fn record(&self, name: u16, variant: Variant, kind: BeaconType, value: u64) {
        let Some(cell) = self.cells.get(name as usize * 2 + variant as usize) else {
            return;
        };
        let s = &cell[stripe_index()];
        s.counts[kind as usize].fetch_add(1, Relaxed);
        match kind {
            BeaconType::Timing => {
                let us = value.min(MAX_US);
                s.timing[bucket_index(us)].fetch_add(1, Relaxed);
                s.timing_sum_us.fetch_add(us, Relaxed);
            }
            BeaconType::Revenue => {
                s.revenue.fetch_add(value, Relaxed);
            }
            BeaconType::JsError | BeaconType::Funnel => {}
        }
    }

    /// Notes that `user` sent an event of `name` (and, for a `js_error`,
    /// an error); one bit per user, whatever it sends.
    #[inline]
    pub fn record_user(&self, name: u16, variant: Variant, kind: BeaconType, user: u64) {
        if name as usize >= self.names {
            return;
        }
        self.users[name as usize * 2 + variant as usize].insert(user);
        if kind == BeaconType::JsError {
            self.users[self.names * 2 + variant as usize].insert(user);
        }
    }

    /// The users since the last call, clearing the sets. Only the controller
    /// calls this (once per tick), so each interval holds its own users.
    pub fn take_users(&self) -> BeaconUsers {
        let n = self.names * 2;
        let by_name: Vec<UserSet> = self.users[..n].iter().map(AtomicUsers::take).collect();
        BeaconUsers {
            by_name: if by_name.iter().all(UserSet::is_empty) {
                Vec::new()
            } else {
                by_name
            },
            js_error: [self.users[n].take(), self.users[n + 1].take()],
        }
    }

    /// Charges a batch of `n` events to its sender's caps; `false` (and
    /// nothing charged) when the key or the address is at its cap.
    #[inline]
    pub fn admit(&self, limits: &CapLimits, from: &Sender, n: usize) -> bool {
        self.caps
            .admit(limits, from, n.min(u32::MAX as usize) as u32)
    }

    #[inline]
    pub fn reject(&self, reason: BeaconReject) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: BeaconReject) -> u64 {
        self.rejected[reason as usize].load(Relaxed)
    }

    /// Cumulative counts, indexed by `name * 2 + variant`.
    pub fn snapshot(&self) -> Vec<BeaconCounts> {
        self.cells
            .iter()
            .map(|stripes| {
                let mut c = BeaconCounts::default();
                for s in stripes.iter() {
                    for i in 0..TYPES {
                        c.counts[i] += s.counts[i].load(Relaxed);
                    }
                    c.revenue += s.revenue.load(Relaxed);
                    if s.counts[BeaconType::Timing as usize].load(Relaxed) > 0 {
                        for (acc, b) in c.timing.counts.iter_mut().zip(s.timing.iter()) {
                            *acc += b.load(Relaxed);
                        }
                        c.timing.sum_us += s.timing_sum_us.load(Relaxed);
                    }
                }
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_name_variant_and_type() {
        let b = BeaconCells::new(3);
        b.record(1, Variant::V2, BeaconType::Timing, 250_000);
        b.record(1, Variant::V2, BeaconType::Funnel, 0);
        b.record(0, Variant::V1, BeaconType::JsError, 0);
        b.record(7, Variant::V1, BeaconType::JsError, 0); // out of range: ignored
        b.reject(BeaconReject::TooMany);
        let s = b.snapshot();
        assert_eq!(s.len(), 6);
        assert_eq!(s[3].counts, [0, 1, 1, 0]);
        assert_eq!(s[3].timing.count(), 1);
        assert_eq!(s[3].timing.sum_us, 250_000);
        assert_eq!(s[0].counts, [1, 0, 0, 0]);
        assert_eq!(s[0].timing.count(), 0);
        assert_eq!(b.rejected(BeaconReject::TooMany), 1);
        let d = s[3].delta(&BeaconCounts::default()).to_sparse();
        let mut back = BeaconCounts::default();
        d.add_to(&mut back);
        assert_eq!(back, s[3]);
        assert_eq!(BeaconType::parse("funnel"), Some(BeaconType::Funnel));
        assert_eq!(BeaconType::parse("Funnel"), None);
    }

    #[test]
    fn revenue_is_summed_and_records_stay_readable() {
        let b = BeaconCells::new(2);
        b.record(1, Variant::V2, BeaconType::Revenue, 1250);
        b.record(1, Variant::V2, BeaconType::Revenue, 500);
        b.record(1, Variant::V1, BeaconType::Funnel, 999); // not revenue: no sum
        let s = b.snapshot();
        assert_eq!(
            (s[3].counts[BeaconType::Revenue as usize], s[3].revenue),
            (2, 1750)
        );
        assert_eq!(s[2].revenue, 0);
        // An interval with revenue keeps it; one without reads and writes as
        // before the type existed (three counts, no revenue key).
        let with = s[3].delta(&BeaconCounts::default()).to_sparse();
        let text = serde_json::to_string(&with).unwrap();
        assert_eq!(text, r#"{"counts":[0,0,0,2],"revenue":1750}"#);
        let back: SparseBeacon = serde_json::from_str(&text).unwrap();
        assert_eq!(back, with);
        let without = s[2].to_sparse();
        assert_eq!(
            serde_json::to_string(&without).unwrap(),
            r#"{"counts":[0,1,0]}"#
        );
        let old: SparseBeacon = serde_json::from_str(r#"{"counts":[4,5,6]}"#).unwrap();
        assert_eq!((old.counts, old.revenue), ([4, 5, 6, 0], 0));
        assert!(serde_json::from_str::<SparseBeacon>(r#"{"counts":[1,2,3,4,5]}"#).is_err());
        // Users seen: anyone who sent any name, once.
        let mut u = BeaconUsers::default();
        u.of_mut(0, Variant::V2).insert(1 << 60);
        u.of_mut(1, Variant::V2).insert(1 << 60);
        u.of_mut(1, Variant::V2).insert(3 << 60);
        u.of_mut(0, Variant::V1).insert(5 << 60);
        assert_eq!(u.seen(Variant::V2).count(), 2);
        assert_eq!(u.seen(Variant::V1).count(), 1);
    }

    #[test]
    fn users_are_taken_per_interval_by_name_and_variant() {
        let b = BeaconCells::new(2);
        for user in 0..50u64 {
            let key = user.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            // A user posting many events is still one user.
            for _ in 0..10 {
                b.record_user(0, Variant::V2, BeaconType::Funnel, key);
            }
            if user < 5 {
                b.record_user(1, Variant::V2, BeaconType::JsError, key);
            }
        }
        b.record_user(9, Variant::V1, BeaconType::JsError, 1); // unknown name: ignored
        let u = b.take_users();
        assert_eq!(u.of(0, Variant::V2).count(), 50);
        assert_eq!(u.of(1, Variant::V2).count(), 5);
        assert_eq!(u.js_error(Variant::V2).count(), 5);
        assert_eq!(u.js_error(Variant::V1).count(), 0);
        assert_eq!(u.of(0, Variant::V1).count(), 0);
        assert_eq!(u.of(7, Variant::V1).count(), 0);
        assert!(b.take_users().is_empty());
        let mut w = BeaconUsers::default();
        w.union_with(&u);
        w.union_with(&u);
        assert_eq!(w, u);
    }
}
