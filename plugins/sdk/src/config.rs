//! The plugin's own settings: the `[plugin.config]` table of the stage file,
//! or `--config key=value` arguments to `sluice test`.

use std::str::FromStr;

use crate::bindings::sluice::plugin::config as host;

/// The value of a setting, or `None` when it is not set.
pub fn get(key: &str) -> Option<String> {
    host::get(key)
}

/// The value of a setting, or `default` when it is not set.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// A setting parsed as `T`, or `default` when it is not set.
///
/// A value that does not parse is an error naming the key, so a plugin can
/// dead-letter with a reason that points at the stage file rather than guess.
pub fn parse_or<T: FromStr>(key: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match get(key) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|error| format!("plugin config `{key}` = {text:?} is invalid: {error}")),
    }
}

/// Every setting as (key, value) pairs, sorted by key.
pub fn entries() -> Vec<(String, String)> {
    host::entries()
}
