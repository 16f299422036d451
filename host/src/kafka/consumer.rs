//! The stage's consumer: a consumer group member whose offsets move only
//! when the pipeline says a message is finished.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};

use super::partition_feed::PartitionFeed;
use super::record::{ConsumedRecord, TopicPartition};

/// Told about partitions coming and going. Called on the consumer's own
/// thread, inside [`SourceConsumer::poll`], so it may block while work for
/// revoked partitions winds down.
pub trait RebalanceListener: Send + Sync + 'static {
    /// These partitions are about to be taken away. Stop their work and
    /// return, for each, the offset to commit (the next offset to read), if
    /// anything was finished; they are committed before the partitions go.
    fn partitions_revoked(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)>;

    /// These partitions are now this member's, each with its own feed of
    /// fetched records.
    fn partitions_assigned(&self, feeds: Vec<PartitionFeed>);

    /// The client's periodic statistics (`statistics.interval.ms`).
    fn statistics(&self, _statistics: ConsumerStatistics) {}

    /// An error of the client as a whole: brokers unreachable,
    /// authentication refused. librdkafka keeps retrying by itself, unless
    /// the error is fatal.
    fn client_error(&self, _error: &KafkaError, _kind: ConsumerErrorKind) {}
}

/// What an error reported by the consumer means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerErrorKind {
    /// No broker at all can be reached right now; librdkafka reconnects by
    /// itself.
    AllBrokersDown,
    /// One connection failed or a name did not resolve; librdkafka
    /// reconnects by itself.
    Connection,
    /// The client cannot go on (`ERR__FATAL`); only a new one will work.
    Fatal,
    /// Anything else: a fetch or group error librdkafka reports upwards.
    Other,
}

impl ConsumerErrorKind {
    pub fn of(error: &KafkaError) -> Self {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => ConsumerErrorKind::AllBrokersDown,
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve) => ConsumerErrorKind::Connection,
            Some(RDKafkaErrorCode::Fatal) => ConsumerErrorKind::Fatal,
            _ => ConsumerErrorKind::Other,
        }
    }

    /// Whether librdkafka recovers from it by reconnecting, so a run of
    /// them says the brokers are away, not that the consumer is broken.
    pub fn is_connectivity(self) -> bool {
        matches!(self, ConsumerErrorKind::AllBrokersDown | ConsumerErrorKind::Connection)
    }
}

/// What the consumer's statistics say about its connections and the
/// partitions it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatistics {
    /// Brokers the client has a working connection to.
    pub brokers_up: usize,
    pub partitions: Vec<PartitionOffsets>,
}

/// One owned partition's offsets, as of the last statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: TopicPartition,
    /// The group's committed offset; `None` before the first commit.
    pub committed: Option<i64>,
    pub high_watermark: i64,
    pub log_start: i64,
}

impl ConsumerStatistics {
    fn from_librdkafka(statistics: &Statistics) -> Self {
        let brokers_up = statistics
            .brokers
            .values()
            .filter(|broker| broker.nodeid >= 0 && broker.state == "UP")
            .count();
        let partitions = statistics
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .values()
                    // -1 is librdkafka's internal "unassigned" partition;
                    // fetch state "none" a partition it knows but does not own.
                    .filter(|partition| partition.partition >= 0 && partition.fetch_state != "none")
                    .filter(|partition| partition.hi_offset >= 0)
                    .map(|partition| PartitionOffsets {
                        partition: TopicPartition::new(&topic.topic, partition.partition),
                        committed: Some(partition.committed_offset).filter(|offset| *offset >= 0),
                        high_watermark: partition.hi_offset,
                        log_start: partition.lo_offset.max(0),
                    })
            })
            .collect();
        ConsumerStatistics { brokers_up, partitions }
    }
}

type Inner<L> = BaseConsumer<ListenerContext<L>>;

struct ListenerContext<L: RebalanceListener> {
    listener: Arc<L>,
    /// The consumer this context belongs to, for splitting partition
    /// queues on assignment. Weak: the consumer owns this context.
    consumer: OnceLock<Weak<Inner<L>>>,
}

impl<L: RebalanceListener> ListenerContext<L> {
    /// Give each newly assigned partition its own queue. Done inside the
    /// assignment callback, before any of their records can be fetched, so
    /// none land on the shared queue.
    fn split_feeds(&self, list: &TopicPartitionList) -> Vec<PartitionFeed> {
        let consumer = self.consumer.get().and_then(Weak::upgrade);
        partitions_of(list)
            .into_iter()
            .map(|partition| {
                let queue = consumer
                    .as_ref()
                    .and_then(|consumer| consumer.split_partition_queue(&partition.topic, partition.partition));
                match queue {
                    Some(queue) => PartitionFeed::split(partition, queue),
                    None => {
                        tracing::warn!(%partition, "could not give the partition its own queue; its records come through the shared one");
                        PartitionFeed::shared(partition)
                    }
                }
            })
            .collect()
    }
}

impl<L: RebalanceListener> ClientContext for ListenerContext<L> {
    fn stats(&self, statistics: Statistics) {
        self.listener
            .statistics(ConsumerStatistics::from_librdkafka(&statistics));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka client error");
        self.listener.client_error(&error, ConsumerErrorKind::of(&error));
    }
}

impl<L: RebalanceListener> ConsumerContext for ListenerContext<L> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = partitions_of(list);
            tracing::info!(partitions = %describe(&partitions), "partitions revoked");
            let offsets = self.listener.partitions_revoked(&partitions);
            if let Err(error) = commit_offsets(consumer, &offsets, CommitMode::Sync) {
                tracing::warn!(%error, "could not commit finished offsets of revoked partitions; their new owner will re-read from the last commit");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let feeds = self.split_feeds(list);
                let partitions: Vec<TopicPartition> = feeds.iter().map(|feed| feed.partition().clone()).collect();
                tracing::info!(partitions = %describe(&partitions), "partitions assigned");
                self.listener.partitions_assigned(feeds);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "consumer group rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A consumer group member reading the stage's input topics.
pub struct SourceConsumer<L: RebalanceListener> {
    consumer: Arc<Inner<L>>,
}

impl<L: RebalanceListener> SourceConsumer<L> {
    /// Join the group and subscribe to `topics`.
    pub fn subscribe(config: &ClientConfig, topics: &[String], listener: Arc<L>) -> Result<Self, KafkaError> {
        let consumer: Arc<Inner<L>> = Arc::new(config.create_with_context(ListenerContext {
            listener,
            consumer: OnceLock::new(),
        })?);
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(SourceConsumer { consumer })
    }

    /// Serve the group: rebalance callbacks run inside this call. Records
    /// normally arrive on their partitions' feeds; one returned here is for
    /// a partition whose feed could not be split off.
    pub fn poll(&self, timeout: Duration) -> Option<Result<ConsumedRecord, KafkaError>> {
        self.consumer.poll(timeout).map(|result| {
            result.map(|message| {
                let partition =
                    TopicPartition::new(rdkafka::Message::topic(&message), rdkafka::Message::partition(&message));
                ConsumedRecord::from_message(&message, partition)
            })
        })
    }

    /// Commit `offsets` (each the next offset to read). `sync` waits for the
    /// group coordinator's answer.
    pub fn commit(&self, offsets: &[(TopicPartition, i64)], sync: bool) -> Result<(), KafkaError> {
        let mode = if sync { CommitMode::Sync } else { CommitMode::Async };
        commit_offsets(&self.consumer, offsets, mode)
    }

    /// Commit `offsets` and wait for the answer, but no longer than
    /// `timeout`: with the group coordinator unreachable, librdkafka's own
    /// wait runs to the session timeout (45 s by default), which a stopping
    /// stage must not sit out. A commit still under way at the deadline is
    /// left to finish or fail by itself; its offsets are only ever of
    /// finished messages, so either way nothing is lost.
    pub fn commit_within(&self, offsets: &[(TopicPartition, i64)], timeout: Duration) -> Result<(), KafkaError>
    where
        L: 'static,
    {
        if offsets.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let to_commit = offsets.to_vec();
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let committing = std::thread::Builder::new()
            .name("sluice-commit".to_owned())
            .spawn(move || {
                let _ = answer.send(commit_offsets(&consumer, &to_commit, CommitMode::Sync));
            });
        if committing.is_err() {
            return commit_offsets(&self.consumer, offsets, CommitMode::Async);
        }
        answered
            .recv_timeout(timeout)
            .unwrap_or(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::OperationTimedOut)))
    }

    /// Stop fetching these partitions; records already fetched may still
    /// arrive. Resuming fetches from after the last record returned.
    pub fn pause(&self, partitions: &[TopicPartition]) -> Result<(), KafkaError> {
        self.consumer.pause(&list_of(partitions))
    }

    pub fn resume(&self, partitions: &[TopicPartition]) -> Result<(), KafkaError> {
        self.consumer.resume(&list_of(partitions))
    }

    /// The group's committed offsets for these partitions, as the broker
    /// has them.
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<Vec<(TopicPartition, Option<i64>)>, KafkaError> {
        let committed = self.consumer.committed_offsets(list_of(partitions), timeout)?;
        Ok(committed
            .elements()
            .iter()
            .map(|element| {
                let offset = match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                };
                (TopicPartition::new(element.topic(), element.partition()), offset)
            })
            .collect())
    }

    /// Leave the group cleanly, so the partitions move without waiting for
    /// the session timeout.
    pub fn close(&self) {
        self.consumer.unsubscribe();
        // Serve the revocation callback the unsubscribe triggers.
        for _ in 0..10 {
            if self.consumer.poll(Duration::from_millis(100)).is_none()
                && self.consumer.assignment().map_or(true, |list| list.count() == 0)
            {
                break;
            }
        }
    }
}

fn list_of(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(&partition.topic, partition.partition);
    }
    list
}

fn commit_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[(TopicPartition, i64)],
    mode: CommitMode,
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(&partition.topic, partition.partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, mode)
}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|element| TopicPartition::new(element.topic(), element.partition()))
        .collect()
}

fn describe(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
