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

/// A part of the failed message that a dead letter shrunk to fit the
/// broker's size limit leaves out (named in `sluice.omitted`), with the size
/// the stage recorded for it. Such a dead letter no longer holds the
/// message that failed, so replaying it would not put that message back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmittedPart {
    /// `value`, `headers` or `key`, as the stage names it.
    pub part: String,
    /// Its size in the original message in bytes (for headers: names plus
    /// values), or `None` when the stage recorded no readable size.
    pub original_size: Option<u64>,
}

impl OmittedPart {
    pub const VALUE: &'static str = "value";
    pub const HEADERS: &'static str = "headers";
    pub const KEY: &'static str = "key";

    /// The header carrying the original size of `part`, for the parts the
    /// stage knows.
    fn size_header(part: &str) -> Option<&'static str> {
        match part {
            Self::VALUE => Some(DeadLetterHeaders::ORIGINAL_VALUE_SIZE),
            Self::HEADERS => Some(DeadLetterHeaders::ORIGINAL_HEADERS_SIZE),
            Self::KEY => Some(DeadLetterHeaders::ORIGINAL_KEY_SIZE),
            _ => None,
        }
    }

    /// The omission the stage's own headers (`block`: from its last
    /// `sluice.reason` on) describe; empty for a dead letter kept whole.
    /// Where a name repeats, the last counts, as for the other `sluice.*`
    /// headers. An earlier stage's `sluice.omitted` among the original
    /// headers is about that stage's dead letter, not this one.
    fn from_block(block: &[(String, Vec<u8>)]) -> Vec<OmittedPart> {
        let last = |name: &str| -> Option<String> {
            block
                .iter()
                .rev()
                .find(|(header, _)| header == name)
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        };
        let Some(omitted) = last(DeadLetterHeaders::OMITTED) else {
            return Vec::new();
        };
        omitted
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| OmittedPart {
                part: part.to_owned(),
                original_size: Self::size_header(part)
                    .and_then(&last)
                    .and_then(|size| size.trim().parse().ok()),
            })
            .collect()
    }
}

impl fmt::Display for OmittedPart {
    /// `value (1048600 bytes)`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.original_size {
            Some(size) => write!(formatter, "{} ({size} bytes)", self.part),
            None => write!(formatter, "{} (size not recorded)", self.part),
        }
    }
}

/// One dead letter. The stage wrote the original headers (without their
/// `traceparent`), then its `sluice.*` headers, then a `traceparent` of
/// its own, then, for a dead letter shrunk to fit the broker's size limit,
/// `sluice.omitted` and the original sizes; this undoes that.
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
    /// What of the failed message this dead letter leaves out, in the
    /// order `sluice.omitted` names it; empty when it holds all of it.
    pub omitted: Vec<OmittedPart>,
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
        let omitted = OmittedPart::from_block(&record.headers[block_start..]);
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
            omitted,
            trace,
            why,
        }
    }

    /// Whether this dead letter leaves `part` ([`OmittedPart::VALUE`] etc.)
    /// of the failed message out.
    pub fn omits(&self, part: &str) -> bool {
        self.omitted.iter().any(|omitted| omitted.part == part)
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
        assert_eq!(record.omitted, []);
    }

    fn omitted(part: &str, original_size: Option<u64>) -> OmittedPart {
        OmittedPart {
            part: part.to_owned(),
            original_size,
        }
    }

    fn shrunk(original: Vec<(String, Vec<u8>)>, omission: &[(&str, &str)]) -> DeadLetterRecord {
        // As the stage writes it: the omission after its own trace context.
        let mut headers = original;
        headers.extend(why().to_headers());
        headers.push(header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        headers.extend(omission.iter().map(|(name, value)| header(name, value)));
        DeadLetterRecord::from_consumed(ConsumedRecord {
            partition: TopicPartition::new("dlq", 0),
            offset: 3,
            timestamp_ms: None,
            key: Some(b"k".to_vec()),
            value: None,
            headers,
        })
    }

    #[test]
    fn a_shrunk_dead_letter_says_what_it_left_out_and_how_big_it_was() {
        let record = shrunk(
            Vec::new(),
            &[
                (DeadLetterHeaders::ORIGINAL_VALUE_SIZE, "1048600"),
                (DeadLetterHeaders::ORIGINAL_HEADERS_SIZE, "17"),
                (DeadLetterHeaders::OMITTED, "value,headers"),
            ],
        );
        assert_eq!(
            record.omitted,
            [omitted("value", Some(1_048_600)), omitted("headers", Some(17))]
        );
        assert!(record.omits(OmittedPart::VALUE) && record.omits(OmittedPart::HEADERS));
        assert!(!record.omits(OmittedPart::KEY));
        assert_eq!(record.original_headers, []);
        assert_eq!(record.why, Ok(why()));
        assert_eq!(record.omitted[0].to_string(), "value (1048600 bytes)");
    }

    #[test]
    fn an_earlier_stages_omission_among_the_original_headers_is_not_this_ones() {
        let earlier = vec![
            header(DeadLetterHeaders::ORIGINAL_KEY_SIZE, "3"),
            header(DeadLetterHeaders::OMITTED, "key"),
        ];
        let whole = shrunk(earlier.clone(), &[]);
        assert_eq!(whole.omitted, []);
        assert_eq!(whole.original_headers, earlier);
        let without_value = shrunk(
            earlier.clone(),
            &[
                (DeadLetterHeaders::ORIGINAL_VALUE_SIZE, "9"),
                (DeadLetterHeaders::OMITTED, "value"),
            ],
        );
        assert_eq!(without_value.omitted, [omitted("value", Some(9))]);
        assert_eq!(without_value.original_headers, earlier);
    }

    #[test]
    fn an_omission_without_a_readable_size_still_counts() {
        let mut headers = why().to_headers();
        headers.push(header(DeadLetterHeaders::ORIGINAL_KEY_SIZE, "many"));
        headers.push(header(DeadLetterHeaders::OMITTED, " key , "));
        let record = DeadLetterRecord::from_consumed(ConsumedRecord {
            partition: TopicPartition::new("dlq", 0),
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: None,
            headers,
        });
        assert_eq!(record.omitted, [omitted("key", None)]);
        assert_eq!(record.omitted[0].to_string(), "key (size not recorded)");
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
