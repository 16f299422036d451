//! The contract round-trips through a real guest: every verdict variant,
//! every shape of output, and bytes exactly as given. The `mirror` test
//! plugin returns whatever verdict the message's control headers ask for
//! and echoes what it received.

use std::collections::BTreeMap;

use sluice::plugin::{Header, Message, Output, PluginSettings, RetryInfo, Verdict};
use sluice_tests::{TestRuntime, rust_plugin, text_message};

fn mirror() -> (TestRuntime, sluice::plugin::Plugin) {
    let test = TestRuntime::new();
    let plugin = test
        .runtime
        .load_file(&rust_plugin("mirror"), PluginSettings::default())
        .expect("mirror loads");
    (test, plugin)
}

fn with_headers(mut message: Message, headers: &[(&str, &str)]) -> Message {
    message
        .headers
        .extend(headers.iter().map(|(name, value)| Header::new(*name, *value)));
    message
}

/// The headers mirror appends to say what it saw.
fn seen(message: &Message) -> Vec<Header> {
    let timestamp = message.timestamp_ms.map_or("none".to_owned(), |ms| ms.to_string());
    vec![
        Header::new("seen.topic", message.topic.clone()),
        Header::new("seen.partition", message.partition.to_string()),
        Header::new("seen.offset", message.offset.to_string()),
        Header::new("seen.timestamp-ms", timestamp),
        Header::new("seen.attempt", message.attempt.to_string()),
    ]
}

#[test]
fn success_echoes_every_message_field_byte_exact() {
    let (_test, plugin) = mirror();
    let mut worker = plugin.worker();
    let binary_key = vec![0x00, 0xff, 0xfe, 0x80];
    let binary_value: Vec<u8> = (0..=255).collect();
    let message = Message {
        topic: "orders.v2".into(),
        partition: 7,
        offset: 9_007_199_254_740_993,
        timestamp_ms: Some(1_700_000_000_123),
        key: Some(binary_key.clone()),
        value: Some(binary_value.clone()),
        headers: vec![
            Header::new("dup", vec![0xc3, 0x28]),
            Header::new("empty", Vec::new()),
            Header::new("dup", "second"),
        ],
        attempt: 3,
    };
    let mut expected_headers = message.headers.clone();
    expected_headers.extend(seen(&message));

    let verdict = worker.handle_blocking(&message).expect("mirror succeeds");

    assert_eq!(
        verdict,
        Verdict::Success(vec![Output {
            topic: None,
            key: Some(binary_key),
            value: Some(binary_value),
            headers: expected_headers,
        }])
    );
}

#[test]
fn tombstones_and_missing_keys_and_timestamps_stay_absent() {
    let (_test, plugin) = mirror();
    let mut worker = plugin.worker();
    let tombstone = Message::new("input", 0, 5, None);
    let empty_value = Message::new("input", 0, 6, Some(Vec::new()));

    let Verdict::Success(tombstone_outputs) = worker.handle_blocking(&tombstone).unwrap() else {
        panic!("expected success")
    };
    let Verdict::Success(empty_outputs) = worker.handle_blocking(&empty_value).unwrap() else {
        panic!("expected success")
    };

    assert_eq!(tombstone_outputs[0].value, None, "a tombstone stays a tombstone");
    assert_eq!(tombstone_outputs[0].key, None);
    assert_eq!(
        empty_outputs[0].value,
        Some(Vec::new()),
        "an empty value is not a tombstone"
    );
    assert!(
        tombstone_outputs[0]
            .headers
            .contains(&Header::new("seen.timestamp-ms", "none"))
    );
}

#[test]
fn outputs_carry_topic_when_given_and_can_be_many_or_none() {
    let (_test, plugin) = mirror();
    let mut worker = plugin.worker();
    let routed = with_headers(
        text_message(1, "x"),
        &[("mirror.topic", "elsewhere"), ("mirror.outputs", "3")],
    );
    let filtered = with_headers(text_message(2, "y"), &[("mirror.outputs", "0")]);

    let Verdict::Success(outputs) = worker.handle_blocking(&routed).unwrap() else {
        panic!("expected success")
    };
    assert_eq!(outputs.len(), 3);
    assert!(
        outputs
            .iter()
            .all(|output| output.topic.as_deref() == Some("elsewhere"))
    );
    assert!(
        outputs
            .iter()
            .all(|output| output.value.as_deref() == Some(b"x".as_slice()))
    );

    assert_eq!(worker.handle_blocking(&filtered).unwrap(), Verdict::Success(Vec::new()));
}

#[test]
fn retry_carries_reason_and_optional_delay() {
    let (_test, plugin) = mirror();
    let mut worker = plugin.worker();
    let with_delay = with_headers(
        text_message(1, "a"),
        &[
            ("mirror.verdict", "retry"),
            ("mirror.reason", "db busy"),
            ("mirror.delay-ms", "250"),
        ],
    );
    let without_delay = with_headers(
        text_message(2, "b"),
        &[("mirror.verdict", "retry"), ("mirror.reason", "later")],
    );

    let delayed = worker.handle_blocking(&with_delay).unwrap();
    assert_eq!(
        delayed,
        Verdict::Retry(RetryInfo {
            reason: "db busy".into(),
            delay_ms: Some(250)
        })
    );
    let Verdict::Retry(info) = delayed else { unreachable!() };
    assert_eq!(info.requested_delay(), Some(std::time::Duration::from_millis(250)));
    assert_eq!(
        worker.handle_blocking(&without_delay).unwrap(),
        Verdict::Retry(RetryInfo {
            reason: "later".into(),
            delay_ms: None
        })
    );
}

#[test]
fn dead_letter_carries_its_reason() {
    let (_test, plugin) = mirror();
    let mut worker = plugin.worker();
    let message = with_headers(
        text_message(1, "a"),
        &[
            ("mirror.verdict", "dead-letter"),
            ("mirror.reason", "schema v1 is retired"),
        ],
    );

    let verdict = worker.handle_blocking(&message).unwrap();

    assert_eq!(verdict, Verdict::DeadLetter("schema v1 is retired".into()));
    assert_eq!(verdict.kind(), "dead-letter");
}

#[test]
fn handle_batch_returns_one_verdict_per_message_in_order_matching_handle() {
    let (_test, plugin) = mirror();
    let messages: Vec<Message> = (0..50)
        .map(|offset| {
            let message = text_message(offset, &format!("value-{offset}"));
            match offset % 4 {
                0 => message,
                1 => with_headers(message, &[("mirror.verdict", "retry"), ("mirror.reason", "busy")]),
                2 => with_headers(message, &[("mirror.verdict", "dead-letter"), ("mirror.reason", "bad")]),
                _ => with_headers(message, &[("mirror.outputs", "2"), ("mirror.topic", "t")]),
            }
        })
        .collect();

    let batched = plugin
        .worker()
        .handle_batch_blocking(&messages)
        .expect("batch succeeds");
    let mut single = plugin.worker();
    let one_by_one: Vec<Verdict> = messages
        .iter()
        .map(|message| single.handle_blocking(message).unwrap())
        .collect();

    assert_eq!(batched.len(), messages.len());
    assert_eq!(batched, one_by_one);
    for (offset, verdict) in batched.iter().enumerate() {
        let expected_kind = ["success", "retry", "dead-letter", "success"][offset % 4];
        assert_eq!(verdict.kind(), expected_kind, "verdict {offset} is out of order");
    }
    assert_eq!(plugin.worker().handle_batch_blocking(&[]).unwrap(), Vec::new());
}

#[test]
fn one_instance_serves_many_calls() {
    let (_test, plugin) = mirror();
    let mut worker = plugin.worker();
    for offset in 0..100 {
        worker.handle_blocking(&text_message(offset, "v")).unwrap();
    }
    worker
        .handle_batch_blocking(&[text_message(100, "v"), text_message(101, "v")])
        .unwrap();
    assert_eq!(worker.instances_created(), 1);
}

#[test]
fn plugin_config_reaches_the_guest() {
    let test = TestRuntime::new();
    let settings = PluginSettings {
        config: BTreeMap::from([
            ("add.env".to_owned(), "prod".to_owned()),
            ("add.version".to_owned(), "3".to_owned()),
        ]),
        ..PluginSettings::default()
    };
    let plugin = test.runtime.load_file(&rust_plugin("json-enrich"), settings).unwrap();

    let verdict = plugin
        .worker()
        .handle_blocking(&text_message(0, r#"{"user":"ada","route":"vip"}"#))
        .unwrap();

    let Verdict::Success(outputs) = verdict else {
        panic!("expected success, got {verdict:?}")
    };
    assert_eq!(outputs[0].topic.as_deref(), Some("vip"));
    assert_eq!(
        String::from_utf8(outputs[0].value.clone().unwrap()).unwrap(),
        r#"{"user":"ada","route":"vip","env":"prod","version":3}"#
    );
}

#[test]
fn the_attempt_number_reaches_the_guest() {
    let test = TestRuntime::new();
    let settings = PluginSettings {
        config: BTreeMap::from([
            ("retries".to_owned(), "2".to_owned()),
            ("delay-ms".to_owned(), "50".to_owned()),
        ]),
        ..PluginSettings::default()
    };
    let plugin = test.runtime.load_file(&rust_plugin("retry-n-times"), settings).unwrap();
    let mut worker = plugin.worker();
    let verdict_on_attempt = |worker: &mut sluice::plugin::PluginWorker, attempt| {
        let mut message = text_message(0, "payload");
        message.attempt = attempt;
        worker.handle_blocking(&message).unwrap()
    };

    assert_eq!(
        verdict_on_attempt(&mut worker, 1),
        Verdict::Retry(RetryInfo {
            reason: "attempt 1 of 3 is set up to fail".into(),
            delay_ms: Some(50)
        })
    );
    assert_eq!(verdict_on_attempt(&mut worker, 2).kind(), "retry");
    assert_eq!(
        verdict_on_attempt(&mut worker, 3),
        Verdict::Success(vec![Output {
            topic: None,
            key: None,
            value: Some(b"payload".to_vec()),
            headers: Vec::new(),
        }])
    );
}

/// Async code gets the same answers by awaiting a call, and a blocking
/// call made from inside an async runtime (a library user building a
/// stage in async code) waits on a thread of its own instead of panicking.
#[test]
fn calls_work_awaited_and_blocking_from_inside_an_async_runtime() {
    let (_test, plugin) = mirror();
    let message = text_message(7, "inside");
    let expected = plugin.worker().handle_blocking(&message).expect("blocking call");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let (awaited, blocking) = runtime.block_on(async {
        let awaited = plugin.worker().handle(&message).await.expect("awaited call");
        let blocking = plugin
            .worker()
            .handle_blocking(&message)
            .expect("blocking call in async code");
        (awaited, blocking)
    });
    assert_eq!(awaited, expected);
    assert_eq!(blocking, expected);
}
