//! End-to-end throughput of a stage against tansu, next to a bare rdkafka
//! consume -> produce passthrough over the same input, in one run.
//!
//! `cargo bench -p sluice-tests --bench stage_throughput` (after
//! `scripts/build-plugins`). Prints msgs/s for both and their ratio (target
//! sluice / bare >= 0.8), then sluice again with Redis deduplication on
//! (target dedup on / off >= 0.7).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice::pipeline::Stage;
use sluice::plugin::{PluginRuntime, PluginSettings, PluginSlot};
use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, create_topics, produce};
use sluice_tests::redis::Redis;
use sluice_tests::rust_plugin;
use sluice_tests::stage::{StageFile, StageSpec};

/// 200,000 unless `BENCH_MESSAGES` says otherwise (for quick runs).
fn message_count() -> usize {
    std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(200_000)
}

const VALUE_BYTES: usize = 100;
const PARTITIONS: i32 = 4;

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(
        &brokers,
        &["bench-in", "bare-out", "sluice-out", "sluice-dlq", "dedup-out"],
        PARTITIONS,
    );
    let value = "x".repeat(VALUE_BYTES);
    let inputs: Vec<Input> = (0..message_count() as i32)
        .map(|n| Input::text(n % PARTITIONS, &format!("key-{n}"), &value))
        .collect();
    let started = Instant::now();
    produce(&brokers, "bench-in", &inputs);
    println!(
        "stage throughput: {} x {VALUE_BYTES}-byte messages on {PARTITIONS} partitions (tansu, produced in {:.1} s)",
        message_count(),
        started.elapsed().as_secs_f64()
    );

    let bare = bare_passthrough(&brokers);
    println!("  (a) bare rdkafka passthrough   {:>10.0} msgs/s", bare);
    let sluice = sluice_stage(&brokers, "bench-sluice", "sluice-out", "");
    println!("  (b) sluice, uppercase plugin   {:>10.0} msgs/s", sluice);
    let ratio = sluice / bare;
    println!(
        "  b/a = {ratio:.2} (target 0.80: {})",
        if ratio >= 0.8 { "ok" } else { "BELOW TARGET" }
    );
    let redis = Redis::start();
    let dedup = format!("[dedup]\nkey = \"message-key\"\nredis_url = \"{}\"\n", redis.url());
    let with_dedup = sluice_stage(&brokers, "bench-dedup", "dedup-out", &dedup);
    println!("  (c) (b) + Redis dedup          {:>10.0} msgs/s", with_dedup);
    let ratio = with_dedup / sluice;
    println!(
        "  c/b = {ratio:.2} (target 0.70: {})",
        if ratio >= 0.7 { "ok" } else { "BELOW TARGET" }
    );
}

/// Consume every input and produce it unchanged, as fast as rdkafka goes:
/// auto-commit, no delivery tracking beyond a final flush. Timed from the
/// first record consumed to the last one acknowledged.
fn bare_passthrough(brokers: &str) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["bench-in"]).expect("subscribe");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut started = None;
    let mut count = 0;
    while count < message_count() {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        started.get_or_insert_with(Instant::now);
        use rdkafka::Message;
        let mut record = BaseRecord::to("bare-out").payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        while let Err((_, returned)) = producer.send(record) {
            record = returned;
            producer.poll(Duration::from_millis(1));
        }
        producer.poll(Duration::ZERO);
        count += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    message_count() as f64 / started.expect("consumed something").elapsed().as_secs_f64()
}

/// The same input through a sluice stage running the Rust uppercase plugin,
/// timed from the first record received to the last one finished (its
/// output acknowledged).
fn sluice_stage(brokers: &str, group: &str, output: &str, extra: &str) -> f64 {
    let plugin_path = rust_plugin("uppercase");
    let file = StageFile::new(
        &StageSpec {
            brokers,
            plugin: &plugin_path,
            group,
            input: "bench-in",
            output,
            dead_letter: "sluice-dlq",
            extra,
        }
        .to_toml(),
    );
    let config = sluice::config::load(&file.path).expect("stage file");
    let runtime = PluginRuntime::new(None).expect("plugin runtime");
    let plugin = runtime
        .load_file(&config.plugin.path, PluginSettings::default())
        .expect("plugin");
    let slot = Arc::new(PluginSlot::new(plugin, config.plugin.reload));
    let stage = Stage::new(config, slot, brokers.to_owned()).expect("stage");
    let counters = stage.counters();
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut first = None;
            loop {
                let snapshot = counters.snapshot();
                if first.is_none() && snapshot.received > 0 {
                    first = Some(Instant::now());
                }
                if snapshot.finished >= message_count() as u64 || done.load(Ordering::Relaxed) {
                    return first.map(|first| first.elapsed());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let summary = tokio
        .block_on(stage.run(Some(message_count() as u64)))
        .expect("stage runs");
    done.store(true, Ordering::Relaxed);
    let elapsed = watch.join().expect("watcher").expect("the stage received messages");
    assert_eq!(summary.outputs, message_count() as u64);
    message_count() as f64 / elapsed.as_secs_f64()
}
