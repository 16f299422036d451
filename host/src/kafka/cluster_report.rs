//! What `sluice diagnose` learns about a stage's cluster, as plain data:
//! no rdkafka types, so the report can be printed, serialized and reasoned
//! about without a broker.

use serde::Serialize;

use super::member_assignment::AssignedTopic;

/// The brokers as the cluster's metadata lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokersReport {
    /// What the client was told to connect to (the stage's `kafka.brokers`).
    pub bootstrap_servers: String,
    /// How long the first metadata answer took: connecting, TLS, SASL.
    pub metadata_milliseconds: u64,
    pub brokers: Vec<BrokerAddress>,
}

/// One broker: its id and the address it advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerAddress {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

/// One topic of the stage, as the metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicReport {
    pub name: String,
    pub exists: bool,
    /// Zero when the topic does not exist.
    pub partitions: usize,
    /// Replicas of the topic's partitions (the most any partition has);
    /// `None` when the metadata lists none.
    pub replication_factor: Option<usize>,
    /// Partitions with fewer in-sync replicas than replicas.
    pub under_replicated_partitions: usize,
}

/// The consumer group as the brokers describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GroupReport {
    /// The brokers described the group.
    Described(GroupDescription),
    /// The brokers do not know the group: no member has joined it, or it
    /// expired.
    NotFound,
    /// The brokers did not answer the group query (not every broker
    /// implements ListGroups/DescribeGroups, librdkafka's mock cluster
    /// does not).
    Unavailable { reason: String },
}

/// State, protocol and members of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// Stable, Empty, PreparingRebalance, CompletingRebalance, Dead...
    pub state: String,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// The partition assignor the members agreed on (`range`, ...).
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// One member of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub assignment: MemberAssignment,
}

/// Which partitions a member owns, as far as its assignment can be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemberAssignment {
    /// The broker sent no assignment: the group is rebalancing, or the
    /// broker does not report assignments (tansu 0.6 sends none, nor client
    /// ids and hosts).
    NotReported,
    Decoded {
        topics: Vec<AssignedTopic>,
    },
    /// The bytes are not a consumer protocol assignment (another protocol
    /// type, or malformed); only their size is known.
    Undecodable {
        bytes: usize,
        reason: String,
    },
}

/// The group's position in one partition against the partition's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionPosition {
    pub topic: String,
    pub partition: i32,
    /// The next offset the group will read; `None` when it has committed
    /// nothing in this partition.
    pub committed: Option<i64>,
    /// The oldest offset still in the log.
    pub log_start: i64,
    /// The offset the next record written will get.
    pub high_watermark: i64,
    /// Records not yet processed: high watermark minus committed offset,
    /// or minus the log start when nothing is committed.
    pub lag: i64,
}

impl PartitionPosition {
    pub fn new(topic: &str, partition: i32, committed: Option<i64>, log_start: i64, high_watermark: i64) -> Self {
        PartitionPosition {
            topic: topic.to_owned(),
            partition,
            committed,
            log_start,
            high_watermark,
            lag: high_watermark - committed.unwrap_or(log_start),
        }
    }
}

/// The low and high watermark of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionWatermarks {
    pub partition: i32,
    pub log_start: i64,
    pub high_watermark: i64,
}

impl PartitionWatermarks {
    /// Records in the partition's log (offsets, so records removed by
    /// compaction and transaction markers still count).
    pub fn records(&self) -> i64 {
        self.high_watermark - self.log_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_commit_or_else_from_the_log_start() {
        assert_eq!(PartitionPosition::new("in", 0, Some(7), 2, 10).lag, 3);
        assert_eq!(PartitionPosition::new("in", 0, None, 2, 10).lag, 8);
        assert_eq!(PartitionPosition::new("in", 0, Some(10), 0, 10).lag, 0);
    }
}
