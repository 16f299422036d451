//! The consumer thread: polls Kafka, routes each record to its partition's
//! worker, pauses partitions that cannot take more (or are backing off),
//! and commits what the workers report finished.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;

use super::counters::StageCounters;
use super::partition_worker::{WorkerContext, WorkerHandle, spawn_worker};
use crate::kafka::{ConsumedRecord, RebalanceListener, SourceConsumer, TopicPartition};

/// How often stashed records are retried and pause states reconciled.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(20);
/// Backpressure. Records beyond a worker's inbox wait in its stash. When the
/// stashes of fetching partitions hold this many records in all, the
/// consumer stops polling until workers catch up: librdkafka then stops
/// fetching on its own once its prefetch limits are reached, and nothing
/// is thrown away.
const TOTAL_STASH_HIGH_WATER: usize = 20_000;
/// While polling is held back, a partition stashing this many records is
/// paused if another partition sits idle for want of records, so one slow
/// partition cannot hold up the rest. (Pausing is the last resort: librdkafka
/// drops what it prefetched for a paused partition and fetches it again on
/// resume.) It resumes once its stash has drained.
const STASH_HIGH_WATER: usize = 5_000;
const POLL_TIMEOUT: Duration = Duration::from_millis(50);

/// The workers of the partitions this member owns.
pub(crate) struct WorkerRegistry {
    partitions: Mutex<HashMap<TopicPartition, PartitionEntry>>,
    context: Arc<WorkerContext>,
}

struct PartitionEntry {
    worker: WorkerHandle,
    /// Records the worker's inbox had no room for, in order.
    stash: VecDeque<ConsumedRecord>,
    paused: bool,
    /// Paused because its stash was too large; resumes when it drains.
    paused_for_backlog: bool,
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

    fn new_entry(&self, partition: TopicPartition) -> PartitionEntry {
        PartitionEntry {
            worker: spawn_worker(partition, self.context.clone()),
            stash: VecDeque::new(),
            paused: false,
            paused_for_backlog: false,
            last_committed: None,
        }
    }

    /// Hand a record to its partition's worker, or stash it (and pause the
    /// partition) when the worker is full. Fails if the worker has died.
    fn dispatch(&self, record: ConsumedRecord) -> Result<(), String> {
        let mut partitions = self.lock();
        let entry = partitions
            .entry(record.partition.clone())
            .or_insert_with(|| self.new_entry(record.partition.clone()));
        let partition = record.partition.clone();
        entry.stash.push_back(record);
        if !entry.flush_stash() {
            return Err(format!("the worker of {partition} stopped unexpectedly"));
        }
        Ok(())
    }

    /// Whether polling should wait for workers to catch up. When it should,
    /// but some partition's worker is idle for want of records, the
    /// backlogged partitions are paused instead so the idle one can be fed.
    fn hold_back_polling(&self, consumer: &SourceConsumer<Self>) -> bool {
        let mut partitions = self.lock();
        let stashed: usize = partitions
            .values()
            .filter(|entry| !entry.paused)
            .map(|entry| entry.stash.len())
            .sum();
        if stashed < TOTAL_STASH_HIGH_WATER {
            return false;
        }
        let someone_starving = partitions
            .values()
            .any(|entry| !entry.paused && entry.stash.is_empty() && entry.worker.inbox_is_empty());
        if !someone_starving {
            return true;
        }
        for (partition, entry) in partitions.iter_mut() {
            if !entry.paused && entry.stash.len() >= STASH_HIGH_WATER {
                entry.paused_for_backlog = true;
                set_paused(consumer, partition, entry, true);
            }
        }
        false
    }

    /// Move stashed records into inboxes with room, and pause exactly the
    /// partitions that are full or backing off from a retry.
    fn housekeeping(&self, consumer: &SourceConsumer<Self>) {
        let mut partitions = self.lock();
        for (partition, entry) in partitions.iter_mut() {
            entry.flush_stash();
            if entry.paused_for_backlog && entry.stash.is_empty() {
                entry.paused_for_backlog = false;
            }
            let should_pause = entry.paused_for_backlog || entry.worker.shared.backing_off();
            set_paused(consumer, partition, entry, should_pause);
        }
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

impl PartitionEntry {
    /// Move stashed records into the worker's inbox while it has room.
    /// Returns false if the worker is gone.
    fn flush_stash(&mut self) -> bool {
        while let Some(record) = self.stash.pop_front() {
            match self.worker.inbox.try_send(record) {
                Ok(()) => {}
                Err(TrySendError::Full(record)) => {
                    self.stash.push_front(record);
                    return true;
                }
                Err(TrySendError::Closed(record)) => {
                    self.stash.push_front(record);
                    return false;
                }
            }
        }
        true
    }
}

fn set_paused(
    consumer: &SourceConsumer<WorkerRegistry>,
    partition: &TopicPartition,
    entry: &mut PartitionEntry,
    pause: bool,
) {
    if entry.paused == pause {
        return;
    }
    let result = if pause {
        consumer.pause(partition)
    } else {
        consumer.resume(partition)
    };
    match result {
        Ok(()) => {
            tracing::debug!(%partition, pause, stashed = entry.stash.len(), "partition fetch state changed");
            entry.paused = pause;
        }
        Err(error) => tracing::warn!(%partition, pause, %error, "could not change the partition's fetch state"),
    }
}

impl RebalanceListener for WorkerRegistry {
    fn partitions_revoked(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        self.stop_workers(partitions)
    }

    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        let mut registered = self.lock();
        for partition in partitions {
            if !registered.contains_key(partition) {
                let entry = self.new_entry(partition.clone());
                registered.insert(partition.clone(), entry);
            }
        }
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

/// Poll, dispatch and commit until `shutdown` is set (or `stop_when` says),
/// then stop every worker, commit what they finished, and leave the group.
pub(crate) fn run_consumer_loop(
    consumer: SourceConsumer<WorkerRegistry>,
    registry: Arc<WorkerRegistry>,
    shutdown: Arc<AtomicBool>,
    stop_when: StopWhen,
    commit_interval: Duration,
    counters: Arc<StageCounters>,
) -> Result<(), String> {
    let mut last_housekeeping = Instant::now();
    let mut last_commit = Instant::now();
    let mut failure = None;
    while !shutdown.load(Ordering::Relaxed) {
        if let StopWhen::Finished(target) = stop_when
            && counters.snapshot().finished >= target
        {
            break;
        }
        if registry.hold_back_polling(&consumer) {
            registry.housekeeping(&consumer);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(record)) => {
                counters.received(1);
                if let Err(error) = registry.dispatch(record) {
                    failure = Some(error);
                    break;
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error; librdkafka keeps retrying"),
            None => last_housekeeping = Instant::now() - HOUSEKEEPING_INTERVAL,
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
            registry.housekeeping(&consumer);
            last_housekeeping = Instant::now();
        }
        if last_commit.elapsed() >= commit_interval {
            registry.commit(&consumer, false);
            last_commit = Instant::now();
        }
    }

    tracing::info!("stopping: finishing in-flight messages");
    let offsets = registry.stop_workers(&registry.all_partitions());
    match consumer.commit(&offsets, true) {
        Ok(()) => tracing::info!(partitions = offsets.len(), "committed finished offsets"),
        Err(error) => tracing::warn!(%error, "final offset commit failed; uncommitted messages will be consumed again"),
    }
    consumer.close();
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
