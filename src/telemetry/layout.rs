//! Which slots the telemetry cells have.

use crate::config::Config;

/// One slot per journey, per configured beacon name and per region, in config
/// order. Start-up and every reload derive it from the config with
/// [`Layout::of`], so the two cannot disagree. A reload keeps the running
/// counters only when the new layout equals the old one: a slot index must
/// mean the same name before and after, or a journey added in front would
/// shift every count one journey along and a renamed beacon would be counted
/// under its old name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    journeys: Vec<String>,
    beacons: Vec<String>,
    regions: Vec<String>,
}

impl Layout {
    pub fn of(cfg: &Config) -> Self {
        Self {
            journeys: cfg
                .journeys
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            beacons: cfg.beacons.names.clone(),
            regions: cfg.routing.region_labels.clone(),
        }
    }

    /// Unnamed slots, for tests and benches that only need the sizes.
    pub fn sized(journeys: usize, beacons: usize, regions: usize) -> Self {
        let names = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect();
        Self {
            journeys: names("journey", journeys),
            beacons: names("beacon", beacons),
            regions: names("region", regions.max(1)),
        }
    }

    /// Journeys, `other` included.
    pub fn journeys(&self) -> usize {
        self.journeys.len()
    }

    pub fn beacons(&self) -> usize {
        self.beacons.len()
    }

    /// At least one: without a region header every user is in region `all`.
    pub fn regions(&self) -> usize {
        self.regions.len().max(1)
    }
}
