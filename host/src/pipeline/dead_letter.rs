//! What a dead-letter record says about why it is there.

use std::str::FromStr;
use std::time::SystemTime;

/// The `sluice.*` headers added to a dead-lettered record, after its
/// original headers. Together they answer what failed, where it came from,
/// which plugin version judged it and when, so a DLQ record can be
/// understood (and replayed) without the stage's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterHeaders {
    pub reason: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Milliseconds since the Unix epoch, when the source record had one.
    pub source_timestamp_ms: Option<i64>,
    pub attempts: u32,
    pub stage: String,
    pub plugin_name: String,
    /// The plugin file's SHA-256, in full.
    pub plugin_version: String,
    pub failed_at: SystemTime,
}

impl DeadLetterHeaders {
    pub const REASON: &'static str = "sluice.reason";
    pub const SOURCE_TOPIC: &'static str = "sluice.source.topic";
    pub const SOURCE_PARTITION: &'static str = "sluice.source.partition";
    pub const SOURCE_OFFSET: &'static str = "sluice.source.offset";
    pub const SOURCE_TIMESTAMP: &'static str = "sluice.source.timestamp";
    pub const ATTEMPTS: &'static str = "sluice.attempts";
    pub const STAGE: &'static str = "sluice.stage";
    pub const PLUGIN_NAME: &'static str = "sluice.plugin.name";
    pub const PLUGIN_VERSION: &'static str = "sluice.plugin.version";
    pub const FAILED_AT: &'static str = "sluice.failed-at";
    /// On a dead letter shrunk to fit the broker's size limit: what it
    /// leaves out, comma-separated, from `value`, `headers`, `key`.
    pub const OMITTED: &'static str = "sluice.omitted";
    /// The sizes in bytes of what [`DeadLetterHeaders::OMITTED`] names, as
    /// decimal text; the headers' size counts names and values.
    pub const ORIGINAL_VALUE_SIZE: &'static str = "sluice.original-value-size";
    pub const ORIGINAL_HEADERS_SIZE: &'static str = "sluice.original-headers-size";
    pub const ORIGINAL_KEY_SIZE: &'static str = "sluice.original-key-size";

    /// The headers as (name, value) pairs, all values UTF-8 text. The source
    /// timestamp header is left out when the source record had none;
    /// `failed-at` is RFC 3339 in UTC with milliseconds.
    pub fn to_headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut headers = vec![
            (Self::REASON, self.reason.clone()),
            (Self::SOURCE_TOPIC, self.source_topic.clone()),
            (Self::SOURCE_PARTITION, self.source_partition.to_string()),
            (Self::SOURCE_OFFSET, self.source_offset.to_string()),
        ];
        if let Some(timestamp) = self.source_timestamp_ms {
            headers.push((Self::SOURCE_TIMESTAMP, timestamp.to_string()));
        }
        headers.extend([
            (Self::ATTEMPTS, self.attempts.to_string()),
            (Self::STAGE, self.stage.clone()),
            (Self::PLUGIN_NAME, self.plugin_name.clone()),
            (Self::PLUGIN_VERSION, self.plugin_version.clone()),
            (
                Self::FAILED_AT,
                humantime::format_rfc3339_millis(self.failed_at).to_string(),
            ),
        ]);
        headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.into_bytes()))
            .collect()
    }

    /// Read the headers back from a dead-letter record: the inverse of
    /// [`DeadLetterHeaders::to_headers`], so `sluice dlq` can say why a
    /// record is there and where it came from. Where a name occurs more than
    /// once, the last one counts: the stage appends its headers after the
    /// original ones, which may carry an earlier stage's.
    pub fn from_headers(headers: &[(String, Vec<u8>)]) -> Result<Self, DeadLetterHeaderError> {
        let text = |name: &'static str| -> Result<Option<String>, DeadLetterHeaderError> {
            match headers.iter().rev().find(|(header, _)| header == name) {
                None => Ok(None),
                Some((_, value)) => {
                    String::from_utf8(value.clone())
                        .map(Some)
                        .map_err(|_| DeadLetterHeaderError::Malformed {
                            header: name,
                            problem: "is not UTF-8 text".to_owned(),
                        })
                }
            }
        };
        let required = |name: &'static str| text(name)?.ok_or(DeadLetterHeaderError::Missing { header: name });
        Ok(DeadLetterHeaders {
            reason: required(Self::REASON)?,
            source_topic: required(Self::SOURCE_TOPIC)?,
            source_partition: parse_number(Self::SOURCE_PARTITION, &required(Self::SOURCE_PARTITION)?)?,
            source_offset: parse_number(Self::SOURCE_OFFSET, &required(Self::SOURCE_OFFSET)?)?,
            source_timestamp_ms: text(Self::SOURCE_TIMESTAMP)?
                .map(|value| parse_number(Self::SOURCE_TIMESTAMP, &value))
                .transpose()?,
            attempts: parse_number(Self::ATTEMPTS, &required(Self::ATTEMPTS)?)?,
            stage: required(Self::STAGE)?,
            plugin_name: required(Self::PLUGIN_NAME)?,
            plugin_version: required(Self::PLUGIN_VERSION)?,
            failed_at: humantime::parse_rfc3339(&required(Self::FAILED_AT)?).map_err(|error| {
                DeadLetterHeaderError::Malformed {
                    header: Self::FAILED_AT,
                    problem: format!("is not an RFC 3339 time ({error})"),
                }
            })?,
        })
    }

    /// Whether a header name is one of those [`DeadLetterHeaders::to_headers`]
    /// writes.
    pub fn is_dead_letter_header(name: &str) -> bool {
        [
            Self::REASON,
            Self::SOURCE_TOPIC,
            Self::SOURCE_PARTITION,
            Self::SOURCE_OFFSET,
            Self::SOURCE_TIMESTAMP,
            Self::ATTEMPTS,
            Self::STAGE,
            Self::PLUGIN_NAME,
            Self::PLUGIN_VERSION,
            Self::FAILED_AT,
            Self::OMITTED,
            Self::ORIGINAL_VALUE_SIZE,
            Self::ORIGINAL_HEADERS_SIZE,
            Self::ORIGINAL_KEY_SIZE,
        ]
        .contains(&name)
    }
}

/// Why a record's headers are not a sluice dead letter's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterHeaderError {
    #[error("no `{header}` header (not a sluice dead letter?)")]
    Missing { header: &'static str },
    #[error("header `{header}` {problem}")]
    Malformed { header: &'static str, problem: String },
}

fn parse_number<T: FromStr>(header: &'static str, value: &str) -> Result<T, DeadLetterHeaderError> {
    value.parse().map_err(|_| DeadLetterHeaderError::Malformed {
        header,
        problem: format!("is not a number: {value:?}"),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{DeadLetterHeaderError, DeadLetterHeaders};

    fn example() -> DeadLetterHeaders {
        DeadLetterHeaders {
            reason: "retries exhausted: db down".into(),
            source_topic: "orders".into(),
            source_partition: 3,
            source_offset: 42,
            source_timestamp_ms: Some(1_700_000_000_123),
            attempts: 5,
            stage: "enrich".into(),
            plugin_name: "json-enrich".into(),
            plugin_version: "ab".repeat(32),
            failed_at: UNIX_EPOCH + Duration::from_millis(1_700_000_001_500),
        }
    }

    #[test]
    fn every_header_is_present_as_text() {
        let headers = example().to_headers();

        let text: Vec<(String, String)> = headers
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8(value).unwrap()))
            .collect();
        let expected = [
            ("sluice.reason", "retries exhausted: db down".to_owned()),
            ("sluice.source.topic", "orders".to_owned()),
            ("sluice.source.partition", "3".to_owned()),
            ("sluice.source.offset", "42".to_owned()),
            ("sluice.source.timestamp", "1700000000123".to_owned()),
            ("sluice.attempts", "5".to_owned()),
            ("sluice.stage", "enrich".to_owned()),
            ("sluice.plugin.name", "json-enrich".to_owned()),
            ("sluice.plugin.version", "ab".repeat(32)),
            ("sluice.failed-at", "2023-11-14T22:13:21.500Z".to_owned()),
        ];
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn headers_read_back_as_written() {
        let written = example();
        assert_eq!(
            DeadLetterHeaders::from_headers(&written.to_headers()),
            Ok(written.clone())
        );
        let without_timestamp = DeadLetterHeaders {
            source_timestamp_ms: None,
            ..written
        };
        assert_eq!(
            DeadLetterHeaders::from_headers(&without_timestamp.to_headers()),
            Ok(without_timestamp)
        );
    }

    #[test]
    fn the_last_of_repeated_headers_counts() {
        let earlier_stage = DeadLetterHeaders {
            stage: "parse".into(),
            reason: "earlier".into(),
            ..example()
        };
        let mut headers = earlier_stage.to_headers();
        headers.push(("message-id".into(), b"m-1".to_vec()));
        headers.extend(example().to_headers());
        assert_eq!(DeadLetterHeaders::from_headers(&headers), Ok(example()));
    }

    #[test]
    fn missing_or_malformed_headers_are_named() {
        let mut headers = example().to_headers();
        headers.retain(|(name, _)| name != DeadLetterHeaders::SOURCE_TOPIC);
        assert_eq!(
            DeadLetterHeaders::from_headers(&headers),
            Err(DeadLetterHeaderError::Missing {
                header: "sluice.source.topic"
            })
        );

        let mut headers = example().to_headers();
        headers.push((DeadLetterHeaders::SOURCE_OFFSET.into(), b"forty-two".to_vec()));
        let error = DeadLetterHeaders::from_headers(&headers).unwrap_err();
        assert_eq!(
            error.to_string(),
            "header `sluice.source.offset` is not a number: \"forty-two\""
        );

        let mut headers = example().to_headers();
        headers.push((DeadLetterHeaders::FAILED_AT.into(), b"yesterday".to_vec()));
        assert!(matches!(
            DeadLetterHeaders::from_headers(&headers),
            Err(DeadLetterHeaderError::Malformed {
                header: "sluice.failed-at",
                ..
            })
        ));
    }
}
