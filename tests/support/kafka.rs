//! Talking to the test broker directly: create topics, produce inputs,
//! read every record back, read a group's committed offsets.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// A record as read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// When the producer created it, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The value of the last header with this name, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(header, _)| header == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn value_text(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }
}

/// A record to produce as test input.
#[derive(Debug, Clone)]
pub struct Input {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Input {
    pub fn text(partition: i32, key: &str, value: &str) -> Input {
        Input {
            partition,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Input {
        self.headers.push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// Create topics with `partitions` partitions each.
pub fn create_topics(brokers: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = runtime()
        .block_on(admin.create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

/// Produce every input (idempotent, acks=all) and wait until all are
/// acknowledged.
///
/// Each record is its own batch: tansu 0.6 answers a fetch that starts in
/// the middle of a stored batch with nothing, so a consumer resuming (after
/// a pause, a restart or a rebalance) at such an offset would stall there.
/// Real Kafka returns the enclosing batch; with one record per batch every
/// offset is a batch boundary and tansu behaves the same.
pub fn produce(brokers: &str, topic: &str, inputs: &[Input]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for input in inputs {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &input.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut record = BaseRecord::to(topic)
            .partition(input.partition)
            .key(&input.key)
            .payload(&input.value)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("inputs acknowledged");
}

/// Read `topic` from the beginning until at least `expected` records
/// arrived (or `limit` passed), then keep reading for `settle` to catch
/// records beyond the expected ones (duplicates).
pub fn read_topic(brokers: &str, topic: &str, expected: usize, limit: Duration, settle: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-tests-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");

    let mut records = Vec::new();
    let started = Instant::now();
    let mut reached: Option<Instant> = None;
    loop {
        if let Some(at) = reached
            && at.elapsed() >= settle
        {
            break;
        }
        if reached.is_none() && started.elapsed() >= limit {
            break;
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("read a record");
            records.push(Record {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                timestamp_ms: message.timestamp().to_millis(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers: message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| (header.key.to_owned(), header.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        if reached.is_none() && records.len() >= expected {
            reached = Some(Instant::now());
        }
    }
    records
}

/// Everything on `topic` right now: reads for two seconds.
pub fn read_all(brokers: &str, topic: &str) -> Vec<Record> {
    read_topic(brokers, topic, usize::MAX, Duration::from_secs(2), Duration::ZERO)
}

/// The group's committed offset for each partition of `topic` (`None` where
/// nothing is committed).
pub fn committed_offsets(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
        .collect()
}

/// Wait until the group's committed offsets equal `expected` (per
/// partition), or `limit` passes; returns the last offsets read.
pub fn wait_for_commits(
    brokers: &str,
    group: &str,
    topic: &str,
    expected: &[Option<i64>],
    limit: Duration,
) -> Vec<Option<i64>> {
    let started = Instant::now();
    loop {
        let offsets = committed_offsets(brokers, group, topic, expected.len() as i32);
        if offsets == expected || started.elapsed() >= limit {
            return offsets;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
