//! Talking to the test broker directly: create topics, produce inputs
//! (well-formed ones, or any bytes at all), read every record back, read a
//! group's committed offsets.

use std::ffi::{CStr, CString, c_void};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings::{
    RD_KAFKA_MSG_F_COPY, rd_kafka_error_code, rd_kafka_error_destroy, rd_kafka_error_string, rd_kafka_produceva,
    rd_kafka_vtype_t, rd_kafka_vu_s__bindgen_ty_1, rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1,
    rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2, rd_kafka_vu_t,
};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
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
    /// As text, for convenience: names lossily (U+FFFD for bytes that are
    /// not UTF-8), a null value as empty.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Exactly as on the wire: name bytes, and `None` for a null value.
    pub raw_headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
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
    produce_with(
        brokers,
        topic,
        inputs,
        &[("batch.num.messages", "1"), ("linger.ms", "0")],
    );
}

/// Produce `inputs` as any producer does, many records to a batch
/// (`linger.ms = 5`): the input of the stage bench's batched case. Only
/// for a consumer that starts at the beginning and never seeks (tansu
/// returns nothing to a fetch that starts mid-batch).
pub fn produce_batched(brokers: &str, topic: &str, inputs: &[Input]) {
    produce_with(brokers, topic, inputs, &[("linger.ms", "5")]);
}

fn produce_with(brokers: &str, topic: &str, inputs: &[Input], settings: &[(&str, &str)]) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer: BaseProducer = config.create().expect("producer");
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

/// A record with any bytes anywhere, for tests of what producers other
/// than sluice can write: `None` key is no key, `None` value a tombstone,
/// a `None` header value a null one; header names need not be UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawInput {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// A producer context that keeps every failed delivery's error.
#[derive(Default)]
struct DeliveryFailures(Mutex<Vec<String>>);

impl ClientContext for DeliveryFailures {}

impl ProducerContext for DeliveryFailures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let failure = format!("partition {}: {error}", message.partition());
            self.0.lock().expect("failures lock").push(failure);
        }
    }
}

/// Produce `inputs` byte for byte, as [`produce`] does (idempotent,
/// acks=all, one record per batch), and wait until all are acknowledged.
///
/// rdkafka cannot express every such record: its `Header` takes the name
/// as `&str`, so `OwnedHeaders` cannot hold a name that is not UTF-8, and
/// the raw pointer that would let librdkafka's `rd_kafka_header_add` add
/// one is private to the crate. librdkafka itself takes any bytes, so each
/// record goes to the rdkafka producer's own client through
/// `rd_kafka_produceva` (the array form of `rd_kafka_producev`), each header
/// as an `RD_KAFKA_VTYPE_HEADER` entry. Delivery reports still arrive
/// through the rdkafka producer, whose context keeps the failures.
pub fn produce_raw(brokers: &str, topic: &str, inputs: &[RawInput]) {
    let producer: BaseProducer<DeliveryFailures> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create_with_context(DeliveryFailures::default())
        .expect("producer");
    let topic = CString::new(topic).expect("a topic name without NUL");
    for input in inputs {
        let names: Vec<CString> = input
            .headers
            .iter()
            .map(|(name, _)| CString::new(name.clone()).expect("librdkafka takes header names without NUL"))
            .collect();
        let mut fields = vec![
            field(
                rd_kafka_vtype_t::RD_KAFKA_VTYPE_TOPIC,
                rd_kafka_vu_s__bindgen_ty_1 { cstr: topic.as_ptr() },
            ),
            field(
                rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION,
                rd_kafka_vu_s__bindgen_ty_1 { i32_: input.partition },
            ),
            // Key, value and headers are copied during the call, so nothing
            // here needs to outlive it.
            field(
                rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS,
                rd_kafka_vu_s__bindgen_ty_1 { i: RD_KAFKA_MSG_F_COPY },
            ),
            field(
                rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY,
                rd_kafka_vu_s__bindgen_ty_1 {
                    mem: memory(input.key.as_deref()),
                },
            ),
            field(
                rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE,
                rd_kafka_vu_s__bindgen_ty_1 {
                    mem: memory(input.value.as_deref()),
                },
            ),
        ];
        for (name, (_, value)) in names.iter().zip(&input.headers) {
            let value = memory(value.as_deref());
            let header = rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
                name: name.as_ptr(),
                val: value.ptr.cast_const(),
                size: value.size as isize,
            };
            fields.push(field(
                rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADER,
                rd_kafka_vu_s__bindgen_ty_1 { header },
            ));
        }
        loop {
            // SAFETY: the client pointer is the live producer's; every
            // pointer in `fields` (topic, names, key, value, header values)
            // points into memory borrowed for this whole loop, and
            // librdkafka copies what it keeps (F_COPY). A returned error is
            // ours to read and destroy, once.
            let full = unsafe {
                let error = rd_kafka_produceva(producer.client().native_ptr(), fields.as_ptr(), fields.len());
                if error.is_null() {
                    break;
                }
                let code = rd_kafka_error_code(error);
                let text = CStr::from_ptr(rd_kafka_error_string(error))
                    .to_string_lossy()
                    .into_owned();
                rd_kafka_error_destroy(error);
                assert_eq!(
                    code,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR__QUEUE_FULL,
                    "produce {input:?}: {text}"
                );
                true
            };
            if full {
                producer.poll(Duration::from_millis(10));
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("inputs acknowledged");
    let failures = producer.context().0.lock().expect("failures lock");
    assert!(failures.is_empty(), "deliveries failed: {failures:?}");
}

fn field(vtype: rd_kafka_vtype_t, u: rd_kafka_vu_s__bindgen_ty_1) -> rd_kafka_vu_t {
    rd_kafka_vu_t { vtype, u }
}

/// `None` as a null pointer (no key, a tombstone, a null header value);
/// empty bytes as a real address with size 0, which librdkafka keeps as
/// present but empty.
fn memory(bytes: Option<&[u8]>) -> rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
    static EMPTY: u8 = 0;
    let (ptr, size) = match bytes {
        None => (std::ptr::null(), 0),
        Some([]) => (&raw const EMPTY, 0),
        Some(bytes) => (bytes.as_ptr(), bytes.len()),
    };
    rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
        ptr: ptr.cast::<c_void>().cast_mut(),
        size,
    }
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
            // Not rdkafka's `Headers` iterator: it panics on a header name
            // that is not UTF-8, and tests write such names on purpose.
            let raw_headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = sluice::kafka::raw_headers(&message)
                .expect("librdkafka parses the record's headers")
                .into_iter()
                .map(|(name, value)| (name.to_vec(), value.map(<[u8]>::to_vec)))
                .collect();
            records.push(Record {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                timestamp_ms: message.timestamp().to_millis(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers: raw_headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            String::from_utf8_lossy(name).into_owned(),
                            value.clone().unwrap_or_default(),
                        )
                    })
                    .collect(),
                raw_headers,
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
