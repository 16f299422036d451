//! Which plugin version serves messages right now, and the swaps and
//! rollbacks that change it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::settings::ReloadSettings;
use super::trial::{Trial, TrialOutcome};
use crate::observe::metrics::PLUGIN_RELOADS;
use crate::plugin::{Plugin, PluginFailure, PluginVersion, Verdict};

/// The stage's current plugin version, shared by every worker.
///
/// Workers read it lock-free before each call and switch to a new version
/// between calls, never during one: a message is handled start to finish by
/// one version, and its outputs name that version. A newly swapped-in
/// version is on trial for its first calls (see [`ReloadSettings`]); when it
/// fails the trial the version it replaced comes back.
pub struct PluginSlot {
    active: ArcSwap<Active>,
    /// Serialises swaps and rollbacks; holds the versions rolled back, which
    /// are not loaded again while their file stays on disk.
    changes: Mutex<HashSet<PluginVersion>>,
    settings: ReloadSettings,
    reloads: AtomicU64,
    rejected: AtomicU64,
    rollbacks: AtomicU64,
}

struct Active {
    generation: u64,
    plugin: Plugin,
    /// Set while `plugin` is on trial.
    probation: Option<Probation>,
}

struct Probation {
    trial: Trial,
    /// The version to go back to if the trial fails.
    fallback: Plugin,
}

/// The version serving now, and its generation: a worker holding an older
/// generation switches before its next call.
#[derive(Clone)]
pub struct CurrentPlugin {
    pub generation: u64,
    pub plugin: Plugin,
}

/// What hot reload has done since the stage started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadStats {
    /// New versions swapped in.
    pub reloads: u64,
    /// Files refused: not a component, wrong world, failed to start.
    pub rejected: u64,
    /// Versions that failed their trial and were replaced by the previous one.
    pub rolled_back: u64,
}

impl PluginSlot {
    /// A slot serving `plugin`, which is not on trial: it is what the stage
    /// started with.
    pub fn new(plugin: Plugin, settings: ReloadSettings) -> Self {
        PluginSlot {
            active: ArcSwap::from_pointee(Active {
                generation: 0,
                plugin,
                probation: None,
            }),
            changes: Mutex::default(),
            settings,
            reloads: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            rollbacks: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &ReloadSettings {
        &self.settings
    }

    pub fn current(&self) -> CurrentPlugin {
        let active = self.active.load();
        CurrentPlugin {
            generation: active.generation,
            plugin: active.plugin.clone(),
        }
    }

    /// Cheap enough to check before every call.
    pub fn generation(&self) -> u64 {
        self.active.load().generation
    }

    /// Serve `plugin` from now on, on trial. Returns the version it
    /// replaced. A version still on trial is not something to fall back
    /// to, so replacing one keeps its fallback.
    pub fn swap_in(&self, plugin: Plugin) -> Plugin {
        let _changes = self.changes.lock().expect("plugin slot lock");
        let current = self.active.load_full();
        let fallback = match &current.probation {
            Some(probation) if !probation.trial.is_over() => probation.fallback.clone(),
            _ => current.plugin.clone(),
        };
        let trial = Trial::new(self.settings.trial_calls, self.settings.tolerated_failures());
        let probation = (!trial.is_over()).then_some(Probation { trial, fallback });
        self.active.store(std::sync::Arc::new(Active {
            generation: current.generation + 1,
            plugin,
            probation,
        }));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(PLUGIN_RELOADS, "outcome" => "loaded").increment(1);
        current.plugin.clone()
    }

    /// Report the results of one call made with `version`. Results of a
    /// version no longer current, or not on trial, change nothing.
    pub fn record(&self, version: &PluginVersion, results: &[Result<Verdict, PluginFailure>]) {
        let active = self.active.load();
        let Some(probation) = &active.probation else {
            return;
        };
        if active.plugin.version() != version || probation.trial.is_over() {
            return;
        }
        let failures = results.iter().filter(|result| result.is_err()).count() as u64;
        let last_failure = results.iter().rev().find_map(|result| result.as_ref().err());
        let outcome = probation.trial.record(
            results.len() as u64,
            failures,
            last_failure.map(|failure| failure.reason.as_str()),
        );
        match outcome {
            TrialOutcome::Undecided => {}
            TrialOutcome::Passed { calls, failures } => {
                tracing::info!(plugin = active.plugin.name(), version = %version, calls, failures, "new plugin version passed its trial");
            }
            TrialOutcome::Failed {
                calls,
                failures,
                last_failure,
            } => self.roll_back(active.generation, calls, failures, &last_failure),
        }
    }

    /// Whether `version` failed its trial here; its file is then ignored.
    pub fn was_rolled_back(&self, version: &PluginVersion) -> bool {
        self.changes.lock().expect("plugin slot lock").contains(version)
    }

    pub(crate) fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(PLUGIN_RELOADS, "outcome" => "rejected").increment(1);
    }

    pub fn stats(&self) -> ReloadStats {
        ReloadStats {
            reloads: self.reloads.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            rolled_back: self.rollbacks.load(Ordering::Relaxed),
        }
    }

    fn roll_back(&self, failed_generation: u64, calls: u64, failures: u64, last_failure: &str) {
        let mut rolled_back = self.changes.lock().expect("plugin slot lock");
        let current = self.active.load_full();
        // A newer version may have arrived since the failing call; it has
        // its own trial.
        let (true, Some(probation)) = (current.generation == failed_generation, &current.probation) else {
            return;
        };
        let failed = &current.plugin;
        let fallback = probation.fallback.clone();
        tracing::error!(
            plugin = failed.name(),
            failed_version = %failed.version(),
            restored_version = %fallback.version(),
            calls,
            failures,
            last_failure,
            "new plugin version failed its trial; rolled back to the previous version"
        );
        rolled_back.insert(failed.version().clone());
        self.active.store(std::sync::Arc::new(Active {
            generation: current.generation + 1,
            plugin: fallback,
            probation: None,
        }));
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(PLUGIN_RELOADS, "outcome" => "rolled_back").increment(1);
    }
}
