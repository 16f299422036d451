//! End-to-end throughput of a stage against tansu, next to what it replaces
//! and what it is built on, measured on the same input in one run.
//!
//! `cargo bench -p sluice-tests --bench stage_throughput` (after
//! `scripts/build-plugins`; the first run also makes `target/bench-venv`,
//! confluent-kafka from PyPI, for the Python loop).
//!
//! **Batched input** (`linger.ms = 5`, as producers write): the plain
//! Python loop a stage replaces (`tests/bench/python_loop.py`), the bare
//! rdkafka passthrough, and sluice with the `uppercase` plugin in Rust,
//! Python and JavaScript. Targets: Rust >= 2.0 x the Python loop and
//! >= 0.9 x bare; Python >= 1.0 x the Python loop. `BENCH_ROUNDS` (default
//! 1) repeats the batched case, interleaved, and reports each round.
//!
//! **One record per batch** (what the crash and rebalance tests produce):
//! bare, sluice with the Rust plugin, and sluice with Redis deduplication;
//! targets sluice / bare >= 0.8, dedup on / off >= 0.7.
//!
//! Every figure is timed from the first record consumed to the last output
//! acknowledged (for the Python loop: committed).
//!
//! To profile one batched case: `BENCH_ONLY=rust` (or `python`, `js`,
//! `bare`, `python-loop`) runs only that one, and `BENCH_PERF_CONTROL=FIFO`
//! writes `enable` and `disable` to perf's control FIFO around it, so
//! `perf record -D -1 --control fifo:FIFO` samples the case and nothing
//! else (see the README's Benchmarks section).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice::pipeline::Stage;
use sluice::plugin::{PluginRuntime, PluginSettings, PluginSlot};
use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, create_topics, produce, produce_batched};
use sluice_tests::redis::Redis;
use sluice_tests::stage::{StageFile, StageSpec};
use sluice_tests::timing::{process_cpu, time_stage};
use sluice_tests::{js_plugin, python_plugin, rust_plugin, workspace_root};

/// The allocator the `sluice` binary runs with (host/src/main.rs), so the
/// stage measured here is the stage users run.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// 200,000 unless `BENCH_MESSAGES` says otherwise (for quick runs).
fn message_count() -> usize {
    env_number("BENCH_MESSAGES").unwrap_or(200_000)
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|count| count.parse().ok())
}

const VALUE_BYTES: usize = 100;
const PARTITIONS: i32 = 4;
/// What the Python loop installs; the version the targets were set against.
const CONFLUENT_KAFKA: &str = "confluent-kafka==2.16.1";

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let python = bench_python();
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let rounds = env_number("BENCH_ROUNDS").unwrap_or(1).max(1);
    let mut topics = vec!["batched-in".to_owned(), "single-in".to_owned(), "dlq".to_owned()];
    for round in 0..rounds {
        for case in BatchedCase::ALL {
            topics.push(case.output(round));
        }
    }
    topics.extend(["single-bare-out", "single-sluice-out", "single-dedup-out"].map(str::to_owned));
    let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
    create_topics(&brokers, &topic_names, PARTITIONS);
    let value = "x".repeat(VALUE_BYTES);
    let inputs: Vec<Input> = (0..message_count() as i32)
        .map(|n| Input::text(n % PARTITIONS, &format!("key-{n}"), &value))
        .collect();

    let started = Instant::now();
    produce_batched(&brokers, "batched-in", &inputs);
    println!(
        "batched input: {} x {VALUE_BYTES}-byte records on {PARTITIONS} partitions, linger.ms = 5 (tansu, produced in {:.1} s)",
        message_count(),
        started.elapsed().as_secs_f64()
    );
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        let case = BatchedCase::ALL
            .into_iter()
            .find(|case| case.key() == only)
            .unwrap_or_else(|| panic!("BENCH_ONLY={only}: not one of rust, python, js, bare, python-loop"));
        let measured = run_batched(case, &python, &brokers, 0);
        println!("  {}", row(case.label(), &[measured]));
        return;
    }
    let mut runs = vec![Vec::new(); BatchedCase::ALL.len()];
    for round in 0..rounds {
        for (index, case) in BatchedCase::ALL.iter().enumerate() {
            runs[index].push(run_batched(*case, &python, &brokers, round));
        }
    }
    let rate = |case: BatchedCase| median(&runs[case as usize]).messages_per_second;
    let python_loop_rate = rate(BatchedCase::PythonLoop);
    let bare = rate(BatchedCase::Bare);
    println!(
        "  {:<30} {:>width$}   {:>8}   {:>13}   {:>6}",
        "",
        "msgs/s",
        "CPU/msg",
        "x Python loop",
        "x bare",
        width = 9 * rounds + rounds - 1
    );
    for (index, case) in BatchedCase::ALL.iter().enumerate() {
        println!(
            "  {}   {:>13.2}   {:>6.2}",
            row(case.label(), &runs[index]),
            rate(*case) / python_loop_rate,
            rate(*case) / bare
        );
    }
    let rust = rate(BatchedCase::Rust);
    report_target("sluice Rust / Python loop", rust / python_loop_rate, 2.0);
    report_target("sluice Rust / bare", rust / bare, 0.9);
    report_target(
        "sluice Python / Python loop",
        rate(BatchedCase::Python) / python_loop_rate,
        1.0,
    );

    let started = Instant::now();
    produce(&brokers, "single-in", &inputs);
    println!(
        "one record per batch: the same records (produced in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let bare = bare_passthrough(&brokers, "single-bare", "single-in", "single-bare-out");
    println!("  {}", row("(a) bare rdkafka passthrough", &[bare]));
    let sluice = sluice_stage(
        &brokers,
        &rust_plugin("uppercase"),
        "single-sluice",
        "single-in",
        "single-sluice-out",
        "",
    );
    println!("  {}", row("(b) sluice, Rust uppercase", &[sluice]));
    report_target("b/a", sluice.messages_per_second / bare.messages_per_second, 0.8);
    let redis = Redis::start();
    let dedup = format!("[dedup]\nkey = \"message-key\"\nredis_url = \"{}\"\n", redis.url());
    let with_dedup = sluice_stage(
        &brokers,
        &rust_plugin("uppercase"),
        "single-dedup",
        "single-in",
        "single-dedup-out",
        &dedup,
    );
    println!("  {}", row("(c) (b) + Redis dedup", &[with_dedup]));
    report_target("c/b", with_dedup.messages_per_second / sluice.messages_per_second, 0.7);
}

/// A contender's line: each run's rate, and the median run's CPU per message.
fn row(label: &str, runs: &[Measured]) -> String {
    let rates: Vec<String> = runs
        .iter()
        .map(|run| format!("{:>9.0}", run.messages_per_second))
        .collect();
    let cpu = median(runs).cpu_per_message.as_secs_f64() * 1e6;
    format!("{label:<30} {}   {cpu:>5.1} µs", rates.join(" "))
}

/// One run of one contender.
#[derive(Debug, Clone, Copy)]
struct Measured {
    messages_per_second: f64,
    /// CPU time of the contender's process (every thread, not the broker's)
    /// over the run, per message: steadier than the rate on a busy machine,
    /// and what a change to the per-record path moves.
    cpu_per_message: Duration,
}

impl Measured {
    fn new(messages: usize, elapsed: Duration, cpu: Duration) -> Self {
        Measured {
            messages_per_second: messages as f64 / elapsed.as_secs_f64(),
            cpu_per_message: cpu / messages as u32,
        }
    }
}

/// One round of one batched case.
fn run_batched(case: BatchedCase, python: &Path, brokers: &str, round: usize) -> Measured {
    let output = case.output(round);
    let group = format!("{output}-group");
    let input = "batched-in";
    match case {
        BatchedCase::PythonLoop => profiled(|| python_loop(python, brokers, &group, input, &output)),
        BatchedCase::Bare => profiled(|| bare_passthrough(brokers, &group, input, &output)),
        BatchedCase::Rust => sluice_stage(brokers, &rust_plugin("uppercase"), &group, input, &output, ""),
        BatchedCase::Python => sluice_stage(brokers, &python_plugin("uppercase"), &group, input, &output, ""),
        BatchedCase::JavaScript => sluice_stage(brokers, &js_plugin("uppercase"), &group, input, &output, ""),
    }
}

/// `measure()`, with perf sampling it when `BENCH_PERF_CONTROL` names
/// perf's control FIFO.
fn profiled<T>(measure: impl FnOnce() -> T) -> T {
    let control = |command: &str| {
        if let Ok(fifo) = std::env::var("BENCH_PERF_CONTROL") {
            std::fs::write(fifo, format!("{command}\n")).expect("write to perf's control FIFO");
        }
    };
    control("enable");
    let result = measure();
    control("disable");
    result
}

/// The batched case's contenders, in the order they run in each round.
#[derive(Debug, Clone, Copy)]
enum BatchedCase {
    PythonLoop,
    Bare,
    Rust,
    Python,
    JavaScript,
}

impl BatchedCase {
    const ALL: [BatchedCase; 5] = [
        BatchedCase::PythonLoop,
        BatchedCase::Bare,
        BatchedCase::Rust,
        BatchedCase::Python,
        BatchedCase::JavaScript,
    ];

    fn label(self) -> &'static str {
        match self {
            BatchedCase::PythonLoop => "Python loop (confluent-kafka)",
            BatchedCase::Bare => "bare rdkafka passthrough",
            BatchedCase::Rust => "sluice, Rust uppercase",
            BatchedCase::Python => "sluice, Python uppercase",
            BatchedCase::JavaScript => "sluice, JavaScript uppercase",
        }
    }

    /// Its name for `BENCH_ONLY`.
    fn key(self) -> &'static str {
        match self {
            BatchedCase::PythonLoop => "python-loop",
            BatchedCase::Bare => "bare",
            BatchedCase::Rust => "rust",
            BatchedCase::Python => "python",
            BatchedCase::JavaScript => "js",
        }
    }

    fn output(self, round: usize) -> String {
        format!("batched-{}-out-{round}", self.key())
    }
}

/// The run with the median rate.
fn median(runs: &[Measured]) -> Measured {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.messages_per_second.total_cmp(&b.messages_per_second));
    sorted[sorted.len() / 2]
}

fn report_target(what: &str, ratio: f64, target: f64) {
    let verdict = if ratio >= target { "ok" } else { "BELOW TARGET" };
    println!("  {what} = {ratio:.2} (target {target:.2}: {verdict})");
}

/// The Python with confluent-kafka that runs the plain loop: a venv under
/// `target/`, made on the first run.
fn bench_python() -> PathBuf {
    let venv = workspace_root().join("target/bench-venv");
    let python = venv.join("bin/python");
    let has_client = |python: &Path| {
        Command::new(python)
            .args(["-c", "import confluent_kafka"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if !has_client(&python) {
        println!("making {} with {CONFLUENT_KAFKA} for the Python loop", venv.display());
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", CONFLUENT_KAFKA]));
    }
    python
}

fn run(command: &mut Command) {
    let status = command.status().expect("start the command");
    assert!(status.success(), "{command:?} failed: {status}");
}

/// The plain Python loop (`tests/bench/python_loop.py`) over `input`.
fn python_loop(python: &Path, brokers: &str, group: &str, input: &str, output: &str) -> Measured {
    let script = workspace_root().join("tests/bench/python_loop.py");
    let result = Command::new(python)
        .arg(script)
        .args([brokers, group, input, output, &message_count().to_string()])
        .output()
        .expect("start the Python loop");
    assert!(
        result.status.success(),
        "the Python loop failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&result.stdout).expect("the Python loop's report");
    let seconds = |field: &str| Duration::from_secs_f64(report[field].as_f64().expect(field));
    let messages = report["messages"].as_u64().expect("messages") as usize;
    Measured::new(messages, seconds("seconds"), seconds("cpu_seconds"))
}

/// Consume every input and produce it unchanged, as fast as rdkafka goes:
/// auto-commit, no delivery tracking beyond a final flush. Timed from the
/// first record consumed to the last one acknowledged.
fn bare_passthrough(brokers: &str, group: &str, input: &str, output: &str) -> Measured {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut started = None;
    let mut cpu_at_start = Duration::ZERO;
    let mut count = 0;
    while count < message_count() {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        if started.is_none() {
            started = Some(Instant::now());
            cpu_at_start = process_cpu();
        }
        use rdkafka::Message;
        let mut record = BaseRecord::to(output).payload(message.payload().unwrap_or_default());
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
    let elapsed = started.expect("consumed something").elapsed();
    Measured::new(message_count(), elapsed, process_cpu() - cpu_at_start)
}

/// `input` through a sluice stage running `plugin`, timed from the first
/// record received to the last one finished (its output acknowledged).
fn sluice_stage(brokers: &str, plugin: &Path, group: &str, input: &str, output: &str, extra: &str) -> Measured {
    let file = StageFile::new(
        &StageSpec {
            brokers,
            plugin,
            group,
            input,
            output,
            dead_letter: "dlq",
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
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let count = message_count() as u64;
    let timed = time_stage(stage, count, |stage| {
        profiled(|| tokio.block_on(stage.run(Some(count)))).expect("stage runs")
    });
    assert_eq!(timed.summary.outputs, count);
    Measured::new(message_count(), timed.elapsed, timed.cpu)
}
