//! Deduplication against a real Redis: a message already done is skipped,
//! within a run, across a restart and across a crash; a message seen on two
//! partitions at once is handled once; a claim left by a crashed worker is
//! taken over once its lease runs out; and an unreachable Redis pauses the
//! stage instead of letting duplicates through.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::Rng;
use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_all, read_topic, wait_for_commits};
use sluice_tests::redis::Redis;
use sluice_tests::stage::{StageFile, StageSpec};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);
const TOPICS: [&str; 3] = ["in", "out", "dlq"];
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// Message `n`: key `key-<n>`, header `message-id: id-<n>`.
fn with_id(n: usize, partitions: usize) -> Input {
    Input::text((n % partitions) as i32, &format!("key-{n}"), &format!("value {n}"))
        .with_header("message-id", &format!("id-{n}"))
}

fn header_dedup(redis: &Redis, extra: &str) -> String {
    format!(
        "[dedup]\nkey = \"header\"\nheader = \"message-id\"\nredis_url = \"{}\"\n{extra}",
        redis.url()
    )
}

fn count_by_key(records: &[Record]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for record in records {
        *counts.entry(record.key_text()).or_insert(0) += 1;
    }
    counts
}

fn duplicates(counts: &HashMap<String, usize>) -> usize {
    counts.values().map(|count| count - 1).sum()
}

#[test]
fn a_message_produced_twice_yields_one_output() {
    produced_twice("dedup-twice", "");
}

/// The same under key order, several calls of a partition at once: a copy
/// right behind its original shares its key, so it waits for the
/// original's claim and done-mark in its lane.
#[test]
fn a_message_produced_twice_yields_one_output_under_key_order() {
    produced_twice(
        "dedup-twice-keyed",
        "ordering = \"key\"\nmax_concurrency_per_partition = 8\nconcurrency = 8",
    );
}

fn produced_twice(group: &str, stage_keys: &str) {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 2);
    // 300 messages; every third is produced twice: right behind itself
    // (same batch, before its done-mark exists) or at the very end.
    let mut inputs = Vec::new();
    for n in 0..300 {
        inputs.push(with_id(n, 2));
        if n % 3 == 0 && n % 2 == 0 {
            inputs.push(with_id(n, 2));
        }
    }
    inputs.extend((0..300).filter(|n| n % 3 == 0 && n % 2 == 1).map(|n| with_id(n, 2)));
    assert_eq!(inputs.len(), 400);
    produce(&brokers, "in", &inputs);
    let plugin = sluice_tests::rust_plugin("uppercase");
    let spec = StageSpec {
        brokers: &brokers,
        plugin: &plugin,
        group,
        input: TOPICS[0],
        output: TOPICS[1],
        dead_letter: TOPICS[2],
        extra: &header_dedup(&redis, ""),
    };
    let stage = StageFile::new(&spec.to_toml_with_stage_keys(stage_keys));

    let mut process = stage.start("stage.log");
    let outputs = read_topic(&brokers, "out", 300, LIMIT, SETTLE);
    let committed = wait_for_commits(&brokers, group, "in", &[Some(200); 2], Duration::from_secs(30));
    process.signal(libc::SIGTERM);
    process.wait(Duration::from_secs(30)).expect("the stage stops");

    let counts = count_by_key(&outputs);
    assert_eq!(
        counts.len(),
        300,
        "every message has an output; log:\n{}",
        process.log()
    );
    assert_eq!(duplicates(&counts), 0, "log:\n{}", process.log());
    for record in &outputs {
        let n = &record.key_text()["key-".len()..];
        assert_eq!(record.value_text(), format!("VALUE {n}"));
    }
    assert_eq!(committed, [Some(200); 2], "skipped messages are committed too");
    assert!(process.log().contains("deduplicated    100"), "log:\n{}", process.log());
    let marks = redis.keys("sluice:test-stage:done:header:*");
    assert_eq!(marks.len(), 300);
    let ttl = redis.ttl(&marks[0]);
    assert!(
        ttl > 7 * 24 * 3600 - 60 && ttl <= 7 * 24 * 3600,
        "default TTL is 7 days, got {ttl}"
    );
}

/// The same message id on two partitions at the same moment: the worker
/// that claims the id first handles it; the other copy waits for its
/// done-mark and is finished as a duplicate, with no output. The plugin
/// asks for one 1.5 s retry per message, so the first copy is still being
/// handled when the second is screened: checking for a done-mark alone
/// would let both through. Three rounds, each a fresh race.
#[test]
fn one_message_on_two_partitions_at_once_is_handled_once() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 2);
    let extra = format!(
        "[plugin.config]\nretries = 1\ndelay-ms = 1500\n\n{}",
        header_dedup(&redis, "")
    );
    let stage = StageFile::for_plugin(&brokers, "retry-n-times", "dedup-race", TOPICS, &extra);
    let mut process = stage.start("stage.log");
    assert!(
        process.wait_for_log("partitions assigned", LIMIT),
        "log:\n{}",
        process.log()
    );

    let rounds = 3;
    for round in 0..rounds {
        let copies: Vec<Input> = (0..2)
            .map(|partition| {
                Input::text(
                    partition,
                    &format!("key-{round}-{partition}"),
                    &format!("value {round}"),
                )
                .with_header("message-id", &format!("id-{round}"))
            })
            .collect();
        produce(&brokers, "in", &copies);
        let finished = Some(round as i64 + 1);
        let committed = wait_for_commits(&brokers, "dedup-race", "in", &[finished; 2], LIMIT);
        assert_eq!(
            committed,
            [finished; 2],
            "round {round}: both copies are finished and committed; log:\n{}",
            process.log()
        );
    }
    let outputs = read_topic(&brokers, "out", rounds, LIMIT, SETTLE);
    process.signal(libc::SIGTERM);
    process.wait(Duration::from_secs(30)).expect("the stage stops");

    let log = process.log();
    assert_eq!(outputs.len(), rounds, "one output per id; log:\n{log}");
    let ids: HashSet<Option<String>> = outputs.iter().map(|record| record.header("message-id")).collect();
    assert_eq!(ids.len(), rounds, "{outputs:?}");
    assert!(read_all(&brokers, "dlq").is_empty(), "nothing dead-lettered");
    assert!(log.contains(&format!("deduplicated    {rounds}")), "log:\n{log}");
    assert!(
        log.contains(&format!("claim waits     {rounds}")),
        "each round's second copy found the id claimed by the first: the race was real; log:\n{log}"
    );
}

/// A claim left by a worker that crashed mid-message (set here by hand,
/// as it would have left it) holds the message back until its lease runs
/// out; then the stage claims the message, handles it once and marks it
/// done.
#[test]
fn a_claim_left_by_a_crashed_worker_is_taken_over_once_its_lease_runs_out() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);
    let stage = StageFile::for_plugin(
        &brokers,
        "uppercase",
        "dedup-takeover",
        TOPICS,
        &header_dedup(&redis, ""),
    );
    let mut process = stage.start("stage.log");
    assert!(
        process.wait_for_log("partitions assigned", LIMIT),
        "log:\n{}",
        process.log()
    );

    let key = "sluice:test-stage:done:header:id-1";
    let lease = Duration::from_secs(4);
    let claimed_at = Instant::now();
    redis.set_for(key, "claim:crashed-host:4242:in/0:00000000deadbeef", lease);
    produce(&brokers, "in", &[with_id(1, 1)]);
    let first = read_topic(&brokers, "out", 1, LIMIT, Duration::ZERO);
    let waited = claimed_at.elapsed();
    let outputs = read_topic(&brokers, "out", 1, LIMIT, SETTLE);
    let committed = wait_for_commits(&brokers, "dedup-takeover", "in", &[Some(1)], Duration::from_secs(30));
    process.signal(libc::SIGTERM);
    process.wait(Duration::from_secs(30)).expect("the stage stops");

    let log = process.log();
    assert_eq!(first.len(), 1, "the message is handled after the lease; log:\n{log}");
    assert!(
        waited >= lease - Duration::from_millis(300),
        "not handled while the crashed worker's claim was live (output after {waited:?}); log:\n{log}"
    );
    assert_eq!(outputs.len(), 1, "handled once; log:\n{log}");
    assert_eq!(outputs[0].value_text(), "VALUE 1");
    assert_eq!(committed, [Some(1)]);
    assert_eq!(redis.get(key).as_deref(), Some("1"), "the done-mark replaced the claim");
    assert!(log.contains("did that worker stop or die?"), "log:\n{log}");
    assert!(log.contains("claim waits     1"), "log:\n{log}");
    assert!(log.contains("claims taken    1"), "log:\n{log}");
}

#[test]
fn duplicates_across_a_restart_are_skipped() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 2);
    let stage = StageFile::for_plugin(
        &brokers,
        "uppercase",
        "dedup-restart",
        TOPICS,
        &header_dedup(&redis, ""),
    );

    produce(&brokers, "in", &(0..100).map(|n| with_id(n, 2)).collect::<Vec<_>>());
    let mut first = stage.start("first.log");
    assert_eq!(
        read_topic(&brokers, "out", 100, LIMIT, SETTLE).len(),
        100,
        "log:\n{}",
        first.log()
    );
    first.signal(libc::SIGTERM);
    assert_eq!(
        first.wait(Duration::from_secs(30)).and_then(|status| status.code()),
        Some(0)
    );

    // Half of these were handled by the first run.
    produce(&brokers, "in", &(50..150).map(|n| with_id(n, 2)).collect::<Vec<_>>());
    let second = stage.start("second.log");
    let outputs = read_topic(&brokers, "out", 150, LIMIT, SETTLE);

    let counts = count_by_key(&outputs);
    assert_eq!(counts.len(), 150, "log:\n{}", second.log());
    assert_eq!(duplicates(&counts), 0, "log:\n{}", second.log());
}

#[test]
fn ttl_expiry_lets_a_key_be_handled_again() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);
    let stage = StageFile::for_plugin(
        &brokers,
        "uppercase",
        "dedup-ttl",
        TOPICS,
        &header_dedup(&redis, "ttl_seconds = 4\n"),
    );
    let process = stage.start("stage.log");

    produce(&brokers, "in", &[with_id(1, 1)]);
    assert_eq!(read_topic(&brokers, "out", 1, LIMIT, Duration::ZERO).len(), 1);
    produce(&brokers, "in", &[with_id(1, 1)]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_topic(&brokers, "out", 1, LIMIT, SETTLE).len(),
        1,
        "within the TTL the repeat is skipped"
    );
    std::thread::sleep(Duration::from_secs(4));
    produce(&brokers, "in", &[with_id(1, 1)]);
    let outputs = read_topic(&brokers, "out", 2, LIMIT, SETTLE);
    assert_eq!(
        outputs.len(),
        2,
        "after the TTL it is handled again; log:\n{}",
        process.log()
    );
}

#[test]
fn redis_stopped_mid_stream_pauses_the_stage_and_loses_nothing() {
    let broker = Broker::start();
    let mut redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 2);
    let total = 4000;
    produce(&brokers, "in", &(0..total).map(|n| with_id(n, 2)).collect::<Vec<_>>());
    // Each message waits out one 1 ms retry, so the stream lasts seconds.
    let extra = format!(
        "[plugin.config]\nretries = 1\ndelay-ms = 1\n\n{}redis_timeout_ms = 300\n",
        header_dedup(&redis, "")
    );
    let stage = StageFile::for_plugin(&brokers, "retry-n-times", "dedup-outage", TOPICS, &extra);

    let mut process = stage.start("stage.log");
    let before = read_topic(&brokers, "out", 500, LIMIT, Duration::ZERO).len();
    redis.stop();
    std::thread::sleep(Duration::from_secs(1));
    let stalled_at = read_all(&brokers, "out").len();
    std::thread::sleep(Duration::from_secs(2));
    let during = read_all(&brokers, "out").len();
    redis.restart();
    let outputs = read_topic(&brokers, "out", total, LIMIT, SETTLE);

    assert!(
        before >= 500 && before < total,
        "Redis went away mid-stream ({before} outputs)"
    );
    assert_eq!(
        during,
        stalled_at,
        "nothing is handled while Redis is away; log:\n{}",
        process.log()
    );
    assert!(during < total, "the outage came before the end");
    let counts = count_by_key(&outputs);
    assert_eq!(counts.len(), total, "nothing lost; log:\n{}", process.log());
    assert_eq!(duplicates(&counts), 0);
    assert!(process.wait(Duration::ZERO).is_none(), "the same process carried on");
    let log = process.log();
    assert!(log.contains("dedup store failed; the partition waits"), "log:\n{log}");
    assert!(log.contains("dedup store reachable again"), "log:\n{log}");
}

/// A crash loses the acknowledgements of outputs the broker had already
/// written, and Redis cannot be told about those in the same step; so
/// coordinates keys skip every message that was *finished* before a crash,
/// and a duplicate can only come from a message in flight at a kill. With
/// commits 5 s apart, each run below is killed before its first commit and
/// the next starts from offset 0 again: without dedup nearly every message
/// handled before a kill would come out again.
#[test]
fn coordinates_keys_skip_everything_finished_before_a_sigkill() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 4);
    let total = 20_000;
    let inputs: Vec<Input> = (0..total)
        .map(|n| Input::text((n % 4) as i32, &format!("key-{n}"), &format!("value {n}")))
        .collect();
    produce(&brokers, "in", &inputs);
    let (in_flight, batch, kills) = (50, 10, 3);
    let extra = format!(
        "[plugin.config]\nretries = 1\ndelay-ms = 1\n\n[kafka.consumer_properties]\n\"session.timeout.ms\" = {}\n\n[dedup]\nkey = \"coordinates\"\nredis_url = \"{}\"\n",
        SESSION_TIMEOUT.as_millis(),
        redis.url()
    );
    let plugin = sluice_tests::rust_plugin("retry-n-times");
    let toml = StageSpec {
        brokers: &brokers,
        plugin: &plugin,
        group: "dedup-crashy",
        input: "in",
        output: "out",
        dead_letter: "dlq",
        extra: &extra,
    }
    .to_toml()
    .replace(
        "commit_interval_ms = 200",
        &format!("commit_interval_ms = 5000\nmax_in_flight_per_partition = {in_flight}\nbatch_size = {batch}"),
    );
    let stage = StageFile::new(&toml);
    let mut random = rand::rng();

    let mut handled_before_kills = 0;
    for round in 0..kills {
        let process = stage.start(&format!("run-{round}.log"));
        assert!(
            process.wait_for_log("partitions assigned", LIMIT),
            "log:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(random.random_range(1000..2500)));
        process.signal(libc::SIGKILL);
        // tansu keeps a killed member in the group until someone joins
        // after its session timed out, and a member that joins earlier can
        // be left with no partitions for good (Apache Kafka rebalances); so
        // the next start waits out the 6 s session.
        std::thread::sleep(SESSION_TIMEOUT + Duration::from_secs(1));
        handled_before_kills = read_all(&brokers, "out").len();
    }
    let mut last = stage.start("final.log");
    let outputs = read_topic(&brokers, "out", total, Duration::from_secs(300), Duration::from_secs(3));
    last.signal(libc::SIGTERM);
    last.wait(Duration::from_secs(30)).expect("the last run stops");

    let counts = count_by_key(&outputs);
    let skipped: usize = last
        .log()
        .lines()
        .find_map(|line| line.trim().strip_prefix("deduplicated")?.trim().parse().ok())
        .expect("the summary counts deduplicated messages");
    let bound = kills * 4 * (in_flight + batch);
    println!(
        "dedup crash test: {handled_before_kills} outputs before the last start, {} in all for {total} inputs; the last run skipped {skipped} finished messages; {} duplicates (bound {bound})",
        outputs.len(),
        duplicates(&counts)
    );
    assert_eq!(counts.len(), total, "nothing lost; log:\n{}", last.log());
    assert!(
        skipped + duplicates(&counts) >= handled_before_kills / 2,
        "the last run re-read from offset 0 and skipped what was finished"
    );
    assert!(
        duplicates(&counts) <= bound,
        "duplicates only from messages in flight at a kill"
    );
    let committed = wait_for_commits(
        &brokers,
        "dedup-crashy",
        "in",
        &[Some(5000); 4],
        Duration::from_secs(30),
    );
    assert_eq!(committed, [Some(5000); 4]);
}
