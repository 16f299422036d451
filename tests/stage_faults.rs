//! Broker trouble on librdkafka's mock cluster, where faults can be
//! injected: refused produce requests and a broker that goes away.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sluice_tests::kafka::{Input, Record, produce, read_topic};
use sluice_tests::stage::{InProcessStage, StageFile};

const LIMIT: Duration = Duration::from_secs(120);

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in ["in", "out", "dlq"] {
        cluster.create_topic(topic, 2, 1).expect("mock topic");
    }
    cluster
}

/// Run a stage in this process until `stop_after` messages are finished.
fn run_stage(brokers: &str, stop_after: u64) -> InProcessStage {
    StageFile::for_plugin(brokers, "uppercase", "faults", ["in", "out", "dlq"], "")
        .run_in_process(brokers, Some(stop_after))
}

fn inputs(range: std::ops::Range<i32>) -> Vec<Input> {
    range
        .map(|n| Input::text(n % 2, &format!("key-{n}"), &format!("value {n}")))
        .collect()
}

fn keys(records: &[Record]) -> HashSet<String> {
    records.iter().map(Record::key_text).collect()
}

#[test]
fn transient_produce_errors_are_retried_and_nothing_is_lost_or_dead_lettered() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", &inputs(0..200));
    // The next produce requests fail with retriable errors.
    let mut errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4];
    errors.extend([RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 4]);
    cluster.request_errors(RDKafkaApiKey::Produce, &errors);

    let summary = run_stage(&brokers, 200).join();
    let outputs = read_topic(&brokers, "out", 200, LIMIT, Duration::from_secs(1));

    assert_eq!(summary.finished, 200);
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(
        summary.delivery_failures, 0,
        "librdkafka retried the refused requests itself"
    );
    assert_eq!(outputs.len(), 200);
    assert_eq!(keys(&outputs).len(), 200);
}

#[test]
fn a_broker_outage_is_survived_without_restart() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", &inputs(0..100));
    let stage = run_stage(&brokers, 200);
    assert_eq!(read_topic(&brokers, "out", 100, LIMIT, Duration::ZERO).len(), 100);

    cluster.broker_down(1).expect("broker down");
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(1).expect("broker up");
    produce(&brokers, "in", &inputs(100..200));
    let summary = stage.join();
    let outputs = read_topic(&brokers, "out", 200, LIMIT, Duration::from_secs(1));

    assert_eq!(summary.finished, 200);
    assert_eq!(summary.dead_lettered, 0);
    let expected: HashSet<String> = (0..200).map(|n| format!("key-{n}")).collect();
    assert_eq!(keys(&outputs), expected, "every message has its output");
}
