//! `[plugin.capabilities.keyvalue]` as the stage file writes it, and the
//! grant the host enforces on `wasi:keyvalue` calls.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::backend::{KeyValueBackend, shared_backend};
use crate::capability::GrantError;

/// `[plugin.capabilities.keyvalue]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValueGrantSettings {
    /// Names the plugin may `open`; any other is `access-denied`.
    #[serde(default = "default_buckets", deserialize_with = "crate::config::string_or_list")]
    pub buckets: Vec<String>,
    /// Where the buckets live: `redis` or `memory`. Default: `redis` when a
    /// Redis is named (here or in `[dedup]`), else `memory`.
    pub backend: Option<BackendKind>,
    /// `redis://host:port/db`, or with `redis_cluster` the seed nodes of a
    /// Redis Cluster; defaults to the stage's dedup Redis (`dedup.redis_url`
    /// and `dedup.redis_cluster`).
    #[serde(default, deserialize_with = "crate::config::optional_string_or_list")]
    pub redis_url: Option<Vec<String>>,
    #[serde(default)]
    pub redis_cluster: bool,
    /// Entries expire this long after their last write; 0 keeps them.
    #[serde(default)]
    pub ttl_seconds: u64,
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: u64,
    /// One operation, round trip included; the plugin's call deadline
    /// bounds it too. Default: three quarters of the call deadline.
    pub timeout_ms: Option<u64>,
    /// The in-memory backend's budget for keys and values together.
    #[serde(default = "default_memory_max_bytes")]
    pub memory_max_bytes: u64,
    /// The prefix of every key: the stage's name, set by the loader, so
    /// stages sharing a Redis keep apart and replicas of one stage share.
    #[serde(skip)]
    pub namespace: String,
}

/// Where a stage's buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The stage's Redis: shared by every host of the stage, kept across
    /// restarts.
    Redis,
    /// This process's memory: gone with the process, not shared.
    Memory,
}

fn default_buckets() -> Vec<String> {
    vec!["default".to_owned()]
}

fn default_max_value_bytes() -> u64 {
    1024 * 1024
}

fn default_memory_max_bytes() -> u64 {
    64 * 1024 * 1024
}

/// Redis refuses strings over 512 MiB.
const MAX_VALUE_BYTES_CAP: u64 = 512 * 1024 * 1024;
/// A year: longer is "keep", which 0 says.
const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;
const MAX_MEMORY_BYTES: u64 = 1 << 40;

impl KeyValueGrantSettings {
    /// The backend these settings pick.
    pub fn backend_kind(&self) -> BackendKind {
        self.backend.unwrap_or(match self.redis_url {
            Some(_) => BackendKind::Redis,
            None => BackendKind::Memory,
        })
    }

    /// Check every key; `deadline_ms` is the plugin's call deadline, which
    /// an operation inside the call cannot outlive.
    pub fn validate(&self, deadline_ms: u64) -> Result<ValidGrant, GrantError> {
        let key = |leaf: &str| format!("plugin.capabilities.keyvalue.{leaf}");
        let error = |leaf: &str, reason: String| GrantError { key: key(leaf), reason };
        if self.buckets.is_empty() {
            return Err(error(
                "buckets",
                "grants nothing: name the buckets the plugin may open".to_owned(),
            ));
        }
        if let Some(bad) = self.buckets.iter().find(|name| !is_bucket_name(name)) {
            return Err(error(
                "buckets",
                format!("`{bad}` is not a bucket name (letters, digits, `-` and `_`, at most 64)"),
            ));
        }
        if self.ttl_seconds > MAX_TTL_SECONDS {
            return Err(error(
                "ttl_seconds",
                format!("must be between 0 and {MAX_TTL_SECONDS}, got {}", self.ttl_seconds),
            ));
        }
        if !(1..=MAX_VALUE_BYTES_CAP).contains(&self.max_value_bytes) {
            return Err(error(
                "max_value_bytes",
                format!(
                    "must be between 1 and {MAX_VALUE_BYTES_CAP}, got {}",
                    self.max_value_bytes
                ),
            ));
        }
        if !(1024..=MAX_MEMORY_BYTES).contains(&self.memory_max_bytes) {
            return Err(error(
                "memory_max_bytes",
                format!(
                    "must be between 1024 and {MAX_MEMORY_BYTES}, got {}",
                    self.memory_max_bytes
                ),
            ));
        }
        let timeout_ms = self.timeout_ms.unwrap_or((deadline_ms * 3 / 4).max(1));
        if !(1..=deadline_ms).contains(&timeout_ms) {
            return Err(error(
                "timeout_ms",
                format!(
                    "must be between 1 and {deadline_ms}, got {timeout_ms} (at most plugin.limits.deadline_ms: an operation cannot outlive the call that makes it)"
                ),
            ));
        }
        let redis = match (self.backend_kind(), &self.redis_url) {
            (BackendKind::Memory, _) => None,
            (BackendKind::Redis, None) => {
                return Err(error(
                    "redis_url",
                    "backend = \"redis\" needs a Redis: set redis_url (or dedup.redis_url)".to_owned(),
                ));
            }
            (BackendKind::Redis, Some(urls)) => {
                if urls.is_empty() {
                    return Err(error("redis_url", "names no Redis".to_owned()));
                }
                if urls.len() > 1 && !self.redis_cluster {
                    return Err(error(
                        "redis_url",
                        "names several Redis servers; set redis_cluster = true for a cluster, or give one".to_owned(),
                    ));
                }
                for url in urls {
                    redis::Client::open(url.as_str())
                        .map_err(|reason| error("redis_url", format!("`{url}`: {reason}")))?;
                }
                Some(RedisAddress {
                    urls: urls.clone(),
                    cluster: self.redis_cluster,
                })
            }
        };
        Ok(ValidGrant {
            redis,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// The enforced grant, over the process's one backend for these
    /// settings (so a reloaded plugin version sees the same entries).
    pub fn resolve(&self, deadline_ms: u64) -> Result<KeyValueGrant, GrantError> {
        let valid = self.validate(deadline_ms)?;
        let backend = shared_backend(
            &self.namespace,
            valid.redis.as_ref(),
            self.memory_max_bytes,
            valid.timeout,
        )
        .map_err(|reason| GrantError {
            key: "plugin.capabilities.keyvalue.redis_url".to_owned(),
            reason,
        })?;
        Ok(KeyValueGrant {
            buckets: self.buckets.clone(),
            ttl: (self.ttl_seconds > 0).then(|| Duration::from_secs(self.ttl_seconds)),
            max_value_bytes: self.max_value_bytes,
            timeout: valid.timeout,
            backend,
        })
    }
}

/// What [`KeyValueGrantSettings::validate`] worked out.
#[derive(Debug)]
pub struct ValidGrant {
    /// `None`: memory.
    redis: Option<RedisAddress>,
    timeout: Duration,
}

/// The Redis a stage's buckets live in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisAddress {
    /// One URL, or a cluster's seed nodes.
    pub urls: Vec<String>,
    pub cluster: bool,
}

fn is_bucket_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The key-value grant of a stage, shared by every instance of a plugin
/// version.
#[derive(Debug)]
pub struct KeyValueGrant {
    buckets: Vec<String>,
    ttl: Option<Duration>,
    max_value_bytes: u64,
    timeout: Duration,
    backend: Arc<KeyValueBackend>,
}

impl KeyValueGrant {
    pub fn allows_bucket(&self, name: &str) -> bool {
        self.buckets.iter().any(|bucket| bucket == name)
    }

    /// Written entries expire this long after their last write.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    pub fn max_value_bytes(&self) -> u64 {
        self.max_value_bytes
    }

    /// How long one operation may take, before the call's deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn backend(&self) -> &KeyValueBackend {
        &self.backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> KeyValueGrantSettings {
        toml::from_str(toml_text).expect("valid TOML")
    }

    #[test]
    fn the_defaults_grant_the_default_bucket_in_memory() {
        let settings = settings("");
        assert_eq!(settings.buckets, ["default"]);
        assert_eq!(settings.backend_kind(), BackendKind::Memory);
        let valid = settings.validate(1000).expect("valid");
        assert_eq!(valid.timeout, Duration::from_millis(750));
        assert_eq!(valid.redis, None);
    }

    #[test]
    fn a_cluster_is_its_seed_nodes() {
        let valid = settings("redis_url = [\"redis://a:1\", \"redis://b:2\"]\nredis_cluster = true")
            .validate(1000)
            .expect("valid");
        assert_eq!(
            valid.redis,
            Some(RedisAddress {
                urls: vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()],
                cluster: true,
            })
        );
    }

    #[test]
    fn a_redis_url_picks_redis_unless_memory_is_asked_for() {
        assert_eq!(
            settings("redis_url = \"redis://127.0.0.1:6379\"").backend_kind(),
            BackendKind::Redis
        );
        assert_eq!(
            settings("redis_url = \"redis://127.0.0.1:6379\"\nbackend = \"memory\"").backend_kind(),
            BackendKind::Memory
        );
    }

    #[test]
    fn each_bad_key_is_named_with_the_reason() {
        let cases = [
            ("buckets = []", "buckets", "grants nothing"),
            ("buckets = [\"a:b\"]", "buckets", "not a bucket name"),
            ("ttl_seconds = 99999999999", "ttl_seconds", "between 0 and"),
            ("max_value_bytes = 0", "max_value_bytes", "between 1 and"),
            ("memory_max_bytes = 10", "memory_max_bytes", "between 1024 and"),
            ("timeout_ms = 5000", "timeout_ms", "cannot outlive the call"),
            ("backend = \"redis\"", "redis_url", "needs a Redis"),
            ("redis_url = \"nonsense\"", "redis_url", "`nonsense`"),
            (
                "redis_url = [\"redis://a:1\", \"redis://b:2\"]",
                "redis_url",
                "set redis_cluster = true",
            ),
            ("redis_url = []", "redis_url", "names no Redis"),
        ];
        for (text, leaf, reason) in cases {
            let error = settings(text).validate(1000).expect_err(text);
            assert_eq!(error.key, format!("plugin.capabilities.keyvalue.{leaf}"), "{text}");
            assert!(error.reason.contains(reason), "{text}: {}", error.reason);
        }
    }
}
