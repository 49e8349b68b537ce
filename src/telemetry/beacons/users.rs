//! Distinct users per beacon name and variant, as linear-counting bitmaps.
//!
//! A user is a sticky key (user header or cookie, or the id in `rg_bucket`),
//! hashed with the rollout salt; the top [`USER_BITS_LOG2`] bits of that
//! 64-bit hash pick one bit of a [`USER_BITS`]-bit map. The request path
//! sets the bit (a load first, so a returning user writes nothing); the
//! controller swaps each map out at every tick, so an interval holds the
//! users seen in it, and a window is the OR of its intervals' maps.
//!
//! Why a bitmap and not HyperLogLog or exact sets:
//! - **It merges exactly**: the OR of two maps is the map of the union, so a
//!   user seen in ten intervals of a window is one user of the window, as
//!   for HyperLogLog (register max), and unlike summing per-interval counts.
//! - **It intersects**: the gates need "users with a JS error *and* a page
//!   view in the window" so that the numerator is a subset of the
//!   denominator and a two-proportion test applies. With bitmaps that is
//!   inclusion-exclusion over exact unions; HyperLogLog has no usable
//!   intersection.
//! - **It is cheap and bounded**: 2 KiB per (name, variant), one relaxed
//!   load (and at most one `fetch_or`) per event, no allocation, no lock.
//! - **Its error is small where gates live**: linear counting
//!   (`n = -m ln(zeros / m)`, Whang et al. 1990) has a relative standard
//!   error of `sqrt(e^t - t - 1) / (t sqrt(m))` at `t = n / m` users per bit:
//!   0.7 % at 16 k users, 1.9 % at 80 k (per name and variant in one window)
//!   and about 3 % at 100 k. Past ~8 users per bit the map fills up and the
//!   estimate is capped at `m ln m` (about 160 k): a coarse count, still the
//!   same for both variants.
//! - **No identifier is kept**: one bit of a map shared by every user that
//!   hashes there, cleared every tick, is not something that can be traced
//!   back to a user; opted-out requests (`Sec-GPC`, `DNT`) set no bit at all.
//!
//! One key sets one bit whatever it sends, so one key moves a user share by
//! one user; one client address moves it by at most its quota of distinct
//! keys per window (`beacons.max_users_per_client`), within its event cap
//! (`beacons.max_events_per_client`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// log2 of the bits of one map.
pub const USER_BITS_LOG2: u32 = 14;
/// Bits of one map.
pub const USER_BITS: usize = 1 << USER_BITS_LOG2;
const WORDS: usize = USER_BITS / 64;

/// The bit of a user's 64-bit key hash: its top bits, which the routing
/// bucket (`hash mod 10 000`) leaves nearly independent.
#[inline]
fn bit_of(user: u64) -> usize {
    (user >> (64 - USER_BITS_LOG2)) as usize
}

/// The request path's map: allocated once, set with relaxed atomics.
pub(crate) struct AtomicUsers {
    words: Box<[AtomicU64]>,
}

impl AtomicUsers {
    pub(crate) fn new() -> Self {
        Self {
            words: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub(crate) fn insert(&self, user: u64) {
        let b = bit_of(user);
        let (word, bit) = (&self.words[b / 64], 1u64 << (b % 64));
        // Read first: a returning user costs no write to a shared line.
        if word.load(Relaxed) & bit == 0 {
            word.fetch_or(bit, Relaxed);
        }
    }

    /// The users since the last call, clearing the map (controller only).
    pub(crate) fn take(&self) -> UserSet {
        if self.words.iter().all(|w| w.load(Relaxed) == 0) {
            return UserSet::EMPTY;
        }
        UserSet {
            words: self.words.iter().map(|w| w.swap(0, Relaxed)).collect(),
        }
    }
}

/// A set of users (a bitmap); empty takes no memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserSet {
    /// Empty, or exactly `WORDS` words.
    words: Vec<u64>,
}

impl UserSet {
    pub const EMPTY: UserSet = UserSet { words: Vec::new() };

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Adds a user by its key hash (tests, simulations).
    pub fn insert(&mut self, user: u64) {
        if self.words.is_empty() {
            self.words = vec![0; WORDS];
        }
        let b = bit_of(user);
        self.words[b / 64] |= 1 << (b % 64);
    }

    /// `self = self ∪ other`.
    pub fn union_with(&mut self, other: &UserSet) {
        if other.words.is_empty() {
            return;
        }
        if self.words.is_empty() {
            self.words = other.words.clone();
            return;
        }
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= b;
        }
    }

    fn ones(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Linear-counting estimate of the users in the set.
    pub fn estimate(&self) -> f64 {
        linear_count(self.ones())
    }

    /// [`Self::estimate`] rounded: what the gates count as users.
    pub fn count(&self) -> u64 {
        self.estimate().round() as u64
    }

    /// Users in both sets: `|A| + |B| - |A ∪ B|`, each a linear count, never
    /// below 0 nor above the smaller set.
    pub fn intersection_count(&self, other: &UserSet) -> u64 {
        if self.words.is_empty() || other.words.is_empty() {
            return 0;
        }
        let union: u32 = self
            .words
            .iter()
            .zip(other.words.iter())
            .map(|(a, b)| (a | b).count_ones())
            .sum();
        let (a, b) = (self.estimate(), other.estimate());
        let both = (a + b - linear_count(union)).max(0.0).round() as u64;
        both.min(a.round() as u64).min(b.round() as u64)
    }
}

fn linear_count(ones: u32) -> f64 {
    let m = USER_BITS as f64;
    let zeros = m - ones as f64;
    if zeros < 1.0 {
        // A full map: the estimate at one zero bit, the most it can tell.
        m * m.ln()
    } else {
        -m * (zeros / m).ln()
    }
}

// Serialised (interval records for `rollgate replay`) as text: "" when
// empty, "s" + the set bits as 4-hex-digit indices while that is shorter,
// else "d" + every word in hex. A tick with a few hundred users costs a few
// KiB, not the 4 KiB of hex the dense map would take every time.
impl serde::Serialize for UserSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write;
        let ones = self.ones() as usize;
        let mut out = String::new();
        if ones == 0 {
        } else if ones * 4 < WORDS * 16 {
            out.push('s');
            for (i, w) in self.words.iter().enumerate() {
                let mut w = *w;
                while w != 0 {
                    let b = w.trailing_zeros() as usize;
                    let _ = write!(out, "{:04x}", i * 64 + b);
                    w &= w - 1;
                }
            }
        } else {
            out.push('d');
            for w in &self.words {
                let _ = write!(out, "{w:016x}");
            }
        }
        s.serialize_str(&out)
    }
}

impl<'de> serde::Deserialize<'de> for UserSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bad = || D::Error::custom("a user set is \"\", \"s<hex indices>\" or \"d<hex words>\"");
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
        let mut set = UserSet::EMPTY;
        match text.split_at_checked(1) {
            None => {}
            Some(("s", rest)) if rest.len() % 4 == 0 && rest.is_ascii() => {
                set.words = vec![0; WORDS];
                for i in (0..rest.len()).step_by(4) {
                    let b = hex(&rest[i..i + 4])? as usize;
                    if b >= USER_BITS {
                        return Err(bad());
                    }
                    set.words[b / 64] |= 1 << (b % 64);
                }
            }
            Some(("d", rest)) if rest.len() == WORDS * 16 && rest.is_ascii() => {
                set.words = (0..WORDS)
                    .map(|i| hex(&rest[i * 16..i * 16 + 16]))
                    .collect::<Result<_, _>>()?;
            }
            Some(_) => return Err(bad()),
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-spread 64-bit hashes of user numbers (splitmix64).
    pub(crate) fn user(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn set(range: std::ops::Range<u64>) -> UserSet {
        let mut s = UserSet::EMPTY;
        range.for_each(|i| s.insert(user(i)));
        s
    }

    #[test]
    fn counts_distinct_users_within_a_few_percent() {
        assert_eq!(UserSet::EMPTY.count(), 0);
        assert_eq!(set(0..1).count(), 1);
        for n in [50u64, 500, 5_000, 20_000, 60_000] {
            let got = set(0..n).estimate();
            let err = (got - n as f64).abs() / n as f64;
            assert!(err < 0.03, "{n} users counted as {got}");
        }
        // The same user any number of times is one user.
        let mut s = UserSet::EMPTY;
        (0..1_000).for_each(|_| s.insert(user(7)));
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn merges_across_intervals_and_intersects() {
        // Intervals with overlapping users: the window counts each once.
        let mut w = UserSet::EMPTY;
        for k in 0..10 {
            w.union_with(&set(k * 100..k * 100 + 300));
        }
        let n = w.count() as f64;
        assert!((n - 1_200.0).abs() < 30.0, "{n}");
        // 2,000 page views, 300 errors of which 200 by users with a view.
        let views = set(0..2_000);
        let errors = set(1_800..2_100);
        let both = views.intersection_count(&errors) as f64;
        assert!((both - 200.0).abs() < 20.0, "{both}");
        assert_eq!(views.intersection_count(&UserSet::EMPTY), 0);
        assert!(views.intersection_count(&views) <= views.count());
    }

    #[test]
    fn the_request_path_map_is_taken_once() {
        let a = AtomicUsers::new();
        (0..300).for_each(|i| a.insert(user(i)));
        (0..300).for_each(|i| a.insert(user(i)));
        let first = a.take();
        assert!((first.estimate() - 300.0).abs() < 5.0);
        assert_eq!(a.take(), UserSet::EMPTY);
    }

    #[test]
    fn serialises_sparse_or_dense_and_back() {
        for s in [UserSet::EMPTY, set(0..40), set(0..10_000)] {
            let text = serde_json::to_string(&s).unwrap();
            let back: UserSet = serde_json::from_str(&text).unwrap();
            assert_eq!(back.count(), s.count(), "{text:.40}");
        }
        assert!(serde_json::to_string(&set(0..40)).unwrap().len() < 200);
        for bad in ["\"x\"", "\"s12\"", "\"sffff0\"", "\"d00\"", "\"szzzz\""] {
            assert!(serde_json::from_str::<UserSet>(bad).is_err(), "{bad}");
        }
    }
}
