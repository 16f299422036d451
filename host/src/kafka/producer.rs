//! The stage's producer: every record is either acknowledged by the broker
//! or reported as failed; nothing is dropped silently.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::Client;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tokio::sync::oneshot;

use super::delivery_error::{DeliveryError, FailedDelivery};
use super::delivery_report::{DeliveryReporter, DeliveryRoute, FatalCheck, PendingDelivery, Ticket};
use super::record::OutgoingRecord;

/// Idempotent, `acks=all` producer.
pub struct SinkProducer {
    producer: ThreadedProducer<DeliveryReporter>,
    fatal_check: FatalCheck,
}

impl SinkProducer {
    pub fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        let producer = ThreadedProducer::from_config_and_context(config, DeliveryReporter)?;
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
        self.enqueue_alone(record, None).await
    }

    /// [`SinkProducer::enqueue`] to one chosen partition, rather than the
    /// one the key hashes to: a replayed record goes back to the partition
    /// it was first read from, whatever partitioner its producer used.
    pub async fn enqueue_to_partition(&self, record: &OutgoingRecord, partition: i32) -> PendingDelivery {
        self.enqueue_alone(record, Some(partition)).await
    }

    /// Hand a record to librdkafka like [`SinkProducer::enqueue`], with its
    /// answer reported on `route` under `token` instead of through a future
    /// of its own. `Err` when librdkafka refused the record outright; then
    /// nothing will be reported for it.
    pub async fn enqueue_routed(
        &self,
        record: &OutgoingRecord,
        route: &DeliveryRoute,
        token: u64,
    ) -> Result<(), Box<FailedDelivery>> {
        let ticket = Ticket::Routed {
            route: route.clone(),
            token,
        };
        self.send(record, None, ticket).await.map_err(|error| {
            Box::new(FailedDelivery {
                error: DeliveryError::from_kafka(&error, self.fatal_error()),
                record: record.clone(),
            })
        })
    }

    /// A route for [`SinkProducer::enqueue_routed`] and the receiver its
    /// reports arrive on.
    pub fn route(
        &self,
    ) -> (
        DeliveryRoute,
        tokio::sync::mpsc::UnboundedReceiver<super::DeliveryReport>,
    ) {
        DeliveryRoute::new(self.fatal_check.clone())
    }

    async fn enqueue_alone(&self, record: &OutgoingRecord, partition: Option<i32>) -> PendingDelivery {
        let (sender, answer) = oneshot::channel();
        match self.send(record, partition, Ticket::Alone(sender)).await {
            Ok(()) => PendingDelivery::Waiting {
                answer,
                fatal: self.fatal_check.clone(),
            },
            Err(error) => PendingDelivery::Failed(Some(Box::new(FailedDelivery {
                error: DeliveryError::from_kafka(&error, self.fatal_error()),
                record: record.clone(),
            }))),
        }
    }

    /// Enqueue `record` with its ticket, waiting while the local queue is
    /// full. `Err` when librdkafka refuses it for any other reason.
    async fn send(&self, record: &OutgoingRecord, partition: Option<i32>, ticket: Ticket) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let mut base_record: BaseRecord<'_, [u8], [u8], Box<Ticket>> =
            BaseRecord::with_opaque_to(&record.topic, Box::new(ticket)).headers(headers);
        if let Some(key) = &record.key {
            base_record = base_record.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base_record = base_record.payload(value.as_slice());
        }
        if let Some(partition) = partition {
            base_record = base_record.partition(partition);
        }
        loop {
            match self.producer.send(base_record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    base_record = returned;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => return Err(error),
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
    pub fn client(&self) -> &Client<impl rdkafka::producer::ProducerContext> {
        self.producer.client()
    }
}
