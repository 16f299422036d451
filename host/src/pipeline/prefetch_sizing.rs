//! The consumer's prefetch, sized from the memory budget each time a
//! consumer is created: librdkafka fixes its settings at creation, and one
//! member may be assigned every partition of the input topics, so the
//! prefetch share is divided by their partition count (and leading
//! brokers) as the cluster reports them then.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;

use super::memory_budget::{MemoryBudget, PrefetchLimits};
use crate::kafka::{BrokerProbe, InputLayout};

/// How long reading the input topics' layout may take before the last
/// known one is used instead.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct PrefetchSizing {
    probe: BrokerProbe,
    budget: MemoryBudget,
    /// The layout from the last successful read, for when the cluster
    /// cannot be asked.
    last_layout: Mutex<InputLayout>,
}

impl PrefetchSizing {
    /// `layout`: the input topics' layout read at startup.
    pub(crate) fn new(probe: BrokerProbe, budget: MemoryBudget, layout: InputLayout) -> Self {
        PrefetchSizing {
            probe,
            budget,
            last_layout: Mutex::new(layout),
        }
    }

    /// Set `config`'s prefetch for the input topics as they are now;
    /// returns the limits and the layout they assume.
    pub(crate) fn apply(&self, config: &mut ClientConfig, topics: &[String]) -> (PrefetchLimits, InputLayout) {
        let mut last = self.last_layout.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.probe.input_layout(topics, METADATA_TIMEOUT) {
            Ok(layout) if layout.partitions > 0 => *last = layout,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, partitions = last.partitions, "cannot read the input topics' layout; sizing prefetch for the last known one")
            }
        }
        let layout = *last;
        let limits = self.budget.limit_consumer(config, layout.partitions, layout.brokers);
        tracing::info!(
            budget_mib = self.budget.bytes() / (1024 * 1024),
            partitions = layout.partitions,
            brokers = layout.brokers,
            queued_kbytes = limits.queued_kbytes,
            partition_fetch_bytes = limits.partition_fetch_bytes,
            fetch_bytes = limits.fetch_bytes,
            "prefetch sized from the memory budget"
        );
        (limits, layout)
    }
}
