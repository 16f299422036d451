//! What an operator sees of a running stage: the status endpoints scraped
//! during a run, consumer lag on the mock cluster, and a trace followed
//! across two chained stages.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use serde_json::Value;
use sluice_tests::broker::{Broker, free_port};
use sluice_tests::http::{get, stats_when, wait_for_status};
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_topic};
use sluice_tests::stage::StageFile;
use sluice_tests::{file_sha256, rust_plugin};

/// `/readyz` of a ready stage that crosses no `[health]` threshold.
const READY: &str = r#"{"ready":true,"degraded":[]}"#;

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);

fn observe_on(port: u16) -> String {
    format!("[observe]\nhttp_listen = \"127.0.0.1:{port}\"\n")
}

/// The value of the metric line starting with `series` (name and labels).
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line[series.len()..].trim().parse().ok())
}

#[test]
fn status_endpoints_report_what_the_stage_did() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 2);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let stage = StageFile::for_plugin(&brokers, "mirror", "observe", ["in", "out", "dlq"], &observe_on(port));
    let process = stage.start("stage.log");
    wait_for_status(&address, "/healthz", 200, Duration::from_secs(30));

    // 300 messages; every third asks to be dead-lettered.
    let inputs: Vec<Input> = (0..300)
        .map(|n| {
            let input = Input::text(n % 2, &format!("key-{n}"), &format!("value {n}"));
            if n % 3 == 0 {
                input.with_header("mirror.verdict", "dead-letter")
            } else {
                input
            }
        })
        .collect();
    produce(&brokers, "in", &inputs);
    assert_eq!(read_topic(&brokers, "out", 200, LIMIT, Duration::ZERO).len(), 200);
    let stats = stats_when(&address, LIMIT, |stats| stats["processed"] == 300);
    println!("/stats after 300 messages:\n{stats:#}");

    assert_eq!(stats["stage"], "test-stage");
    assert_eq!(stats["received"], 300, "{stats:#}");
    assert_eq!(stats["outputs"], 200, "{stats:#}");
    assert_eq!(stats["dead_lettered"], 100, "{stats:#}");
    assert_eq!(stats["retried"], 0, "{stats:#}");
    assert_eq!(stats["plugin"]["name"], "mirror");
    assert_eq!(stats["plugin"]["version"], file_sha256(&rust_plugin("mirror")));
    assert_eq!(stats["assigned_partitions"], 2);
    assert!(stats["init_attempts"].as_u64().is_some());
    let latency = &stats["plugin_latency"];
    assert!(latency["count"].as_u64().unwrap() > 0, "{stats:#}");
    assert!(latency["p50_ms"].as_f64().unwrap() <= latency["p99_ms"].as_f64().unwrap());
    assert!(stats["processed_per_second"].as_f64().unwrap() > 0.0);

    assert_eq!(get(&address, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(&address, "/readyz"), (200, READY.to_owned()));
    let (status, metrics) = get(&address, "/metrics");
    assert_eq!(status, 200);
    let value = |series: &str| metric(&metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"));
    assert_eq!(value("sluice_messages_received_total"), 300.0);
    assert_eq!(value("sluice_messages_finished_total{outcome=\"output\"}"), 200.0);
    assert_eq!(
        value("sluice_messages_finished_total{outcome=\"dead_lettered\"}"),
        100.0
    );
    assert_eq!(value("sluice_output_records_total"), 200.0);
    assert!(value("sluice_plugin_call_seconds_count") > 0.0);
    assert!(metrics.contains("sluice_plugin_call_seconds_bucket{le=\"0.001\"}"));
    assert!(metrics.contains("sluice_end_to_end_seconds_bucket"));
    drop(process);
}

#[test]
fn consumer_lag_per_partition_on_the_mock_cluster() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in ["in", "out", "dlq"] {
        cluster.create_topic(topic, 2, 1).expect("mock topic");
    }
    let brokers = cluster.bootstrap_servers();
    // Partition 0: the first message keeps asking for a retry, so nothing
    // there is committed; partition 1 flows.
    let mut inputs: Vec<Input> = (0..20)
        .map(|n| {
            Input::text(0, &format!("stuck-{n}"), "x")
                .with_header("mirror.verdict", "retry")
                .with_header("mirror.delay-ms", "60000")
        })
        .collect();
    inputs.extend((0..30).map(|n| Input::text(1, &format!("key-{n}"), "x")));
    produce(&brokers, "in", &inputs);

    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let extra = format!(
        "[retry]\nmax_attempts = 100\nmax_backoff_ms = 60000\n\n{}",
        observe_on(port)
    );
    let file = StageFile::for_plugin(&brokers, "mirror", "lag", ["in", "out", "dlq"], &extra);
    let stage = file.run_in_process(&brokers, None);

    wait_for_status(&address, "/healthz", 200, Duration::from_secs(30));
    // librdkafka reports offsets every 5 s.
    let stats = stats_when(&address, Duration::from_secs(60), |stats| {
        stats["partitions"]["in/0"]["lag"] == 20 && stats["partitions"]["in/1"]["lag"] == 0
    });
    assert_eq!(stats["partitions"]["in/1"]["committed"], 30, "{stats:#}");
    assert_eq!(stats["partitions"]["in/0"]["committed"], Value::Null, "{stats:#}");
    assert_eq!(stats["partitions"]["in/0"]["high_watermark"], 20, "{stats:#}");
    let (_, metrics) = get(&address, "/metrics");
    assert_eq!(
        metric(&metrics, "sluice_consumer_lag{topic=\"in\",partition=\"0\"}"),
        Some(20.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sluice_consumer_lag{topic=\"in\",partition=\"1\"}"),
        Some(0.0)
    );
    // The stuck partition's failed tries are its errors; a retry verdict
    // is not a failure.
    assert_eq!(stats["partitions"]["in/0"]["errors"], 0);
    assert!(stats["retried"].as_u64().unwrap() >= 1);
    assert_eq!(
        get(&address, "/readyz"),
        (200, READY.to_owned()),
        "a retrying partition is still a ready stage"
    );

    stage.stop();
}

fn trace_header(record: &Record) -> (String, String) {
    let header = record.header("traceparent").expect("a traceparent header");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[test]
fn a_trace_is_followed_across_two_chained_stages() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "mid", "out", "dlq-a", "dlq-b"], 2);
    let first = StageFile::for_plugin(&brokers, "uppercase", "chain-a", ["in", "mid", "dlq-a"], "");
    let second = StageFile::for_plugin(&brokers, "uppercase", "chain-b", ["mid", "out", "dlq-b"], "");

    // 40 traced messages, 10 traced ones that are not UTF-8 (dead-lettered
    // by the first stage), 10 untraced.
    let trace_of = |n: usize| format!("{n:032x}");
    let parent_span = "00f067aa0ba902b7";
    let mut inputs = Vec::new();
    for n in 0..60 {
        let mut input = Input::text((n % 2) as i32, &format!("key-{n}"), &format!("value {n}"));
        if (40..50).contains(&n) {
            input.value = vec![0xff, 0xfe, n as u8];
        }
        if n < 50 {
            input = input.with_header("traceparent", &format!("00-{}-{parent_span}-01", trace_of(n + 1)));
        }
        inputs.push(input);
    }
    produce(&brokers, "in", &inputs);
    let _first = first.start("first.log");
    let _second = second.start("second.log");

    let outputs = read_topic(&brokers, "out", 50, LIMIT, SETTLE);
    let middle = read_topic(&brokers, "mid", 50, LIMIT, Duration::ZERO);
    let dead = read_topic(&brokers, "dlq-a", 10, LIMIT, Duration::ZERO);
    assert_eq!(outputs.len(), 50);
    assert_eq!(dead.len(), 10);
    let middle: HashMap<String, &Record> = middle.iter().map(|record| (record.key_text(), record)).collect();

    for output in &outputs {
        let n: usize = output.key_text()["key-".len()..].parse().expect("key-<n>");
        let (trace, span) = trace_header(output);
        let (middle_trace, middle_span) = trace_header(middle[&output.key_text()]);
        assert_eq!(trace, middle_trace, "message {n}: one trace across both stages");
        assert_ne!(span, middle_span, "message {n}: each stage is its own hop");
        if n < 40 {
            assert_eq!(trace, trace_of(n + 1), "message {n} keeps the input's trace");
            assert_ne!(middle_span, parent_span);
            assert!(output.header("traceparent").unwrap().ends_with("-01"), "flags carried");
        } else {
            assert_ne!(trace, "0".repeat(32), "untraced message {n} starts a trace");
        }
        assert_eq!(
            output.headers.iter().filter(|(name, _)| name == "traceparent").count(),
            1,
            "exactly one traceparent on message {n}"
        );
    }
    for record in &dead {
        let n: usize = record.key_text()["key-".len()..].parse().expect("key-<n>");
        let (trace, span) = trace_header(record);
        assert_eq!(trace, trace_of(n + 1), "dead letter {n} stays in its trace");
        assert_ne!(span, parent_span);
    }
}
