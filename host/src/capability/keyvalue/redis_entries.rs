//! Buckets in the stage's Redis: shared by every host of the stage, kept
//! across restarts. Each entry is one Redis string under
//! `sluice:{stage}:kv:{bucket}:{key}`; a counter is a string `INCRBY`
//! understands, so `get` reads it back as decimal text.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::backend::{BackendError, KeyPage, PAGE_SIZE};

#[derive(Clone)]
pub struct RedisEntries {
    /// Reconnects on its own after a failure.
    connection: ConnectionManager,
    namespace: String,
    description: String,
}

impl std::fmt::Debug for RedisEntries {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.description)
    }
}

impl From<redis::RedisError> for BackendError {
    fn from(error: redis::RedisError) -> Self {
        if error.is_timeout() {
            return BackendError::Unavailable(format!("timed out: {error}"));
        }
        BackendError::Unavailable(error.to_string())
    }
}

impl RedisEntries {
    /// Does not connect yet: the first operation does.
    pub fn open(namespace: &str, url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|error| format!("`{url}`: {error}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        // The manager needs a runtime to be made in, and then lives on it:
        // the stage's when there is one (as in a stage), else the one
        // wasmtime runs host calls on (as in `sluice check` or a test).
        let make = move || ConnectionManager::new_lazy_with_config(client, config);
        let connection = match tokio::runtime::Handle::try_current() {
            Ok(_) => make(),
            Err(_) => wasmtime_wasi::runtime::in_tokio(async move { make() }),
        }
        .map_err(|error| format!("`{url}`: {error}"))?;
        Ok(RedisEntries {
            connection,
            namespace: namespace.to_owned(),
            description: format!("redis at {}", redacted(url)),
        })
    }

    pub fn describe(&self) -> String {
        self.description.clone()
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
        Ok(command.query_async(&mut self.connection.clone()).await?)
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.query(redis::cmd("GET").arg(self.stored_key(bucket, key))).await
    }

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

    /// In one `MULTI`: all the pairs are written or none is.
    pub async fn set_many(
        &self,
        bucket: &str,
        pairs: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        for (key, value) in pairs {
            let command = pipeline.cmd("SET").arg(self.stored_key(bucket, &key)).arg(value);
            if let Some(ttl) = ttl {
                command.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            command.ignore();
        }
        Ok(pipeline.query_async::<()>(&mut self.connection.clone()).await?)
    }

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

    /// `INCRBY` (and the expiry, in the same `MULTI`).
    pub async fn increment(
        &self,
        bucket: &str,
        key: &str,
        delta: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, BackendError> {
        let stored = self.stored_key(bucket, key);
        let delta = i64::try_from(delta).map_err(|_| BackendError::Overflow(key.to_owned()))?;
        let mut pipeline = redis::pipe();
        pipeline.atomic().cmd("INCRBY").arg(&stored).arg(delta);
        if let Some(ttl) = ttl {
            pipeline
                .cmd("PEXPIRE")
                .arg(&stored)
                .arg(ttl.as_millis().max(1) as u64)
                .ignore();
        }
        let (count,): (i64,) = pipeline
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|error| {
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
    /// cursor, so a page may be short or even empty before the last.
    pub async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BackendError> {
        let prefix = self.prefix(bucket);
        let (next, stored): (u64, Vec<String>) = self
            .query(
                redis::cmd("SCAN")
                    .arg(cursor.unwrap_or(0))
                    .arg("MATCH")
                    .arg(format!("{}*", glob_escaped(&prefix)))
                    .arg("COUNT")
                    .arg(PAGE_SIZE),
            )
            .await?;
        let keys = stored
            .into_iter()
            .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        Ok(KeyPage {
            keys,
            cursor: (next != 0).then_some(next),
        })
    }
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

/// A Redis URL without its password, for logs.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        _ => url.to_owned(),
    }
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
    fn a_password_never_reaches_the_description() {
        assert_eq!(
            redacted("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }
}
