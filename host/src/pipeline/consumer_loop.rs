//! The consumer thread: serves the consumer group (rebalances run here),
//! starts and stops a worker per assigned partition, and commits what the
//! workers report finished.
//!
//! Records do not pass through this thread: each worker reads its
//! partition's own feed when it has room, which is all the backpressure
//! there is (see `kafka::PartitionFeed`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::counters::StageCounters;
use super::partition_worker::{WorkerContext, WorkerHandle, spawn_worker};
use crate::kafka::{
    ConsumedRecord, ConsumerErrorKind, ConsumerStatistics, KafkaError, PartitionFeed, RebalanceListener,
    SourceConsumer, TopicPartition,
};

/// How long one poll of the group waits for an event; bounds how quickly
/// the loop notices a stop request.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);

/// The workers of the partitions this member owns.
pub(crate) struct WorkerRegistry {
    partitions: Mutex<HashMap<TopicPartition, PartitionEntry>>,
    context: Arc<WorkerContext>,
}

struct PartitionEntry {
    worker: WorkerHandle,
    last_committed: Option<i64>,
}

impl WorkerRegistry {
    pub(crate) fn new(context: Arc<WorkerContext>) -> Self {
        WorkerRegistry {
            partitions: Mutex::new(HashMap::new()),
            context,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TopicPartition, PartitionEntry>> {
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Give a record that arrived on the shared queue to its partition's
    /// worker. Fails if the worker has died. A record of a partition this
    /// member no longer owns is dropped: it was never taken, so it stays
    /// uncommitted for the partition's new owner.
    fn hand_over(&self, record: ConsumedRecord) -> Result<(), String> {
        let partitions = self.lock();
        let Some(entry) = partitions.get(&record.partition) else {
            tracing::debug!(partition = %record.partition, offset = record.offset, "record of a partition no longer owned; left to its next owner");
            return Ok(());
        };
        let partition = record.partition.clone();
        entry
            .worker
            .hand_over
            .send(record)
            .map_err(|_| format!("the worker of {partition} stopped unexpectedly"))
    }

    /// Commit every partition's finished offset that moved since the last
    /// commit.
    fn commit(&self, consumer: &SourceConsumer<Self>, sync: bool) {
        let mut partitions = self.lock();
        let offsets: Vec<(TopicPartition, i64)> = partitions
            .iter()
            .filter_map(|(partition, entry)| {
                let committable = entry.worker.shared.committable()?;
                (entry.last_committed != Some(committable)).then(|| (partition.clone(), committable))
            })
            .collect();
        if offsets.is_empty() {
            return;
        }
        match consumer.commit(&offsets, sync) {
            Ok(()) => {
                for (partition, offset) in offsets {
                    if let Some(entry) = partitions.get_mut(&partition) {
                        entry.last_committed = Some(offset);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "offset commit failed; it is retried at the next interval"),
        }
    }

    /// Stop these partitions' workers, letting in-flight work finish within
    /// the drain timeout, and return their final committable offsets.
    fn stop_workers(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let entries: Vec<(TopicPartition, PartitionEntry)> = {
            let mut registered = self.lock();
            partitions
                .iter()
                .filter_map(|partition| registered.remove(partition).map(|entry| (partition.clone(), entry)))
                .collect()
        };
        for (_, entry) in &entries {
            entry.worker.stop.cancel();
        }
        let grace = self.context.drain_timeout + Duration::from_secs(1);
        let mut offsets = Vec::new();
        for (partition, entry) in entries {
            let task = entry.worker.task;
            if self
                .context
                .runtime
                .block_on(async move { tokio::time::timeout(grace, task).await })
                .is_err()
            {
                tracing::warn!(%partition, "worker did not stop in time; its unfinished messages stay uncommitted");
            }
            if let Some(offset) = entry.worker.shared.committable() {
                offsets.push((partition, offset));
            }
        }
        offsets
    }

    fn all_partitions(&self) -> Vec<TopicPartition> {
        self.lock().keys().cloned().collect()
    }
}

impl RebalanceListener for WorkerRegistry {
    fn partitions_revoked(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let offsets = self.stop_workers(partitions);
        self.context.health.set_assigned_partitions(self.lock().len());
        offsets
    }

    fn statistics(&self, statistics: ConsumerStatistics) {
        self.context.health.set_connected(statistics.brokers_up > 0);
        for offsets in statistics.partitions {
            let partition = &offsets.partition;
            self.context.partitions.offsets(
                &partition.topic,
                partition.partition,
                offsets.committed,
                offsets.high_watermark,
                offsets.log_start,
            );
        }
    }

    fn client_error(&self, error: &KafkaError, kind: ConsumerErrorKind) {
        self.context.health.connection_error();
        match kind {
            ConsumerErrorKind::AllBrokersDown => self.context.health.set_connected(false),
            // Other client errors reach the consumer loop as poll errors
            // too, and are counted there; a fatal one may not.
            ConsumerErrorKind::Fatal => self.context.consumer_errors.record(error),
            ConsumerErrorKind::Connection | ConsumerErrorKind::Other => {}
        }
    }

    fn partitions_assigned(&self, feeds: Vec<PartitionFeed>) {
        let mut registered = self.lock();
        for feed in feeds {
            let partition = feed.partition().clone();
            if registered.contains_key(&partition) {
                tracing::warn!(%partition, "assigned a partition that already has a worker; keeping the running one");
                continue;
            }
            let entry = PartitionEntry {
                worker: spawn_worker(feed, self.context.clone()),
                last_committed: None,
            };
            registered.insert(partition, entry);
        }
        // An assignment comes from the group coordinator: a broker answers.
        self.context.health.set_connected(true);
        self.context.consumer_errors.healthy();
        self.context.health.set_assigned_partitions(registered.len());
    }
}

/// When the consumer thread should stop on its own.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StopWhen {
    /// Only when told to (a signal).
    Told,
    /// Once this many messages are finished (the embedded demo).
    Finished(u64),
}

/// Creates the stage's consumer and subscribes it: at startup, and again
/// whenever the consumer is recreated.
pub(crate) type Subscribe = Box<dyn Fn() -> Result<SourceConsumer<WorkerRegistry>, KafkaError> + Send + Sync>;

/// The consumer thread's work.
pub(crate) struct ConsumerLoop {
    pub(crate) registry: Arc<WorkerRegistry>,
    pub(crate) subscribe: Subscribe,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) stop_when: StopWhen,
    pub(crate) commit_interval: Duration,
    pub(crate) counters: Arc<StageCounters>,
}

impl ConsumerLoop {
    /// Serve the group and commit until `shutdown` is set (or `stop_when`
    /// says), then stop every worker, commit what they finished, and leave
    /// the group. A consumer stuck in errors is replaced on the way.
    pub(crate) fn run(self, mut consumer: SourceConsumer<WorkerRegistry>) -> Result<(), String> {
        let registry = &self.registry;
        let mut last_commit = Instant::now();
        let mut failure = None;
        let health = registry.context.health.clone();
        let errors = registry.context.consumer_errors.clone();
        while !self.shutdown.load(Ordering::Relaxed) {
            health.polled();
            if let StopWhen::Finished(target) = self.stop_when
                && self.counters.snapshot().finished >= target
            {
                break;
            }
            match consumer.poll(POLL_TIMEOUT.min(self.commit_interval)) {
                Some(Ok(record)) => {
                    errors.healthy();
                    if let Err(error) = registry.hand_over(record) {
                        failure = Some(error);
                        break;
                    }
                }
                Some(Err(error)) => {
                    if ConsumerErrorKind::of(&error).is_connectivity() {
                        // Already logged as a client error.
                        tracing::debug!(%error, "consumer error; librdkafka reconnects by itself");
                    } else {
                        tracing::warn!(%error, "consumer error");
                    }
                    errors.record(&error);
                }
                None => {}
            }
            if last_commit.elapsed() >= self.commit_interval {
                registry.commit(&consumer, false);
                last_commit = Instant::now();
            }
            if let Some(why) = errors.recreation_due() {
                consumer = self.recreate(consumer, &why)?;
                last_commit = Instant::now();
            }
        }

        health.stopped_consuming();
        tracing::info!("stopping: finishing in-flight messages");
        self.retire(consumer);
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Replace a consumer that librdkafka cannot bring back: finish (or
    /// abandon, uncommitted) the partitions' work, leave the group, and
    /// subscribe a new consumer, which is assigned partitions afresh.
    fn recreate(
        &self,
        consumer: SourceConsumer<WorkerRegistry>,
        why: &str,
    ) -> Result<SourceConsumer<WorkerRegistry>, String> {
        tracing::warn!(reason = why, "recreating the consumer");
        let context = &self.registry.context;
        self.retire(consumer);
        context.consumer_errors.reset();
        context.health.set_assigned_partitions(0);
        let consumer = (self.subscribe)()
            .map_err(|error| format!("cannot create a new consumer after persistent errors: {error}"))?;
        context.health.consumer_recreated();
        tracing::info!("new consumer subscribed; waiting for partitions");
        Ok(consumer)
    }

    /// Stop every worker, commit what they finished, and leave the group.
    fn retire(&self, consumer: SourceConsumer<WorkerRegistry>) {
        let registry = &self.registry;
        let offsets = registry.stop_workers(&registry.all_partitions());
        match consumer.commit(&offsets, true) {
            Ok(()) => tracing::info!(partitions = offsets.len(), "committed finished offsets"),
            Err(error) => {
                tracing::warn!(%error, "final offset commit failed; uncommitted messages will be consumed again")
            }
        }
        consumer.close();
    }
}
