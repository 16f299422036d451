//! Hot reload against the real broker: a new plugin version swapped in
//! while messages flow, files that must not be swapped in, and a broken
//! release rolled back on its own.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, create_topics, produce, read_all, read_topic};
use sluice_tests::stage::{StageFile, StageProcess, StageSpec};
use sluice_tests::{file_sha256, rust_plugin};
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);
const TOPICS: [&str; 3] = ["in", "out", "dlq"];
const PARTITIONS: usize = 4;

/// The folder a stage loads its plugin from, where a test deploys new
/// versions the ways operators do.
struct PluginFolder {
    dir: TempDir,
}

impl PluginFolder {
    /// A folder holding `uppercase.wasm`, a copy of the built `uppercase`.
    fn with_uppercase() -> PluginFolder {
        let folder = PluginFolder {
            dir: TempDir::new().expect("plugin folder"),
        };
        std::fs::copy(rust_plugin("uppercase"), folder.plugin_path()).expect("copy the plugin");
        folder
    }

    fn plugin_path(&self) -> PathBuf {
        self.dir.path().join("uppercase.wasm")
    }

    /// Write `bytes` beside the plugin and rename them into place: the
    /// way to deploy, since the stage never sees half a file. Returns when
    /// the rename happened.
    fn deploy_bytes(&self, bytes: &[u8]) -> SystemTime {
        let staging = self.dir.path().join(".uppercase.wasm.new");
        std::fs::write(&staging, bytes).expect("write the new version");
        std::fs::rename(&staging, self.plugin_path()).expect("rename it into place");
        SystemTime::now()
    }

    fn deploy(&self, built_plugin: &str) -> SystemTime {
        self.deploy_bytes(&std::fs::read(rust_plugin(built_plugin)).expect("read the built plugin"))
    }

    fn stage(&self, brokers: &str, group: &str, extra: &str) -> StageFile {
        self.ordered_stage(brokers, group, "", extra)
    }

    /// A stage with `stage_keys` (such as `ordering = "key"`) in its
    /// `[stage]` table.
    fn ordered_stage(&self, brokers: &str, group: &str, stage_keys: &str, extra: &str) -> StageFile {
        let plugin = self.plugin_path();
        let spec = StageSpec {
            brokers,
            plugin: &plugin,
            group,
            input: TOPICS[0],
            output: TOPICS[1],
            dead_letter: TOPICS[2],
            extra,
        };
        StageFile::new(&spec.to_toml_with_stage_keys(stage_keys))
    }
}

/// Message `n`: key `key-<n>`, value `value <n>`, spread over the partitions.
fn message(n: usize) -> Input {
    Input::text((n % PARTITIONS) as i32, &format!("key-{n}"), &format!("value {n}"))
}

fn produce_range(brokers: &str, range: std::ops::Range<usize>) {
    produce(brokers, "in", &range.map(message).collect::<Vec<_>>());
}

fn number(record: &Record) -> usize {
    record.key_text()["key-".len()..].parse().expect("key-<n>")
}

fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

/// Block until the log mentions `text` `times` times.
fn wait_for_log_count(process: &StageProcess, text: &str, times: usize) {
    let started = Instant::now();
    while process.log().matches(text).count() < times {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the log never said {text:?} {times} times:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut process: StageProcess) -> String {
    process.signal(libc::SIGTERM);
    let status = process.wait(Duration::from_secs(30)).expect("the stage stops");
    assert_eq!(status.code(), Some(0), "log:\n{}", process.log());
    process.log()
}

#[test]
fn a_new_version_swapped_in_while_50000_messages_flow_loses_and_repeats_nothing() {
    swap_while_flowing("reload-flow", "");
}

/// The same under key order, several calls of a partition at once: every
/// key (here, every message) switches once, and since calls start in
/// offset order, so does each partition.
#[test]
fn a_new_version_swapped_in_under_key_order_loses_and_repeats_nothing() {
    swap_while_flowing(
        "reload-flow-keyed",
        "ordering = \"key\"\nmax_concurrency_per_partition = 4\nconcurrency = 8",
    );
}

fn swap_while_flowing(group: &str, stage_keys: &str) {
    const MESSAGES: usize = 50_000;
    const CHUNK: usize = 500;
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, PARTITIONS as i32);
    let folder = PluginFolder::with_uppercase();
    let v1 = file_sha256(&rust_plugin("uppercase"));
    let v2 = file_sha256(&rust_plugin("uppercase-suffix"));
    let stage = folder.ordered_stage(&brokers, group, stage_keys, "");
    let process = stage.start("stage.log");

    // A steady stream, ~10 s long; the new version lands 40% of the way in.
    let produced = Arc::new(AtomicUsize::new(0));
    let producer = {
        let brokers = brokers.clone();
        let produced = produced.clone();
        std::thread::spawn(move || {
            for start in (0..MESSAGES).step_by(CHUNK) {
                produce_range(&brokers, start..start + CHUNK);
                produced.store(start + CHUNK, Ordering::Release);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    while produced.load(Ordering::Acquire) < MESSAGES * 2 / 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let deployed_at = folder.deploy("uppercase-suffix");
    producer.join().expect("the producer thread");

    let outputs = read_topic(&brokers, "out", MESSAGES, LIMIT, SETTLE);
    let log = stop(process);

    // Every message exactly once.
    let mut seen: HashMap<usize, &Record> = HashMap::new();
    for record in &outputs {
        assert!(
            seen.insert(number(record), record).is_none(),
            "message {} has two outputs",
            number(record)
        );
    }
    assert_eq!(seen.len(), MESSAGES, "outputs for every message; log:\n{log}");
    assert!(read_all(&brokers, "dlq").is_empty());

    // Each output is wholly one version's: value and header agree.
    let mut by_partition: BTreeMap<usize, Vec<(usize, bool)>> = BTreeMap::new();
    for (n, record) in &seen {
        let version = record.header("sluice.plugin.version").expect("version header");
        let is_v2 = if version == v2 {
            assert_eq!(record.value_text(), format!("VALUE {n} [v2]"));
            true
        } else {
            assert_eq!(version, v1, "message {n}: unknown version");
            assert_eq!(record.value_text(), format!("VALUE {n}"));
            false
        };
        by_partition.entry(n % PARTITIONS).or_default().push((*n, is_v2));
    }

    // Per partition, in input order: v1 up to the swap, v2 after, never back.
    for (partition, mut versions) in by_partition {
        versions.sort_unstable();
        let first_v2 = versions.iter().position(|(_, is_v2)| *is_v2).unwrap_or_else(|| {
            panic!("partition {partition} never saw v2; log:\n{log}");
        });
        assert!(first_v2 > 0, "partition {partition} saw v1 before the swap");
        assert!(
            versions[first_v2..].iter().all(|(_, is_v2)| *is_v2),
            "partition {partition} went back to v1 after v2"
        );
    }

    let first_v2_at = outputs
        .iter()
        .filter(|record| record.header("sluice.plugin.version").as_deref() == Some(v2.as_str()))
        .filter_map(|record| record.timestamp_ms)
        .min()
        .expect("v2 outputs have timestamps");
    let latency_ms = first_v2_at - epoch_ms(deployed_at);
    println!("swap latency (file renamed into place -> first v2 output): {latency_ms} ms");
    assert!(log.contains("plugin reloaded"), "log:\n{log}");
    assert!(log.contains("plugin reloads  1"), "log:\n{log}");
}

#[test]
fn files_that_are_not_a_working_plugin_change_nothing() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, PARTITIONS as i32);
    let folder = PluginFolder::with_uppercase();
    let v1 = file_sha256(&rust_plugin("uppercase"));
    let stage = folder.stage(&brokers, "reload-rejects", "");
    let process = stage.start("stage.log");
    produce_range(&brokers, 0..200);
    assert_eq!(read_topic(&brokers, "out", 200, LIMIT, Duration::ZERO).len(), 200);

    // Half a component (a copy cut short), then a component of another world.
    let v2 = std::fs::read(rust_plugin("uppercase-suffix")).expect("built plugin");
    folder.deploy_bytes(&v2[..v2.len() / 2]);
    wait_for_log_count(&process, "new plugin file rejected", 1);
    folder.deploy("wrong-world");
    wait_for_log_count(&process, "new plugin file rejected", 2);
    // The file removed: a warning, and the running version goes on.
    std::fs::remove_file(folder.plugin_path()).expect("remove the plugin file");
    wait_for_log_count(&process, "the plugin file was removed", 1);
    produce_range(&brokers, 200..400);
    let outputs = read_topic(&brokers, "out", 400, LIMIT, SETTLE);

    let log = process.log();
    assert!(log.contains("is not a valid WebAssembly component"), "log:\n{log}");
    assert!(log.contains("does not implement"), "log:\n{log}");
    assert_eq!(outputs.len(), 400, "log:\n{log}");
    for record in &outputs {
        assert_eq!(record.header("sluice.plugin.version").as_deref(), Some(v1.as_str()));
        assert_eq!(record.value_text(), format!("VALUE {}", number(record)));
    }

    // Written back in place, not renamed (an editor after a delete): the
    // good new version is picked up.
    std::fs::write(folder.plugin_path(), &v2).expect("write the plugin in place");
    wait_for_log_count(&process, "plugin reloaded", 1);
    produce_range(&brokers, 400..500);
    let outputs = read_topic(&brokers, "out", 500, LIMIT, SETTLE);
    let log = stop(process);
    assert_eq!(outputs.len(), 500, "log:\n{log}");
    for record in outputs.iter().filter(|record| number(record) >= 400) {
        assert_eq!(record.value_text(), format!("VALUE {} [v2]", number(record)));
    }
    assert!(log.contains("plugin reloads  1"), "log:\n{log}");
    assert!(log.contains("rejected files  2"), "log:\n{log}");
}

#[test]
fn a_new_version_that_fails_its_trial_is_rolled_back() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, PARTITIONS as i32);
    let folder = PluginFolder::with_uppercase();
    let v1 = file_sha256(&rust_plugin("uppercase"));
    let stage = folder.stage(
        &brokers,
        "reload-rollback",
        "[plugin.reload]\ntrial_calls = 10\nrollback_failure_rate = 0.5\n\n[retry]\nmax_attempts = 8\n",
    );
    let process = stage.start("stage.log");
    produce_range(&brokers, 0..200);
    assert_eq!(read_topic(&brokers, "out", 200, LIMIT, Duration::ZERO).len(), 200);

    folder.deploy("always-panics");
    wait_for_log_count(&process, "plugin reloaded", 1);
    produce_range(&brokers, 200..600);
    wait_for_log_count(&process, "rolled back to the previous version", 1);
    let outputs = read_topic(&brokers, "out", 600, LIMIT, SETTLE);

    // Still the broken file on disk, yet nothing reloads it; a fixed
    // release afterwards is taken.
    folder.deploy("uppercase-suffix");
    wait_for_log_count(&process, "plugin reloaded", 2);
    produce_range(&brokers, 600..700);
    let after_fix = read_topic(&brokers, "out", 700, LIMIT, SETTLE);
    let log = stop(process);

    assert_eq!(outputs.len(), 600, "every message handled once; log:\n{log}");
    for record in &outputs {
        assert_eq!(record.header("sluice.plugin.version").as_deref(), Some(v1.as_str()));
        assert_eq!(record.value_text(), format!("VALUE {}", number(record)));
    }
    assert!(
        read_all(&brokers, "dlq").is_empty(),
        "the rollback came before any message ran out of attempts"
    );
    assert_eq!(after_fix.len(), 700, "log:\n{log}");
    assert!(
        after_fix
            .iter()
            .filter(|record| number(record) >= 600)
            .all(|record| record.value_text().ends_with(" [v2]"))
    );
    assert!(
        log.contains("this release is broken"),
        "the trap reason is logged:\n{log}"
    );
    assert!(log.contains("rolled back     1"), "log:\n{log}");
    assert!(log.contains("plugin reloads  2"), "log:\n{log}");
}
