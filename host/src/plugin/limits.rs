//! What a plugin instance may consume, and how the runtime enforces it.

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

/// Per-instance limits, from the stage file's `[plugin.limits]` table.
///
/// Defaults suit a typical transform: generous for real work, small enough
/// that one misbehaving plugin cannot starve the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Largest size any one linear memory of an instance may grow to, in MiB.
    pub memory_mib: u64,
    /// Wall-clock time one `handle` or `handle-batch` call may take, in
    /// milliseconds, enforced by epoch interruption.
    pub deadline_ms: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_mib: 64,
            deadline_ms: 1000,
        }
    }
}

impl PluginLimits {
    pub(crate) fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }
}

/// Caps memory growth and remembers that it refused some, so a failed call
/// can be reported as "exceeded its memory limit" rather than as whatever
/// trap the guest's allocator raised when its grow request was denied. Also
/// tracks the largest memory granted, so a worker can retire an instance
/// that is creeping towards the cap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    cap_bytes: usize,
    refused_growth: bool,
    largest_memory_bytes: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(cap_bytes: usize) -> Self {
        MemoryLimiter {
            cap_bytes,
            refused_growth: false,
            largest_memory_bytes: 0,
        }
    }

    pub(crate) fn cap_bytes(&self) -> usize {
        self.cap_bytes
    }

    /// Size of the instance's largest linear memory (memories only grow).
    pub(crate) fn largest_memory_bytes(&self) -> usize {
        self.largest_memory_bytes
    }

    /// Whether a grow was refused since the last [`MemoryLimiter::reset`].
    pub(crate) fn refused_growth(&self) -> bool {
        self.refused_growth
    }

    pub(crate) fn reset(&mut self) {
        self.refused_growth = false;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.cap_bytes && maximum.is_none_or(|maximum| desired <= maximum);
        if allowed {
            self.largest_memory_bytes = self.largest_memory_bytes.max(desired);
        } else {
            self.refused_growth = true;
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real
        // plugin and keeps a runaway table from eating host memory.
        Ok(desired <= 1_000_000 && maximum.is_none_or(|maximum| desired <= maximum))
    }
}
