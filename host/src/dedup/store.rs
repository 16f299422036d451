//! The store of done-marks, and how a stage's config picks one.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::key::DedupKey;
use super::memory_store::MemoryStore;
use super::redis_store::RedisStore;
use crate::config::DedupSection;

/// Why the store could not answer. The pipeline treats every error as
/// "unavailable for now": it waits and tries again (or, if configured,
/// processes unguarded).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis is unreachable or failing: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot use the Redis configuration: {0}")]
    Config(String),
}

/// Where done-marks live. Shared by every partition worker of a stage, and
/// by every stage host of a consumer group when it is Redis.
pub trait DedupStore: Send + Sync + 'static {
    /// For each key, whether it is marked done. One round trip.
    fn done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;

    /// Mark every key done, for the store's time to live. One round trip.
    fn mark_done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Remove these keys' marks, so messages with them are handled again:
    /// `sluice dlq replay` clears the marks of the dead letters it puts back.
    /// Returns how many of the keys were marked. One round trip.
    fn forget<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Where the marks live, for logs.
    fn describe(&self) -> String;
}

/// The store a stage's `[dedup]` section asks for: Redis when it names one,
/// this process's memory otherwise. Connecting is lazy: an unreachable
/// Redis shows up as errors on use, which the pipeline waits out.
pub fn open_store(config: &DedupSection) -> Result<Arc<dyn DedupStore>, StoreError> {
    let ttl = Duration::from_secs(config.ttl_seconds);
    Ok(match &config.redis_url {
        Some(urls) => Arc::new(RedisStore::open(
            urls,
            config.redis_cluster,
            ttl,
            Duration::from_millis(config.redis_timeout_ms),
        )?),
        None => Arc::new(MemoryStore::new(config.memory_capacity, ttl)),
    })
}
