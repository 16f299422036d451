//! Hot reload: new plugin versions swapped in while messages flow, and
//! rolled back when they fail their first calls.
//!
//! [`PluginWatcher`] loads each new version of the plugin file off the
//! message path and puts it in the [`PluginSlot`]; workers pick it up
//! between calls. The slot puts a new version on trial and restores the
//! previous one if too many of its first calls fail.

mod settings;
mod slot;
mod trial;
mod watcher;

pub use settings::ReloadSettings;
pub use slot::{CurrentPlugin, PluginSlot, ReloadStats};
pub use watcher::{PluginWatcher, WatchError};
