//! A batch call gets the per-message deadline once per message it carries
//! (up to `plugin.limits.batch_deadline_cap_ms`), so a plugin that is slow
//! but within its deadline keeps its batches; a batch that fails anyway is
//! handled one message at a time, counted in `sluice_batch_fallbacks_total`
//! and warned about once per plugin version.
//!
//! The plugin, `slow-per-message`, spends a set time on each message.
//! Epoch ticks come late on a loaded machine, so a deadline only ever
//! stretches: every setup keeps a wide margin on the side it asserts.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::kafka::EmbeddedCluster;
use sluice::pipeline::{Stage, StageSummary};
use sluice::plugin::{PluginRuntime, PluginSettings, PluginSlot};
use sluice_tests::kafka::{Input, produce};
use sluice_tests::process::kill_with_parent;
use sluice_tests::stage::StageFile;
use sluice_tests::{rust_plugin, shared_plugin_cache, sluice_bin};

const MESSAGES: usize = 60;

#[derive(Debug, Clone, Copy)]
struct Setup {
    batch_size: usize,
    ms_per_message: u64,
    deadline_ms: u64,
    batch_deadline_cap_ms: u64,
}

/// Batches of 10 x 20 ms: twice one message's 100 ms deadline, a fifth of
/// the batch's 1000 ms.
const WITHIN: Setup = Setup {
    batch_size: 10,
    ms_per_message: 20,
    deadline_ms: 100,
    batch_deadline_cap_ms: 30_000,
};

/// Batches of 20 x 40 ms against a 200 ms cap: four times over. One
/// message at a time, 40 ms against 200 ms, fits.
const CAPPED: Setup = Setup {
    batch_size: 20,
    ms_per_message: 40,
    deadline_ms: 200,
    batch_deadline_cap_ms: 200,
};

/// A stage of `slow-per-message` on `brokers`, one input partition.
fn stage_toml(brokers: &str, group: &str, setup: Setup, embedded: &str) -> String {
    let Setup {
        batch_size,
        ms_per_message,
        deadline_ms,
        batch_deadline_cap_ms,
    } = setup;
    format!(
        r#"[stage]
name = "batch-deadline"
batch_size = {batch_size}
commit_interval_ms = 200

[plugin]
path = "{plugin}"

[plugin.limits]
deadline_ms = {deadline_ms}
batch_deadline_cap_ms = {batch_deadline_cap_ms}

[plugin.config]
ms-per-message = {ms_per_message}

[plugin.reload]
watch = false

[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["in"]
output_topic = "out"
dead_letter_topic = "dlq"

{embedded}
"#,
        plugin = rust_plugin("slow-per-message").display(),
    )
}

/// `sluice run` on the embedded cluster seeded with [`MESSAGES`] messages,
/// with the plugin caller's debug log; returns what it printed (summary
/// and log), after asserting it finished every message with an output.
fn run_seeded(setup: Setup) -> String {
    let embedded = "[embedded]\npartitions = 1\nseed = \"seed.jsonl\"\n";
    let file = StageFile::new(&stage_toml("embedded", "g", setup, embedded));
    let seed: String = (0..MESSAGES).map(|n| format!("{{\"value\": \"m{n}\"}}\n")).collect();
    std::fs::write(file.dir.path().join("seed.jsonl"), seed).unwrap();
    let log_path = file.dir.path().join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(sluice_bin());
    command
        .arg("run")
        .arg(&file.path)
        .env("SLUICE_CACHE_DIR", shared_plugin_cache())
        .env(
            "SLUICE_LOG",
            "info,librdkafka=warn,rdkafka=warn,sluice::pipeline::plugin_caller=debug",
        )
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null());
    kill_with_parent(&mut command);
    let mut child = command.spawn().expect("sluice starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!(
                "the seeded stage did not finish:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{output}");
    assert!(output.contains(&format!("  outputs         {MESSAGES}\n")), "{output}");
    assert!(output.contains("  dead-lettered   0\n"), "{output}");
    output
}

#[test]
fn batches_of_a_slow_plugin_within_the_scaled_deadline_do_not_fall_back() {
    let output = run_seeded(WITHIN);

    assert!(!output.contains("batch call failed"), "{output}");
    assert!(output.contains("  failed attempts 0\n"), "{output}");
}

#[test]
fn batch_fallbacks_are_warned_once_per_version_then_logged_at_debug() {
    let output = run_seeded(CAPPED);

    let fallbacks: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("batch call failed"))
        .collect();
    let warnings: Vec<&&str> = fallbacks.iter().filter(|line| line.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{output}");
    assert!(
        warnings[0].contains("logged once per plugin version")
            && warnings[0].contains("plugin exceeded its 200 ms deadline for a batch of"),
        "{output}"
    );
    assert!(fallbacks.len() >= 2, "several batches fell back: {output}");
    assert!(
        fallbacks
            .iter()
            .filter(|line| !line.contains("WARN"))
            .all(|line| line.contains("DEBUG")),
        "{output}"
    );
}

/// One stage run inside this process on `brokers` until every message is
/// finished, with the plugin set up from the stage file.
fn run_in_process(brokers: &str, group: &str, setup: Setup) -> StageSummary {
    let file = StageFile::new(&stage_toml(brokers, group, setup, ""));
    let config = sluice::config::load(&file.path).expect("stage file");
    let runtime = PluginRuntime::new(Some(&shared_plugin_cache())).expect("plugin runtime");
    let settings = PluginSettings::of_stage(&config.plugin);
    let plugin = runtime.load_file(&config.plugin.path, settings).expect("plugin");
    let slot = Arc::new(PluginSlot::new(plugin, config.plugin.reload));
    let stage = Stage::new(config, slot, brokers.to_owned()).expect("stage");
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    tokio.block_on(stage.run(Some(MESSAGES as u64))).expect("stage runs")
}

/// The value of the series `name` (with its labels, if any) in Prometheus
/// text.
fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn batch_fallbacks_are_counted_by_kind() {
    let metrics = sluice::observe::metrics::prometheus().expect("the Prometheus recorder");
    let cluster = EmbeddedCluster::start(&["in", "out", "dlq"], 1).expect("embedded cluster");
    let brokers = cluster.bootstrap_servers();
    let inputs: Vec<Input> = (0..MESSAGES)
        .map(|n| Input::text(0, &format!("k{n}"), &format!("m{n}")))
        .collect();
    produce(&brokers, "in", &inputs);

    let within = run_in_process(&brokers, "within", WITHIN);

    assert_eq!(within.outputs, MESSAGES as u64);
    assert_eq!(within.failed_attempts, 0);
    let text = metrics.render();
    assert_eq!(
        metric(&text, "sluice_batch_fallbacks_total{kind=\"deadline\"}"),
        None,
        "{text}"
    );
    let calls = metric(&text, "sluice_plugin_call_seconds_count").expect("call durations");
    let within_one_deadline = metric(&text, "sluice_plugin_call_seconds_bucket{le=\"0.1\"}").expect("a 100 ms bucket");
    assert!(
        calls > within_one_deadline,
        "some batch call took longer than one message's deadline, and passed: {text}"
    );

    let capped = run_in_process(&brokers, "capped", CAPPED);

    assert_eq!(capped.outputs, MESSAGES as u64);
    let text = metrics.render();
    let fallbacks = metric(&text, "sluice_batch_fallbacks_total{kind=\"deadline\"}").unwrap_or(0.0);
    assert!(fallbacks >= 1.0, "{text}");
}
