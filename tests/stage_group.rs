//! Scale-out is the consumer group's: two stages with the same group split
//! the partitions, and when one stops the other takes them all.

use std::collections::HashSet;
use std::time::Duration;

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_topic};
use sluice_tests::stage::StageFile;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn two_stages_split_the_partitions_and_one_takes_over_when_the_other_stops() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 4);
    let total = 4000;
    let inputs: Vec<Input> = (0..total)
        .map(|n| Input::text(n % 4, &format!("key-{n}"), "v"))
        .collect();
    produce(&brokers, "in", &inputs);
    // Slow every message down (one retry after 10 ms) so the hand-over
    // happens mid-stream.
    let file = StageFile::for_plugin(
        &brokers,
        "retry-n-times",
        "shared",
        ["in", "out", "dlq"],
        "[plugin.config]\nretries = 1\ndelay-ms = 10\n",
    );

    let first = file.start("first.log");
    assert!(
        first.wait_for_log("partitions assigned", LIMIT),
        "log:\n{}",
        first.log()
    );
    let mut second = file.start("second.log");
    assert!(
        second.wait_for_log("partitions assigned", LIMIT),
        "the second stage gets partitions; log:\n{}",
        second.log()
    );
    // Both members log their share of the same rebalance; give the first a
    // moment to log its new, smaller share.
    let started = std::time::Instant::now();
    let (first_share, second_share) = loop {
        let shares = (last_assignment(&first.log()), last_assignment(&second.log()));
        if shares.0.len() + shares.1.len() == 4 || started.elapsed() > Duration::from_secs(30) {
            break shares;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        first_share.len() + second_share.len(),
        4,
        "{first_share:?} + {second_share:?}"
    );
    assert!(first_share.is_disjoint(&second_share));
    assert!(!second_share.is_empty() && !first_share.is_empty());

    second.signal(libc::SIGTERM);
    assert_eq!(
        second.wait(Duration::from_secs(30)).and_then(|status| status.code()),
        Some(0)
    );
    let outputs = read_topic(&brokers, "out", total as usize, LIMIT, Duration::from_secs(2));

    let all: HashSet<String> = (0..4).map(|partition| format!("in/{partition}")).collect();
    assert_eq!(
        last_assignment(&first.log()),
        all,
        "the first stage took every partition"
    );
    let keys: HashSet<String> = outputs.iter().map(Record::key_text).collect();
    assert_eq!(keys.len(), total as usize, "0 lost; log:\n{}", first.log());
    println!("group test: {} outputs for {total} inputs", outputs.len());
}

/// The partitions named by the last "partitions assigned" log line.
fn last_assignment(log: &str) -> HashSet<String> {
    log.lines()
        .rfind(|line| line.contains("partitions assigned"))
        .and_then(|line| line.split("partitions=").nth(1))
        .map(|list| list.split(", ").map(|partition| partition.trim().to_owned()).collect())
        .unwrap_or_default()
}
