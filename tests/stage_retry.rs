//! Retries happen in place: the message is tried again with backoff while
//! its partition waits, other partitions keep flowing, and a message that
//! never succeeds ends in the dead-letter topic with the last reason.

use std::collections::HashSet;
use std::time::Duration;

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::stage::StageFile;

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);

fn inputs(count: i32, partitions: i32) -> Vec<Input> {
    (0..count)
        .map(|n| Input::text(n % partitions, &format!("key-{n}"), &format!("value {n}")))
        .collect()
}

#[test]
fn a_message_that_succeeds_on_attempt_three_is_output_exactly_once() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 2);
    produce(&brokers, "in", &inputs(200, 2));
    let extra = "[plugin.config]\nretries = 2\n\n[retry]\nmax_attempts = 5\ninitial_backoff_ms = 5\n";
    let stage = StageFile::for_plugin(&brokers, "retry-n-times", "retry", ["in", "out", "dlq"], extra);

    let process = stage.start("stage.log");
    let outputs = read_topic(&brokers, "out", 200, LIMIT, SETTLE);
    let committed = wait_for_commits(
        &brokers,
        "retry",
        "in",
        &[Some(100), Some(100)],
        Duration::from_secs(30),
    );

    assert_eq!(outputs.len(), 200, "log:\n{}", process.log());
    let keys: HashSet<String> = outputs.iter().map(Record::key_text).collect();
    assert_eq!(keys.len(), 200, "no duplicate outputs");
    assert!(read_topic(&brokers, "dlq", 0, Duration::ZERO, Duration::from_millis(500)).is_empty());
    assert_eq!(committed, [Some(100), Some(100)]);
}

#[test]
fn retries_exhausted_dead_letters_with_the_last_reason() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 2);
    produce(&brokers, "in", &inputs(40, 2));
    let extra = "[plugin.config]\nretries = 2\n\n[retry]\nmax_attempts = 2\ninitial_backoff_ms = 5\n";
    let stage = StageFile::for_plugin(&brokers, "retry-n-times", "exhausted", ["in", "out", "dlq"], extra);

    let process = stage.start("stage.log");
    let dead_letters = read_topic(&brokers, "dlq", 40, LIMIT, SETTLE);
    let committed = wait_for_commits(
        &brokers,
        "exhausted",
        "in",
        &[Some(20), Some(20)],
        Duration::from_secs(30),
    );

    assert_eq!(dead_letters.len(), 40, "log:\n{}", process.log());
    for record in &dead_letters {
        assert_eq!(
            record.header("sluice.reason").unwrap(),
            "retries exhausted: attempt 2 of 3 is set up to fail"
        );
        assert_eq!(record.header("sluice.attempts").unwrap(), "2");
    }
    assert!(read_topic(&brokers, "out", 0, Duration::ZERO, Duration::from_millis(500)).is_empty());
    assert_eq!(committed, [Some(20), Some(20)]);
}

#[test]
fn other_partitions_keep_flowing_while_one_backs_off() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 3);
    // Partition 0 starts with a message that asks for a 3 s retry delay
    // (twice, then it is exhausted); 50 ordinary messages queue behind it.
    let mut messages = vec![
        Input::text(0, "stuck", "stuck")
            .with_header("mirror.verdict", "retry")
            .with_header("mirror.reason", "downstream busy")
            .with_header("mirror.delay-ms", "3000"),
    ];
    messages.extend((0..50).map(|n| Input::text(0, &format!("behind-{n}"), "x")));
    messages.extend((0..1000).map(|n| Input::text(1 + n % 2, &format!("free-{n}"), "x")));
    produce(&brokers, "in", &messages);
    let extra = "[retry]\nmax_attempts = 3\ninitial_backoff_ms = 10\nmax_backoff_ms = 10000\n";
    let stage = StageFile::for_plugin(&brokers, "mirror", "flowing", ["in", "out", "dlq"], extra);

    let process = stage.start("stage.log");
    let while_backing_off = read_topic(&brokers, "out", 1000, LIMIT, Duration::ZERO);
    let dead_letters_then = read_topic(&brokers, "dlq", 0, Duration::ZERO, Duration::ZERO);
    let everything = read_topic(&brokers, "out", 1050, LIMIT, SETTLE);
    let dead_letters = read_topic(&brokers, "dlq", 1, LIMIT, SETTLE);

    assert!(while_backing_off.len() >= 1000, "log:\n{}", process.log());
    assert!(
        dead_letters_then.is_empty(),
        "partitions 1 and 2 finished before partition 0's retries ran out"
    );
    let from_partition_zero = while_backing_off
        .iter()
        .filter(|record| record.header("seen.partition").as_deref() == Some("0"))
        .count();
    assert_eq!(
        from_partition_zero, 0,
        "nothing overtook the retrying message in its partition"
    );
    assert_eq!(everything.len(), 1050);
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].key_text(), "stuck");
    assert_eq!(
        dead_letters[0].header("sluice.reason").unwrap(),
        "retries exhausted: downstream busy"
    );
    assert_eq!(dead_letters[0].header("sluice.attempts").unwrap(), "3");
    let committed = wait_for_commits(
        &brokers,
        "flowing",
        "in",
        &[Some(51), Some(500), Some(500)],
        Duration::from_secs(30),
    );
    assert_eq!(committed, [Some(51), Some(500), Some(500)]);
}
