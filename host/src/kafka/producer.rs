//! The stage's producer: every record is either acknowledged by the broker
//! or reported as failed; nothing is dropped silently.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::FutureProducerContext;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::delivery_error::{DeliveryError, DeliveryFailureKind, FailedDelivery};
use super::record::OutgoingRecord;

/// Idempotent, `acks=all` producer.
pub struct SinkProducer {
    producer: FutureProducer,
    fatal_check: FatalCheck,
}

impl SinkProducer {
    pub fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        let producer: FutureProducer = config.create()?;
        let client = producer.clone();
        let fatal_check: FatalCheck = std::sync::Arc::new(move || {
            client
                .client()
                .fatal_error()
                .map(|(code, reason)| format!("fatal producer error {code:?}: {reason}"))
        });
        Ok(SinkProducer { producer, fatal_check })
    }

    /// Hand a record to librdkafka, waiting while its local queue is full
    /// (callers that must stop promptly race this against their stop
    /// signal: dropping the future loses nothing, the record is theirs).
    /// Records enqueued in order from one task are produced in that order.
    /// The returned future resolves once the broker acknowledged the record,
    /// or the delivery failed for good, handing the record back.
    pub async fn enqueue(&self, record: &OutgoingRecord) -> PendingDelivery {
        self.enqueue_to(record, None).await
    }

    /// [`SinkProducer::enqueue`] to one chosen partition, rather than the
    /// one the key hashes to: a replayed record goes back to the partition
    /// it was first read from, whatever partitioner its producer used.
    pub async fn enqueue_to_partition(&self, record: &OutgoingRecord, partition: i32) -> PendingDelivery {
        self.enqueue_to(record, Some(partition)).await
    }

    async fn enqueue_to(&self, record: &OutgoingRecord, partition: Option<i32>) -> PendingDelivery {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic).headers(headers);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            future_record = future_record.payload(value.as_slice());
        }
        if let Some(partition) = partition {
            future_record = future_record.partition(partition);
        }
        loop {
            match self.producer.send_result(future_record) {
                Ok(delivery) => {
                    return PendingDelivery::Waiting {
                        delivery,
                        fatal: self.fatal_check.clone(),
                    };
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    future_record = returned;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => {
                    return PendingDelivery::Failed(Some(Box::new(FailedDelivery {
                        error: DeliveryError::from_kafka(&error, self.fatal_error()),
                        record: record.clone(),
                    })));
                }
            }
        }
    }

    /// Why the producer can no longer be used, once librdkafka says so (a
    /// fatal idempotent-producer error): its sequence state is lost, and
    /// every later record would fail.
    pub fn fatal_error(&self) -> Option<String> {
        (self.fatal_check)()
    }

    /// Make librdkafka raise a fatal error, as a broken idempotent producer
    /// would: for tests of how a stage handles one, which the brokers
    /// cannot be made to cause on demand.
    #[doc(hidden)]
    pub fn inject_fatal_error(&self, reason: &str) {
        let reason = std::ffi::CString::new(reason).unwrap_or_default();
        // SAFETY: the client pointer is valid for as long as `self.producer`
        // lives, and `reason` is a NUL-terminated string librdkafka copies.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }

    /// Wait for every enqueued record to be acknowledged or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The underlying client, for metadata requests.
    pub fn client(&self) -> &Client<FutureProducerContext<DefaultClientContext>> {
        self.producer.client()
    }
}

/// The outcome of one enqueued record.
pub enum PendingDelivery {
    Waiting {
        delivery: DeliveryFuture,
        /// Whether librdkafka has given up on the producer, read when a
        /// failure arrives.
        fatal: FatalCheck,
    },
    Failed(Option<Box<FailedDelivery>>),
}

/// Reads the producer's fatal state when a delivery fails, so a failure
/// caused by a fatal error is reported as one.
pub type FatalCheck = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl Future for PendingDelivery {
    type Output = Result<(), Box<FailedDelivery>>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            PendingDelivery::Failed(failed) => Poll::Ready(Err(failed.take().unwrap_or_else(|| {
                Box::new(FailedDelivery::without_record(
                    DeliveryFailureKind::Transient,
                    "delivery polled after completion",
                ))
            }))),
            PendingDelivery::Waiting { delivery, fatal } => {
                Pin::new(delivery).poll(context).map(|outcome| match outcome {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, message))) => Err(Box::new(FailedDelivery {
                        error: DeliveryError::from_kafka(&error, fatal()),
                        record: returned_record(&message),
                    })),
                    Err(_) => Err(Box::new(FailedDelivery::without_record(
                        DeliveryFailureKind::Transient,
                        "the producer shut down before the broker answered",
                    ))),
                })
            }
        }
    }
}

/// The record librdkafka hands back with a failed delivery. Its header
/// names were written by this process from Rust strings, so reading them
/// back as UTF-8 cannot fail.
fn returned_record(message: &OwnedMessage) -> OutgoingRecord {
    OutgoingRecord {
        topic: message.topic().to_owned(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                (0..headers.count())
                    .filter_map(|index| headers.try_get(index))
                    .map(|header| (header.key.to_owned(), header.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
