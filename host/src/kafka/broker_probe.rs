//! Reaching the brokers at startup, and telling a broker that is not up
//! yet (wait and retry) from credentials it will never accept (stop).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, NoCustomPartitioner, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::topics::{TopicError, ensure_topics};
use crate::config::CreateTopics;

/// Why the brokers could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Retrying may help: the broker is not up yet, a timeout.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: refused credentials, an untrusted certificate,
    /// a bad setting, a missing or unauthorized topic.
    #[error("{0}")]
    Fatal(String),
}

/// Remembers the client-level errors librdkafka reports while a probe
/// runs: a metadata request only says "timed out", the cause is here.
#[derive(Clone, Default)]
struct ErrorRecorder {
    errors: Arc<Mutex<Vec<ClientError>>>,
}

/// An error code (when librdkafka gave one) and its reason text.
type ClientError = (Option<RDKafkaErrorCode>, String);

impl ErrorRecorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ClientError>> {
        self.errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for ErrorRecorder {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "client error while reaching the brokers");
        self.lock().push((error.rdkafka_error_code(), reason.to_owned()));
    }
}

/// The probe never produces; a producer is simply the client type whose
/// error events can be served by polling.
impl ProducerContext<NoCustomPartitioner> for ErrorRecorder {
    type DeliveryOpaque = ();

    fn delivery(&self, _result: &rdkafka::message::DeliveryResult<'_>, _opaque: ()) {}
}

/// The stage's input topics as the cluster lays them out: what the
/// consumer's prefetch is divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLayout {
    pub partitions: usize,
    /// Brokers leading at least one input partition; each has at most one
    /// fetch response under way.
    pub brokers: usize,
}

/// A short-lived client for the startup checks.
pub struct BrokerProbe {
    client: BaseProducer<ErrorRecorder>,
    recorder: ErrorRecorder,
    config: ClientConfig,
}

impl BrokerProbe {
    /// A client with the stage's connection settings (`config` is the
    /// producer's: same brokers, TLS and SASL). Fails only on settings
    /// librdkafka rejects, which is fatal.
    pub fn new(config: &ClientConfig) -> Result<Self, ProbeError> {
        let recorder = ErrorRecorder::default();
        let client = config
            .create_with_context(recorder.clone())
            .map_err(|error| ProbeError::Fatal(format!("the Kafka settings are not usable: {error}")))?;
        Ok(BrokerProbe {
            client,
            recorder,
            config: config.clone(),
        })
    }

    /// Read the cluster's metadata within `timeout`; returns how many
    /// brokers it lists. Asks in short rounds, so refused credentials stop
    /// the wait as soon as librdkafka reports them.
    pub fn reach_brokers(&self, timeout: Duration) -> Result<usize, ProbeError> {
        self.clear();
        let deadline = Instant::now() + timeout;
        loop {
            let round = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            match self.client.client().fetch_metadata(None, round) {
                Ok(metadata) => return Ok(metadata.brokers().len()),
                Err(error) => {
                    let servers = self.config.get("bootstrap.servers").unwrap_or("the brokers");
                    let failure = self.classify(format!("cannot read cluster metadata from {servers}: {error}"));
                    if matches!(failure, ProbeError::Fatal(_)) || Instant::now() >= deadline {
                        return Err(failure);
                    }
                }
            }
        }
    }

    /// How `topics` are laid out now, as the cluster's metadata says.
    pub fn input_layout(&self, topics: &[String], timeout: Duration) -> Result<InputLayout, ProbeError> {
        self.clear();
        let mut partitions = 0;
        let mut leaders = std::collections::BTreeSet::new();
        for topic in topics {
            let metadata = self
                .client
                .client()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|error| self.classify(format!("cannot read the partitions of {topic}: {error}")))?;
            for topic in metadata.topics() {
                partitions += topic.partitions().len();
                leaders.extend(topic.partitions().iter().map(|partition| partition.leader()));
            }
        }
        Ok(InputLayout {
            partitions,
            brokers: leaders.len(),
        })
    }

    /// Check (or create) the stage's topics.
    pub async fn ensure_topics(
        &self,
        topics: &[&str],
        create: Option<CreateTopics>,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        self.clear();
        match ensure_topics(self.client.client(), &self.config, topics, create, timeout).await {
            Ok(()) => Ok(()),
            Err(TopicError::Unreachable { cause, .. }) => Err(self.classify(cause)),
            Err(error) => Err(ProbeError::Fatal(error.to_string())),
        }
    }

    fn clear(&self) {
        self.recorder.lock().clear();
    }

    /// Fatal when librdkafka said why and the why is about credentials.
    fn classify(&self, failure: String) -> ProbeError {
        // Error events reach the context only when the client is polled,
        // and may trail the failed request by a moment.
        self.client.poll(Duration::from_millis(100));
        let errors = self.recorder.lock();
        for (code, reason) in errors.iter() {
            let fatal = match code {
                Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                    Some("the brokers refused authentication; check sasl.mechanisms, sasl.username and sasl.password")
                }
                Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => {
                    Some("the brokers refused this client; check its ACLs")
                }
                Some(RDKafkaErrorCode::SSL) => Some(
                    "the TLS handshake with the brokers failed; check ssl.ca.location (it must sign the brokers' \
                     certificate) and the client certificate and key",
                ),
                _ if reason.contains("SSL handshake failed") => Some(
                    "the TLS handshake with the brokers failed; check ssl.ca.location (it must sign the brokers' \
                     certificate) and the client certificate and key",
                ),
                _ => None,
            };
            if let Some(advice) = fatal {
                return ProbeError::Fatal(format!("{advice}: {reason}"));
            }
        }
        match errors.last() {
            Some((_, reason)) => ProbeError::Transient(format!("{failure} ({reason})")),
            None => ProbeError::Transient(failure),
        }
    }
}
