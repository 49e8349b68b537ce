//! `[beacons]`: the event names the client beacon endpoint accepts, how
//! many events one client address and one sticky key may count for, and how
//! many distinct users one client address may add.

use serde::Deserialize;

use super::values::{defaults, label_name};
use super::{invalid, Invalid};

/// Upper bound on configured beacon names (label cardinality, memory).
pub const MAX_BEACON_NAMES: usize = 64;
/// Largest cap either limit accepts (the per-slot counter is 32 bits).
pub const MAX_BEACON_CAP: u32 = 10_000_000;
/// Largest per-address user quota: the quota keeps one fingerprint cell per
/// user, and an address's cells share a bucket of this many.
pub const MAX_BEACON_USERS_PER_CLIENT: u32 = 16;
/// Largest `max_revenue_value` (10 million currency units in cents): far
/// above any one purchase, and a sum of a window's worth of them stays far
/// from overflowing its 64-bit counter.
pub const MAX_REVENUE_VALUE_CAP: u64 = 1_000_000_000;

defaults! {
    /// Events one client address counts for per window: a busy office or a
    /// household behind one NAT, not a whole carrier-grade NAT (operators
    /// behind a CDN list it in `server.trusted_proxies`).
    pub const DEFAULT_MAX_EVENTS_PER_CLIENT: u32 = 300 => fn default_max_events_per_client() -> u32;
    /// Events one sticky key counts for per window: a user reading a page
    /// every few seconds for the whole window with a few events per page.
    pub const DEFAULT_MAX_EVENTS_PER_KEY: u32 = 100 => fn default_max_events_per_key() -> u32;
    /// Distinct users (sticky keys) one client address adds per window: a
    /// household or a shared device. A beacon gate moves on tens of fake
    /// users, which the event cap alone would let one address invent.
    pub const DEFAULT_MAX_USERS_PER_CLIENT: u32 = 2 => fn default_max_users_per_client() -> u32;
    /// Largest value of one `revenue` event, in minor currency units: 10 000
    /// in cents, a large single purchase, so one forged event cannot move a
    /// variant's revenue by more than that.
    pub const DEFAULT_MAX_REVENUE_VALUE: u64 = 1_000_000 => fn default_max_revenue_value() -> u64;
}

/// `[beacons]`: the client beacon endpoint `POST /_rollgate/beacon`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBeacons {
    /// Accepted event names; any other name rejects the batch (bounded labels).
    #[serde(default)]
    pub names: Vec<String>,
    /// Events one client address (the last untrusted hop) counts for per
    /// `rollout.window`; a batch beyond it is refused as `rate_limited`.
    #[serde(default = "default_max_events_per_client")]
    pub max_events_per_client: u32,
    /// Events one sticky key counts for per `rollout.window`.
    #[serde(default = "default_max_events_per_key")]
    pub max_events_per_key: u32,
    /// Distinct sticky keys one client address adds per `rollout.window`; a
    /// batch with one more key is refused as `rate_limited`. `0` turns the
    /// quota off (every user on one address, as in the demo).
    #[serde(default = "default_max_users_per_client")]
    pub max_users_per_client: u32,
    /// Largest value of one `revenue` event (minor currency units); a larger
    /// one rejects the batch as `bad_value`.
    #[serde(default = "default_max_revenue_value")]
    pub max_revenue_value: u64,
}

/// The configured beacon event names (an event's name is its index here)
/// and the per-window caps.
#[derive(Debug, Clone, PartialEq)]
pub struct BeaconsConfig {
    pub names: Vec<String>,
    pub max_events_per_client: u32,
    pub max_events_per_key: u32,
    /// 0: no per-address user quota.
    pub max_users_per_client: u32,
    /// Largest accepted `revenue` value, in minor currency units.
    pub max_revenue_value: u64,
}

impl Default for BeaconsConfig {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            max_events_per_client: DEFAULT_MAX_EVENTS_PER_CLIENT,
            max_events_per_key: DEFAULT_MAX_EVENTS_PER_KEY,
            max_users_per_client: DEFAULT_MAX_USERS_PER_CLIENT,
            max_revenue_value: DEFAULT_MAX_REVENUE_VALUE,
        }
    }
}

impl BeaconsConfig {
    /// Index of a configured name (a handful of names: a scan beats hashing).
    #[inline]
    pub fn index(&self, name: &str) -> Option<u16> {
        self.names
            .iter()
            .position(|n| n.as_str() == name)
            .map(|i| i as u16)
    }
}

pub(super) fn validate(b: FileBeacons) -> Result<BeaconsConfig, Invalid> {
    if b.names.len() > MAX_BEACON_NAMES {
        return Err(invalid(
            "beacons.names",
            format!("at most {MAX_BEACON_NAMES} names (they are metric labels)"),
        ));
    }
    for (i, n) in b.names.iter().enumerate() {
        let key = format!("beacons.names[{i}]");
        label_name(&key, n)?;
        if b.names[..i].contains(n) {
            return Err(invalid(key, format!("{n:?} is listed twice")));
        }
    }
    for (key, v) in [
        ("beacons.max_events_per_client", b.max_events_per_client),
        ("beacons.max_events_per_key", b.max_events_per_key),
    ] {
        if !(1..=MAX_BEACON_CAP).contains(&v) {
            return Err(invalid(
                key,
                format!("must be between 1 and {MAX_BEACON_CAP} events per window"),
            ));
        }
    }
    if b.max_events_per_key > b.max_events_per_client {
        return Err(invalid(
            "beacons.max_events_per_key",
            format!(
                "{} is above beacons.max_events_per_client ({}): one key always comes from some client",
                b.max_events_per_key, b.max_events_per_client
            ),
        ));
    }
    let users = b.max_users_per_client;
    if users > MAX_BEACON_USERS_PER_CLIENT {
        return Err(invalid(
            "beacons.max_users_per_client",
            format!(
                "must be between 1 and {MAX_BEACON_USERS_PER_CLIENT} users per window \
                 (or 0 for no per-address quota)"
            ),
        ));
    }
    if users > b.max_events_per_client {
        return Err(invalid(
            "beacons.max_users_per_client",
            format!(
                "{users} is above beacons.max_events_per_client ({}): each user takes at least one event",
                b.max_events_per_client
            ),
        ));
    }
    if !(1..=MAX_REVENUE_VALUE_CAP).contains(&b.max_revenue_value) {
        return Err(invalid(
            "beacons.max_revenue_value",
            format!(
                "{} must be between 1 and {MAX_REVENUE_VALUE_CAP} (minor currency units, e.g. cents)",
                b.max_revenue_value
            ),
        ));
    }
    Ok(BeaconsConfig {
        names: b.names,
        max_events_per_client: b.max_events_per_client,
        max_events_per_key: b.max_events_per_key,
        max_users_per_client: users,
        max_revenue_value: b.max_revenue_value,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const MINIMAL: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n[upstreams]\nv1 = \"http://127.0.0.1:3001\"\nv2 = \"http://127.0.0.1:3002\"\n";

    fn parse(beacons: &str) -> Result<Config, String> {
        Config::parse(&format!("{MINIMAL}[beacons]\n{beacons}"), "t.toml")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn caps_have_defaults_and_are_checked() {
        let c = parse("names = [\"page_view\"]\n").unwrap();
        assert_eq!(
            c.beacons.max_events_per_client,
            super::DEFAULT_MAX_EVENTS_PER_CLIENT
        );
        assert_eq!(
            c.beacons.max_events_per_key,
            super::DEFAULT_MAX_EVENTS_PER_KEY
        );
        let c = parse("max_events_per_client = 1000\nmax_events_per_key = 1000\n").unwrap();
        assert_eq!(c.beacons.max_events_per_key, 1000);
        assert_eq!(
            c.beacons.max_users_per_client,
            super::DEFAULT_MAX_USERS_PER_CLIENT
        );
        let c = parse("max_users_per_client = 0\n").unwrap();
        assert_eq!(c.beacons.max_users_per_client, 0);
        let c = parse("max_users_per_client = 16\n").unwrap();
        assert_eq!(c.beacons.max_users_per_client, 16);
        assert_eq!(
            c.beacons.max_revenue_value,
            super::DEFAULT_MAX_REVENUE_VALUE
        );
        let c = parse("max_revenue_value = 5000\n").unwrap();
        assert_eq!(c.beacons.max_revenue_value, 5000);
        for (text, key) in [
            (
                "max_events_per_client = 0\n",
                "`beacons.max_events_per_client`",
            ),
            ("max_events_per_key = 0\n", "`beacons.max_events_per_key`"),
            (
                "max_events_per_key = 20000000\nmax_events_per_client = 20000000\n",
                "`beacons.max_events_per_client`",
            ),
            (
                "max_events_per_key = 500\nmax_events_per_client = 400\n",
                "`beacons.max_events_per_key`",
            ),
            (
                "max_users_per_client = 17\n",
                "`beacons.max_users_per_client`",
            ),
            (
                "max_events_per_key = 2\nmax_events_per_client = 3\nmax_users_per_client = 4\n",
                "`beacons.max_users_per_client`",
            ),
            ("max_revenue_value = 0\n", "`beacons.max_revenue_value`"),
            (
                "max_revenue_value = 1000000001\n",
                "`beacons.max_revenue_value`",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(parse("max_events_per_key = -1\n").is_err());
    }
}
