//! `SLUICE_*` environment variables as overrides of stage-file keys.
//!
//! The variable name is the key path in upper case with `_` between the
//! parts: `SLUICE_KAFKA_BROKERS` is `kafka.brokers`,
//! `SLUICE_PLUGIN_LIMITS_DEADLINE_MS` is `plugin.limits.deadline_ms`. Under
//! the librdkafka property tables `_` stands for `.`:
//! `SLUICE_KAFKA_PROPERTIES_SASL_PASSWORD` is `kafka.properties."sasl.password"`.

use std::ffi::OsString;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Tables, longest first so `plugin_limits` wins over `plugin`. The flag says
/// whether the rest of the name is a librdkafka property (dots, not
/// underscores).
const TABLES: [(&str, &str, bool); 20] = [
    ("kafka_consumer_properties_", "kafka.consumer_properties", true),
    ("kafka_producer_properties_", "kafka.producer_properties", true),
    ("kafka_create_topics_", "kafka.create_topics", false),
    ("kafka_recovery_", "kafka.recovery", false),
    ("kafka_properties_", "kafka.properties", true),
    ("plugin_capabilities_keyvalue_", "plugin.capabilities.keyvalue", false),
    ("plugin_capabilities_http_", "plugin.capabilities.http", false),
    ("plugin_limits_", "plugin.limits", false),
    ("plugin_reload_", "plugin.reload", false),
    ("plugin_config_", "plugin.config", false),
    ("embedded_", "embedded", false),
    ("observe_", "observe", false),
    ("startup_", "startup", false),
    ("breaker_", "breaker", false),
    ("health_", "health", false),
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
#[derive(Debug)]
pub(crate) struct EnvOverride {
    variable: String,
    table: &'static str,
    key: String,
    value: String,
}

/// A `SLUICE_*` variable that would set a stage key but whose name or value
/// is not Unicode. Stage keys are text, so such a value cannot mean what
/// its author intended; refusing it beats a panic or a silent skip. The
/// name is shown lossily (`\u{FFFD}` for the bytes that are not UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotUnicode {
    pub(crate) variable: String,
}

impl EnvOverride {
    /// Every stage-key override in the process environment.
    ///
    /// Reads the environment with `vars_os`: `std::env::vars` panics on the
    /// first variable that is not UTF-8, and such variables are legitimate
    /// (file names in another encoding) when they are not ours.
    pub(crate) fn from_environment() -> Result<Vec<EnvOverride>, NotUnicode> {
        Self::from_variables(std::env::vars_os())
    }

    /// The stage-key overrides among `variables`, sorted by name so the
    /// order of merging never depends on the environment's order. Variables
    /// that are not stage keys (`PATH`, `SLUICE_LOG`) are ignored whatever
    /// their bytes; a stage-key variable that is not Unicode is an error.
    pub(crate) fn from_variables(
        variables: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Vec<EnvOverride>, NotUnicode> {
        let mut overrides = Vec::new();
        for (name, value) in variables {
            let lossy_name = name.to_string_lossy();
            let Some((table, key)) = lossy_name.strip_prefix("SLUICE_").and_then(key_for_variable) else {
                continue;
            };
            let (Some(variable), Ok(value)) = (name.to_str(), value.into_string()) else {
                return Err(NotUnicode {
                    variable: lossy_name.into_owned(),
                });
            };
            overrides.push(EnvOverride {
                variable: variable.to_owned(),
                table,
                key,
                value,
            });
        }
        overrides.sort_by(|a, b| a.variable.cmp(&b.variable));
        Ok(overrides)
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
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use super::{EnvOverride, NotUnicode, key_for_variable};

    fn text(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
    }

    /// Latin-1 "café": valid bytes for a C program, not UTF-8.
    fn latin1() -> OsString {
        OsString::from_vec(b"caf\xe9".to_vec())
    }

    #[test]
    fn stage_keys_are_picked_out_and_sorted() {
        let overrides = EnvOverride::from_variables(text(&[
            ("SLUICE_RETRY_MAX_ATTEMPTS", "8"),
            ("PATH", "/usr/bin"),
            ("SLUICE_LOG", "debug"),
            ("SLUICE_KAFKA_BROKERS", "k:9092"),
        ]))
        .expect("all text");
        let seen: Vec<_> = overrides
            .iter()
            .map(|o| (o.variable.as_str(), o.table, o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("SLUICE_KAFKA_BROKERS", "kafka", "brokers", "k:9092"),
                ("SLUICE_RETRY_MAX_ATTEMPTS", "retry", "max_attempts", "8"),
            ]
        );
    }

    #[test]
    fn a_stage_key_variable_that_is_not_utf8_is_an_error_naming_it() {
        let mut variables = text(&[("SLUICE_KAFKA_BROKERS", "k:9092")]);
        variables.push((OsString::from("SLUICE_STAGE_NAME"), latin1()));
        let error = EnvOverride::from_variables(variables).unwrap_err();
        assert_eq!(
            error,
            NotUnicode {
                variable: "SLUICE_STAGE_NAME".to_owned()
            }
        );
    }

    #[test]
    fn a_stage_key_variable_whose_name_is_not_utf8_is_an_error() {
        let mut name = b"SLUICE_PLUGIN_CONFIG_".to_vec();
        name.extend_from_slice(b"caf\xe9");
        let variables = vec![(OsString::from_vec(name), OsString::from("x"))];
        let error = EnvOverride::from_variables(variables).unwrap_err();
        assert_eq!(error.variable, "SLUICE_PLUGIN_CONFIG_caf\u{FFFD}");
    }

    #[test]
    fn variables_that_are_not_ours_may_hold_any_bytes() {
        let variables = vec![
            (OsString::from("LANG_FILE"), latin1()),
            (latin1(), OsString::from("x")),
            (OsString::from("SLUICE_LOG"), latin1()),
            (OsString::from("SLUICE_CACHE_DIR"), latin1()),
            (OsString::from("SLUICE_RETRY_JITTER"), OsString::from("0.1")),
        ];
        let overrides = EnvOverride::from_variables(variables).expect("foreign bytes are ignored");
        assert_eq!(overrides.len(), 1);
        assert_eq!(overrides[0].variable, "SLUICE_RETRY_JITTER");
    }

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
