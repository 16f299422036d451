//! The stage's producer: every record is either acknowledged by the broker
//! or reported as failed; nothing is dropped silently.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::FutureProducerContext;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::record::OutgoingRecord;

/// A record the broker would not take, after librdkafka's own retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Idempotent, `acks=all` producer.
pub struct SinkProducer {
    producer: FutureProducer,
}

impl SinkProducer {
    pub fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        Ok(SinkProducer {
            producer: config.create()?,
        })
    }

    /// Hand a record to librdkafka, waiting while its local queue is full.
    /// Records enqueued in order from one task are produced in that order.
    /// The returned future resolves once the broker acknowledged the record,
    /// or the delivery failed for good.
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
                Ok(delivery) => return PendingDelivery::Waiting(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    future_record = returned;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => return PendingDelivery::Failed(Some(DeliveryError(error.to_string()))),
            }
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
    Waiting(DeliveryFuture),
    Failed(Option<DeliveryError>),
}

impl Future for PendingDelivery {
    type Output = Result<(), DeliveryError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            PendingDelivery::Failed(error) => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| DeliveryError("delivery polled after completion".to_owned())))),
            PendingDelivery::Waiting(delivery) => Pin::new(delivery).poll(context).map(|outcome| match outcome {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(DeliveryError(error.to_string())),
                Err(_) => Err(DeliveryError(
                    "the producer shut down before the broker answered".to_owned(),
                )),
            }),
        }
    }
}
