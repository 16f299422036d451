//! Done-marks in Redis, shared by every host of a consumer group, and
//! kept across restarts. A single Redis, or a Redis Cluster.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use super::key::DedupKey;
use super::store::{DedupStore, StoreError};

/// Every command is bounded by the configured timeout, so an unreachable
/// Redis shows up as a prompt error rather than a hung worker.
pub struct RedisStore {
    connection: Connection,
    ttl_seconds: u64,
    timeout: Duration,
    description: String,
}

enum Connection {
    /// Reconnects on its own after a failure.
    Single(ConnectionManager),
    /// Connected on first use, and again after a failed first use; the
    /// cluster connection then follows the cluster's topology itself.
    Cluster {
        client: Box<ClusterClient>,
        connection: OnceCell<ClusterConnection>,
    },
}

impl RedisStore {
    /// Does not connect yet: the first use does.
    pub fn open(urls: &[String], cluster: bool, ttl: Duration, timeout: Duration) -> Result<Self, StoreError> {
        let description = format!("redis{} at {}", if cluster { " cluster" } else { "" }, urls.join(","));
        let connection = if cluster {
            let client = ClusterClient::builder(urls.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            Connection::Cluster {
                client: Box::new(client),
                connection: OnceCell::new(),
            }
        } else {
            let [url] = urls else {
                return Err(StoreError::Config("a single Redis takes exactly one URL".to_owned()));
            };
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(timeout);
            Connection::Single(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(RedisStore {
            connection,
            ttl_seconds: ttl.as_secs().max(1),
            timeout,
            description,
        })
    }

    async fn run<T: redis::FromRedisValue>(&self, query: Query<'_>) -> Result<T, StoreError> {
        let attempt = async {
            match &self.connection {
                Connection::Single(manager) => query.run(&mut manager.clone()).await,
                Connection::Cluster { client, connection } => {
                    let connection = connection.get_or_try_init(|| client.get_async_connection()).await?;
                    query.run(&mut connection.clone()).await
                }
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(StoreError::from)
    }
}

/// A command or a pipeline, run the same way on either connection kind.
enum Query<'a> {
    Command(&'a redis::Cmd),
    Pipeline(&'a redis::Pipeline),
}

impl Query<'_> {
    async fn run<T: redis::FromRedisValue, C: ConnectionLike + Send>(
        &self,
        connection: &mut C,
    ) -> redis::RedisResult<T> {
        match self {
            Query::Command(command) => command.query_async(connection).await,
            Query::Pipeline(pipeline) => pipeline.query_async(connection).await,
        }
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
            let values: Vec<Option<Vec<u8>>> = self.run(Query::Command(&command)).await?;
            Ok(values.iter().map(Option::is_some).collect())
        })
    }

    fn mark_done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            let mut pipeline = redis::pipe();
            for key in keys {
                pipeline
                    .cmd("SET")
                    .arg(key.as_bytes())
                    .arg(1)
                    .arg("EX")
                    .arg(self.ttl_seconds)
                    .ignore();
            }
            self.run::<()>(Query::Pipeline(&pipeline)).await
        })
    }

    fn forget<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(0);
            }
            // One DEL per key in one pipeline: a multi-key DEL would fail on
            // a cluster when the keys live in different slots.
            let mut pipeline = redis::pipe();
            for key in keys {
                pipeline.cmd("DEL").arg(key.as_bytes());
            }
            let deleted: Vec<u64> = self.run(Query::Pipeline(&pipeline)).await?;
            Ok(deleted.iter().sum())
        })
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
