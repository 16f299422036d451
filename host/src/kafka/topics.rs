//! Making sure the stage's topics exist before it starts consuming.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::error::RDKafkaErrorCode;

use crate::config::CreateTopics;

/// Why the stage's topics are not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot read cluster metadata from {brokers}: {cause}")]
    Unreachable { brokers: String, cause: String },
    #[error(
        "topic `{topic}` does not exist; create it, or let sluice create it by setting \
         [kafka.create_topics] partitions (and replication_factor) in the stage file"
    )]
    Missing { topic: String },
    #[error("this client is not authorized to use topic `{topic}`; grant it access (ACLs) or fix the topic name")]
    Unauthorized { topic: String },
    #[error("cannot create topic `{topic}`: {cause}")]
    CreateFailed { topic: String, cause: String },
}

/// Check that every topic exists; create the missing ones when `create`
/// says how. `client` is any connected client; `config` builds the admin
/// client when topics must be created.
pub async fn ensure_topics<C: ClientContext>(
    client: &Client<C>,
    config: &ClientConfig,
    topics: &[&str],
    create: Option<CreateTopics>,
    timeout: Duration,
) -> Result<(), TopicError> {
    let brokers = config.get("bootstrap.servers").unwrap_or("the brokers").to_owned();
    let metadata = client
        .fetch_metadata(None, timeout)
        .map_err(|error| TopicError::Unreachable {
            brokers: brokers.clone(),
            cause: error.to_string(),
        })?;
    if let Some(topic) = metadata.topics().iter().find(|topic| {
        topics.contains(&topic.name())
            && topic.error().map(RDKafkaErrorCode::from) == Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    }) {
        return Err(TopicError::Unauthorized {
            topic: topic.name().to_owned(),
        });
    }
    let existing: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|topic| topic.error().is_none() && !topic.partitions().is_empty())
        .map(|topic| topic.name())
        .collect();
    let mut missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|topic| !existing.contains(topic))
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(create) = create else {
        return Err(TopicError::Missing {
            topic: missing[0].to_owned(),
        });
    };

    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|error| TopicError::Unreachable {
        brokers: brokers.clone(),
        cause: error.to_string(),
    })?;
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                create.partitions,
                TopicReplication::Fixed(create.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|error| TopicError::Unreachable {
            brokers,
            cause: error.to_string(),
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, partitions = create.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::CreateFailed {
                    topic,
                    cause: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
