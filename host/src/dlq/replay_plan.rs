//! Turning chosen dead letters back into the messages that failed, ready
//! to produce to their source topic, or saying why one cannot be.

use std::fmt;

use super::dead_letter_record::{DeadLetterOffset, DeadLetterRecord, OmittedPart};
use crate::config::{DedupKeyKind, StageConfig};
use crate::dedup::{DedupKey, Identifiable, KeyMaker};
use crate::kafka::OutgoingRecord;
use crate::observe::{TRACEPARENT_HEADER, TraceParent};
use crate::pipeline::{DeadLetterHeaderError, DeadLetterHeaders};

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
    /// Set when the dead letter was shrunk and replaying what is left was
    /// allowed: the copy is not the message that failed.
    pub incomplete: Option<IncompleteReplay>,
}

impl PlannedReplay {
    /// The bytes this replay holds (key, value, header names and values),
    /// for bounding how many are held at once.
    pub fn size(&self) -> usize {
        let record = &self.record;
        record.key.as_ref().map_or(0, Vec::len)
            + record.value.as_ref().map_or(0, Vec::len)
            + record
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
    }
}

/// What a replay of a shrunk dead letter lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteReplay {
    /// What the dead letter left out, so the copy lacks it too.
    pub omitted: Vec<OmittedPart>,
    /// The stage's dedup key is made from a part that was left out, so the
    /// original's done-mark cannot be known and is not cleared.
    pub done_mark_unknown: bool,
}

impl fmt::Display for IncompleteReplay {
    /// `incomplete: without its value (1048600 bytes)`, and when it applies,
    /// that the done-mark stays.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "incomplete: without its {}", parts_text(&self.omitted))?;
        if self.done_mark_unknown {
            formatter.write_str("; its done-mark is made from what was left out, so it cannot be cleared")?;
        }
        Ok(())
    }
}

/// A chosen dead letter that will not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDeadLetter {
    pub at: DeadLetterOffset,
    pub why: SkipReason,
}

/// Why a chosen dead letter is not replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// It has no usable `sluice.*` headers: some other producer wrote it.
    NotADeadLetter(DeadLetterHeaderError),
    /// Another stage wrote it: its dedup keys and input topics are that
    /// stage's.
    OtherStage { stage: String, this_stage: String },
    /// It came from a topic this stage does not read.
    NotAnInput { topic: String, stage: String },
    /// It was shrunk to fit the broker's size limit, so it no longer holds
    /// the message that failed, and replaying it was not allowed.
    Incomplete(Vec<OmittedPart>),
}

impl SkipReason {
    /// The reason without what is particular to one record (the sizes of
    /// an incomplete one), for a summary that groups skipped records.
    pub fn kind(&self) -> String {
        match self {
            SkipReason::Incomplete(_) => {
                "shrunk to fit the broker's size limit (pass --allow-incomplete to replay what is left)".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotADeadLetter(problem) => write!(formatter, "not a sluice dead letter: {problem}"),
            SkipReason::OtherStage { stage, this_stage } => write!(
                formatter,
                "dead-lettered by stage `{stage}`, not `{this_stage}`; replay it with that stage's file"
            ),
            SkipReason::NotAnInput { topic, stage } => write!(
                formatter,
                "its source topic `{topic}` is not an input topic of stage `{stage}`"
            ),
            SkipReason::Incomplete(omitted) => write!(
                formatter,
                "incomplete: the stage left out its {} to fit the broker's size limit; pass --allow-incomplete to \
                 replay what is left",
                parts_text(omitted)
            ),
        }
    }
}

/// `value (5 bytes)`, `value (5 bytes) and headers (7 bytes)`, `value (5
/// bytes), headers (7 bytes) and key (3 bytes)`.
fn parts_text(omitted: &[OmittedPart]) -> String {
    let parts: Vec<String> = omitted.iter().map(ToString::to_string).collect();
    match parts.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// What a stage file says about replaying its dead letters.
#[derive(Debug, Clone)]
pub struct ReplayPlanner {
    stage_name: String,
    input_topics: Vec<String>,
    dead_letter_topic: String,
    /// With `[dedup]`, the stage's key kind and own key maker. Not for
    /// `coordinates` keys: a replayed copy gets new coordinates, so the
    /// original's mark cannot match it, and it is kept so the original
    /// offset, if ever consumed again, is still skipped.
    keys: Option<(DedupKeyKind, KeyMaker)>,
    /// Whether a dead letter shrunk to fit the broker's size limit is
    /// replayed as it is, rather than skipped.
    allow_incomplete: bool,
}

impl ReplayPlanner {
    pub fn for_stage(config: &StageConfig) -> Self {
        let keys = config
            .dedup
            .as_ref()
            .filter(|dedup| dedup.key != DedupKeyKind::Coordinates)
            .map(|dedup| {
                (
                    dedup.key,
                    KeyMaker::new(&config.stage.name, dedup.key, dedup.header.as_deref()),
                )
            });
        ReplayPlanner {
            stage_name: config.stage.name.clone(),
            input_topics: config.kafka.input_topics.clone(),
            dead_letter_topic: config.kafka.dead_letter_topic.clone(),
            keys,
            allow_incomplete: false,
        }
    }

    /// Replay dead letters that were shrunk to fit the broker's size limit
    /// with what they still hold, instead of skipping them.
    pub fn allowing_incomplete(self, allow_incomplete: bool) -> Self {
        ReplayPlanner {
            allow_incomplete,
            ..self
        }
    }

    /// The replay of `record`, or why there is none: it is not a sluice
    /// dead letter, another stage wrote it (its dedup keys and input topics
    /// are that stage's), its source topic is not one this stage reads, or
    /// it was shrunk and replaying what is left was not allowed. Takes the
    /// record so that its key, value and headers move into the replay
    /// rather than being copied.
    pub fn plan(&self, record: DeadLetterRecord) -> Result<PlannedReplay, SkippedDeadLetter> {
        let skip = |why: SkipReason| SkippedDeadLetter { at: record.at, why };
        let why = match &record.why {
            Ok(why) => why,
            Err(problem) => return Err(skip(SkipReason::NotADeadLetter(problem.clone()))),
        };
        if why.stage != self.stage_name {
            return Err(skip(SkipReason::OtherStage {
                stage: why.stage.clone(),
                this_stage: self.stage_name.clone(),
            }));
        }
        if !self.input_topics.contains(&why.source_topic) {
            return Err(skip(SkipReason::NotAnInput {
                topic: why.source_topic.clone(),
                stage: self.stage_name.clone(),
            }));
        }
        if !record.omitted.is_empty() && !self.allow_incomplete {
            return Err(skip(SkipReason::Incomplete(record.omitted.clone())));
        }
        let (done_mark, done_mark_unknown) = match &self.keys {
            Some((kind, _)) if uses_omitted_part(*kind, &record) => (None, true),
            Some((_, keys)) => (keys.key_for(&OriginalMessage { record: &record, why }), false),
            None => (None, false),
        };
        let trace = record.trace.map_or_else(TraceParent::new_root, |trace| trace.child());
        let source_topic = why.source_topic.clone();
        let partition = why.source_partition;
        let incomplete = (!record.omitted.is_empty()).then(|| IncompleteReplay {
            omitted: record.omitted.clone(),
            done_mark_unknown,
        });
        let mut headers: Vec<(String, Vec<u8>)> = record
            .original_headers
            .into_iter()
            .filter(|(name, _)| name != REPLAYED_FROM_HEADER)
            .collect();
        headers.push((
            REPLAYED_FROM_HEADER.to_owned(),
            format!(
                "{}/{}/{}",
                self.dead_letter_topic, record.at.partition, record.at.offset
            )
            .into_bytes(),
        ));
        headers.push((TRACEPARENT_HEADER.to_owned(), trace.to_header_value()));
        Ok(PlannedReplay {
            at: record.at,
            record: OutgoingRecord {
                topic: source_topic,
                key: record.key,
                value: record.value,
                headers,
            },
            partition,
            done_mark,
            incomplete,
        })
    }
}

/// Whether the stage's dedup key of a message is made from a part the dead
/// letter left out: the original's key then cannot be rebuilt, and one
/// made from what is left would name some other message's mark.
fn uses_omitted_part(kind: DedupKeyKind, record: &DeadLetterRecord) -> bool {
    match kind {
        DedupKeyKind::Header => record.omits(OmittedPart::HEADERS),
        DedupKeyKind::MessageKey => record.omits(OmittedPart::KEY),
        DedupKeyKind::ContentHash => record.omits(OmittedPart::KEY) || record.omits(OmittedPart::VALUE),
        DedupKeyKind::Coordinates => false,
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
            claim_lease_ms: 30_000,
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
            .plan(dead_letter("upper", "in"))
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
                .plan(dead_letter("upper", "in"))
                .expect("replayable");
            let stage_key = KeyMaker::new("upper", kind, header).key_for(&original());
            assert!(stage_key.is_some());
            assert_eq!(planned.done_mark, stage_key, "{kind:?}");
        }
        let by_coordinates = ReplayPlanner::for_stage(&config(Some((DedupKeyKind::Coordinates, None))))
            .plan(dead_letter("upper", "in"))
            .expect("replayable");
        assert_eq!(by_coordinates.done_mark, None);
    }

    #[test]
    fn dead_letters_of_other_stages_or_topics_are_skipped_with_the_reason() {
        let planner = ReplayPlanner::for_stage(&config(None));
        let other_stage = planner.plan(dead_letter("parse", "in")).unwrap_err();
        assert_eq!(
            other_stage.why.to_string(),
            "dead-lettered by stage `parse`, not `upper`; replay it with that stage's file"
        );
        let other_topic = planner.plan(dead_letter("upper", "elsewhere")).unwrap_err();
        assert_eq!(
            other_topic.why.to_string(),
            "its source topic `elsewhere` is not an input topic of stage `upper`"
        );
        let mut foreign = dead_letter("upper", "in");
        foreign.why = Err(crate::pipeline::DeadLetterHeaderError::Missing {
            header: DeadLetterHeaders::SOURCE_TOPIC,
        });
        let foreign = planner.plan(foreign).unwrap_err();
        assert_eq!(
            foreign.at,
            DeadLetterOffset {
                partition: 1,
                offset: 7
            }
        );
        assert_eq!(
            foreign.why.to_string(),
            "not a sluice dead letter: no `sluice.source.topic` header (not a sluice dead letter?)"
        );
        assert_eq!(foreign.why.kind(), foreign.why.to_string());
    }

    fn shrunk(omitted: &[(&str, u64)]) -> DeadLetterRecord {
        let mut record = dead_letter("upper", "in");
        record.omitted = omitted
            .iter()
            .map(|(part, size)| OmittedPart {
                part: (*part).to_owned(),
                original_size: Some(*size),
            })
            .collect();
        if record.omits(OmittedPart::VALUE) {
            record.value = None;
        }
        if record.omits(OmittedPart::HEADERS) {
            record.original_headers.clear();
        }
        if record.omits(OmittedPart::KEY) {
            record.key = None;
        }
        record
    }

    #[test]
    fn a_shrunk_dead_letter_is_skipped_saying_what_it_lacks() {
        let planner = ReplayPlanner::for_stage(&config(None));
        let skipped = planner
            .plan(shrunk(&[("value", 1_048_600), ("headers", 17)]))
            .unwrap_err();
        assert_eq!(
            skipped.why.to_string(),
            "incomplete: the stage left out its value (1048600 bytes) and headers (17 bytes) to fit the broker's \
             size limit; pass --allow-incomplete to replay what is left"
        );
        assert_eq!(
            skipped.why.kind(),
            "shrunk to fit the broker's size limit (pass --allow-incomplete to replay what is left)"
        );
        let all = planner
            .plan(shrunk(&[("value", 5), ("headers", 7), ("key", 3)]))
            .unwrap_err();
        assert!(
            all.why
                .to_string()
                .contains("its value (5 bytes), headers (7 bytes) and key (3 bytes) to fit"),
            "{}",
            all.why
        );
    }

    #[test]
    fn with_incomplete_allowed_what_is_left_is_replayed_and_an_unknowable_mark_is_left() {
        let header_keys = ReplayPlanner::for_stage(&config(Some((DedupKeyKind::Header, Some("message-id")))))
            .allowing_incomplete(true);
        let without_value = header_keys.plan(shrunk(&[("value", 1_048_600)])).expect("replayable");
        assert_eq!(without_value.record.value, None);
        assert_eq!(without_value.record.key.as_deref(), Some(b"k".as_slice()));
        let names: Vec<&str> = without_value
            .record
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["message-id", REPLAYED_FROM_HEADER, "traceparent"]);
        assert_eq!(
            without_value.done_mark,
            KeyMaker::new("upper", DedupKeyKind::Header, Some("message-id")).key_for(&original()),
            "the header the key is made from is still there"
        );
        let incomplete = without_value.incomplete.expect("said to be incomplete");
        assert_eq!(incomplete.to_string(), "incomplete: without its value (1048600 bytes)");

        let without_headers = header_keys
            .plan(shrunk(&[("value", 5), ("headers", 17)]))
            .expect("replayable");
        let names: Vec<&str> = without_headers
            .record
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, [REPLAYED_FROM_HEADER, "traceparent"]);
        assert_eq!(without_headers.done_mark, None);
        assert_eq!(
            without_headers.incomplete.expect("incomplete").to_string(),
            "incomplete: without its value (5 bytes) and headers (17 bytes); its done-mark is made from what was \
             left out, so it cannot be cleared"
        );

        let content_keys =
            ReplayPlanner::for_stage(&config(Some((DedupKeyKind::ContentHash, None)))).allowing_incomplete(true);
        let planned = content_keys.plan(shrunk(&[("value", 5)])).expect("replayable");
        assert_eq!(planned.done_mark, None, "the hash needs the value");
        assert!(planned.incomplete.expect("incomplete").done_mark_unknown);

        let whole = content_keys.plan(dead_letter("upper", "in")).expect("replayable");
        assert_eq!(whole.incomplete, None);
        assert!(whole.done_mark.is_some());
    }

    #[test]
    fn a_replay_counts_its_bytes() {
        let planned = ReplayPlanner::for_stage(&config(None))
            .plan(dead_letter("upper", "in"))
            .expect("replayable");
        let headers: usize = planned
            .record
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        assert_eq!(planned.size(), 1 + 1 + headers);
        assert_eq!(
            headers,
            "message-id".len() + 3 + REPLAYED_FROM_HEADER.len() + 7 + "traceparent".len() + 55
        );
    }
}
