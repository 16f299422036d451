//! Claims and done-marks in Redis, shared by every host of a consumer
//! group, and kept across restarts. A single Redis, or a Redis Cluster.
//!
//! A batch is one round trip. On a single Redis that is one script call
//! (or one pipeline) for all its keys. On a cluster, where one call may
//! only touch keys of one slot, it is one call per key, all sent at once
//! over the cluster connection, which routes each by its key's slot (a
//! pipeline there must stay within one slot too).

use std::time::Duration;

use futures::future::BoxFuture;

use super::claim::{ClaimHolder, ClaimOutcome, DONE_MARK, RenewOutcome};
use super::key::DedupKey;
use super::store::{DedupStore, StoreError};
use crate::redis_connection::RedisConnection;

/// For each key: claim it for holder ARGV[1] for ARGV[2] ms, unless it is
/// marked done (ARGV[3]) or another holder's claim is live. Replies, per
/// key, 1 (claimed, or already ours: lease extended), 2 (done) or the
/// other holder's token. An expired claim is gone from Redis, so it is
/// simply free.
///
/// Each script takes any number of keys: a single Redis runs it once for
/// a whole batch, a cluster once per key (a script may only touch keys of
/// one slot). Scripts are sent with EVAL rather than EVALSHA: they are
/// small, Redis caches their compiled form itself, and EVAL cannot fail
/// with NOSCRIPT after a restart, a failover or a resharding.
const CLAIM_SCRIPT: &str = "\
local r = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) r[i] = 1
  elseif v == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) r[i] = 1
  elseif v == ARGV[3] then r[i] = 2
  else r[i] = v end
end
return r";

/// For each key: extend the lease to ARGV[2] ms if holder ARGV[1] still
/// holds it. Replies, per key, 1 (renewed), 2 (marked done, ARGV[3]) or 0
/// (lost).
const RENEW_SCRIPT: &str = "\
local r = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) r[i] = 1
  elseif v == ARGV[3] then r[i] = 2
  else r[i] = 0 end
end
return r";

/// For each key: delete it if it holds exactly ARGV[1], a holder's claim
/// (release) or the done-mark (forget). Replies, per key, 1 if deleted.
const DELETE_IF_SCRIPT: &str = "\
local r = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then r[i] = redis.call('DEL', k) else r[i] = 0 end
end
return r";

/// Every command is bounded by the configured timeout (see
/// [`RedisConnection`]), so an unreachable Redis shows up as a prompt error
/// rather than a hung worker.
pub struct RedisStore {
    connection: RedisConnection,
    ttl_seconds: u64,
}

impl RedisStore {
    /// Does not connect yet: the first use does.
    pub fn open(urls: &[String], cluster: bool, ttl: Duration, timeout: Duration) -> Result<Self, StoreError> {
        Ok(RedisStore {
            connection: RedisConnection::open(urls, cluster, timeout)?,
            ttl_seconds: ttl.as_secs().max(1),
        })
    }

    /// Run one single-key command per key, in one round trip.
    async fn run_each<T: redis::FromRedisValue>(&self, commands: Vec<redis::Cmd>) -> Result<Vec<T>, StoreError> {
        Ok(self.connection.run_each(commands, false).await?)
    }

    /// Run `script` over `keys` with `args`, in one round trip, and return
    /// its reply for each key: one call with every key on a single Redis;
    /// one call per key on a cluster.
    async fn eval_each<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[DedupKey],
        args: &[&[u8]],
    ) -> Result<Vec<T>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let replies: Vec<T> = if self.connection.is_cluster() {
            let commands = keys
                .iter()
                .map(|key| eval(script, std::slice::from_ref(key), args))
                .collect();
            let replies: Vec<Vec<T>> = self.run_each(commands).await?;
            replies.into_iter().flatten().collect()
        } else {
            self.run_one(&eval(script, keys, args)).await?
        };
        if replies.len() != keys.len() {
            return Err(StoreError::UnexpectedReply(format!(
                "{} answers for {} keys",
                replies.len(),
                keys.len()
            )));
        }
        Ok(replies)
    }

    /// Run one command as is (a cluster connection splits a multi-key
    /// command such as MGET by slot itself).
    async fn run_one<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        Ok(self.connection.run_one(command).await?)
    }
}

/// `script` run on `keys` with `args`.
fn eval(script: &str, keys: &[DedupKey], args: &[&[u8]]) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(script).arg(keys.len());
    for key in keys {
        command.arg(key.as_bytes());
    }
    for arg in args {
        command.arg(*arg);
    }
    command
}

/// A lease in whole milliseconds, at least one (PX 0 is an error).
fn lease_ms(lease: Duration) -> Vec<u8> {
    lease.as_millis().clamp(1, u64::MAX as u128).to_string().into_bytes()
}

/// The claim script's reply: 1, 2 or the holder's token.
fn claim_outcome(reply: redis::Value) -> Result<ClaimOutcome, StoreError> {
    match reply {
        redis::Value::Int(1) => Ok(ClaimOutcome::Claimed),
        redis::Value::Int(2) => Ok(ClaimOutcome::Done),
        redis::Value::BulkString(holder) => Ok(ClaimOutcome::HeldElsewhere(
            String::from_utf8_lossy(&holder).into_owned(),
        )),
        other => Err(StoreError::UnexpectedReply(format!("{other:?}"))),
    }
}

fn renew_outcome(reply: i64) -> Result<RenewOutcome, StoreError> {
    match reply {
        1 => Ok(RenewOutcome::Renewed),
        2 => Ok(RenewOutcome::Done),
        0 => Ok(RenewOutcome::Lost),
        other => Err(StoreError::UnexpectedReply(other.to_string())),
    }
}

impl DedupStore for RedisStore {
    fn done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            // MGET answers for every key in one round trip (a cluster
            // connection splits it by slot and merges the answers).
            let mut command = redis::cmd("MGET");
            for key in keys {
                command.arg(key.as_bytes());
            }
            let values: Vec<Option<Vec<u8>>> = self.run_one(&command).await?;
            Ok(values
                .iter()
                .map(|value| value.as_deref() == Some(DONE_MARK.as_bytes()))
                .collect())
        })
    }

    fn claim<'a>(
        &'a self,
        keys: &'a [DedupKey],
        holder: &'a ClaimHolder,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(async move {
            let lease = lease_ms(lease);
            let args: [&[u8]; 3] = [holder.as_str().as_bytes(), &lease, DONE_MARK.as_bytes()];
            let replies: Vec<redis::Value> = self.eval_each(CLAIM_SCRIPT, keys, &args).await?;
            replies.into_iter().map(claim_outcome).collect()
        })
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [DedupKey],
        holder: &'a ClaimHolder,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<RenewOutcome>, StoreError>> {
        Box::pin(async move {
            let lease = lease_ms(lease);
            let args: [&[u8]; 3] = [holder.as_str().as_bytes(), &lease, DONE_MARK.as_bytes()];
            let replies: Vec<i64> = self.eval_each(RENEW_SCRIPT, keys, &args).await?;
            replies.into_iter().map(renew_outcome).collect()
        })
    }

    fn release<'a>(&'a self, keys: &'a [DedupKey], holder: &'a ClaimHolder) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let args: [&[u8]; 1] = [holder.as_str().as_bytes()];
            let released: Vec<u64> = self.eval_each(DELETE_IF_SCRIPT, keys, &args).await?;
            Ok(released.iter().sum())
        })
    }

    fn mark_done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // A plain SET: it replaces a claim, whoever holds it, because
            // this message's effects are durable whatever happened to the
            // claim meanwhile.
            let commands = keys
                .iter()
                .map(|key| {
                    let mut command = redis::cmd("SET");
                    command
                        .arg(key.as_bytes())
                        .arg(DONE_MARK)
                        .arg("EX")
                        .arg(self.ttl_seconds);
                    command
                })
                .collect();
            self.run_each::<redis::Value>(commands).await.map(drop)
        })
    }

    fn forget<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let args: [&[u8]; 1] = [DONE_MARK.as_bytes()];
            let deleted: Vec<u64> = self.eval_each(DELETE_IF_SCRIPT, keys, &args).await?;
            Ok(deleted.iter().sum())
        })
    }

    fn describe(&self) -> String {
        self.connection.describe()
    }
}
