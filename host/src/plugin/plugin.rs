//! A loaded plugin version: compiled, validated and pre-linked, ready to
//! hand out workers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::call_threads::CallThreads;
use super::contract::MessageHandlerPre;
use super::host_state::{PluginIdentity, WorkerState};
use super::limits::PluginLimits;
use super::worker::PluginWorker;

/// A plugin's version: the SHA-256 of its file. Two files with the same
/// bytes are the same version wherever they came from, and any change is a
/// new version; that is what dead-letter headers and reload logs need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginVersion(String);

impl PluginVersion {
    pub(crate) fn from_hex(hex: String) -> Self {
        PluginVersion(hex)
    }

    /// The full hash, 64 hex digits.
    pub fn full(&self) -> &str {
        &self.0
    }
}

/// The first 12 hex digits, like a short git hash: enough to tell versions
/// apart in logs and headers.
impl fmt::Display for PluginVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0[..12])
    }
}

/// One loaded plugin version. Cheap to clone; every clone shares the
/// compiled code.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

/// What compiling and linking a component produced.
pub(crate) struct LinkedComponent {
    pub(crate) pre: MessageHandlerPre<WorkerState>,
    /// Its exports, as "name (kind)".
    pub(crate) exports: Vec<String>,
    /// The interfaces it imports.
    pub(crate) imports: Vec<String>,
    /// Whether the compiled code came from the on-disk cache.
    pub(crate) from_cache: bool,
}

struct PluginInner {
    identity: Arc<PluginIdentity>,
    version: PluginVersion,
    limits: PluginLimits,
    component: LinkedComponent,
    /// Where its calls run; held here so they can run as long as the
    /// version can be called.
    call_threads: Arc<CallThreads>,
    /// Whether a failed `handle-batch` call of this version has been
    /// reported at warn level yet; see [`Plugin::first_batch_fallback`].
    batch_fallback_reported: AtomicBool,
}

impl Plugin {
    pub(crate) fn new(
        identity: Arc<PluginIdentity>,
        version: PluginVersion,
        limits: PluginLimits,
        component: LinkedComponent,
        call_threads: Arc<CallThreads>,
    ) -> Self {
        Plugin {
            inner: Arc::new(PluginInner {
                identity,
                version,
                limits,
                component,
                call_threads,
                batch_fallback_reported: AtomicBool::new(false),
            }),
        }
    }

    /// The plugin's name: its file stem.
    pub fn name(&self) -> &str {
        &self.inner.identity.name
    }

    pub fn version(&self) -> &PluginVersion {
        &self.inner.version
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.inner.limits
    }

    /// The component's exports, as "name (kind)".
    pub fn exports(&self) -> &[String] {
        &self.inner.component.exports
    }

    /// The interfaces the component imports.
    pub fn imports(&self) -> &[String] {
        &self.inner.component.imports
    }

    /// Whether it imports a capability (HTTP): such a plugin is called one
    /// message at a time, so each request is tied to its message's trace
    /// and deadline. It spends its time waiting, where a batch saves nothing.
    pub fn calls_out(&self) -> bool {
        !crate::capability::capabilities_imported(&self.inner.component.imports).is_empty()
    }

    /// Whether the compiled code came from the on-disk cache.
    pub fn loaded_from_cache(&self) -> bool {
        self.inner.component.from_cache
    }

    /// A worker with its own instance (made on first use). Give each call
    /// under way its own worker; instances are not shared.
    pub fn worker(&self) -> PluginWorker {
        PluginWorker::new(self.clone())
    }

    /// True the first time it is asked for this version (by any worker),
    /// false after. A batch that fails is handled again one message at a
    /// time; the first time is worth a warning (a deadline or cap set too
    /// low, a plugin whose batch export is broken), every later one would
    /// only flood the log at the rate of batches.
    pub fn first_batch_fallback(&self) -> bool {
        !self.inner.batch_fallback_reported.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn identity(&self) -> &Arc<PluginIdentity> {
        &self.inner.identity
    }

    pub(crate) fn pre(&self) -> &MessageHandlerPre<WorkerState> {
        &self.inner.component.pre
    }

    /// The threads this version's calls run on.
    pub(crate) fn call_threads(&self) -> &CallThreads {
        &self.inner.call_threads
    }

    /// Where a stage spawns this version's calls.
    pub(crate) fn call_threads_handle(&self) -> tokio::runtime::Handle {
        self.inner.call_threads.handle().clone()
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Plugin")
            .field("name", &self.name())
            .field("version", &self.inner.version)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}
