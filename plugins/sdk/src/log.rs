//! Log through the host, which tags every record with the plugin's name and
//! version and writes it to the stage's log stream.
//!
//! Printing to stdout or stderr also reaches the host's log, one record per
//! line, but without a level; prefer these functions.

use crate::bindings::sluice::plugin::logging::{self, Level};

/// Log at `trace` level: detail only useful while developing the plugin.
pub fn trace(message: impl AsRef<str>) {
    logging::log(Level::Trace, message.as_ref());
}

/// Log at `debug` level.
pub fn debug(message: impl AsRef<str>) {
    logging::log(Level::Debug, message.as_ref());
}

/// Log at `info` level.
pub fn info(message: impl AsRef<str>) {
    logging::log(Level::Info, message.as_ref());
}

/// Log at `warn` level: something an operator may want to look at.
pub fn warn(message: impl AsRef<str>) {
    logging::log(Level::Warn, message.as_ref());
}

/// Log at `error` level.
pub fn error(message: impl AsRef<str>) {
    logging::log(Level::Error, message.as_ref());
}
