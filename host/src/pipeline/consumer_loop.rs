//! The consumer thread: serves the consumer group (rebalances run here),
//! starts and stops a worker per assigned partition, and commits what the
//! workers report finished.
//!
//! Records do not pass through this thread: each worker reads its
//! partition's own feed when it has room, which is all the backpressure
//! there is (see `kafka::PartitionFeed`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::counters::StageCounters;
use super::partition_worker::{WorkerContext, WorkerHandle, spawn_worker};
use super::recreation_budget::{Recreation, RecreationBudget};
use crate::kafka::{
    ConsumedRecord, ConsumerErrorKind, ConsumerStatistics, KafkaError, PartitionFeed, RebalanceListener,
    SourceConsumer, TopicPartition,
};
use crate::observe::LogThrottle;

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
    /// The worker failed and the consumer loop knows.
    failure_reported: bool,
}

impl WorkerRegistry {
    pub(crate) fn new(context: Arc<WorkerContext>) -> Self {
        WorkerRegistry {
            partitions: Mutex::new(HashMap::new()),
            context,
        }
    }

    /// Bytes of handed-over records a worker may have waiting before its
    /// partition is paused: the prefetch one partition may hold, since
    /// those records stand in for the partition's own queue.
    fn hand_over_limit(&self) -> u64 {
        self.context
            .memory
            .prefetch()
            .map_or(u64::MAX, |(limits, _)| limits.partition_bytes())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TopicPartition, PartitionEntry>> {
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Give a record that arrived on the shared queue to its partition's
    /// worker; `Ok(true)` when the worker has more than a prefetch's worth
    /// waiting, so the partition should be paused. Fails if the worker has
    /// died. A record of a partition this member no longer owns is dropped:
    /// it was never taken, so it stays uncommitted for the partition's new
    /// owner.
    fn hand_over(&self, record: ConsumedRecord) -> Result<bool, String> {
        let partitions = self.lock();
        let Some(entry) = partitions.get(&record.partition) else {
            tracing::debug!(partition = %record.partition, offset = record.offset, "record of a partition no longer owned; left to its next owner");
            return Ok(false);
        };
        let partition = record.partition.clone();
        entry
            .worker
            .hand_over
            .send(record)
            .map_err(|_| format!("the worker of {partition} stopped unexpectedly"))?;
        Ok(entry.worker.hand_over.waiting_bytes() > self.hand_over_limit())
    }

    /// Of the partitions paused for a full hand-over, those to resume (their
    /// workers took at least half of what waited) and those to forget (no
    /// longer owned).
    fn paused_to_resume(&self, paused: &HashSet<TopicPartition>) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
        let limit = self.hand_over_limit();
        let partitions = self.lock();
        let mut resume = Vec::new();
        let mut forget = Vec::new();
        for partition in paused {
            match partitions.get(partition) {
                Some(entry) if entry.worker.hand_over.waiting_bytes() <= limit / 2 => resume.push(partition.clone()),
                Some(_) => {}
                None => forget.push(partition.clone()),
            }
        }
        (resume, forget)
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

    /// Stop these partitions' workers together, letting in-flight work
    /// finish within one shared grace period (the drain timeout plus a
    /// dedup store call), and return their final committable offsets.
    /// Workers still running after it are aborted: their unfinished
    /// messages stay uncommitted, and nothing of theirs is produced later
    /// for a partition this member may no longer own.
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
        let deadline = tokio::time::Instant::now() + self.context.stop_grace;
        let mut offsets = Vec::new();
        let mut stragglers = Vec::new();
        let mut entries = entries;
        self.context.runtime.block_on(async {
            for (partition, entry) in &mut entries {
                if tokio::time::timeout_at(deadline, &mut entry.worker.task).await.is_err() {
                    stragglers.push(partition.clone());
                }
            }
        });
        for (partition, entry) in entries {
            if stragglers.contains(&partition) {
                entry.worker.task.abort();
                tracing::warn!(%partition, grace = ?self.context.stop_grace, "worker did not stop in time and was aborted; its unfinished messages stay uncommitted");
            }
            self.context.health.partition_unblocked(&partition.to_string());
            if let Some(offset) = entry.worker.shared.committable() {
                offsets.push((partition, offset));
            }
        }
        offsets
    }

    /// Workers that ended without being told to stop, with the cause, for
    /// the consumer loop to report and recover from.
    fn failed_workers(&self) -> Vec<(TopicPartition, String)> {
        let mut partitions = self.lock();
        partitions
            .iter_mut()
            .filter(|(_, entry)| !entry.failure_reported && entry.worker.task.is_finished())
            .filter_map(|(partition, entry)| {
                let cause = entry.worker.shared.failure()?;
                entry.failure_reported = true;
                Some((partition.clone(), cause))
            })
            .collect()
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
                failure_reported: false,
            };
            registered.insert(partition, entry);
        }
        if let Some((_, sized_for)) = self.context.memory.prefetch()
            && registered.len() > sized_for.partitions
        {
            tracing::warn!(
                assigned = registered.len(),
                sized_for = sized_for.partitions,
                "the input topics have grown: prefetch was sized for fewer partitions and may exceed its share of stage.memory_budget_mib until the consumer is next created (restart the stage to resize)"
            );
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
    pub(crate) recreations: RecreationBudget,
}

impl ConsumerLoop {
    /// Serve the group and commit until `shutdown` is set (or `stop_when`
    /// says), then stop every worker, commit what they finished, and leave
    /// the group. A consumer stuck in errors, or one whose worker failed,
    /// is replaced on the way, within the recreation budget. `Err` says
    /// why the stage stopped on its own.
    pub(crate) fn run(mut self, mut consumer: SourceConsumer<WorkerRegistry>) -> Result<(), String> {
        let registry = self.registry.clone();
        let mut last_commit = Instant::now();
        let health = registry.context.health.clone();
        let errors = registry.context.consumer_errors.clone();
        let mut error_warnings = LogThrottle::new(Duration::from_secs(10));
        // Partitions whose handed-over records wait unread past their
        // prefetch allowance: fetching them stops until the worker catches up.
        let mut paused: HashSet<TopicPartition> = HashSet::new();
        let failure = loop {
            if self.shutdown.load(Ordering::Relaxed) {
                break None;
            }
            health.polled();
            if let StopWhen::Finished(target) = self.stop_when
                && self.counters.snapshot().finished >= target
            {
                break None;
            }
            if let Some(fault) = registry.context.fault.reason() {
                health.stage_failed(fault);
                break Some(fault.to_owned());
            }
            match consumer.poll(POLL_TIMEOUT.min(self.commit_interval)) {
                Some(Ok(record)) => {
                    errors.healthy();
                    let partition = record.partition.clone();
                    match registry.hand_over(record) {
                        Ok(true) if !paused.contains(&partition) => {
                            match consumer.pause(std::slice::from_ref(&partition)) {
                                Ok(()) => {
                                    tracing::debug!(%partition, "handed-over records pile up; fetching of the partition paused");
                                    paused.insert(partition);
                                }
                                Err(error) => tracing::warn!(%partition, %error, "cannot pause the partition"),
                            }
                        }
                        Ok(_) => {}
                        // The worker is gone; the check below recovers it.
                        Err(error) => tracing::debug!(%error, "record not handed over"),
                    }
                }
                Some(Err(error)) => {
                    if ConsumerErrorKind::of(&error).is_connectivity() {
                        // Already logged as a client error.
                        tracing::debug!(%error, "consumer error; librdkafka reconnects by itself");
                    } else if let Some(held_back) = error_warnings.allow() {
                        tracing::warn!(%error, held_back, "consumer error");
                    }
                    errors.record(&error);
                }
                None => {}
            }
            if !paused.is_empty() {
                let (resume, forget) = registry.paused_to_resume(&paused);
                for partition in forget {
                    paused.remove(&partition);
                }
                if !resume.is_empty() {
                    match consumer.resume(&resume) {
                        Ok(()) => {
                            for partition in resume {
                                paused.remove(&partition);
                            }
                        }
                        Err(error) => tracing::warn!(%error, "cannot resume paused partitions; trying again"),
                    }
                }
            }
            if last_commit.elapsed() >= self.commit_interval {
                metrics::gauge!(crate::observe::metrics::IN_FLIGHT_BYTES)
                    .set(registry.context.memory.in_flight().used() as f64);
                registry.commit(&consumer, false);
                registry.context.degraded.watch();
                last_commit = Instant::now();
            }
            let mut why = errors.recreation_due();
            let failed = registry.failed_workers();
            for (partition, cause) in &failed {
                tracing::error!(%partition, %cause, "partition worker failed; recreating the consumer to resume from the committed offset");
                health.worker_failed(&partition.to_string(), cause);
            }
            if let Some((partition, cause)) = failed.first() {
                why.get_or_insert_with(|| format!("the worker of {partition} failed: {cause}"));
            }
            if let Some(why) = why {
                paused.clear();
                match self.recreate(consumer, &why) {
                    Ok(new) => consumer = new,
                    Err(error) => {
                        health.stage_failed(&error);
                        return Err(error);
                    }
                }
                last_commit = Instant::now();
            }
        };

        health.stopped_consuming();
        tracing::info!("stopping: finishing in-flight messages");
        self.retire(consumer);
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Replace a consumer that librdkafka cannot bring back (or whose
    /// worker failed): finish (or abandon, uncommitted) the partitions'
    /// work, leave the group, wait out the recreation backoff, and
    /// subscribe a new consumer, which is assigned partitions afresh and
    /// resumes from the committed offsets. `Err` once the budget is spent.
    fn recreate(
        &mut self,
        consumer: SourceConsumer<WorkerRegistry>,
        why: &str,
    ) -> Result<SourceConsumer<WorkerRegistry>, String> {
        let context = self.registry.context.clone();
        let wait = match self.recreations.request(why) {
            Recreation::After(wait) => wait,
            Recreation::GiveUp(cause) => {
                tracing::error!(%cause, "giving up on the consumer");
                self.retire(consumer);
                return Err(cause);
            }
        };
        tracing::warn!(reason = why, ?wait, "recreating the consumer");
        self.retire(consumer);
        context.consumer_errors.reset();
        context.health.set_assigned_partitions(0);
        let resume_at = Instant::now() + wait;
        while Instant::now() < resume_at && !self.shutdown.load(Ordering::Relaxed) {
            // Waiting on purpose is not being stuck.
            context.health.polled();
            std::thread::sleep(POLL_TIMEOUT);
        }
        let consumer = (self.subscribe)()
            .map_err(|error| format!("cannot create a new consumer after persistent errors: {error}"))?;
        context.health.workers_replaced();
        context.health.consumer_recreated();
        tracing::info!("new consumer subscribed; waiting for partitions");
        Ok(consumer)
    }

    /// Stop every worker, commit what they finished, and leave the group.
    fn retire(&self, consumer: SourceConsumer<WorkerRegistry>) {
        let registry = &self.registry;
        let offsets = registry.stop_workers(&registry.all_partitions());
        match consumer.commit_within(&offsets, registry.context.stop_grace) {
            Ok(()) => tracing::info!(partitions = offsets.len(), "committed finished offsets"),
            Err(error) => {
                tracing::warn!(%error, "final offset commit failed; uncommitted messages will be consumed again")
            }
        }
        consumer.close();
    }
}
