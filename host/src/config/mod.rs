//! The stage file (TOML) plus `SLUICE_*` environment overrides, validated
//! before anything connects: a stage that starts has a config that makes
//! sense, and a stage that does not says which key is wrong and why.

mod env;
mod load;
mod profile;
mod stage;

pub use load::{ConfigError, load};
pub use profile::ConsumerProfile;
pub use stage::{
    AttemptFailure, BreakerSection, ConsumerRecoverySection, CreateTopics, DedupKeyKind, DedupSection, EmbeddedSection,
    HealthSection, KafkaSection, MessageOrder, ObserveSection, OnStoreError, PluginSection, RetrySection, StageConfig,
    StageSection, StartupSection,
};
pub(crate) use stage::{optional_string_or_list, string_or_list};
