//! Watching the plugin file and loading each new version off the message
//! path.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use sha2::{Digest, Sha256};

use super::slot::PluginSlot;
use crate::plugin::{LoadError, Plugin, PluginFailure, PluginRuntime, PluginSettings, PluginVersion};

/// Why the watch could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir} for new plugin versions: {source}")]
pub struct WatchError {
    dir: PathBuf,
    source: notify_debouncer_full::notify::Error,
}

/// Why a new plugin file was not swapped in. The running version keeps
/// serving either way.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path}: the plugin failed to start: {failure}")]
    Start { path: PathBuf, failure: PluginFailure },
}

/// Watches the folder holding the plugin file and swaps each new version of
/// the file into a [`PluginSlot`].
///
/// The folder, not the file, is watched, so every way of replacing a file
/// is seen: written in place, renamed into place (the safe way to deploy),
/// or deleted and created again by an editor. Events are debounced, and the
/// file is judged by its content once the folder has been quiet: the same
/// bytes again are ignored; a file that does not load, is not a component of
/// the world, or fails to start is rejected with an error log; a deleted
/// file leaves the running version in place with a warning. Loading (and,
/// for a version not in the compiled cache, compiling) happens on the
/// watcher's own thread, never on a message's path.
///
/// Stops watching when dropped.
pub struct PluginWatcher {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
}

impl PluginWatcher {
    /// Watch `path`, the file `slot`'s plugin was loaded from; new versions
    /// are loaded by `runtime` with the stage's `settings`.
    pub fn start(
        runtime: Arc<PluginRuntime>,
        path: &Path,
        settings: PluginSettings,
        slot: Arc<PluginSlot>,
    ) -> Result<Self, WatchError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let watch_error = |source| WatchError {
            dir: dir.clone(),
            source,
        };
        let (sender, events) = channel();
        let mut debouncer = new_debouncer(slot.settings().debounce(), None, sender).map_err(watch_error)?;
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;

        let reloader = Reloader {
            file_name: path.file_name().map(ToOwned::to_owned).unwrap_or_default(),
            name: slot.current().plugin.name().to_owned(),
            path: path.to_owned(),
            runtime,
            settings,
            slot,
            missing: false,
            last_rejected: None,
        };
        std::thread::Builder::new()
            .name("sluice-plugin-watch".to_owned())
            .spawn(move || reloader.run(events))
            .map_err(|error| watch_error(error.into()))?;
        tracing::info!(dir = %dir.display(), file = %path.display(), "watching for new plugin versions");
        Ok(PluginWatcher {
            debouncer: Some(debouncer),
        })
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        // Stopping the debouncer drops its event sender, which ends the
        // reloader's thread once any load under way is done.
        if let Some(debouncer) = self.debouncer.take() {
            debouncer.stop_nonblocking();
        }
    }
}

/// The watcher thread's state: what it last saw of the file.
struct Reloader {
    path: PathBuf,
    file_name: OsString,
    name: String,
    runtime: Arc<PluginRuntime>,
    settings: PluginSettings,
    slot: Arc<PluginSlot>,
    /// The file is gone (warned once).
    missing: bool,
    /// Content hash of the last file rejected, so it is reported once.
    last_rejected: Option<String>,
}

impl Reloader {
    fn run(mut self, events: Receiver<DebounceEventResult>) {
        for result in events {
            match result {
                Ok(events) => {
                    let touches_file = events.iter().any(|event| {
                        event.need_rescan()
                            || event
                                .paths
                                .iter()
                                .any(|path| path.file_name() == Some(self.file_name.as_os_str()))
                    });
                    if touches_file {
                        self.reconsider();
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!(%error, "watching the plugin folder failed; a new version may be missed");
                    }
                }
            }
        }
    }

    /// Look at the file as it is now and act on it.
    fn reconsider(&mut self) {
        let running = self.slot.current().plugin;
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if !self.missing {
                    tracing::warn!(file = %self.path.display(), version = %running.version(), "the plugin file was removed; the running version keeps serving");
                }
                self.missing = true;
                return;
            }
            Err(error) => {
                tracing::error!(file = %self.path.display(), %error, version = %running.version(), "cannot read the plugin file; the running version keeps serving");
                return;
            }
        };
        self.missing = false;
        let content_hash = hex::encode(Sha256::digest(&bytes));
        if running.version().full() == content_hash || self.last_rejected.as_ref() == Some(&content_hash) {
            return;
        }
        if self
            .slot
            .was_rolled_back(&PluginVersion::from_hex(content_hash.clone()))
        {
            tracing::warn!(file = %self.path.display(), version = %&content_hash[..12], "this plugin version failed its trial earlier; not loading it again");
            self.last_rejected = Some(content_hash);
            return;
        }

        let started = Instant::now();
        match self.load(&bytes) {
            Ok(plugin) => {
                let replaced = self.slot.swap_in(plugin.clone());
                self.last_rejected = None;
                tracing::info!(
                    plugin = plugin.name(),
                    from = %replaced.version(),
                    to = %plugin.version(),
                    cached = plugin.loaded_from_cache(),
                    load_ms = started.elapsed().as_millis() as u64,
                    "plugin reloaded; each worker switches before its next call"
                );
            }
            Err(rejection) => {
                self.slot.count_rejected();
                self.last_rejected = Some(content_hash);
                tracing::error!(error = %rejection, version = %running.version(), "new plugin file rejected; the running version keeps serving");
            }
        }
    }

    /// Compile (or fetch from the cache), validate and start one instance,
    /// so a version that cannot serve is never swapped in.
    fn load(&self, bytes: &[u8]) -> Result<Plugin, Rejection> {
        let plugin = self
            .runtime
            .load_bytes(&self.path, &self.name, bytes, self.settings.clone())?;
        plugin.worker().warm_up_blocking().map_err(|failure| Rejection::Start {
            path: self.path.clone(),
            failure,
        })?;
        Ok(plugin)
    }
}
