//! Putting planned dead letters back, a bounded chunk at a time: clear the
//! chunk's done-marks, produce it, wait for every acknowledgement, then
//! take the next. A replay of a million dead letters holds no more than a
//! replay of a thousand.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::error::DlqError;
use super::replay_plan::PlannedReplay;
use super::stage_kafka::StageKafka;
use crate::config::{DedupKeyKind, StageConfig};
use crate::dedup::{DedupKey, DedupStore, open_store};
use crate::kafka::SinkProducer;

/// Where the stage keeps the done-marks a replay must clear. The pipeline
/// marks a message done once its dead letter is acknowledged, so without
/// clearing, the stage would skip the replayed copy as a duplicate.
pub enum DoneMarks {
    /// The stage has no `[dedup]`: nothing to clear.
    NotDeduplicating,
    /// `coordinates` keys: a replayed copy has new coordinates, so no mark
    /// can match it.
    ByCoordinates,
    /// Marks live in the running stage's memory, out of reach.
    InStageMemory,
    /// Redis, shared with the stage.
    Store(Arc<dyn DedupStore>),
}

impl DoneMarks {
    /// The stage's store, when a replay can and must clear marks in it.
    /// Connecting is lazy: an unreachable Redis shows up when clearing.
    pub fn for_stage(config: &StageConfig) -> Result<Self, DlqError> {
        let Some(dedup) = &config.dedup else {
            return Ok(DoneMarks::NotDeduplicating);
        };
        if dedup.key == DedupKeyKind::Coordinates {
            return Ok(DoneMarks::ByCoordinates);
        }
        if dedup.redis_url.is_none() {
            return Ok(DoneMarks::InStageMemory);
        }
        let store = open_store(dedup).map_err(|source| DlqError::Store {
            store: "Redis".to_owned(),
            source,
            replayed_before: 0,
        })?;
        Ok(DoneMarks::Store(store))
    }
}

/// How much of a replay is held at once. A chunk is produced as soon as it
/// holds `records` records or `bytes` bytes (keys, values, header names and
/// values), and before a record that would take it past `bytes`; a single
/// record larger than `bytes` is a chunk of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkBounds {
    pub records: usize,
    pub bytes: usize,
}

impl ChunkBounds {
    /// 1000 records or 16 MiB. The bytes bound caps memory whatever the
    /// records' sizes: a chunk is held once by the replay and once more by
    /// librdkafka until the broker acknowledges it, so about 32 MiB at
    /// most. The records bound caps one Redis round trip (one `DEL` per
    /// done-mark, pipelined) and the list of failures a delivery error
    /// names. Both are large enough that a chunk's two waits (Redis, then
    /// the acknowledgements) cost little next to producing it.
    pub const DEFAULT: ChunkBounds = ChunkBounds {
        records: 1000,
        bytes: 16 * 1024 * 1024,
    };
}

impl Default for ChunkBounds {
    fn default() -> Self {
        ChunkBounds::DEFAULT
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Records produced and acknowledged.
    pub replayed: u64,
    /// Done-marks that existed and were removed.
    pub marks_cleared: u64,
}

/// The replays waiting to be produced together.
#[derive(Debug, Default)]
struct Chunk {
    replays: Vec<PlannedReplay>,
    bytes: usize,
}

impl Chunk {
    /// Whether what is held must go before a replay of `size` bytes joins.
    fn must_go_before(&self, size: usize, bounds: ChunkBounds) -> bool {
        !self.replays.is_empty() && self.bytes.saturating_add(size) > bounds.bytes
    }

    /// Whether the chunk is as large as it may get.
    fn is_full(&self, bounds: ChunkBounds) -> bool {
        self.replays.len() >= bounds.records || self.bytes >= bounds.bytes
    }

    fn push(&mut self, replay: PlannedReplay) {
        self.bytes = self.bytes.saturating_add(replay.size());
        self.replays.push(replay);
    }

    fn take(&mut self) -> Vec<PlannedReplay> {
        self.bytes = 0;
        std::mem::take(&mut self.replays)
    }
}

/// Replays what it is given, in chunks within [`ChunkBounds`], keeping the
/// guarantees of a replay done all at once, per chunk: a chunk's source
/// topics are checked and its done-marks cleared before any of its records
/// is produced (so a store error leaves that chunk unproduced), and every
/// record's acknowledgement is awaited before the next chunk starts. The
/// first chunk that fails stops the replay; the error says how many
/// records were acknowledged before and with it.
pub struct Replayer<'a> {
    kafka: &'a StageKafka,
    marks: &'a DoneMarks,
    bounds: ChunkBounds,
    /// Created with the first chunk, so a replay of nothing produces
    /// nothing and opens no producer.
    producer: Option<SinkProducer>,
    chunk: Chunk,
    /// Source topics already found to exist: at most the stage's input
    /// topics, whatever the number of records.
    checked_topics: BTreeSet<String>,
    done: ReplayOutcome,
}

impl<'a> Replayer<'a> {
    pub fn new(kafka: &'a StageKafka, marks: &'a DoneMarks, bounds: ChunkBounds) -> Self {
        Replayer {
            kafka,
            marks,
            bounds: ChunkBounds {
                records: bounds.records.max(1),
                bytes: bounds.bytes.max(1),
            },
            producer: None,
            chunk: Chunk::default(),
            checked_topics: BTreeSet::new(),
            done: ReplayOutcome::default(),
        }
    }

    /// Take `replay` into the current chunk, producing the chunk first when
    /// `replay` would take it past the bytes bound, and after when it is
    /// full. Returns whether a chunk was produced (and acknowledged).
    pub async fn add(&mut self, replay: PlannedReplay) -> Result<bool, DlqError> {
        let mut produced = false;
        if self.chunk.must_go_before(replay.size(), self.bounds) {
            self.produce_chunk(false).await?;
            produced = true;
        }
        self.chunk.push(replay);
        if self.chunk.is_full(self.bounds) {
            self.produce_chunk(false).await?;
            produced = true;
        }
        Ok(produced)
    }

    /// What the chunks produced so far did.
    pub fn so_far(&self) -> ReplayOutcome {
        self.done
    }

    /// Produce what is left; the outcome of the whole replay.
    pub async fn finish(mut self) -> Result<ReplayOutcome, DlqError> {
        self.produce_chunk(true).await?;
        Ok(self.done)
    }

    /// Check, clear, produce and await the current chunk. `last` says that
    /// nothing follows it, for a delivery error to say whether the replay
    /// stopped short.
    async fn produce_chunk(&mut self, last: bool) -> Result<(), DlqError> {
        let replays = self.chunk.take();
        if replays.is_empty() {
            return Ok(());
        }
        let replayed_before = self.done.replayed;

        let mut new_topics: Vec<&str> = replays
            .iter()
            .map(|replay| replay.record.topic.as_str())
            .filter(|topic| !self.checked_topics.contains(*topic))
            .collect();
        new_topics.sort_unstable();
        new_topics.dedup();
        if !new_topics.is_empty() {
            self.kafka
                .check_topics(&new_topics)
                .await
                .map_err(|source| DlqError::SourceTopics {
                    source,
                    replayed_before,
                })?;
            self.checked_topics.extend(new_topics.into_iter().map(str::to_owned));
        }

        if let DoneMarks::Store(store) = self.marks {
            let keys: Vec<DedupKey> = replays.iter().filter_map(|replay| replay.done_mark.clone()).collect();
            self.done.marks_cleared += store.forget(&keys).await.map_err(|source| DlqError::Store {
                store: store.describe(),
                source,
                replayed_before,
            })?;
        }

        let producer = match &mut self.producer {
            Some(producer) => producer,
            empty => empty.insert(self.kafka.producer()?),
        };
        let total = replays.len();
        let mut places = Vec::with_capacity(total);
        let mut deliveries = Vec::with_capacity(total);
        // Each record is dropped once librdkafka holds its copy.
        for replay in replays {
            deliveries.push(producer.enqueue_to_partition(&replay.record, replay.partition).await);
            places.push(replay.at);
        }
        let results = futures::future::join_all(deliveries).await;
        let failures: Vec<String> = places
            .iter()
            .zip(&results)
            .filter_map(|(at, result)| result.as_ref().err().map(|error| format!("{at} ({error})")))
            .collect();
        let acknowledged = (total - failures.len()) as u64;
        self.done.replayed += acknowledged;
        if !failures.is_empty() {
            return Err(DlqError::Delivery {
                failed: failures.len() as u64,
                total: replayed_before + total as u64,
                acknowledged: self.done.replayed,
                details: failures.join(", "),
                stopped_early: !last,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::DeadLetterOffset;
    use crate::kafka::OutgoingRecord;

    /// A replay of exactly `size` bytes (all value).
    fn replay(offset: i64, size: usize) -> PlannedReplay {
        PlannedReplay {
            at: DeadLetterOffset { partition: 0, offset },
            record: OutgoingRecord {
                topic: "in".into(),
                key: None,
                value: Some(vec![b'x'; size]),
                headers: Vec::new(),
            },
            partition: 0,
            done_mark: None,
            incomplete: None,
        }
    }

    /// The chunks `sizes` fall into, as a replayer cuts them, by offset.
    fn chunks(sizes: &[usize], bounds: ChunkBounds) -> Vec<Vec<i64>> {
        let mut chunk = Chunk::default();
        let mut chunks = Vec::new();
        let mut cut = |chunk: &mut Chunk| {
            chunks.push(chunk.take().iter().map(|replay| replay.at.offset).collect::<Vec<_>>());
        };
        for (offset, size) in sizes.iter().enumerate() {
            if chunk.must_go_before(*size, bounds) {
                cut(&mut chunk);
            }
            chunk.push(replay(offset as i64, *size));
            if chunk.is_full(bounds) {
                cut(&mut chunk);
            }
        }
        if !chunk.replays.is_empty() {
            cut(&mut chunk);
        }
        chunks
    }

    #[test]
    fn a_chunk_ends_at_its_record_bound() {
        let bounds = ChunkBounds {
            records: 3,
            bytes: 1000,
        };
        assert_eq!(chunks(&[1; 7], bounds), [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert_eq!(chunks(&[1; 6], bounds), [vec![0, 1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn a_chunk_never_passes_its_byte_bound_unless_one_record_does() {
        let bounds = ChunkBounds {
            records: 100,
            bytes: 10,
        };
        assert_eq!(
            chunks(&[4, 4, 4, 10, 3, 25, 6, 4], bounds),
            [vec![0, 1], vec![2], vec![3], vec![4], vec![5], vec![6, 7]]
        );
        let one_byte = ChunkBounds { records: 100, bytes: 1 };
        assert_eq!(chunks(&[5, 5], one_byte), [vec![0], vec![1]]);
    }

    #[test]
    fn the_default_bounds_are_a_thousand_records_or_sixteen_mebibytes() {
        assert_eq!(
            ChunkBounds::default(),
            ChunkBounds {
                records: 1000,
                bytes: 16 << 20
            }
        );
    }
}
