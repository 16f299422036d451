//! The consumer's prefetch, sized from the memory budget each time a
//! consumer is created: librdkafka fixes its settings at creation, and one
//! member may be assigned every partition of the input topics, so the
//! prefetch share is divided by their partition count (and leading
//! brokers) as the cluster reports them then.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;

use super::memory_budget::MemoryUse;
use crate::kafka::{BrokerProbe, InputLayout};

/// How long reading the input topics' layout may take before the last
/// known one is used instead.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct PrefetchSizing {
    probe: BrokerProbe,
    /// The budget, and where the sizing is recorded for `/stats` and the
    /// consumer thread.
    memory: Arc<MemoryUse>,
    known: Mutex<KnownLayout>,
}

/// The layout from the last successful read, for when the cluster cannot
/// be asked.
struct KnownLayout {
    layout: InputLayout,
    /// Read at startup and not used yet: the first consumer needs no
    /// second read.
    fresh: bool,
}

impl PrefetchSizing {
    /// `layout`: the input topics' layout read at startup.
    pub(crate) fn new(probe: BrokerProbe, memory: Arc<MemoryUse>, layout: InputLayout) -> Self {
        PrefetchSizing {
            probe,
            memory,
            known: Mutex::new(KnownLayout { layout, fresh: true }),
        }
    }

    /// Set `config`'s prefetch for the input topics as they are now, and
    /// record it in the stage's [`MemoryUse`].
    pub(crate) fn apply(&self, config: &mut ClientConfig, topics: &[String]) {
        let mut known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !std::mem::take(&mut known.fresh) {
            match self.probe.input_layout(topics, METADATA_TIMEOUT) {
                Ok(layout) if layout.partitions > 0 => known.layout = layout,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, partitions = known.layout.partitions, "cannot read the input topics' layout; sizing prefetch for the last known one")
                }
            }
        }
        let layout = known.layout;
        let budget = self.memory.budget();
        let limits = budget.limit_consumer(config, layout.partitions, layout.brokers);
        self.memory.prefetch_sized(limits, layout);
        tracing::info!(
            budget_mib = budget.bytes() / (1024 * 1024),
            partitions = layout.partitions,
            brokers = layout.brokers,
            queued_kbytes = limits.queued_kbytes,
            partition_fetch_bytes = limits.partition_fetch_bytes,
            fetch_bytes = limits.fetch_bytes,
            "prefetch sized from the memory budget"
        );
    }
}
