//! `[replay]`: whether evaluations are recorded for `rollgate replay`, and how much.

use serde::Deserialize;

use super::values::{defaults, yes};
use super::{invalid, Invalid};

defaults! {
    const DEFAULT_REPLAY_MAX_BYTES: u64 = 256 * 1024 * 1024 => fn default_replay_max_bytes() -> u64;
}

/// `[replay]`: the evaluation records `rollgate replay` reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileReplay {
    /// Append every evaluation to `state_dir/evaluations.jsonl`.
    #[serde(default = "yes")]
    pub record: bool,
    /// Rotate past this size (one previous file is kept).
    #[serde(default = "default_replay_max_bytes")]
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    pub record: bool,
    pub max_bytes: u64,
}

pub(super) fn validate(r: FileReplay) -> Result<ReplayConfig, Invalid> {
    if r.max_bytes < 4096 {
        return Err(invalid("replay.max_bytes", "must be at least 4096"));
    }
    Ok(ReplayConfig {
        record: r.record,
        max_bytes: r.max_bytes,
    })
}
