//! A stage against a real broker (tansu): messages in, exact records out,
//! offsets committed, dead letters explained, retries in place.

use std::collections::HashMap;
use std::time::Duration;

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::stage::StageFile;
use sluice_tests::{file_sha256, rust_plugin};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);

struct Setup {
    broker: Broker,
    brokers: String,
}

impl Setup {
    fn new(topics: &[&str], partitions: i32) -> Setup {
        let broker = Broker::start();
        let brokers = broker.bootstrap_servers();
        create_topics(&brokers, topics, partitions);
        Setup { broker, brokers }
    }

    fn stage(&self, plugin: &str, group: &str, topics: [&str; 3], extra: &str) -> StageFile {
        StageFile::for_plugin(&self.brokers, plugin, group, topics, extra)
    }
}

fn by_key(records: &[Record]) -> HashMap<String, &Record> {
    records.iter().map(|record| (record.key_text(), record)).collect()
}

/// Per-partition counts of `inputs`, as the committed offsets should read.
fn expected_commits(inputs: &[Input], partitions: i32) -> Vec<Option<i64>> {
    (0..partitions)
        .map(|partition| Some(inputs.iter().filter(|input| input.partition == partition).count() as i64))
        .collect()
}

#[test]
fn ten_thousand_messages_come_out_uppercased_and_every_offset_is_committed() {
    let setup = Setup::new(&["words", "words-upper", "words-dlq"], 4);
    let inputs: Vec<Input> = (0..10_000)
        .map(|n| {
            Input::text(n % 4, &format!("key-{n}"), &format!("message number {n}"))
                .with_header("trace", &format!("t-{n}"))
        })
        .collect();
    produce(&setup.brokers, "words", &inputs);
    let stage = setup.stage("uppercase", "upper", ["words", "words-upper", "words-dlq"], "");
    let version = file_sha256(&rust_plugin("uppercase"));

    let process = stage.start("stage.log");
    let outputs = read_topic(&setup.brokers, "words-upper", 10_000, LIMIT, SETTLE);
    let committed = wait_for_commits(
        &setup.brokers,
        "upper",
        "words",
        &expected_commits(&inputs, 4),
        Duration::from_secs(30),
    );
    let dead_letters = read_topic(
        &setup.brokers,
        "words-dlq",
        0,
        Duration::ZERO,
        Duration::from_millis(500),
    );

    assert_eq!(outputs.len(), 10_000, "log:\n{}", process.log());
    let outputs = by_key(&outputs);
    assert_eq!(outputs.len(), 10_000, "every key exactly once");
    for n in 0..10_000 {
        let record = outputs[&format!("key-{n}")];
        assert_eq!(record.value_text(), format!("MESSAGE NUMBER {n}"));
        assert_eq!(
            record.headers[..2],
            [
                ("trace".to_owned(), format!("t-{n}").into_bytes()),
                ("sluice.plugin.version".to_owned(), version.clone().into_bytes()),
            ]
        );
        // Untraced input: sluice started a trace for it.
        assert_eq!(record.headers.len(), 3);
        assert_eq!(record.headers[2].0, "traceparent");
    }
    assert_eq!(committed, expected_commits(&inputs, 4));
    assert!(dead_letters.is_empty());
    drop(setup.broker);
}

#[test]
fn non_utf8_values_are_dead_lettered_with_every_sluice_header() {
    let setup = Setup::new(&["mixed", "mixed-out", "mixed-dlq"], 3);
    let inputs: Vec<Input> = (0..300)
        .map(|n| {
            let input = Input::text(n % 3, &format!("key-{n}"), &format!("value {n}")).with_header("origin", "test");
            if n % 10 == 0 {
                Input {
                    value: vec![0xff, 0xfe, n as u8],
                    ..input
                }
            } else {
                input
            }
        })
        .collect();
    produce(&setup.brokers, "mixed", &inputs);
    let stage = setup.stage("uppercase", "mixed", ["mixed", "mixed-out", "mixed-dlq"], "");
    let version = file_sha256(&rust_plugin("uppercase"));

    let process = stage.start("stage.log");
    let outputs = read_topic(&setup.brokers, "mixed-out", 270, LIMIT, SETTLE);
    let dead_letters = read_topic(&setup.brokers, "mixed-dlq", 30, LIMIT, SETTLE);
    let committed = wait_for_commits(
        &setup.brokers,
        "mixed",
        "mixed",
        &expected_commits(&inputs, 3),
        Duration::from_secs(30),
    );

    assert_eq!(outputs.len(), 270, "log:\n{}", process.log());
    assert_eq!(dead_letters.len(), 30);
    let dead_letters = by_key(&dead_letters);
    for n in (0..300).step_by(10) {
        let input = &inputs[n];
        let record = dead_letters[&format!("key-{n}")];
        let offset_in_partition = (n / 3) as i64;
        assert_eq!(
            record.value.as_deref(),
            Some(input.value.as_slice()),
            "original value, byte for byte"
        );
        assert_eq!(
            record.headers[0],
            ("origin".to_owned(), b"test".to_vec()),
            "original headers first"
        );
        assert_eq!(
            record.header("sluice.reason").unwrap(),
            "value is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 0"
        );
        assert_eq!(record.header("sluice.source.topic").unwrap(), "mixed");
        assert_eq!(
            record.header("sluice.source.partition").unwrap(),
            input.partition.to_string()
        );
        assert_eq!(
            record.header("sluice.source.offset").unwrap(),
            offset_in_partition.to_string()
        );
        let timestamp: i64 = record.header("sluice.source.timestamp").unwrap().parse().unwrap();
        assert!(timestamp > 1_600_000_000_000, "a real producer timestamp: {timestamp}");
        assert_eq!(record.header("sluice.attempts").unwrap(), "1");
        assert_eq!(record.header("sluice.stage").unwrap(), "test-stage");
        assert_eq!(record.header("sluice.plugin.name").unwrap(), "uppercase");
        assert_eq!(record.header("sluice.plugin.version").unwrap(), version);
        let failed_at = record.header("sluice.failed-at").unwrap();
        assert!(
            failed_at.len() == 24 && failed_at.ends_with('Z') && failed_at.starts_with("20"),
            "RFC 3339 UTC with milliseconds: {failed_at}"
        );
    }
    assert_eq!(committed, expected_commits(&inputs, 3));
}

#[test]
fn a_message_that_keeps_trapping_reaches_the_dead_letter_topic_and_the_stage_goes_on() {
    let setup = Setup::new(&["traps", "traps-out", "traps-dlq"], 2);
    let inputs: Vec<Input> = (0..100)
        .map(|n| Input::text(n % 2, &format!("key-{n}"), if n % 20 == 7 { "TRAP" } else { "fine" }))
        .collect();
    produce(&setup.brokers, "traps", &inputs);
    let extra = "[retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\n";
    let stage = setup.stage("trap-on-marker", "traps", ["traps", "traps-out", "traps-dlq"], extra);

    let process = stage.start("stage.log");
    let outputs = read_topic(&setup.brokers, "traps-out", 95, LIMIT, SETTLE);
    let dead_letters = read_topic(&setup.brokers, "traps-dlq", 5, LIMIT, SETTLE);

    assert_eq!(outputs.len(), 95, "log:\n{}", process.log());
    assert_eq!(dead_letters.len(), 5);
    for record in &dead_letters {
        let reason = record.header("sluice.reason").unwrap();
        assert!(
            reason.starts_with("retries exhausted: plugin trapped: wasm `unreachable` instruction executed"),
            "{reason}"
        );
        assert!(reason.contains("found the marker value"), "{reason}");
        assert_eq!(record.header("sluice.attempts").unwrap(), "2");
        assert_eq!(record.value_text(), "TRAP");
    }
}

#[test]
fn runaway_loops_and_memory_hogs_are_dead_lettered_after_max_attempts() {
    let setup = Setup::new(&["loop", "loop-out", "loop-dlq", "hog", "hog-out", "hog-dlq"], 1);
    let limits =
        "[plugin.limits]\ndeadline_ms = 300\nmemory_mib = 32\n\n[retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\n";
    for (plugin, topics, marker, reason) in [
        (
            "infinite-loop",
            ["loop", "loop-out", "loop-dlq"],
            "LOOP",
            "retries exhausted: plugin exceeded its 300 ms deadline",
        ),
        (
            "memory-hog",
            ["hog", "hog-out", "hog-dlq"],
            "HOG",
            "retries exhausted: plugin exceeded its 32 MiB memory limit",
        ),
    ] {
        let inputs: Vec<Input> = (0..20)
            .map(|n| Input::text(0, &format!("key-{n}"), if n == 3 || n == 15 { marker } else { "fine" }))
            .collect();
        produce(&setup.brokers, topics[0], &inputs);
        let stage = setup.stage(plugin, plugin, topics, limits);

        let process = stage.start("stage.log");
        let outputs = read_topic(&setup.brokers, topics[1], 18, LIMIT, SETTLE);
        let dead_letters = read_topic(&setup.brokers, topics[2], 2, LIMIT, SETTLE);

        assert_eq!(outputs.len(), 18, "{plugin} log:\n{}", process.log());
        assert_eq!(dead_letters.len(), 2, "{plugin}");
        let keys: Vec<String> = dead_letters.iter().map(Record::key_text).collect();
        assert_eq!(keys, ["key-3", "key-15"], "{plugin}");
        for record in &dead_letters {
            assert_eq!(record.header("sluice.reason").unwrap(), reason);
            assert_eq!(record.header("sluice.attempts").unwrap(), "2");
        }
        let committed = wait_for_commits(&setup.brokers, plugin, topics[0], &[Some(20)], Duration::from_secs(30));
        assert_eq!(committed, [Some(20)], "{plugin}");
    }
}
