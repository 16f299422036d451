//! Python and JavaScript plugins in a real stage against a real broker
//! (tansu), held to the same standard as Rust ones: every message comes out
//! exactly once and exactly right, bad input is dead-lettered with the same
//! reason whatever the language, and an exception is a failed attempt that
//! dead-letters after the stage's max attempts.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::stage::StageFile;
use sluice_tests::{Language, file_sha256, js_plugin, python_plugin, shared_plugin_cache};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);
const TOPICS: [&str; 3] = ["words", "words-out", "words-dlq"];
const PARTITIONS: i32 = 3;

/// A broker with the three topics of `partitions` partitions each, and a
/// stage of `plugin` between them using the shared compiled-plugin cache.
fn broker_and_stage(plugin: &Path, partitions: i32, extra: &str) -> (Broker, String, StageFile) {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, partitions);
    let stage =
        StageFile::for_plugin_file(&brokers, plugin, "polyglot", TOPICS, extra).sharing_cache(&shared_plugin_cache());
    (broker, brokers, stage)
}

fn by_key(records: &[Record]) -> HashMap<String, &Record> {
    records.iter().map(|record| (record.key_text(), record)).collect()
}

/// 1,000 text messages (with a character that upper-cases to two) and 50
/// non-UTF-8 ones mixed in.
fn uppercase_inputs() -> Vec<Input> {
    (0..1_050)
        .map(|n| {
            let input = Input::text(
                n % PARTITIONS,
                &format!("key-{n}"),
                &format!("message {n} for the straße"),
            )
            .with_header("trace", &format!("t-{n}"));
            if n % 21 == 20 {
                Input {
                    value: vec![b'v', 0xff, n as u8],
                    ..input
                }
            } else {
                input
            }
        })
        .collect()
}

fn uppercase_runs_a_stage_exactly(language: Language) {
    let plugin = language.plugin("uppercase");
    let version = file_sha256(&plugin);
    let (_broker, brokers, stage) = broker_and_stage(&plugin, PARTITIONS, "");
    let inputs = uppercase_inputs();
    produce(&brokers, TOPICS[0], &inputs);

    let process = stage.start("stage.log");
    let outputs = read_topic(&brokers, TOPICS[1], 1_000, LIMIT, SETTLE);
    let dead_letters = read_topic(&brokers, TOPICS[2], 50, LIMIT, SETTLE);
    let expected_commits: Vec<Option<i64>> = (0..PARTITIONS).map(|_| Some(350)).collect();
    let committed = wait_for_commits(
        &brokers,
        "polyglot",
        TOPICS[0],
        &expected_commits,
        Duration::from_secs(30),
    );

    assert_eq!(outputs.len(), 1_000, "{language:?} log:\n{}", process.log());
    assert_eq!(dead_letters.len(), 50, "{language:?} log:\n{}", process.log());
    let outputs = by_key(&outputs);
    let dead_letters = by_key(&dead_letters);
    assert_eq!(
        (outputs.len(), dead_letters.len()),
        (1_000, 50),
        "every key exactly once"
    );
    for (n, input) in inputs.iter().enumerate() {
        let key = format!("key-{n}");
        if n % 21 == 20 {
            let record = dead_letters[&key];
            assert_eq!(
                record.value.as_deref(),
                Some(input.value.as_slice()),
                "{language:?} {key}"
            );
            assert_eq!(
                record.header("sluice.reason").unwrap(),
                "value is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 1",
                "{language:?} {key}"
            );
            assert_eq!(record.header("sluice.attempts").unwrap(), "1");
            assert_eq!(record.header("sluice.plugin.name").unwrap(), "uppercase");
            assert_eq!(record.header("sluice.plugin.version").unwrap(), version);
        } else {
            let record = outputs[&key];
            assert_eq!(
                record.value_text(),
                format!("MESSAGE {n} FOR THE STRASSE"),
                "{language:?}"
            );
            assert_eq!(
                record.headers[..2],
                [
                    ("trace".to_owned(), format!("t-{n}").into_bytes()),
                    ("sluice.plugin.version".to_owned(), version.clone().into_bytes()),
                ],
                "{language:?} {key}"
            );
            // The input had no trace context, so sluice started one.
            assert_eq!(record.headers.len(), 3, "{language:?} {key}");
            assert_eq!(record.headers[2].0, "traceparent");
            assert!(record.header("traceparent").unwrap().starts_with("00-"));
        }
    }
    assert_eq!(committed, expected_commits, "{language:?}");
}

#[test]
fn rust_uppercase_runs_a_stage_exactly() {
    uppercase_runs_a_stage_exactly(Language::Rust);
}

#[test]
fn python_uppercase_runs_a_stage_exactly() {
    uppercase_runs_a_stage_exactly(Language::Python);
}

#[test]
fn javascript_uppercase_runs_a_stage_exactly() {
    uppercase_runs_a_stage_exactly(Language::JavaScript);
}

/// Two of 20 messages make the plugin raise; with two attempts allowed they
/// are dead-lettered with the exception in the reason, the rest pass.
fn exceptions_dead_letter_after_max_attempts(plugin: &Path, exception: &str) {
    let extra = "[retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\n";
    let (_broker, brokers, stage) = broker_and_stage(plugin, 1, extra);
    let inputs: Vec<Input> = (0..20)
        .map(|n| Input::text(0, &format!("key-{n}"), if n == 3 || n == 15 { "TRAP" } else { "fine" }))
        .collect();
    produce(&brokers, TOPICS[0], &inputs);

    let process = stage.start("stage.log");
    let outputs = read_topic(&brokers, TOPICS[1], 18, LIMIT, SETTLE);
    let dead_letters = read_topic(&brokers, TOPICS[2], 2, LIMIT, SETTLE);
    let committed = wait_for_commits(&brokers, "polyglot", TOPICS[0], &[Some(20)], Duration::from_secs(30));

    assert_eq!(outputs.len(), 18, "{} log:\n{}", plugin.display(), process.log());
    assert!(outputs.iter().all(|record| record.value_text() == "fine"));
    let keys: Vec<String> = dead_letters.iter().map(Record::key_text).collect();
    assert_eq!(keys, ["key-3", "key-15"], "{}", plugin.display());
    for record in &dead_letters {
        let reason = record.header("sluice.reason").unwrap();
        assert!(
            reason.starts_with("retries exhausted: plugin trapped: wasm `unreachable` instruction executed"),
            "{reason}"
        );
        assert!(reason.contains(exception), "{reason}");
        assert_eq!(record.header("sluice.attempts").unwrap(), "2");
        assert_eq!(record.value_text(), "TRAP");
    }
    assert_eq!(committed, [Some(20)]);
}

#[test]
fn a_python_exception_is_a_failed_attempt_and_dead_letters_after_max_attempts() {
    exceptions_dead_letter_after_max_attempts(
        &python_plugin("raise-on-marker"),
        "handler.MarkerFound: found the marker value 'TRAP'",
    );
}

#[test]
fn a_javascript_exception_is_a_failed_attempt_and_dead_letters_after_max_attempts() {
    exceptions_dead_letter_after_max_attempts(&js_plugin("throw-on-marker"), "found the marker value \"TRAP\"");
}
