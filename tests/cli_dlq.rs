//! `sluice dlq inspect` and `sluice dlq replay` against tansu and a real
//! Redis: dead letters listed as the stage wrote them, chosen ones put back
//! through a fixed stage exactly once, in bounded chunks, shrunk ones
//! skipped unless allowed, a failing chunk stopping the replay with an
//! exact account, and bad input refused quickly.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use sluice::dedup::{DedupKey, DedupStore, KeyMaker, RedisStore};
use sluice::kafka::{EndedBy, ReadTimeouts, TopicReader};
use sluice::pipeline::DeadLetterHeaders;
use sluice::plugin::{Header, Message};
use sluice_tests::broker::{Broker, free_port};
use sluice_tests::kafka::{
    Input, RawInput, Record, create_topics, produce, produce_raw, read_all, read_topic, wait_for_commits,
};
use sluice_tests::process::kill_with_parent;
use sluice_tests::redis::Redis;
use sluice_tests::stage::StageFile;
use sluice_tests::{keyed_message, sluice_bin};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);
const TOPICS: [&str; 3] = ["in", "out", "dlq"];
/// Generous for a command that should take a few seconds.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// What a finished `sluice` command printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "status {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.took, self.stdout, self.stderr
        )
    }

    /// stdout as JSON Lines.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
            .collect()
    }
}

/// Run `sluice <args>` to completion (killed after `limit`).
fn sluice(args: &[&str], limit: Duration) -> Finished {
    let dir = tempfile::TempDir::new().expect("output directory");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut command = Command::new(sluice_bin());
    command
        .args(args)
        .env(
            "SLUICE_LOG",
            std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn,librdkafka=error,rdkafka=error".to_owned()),
        )
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    kill_with_parent(&mut command);
    let started = Instant::now();
    let mut child = command.spawn().expect("sluice starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sluice") {
            break status;
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            panic!(
                "sluice {args:?} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        took: started.elapsed(),
    }
}

fn dlq(command: &str, stage: &Path, extra: &[&str]) -> Finished {
    let stage = stage.to_str().expect("UTF-8 path");
    let mut args = vec!["dlq", command, stage];
    args.extend_from_slice(extra);
    sluice(&args, COMMAND_LIMIT)
}

fn header_dedup(redis_url: &str) -> String {
    format!("[dedup]\nkey = \"header\"\nheader = \"message-id\"\nredis_url = \"{redis_url}\"\n")
}

fn by_key(records: &[Record]) -> HashMap<String, Vec<&Record>> {
    let mut map: HashMap<String, Vec<&Record>> = HashMap::new();
    for record in records {
        map.entry(record.key_text()).or_default().push(record);
    }
    map
}

fn header_of<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line["headers"]
        .as_array()?
        .iter()
        .find(|header| header["name"] == name)
        .and_then(|header| header["value"].as_str())
}

/// The trace id in a `traceparent` value.
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).expect("a traceparent")
}

/// Which messages of the round trip are poison: dead-lettered by
/// `trap-on-marker`, fine for `uppercase`.
const POISON: [usize; 3] = [2, 5, 9];
const MESSAGES: usize = 12;

fn round_trip_input(n: usize) -> Input {
    let value = if POISON.contains(&n) {
        "poison".to_owned()
    } else {
        format!("value {n}")
    };
    Input::text((n % 2) as i32, &format!("key-{n}"), &value).with_header("message-id", &format!("id-{n}"))
}

#[test]
fn dead_letters_are_inspected_and_replayed_once_through_the_fixed_stage() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 2);
    let group = "dlq-round-trip";
    let trapping = StageFile::for_plugin(
        &brokers,
        "trap-on-marker",
        group,
        TOPICS,
        &format!(
            "[plugin.config]\nmarker = \"poison\"\n\n[retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\nmax_backoff_ms = 20\n\n{}",
            header_dedup(&redis.url())
        ),
    );
    let fixed = StageFile::for_plugin(&brokers, "uppercase", group, TOPICS, &header_dedup(&redis.url()));
    let inputs: Vec<Input> = (0..MESSAGES).map(round_trip_input).collect();
    produce(&brokers, "in", &inputs);

    // The broken stage: N - D outputs, D dead letters, every offset done.
    let mut broken = trapping.start("broken.log");
    let first_outputs = read_topic(&brokers, "out", MESSAGES - POISON.len(), LIMIT, Duration::ZERO);
    let dead_letters = read_topic(&brokers, "dlq", POISON.len(), LIMIT, Duration::ZERO);
    let committed = wait_for_commits(&brokers, group, "in", &[Some(6), Some(6)], Duration::from_secs(30));
    broken.signal(libc::SIGTERM);
    assert!(broken.wait(Duration::from_secs(30)).is_some(), "log:\n{}", broken.log());
    assert_eq!(first_outputs.len(), MESSAGES - POISON.len(), "log:\n{}", broken.log());
    assert_eq!(dead_letters.len(), POISON.len(), "log:\n{}", broken.log());
    assert_eq!(committed, [Some(6), Some(6)]);
    assert_eq!(redis.keys("sluice:test-stage:done:header:*").len(), MESSAGES);

    // Fix the plugin: the stage restarts with `uppercase`, and finds nothing new.
    let running = fixed.start("fixed.log");
    assert!(running.wait_for_log("stage running", LIMIT), "log:\n{}", running.log());

    let inspected = dlq("inspect", &fixed.path, &["--json"]);
    assert!(inspected.status.success(), "{}", inspected.describe());
    assert!(
        inspected.took < Duration::from_secs(8),
        "inspect ends on end-of-partition events, not the idle timeout (10 s): {}",
        inspected.describe()
    );
    let lines = inspected.json_lines();
    assert_eq!(lines.len(), POISON.len(), "{}", inspected.describe());
    println!("sluice dlq inspect --json:\n{}", inspected.stdout);
    let mut keys: Vec<&str> = lines
        .iter()
        .map(|line| line["key"].as_str().expect("text key"))
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["key-2", "key-5", "key-9"]);
    for line in &lines {
        let n: usize = line["key"].as_str().unwrap()["key-".len()..].parse().unwrap();
        let why = &line["dead_letter"];
        assert_eq!(line["topic"], "dlq");
        assert_eq!(line["value"], "poison");
        assert_eq!(header_of(line, "message-id"), Some(format!("id-{n}").as_str()));
        let reason = why["reason"].as_str().expect("a reason");
        assert!(
            reason.starts_with("retries exhausted: ") && reason.contains("found the marker value \"poison\""),
            "{reason}"
        );
        assert_eq!(why["source_topic"], "in");
        assert_eq!(why["source_partition"], n % 2);
        assert_eq!(why["source_offset"], n / 2);
        assert!(why["source_timestamp_ms"].as_i64().is_some());
        assert_eq!(why["attempts"], 2);
        assert_eq!(why["stage"], "test-stage");
        assert_eq!(why["plugin_name"], "trap-on-marker");
    }
    assert_eq!(inspected.stderr, "matched 3 of 3 dead letters in dlq\n");
    let as_text = dlq("inspect", &fixed.path, &[]);
    assert!(as_text.status.success(), "{}", as_text.describe());
    assert_eq!(as_text.stdout.matches("  reason:   retries exhausted: ").count(), 3);
    println!("sluice dlq inspect:\n{}{}", as_text.stdout, as_text.stderr);

    let dry_run = dlq("replay", &fixed.path, &["--dry-run"]);
    assert!(dry_run.status.success(), "{}", dry_run.describe());
    assert!(
        dry_run
            .stdout
            .contains("dry run: would replay 3 of 3 matched (0 skipped); would clear up to 3 done-marks"),
        "{}",
        dry_run.describe()
    );
    assert_eq!(dry_run.stdout.matches("would replay dlq ").count(), 3);
    println!("sluice dlq replay --dry-run:\n{}{}", dry_run.stdout, dry_run.stderr);
    std::thread::sleep(SETTLE);
    assert_eq!(
        read_all(&brokers, "out").len(),
        MESSAGES - POISON.len(),
        "a dry run produces nothing"
    );
    assert_eq!(read_all(&brokers, "in").len(), MESSAGES);
    assert_eq!(redis.keys("sluice:test-stage:done:header:*").len(), MESSAGES);

    let replayed = dlq("replay", &fixed.path, &[]);
    assert!(replayed.status.success(), "{}", replayed.describe());
    assert!(
        replayed
            .stdout
            .contains("replayed 3 of 3 matched (0 skipped); cleared 3 done-marks"),
        "{}",
        replayed.describe()
    );
    println!("sluice dlq replay:\n{}{}", replayed.stdout, replayed.stderr);

    let outputs = read_topic(&brokers, "out", MESSAGES, LIMIT, SETTLE);
    let outputs_by_key = by_key(&outputs);
    assert_eq!(outputs.len(), MESSAGES, "log:\n{}", running.log());
    assert_eq!(outputs_by_key.len(), MESSAGES, "each key exactly once");
    let dead_letter_traces: HashMap<String, String> = dead_letters
        .iter()
        .map(|record| (record.key_text(), record.header("traceparent").expect("traced")))
        .collect();
    for n in 0..MESSAGES {
        let output = outputs_by_key[&format!("key-{n}")][0];
        assert_eq!(output.header("message-id"), Some(format!("id-{n}")));
        if POISON.contains(&n) {
            assert_eq!(output.value_text(), "POISON", "handled by the fixed plugin");
            let from = output.header("sluice.replayed-from").expect("marked as replayed");
            let dead_letter = dead_letters
                .iter()
                .find(|record| record.key_text() == format!("key-{n}"))
                .unwrap();
            assert_eq!(from, format!("dlq/{}/{}", dead_letter.partition, dead_letter.offset));
            assert_eq!(
                trace_id(&output.header("traceparent").unwrap()),
                trace_id(&dead_letter_traces[&format!("key-{n}")]),
                "the replay continues the dead letter's trace"
            );
        } else {
            assert_eq!(output.value_text(), format!("value {n}"));
            assert_eq!(output.header("sluice.replayed-from"), None);
        }
    }
    let replayed_inputs: Vec<Record> = read_all(&brokers, "in")
        .into_iter()
        .filter(|record| record.offset >= 6)
        .collect();
    assert_eq!(replayed_inputs.len(), POISON.len());
    for record in &replayed_inputs {
        let n: usize = record.key_text()["key-".len()..].parse().unwrap();
        assert_eq!(record.partition, (n % 2) as i32, "back to its source partition");
        assert_eq!(record.value_text(), "poison");
        assert!(
            record
                .headers
                .iter()
                .all(|(name, _)| !name.starts_with("sluice.") || name == "sluice.replayed-from"),
            "no dead-letter headers: {:?}",
            record.headers
        );
    }
    assert_eq!(
        read_all(&brokers, "dlq").len(),
        POISON.len(),
        "replay adds no dead letters"
    );
    assert_eq!(redis.keys("sluice:test-stage:done:header:*").len(), MESSAGES);
}

/// A dead letter as a stage would write it, for tests that need one
/// without running a stage.
fn synthetic_dead_letter(key: &str, reason: &str, source_offset: i64) -> Input {
    let why = DeadLetterHeaders {
        reason: reason.to_owned(),
        source_topic: "in".to_owned(),
        source_partition: 0,
        source_offset,
        source_timestamp_ms: Some(1_700_000_000_000),
        attempts: 1,
        stage: "test-stage".to_owned(),
        plugin_name: "mirror".to_owned(),
        plugin_version: "ab".repeat(32),
        failed_at: UNIX_EPOCH + Duration::from_secs(1_700_000_100),
    };
    let mut input = Input::text(0, key, &format!("value of {key}")).with_header("message-id", &format!("id-{key}"));
    input.headers.extend(why.to_headers());
    input
}

#[test]
fn filters_choose_dead_letters_by_reason_and_by_exact_offset() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);
    let dead = |key: &str, reason: &str| {
        Input::text(0, key, &format!("value of {key}"))
            .with_header("mirror.verdict", "dead-letter")
            .with_header("mirror.reason", reason)
    };
    produce(
        &brokers,
        "in",
        &[
            dead("a1", "invalid JSON: unexpected end"),
            Input::text(0, "ok1", "fine"),
            dead("b1", "unknown customer 42"),
            dead("a2", "invalid JSON: trailing comma"),
            Input::text(0, "ok2", "fine"),
        ],
    );
    // Something on the topic that no stage wrote.
    produce(&brokers, "dlq", &[Input::text(0, "stray", "not a dead letter")]);
    let stage = StageFile::for_plugin(&brokers, "mirror", "dlq-filters", TOPICS, "");
    let mut process = stage.start("stage.log");
    assert_eq!(
        read_topic(&brokers, "dlq", 4, LIMIT, Duration::ZERO).len(),
        4,
        "log:\n{}",
        process.log()
    );
    wait_for_commits(&brokers, "dlq-filters", "in", &[Some(5)], Duration::from_secs(30));
    process.signal(libc::SIGTERM);
    process.wait(Duration::from_secs(30)).expect("the stage stops");

    let keys_of = |finished: &Finished| -> Vec<String> {
        assert!(finished.status.success(), "{}", finished.describe());
        let mut keys: Vec<String> = finished
            .json_lines()
            .iter()
            .map(|line| line["key"].as_str().unwrap().to_owned())
            .collect();
        keys.sort();
        keys
    };
    let everything = dlq("inspect", &stage.path, &["--json"]);
    assert_eq!(keys_of(&everything), ["a1", "a2", "b1", "stray"]);
    let stray = everything
        .json_lines()
        .into_iter()
        .find(|line| line["key"] == "stray")
        .unwrap();
    assert_eq!(stray["dead_letter"], Value::Null);
    assert_eq!(
        stray["problem"],
        "no `sluice.reason` header (not a sluice dead letter?)"
    );
    let offset_of = |key: &str| -> String {
        let line = everything
            .json_lines()
            .into_iter()
            .find(|line| line["key"] == key)
            .unwrap();
        format!("{}:{}", line["partition"], line["offset"])
    };

    let json_reason = dlq("inspect", &stage.path, &["--json", "--reason", "invalid JSON"]);
    assert_eq!(keys_of(&json_reason), ["a1", "a2"]);
    assert!(
        json_reason.stderr.contains("matched 2 of 4 dead letters in dlq"),
        "{}",
        json_reason.describe()
    );
    assert_eq!(
        keys_of(&dlq(
            "inspect",
            &stage.path,
            &["--json", "--reason", "unknown customer"]
        )),
        ["b1"]
    );
    assert_eq!(
        keys_of(&dlq("inspect", &stage.path, &["--json", "--reason", "Invalid json"])),
        Vec::<String>::new(),
        "the reason filter is case-sensitive"
    );
    assert_eq!(
        keys_of(&dlq("inspect", &stage.path, &["--json", "--offset", &offset_of("a2")])),
        ["a2"]
    );
    assert_eq!(
        keys_of(&dlq(
            "inspect",
            &stage.path,
            &["--json", "--offset", &offset_of("b1"), "--offset", &offset_of("stray")]
        )),
        ["b1", "stray"]
    );
    let limited = dlq(
        "inspect",
        &stage.path,
        &["--json", "--source-partition", "0", "--limit", "2"],
    );
    assert_eq!(keys_of(&limited).len(), 2);
    assert!(
        limited.stderr.contains("(stopped at --limit)"),
        "{}",
        limited.describe()
    );

    // Replay by reason: only b1 goes back to `in`, with its original headers.
    let replay_b = dlq("replay", &stage.path, &["--reason", "unknown customer"]);
    assert!(replay_b.status.success(), "{}", replay_b.describe());
    assert!(
        replay_b.stdout.contains("replayed 1 of 1 matched (0 skipped)"),
        "{}",
        replay_b.describe()
    );
    // Replay by offset, the stray record among them: it is skipped, saying why.
    let replay_exact = dlq(
        "replay",
        &stage.path,
        &["--offset", &offset_of("a1"), "--offset", &offset_of("stray")],
    );
    assert!(replay_exact.status.success(), "{}", replay_exact.describe());
    assert!(
        replay_exact.stdout.contains(
            "replayed 1 of 2 matched (1 skipped: not a sluice dead letter: no `sluice.reason` header (not a sluice dead letter?))"
        ),
        "{}",
        replay_exact.describe()
    );
    let inputs = read_all(&brokers, "in");
    let replayed: Vec<&Record> = inputs.iter().filter(|record| record.offset >= 5).collect();
    let replayed_keys: Vec<String> = replayed.iter().map(|record| record.key_text()).collect();
    assert_eq!(replayed_keys, ["b1", "a1"]);
    assert_eq!(replayed[0].value_text(), "value of b1");
    assert_eq!(
        replayed[0].header("mirror.reason").as_deref(),
        Some("unknown customer 42")
    );
    assert_eq!(replayed[0].header("sluice.reason"), None);
    assert_eq!(
        replayed[0].header("sluice.replayed-from"),
        Some(format!("dlq/{}", offset_of("b1").replace(':', "/")))
    );
}

#[test]
fn a_missing_topic_an_unreachable_broker_or_redis_fail_fast_and_clearly() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);

    // An empty dead-letter topic is read to its end at once.
    let empty = StageFile::for_plugin(&brokers, "uppercase", "dlq-bad", TOPICS, "");
    let finished = dlq("inspect", &empty.path, &[]);
    assert!(finished.status.success(), "{}", finished.describe());
    assert!(finished.took < Duration::from_secs(8), "{}", finished.describe());
    assert_eq!(finished.stdout, "");
    assert!(
        finished.stderr.contains("matched 0 of 0 dead letters in dlq"),
        "{}",
        finished.describe()
    );

    let missing = StageFile::for_plugin(&brokers, "uppercase", "dlq-bad", ["in", "out", "no-such-dlq"], "");
    let finished = dlq("inspect", &missing.path, &[]);
    assert!(!finished.status.success(), "{}", finished.describe());
    assert!(finished.took < Duration::from_secs(15), "{}", finished.describe());
    assert!(
        finished
            .stderr
            .contains("topic `no-such-dlq` does not exist on 127.0.0.1:"),
        "{}",
        finished.describe()
    );

    let nowhere = format!("127.0.0.1:{}", free_port());
    let unreachable = StageFile::for_plugin(&nowhere, "uppercase", "dlq-bad", TOPICS, "");
    let finished = dlq("replay", &unreachable.path, &["--timeout", "3"]);
    assert!(!finished.status.success(), "{}", finished.describe());
    assert!(finished.took < Duration::from_secs(15), "{}", finished.describe());
    assert!(
        finished
            .stderr
            .contains("error: cannot reach the brokers: cannot read cluster metadata from"),
        "{}",
        finished.describe()
    );

    // Redis down: no mark can be cleared, so nothing is replayed.
    produce(&brokers, "dlq", &[synthetic_dead_letter("k1", "boom", 0)]);
    let redis_down = StageFile::for_plugin(
        &brokers,
        "uppercase",
        "dlq-bad",
        TOPICS,
        &format!(
            "{}redis_timeout_ms = 500\n",
            header_dedup(&format!("redis://127.0.0.1:{}/", free_port()))
        ),
    );
    let finished = dlq("replay", &redis_down.path, &[]);
    assert!(!finished.status.success(), "{}", finished.describe());
    assert!(finished.took < Duration::from_secs(15), "{}", finished.describe());
    assert!(
        finished.stderr.contains("cannot clear done-marks in redis at")
            && finished.stderr.contains("nothing was replayed"),
        "{}",
        finished.describe()
    );
    assert!(read_all(&brokers, "in").is_empty());

    let embedded = StageFile::for_plugin("embedded", "uppercase", "dlq-bad", TOPICS, "");
    let finished = dlq("inspect", &embedded.path, &[]);
    assert!(!finished.status.success(), "{}", finished.describe());
    assert!(finished.stderr.contains("embedded cluster"), "{}", finished.describe());
}

#[test]
fn with_in_memory_marks_replay_warns_that_it_cannot_clear_them() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);
    produce(&brokers, "dlq", &[synthetic_dead_letter("k1", "boom", 3)]);
    let stage = StageFile::for_plugin(
        &brokers,
        "uppercase",
        "dlq-memory",
        TOPICS,
        "[dedup]\nkey = \"header\"\nheader = \"message-id\"\n",
    );
    let finished = dlq("replay", &stage.path, &[]);
    assert!(finished.status.success(), "{}", finished.describe());
    assert!(
        finished.stderr.contains("replay cannot reach"),
        "{}",
        finished.describe()
    );
    assert!(
        finished
            .stdout
            .contains("replayed 1 of 1 matched (0 skipped); done-marks NOT cleared"),
        "{}",
        finished.describe()
    );
    let inputs = read_all(&brokers, "in");
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].key_text(), "k1");
    assert_eq!(inputs[0].header("message-id").as_deref(), Some("id-k1"));
}

#[test]
fn the_redis_store_forgets_marks_and_counts_those_it_had() {
    let redis = Redis::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let store =
        RedisStore::open(&[redis.url()], false, Duration::from_secs(60), Duration::from_secs(2)).expect("store opens");
    let maker = KeyMaker::new("s", sluice::config::DedupKeyKind::MessageKey, None);
    let keys = |names: &[&'static str]| -> Vec<DedupKey> {
        names
            .iter()
            .map(|name| maker.key_for(&keyed_message(name)).unwrap())
            .collect()
    };
    runtime.block_on(async {
        store.mark_done(&keys(&["a", "b"])).await.unwrap();
        assert_eq!(store.forget(&keys(&["a", "c"])).await.unwrap(), 1);
        assert_eq!(store.done(&keys(&["a", "b", "c"])).await.unwrap(), [false, true, false]);
        assert_eq!(store.forget(&[]).await.unwrap(), 0);
    });
    assert_eq!(redis.keys("sluice:s:done:*"), ["sluice:s:done:key:b"]);
}

/// Produce `batches` of records to partition 0 of `topic`, each group of
/// records in one batch (as the stage's lingering producer writes them),
/// numbering keys from `first`.
fn produce_batches(brokers: &str, topic: &str, first: usize, batches: &[usize]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "100")
        .create()
        .expect("producer");
    let mut n = first;
    for size in batches {
        for _ in 0..*size {
            let key = format!("k{n}");
            producer
                .send(BaseRecord::to(topic).partition(0).key(&key).payload("v"))
                .expect("queued");
            n += 1;
        }
        producer.flush(Duration::from_secs(30)).expect("acknowledged");
    }
}

/// Open a reader on `topic`, write two more records, then read to the end.
fn read_while_writing(brokers: &str, topic: &str, already: usize) -> (Vec<String>, Vec<(i32, EndedBy)>, Duration) {
    // Past the millisecond the records above were written in.
    std::thread::sleep(Duration::from_millis(20));
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    let started = Instant::now();
    let mut reader = TopicReader::open(
        &config,
        topic,
        ReadTimeouts {
            request: Duration::from_secs(10),
            idle: Duration::from_secs(10),
        },
    )
    .expect("reader opens");
    produce_batches(brokers, topic, already, &[1, 1]);
    let keys = reader
        .by_ref()
        .map(|record| String::from_utf8(record.expect("a record").key.unwrap()).unwrap())
        .collect();
    (keys, reader.ended_by(), started.elapsed())
}

#[test]
fn the_topic_reader_stops_where_each_partition_ended_when_it_opened() {
    let expected: Vec<String> = (0..5).map(|n| format!("k{n}")).collect();

    // Exact watermarks: the records written before opening, no more.
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t", 2, 1).expect("mock topic");
    produce_batches(&cluster.bootstrap_servers(), "t", 0, &[1, 3, 1]);
    let (keys, ended_by, took) = read_while_writing(&cluster.bootstrap_servers(), "t", 5);
    assert_eq!(keys, expected);
    // Ended by the first later record, or by end-of-partition when the
    // reader caught up before the later records landed.
    assert!(
        [(0, EndedBy::WrittenAfterStart), (0, EndedBy::EndOfPartition)].contains(&ended_by[0]),
        "{ended_by:?}"
    );
    assert_eq!(ended_by[1], (1, EndedBy::EndOfPartition), "the empty partition");
    assert!(took < Duration::from_secs(8), "no idle timeout: {took:?}");

    // tansu reports the last batch's base offset + 1 as the high watermark
    // (here 2, of 5): the records past it written before opening still count.
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["t"], 2);
    produce_batches(&brokers, "t", 0, &[1, 1, 3]);
    let (keys, ended_by, took) = read_while_writing(&brokers, "t", 5);
    assert_eq!(keys, expected);
    assert_eq!(ended_by[1], (1, EndedBy::EndOfPartition));
    assert!(took < Duration::from_secs(8), "no idle timeout: {took:?}");
}

/// A message known only by its `message-id` header, for the done-marks of
/// stages deduplicating by `header_dedup`.
fn with_message_id(id: &str) -> Message {
    Message {
        headers: vec![Header::new("message-id", id)],
        ..Message::new("in", 0, 0, None)
    }
}

/// Mark these message ids done in `redis`, as `test-stage` with
/// `header_dedup` does once their dead letters are written.
fn mark_done(redis: &Redis, ids: &[String]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let store =
        RedisStore::open(&[redis.url()], false, Duration::from_secs(600), Duration::from_secs(2)).expect("store opens");
    let maker = KeyMaker::new("test-stage", sluice::config::DedupKeyKind::Header, Some("message-id"));
    let keys: Vec<DedupKey> = ids
        .iter()
        .map(|id| maker.key_for(&with_message_id(id)).unwrap())
        .collect();
    runtime.block_on(store.mark_done(&keys)).expect("marked");
}

fn sorted(mut texts: Vec<String>) -> Vec<String> {
    texts.sort();
    texts
}

#[test]
fn a_replay_larger_than_a_chunk_replays_every_record_once() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 2);
    // Seven dead letters over both partitions of the DLQ, all from
    // partition 0 of `in`; each message marked done, as the stage left it.
    let dead_letters: Vec<Input> = (0..7)
        .map(|n| {
            let mut input = synthetic_dead_letter(&format!("k{n}"), "boom", n);
            input.partition = (n % 2) as i32;
            input
        })
        .collect();
    produce(&brokers, "dlq", &dead_letters);
    let ids: Vec<String> = (0..7).map(|n| format!("id-k{n}")).collect();
    mark_done(&redis, &ids);
    assert_eq!(redis.keys("sluice:test-stage:done:header:*").len(), 7);
    let stage = StageFile::for_plugin(&brokers, "uppercase", "dlq-chunks", TOPICS, &header_dedup(&redis.url()));
    let places: HashMap<String, String> = dlq("inspect", &stage.path, &["--json"])
        .json_lines()
        .iter()
        .map(|line| {
            (
                line["key"].as_str().unwrap().to_owned(),
                format!("{}:{}", line["partition"], line["offset"]),
            )
        })
        .collect();
    assert_eq!(places.len(), 7);

    // Three records a chunk: chunks of 3, 3 and 1.
    let dry_run = dlq("replay", &stage.path, &["--dry-run", "--chunk-records", "3"]);
    assert!(dry_run.status.success(), "{}", dry_run.describe());
    assert_eq!(dry_run.stdout.matches("would replay dlq ").count(), 7);
    assert!(
        dry_run.stdout.lines().last().is_some_and(|line| line
            .starts_with("dry run: would replay 7 of 7 matched (0 skipped); would clear up to 7 done-marks in ")),
        "{}",
        dry_run.describe()
    );
    assert!(!dry_run.stderr.contains("so far"), "{}", dry_run.describe());
    assert!(read_all(&brokers, "in").is_empty(), "a dry run produces nothing");
    assert_eq!(redis.keys("sluice:test-stage:done:header:*").len(), 7);

    let replayed = dlq("replay", &stage.path, &["--chunk-records", "3"]);
    assert!(replayed.status.success(), "{}", replayed.describe());
    println!(
        "sluice dlq replay --chunk-records 3:\n{}{}",
        replayed.stdout, replayed.stderr
    );
    let replay_lines: Vec<&str> = replayed
        .stdout
        .lines()
        .filter(|line| line.starts_with("replay dlq "))
        .collect();
    assert_eq!(replay_lines.len(), 7, "{}", replayed.describe());
    assert_eq!(
        replayed.stdout.lines().last(),
        Some("replayed 7 of 7 matched (0 skipped); cleared 7 done-marks"),
        "{}",
        replayed.describe()
    );
    let progress: Vec<&str> = replayed.stderr.lines().filter(|line| line.contains("so far")).collect();
    assert_eq!(
        progress,
        [
            "so far 3 replayed and acknowledged",
            "so far 6 replayed and acknowledged"
        ],
        "{}",
        replayed.describe()
    );
    let inputs = read_all(&brokers, "in");
    assert_eq!(
        sorted(inputs.iter().map(Record::key_text).collect()),
        (0..7).map(|n| format!("k{n}")).collect::<Vec<_>>(),
        "each exactly once"
    );
    for record in &inputs {
        let key = record.key_text();
        assert_eq!(record.partition, 0, "back to the source partition");
        assert_eq!(record.value_text(), format!("value of {key}"));
        assert_eq!(record.header("message-id"), Some(format!("id-{key}")));
        assert_eq!(
            record.header("sluice.replayed-from"),
            Some(format!("dlq/{}", places[&key].replace(':', "/")))
        );
    }
    assert!(redis.keys("sluice:test-stage:done:*").is_empty());

    // One byte a chunk: every record is a chunk of its own, produced as
    // soon as it is read.
    let picked = [places["k0"].as_str(), places["k1"].as_str(), places["k2"].as_str()];
    let one_each = dlq(
        "replay",
        &stage.path,
        &[
            "--chunk-bytes",
            "1",
            "--offset",
            picked[0],
            "--offset",
            picked[1],
            "--offset",
            picked[2],
        ],
    );
    assert!(one_each.status.success(), "{}", one_each.describe());
    let progress: Vec<&str> = one_each.stderr.lines().filter(|line| line.contains("so far")).collect();
    assert_eq!(
        progress,
        [
            "so far 1 replayed and acknowledged",
            "so far 2 replayed and acknowledged",
            "so far 3 replayed and acknowledged"
        ],
        "{}",
        one_each.describe()
    );
    assert_eq!(
        one_each.stdout.lines().last(),
        Some("replayed 3 of 3 matched (0 skipped); cleared 0 done-marks"),
        "{}",
        one_each.describe()
    );
    let again: Vec<String> = read_all(&brokers, "in")
        .iter()
        .filter(|record| record.offset >= 7)
        .map(Record::key_text)
        .collect();
    assert_eq!(sorted(again), ["k0", "k1", "k2"]);
}

/// A dead letter as the stage writes one shrunk to fit the broker's size
/// limit: the omitted parts gone, then `sluice.omitted` and their sizes
/// after the stage's own headers.
fn produce_shrunk(brokers: &str, key: &str, omitted: &[(&str, &str, usize)]) {
    let omits = |part: &str| omitted.iter().any(|(name, _, _)| *name == part);
    let mut headers = Vec::new();
    if !omits("headers") {
        headers.push(("message-id".to_owned(), format!("id-{key}").into_bytes()));
    }
    headers.extend(synthetic_dead_letter(key, "boom", 0).headers.into_iter().skip(1));
    headers.push((
        "traceparent".to_owned(),
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
    ));
    for (_, size_header, size) in omitted {
        headers.push(((*size_header).to_owned(), size.to_string().into_bytes()));
    }
    let parts: Vec<&str> = omitted.iter().map(|(part, _, _)| *part).collect();
    headers.push((DeadLetterHeaders::OMITTED.to_owned(), parts.join(",").into_bytes()));
    produce_raw(
        brokers,
        "dlq",
        &[RawInput {
            partition: 0,
            key: (!omits("key")).then(|| key.as_bytes().to_vec()),
            value: None,
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.into_bytes(), Some(value)))
                .collect(),
        }],
    );
}

#[test]
fn a_shrunk_dead_letter_is_skipped_unless_replaying_what_is_left_is_allowed() {
    let broker = Broker::start();
    let redis = Redis::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);
    produce(&brokers, "dlq", &[synthetic_dead_letter("k1", "boom", 0)]);
    let value = ("value", DeadLetterHeaders::ORIGINAL_VALUE_SIZE, 2_000_000);
    produce_shrunk(&brokers, "k2", &[value]);
    produce_shrunk(
        &brokers,
        "k3",
        &[
            value,
            ("headers", DeadLetterHeaders::ORIGINAL_HEADERS_SIZE, 16),
            ("key", DeadLetterHeaders::ORIGINAL_KEY_SIZE, 2),
        ],
    );
    mark_done(&redis, &["id-k1".to_owned(), "id-k2".to_owned(), "id-k3".to_owned()]);
    let stage = StageFile::for_plugin(&brokers, "uppercase", "dlq-shrunk", TOPICS, &header_dedup(&redis.url()));

    let inspected = dlq("inspect", &stage.path, &["--json"]);
    assert!(inspected.status.success(), "{}", inspected.describe());
    let lines = inspected.json_lines();
    assert_eq!(lines.len(), 3, "{}", inspected.describe());
    assert_eq!(lines[0]["key"], "k1");
    assert_eq!(lines[0]["omitted"], serde_json::json!({}));
    assert_eq!(lines[1]["key"], "k2");
    assert_eq!(lines[1]["value"], Value::Null);
    assert_eq!(header_of(&lines[1], "message-id"), Some("id-k2"));
    assert_eq!(lines[1]["omitted"], serde_json::json!({"value": 2_000_000}));
    assert_eq!(lines[1]["dead_letter"]["reason"], "boom");
    assert_eq!(lines[2]["key"], Value::Null);
    assert_eq!(lines[2]["headers"], serde_json::json!([]));
    assert_eq!(
        lines[2]["omitted"],
        serde_json::json!({"value": 2_000_000, "headers": 16, "key": 2})
    );
    let as_text = dlq("inspect", &stage.path, &[]);
    assert!(as_text.status.success(), "{}", as_text.describe());
    println!("sluice dlq inspect:\n{}{}", as_text.stdout, as_text.stderr);
    assert_eq!(
        as_text
            .stdout
            .matches("\n  value:    left out to fit the broker's size limit (was 2000000 bytes)\n")
            .count(),
        2,
        "{}",
        as_text.describe()
    );
    assert!(
        as_text
            .stdout
            .contains("\n  key:      left out to fit the broker's size limit (was 2 bytes)\n")
            && as_text
                .stdout
                .contains("\n  headers:  left out to fit the broker's size limit (was 16 bytes)\n"),
        "{}",
        as_text.describe()
    );

    let replayed = dlq("replay", &stage.path, &[]);
    assert!(replayed.status.success(), "{}", replayed.describe());
    println!("sluice dlq replay:\n{}{}", replayed.stdout, replayed.stderr);
    assert_eq!(
        replayed.stdout,
        "replay dlq 0:0 -> in/0\n\
         skip dlq 0:1: incomplete: the stage left out its value (2000000 bytes) to fit the broker's size limit; \
         pass --allow-incomplete to replay what is left\n\
         skip dlq 0:2: incomplete: the stage left out its value (2000000 bytes), headers (16 bytes) and key (2 bytes) \
         to fit the broker's size limit; pass --allow-incomplete to replay what is left\n\
         replayed 1 of 3 matched (2 skipped: shrunk to fit the broker's size limit (pass --allow-incomplete to \
         replay what is left)); cleared 1 done-marks\n",
        "{}",
        replayed.describe()
    );
    let inputs = read_all(&brokers, "in");
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].key_text(), "k1");
    assert_eq!(
        sorted(redis.keys("sluice:test-stage:done:header:*")),
        [
            "sluice:test-stage:done:header:id-k2",
            "sluice:test-stage:done:header:id-k3"
        ]
    );

    let allowed = dlq(
        "replay",
        &stage.path,
        &["--allow-incomplete", "--offset", "0:1", "--offset", "0:2"],
    );
    assert!(allowed.status.success(), "{}", allowed.describe());
    println!(
        "sluice dlq replay --allow-incomplete:\n{}{}",
        allowed.stdout, allowed.stderr
    );
    assert_eq!(
        allowed.stdout,
        "replay dlq 0:1 -> in/0 (incomplete: without its value (2000000 bytes))\n\
         replay dlq 0:2 -> in/0 (incomplete: without its value (2000000 bytes), headers (16 bytes) and key (2 bytes); \
         its done-mark is made from what was left out, so it cannot be cleared)\n\
         replayed 2 of 2 matched (0 skipped, 2 incomplete); cleared 1 done-marks\n",
        "{}",
        allowed.describe()
    );
    let inputs = read_all(&brokers, "in");
    assert_eq!(inputs.len(), 3);
    let without_value = &inputs[1];
    assert_eq!(without_value.key_text(), "k2");
    assert_eq!(without_value.value, None);
    assert_eq!(without_value.header("message-id").as_deref(), Some("id-k2"));
    assert_eq!(without_value.header("sluice.replayed-from").as_deref(), Some("dlq/0/1"));
    let bare = &inputs[2];
    assert_eq!((&bare.key, &bare.value), (&None, &None));
    let names: Vec<&str> = bare.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["sluice.replayed-from", "traceparent"]);
    assert_eq!(bare.header("sluice.replayed-from").as_deref(), Some("dlq/0/2"));
    assert_eq!(
        trace_id(&bare.header("traceparent").unwrap()),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the dead letter's trace goes on"
    );
    assert_eq!(
        redis.keys("sluice:test-stage:done:header:*"),
        ["sluice:test-stage:done:header:id-k3"],
        "k3's mark cannot be known from what is left"
    );
}

#[test]
fn a_failed_chunk_stops_the_replay_and_says_how_many_were_acknowledged() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);
    // k3 is larger than the stage's producer may send.
    let dead_letters: Vec<Input> = (0..6)
        .map(|n| {
            let mut input = synthetic_dead_letter(&format!("k{n}"), "boom", n);
            if n == 3 {
                input.value = vec![b'x'; 5000];
            }
            input
        })
        .collect();
    produce(&brokers, "dlq", &dead_letters);
    let stage = StageFile::for_plugin(
        &brokers,
        "uppercase",
        "dlq-failed-chunk",
        TOPICS,
        "[kafka.producer_properties]\n\"message.max.bytes\" = \"2000\"\n",
    );

    let failed = dlq("replay", &stage.path, &["--chunk-records", "2"]);
    println!("sluice dlq replay, failing:\n{}{}", failed.stdout, failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.describe());
    assert_eq!(
        failed.stdout,
        "replay dlq 0:0 -> in/0\nreplay dlq 0:1 -> in/0\nreplay dlq 0:2 -> in/0\nreplay dlq 0:3 -> in/0\n",
        "nothing read past the failed chunk: {}",
        failed.describe()
    );
    let error = failed
        .stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("{}", failed.describe()));
    assert!(
        error.starts_with("error: 1 of 4 replayed records were not acknowledged by the broker: 0:3 (")
            && error.ends_with(
                "); the other 3 were. To retry only the failed ones, pass their --offset. The replay stopped there: \
                 dead letters not yet read from the topic were not looked at"
            ),
        "{}",
        failed.describe()
    );
    let inputs: Vec<String> = read_all(&brokers, "in").iter().map(Record::key_text).collect();
    assert_eq!(inputs, ["k0", "k1", "k2"]);
}

#[test]
fn a_chunk_slower_than_the_idle_timeout_does_not_end_the_reading() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 1);
    let dead_letters: Vec<Input> = (0..3)
        .map(|n| synthetic_dead_letter(&format!("k{n}"), "boom", n))
        .collect();
    produce(&brokers, "dlq", &dead_letters);
    // Each one-record chunk lingers 2.5 s before it is sent, longer than
    // the reader's idle timeout: the wait is the replay's, not the topic's.
    let stage = StageFile::for_plugin(
        &brokers,
        "uppercase",
        "dlq-slow-chunk",
        TOPICS,
        "[kafka.producer_properties]\n\"linger.ms\" = \"2500\"\n",
    );
    let replayed = dlq("replay", &stage.path, &["--chunk-records", "1", "--idle-timeout", "2"]);
    assert!(replayed.status.success(), "{}", replayed.describe());
    assert!(
        replayed.took >= Duration::from_millis(7500),
        "three chunks, each lingering: {}",
        replayed.describe()
    );
    assert_eq!(
        replayed.stdout.lines().last(),
        Some("replayed 3 of 3 matched (0 skipped)"),
        "{}",
        replayed.describe()
    );
    assert!(
        replayed.stderr.contains("matched 3 of 3 dead letters in dlq\n") && !replayed.stderr.contains("idle"),
        "{}",
        replayed.describe()
    );
    let inputs: Vec<String> = read_all(&brokers, "in").iter().map(Record::key_text).collect();
    assert_eq!(inputs, ["k0", "k1", "k2"]);
}
