//! What a dead-letter record says about why it is there.

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
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::DeadLetterHeaders;

    #[test]
    fn every_header_is_present_as_text() {
        let headers = DeadLetterHeaders {
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
        .to_headers();

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
}
