//! Returns whatever verdict the message's control headers ask for, so tests
//! can drive every corner of the contract from the host side.
//!
//! Control headers (all optional; names start with `mirror.`):
//! - `mirror.verdict`: `success` (default), `retry` or `dead-letter`.
//! - `mirror.reason`: the retry or dead-letter reason.
//! - `mirror.delay-ms`: the delay a retry asks for.
//! - `mirror.outputs`: how many outputs a success has (default 1).
//! - `mirror.topic`: the outputs' topic (default: none, the stage's topic).
//!
//! Each output echoes the message's key, value and non-control headers byte
//! for byte, then appends `seen.*` headers reporting what the plugin
//! received: topic, partition, offset, timestamp-ms, attempt.

use sluice_plugin::{Handler, Header, Message, Output, Verdict};

struct Mirror;

impl Handler for Mirror {
    fn handle(message: &Message) -> Verdict {
        let reason = message
            .header_str("mirror.reason")
            .unwrap_or("no reason given")
            .to_owned();
        match message.header_str("mirror.verdict").unwrap_or("success") {
            "success" => success(message),
            "retry" => match message.header_str("mirror.delay-ms").map(str::parse::<u64>) {
                None => Verdict::retry(reason),
                Some(Ok(delay)) => Verdict::retry_after(reason, std::time::Duration::from_millis(delay)),
                Some(Err(error)) => Verdict::dead_letter(format!("bad mirror.delay-ms: {error}")),
            },
            "dead-letter" => Verdict::dead_letter(reason),
            other => Verdict::dead_letter(format!("unknown mirror.verdict {other:?}")),
        }
    }
}

fn success(message: &Message) -> Verdict {
    let count: usize = match message.header_str("mirror.outputs").unwrap_or("1").parse() {
        Ok(count) => count,
        Err(error) => return Verdict::dead_letter(format!("bad mirror.outputs: {error}")),
    };
    let mut headers: Vec<Header> = message
        .headers
        .iter()
        .filter(|header| !header.name.starts_with("mirror."))
        .cloned()
        .collect();
    let timestamp = message
        .timestamp_ms
        .map_or_else(|| "none".to_owned(), |ms| ms.to_string());
    headers.extend([
        Header::new("seen.topic", message.topic.clone()),
        Header::new("seen.partition", message.partition.to_string()),
        Header::new("seen.offset", message.offset.to_string()),
        Header::new("seen.timestamp-ms", timestamp),
        Header::new("seen.attempt", message.attempt.to_string()),
    ]);
    let output = Output {
        topic: message.header_str("mirror.topic").map(str::to_owned),
        key: message.key.clone(),
        value: message.value.clone(),
        headers,
    };
    Verdict::success(std::iter::repeat_n(output, count))
}

sluice_plugin::export_handler!(Mirror);
