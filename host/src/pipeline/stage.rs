//! Running one stage: start everything in order, run until told to stop,
//! then stop in the order that keeps every guarantee.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::breaker::Breaker;
use super::consumer_errors::ConsumerErrors;
use super::consumer_loop::{ConsumerLoop, StopWhen, Subscribe, WorkerRegistry};
use super::counters::{StageCounters, StageSummary};
use super::dedup_screen::Dedup;
use super::degraded::DegradedCheck;
use super::fault_injection::FaultInjection;
use super::memory_budget::{MemoryBudget, MemoryUse};
use super::partition_worker::WorkerContext;
use super::prefetch_sizing::PrefetchSizing;
use super::rate_limit::RateLimit;
use super::recreation_budget::RecreationBudget;
use super::retry_policy::RetryPolicy;
use super::startup::{Startup, StepError};
use super::status::StageStatus;
use super::supervision::StageFault;
use crate::config::StageConfig;
use crate::dedup::open_store;
use crate::kafka::{self, BrokerProbe, SinkProducer, SourceConsumer};
use crate::observe::{Health, PartitionBoard, StatusServer};
use crate::plugin::{LoadError, PluginFailure, PluginSlot};

/// Why a stage could not start, or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error("plugin {name} cannot start: {failure}")]
    PluginStart { name: String, failure: PluginFailure },
    #[error("cannot start ({step}): {reason}")]
    Startup { step: &'static str, reason: String },
    #[error("cannot serve the status endpoints on {address}: {source}")]
    StatusServer {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the stage stopped: {0}")]
    Crashed(String),
}

/// How long one attempt at reading the brokers' metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// A stage ready to run: config checked, plugin loaded.
pub struct Stage {
    config: StageConfig,
    plugin: Arc<PluginSlot>,
    bootstrap_servers: String,
    counters: Arc<StageCounters>,
    health: Arc<Health>,
    partitions: Arc<PartitionBoard>,
    shutdown: Arc<AtomicBool>,
    fault_injection: Arc<FaultInjection>,
    memory: Arc<MemoryUse>,
    rate_limit: Option<Arc<RateLimit>>,
    breaker: Option<Arc<Breaker>>,
    degraded: Arc<DegradedCheck>,
}

impl Stage {
    /// `bootstrap_servers` is `config.kafka.brokers`, or the embedded
    /// cluster's address; `plugin` holds the version to start with (and
    /// receives new ones when the plugin is watched). The plugin is
    /// instantiated once here, so a plugin that cannot start fails the stage
    /// before it joins the group.
    pub fn new(config: StageConfig, plugin: Arc<PluginSlot>, bootstrap_servers: String) -> Result<Self, StageError> {
        let first = plugin.current().plugin;
        first
            .worker()
            .warm_up_blocking()
            .map_err(|failure| StageError::PluginStart {
                name: first.name().to_owned(),
                failure,
            })?;
        let health = Arc::new(Health::new(Duration::from_secs(config.observe.stuck_after_seconds)));
        health.set_plugin_loaded();
        // Loaded (and started once, above) before anything connects: it
        // needs no network, and a broken plugin should fail in milliseconds.
        health.init_attempt();
        health.startup_step("plugin loaded", 1, "done");
        let counters: Arc<StageCounters> = Arc::default();
        Ok(Stage {
            plugin,
            bootstrap_servers,
            breaker: config.breaker.clone().map(|settings| Arc::new(Breaker::new(settings))),
            degraded: Arc::new(DegradedCheck::new(config.health.clone(), counters.recent())),
            counters,
            health,
            partitions: Arc::default(),
            shutdown: Arc::default(),
            fault_injection: Arc::default(),
            memory: Arc::new(MemoryUse::new(MemoryBudget::from_mib(config.stage.memory_budget_mib))),
            rate_limit: config
                .stage
                .max_messages_per_second
                .and_then(NonZeroU32::new)
                .map(|limit| Arc::new(RateLimit::new(limit))),
            config,
        })
    }

    /// Faults a test may cause in the running stage.
    #[doc(hidden)]
    pub fn fault_injection(&self) -> Arc<FaultInjection> {
        self.fault_injection.clone()
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
        // First, so health can be watched while the rest starts.
        let _status_server = match self.config.observe.http_listen {
            Some(address) => Some(self.serve_status(address).await?),
            None => None,
        };
        let startup = Startup::new(&self.config.startup, self.health.clone(), self.shutdown.clone());
        let (producer, probe) = self.connect(&startup).await?;
        let producer = Arc::new(producer);
        let input_layout = {
            let probe = &probe;
            let input_topics = &self.config.kafka.input_topics;
            startup
                .step("input partitions", || async move {
                    tokio::task::block_in_place(|| probe.input_layout(input_topics, METADATA_TIMEOUT))
                        .map_err(StepError::from)
                })
                .await?
        };
        self.fault_injection.attach_producer(&producer);
        let kafka_config = &self.config.kafka;
        let stage = &self.config.stage;
        let dedup = match &self.config.dedup {
            Some(config) => {
                let store = startup
                    .step("dedup store", || async {
                        open_store(config).map_err(|error| StepError::Fatal(error.to_string()))
                    })
                    .await?;
                tracing::info!(key = ?config.key, store = %store.describe(), "deduplicating");
                Some(Arc::new(Dedup::new(&stage.name, config, store)))
            }
            None => None,
        };
        let drain_timeout = Duration::from_millis(stage.drain_timeout_ms);
        let dedup_call = self
            .config
            .dedup
            .as_ref()
            .map_or(Duration::ZERO, |dedup| Duration::from_millis(dedup.redis_timeout_ms));
        let context = Arc::new(WorkerContext {
            stage_name: stage.name.clone(),
            output_topic: kafka_config.output_topic.clone(),
            dead_letter_topic: kafka_config.dead_letter_topic.clone(),
            retry: RetryPolicy::from_config(&self.config.retry),
            batch_size: stage.batch_size,
            ordering: stage.ordering,
            calls_per_partition: stage.concurrency_per_partition(),
            max_in_flight: stage.max_in_flight_per_partition,
            drain_timeout,
            // A done-mark write and the release of claims may each be under
            // way or still to come when the stop arrives.
            stop_grace: drain_timeout + 2 * dedup_call + Duration::from_secs(1),
            producer: producer.clone(),
            plugin_calls: Arc::new(Semaphore::new(stage.concurrency)),
            rate_limit: self.rate_limit.clone(),
            breaker: self.breaker.clone(),
            degraded: self.degraded.clone(),
            instances: Arc::default(),
            memory: self.memory.clone(),
            counters: self.counters.clone(),
            dedup,
            plugin: self.plugin.clone(),
            health: self.health.clone(),
            partitions: self.partitions.clone(),
            consumer_errors: Arc::new(ConsumerErrors::new(&kafka_config.recovery)),
            fault: Arc::new(StageFault::default()),
            fault_injection: self.fault_injection.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        let registry = Arc::new(WorkerRegistry::new(context));
        let subscribe: Subscribe = {
            let base_config = kafka::consumer_config(kafka_config, &self.bootstrap_servers);
            let topics = kafka_config.input_topics.clone();
            let registry = registry.clone();
            let sizing = PrefetchSizing::new(probe, self.memory.clone(), input_layout);
            Box::new(move || {
                let mut consumer_config = base_config.clone();
                sizing.apply(&mut consumer_config, &topics);
                SourceConsumer::subscribe(&consumer_config, &topics, registry.clone())
            })
        };
        let consumer = startup
            .step("consumer subscribed", || async {
                subscribe().map_err(|error| StepError::Fatal(format!("cannot create the consumer: {error}")))
            })
            .await?;
        let plugin = self.plugin.current().plugin;
        tracing::info!(
            stage = %stage.name,
            profile = stage.profile.map(crate::config::ConsumerProfile::name),
            plugin = plugin.name(),
            version = %plugin.version(),
            group = %kafka_config.group_id,
            ordering = stage.ordering.name(),
            calls_per_partition = stage.concurrency_per_partition(),
            calls_in_all = stage.concurrency,
            "stage running"
        );

        let consumer_loop = ConsumerLoop {
            registry,
            subscribe,
            shutdown: self.shutdown.clone(),
            stop_when: stop_after_finished.map_or(StopWhen::Told, StopWhen::Finished),
            commit_interval: Duration::from_millis(stage.commit_interval_ms),
            counters: self.counters.clone(),
            recreations: RecreationBudget::new(
                kafka_config.recovery.max_recreations,
                Duration::from_secs(kafka_config.recovery.recreation_window_seconds),
            ),
        };
        let consumer_thread = std::thread::Builder::new()
            .name("sluice-consumer".to_owned())
            .spawn(move || consumer_loop.run(consumer))
            .map_err(|error| StageError::Crashed(format!("cannot start the consumer thread: {error}")))?;
        let outcome = tokio::task::spawn_blocking(move || consumer_thread.join())
            .await
            .map_err(|error| StageError::Crashed(error.to_string()))?
            .map_err(|_| StageError::Crashed("the consumer thread panicked".to_owned()))?;

        // Every finished message is committed by now; what is still queued
        // belongs to unfinished ones, which are handled again anyway, so the
        // flush only saves duplicates and gets the drain timeout, no more.
        let flush_timeout = Duration::from_millis(self.config.stage.drain_timeout_ms);
        let flush = tokio::task::spawn_blocking(move || producer.flush(flush_timeout)).await;
        if let Ok(Err(error)) = flush {
            tracing::warn!(%error, "producer flush did not complete");
        }
        outcome.map_err(StageError::Crashed)?;
        Ok(self.counters.snapshot())
    }

    /// The startup steps up to a working producer: credential files, the
    /// brokers, the topics.
    async fn connect(&self, startup: &Startup) -> Result<(SinkProducer, BrokerProbe), StageError> {
        let kafka_config = &self.config.kafka;
        let mut producer_config = kafka::producer_config(kafka_config, &self.bootstrap_servers);
        // The probe connects with the user's settings as given.
        let probe_config = producer_config.clone();
        let producer_queue_kbytes = self.memory.budget().limit_producer(&mut producer_config);
        self.memory.producer_sized(producer_queue_kbytes);
        let mut properties = kafka_config.properties.clone();
        properties.extend(kafka_config.consumer_properties.clone());
        properties.extend(kafka_config.producer_properties.clone());
        let warn_days = self.config.startup.certificate_warning_days;
        let warnings = startup
            .step("tls and sasl files", || async {
                kafka::check_client_files(&properties, warn_days).map_err(|error| StepError::Fatal(error.to_string()))
            })
            .await?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }

        let owned_probe = startup
            .step("kafka client settings", || async {
                BrokerProbe::new(&probe_config).map_err(StepError::from)
            })
            .await?;
        let probe = &owned_probe;
        let brokers = startup
            .step("broker metadata", || async move {
                tokio::task::block_in_place(|| probe.reach_brokers(METADATA_TIMEOUT)).map_err(StepError::from)
            })
            .await?;
        tracing::info!(servers = %self.bootstrap_servers, brokers, "brokers reachable");

        let mut topics: Vec<&str> = kafka_config.input_topics.iter().map(String::as_str).collect();
        topics.extend([
            kafka_config.output_topic.as_str(),
            kafka_config.dead_letter_topic.as_str(),
        ]);
        let topics = &topics;
        startup
            .step("topics", || async move {
                probe
                    .ensure_topics(topics, kafka_config.create_topics, METADATA_TIMEOUT)
                    .await
                    .map_err(StepError::from)
            })
            .await?;
        let producer = startup
            .step("producer", || async {
                SinkProducer::new(&producer_config)
                    .map_err(|error| StepError::Fatal(format!("cannot create the producer: {error}")))
            })
            .await?;
        Ok((producer, owned_probe))
    }

    async fn serve_status(&self, address: std::net::SocketAddr) -> Result<StatusServer, StageError> {
        crate::observe::metrics::prometheus();
        if let Some(breaker) = &self.breaker {
            breaker.export_state();
        }
        self.degraded.export_state();
        let status = StageStatus {
            stage_name: self.config.stage.name.clone(),
            profile: self.config.stage.profile,
            counters: self.counters.clone(),
            plugin: self.plugin.clone(),
            health: self.health.clone(),
            partitions: self.partitions.clone(),
            memory: self.memory.clone(),
            rate_limit: self.rate_limit.clone(),
            breaker: self.breaker.clone(),
            degraded: self.degraded.clone(),
            ordering: self.config.stage.ordering,
            calls_per_partition: self.config.stage.concurrency_per_partition(),
        };
        StatusServer::start(address, Arc::new(status))
            .await
            .map_err(|source| StageError::StatusServer { address, source })
    }
}
