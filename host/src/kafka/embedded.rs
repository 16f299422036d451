//! An in-process Kafka cluster (librdkafka's mock cluster), so a stage can
//! run end to end with no broker to install: the quickstart, demos, tests.

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A one-broker cluster living as long as this value. Nothing is persisted.
pub struct EmbeddedCluster {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedCluster {
    /// Start a cluster with these topics, each with `partitions` partitions.
    /// (The mock cluster's own topic creation is used: it does not answer
    /// admin CreateTopics requests in time.)
    pub fn start(topics: &[&str], partitions: i32) -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(1)?;
        for topic in topics {
            cluster.create_topic(topic, partitions, 1)?;
        }
        Ok(EmbeddedCluster { cluster })
    }

    /// The address clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}
