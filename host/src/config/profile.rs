//! Consumer profiles: named presets for the settings that depend on what
//! kind of work a stage does, so a user picks "my plugin is slow" instead of
//! working out a dozen librdkafka and stage values. Every value a profile
//! sets is only a default: a key written in the stage file (or given in the
//! environment) wins.

use figment::providers::Serialized;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::stage::MAX_CONCURRENCY;

/// What a stage spends its time on. Documented for users, with when to
/// pick which, in `examples/stage.toml` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsumerProfile {
    /// Many small messages and a plugin that answers in microseconds
    /// (filters, routers, format conversion): big batches, deep prefetch,
    /// producer batching. Throughput first.
    Fast,
    /// A plugin that takes tens of milliseconds to seconds per message:
    /// one message per call, little prefetch, long deadlines and drains.
    SlowHandler,
    /// Large records (100 KB and up) or distant brokers: bytes on the
    /// network, not the plugin, are the limit. Large fetches, compression,
    /// more plugin calls at once so copying overlaps waiting.
    IoBound,
    /// Many or large outputs per message (fan-out, sinks): the producer
    /// batches and compresses hard, more messages may await acknowledgement,
    /// offsets are committed less often.
    BulkWriter,
}

impl ConsumerProfile {
    /// The names a stage file may use, for error messages.
    pub const NAMES: &'static str = "\"fast\", \"slow-handler\", \"io-bound\" or \"bulk-writer\"";

    /// The name a stage file uses.
    pub fn name(self) -> &'static str {
        match self {
            ConsumerProfile::Fast => "fast",
            ConsumerProfile::SlowHandler => "slow-handler",
            ConsumerProfile::IoBound => "io-bound",
            ConsumerProfile::BulkWriter => "bulk-writer",
        }
    }

    /// The profile's values as stage-file keys, to be joined under the
    /// user's own (figment `join`: keys already set are kept).
    pub(crate) fn defaults(self) -> Serialized<Value> {
        Serialized::defaults(self.preset(cpus()))
    }

    /// The preset as a stage-file shaped document; `cpus` sizes plugin-call
    /// concurrency.
    fn preset(self, cpus: usize) -> Value {
        match self {
            ConsumerProfile::Fast => json!({
                "stage": {
                    "batch_size": 500,
                    "concurrency": cpus,
                    "max_in_flight_per_partition": 50_000,
                    "memory_budget_mib": 1024,
                },
                "kafka": {
                    "consumer_properties": {
                        "fetch.wait.max.ms": "100",
                        "queued.min.messages": "200000",
                    },
                    "producer_properties": {
                        "linger.ms": "10",
                        "batch.num.messages": "10000",
                    },
                },
            }),
            ConsumerProfile::SlowHandler => json!({
                "stage": {
                    "batch_size": 1,
                    "concurrency": cpus,
                    "max_in_flight_per_partition": 100,
                    "drain_timeout_ms": 60_000,
                    "memory_budget_mib": 256,
                },
                "plugin": { "limits": { "deadline_ms": 30_000 } },
                "observe": { "stuck_after_seconds": 120 },
                "kafka": {
                    "consumer_properties": {
                        "queued.min.messages": "10",
                        "max.poll.interval.ms": "600000",
                    },
                },
            }),
            ConsumerProfile::IoBound => json!({
                "stage": {
                    "batch_size": 20,
                    "concurrency": cpus * 2,
                    "max_in_flight_per_partition": 1000,
                    "memory_budget_mib": 2048,
                },
                "plugin": { "limits": { "memory_mib": 256 } },
                "kafka": {
                    "consumer_properties": {
                        "fetch.max.bytes": "104857600",
                        "max.partition.fetch.bytes": "10485760",
                        "fetch.min.bytes": "1048576",
                        "fetch.wait.max.ms": "500",
                    },
                    "producer_properties": {
                        "linger.ms": "20",
                        "compression.type": "zstd",
                        "message.max.bytes": "10485760",
                    },
                },
            }),
            ConsumerProfile::BulkWriter => json!({
                "stage": {
                    "batch_size": 1000,
                    "max_in_flight_per_partition": 100_000,
                    "commit_interval_ms": 5000,
                    "memory_budget_mib": 2048,
                },
                "kafka": {
                    "producer_properties": {
                        "linger.ms": "50",
                        "batch.num.messages": "100000",
                        "compression.type": "zstd",
                        "queue.buffering.max.messages": "1000000",
                    },
                },
            }),
        }
    }
}

/// CPUs, at most half of [`MAX_CONCURRENCY`] so that even `io-bound`'s
/// two calls per CPU stay within the bound the loader checks.
fn cpus() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .min(MAX_CONCURRENCY / 2)
}

#[cfg(test)]
mod tests {
    use super::ConsumerProfile;
    use crate::config::{ConfigError, StageConfig, load};

    const ALL: [ConsumerProfile; 4] = [
        ConsumerProfile::Fast,
        ConsumerProfile::SlowHandler,
        ConsumerProfile::IoBound,
        ConsumerProfile::BulkWriter,
    ];

    /// Load a stage file made of the usual minimum plus `extra` lines
    /// under `[stage]` and the tables after them.
    fn load_with(stage_lines: &str, tables: &str) -> Result<StageConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("plugin.wasm"), b"not read by load").expect("plugin file");
        let text = format!(
            "[stage]\nname = \"profiled\"\n{stage_lines}\n\n[plugin]\npath = \"plugin.wasm\"\n\n\
             [kafka]\nbrokers = \"localhost:9092\"\ngroup_id = \"g\"\ninput_topics = \"in\"\n\
             output_topic = \"out\"\ndead_letter_topic = \"dlq\"\n{tables}\n"
        );
        let path = dir.path().join("stage.toml");
        std::fs::write(&path, text).expect("stage file");
        load(&path)
    }

    #[test]
    fn a_profile_sets_its_values_where_the_file_is_silent() {
        let plain = load_with("", "").expect("no profile");
        let slow = load_with("profile = \"slow-handler\"", "").expect("slow-handler");
        assert_eq!(slow.stage.profile, Some(ConsumerProfile::SlowHandler));
        assert_eq!(slow.stage.batch_size, 1);
        assert_eq!(slow.stage.drain_timeout_ms, 60_000);
        assert_eq!(slow.plugin.limits.deadline_ms, 30_000);
        assert_eq!(slow.observe.stuck_after_seconds, 120);
        assert_eq!(
            slow.kafka
                .consumer_properties
                .get("max.poll.interval.ms")
                .map(String::as_str),
            Some("600000")
        );
        // What the profile does not mention keeps its usual default.
        assert_eq!(slow.retry, plain.retry);
        assert_eq!(slow.stage.commit_interval_ms, plain.stage.commit_interval_ms);

        let bulk = load_with("profile = \"bulk-writer\"", "").expect("bulk-writer");
        assert_eq!(bulk.stage.batch_size, 1000);
        assert_eq!(bulk.stage.commit_interval_ms, 5000);
        assert_eq!(
            bulk.kafka
                .producer_properties
                .get("compression.type")
                .map(String::as_str),
            Some("zstd")
        );
    }

    #[test]
    fn keys_in_the_file_win_over_the_profile() {
        let config = load_with(
            "profile = \"slow-handler\"\nbatch_size = 5",
            "[kafka.consumer_properties]\n\"queued.min.messages\" = 50\n\"session.timeout.ms\" = 30000\n\n\
             [plugin.limits]\ndeadline_ms = 2000\n",
        )
        .expect("slow-handler with overrides");
        assert_eq!(config.stage.batch_size, 5);
        assert_eq!(config.stage.drain_timeout_ms, 60_000, "not overridden: the profile's");
        assert_eq!(config.plugin.limits.deadline_ms, 2000);
        assert_eq!(
            config.plugin.limits.memory_mib, 64,
            "the table's other keys keep their defaults"
        );
        let consumer = &config.kafka.consumer_properties;
        assert_eq!(consumer.get("queued.min.messages").map(String::as_str), Some("50"));
        assert_eq!(consumer.get("session.timeout.ms").map(String::as_str), Some("30000"));
        assert_eq!(
            consumer.get("max.poll.interval.ms").map(String::as_str),
            Some("600000"),
            "the profile's other properties stay"
        );
        assert_eq!(config.stage.memory_budget_mib, 256);
    }

    #[test]
    fn every_profile_loads_and_passes_validation() {
        for profile in ALL {
            let name = serde_json::to_value(profile).expect("profile name");
            let config =
                load_with(&format!("profile = {name}"), "").unwrap_or_else(|error| panic!("{profile:?}: {error}"));
            assert_eq!(config.stage.profile, Some(profile));
        }
    }

    #[test]
    fn an_unknown_profile_is_named_with_the_choices() {
        let error = load_with("profile = \"turbo\"", "").unwrap_err().to_string();
        assert!(error.contains("`stage.profile`"), "{error}");
        assert!(error.contains("\"turbo\" is not a profile"), "{error}");
        assert!(error.contains("\"slow-handler\""), "{error}");
    }

    /// Every preset key must be a real stage-file key; a typo would be
    /// rejected by `deny_unknown_fields` at load time, but only for users
    /// of that profile. The load tests cover each profile; this one checks
    /// the librdkafka names are ones librdkafka accepts.
    #[test]
    fn every_librdkafka_property_is_accepted_by_librdkafka() {
        for profile in ALL {
            let preset = profile.preset(2);
            for (table, producer) in [("consumer_properties", false), ("producer_properties", true)] {
                let Some(properties) = preset["kafka"][table].as_object() else {
                    continue;
                };
                let mut config = rdkafka::ClientConfig::new();
                config.set("bootstrap.servers", "127.0.0.1:1");
                if !producer {
                    config.set("group.id", "profile-check");
                }
                for (key, value) in properties {
                    config.set(key, value.as_str().expect("properties are text"));
                }
                let created = if producer {
                    config.create::<rdkafka::producer::BaseProducer>().map(drop)
                } else {
                    config.create::<rdkafka::consumer::BaseConsumer>().map(drop)
                };
                if let Err(error) = created {
                    panic!("{profile:?} {table}: {error}");
                }
            }
        }
    }
}
