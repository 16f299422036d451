//! Buckets in the stage's Redis, a single server or a Redis Cluster:
//! shared by every host of the stage, kept across restarts. Each entry is
//! one Redis string under `sluice:{stage}:kv:{bucket}:{key}`; a counter is
//! a string `INCRBY` understands, so `get` reads it back as decimal text.
//!
//! On a cluster the keys spread over the nodes by slot like any others, so
//! a bucket is not bound to one node. The price is what a cluster cannot
//! do across slots: `set-many` writes each pair on its own rather than in
//! one `MULTI` (`wasi:keyvalue/batch` promises no atomicity), and
//! `list-keys` scans the primaries one after another, the cursor saying
//! which node and where in it.

use std::time::Duration;

use super::backend::{BackendError, KeyPage, PAGE_SIZE};
use super::grant::RedisAddress;
use crate::redis_connection::{RedisConnection, RedisConnectionError};

/// `INCRBY KEYS[1] ARGV[1]`, then the expiry of ARGV[2] ms unless it is 0,
/// as one step: a script touches one key, so it runs on a cluster too.
const INCREMENT_SCRIPT: &str = "\
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return count";

/// A cluster's `list-keys` cursor: the node's index in the upper bits,
/// that node's own `SCAN` cursor in these lower ones.
const NODE_CURSOR_BITS: u32 = 48;

pub struct RedisEntries {
    connection: RedisConnection,
    namespace: String,
}

impl std::fmt::Debug for RedisEntries {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.connection.describe())
    }
}

impl From<RedisConnectionError> for BackendError {
    fn from(error: RedisConnectionError) -> Self {
        match error {
            RedisConnectionError::Timeout(timeout) => BackendError::Timeout(timeout),
            RedisConnectionError::Redis(error) if error.is_timeout() => {
                BackendError::Unavailable(format!("timed out: {error}"))
            }
            other => BackendError::Unavailable(other.to_string()),
        }
    }
}

impl RedisEntries {
    /// Does not connect yet: the first operation does.
    pub fn open(namespace: &str, redis: &RedisAddress, timeout: Duration) -> Result<Self, String> {
        let describe = |error: RedisConnectionError| format!("`{}`: {error}", redis.urls.join(","));
        // A single Redis's connection needs a runtime to be made in, and
        // then lives on it: the plugin's call threads, which the plugin
        // runtime enters while it loads a plugin, else wasmtime's own.
        let open = || RedisConnection::open(&redis.urls, redis.cluster, timeout);
        let connection = match tokio::runtime::Handle::try_current() {
            Ok(_) => open(),
            Err(_) => wasmtime_wasi::runtime::in_tokio(async move { open() }),
        }
        .map_err(describe)?;
        Ok(RedisEntries {
            connection,
            namespace: namespace.to_owned(),
        })
    }

    pub fn describe(&self) -> String {
        self.connection.describe()
    }

    fn prefix(&self, bucket: &str) -> String {
        format!("sluice:{}:kv:{bucket}:", self.namespace)
    }

    fn stored_key(&self, bucket: &str, key: &str) -> String {
        let mut stored = self.prefix(bucket);
        stored.push_str(key);
        stored
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, BackendError> {
        Ok(self.connection.run_one(command).await?)
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.query(redis::cmd("GET").arg(self.stored_key(bucket, key))).await
    }

    /// One `MGET` (which a cluster splits by slot).
    pub async fn get_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("MGET");
        for key in keys {
            command.arg(self.stored_key(bucket, key));
        }
        self.query(&command).await
    }

    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BackendError> {
        self.query(redis::cmd("EXISTS").arg(self.stored_key(bucket, key))).await
    }

    /// On a single Redis in one `MULTI`: all the pairs are written or none
    /// is. On a cluster, each pair on its own, all at once.
    pub async fn set_many(
        &self,
        bucket: &str,
        pairs: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let commands = pairs
            .into_iter()
            .map(|(key, value)| {
                let mut command = redis::cmd("SET");
                command.arg(self.stored_key(bucket, &key)).arg(value);
                if let Some(ttl) = ttl {
                    command.arg("PX").arg(ttl.as_millis().max(1) as u64);
                }
                command
            })
            .collect();
        self.connection
            .run_each::<redis::Value>(commands, true)
            .await
            .map(drop)
            .map_err(BackendError::from)
    }

    /// One `DEL` (which a cluster splits by slot).
    pub async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("DEL");
        for key in keys {
            command.arg(self.stored_key(bucket, key));
        }
        self.query::<u64>(&command).await.map(drop)
    }

    /// `INCRBY` and the expiry, in one script.
    pub async fn increment(
        &self,
        bucket: &str,
        key: &str,
        delta: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, BackendError> {
        let delta = i64::try_from(delta).map_err(|_| BackendError::Overflow(key.to_owned()))?;
        let ttl_ms = ttl.map_or(0, |ttl| ttl.as_millis().max(1) as u64);
        let mut command = redis::cmd("EVAL");
        command
            .arg(INCREMENT_SCRIPT)
            .arg(1)
            .arg(self.stored_key(bucket, key))
            .arg(delta)
            .arg(ttl_ms);
        let count: i64 = self.connection.run_one(&command).await.map_err(|error| {
            let text = error.to_string();
            if text.contains("overflow") {
                BackendError::Overflow(key.to_owned())
            } else if text.contains("not an integer") {
                BackendError::NotACounter(key.to_owned())
            } else {
                BackendError::from(error)
            }
        })?;
        u64::try_from(count).map_err(|_| BackendError::NotACounter(key.to_owned()))
    }

    /// One `SCAN` step over the bucket's keys: Redis's cursor is the page
    /// cursor, so a page may be short or even empty before the last. On a
    /// cluster, the step scans one primary, and the cursor moves on to the
    /// next primary (in address order) when that one is done.
    pub async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BackendError> {
        let prefix = self.prefix(bucket);
        let scan = |node_cursor: u64| {
            let mut command = redis::cmd("SCAN");
            command
                .arg(node_cursor)
                .arg("MATCH")
                .arg(format!("{}*", glob_escaped(&prefix)))
                .arg("COUNT")
                .arg(PAGE_SIZE);
            command
        };
        let strip = |stored: Vec<String>| -> Vec<String> {
            stored
                .into_iter()
                .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
                .collect()
        };
        if !self.connection.is_cluster() {
            let (next, stored): (u64, Vec<String>) = self.query(&scan(cursor.unwrap_or(0))).await?;
            return Ok(KeyPage {
                keys: strip(stored),
                cursor: (next != 0).then_some(next),
            });
        }
        let (node, node_cursor) = split_cluster_cursor(cursor.unwrap_or(0));
        let primaries = self.connection.primaries().await?;
        let Some(address) = primaries.get(node) else {
            // The cluster shrank between pages: nothing is left to scan.
            return Ok(KeyPage {
                keys: Vec::new(),
                cursor: None,
            });
        };
        let (next, stored): (u64, Vec<String>) = self.connection.run_on(address, scan(node_cursor)).await?;
        let cursor = if next != 0 {
            Some(join_cluster_cursor(node, next)?)
        } else if node + 1 < primaries.len() {
            Some(join_cluster_cursor(node + 1, 0)?)
        } else {
            None
        };
        Ok(KeyPage {
            keys: strip(stored),
            cursor,
        })
    }
}

/// A cluster cursor's node index and that node's `SCAN` cursor.
fn split_cluster_cursor(cursor: u64) -> (usize, u64) {
    (
        (cursor >> NODE_CURSOR_BITS) as usize,
        cursor & ((1 << NODE_CURSOR_BITS) - 1),
    )
}

fn join_cluster_cursor(node: usize, node_cursor: u64) -> Result<u64, BackendError> {
    if node_cursor >> NODE_CURSOR_BITS != 0 || node >> (64 - NODE_CURSOR_BITS) != 0 {
        return Err(BackendError::Unavailable(format!(
            "a cluster scan cursor out of range (node {node}, cursor {node_cursor})"
        )));
    }
    Ok(((node as u64) << NODE_CURSOR_BITS) | node_cursor)
}

/// `text` matched literally by a Redis glob pattern.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_a_stage_name_match_only_themselves() {
        assert_eq!(
            glob_escaped("sluice:a*b?[c]\\:kv:x:"),
            "sluice:a\\*b\\?\\[c\\]\\\\:kv:x:"
        );
    }

    #[test]
    fn a_cluster_cursor_names_the_node_and_its_own_cursor() {
        for (node, node_cursor) in [(0, 5), (1, 0), (3, (1 << NODE_CURSOR_BITS) - 1)] {
            let cursor = join_cluster_cursor(node, node_cursor).expect("in range");
            assert_ne!(cursor, 0, "0 would read as the first page");
            assert_eq!(split_cluster_cursor(cursor), (node, node_cursor));
        }
        assert!(join_cluster_cursor(0, 1 << NODE_CURSOR_BITS).is_err());
    }
}
