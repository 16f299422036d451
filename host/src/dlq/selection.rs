//! Which dead letters an operator means: by why they failed, where they
//! came from, or exactly which ones.

use super::dead_letter_record::{DeadLetterOffset, DeadLetterRecord};

/// Every condition given must hold; an empty selection takes everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Part of `sluice.reason` (case-sensitive).
    pub reason_contains: Option<String>,
    /// `sluice.source.topic`.
    pub source_topic: Option<String>,
    /// `sluice.source.partition`.
    pub source_partition: Option<i32>,
    /// `sluice.stage`: a dead-letter topic may be shared by stages.
    pub stage: Option<String>,
    /// Exactly these records of the dead-letter topic (any of them); empty
    /// means no restriction.
    pub offsets: Vec<DeadLetterOffset>,
}

impl Selection {
    /// Whether `record` is selected. A record without usable `sluice.*`
    /// headers matches only selections that ask nothing of them.
    pub fn matches(&self, record: &DeadLetterRecord) -> bool {
        if !self.offsets.is_empty() && !self.offsets.contains(&record.at) {
            return false;
        }
        if !self.asks_about_headers() {
            return true;
        }
        let Ok(why) = &record.why else {
            return false;
        };
        self.reason_contains
            .as_ref()
            .is_none_or(|text| why.reason.contains(text.as_str()))
            && self
                .source_topic
                .as_ref()
                .is_none_or(|topic| &why.source_topic == topic)
            && self
                .source_partition
                .is_none_or(|partition| why.source_partition == partition)
            && self.stage.as_ref().is_none_or(|stage| &why.stage == stage)
    }

    fn asks_about_headers(&self) -> bool {
        self.reason_contains.is_some()
            || self.source_topic.is_some()
            || self.source_partition.is_some()
            || self.stage.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::pipeline::{DeadLetterHeaderError, DeadLetterHeaders};

    fn record(partition: i32, offset: i64, reason: &str, source_partition: i32) -> DeadLetterRecord {
        DeadLetterRecord {
            topic: "dlq".into(),
            at: DeadLetterOffset { partition, offset },
            timestamp_ms: None,
            key: None,
            value: None,
            original_headers: Vec::new(),
            omitted: Vec::new(),
            trace: None,
            why: Ok(DeadLetterHeaders {
                reason: reason.into(),
                source_topic: "in".into(),
                source_partition,
                source_offset: 0,
                source_timestamp_ms: None,
                attempts: 1,
                stage: "s".into(),
                plugin_name: "p".into(),
                plugin_version: "v".into(),
                failed_at: UNIX_EPOCH,
            }),
        }
    }

    #[test]
    fn conditions_combine_and_offsets_pick_exact_records() {
        let records = [
            record(0, 0, "invalid JSON", 0),
            record(0, 1, "retries exhausted: db down", 1),
            record(1, 0, "invalid JSON", 1),
        ];
        let picked = |selection: &Selection| -> Vec<DeadLetterOffset> {
            records
                .iter()
                .filter(|record| selection.matches(record))
                .map(|record| record.at)
                .collect()
        };
        assert_eq!(picked(&Selection::default()).len(), 3);
        let json = Selection {
            reason_contains: Some("JSON".into()),
            ..Selection::default()
        };
        assert_eq!(picked(&json), [records[0].at, records[2].at]);
        let json_from_one = Selection {
            source_partition: Some(1),
            ..json
        };
        assert_eq!(picked(&json_from_one), [records[2].at]);
        let exact = Selection {
            offsets: vec![DeadLetterOffset {
                partition: 0,
                offset: 1,
            }],
            ..Selection::default()
        };
        assert_eq!(picked(&exact), [records[1].at]);
        let nothing = Selection {
            source_topic: Some("other".into()),
            ..Selection::default()
        };
        assert!(picked(&nothing).is_empty());
    }

    #[test]
    fn a_foreign_record_matches_only_selections_that_ignore_headers() {
        let mut foreign = record(0, 3, "", 0);
        foreign.why = Err(DeadLetterHeaderError::Missing {
            header: DeadLetterHeaders::REASON,
        });
        assert!(Selection::default().matches(&foreign));
        assert!(
            !Selection {
                reason_contains: Some(String::new()),
                ..Selection::default()
            }
            .matches(&foreign)
        );
    }
}
