//! A stage's Kafka, reached from outside the stage: the same brokers,
//! TLS and SASL settings as `sluice run` uses, checked the same way, but
//! without joining its consumer group.

use std::time::Duration;

use super::dead_letter_record::DeadLetterRecord;
use super::error::DlqError;
use crate::config::StageConfig;
use crate::kafka::{self, BrokerProbe, EndedBy, ProbeError, ReadTimeouts, SinkProducer, TopicReader};

/// Connected and checked: credential files readable, brokers answering.
pub struct StageKafka {
    config: StageConfig,
    probe: BrokerProbe,
    request_timeout: Duration,
}

impl StageKafka {
    /// Check the stage's TLS/SASL files and reach its brokers within
    /// `request_timeout`; refused credentials fail at once. A tool run by
    /// hand does not wait out a broker that is down: it says so.
    pub fn connect(config: &StageConfig, request_timeout: Duration) -> Result<Self, DlqError> {
        let kafka_config = &config.kafka;
        if kafka_config.is_embedded() {
            return Err(DlqError::Embedded);
        }
        let mut properties = kafka_config.properties.clone();
        properties.extend(kafka_config.consumer_properties.clone());
        properties.extend(kafka_config.producer_properties.clone());
        for warning in kafka::check_client_files(&properties, config.startup.certificate_warning_days)? {
            tracing::warn!("{warning}");
        }
        let probe = BrokerProbe::new(&kafka::producer_config(kafka_config, &kafka_config.brokers))?;
        let brokers = probe.reach_brokers(request_timeout)?;
        tracing::debug!(servers = %kafka_config.brokers, brokers, "brokers reachable");
        Ok(StageKafka {
            config: config.clone(),
            probe,
            request_timeout,
        })
    }

    /// Every record of the stage's dead-letter topic, up to where it ended
    /// now (see [`TopicReader`] for how the end is found), with `idle` as
    /// the last-resort end.
    pub fn dead_letters(&self, idle: Duration) -> Result<DeadLetters, DlqError> {
        let kafka_config = &self.config.kafka;
        let reader = TopicReader::open(
            &kafka::consumer_config(kafka_config, &kafka_config.brokers),
            &kafka_config.dead_letter_topic,
            ReadTimeouts {
                request: self.request_timeout,
                idle,
            },
        )?;
        Ok(DeadLetters { reader })
    }

    /// Check that these topics exist, before producing to them: librdkafka
    /// would otherwise hold records for a missing topic until they time out.
    pub async fn check_topics(&self, topics: &[&str]) -> Result<(), ProbeError> {
        self.probe.ensure_topics(topics, None, self.request_timeout).await
    }

    /// A producer with the stage's settings: idempotent, `acks=all`.
    pub fn producer(&self) -> Result<SinkProducer, DlqError> {
        let kafka_config = &self.config.kafka;
        SinkProducer::new(&kafka::producer_config(kafka_config, &kafka_config.brokers)).map_err(DlqError::Producer)
    }
}

/// The dead-letter topic's records, in offset order per partition.
pub struct DeadLetters {
    reader: TopicReader,
}

impl DeadLetters {
    /// For each partition of the topic, what ended it: an idle timeout
    /// means records may have been missed.
    pub fn ended_by(&self) -> Vec<(i32, EndedBy)> {
        self.reader.ended_by()
    }
}

impl Iterator for DeadLetters {
    type Item = Result<DeadLetterRecord, DlqError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader
            .next()
            .map(|record| record.map(DeadLetterRecord::from_consumed).map_err(DlqError::from))
    }
}
