//! What `stage.ordering = "key"` buys a handler that waits, and what it
//! costs one that does not, measured against tansu in one run.
//!
//! `cargo bench -p sluice-tests --bench key_order` (after
//! `scripts/build-plugins`).
//!
//! **Waiting handler**: `wait-per-message`, which sleeps 20 ms per message
//! (a WASI timer, as a call to a service would wait), on 4 partitions,
//! 20,000 messages of 1,000 keys: `ordering = "partition"` against
//! `ordering = "key"` with `max_concurrency_per_partition = 64` (and
//! `concurrency = 256`, so the stage-wide cap is not the limit), both with
//! `batch_size = 1` as a handler that waits is run, and partition order
//! with `concurrency = 4`, a call per partition. Target:
//! key >= 25 x partition. `BENCH_WAIT_MESSAGES` changes the count (the
//! partition case takes count / 200 seconds).
//!
//! **Handler that does not wait**: Rust `uppercase` on 200,000 batched
//! records (`BENCH_MESSAGES`), partition order against key order with the
//! same settings: key order must cost it nothing (target >= 0.95).
//!
//! Each figure is timed from the first record received to the last output
//! acknowledged.

use std::path::Path;
use std::sync::Arc;

use sluice::pipeline::Stage;
use sluice::plugin::{PluginRuntime, PluginSettings, PluginSlot};
use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, create_topics, produce_batched};
use sluice_tests::rust_plugin;
use sluice_tests::stage::{StageFile, StageSpec};
use sluice_tests::timing::time_stage;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTITIONS: i32 = 4;
const KEYS: usize = 1_000;

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|count| count.parse().ok())
}

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let waits = env_number("BENCH_WAIT_MESSAGES").unwrap_or(20_000);
    let fast = env_number("BENCH_MESSAGES").unwrap_or(200_000);
    create_topics(
        &brokers,
        &[
            "wait-in",
            "wait-partition-out",
            "wait-key-out",
            "fast-in",
            "fast-partition-out",
            "fast-key-out",
            "dlq",
        ],
        PARTITIONS,
    );
    let keyed = |count: usize, value: &str| -> Vec<Input> {
        (0..count)
            .map(|n| {
                let key = n % KEYS;
                Input::text((key % PARTITIONS as usize) as i32, &format!("key-{key}"), value)
            })
            .collect()
    };
    produce_batched(&brokers, "wait-in", &keyed(waits, "waiting"));
    produce_batched(&brokers, "fast-in", &keyed(fast, &"x".repeat(100)));

    let key_order = "ordering = \"key\"\nmax_concurrency_per_partition = 64\nconcurrency = 256";
    let wait_plugin = rust_plugin("wait-per-message");
    let wait_config = "[plugin.config]\nms-per-message = 20\n";
    println!("waiting handler: {waits} messages of {KEYS} keys on {PARTITIONS} partitions, 20 ms each");
    // A handler that waits gets one message per call (`batch_size = 1`, as
    // the slow-handler profile sets): a batch would wait message by
    // message. Partition order gets a call per partition at once, all it
    // can use.
    let by_partition = run(
        &brokers,
        &wait_plugin,
        "wait-in",
        "wait-partition-out",
        waits,
        "batch_size = 1\nconcurrency = 4",
        wait_config,
    );
    println!("  ordering = \"partition\"                    {by_partition:>9.0} msgs/s");
    let by_key = run(
        &brokers,
        &wait_plugin,
        "wait-in",
        "wait-key-out",
        waits,
        &format!("{key_order}\nbatch_size = 1"),
        wait_config,
    );
    println!("  ordering = \"key\", 64 per partition         {by_key:>9.0} msgs/s");
    report_target("key / partition", by_key / by_partition, 25.0);

    let uppercase = rust_plugin("uppercase");
    println!("handler that does not wait: Rust uppercase, {fast} x 100-byte records");
    let by_partition = run(&brokers, &uppercase, "fast-in", "fast-partition-out", fast, "", "");
    println!("  ordering = \"partition\"                    {by_partition:>9.0} msgs/s");
    let by_key = run(&brokers, &uppercase, "fast-in", "fast-key-out", fast, key_order, "");
    println!("  ordering = \"key\", 64 per partition         {by_key:>9.0} msgs/s");
    report_target("key / partition", by_key / by_partition, 0.95);
}

fn report_target(what: &str, ratio: f64, target: f64) {
    let verdict = if ratio >= target { "ok" } else { "BELOW TARGET" };
    println!("  {what} = {ratio:.2} (target {target:.2}: {verdict})");
}

/// `input` through a stage running `plugin` with `stage_keys` in its
/// `[stage]` table, in this process; messages per second from the first
/// record received to the last finished.
fn run(brokers: &str, plugin: &Path, input: &str, output: &str, count: usize, stage_keys: &str, extra: &str) -> f64 {
    let toml = StageSpec {
        brokers,
        plugin,
        group: &format!("{output}-group"),
        input,
        output,
        dead_letter: "dlq",
        extra,
    }
    .to_toml_with_stage_keys(stage_keys);
    let file = StageFile::new(&toml);
    let config = sluice::config::load(&file.path).expect("stage file");
    let runtime = PluginRuntime::new(None).expect("plugin runtime");
    let plugin = runtime
        .load_file(&config.plugin.path, PluginSettings::of_stage(&config.plugin))
        .expect("plugin");
    let slot = Arc::new(PluginSlot::new(plugin, config.plugin.reload));
    let stage = Stage::new(config, slot, brokers.to_owned()).expect("stage");
    let counters = stage.counters();
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let timed = time_stage(stage, count as u64, |stage| {
        tokio.block_on(stage.run(Some(count as u64))).expect("stage runs")
    });
    assert_eq!(timed.summary.outputs, count as u64);
    let calls = counters.plugin_latency();
    println!(
        "    ({} calls, p50 {:.1} ms, p99 {:.1} ms, at most {} threads in the process)",
        calls.count, calls.p50_ms, calls.p99_ms, timed.peak_threads
    );
    count as f64 / timed.elapsed.as_secs_f64()
}
