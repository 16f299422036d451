//! The contract's data types with the small conveniences that keep handlers
//! short. The types themselves are generated from `wit/plugin.wit`.

use std::str::Utf8Error;
use std::time::Duration;

pub use crate::bindings::sluice::plugin::types::{Header, Message, Output, RetryInfo, Verdict};

impl Message {
    /// The value as text: `None` for a tombstone, `Some(Err(..))` when the
    /// bytes are not UTF-8.
    pub fn value_str(&self) -> Option<Result<&str, Utf8Error>> {
        self.value.as_deref().map(std::str::from_utf8)
    }

    /// The key as text: `None` when there is no key, `Some(Err(..))` when the
    /// bytes are not UTF-8.
    pub fn key_str(&self) -> Option<Result<&str, Utf8Error>> {
        self.key.as_deref().map(std::str::from_utf8)
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|header| header.name == name)
            .map(|header| header.value.as_slice())
    }

    /// The value of the first header with this name, when it is UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|value| std::str::from_utf8(value).ok())
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

impl Output {
    /// A record with this value, no key and no headers, bound for the
    /// stage's output topic.
    pub fn new(value: impl Into<Vec<u8>>) -> Output {
        Output {
            topic: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    /// The input record passed through unchanged: same key, value and
    /// headers, bound for the stage's output topic.
    pub fn from_message(message: &Message) -> Output {
        Output {
            topic: None,
            key: message.key.clone(),
            value: message.value.clone(),
            headers: message.headers.clone(),
        }
    }

    /// The input record with a new value: the usual shape of a transform,
    /// which keeps the key (and so the partitioning) and the headers.
    pub fn replacing_value(message: &Message, value: impl Into<Vec<u8>>) -> Output {
        Output {
            topic: None,
            key: message.key.clone(),
            value: Some(value.into()),
            headers: message.headers.clone(),
        }
    }

    /// Send this record to `topic` instead of the stage's output topic.
    pub fn to_topic(mut self, topic: impl Into<String>) -> Output {
        self.topic = Some(topic.into());
        self
    }

    /// Set the record key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Output {
        self.key = Some(key.into());
        self
    }

    /// Append a header (Kafka keeps duplicates and their order).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Output {
        self.headers.push(Header::new(name, value));
        self
    }
}

impl Verdict {
    /// Handled: produce these outputs. An empty list filters the message.
    pub fn success(outputs: impl IntoIterator<Item = Output>) -> Verdict {
        Verdict::Success(outputs.into_iter().collect())
    }

    /// Handled, with nothing to produce: the message is filtered out.
    pub fn filter() -> Verdict {
        Verdict::Success(Vec::new())
    }

    /// Try again later, with the stage's backoff policy choosing the delay.
    pub fn retry(reason: impl Into<String>) -> Verdict {
        Verdict::Retry(RetryInfo {
            reason: reason.into(),
            delay_ms: None,
        })
    }

    /// Try again after at least `delay` (capped by the stage's maximum
    /// backoff).
    pub fn retry_after(reason: impl Into<String>, delay: Duration) -> Verdict {
        Verdict::Retry(RetryInfo {
            reason: reason.into(),
            delay_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// Give up: send the original record to the dead-letter topic with this
    /// reason.
    pub fn dead_letter(reason: impl Into<String>) -> Verdict {
        Verdict::DeadLetter(reason.into())
    }
}
