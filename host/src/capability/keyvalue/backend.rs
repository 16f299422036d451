//! Where a stage's buckets live: its Redis or this process's memory,
//! behind one set of operations the host functions call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::grant::RedisAddress;
use super::memory_entries::MemoryEntries;
use super::redis_entries::RedisEntries;

/// Why an operation failed, as the plugin reads it (`error::other`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
    #[error("the key-value store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the in-memory key-value store is full ({0} bytes, plugin.capabilities.keyvalue.memory_max_bytes)")]
    Full(u64),
    #[error("the value at `{0}` is not a counter (a decimal number below 2^63)")]
    NotACounter(String),
    #[error("incrementing `{0}` would pass 2^63 - 1")]
    Overflow(String),
}

/// One page of `list-keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` after the last.
    pub cursor: Option<u64>,
}

/// The keys a page of `list-keys` holds at most.
pub(super) const PAGE_SIZE: usize = 1000;

/// A stage's buckets. Each operation names its bucket; entries of
/// different buckets (and stages) never meet.
#[derive(Debug)]
pub enum KeyValueBackend {
    Memory(MemoryEntries),
    Redis(RedisEntries),
}

macro_rules! each_backend {
    ($self:ident, $entries:ident => $call:expr) => {
        match $self {
            KeyValueBackend::Memory($entries) => $call,
            KeyValueBackend::Redis($entries) => $call.await,
        }
    };
}

impl KeyValueBackend {
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        each_backend!(self, entries => entries.get(bucket, key))
    }

    /// `ttl`: the entry expires this long after this write.
    pub async fn set(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        each_backend!(self, entries => entries.set_many(bucket, vec![(key.to_owned(), value)], ttl))
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), BackendError> {
        each_backend!(self, entries => entries.delete_many(bucket, &[key.to_owned()]))
    }

    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BackendError> {
        each_backend!(self, entries => entries.exists(bucket, key))
    }

    pub async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BackendError> {
        each_backend!(self, entries => entries.list_keys(bucket, cursor))
    }

    /// Add `delta` to the counter at `key` (0 when absent), stored as
    /// decimal text, and return the new count.
    pub async fn increment(
        &self,
        bucket: &str,
        key: &str,
        delta: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, BackendError> {
        each_backend!(self, entries => entries.increment(bucket, key, delta, ttl))
    }

    pub async fn get_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        each_backend!(self, entries => entries.get_many(bucket, keys))
    }

    pub async fn set_many(
        &self,
        bucket: &str,
        pairs: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        each_backend!(self, entries => entries.set_many(bucket, pairs, ttl))
    }

    pub async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), BackendError> {
        each_backend!(self, entries => entries.delete_many(bucket, keys))
    }

    /// What the stage's logs and errors call it.
    pub fn describe(&self) -> String {
        match self {
            KeyValueBackend::Memory(_) => "memory".to_owned(),
            KeyValueBackend::Redis(entries) => entries.describe(),
        }
    }
}

/// The process's backends, one per stage namespace and Redis: a plugin
/// version loaded by a hot reload gets the same one as the version before
/// it, so the in-memory entries and the Redis connection carry over.
static BACKENDS: OnceLock<Mutex<HashMap<BackendIdentity, Arc<KeyValueBackend>>>> = OnceLock::new();

/// A stage's namespace and its Redis (`None`: memory).
type BackendIdentity = (String, Option<RedisAddress>);

/// The backend for `namespace` in the Redis at `redis`, or in memory when
/// `None`; made on first use (a Redis is connected to lazily).
pub(super) fn shared_backend(
    namespace: &str,
    redis: Option<&RedisAddress>,
    memory_max_bytes: u64,
    timeout: Duration,
) -> Result<Arc<KeyValueBackend>, String> {
    let identity = (namespace.to_owned(), redis.cloned());
    let mut backends = BACKENDS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(backend) = backends.get(&identity) {
        return Ok(backend.clone());
    }
    let backend = Arc::new(match redis {
        None => KeyValueBackend::Memory(MemoryEntries::new(memory_max_bytes)),
        Some(redis) => KeyValueBackend::Redis(RedisEntries::open(namespace, redis, timeout)?),
    });
    tracing::info!(stage = namespace, store = %backend.describe(), "key-value buckets opened");
    backends.insert(identity, backend.clone());
    Ok(backend)
}
