//! Configuration: the TOML file format (`File*` types, serde) and the checked
//! runtime [`Config`] it becomes through `FileConfig::validate`.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a typo in a threshold must
//! not silently fall back to a default on the edge of production. Every error
//! names the file, the key and the reason.
//!
//! One file per section (`server.rs` is `[server]`, ...), each with the
//! section's file type, its checked type, its `DEFAULT_*` constants (one
//! `defaults!` table, see `values.rs`) and its `validate`. `values.rs` holds
//! the value types and checks several sections share. This file keeps what
//! spans sections: [`Config`], loading and parsing, the error types, and the
//! order the sections are checked in (the first error is the one reported).
//!
//! A new key: a field of the section's file type (with a `defaults!` entry
//! when it has a default), the field of its checked type, and its check in
//! the section's `validate`.

use std::path::Path;

use serde::Deserialize;

use crate::routing::journeys::Journeys;
use values::empty_section;

mod beacons;
mod gates;
mod journeys;
mod replay;
mod rollout;
mod routing;
mod server;
mod shadow;
mod upstreams;
mod values;

#[cfg(test)]
mod tests;

pub use beacons::{BeaconsConfig, MAX_BEACON_NAMES, MAX_BEACON_USERS_PER_CLIENT};
pub use gates::{Funnel, GatesConfig, Method, Slo, Step, Timing};
pub use journeys::JourneyLimits;
pub use replay::ReplayConfig;
pub use rollout::{HeadersTo, Phase, PhaseMode, PromotionWindow, RolloutConfig};
pub use routing::RoutingConfig;
// The significance tests check their error rates at the default level.
#[cfg(test)]
pub(crate) use gates::DEFAULT_ALPHA;
pub(crate) use server::DEFAULT_MAX_HEADER_BYTES;
pub use server::{Protocol, RuntimeMode, ServerConfig, TlsFiles};
pub use shadow::ShadowConfig;
pub use upstreams::{Upstream, UpstreamsConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Parse {
        file: String,
        source: Box<toml::de::Error>,
    },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// A validation failure before the file name is attached.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invalid {
    pub key: String,
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// ===== file format =====

/// The file as written: one field per section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub server: server::FileServer,
    pub upstreams: upstreams::FileUpstreams,
    #[serde(default = "empty_section")]
    pub routing: routing::FileRouting,
    #[serde(default)]
    pub journeys: Vec<journeys::FileJourney>,
    #[serde(default = "empty_section")]
    pub rollout: rollout::FileRollout,
    #[serde(default = "empty_section")]
    pub gates: gates::FileGates,
    #[serde(default = "empty_section")]
    pub beacons: beacons::FileBeacons,
    #[serde(default = "empty_section")]
    pub shadow: shadow::FileShadow,
    #[serde(default = "empty_section")]
    pub replay: replay::FileReplay,
}

// ===== runtime config =====

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstreams: UpstreamsConfig,
    pub routing: RoutingConfig,
    pub journeys: Journeys,
    /// Per journey index (incl. `other`): threshold overrides.
    pub journey_limits: Vec<JourneyLimits>,
    pub rollout: RolloutConfig,
    pub gates: GatesConfig,
    pub beacons: BeaconsConfig,
    pub shadow: ShadowConfig,
    pub replay: ReplayConfig,
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Valid but probably not what was meant: `rollgate check` prints these
    /// and `rollgate run` logs them, and both go on.
    ///
    /// A phase whose hold is shorter than `gates.cooldown`: a gate that turns
    /// RED in it must then stay inside the promote band for the whole
    /// cooldown before the phase can step up, so the phase lasts longer than
    /// its hold says (a compressed test or demo schedule with the default
    /// 1-minute cooldown sits "cooling down").
    pub fn warnings(&self) -> Vec<String> {
        let cooldown = self.gates.cooldown;
        self.rollout
            .phases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.hold < cooldown)
            .map(|(i, p)| {
                format!(
                    "`rollout.phases[{i}].hold` ({}, phase {:?}) is shorter than `gates.cooldown` ({}): \
                     after a RED gate the phase waits out the cooldown before it can step up",
                    humantime::format_duration(p.hold),
                    p.name,
                    humantime::format_duration(cooldown),
                )
            })
            .collect()
    }

    /// Parses and validates config text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            file: file.into(),
            source: Box::new(source),
        })?;
        raw.validate().map_err(|e| ConfigError::Invalid {
            file: file.into(),
            key: e.key,
            reason: e.reason,
        })
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.server.admin_token.as_deref()
    }
}

impl FileConfig {
    /// Checks every section, in this order (the first error is the one
    /// reported), and builds the runtime config.
    fn validate(self) -> Result<Config, Invalid> {
        let server = server::validate(self.server)?;
        let upstreams = upstreams::validate(self.upstreams)?;
        let routing = routing::validate(self.routing)?;
        let (journeys, journey_limits) = journeys::validate(self.journeys)?;
        let rollout = rollout::validate(self.rollout)?;
        // Gates name beacons and journeys; the shadow excludes journeys.
        let beacons = beacons::validate(self.beacons)?;
        let gates = gates::validate(self.gates, &journeys, &beacons)?;
        let shadow = shadow::validate(self.shadow, &journeys)?;
        let replay = replay::validate(self.replay)?;
        Ok(Config {
            server,
            upstreams,
            routing,
            journeys,
            journey_limits,
            rollout,
            gates,
            beacons,
            shadow,
            replay,
        })
    }
}
