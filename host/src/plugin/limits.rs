//! What a plugin instance may consume, and how the runtime enforces it.

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

/// Per-instance limits, from the stage file's `[plugin.limits]` table.
///
/// Defaults suit a typical transform: generous for real work, small enough
/// that one misbehaving plugin cannot starve the process. The stage-file
/// loader bounds each (`memory_mib` 1 to 4096, `deadline_ms` 1 to 600000,
/// `batch_deadline_cap_ms` 1 to 3600000); the arithmetic here saturates
/// for any value a library user sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Largest size any one linear memory of an instance may grow to, in MiB.
    pub memory_mib: u64,
    /// Wall-clock time one `handle` call may take, in milliseconds,
    /// enforced by epoch interruption. A `handle-batch` call gets this much
    /// per message, see [`PluginLimits::batch_deadline_ms`].
    pub deadline_ms: u64,
    /// The most wall-clock time one `handle-batch` call may take, in
    /// milliseconds, however many messages it carries. Without a cap a
    /// runaway plugin would hold its partition for `deadline_ms` times the
    /// batch size before the host noticed.
    pub batch_deadline_cap_ms: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_mib: 64,
            deadline_ms: 1000,
            batch_deadline_cap_ms: 30_000,
        }
    }
}

impl PluginLimits {
    pub(crate) fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    /// The deadline of a `handle-batch` call on `messages` messages: the
    /// per-message deadline for each, so a plugin that keeps within its
    /// deadline per message keeps within it per batch too (one deadline for
    /// the whole batch would time out every batch of a plugin that is merely
    /// slow, and each timeout costs the batch's work twice over when the
    /// messages are then handled one by one). Capped by
    /// `batch_deadline_cap_ms`, but never below one message's deadline.
    pub fn batch_deadline_ms(&self, messages: usize) -> u64 {
        let messages = u64::try_from(messages).unwrap_or(u64::MAX).max(1);
        let cap = self.batch_deadline_cap_ms.max(self.deadline_ms);
        self.deadline_ms.saturating_mul(messages).min(cap)
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

#[cfg(test)]
mod tests {
    use super::PluginLimits;

    fn limits(deadline_ms: u64, batch_deadline_cap_ms: u64) -> PluginLimits {
        PluginLimits {
            deadline_ms,
            batch_deadline_cap_ms,
            ..PluginLimits::default()
        }
    }

    #[test]
    fn a_batch_gets_the_message_deadline_per_message_up_to_the_cap() {
        let limits = limits(20, 5000);
        assert_eq!(limits.batch_deadline_ms(1), 20);
        assert_eq!(limits.batch_deadline_ms(100), 2000);
        assert_eq!(limits.batch_deadline_ms(250), 5000);
        assert_eq!(limits.batch_deadline_ms(10_000), 5000);
    }

    #[test]
    fn a_batch_never_gets_less_than_one_message_deadline() {
        let limits = limits(30_000, 1000);
        assert_eq!(limits.batch_deadline_ms(0), 30_000);
        assert_eq!(limits.batch_deadline_ms(2), 30_000);
    }

    #[test]
    fn extreme_sizes_saturate_instead_of_overflowing() {
        let limits = limits(u64::MAX / 2, u64::MAX);
        assert_eq!(limits.batch_deadline_ms(usize::MAX), u64::MAX);
        assert_eq!(PluginLimits::default().batch_deadline_ms(usize::MAX), 30_000);
    }
}
