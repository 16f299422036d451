//! How a stage reloads its plugin, from the stage file's `[plugin.reload]`
//! table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Hot reload and the probation that guards it.
///
/// A new version is on trial for its first `trial_calls` plugin calls (one
/// per message handled, retries included). If more than
/// `rollback_failure_rate` of those calls fail (trap, deadline, memory cap,
/// broken contract), the version it replaced is restored: a bad release
/// costs a few retries, not a dead-letter topic full of good messages.
///
/// The stage-file loader bounds every number (`debounce_ms` 1 to 60000,
/// `trial_calls` 0 to 1000000, `rollback_failure_rate` 0 to 1); the
/// arithmetic here still tolerates any value a library user sets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadSettings {
    /// Watch the plugin file's folder and load a new version when the file
    /// changes.
    pub watch: bool,
    /// Quiet time after the last change to the folder before the file is
    /// read, in milliseconds: a copy still being written is not loaded
    /// half-way.
    pub debounce_ms: u64,
    /// Calls a new version is judged on; 0 turns rollback off.
    pub trial_calls: u64,
    /// Fraction of the trial's calls that may fail; more and the version
    /// is rolled back. Between 0 (any failure rolls back) and 1 (never).
    pub rollback_failure_rate: f64,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            watch: true,
            debounce_ms: 200,
            trial_calls: 100,
            rollback_failure_rate: 0.5,
        }
    }
}

impl ReloadSettings {
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    /// The most failed calls a trial tolerates; one more fails it.
    pub(crate) fn tolerated_failures(&self) -> u64 {
        (self.rollback_failure_rate.clamp(0.0, 1.0) * self.trial_calls as f64).floor() as u64
    }
}
