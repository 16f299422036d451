//! Running one stage: start everything in order, run until told to stop,
//! then stop in the order that keeps every guarantee.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::consumer_loop::{StopWhen, WorkerRegistry, run_consumer_loop};
use super::counters::{StageCounters, StageSummary};
use super::dedup_screen::Dedup;
use super::partition_worker::WorkerContext;
use super::retry_policy::RetryPolicy;
use crate::config::StageConfig;
use crate::dedup::{StoreError, open_store};
use crate::kafka::{self, KafkaError, SinkProducer, SourceConsumer, TopicError};
use crate::plugin::{LoadError, PluginFailure, PluginSlot};

/// Why a stage could not start, or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error("plugin {name} cannot start: {failure}")]
    PluginStart { name: String, failure: PluginFailure },
    #[error("cannot create the Kafka {client}: {source}")]
    Client { client: &'static str, source: KafkaError },
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("cannot open the dedup store: {0}")]
    DedupStore(#[from] StoreError),
    #[error("the stage stopped: {0}")]
    Crashed(String),
}

/// How long startup waits for the brokers' metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the producer to flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// A stage ready to run: config checked, plugin loaded.
pub struct Stage {
    config: StageConfig,
    plugin: Arc<PluginSlot>,
    bootstrap_servers: String,
    counters: Arc<StageCounters>,
    shutdown: Arc<AtomicBool>,
}

impl Stage {
    /// `bootstrap_servers` is `config.kafka.brokers`, or the embedded
    /// cluster's address; `plugin` holds the version to start with (and
    /// receives new ones when the plugin is watched). The plugin is
    /// instantiated once here, so a plugin that cannot start fails the stage
    /// before it joins the group.
    pub fn new(config: StageConfig, plugin: Arc<PluginSlot>, bootstrap_servers: String) -> Result<Self, StageError> {
        let first = plugin.current().plugin;
        first.worker().warm_up().map_err(|failure| StageError::PluginStart {
            name: first.name().to_owned(),
            failure,
        })?;
        Ok(Stage {
            config,
            plugin,
            bootstrap_servers,
            counters: Arc::default(),
            shutdown: Arc::default(),
        })
    }

    /// Live totals, readable while the stage runs.
    pub fn counters(&self) -> Arc<StageCounters> {
        self.counters.clone()
    }

    /// Setting this flag stops the stage gracefully: stop fetching, finish
    /// in-flight messages, commit, flush.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Run until the shutdown flag is set (or, with `stop_after_finished`,
    /// until that many messages are finished). Must be called from within a
    /// multi-threaded Tokio runtime.
    pub async fn run(self, stop_after_finished: Option<u64>) -> Result<StageSummary, StageError> {
        let kafka_config = &self.config.kafka;
        let producer_config = kafka::producer_config(kafka_config, &self.bootstrap_servers);
        let producer = Arc::new(
            SinkProducer::new(&producer_config).map_err(|source| StageError::Client {
                client: "producer",
                source,
            })?,
        );

        let mut topics: Vec<&str> = kafka_config.input_topics.iter().map(String::as_str).collect();
        topics.extend([
            kafka_config.output_topic.as_str(),
            kafka_config.dead_letter_topic.as_str(),
        ]);
        let admin_config = kafka::producer_config(kafka_config, &self.bootstrap_servers);
        kafka::ensure_topics(
            producer.client(),
            &admin_config,
            &topics,
            kafka_config.create_topics,
            METADATA_TIMEOUT,
        )
        .await?;
        tracing::info!(brokers = %self.bootstrap_servers, topics = %topics.join(", "), "brokers reachable and topics present");

        let stage = &self.config.stage;
        let dedup = match &self.config.dedup {
            Some(config) => {
                let store = open_store(config)?;
                tracing::info!(key = ?config.key, store = %store.describe(), "deduplicating");
                Some(Arc::new(Dedup::new(&stage.name, config, store)))
            }
            None => None,
        };
        let context = Arc::new(WorkerContext {
            stage_name: stage.name.clone(),
            output_topic: kafka_config.output_topic.clone(),
            dead_letter_topic: kafka_config.dead_letter_topic.clone(),
            retry: RetryPolicy::from_config(&self.config.retry),
            batch_size: stage.batch_size,
            max_in_flight: stage.max_in_flight_per_partition,
            drain_timeout: Duration::from_millis(stage.drain_timeout_ms),
            producer: producer.clone(),
            plugin_calls: Arc::new(Semaphore::new(stage.concurrency)),
            counters: self.counters.clone(),
            dedup,
            plugin: self.plugin.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        let registry = Arc::new(WorkerRegistry::new(context));
        let consumer_config = kafka::consumer_config(kafka_config, &self.bootstrap_servers);
        let consumer = SourceConsumer::subscribe(&consumer_config, &kafka_config.input_topics, registry.clone())
            .map_err(|source| StageError::Client {
                client: "consumer",
                source,
            })?;
        let plugin = self.plugin.current().plugin;
        tracing::info!(
            stage = %stage.name,
            plugin = plugin.name(),
            version = %plugin.version(),
            group = %kafka_config.group_id,
            "stage running"
        );

        let stop_when = stop_after_finished.map_or(StopWhen::Told, StopWhen::Finished);
        let commit_interval = Duration::from_millis(stage.commit_interval_ms);
        let shutdown = self.shutdown.clone();
        let counters = self.counters.clone();
        let consumer_thread = std::thread::Builder::new()
            .name("sluice-consumer".to_owned())
            .spawn(move || run_consumer_loop(consumer, registry, shutdown, stop_when, commit_interval, counters))
            .map_err(|error| StageError::Crashed(format!("cannot start the consumer thread: {error}")))?;
        let outcome = tokio::task::spawn_blocking(move || consumer_thread.join())
            .await
            .map_err(|error| StageError::Crashed(error.to_string()))?
            .map_err(|_| StageError::Crashed("the consumer thread panicked".to_owned()))?;

        let flush = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
        if let Ok(Err(error)) = flush {
            tracing::warn!(%error, "producer flush did not complete");
        }
        outcome.map_err(StageError::Crashed)?;
        Ok(self.counters.snapshot())
    }
}
