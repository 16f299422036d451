//! A record read from a dead-letter topic, taken apart again into the
//! original message and the stage's account of why it failed.

use std::fmt;
use std::str::FromStr;

use crate::kafka::ConsumedRecord;
use crate::observe::{TRACEPARENT_HEADER, TraceParent};
use crate::pipeline::{DeadLetterHeaderError, DeadLetterHeaders};

/// Where a record sits in the dead-letter topic: what an operator names to
/// pick it (`--offset 1:7`) and what a replayed copy points back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeadLetterOffset {
    pub partition: i32,
    pub offset: i64,
}

impl FromStr for DeadLetterOffset {
    type Err = String;

    /// `PARTITION:OFFSET`, as `inspect` prints them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("expected PARTITION:OFFSET such as 0:42, got {text:?}");
        let (partition, offset) = text.split_once(':').ok_or_else(invalid)?;
        let partition: i32 = partition.trim().parse().map_err(|_| invalid())?;
        let offset: i64 = offset.trim().parse().map_err(|_| invalid())?;
        if partition < 0 || offset < 0 {
            return Err(invalid());
        }
        Ok(DeadLetterOffset { partition, offset })
    }
}

impl fmt::Display for DeadLetterOffset {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.partition, self.offset)
    }
}

/// One dead letter. The stage wrote the original headers (without their
/// `traceparent`), then its `sluice.*` headers, then a `traceparent` of
/// its own; this undoes that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
    pub topic: String,
    pub at: DeadLetterOffset,
    /// When the dead letter was written, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The failed message's own headers, in order.
    pub original_headers: Vec<(String, Vec<u8>)>,
    /// The trace context the stage gave the dead letter: the failed hop.
    pub trace: Option<TraceParent>,
    /// The stage's `sluice.*` headers, or why they are not usable (a record
    /// some other producer put on the topic).
    pub why: Result<DeadLetterHeaders, DeadLetterHeaderError>,
}

impl DeadLetterRecord {
    /// Split a consumed dead letter. The stage's headers start at the last
    /// `sluice.reason`; everything before it, and anything after it that is
    /// neither a dead-letter header nor `traceparent`, is the original's.
    pub fn from_consumed(record: ConsumedRecord) -> Self {
        let why = DeadLetterHeaders::from_headers(&record.headers);
        let trace = record
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name == TRACEPARENT_HEADER)
            .and_then(|(_, value)| TraceParent::parse(value));
        let block_start = record
            .headers
            .iter()
            .rposition(|(name, _)| name == DeadLetterHeaders::REASON)
            .unwrap_or(record.headers.len());
        let original_headers = record
            .headers
            .into_iter()
            .enumerate()
            .filter(|(index, (name, _))| {
                name != TRACEPARENT_HEADER && (*index < block_start || !DeadLetterHeaders::is_dead_letter_header(name))
            })
            .map(|(_, header)| header)
            .collect();
        DeadLetterRecord {
            topic: record.partition.topic.to_string(),
            at: DeadLetterOffset {
                partition: record.partition.partition,
                offset: record.offset,
            },
            timestamp_ms: record.timestamp_ms,
            key: record.key,
            value: record.value,
            original_headers,
            trace,
            why,
        }
    }

    /// `<topic>/<partition>/<offset>`: names this record across topics.
    pub fn location(&self) -> String {
        format!("{}/{}/{}", self.topic, self.at.partition, self.at.offset)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::kafka::TopicPartition;

    fn why() -> DeadLetterHeaders {
        DeadLetterHeaders {
            reason: "bad input".into(),
            source_topic: "orders".into(),
            source_partition: 1,
            source_offset: 9,
            source_timestamp_ms: None,
            attempts: 1,
            stage: "enrich".into(),
            plugin_name: "json-enrich".into(),
            plugin_version: "ab".repeat(32),
            failed_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn header(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_owned(), value.as_bytes().to_vec())
    }

    #[test]
    fn the_original_headers_are_separated_from_the_stages() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // An upstream stage's version header is part of the original.
        let mut headers = vec![header("message-id", "m-1"), header("sluice.plugin.version", "upstream")];
        headers.extend(why().to_headers());
        headers.push(header("traceparent", trace));
        let record = DeadLetterRecord::from_consumed(ConsumedRecord {
            partition: TopicPartition::new("orders-dlq", 2),
            offset: 5,
            timestamp_ms: Some(7),
            key: Some(b"k".to_vec()),
            value: None,
            headers,
        });
        assert_eq!(
            record.original_headers,
            [header("message-id", "m-1"), header("sluice.plugin.version", "upstream")]
        );
        assert_eq!(record.why, Ok(why()));
        assert_eq!(record.trace.map(|trace| trace.to_string()).as_deref(), Some(trace));
        assert_eq!(record.location(), "orders-dlq/2/5");
        assert_eq!(record.at.to_string(), "2:5");
    }

    #[test]
    fn a_record_without_sluice_headers_keeps_all_of_its_own() {
        let record = DeadLetterRecord::from_consumed(ConsumedRecord {
            partition: TopicPartition::new("dlq", 0),
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: vec![header("a", "1"), header("traceparent", "garbage")],
        });
        assert_eq!(record.original_headers, [header("a", "1")]);
        assert_eq!(record.trace, None);
        assert!(record.why.is_err());
    }

    #[test]
    fn offsets_parse_as_partition_colon_offset() {
        assert_eq!(
            "1:7".parse::<DeadLetterOffset>(),
            Ok(DeadLetterOffset {
                partition: 1,
                offset: 7
            })
        );
        for bad in ["7", "a:1", "1:", "-1:3", "1:2:3"] {
            assert!(bad.parse::<DeadLetterOffset>().is_err(), "{bad}");
        }
    }
}
