//! Stopping a stage, gracefully or not, loses nothing: SIGTERM finishes and
//! commits what is in flight; SIGKILL at any moment leaves every message to
//! be handled again on restart.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::Rng;
use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::stage::StageFile;

const LIMIT: Duration = Duration::from_secs(300);
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

const TOPICS: [&str; 3] = ["in", "out", "dlq"];

fn count_by_key(records: &[Record]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for record in records {
        *counts.entry(record.key_text()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn sigterm_mid_stream_exits_zero_and_a_restart_reprocesses_nothing_committed() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 4);
    let inputs: Vec<Input> = (0..2000)
        .map(|n| Input::text(n % 4, &format!("key-{n}"), "v"))
        .collect();
    produce(&brokers, "in", &inputs);
    // Every message retries once after 20 ms: slow enough to stop mid-stream,
    // with some messages in backoff at the moment of the signal.
    let extra = "[plugin.config]\nretries = 1\ndelay-ms = 20\n\n[retry]\nmax_attempts = 3\n";
    let stage = StageFile::for_plugin(&brokers, "retry-n-times", "graceful", TOPICS, extra);

    let mut first = stage.start("first.log");
    let progress = read_topic(&brokers, "out", 300, LIMIT, Duration::ZERO);
    first.signal(libc::SIGTERM);
    let status = first
        .wait(Duration::from_secs(30))
        .expect("the stage stops within 30 s");
    let before_restart = read_topic(&brokers, "out", usize::MAX, Duration::from_secs(2), Duration::ZERO);

    assert!(
        progress.len() >= 300 && before_restart.len() < 2000,
        "stopped mid-stream"
    );
    assert_eq!(status.code(), Some(0), "log:\n{}", first.log());
    assert!(
        first.log().contains("committed finished offsets"),
        "log:\n{}",
        first.log()
    );

    let second = stage.start("second.log");
    let outputs = read_topic(&brokers, "out", 2000, LIMIT, Duration::from_secs(2));
    let counts = count_by_key(&outputs);
    let duplicates: usize = counts.values().map(|count| count - 1).sum();

    assert_eq!(
        counts.len(),
        2000,
        "every message has an output; log:\n{}",
        second.log()
    );
    assert_eq!(duplicates, 0, "nothing committed before the restart was handled again");
    let committed = wait_for_commits(&brokers, "graceful", "in", &[Some(500); 4], Duration::from_secs(30));
    assert_eq!(committed, [Some(500); 4]);
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 4);
    let total = 20_000;
    let inputs: Vec<Input> = (0..total)
        .map(|n| Input::text(n % 4, &format!("key-{n}"), &format!("value {n}")))
        .collect();
    produce(&brokers, "in", &inputs);
    // Every message waits out one 1 ms retry, so 20,000 take seconds and the
    // kills land mid-stream; a short session timeout lets the group notice a
    // killed member quickly.
    let extra = format!(
        "[plugin.config]\nretries = 1\ndelay-ms = 1\n\n[kafka.consumer_properties]\n\"session.timeout.ms\" = {}\n",
        SESSION_TIMEOUT.as_millis()
    );
    let stage = StageFile::for_plugin(&brokers, "retry-n-times", "crashy", TOPICS, &extra);
    let mut random = rand::rng();

    let mut kills = Vec::new();
    for round in 0..3 {
        let process = stage.start(&format!("run-{round}.log"));
        assert!(
            process.wait_for_log("partitions assigned", LIMIT),
            "log:\n{}",
            process.log()
        );
        let after = Duration::from_millis(random.random_range(300..2500));
        std::thread::sleep(after);
        process.signal(libc::SIGKILL);
        // tansu keeps a killed member in the group until someone joins
        // after its session timed out, and a member that joins earlier can
        // be left with no partitions for good (Apache Kafka rebalances); so
        // the next start waits out the 6 s session.
        std::thread::sleep(SESSION_TIMEOUT + Duration::from_secs(1));
        let seen = read_topic(&brokers, "out", usize::MAX, Duration::from_secs(1), Duration::ZERO).len();
        kills.push((after.as_millis(), seen));
        drop(process);
    }
    let last = stage.start("final.log");
    let outputs = read_topic(&brokers, "out", total as usize, LIMIT, Duration::from_secs(3));

    let counts = count_by_key(&outputs);
    let expected: HashSet<String> = (0..total).map(|n| format!("key-{n}")).collect();
    let lost: Vec<&String> = expected.iter().filter(|key| !counts.contains_key(*key)).collect();
    let unexpected: Vec<&String> = counts.keys().filter(|key| !expected.contains(*key)).collect();
    let duplicates: usize = counts.values().map(|count| count - 1).sum();
    println!(
        "crash test: (ms after assignment, outputs so far) at each kill: {kills:?}; {} outputs for {total} inputs, {duplicates} duplicates, {} lost",
        outputs.len(),
        lost.len()
    );

    assert!(
        lost.is_empty(),
        "{} messages lost, e.g. {:?}; log:\n{}",
        lost.len(),
        &lost[..lost.len().min(5)],
        last.log()
    );
    assert!(unexpected.is_empty(), "outputs without an input: {unexpected:?}");
    for record in &outputs {
        let n: usize = record.key_text()["key-".len()..].parse().unwrap();
        assert_eq!(record.value_text(), format!("value {n}"));
    }
    let committed = wait_for_commits(&brokers, "crashy", "in", &[Some(5000); 4], Duration::from_secs(30));
    assert_eq!(committed, [Some(5000); 4]);
}
