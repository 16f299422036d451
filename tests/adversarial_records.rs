//! Records that other producers can write but that strain what a stage
//! assumes: header names that are not UTF-8, keys and values that are not
//! text, empty and absent keys and values, thousands of headers, null
//! header values, broken trace context, and records near the producer's
//! `message.max.bytes` (1,000,000 by default) whose dead letter or output
//! would be over it.
//!
//! Each case produces its records with an outside producer that can write
//! any bytes ([`produce_raw`]), then a well-formed record after them on the
//! same partition, and runs the `uppercase` example as a `sluice run` child
//! process. What uppercase does matters: it upper-cases a UTF-8 value and
//! copies key and headers (`replacing_value`), dead-letters a value that is
//! not UTF-8 ("value is not valid UTF-8: ..."), and passes a tombstone on
//! as it is (`from_message`). It never looks at the key.
//!
//! Every case asserts that
//! - every record is finished and ends up exactly once in the output topic
//!   or the dead-letter topic, with exact bytes, matched by input order
//!   (one partition, so outputs keep it) and by `sluice.source.offset`;
//! - the record after the adversarial ones comes out;
//! - delivery failures (`/stats`) stay at or under a small bound, and the
//!   stage's log under a line and byte bound, so nothing is retried or
//!   logged without end;
//! - `/healthz` and `/readyz` answer 200 from the stage's first readiness
//!   to the end.
//!
//! One tansu broker serves the whole file; each case has its own topics
//! (one partition each), group and stage.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::observe::TraceParent;
use sluice_tests::broker::{Broker, free_port};
use sluice_tests::http::{get, try_get, wait_for_status};
use sluice_tests::kafka::{RawInput, Record, create_topics, produce_raw, read_all, read_topic};
use sluice_tests::stage::{StageFile, StageProcess};
use sluice_tests::{file_sha256, rust_plugin};

/// `/readyz` of a ready stage that crosses no `[health]` threshold.
const READY: &str = r#"{"ready":true,"degraded":[]}"#;

/// How long a case's records may take to be finished once the stage is
/// ready. A working stage needs about a second (a dead letter waits for no
/// retry); the retries a delivery failure causes take 1.5 s with the
/// default `[retry]`.
const FINISH_LIMIT: Duration = Duration::from_secs(20);

/// The most lines and bytes a case's stage may log: its startup (a dozen
/// lines, 1.6 KB), a line per dead letter and a few warnings. A record
/// retried without end logs a warning per attempt and passes this within
/// milliseconds.
const LOG_LINES_MAX: usize = 40;
const LOG_BYTES_MAX: usize = 16 * 1024;

/// The producer's default `message.max.bytes`, which the stage keeps.
const MESSAGE_MAX_BYTES: usize = 1_000_000;

/// librdkafka's worst-case framing of one record (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`):
/// a record is refused when this plus key, value and serialized headers is
/// over `message.max.bytes`.
const RECORD_OVERHEAD: usize = 36;

const RAW_NAME_HEADER: &[u8] = b"sluice.raw-header-name";
const NOT_UTF8_REASON: &str = "value is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 0";

/// The broker every case uses, started on first use.
///
/// It is started from a thread that lives as long as the test process:
/// the broker is started with `PR_SET_PDEATHSIG`, which kills it when the
/// *thread* that started it ends, and the test threads end one by one.
fn brokers() -> &'static str {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| {
        let (started, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let broker = Broker::start();
            started
                .send(broker.bootstrap_servers())
                .expect("test waits for the broker");
            loop {
                std::thread::park();
            }
        });
        address.recv().expect("tansu starts")
    })
}

/// What a case's stage did with its records.
struct Finished {
    inputs: Vec<RawInput>,
    outputs: Vec<Record>,
    dead_letters: Vec<Record>,
    stats: Value,
    version: String,
    /// The stage runs until the case's checks are done; its file (and the
    /// directory holding its log and plugin cache) outlives it.
    _process: StageProcess,
    _file: StageFile,
}

/// A normal record to follow a case's adversarial ones: its output proves
/// the partition still flows.
fn later_record(case: &str) -> RawInput {
    RawInput {
        key: Some(format!("{case}-later").into_bytes()),
        value: Some(b"still flowing".to_vec()),
        headers: vec![(b"origin".to_vec(), Some(b"later".to_vec()))],
        ..RawInput::default()
    }
}

/// Run `uppercase` over `inputs` (plus [`later_record`]) on topics of its
/// own; wait until every record is finished, checking health throughout;
/// check the bounds every case shares; return what came out.
///
/// `outputs` is how many of the records (the later one included) must come
/// out on the output topic, the rest on the dead-letter topic;
/// `max_delivery_failures` is the most failed deliveries allowed.
fn run_case(case: &str, mut inputs: Vec<RawInput>, outputs: usize, max_delivery_failures: u64) -> Finished {
    inputs.push(later_record(case));
    let dead_letters = inputs.len() - outputs;
    let brokers = brokers();
    let [input, output, dead_letter] = [format!("{case}-in"), format!("{case}-out"), format!("{case}-dlq")];
    create_topics(brokers, &[input.as_str(), output.as_str(), dead_letter.as_str()], 1);
    produce_raw(brokers, &input, &inputs);

    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let observe = format!("[observe]\nhttp_listen = \"{address}\"\n");
    let topics = [input.as_str(), output.as_str(), dead_letter.as_str()];
    let file = StageFile::for_plugin(brokers, "uppercase", case, topics, &observe);
    let process = file.start("stage.log");
    wait_for_status(&address, "/readyz", 200, Duration::from_secs(30));

    // From readiness on, every scrape must answer 200. The wait ends early
    // once a bound is broken: a stage retrying without end only grows its
    // log (by megabytes a second) the longer it is left.
    let log_path = file.dir.path().join("stage.log");
    let mut unhealthy = Vec::new();
    let mut stats = Value::Null;
    let started = Instant::now();
    loop {
        let log_bytes = std::fs::metadata(&log_path).map_or(0, |metadata| metadata.len() as usize);
        if log_bytes > LOG_BYTES_MAX {
            break;
        }
        for path in ["/healthz", "/readyz", "/stats"] {
            match try_get(&address, path) {
                Ok((200, body)) if path == "/stats" => stats = serde_json::from_str(&body).expect("/stats is JSON"),
                Ok((200, _)) => {}
                Ok((status, body)) => unhealthy.push(format!("{path} answered {status}: {}", body.trim())),
                Err(error) => unhealthy.push(format!("{path} did not answer: {error}")),
            }
        }
        let failures = stats["delivery_failures"].as_u64().unwrap_or(0);
        if stats["processed"] == inputs.len() as u64
            || !unhealthy.is_empty()
            || failures > max_delivery_failures
            || started.elapsed() >= FINISH_LIMIT
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let waited = started.elapsed();
    let outputs_read = read_topic(
        brokers,
        &output,
        outputs,
        Duration::from_secs(5),
        Duration::from_millis(500),
    );
    let dead_letters_read = read_topic(
        brokers,
        &dead_letter,
        dead_letters,
        Duration::from_secs(5),
        Duration::from_millis(500),
    );
    let log = process.log();
    let log_lines = log.lines().count();
    let summary = {
        let tail: Vec<&str> = log.lines().skip(log_lines.saturating_sub(6)).collect();
        format!(
            "{case}: finished {} of {} records in {:.1} s; {} outputs (expected {outputs}), {} dead letters \
             (expected {dead_letters}); delivery_failures {} (at most {max_delivery_failures}), failed_attempts {}, \
             retried {}; log {log_lines} lines (at most {LOG_LINES_MAX}), {} bytes (at most {LOG_BYTES_MAX}); \
             {} failed scrapes {:?}; last log lines:\n{}",
            stats["processed"],
            inputs.len(),
            waited.as_secs_f64(),
            outputs_read.len(),
            dead_letters_read.len(),
            stats["delivery_failures"],
            stats["failed_attempts"],
            stats["retried"],
            log.len(),
            unhealthy.len(),
            &unhealthy[..unhealthy.len().min(3)],
            tail.join("\n")
        )
    };
    println!("{summary}");
    assert_eq!(stats["processed"], inputs.len() as u64, "{summary}");
    assert_eq!(stats["received"], inputs.len() as u64, "{summary}");
    assert_eq!(outputs_read.len(), outputs, "{summary}");
    assert_eq!(dead_letters_read.len(), dead_letters, "{summary}");
    let failures = stats["delivery_failures"]
        .as_u64()
        .expect("delivery_failures in /stats");
    assert!(failures <= max_delivery_failures, "{summary}");
    assert!(log_lines <= LOG_LINES_MAX, "{summary}");
    assert!(log.len() <= LOG_BYTES_MAX, "{summary}");
    assert!(unhealthy.is_empty(), "{summary}");
    assert_eq!(get(&address, "/healthz"), (200, "ok\n".to_owned()), "{case}");
    assert_eq!(get(&address, "/readyz"), (200, READY.to_owned()), "{case}");

    let finished = Finished {
        inputs,
        outputs: outputs_read,
        dead_letters: dead_letters_read,
        stats,
        version: file_sha256(&rust_plugin("uppercase")),
        _process: process,
        _file: file,
    };
    // The record after the others: upper-cased, last on the output topic.
    let later = finished.outputs.last().expect("the later record's output");
    assert_eq!(later.key, Some(format!("{case}-later").into_bytes()), "{case}");
    assert_output(&finished, finished.outputs.len() - 1, finished.inputs.len() - 1);
    finished
}

/// `(name, Some(value))`: a header as it should read on the wire.
fn header(name: &[u8], value: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    (name.to_vec(), Some(value.to_vec()))
}

/// The headers a plugin sees (and uppercase copies) for an input whose
/// header names are UTF-8: the same, with null values empty.
fn as_seen(input: &RawInput) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    input
        .headers
        .iter()
        .map(|(name, value)| {
            assert!(std::str::from_utf8(name).is_ok(), "as_seen is for UTF-8 names");
            (name.clone(), Some(value.clone().unwrap_or_default()))
        })
        .filter(|(name, _)| name != b"traceparent")
        .collect()
}

/// The trace id of a well-formed version-00 `traceparent`; panics if it is
/// not one.
fn trace_id(value: &[u8]) -> String {
    let text = std::str::from_utf8(value).expect("traceparent is text");
    assert_eq!(text.len(), 55, "traceparent {text:?}");
    assert!(text.starts_with("00-"), "traceparent {text:?}");
    TraceParent::parse(value)
        .unwrap_or_else(|| panic!("not a valid traceparent: {text:?}"))
        .trace_id()
}

/// The one `traceparent` of a record sluice wrote; panics unless there is
/// exactly one and it is well-formed.
fn only_traceparent(record: &Record) -> String {
    let values: Vec<&Vec<u8>> = record
        .raw_headers
        .iter()
        .filter(|(name, _)| name == b"traceparent")
        .map(|(_, value)| value.as_ref().expect("a traceparent value"))
        .collect();
    assert_eq!(values.len(), 1, "one traceparent on {:?}", record.key);
    trace_id(values[0])
}

/// Output `index` is uppercase's output for input `input`, with the input's
/// headers as the plugin saw them (UTF-8 names).
fn assert_output(finished: &Finished, index: usize, input: usize) {
    let expected = as_seen(&finished.inputs[input]);
    assert_output_with_headers(finished, index, input, &expected);
}

/// Output `index` is uppercase's output for input `input`: the same key,
/// the value upper-cased (a tombstone stays one), `headers` as copied by the
/// plugin, then `sluice.plugin.version` and one well-formed `traceparent`.
/// Returns the traceparent's trace id.
fn assert_output_with_headers(
    finished: &Finished,
    index: usize,
    input: usize,
    headers: &[(Vec<u8>, Option<Vec<u8>>)],
) -> String {
    let record = &finished.outputs[index];
    let input = &finished.inputs[input];
    assert_eq!(record.key, input.key, "output {index}: key byte for byte");
    let upper = input.value.as_ref().map(|value| {
        std::str::from_utf8(value)
            .expect("a UTF-8 input value")
            .to_uppercase()
            .into_bytes()
    });
    assert_eq!(record.value, upper, "output {index}: value");
    let mut expected = headers.to_vec();
    expected.push(header(b"sluice.plugin.version", finished.version.as_bytes()));
    let (last, copied) = record.raw_headers.split_last().expect("output headers");
    assert_eq!(copied, expected.as_slice(), "output {index}: headers");
    assert_eq!(last.0, b"traceparent", "output {index}: traceparent last");
    only_traceparent(record)
}

/// Dead letter `index` is the record of input `input` at `offset`, with the
/// key byte for byte, its original `headers` first (traceparent aside) and
/// the `sluice.*` headers saying why; returns it for checks of its value.
fn assert_dead_letter<'a>(
    finished: &'a Finished,
    index: usize,
    input: usize,
    offset: i64,
    headers: &[(Vec<u8>, Option<Vec<u8>>)],
) -> &'a Record {
    let record = &finished.dead_letters[index];
    let input = &finished.inputs[input];
    assert_eq!(record.key, input.key, "dead letter {index}: key byte for byte");
    assert_eq!(
        record.raw_headers.get(..headers.len()),
        Some(headers),
        "dead letter {index}: original headers first"
    );
    assert_eq!(record.header("sluice.source.offset"), Some(offset.to_string()));
    assert_eq!(record.header("sluice.source.partition"), Some("0".to_owned()));
    assert_eq!(record.header("sluice.stage"), Some("test-stage".to_owned()));
    assert_eq!(record.header("sluice.plugin.name"), Some("uppercase".to_owned()));
    assert_eq!(record.header("sluice.plugin.version"), Some(finished.version.clone()));
    only_traceparent(record);
    record
}

/// The dead letter of a record too big to be copied whole: no value, and
/// headers saying it was left out and how big it was; nothing else left out.
fn assert_value_omitted(record: &Record, original_size: usize) {
    assert_eq!(record.value, None, "the value is left out");
    assert_eq!(record.header("sluice.omitted"), Some("value".to_owned()));
    assert_eq!(
        record.header("sluice.original-value-size"),
        Some(original_size.to_string())
    );
    assert_eq!(record.header("sluice.original-headers-size"), None);
    assert_eq!(record.header("sluice.original-key-size"), None);
}

#[test]
fn a_header_name_that_is_not_utf8_goes_on_lossily_with_its_raw_bytes() {
    let inputs = vec![
        RawInput {
            key: Some(b"raw-name".to_vec()),
            value: Some(b"hello".to_vec()),
            headers: vec![
                header(b"before", b"1"),
                header(b"x\xff", b"v"),
                (b"\xfe\xffcaf\xc3\xa9\xc3".to_vec(), None),
                header(b"after", b"2"),
            ],
            ..RawInput::default()
        },
        // Dead-lettered (not UTF-8): its dead letter keeps both forms too.
        RawInput {
            key: Some(b"raw-name-dead".to_vec()),
            value: Some(b"\xff".to_vec()),
            headers: vec![header(b"y\xc0", b"w")],
            ..RawInput::default()
        },
    ];
    let finished = run_case("raw-header-name", inputs, 2, 0);

    // The input topic holds the names as written: the producer and the
    // reader pass raw bytes through.
    let written = read_all(brokers(), "raw-header-name-in");
    assert_eq!(written[0].raw_headers[1].0, b"x\xff");
    assert_eq!(written[0].raw_headers[2], (b"\xfe\xffcaf\xc3\xa9\xc3".to_vec(), None));

    assert_output_with_headers(
        &finished,
        0,
        0,
        &[
            header(b"before", b"1"),
            header("x\u{fffd}".as_bytes(), b"v"),
            header(RAW_NAME_HEADER, b"x\xff"),
            header("\u{fffd}\u{fffd}caf\u{e9}\u{fffd}".as_bytes(), b""),
            header(RAW_NAME_HEADER, b"\xfe\xffcaf\xc3\xa9\xc3"),
            header(b"after", b"2"),
        ],
    );
    let dead = assert_dead_letter(
        &finished,
        0,
        1,
        1,
        &[header("y\u{fffd}".as_bytes(), b"w"), header(RAW_NAME_HEADER, b"y\xc0")],
    );
    assert_eq!(dead.value.as_deref(), Some(&b"\xff"[..]));
    assert_eq!(dead.header("sluice.reason"), Some(NOT_UTF8_REASON.to_owned()));
}

#[test]
fn keys_and_values_that_are_not_utf8_keep_their_exact_bytes() {
    let inputs = vec![
        // Neither is text: dead-lettered.
        RawInput {
            key: Some(b"\xff\x00key".to_vec()),
            value: Some(b"\xfe\xffvalue\x00".to_vec()),
            headers: vec![header(b"h", b"\x00\xff")],
            ..RawInput::default()
        },
        // Only the key is not text: uppercase ignores keys.
        RawInput {
            key: Some(b"\xc3(".to_vec()),
            value: Some(b"text".to_vec()),
            ..RawInput::default()
        },
        // A value cut in the middle of a character: dead-lettered.
        RawInput {
            key: Some(b"cut".to_vec()),
            value: Some("caf\u{e9}".as_bytes()[..4].to_vec()),
            ..RawInput::default()
        },
    ];
    let finished = run_case("not-utf8", inputs, 2, 0);

    assert_output(&finished, 0, 1);
    let first = assert_dead_letter(&finished, 0, 0, 0, &[header(b"h", b"\x00\xff")]);
    assert_eq!(first.value.as_deref(), Some(&b"\xfe\xffvalue\x00"[..]));
    assert_eq!(first.header("sluice.reason"), Some(NOT_UTF8_REASON.to_owned()));
    let cut = assert_dead_letter(&finished, 1, 2, 2, &[]);
    assert_eq!(cut.value.as_deref(), Some(&b"caf\xc3"[..]));
    assert_eq!(
        cut.header("sluice.reason"),
        Some("value is not valid UTF-8: incomplete utf-8 byte sequence from index 3".to_owned())
    );
}

#[test]
fn empty_and_absent_keys_and_values_pass_as_they_are() {
    let inputs = vec![
        RawInput {
            key: Some(Vec::new()),
            value: Some(b"empty key".to_vec()),
            ..RawInput::default()
        },
        RawInput {
            key: None,
            value: Some(b"no key".to_vec()),
            ..RawInput::default()
        },
        RawInput {
            key: Some(b"empty value".to_vec()),
            value: Some(Vec::new()),
            ..RawInput::default()
        },
        RawInput {
            key: Some(b"tombstone".to_vec()),
            value: None,
            headers: vec![header(b"h", b"kept")],
            ..RawInput::default()
        },
        RawInput::default(),
    ];
    let finished = run_case("empty-absent", inputs, 6, 0);

    for index in 0..5 {
        assert_output(&finished, index, index);
    }
    assert_eq!(finished.outputs[0].key, Some(Vec::new()), "an empty key is not absent");
    assert_eq!(finished.outputs[1].key, None, "an absent key stays absent");
    assert_eq!(
        finished.outputs[2].value,
        Some(Vec::new()),
        "an empty value is not a tombstone"
    );
    assert_eq!(finished.outputs[3].value, None, "a tombstone stays one");
    assert_eq!(
        (finished.outputs[4].key.as_ref(), finished.outputs[4].value.as_ref()),
        (None, None)
    );
}

/// A value the source producer could write but whose dead letter, with the
/// `sluice.*` headers added (about 500 bytes), is over `message.max.bytes`.
#[test]
fn a_dead_letter_too_big_to_produce_is_written_without_its_value() {
    const VALUE_SIZE: usize = 999_601;
    let key = b"big-not-utf8".to_vec();
    assert!(
        RECORD_OVERHEAD + key.len() + VALUE_SIZE <= MESSAGE_MAX_BYTES,
        "the input fits"
    );
    let inputs = vec![RawInput {
        key: Some(key),
        value: Some(vec![0xff; VALUE_SIZE]),
        ..RawInput::default()
    }];
    let finished = run_case("dead-letter-too-big", inputs, 1, 5);

    let dead = assert_dead_letter(&finished, 0, 0, 0, &[]);
    assert_value_omitted(dead, VALUE_SIZE);
    assert_eq!(dead.header("sluice.reason"), Some(NOT_UTF8_REASON.to_owned()));
    assert_eq!(finished.stats["dead_lettered"], 1);
}

#[test]
fn two_thousand_headers_are_all_carried_in_order() {
    let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..2_000)
        .map(|n| header(format!("h-{n:04}").as_bytes(), format!("value {n}").as_bytes()))
        .collect();
    let inputs = vec![
        RawInput {
            key: Some(b"many".to_vec()),
            value: Some(b"many headers".to_vec()),
            headers: headers.clone(),
            ..RawInput::default()
        },
        RawInput {
            key: Some(b"many-dead".to_vec()),
            value: Some(b"\xff".to_vec()),
            headers: headers.clone(),
            ..RawInput::default()
        },
    ];
    let finished = run_case("many-headers", inputs, 2, 0);

    assert_output(&finished, 0, 0);
    assert_eq!(finished.outputs[0].raw_headers.len(), 2_002);
    assert_dead_letter(&finished, 0, 1, 1, &headers);
}

#[test]
fn empty_and_null_header_values_read_as_empty() {
    let headers = vec![
        header(b"empty", b""),
        (b"null".to_vec(), None),
        header(b"set", b"x"),
        (b"null".to_vec(), None),
    ];
    let seen = vec![
        header(b"empty", b""),
        header(b"null", b""),
        header(b"set", b"x"),
        header(b"null", b""),
    ];
    let inputs = vec![
        RawInput {
            key: Some(b"header-values".to_vec()),
            value: Some(b"v".to_vec()),
            headers: headers.clone(),
            ..RawInput::default()
        },
        RawInput {
            key: Some(b"header-values-dead".to_vec()),
            value: Some(b"\xff".to_vec()),
            headers,
            ..RawInput::default()
        },
    ];
    let finished = run_case("header-values", inputs, 2, 0);

    assert_output_with_headers(&finished, 0, 0, &seen);
    assert_dead_letter(&finished, 0, 1, 1, &seen);
}

#[test]
fn malformed_or_oversized_trace_context_is_replaced_by_a_valid_one() {
    let valid_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let valid = format!("00-{valid_trace}-00f067aa0ba902b7-01");
    let oversized = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(10 * 1024));
    let upper_case = valid.to_uppercase();
    fn traced(key: &str, value: &[u8], traceparent: &[u8]) -> RawInput {
        RawInput {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_vec()),
            headers: vec![header(b"traceparent", traceparent), header(b"other", b"kept")],
            ..RawInput::default()
        }
    }
    let inputs = vec![
        traced("garbage", b"a", b"garbage"),
        traced("oversized", b"b", oversized.as_bytes()),
        traced("upper-case", b"c", upper_case.as_bytes()),
        traced("not-text", b"d", b"\xff\xfe"),
        traced("valid", b"e", valid.as_bytes()),
        traced("oversized-dead", b"\xff", oversized.as_bytes()),
    ];
    let finished = run_case("traceparent", inputs, 6, 0);

    let kept = [header(b"other", b"kept")];
    let mut new_traces = Vec::new();
    for index in 0..4 {
        let trace = assert_output_with_headers(&finished, index, index, &kept);
        assert_ne!(trace, valid_trace, "output {index}: a new trace");
        new_traces.push(trace);
    }
    new_traces.sort();
    new_traces.dedup();
    assert_eq!(new_traces.len(), 4, "each malformed one starts its own trace");
    let trace = assert_output_with_headers(&finished, 4, 4, &kept);
    assert_eq!(trace, valid_trace, "a valid traceparent is continued");
    let dead = assert_dead_letter(&finished, 0, 5, 5, &kept);
    assert!(
        dead.raw_headers
            .iter()
            .all(|(_, value)| value.as_ref().is_none_or(|value| value.len() < 1024)),
        "the oversized traceparent is not copied"
    );
}

/// A value that fits as input but whose output does not: uppercase keeps
/// its size and adds `sluice.plugin.version` and `traceparent` (156 bytes
/// serialized). Its dead letter, with the `sluice.*` headers, is over too.
#[test]
fn an_output_too_big_to_produce_dead_letters_its_message() {
    const VALUE_SIZE: usize = 999_900;
    const OUTPUT_HEADERS_SIZE: usize = (1 + 21 + 2 + 64) + (1 + 11 + 1 + 55);
    let key = b"big-output".to_vec();
    assert!(
        RECORD_OVERHEAD + key.len() + VALUE_SIZE <= MESSAGE_MAX_BYTES,
        "the input fits"
    );
    assert!(
        RECORD_OVERHEAD + key.len() + VALUE_SIZE + OUTPUT_HEADERS_SIZE > MESSAGE_MAX_BYTES,
        "the output does not"
    );
    let value: Vec<u8> = b"abcdefghij".iter().copied().cycle().take(VALUE_SIZE).collect();
    let inputs = vec![RawInput {
        key: Some(key),
        value: Some(value),
        ..RawInput::default()
    }];
    let finished = run_case("output-too-big", inputs, 1, 5);

    let dead = assert_dead_letter(&finished, 0, 0, 0, &[]);
    assert_value_omitted(dead, VALUE_SIZE);
    let reason = dead.header("sluice.reason").expect("a reason");
    assert!(
        reason.contains("too large"),
        "the reason names the delivery error: {reason}"
    );
    assert_eq!(finished.stats["dead_lettered"], 1);
}
