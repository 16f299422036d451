//! `[stage] max_messages_per_second` on a real broker (tansu): 2,000
//! messages through a stage limited to 200 a second take about ten seconds
//! over the run, nothing is lost, nothing dead-lettered, and the limit and
//! the rate are in `/stats` and `/metrics`.

use std::time::Duration;

use sluice_tests::broker::{Broker, free_port};
use sluice_tests::http::{get, stats_when, wait_for_status};
use sluice_tests::kafka::{Input, create_topics, produce_batched, read_all, read_topic};
use sluice_tests::rust_plugin;
use sluice_tests::stage::StageFile;

const MESSAGES: usize = 2_000;
const PER_SECOND: f64 = 200.0;

#[test]
fn two_thousand_messages_at_two_hundred_a_second_take_ten_seconds_and_none_is_lost() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], 4);
    // All of them are waiting before the stage starts: without the limit
    // they would go through in well under a second.
    let inputs: Vec<Input> = (0..MESSAGES)
        .map(|n| Input::text((n % 4) as i32, &format!("key-{n}"), &format!("value {n}")))
        .collect();
    produce_batched(&brokers, "in", &inputs);
    let address = format!("127.0.0.1:{}", free_port());
    // Small batches, so that outputs leave at an even pace and the rate
    // can be read off their timestamps: a batch is let through whole, once
    // the bucket has had its tokens.
    let stage = StageFile::new(&format!(
        r#"[stage]
name = "limited"
max_messages_per_second = {PER_SECOND}
batch_size = 10

[plugin]
path = "{plugin}"

[kafka]
brokers = "{brokers}"
group_id = "limited"
input_topics = ["in"]
output_topic = "out"
dead_letter_topic = "dlq"

[observe]
http_listen = "{address}"
"#,
        plugin = rust_plugin("uppercase").display(),
    ));
    let process = stage.start("stage.log");
    wait_for_status(&address, "/healthz", 200, Duration::from_secs(30));

    let outputs = read_topic(
        &brokers,
        "out",
        MESSAGES,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert_eq!(outputs.len(), MESSAGES, "every message, once; log:\n{}", process.log());
    let mut values: Vec<String> = outputs.iter().map(|record| record.value_text()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), MESSAGES, "no duplicates");
    assert!(read_all(&brokers, "dlq").is_empty(), "waiting is never a failure");

    // The rate over the run, from the outputs' own timestamps.
    let times: Vec<i64> = outputs
        .iter()
        .map(|record| record.timestamp_ms.expect("a timestamp"))
        .collect();
    let took = Duration::from_millis((times.iter().max().unwrap() - times.iter().min().unwrap()) as u64);
    let rate = (MESSAGES - 1) as f64 / took.as_secs_f64();
    println!("{MESSAGES} messages in {took:?}: {rate:.1} a second");
    assert!(
        (PER_SECOND * 0.9..=PER_SECOND * 1.1).contains(&rate),
        "{rate:.1} a second over {took:?}, not 200 ± 10%"
    );

    let stats = stats_when(&address, Duration::from_secs(30), |stats| {
        stats["processed"] == MESSAGES
    });
    let limit = &stats["rate_limit"];
    assert_eq!(limit["limit_per_second"], 200, "{stats:#}");
    assert!(limit["waited_seconds"].as_f64().unwrap() > 1.0, "{stats:#}");
    let (_, metrics) = get(&address, "/metrics");
    assert!(
        metrics.contains("sluice_rate_limit_messages_per_second 200"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("sluice_rate_limited_messages_total {MESSAGES}")),
        "{metrics}"
    );
}
