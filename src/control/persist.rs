//! Writing the rollout state down, and what happens when the write fails.
//!
//! The routing swap of a decision is in force the moment it is stored; the
//! state file is what a restart resumes from. When the write fails (disk
//! full, a read-only or vanished state directory) the decision still
//! stands in memory, but a restart would resume the state before it, e.g.
//! the canary's weight after a rollback. So a failed write is not dropped
//! until the next change: it is retried on its own timer (100 ms, doubling
//! to 5 s, for as long as it takes), and until the current state is on
//! disk the controller reports itself degraded (status API
//! `state_persist_degraded`, the status page, `rollgate_state_persist_degraded`).
//! Logs stay bounded however long the outage lasts: the first failure, then
//! each time the count of failed attempts doubles, then the recovery.
//!
//! With `server.state_fallback_dir` set (best on another disk), a state the
//! state file cannot take is written there at once; start-up resumes the
//! copy when it is newer than the state file, so even a process killed
//! while degraded and restarted after the state dir is repaired does not
//! come back at the weight before. The copy is removed once the state file
//! holds the state; degraded still means "the state file is behind".

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::state::{self, RolloutState};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The state file's writer: what it holds, and a write that is failing.
pub(crate) struct Persister {
    /// What the state file holds: an unchanged state is not rewritten.
    saved: RolloutState,
    failing: Option<Failing>,
    /// What the fallback dir holds, while it holds anything.
    in_fallback: Option<RolloutState>,
}

/// A write that has not succeeded yet.
struct Failing {
    attempts: u32,
    since: Instant,
    /// When the next attempt is due.
    next: Instant,
    /// The state of the last attempt: a newer one is tried at once.
    attempted: RolloutState,
}

impl Persister {
    /// `saved` is what the state file holds now.
    pub(crate) fn new(saved: RolloutState) -> Self {
        Persister {
            saved,
            failing: None,
            in_fallback: None,
        }
    }

    /// The current state is not on disk yet.
    pub(crate) fn degraded(&self) -> bool {
        self.failing.is_some()
    }

    /// When the failing write is to be tried again.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.failing.as_ref().map(|f| f.next)
    }

    /// Makes a failing write due at once (shutdown does not wait for backoff).
    pub(crate) fn due_now(&mut self) {
        if let Some(f) = &mut self.failing {
            f.next = Instant::now();
        }
    }

    /// Writes `s` unless the file holds it already. A state that is the
    /// same as the last failed attempt waits for its retry time; a changed
    /// one is tried at once.
    pub(crate) fn persist(&mut self, dir: &Path, fallback: Option<&Path>, s: &RolloutState) {
        if *s == self.saved {
            // Back to what the file holds (or nothing new): it is current.
            self.recovered(fallback);
            return;
        }
        let now = Instant::now();
        if self
            .failing
            .as_ref()
            .is_some_and(|f| f.attempted == *s && now < f.next)
        {
            return;
        }
        match state::save(dir, s) {
            Ok(()) => {
                self.saved = s.clone();
                self.recovered(fallback);
            }
            Err(e) => {
                if let Some(fallback) = fallback {
                    self.write_fallback(fallback, s);
                }
                let f = self.failing.get_or_insert_with(|| Failing {
                    attempts: 0,
                    since: now,
                    next: now,
                    attempted: s.clone(),
                });
                f.attempts += 1;
                f.attempted = s.clone();
                let backoff = FIRST_RETRY
                    .saturating_mul(1 << (f.attempts - 1).min(16))
                    .min(MAX_RETRY);
                f.next = now + backoff;
                if f.attempts.is_power_of_two() {
                    tracing::error!(
                        error = %e,
                        failed_attempts = f.attempts,
                        retry_in_ms = backoff.as_millis() as u64,
                        state = s.state.as_str(),
                        weight_v2 = s.weight_v2,
                        "could not persist the rollout state: routing follows it, but a restart now would resume the state before it; retrying (degraded)"
                    );
                }
            }
        }
    }

    /// Writes `s` to the fallback dir unless it holds it already.
    fn write_fallback(&mut self, fallback: &Path, s: &RolloutState) {
        if self.in_fallback.as_ref() == Some(s) {
            return;
        }
        let written = std::fs::create_dir_all(fallback)
            .map_err(|source| state::StateError::Io {
                path: fallback.to_path_buf(),
                source,
            })
            .and_then(|()| state::save(fallback, s));
        match written {
            Ok(()) => {
                if self.in_fallback.is_none() {
                    tracing::warn!(
                        fallback = %fallback.display(),
                        "rollout state written to the fallback dir; a restart resumes it from there"
                    );
                }
                self.in_fallback = Some(s.clone());
            }
            // Logged with the state file's failure, at the same bounded pace.
            Err(e) => tracing::debug!(error = %e, "the fallback dir cannot take the state either"),
        }
    }

    fn recovered(&mut self, fallback: Option<&Path>) {
        if let (Some(dir), Some(_)) = (fallback, &self.in_fallback) {
            match state::remove_fallback(dir) {
                Ok(()) => self.in_fallback = None,
                // Older than the state file now: start-up ignores it.
                Err(e) => tracing::warn!(error = %e, "could not remove the fallback state copy"),
            }
        }
        if let Some(f) = self.failing.take() {
            tracing::warn!(
                failed_attempts = f.attempts,
                degraded_ms = f.since.elapsed().as_millis() as u64,
                "rollout state persisted again; no longer degraded"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes fail while the temp file's path is a directory (the tests run
    /// as root, where permissions would not stop them); the state file
    /// itself stays as it was.
    fn block(dir: &Path, blocked: bool) {
        let tmp = dir.join(state::STATE_FILE).with_extension("tmp");
        if blocked {
            std::fs::create_dir(tmp).unwrap();
        } else {
            std::fs::remove_dir(tmp).unwrap();
        }
    }

    fn rolled_back() -> RolloutState {
        let mut s = RolloutState::new(Default::default());
        s.state = state::StateName::RolledBack;
        s
    }

    /// A persister whose first write, of `rolled_back()`, failed.
    fn failed_once() -> (tempfile::TempDir, Persister) {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Persister::new(RolloutState::new(Default::default()));
        block(dir.path(), true);
        p.persist(dir.path(), None, &rolled_back());
        assert!(p.degraded());
        (dir, p)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_with_backoff_until_it_lands() {
        let (dir, mut p) = failed_once();
        let first = p.retry_at().unwrap() - Instant::now();
        assert_eq!(first, FIRST_RETRY);
        // Not due yet: the same state is not tried again.
        p.persist(dir.path(), None, &rolled_back());
        assert_eq!(p.retry_at().unwrap() - Instant::now(), FIRST_RETRY);
        // Due: tried, fails, the wait doubles, up to the cap.
        let mut waits = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep_until(p.retry_at().unwrap()).await;
            p.persist(dir.path(), None, &rolled_back());
            waits.push(p.retry_at().unwrap() - Instant::now());
        }
        assert_eq!(waits[0], FIRST_RETRY * 2);
        assert_eq!(waits[1], FIRST_RETRY * 4);
        assert_eq!(*waits.last().unwrap(), MAX_RETRY);
        // The file still holds the state before: degraded is the truth.
        assert!(p.degraded());
        // Writable again: the next attempt lands and degraded clears.
        block(dir.path(), false);
        tokio::time::sleep_until(p.retry_at().unwrap()).await;
        p.persist(dir.path(), None, &rolled_back());
        assert!(!p.degraded());
        assert_eq!(p.retry_at(), None);
        assert_eq!(state::load(dir.path()).unwrap(), Some(rolled_back()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_state_is_tried_at_once_and_going_back_to_the_saved_one_clears() {
        let (dir, mut p) = failed_once();
        let mut other = rolled_back();
        other.weight_v2 = 0.5;
        block(dir.path(), false);
        p.persist(dir.path(), None, &other);
        assert!(!p.degraded(), "a changed state does not wait for the retry");
        assert_eq!(state::load(dir.path()).unwrap(), Some(other.clone()));
        // A failure, then the state returns to what the file holds.
        block(dir.path(), true);
        p.persist(dir.path(), None, &rolled_back());
        assert!(p.degraded());
        p.persist(dir.path(), None, &other);
        assert!(!p.degraded());
        assert_eq!(state::load(dir.path()).unwrap(), Some(other));
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_fallback_dir_the_state_lands_there_and_is_resumed_until_the_file_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let fallback = tempfile::tempdir().unwrap();
        let before = RolloutState::new(Default::default());
        state::save(dir.path(), &before).unwrap();
        let mut p = Persister::new(before.clone());
        block(dir.path(), true);
        p.persist(dir.path(), Some(fallback.path()), &rolled_back());
        assert!(p.degraded(), "the state file is still behind");
        assert_eq!(state::load(fallback.path()).unwrap(), Some(rolled_back()));
        // A restart now resumes the copy, not the state file's older state.
        let resumed = state::load_resumable(dir.path(), Some(fallback.path())).unwrap();
        assert_eq!(resumed, Some(rolled_back()));
        // Once the state file has it, the copy goes.
        block(dir.path(), false);
        tokio::time::sleep_until(p.retry_at().unwrap()).await;
        p.persist(dir.path(), Some(fallback.path()), &rolled_back());
        assert!(!p.degraded());
        assert_eq!(state::load(fallback.path()).unwrap(), None);
        assert_eq!(state::load(dir.path()).unwrap(), Some(rolled_back()));
    }

    #[test]
    fn an_older_fallback_copy_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let fallback = tempfile::tempdir().unwrap();
        state::save(fallback.path(), &rolled_back()).unwrap();
        let newer = RolloutState::new(Default::default());
        std::thread::sleep(std::time::Duration::from_millis(20));
        state::save(dir.path(), &newer).unwrap();
        let resumed = state::load_resumable(dir.path(), Some(fallback.path())).unwrap();
        assert_eq!(resumed, Some(newer));
        // No state file at all: the copy is all there is.
        let empty = tempfile::tempdir().unwrap();
        let resumed = state::load_resumable(empty.path(), Some(fallback.path())).unwrap();
        assert_eq!(resumed, Some(rolled_back()));
    }
}
