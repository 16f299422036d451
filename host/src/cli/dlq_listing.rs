//! How `sluice dlq` shows a dead letter: a few readable lines for a person
//! (long or binary values cut short), or one complete JSON object for a
//! script.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::jsonl::insert_bytes;
use crate::dlq::{DeadLetterRecord, OmittedPart};

/// Longest key, value, header or reason shown in text, in characters.
const TEXT_LIMIT: usize = 120;
/// Leading bytes shown in hex of a value that is not text.
const HEX_LIMIT: usize = 16;

/// A dead letter for a person to read: where it is, the message, and why
/// it failed, one fact per line.
pub(crate) fn text_entry(record: &DeadLetterRecord) -> String {
    let mut text = format!("{} {}", record.topic, record.at);
    if let Some(written) = record.timestamp_ms.and_then(rfc3339_millis) {
        let _ = write!(text, "  written {written}");
    }
    text.push('\n');
    let mut line = |label: &str, value: String| {
        let _ = writeln!(text, "  {label:<10}{value}");
    };
    line(
        "key:",
        part_text(record, OmittedPart::KEY, record.key.as_deref(), "(none)"),
    );
    line(
        "value:",
        part_text(record, OmittedPart::VALUE, record.value.as_deref(), "(tombstone)"),
    );
    match &record.why {
        Ok(why) => {
            line("reason:", reason_text(&why.reason));
            let mut source = format!("{}/{}/{}", why.source_topic, why.source_partition, why.source_offset);
            if let Some(written) = why.source_timestamp_ms.and_then(rfc3339_millis) {
                let _ = write!(source, ", written {written}");
            }
            line("source:", source);
            line(
                "failed:",
                format!(
                    "{} after {} attempt{}",
                    humantime::format_rfc3339_millis(why.failed_at),
                    why.attempts,
                    if why.attempts == 1 { "" } else { "s" }
                ),
            );
            let short_version: String = why.plugin_version.chars().take(12).collect();
            line(
                "stage:",
                format!("{}, plugin {} {short_version}", why.stage, why.plugin_name),
            );
        }
        Err(problem) => line("problem:", format!("not a sluice dead letter: {problem}")),
    }
    if let Some(omitted) = omitted_text(record, OmittedPart::HEADERS) {
        line("headers:", omitted);
    } else if !record.original_headers.is_empty() {
        let headers: Vec<String> = record
            .original_headers
            .iter()
            .map(|(name, value)| format!("{name}={}", bytes_text(Some(value), "")))
            .collect();
        line("headers:", headers.join(", "));
    }
    text
}

/// A dead letter for a script, nothing shortened. `topic`, `partition`,
/// `offset`, `timestamp_ms`, `key`, `value` and `headers` are the dead
/// letter's own, in the conventions of `sluice test` (text, or base64 under
/// `<name>_base64`); `omitted` maps what a dead letter shrunk to fit the
/// broker's size limit left out (`value`, `headers`, `key`) to its original
/// size in bytes (`null` when not recorded), and is `{}` for a whole one;
/// `dead_letter` holds the `sluice.*` headers, or is `null` with a
/// `problem` when they are missing or malformed.
pub(crate) fn json_entry(record: &DeadLetterRecord) -> Value {
    let mut object = Map::new();
    object.insert("topic".into(), record.topic.clone().into());
    object.insert("partition".into(), record.at.partition.into());
    object.insert("offset".into(), record.at.offset.into());
    object.insert("timestamp_ms".into(), record.timestamp_ms.into());
    insert_bytes(&mut object, "key", record.key.as_deref());
    insert_bytes(&mut object, "value", record.value.as_deref());
    let headers = record
        .original_headers
        .iter()
        .map(|(name, value)| {
            let mut header = Map::new();
            header.insert("name".into(), name.clone().into());
            insert_bytes(&mut header, "value", Some(value));
            Value::Object(header)
        })
        .collect();
    object.insert("headers".into(), headers);
    let omitted: Map<String, Value> = record
        .omitted
        .iter()
        .map(|omitted| (omitted.part.clone(), omitted.original_size.into()))
        .collect();
    object.insert("omitted".into(), Value::Object(omitted));
    object.insert("traceparent".into(), record.trace.map(|trace| trace.to_string()).into());
    match &record.why {
        Ok(why) => {
            let mut dead_letter = Map::new();
            dead_letter.insert("reason".into(), why.reason.clone().into());
            dead_letter.insert("source_topic".into(), why.source_topic.clone().into());
            dead_letter.insert("source_partition".into(), why.source_partition.into());
            dead_letter.insert("source_offset".into(), why.source_offset.into());
            dead_letter.insert("source_timestamp_ms".into(), why.source_timestamp_ms.into());
            dead_letter.insert("attempts".into(), why.attempts.into());
            dead_letter.insert("stage".into(), why.stage.clone().into());
            dead_letter.insert("plugin_name".into(), why.plugin_name.clone().into());
            dead_letter.insert("plugin_version".into(), why.plugin_version.clone().into());
            dead_letter.insert(
                "failed_at".into(),
                humantime::format_rfc3339_millis(why.failed_at).to_string().into(),
            );
            object.insert("dead_letter".into(), Value::Object(dead_letter));
        }
        Err(problem) => {
            object.insert("dead_letter".into(), Value::Null);
            object.insert("problem".into(), problem.to_string().into());
        }
    }
    Value::Object(object)
}

/// A key or value as [`bytes_text`] shows it, or, when the dead letter left
/// it out, saying so: `(none)` or `(tombstone)` would misstate the message.
fn part_text(record: &DeadLetterRecord, part: &str, bytes: Option<&[u8]>, absent: &str) -> String {
    omitted_text(record, part).unwrap_or_else(|| bytes_text(bytes, absent))
}

/// `left out to fit the broker's size limit (was 1048600 bytes)`, when the
/// dead letter leaves `part` out.
fn omitted_text(record: &DeadLetterRecord, part: &str) -> Option<String> {
    let omitted = record.omitted.iter().find(|omitted| omitted.part == part)?;
    let size = match omitted.original_size {
        Some(size) => format!("was {size} bytes"),
        None => "size not recorded".to_owned(),
    };
    Some(format!("left out to fit the broker's size limit ({size})"))
}

/// Text in quotes (escaped, cut at [`TEXT_LIMIT`]), or for other bytes
/// their count and first bytes in hex.
fn bytes_text(bytes: Option<&[u8]>, absent: &str) -> String {
    let Some(bytes) = bytes else {
        return absent.to_owned();
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => shortened(text, bytes.len()),
        Err(_) => {
            let shown = &bytes[..bytes.len().min(HEX_LIMIT)];
            let more = if bytes.len() > HEX_LIMIT { "…" } else { "" };
            format!("{} bytes, not text: {}{more}", bytes.len(), hex::encode(shown))
        }
    }
}

fn shortened(text: &str, byte_count: usize) -> String {
    if text.chars().count() <= TEXT_LIMIT {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(TEXT_LIMIT).collect();
    format!("{head:?}… ({byte_count} bytes)")
}

/// A reason's first line (plugin traps quote whole backtraces), saying
/// how much was left out.
fn reason_text(reason: &str) -> String {
    let mut lines = reason.lines();
    let first = lines.next().unwrap_or_default();
    let mut text = if first.chars().count() > TEXT_LIMIT {
        format!("{}…", first.chars().take(TEXT_LIMIT).collect::<String>())
    } else {
        first.to_owned()
    };
    let more = lines.count();
    if more > 0 {
        let _ = write!(
            text,
            " (+{more} more line{}; --json shows all)",
            if more == 1 { "" } else { "s" }
        );
    }
    text
}

fn rfc3339_millis(timestamp_ms: i64) -> Option<String> {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(timestamp_ms).ok()?);
    Some(humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::dlq::DeadLetterOffset;
    use crate::pipeline::{DeadLetterHeaderError, DeadLetterHeaders};

    fn record() -> DeadLetterRecord {
        DeadLetterRecord {
            topic: "dlq".into(),
            at: DeadLetterOffset {
                partition: 1,
                offset: 4,
            },
            timestamp_ms: Some(1_700_000_002_000),
            key: Some(b"key-3".to_vec()),
            value: Some(vec![0xff, 0x00, 0x01]),
            original_headers: vec![("message-id".into(), b"id-3".to_vec())],
            omitted: Vec::new(),
            trace: None,
            why: Ok(DeadLetterHeaders {
                reason: "retries exhausted: trapped\nbacktrace line 1\nbacktrace line 2".into(),
                source_topic: "in".into(),
                source_partition: 0,
                source_offset: 3,
                source_timestamp_ms: Some(1_700_000_000_000),
                attempts: 2,
                stage: "upper".into(),
                plugin_name: "trap-on-marker".into(),
                plugin_version: "0123456789abcdef".repeat(4),
                failed_at: UNIX_EPOCH + Duration::from_millis(1_700_000_001_500),
            }),
        }
    }

    #[test]
    fn text_shows_every_fact_on_its_own_line() {
        assert_eq!(
            text_entry(&record()),
            "dlq 1:4  written 2023-11-14T22:13:22.000Z\n\
             \x20 key:      \"key-3\"\n\
             \x20 value:    3 bytes, not text: ff0001\n\
             \x20 reason:   retries exhausted: trapped (+2 more lines; --json shows all)\n\
             \x20 source:   in/0/3, written 2023-11-14T22:13:20.000Z\n\
             \x20 failed:   2023-11-14T22:13:21.500Z after 2 attempts\n\
             \x20 stage:    upper, plugin trap-on-marker 0123456789ab\n\
             \x20 headers:  message-id=\"id-3\"\n"
        );
    }

    fn shrunk() -> DeadLetterRecord {
        let mut shrunk = record();
        shrunk.value = None;
        shrunk.original_headers.clear();
        shrunk.omitted = vec![
            OmittedPart {
                part: "value".into(),
                original_size: Some(1_048_600),
            },
            OmittedPart {
                part: "headers".into(),
                original_size: None,
            },
        ];
        shrunk
    }

    #[test]
    fn text_says_what_a_shrunk_dead_letter_left_out() {
        let text = text_entry(&shrunk());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "  key:      \"key-3\"");
        assert_eq!(
            lines[2],
            "  value:    left out to fit the broker's size limit (was 1048600 bytes)"
        );
        assert_eq!(
            lines.last().copied(),
            Some("  headers:  left out to fit the broker's size limit (size not recorded)")
        );
    }

    #[test]
    fn json_maps_what_a_shrunk_dead_letter_left_out_to_its_size() {
        let line = json_entry(&shrunk());
        assert_eq!(
            line["omitted"],
            serde_json::json!({"value": 1_048_600, "headers": null})
        );
        assert_eq!(line["value"], Value::Null);
        assert_eq!(line["headers"], serde_json::json!([]));
    }

    #[test]
    fn long_text_is_cut_short_with_its_size() {
        let long = "x".repeat(500);
        assert_eq!(
            bytes_text(Some(long.as_bytes()), ""),
            format!("\"{}\"… (500 bytes)", "x".repeat(TEXT_LIMIT))
        );
        assert_eq!(bytes_text(None, "(tombstone)"), "(tombstone)");
    }

    #[test]
    fn json_keeps_everything_and_names_a_foreign_record() {
        let line = json_entry(&record());
        assert_eq!(line["value_base64"], "/wAB");
        assert_eq!(line["key"], "key-3");
        assert_eq!(line["headers"][0]["value"], "id-3");
        assert_eq!(line["dead_letter"]["source_offset"], 3);
        assert_eq!(
            line["dead_letter"]["reason"],
            "retries exhausted: trapped\nbacktrace line 1\nbacktrace line 2"
        );
        assert_eq!(line["dead_letter"]["failed_at"], "2023-11-14T22:13:21.500Z");
        assert_eq!(line["omitted"], serde_json::json!({}));

        let mut foreign = record();
        foreign.why = Err(DeadLetterHeaderError::Missing {
            header: DeadLetterHeaders::REASON,
        });
        let line = json_entry(&foreign);
        assert_eq!(line["dead_letter"], Value::Null);
        assert_eq!(line["problem"], "no `sluice.reason` header (not a sluice dead letter?)");
    }
}
