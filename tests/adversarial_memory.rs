//! A stage's memory stays within `stage.memory_budget_mib` however much
//! is waiting for it: 64 input partitions full of 512 KiB records, on the
//! `io-bound` profile (whose large fetches used to let librdkafka prefetch
//! up to 512 MiB per partition), all produced before the stage starts so
//! that librdkafka could fetch everything at once if nothing held it back.
//!
//! The plugin (`slow-per-message`, 20 ms a message, passing each through)
//! is slower than the fetch, as a real handler usually is, so whatever
//! librdkafka is allowed to prefetch, it does. (`fetch.wait.max.ms` is
//! lowered from the profile's 500: tansu holds each fetch that long, which
//! with the small responses of a tight budget would make the fetch, not
//! the plugin, the slow part.)
//!
//! The stage runs as a `sluice run` child process, and its peak resident
//! set (`VmHWM`) is read from `/proc` once every record is finished. The
//! bound is the budget plus the plugin instances plus a fixed allowance for
//! code and runtime (see [`RESIDENT_LIMIT_MIB`]); the data waiting is
//! twice the budget, so a stage that prefetched it all would be far over.

use std::collections::BTreeSet;
use std::time::Duration;

use sluice_tests::broker::{Broker, free_port};
use sluice_tests::http::{stats_when, wait_for_status};
use sluice_tests::kafka::{Input, create_topics, produce, read_topic};
use sluice_tests::stage::StageFile;

const PARTITIONS: i32 = 64;
const RECORDS_PER_PARTITION: usize = 8;
const RECORD_BYTES: usize = 512 * 1024;
const BUDGET_MIB: u64 = 128;

/// The budget, plus two plugin instances each holding a batch of four
/// 512 KiB records and their outputs (about 10 MiB each), plus 100 MiB for
/// the runtime, the compiled plugin, librdkafka's threads and buffers, as
/// the README's formula says. Measured on the development machine: 177–199 MiB
/// with this budget; 427 MiB with a budget of 4096 MiB (which bounds
/// nothing here); 681 MiB before the budget existed.
const RESIDENT_LIMIT_MIB: u64 = BUDGET_MIB + 20 + 100;

#[test]
fn sixty_four_partitions_of_large_records_stay_within_the_budget() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["memory-in"], PARTITIONS);
    create_topics(&brokers, &["memory-out", "memory-dlq"], 1);

    let inputs: Vec<Input> = (0..PARTITIONS)
        .flat_map(|partition| {
            (0..RECORDS_PER_PARTITION).map(move |index| {
                let key = format!("p{partition}-{index}");
                let mut value = format!("{key}:").into_bytes();
                value.resize(RECORD_BYTES, b'x');
                Input {
                    partition,
                    key: key.into_bytes(),
                    value,
                    headers: Vec::new(),
                }
            })
        })
        .collect();
    let total = inputs.len();
    produce(&brokers, "memory-in", &inputs);
    drop(inputs);

    let address = format!("127.0.0.1:{}", free_port());
    let stage = StageFile::for_plugin(
        &brokers,
        "slow-per-message",
        "memory-group",
        ["memory-in", "memory-out", "memory-dlq"],
        &format!(
            "[observe]\nhttp_listen = \"{address}\"\n\n[plugin.config]\nms-per-message = 20\n\n[kafka.consumer_properties]\n\"fetch.wait.max.ms\" = 10\n"
        ),
    );
    let toml = std::fs::read_to_string(&stage.path).expect("stage file");
    let toml = toml.replace(
        "[stage]\n",
        &format!(
            "[stage]\nprofile = \"io-bound\"\nmemory_budget_mib = {BUDGET_MIB}\nconcurrency = 2\nbatch_size = 4\n"
        ),
    );
    std::fs::write(&stage.path, toml).expect("stage file");
    let process = stage.start("stage.log");
    wait_for_status(&address, "/readyz", 200, Duration::from_secs(60));

    let stats = stats_when(&address, Duration::from_secs(240), |stats| {
        stats["processed"].as_u64() == Some(total as u64)
    });
    let peak_mib = peak_resident_mib(process.pid());
    let memory = &stats["memory"];
    assert_eq!(memory["budget_mib"], BUDGET_MIB, "{memory:#}");
    assert_eq!(memory["prefetch"]["sized_for_partitions"], PARTITIONS, "{memory:#}");
    assert!(
        memory["prefetch"]["limit_bytes"].as_u64().expect("prefetch limit") <= BUDGET_MIB * 1024 * 1024 / 2,
        "{memory:#}"
    );
    assert_eq!(stats["dead_lettered"], 0, "{stats:#}");

    let outputs = read_topic(
        &brokers,
        "memory-out",
        total,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let keys: BTreeSet<String> = outputs.iter().map(|record| record.key_text()).collect();
    assert_eq!(outputs.len(), total, "every record exactly once");
    assert_eq!(keys.len(), total, "every record exactly once");
    for record in &outputs {
        let value = record.value.as_deref().expect("a value");
        assert_eq!(value.len(), RECORD_BYTES);
        assert!(
            value.starts_with(format!("{}:", record.key_text()).as_bytes()),
            "passed through"
        );
        assert!(value.ends_with(b"xxxx"), "passed through");
    }

    eprintln!(
        "peak resident set {peak_mib} MiB with a {BUDGET_MIB} MiB budget (limit {RESIDENT_LIMIT_MIB} MiB, {} MiB of input)",
        total * RECORD_BYTES / (1024 * 1024)
    );
    assert!(
        peak_mib <= RESIDENT_LIMIT_MIB,
        "peak resident set {peak_mib} MiB is over {RESIDENT_LIMIT_MIB} MiB; log:\n{}",
        process.log()
    );
}

/// The process's peak resident set so far, from `/proc/<pid>/status`.
fn peak_resident_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the stage is running");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM in /proc status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("VmHWM in kB");
    kib / 1024
}
