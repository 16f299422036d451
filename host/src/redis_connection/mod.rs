//! One connection to the Redis a stage names, a single server or a Redis
//! Cluster, shared by whatever keeps state there (dedup's claims and marks,
//! a plugin's key-value buckets).
//!
//! Every command is bounded by the configured timeout, so an unreachable
//! Redis shows up as a prompt error rather than a hung worker. Nothing
//! connects until the first command does, and a failed connection is tried
//! again by the next command: a Redis that is down at startup, or restarts,
//! costs errors while it is away and nothing after.
//!
//! On a cluster a command may only touch keys of one slot, except the
//! multi-key reads and deletes (`MGET`, `DEL`, `EXISTS`) the cluster
//! connection splits by slot itself; [`RedisConnection::run_each`] sends
//! single-key commands all at once, each routed to its key's slot.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tokio::sync::OnceCell;

/// Why a command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisConnectionError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Config(String),
}

/// A single Redis or a cluster, as the stage file names it.
pub struct RedisConnection {
    link: Link,
    timeout: Duration,
    description: String,
}

enum Link {
    /// Reconnects on its own after a failure.
    Single(ConnectionManager),
    /// Connected on first use, and again after a failed first use; the
    /// cluster connection then follows the cluster's topology itself.
    Cluster {
        client: Box<ClusterClient>,
        connection: OnceCell<ClusterConnection>,
    },
}

/// A cluster node, as `CLUSTER SLOTS` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeAddress {
    pub host: String,
    pub port: u16,
}

impl RedisConnection {
    /// `urls`: one Redis, or with `cluster` the seed nodes of a cluster.
    /// Does not connect yet; a single Redis must be opened inside a tokio
    /// runtime, which then carries its connection.
    pub fn open(urls: &[String], cluster: bool, timeout: Duration) -> Result<Self, RedisConnectionError> {
        let description = format!(
            "redis{} at {}",
            if cluster { " cluster" } else { "" },
            urls.iter().map(|url| redacted(url)).collect::<Vec<_>>().join(",")
        );
        let link = if cluster {
            let client = ClusterClient::builder(urls.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            Link::Cluster {
                client: Box::new(client),
                connection: OnceCell::new(),
            }
        } else {
            let [url] = urls else {
                return Err(RedisConnectionError::Config(
                    "a single Redis takes exactly one URL".to_owned(),
                ));
            };
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(timeout);
            Link::Single(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(RedisConnection {
            link,
            timeout,
            description,
        })
    }

    /// `redis at <url>` or `redis cluster at <urls>`, passwords left out.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster { .. })
    }

    /// Run one command as is (a cluster routes it by its key, and splits a
    /// multi-key read or delete by slot).
    pub async fn run_one<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, RedisConnectionError> {
        self.bounded(async {
            match &self.link {
                Link::Single(manager) => command.query_async(&mut manager.clone()).await,
                Link::Cluster { client, connection } => {
                    let connection = connection.get_or_try_init(|| client.get_async_connection()).await?;
                    command.query_async(&mut connection.clone()).await
                }
            }
        })
        .await
    }

    /// Run single-key commands in one round trip: a pipeline on a single
    /// Redis (in one `MULTI` when `atomic`); on a cluster, all at once over
    /// the multiplexed connection, each routed to its key's slot, which no
    /// transaction can span.
    pub async fn run_each<T: redis::FromRedisValue>(
        &self,
        commands: Vec<redis::Cmd>,
        atomic: bool,
    ) -> Result<Vec<T>, RedisConnectionError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(async {
            match &self.link {
                Link::Single(manager) => {
                    let mut pipeline = redis::pipe();
                    if atomic {
                        pipeline.atomic();
                    }
                    for command in commands {
                        pipeline.add_command(command);
                    }
                    pipeline.query_async(&mut manager.clone()).await
                }
                Link::Cluster { client, connection } => {
                    let connection = connection.get_or_try_init(|| client.get_async_connection()).await?;
                    futures::future::try_join_all(commands.iter().map(|command| {
                        let mut connection = connection.clone();
                        async move { command.query_async::<T>(&mut connection).await }
                    }))
                    .await
                }
            }
        })
        .await
    }

    /// The cluster's primaries, in address order; none for a single Redis.
    pub async fn primaries(&self) -> Result<Vec<NodeAddress>, RedisConnectionError> {
        if !self.is_cluster() {
            return Ok(Vec::new());
        }
        // Each slot range: [start, end, [host, port, id, ...], replicas...].
        let ranges: Vec<Vec<redis::Value>> = self.run_one(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        let mut primaries = Vec::new();
        for range in ranges {
            let Some(primary) = range.into_iter().nth(2) else {
                continue;
            };
            // [host, port, id, metadata...], as many as the version sends.
            let fields: Vec<redis::Value> =
                redis::FromRedisValue::from_redis_value(primary).map_err(redis::RedisError::from)?;
            let mut fields = fields.into_iter();
            let (Some(host), Some(port)) = (fields.next(), fields.next()) else {
                continue;
            };
            let host: String = redis::FromRedisValue::from_redis_value(host).map_err(redis::RedisError::from)?;
            let port: u16 = redis::FromRedisValue::from_redis_value(port).map_err(redis::RedisError::from)?;
            primaries.push(NodeAddress { host, port });
        }
        primaries.sort();
        primaries.dedup();
        Ok(primaries)
    }

    /// Run `command` on cluster node `node` (a `SCAN` of that node's keys).
    pub async fn run_on<T: redis::FromRedisValue>(
        &self,
        node: &NodeAddress,
        command: redis::Cmd,
    ) -> Result<T, RedisConnectionError> {
        let Link::Cluster { client, connection } = &self.link else {
            return self.run_one(&command).await;
        };
        self.bounded(async {
            let connection = connection.get_or_try_init(|| client.get_async_connection()).await?;
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: node.host.clone(),
                port: node.port,
            });
            let reply = connection.clone().route_command(command, routing).await?;
            redis::FromRedisValue::from_redis_value(reply).map_err(redis::RedisError::from)
        })
        .await
    }

    async fn bounded<T>(
        &self,
        attempt: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, RedisConnectionError> {
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| RedisConnectionError::Timeout(self.timeout))?
            .map_err(RedisConnectionError::from)
    }
}

/// A Redis URL without its password, for logs.
pub fn redacted(url: &str) -> String {
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
    fn a_password_never_reaches_the_description() {
        assert_eq!(
            redacted("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn a_single_redis_takes_one_url() {
        let urls = ["redis://a:1".to_owned(), "redis://b:2".to_owned()];
        let error = RedisConnection::open(&urls, false, Duration::from_secs(1))
            .err()
            .expect("two URLs are no single Redis");
        assert_eq!(error.to_string(), "a single Redis takes exactly one URL");
    }
}
