//! One partition's worker: the driver that carries out what
//! [`next_step`](super::next_step) decides. It takes its partition's
//! messages, hands them to the plugin as [`Lanes`] allows (one call at a
//! time in partition order, several at once in key or no order), produces
//! outputs or dead letters, waits out retries and failed deliveries in
//! place, holding back only their lane, and reports how far the partition
//! is finished.
//!
//! Every wait in here is stop-aware: the plugin call, the producer's full
//! queue, a retry's backoff, the dedup store. Told to stop, the worker
//! gives up what it has not finished (it stays uncommitted, to be consumed
//! again) and drains acknowledgements already under way.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::breaker::Breaker;
use super::consumer_errors::ConsumerErrors;
use super::counters::{Outcomes, StageCounters};
use super::dead_letter::DeadLetterHeaders;
use super::dedup_screen::{Dedup, DedupScreen, Screened};
use super::degraded::DegradedCheck;
use super::deliveries_in_flight::{DeliveriesInFlight, Settled};
use super::fault_injection::FaultInjection;
use super::instance_pool::InstancePool;
use super::lanes::{Lane, Lanes};
use super::memory_budget::MemoryUse;
use super::next_step::{
    AfterCall, AfterDeliveryFailure, Omission, RecordRole, after_delivery_failure, after_plugin_call,
};
use super::offset_tracker::OffsetTracker;
use super::plugin_caller::{Called, PluginCaller};
use super::rate_limit::RateLimit;
use super::record_headers::{dead_letter_record, output_headers, trace_for};
use super::record_intake::{HandOver, RecordIntake};
use super::retry_policy::RetryPolicy;
use super::supervision::{StageFault, panic_message};
use crate::config::MessageOrder;
use crate::kafka::{ConsumedRecord, DeliveryFailureKind, OutgoingRecord, PartitionFeed, SinkProducer, TopicPartition};
use crate::observe::{Health, LogThrottle, PartitionBoard, TraceParent};
use crate::plugin::{Header, Message, Output, Plugin, PluginFailure, PluginSlot};

/// How often a recurring warning of one partition may reach the log.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What every partition worker of a stage shares.
pub(crate) struct WorkerContext {
    pub(crate) stage_name: String,
    pub(crate) output_topic: String,
    pub(crate) dead_letter_topic: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) batch_size: usize,
    /// `stage.ordering`.
    pub(crate) ordering: MessageOrder,
    /// Plugin calls one partition may have running at once.
    pub(crate) calls_per_partition: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) drain_timeout: Duration,
    /// How long stopping may take in all: the drain, plus a dedup store
    /// call that may be under way when the stop comes.
    pub(crate) stop_grace: Duration,
    pub(crate) producer: Arc<SinkProducer>,
    /// Bounds plugin calls running at once across partitions.
    pub(crate) plugin_calls: Arc<Semaphore>,
    /// `stage.max_messages_per_second`, shared by every partition.
    pub(crate) rate_limit: Option<Arc<RateLimit>>,
    /// `[breaker]`, shared by every partition.
    pub(crate) breaker: Option<Arc<Breaker>>,
    /// `[health]`'s thresholds, looked at by the consumer thread.
    pub(crate) degraded: Arc<DegradedCheck>,
    /// Plugin instances, borrowed per call by every partition.
    pub(crate) instances: Arc<InstancePool>,
    /// The memory budget: its in-flight share bounds what workers take.
    pub(crate) memory: Arc<MemoryUse>,
    pub(crate) counters: Arc<StageCounters>,
    /// Off when the stage has no `[dedup]` section.
    pub(crate) dedup: Option<Arc<Dedup>>,
    /// The version serving now; hot reload swaps it.
    pub(crate) plugin: Arc<PluginSlot>,
    pub(crate) health: Arc<Health>,
    pub(crate) partitions: Arc<PartitionBoard>,
    /// The consumer's current run of errors, fed by every worker's fetches.
    pub(crate) consumer_errors: Arc<ConsumerErrors>,
    /// Set when the stage as a whole cannot go on.
    pub(crate) fault: Arc<StageFault>,
    pub(crate) fault_injection: Arc<FaultInjection>,
    pub(crate) runtime: Handle,
}

/// What a worker and the consumer thread know about each other.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    /// Next offset to commit, or -1 before anything is finished.
    committable: AtomicI64,
    /// Why the worker ended on its own (a panic), once it has.
    failure: Mutex<Option<String>>,
}

impl PartitionShared {
    /// Why the worker ended without being told to stop, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn committable(&self) -> Option<i64> {
        Some(self.committable.load(Ordering::Acquire)).filter(|offset| *offset >= 0)
    }
}

/// The consumer thread's handle on a running worker.
pub(crate) struct WorkerHandle {
    /// For the rare record of this partition that arrives on the
    /// consumer's shared queue rather than the partition's feed.
    pub(crate) hand_over: HandOver,
    pub(crate) shared: Arc<PartitionShared>,
    pub(crate) stop: CancellationToken,
    /// Ends when the worker stops, or fails (see [`PartitionShared::failure`]).
    pub(crate) task: JoinHandle<()>,
}

/// Start a worker for the feed's partition on the stage's runtime. A panic
/// inside it is caught and its message kept in [`PartitionShared`], for
/// the consumer thread to report and recover from.
pub(crate) fn spawn_worker(feed: PartitionFeed, context: Arc<WorkerContext>) -> WorkerHandle {
    let partition = feed.partition().clone();
    let (intake, hand_over) = RecordIntake::new(
        feed,
        context.consumer_errors.clone(),
        context.memory.in_flight().clone(),
    );
    let shared = Arc::new(PartitionShared {
        committable: AtomicI64::new(-1),
        failure: Mutex::default(),
    });
    let stop = CancellationToken::new();
    let dedup = context
        .dedup
        .clone()
        .map(|dedup| DedupScreen::new(dedup, context.counters.clone(), partition.to_string()));
    let worker = PartitionWorker {
        dedup,
        label: partition.to_string(),
        partition,
        plugin: PluginCaller::new(
            context.plugin.clone(),
            context.plugin_calls.clone(),
            context.instances.clone(),
            context.counters.clone(),
        ),
        lanes: Lanes::new(context.ordering),
        calls: FuturesUnordered::new(),
        context: context.clone(),
        intake,
        tracker: OffsetTracker::new(),
        in_flight: DeliveriesInFlight::new(context.producer.clone()),
        held_retries: Vec::new(),
        redeliveries: Vec::new(),
        blocked: false,
        halted: false,
        delivery_warnings: LogThrottle::new(WARNING_INTERVAL),
        shared: shared.clone(),
        stop: stop.clone(),
    };
    let outcome = shared.clone();
    let task = context.runtime.spawn(async move {
        let stopped = worker.stop.clone();
        let cause = match AssertUnwindSafe(worker.run()).catch_unwind().await {
            Err(panic) => format!("panicked: {}", panic_message(&*panic)),
            Ok(()) if !stopped.is_cancelled() => "ended without being told to stop".to_owned(),
            Ok(()) => return,
        };
        *outcome.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cause);
    });
    WorkerHandle {
        hand_over,
        shared,
        stop,
        task,
    }
}

/// The worker was told to stop while it had work it could not finish.
struct Stopped;

/// A message whose verdict is being carried out.
struct Delivery {
    message: Message,
    /// The version whose verdict this carries out.
    plugin: Plugin,
    carrying: Carrying,
    /// Delivery failures of this message so far.
    failures: u32,
    /// It failed and holds its message's lane until it is acknowledged,
    /// so nothing after it in the lane overtakes it.
    holds_lane: bool,
}

/// What a message's delivery carries.
enum Carrying {
    Outputs(u64),
    /// The plugin returned no outputs: nothing to wait for.
    Nothing,
    DeadLetter {
        why: Box<DeadLetterHeaders>,
        trace: TraceParent,
        omission: Omission,
    },
}

/// A delivery whose records are acknowledged, or some failed.
type Delivered = Settled<Delivery>;

/// A plugin call that came back.
struct FinishedCall {
    called: Called,
    /// It was the breaker's probe, and it failed: its message has not used
    /// up an attempt, and waits for the breaker like any other.
    failed_probe: bool,
}

/// A message waiting out its backoff before the plugin sees it again.
struct HeldRetry {
    message: Message,
    reason: String,
    due: Instant,
}

/// Records waiting out their backoff before they are produced again; they
/// hold their message's lane until they are acknowledged.
struct Redelivery {
    delivery: Delivery,
    /// The output records that failed; a dead letter is rebuilt instead.
    records: Vec<OutgoingRecord>,
    due: Instant,
}

struct PartitionWorker {
    partition: TopicPartition,
    /// `topic/partition`, for logs and health.
    label: String,
    context: Arc<WorkerContext>,
    plugin: PluginCaller,
    intake: RecordIntake,
    /// Messages taken and not yet handed to the plugin, and which of them
    /// may go next.
    lanes: Lanes,
    /// Plugin calls running, at most `calls_per_partition`.
    calls: FuturesUnordered<BoxFuture<'static, FinishedCall>>,
    tracker: OffsetTracker,
    dedup: Option<DedupScreen>,
    in_flight: DeliveriesInFlight<Delivery>,
    /// Messages waiting out a retry's backoff, each holding its lane.
    held_retries: Vec<HeldRetry>,
    redeliveries: Vec<Redelivery>,
    /// The partition's dead letters cannot be written: health says so.
    blocked: bool,
    /// The stage is stopping on a fault: take nothing more.
    halted: bool,
    delivery_warnings: LogThrottle,
    shared: Arc<PartitionShared>,
    stop: CancellationToken,
}

impl PartitionWorker {
    async fn run(mut self) {
        let batch_size = self.context.batch_size;
        // Enough taken ahead to find free lanes for every call, bounded so
        // a partition does not hoard what it cannot hand out.
        let queue_limit = batch_size
            .saturating_mul(self.context.calls_per_partition)
            .saturating_mul(4);
        let mut received = Vec::with_capacity(batch_size);
        loop {
            self.dispatch();
            let wake_at = self.next_wake();
            let may_take =
                !self.halted && self.lanes.waiting() < queue_limit && self.in_flight.len() < self.context.max_in_flight;
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                ready = self.in_flight.next_settled(), if !self.in_flight.is_empty() => {
                    if self.on_delivered(ready).await.is_err() {
                        break;
                    }
                }
                Some(called) = self.calls.next(), if !self.calls.is_empty() => {
                    if self.on_called(called).await.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {
                    if self.wake().await.is_err() {
                        break;
                    }
                }
                Some(settled) = settle_waiting(self.dedup.as_mut(), &self.stop), if may_take && self.dedup.as_ref().is_some_and(DedupScreen::has_waiting) => {
                    self.finish(settled.already_done);
                    settled.to_handle.into_iter().for_each(|message| self.lanes.push(message));
                }
                _ = self.intake.take(&mut received, batch_size), if may_take => {
                    self.context.counters.received(received.len() as u64);
                    self.context
                        .fault_injection
                        .check_taken(&self.partition, received.iter().map(|record| record.offset));
                    let messages: Vec<Message> = received.drain(..).map(into_message).collect();
                    for message in &messages {
                        self.tracker.take(message.offset);
                    }
                    let Ok(messages) = self.screen(messages).await else {
                        break;
                    };
                    messages.into_iter().for_each(|message| self.lanes.push(message));
                }
            }
        }
        self.drain().await;
    }

    /// Start plugin calls on whatever the lanes let go, up to the
    /// partition's share of calls.
    fn dispatch(&mut self) {
        while !self.halted && self.calls.len() < self.context.calls_per_partition && self.lanes.has_ready() {
            let messages = self.lanes.take(self.messages_per_call());
            self.start_call(messages);
        }
    }

    /// A batch under partition order; under key or no order one message
    /// per call when the plugin calls out, since its batch would wait on
    /// each message's requests in turn rather than at once.
    fn messages_per_call(&self) -> usize {
        match self.context.ordering {
            MessageOrder::Partition => self.context.batch_size,
            MessageOrder::Key | MessageOrder::None if self.context.plugin.current().plugin.calls_out() => 1,
            MessageOrder::Key | MessageOrder::None => self.context.batch_size,
        }
    }

    /// Call the plugin on `messages` once the breaker and the rate limit
    /// let them through; the verdicts come back through `calls`. A probe
    /// of the breaker carries only the first message; the others come
    /// back without verdicts.
    fn start_call(&mut self, mut messages: Vec<Message>) {
        let breaker = self.context.breaker.clone();
        let rate_limit = self.context.rate_limit.clone();
        let caller = self.plugin.clone();
        self.calls.push(
            async move {
                let admission = match &breaker {
                    Some(breaker) => Some(breaker.admit().await),
                    None => None,
                };
                let held_back = match &admission {
                    Some(admission) if admission.is_probe() && messages.len() > 1 => messages.split_off(1),
                    _ => Vec::new(),
                };
                if let Some(rate_limit) = rate_limit {
                    rate_limit.admit(messages.len()).await;
                }
                let mut called = caller.call(messages).await;
                let failed_probe = match (breaker, admission) {
                    (Some(breaker), Some(admission)) => breaker.finish(admission, &called.results),
                    _ => false,
                };
                called.messages.extend(held_back);
                FinishedCall { called, failed_probe }
            }
            .boxed(),
        );
    }

    fn next_wake(&self) -> Option<Instant> {
        if self.halted {
            return None;
        }
        let retry = self.held_retries.iter().map(|held| held.due).min();
        let redelivery = self.redeliveries.iter().map(|redelivery| redelivery.due).min();
        retry.into_iter().chain(redelivery).min()
    }

    /// Finish at once the messages the dedup store says are done; return
    /// the rest.
    async fn screen(&mut self, messages: Vec<Message>) -> Result<Vec<Message>, Stopped> {
        let Some(dedup) = self.dedup.as_mut() else {
            return Ok(messages);
        };
        let screened = dedup.screen(messages, &self.stop).await.ok_or(Stopped)?;
        self.finish(screened.already_done);
        Ok(screened.to_handle)
    }

    /// Act on a call's verdicts in order. A message that now waits for a
    /// retry keeps its lane held; every other message releases its lane.
    /// Messages the call has no verdict for, and those behind a waiting
    /// message in its lane (partition order), go back to the front of
    /// their lanes.
    async fn on_called(&mut self, finished: FinishedCall) -> Result<(), Stopped> {
        let FinishedCall { called, failed_probe } = finished;
        let Called {
            messages,
            results,
            plugin,
        } = called;
        if failed_probe {
            for result in &results {
                if let Err(failure) = result {
                    self.context.counters.failed_attempt(failure.kind);
                }
            }
            tracing::debug!(partition = %self.label, "the breaker's probe failed; its message waits for the next");
            self.lanes.put_back(messages.into_iter());
            return Ok(());
        }
        let mut messages = messages.into_iter();
        let mut waiting_lanes: Vec<Lane> = Vec::new();
        let mut not_handled = Vec::new();
        for result in results {
            let message = messages.next().expect("a result per message at most");
            let lane = self.lanes.lane_of(&message);
            if waiting_lanes.contains(&lane) {
                not_handled.push(message);
                continue;
            }
            if self.act(message, result, &plugin).await? {
                waiting_lanes.push(lane);
            } else {
                self.lanes.release(lane);
            }
        }
        self.lanes.put_back(not_handled.into_iter().chain(messages));
        Ok(())
    }

    /// Carry out what the plugin's answer for `message` leads to. `true`
    /// when the message now waits for a retry.
    async fn act(
        &mut self,
        message: Message,
        result: Result<crate::plugin::Verdict, PluginFailure>,
        plugin: &Plugin,
    ) -> Result<bool, Stopped> {
        if let Err(failure) = &result {
            self.context.counters.failed_attempt(failure.kind);
            self.context.partitions.error(&message.topic, message.partition);
        }
        match after_plugin_call(result, message.attempt, &self.context.retry) {
            // No span here: nothing on this path logs, and under the
            // binary's log subscriber a span formats its fields as it opens,
            // once per message for nothing.
            AfterCall::Produce(outputs) => self.produce_outputs(message, outputs, plugin).await?,
            AfterCall::Filter => self.in_flight.settle_now(Delivery {
                message,
                plugin: plugin.clone(),
                carrying: Carrying::Nothing,
                failures: 0,
                holds_lane: false,
            }),
            AfterCall::DeadLetter(reason) => {
                let span = message_span(&message, plugin);
                let delivery = span.in_scope(|| self.dead_letter_delivery(message, reason, plugin));
                self.send_dead_letter(delivery).instrument(span).await?;
            }
            AfterCall::TryAgain { after, reason } => {
                self.context.counters.retry();
                let span = message_span(&message, plugin);
                tracing::debug!(parent: &span, attempt = message.attempt, ?after, %reason, "retrying after backoff");
                self.held_retries.push(HeldRetry {
                    message,
                    reason,
                    due: Instant::now() + after,
                });
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whatever waited out its backoff goes again: held messages to the
    /// plugin (with the version serving now, so a rollback can rescue
    /// them), failed records to the producer, which lets their lanes go.
    async fn wake(&mut self) -> Result<(), Stopped> {
        let now = Instant::now();
        let (due, waiting): (Vec<HeldRetry>, Vec<HeldRetry>) = std::mem::take(&mut self.held_retries)
            .into_iter()
            .partition(|held| held.due <= now);
        self.held_retries = waiting;
        for HeldRetry {
            mut message, reason, ..
        } in due
        {
            tracing::trace!(partition = %self.label, offset = message.offset, %reason, "trying again");
            message.attempt = message.attempt.saturating_add(1);
            self.start_call(vec![message]);
        }
        let (due, waiting): (Vec<Redelivery>, Vec<Redelivery>) = std::mem::take(&mut self.redeliveries)
            .into_iter()
            .partition(|redelivery| redelivery.due <= now);
        self.redeliveries = waiting;
        for Redelivery { delivery, records, .. } in due {
            match delivery.carrying {
                Carrying::DeadLetter { .. } => self.send_dead_letter(delivery).await?,
                _ => self.send(delivery, records).await?,
            }
        }
        Ok(())
    }

    async fn produce_outputs(
        &mut self,
        message: Message,
        outputs: Vec<Output>,
        plugin: &Plugin,
    ) -> Result<(), Stopped> {
        let version = plugin.version().full().as_bytes();
        let trace = trace_for(&message);
        let records: Vec<OutgoingRecord> = outputs
            .into_iter()
            .map(|output| OutgoingRecord {
                topic: output.topic.unwrap_or_else(|| self.context.output_topic.clone()),
                key: output.key,
                value: output.value,
                headers: output_headers(output.headers, version, &trace),
            })
            .collect();
        let delivery = Delivery {
            message,
            plugin: plugin.clone(),
            carrying: Carrying::Outputs(records.len() as u64),
            failures: 0,
            holds_lane: false,
        };
        self.send(delivery, records).await
    }

    fn dead_letter_delivery(&self, message: Message, reason: String, plugin: &Plugin) -> Delivery {
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
        let trace = trace_for(&message);
        Delivery {
            message,
            plugin: plugin.clone(),
            carrying: Carrying::DeadLetter {
                why: Box::new(why),
                trace,
                omission: Omission::Nothing,
            },
            failures: 0,
            holds_lane: false,
        }
    }

    /// Build the delivery's dead-letter record (leaving out what its
    /// omission says) and send it.
    async fn send_dead_letter(&mut self, delivery: Delivery) -> Result<(), Stopped> {
        let Carrying::DeadLetter { why, trace, omission } = &delivery.carrying else {
            unreachable!("only dead-letter deliveries are sent as dead letters")
        };
        let record = dead_letter_record(
            &self.context.dead_letter_topic,
            &delivery.message,
            why,
            trace,
            *omission,
        );
        self.send(delivery, vec![record]).await
    }

    /// Hand `records` to the producer and track their acknowledgement as
    /// one in-flight delivery.
    async fn send(&mut self, delivery: Delivery, records: Vec<OutgoingRecord>) -> Result<(), Stopped> {
        self.in_flight.send(delivery, &records, &self.stop).await.ok_or(Stopped)
    }

    /// Deliveries that came back: the acknowledged ones finish their
    /// messages (after their done-marks are written); each failure is
    /// decided on by [`after_delivery_failure`].
    async fn on_delivered(&mut self, ready: Vec<Delivered>) -> Result<(), Stopped> {
        let (acknowledged, failed): (Vec<Delivered>, Vec<Delivered>) =
            ready.into_iter().partition(|delivered| delivered.failed.is_empty());
        self.complete(acknowledged.into_iter().map(|delivered| delivered.item).collect())
            .await?;
        for delivered in failed {
            self.on_failed_delivery(delivered).await?;
        }
        Ok(())
    }

    async fn on_failed_delivery(&mut self, delivered: Delivered) -> Result<(), Stopped> {
        let Settled {
            item: mut delivery,
            failed,
        } = delivered;
        delivery.failures = delivery.failures.saturating_add(1);
        let worst = failed
            .iter()
            .max_by_key(|failed| severity(failed.error.kind))
            .expect("a failed delivery has a failure");
        let (role, topic) = match &delivery.carrying {
            Carrying::DeadLetter { omission, .. } => (
                RecordRole::DeadLetter(*omission),
                self.context.dead_letter_topic.as_str(),
            ),
            _ => (RecordRole::Outputs, worst.record.topic.as_str()),
        };
        let error = worst.error.clone();
        let topic = topic.to_owned();
        for _ in &failed {
            self.context.counters.delivery_failure();
        }
        self.context
            .partitions
            .error(&self.partition.topic, self.partition.partition);
        let decision = after_delivery_failure(
            role,
            error.kind,
            &error.message,
            &topic,
            delivery.failures,
            &self.context.retry,
        );
        if let Some(held_back) = self.delivery_warnings.allow() {
            tracing::warn!(partition = %self.label, offset = delivery.message.offset, %topic, %error, failures = delivery.failures, held_back, next = ?decision, "delivery failed after the producer's retries");
        }
        match decision {
            AfterDeliveryFailure::Reproduce { after } => {
                let records = failed.into_iter().map(|failed| failed.record).collect();
                self.hold_lane(&mut delivery);
                self.redeliveries.push(Redelivery {
                    delivery,
                    records,
                    due: Instant::now() + after,
                });
            }
            AfterDeliveryFailure::DeadLetterSource(reason) => {
                let mut dead_letter = self.dead_letter_delivery(delivery.message, reason, &delivery.plugin);
                dead_letter.holds_lane = delivery.holds_lane;
                self.send_dead_letter(dead_letter).await?;
            }
            AfterDeliveryFailure::Shrink(next) => {
                if let Carrying::DeadLetter { omission, .. } = &mut delivery.carrying {
                    *omission = next;
                }
                self.send_dead_letter(delivery).await?;
            }
            AfterDeliveryFailure::Blocked { after, reason } => {
                self.blocked = true;
                self.context.health.partition_blocked(&self.label, &reason);
                self.hold_lane(&mut delivery);
                self.redeliveries.push(Redelivery {
                    delivery,
                    records: Vec::new(),
                    due: Instant::now() + after,
                });
            }
            AfterDeliveryFailure::StopStage(reason) => {
                self.halted = true;
                self.context.fault.set(reason);
            }
        }
        Ok(())
    }

    /// A failed delivery holds its message's lane (once) until it is
    /// acknowledged.
    fn hold_lane(&mut self, delivery: &mut Delivery) {
        if !delivery.holds_lane {
            self.lanes.hold(self.lanes.lane_of(&delivery.message));
            delivery.holds_lane = true;
        }
    }

    /// Count and finish acknowledged deliveries, writing their done-marks
    /// first when the stage deduplicates.
    async fn complete(&mut self, acknowledged: Vec<Delivery>) -> Result<(), Stopped> {
        if acknowledged.is_empty() {
            return Ok(());
        }
        let duplicates = match self.dedup.as_mut() {
            Some(dedup) => {
                let messages: Vec<&Message> = acknowledged.iter().map(|delivery| &delivery.message).collect();
                dedup.mark_done(&messages, &self.stop).await.ok_or(Stopped)?
            }
            None => Vec::new(),
        };
        let mut outcomes = Outcomes::default();
        let mut finished = Vec::with_capacity(acknowledged.len() + duplicates.len());
        for delivery in acknowledged {
            if delivery.holds_lane {
                self.lanes.release(self.lanes.lane_of(&delivery.message));
            }
            match delivery.carrying {
                Carrying::Outputs(count) => {
                    outcomes.with_outputs += 1;
                    outcomes.outputs += count;
                }
                Carrying::Nothing => outcomes.filtered += 1,
                Carrying::DeadLetter { .. } => {
                    outcomes.dead_lettered += 1;
                    if self.blocked {
                        self.blocked = false;
                        self.context.health.partition_unblocked(&self.label);
                        tracing::info!(partition = %self.label, "dead letters are written again; the partition moves on");
                    }
                }
            }
            finished.push((delivery.message.offset, delivery.message.timestamp_ms));
        }
        self.context.counters.completed(outcomes);
        finished.extend(duplicates);
        self.finish(finished);
        Ok(())
    }

    /// Messages at these offsets are finished: their bytes go back to the
    /// in-flight share and the partition's committable offset moves on,
    /// once for the lot. Each comes with its input record's timestamp, for
    /// the end-to-end latency.
    fn finish(&mut self, finished: Vec<(i64, Option<i64>)>) {
        if finished.is_empty() {
            return;
        }
        self.context
            .counters
            .finished(finished.iter().map(|(_, timestamp_ms)| *timestamp_ms));
        self.intake.finished(finished.iter().map(|(offset, _)| *offset));
        for (offset, _) in finished {
            self.tracker.finish(offset);
        }
        if let Some(committable) = self.tracker.committable() {
            self.shared.committable.store(committable, Ordering::Release);
        }
    }

    /// Stopping: wait (bounded) for acknowledgements already under way, so
    /// their messages count as finished; anything else (a held retry,
    /// records waiting to be produced again) stays unfinished and
    /// uncommitted, to be consumed again by whoever owns the partition next.
    async fn drain(&mut self) {
        let deadline = Instant::now() + self.context.drain_timeout;
        let mut acknowledged = Vec::new();
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.next_settled()).await {
                Ok(ready) => {
                    for delivered in ready {
                        match delivered.failed.first() {
                            None => acknowledged.push(delivered.item),
                            Some(failed) => {
                                tracing::warn!(partition = %self.label, offset = delivered.item.message.offset, error = %failed.error, "delivery failed while stopping; the message stays uncommitted");
                            }
                        }
                    }
                }
                Err(_) => {
                    tracing::warn!(partition = %self.label, abandoned = self.in_flight.len(), "stopping before every acknowledgement arrived; those messages stay uncommitted");
                    break;
                }
            }
        }
        if self.complete(acknowledged).await.is_err() {
            tracing::warn!(partition = %self.label, "could not write done-marks while stopping; those messages stay uncommitted");
        }
        if let Some(dedup) = self.dedup.as_mut() {
            // So the partition's next owner need not wait out our leases.
            dedup.release().await;
        }
        if self.blocked {
            self.context.health.partition_unblocked(&self.label);
        }
        tracing::debug!(partition = %self.label, committable = ?self.tracker.committable(), unfinished = self.tracker.unfinished(), "partition worker stopped");
    }
}

/// Messages that waited for another worker's claim on their dedup key,
/// once some are settled; never resolves without dedup.
async fn settle_waiting(dedup: Option<&mut DedupScreen>, stop: &CancellationToken) -> Option<Screened> {
    match dedup {
        Some(dedup) => dedup.settle_waiting(stop).await,
        None => std::future::pending().await,
    }
}

/// Which failure of a delivery's records decides what happens to it.
fn severity(kind: DeliveryFailureKind) -> u8 {
    match kind {
        DeliveryFailureKind::Transient => 0,
        DeliveryFailureKind::RecordTooLarge => 1,
        DeliveryFailureKind::Permanent => 2,
        DeliveryFailureKind::ProducerFatal => 3,
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
