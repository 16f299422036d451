//! Why a record was not delivered, sorted by what can be done about it.
//!
//! librdkafka has already retried a record for up to `message.timeout.ms`
//! before it reports a failure, so what reaches the stage is either an
//! outage that outlasted those retries or an error that no retry fixes.
//! The stage reacts differently to each kind; this is where the kinds are
//! told apart.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::record::OutgoingRecord;

/// What kind of failure a delivery error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFailureKind {
    /// May pass by itself: brokers away, timeouts, too few replicas.
    Transient,
    /// The record is larger than the producer or the broker accepts: the
    /// same record never fits, a smaller one might.
    RecordTooLarge,
    /// Trying the same record again cannot help: an unknown topic, a topic
    /// this client may not write, a record the broker calls invalid.
    Permanent,
    /// The producer itself is beyond use (a fatal idempotent-producer
    /// error): every later record would fail too.
    ProducerFatal,
}

impl DeliveryFailureKind {
    /// The kind of a librdkafka error code.
    pub fn of(code: RDKafkaErrorCode) -> Self {
        use RDKafkaErrorCode as Code;
        match code {
            Code::Fatal | Code::Fenced | Code::InvalidProducerEpoch | Code::ProducerFenced => {
                DeliveryFailureKind::ProducerFatal
            }
            Code::MessageSizeTooLarge | Code::MessageBatchTooLarge | Code::InvalidMessageSize => {
                DeliveryFailureKind::RecordTooLarge
            }
            Code::UnknownTopic
            | Code::UnknownPartition
            | Code::UnknownTopicOrPartition
            | Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::InvalidRecord
            | Code::InvalidMessage
            | Code::InvalidTopic
            | Code::InvalidTimestamp
            | Code::PolicyViolation
            | Code::InvalidRequiredAcks
            | Code::InvalidArgument
            | Code::BadMessage
            | Code::UnsupportedForMessageFormat
            | Code::UnsupportedCompressionType => DeliveryFailureKind::Permanent,
            _ => DeliveryFailureKind::Transient,
        }
    }

    /// The kind of a client error; errors without a code count as transient.
    pub fn of_error(error: &KafkaError) -> Self {
        error
            .rdkafka_error_code()
            .map_or(DeliveryFailureKind::Transient, Self::of)
    }
}

/// A record the broker would not take, after librdkafka's own retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub kind: DeliveryFailureKind,
    pub message: String,
}

impl DeliveryError {
    pub fn new(kind: DeliveryFailureKind, message: impl Into<String>) -> Self {
        DeliveryError {
            kind,
            message: message.into(),
        }
    }

    /// The error as the stage should treat it: any error counts as fatal
    /// once librdkafka has declared the producer unusable (`fatal` says
    /// why).
    pub(crate) fn from_kafka(error: &KafkaError, fatal: Option<String>) -> Self {
        match fatal {
            Some(reason) => DeliveryError::new(DeliveryFailureKind::ProducerFatal, format!("{error} ({reason})")),
            None => DeliveryError::new(DeliveryFailureKind::of_error(error), error.to_string()),
        }
    }
}

/// A failed record, handed back whole so it can be produced again (or
/// inspected) without asking the plugin for it a second time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct FailedDelivery {
    pub error: DeliveryError,
    pub record: OutgoingRecord,
}

impl FailedDelivery {
    /// A failure with no record to hand back (the producer went away, or
    /// the wait for the answer itself failed).
    pub fn without_record(kind: DeliveryFailureKind, message: impl Into<String>) -> Self {
        FailedDelivery {
            error: DeliveryError::new(kind, message),
            record: OutgoingRecord {
                topic: String::new(),
                key: None,
                value: None,
                headers: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode as Code;

    use super::DeliveryFailureKind as Kind;

    #[test]
    fn errors_sort_by_what_can_be_done_about_them() {
        for code in [
            Code::MessageTimedOut,
            Code::NotEnoughReplicas,
            Code::RequestTimedOut,
            Code::AllBrokersDown,
        ] {
            assert_eq!(Kind::of(code), Kind::Transient, "{code:?}");
        }
        for code in [Code::MessageSizeTooLarge, Code::MessageBatchTooLarge] {
            assert_eq!(Kind::of(code), Kind::RecordTooLarge, "{code:?}");
        }
        for code in [
            Code::UnknownTopic,
            Code::UnknownTopicOrPartition,
            Code::TopicAuthorizationFailed,
            Code::InvalidRecord,
        ] {
            assert_eq!(Kind::of(code), Kind::Permanent, "{code:?}");
        }
        assert_eq!(Kind::of(Code::Fatal), Kind::ProducerFatal);
    }
}
