//! Reading a whole topic once, from the beginning to where it ended when
//! reading started, without a consumer group: for tools that look at a
//! topic (`sluice dlq`) while a stage keeps running.
//!
//! # Knowing the end
//!
//! A topic has no end while producers write to it, so the end is taken
//! when the reader opens: each partition's high watermark (ListOffsets)
//! and the time. A partition is finished by whichever comes first:
//!
//! 1. **End of partition.** librdkafka reports it (`enable.partition.eof`)
//!    once a fetch has delivered everything up to the broker's current
//!    end: right after the last record when nothing new arrived.
//! 2. **A record written after the start.** A record at or past the start
//!    watermark whose timestamp is at or after the start time is not
//!    returned, and ends its partition, so a busy writer cannot keep the
//!    reader going.
//! 3. **Idle timeout**, the last resort: when no record and no end event
//!    arrived for that long, the partitions still open are reported as
//!    ended by it (see [`TopicReader::ended_by`]) so the caller can say the
//!    listing may be incomplete.
//!
//! Why not simply stop at the watermark: brokers do not all answer
//! ListOffsets right. tansu 0.6 gives the last record batch's base offset
//! plus one, too low whenever that batch holds more than one record, as
//! the stage's batching producer writes them; stopping there would drop
//! dead letters. So records past the watermark are kept when they were
//! written before the start, and the end-of-partition event, which
//! follows the fetch responses' own (correct) watermark, decides. On Kafka,
//! where the watermark is exact, rules 1 and 2 give exactly the records
//! below it (give or take a producer whose clock runs behind).
//!
//! Reading uses `assign`, never `subscribe`, under a group id of its own
//! that is never committed to, so a stage's consumer group is not joined,
//! rebalanced or moved.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::record::{ConsumedRecord, TopicPartition};

/// Why a topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopicReadError {
    #[error("cannot read metadata of topic `{topic}` from {brokers}: {cause}")]
    Unreachable {
        topic: String,
        brokers: String,
        cause: String,
    },
    #[error("topic `{topic}` does not exist on {brokers}; check the topic name and the brokers")]
    Missing { topic: String, brokers: String },
    #[error("this client is not authorized to read topic `{topic}`; grant it access (ACLs)")]
    Unauthorized { topic: String },
    #[error("cannot read the high watermark of {partition}: {cause}")]
    Watermark { partition: TopicPartition, cause: String },
    #[error("cannot read topic `{topic}`: {cause}")]
    Consume { topic: String, cause: KafkaError },
}

/// How long the reader waits for the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTimeouts {
    /// For the metadata and watermark requests when opening.
    pub request: Duration,
    /// With nothing arriving for this long, reading ends (signal 3 in the
    /// module docs).
    pub idle: Duration,
}

/// What finished a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// A record written after the reader opened was reached.
    WrittenAfterStart,
    /// librdkafka reported the end of the partition.
    EndOfPartition,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
}

impl fmt::Display for EndedBy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            EndedBy::WrittenAfterStart => "a record written after the start",
            EndedBy::EndOfPartition => "end of partition",
            EndedBy::IdleTimeout => "idle timeout",
        })
    }
}

struct PartitionState {
    /// The high watermark when the reader opened.
    high_at_start: i64,
    ended_by: Option<EndedBy>,
}

impl PartitionState {
    /// Whether a record belongs to what the partition held when the reader
    /// opened at `started_at_ms` (rule 2 of the module docs); the first one
    /// that does not ends the partition.
    fn admits(&mut self, offset: i64, timestamp_ms: Option<i64>, started_at_ms: i64) -> bool {
        if self.ended_by.is_some() {
            return false;
        }
        if offset < self.high_at_start {
            return true;
        }
        if timestamp_ms.is_none_or(|timestamp| timestamp >= started_at_ms) {
            self.ended_by = Some(EndedBy::WrittenAfterStart);
            return false;
        }
        tracing::debug!(
            offset,
            high_at_start = self.high_at_start,
            "a record written before the start lies past the high watermark the broker reported"
        );
        true
    }
}

/// Reads every record of one topic up to its end (see the module docs).
/// Records of one partition come in offset order.
pub struct TopicReader {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    /// When the reader opened, in milliseconds since the epoch.
    started_at_ms: i64,
    partitions: BTreeMap<i32, PartitionState>,
    idle: Duration,
    /// When a record or end event last arrived, or when the caller last
    /// asked for a record if that was later: time the caller spends between
    /// records is not the topic's silence.
    last_progress: Instant,
}

impl TopicReader {
    /// Look up the topic's partitions and their watermarks, and start
    /// fetching each from its beginning. `config` carries the brokers and
    /// the TLS/SASL settings (a stage's [`super::consumer_config`] will do);
    /// the reader replaces the group id, offset and EOF settings with those
    /// it relies on.
    pub fn open(config: &ClientConfig, topic: &str, timeouts: ReadTimeouts) -> Result<Self, TopicReadError> {
        let mut config = config.clone();
        // Never joined (assign only) and never committed to: a name of its
        // own so no real group is touched.
        config.set(
            "group.id",
            format!("sluice-topic-reader-{}", hex::encode(rand::random::<[u8; 8]>())),
        );
        config.remove("group.instance.id");
        // Its statistics would only be logged.
        config.remove("statistics.interval.ms");
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        config.set("enable.partition.eof", "true");
        config.set("auto.offset.reset", "earliest");
        let brokers = config.get("bootstrap.servers").unwrap_or("the brokers").to_owned();
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        let consumer: BaseConsumer<ReaderContext> =
            config
                .create_with_context(ReaderContext)
                .map_err(|error| TopicReadError::Unreachable {
                    topic: topic.to_owned(),
                    brokers: brokers.clone(),
                    cause: error.to_string(),
                })?;

        let partition_ids = partitions_of(&consumer, topic, &brokers, timeouts.request)?;
        let mut partitions = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for partition in partition_ids {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, timeouts.request)
                .map_err(|error| TopicReadError::Watermark {
                    partition: TopicPartition::new(topic, partition),
                    cause: error.to_string(),
                })?;
            tracing::debug!(topic, partition, high, "high watermark at start");
            partitions.insert(
                partition,
                PartitionState {
                    high_at_start: high,
                    ended_by: None,
                },
            );
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(|cause| consume_error(topic, cause))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|cause| consume_error(topic, cause))?;
        Ok(TopicReader {
            consumer,
            topic: topic.to_owned(),
            started_at_ms,
            partitions,
            idle: timeouts.idle,
            last_progress: Instant::now(),
        })
    }

    /// For each partition read so far to its end, what ended it.
    pub fn ended_by(&self) -> Vec<(i32, EndedBy)> {
        self.partitions
            .iter()
            .filter_map(|(partition, state)| state.ended_by.map(|ended_by| (*partition, ended_by)))
            .collect()
    }

    /// The next record, or `None` once every partition has ended. The idle
    /// timeout counts from this call at the earliest, so a caller may take
    /// its time with each record (`sluice dlq replay` waits for a chunk's
    /// acknowledgements) without the topic seeming to have gone quiet.
    pub fn next_record(&mut self) -> Result<Option<ConsumedRecord>, TopicReadError> {
        self.last_progress = Instant::now();
        loop {
            if self.partitions.values().all(|state| state.ended_by.is_some()) {
                tracing::debug!(topic = %self.topic, ended_by = ?self.ended_by(), "read to the end");
                return Ok(None);
            }
            if self.last_progress.elapsed() >= self.idle {
                for (partition, state) in &mut self.partitions {
                    if state.ended_by.is_none() {
                        tracing::warn!(topic = %self.topic, partition, idle = ?self.idle, "nothing arrived within the idle timeout; taking it as the end of the partition");
                        state.ended_by = Some(EndedBy::IdleTimeout);
                    }
                }
                return Ok(None);
            }
            let Some(event) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            match event {
                Ok(message) => {
                    let partition = rdkafka::Message::partition(&message);
                    let offset = rdkafka::Message::offset(&message);
                    let Some(state) = self.partitions.get_mut(&partition) else {
                        continue;
                    };
                    self.last_progress = Instant::now();
                    let timestamp_ms = rdkafka::Message::timestamp(&message).to_millis();
                    if !state.admits(offset, timestamp_ms, self.started_at_ms) {
                        continue;
                    }
                    let record = ConsumedRecord::from_message(&message, TopicPartition::new(&self.topic, partition));
                    return Ok(Some(record));
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.last_progress = Instant::now();
                    if let Some(state) = self.partitions.get_mut(&partition)
                        && state.ended_by.is_none()
                    {
                        state.ended_by = Some(EndedBy::EndOfPartition);
                    }
                }
                Err(error) if is_fatal(&error) => return Err(consume_error(&self.topic, error)),
                Err(error) => {
                    // Already logged by the context.
                    tracing::debug!(topic = %self.topic, %error, "fetch error; librdkafka keeps retrying");
                }
            }
        }
    }
}

impl Iterator for TopicReader {
    type Item = Result<ConsumedRecord, TopicReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Logs client errors as warnings, but not the end-of-partition events the
/// reader asks for: rdkafka passes every consumer error event through here
/// as well as returning it from `poll`.
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(reason, "end of partition");
        } else {
            tracing::warn!(%error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

fn partitions_of(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    brokers: &str,
    timeout: Duration,
) -> Result<Vec<i32>, TopicReadError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|error| TopicReadError::Unreachable {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
            cause: error.to_string(),
        })?;
    let Some(found) = metadata.topics().iter().find(|found| found.name() == topic) else {
        return Err(TopicReadError::Missing {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        });
    };
    match found.error().map(RDKafkaErrorCode::from) {
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            return Err(TopicReadError::Unauthorized {
                topic: topic.to_owned(),
            });
        }
        Some(_) => {
            return Err(TopicReadError::Missing {
                topic: topic.to_owned(),
                brokers: brokers.to_owned(),
            });
        }
        None => {}
    }
    if found.partitions().is_empty() {
        return Err(TopicReadError::Missing {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        });
    }
    Ok(found.partitions().iter().map(|partition| partition.id()).collect())
}

/// Errors no retry by librdkafka will fix.
fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::MessageConsumptionFatal(_) => true,
        KafkaError::MessageConsumption(code) => matches!(
            code,
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
        ),
        _ => false,
    }
}

fn consume_error(topic: &str, cause: KafkaError) -> TopicReadError {
    TopicReadError::Consume {
        topic: topic.to_owned(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::{EndedBy, PartitionState};

    const START: i64 = 1_000;

    fn partition(high_at_start: i64) -> PartitionState {
        PartitionState {
            high_at_start,
            ended_by: None,
        }
    }

    #[test]
    fn records_below_the_watermark_are_read_and_one_written_later_ends_the_partition() {
        let mut state = partition(2);
        assert!(
            state.admits(0, Some(START + 5), START),
            "below the watermark, whatever its time"
        );
        assert!(state.admits(1, None, START));
        assert!(!state.admits(2, Some(START), START));
        assert_eq!(state.ended_by, Some(EndedBy::WrittenAfterStart));
        assert!(!state.admits(3, Some(START - 5), START), "nothing after the end");
    }

    #[test]
    fn records_past_a_watermark_reported_too_low_count_when_written_before_the_start() {
        let mut state = partition(1);
        assert!(state.admits(0, Some(START - 9), START));
        assert!(state.admits(1, Some(START - 9), START));
        assert!(state.admits(2, Some(START - 1), START));
        assert_eq!(state.ended_by, None);
        assert!(!state.admits(3, None, START), "no timestamp: cannot be shown to be old");
        assert_eq!(state.ended_by, Some(EndedBy::WrittenAfterStart));
    }
}
