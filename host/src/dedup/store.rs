//! The store of claims and done-marks, and how a stage's config picks one.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::claim::{ClaimHolder, ClaimOutcome, RenewOutcome};
use super::key::DedupKey;
use super::memory_store::MemoryStore;
use super::redis_store::RedisStore;
use crate::config::DedupSection;
use crate::redis_connection::RedisConnectionError;

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
    #[error("Redis answered a dedup script with {0}, which this version of sluice does not expect")]
    UnexpectedReply(String),
}

impl From<RedisConnectionError> for StoreError {
    fn from(error: RedisConnectionError) -> Self {
        match error {
            RedisConnectionError::Redis(error) => StoreError::Redis(error),
            RedisConnectionError::Timeout(timeout) => StoreError::Timeout(timeout),
            RedisConnectionError::Config(reason) => StoreError::Config(reason),
        }
    }
}

/// Where claims and done-marks live. Shared by every partition worker of a
/// stage, and by every stage host of a consumer group when it is Redis.
///
/// A key holds nothing, a claim (a holder's token, for a lease) or the
/// done-mark. Checking and acting are one atomic step per key: two workers
/// claiming one key at once cannot both win, so a message seen on two
/// partitions (or two hosts) at once is handled once. Every batch call is
/// one round trip.
pub trait DedupStore: Send + Sync + 'static {
    /// For each key, whether it is marked done (a claim is not done).
    fn done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;

    /// For each key, atomically: if it is free (or its claim's lease ran
    /// out), claim it for `holder` for `lease`; if `holder` already holds
    /// it, extend the lease (so a claim whose answer was lost can be taken
    /// up again); otherwise say who holds it or that it is done.
    fn claim<'a>(
        &'a self,
        keys: &'a [DedupKey],
        holder: &'a ClaimHolder,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>>;

    /// For each key `holder` claimed: extend the lease to `lease` from now,
    /// if `holder` still holds it (compare and extend).
    fn renew<'a>(
        &'a self,
        keys: &'a [DedupKey],
        holder: &'a ClaimHolder,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<RenewOutcome>, StoreError>>;

    /// Give up `holder`'s claims on these keys (compare and delete: a key
    /// claimed by someone else or marked done is left alone), so the next
    /// owner of the messages does not wait out the lease. Returns how many
    /// claims were released.
    fn release<'a>(&'a self, keys: &'a [DedupKey], holder: &'a ClaimHolder) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Mark every key done, for the store's time to live, whoever claimed
    /// it: the message's effects are durable, so the mark replaces any
    /// claim.
    fn mark_done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Remove these keys' done-marks, so messages with them are handled
    /// again: `sluice dlq replay` clears the marks of the dead letters it
    /// puts back. A claim is left alone: its holder is handling the message
    /// right now. Returns how many of the keys were marked.
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
