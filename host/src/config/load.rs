//! Reading and validating a stage file.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use redis::IntoConnectionInfo;

use super::env::{EnvOverride, NotUnicode};
use super::profile::ConsumerProfile;
use super::stage::{DedupKeyKind, DedupSection, StageConfig};

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
    validate(&config).map_err(|(key, reason)| ConfigError::BadValue {
        path: path.to_owned(),
        key,
        reason,
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

fn validate(config: &StageConfig) -> Result<(), Invalid> {
    let stage = &config.stage;
    check_name("stage.name", &stage.name)?;
    at_least("stage.batch_size", stage.batch_size as u64, 1)?;
    at_least("stage.concurrency", stage.concurrency as u64, 1)?;
    at_least(
        "stage.max_in_flight_per_partition",
        stage.max_in_flight_per_partition as u64,
        1,
    )?;
    at_least("stage.commit_interval_ms", stage.commit_interval_ms, 1)?;

    let plugin = &config.plugin;
    if !plugin.path.is_file() {
        return Err(("plugin.path", format!("{}: no such file", plugin.path.display())));
    }
    at_least("plugin.limits.memory_mib", plugin.limits.memory_mib, 1)?;
    at_least("plugin.limits.deadline_ms", plugin.limits.deadline_ms, 1)?;
    at_least(
        "plugin.limits.batch_deadline_cap_ms",
        plugin.limits.batch_deadline_cap_ms,
        1,
    )?;
    let reload = &plugin.reload;
    at_least("plugin.reload.debounce_ms", reload.debounce_ms, 1)?;
    if !(0.0..=1.0).contains(&reload.rollback_failure_rate) {
        return Err((
            "plugin.reload.rollback_failure_rate",
            format!(
                "must be a fraction between 0 and 1 (got {}); 0.5 rolls back a version when more than half of its trial calls fail",
                reload.rollback_failure_rate
            ),
        ));
    }

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
        at_least("kafka.create_topics.partitions", create.partitions as u64, 1)?;
        at_least(
            "kafka.create_topics.replication_factor",
            create.replication_factor as u64,
            1,
        )?;
    }

    at_least("kafka.recovery.error_gap_seconds", kafka.recovery.error_gap_seconds, 1)?;
    at_least(
        "kafka.recovery.max_recreations",
        u64::from(kafka.recovery.max_recreations),
        1,
    )?;
    at_least(
        "kafka.recovery.recreation_window_seconds",
        kafka.recovery.recreation_window_seconds,
        1,
    )?;

    let observe = &config.observe;
    if observe.stuck_after_seconds.saturating_mul(1000) <= stage.drain_timeout_ms {
        return Err((
            "observe.stuck_after_seconds",
            format!(
                "must be longer than stage.drain_timeout_ms ({} ms): a rebalance may wait that long without polling",
                stage.drain_timeout_ms
            ),
        ));
    }

    at_least("startup.max_attempts", config.startup.max_attempts.into(), 1)?;

    let retry = &config.retry;
    at_least("retry.max_attempts", retry.max_attempts.into(), 1)?;
    if !(retry.multiplier >= 1.0 && retry.multiplier.is_finite()) {
        return Err((
            "retry.multiplier",
            format!("must be at least 1.0, got {}", retry.multiplier),
        ));
    }
    if !(0.0..=1.0).contains(&retry.jitter) {
        return Err((
            "retry.jitter",
            format!("must be between 0.0 and 1.0, got {}", retry.jitter),
        ));
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        return Err((
            "retry.initial_backoff_ms",
            format!(
                "({}) is larger than retry.max_backoff_ms ({})",
                retry.initial_backoff_ms, retry.max_backoff_ms
            ),
        ));
    }

    if let Some(dedup) = &config.dedup {
        validate_dedup(dedup)?;
    }

    let embedded = &config.embedded;
    if !kafka.is_embedded() && (embedded.seed.is_some() || embedded.partitions.is_some()) {
        return Err(("embedded", "is only used when kafka.brokers = \"embedded\"".to_owned()));
    }
    if let Some(partitions) = embedded.partitions {
        at_least("embedded.partitions", partitions as u64, 1)?;
    }
    if let Some(seed) = &embedded.seed
        && !seed.is_file()
    {
        return Err(("embedded.seed", format!("{}: no such file", seed.display())));
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
    at_least("dedup.ttl_seconds", dedup.ttl_seconds, 1)?;
    at_least("dedup.redis_timeout_ms", dedup.redis_timeout_ms, 1)?;
    at_least("dedup.memory_capacity", dedup.memory_capacity, 1)?;
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

fn at_least(key: &'static str, value: u64, minimum: u64) -> Result<(), Invalid> {
    if value < minimum {
        return Err((key, format!("must be at least {minimum}, got {value}")));
    }
    Ok(())
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
