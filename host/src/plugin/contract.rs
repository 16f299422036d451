//! The WIT contract (`wit/plugin.wit`) as Rust types.
//!
//! The generated types are the runtime's public data types: the pipeline
//! builds a [`Message`] once and the runtime lowers it straight into the
//! guest, with no intermediate copy. Conveniences for building and reading
//! them live here too.

use std::time::Duration;

wasmtime::component::bindgen!({
    world: "message-handler",
    path: "../wit",
    additional_derives: [PartialEq, Eq],
    // Called with `call_async`, so a call that waits parks a future, not a
    // thread; the world's own imports (logging, config) never wait.
    exports: { default: async },
});

// `Message` and `Verdict` are already in scope: the world `use`s them.
pub use self::sluice::plugin::types::{Header, Output, RetryInfo};

/// The world a plugin must implement, as users see it in errors.
pub const WORLD: &str = "sluice:plugin/message-handler@0.1.0";

/// Exports the world requires, by name.
pub const REQUIRED_EXPORTS: [&str; 2] = ["handle", "handle-batch"];

impl Message {
    /// A message with a value and nothing else, on its first attempt: the
    /// starting point for tests and tools that build messages by hand.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64, value: Option<Vec<u8>>) -> Message {
        Message {
            topic: topic.into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            value,
            headers: Vec::new(),
            attempt: 1,
        }
    }
}

impl Header {
    /// A header from a name and any byte-like value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl RetryInfo {
    /// The delay the plugin asked for, if any.
    pub fn requested_delay(&self) -> Option<Duration> {
        self.delay_ms.map(Duration::from_millis)
    }
}

impl Verdict {
    /// The verdict's kind as it appears in logs, metrics and tool output.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Success(_) => "success",
            Verdict::Retry(_) => "retry",
            Verdict::DeadLetter(_) => "dead-letter",
        }
    }
}
