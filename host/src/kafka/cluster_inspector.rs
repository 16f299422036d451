//! Reading a stage's cluster from the outside, for `sluice diagnose`,
//! without disturbing the group that runs it.
//!
//! The client carries the stage's group id, because committed offsets are
//! asked for by group, but it never subscribes: librdkafka starts joining a
//! group only once a subscription exists, so this client is no member,
//! causes no rebalance, and (auto-commit being off) commits nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::groups::GroupInfo;
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};

use super::broker_probe::{BrokerProbe, ProbeError};
use super::client_config::{consumer_config, producer_config};
use super::cluster_report::{
    BrokerAddress, BrokersReport, GroupDescription, GroupMember, GroupReport, MemberAssignment, PartitionPosition,
    PartitionWatermarks, TopicReport,
};
use super::member_assignment::decode_member_assignment;
use crate::config::KafkaSection;

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The brokers could not be used at all: unreachable, refused
    /// credentials, an untrusted certificate, unusable settings.
    #[error(transparent)]
    Unreachable(#[from] ProbeError),
    /// A request failed after the brokers had answered once.
    #[error("cannot read {what} from {servers}: {cause}")]
    Request {
        what: String,
        servers: String,
        cause: String,
    },
}

/// A connected, unsubscribed client holding the stage's settings and the
/// cluster's metadata as of connecting.
pub struct ClusterInspector {
    consumer: BaseConsumer,
    group_id: String,
    timeout: Duration,
    brokers: BrokersReport,
    /// Every topic the metadata listed, by name.
    topics: BTreeMap<String, TopicReport>,
    /// Their partition ids, in order.
    partition_ids: BTreeMap<String, Vec<i32>>,
}

impl ClusterInspector {
    /// Reach the brokers with the stage's settings. The first contact is the
    /// stage's own startup probe, so refused credentials or an untrusted
    /// certificate are reported in the same words. Every request waits at
    /// most `timeout`.
    pub fn connect(kafka: &KafkaSection, bootstrap_servers: &str, timeout: Duration) -> Result<Self, InspectError> {
        let probe = BrokerProbe::new(&producer_config(kafka, bootstrap_servers))?;
        let started = Instant::now();
        probe.reach_brokers(timeout)?;
        let metadata_milliseconds = started.elapsed().as_millis() as u64;

        let mut config = consumer_config(kafka, bootstrap_servers);
        // Nothing here reads statistics; do not let them queue up.
        config.set("statistics.interval.ms", "0");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|error| ProbeError::Fatal(format!("the Kafka settings are not usable: {error}")))?;
        let metadata = consumer
            .fetch_metadata(None, timeout)
            .map_err(|error| InspectError::Request {
                what: "cluster metadata".to_owned(),
                servers: bootstrap_servers.to_owned(),
                cause: error.to_string(),
            })?;
        let brokers = BrokersReport {
            bootstrap_servers: bootstrap_servers.to_owned(),
            metadata_milliseconds,
            brokers: metadata
                .brokers()
                .iter()
                .map(|broker| BrokerAddress {
                    id: broker.id(),
                    host: broker.host().to_owned(),
                    port: broker.port(),
                })
                .collect(),
        };
        let (topics, partition_ids) = topics_of(&metadata);
        Ok(ClusterInspector {
            consumer,
            group_id: kafka.group_id.clone(),
            timeout,
            brokers,
            topics,
            partition_ids,
        })
    }

    pub fn brokers(&self) -> &BrokersReport {
        &self.brokers
    }

    /// A topic as the metadata showed it; missing when it was not listed.
    pub fn topic(&self, name: &str) -> TopicReport {
        self.topics.get(name).cloned().unwrap_or_else(|| TopicReport {
            name: name.to_owned(),
            exists: false,
            partitions: 0,
            replication_factor: None,
            under_replicated_partitions: 0,
        })
    }

    /// The stage's group, described by the brokers (ListGroups and
    /// DescribeGroups; neither joins it). A broker that does not answer
    /// these is reported, not an error: the rest of the report stands.
    pub fn group(&self) -> GroupReport {
        match self
            .consumer
            .fetch_group_list(Some(self.group_id.as_str()), self.timeout)
        {
            Err(error) => GroupReport::Unavailable {
                reason: format!("the brokers did not answer ListGroups/DescribeGroups: {error}"),
            },
            Ok(list) => match list.groups().iter().find(|group| group.name() == self.group_id) {
                None => GroupReport::NotFound,
                Some(group) => GroupReport::Described(describe(group)),
            },
        }
    }

    /// The group's committed offset and the log's bounds for each partition
    /// of `topic` (none when the topic does not exist).
    pub fn positions(&self, topic: &str) -> Result<Vec<PartitionPosition>, InspectError> {
        let partitions = self.partitions_of(topic);
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(topic, *partition);
        }
        let failed = |error: KafkaError| InspectError::Request {
            what: format!("the committed offsets of group `{}` on `{topic}`", self.group_id),
            servers: self.brokers.bootstrap_servers.clone(),
            cause: error.to_string(),
        };
        let committed = self.consumer.committed_offsets(list, self.timeout).map_err(failed)?;
        let mut committed_by_partition = BTreeMap::new();
        for element in committed.elements() {
            element.error().map_err(failed)?;
            let offset = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            committed_by_partition.insert(element.partition(), offset);
        }
        Ok(self
            .watermarks(topic)?
            .into_iter()
            .map(|marks| {
                let committed = committed_by_partition.get(&marks.partition).copied().flatten();
                PartitionPosition::new(topic, marks.partition, committed, marks.log_start, marks.high_watermark)
            })
            .collect())
    }

    /// Low and high watermark of each partition of `topic`.
    pub fn watermarks(&self, topic: &str) -> Result<Vec<PartitionWatermarks>, InspectError> {
        self.partitions_of(topic)
            .iter()
            .map(|partition| {
                let (log_start, high_watermark) = self
                    .consumer
                    .fetch_watermarks(topic, *partition, self.timeout)
                    .map_err(|error| InspectError::Request {
                        what: format!("the watermarks of {topic}/{partition}"),
                        servers: self.brokers.bootstrap_servers.clone(),
                        cause: error.to_string(),
                    })?;
                Ok(PartitionWatermarks {
                    partition: *partition,
                    log_start,
                    high_watermark,
                })
            })
            .collect()
    }

    fn partitions_of(&self, topic: &str) -> &[i32] {
        self.partition_ids.get(topic).map_or(&[], Vec::as_slice)
    }
}

type TopicTables = (BTreeMap<String, TopicReport>, BTreeMap<String, Vec<i32>>);

/// Topics the metadata lists without error and with partitions.
fn topics_of(metadata: &Metadata) -> TopicTables {
    let mut reports = BTreeMap::new();
    let mut partition_ids = BTreeMap::new();
    for topic in metadata.topics() {
        if topic.error().is_some() || topic.partitions().is_empty() {
            continue;
        }
        let partitions = topic.partitions();
        let replication_factor = partitions.iter().map(|partition| partition.replicas().len()).max();
        reports.insert(
            topic.name().to_owned(),
            TopicReport {
                name: topic.name().to_owned(),
                exists: true,
                partitions: partitions.len(),
                replication_factor: replication_factor.filter(|replicas| *replicas > 0),
                under_replicated_partitions: partitions
                    .iter()
                    .filter(|partition| partition.isr().len() < partition.replicas().len())
                    .count(),
            },
        );
        let mut ids: Vec<i32> = partitions.iter().map(|partition| partition.id()).collect();
        ids.sort_unstable();
        partition_ids.insert(topic.name().to_owned(), ids);
    }
    (reports, partition_ids)
}

fn describe(group: &GroupInfo) -> GroupDescription {
    let protocol_type = group.protocol_type().to_owned();
    GroupDescription {
        state: group.state().to_owned(),
        protocol: group.protocol().to_owned(),
        members: group
            .members()
            .iter()
            .map(|member| GroupMember {
                member_id: member.id().to_owned(),
                client_id: member.client_id().to_owned(),
                client_host: member.client_host().to_owned(),
                assignment: assignment_of(&protocol_type, member.assignment()),
            })
            .collect(),
        protocol_type,
    }
}

/// Decode a member's assignment when the group speaks the consumer
/// protocol; otherwise keep only its size.
fn assignment_of(protocol_type: &str, bytes: Option<&[u8]>) -> MemberAssignment {
    let bytes = match bytes {
        None | Some([]) => return MemberAssignment::NotReported,
        Some(bytes) => bytes,
    };
    if protocol_type != "consumer" {
        return MemberAssignment::Undecodable {
            bytes: bytes.len(),
            reason: format!("the group's protocol type is `{protocol_type}`, not `consumer`"),
        };
    }
    match decode_member_assignment(bytes) {
        Ok(topics) => MemberAssignment::Decoded { topics },
        Err(error) => MemberAssignment::Undecodable {
            bytes: bytes.len(),
            reason: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::AssignedTopic;

    /// Version 0, topic `in` with partitions 1 and 3, no user data: what
    /// librdkafka writes in SyncGroup.
    const IN_1_3: [u8; 26] = [
        0, 0, 0, 0, 0, 1, 0, 2, b'i', b'n', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff,
    ];

    #[test]
    fn a_consumer_group_member_assignment_is_decoded() {
        assert_eq!(
            assignment_of("consumer", Some(&IN_1_3)),
            MemberAssignment::Decoded {
                topics: vec![AssignedTopic {
                    topic: "in".to_owned(),
                    partitions: vec![1, 3]
                }]
            }
        );
    }

    #[test]
    fn no_bytes_is_no_assignment_reported() {
        assert_eq!(assignment_of("consumer", None), MemberAssignment::NotReported);
        assert_eq!(assignment_of("consumer", Some(&[])), MemberAssignment::NotReported);
    }

    #[test]
    fn other_protocols_and_malformed_bytes_keep_only_their_size() {
        assert_eq!(
            assignment_of("connect", Some(&IN_1_3)),
            MemberAssignment::Undecodable {
                bytes: 26,
                reason: "the group's protocol type is `connect`, not `consumer`".to_owned()
            }
        );
        assert!(matches!(
            assignment_of("consumer", Some(&IN_1_3[..10])),
            MemberAssignment::Undecodable { bytes: 10, reason } if reason.contains("partition count")
        ));
    }
}
