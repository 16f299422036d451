//! Riding out broker trouble without a restart: tansu stopped and started
//! again under a running stage (with SQLite storage, so it comes back with
//! its data, as a Kafka broker does), and a consumer that reports nothing but
//! errors being replaced by a new one (on the mock cluster, where the
//! broker can be taken down and brought back in place).

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sluice_tests::broker::{Broker, free_port};
use sluice_tests::http::{get, stats_when, wait_for_status};
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_topic};
use sluice_tests::stage::StageFile;

const TOPICS: [&str; 3] = ["in", "out", "dlq"];
const LIMIT: Duration = Duration::from_secs(120);

fn inputs(prefix: &str, count: i32) -> Vec<Input> {
    (0..count)
        .map(|n| Input::text(n % 2, &format!("{prefix}-{n}"), &format!("value {n}")))
        .collect()
}

fn outputs_by_key(records: &[Record]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = records
        .iter()
        .map(|record| (record.key_text(), record.value_text()))
        .collect();
    pairs.sort();
    pairs
}

fn expected(prefix: &str, count: i32) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = (0..count)
        .map(|n| (format!("{prefix}-{n}"), format!("VALUE {n}")))
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn a_stage_survives_its_broker_stopping_and_starting_again() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let data = tempfile::TempDir::new().expect("broker data directory");
    let broker = Broker::start_keeping_data(port, data.path());
    create_topics(&brokers, &TOPICS, 2);
    let status_port = free_port();
    let address = format!("127.0.0.1:{status_port}");
    let extra = format!("[observe]\nhttp_listen = \"{address}\"\n");
    let stage = StageFile::for_plugin(&brokers, "uppercase", "broker-restart", TOPICS, &extra);
    let mut process = stage.start("stage.log");

    produce(&brokers, "in", &inputs("before", 100));
    let before = read_topic(&brokers, "out", 100, LIMIT, Duration::from_secs(1));
    assert_eq!(
        outputs_by_key(&before),
        expected("before", 100),
        "log:\n{}",
        process.log()
    );
    wait_for_status(&address, "/readyz", 200, Duration::from_secs(30));

    // The broker goes away for a while, then comes back with its data.
    drop(broker);
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        process.wait(Duration::ZERO).is_none(),
        "the stage keeps running without its broker; log:\n{}",
        process.log()
    );
    assert_eq!(get(&address, "/healthz").0, 200, "alive while the broker is away");
    let outage = stats_when(&address, Duration::from_secs(10), |stats| {
        stats["connection_errors"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        outage["connection_errors"].as_u64().unwrap_or(0) > 0,
        "the outage is counted: {outage:#}"
    );

    let _broker = Broker::start_keeping_data(port, data.path());
    produce(&brokers, "in", &inputs("after", 100));
    let outputs = read_topic(&brokers, "out", 200, LIMIT, Duration::from_secs(2));
    let mut wanted = expected("before", 100);
    wanted.extend(expected("after", 100));
    wanted.sort();
    assert_eq!(
        outputs_by_key(&outputs),
        wanted,
        "every message has exactly one output across the restart; log:\n{}",
        process.log()
    );
    wait_for_status(&address, "/readyz", 200, Duration::from_secs(60));
    let stats = stats_when(&address, Duration::from_secs(10), |stats| stats["processed"] == 200);
    assert_eq!(stats["processed"], 200, "{stats:#}");
    assert_eq!(
        stats["consumer_recreations"], 0,
        "brokers being away is not a broken consumer"
    );
    assert!(process.wait(Duration::ZERO).is_none(), "never restarted");
    assert!(read_topic(&brokers, "dlq", 0, Duration::from_secs(1), Duration::ZERO).is_empty());
}

#[test]
fn a_consumer_stuck_in_errors_is_replaced_and_nothing_is_lost() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in TOPICS {
        cluster.create_topic(topic, 2, 1).expect("mock topic");
    }
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", &inputs("first", 100));

    let status_port = free_port();
    let address = format!("127.0.0.1:{status_port}");
    let extra = format!(
        "[kafka.recovery]\nrecreate_after_errors = 4\nerror_gap_seconds = 30\n\n\
         [kafka.consumer_properties]\n\"fetch.error.backoff.ms\" = 100\n\"session.timeout.ms\" = 6000\n\n\
         [observe]\nhttp_listen = \"{address}\"\n"
    );
    let file = StageFile::for_plugin(&brokers, "uppercase", "recreate", TOPICS, &extra);
    let stage = file.run_in_process(&brokers, None);

    let first = read_topic(&brokers, "out", 100, LIMIT, Duration::ZERO);
    assert_eq!(outputs_by_key(&first), expected("first", 100));
    // Let the finished offsets be committed (every 200 ms), so the new
    // consumer starts after them.
    std::thread::sleep(Duration::from_secs(1));

    // The next two fetches (each for both partitions) fail with an error
    // librdkafka reports upwards and retries after fetch.error.backoff.ms:
    // four errors in a row, the run that replaces the consumer.
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_MSG; 2],
    );
    let replaced = stats_when(&address, Duration::from_secs(60), |stats| {
        stats["consumer_recreations"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        replaced["consumer_recreations"].as_u64().unwrap_or(0) >= 1,
        "a run of errors replaced the consumer: {replaced:#}"
    );

    produce(&brokers, "in", &inputs("second", 100));
    // Once the stage has handled the second batch its fetches succeed
    // again, so every injected error is used up before the test reads.
    let stats = stats_when(&address, LIMIT, |stats| stats["processed"] == 200);
    assert_eq!(stats["processed"], 200, "{stats:#}");
    let outputs = read_topic(&brokers, "out", 200, LIMIT, Duration::from_secs(2));
    let mut wanted = expected("first", 100);
    wanted.extend(expected("second", 100));
    wanted.sort();
    assert_eq!(
        outputs_by_key(&outputs),
        wanted,
        "every message has exactly one output after the new consumer took over"
    );
    let (_, metrics) = get(&address, "/metrics");
    assert!(
        metrics.contains("sluice_consumer_recreations_total"),
        "the recreation is a metric too"
    );
    assert_eq!(get(&address, "/readyz").0, 200, "ready again with the new consumer");

    stage.stop();
}
