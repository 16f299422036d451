//! Faults a stage must ride out without losing a record, stalling quietly
//! or spinning: a dead-letter topic it may not write, an output it cannot
//! deliver, a producer that fails fatally, a worker that panics, brokers or
//! Redis gone while it stops.
//!
//! On librdkafka's mock cluster, where faults can be injected, with the
//! stage running in this process. Each test asserts where every record
//! ended, that later records on the same partition come out, that health
//! said the truth meanwhile, and that failures stayed bounded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaRespErr;
use sluice::kafka::TopicPartition;
use sluice_tests::broker::free_port;
use sluice_tests::http::{get, wait_for_status};
use sluice_tests::kafka::{Input, Record, committed_offsets, produce, read_topic};
use sluice_tests::redis::Redis;
use sluice_tests::stage::{InProcessStage, StageFile};

const LIMIT: Duration = Duration::from_secs(60);

fn cluster(partitions: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in ["in", "out", "dlq"] {
        cluster.create_topic(topic, partitions, 1).expect("mock topic");
    }
    cluster
}

/// Short backoffs, a status port, and metadata refreshed often enough for
/// a topic's error to be seen and cleared within the test.
fn extra(port: u16) -> String {
    format!(
        "[observe]\nhttp_listen = \"127.0.0.1:{port}\"\n\n\
         [retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\n\n\
         [kafka.producer_properties]\n\"topic.metadata.refresh.interval.ms\" = 1000\n\
         \"message.timeout.ms\" = 5000\n"
    )
}

fn start(brokers: &str, plugin: &str, group: &str, extra: &str, stop_after: Option<u64>) -> InProcessStage {
    StageFile::for_plugin(brokers, plugin, group, ["in", "out", "dlq"], extra).run_in_process(brokers, stop_after)
}

fn text(key: &str, value: &str) -> Input {
    Input::text(0, key, value)
}

fn keys(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(Record::key_text).collect()
}

fn address(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn an_unwritable_dead_letter_topic_blocks_its_partition_visibly_until_it_can_be_written() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let port = free_port();
    let stage = start(&brokers, "uppercase", "dlq-denied", &extra(port), None);
    produce(&brokers, "in", &[text("first", "a")]);
    assert_eq!(read_topic(&brokers, "out", 1, LIMIT, Duration::ZERO).len(), 1);

    cluster
        .topic_error("dlq", RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
        .expect("deny the DLQ");
    let not_utf8 = Input {
        partition: 0,
        key: b"bad".to_vec(),
        value: vec![0xff, 0xfe],
        headers: Vec::new(),
    };
    produce(&brokers, "in", &[not_utf8, text("after-1", "b")]);

    let why = wait_for_status(&address(port), "/readyz", 503, LIMIT);
    assert!(why.contains("in/0 is blocked") && why.contains("dlq"), "{why}");
    assert_eq!(get(&address(port), "/healthz").0, 200, "blocked is not dead");
    // A message taken before the block was known may have gone through
    // (deliveries are pipelined); nothing taken after it does.
    produce(&brokers, "in", &[text("after-2", "c")]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !keys(&read_topic(&brokers, "out", 3, Duration::from_secs(1), Duration::ZERO)).contains("after-2"),
        "the partition holds its place behind the dead letter"
    );
    assert!(
        committed_offsets(&brokers, "dlq-denied", "in", 1)[0].is_none_or(|offset| offset <= 1),
        "nothing is committed past the message that could not be dead-lettered"
    );

    cluster
        .topic_error("dlq", RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .expect("allow the DLQ");
    let dead = read_topic(&brokers, "dlq", 1, LIMIT, Duration::ZERO);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(&[0xff, 0xfe][..]), "the exact bytes");
    let outputs = read_topic(&brokers, "out", 3, LIMIT, Duration::from_millis(500));
    assert_eq!(
        outputs.iter().map(Record::value_text).collect::<Vec<_>>(),
        ["A", "B", "C"]
    );
    wait_for_status(&address(port), "/readyz", 200, LIMIT);

    let summary = stage.stop();
    assert_eq!((summary.finished, summary.dead_lettered), (4, 1));
    assert!(
        (1..=60).contains(&summary.delivery_failures),
        "probes back off: {} delivery failures",
        summary.delivery_failures
    );
    assert_eq!(committed_offsets(&brokers, "dlq-denied", "in", 1), [Some(4)]);
}

#[test]
fn an_output_that_can_never_be_delivered_dead_letters_its_source_and_the_partition_moves_on() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    cluster
        .topic_error(
            "forbidden",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .expect("deny the topic");
    let port = free_port();
    let stage = start(&brokers, "mirror", "output-denied", &extra(port), Some(3));
    produce(
        &brokers,
        "in",
        &[
            text("before", "a"),
            text("denied", "b").with_header("mirror.topic", "forbidden"),
            text("after", "c"),
        ],
    );

    let summary = stage.join();
    let outputs = read_topic(&brokers, "out", 2, LIMIT, Duration::from_millis(500));
    let dead = read_topic(&brokers, "dlq", 1, LIMIT, Duration::from_millis(500));
    assert_eq!(
        keys(&outputs),
        BTreeSet::from(["before".to_owned(), "after".to_owned()])
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key_text(), "denied");
    assert_eq!(dead[0].value_text(), "b", "the source message, as it came");
    let reason = dead[0].header("sluice.reason").expect("a reason");
    assert!(
        reason.starts_with("output to forbidden cannot be delivered:") && reason.contains("uthoriz"),
        "{reason}"
    );
    assert_eq!((summary.finished, summary.dead_lettered, summary.outputs), (3, 1, 2));
    assert!(summary.delivery_failures <= 2, "{}", summary.delivery_failures);
}

#[test]
fn a_fatal_producer_error_stops_the_stage_with_an_error_and_loses_nothing() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let port = free_port();
    let stage = start(&brokers, "uppercase", "fatal", &extra(port), None);
    produce(&brokers, "in", &[text("k0", "a")]);
    assert_eq!(read_topic(&brokers, "out", 1, LIMIT, Duration::ZERO).len(), 1);

    let started = Instant::now();
    while !stage.faults().fail_producer("injected by the test") {
        assert!(started.elapsed() < LIMIT, "the stage never had a producer");
        std::thread::sleep(Duration::from_millis(50));
    }
    produce(&brokers, "in", &[text("k1", "b"), text("k2", "c")]);
    let error = stage
        .join_result()
        .expect_err("the stage stops on its own, with an error");
    assert!(error.contains("fatal"), "{error}");
    assert!(started.elapsed() < LIMIT);

    // A new process (here: a new stage in the same group) handles what the
    // failed one could not.
    let stage = start(&brokers, "uppercase", "fatal", &extra(free_port()), None);
    let outputs = read_topic(&brokers, "out", 3, LIMIT, Duration::from_millis(500));
    assert_eq!(keys(&outputs), BTreeSet::from(["k0", "k1", "k2"].map(str::to_owned)));
    stage.stop();
}

#[test]
fn a_worker_that_panics_is_reported_and_replaced_and_its_partition_resumes() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let port = free_port();
    let stage = start(&brokers, "uppercase", "panics", &extra(port), None);
    stage.faults().panic_worker_at(TopicPartition::new("in", 0), 3);
    produce(&brokers, "in", &[text("k0", "a"), text("k1", "b"), text("k2", "c")]);
    assert_eq!(read_topic(&brokers, "out", 3, LIMIT, Duration::ZERO).len(), 3);
    wait_for_status(&address(port), "/readyz", 200, LIMIT);

    produce(
        &brokers,
        "in",
        &(3..10).map(|n| text(&format!("k{n}"), "x")).collect::<Vec<_>>(),
    );
    let why = wait_for_status(&address(port), "/healthz", 503, LIMIT);
    assert!(
        why.contains("the worker of in/0 failed: panicked: injected worker panic"),
        "{why}"
    );
    let outputs = read_topic(&brokers, "out", 10, LIMIT, Duration::from_millis(500));
    let expected: BTreeSet<String> = (0..10).map(|n| format!("k{n}")).collect();
    assert_eq!(keys(&outputs), expected, "every record came out after the recovery");
    wait_for_status(&address(port), "/healthz", 200, LIMIT);
    let (_, metrics) = get(&address(port), "/metrics");
    assert!(metrics.contains("sluice_worker_failures_total 1"), "{metrics}");
    let (_, stats) = get(&address(port), "/stats");
    assert!(stats.contains("\"consumer_recreations\":1"), "{stats}");
    stage.stop();
}

#[test]
fn stopping_while_the_broker_is_down_takes_one_bounded_grace_and_loses_nothing() {
    let cluster = cluster(4);
    let brokers = cluster.bootstrap_servers();
    let stage_file = StageFile::new(&format!(
        r#"[stage]
name = "drain"
commit_interval_ms = 200
drain_timeout_ms = 2000

[plugin]
path = "{plugin}"

[kafka]
brokers = "{brokers}"
group_id = "drain"
input_topics = ["in"]
output_topic = "out"
dead_letter_topic = "dlq"

[kafka.consumer_properties]
"session.timeout.ms" = 6000

[kafka.producer_properties]
"message.timeout.ms" = 60000
"#,
        plugin = sluice_tests::rust_plugin("uppercase").display()
    ));
    let inputs: Vec<Input> = (0..200).map(|n| Input::text(n % 4, &format!("k{n}"), "v")).collect();
    produce(&brokers, "in", &inputs[..100]);
    let stage = stage_file.run_in_process(&brokers, None);
    assert_eq!(read_topic(&brokers, "out", 100, LIMIT, Duration::ZERO).len(), 100);

    cluster.broker_down(1).expect("broker down");
    let (took, outcome) = stage.stop_timed();
    assert!(outcome.is_ok(), "{outcome:?}");
    // Four partitions, one shared grace (2 s drain + 1 s), the final
    // commit and leaving the group with no broker, and a flush bounded by
    // the drain timeout: far below four graces in turn.
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    cluster.broker_up(1).expect("broker up");

    produce(&brokers, "in", &inputs[100..]);
    // The first member could not leave the group with the broker away: the
    // new one waits out its (short) session.
    let stage = start(
        &brokers,
        "uppercase",
        "drain",
        "[kafka.consumer_properties]\n\"session.timeout.ms\" = 6000\n",
        None,
    );
    let outputs = read_topic(&brokers, "out", 200, LIMIT, Duration::from_millis(500));
    let expected: BTreeSet<String> = (0..200).map(|n| format!("k{n}")).collect();
    assert_eq!(keys(&outputs), expected, "nothing lost");
    stage.stop();
}

#[test]
fn stopping_while_redis_is_down_is_bounded_by_the_grace_and_loses_nothing() {
    let cluster = cluster(2);
    let brokers = cluster.bootstrap_servers();
    let mut redis = Redis::start();
    let dedup = format!(
        "[dedup]\nkey = \"message-key\"\nredis_url = \"{}\"\nredis_timeout_ms = 500\n",
        redis.url()
    );
    let stage = start(&brokers, "uppercase", "redis-drain", &dedup, None);
    produce(
        &brokers,
        "in",
        &(0..20)
            .map(|n| Input::text(n % 2, &format!("k{n}"), "v"))
            .collect::<Vec<_>>(),
    );
    assert_eq!(read_topic(&brokers, "out", 20, LIMIT, Duration::ZERO).len(), 20);

    redis.stop();
    produce(
        &brokers,
        "in",
        &(20..40)
            .map(|n| Input::text(n % 2, &format!("k{n}"), "v"))
            .collect::<Vec<_>>(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (took, outcome) = stage.stop_timed();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");

    redis.restart();
    let stage = start(&brokers, "uppercase", "redis-drain", &dedup, None);
    let outputs = read_topic(&brokers, "out", 40, LIMIT, Duration::from_millis(500));
    let expected: BTreeSet<String> = (0..40).map(|n| format!("k{n}")).collect();
    assert_eq!(keys(&outputs), expected, "nothing lost");
    stage.stop();
}
