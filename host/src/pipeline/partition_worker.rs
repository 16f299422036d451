//! One partition's worker: takes its messages in order, asks the plugin,
//! carries out each verdict, and reports how far the partition is finished.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::consumer_errors::ConsumerErrors;
use super::counters::StageCounters;
use super::dead_letter::DeadLetterHeaders;
use super::dedup_screen::{Dedup, DedupScreen};
use super::offset_tracker::OffsetTracker;
use super::plugin_caller::{Called, PluginCaller};
use super::record_headers::{dead_letter_headers, output_headers, trace_for};
use super::record_intake::RecordIntake;
use super::retry_policy::RetryPolicy;
use crate::kafka::{ConsumedRecord, DeliveryError, OutgoingRecord, PartitionFeed, SinkProducer, TopicPartition};
use crate::observe::{Health, PartitionBoard};
use crate::plugin::{Header, Message, Output, Plugin, PluginFailure, PluginSlot, Verdict};

/// What every partition worker of a stage shares.
pub(crate) struct WorkerContext {
    pub(crate) stage_name: String,
    pub(crate) output_topic: String,
    pub(crate) dead_letter_topic: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) batch_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) producer: Arc<SinkProducer>,
    /// Bounds plugin calls running at once across partitions.
    pub(crate) plugin_calls: Arc<Semaphore>,
    pub(crate) counters: Arc<StageCounters>,
    /// Off when the stage has no `[dedup]` section.
    pub(crate) dedup: Option<Arc<Dedup>>,
    /// The version serving now; hot reload swaps it.
    pub(crate) plugin: Arc<PluginSlot>,
    pub(crate) health: Arc<Health>,
    pub(crate) partitions: Arc<PartitionBoard>,
    /// The consumer's current run of errors, fed by every worker's fetches.
    pub(crate) consumer_errors: Arc<ConsumerErrors>,
    pub(crate) runtime: Handle,
}

/// What a worker and the consumer thread know about each other.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    /// Next offset to commit, or -1 before anything is finished.
    committable: AtomicI64,
}

impl PartitionShared {
    pub(crate) fn committable(&self) -> Option<i64> {
        Some(self.committable.load(Ordering::Acquire)).filter(|offset| *offset >= 0)
    }
}

/// The consumer thread's handle on a running worker.
pub(crate) struct WorkerHandle {
    /// For the rare record of this partition that arrives on the
    /// consumer's shared queue rather than the partition's feed.
    pub(crate) hand_over: mpsc::UnboundedSender<ConsumedRecord>,
    pub(crate) shared: Arc<PartitionShared>,
    pub(crate) stop: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

/// Start a worker for the feed's partition on the stage's runtime.
pub(crate) fn spawn_worker(feed: PartitionFeed, context: Arc<WorkerContext>) -> WorkerHandle {
    let partition = feed.partition().clone();
    let (intake, hand_over) = RecordIntake::new(feed, context.consumer_errors.clone());
    let shared = Arc::new(PartitionShared {
        committable: AtomicI64::new(-1),
    });
    let stop = CancellationToken::new();
    let dedup = context
        .dedup
        .clone()
        .map(|dedup| DedupScreen::new(dedup, context.counters.clone(), partition.to_string()));
    let worker = PartitionWorker {
        dedup,
        partition,
        plugin: PluginCaller::new(
            context.plugin.clone(),
            context.plugin_calls.clone(),
            context.counters.clone(),
        ),
        context: context.clone(),
        intake,
        backlog: VecDeque::new(),
        tracker: OffsetTracker::new(),
        in_flight: FuturesUnordered::new(),
        shared: shared.clone(),
        stop: stop.clone(),
    };
    let task = context.runtime.spawn(worker.run());
    WorkerHandle {
        hand_over,
        shared,
        stop,
        task,
    }
}

/// The worker was told to stop while it had work it could not finish.
struct Stopped;

/// A message whose verdict is carried out, waiting for the broker.
struct Delivered {
    message: Message,
    /// The version whose verdict this carries out.
    plugin: Plugin,
    result: Result<(), DeliveryError>,
    outcome: Outcome,
}

enum Outcome {
    Outputs(u64),
    /// The plugin returned no outputs: nothing to wait for.
    Filtered,
    DeadLettered,
}

struct PartitionWorker {
    partition: TopicPartition,
    context: Arc<WorkerContext>,
    plugin: PluginCaller,
    intake: RecordIntake,
    /// Messages taken but put back behind a retry, to handle next.
    backlog: VecDeque<Message>,
    tracker: OffsetTracker,
    dedup: Option<DedupScreen>,
    in_flight: FuturesUnordered<BoxFuture<'static, Delivered>>,
    shared: Arc<PartitionShared>,
    stop: CancellationToken,
}

impl PartitionWorker {
    async fn run(mut self) {
        let batch_size = self.context.batch_size;
        let mut received = Vec::with_capacity(batch_size);
        loop {
            if !self.backlog.is_empty() {
                let count = batch_size.min(self.backlog.len());
                let messages: Vec<Message> = self.backlog.drain(..count).collect();
                if self.process(messages).await.is_err() {
                    break;
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                Some(delivered) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    let mut ready = vec![delivered];
                    while let Some(Some(delivered)) = self.in_flight.next().now_or_never() {
                        ready.push(delivered);
                    }
                    if self.on_delivered(ready).await.is_err() {
                        break;
                    }
                }
                _ = self.intake.take(&mut received, batch_size), if self.in_flight.len() < self.context.max_in_flight => {
                    self.context.counters.received(received.len() as u64);
                    let messages: Vec<Message> = received.drain(..).map(into_message).collect();
                    for message in &messages {
                        self.tracker.take(message.offset);
                    }
                    let Ok(messages) = self.screen(messages).await else {
                        break;
                    };
                    if !messages.is_empty() && self.process(messages).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.drain().await;
    }

    /// Finish at once the messages the dedup store says are done; return
    /// the rest.
    async fn screen(&mut self, messages: Vec<Message>) -> Result<Vec<Message>, Stopped> {
        let Some(dedup) = self.dedup.as_mut() else {
            return Ok(messages);
        };
        let screened = dedup.screen(messages, &self.stop).await.ok_or(Stopped)?;
        for (offset, timestamp_ms) in screened.already_done {
            self.finish(offset, timestamp_ms);
        }
        Ok(screened.to_handle)
    }

    /// Ask the plugin about `messages` and act on the verdicts in order. At
    /// the first retry or failure the rest go back to the backlog and the
    /// message is retried in place, so the partition's order holds.
    async fn process(&mut self, messages: Vec<Message>) -> Result<(), Stopped> {
        let Called {
            messages,
            results,
            plugin,
        } = self.plugin.call(messages).await;
        let mut messages = messages.into_iter();
        for result in results {
            let message = messages.next().expect("a result per message at most");
            match result {
                Ok(Verdict::Success(outputs)) => {
                    let span = message_span(&message, &plugin);
                    self.produce_outputs(message, outputs, &plugin).instrument(span).await
                }
                Ok(Verdict::DeadLetter(reason)) => {
                    let span = message_span(&message, &plugin);
                    self.produce_dead_letter(message, reason, &plugin)
                        .instrument(span)
                        .await
                }
                Ok(Verdict::Retry(retry)) => {
                    self.put_back(messages);
                    let delay = retry.requested_delay();
                    return self.retry_in_place(message, retry.reason, delay, plugin).await;
                }
                Err(failure) => {
                    self.failed_attempt(&message, &failure);
                    self.put_back(messages);
                    return self.retry_in_place(message, failure.reason, None, plugin).await;
                }
            }
        }
        self.put_back(messages);
        Ok(())
    }

    fn failed_attempt(&self, message: &Message, failure: &PluginFailure) {
        self.context.counters.failed_attempt(failure.kind);
        self.context.partitions.error(&message.topic, message.partition);
    }

    fn put_back(&mut self, rest: impl DoubleEndedIterator<Item = Message>) {
        for message in rest.rev() {
            self.backlog.push_front(message);
        }
    }

    /// Back off and try `message` again until it succeeds, dead-letters, or
    /// runs out of attempts. The partition's feed is not read meantime, so
    /// its fetching stops at librdkafka's prefetch limit; other partitions
    /// carry on. Each attempt uses the version serving at the time, so a
    /// rollback rescues a message the failed version could not handle;
    /// `plugin` is the version of the attempt that failed.
    async fn retry_in_place(
        &mut self,
        mut message: Message,
        mut reason: String,
        mut requested: Option<Duration>,
        mut plugin: Plugin,
    ) -> Result<(), Stopped> {
        loop {
            if !self.context.retry.allows_another_attempt(message.attempt) {
                let reason = format!("retries exhausted: {reason}");
                self.produce_dead_letter(message, reason, &plugin).await;
                break Ok(());
            }
            let delay = self.context.retry.delay_after(message.attempt, requested);
            self.context.counters.retry();
            tracing::debug!(partition = %self.partition, offset = message.offset, attempt = message.attempt, ?delay, %reason, "retrying after backoff");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => break Err(Stopped),
            }
            message.attempt += 1;
            let mut called = self.plugin.call(vec![message]).await;
            message = called.messages.pop().expect("the message comes back");
            plugin = called.plugin;
            match called.results.pop().expect("one result for one message") {
                Ok(Verdict::Success(outputs)) => {
                    self.produce_outputs(message, outputs, &plugin).await;
                    break Ok(());
                }
                Ok(Verdict::DeadLetter(dead_letter_reason)) => {
                    self.produce_dead_letter(message, dead_letter_reason, &plugin).await;
                    break Ok(());
                }
                Ok(Verdict::Retry(retry)) => {
                    requested = retry.requested_delay();
                    reason = retry.reason;
                }
                Err(failure) => {
                    self.failed_attempt(&message, &failure);
                    requested = None;
                    reason = failure.reason;
                }
            }
        }
    }

    async fn produce_outputs(&mut self, message: Message, outputs: Vec<Output>, plugin: &Plugin) {
        if outputs.is_empty() {
            self.in_flight.push(Box::pin(std::future::ready(Delivered {
                message,
                plugin: plugin.clone(),
                result: Ok(()),
                outcome: Outcome::Filtered,
            })));
            return;
        }
        let version = plugin.version().full().as_bytes();
        let trace = trace_for(&message);
        let count = outputs.len() as u64;
        let mut deliveries = Vec::with_capacity(outputs.len());
        for output in outputs {
            let record = OutgoingRecord {
                topic: output.topic.unwrap_or_else(|| self.context.output_topic.clone()),
                key: output.key,
                value: output.value,
                headers: output_headers(output.headers, version, &trace),
            };
            deliveries.push(self.context.producer.enqueue(&record).await);
        }
        let plugin = plugin.clone();
        self.in_flight.push(Box::pin(async move {
            let result = futures::future::try_join_all(deliveries).await.map(|_| ());
            Delivered {
                message,
                plugin,
                result,
                outcome: Outcome::Outputs(count),
            }
        }));
    }

    async fn produce_dead_letter(&mut self, message: Message, reason: String, plugin: &Plugin) {
        tracing::info!(attempts = message.attempt, %reason, "dead-lettering message");
        let why = DeadLetterHeaders {
            reason,
            source_topic: message.topic.clone(),
            source_partition: message.partition,
            source_offset: message.offset,
            source_timestamp_ms: message.timestamp_ms,
            attempts: message.attempt,
            stage: self.context.stage_name.clone(),
            plugin_name: plugin.name().to_owned(),
            plugin_version: plugin.version().full().to_owned(),
            failed_at: SystemTime::now(),
        };
        let record = OutgoingRecord {
            topic: self.context.dead_letter_topic.clone(),
            key: message.key.clone(),
            value: message.value.clone(),
            headers: dead_letter_headers(&message.headers, &why, &trace_for(&message)),
        };
        let delivery = self.context.producer.enqueue(&record).await;
        let plugin = plugin.clone();
        self.in_flight.push(Box::pin(async move {
            Delivered {
                result: delivery.await,
                message,
                plugin,
                outcome: Outcome::DeadLettered,
            }
        }));
    }

    /// Messages whose records were acknowledged, or failed for good. The
    /// acknowledged ones are finished (after their done-marks are written);
    /// a failure is a failed attempt: the message is tried again.
    async fn on_delivered(&mut self, ready: Vec<Delivered>) -> Result<(), Stopped> {
        let (acknowledged, failed): (Vec<Delivered>, Vec<Delivered>) =
            ready.into_iter().partition(|delivered| delivered.result.is_ok());
        self.complete(acknowledged).await?;
        for delivered in failed {
            let Err(error) = delivered.result else {
                unreachable!("partitioned by result")
            };
            self.context.counters.delivery_failure();
            self.context
                .partitions
                .error(&self.partition.topic, self.partition.partition);
            tracing::warn!(partition = %self.partition, offset = delivered.message.offset, %error, "delivery failed after the producer's retries; trying the message again");
            self.retry_in_place(
                delivered.message,
                format!("delivery failed: {error}"),
                None,
                delivered.plugin,
            )
            .await?;
        }
        Ok(())
    }

    /// Count and finish acknowledged messages, writing their done-marks
    /// first when the stage deduplicates.
    async fn complete(&mut self, acknowledged: Vec<Delivered>) -> Result<(), Stopped> {
        if acknowledged.is_empty() {
            return Ok(());
        }
        let duplicates = match self.dedup.as_mut() {
            Some(dedup) => {
                let messages: Vec<&Message> = acknowledged.iter().map(|delivered| &delivered.message).collect();
                dedup.mark_done(&messages, &self.stop).await.ok_or(Stopped)?
            }
            None => Vec::new(),
        };
        for delivered in acknowledged {
            match delivered.outcome {
                Outcome::Outputs(count) => self.context.counters.outputs(count),
                Outcome::Filtered => self.context.counters.filtered(),
                Outcome::DeadLettered => self.context.counters.dead_lettered(),
            }
            self.finish(delivered.message.offset, delivered.message.timestamp_ms);
        }
        for (offset, timestamp_ms) in duplicates {
            self.finish(offset, timestamp_ms);
        }
        Ok(())
    }

    /// `timestamp_ms`: the input record's, for the end-to-end latency.
    fn finish(&mut self, offset: i64, timestamp_ms: Option<i64>) {
        self.context.counters.finished(since_timestamp(timestamp_ms));
        self.tracker.finish(offset);
        if let Some(committable) = self.tracker.committable() {
            self.shared.committable.store(committable, Ordering::Release);
        }
    }

    /// Stopping: wait (bounded) for acknowledgements already under way, so
    /// their messages count as finished; anything else stays unfinished and
    /// uncommitted, to be consumed again by whoever owns the partition next.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.context.drain_timeout;
        let mut acknowledged = Vec::new();
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                Ok(Some(delivered)) => match &delivered.result {
                    Ok(()) => acknowledged.push(delivered),
                    Err(error) => {
                        tracing::warn!(partition = %self.partition, offset = delivered.message.offset, %error, "delivery failed while stopping; the message stays uncommitted");
                    }
                },
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(partition = %self.partition, abandoned = self.in_flight.len(), "stopping before every acknowledgement arrived; those messages stay uncommitted");
                    break;
                }
            }
        }
        if self.complete(acknowledged).await.is_err() {
            tracing::warn!(partition = %self.partition, "could not write done-marks while stopping; those messages stay uncommitted");
        }
        tracing::debug!(partition = %self.partition, committable = ?self.tracker.committable(), unfinished = self.tracker.unfinished(), "partition worker stopped");
    }
}

/// The span of one message's handling: every log line about it carries
/// where it came from and which plugin version judged it.
fn message_span(message: &Message, plugin: &Plugin) -> tracing::Span {
    tracing::info_span!(
        "message",
        topic = %message.topic,
        partition = message.partition,
        offset = message.offset,
        plugin_version = %plugin.version()
    )
}

fn since_timestamp(timestamp_ms: Option<i64>) -> Option<Duration> {
    let timestamp = UNIX_EPOCH + Duration::from_millis(u64::try_from(timestamp_ms?).ok()?);
    SystemTime::now().duration_since(timestamp).ok()
}

fn into_message(record: ConsumedRecord) -> Message {
    Message {
        topic: record.partition.topic.to_string(),
        partition: record.partition.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect(),
        attempt: 1,
    }
}
