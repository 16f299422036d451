//! librdkafka settings for the stage's consumer and producer: the user's
//! pass-through properties, then the few settings sluice's delivery
//! guarantees depend on, which the user cannot turn off.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::config::KafkaSection;

/// Consumer settings: offsets are committed by sluice, explicitly, and only
/// for finished messages, so librdkafka's auto-commit and auto-store are off.
pub fn consumer_config(kafka: &KafkaSection, bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("auto.offset.reset", "earliest");
    // Offsets and broker states for lag and readiness (see
    // `RebalanceListener::statistics`).
    config.set("statistics.interval.ms", "5000");
    apply(&mut config, &kafka.properties);
    apply(&mut config, &kafka.consumer_properties);
    config.set("bootstrap.servers", bootstrap_servers);
    config.set("group.id", &kafka.group_id);
    enforce(&mut config, "enable.auto.commit", "false");
    enforce(&mut config, "enable.auto.offset.store", "false");
    config.set("enable.partition.eof", "false");
    config
}

/// Producer settings: idempotent with acks from all in-sync replicas, so an
/// acknowledged record is durable and a retried send is not duplicated.
pub fn producer_config(kafka: &KafkaSection, bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("linger.ms", "5");
    apply(&mut config, &kafka.properties);
    apply(&mut config, &kafka.producer_properties);
    config.set("bootstrap.servers", bootstrap_servers);
    enforce(&mut config, "enable.idempotence", "true");
    enforce(&mut config, "acks", "all");
    config
}

fn apply(config: &mut ClientConfig, properties: &BTreeMap<String, String>) {
    for (key, value) in properties {
        config.set(key, value);
    }
}

fn enforce(config: &mut ClientConfig, key: &str, value: &str) {
    if let Some(given) = config.get(key)
        && given != value
    {
        tracing::warn!(
            property = key,
            given,
            enforced = value,
            "ignoring a Kafka property that would weaken delivery guarantees"
        );
    }
    config.set(key, value);
}
