//! `SLUICE_*` environment variables as overrides of stage-file keys.
//!
//! The variable name is the key path in upper case with `_` between the
//! parts: `SLUICE_KAFKA_BROKERS` is `kafka.brokers`,
//! `SLUICE_PLUGIN_LIMITS_DEADLINE_MS` is `plugin.limits.deadline_ms`. Under
//! the librdkafka property tables `_` stands for `.`:
//! `SLUICE_KAFKA_PROPERTIES_SASL_PASSWORD` is `kafka.properties."sasl.password"`.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Tables, longest first so `plugin_limits` wins over `plugin`. The flag says
/// whether the rest of the name is a librdkafka property (dots, not
/// underscores).
const TABLES: [(&str, &str, bool); 16] = [
    ("kafka_consumer_properties_", "kafka.consumer_properties", true),
    ("kafka_producer_properties_", "kafka.producer_properties", true),
    ("kafka_create_topics_", "kafka.create_topics", false),
    ("kafka_recovery_", "kafka.recovery", false),
    ("kafka_properties_", "kafka.properties", true),
    ("plugin_limits_", "plugin.limits", false),
    ("plugin_reload_", "plugin.reload", false),
    ("plugin_config_", "plugin.config", false),
    ("embedded_", "embedded", false),
    ("observe_", "observe", false),
    ("startup_", "startup", false),
    ("dedup_", "dedup", false),
    ("plugin_", "plugin", false),
    ("kafka_", "kafka", false),
    ("retry_", "retry", false),
    ("stage_", "stage", false),
];

/// The table and key a variable (prefix already removed) overrides, or
/// `None` for variables that are not stage keys (`SLUICE_LOG`,
/// `SLUICE_CACHE_DIR`).
pub(crate) fn key_for_variable(variable: &str) -> Option<(&'static str, String)> {
    let lower = variable.to_ascii_lowercase();
    TABLES.iter().find_map(|(prefix, table, is_property)| {
        let rest = lower.strip_prefix(prefix).filter(|rest| !rest.is_empty())?;
        let leaf = if *is_property {
            rest.replace('_', ".")
        } else {
            rest.to_owned()
        };
        Some((*table, leaf))
    })
}

/// One `SLUICE_*` variable as a figment provider, so an error in its value
/// names the variable it came from.
pub(crate) struct EnvOverride {
    variable: String,
    table: &'static str,
    key: String,
    value: String,
}

impl EnvOverride {
    /// Every stage-key override in the process environment.
    pub(crate) fn from_environment() -> Vec<EnvOverride> {
        let mut overrides: Vec<EnvOverride> = std::env::vars()
            .filter_map(|(variable, value)| {
                let (table, key) = key_for_variable(variable.strip_prefix("SLUICE_")?)?;
                Some(EnvOverride {
                    variable,
                    table,
                    key,
                    value,
                })
            })
            .collect();
        overrides.sort_by(|a, b| a.variable.cmp(&b.variable));
        overrides
    }
}

impl Provider for EnvOverride {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.variable))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // Values are read leniently, as figment's own `Env` does: `3` is a
        // number, `true` a boolean, `[a, b]` a list, anything else text.
        let value: Value = self
            .value
            .parse()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        let mut dict = Dict::from([(self.key.clone(), value)]);
        for part in self.table.rsplit('.') {
            dict = Dict::from([(part.to_owned(), Value::from(dict))]);
        }
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

#[cfg(test)]
mod tests {
    use super::key_for_variable;

    #[test]
    fn variables_map_to_key_paths() {
        let path = |variable| key_for_variable(variable).map(|(table, key)| format!("{table} / {key}"));
        assert_eq!(path("KAFKA_BROKERS").as_deref(), Some("kafka / brokers"));
        assert_eq!(path("KAFKA_GROUP_ID").as_deref(), Some("kafka / group_id"));
        assert_eq!(
            path("PLUGIN_LIMITS_DEADLINE_MS").as_deref(),
            Some("plugin.limits / deadline_ms")
        );
        assert_eq!(
            path("KAFKA_PROPERTIES_SASL_PASSWORD").as_deref(),
            Some("kafka.properties / sasl.password")
        );
        assert_eq!(
            path("PLUGIN_RELOAD_TRIAL_CALLS").as_deref(),
            Some("plugin.reload / trial_calls")
        );
        assert_eq!(
            path("KAFKA_RECOVERY_RECREATE_AFTER_ERRORS").as_deref(),
            Some("kafka.recovery / recreate_after_errors")
        );
        assert_eq!(path("STAGE_PROFILE").as_deref(), Some("stage / profile"));
        assert_eq!(path("RETRY_MAX_ATTEMPTS").as_deref(), Some("retry / max_attempts"));
        assert_eq!(path("STAGE_NAME").as_deref(), Some("stage / name"));
    }

    #[test]
    fn other_sluice_variables_are_not_stage_keys() {
        assert!(key_for_variable("LOG").is_none());
        assert!(key_for_variable("CACHE_DIR").is_none());
        assert!(key_for_variable("KAFKA_").is_none());
    }
}
