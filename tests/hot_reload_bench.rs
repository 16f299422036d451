//! How long a hot reload takes to show: from a new plugin file renamed into
//! place to the first output record the new version produced, while
//! messages flow through a stage on tansu.
//!
//! `cargo bench -p sluice-tests --bench hot_reload` (after
//! `scripts/build-plugins`). The first swap brings a version never compiled
//! before (Cranelift runs); the later ones alternate between two versions
//! already in the compiled-plugin cache. Target: under 1 s for the Rust
//! plugin.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice::pipeline::Stage;
use sluice::plugin::{PluginRuntime, PluginSettings, PluginSlot, PluginWatcher};
use sluice_tests::broker::Broker;
use sluice_tests::kafka::create_topics;
use sluice_tests::stage::{StageFile, StageSpec};
use sluice_tests::{file_sha256, rust_plugin};

const PARTITIONS: i32 = 4;
const SWAPS: usize = 7;

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["in", "out", "dlq"], PARTITIONS);
    let folder = tempfile::TempDir::new().expect("plugin folder");
    let plugin_path = folder.path().join("uppercase.wasm");
    std::fs::copy(rust_plugin("uppercase"), &plugin_path).expect("copy the plugin");
    let stage_file = StageFile::new(
        &StageSpec {
            brokers: &brokers,
            plugin: &plugin_path,
            group: "bench-reload",
            input: "in",
            output: "out",
            dead_letter: "dlq",
            extra: "",
        }
        .to_toml(),
    );

    let config = sluice::config::load(&stage_file.path).expect("stage file");
    let runtime = Arc::new(PluginRuntime::new(Some(&stage_file.dir.path().join("cache"))).expect("plugin runtime"));
    let plugin = runtime
        .load_file(&config.plugin.path, PluginSettings::default())
        .expect("plugin");
    let slot = Arc::new(PluginSlot::new(plugin, config.plugin.reload));
    let _watcher =
        PluginWatcher::start(runtime, &plugin_path, PluginSettings::default(), slot.clone()).expect("watcher");
    let stage = Stage::new(config, slot, brokers.clone()).expect("stage");
    let shutdown = stage.shutdown_flag();
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let stage_thread = std::thread::spawn(move || tokio.block_on(stage.run(None)).expect("stage runs"));

    let flowing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (brokers, flowing) = (brokers.clone(), flowing.clone());
        std::thread::spawn(move || steady_stream(&brokers, &flowing))
    };
    let outputs = output_reader(&brokers);

    println!("hot reload: file renamed into place -> first output from the new version, messages flowing");
    let versions = ["uppercase-suffix", "uppercase"];
    let mut cached = Vec::new();
    for swap in 0..SWAPS {
        let next = versions[swap % 2];
        let latency = swap_and_wait(&outputs, folder.path(), &plugin_path, next);
        if swap == 0 {
            println!(
                "  first swap (compiled now)      {:>6} ms (target 1000: {})",
                latency.as_millis(),
                verdict(latency)
            );
        } else {
            cached.push(latency);
        }
    }
    cached.sort_unstable();
    let median = cached[cached.len() / 2];
    println!(
        "  later swaps (from the cache)   {:>6} ms median, {} ms worst of {} (target 1000: {})",
        median.as_millis(),
        cached.last().expect("swaps").as_millis(),
        cached.len(),
        verdict(*cached.last().expect("swaps"))
    );

    flowing.store(false, Ordering::Relaxed);
    producer.join().expect("producer");
    shutdown.store(true, Ordering::Relaxed);
    stage_thread.join().expect("stage thread");
}

fn verdict(latency: Duration) -> &'static str {
    if latency < Duration::from_secs(1) {
        "ok"
    } else {
        "ABOVE TARGET"
    }
}

/// Deploy the built plugin `name` and wait for its first output; the time
/// between the rename and that record's creation.
fn swap_and_wait(outputs: &BaseConsumer, folder: &Path, plugin_path: &Path, name: &str) -> Duration {
    let version = file_sha256(&rust_plugin(name));
    let staging = folder.join(".uppercase.wasm.new");
    std::fs::copy(rust_plugin(name), &staging).expect("stage the new version");
    std::fs::rename(&staging, plugin_path).expect("rename it into place");
    let deployed_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} never produced an output"
        );
        let Some(message) = outputs.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("read an output");
        let from_new_version = message.headers().is_some_and(|headers| {
            use rdkafka::message::Headers;
            headers
                .iter()
                .any(|header| header.key == "sluice.plugin.version" && header.value == Some(version.as_bytes()))
        });
        let created_ms = message.timestamp().to_millis().expect("outputs have timestamps");
        if from_new_version && created_ms >= deployed_ms {
            return Duration::from_millis((created_ms - deployed_ms) as u64);
        }
    }
}

/// About 2,000 messages a second, one every half millisecond, until told
/// to stop: a stream, not bursts, so the time to the first new output is
/// the reload's and not the wait for the next burst.
fn steady_stream(brokers: &str, flowing: &AtomicBool) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let mut n: i32 = 0;
    while flowing.load(Ordering::Relaxed) {
        let key = format!("key-{n}");
        let value = format!("value {n}");
        let record = BaseRecord::to("in").partition(n % PARTITIONS).key(&key).payload(&value);
        if producer.send(record).is_ok() {
            n += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(500));
    }
    producer.flush(Duration::from_secs(30)).expect("inputs acknowledged");
}

/// A reader of the output topic from its current end.
fn output_reader(brokers: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-reload-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset("out", partition, Offset::End)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}
