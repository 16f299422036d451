//! A stage whose plugin keeps state: `count-by-key`, in each language, over
//! 10,000 messages on 4 partitions of a real broker (tansu), counting in a
//! real Redis that goes down in the middle of the run. The store's errors
//! reach the plugin as values, it asks for retries, and once Redis is back
//! every count is exact: nothing lost, nothing counted twice, nothing
//! dead-lettered.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce_batched, read_all, read_topic, wait_for_commits};
use sluice_tests::redis::{Redis, RedisCluster};
use sluice_tests::stage::StageFile;
use sluice_tests::{Language, shared_plugin_cache};

const LIMIT: Duration = Duration::from_secs(240);
const SETTLE: Duration = Duration::from_secs(3);
const KEYS: usize = 40;
const PER_KEY: usize = 250;
const PARTITIONS: i32 = 4;

/// Message `n` of the run: key `k<n mod KEYS>`, always on the same
/// partition, as a keyed producer would place it.
fn input(n: usize) -> Input {
    let key = n % KEYS;
    Input::text(
        (key % PARTITIONS as usize) as i32,
        &format!("k{key:02}"),
        &format!("event-{n}"),
    )
}

/// The counts output for each key, in the order they were output.
fn counts_by_key(outputs: &[Record]) -> BTreeMap<String, Vec<u64>> {
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in outputs {
        counts
            .entry(record.key_text())
            .or_default()
            .push(record.value_text().parse().expect("a count"));
    }
    counts
}

#[test]
fn counts_by_key_are_exact_after_a_redis_outage_mid_run_in_rust() {
    counts_are_exact_after_a_redis_outage(Language::Rust);
}

#[test]
fn counts_by_key_are_exact_after_a_redis_outage_mid_run_in_python() {
    counts_are_exact_after_a_redis_outage(Language::Python);
}

#[test]
fn counts_by_key_are_exact_after_a_redis_outage_mid_run_in_javascript() {
    counts_are_exact_after_a_redis_outage(Language::JavaScript);
}

fn counts_are_exact_after_a_redis_outage(language: Language) {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let topics = ["events", "events-counted", "events-dlq"];
    create_topics(&brokers, &topics, PARTITIONS);
    let mut redis = Redis::start_persistent();
    let stage = StageFile::for_plugin_file(
        &brokers,
        &language.plugin("count-by-key"),
        "counter",
        topics,
        &format!(
            "[plugin.capabilities.keyvalue]\nredis_url = \"{}\"\n\n[retry]\nmax_attempts = 1000\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\n",
            redis.url()
        ),
    )
    .sharing_cache(&shared_plugin_cache());
    let total = KEYS * PER_KEY;
    let inputs: Vec<Input> = (0..total).map(input).collect();
    let (first_half, second_half) = inputs.split_at(total / 2);

    let process = stage.start("stage.log");
    produce_batched(&brokers, "events", first_half);
    let early = read_topic(&brokers, "events-counted", total / 2, LIMIT, Duration::ZERO);
    assert_eq!(early.len(), total / 2, "{language:?}; log:\n{}", process.log());

    // Redis goes down while the second half arrives, and comes back.
    redis.stop();
    produce_batched(&brokers, "events", second_half);
    assert!(
        process.wait_for_log("key-value operation failed", Duration::from_secs(30)),
        "{language:?}: the outage reached the plugin; log:\n{}",
        process.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();

    let outputs = read_topic(&brokers, "events-counted", total, LIMIT, SETTLE);
    let committed = wait_for_commits(
        &brokers,
        "counter",
        "events",
        &[Some((total / PARTITIONS as usize) as i64); PARTITIONS as usize],
        Duration::from_secs(60),
    );
    assert_eq!(
        outputs.len(),
        total,
        "{language:?}: one output per message; log:\n{}",
        process.log()
    );
    let counts_by_key = counts_by_key(&outputs);
    let expected: Vec<u64> = (1..=PER_KEY as u64).collect();
    assert_eq!(counts_by_key.len(), KEYS);
    for (key, counts) in &counts_by_key {
        assert_eq!(
            counts, &expected,
            "{language:?}, {key}: each message counted once, in order"
        );
        let stored = redis
            .get(&format!("sluice:test-stage:kv:default:count:{key}"))
            .expect("the count is in Redis");
        assert!(
            stored.starts_with(&format!("{PER_KEY} ")),
            "{language:?}, {key}: {stored}"
        );
    }
    assert_eq!(
        read_all(&brokers, "events-dlq").len(),
        0,
        "{language:?}: nothing dead-lettered"
    );
    assert_eq!(
        committed,
        [Some((total / PARTITIONS as usize) as i64); PARTITIONS as usize]
    );
}

#[test]
fn counts_by_key_are_exact_on_the_redis_cluster_the_stage_deduplicates_on() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let topics = ["events", "events-counted", "events-dlq"];
    create_topics(&brokers, &topics, PARTITIONS);
    let cluster = RedisCluster::start();
    // The grant names no Redis: the buckets live in the dedup cluster.
    let stage = StageFile::for_plugin(
        &brokers,
        "count-by-key",
        "counter",
        topics,
        &format!(
            "[plugin.capabilities.keyvalue]\n\n[dedup]\nkey = \"coordinates\"\nredis_url = {:?}\nredis_cluster = true\n",
            cluster.urls()
        ),
    );
    let per_key = 50;
    let total = KEYS * per_key;
    let inputs: Vec<Input> = (0..total).map(input).collect();
    let process = stage.start("stage.log");
    produce_batched(&brokers, "events", &inputs);

    let outputs = read_topic(&brokers, "events-counted", total, LIMIT, SETTLE);
    assert_eq!(outputs.len(), total, "one output per message; log:\n{}", process.log());
    let counts_by_key = counts_by_key(&outputs);
    let expected: Vec<u64> = (1..=per_key as u64).collect();
    assert_eq!(counts_by_key.len(), KEYS);
    for (key, counts) in &counts_by_key {
        assert_eq!(counts, &expected, "{key}: each message counted once, in order");
    }
    let log = process.log();
    assert!(
        log.lines()
            .any(|line| line.contains("key-value buckets opened") && line.contains("redis cluster at")),
        "the log says where the buckets are:\n{log}"
    );
    for key in counts_by_key.keys() {
        let stored = cluster
            .get(&format!("sluice:test-stage:kv:default:count:{key}"))
            .expect("the count is in the cluster");
        assert!(stored.starts_with(&format!("{per_key} ")), "{key}: {stored}");
    }
    // 40 counters and the dedup marks of 2,000 messages, over every node.
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().all(|count| *count > 0),
        "the keys spread over every node: {per_node:?}"
    );
    assert_eq!(read_all(&brokers, "events-dlq").len(), 0, "nothing dead-lettered");
}

#[test]
fn a_stage_without_the_keyvalue_grant_refuses_the_plugin_at_startup_naming_the_key() {
    let stage = StageFile::for_plugin(
        "127.0.0.1:1",
        "count-by-key",
        "counter",
        ["events", "events-counted", "events-dlq"],
        "",
    );
    let (status, log) = stage.run_to_exit(Duration::from_secs(30));
    assert!(!status.success(), "{log}");
    assert!(log.contains("imports `wasi:keyvalue/"), "{log}");
    assert!(
        log.contains("add [plugin.capabilities.keyvalue] to the stage file"),
        "{log}"
    );
}
