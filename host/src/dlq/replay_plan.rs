//! Turning chosen dead letters back into the messages that failed, ready
//! to produce to their source topic, or saying why one cannot be.

use super::dead_letter_record::{DeadLetterOffset, DeadLetterRecord};
use crate::config::{DedupKeyKind, StageConfig};
use crate::dedup::{DedupKey, Identifiable, KeyMaker};
use crate::kafka::OutgoingRecord;
use crate::observe::{TRACEPARENT_HEADER, TraceParent};
use crate::pipeline::DeadLetterHeaders;

/// Set on every replayed record to `<dlq topic>/<partition>/<offset>` of
/// the dead letter it came from, so a replayed message can be recognised
/// downstream (plugins that copy input headers pass it on) and traced back.
pub const REPLAYED_FROM_HEADER: &str = "sluice.replayed-from";

/// One dead letter to put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReplay {
    /// The dead letter's place in the dead-letter topic.
    pub at: DeadLetterOffset,
    /// The original key and value; the original headers, then
    /// [`REPLAYED_FROM_HEADER`] and a `traceparent` continuing the dead
    /// letter's trace.
    pub record: OutgoingRecord,
    /// The source partition: the record goes back where it was first read,
    /// whichever partitioner its producer used.
    pub partition: i32,
    /// The done-mark the stage wrote for the original message, which would
    /// make it skip the replayed copy as a duplicate.
    pub done_mark: Option<DedupKey>,
}

/// A chosen dead letter that will not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDeadLetter {
    pub at: DeadLetterOffset,
    pub why: String,
}

/// What a stage file says about replaying its dead letters.
#[derive(Debug, Clone)]
pub struct ReplayPlanner {
    stage_name: String,
    input_topics: Vec<String>,
    dead_letter_topic: String,
    /// With `[dedup]`, the stage's own key maker. Not for `coordinates`
    /// keys: a replayed copy gets new coordinates, so the original's mark
    /// cannot match it, and it is kept so the original offset, if ever
    /// consumed again, is still skipped.
    keys: Option<KeyMaker>,
}

impl ReplayPlanner {
    pub fn for_stage(config: &StageConfig) -> Self {
        let keys = config
            .dedup
            .as_ref()
            .filter(|dedup| dedup.key != DedupKeyKind::Coordinates)
            .map(|dedup| KeyMaker::new(&config.stage.name, dedup.key, dedup.header.as_deref()));
        ReplayPlanner {
            stage_name: config.stage.name.clone(),
            input_topics: config.kafka.input_topics.clone(),
            dead_letter_topic: config.kafka.dead_letter_topic.clone(),
            keys,
        }
    }

    /// The replay of `record`, or why there is none: it is not a sluice
    /// dead letter, another stage wrote it (its dedup keys and input topics
    /// are that stage's), or its source topic is not one this stage reads.
    pub fn plan(&self, record: &DeadLetterRecord) -> Result<PlannedReplay, SkippedDeadLetter> {
        let skip = |why: String| SkippedDeadLetter { at: record.at, why };
        let why = record
            .why
            .as_ref()
            .map_err(|problem| skip(format!("not a sluice dead letter: {problem}")))?;
        if why.stage != self.stage_name {
            return Err(skip(format!(
                "dead-lettered by stage `{}`, not `{}`; replay it with that stage's file",
                why.stage, self.stage_name
            )));
        }
        if !self.input_topics.contains(&why.source_topic) {
            return Err(skip(format!(
                "its source topic `{}` is not an input topic of stage `{}`",
                why.source_topic, self.stage_name
            )));
        }
        let original = OriginalMessage { record, why };
        let trace = record.trace.map_or_else(TraceParent::new_root, |trace| trace.child());
        let mut headers: Vec<(String, Vec<u8>)> = record
            .original_headers
            .iter()
            .filter(|(name, _)| name != REPLAYED_FROM_HEADER)
            .cloned()
            .collect();
        headers.push((
            REPLAYED_FROM_HEADER.to_owned(),
            format!(
                "{}/{}/{}",
                self.dead_letter_topic, record.at.partition, record.at.offset
            )
            .into_bytes(),
        ));
        headers.push((TRACEPARENT_HEADER.to_owned(), trace.to_string().into_bytes()));
        Ok(PlannedReplay {
            at: record.at,
            record: OutgoingRecord {
                topic: why.source_topic.clone(),
                key: record.key.clone(),
                value: record.value.clone(),
                headers,
            },
            partition: why.source_partition,
            done_mark: self.keys.as_ref().and_then(|keys| keys.key_for(&original)),
        })
    }
}

/// The failed message as the stage saw it, for its dedup key.
struct OriginalMessage<'a> {
    record: &'a DeadLetterRecord,
    why: &'a DeadLetterHeaders,
}

impl Identifiable for OriginalMessage<'_> {
    fn topic(&self) -> &str {
        &self.why.source_topic
    }
    fn partition(&self) -> i32 {
        self.why.source_partition
    }
    fn offset(&self) -> i64 {
        self.why.source_offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.record.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.record.value.as_deref()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.record
            .original_headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::config::DedupSection;
    use crate::plugin::Message;

    const STAGE: &str = r#"
[stage]
name = "upper"
[plugin]
path = "Cargo.toml"
[kafka]
brokers = "localhost:9092"
group_id = "g"
input_topics = ["in"]
output_topic = "out"
dead_letter_topic = "dlq"
"#;

    fn config(dedup: Option<(DedupKeyKind, Option<&str>)>) -> StageConfig {
        use figment::providers::{Format, Toml};
        let mut config: StageConfig = figment::Figment::from(Toml::string(STAGE))
            .extract()
            .expect("a valid stage");
        config.dedup = dedup.map(|(key, header)| DedupSection {
            key,
            header: header.map(str::to_owned),
            ttl_seconds: 60,
            on_store_error: Default::default(),
            redis_url: None,
            redis_cluster: false,
            redis_timeout_ms: 1000,
            memory_capacity: 10,
        });
        config
    }

    fn header(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_owned(), value.as_bytes().to_vec())
    }

    fn dead_letter(stage: &str, source_topic: &str) -> DeadLetterRecord {
        DeadLetterRecord {
            topic: "dlq".into(),
            at: DeadLetterOffset {
                partition: 1,
                offset: 7,
            },
            timestamp_ms: None,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            original_headers: vec![header("message-id", "m-1"), header(REPLAYED_FROM_HEADER, "dlq/0/0")],
            omitted: Vec::new(),
            trace: TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            why: Ok(DeadLetterHeaders {
                reason: "r".into(),
                source_topic: source_topic.into(),
                source_partition: 2,
                source_offset: 40,
                source_timestamp_ms: None,
                attempts: 1,
                stage: stage.into(),
                plugin_name: "p".into(),
                plugin_version: "v".into(),
                failed_at: UNIX_EPOCH,
            }),
        }
    }

    /// The message the stage handled, rebuilt by hand.
    fn original() -> Message {
        let mut message = Message::new("in", 2, 40, Some(b"v".to_vec()));
        message.key = Some(b"k".to_vec());
        message.headers = vec![crate::plugin::Header::new("message-id", "m-1")];
        message
    }

    #[test]
    fn the_replay_is_the_original_message_marked_as_replayed() {
        let planned = ReplayPlanner::for_stage(&config(None))
            .plan(&dead_letter("upper", "in"))
            .expect("replayable");
        assert_eq!(planned.partition, 2);
        assert_eq!(planned.record.topic, "in");
        assert_eq!(planned.record.key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(planned.record.value.as_deref(), Some(b"v".as_slice()));
        let names: Vec<&str> = planned.record.headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["message-id", REPLAYED_FROM_HEADER, "traceparent"]);
        assert_eq!(planned.record.headers[1].1, b"dlq/1/7");
        let trace = TraceParent::parse(&planned.record.headers[2].1).expect("a traceparent");
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.span_id(), "00f067aa0ba902b7");
        assert_eq!(planned.done_mark, None);
    }

    #[test]
    fn the_done_mark_is_the_one_the_stage_wrote_for_the_original() {
        for (kind, header) in [
            (DedupKeyKind::Header, Some("message-id")),
            (DedupKeyKind::MessageKey, None),
            (DedupKeyKind::ContentHash, None),
        ] {
            let planned = ReplayPlanner::for_stage(&config(Some((kind, header))))
                .plan(&dead_letter("upper", "in"))
                .expect("replayable");
            let stage_key = KeyMaker::new("upper", kind, header).key_for(&original());
            assert!(stage_key.is_some());
            assert_eq!(planned.done_mark, stage_key, "{kind:?}");
        }
        let by_coordinates = ReplayPlanner::for_stage(&config(Some((DedupKeyKind::Coordinates, None))))
            .plan(&dead_letter("upper", "in"))
            .expect("replayable");
        assert_eq!(by_coordinates.done_mark, None);
    }

    #[test]
    fn dead_letters_of_other_stages_or_topics_are_skipped_with_the_reason() {
        let planner = ReplayPlanner::for_stage(&config(None));
        let other_stage = planner.plan(&dead_letter("parse", "in")).unwrap_err();
        assert!(other_stage.why.contains("stage `parse`"), "{}", other_stage.why);
        let other_topic = planner.plan(&dead_letter("upper", "elsewhere")).unwrap_err();
        assert!(other_topic.why.contains("`elsewhere`"), "{}", other_topic.why);
        let mut foreign = dead_letter("upper", "in");
        foreign.why = Err(crate::pipeline::DeadLetterHeaderError::Missing {
            header: DeadLetterHeaders::SOURCE_TOPIC,
        });
        let foreign = planner.plan(&foreign).unwrap_err();
        assert_eq!(
            foreign.at,
            DeadLetterOffset {
                partition: 1,
                offset: 7
            }
        );
        assert!(foreign.why.contains("sluice.source.topic"), "{}", foreign.why);
    }
}
