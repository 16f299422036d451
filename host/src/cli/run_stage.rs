use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use super::jsonl;
use crate::config::{self, StageConfig};
use crate::kafka::{self, EmbeddedCluster, OutgoingRecord, SinkProducer};
use crate::pipeline::{Stage, StageSummary};
use crate::plugin::{PluginRuntime, PluginSettings, PluginSlot, PluginWatcher, ReloadStats};

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The stage file (TOML). `SLUICE_*` environment variables override its
    /// keys, e.g. SLUICE_KAFKA_BROKERS.
    stage: PathBuf,
}

/// Partitions per topic on the embedded cluster unless the stage file says.
const EMBEDDED_PARTITIONS: i32 = 4;

/// Run one stage until SIGINT/SIGTERM (or, on the embedded cluster with a
/// seed file, until every seeded message is finished), then print totals.
pub(crate) fn run(cache_dir: Option<PathBuf>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(&args.stage)?;
    let cache_dir = config.plugin.cache_dir.clone().or(cache_dir);
    // Keep the runtime alive while the stage runs: it drives call deadlines.
    let plugin_runtime = Arc::new(PluginRuntime::new(cache_dir.as_deref())?);
    let plugin_settings = PluginSettings::of_stage(&config.plugin);
    let plugin = plugin_runtime.load_file(&config.plugin.path, plugin_settings.clone())?;
    tracing::info!(plugin = plugin.name(), version = %plugin.version(), cached = plugin.loaded_from_cache(), "plugin loaded");
    let plugin_slot = Arc::new(PluginSlot::new(plugin, config.plugin.reload));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-worker")
        .build()
        .context("cannot start the async runtime")?;

    let (_embedded, bootstrap_servers) = if config.kafka.is_embedded() {
        let cluster = start_embedded(&config)?;
        let servers = cluster.bootstrap_servers();
        (Some(cluster), servers)
    } else {
        (None, config.kafka.brokers.clone())
    };
    let seeded = match &config.embedded.seed {
        Some(seed) if config.kafka.is_embedded() => {
            Some(runtime.block_on(seed_messages(&config, &bootstrap_servers, seed))?)
        }
        _ => None,
    };

    let stage_name = config.stage.name.clone();
    let _watcher = match config.plugin.reload.watch {
        true => Some(PluginWatcher::start(
            plugin_runtime,
            &config.plugin.path,
            plugin_settings,
            plugin_slot.clone(),
        )?),
        false => None,
    };
    let stage = Stage::new(config, plugin_slot.clone(), bootstrap_servers)?;
    runtime.spawn(stop_on_signals(stage.shutdown_flag()));
    let summary = runtime.block_on(stage.run(seeded))?;
    print_summary(&stage_name, &summary, &plugin_slot.stats());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn start_embedded(config: &StageConfig) -> anyhow::Result<EmbeddedCluster> {
    let kafka = &config.kafka;
    let mut topics: Vec<&str> = kafka.input_topics.iter().map(String::as_str).collect();
    topics.extend([kafka.output_topic.as_str(), kafka.dead_letter_topic.as_str()]);
    let partitions = config.embedded.partitions.unwrap_or(EMBEDDED_PARTITIONS);
    let cluster = EmbeddedCluster::start(&topics, partitions).context("cannot start the embedded Kafka cluster")?;
    tracing::info!(brokers = %cluster.bootstrap_servers(), partitions, "embedded Kafka cluster started");
    Ok(cluster)
}

/// Produce the seed file's messages to the first input topic (or the input
/// topic a line names), keeping each line's partition.
pub(super) async fn seed_messages(config: &StageConfig, bootstrap_servers: &str, seed: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(seed).with_context(|| format!("cannot read seed file {}", seed.display()))?;
    let producer = SinkProducer::new(&kafka::producer_config(&config.kafka, bootstrap_servers))?;
    let mut deliveries = Vec::new();
    for (index, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let message = jsonl::parse_message(line, deliveries.len() as i64)
            .map_err(|reason| anyhow::anyhow!("{}: line {}: {reason}", seed.display(), index + 1))?;
        let record = input_record(config, message);
        deliveries.push(producer.enqueue(&record).await);
    }
    let count = deliveries.len() as u64;
    futures::future::try_join_all(deliveries)
        .await
        .context("cannot seed the embedded cluster")?;
    tracing::info!(messages = count, file = %seed.display(), "seeded the input topic");
    Ok(count)
}

/// A `sluice test`-format message as a record for the stage's input: to
/// the input topic it names, else the first one.
pub(super) fn input_record(config: &StageConfig, message: crate::plugin::Message) -> OutgoingRecord {
    let topic = match config.kafka.input_topics.contains(&message.topic) {
        true => message.topic,
        false => config.kafka.input_topics[0].clone(),
    };
    OutgoingRecord {
        topic,
        key: message.key,
        value: message.value,
        headers: message
            .headers
            .into_iter()
            .map(|header| (header.name, header.value))
            .collect(),
    }
}

/// First SIGINT/SIGTERM: stop gracefully. Second: exit at once; nothing
/// unfinished was committed, so at-least-once still holds.
pub(super) async fn stop_on_signals(shutdown: Arc<AtomicBool>) {
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        tracing::warn!("cannot listen for SIGTERM; stop the stage with Ctrl-C");
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested: finishing in-flight messages (signal again to exit at once)");
    shutdown.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::warn!("second signal: exiting now; unfinished messages stay uncommitted and will be consumed again");
    std::process::exit(130);
}

pub(super) fn print_summary(stage: &str, summary: &StageSummary, reloads: &ReloadStats) {
    println!("stage {stage} stopped");
    println!("  received        {}", summary.received);
    println!("  processed       {}", summary.finished);
    println!("  outputs         {}", summary.outputs);
    println!("  filtered        {}", summary.filtered);
    println!("  retried         {}", summary.retries);
    println!("  failed attempts {}", summary.failed_attempts);
    println!("  dead-lettered   {}", summary.dead_lettered);
    println!("  deduplicated    {}", summary.deduplicated);
    if summary.store_errors > 0 {
        println!("  store errors    {}", summary.store_errors);
    }
    if summary.claim_waits > 0 {
        println!("  claim waits     {}", summary.claim_waits);
    }
    if summary.claim_takeovers > 0 {
        println!("  claims taken    {}", summary.claim_takeovers);
    }
    if summary.claims_lost > 0 {
        println!("  claims lost     {}", summary.claims_lost);
    }
    if *reloads != ReloadStats::default() {
        println!("  plugin reloads  {}", reloads.reloads);
        println!("  rejected files  {}", reloads.rejected);
        println!("  rolled back     {}", reloads.rolled_back);
    }
}
