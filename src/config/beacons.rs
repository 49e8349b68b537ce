//! `[beacons]`: the event names the client beacon endpoint accepts.

use serde::Deserialize;

use super::values::label_name;
use super::{invalid, Invalid};

/// Upper bound on configured beacon names (label cardinality, memory).
pub const MAX_BEACON_NAMES: usize = 64;

/// `[beacons]`: the client beacon endpoint `POST /_rollgate/beacon`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBeacons {
    /// Accepted event names; any other name rejects the batch (bounded labels).
    #[serde(default)]
    pub names: Vec<String>,
}

/// The configured beacon event names; an event's name is its index here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BeaconsConfig {
    pub names: Vec<String>,
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
    Ok(BeaconsConfig { names: b.names })
}
