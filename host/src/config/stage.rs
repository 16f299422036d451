//! The shape of a stage file. Every key is documented for users in
//! `examples/stage.toml`, with its bounds (checked in `load.rs`); keep the
//! three in step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::profile::ConsumerProfile;
use crate::plugin::{PluginLimits, ReloadSettings};

/// One pipeline stage: what to consume, which plugin decides, where results go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub stage: StageSection,
    pub plugin: PluginSection,
    pub kafka: KafkaSection,
    #[serde(default)]
    pub retry: RetrySection,
    /// Skip messages already handled; off without this section.
    pub dedup: Option<DedupSection>,
    /// Stop taking messages while most attempts fail; off without this
    /// section.
    pub breaker: Option<BreakerSection>,
    /// When the stage counts as degraded; every check is off unless set.
    #[serde(default)]
    pub health: HealthSection,
    /// Only for `kafka.brokers = "embedded"`.
    #[serde(default)]
    pub embedded: EmbeddedSection,
    /// Health, metrics and stats endpoints.
    #[serde(default)]
    pub observe: ObserveSection,
    /// How startup retries what may come right by itself.
    #[serde(default)]
    pub startup: StartupSection,
}

/// Startup steps that fail for a reason that may pass (a broker not up
/// yet, a timeout) are retried with exponential backoff; a reason that
/// cannot pass (missing certificate, refused credentials) stops at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StartupSection {
    /// Attempts per step in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Warn when a certificate the client uses expires within this many days.
    pub certificate_warning_days: u32,
}

impl Default for StartupSection {
    fn default() -> Self {
        StartupSection {
            max_attempts: 10,
            initial_backoff_ms: 500,
            max_backoff_ms: 10_000,
            certificate_warning_days: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSection {
    /// Serve `/healthz`, `/readyz`, `/metrics` and `/stats` on this
    /// address (`host:port`); off without it.
    pub http_listen: Option<std::net::SocketAddr>,
    /// `/healthz` fails once the consumer loop has not polled for this
    /// long, in seconds; must exceed `stage.drain_timeout_ms`, which a
    /// rebalance may legitimately wait out.
    #[serde(default = "default_stuck_after_seconds")]
    pub stuck_after_seconds: u64,
}

impl Default for ObserveSection {
    fn default() -> Self {
        ObserveSection {
            http_listen: None,
            stuck_after_seconds: default_stuck_after_seconds(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSection {
    /// Names the stage in logs, metrics and dead-letter headers.
    pub name: String,
    /// Preset defaults for the kind of work the stage does; keys set in
    /// the file win over the profile's.
    #[serde(default)]
    pub profile: Option<ConsumerProfile>,
    /// Messages handed to the plugin per `handle-batch` call, at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Plugin calls running at once across all partitions; defaults to the
    /// number of CPUs.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Messages a partition may have handled but not yet acknowledged by the
    /// broker; past this the partition waits for acknowledgements.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_per_partition: usize,
    /// How often finished offsets are committed, in milliseconds.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// On shutdown or revocation, how long in-flight work may take to finish
    /// before it is abandoned (abandoned work is not committed, so it is
    /// consumed again later), in milliseconds.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Memory for records, in MiB: librdkafka's prefetch (half), messages
    /// taken and not yet finished (three eighths) and the producer's queue
    /// (one eighth); see `pipeline::memory_budget`.
    #[serde(default = "default_memory_budget_mib")]
    pub memory_budget_mib: u64,
    /// Messages handed to the plugin per second across the stage's
    /// partitions, retries included; unlimited without it. Waiting for the
    /// limit is backpressure: the partitions stop fetching.
    #[serde(default)]
    pub max_messages_per_second: Option<u32>,
    /// Which messages of a partition are handled in order with each other;
    /// the rest may be handled at once.
    #[serde(default)]
    pub ordering: MessageOrder,
    /// Plugin calls one partition may have running at once. Only `"key"`
    /// and `"none"` ordering run more than one; defaults to 16 for them.
    /// `concurrency` still bounds the calls of the whole stage.
    #[serde(default)]
    pub max_concurrency_per_partition: Option<usize>,
}

impl StageSection {
    /// `max_concurrency_per_partition` with its default for the ordering.
    pub fn concurrency_per_partition(&self) -> usize {
        match self.ordering {
            MessageOrder::Partition => 1,
            MessageOrder::Key | MessageOrder::None => self.max_concurrency_per_partition.unwrap_or(16),
        }
    }
}

/// `stage.ordering`: what order a partition's messages are handled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageOrder {
    /// One message (or batch) of a partition at a time, in offset order.
    #[default]
    Partition,
    /// Messages with the same key in offset order, different keys at once;
    /// each keyless message on its own.
    Key,
    /// Every message on its own; a retry holds back only itself.
    None,
}

impl MessageOrder {
    pub fn name(self) -> &'static str {
        match self {
            MessageOrder::Partition => "partition",
            MessageOrder::Key => "key",
            MessageOrder::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// The plugin file; relative paths are relative to the stage file.
    pub path: PathBuf,
    #[serde(default)]
    pub limits: PluginLimits,
    /// Values the plugin reads through its `config` import. Numbers and
    /// booleans are passed as their text.
    #[serde(default, deserialize_with = "scalar_map")]
    pub config: BTreeMap<String, String>,
    /// Where compiled plugins are cached; defaults to the user's cache dir.
    pub cache_dir: Option<PathBuf>,
    /// Hot reload of new versions of the plugin file, and their rollback.
    #[serde(default)]
    pub reload: ReloadSettings,
    /// What the plugin may reach beyond its memory; nothing by default.
    #[serde(default)]
    pub capabilities: crate::capability::CapabilityGrants,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `host:port[,host:port...]`, or `embedded` for an in-process cluster.
    pub brokers: String,
    pub group_id: String,
    #[serde(deserialize_with = "string_or_list")]
    pub input_topics: Vec<String>,
    /// Where outputs without a topic of their own go.
    pub output_topic: String,
    pub dead_letter_topic: String,
    /// Create missing topics at startup with these settings; without it,
    /// missing topics are an error.
    pub create_topics: Option<CreateTopics>,
    /// librdkafka properties for both consumer and producer (TLS, SASL...).
    #[serde(default, deserialize_with = "scalar_map")]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    #[serde(default, deserialize_with = "scalar_map")]
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    #[serde(default, deserialize_with = "scalar_map")]
    pub producer_properties: BTreeMap<String, String>,
    /// When the consumer is given up on and created afresh.
    #[serde(default)]
    pub recovery: ConsumerRecoverySection,
}

/// A consumer reporting nothing but errors for a long run is closed and a
/// new one subscribed, without restarting the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerRecoverySection {
    /// Errors in a row (no record fetched, no partition assigned between
    /// them) that make the consumer be recreated; 0 never recreates on a
    /// count (a fatal client error still does).
    pub recreate_after_errors: u32,
    /// An error more than this many seconds after the previous one starts
    /// a new run, so rare errors never add up.
    pub error_gap_seconds: u64,
    /// Recreations allowed within `recreation_window_seconds`; each waits
    /// twice as long as the one before (1 s, 2 s, 4 s ... up to 60 s), and
    /// one more ends the stage with a non-zero exit and the cause.
    pub max_recreations: u32,
    pub recreation_window_seconds: u64,
}

impl Default for ConsumerRecoverySection {
    fn default() -> Self {
        ConsumerRecoverySection {
            recreate_after_errors: 20,
            error_gap_seconds: 60,
            max_recreations: 5,
            recreation_window_seconds: 600,
        }
    }
}

impl KafkaSection {
    /// Whether the stage runs on an in-process mock cluster.
    pub fn is_embedded(&self) -> bool {
        self.brokers.trim() == "embedded"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopics {
    pub partitions: i32,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
}

/// How a message that asked for a retry (or failed) is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts in all, the first included; after the last the message is
    /// dead-lettered with "retries exhausted: <last reason>".
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Each retry waits this many times longer than the one before.
    pub multiplier: f64,
    /// Random spread applied to each wait, as a fraction (0.2 = ±20%), so
    /// many stages retrying at once do not move in lockstep.
    pub jitter: f64,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// The failure-flood breaker: when a dependency of the handler is down,
/// every message would be retried until it is dead-lettered. Once the share
/// of failed attempts over the window reaches `failure_share`, the stage
/// stops handing messages to the plugin on every partition and probes with
/// one message at a time, on a backoff, until one succeeds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// Open at this share of failed attempts (0 to 1) in the window.
    pub failure_share: f64,
    /// The window the share is taken over, in seconds.
    pub window_seconds: u64,
    /// No judgement on fewer attempts than this in the window.
    pub min_attempts: u32,
    /// Which outcomes of an attempt count as failed.
    pub failures: Vec<AttemptFailure>,
    /// The first probe's wait after opening, in milliseconds; doubled after
    /// each failed probe, up to `max_probe_backoff_ms`.
    pub probe_backoff_ms: u64,
    pub max_probe_backoff_ms: u64,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            failure_share: 0.5,
            window_seconds: 30,
            min_attempts: 20,
            failures: vec![AttemptFailure::Retry, AttemptFailure::Trap, AttemptFailure::Deadline],
            probe_backoff_ms: 1_000,
            max_probe_backoff_ms: 30_000,
        }
    }
}

/// An outcome of a plugin attempt that the breaker may count as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptFailure {
    /// The plugin asked for a retry (a dependency answered 503, timed out).
    Retry,
    Trap,
    Deadline,
    MemoryLimit,
    ContractViolation,
    HostPanic,
}

/// Thresholds over a recent window past which `/readyz` and `/stats` call
/// the stage degraded (it stays ready): trouble an operator should see
/// before it becomes an outage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// The window the checks look at, in seconds.
    pub window_seconds: u64,
    /// Degraded at this share (0 to 1) of attempts that failed (trapped,
    /// ran out of time or memory, or asked for a retry).
    pub max_failure_share: Option<f64>,
    /// Degraded when the 99th percentile of plugin call durations reaches
    /// this, in milliseconds.
    pub max_call_latency_ms: Option<u64>,
    /// Degraded at this share (0 to 1) of finished messages that were
    /// dead-lettered.
    pub max_dead_letter_share: Option<f64>,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            window_seconds: 60,
            max_failure_share: None,
            max_call_latency_ms: None,
            max_dead_letter_share: None,
        }
    }
}

/// Deduplication: a message whose key is already marked done is skipped
/// (its offset finished, no plugin call, no outputs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSection {
    /// What identifies a message: `header` (the header named by
    /// `dedup.header`), `message-key`, `content-hash` (of key and value) or
    /// `coordinates` (topic, partition, offset: a redelivery after a crash
    /// is skipped).
    pub key: DedupKeyKind,
    /// The header holding the message id, for `key = "header"`.
    pub header: Option<String>,
    /// How long a done-mark lasts, in seconds; after it, the same key is
    /// handled again.
    #[serde(default = "default_dedup_ttl_seconds")]
    pub ttl_seconds: u64,
    /// What to do while the store is unreachable: `pause` (stop taking
    /// messages and retry with backoff until it returns) or `process`
    /// (handle messages unguarded, and write no marks).
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Redis address(es), `redis://host:port/db` (`rediss://` for TLS). One
    /// for a single Redis; with `redis_cluster`, seed nodes of a cluster.
    /// Without it, done-marks live in this process's memory.
    #[serde(default, deserialize_with = "optional_string_or_list")]
    pub redis_url: Option<Vec<String>>,
    #[serde(default)]
    pub redis_cluster: bool,
    /// Redis commands taking longer than this fail (and are retried), in
    /// milliseconds.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// Most keys the in-memory store keeps; the oldest go first.
    #[serde(default = "default_memory_capacity")]
    pub memory_capacity: u64,
    /// How long a worker's claim on a key lasts without renewal, in
    /// milliseconds. A worker claims a message's key before handling it
    /// and renews the claim every third of this while it works, so a copy
    /// of the message on another partition or host waits instead of being
    /// handled too. If the worker dies, the copy waits at most this long
    /// before taking over.
    #[serde(default = "default_claim_lease_ms")]
    pub claim_lease_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DedupKeyKind {
    Header,
    MessageKey,
    ContentHash,
    Coordinates,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStoreError {
    #[default]
    Pause,
    Process,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSection {
    /// Partitions of each topic the embedded cluster creates (default 4).
    pub partitions: Option<i32>,
    /// A JSON Lines file of messages (the `sluice test` format) produced to
    /// the first input topic before the stage starts; relative to the
    /// stage file. With it, the stage stops once every seeded message is
    /// finished and prints a summary.
    pub seed: Option<PathBuf>,
}

fn default_batch_size() -> usize {
    100
}

/// The most plugin calls a stage may run at once. A waiting call holds no
/// thread, but each holds an instance (up to `plugin.limits.memory_mib`),
/// so the cap keeps a typo from promising terabytes.
pub(crate) const MAX_CONCURRENCY: usize = 1024;

fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .min(MAX_CONCURRENCY)
}

fn default_max_in_flight() -> usize {
    10_000
}

fn default_commit_interval_ms() -> u64 {
    1000
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

fn default_memory_budget_mib() -> u64 {
    1024
}

fn default_stuck_after_seconds() -> u64 {
    60
}

fn default_replication_factor() -> i32 {
    1
}

fn default_dedup_ttl_seconds() -> u64 {
    7 * 24 * 3600
}

fn default_redis_timeout_ms() -> u64 {
    2000
}

fn default_memory_capacity() -> u64 {
    1_000_000
}

fn default_claim_lease_ms() -> u64 {
    30_000
}

pub(crate) fn optional_string_or_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    string_or_list(deserializer).map(Some)
}

/// TOML scalars of any type, kept as text: `retries = 3` and
/// `retries = "3"` mean the same to a plugin.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

fn scalar_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Text(text) => text,
                Scalar::Integer(number) => number.to_string(),
                Scalar::Float(number) => number.to_string(),
                Scalar::Boolean(flag) => flag.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// A list, or one comma-separated string (handy in environment variables).
pub(crate) fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|topic| !topic.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(list) => list,
    })
}
