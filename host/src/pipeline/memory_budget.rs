//! One memory budget per stage (`stage.memory_budget_mib`), split between
//! the three places a stage keeps records: librdkafka's prefetch, messages
//! taken but not yet finished, and the producer's queue. The split is fixed
//! so that a user reads the stage's record memory off one key:
//!
//! | share       | of the budget | bounds                                           |
//! |-------------|---------------|--------------------------------------------------|
//! | prefetch    | 1/2           | `queued.max.messages.kbytes` per input partition, half of it; `max.partition.fetch.bytes` and `fetch.max.bytes` (per broker) for the other half |
//! | in flight   | 3/8           | bytes of records taken and not finished, stage-wide |
//! | producer    | 1/8           | `queue.buffering.max.kbytes`                     |
//!
//! Pure arithmetic: the consumer and producer settings are derived here and
//! applied by the stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use serde_json::{Value, json};

use super::in_flight_bytes::InFlightBytes;
use crate::kafka::InputLayout;

/// The smallest prefetch a partition is given, however many partitions
/// share the budget: below this a partition fetches too little per request
/// to keep up. With more input partitions than
/// `prefetch share / 128 KiB`, prefetch may exceed its share by this floor
/// per partition.
const MIN_PER_PARTITION_BYTES: u64 = 64 * 1024;

/// librdkafka's upper bound for `queued.max.messages.kbytes`.
const MAX_QUEUED_KBYTES: u64 = 2_097_151;

/// librdkafka's upper bound for `queue.buffering.max.kbytes`.
const MAX_PRODUCER_KBYTES: u64 = 2_147_483_647;

/// librdkafka's default `max.partition.fetch.bytes`, used when the user's
/// settings do not name one.
const DEFAULT_PARTITION_FETCH_BYTES: u64 = 1_048_576;

/// `fetch.queue.backoff.ms` unless configured.
const QUEUE_FULL_BACKOFF_MS: u64 = 50;

/// librdkafka's default `fetch.max.bytes`.
const DEFAULT_FETCH_BYTES: u64 = 52_428_800;

/// The smallest `fetch.max.bytes` set: librdkafka raises it to
/// `message.max.bytes` (1,000,000 by default) anyway, so that one record
/// always fits a response.
const MIN_FETCH_BYTES: u64 = 1024 * 1024;

/// The stage's memory budget for records, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryBudget {
    bytes: u64,
}

/// What librdkafka may hold fetched. A partition is fetched only while its
/// local queue is under `queued_kbytes`, and a response may add to it on
/// top: by Kafka's rules at most `partition_fetch_bytes` per partition,
/// and in any case at most `fetch_bytes` per response (some brokers, tansu
/// among them, fill a response up to that from any partition). So the most
/// held is `partitions × queued + brokers × fetch_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrefetchLimits {
    /// `queued.max.messages.kbytes`: split partition queues apply it per
    /// partition.
    pub(crate) queued_kbytes: u64,
    /// `max.partition.fetch.bytes`. A single record larger than this is
    /// still fetched whole (KIP-74).
    pub(crate) partition_fetch_bytes: u64,
    /// `fetch.max.bytes`: one response, of which each broker has at most
    /// one under way.
    pub(crate) fetch_bytes: u64,
}

impl PrefetchLimits {
    /// Bytes one partition's queue stands for, with its part of a
    /// response: what records handed over for it may add up to.
    pub(crate) fn partition_bytes(&self) -> u64 {
        self.queued_kbytes * 1024 + self.partition_fetch_bytes
    }

    /// The most librdkafka holds fetched for `partitions` partitions led by
    /// `brokers` brokers.
    pub(crate) fn total_bytes(&self, partitions: usize, brokers: usize) -> u64 {
        self.queued_kbytes * 1024 * partitions.max(1) as u64 + self.fetch_bytes * brokers.max(1) as u64
    }
}

impl MemoryBudget {
    pub(crate) fn from_mib(mib: u64) -> Self {
        MemoryBudget {
            bytes: mib.saturating_mul(1024 * 1024),
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What librdkafka may prefetch for all input partitions together.
    pub(crate) fn prefetch_bytes(&self) -> u64 {
        self.bytes / 2
    }

    /// Bytes of records taken from the partitions' queues and not yet
    /// finished (being handled, waiting for a retry, a dedup claim or an
    /// acknowledgement), across all partitions.
    pub(crate) fn in_flight_bytes(&self) -> u64 {
        self.bytes / 8 * 3
    }

    /// What the producer may hold queued and unacknowledged.
    pub(crate) fn producer_bytes(&self) -> u64 {
        self.bytes / 8
    }

    /// The prefetch when `partitions` partitions led by `brokers` brokers
    /// share it (the input topics' counts: one member may be assigned all
    /// of them). Half goes to the partitions' queues, half to the responses
    /// under way. `configured` holds the user's or profile's librdkafka
    /// values, if any: a smaller one is kept, a larger one is lowered to
    /// the budget.
    pub(crate) fn prefetch(&self, partitions: usize, brokers: usize, configured: ConfiguredFetch) -> PrefetchLimits {
        let per_partition = (self.prefetch_bytes() / partitions.max(1) as u64).max(MIN_PER_PARTITION_BYTES);
        let half = per_partition / 2;
        let queued_kbytes = (half / 1024)
            .min(configured.queued_kbytes.unwrap_or(u64::MAX))
            .clamp(1, MAX_QUEUED_KBYTES);
        let partition_fetch_bytes = half
            .min(
                configured
                    .partition_fetch_bytes
                    .unwrap_or(DEFAULT_PARTITION_FETCH_BYTES),
            )
            .max(1);
        // librdkafka keeps a whole response in memory while any of its
        // records waits in a queue, so a response is kept no larger than
        // one partition's allowance: a slow partition then pins little.
        let fetch_bytes = half
            .min(self.prefetch_bytes() / 2 / brokers.max(1) as u64)
            .min(configured.fetch_bytes.unwrap_or(DEFAULT_FETCH_BYTES))
            .max(MIN_FETCH_BYTES);
        PrefetchLimits {
            queued_kbytes,
            partition_fetch_bytes,
            fetch_bytes,
        }
    }

    /// The producer's `queue.buffering.max.kbytes`: the producer share, or
    /// the configured value if smaller.
    pub(crate) fn producer_queue_kbytes(&self, configured: Option<u64>) -> u64 {
        (self.producer_bytes() / 1024)
            .min(configured.unwrap_or(u64::MAX))
            .clamp(1, MAX_PRODUCER_KBYTES)
    }
}

impl MemoryBudget {
    /// Set the consumer's prefetch for `partitions` input partitions led
    /// by `brokers` brokers, keeping a smaller value the user (or profile)
    /// configured.
    pub(crate) fn limit_consumer(
        &self,
        config: &mut ClientConfig,
        partitions: usize,
        brokers: usize,
    ) -> PrefetchLimits {
        let configured = ConfiguredFetch {
            queued_kbytes: configured_number(config, "queued.max.messages.kbytes"),
            partition_fetch_bytes: configured_number(config, "max.partition.fetch.bytes"),
            fetch_bytes: configured_number(config, "fetch.max.bytes"),
        };
        let limits = self.prefetch(partitions, brokers, configured);
        config.set("queued.max.messages.kbytes", limits.queued_kbytes.to_string());
        config.set("max.partition.fetch.bytes", limits.partition_fetch_bytes.to_string());
        config.set("fetch.max.bytes", limits.fetch_bytes.to_string());
        // A partition whose queue is full is looked at again after this;
        // librdkafka's 1 s suits deep queues, and would starve the small
        // ones a budget shared by many partitions gives.
        if config.get("fetch.queue.backoff.ms").is_none() {
            config.set("fetch.queue.backoff.ms", QUEUE_FULL_BACKOFF_MS.to_string());
        }
        // A broker holds a fetch until it has `fetch.min.bytes`; one at or
        // over the response's size would make every fetch wait it out.
        if let Some(min_bytes) = configured_number(config, "fetch.min.bytes")
            && min_bytes > limits.fetch_bytes / 2
        {
            config.set("fetch.min.bytes", (limits.fetch_bytes / 2).to_string());
        }
        limits
    }

    /// Set the producer's queue to its share, keeping a smaller configured
    /// value; returns it in KiB.
    pub(crate) fn limit_producer(&self, config: &mut ClientConfig) -> u64 {
        let kbytes = self.producer_queue_kbytes(configured_number(config, "queue.buffering.max.kbytes"));
        config.set("queue.buffering.max.kbytes", kbytes.to_string());
        kbytes
    }
}

/// The prefetch settings already given, if any.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConfiguredFetch {
    pub(crate) queued_kbytes: Option<u64>,
    pub(crate) partition_fetch_bytes: Option<u64>,
    pub(crate) fetch_bytes: Option<u64>,
}

/// A numeric librdkafka property, if it is set and a number (librdkafka
/// rejects anything else when the client is created).
fn configured_number(config: &ClientConfig, key: &str) -> Option<u64> {
    config.get(key).and_then(|value| value.trim().parse().ok())
}

/// The budget as the running stage uses it, for `/stats`.
#[derive(Debug)]
pub(crate) struct MemoryUse {
    budget: MemoryBudget,
    in_flight: Arc<InFlightBytes>,
    /// The prefetch settings and the input layout they were sized for,
    /// once a consumer is created.
    prefetch: Mutex<Option<(PrefetchLimits, InputLayout)>>,
    producer_queue_kbytes: AtomicU64,
}

impl MemoryUse {
    pub(crate) fn new(budget: MemoryBudget) -> Self {
        MemoryUse {
            budget,
            in_flight: Arc::new(InFlightBytes::new(budget.in_flight_bytes())),
            prefetch: Mutex::new(None),
            producer_queue_kbytes: AtomicU64::new(0),
        }
    }

    pub(crate) fn budget(&self) -> MemoryBudget {
        self.budget
    }

    pub(crate) fn in_flight(&self) -> &Arc<InFlightBytes> {
        &self.in_flight
    }

    pub(crate) fn prefetch_sized(&self, limits: PrefetchLimits, layout: InputLayout) {
        *self.prefetch.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((limits, layout));
    }

    pub(crate) fn producer_sized(&self, kbytes: u64) {
        self.producer_queue_kbytes.store(kbytes, Ordering::Relaxed);
    }

    /// The prefetch settings of the current consumer and the layout they
    /// were sized for; `None` before the first consumer.
    pub(crate) fn prefetch(&self) -> Option<(PrefetchLimits, InputLayout)> {
        *self.prefetch.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn report(&self) -> Value {
        let prefetch = self.prefetch();
        json!({
            "budget_mib": self.budget.bytes() / (1024 * 1024),
            "prefetch": prefetch.map(|(limits, InputLayout { partitions, brokers })| json!({
                "sized_for_partitions": partitions,
                "sized_for_brokers": brokers,
                "queued_kbytes_per_partition": limits.queued_kbytes,
                "fetch_bytes_per_partition": limits.partition_fetch_bytes,
                "fetch_bytes_per_response": limits.fetch_bytes,
                "limit_bytes": limits.total_bytes(partitions, brokers),
            })),
            "in_flight": {
                "used_bytes": self.in_flight.used(),
                "limit_bytes": self.in_flight.limit(),
            },
            "producer_queue_kbytes": self.producer_queue_kbytes.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_shares_add_up_to_the_budget() {
        let budget = MemoryBudget::from_mib(1024);
        assert_eq!(
            budget.prefetch_bytes() + budget.in_flight_bytes() + budget.producer_bytes(),
            budget.bytes()
        );
        assert_eq!(budget.prefetch_bytes(), 512 * MIB);
        assert_eq!(budget.in_flight_bytes(), 384 * MIB);
        assert_eq!(budget.producer_bytes(), 128 * MIB);
    }

    #[test]
    fn prefetch_of_all_partitions_stays_within_its_share() {
        let budget = MemoryBudget::from_mib(256);
        let configured = ConfiguredFetch {
            partition_fetch_bytes: Some(10 * MIB),
            fetch_bytes: Some(100 * MIB),
            ..ConfiguredFetch::default()
        };
        for partitions in [1, 3, 12, 64, 1000] {
            for brokers in [1, 3] {
                let limits = budget.prefetch(partitions, brokers, configured);
                assert!(
                    limits.total_bytes(partitions, brokers) <= budget.prefetch_bytes(),
                    "{partitions} partitions, {brokers} brokers: {limits:?}"
                );
                assert!(
                    limits.partition_bytes() * partitions as u64 <= budget.prefetch_bytes(),
                    "{partitions} partitions: {limits:?}"
                );
            }
        }
    }

    #[test]
    fn sixty_four_partitions_share_the_prefetch() {
        let configured = ConfiguredFetch {
            partition_fetch_bytes: Some(10 * MIB),
            fetch_bytes: Some(100 * MIB),
            ..ConfiguredFetch::default()
        };
        let limits = MemoryBudget::from_mib(256).prefetch(64, 1, configured);
        // 128 MiB / 64 = 2 MiB each: half queued, half one fetch; a
        // response is no larger than one partition's half.
        assert_eq!(limits.queued_kbytes, 1024);
        assert_eq!(limits.partition_fetch_bytes, MIB);
        assert_eq!(limits.fetch_bytes, MIB);
    }

    #[test]
    fn a_smaller_configured_value_is_kept() {
        let configured = ConfiguredFetch {
            queued_kbytes: Some(1024),
            fetch_bytes: Some(2 * MIB),
            ..ConfiguredFetch::default()
        };
        let limits = MemoryBudget::from_mib(1024).prefetch(1, 1, configured);
        assert_eq!(limits.queued_kbytes, 1024);
        assert_eq!(limits.partition_fetch_bytes, DEFAULT_PARTITION_FETCH_BYTES);
        assert_eq!(limits.fetch_bytes, 2 * MIB);
    }

    #[test]
    fn many_partitions_get_the_floor() {
        let limits = MemoryBudget::from_mib(64).prefetch(100_000, 1, ConfiguredFetch::default());
        assert_eq!(limits.partition_bytes(), MIN_PER_PARTITION_BYTES);
        assert_eq!(limits.fetch_bytes, MIN_FETCH_BYTES);
    }

    #[test]
    fn a_response_holds_at_least_one_ordinary_record() {
        let limits = MemoryBudget::from_mib(64).prefetch(1, 100, ConfiguredFetch::default());
        assert_eq!(limits.fetch_bytes, MIN_FETCH_BYTES);
    }

    #[test]
    fn zero_partitions_or_brokers_count_as_one() {
        let budget = MemoryBudget::from_mib(64);
        assert_eq!(
            budget.prefetch(0, 0, ConfiguredFetch::default()),
            budget.prefetch(1, 1, ConfiguredFetch::default())
        );
    }

    #[test]
    fn the_producer_queue_is_its_share_or_less() {
        let budget = MemoryBudget::from_mib(1024);
        assert_eq!(budget.producer_queue_kbytes(None), 128 * 1024);
        assert_eq!(budget.producer_queue_kbytes(Some(4096)), 4096);
        assert_eq!(budget.producer_queue_kbytes(Some(10_000_000)), 128 * 1024);
    }

    #[test]
    fn client_settings_are_limited_and_smaller_ones_kept() {
        let budget = MemoryBudget::from_mib(256);
        let mut consumer = ClientConfig::new();
        consumer.set("queued.max.messages.kbytes", "524288");
        consumer.set("max.partition.fetch.bytes", "10485760");
        consumer.set("fetch.max.bytes", "104857600");
        consumer.set("fetch.min.bytes", "1048576");
        budget.limit_consumer(&mut consumer, 64, 1);
        assert_eq!(consumer.get("queued.max.messages.kbytes"), Some("1024"));
        assert_eq!(consumer.get("max.partition.fetch.bytes"), Some("1048576"));
        assert_eq!(
            consumer.get("fetch.max.bytes"),
            Some("1048576"),
            "one partition's share"
        );
        assert_eq!(
            consumer.get("fetch.min.bytes"),
            Some("524288"),
            "under the response size"
        );
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("50"));

        let mut producer = ClientConfig::new();
        producer.set("queue.buffering.max.kbytes", " 1000 ");
        assert_eq!(budget.limit_producer(&mut producer), 1000);
        let mut producer = ClientConfig::new();
        assert_eq!(budget.limit_producer(&mut producer), 32 * 1024);
        assert_eq!(producer.get("queue.buffering.max.kbytes"), Some("32768"));
    }
}
