//! Kafka in and out: the consumer that feeds a stage, the producer that
//! carries its results, startup checks (credential files, reaching the
//! brokers, topics), the embedded cluster, and a read-only look at a
//! stage's cluster and group for `sluice diagnose`.
//!
//! This module knows nothing of Wasm. Records cross into the pipeline as
//! plain owned data ([`ConsumedRecord`]) and come back as
//! [`OutgoingRecord`]s; the pipeline decides what happens in between.

mod broker_probe;
mod client_config;
mod client_files;
mod cluster_inspector;
mod cluster_report;
mod consumer;
mod delivery_error;
mod delivery_report;
mod embedded;
mod member_assignment;
mod partition_feed;
mod producer;
mod record;
mod topic_reader;
mod topics;

pub use broker_probe::{BrokerProbe, InputLayout, ProbeError};
pub use client_config::{consumer_config, producer_config};
pub use client_files::{ClientFileError, check_client_files};
pub use cluster_inspector::{ClusterInspector, InspectError};
pub use cluster_report::{
    BrokerAddress, BrokersReport, GroupDescription, GroupMember, GroupReport, MemberAssignment, PartitionPosition,
    PartitionWatermarks, TopicReport,
};
pub use consumer::{ConsumerErrorKind, ConsumerStatistics, PartitionOffsets, RebalanceListener, SourceConsumer};
pub use delivery_error::{DeliveryError, DeliveryFailureKind, FailedDelivery};
pub use delivery_report::{DeliveryReport, DeliveryRoute, FatalCheck, PendingDelivery, RawFailure};
pub use embedded::EmbeddedCluster;
pub use member_assignment::{AssignedTopic, AssignmentError, decode_member_assignment};
pub use partition_feed::PartitionFeed;
pub use producer::SinkProducer;
pub use record::{
    ConsumedRecord, OutgoingRecord, RAW_HEADER_NAME_HEADER, RawHeader, TopicPartition, headers_from_raw, raw_headers,
};
pub use topic_reader::{EndedBy, ReadTimeouts, TopicReadError, TopicReader};
pub use topics::{TopicError, ensure_topics};

pub use rdkafka::error::KafkaError;
