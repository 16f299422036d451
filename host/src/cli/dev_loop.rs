//! `sluice dev`: the handler author's inner loop. The project is built and
//! run as a stage on the embedded Kafka cluster; every source change is
//! rebuilt and reaches the running stage the way a deploy does, by a new
//! file renamed over the watched plugin path.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::Context;
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use tokio::io::AsyncBufReadExt;

use super::build_plugin::{ToolsArgs, describe};
use super::run_stage::{input_record, print_summary, seed_messages, start_embedded, stop_on_signals};
use crate::config::{self, StageConfig};
use crate::kafka::{self, SinkProducer};
use crate::pipeline::Stage;
use crate::plugin::{PluginRuntime, PluginSettings, PluginSlot, PluginWatcher};
use crate::project::{BuildRequest, BuiltPlugin, Language, ProjectError, build_project, is_handler_source};

#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// The project folder [default: the current one].
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// The handler's language, when the folder holds markers of several.
    #[arg(long, value_enum)]
    lang: Option<Language>,

    /// The stage file to run [default: DIR/stage.toml]. It runs on the
    /// embedded cluster whatever its brokers say, with its plugin path set
    /// to the project's build.
    #[arg(long)]
    stage: Option<PathBuf>,

    #[command(flatten)]
    tools: ToolsArgs,
}

/// How long a rebuilt version may take to be loaded by the stage's watcher.
const RELOAD_WAIT: Duration = Duration::from_secs(60);
/// Source changes closer together than this are one rebuild.
const SOURCE_DEBOUNCE: Duration = Duration::from_millis(300);

pub(crate) fn run(cache_dir: Option<PathBuf>, args: DevArgs) -> anyhow::Result<ExitCode> {
    let tools = args.tools.cache()?;
    let runtime_plugins = Arc::new(PluginRuntime::new(cache_dir.as_deref())?);
    let build = || {
        build_project(BuildRequest {
            dir: args.dir.clone(),
            language: args.lang,
            output: None,
            tools: &tools,
            runtime: &runtime_plugins,
        })
    };
    let first = build()?;
    println!("{}", describe(&first));

    let stage_file = args.stage.clone().unwrap_or_else(|| args.dir.join("stage.toml"));
    let mut config = config::load(&stage_file)?;
    config.kafka.brokers = "embedded".to_owned();
    config.plugin.path = first.path.clone();
    config.plugin.reload.watch = true;
    let seed = config.embedded.seed.take();
    let settings = PluginSettings::of_stage(&config.plugin);
    let plugin = runtime_plugins.load_file(&config.plugin.path, settings.clone())?;
    let slot = Arc::new(PluginSlot::new(plugin, config.plugin.reload));
    let _watcher = PluginWatcher::start(runtime_plugins.clone(), &config.plugin.path, settings, slot.clone())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-worker")
        .build()
        .context("cannot start the async runtime")?;
    let cluster = start_embedded(&config)?;
    let servers = cluster.bootstrap_servers();
    let stopped = Arc::new(AtomicBool::new(false));
    let tail = start_tail(&config, &servers, stopped.clone())?;
    let stage_name = config.stage.name.clone();
    let stage = Stage::new(config.clone(), slot.clone(), servers.clone())?;
    let shutdown = stage.shutdown_flag();
    runtime.spawn(stop_on_signals(shutdown.clone()));
    runtime.spawn(messages_from_stdin(config.clone(), servers.clone()));
    if let Some(seed) = &seed {
        runtime.block_on(seed_messages(&config, &servers, seed))?;
    }
    println!(
        "sluice dev: stage {stage_name} running version {}; watching {} (Ctrl-C stops)",
        first.sha256.get(..12).unwrap_or_default(),
        args.dir.display()
    );

    let dir = std::path::absolute(&args.dir).context("cannot resolve the project folder")?;
    let rebuild_loop = || -> anyhow::Result<()> {
        let (sender, changes) = channel::<DebounceEventResult>();
        let mut debouncer = new_debouncer(SOURCE_DEBOUNCE, None, sender)?;
        debouncer.watch(&dir, RecursiveMode::Recursive)?;
        while !shutdown.load(Ordering::Relaxed) {
            let events = match changes.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(events)) => events,
                Ok(Err(errors)) => {
                    tracing::warn!(?errors, "watching the sources failed");
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let touched = events.iter().any(|event| {
                !matches!(event.event.kind, EventKind::Access(_))
                    && event.event.paths.iter().any(|path| is_handler_source(&dir, path))
            });
            if touched {
                rebuild(&build, &slot, || match &seed {
                    Some(seed) => runtime
                        .handle()
                        .block_on(seed_messages(&config, &servers, seed))
                        .map(drop),
                    None => Ok(()),
                });
            }
        }
        Ok(())
    };
    let summary = std::thread::scope(|scope| {
        let rebuilds = std::thread::Builder::new()
            .name("sluice-dev-build".into())
            .spawn_scoped(scope, rebuild_loop)?;
        let summary = runtime.block_on(stage.run(None));
        shutdown.store(true, Ordering::Relaxed);
        match rebuilds.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("the rebuild thread panicked"),
        }
        Ok(summary?)
    })?;
    stopped.store(true, Ordering::Relaxed);
    let _ = tail.join();
    print_summary(&stage_name, &summary, &slot.stats());
    // The stdin reader blocks in a thread the runtime would otherwise wait
    // for until stdin closes, which a terminal never does.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}

/// Rebuild after a change; once the stage serves the new version, send
/// the sample messages through it again. A failed build leaves the running
/// version serving.
fn rebuild(
    build: &dyn Fn() -> Result<BuiltPlugin, ProjectError>,
    slot: &PluginSlot,
    send_samples: impl FnOnce() -> anyhow::Result<()>,
) {
    println!("sluice dev: sources changed, rebuilding");
    let built = match build() {
        Ok(built) => built,
        Err(error) => return println!("sluice dev: build failed, the running version keeps serving: {error}"),
    };
    println!("{}", describe(&built));
    if !built.rebuilt {
        return;
    }
    let version = &built.sha256[..12];
    if !wait_for_version(slot, &built.sha256) {
        return println!("sluice dev: the stage did not take version {version} (its log says why)");
    }
    println!("sluice dev: version {version} serving; sending the sample messages again");
    if let Err(error) = send_samples() {
        println!("sluice dev: cannot send the sample messages: {error:#}");
    }
}

/// Wait until the stage serves `sha256`; false if it rejected the file or
/// took too long.
fn wait_for_version(slot: &PluginSlot, sha256: &str) -> bool {
    let deadline = Instant::now() + RELOAD_WAIT;
    while Instant::now() < deadline {
        if slot.current().plugin.version().full() == sha256 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Each line typed (or piped) on stdin is a message in the `sluice test`
/// input format, produced to the first input topic.
async fn messages_from_stdin(config: StageConfig, servers: String) {
    let producer = match SinkProducer::new(&kafka::producer_config(&config.kafka, &servers)) {
        Ok(producer) => producer,
        Err(error) => return tracing::warn!(%error, "cannot read messages from stdin"),
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut position = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        position += 1;
        let message = match super::jsonl::parse_message(&line, position) {
            Ok(message) => message,
            Err(reason) => {
                println!("sluice dev: stdin line {position} is not a message: {reason}");
                continue;
            }
        };
        let record = input_record(&config, message);
        if let Err(error) = producer.enqueue(&record).await.await {
            println!("sluice dev: cannot send stdin line {position}: {error}");
        }
    }
}

/// Print every record the stage writes to its output and dead-letter
/// topics, as it is written.
fn start_tail(
    config: &StageConfig,
    servers: &str,
    stopped: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut client = kafka::consumer_config(&config.kafka, servers);
    client
        .set("group.id", format!("{}-sluice-dev", config.kafka.group_id))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("statistics.interval.ms", "0");
    let consumer: BaseConsumer = client.create().context("cannot read the stage's output topics")?;
    let topics = [
        config.kafka.output_topic.as_str(),
        config.kafka.dead_letter_topic.as_str(),
    ];
    consumer
        .subscribe(&topics)
        .context("cannot subscribe to the stage's output topics")?;
    let dead_letter_topic = config.kafka.dead_letter_topic.clone();
    Ok(std::thread::Builder::new()
        .name("sluice-dev-tail".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Some(Ok(record)) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let header = |name: &str| {
                    record
                        .headers()
                        .and_then(|headers| headers.iter().find(|header| header.key == name))
                        .and_then(|header| header.value)
                        .map(|value| String::from_utf8_lossy(value).into_owned())
                };
                let version = header("sluice.plugin.version").unwrap_or_default();
                let version = version.get(..12).unwrap_or(&version).to_owned();
                if record.topic() == dead_letter_topic {
                    println!(
                        "dead-letter  {}/{}@{}  key {}  reason {:?}  (version {version})",
                        header("sluice.source.topic").unwrap_or_default(),
                        header("sluice.source.partition").unwrap_or_default(),
                        header("sluice.source.offset").unwrap_or_default(),
                        shown(record.key()),
                        header("sluice.reason").unwrap_or_default(),
                    );
                } else {
                    println!(
                        "output       {}/{}  key {}  value {}  (version {version})",
                        record.topic(),
                        record.partition(),
                        shown(record.key()),
                        shown(record.payload()),
                    );
                }
            }
        })?)
}

/// Bytes for a person: quoted text, or the leading bytes in hex.
fn shown(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "(none)".to_owned(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => format!("{text:?}"),
            Err(_) => format!(
                "0x{}{}",
                hex::encode(&bytes[..bytes.len().min(16)]),
                if bytes.len() > 16 { "…" } else { "" }
            ),
        },
    }
}
