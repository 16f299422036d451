//! How the broker's answer for a produced record gets back to whoever sent
//! it, without a future per record.
//!
//! librdkafka calls back once per record on the producer's polling thread.
//! A one-off sender (seeding, replay) waits on its record alone, through a
//! [`PendingDelivery`]. A partition worker has thousands of records under
//! way, so it gets one channel ([`DeliveryRoute`]) for all of them: each
//! record carries a token the worker chose, and the worker drains every
//! report that has arrived with one wake-up instead of one per record.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::{mpsc, oneshot};

use super::delivery_error::{DeliveryError, DeliveryFailureKind, FailedDelivery};
use super::record::OutgoingRecord;

/// Why a record failed, as librdkafka reported it, with the record back.
pub type RawFailure = (KafkaError, OutgoingRecord);

/// One record's answer on a [`DeliveryRoute`].
#[derive(Debug)]
pub struct DeliveryReport {
    /// What the sender passed with the record.
    pub token: u64,
    /// `None` once the broker acknowledged the record.
    pub failure: Option<Box<FailedDelivery>>,
}

/// The sending half of a worker's report channel: cloned into every record
/// it produces. Unbounded, because what bounds it is upstream: a worker
/// only has as many records under way as its in-flight cap lets it.
#[derive(Clone)]
pub struct DeliveryRoute {
    reports: mpsc::UnboundedSender<DeliveryReport>,
    fatal: FatalCheck,
}

impl DeliveryRoute {
    /// A route and the receiver its reports arrive on. `fatal` reads the
    /// producer's fatal state, so a failure caused by one says so.
    pub fn new(fatal: FatalCheck) -> (Self, mpsc::UnboundedReceiver<DeliveryReport>) {
        let (reports, receiver) = mpsc::unbounded_channel();
        (DeliveryRoute { reports, fatal }, receiver)
    }
}

/// Where one record's answer goes: librdkafka holds it (boxed, as the
/// record's opaque) until it calls back.
pub(super) enum Ticket {
    Alone(oneshot::Sender<Result<(), RawFailure>>),
    Routed { route: DeliveryRoute, token: u64 },
}

/// Reads the producer's fatal state when a delivery fails, so a failure
/// caused by a fatal error is reported as one.
pub type FatalCheck = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The producer's context: hands each answer to its ticket.
pub(super) struct DeliveryReporter;

impl ClientContext for DeliveryReporter {}

impl ProducerContext for DeliveryReporter {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        let failure = result
            .as_ref()
            .err()
            .map(|(error, message)| (error.clone(), returned_record(message)));
        // A sender that went away (a worker told to stop) no longer cares;
        // its messages stay uncommitted.
        match *ticket {
            Ticket::Alone(sender) => {
                let _ = sender.send(failure.map_or(Ok(()), Err));
            }
            Ticket::Routed { route, token } => {
                let failure = failure.map(|(error, record)| {
                    Box::new(FailedDelivery {
                        error: DeliveryError::from_kafka(&error, (route.fatal)()),
                        record,
                    })
                });
                let _ = route.reports.send(DeliveryReport { token, failure });
            }
        }
    }
}

/// The outcome of one record enqueued on its own.
pub enum PendingDelivery {
    Waiting {
        answer: oneshot::Receiver<Result<(), RawFailure>>,
        /// Whether librdkafka has given up on the producer, read when a
        /// failure arrives.
        fatal: FatalCheck,
    },
    Failed(Option<Box<FailedDelivery>>),
}

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
            PendingDelivery::Waiting { answer, fatal } => Pin::new(answer).poll(context).map(|outcome| match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err((error, record))) => Err(Box::new(FailedDelivery {
                    error: DeliveryError::from_kafka(&error, fatal()),
                    record,
                })),
                Err(_) => Err(Box::new(FailedDelivery::without_record(
                    DeliveryFailureKind::Transient,
                    "the producer shut down before the broker answered",
                ))),
            }),
        }
    }
}

/// The record librdkafka hands back with a failed delivery. Its header
/// names were written by this process from Rust strings, so reading them
/// back as UTF-8 cannot fail.
fn returned_record(message: &impl Message) -> OutgoingRecord {
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
