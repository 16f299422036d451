//! Reading and validating a stage file.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use redis::IntoConnectionInfo;

use super::env::{EnvOverride, NotUnicode};
use super::profile::ConsumerProfile;
use super::stage::{
    BreakerSection, DedupKeyKind, DedupSection, HealthSection, MAX_CONCURRENCY, MessageOrder, StageConfig,
};
use crate::capability::keyvalue::BackendKind;
use crate::plugin::PluginLimits;

/// Why a stage file cannot be used. Each message names the file or key at
/// fault and what would make it right.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("stage file {path}: no such file")]
    NotFound { path: PathBuf },
    #[error("stage file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("stage file {path}: `{key}` {reason}")]
    BadValue {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error(
        "stage file {path}: environment variable {variable} is not valid UTF-8; \
         a stage key set from the environment must be text"
    )]
    NotUnicode { path: PathBuf, variable: String },
}

/// Read the stage file at `path`, apply `SLUICE_*` environment overrides and
/// check every value. Relative paths inside the file (the plugin, the seed
/// file) are resolved against the file's directory.
pub fn load(path: &Path) -> Result<StageConfig, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::NotFound { path: path.to_owned() });
    }
    let mut figment = Figment::from(Toml::file_exact(path));
    let overrides = EnvOverride::from_environment().map_err(|NotUnicode { variable }| ConfigError::NotUnicode {
        path: path.to_owned(),
        variable,
    })?;
    for variable in overrides {
        figment = figment.merge(variable);
    }
    if let Some(profile) = chosen_profile(&figment, path)? {
        figment = figment.join(profile.defaults());
    }
    let mut config: StageConfig = figment.extract().map_err(|error| ConfigError::Invalid {
        path: path.to_owned(),
        message: describe(error),
    })?;

    let base = path.parent().unwrap_or(Path::new("."));
    config.plugin.path = base.join(&config.plugin.path);
    if let Some(seed) = &mut config.embedded.seed {
        *seed = base.join(&*seed);
    }
    if let Some(cache_dir) = &mut config.plugin.cache_dir {
        *cache_dir = base.join(&*cache_dir);
    }
    if let Some(ca_file) = config
        .plugin
        .capabilities
        .http
        .as_mut()
        .and_then(|http| http.ca_file.as_mut())
    {
        *ca_file = base.join(&*ca_file);
    }
    for secret in config.plugin.capabilities.secrets.values_mut() {
        if let Some(file) = &mut secret.file {
            *file = base.join(&*file);
        }
    }
    if let Some(keyvalue) = &mut config.plugin.capabilities.keyvalue {
        keyvalue.namespace = config.stage.name.clone();
        // The stage's Redis (a single one or a cluster), unless the grant
        // names its own or asks for memory.
        if keyvalue.redis_url.is_none()
            && keyvalue.backend != Some(BackendKind::Memory)
            && let Some(dedup) = &config.dedup
        {
            keyvalue.redis_url = dedup.redis_url.clone();
            keyvalue.redis_cluster = dedup.redis_cluster;
        }
    }
    validate(&config).map_err(|(key, reason)| ConfigError::BadValue {
        path: path.to_owned(),
        key,
        reason,
    })?;
    config
        .plugin
        .capabilities
        .validate(config.plugin.limits.deadline_ms)
        .map_err(|error| ConfigError::Invalid {
            path: path.to_owned(),
            message: format!("`{}` {}", error.key, error.reason),
        })?;
    Ok(config)
}

/// The consumer profile the file (or `SLUICE_STAGE_PROFILE`) names, read
/// before the rest so its presets can sit under the user's own keys.
fn chosen_profile(figment: &Figment, path: &Path) -> Result<Option<ConsumerProfile>, ConfigError> {
    let Some(value) = figment.find_value("stage.profile").ok() else {
        return Ok(None);
    };
    value.deserialize().map(Some).map_err(|_| ConfigError::BadValue {
        path: path.to_owned(),
        key: "stage.profile",
        reason: match value.as_str() {
            Some(name) => format!("{name:?} is not a profile; use {}", ConsumerProfile::NAMES),
            None => format!("must be one of {}", ConsumerProfile::NAMES),
        },
    })
}

/// All of figment's errors, one per line, with the key path each concerns.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            let source = error
                .metadata
                .as_ref()
                .map(|metadata| metadata.name.to_string())
                .filter(|name| name.starts_with("environment"))
                .map(|name| format!(" (from {name})"))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", error.kind)
            } else {
                format!("`{key}`: {}{source}", error.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

type Invalid = (&'static str, String);

/// Ten years in seconds: the longest a dedup mark may last. Longer is no
/// use to anyone, and the in-memory store's cache (moka) panics on a time
/// to live past a thousand years.
const MAX_DEDUP_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// One hour in milliseconds: the longest any wait, interval or timeout of
/// the stage may be. Longer looks like a stall to every operator.
const HOUR_MS: u64 = 3_600_000;

/// One day in seconds.
const DAY_SECONDS: u64 = 86_400;

/// Every key is checked against an upper bound as well as a lower one: a
/// value too large to mean anything (a ten-thousand-year TTL, a billion
/// messages per batch) would otherwise panic deep inside the stage, in a
/// `Duration`, an allocation or a dependency, instead of being named here.
fn validate(config: &StageConfig) -> Result<(), Invalid> {
    let stage = &config.stage;
    check_name("stage.name", &stage.name)?;
    // Each batch is allocated up front and handed to one plugin call.
    between("stage.batch_size", stage.batch_size, 1, 10_000)?;
    between("stage.concurrency", stage.concurrency, 1, MAX_CONCURRENCY)?;
    between(
        "stage.max_in_flight_per_partition",
        stage.max_in_flight_per_partition,
        1,
        1_000_000,
    )?;
    between("stage.commit_interval_ms", stage.commit_interval_ms, 1, HOUR_MS)?;
    between("stage.drain_timeout_ms", stage.drain_timeout_ms, 0, HOUR_MS)?;
    // Below 64 MiB a partition's prefetch is too small to keep up; a
    // terabyte is more than any one process should hold in records.
    between("stage.memory_budget_mib", stage.memory_budget_mib, 64, 1_048_576)?;
    if let Some(limit) = stage.max_messages_per_second {
        between("stage.max_messages_per_second", limit, 1, 10_000_000)?;
    }
    if let Some(calls) = stage.max_concurrency_per_partition {
        between("stage.max_concurrency_per_partition", calls, 1, MAX_CONCURRENCY)?;
        if stage.ordering == MessageOrder::Partition && calls > 1 {
            return Err((
                "stage.max_concurrency_per_partition",
                format!(
                    "is {calls}, but ordering = \"partition\" handles one call of a partition at a time; \
                     set stage.ordering = \"key\" or \"none\" to run several"
                ),
            ));
        }
    }

    let plugin = &config.plugin;
    if !plugin.path.is_file() {
        return Err(("plugin.path", format!("{}: no such file", plugin.path.display())));
    }
    validate_plugin_limits(&plugin.limits)?;
    let reload = &plugin.reload;
    between("plugin.reload.debounce_ms", reload.debounce_ms, 1, 60_000)?;
    between("plugin.reload.trial_calls", reload.trial_calls, 0, 1_000_000)?;
    between_float(
        "plugin.reload.rollback_failure_rate",
        reload.rollback_failure_rate,
        0.0,
        1.0,
    )
    .map_err(|(key, reason)| {
        (
            key,
            format!("{reason}; 0.5 rolls back a version when more than half of its trial calls fail"),
        )
    })?;

    let kafka = &config.kafka;
    if !kafka.is_embedded() {
        check_brokers(&kafka.brokers)?;
    }
    if kafka.group_id.trim().is_empty() {
        return Err(("kafka.group_id", "must not be empty".to_owned()));
    }
    if kafka.input_topics.is_empty() {
        return Err(("kafka.input_topics", "must name at least one topic".to_owned()));
    }
    for topic in &kafka.input_topics {
        check_topic("kafka.input_topics", topic)?;
    }
    check_topic("kafka.output_topic", &kafka.output_topic)?;
    check_topic("kafka.dead_letter_topic", &kafka.dead_letter_topic)?;
    for (key, topic) in [
        ("kafka.output_topic", &kafka.output_topic),
        ("kafka.dead_letter_topic", &kafka.dead_letter_topic),
    ] {
        if kafka.input_topics.contains(topic) {
            return Err((
                key,
                format!("`{topic}` is also an input topic; the stage would consume its own records"),
            ));
        }
    }
    if let Some(create) = &kafka.create_topics {
        between("kafka.create_topics.partitions", create.partitions, 1, 10_000)?;
        between(
            "kafka.create_topics.replication_factor",
            create.replication_factor,
            1,
            32,
        )?;
    }

    let recovery = &kafka.recovery;
    between(
        "kafka.recovery.recreate_after_errors",
        recovery.recreate_after_errors,
        0,
        1_000_000,
    )?;
    between(
        "kafka.recovery.error_gap_seconds",
        recovery.error_gap_seconds,
        1,
        DAY_SECONDS,
    )?;
    between("kafka.recovery.max_recreations", recovery.max_recreations, 1, 1000)?;
    between(
        "kafka.recovery.recreation_window_seconds",
        recovery.recreation_window_seconds,
        1,
        DAY_SECONDS,
    )?;

    let observe = &config.observe;
    between(
        "observe.stuck_after_seconds",
        observe.stuck_after_seconds,
        1,
        DAY_SECONDS,
    )?;
    if observe.stuck_after_seconds.saturating_mul(1000) <= stage.drain_timeout_ms {
        return Err((
            "observe.stuck_after_seconds",
            format!(
                "must be longer than stage.drain_timeout_ms ({} ms): a rebalance may wait that long without polling",
                stage.drain_timeout_ms
            ),
        ));
    }

    let startup = &config.startup;
    between("startup.max_attempts", startup.max_attempts, 1, 1000)?;
    between("startup.initial_backoff_ms", startup.initial_backoff_ms, 0, HOUR_MS)?;
    between("startup.max_backoff_ms", startup.max_backoff_ms, 0, HOUR_MS)?;
    not_above_max_backoff(
        "startup.initial_backoff_ms",
        "startup.max_backoff_ms",
        startup.initial_backoff_ms,
        startup.max_backoff_ms,
    )?;
    between(
        "startup.certificate_warning_days",
        startup.certificate_warning_days,
        0,
        3650,
    )?;

    let retry = &config.retry;
    between("retry.max_attempts", retry.max_attempts, 1, 1000)?;
    between("retry.initial_backoff_ms", retry.initial_backoff_ms, 0, HOUR_MS)?;
    between("retry.max_backoff_ms", retry.max_backoff_ms, 0, HOUR_MS)?;
    not_above_max_backoff(
        "retry.initial_backoff_ms",
        "retry.max_backoff_ms",
        retry.initial_backoff_ms,
        retry.max_backoff_ms,
    )?;
    between_float("retry.multiplier", retry.multiplier, 1.0, 100.0)?;
    between_float("retry.jitter", retry.jitter, 0.0, 1.0)?;

    if let Some(dedup) = &config.dedup {
        validate_dedup(dedup)?;
    }
    if let Some(breaker) = &config.breaker {
        validate_breaker(breaker)?;
    }
    validate_health(&config.health)?;

    let embedded = &config.embedded;
    if !kafka.is_embedded() && (embedded.seed.is_some() || embedded.partitions.is_some()) {
        return Err(("embedded", "is only used when kafka.brokers = \"embedded\"".to_owned()));
    }
    if let Some(partitions) = embedded.partitions {
        // An in-process mock cluster: every partition costs threads and
        // memory in this process.
        between("embedded.partitions", partitions, 1, 256)?;
    }
    if let Some(seed) = &embedded.seed
        && !seed.is_file()
    {
        return Err(("embedded.seed", format!("{}: no such file", seed.display())));
    }
    Ok(())
}

fn validate_plugin_limits(limits: &PluginLimits) -> Result<(), Invalid> {
    // A component's linear memory is 32-bit: 4 GiB is all it can address.
    between("plugin.limits.memory_mib", limits.memory_mib, 1, 4096)?;
    between("plugin.limits.deadline_ms", limits.deadline_ms, 1, 10 * 60_000)?;
    between(
        "plugin.limits.batch_deadline_cap_ms",
        limits.batch_deadline_cap_ms,
        1,
        HOUR_MS,
    )
}

/// An initial backoff may not exceed its table's `max_backoff_ms`: the
/// first wait would be cut to the cap, which is not what was written.
fn not_above_max_backoff(
    key: &'static str,
    max_key: &'static str,
    initial_ms: u64,
    max_ms: u64,
) -> Result<(), Invalid> {
    if initial_ms > max_ms {
        return Err((key, format!("({initial_ms}) is larger than {max_key} ({max_ms})")));
    }
    Ok(())
}

fn validate_breaker(breaker: &BreakerSection) -> Result<(), Invalid> {
    // At 0 the breaker would open on the first window of successes.
    between_float("breaker.failure_share", breaker.failure_share, 0.01, 1.0)?;
    between("breaker.window_seconds", breaker.window_seconds, 1, 3600)?;
    between("breaker.min_attempts", breaker.min_attempts, 1, 1_000_000)?;
    if breaker.failures.is_empty() {
        return Err((
            "breaker.failures",
            "is empty, so the breaker could never open; list what counts as failed, \
             e.g. [\"retry\", \"trap\", \"deadline\"], or remove [breaker]"
                .to_owned(),
        ));
    }
    between("breaker.probe_backoff_ms", breaker.probe_backoff_ms, 1, HOUR_MS)?;
    between("breaker.max_probe_backoff_ms", breaker.max_probe_backoff_ms, 1, HOUR_MS)?;
    not_above_max_backoff(
        "breaker.probe_backoff_ms",
        "breaker.max_probe_backoff_ms",
        breaker.probe_backoff_ms,
        breaker.max_probe_backoff_ms,
    )
}

fn validate_health(health: &HealthSection) -> Result<(), Invalid> {
    between("health.window_seconds", health.window_seconds, 1, 3600)?;
    if let Some(share) = health.max_failure_share {
        between_float("health.max_failure_share", share, 0.0, 1.0)?;
    }
    if let Some(latency) = health.max_call_latency_ms {
        between("health.max_call_latency_ms", latency, 1, HOUR_MS)?;
    }
    if let Some(share) = health.max_dead_letter_share {
        between_float("health.max_dead_letter_share", share, 0.0, 1.0)?;
    }
    Ok(())
}

fn validate_dedup(dedup: &DedupSection) -> Result<(), Invalid> {
    match (dedup.key, &dedup.header) {
        (DedupKeyKind::Header, None) => {
            return Err((
                "dedup.header",
                "is required with dedup.key = \"header\": name the header holding the message id".to_owned(),
            ));
        }
        (DedupKeyKind::Header, Some(header)) if header.is_empty() => {
            return Err(("dedup.header", "must not be empty".to_owned()));
        }
        (kind, Some(_)) if kind != DedupKeyKind::Header => {
            return Err(("dedup.header", "is only used with dedup.key = \"header\"".to_owned()));
        }
        _ => {}
    }
    between("dedup.ttl_seconds", dedup.ttl_seconds, 1, MAX_DEDUP_TTL_SECONDS)?;
    between("dedup.redis_timeout_ms", dedup.redis_timeout_ms, 1, 300_000)?;
    // Each in-memory mark costs on the order of a hundred bytes.
    between("dedup.memory_capacity", dedup.memory_capacity, 1, 100_000_000)?;
    validate_claim_lease(dedup)?;
    match &dedup.redis_url {
        None if dedup.redis_cluster => {
            return Err((
                "dedup.redis_cluster",
                "needs dedup.redis_url to name the cluster's nodes".to_owned(),
            ));
        }
        None => {}
        Some(urls) if urls.is_empty() => return Err(("dedup.redis_url", "must name at least one Redis".to_owned())),
        Some(urls) if urls.len() > 1 && !dedup.redis_cluster => {
            return Err((
                "dedup.redis_url",
                "names several Redis servers; set dedup.redis_cluster = true for a cluster, or give one".to_owned(),
            ));
        }
        Some(urls) => {
            for url in urls {
                if let Err(error) = url.as_str().into_connection_info() {
                    return Err((
                        "dedup.redis_url",
                        format!("{url:?} is not a Redis URL (redis://host:port/db): {error}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A claim is renewed every third of its lease, and a renewal may take up
/// to the Redis timeout: with at least three timeouts per lease, one
/// renewal can time out and the next still comes before the lease ends.
/// At most an hour: a copy whose holder died waits out the whole lease.
fn validate_claim_lease(dedup: &DedupSection) -> Result<(), Invalid> {
    const SHORTEST_MS: u64 = 1000;
    const LONGEST_MS: u64 = 3_600_000;
    let lease = dedup.claim_lease_ms;
    let renewals_fit = dedup.redis_timeout_ms.saturating_mul(3);
    if lease < SHORTEST_MS.max(renewals_fit) {
        return Err((
            "dedup.claim_lease_ms",
            format!(
                "must be at least {SHORTEST_MS} and at least 3 times dedup.redis_timeout_ms ({renewals_fit}), so a renewal that times out leaves time for the next; got {lease}"
            ),
        ));
    }
    if lease > LONGEST_MS {
        return Err((
            "dedup.claim_lease_ms",
            format!(
                "must be at most {LONGEST_MS} (an hour): a copy whose holder died waits out the whole lease; got {lease}"
            ),
        ));
    }
    Ok(())
}

/// An integer key within `minimum..=maximum`.
fn between<T: PartialOrd + Display>(key: &'static str, value: T, minimum: T, maximum: T) -> Result<(), Invalid> {
    if value < minimum || value > maximum {
        return Err((key, format!("must be between {minimum} and {maximum}, got {value}")));
    }
    Ok(())
}

/// A floating-point key within `minimum..=maximum`; NaN is never within.
fn between_float(key: &'static str, value: f64, minimum: f64, maximum: f64) -> Result<(), Invalid> {
    if !(minimum..=maximum).contains(&value) {
        return Err((
            key,
            format!(
                "must be between {} and {}, got {}",
                float(minimum),
                float(maximum),
                float(value)
            ),
        ));
    }
    Ok(())
}

/// A float as a user wrote it: `3` rather than `3.0`, `1e300` rather than
/// three hundred digits.
fn float(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.0}")
    } else {
        format!("{value:?}")
    }
}

fn check_name(key: &'static str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err((
            key,
            format!("{name:?} must be non-empty and use only letters, digits, `.`, `_` and `-`"),
        ));
    }
    Ok(())
}

/// Kafka's own rule: 1 to 249 characters of `[a-zA-Z0-9._-]`.
fn check_topic(key: &'static str, topic: &str) -> Result<(), Invalid> {
    if topic.len() > 249 || topic == "." || topic == ".." {
        return Err((key, format!("{topic:?} is not a valid Kafka topic name")));
    }
    check_name(key, topic).map_err(|_| {
        (
            key,
            format!("{topic:?} is not a valid Kafka topic name (use letters, digits, `.`, `_`, `-`)"),
        )
    })
}

fn check_brokers(brokers: &str) -> Result<(), Invalid> {
    let bad = |entry: &str, why: &str| {
        Err((
            "kafka.brokers",
            format!("{entry:?} is not a broker address: {why} (expected host:port[,host:port...] or \"embedded\")"),
        ))
    };
    if brokers.trim().is_empty() {
        return bad(brokers, "it is empty");
    }
    for entry in brokers.split(',').map(str::trim) {
        let address = entry.split_once("://").map_or(entry, |(_, rest)| rest);
        let Some((host, port)) = address.rsplit_once(':') else {
            return bad(entry, "it has no port");
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return bad(entry, "the host is missing or has spaces");
        }
        if port.parse::<u16>().map_or(true, |port| port == 0) {
            return bad(entry, "the port is not a number from 1 to 65535");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::{ConfigError, load};
    use crate::config::{ConsumerRecoverySection, RetrySection, StageConfig, StartupSection};
    use crate::plugin::{PluginLimits, ReloadSettings};

    /// The documented stage file, whose `# Bounds: A to B.` lines are the
    /// user's word on what each key accepts.
    const EXAMPLE: &str = include_str!("../../../examples/stage.toml");

    /// Every numeric key of a stage file. Each must have its bounds
    /// documented in the example and enforced by the loader.
    const NUMERIC_KEYS: [&str; 51] = [
        "breaker.failure_share",
        "breaker.window_seconds",
        "breaker.min_attempts",
        "breaker.probe_backoff_ms",
        "breaker.max_probe_backoff_ms",
        "health.window_seconds",
        "health.max_failure_share",
        "health.max_call_latency_ms",
        "health.max_dead_letter_share",
        "stage.batch_size",
        "stage.max_concurrency_per_partition",
        "stage.max_messages_per_second",
        "stage.concurrency",
        "stage.max_in_flight_per_partition",
        "stage.commit_interval_ms",
        "stage.drain_timeout_ms",
        "stage.memory_budget_mib",
        "plugin.limits.memory_mib",
        "plugin.limits.deadline_ms",
        "plugin.limits.batch_deadline_cap_ms",
        "plugin.reload.debounce_ms",
        "plugin.reload.trial_calls",
        "plugin.reload.rollback_failure_rate",
        "plugin.capabilities.http.timeout_ms",
        "plugin.capabilities.http.max_response_bytes",
        "plugin.capabilities.http.max_concurrent_requests",
        "plugin.capabilities.keyvalue.ttl_seconds",
        "plugin.capabilities.keyvalue.max_value_bytes",
        "plugin.capabilities.keyvalue.timeout_ms",
        "plugin.capabilities.keyvalue.memory_max_bytes",
        "kafka.create_topics.partitions",
        "kafka.create_topics.replication_factor",
        "kafka.recovery.recreate_after_errors",
        "kafka.recovery.error_gap_seconds",
        "kafka.recovery.max_recreations",
        "kafka.recovery.recreation_window_seconds",
        "retry.max_attempts",
        "retry.initial_backoff_ms",
        "retry.max_backoff_ms",
        "retry.multiplier",
        "retry.jitter",
        "startup.max_attempts",
        "startup.initial_backoff_ms",
        "startup.max_backoff_ms",
        "startup.certificate_warning_days",
        "observe.stuck_after_seconds",
        "dedup.ttl_seconds",
        "dedup.redis_timeout_ms",
        "dedup.memory_capacity",
        "dedup.claim_lease_ms",
        "embedded.partitions",
    ];

    /// A stage file as tables of `key = value` lines (values are TOML
    /// literals), starting from the smallest valid one.
    #[derive(Clone, Debug)]
    struct Doc(BTreeMap<String, BTreeMap<String, String>>);

    impl Doc {
        fn minimal() -> Doc {
            let mut doc = Doc(BTreeMap::new());
            doc.set("stage.name", "\"bounded\"");
            doc.set("plugin.path", "\"plugin.wasm\"");
            doc.set("kafka.brokers", "\"localhost:9092\"");
            doc.set("kafka.group_id", "\"g\"");
            doc.set("kafka.input_topics", "\"in\"");
            doc.set("kafka.output_topic", "\"out\"");
            doc.set("kafka.dead_letter_topic", "\"dlq\"");
            doc
        }

        /// Set `path` (`table.key`; the table may be dotted) to `value`.
        fn set(&mut self, path: &str, value: &str) {
            let (table, key) = path.rsplit_once('.').expect("a key path has a table");
            self.0
                .entry(table.to_owned())
                .or_default()
                .insert(key.to_owned(), value.to_owned());
        }

        fn to_toml(&self) -> String {
            let mut text = String::new();
            for (table, keys) in &self.0 {
                text.push_str(&format!("[{table}]\n"));
                for (key, value) in keys {
                    text.push_str(&format!("{key} = {value}\n"));
                }
                text.push('\n');
            }
            text
        }
    }

    /// Load `text` as a stage file next to a plugin file.
    fn load_text(text: impl AsRef<[u8]>) -> Result<StageConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("plugin.wasm"), b"not read by load").expect("plugin file");
        let path = dir.path().join("stage.toml");
        std::fs::write(&path, text).expect("stage file");
        load(&path)
    }

    fn load_doc(doc: &Doc) -> Result<StageConfig, ConfigError> {
        load_text(doc.to_toml())
    }

    /// `(key, minimum, maximum)` from the example's `# Bounds:` lines, each
    /// belonging to the next key line (written or commented out) after it.
    fn documented_bounds() -> Vec<(String, String, String)> {
        let mut table = String::new();
        let mut pending: Option<(String, String)> = None;
        let mut bounds = Vec::new();
        for line in EXAMPLE.lines() {
            let bare = line.trim_start_matches('#').trim();
            if let Some(range) = line.strip_prefix("# Bounds: ") {
                let range = range.split(" (").next().unwrap().trim_end_matches('.');
                let (low, high) = range.split_once(" to ").expect("`A to B`");
                pending = Some((low.to_owned(), high.to_owned()));
            } else if let Some(name) = bare.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
                table = name.to_owned();
            } else if let Some((key, _)) = bare.split_once(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && let Some((low, high)) = pending.take()
            {
                bounds.push((format!("{table}.{key}"), low, high));
            }
        }
        bounds
    }

    /// What a key needs around it to be checked on its own: its table's
    /// required keys, and room in the keys it is compared with.
    fn context(key: &str) -> Doc {
        let mut doc = Doc::minimal();
        match key {
            "stage.drain_timeout_ms" => doc.set("observe.stuck_after_seconds", "86400"),
            "observe.stuck_after_seconds" => doc.set("stage.drain_timeout_ms", "0"),
            "retry.initial_backoff_ms" => doc.set("retry.max_backoff_ms", "3600000"),
            "retry.max_backoff_ms" => doc.set("retry.initial_backoff_ms", "0"),
            "startup.initial_backoff_ms" => doc.set("startup.max_backoff_ms", "3600000"),
            "startup.max_backoff_ms" => doc.set("startup.initial_backoff_ms", "0"),
            "breaker.probe_backoff_ms" => doc.set("breaker.max_probe_backoff_ms", "3600000"),
            "breaker.max_probe_backoff_ms" => doc.set("breaker.probe_backoff_ms", "1"),
            // Only key and no order run several calls of a partition.
            "stage.max_concurrency_per_partition" => doc.set("stage.ordering", "\"key\""),
            // A claim lease must cover three Redis timeouts.
            "dedup.claim_lease_ms" => doc.set("dedup.redis_timeout_ms", "1"),
            "dedup.redis_timeout_ms" => doc.set("dedup.claim_lease_ms", "3600000"),
            _ => {}
        }
        if key.starts_with("dedup.") {
            doc.set("dedup.key", "\"message-key\"");
        }
        if key.starts_with("kafka.create_topics.") {
            doc.set("kafka.create_topics.partitions", "1");
        }
        if key.starts_with("plugin.capabilities.http.") {
            doc.set(
                "plugin.capabilities.http.allowed_origins",
                "\"https://api.example.com\"",
            );
            // A request's timeout is bounded by the call's deadline.
            doc.set("plugin.limits.deadline_ms", "600000");
        }
        if key.starts_with("plugin.capabilities.keyvalue.") {
            doc.set("plugin.capabilities.keyvalue.backend", "\"memory\"");
            doc.set("plugin.limits.deadline_ms", "600000");
        }
        if key.starts_with("embedded.") {
            doc.set("kafka.brokers", "\"embedded\"");
        }
        doc
    }

    #[test]
    fn every_numeric_key_has_documented_bounds() {
        let documented: BTreeSet<String> = documented_bounds().into_iter().map(|(key, _, _)| key).collect();
        let expected: BTreeSet<String> = NUMERIC_KEYS.iter().map(|key| key.to_string()).collect();
        assert_eq!(documented, expected);
    }

    #[test]
    fn the_documented_bounds_are_the_enforced_ones() {
        for (key, low, high) in documented_bounds() {
            let is_float = [
                "retry.multiplier",
                "retry.jitter",
                "plugin.reload.rollback_failure_rate",
                "breaker.failure_share",
                "health.max_failure_share",
                "health.max_dead_letter_share",
            ]
            .contains(&key.as_str());
            let literal = |text: &str| -> String {
                if is_float {
                    format!("{:?}", text.parse::<f64>().unwrap())
                } else {
                    text.to_owned()
                }
            };
            let with = |value: &str| {
                let mut doc = context(&key);
                doc.set(&key, value);
                load_doc(&doc)
            };
            for inside in [&low, &high] {
                if let Err(error) = with(&literal(inside)) {
                    panic!("{key} = {inside} is documented as allowed: {error}");
                }
            }
            // The message names the key, the bound and the value.
            // `dedup.claim_lease_ms` words each end apart, as its lower bound
            // also depends on `dedup.redis_timeout_ms`.
            let refused = |error: &str, bound: &str, value: &str| {
                error.contains(&format!("`{key}` must be between {low} and {high}, got {value}"))
                    || key == "dedup.claim_lease_ms"
                        && error.contains(&format!("`{key}` must be at "))
                        && error.contains(bound)
                        && error.contains(&format!("got {value}"))
            };
            let (below, above) = if is_float {
                let (low, high) = (low.parse::<f64>().unwrap(), high.parse::<f64>().unwrap());
                (format!("{:?}", low - 0.5), format!("{:?}", high + 0.5))
            } else {
                let (low, high) = (low.parse::<i64>().unwrap(), high.parse::<i64>().unwrap());
                ((low - 1).to_string(), (high + 1).to_string())
            };
            let error = with(&above).expect_err(&format!("{key} = {above}")).to_string();
            assert!(refused(&error, &high, &above), "{key}: {error}");
            let error = with(&below).expect_err(&format!("{key} = {below}")).to_string();
            if low != "0" || is_float {
                assert!(refused(&error, &low, &below), "{key}: {error}");
            } else {
                // Unsigned: -1 is refused by type, still naming the key.
                assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
            }
        }
    }

    #[test]
    fn the_keyvalue_store_takes_the_stage_name_and_its_redis_single_or_cluster() {
        let mut doc = Doc::minimal();
        doc.set("plugin.capabilities.keyvalue.buckets", "\"default\"");
        let config = load_doc(&doc).expect("memory");
        let keyvalue = config.plugin.capabilities.keyvalue.expect("granted");
        assert_eq!(keyvalue.namespace, "bounded");
        assert_eq!(keyvalue.redis_url, None, "no Redis anywhere: memory");

        doc.set("dedup.key", "\"message-key\"");
        doc.set("dedup.redis_url", "\"redis://10.0.0.5:6379/2\"");
        let config = load_doc(&doc).expect("the stage's Redis");
        let keyvalue = config.plugin.capabilities.keyvalue.expect("granted");
        assert_eq!(keyvalue.redis_url, Some(vec!["redis://10.0.0.5:6379/2".to_owned()]));
        assert!(!keyvalue.redis_cluster);

        doc.set(
            "dedup.redis_url",
            "[\"redis://10.0.0.5:7000\", \"redis://10.0.0.6:7000\"]",
        );
        doc.set("dedup.redis_cluster", "true");
        let config = load_doc(&doc).expect("the stage's cluster");
        let keyvalue = config.plugin.capabilities.keyvalue.expect("granted");
        assert_eq!(
            keyvalue.redis_url,
            Some(vec![
                "redis://10.0.0.5:7000".to_owned(),
                "redis://10.0.0.6:7000".to_owned()
            ])
        );
        assert!(keyvalue.redis_cluster, "the cluster, as a cluster");

        doc.set("plugin.capabilities.keyvalue.redis_url", "\"redis://10.0.0.9:6379\"");
        let config = load_doc(&doc).expect("a Redis of its own");
        let keyvalue = config.plugin.capabilities.keyvalue.expect("granted");
        assert_eq!(keyvalue.redis_url, Some(vec!["redis://10.0.0.9:6379".to_owned()]));
        assert!(!keyvalue.redis_cluster, "its own setting, not dedup's");
    }

    #[test]
    fn the_example_stage_file_loads_with_the_defaults_it_shows() {
        let text = EXAMPLE.replace("../plugins/dist/rust/uppercase.wasm", "plugin.wasm");
        let config = load_text(text).unwrap_or_else(|error| panic!("{error}"));
        let plain = load_doc(&Doc::minimal()).expect("minimal stage");
        assert_eq!(config.stage.batch_size, plain.stage.batch_size);
        assert_eq!(
            config.stage.max_in_flight_per_partition,
            plain.stage.max_in_flight_per_partition
        );
        assert_eq!(config.stage.commit_interval_ms, plain.stage.commit_interval_ms);
        assert_eq!(config.stage.drain_timeout_ms, plain.stage.drain_timeout_ms);
        assert_eq!(config.plugin.limits, PluginLimits::default());
        assert_eq!(config.plugin.reload, ReloadSettings::default());
        assert_eq!(config.kafka.recovery, ConsumerRecoverySection::default());
        assert_eq!(config.retry, RetrySection::default());
        assert_eq!(config.startup, StartupSection::default());
        assert_eq!(config.observe, plain.observe);
    }

    #[test]
    fn values_that_used_to_panic_later_are_refused_with_the_key_and_bound() {
        let cases = [
            (
                "retry.multiplier",
                "1e300",
                "`retry.multiplier` must be between 1 and 100, got 1e300",
            ),
            (
                "retry.multiplier",
                "inf",
                "`retry.multiplier` must be between 1 and 100, got inf",
            ),
            ("retry.jitter", "nan", "`retry.jitter` must be between 0 and 1, got NaN"),
            (
                "dedup.ttl_seconds",
                "9223372036854775807",
                "`dedup.ttl_seconds` must be between 1 and 315360000, got 9223372036854775807",
            ),
            (
                "stage.batch_size",
                "9223372036854775807",
                "`stage.batch_size` must be between 1 and 10000, got 9223372036854775807",
            ),
            (
                "stage.concurrency",
                "4611686018427387904",
                "`stage.concurrency` must be between 1 and 1024, got 4611686018427387904",
            ),
            (
                "observe.stuck_after_seconds",
                "9223372036854775807",
                "`observe.stuck_after_seconds` must be between 1 and 86400, got 9223372036854775807",
            ),
            // A negative count was once accepted: `-1 as u64` is huge.
            (
                "kafka.create_topics.partitions",
                "-1",
                "`kafka.create_topics.partitions` must be between 1 and 10000, got -1",
            ),
            (
                "embedded.partitions",
                "-5",
                "`embedded.partitions` must be between 1 and 256, got -5",
            ),
        ];
        for (key, value, expected) in cases {
            let mut doc = context(key);
            doc.set(key, value);
            let error = load_doc(&doc).expect_err(key).to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    /// The in-memory dedup store is a moka cache, which panics on a time
    /// to live it cannot add to its clock; the largest the loader accepts
    /// must build, store and find a mark.
    #[test]
    fn the_longest_dedup_ttl_works_in_the_in_memory_cache() {
        let ttl = std::time::Duration::from_secs(super::MAX_DEDUP_TTL_SECONDS);
        let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::builder()
            .max_capacity(100_000_000)
            .time_to_live(ttl)
            .build();
        cache.insert(7, ());
        assert!(cache.contains_key(&7));
    }

    #[test]
    fn an_initial_backoff_above_the_maximum_is_refused_for_startup_too() {
        let mut doc = Doc::minimal();
        doc.set("startup.initial_backoff_ms", "20000");
        let error = load_doc(&doc).unwrap_err().to_string();
        assert!(
            error.contains("`startup.initial_backoff_ms` (20000) is larger than startup.max_backoff_ms (10000)"),
            "{error}"
        );
    }

    #[test]
    fn a_batch_deadline_cap_below_the_message_deadline_is_allowed() {
        // The batch deadline never falls below one message's, so a cap
        // under `deadline_ms` is harmless and raising `deadline_ms` alone
        // (as the slow-handler profile does) never breaks a stage file.
        let mut doc = Doc::minimal();
        doc.set("plugin.limits.deadline_ms", "30000");
        doc.set("plugin.limits.batch_deadline_cap_ms", "1000");
        let config = load_doc(&doc).expect("valid");
        assert_eq!(config.plugin.limits.batch_deadline_ms(10), 30_000);
    }

    // ---- property tests: any input, no panic, errors that say where ----

    /// Tables and leaf keys of the stage file (the leaves are all keys but
    /// the librdkafka and plugin config tables' free-form entries).
    const TABLES: [&str; 18] = [
        "stage",
        "plugin",
        "plugin.limits",
        "plugin.reload",
        "plugin.config",
        "kafka",
        "kafka.create_topics",
        "kafka.properties",
        "kafka.consumer_properties",
        "kafka.producer_properties",
        "kafka.recovery",
        "retry",
        "dedup",
        "embedded",
        "observe",
        "startup",
        "breaker",
        "health",
    ];

    const OTHER_KEYS: [&str; 20] = [
        "stage.name",
        "stage.profile",
        "stage.ordering",
        "breaker.failures",
        "plugin.path",
        "plugin.cache_dir",
        "plugin.reload.watch",
        "kafka.brokers",
        "kafka.group_id",
        "kafka.input_topics",
        "kafka.output_topic",
        "kafka.dead_letter_topic",
        "dedup.key",
        "dedup.header",
        "dedup.on_store_error",
        "dedup.redis_url",
        "dedup.redis_cluster",
        "embedded.seed",
        "observe.http_listen",
        "kafka.properties.acks",
    ];

    /// A TOML basic string holding `text`, escaped as TOML (not Rust) does.
    fn toml_string(text: &str) -> String {
        let mut quoted = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    }

    fn toml_float(value: f64) -> String {
        match value {
            v if v.is_nan() => "nan".to_owned(),
            v if v == f64::INFINITY => "inf".to_owned(),
            v if v == f64::NEG_INFINITY => "-inf".to_owned(),
            v => format!("{v:?}"),
        }
    }

    /// A TOML value of any type, biased towards the edges numbers have.
    fn any_value() -> impl Strategy<Value = String> {
        let edges = prop::sample::select(vec![
            0_i64,
            -1,
            1,
            255,
            65_536,
            i32::MAX as i64 + 1,
            u32::MAX as i64 + 1,
            i64::MAX,
            i64::MIN,
        ]);
        let float_edges = prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -0.0,
            f64::MIN_POSITIVE,
            0.5,
            100.0,
        ]);
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            edges.prop_map(|n| n.to_string()),
            any::<f64>().prop_map(toml_float),
            float_edges.prop_map(toml_float),
            any::<bool>().prop_map(|b| b.to_string()),
            "[a-z0-9:._/-]{0,16}".prop_map(|s| toml_string(&s)),
            any::<String>().prop_map(|s| toml_string(&s)),
            prop::sample::select(vec![
                "[]",
                "[1, 2]",
                "[\"in\", \"other\"]",
                "{ a = 1 }",
                "1979-05-27T07:32:00Z",
                "\"slow-handler\"",
                "\"header\"",
                "\"embedded\"",
                "\"127.0.0.1:0\"",
            ])
            .prop_map(str::to_owned),
        ]
    }

    /// A real key, or a made-up one in a real table.
    fn any_key() -> impl Strategy<Value = String> {
        let real: Vec<&str> = NUMERIC_KEYS.iter().chain(OTHER_KEYS.iter()).copied().collect();
        prop_oneof![
            4 => prop::sample::select(real).prop_map(str::to_owned),
            1 => (prop::sample::select(TABLES.to_vec()), "[a-z_]{1,12}")
                .prop_map(|(table, key)| format!("{table}.{key}")),
        ]
    }

    /// The key paths an error may name: tables, real keys and the keys the
    /// case wrote.
    fn nameable(written: &[(String, String)]) -> BTreeSet<String> {
        TABLES
            .iter()
            .chain(NUMERIC_KEYS.iter())
            .chain(OTHER_KEYS.iter())
            .map(|key| key.to_string())
            .chain(written.iter().map(|(key, _)| key.clone()))
            .collect()
    }

    /// Whether `name` is one of `allowed`, or a path inside one: figment
    /// names the variant of an enum written as a table (`dedup.key.a` for
    /// `dedup.key = { a = 1 }`).
    fn names_a_key(name: &str, allowed: &BTreeSet<String>) -> bool {
        allowed.iter().any(|key| {
            name == key
                || name
                    .strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// The texts between backticks in `message`.
    fn quoted(message: &str) -> Vec<&str> {
        message.split('`').skip(1).step_by(2).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any value of any type at real (and made-up) keys: the loader
        /// returns, and an error names a key.
        #[test]
        fn any_values_at_any_keys_load_or_name_a_key(
            written in prop::collection::vec((any_key(), any_value()), 1..6),
        ) {
            let mut doc = Doc::minimal();
            for (key, value) in &written {
                doc.set(key, value);
            }
            if let Err(error) = load_doc(&doc) {
                let message = error.to_string();
                let allowed = nameable(&written);
                prop_assert!(
                    matches!(error, ConfigError::Invalid { .. } | ConfigError::BadValue { .. }),
                    "{message}"
                );
                prop_assert!(
                    quoted(&message).iter().any(|name| names_a_key(name, &allowed)),
                    "no key named in: {message}\n{}",
                    doc.to_toml()
                );
            }
        }

        /// Arbitrary bytes, alone or after a valid file: the loader returns.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            after_valid in any::<bool>(),
        ) {
            let mut text = if after_valid { Doc::minimal().to_toml().into_bytes() } else { Vec::new() };
            text.extend_from_slice(&bytes);
            if let Err(error) = load_text(&text) {
                prop_assert!(error.to_string().starts_with("stage file "), "{error}");
            }
        }
    }

    #[test]
    fn a_table_where_a_choice_belongs_is_named_by_its_key() {
        let mut doc = Doc::minimal();
        doc.set("dedup.key", "{ a = 1 }");
        let error = load_doc(&doc).unwrap_err().to_string();
        assert!(error.contains("`dedup.key.a`: unknown variant"), "{error}");
    }

    #[test]
    fn a_syntax_error_is_reported_with_its_place() {
        let error = load_text("[stage]\nname = \"x\"\n[plugin\n").unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
    }
}
